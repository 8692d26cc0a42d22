/* FastHeaderReader.read (host/transports/software.py) in C: the same reading of a well-formed, complete header block,
 * and None for any other packet (the caller then uses the parser model's scan); and keys.fingerprint. Built on first
 * use by software.py (_native_module); tests/driver/test_software.py holds both to their Python versions and to scan.
 *
 * Reader(limit, names, consts).read(packet) -> (path, key_source, key, cl_value, chunked, extra_values, errors,
 *                                             method, upgrade) or None
 *   names:  [(lower-case name, builtin rule or -1, extra slot mask)]   rules: the index in BUILTIN_NAMES
 *   consts: (KeySource.NONE, .AUTHORIZATION, .X_API_KEY, METHODS, Method.OTHER, missing_host, cl_and_te, slots)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

enum { RULE_HOST, RULE_CONTENT_LENGTH, RULE_TRANSFER_ENCODING, RULE_AUTHORIZATION, RULE_X_API_KEY, RULE_UPGRADE };
#define MAX_NAMES 64
#define MAX_SLOTS 16
#define CL_MAX_DIGITS 20

static unsigned char TCHAR[256], VALUE[256];

typedef struct {
    PyObject_HEAD
    Py_ssize_t limit;
    int count;
    PyObject *names[MAX_NAMES];         /* lower-case names (bytes) */
    int rules[MAX_NAMES];
    unsigned slots[MAX_NAMES];
    PyObject *key_none, *key_auth, *key_xkey, *methods, *method_other;
    long missing_host, cl_and_te;
    int extra_slots;
} Reader;

static void reader_clear(Reader *self) {
    for (int i = 0; i < self->count; i++)
        Py_CLEAR(self->names[i]);
    self->count = 0;
    Py_CLEAR(self->key_none);
    Py_CLEAR(self->key_auth);
    Py_CLEAR(self->key_xkey);
    Py_CLEAR(self->methods);
    Py_CLEAR(self->method_other);
}

static void reader_dealloc(Reader *self) {
    reader_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int reader_init(Reader *self, PyObject *args, PyObject *kwds) {
    Py_ssize_t limit;
    PyObject *names, *consts;
    if (!PyArg_ParseTuple(args, "nO!O!", &limit, &PyList_Type, &names, &PyTuple_Type, &consts))
        return -1;
    reader_clear(self);
    self->limit = limit;
    Py_ssize_t n = PyList_GET_SIZE(names);
    if (n > MAX_NAMES) {
        PyErr_SetString(PyExc_ValueError, "too many names");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name;
        int rule;
        unsigned mask;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(names, i), "O!iI", &PyBytes_Type, &name, &rule, &mask))
            return -1;
        Py_INCREF(name);
        self->names[i] = name;
        self->rules[i] = rule;
        self->slots[i] = mask;
        self->count = (int)i + 1;
    }
    PyObject *kn, *ka, *kx, *methods, *other;
    if (!PyArg_ParseTuple(consts, "OOOO!Olli", &kn, &ka, &kx, &PyDict_Type, &methods, &other, &self->missing_host,
                          &self->cl_and_te, &self->extra_slots))
        return -1;
    if (self->extra_slots < 0 || self->extra_slots > MAX_SLOTS) {
        PyErr_SetString(PyExc_ValueError, "bad slot count");
        return -1;
    }
    Py_INCREF(kn); self->key_none = kn;
    Py_INCREF(ka); self->key_auth = ka;
    Py_INCREF(kx); self->key_xkey = kx;
    Py_INCREF(methods); self->methods = methods;
    Py_INCREF(other); self->method_other = other;
    return 0;
}

static int lower_eq(const unsigned char *a, const char *lower, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = a[i];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (c != (unsigned char)lower[i])
            return 0;
    }
    return 1;
}

/* content_length_value: (value, overflow) of 1..20 ASCII digits, saturated at 2^64-1; NULL with no error: bad. */
static PyObject *cl_value_of(const unsigned char *v, Py_ssize_t n) {
    if (n == 0 || n > CL_MAX_DIGITS)
        return NULL;
    unsigned __int128 number = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return NULL;
        number = number * 10 + (v[i] - '0');
    }
    int overflow = number > (unsigned __int128)UINT64_MAX;
    PyObject *value = PyLong_FromUnsignedLongLong(overflow ? UINT64_MAX : (unsigned long long)number);
    if (value == NULL)
        return NULL;
    return Py_BuildValue("(NO)", value, overflow ? Py_True : Py_False);
}

static PyObject *reader_read(Reader *self, PyObject *packet) {
    if (!PyBytes_CheckExact(packet))
        Py_RETURN_NONE;                                 /* the caller's scan reads it */
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(packet);
    Py_ssize_t size = PyBytes_GET_SIZE(packet);
    const unsigned char *found = memmem(buf, (size_t)size, "\r\n\r\n", 4);
    if (found == NULL)
        Py_RETURN_NONE;
    Py_ssize_t hl = (found - buf) + 4;
    if (hl > self->limit)
        Py_RETURN_NONE;
    /* The request line: tchar+ SP [\x21-\x7e]+ " HTTP/1." [01] CRLF. Every run below stops at the block's CRs. */
    Py_ssize_t p = 0;
    while (TCHAR[buf[p]])
        p++;
    Py_ssize_t method_end = p;
    if (method_end == 0 || buf[p] != ' ')
        Py_RETURN_NONE;
    Py_ssize_t target = ++p;
    while (buf[p] >= 0x21 && buf[p] <= 0x7e)
        p++;
    Py_ssize_t target_end = p;
    if (target_end == target || hl - p < 11 || memcmp(buf + p, " HTTP/1.", 8) != 0 ||
        (buf[p + 8] != '0' && buf[p + 8] != '1') || buf[p + 9] != '\r' || buf[p + 10] != '\n')
        Py_RETURN_NONE;
    int version_1 = buf[p + 8] == '1';
    p += 11;

    int host = 0, te_seen = 0, chunked = 0, upgrade = 0;
    PyObject *cl_value = NULL, *auth = NULL, *xkey = NULL, *extra_values = NULL, *result = NULL;
    for (;;) {
        if (buf[p] == '\r') {                           /* the empty line: the first CRLFCRLF, so at hl - 2 */
            if (p + 2 != hl || buf[p + 1] != '\n')
                goto not_fast;
            break;
        }
        Py_ssize_t name = p;
        while (TCHAR[buf[p]])
            p++;
        Py_ssize_t name_len = p - name;
        if (name_len == 0 || buf[p] != ':')
            goto not_fast;
        Py_ssize_t v0 = ++p;
        while (VALUE[buf[p]])
            p++;
        Py_ssize_t v1 = p;
        if (buf[p] != '\r' || buf[p + 1] != '\n')
            goto not_fast;
        p += 2;
        int which = -1;
        for (int i = 0; i < self->count; i++) {
            if (PyBytes_GET_SIZE(self->names[i]) == name_len &&
                lower_eq(buf + name, PyBytes_AS_STRING(self->names[i]), name_len)) {
                which = i;
                break;
            }
        }
        if (which < 0)
            continue;
        /* The value without leading and trailing SP / HTAB. */
        while (v0 < v1 && (buf[v0] == ' ' || buf[v0] == '\t'))
            v0++;
        while (v1 > v0 && (buf[v1 - 1] == ' ' || buf[v1 - 1] == '\t'))
            v1--;
        const unsigned char *v = buf + v0;
        Py_ssize_t vlen = v1 - v0;
        switch (self->rules[which]) {
        case RULE_HOST:
            if (host)
                goto not_fast;                          /* duplicate_host */
            host = 1;
            break;
        case RULE_AUTHORIZATION:
            if (auth == NULL && vlen > 7 && lower_eq(v, "bearer", 6) && v[6] == ' ') {
                Py_ssize_t i = 6;
                while (i < vlen && v[i] == ' ')
                    i++;
                Py_ssize_t j = i;
                while (j < vlen && v[j] != ' ' && v[j] != '\t')
                    j++;
                if (i < vlen && j == vlen) {
                    auth = PyBytes_FromStringAndSize((const char *)v + i, vlen - i);
                    if (auth == NULL)
                        goto error;
                }
            }
            break;
        case RULE_CONTENT_LENGTH:
            if (cl_value != NULL)
                goto not_fast;                          /* a repeat: compared by scan */
            cl_value = cl_value_of(v, vlen);
            if (cl_value == NULL) {
                if (PyErr_Occurred())
                    goto error;
                goto not_fast;                          /* bad_content_length */
            }
            break;
        case RULE_X_API_KEY:
            if (xkey == NULL) {
                xkey = PyBytes_FromStringAndSize((const char *)v, vlen);
                if (xkey == NULL)
                    goto error;
            }
            break;
        case RULE_UPGRADE:
            upgrade = 1;
            break;
        case RULE_TRANSFER_ENCODING:
            if (te_seen || vlen != 7 || !lower_eq(v, "chunked", 7))
                goto not_fast;                          /* bad_transfer_encoding */
            te_seen = chunked = 1;
            break;
        default:
            break;
        }
        unsigned mask = self->slots[which];
        if (mask) {
            if (extra_values == NULL) {
                extra_values = PyList_New(self->extra_slots);
                if (extra_values == NULL)
                    goto error;
                for (int s = 0; s < self->extra_slots; s++) {
                    Py_INCREF(Py_None);
                    PyList_SET_ITEM(extra_values, s, Py_None);
                }
            }
            PyObject *value = NULL;
            for (int s = 0; s < self->extra_slots; s++) {
                if (!(mask >> s & 1) || PyList_GET_ITEM(extra_values, s) != Py_None)
                    continue;
                if (value == NULL) {
                    value = PyBytes_FromStringAndSize((const char *)v, vlen);
                    if (value == NULL)
                        goto error;
                } else {
                    Py_INCREF(value);
                }
                Py_DECREF(Py_None);
                PyList_SET_ITEM(extra_values, s, value);
            }
        }
    }

    long errors = 0;
    if (!host && version_1)
        errors = self->missing_host;
    if (te_seen && cl_value != NULL)
        errors |= self->cl_and_te;
    PyObject *key_source, *key;
    if (auth != NULL) {
        key_source = self->key_auth;
        key = auth;
    } else if (xkey != NULL) {
        key_source = self->key_xkey;
        key = xkey;
    } else {
        key_source = self->key_none;
        key = Py_None;
    }
    Py_ssize_t path_end = target;
    while (path_end < target_end && buf[path_end] != '?')
        path_end++;
    PyObject *method_bytes = PyBytes_FromStringAndSize((const char *)buf, method_end);
    if (method_bytes == NULL)
        goto error;
    PyObject *method = PyDict_GetItemWithError(self->methods, method_bytes);
    Py_DECREF(method_bytes);
    if (method == NULL) {
        if (PyErr_Occurred())
            goto error;
        method = self->method_other;
    }
    result = Py_BuildValue("(y#OOOOOlOO)", (const char *)buf + target, path_end - target, key_source, key,
                           cl_value ? cl_value : Py_None, chunked ? Py_True : Py_False,
                           extra_values ? extra_values : Py_None, errors, method, upgrade ? Py_True : Py_False);
    goto done;
not_fast:
    result = Py_None;
    Py_INCREF(result);
    goto done;
error:
    result = NULL;
done:
    Py_XDECREF(cl_value);
    Py_XDECREF(auth);
    Py_XDECREF(xkey);
    Py_XDECREF(extra_values);
    return result;
}

/* keys.fingerprint(data, poly, seed) with its table: fingerprint(data, table (256 native uint64), seed). */
static PyObject *fingerprint(PyObject *module, PyObject *args) {
    const unsigned char *data, *table_bytes;
    Py_ssize_t n, table_len;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "y#y#K", &data, &n, &table_bytes, &table_len, &seed))
        return NULL;
    if (table_len != 256 * 8) {
        PyErr_SetString(PyExc_ValueError, "the table must be 256 uint64");
        return NULL;
    }
    uint64_t table[256];
    memcpy(table, table_bytes, sizeof table);
    uint64_t state = seed;
    for (Py_ssize_t i = 0; i < n; i++)
        state = (state << 8) ^ table[(state >> 56) ^ data[i]];
    return PyLong_FromUnsignedLongLong(state);
}

static PyMethodDef module_methods[] = {
    {"fingerprint", fingerprint, METH_VARARGS, "keys.fingerprint with the table of its polynomial."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef reader_methods[] = {
    {"read", (PyCFunction)reader_read, METH_O, "The reading of a well-formed header block, or None."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fast_header.Reader",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)reader_init,
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_methods = reader_methods,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "fast_header", NULL, -1, module_methods};

PyMODINIT_FUNC PyInit_fast_header(void) {
    const char *tchar = "!#$%&'*+-.^_`|~";
    for (int c = 0; c < 256; c++) {
        TCHAR[c] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                   (c != 0 && strchr(tchar, c) != NULL);
        VALUE[c] = c == '\t' || (c >= 0x20 && c <= 0x7e) || c >= 0x80;
    }
    if (PyType_Ready(&ReaderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ReaderType);
    if (PyModule_AddObject(m, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(&ReaderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

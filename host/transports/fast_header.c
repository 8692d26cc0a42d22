/* The "software" transport's hot path in C (host/transports/software.py): FastHeaderReader.read, the same reading
 * of a well-formed, complete header block, and None for any other packet (the caller then uses the parser model's
 * scan); SoftwareClassifier._records' fast loop over a batch of requests; and keys.fingerprint. Built on first use
 * by software.py (_native_module); tests/driver/test_software.py holds each to its Python version and to the model.
 *
 * Reader(limit, names, consts).read(packet) -> (path, key_source, key, cl_value, chunked, extra_values, errors,
 *                                             method, upgrade) or None
 *   names:  [(lower-case name, builtin rule or -1, extra slot mask)]   rules: the index in BUILTIN_NAMES
 *   consts: (KeySource.NONE, .AUTHORIZATION, .X_API_KEY, METHODS, Method.OTHER, missing_host, cl_and_te, slots)
 * Reader.context(ctx) -> Context: the model's tables and callbacks in ctx (built in SoftwareClassifier._lookaside),
 *   parsed once; the classifier keeps one per generation of the model's tables.
 * Context.classify(packets, now_ns, counts, out) -> one record per packet appended to out, decided at now_ns, the
 *   batch's global counts into counts.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

enum { RULE_HOST, RULE_CONTENT_LENGTH, RULE_TRANSFER_ENCODING, RULE_AUTHORIZATION, RULE_X_API_KEY, RULE_UPGRADE };
#define MAX_NAMES 64
#define MAX_SLOTS 16
#define CL_MAX_DIGITS 20

#define MAX_METHODS 16

static unsigned char TCHAR[256], VALUE[256];

typedef struct {
    PyObject_HEAD
    Py_ssize_t limit;
    int count;
    PyObject *names[MAX_NAMES];         /* lower-case names (bytes) */
    int rules[MAX_NAMES];
    unsigned slots[MAX_NAMES];
    PyObject *key_none, *key_auth, *key_xkey, *method_other;
    int method_count, method_other_code;
    PyObject *method_names[MAX_METHODS], *method_members[MAX_METHODS];     /* METHODS: bytes -> Method */
    int method_codes[MAX_METHODS];
    long missing_host, cl_and_te;
    int extra_slots;
} Reader;

/* One reading of a fast-path header block: spans into the packet, no Python object. */
typedef struct {
    Py_ssize_t path, path_len;          /* the target up to '?' */
    int key_source;                     /* 0 none, 1 Authorization (Bearer), 2 x-api-key */
    Py_ssize_t key, key_len;
    int has_cl, cl_overflow;
    unsigned long long cl;              /* saturated at 2^64-1 */
    int chunked, upgrade;
    long errors;
    int method;                         /* index into method_names, or -1: Method.OTHER */
    unsigned extra_set;                 /* slots with a value */
    Py_ssize_t extra[MAX_SLOTS], extra_len[MAX_SLOTS];
} Reading;

static void reader_clear(Reader *self) {
    for (int i = 0; i < self->count; i++)
        Py_CLEAR(self->names[i]);
    self->count = 0;
    for (int i = 0; i < self->method_count; i++) {
        Py_CLEAR(self->method_names[i]);
        Py_CLEAR(self->method_members[i]);
    }
    self->method_count = 0;
    Py_CLEAR(self->key_none);
    Py_CLEAR(self->key_auth);
    Py_CLEAR(self->key_xkey);
    Py_CLEAR(self->method_other);
}

static void reader_dealloc(Reader *self) {
    reader_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* An enum member's code (its _value_). */
static int member_code(PyObject *member, int *code) {
    PyObject *value = PyObject_GetAttrString(member, "_value_");
    if (value == NULL)
        return -1;
    long v = PyLong_AsLong(value);
    Py_DECREF(value);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *code = (int)v;
    return 0;
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
    if (PyDict_GET_SIZE(methods) > MAX_METHODS) {
        PyErr_SetString(PyExc_ValueError, "too many methods");
        return -1;
    }
    Py_ssize_t pos = 0;
    PyObject *mname, *member;
    while (PyDict_Next(methods, &pos, &mname, &member)) {
        int i = self->method_count;
        if (!PyBytes_Check(mname)) {
            PyErr_SetString(PyExc_TypeError, "method names must be bytes");
            return -1;
        }
        if (member_code(member, &self->method_codes[i]) < 0)
            return -1;
        Py_INCREF(mname); self->method_names[i] = mname;
        Py_INCREF(member); self->method_members[i] = member;
        self->method_count = i + 1;
    }
    if (member_code(other, &self->method_other_code) < 0)
        return -1;
    Py_INCREF(kn); self->key_none = kn;
    Py_INCREF(ka); self->key_auth = ka;
    Py_INCREF(kx); self->key_xkey = kx;
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

/* content_length_value: 1..20 ASCII digits, saturated at 2^64-1 (*overflow set); 0: bad. */
static int cl_digits(const unsigned char *v, Py_ssize_t n, unsigned long long *value, int *overflow) {
    if (n == 0 || n > CL_MAX_DIGITS)
        return 0;
    unsigned __int128 number = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return 0;
        number = number * 10 + (v[i] - '0');
    }
    *overflow = number > (unsigned __int128)UINT64_MAX;
    *value = *overflow ? UINT64_MAX : (unsigned long long)number;
    return 1;
}

/* FastHeaderReader.read's reading into *r: 1 on the fast path, 0 for any other packet (the caller's scan reads it). */
static int read_block(Reader *self, const unsigned char *buf, Py_ssize_t size, Reading *r) {
    /* The header end within the limit (a whole request's body is never searched). */
    const unsigned char *found = memmem(buf, (size_t)(size < self->limit ? size : self->limit), "\r\n\r\n", 4);
    if (found == NULL)
        return 0;
    Py_ssize_t hl = (found - buf) + 4;
    /* The request line: tchar+ SP [\x21-\x7e]+ " HTTP/1." [01] CRLF. Every run below stops at the block's CRs. */
    Py_ssize_t p = 0;
    while (TCHAR[buf[p]])
        p++;
    Py_ssize_t method_end = p;
    if (method_end == 0 || buf[p] != ' ')
        return 0;
    Py_ssize_t target = ++p;
    while (buf[p] >= 0x21 && buf[p] <= 0x7e)
        p++;
    Py_ssize_t target_end = p;
    if (target_end == target || hl - p < 11 || memcmp(buf + p, " HTTP/1.", 8) != 0 ||
        (buf[p + 8] != '0' && buf[p + 8] != '1') || buf[p + 9] != '\r' || buf[p + 10] != '\n')
        return 0;
    int version_1 = buf[p + 8] == '1';
    p += 11;

    int host = 0, te_seen = 0, has_auth = 0, has_xkey = 0;
    Py_ssize_t auth = 0, auth_len = 0, xkey = 0, xkey_len = 0;
    r->has_cl = r->chunked = r->upgrade = 0;
    r->extra_set = 0;
    for (;;) {
        if (buf[p] == '\r') {                           /* the empty line: the first CRLFCRLF, so at hl - 2 */
            if (p + 2 != hl || buf[p + 1] != '\n')
                return 0;
            break;
        }
        Py_ssize_t name = p;
        while (TCHAR[buf[p]])
            p++;
        Py_ssize_t name_len = p - name;
        if (name_len == 0 || buf[p] != ':')
            return 0;
        Py_ssize_t v0 = ++p;
        while (VALUE[buf[p]])
            p++;
        Py_ssize_t v1 = p;
        if (buf[p] != '\r' || buf[p + 1] != '\n')
            return 0;
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
                return 0;                               /* duplicate_host */
            host = 1;
            break;
        case RULE_AUTHORIZATION:
            if (!has_auth && vlen > 7 && lower_eq(v, "bearer", 6) && v[6] == ' ') {
                Py_ssize_t i = 6;
                while (i < vlen && v[i] == ' ')
                    i++;
                Py_ssize_t j = i;
                while (j < vlen && v[j] != ' ' && v[j] != '\t')
                    j++;
                if (i < vlen && j == vlen) {
                    has_auth = 1;
                    auth = v0 + i;
                    auth_len = vlen - i;
                }
            }
            break;
        case RULE_CONTENT_LENGTH:
            if (r->has_cl)
                return 0;                               /* a repeat: compared by scan */
            if (!cl_digits(v, vlen, &r->cl, &r->cl_overflow))
                return 0;                               /* bad_content_length */
            r->has_cl = 1;
            break;
        case RULE_X_API_KEY:
            if (!has_xkey) {
                has_xkey = 1;
                xkey = v0;
                xkey_len = vlen;
            }
            break;
        case RULE_UPGRADE:
            r->upgrade = 1;
            break;
        case RULE_TRANSFER_ENCODING:
            if (te_seen || vlen != 7 || !lower_eq(v, "chunked", 7))
                return 0;                               /* bad_transfer_encoding */
            te_seen = r->chunked = 1;
            break;
        default:
            break;
        }
        unsigned mask = self->slots[which] & ~r->extra_set;
        for (int s = 0; mask && s < self->extra_slots; s++) {
            if (mask >> s & 1) {
                r->extra[s] = v0;
                r->extra_len[s] = vlen;
            }
        }
        r->extra_set |= mask & ((1u << self->extra_slots) - 1);
    }

    r->errors = 0;
    if (!host && version_1)
        r->errors = self->missing_host;
    if (te_seen && r->has_cl)
        r->errors |= self->cl_and_te;
    if (has_auth) {
        r->key_source = 1;
        r->key = auth;
        r->key_len = auth_len;
    } else if (has_xkey) {
        r->key_source = 2;
        r->key = xkey;
        r->key_len = xkey_len;
    } else {
        r->key_source = 0;
    }
    Py_ssize_t path_end = target;
    while (path_end < target_end && buf[path_end] != '?')
        path_end++;
    r->path = target;
    r->path_len = path_end - target;
    r->method = -1;
    for (int i = 0; i < self->method_count; i++) {
        if (PyBytes_GET_SIZE(self->method_names[i]) == method_end &&
            memcmp(PyBytes_AS_STRING(self->method_names[i]), buf, method_end) == 0) {
            r->method = i;
            break;
        }
    }
    return 1;
}

/* The reading as FastHeaderReader.read returns it. */
static PyObject *reading_tuple(Reader *self, const unsigned char *buf, const Reading *r) {
    PyObject *key = Py_None, *key_source = self->key_none, *cl_value = Py_None, *extra_values = Py_None, *result;
    Py_INCREF(key);
    Py_INCREF(cl_value);
    Py_INCREF(extra_values);
    if (r->key_source) {
        key_source = r->key_source == 1 ? self->key_auth : self->key_xkey;
        Py_SETREF(key, PyBytes_FromStringAndSize((const char *)buf + r->key, r->key_len));
        if (key == NULL)
            goto error;
    }
    if (r->has_cl) {
        Py_SETREF(cl_value, Py_BuildValue("(KO)", r->cl, r->cl_overflow ? Py_True : Py_False));
        if (cl_value == NULL)
            goto error;
    }
    if (r->extra_set) {
        Py_SETREF(extra_values, PyList_New(self->extra_slots));
        if (extra_values == NULL)
            goto error;
        for (int s = 0; s < self->extra_slots; s++) {
            PyObject *value = Py_None;
            if (r->extra_set >> s & 1) {
                /* One object per distinct span (a name in several slots gives the same value). */
                for (int t = 0; t < s; t++) {
                    if ((r->extra_set >> t & 1) && r->extra[t] == r->extra[s] && r->extra_len[t] == r->extra_len[s]) {
                        value = PyList_GET_ITEM(extra_values, t);
                        break;
                    }
                }
                if (value == Py_None) {
                    value = PyBytes_FromStringAndSize((const char *)buf + r->extra[s], r->extra_len[s]);
                    if (value == NULL)
                        goto error;
                } else {
                    Py_INCREF(value);
                }
            } else {
                Py_INCREF(value);
            }
            PyList_SET_ITEM(extra_values, s, value);
        }
    }
    result = Py_BuildValue("(y#OOOOOlOO)", (const char *)buf + r->path, r->path_len, key_source, key, cl_value,
                           r->chunked ? Py_True : Py_False, extra_values, r->errors,
                           r->method < 0 ? self->method_other : self->method_members[r->method],
                           r->upgrade ? Py_True : Py_False);
    Py_DECREF(key);
    Py_DECREF(cl_value);
    Py_DECREF(extra_values);
    return result;
error:
    Py_XDECREF(key);
    Py_XDECREF(cl_value);
    Py_XDECREF(extra_values);
    return NULL;
}

static PyObject *reader_read(Reader *self, PyObject *packet) {
    if (!PyBytes_CheckExact(packet))
        Py_RETURN_NONE;                                 /* the caller's scan reads it */
    Reading r;
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(packet);
    if (!read_block(self, buf, PyBytes_GET_SIZE(packet), &r))
        Py_RETURN_NONE;
    return reading_tuple(self, buf, &r);
}

/* -- SoftwareClassifier's fast path, one call per batch ------------------------------------------------------------ */

typedef unsigned __int128 u128;

/* What a batch needs of the model's tables; see the ctx tuple in SoftwareClassifier._lookaside (software.py). */
typedef struct {
    const unsigned char *goes_on;       /* per method code: 1 when the request policy lets an origin-form request on */
    PyObject *fp_values;                /* FingerprintCache.values: value -> fingerprint */
    const uint64_t *fp_table;
    unsigned long long fp_seed;
    Py_ssize_t fp_size, route_cache_max;
    PyObject *slots, *lookup;           /* this batch's fingerprint -> slot or None; LimiterModel.lookup */
    int unknown_401;
    PyObject *routes, *route_of;        /* path -> (route_match, route_class); ParserConfig.route */
    int by_cl, by_extra, by_estimate;
    unsigned long long cost_fixed, cost_scale, cost_scale_cl, cost_max;
    PyObject *plan_regs, *plan_of, *last_t, *req_t, *cost_t, *allowed_t, *rejected_t;
    int q;
    unsigned long long time_mask, dt_max, unit, counter_mask, now_ns;
    PyObject *hash_source;              /* per route class: -1 the key, -2 nothing, else an extra slot */
    PyObject *routed, *route_fn;        /* (class, hashed fp) -> (status, pool, backend, hash); SoftwareClassifier._route */
    PyObject *record_cache, *new_record, *general;
    long f_base, f_route, f_chunked, f_cl, f_found;
    PyObject *forward, *reject, *ok, *rate_limited, *no_backend, *unknown_tenant, *status_401, *status_429;
    PyObject *status_ok, *status_unavailable, *zero, *u64_max;
    /* The router's active buffer, when ctx has it (else route_fn decides): the Toeplitz tables of the key's first 8
     * byte positions (8 x 256 uint32), each class's pool (16 bytes), each pool's (enabled, base, m) (uint64), the
     * table's words (uint32), ids per word and id bits. */
    int has_router;
    const uint32_t *toeplitz8;
    const unsigned char *class_pool;
    const unsigned long long *pools;
    Py_ssize_t pool_count;
    const uint32_t *words;
    Py_ssize_t word_count, per_word, id_bits;
} Batch;

typedef struct {
    int valid;
    unsigned long long req_rate, cost_rate, inv_req, inv_cost;
    u128 req_cap, cost_cap;
} Plan;

static PyObject *sixty_four;

/* A non-negative int below 2^128. */
static int as_u128(PyObject *v, u128 *out) {
    unsigned long long lo = PyLong_AsUnsignedLongLong(v);
    if (lo != (unsigned long long)-1 || !PyErr_Occurred()) {
        *out = lo;
        return 0;
    }
    if (!PyErr_ExceptionMatches(PyExc_OverflowError))
        return -1;
    PyErr_Clear();
    PyObject *hi_obj = PyNumber_Rshift(v, sixty_four);
    if (hi_obj == NULL)
        return -1;
    unsigned long long hi = PyLong_AsUnsignedLongLong(hi_obj);
    Py_DECREF(hi_obj);
    if (hi == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    lo = PyLong_AsUnsignedLongLongMask(v);
    *out = ((u128)hi << 64) | lo;
    return 0;
}

static PyObject *from_u128(u128 x) {
    if ((x >> 64) == 0)
        return PyLong_FromUnsignedLongLong((unsigned long long)x);
    PyObject *hi = PyLong_FromUnsignedLongLong((unsigned long long)(x >> 64));
    PyObject *lo = PyLong_FromUnsignedLongLong((unsigned long long)x);
    PyObject *shifted = hi && lo ? PyNumber_Lshift(hi, sixty_four) : NULL;
    PyObject *result = shifted ? PyNumber_Or(shifted, lo) : NULL;
    Py_XDECREF(hi);
    Py_XDECREF(lo);
    Py_XDECREF(shifted);
    return result;
}

/* (a * b) >> 64 for a < 2^128, b <= 2^64, when the result fits 128 bits (it is at most a). */
static u128 mul_shift64(u128 a, u128 b) {
    return (a >> 64) * b + (((u128)(unsigned long long)a * b) >> 64);
}

/* FingerprintCache.__call__ on a span: a new reference. */
static PyObject *batch_fp(Batch *b, const unsigned char *v, Py_ssize_t n) {
    PyObject *value = PyBytes_FromStringAndSize((const char *)v, n);
    if (value == NULL)
        return NULL;
    PyObject *fp = PyDict_GetItemWithError(b->fp_values, value);
    if (fp != NULL) {
        Py_INCREF(fp);
        Py_DECREF(value);
        return fp;
    }
    if (PyErr_Occurred())
        goto error;
    uint64_t state = b->fp_seed;
    for (Py_ssize_t i = 0; i < n; i++)
        state = (state << 8) ^ b->fp_table[(state >> 56) ^ v[i]];
    fp = PyLong_FromUnsignedLongLong(state);
    if (fp == NULL)
        goto error;
    if (PyDict_GET_SIZE(b->fp_values) >= b->fp_size)
        PyDict_Clear(b->fp_values);
    if (PyDict_SetItem(b->fp_values, value, fp) < 0) {
        Py_DECREF(fp);
        goto error;
    }
    Py_DECREF(value);
    return fp;
error:
    Py_DECREF(value);
    return NULL;
}

/* The record for a record key (the record cache, else new_record): a borrowed reference. */
static PyObject *batch_record(Batch *b, PyObject *key) {
    PyObject *record = PyDict_GetItemWithError(b->record_cache, key);
    if (record != NULL || PyErr_Occurred())
        return record;
    record = PyObject_CallOneArg(b->new_record, key);       /* stores it in the cache */
    if (record == NULL)
        return NULL;
    Py_DECREF(record);                                      /* the cache holds it */
    record = PyDict_GetItemWithError(b->record_cache, key);
    if (record == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_RuntimeError, "new_record did not cache its record");
    return record;
}

/* The general path's record for a packet (fields: the reading, or None). Borrowed. */
static PyObject *batch_general(Batch *b, PyObject *packet, PyObject *fields) {
    PyObject *key = PyObject_CallFunctionObjArgs(b->general, packet, fields, NULL);
    if (key == NULL)
        return NULL;
    PyObject *record = batch_record(b, key);
    Py_DECREF(key);
    return record;
}

/* One fast-path request (read as r, past the policy, with a key): its record, borrowed; *general set when it must go
 * the general way after all (the default tenant or a punt decides). */
static PyObject *batch_fast(Batch *b, Plan *plans, Py_ssize_t plan_count, const unsigned char *buf, const Reading *r,
                            Py_ssize_t counts[5], int *general) {
    PyObject *key_fp = NULL, *slot = NULL, *path = NULL, *hashed_fp = NULL, *rkey = NULL, *key = NULL;
    PyObject *route_owned = NULL;
    PyObject *record = NULL, *route_verdict, *route;
    *general = 0;
    key_fp = batch_fp(b, buf + r->key, r->key_len);
    if (key_fp == NULL)
        goto done;
    slot = PyDict_GetItemWithError(b->slots, key_fp);
    if (slot != NULL) {
        Py_INCREF(slot);
    } else {
        if (PyErr_Occurred())
            goto done;
        slot = PyObject_CallOneArg(b->lookup, key_fp);
        if (slot == NULL || PyDict_SetItem(b->slots, key_fp, slot) < 0)
            goto done;
    }
    if (slot == Py_None && !b->unknown_401) {
        *general = 1;                                   /* the default tenant's or a punt: through decide_fields */
        goto done;
    }
    /* The request: as _General reads it. */
    path = PyBytes_FromStringAndSize((const char *)buf + r->path, r->path_len);
    if (path == NULL)
        goto done;
    route = PyDict_GetItemWithError(b->routes, path);
    if (route == NULL) {
        if (PyErr_Occurred())
            goto done;
        route = PyObject_CallOneArg(b->route_of, path);
        if (route == NULL)
            goto done;
        if (PyDict_GET_SIZE(b->routes) >= b->route_cache_max)
            PyDict_Clear(b->routes);
        int failed = PyDict_SetItem(b->routes, path, route);
        Py_DECREF(route);                               /* the dict holds it */
        if (failed < 0)
            goto done;
    }
    if (!PyTuple_Check(route) || PyTuple_GET_SIZE(route) != 2) {
        PyErr_SetString(PyExc_TypeError, "a route is (route_match, route_class)");
        goto done;
    }
    int route_match = PyObject_IsTrue(PyTuple_GET_ITEM(route, 0));
    long route_class = PyLong_AsLong(PyTuple_GET_ITEM(route, 1));
    if (route_match < 0 || (route_class == -1 && PyErr_Occurred()))
        goto done;
    long flags = b->f_base | (route_match ? b->f_route : 0) | (r->chunked ? b->f_chunked : 0) |
                 (r->has_cl ? b->f_cl : 0);
    /* The limiter (LimiterModel.decide_fields). */
    int rejected_401 = 0, allowed = 0;
    u128 wait = 0;
    if (slot == Py_None) {                              /* an unknown key under a policy that rejects it: 401 */
        flags ^= b->f_found;
        rejected_401 = 1;
        counts[2]++;
    } else {
        /* The cost (LimiterModel.cost). */
        unsigned long long number;
        int overflow;
        u128 cost;
        if (b->by_extra && (r->extra_set & 1) && cl_digits(buf + r->extra[0], r->extra_len[0], &number, &overflow)) {
            cost = ((u128)number * b->cost_scale) >> 16;
            if (cost > b->cost_max)
                cost = b->cost_max;
        } else if (r->has_cl && (b->by_cl || b->by_estimate)) {
            cost = ((u128)r->cl * (b->by_cl ? b->cost_scale : b->cost_scale_cl)) >> 16;
            if (cost > b->cost_max)
                cost = b->cost_max;
        } else {
            cost = b->cost_fixed;
        }
        /* The buckets of the key's slot. */
        Py_ssize_t s = PyLong_AsSsize_t(slot);
        if (s == -1 && PyErr_Occurred())
            goto done;
        /* (Checked at each use: the callbacks run Python code between requests.) */
        if (s < 0 || s >= PyList_GET_SIZE(b->last_t) || s >= PyList_GET_SIZE(b->req_t) ||
            s >= PyList_GET_SIZE(b->cost_t) || s >= PyList_GET_SIZE(b->plan_of) ||
            s >= PyList_GET_SIZE(b->allowed_t) || s >= PyList_GET_SIZE(b->rejected_t)) {
            PyErr_SetString(PyExc_IndexError, "slot out of range");
            goto done;
        }
        Py_ssize_t plan_index = PyLong_AsSsize_t(PyList_GET_ITEM(b->plan_of, s));
        if (plan_index == -1 && PyErr_Occurred())
            goto done;
        if (plan_index < 0 || plan_index >= plan_count || plan_index >= PyList_GET_SIZE(b->plan_regs)) {
            PyErr_SetString(PyExc_IndexError, "plan out of range");
            goto done;
        }
        Plan *plan = &plans[plan_index];
        if (!plan->valid) {
            PyObject *regs = PyList_GET_ITEM(b->plan_regs, plan_index);
            u128 v[6];
            if (!PyTuple_Check(regs) || PyTuple_GET_SIZE(regs) != 6) {
                PyErr_SetString(PyExc_TypeError, "plan registers are a 6-tuple");
                goto done;
            }
            for (int i = 0; i < 6; i++)
                if (as_u128(PyTuple_GET_ITEM(regs, i), &v[i]) < 0)
                    goto done;
            plan->req_rate = (unsigned long long)v[0];
            plan->req_cap = v[1];
            plan->cost_rate = (unsigned long long)v[2];
            plan->cost_cap = v[3];
            plan->inv_req = (unsigned long long)v[4];
            plan->inv_cost = (unsigned long long)v[5];
            plan->valid = 1;
        }
        u128 last, req, tokens;
        if (as_u128(PyList_GET_ITEM(b->last_t, s), &last) < 0 || as_u128(PyList_GET_ITEM(b->req_t, s), &req) < 0 ||
            as_u128(PyList_GET_ITEM(b->cost_t, s), &tokens) < 0)
            goto done;
        unsigned long long now = b->now_ns >> b->q;
        unsigned long long dt = (now - (unsigned long long)last) & b->time_mask;
        if (dt > b->dt_max)
            dt = b->dt_max;
        req += (u128)dt * plan->req_rate;
        if (req > plan->req_cap)
            req = plan->req_cap;
        tokens += (u128)dt * plan->cost_rate;
        if (tokens > plan->cost_cap)
            tokens = plan->cost_cap;
        u128 need = cost * b->unit;
        int req_ok = plan->req_rate == 0 || req >= b->unit;
        int cost_ok = plan->cost_rate == 0 || tokens >= need;
        PyObject *counter_list;
        if (req_ok && cost_ok) {
            if (plan->req_rate != 0)
                req -= b->unit;
            if (plan->cost_rate != 0)
                tokens -= need;
            counter_list = b->allowed_t;
            allowed = 1;
            counts[0]++;
        } else {
            wait = req_ok ? 0 : mul_shift64(b->unit - req - 1, (u128)plan->inv_req + 1) + 1;
            if (!cost_ok) {
                u128 wait_cost = mul_shift64(need - tokens - 1, (u128)plan->inv_cost + 1) + 1;
                if (wait_cost > wait)
                    wait = wait_cost;
            }
            counter_list = b->rejected_t;
            counts[1]++;
        }
        unsigned long long n = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(counter_list, s));
        if (n == (unsigned long long)-1 && PyErr_Occurred())
            goto done;
        PyObject *now_obj = PyLong_FromUnsignedLongLong(now), *req_obj = from_u128(req);
        PyObject *tokens_obj = from_u128(tokens), *n_obj = PyLong_FromUnsignedLongLong((n + 1) & b->counter_mask);
        if (now_obj == NULL || req_obj == NULL || tokens_obj == NULL || n_obj == NULL) {
            Py_XDECREF(now_obj);
            Py_XDECREF(req_obj);
            Py_XDECREF(tokens_obj);
            Py_XDECREF(n_obj);
            goto done;
        }
        PyList_SetItem(b->last_t, s, now_obj);           /* (steal the new references) */
        PyList_SetItem(b->req_t, s, req_obj);
        PyList_SetItem(b->cost_t, s, tokens_obj);
        PyList_SetItem(counter_list, s, n_obj);
    }
    /* The router (RouterModel.route_fields). */
    long rc = route_class & 0xF;
    if (rc >= PyList_GET_SIZE(b->hash_source)) {
        PyErr_SetString(PyExc_IndexError, "route class out of range");
        goto done;
    }
    long source = PyLong_AsLong(PyList_GET_ITEM(b->hash_source, rc));
    if (source == -1 && PyErr_Occurred())
        goto done;
    if (source == -1) {
        hashed_fp = key_fp;
        Py_INCREF(hashed_fp);
    } else if (source < 0 || source >= MAX_SLOTS || !(r->extra_set >> source & 1)) {
        hashed_fp = Py_None;
        Py_INCREF(hashed_fp);
    } else {
        hashed_fp = batch_fp(b, buf + r->extra[source], r->extra_len[source]);
        if (hashed_fp == NULL)
            goto done;
    }
    route_verdict = NULL;
    if (b->has_router) {
        /* SoftwareClassifier._route: the Toeplitz hash of the fingerprint's 8 bytes (big-endian), then
         * RouterModel.select on the active buffer. Out of the tables' range: left to route_fn, which says why. */
        unsigned long long hash = 0;
        if (hashed_fp != Py_None) {
            unsigned long long v = PyLong_AsUnsignedLongLongMask(hashed_fp);
            if (v == (unsigned long long)-1 && PyErr_Occurred())
                goto done;
            for (int p = 0; p < 8; p++)
                hash ^= b->toeplitz8[p * 256 + ((v >> (56 - 8 * p)) & 0xFF)];
        }
        unsigned pool = b->class_pool[rc] & 0xF;
        int enabled = pool < b->pool_count && b->pools[3 * pool];
        unsigned long long index = 0, backend = 0;
        int in_range = 1;
        if (enabled) {
            index = b->pools[3 * pool + 1] + (unsigned long long)(((u128)hash * b->pools[3 * pool + 2]) >> 32);
            if ((Py_ssize_t)(index / b->per_word) >= b->word_count)
                in_range = 0;
            else
                backend = ((unsigned long long)b->words[index / b->per_word] >> (b->id_bits * (index % b->per_word))) &
                          ((1ull << b->id_bits) - 1);
        }
        if (in_range) {
            route_owned = Py_BuildValue("(OIKK)", enabled ? b->status_ok : b->status_unavailable, pool, backend,
                                        hash);
            if (route_owned == NULL)
                goto done;
            route_verdict = route_owned;
        }
    }
    if (route_verdict == NULL) {                        /* remembered per (class, hashed fp), else route_fn */
        rkey = Py_BuildValue("(lO)", rc, hashed_fp);
        if (rkey == NULL)
            goto done;
        route_verdict = PyDict_GetItemWithError(b->routed, rkey);
        if (route_verdict == NULL) {
            if (PyErr_Occurred())
                goto done;
            route_verdict = PyObject_CallFunction(b->route_fn, "lO", rc, hashed_fp);
            if (route_verdict == NULL)
                goto done;
            int failed = PyDict_SetItem(b->routed, rkey, route_verdict);
            Py_DECREF(route_verdict);
            if (failed < 0)
                goto done;
        }
    }
    if (!PyTuple_Check(route_verdict) || PyTuple_GET_SIZE(route_verdict) != 4) {
        PyErr_SetString(PyExc_TypeError, "a route verdict is (status, pool, backend, hash)");
        goto done;
    }
    PyObject *status = PyTuple_GET_ITEM(route_verdict, 0), *pool = PyTuple_GET_ITEM(route_verdict, 1);
    PyObject *backend = PyTuple_GET_ITEM(route_verdict, 2), *hashed = PyTuple_GET_ITEM(route_verdict, 3);
    int status_ok = PyObject_RichCompareBool(status, b->status_ok, Py_EQ);
    if (status_ok < 0)
        goto done;
    counts[status_ok ? 3 : 4]++;
    /* The record (verdict_fields). */
    PyObject *t = Py_True, *f = Py_False, *z = b->zero, *flags_obj = PyLong_FromLong(flags);
    if (flags_obj == NULL)
        goto done;
    if (allowed) {
        if (status_ok)
            key = PyTuple_Pack(13, b->forward, b->status_ok, b->ok, t, slot, t, pool, t, backend, f, z,
                               flags_obj, hashed);
        else
            key = PyTuple_Pack(13, b->reject, b->status_unavailable, b->no_backend, t, slot, t, pool, f, z, f, z,
                               flags_obj, hashed);
    } else if (rejected_401) {
        key = PyTuple_Pack(13, b->reject, b->status_401, b->unknown_tenant, f, z, f, z, f, z, f, z,
                           flags_obj, hashed);
    } else {
        PyObject *retry;
        if (wait >> (64 - b->q)) {
            retry = b->u64_max;
            Py_INCREF(retry);
        } else {
            retry = PyLong_FromUnsignedLongLong(
                ((unsigned long long)wait << b->q) - (b->now_ns & ((1ull << b->q) - 1)));
            if (retry == NULL) {
                Py_DECREF(flags_obj);
                goto done;
            }
        }
        key = PyTuple_Pack(13, b->reject, b->status_429, b->rate_limited, t, slot, f, z, f, z, t, retry,
                           flags_obj, hashed);
        Py_DECREF(retry);
    }
    Py_DECREF(flags_obj);
    if (key == NULL)
        goto done;
    record = batch_record(b, key);
done:
    Py_XDECREF(key_fp);
    Py_XDECREF(slot);
    Py_XDECREF(path);
    Py_XDECREF(hashed_fp);
    Py_XDECREF(rkey);
    Py_XDECREF(key);
    Py_XDECREF(route_owned);
    return record;
}

/* ctx (built in SoftwareClassifier._lookaside) into b: borrowed references, alive while ctx is. */
static int parse_ctx(PyObject *ctx, Batch *b) {
    PyObject *router;
    const char *goes_on, *fp_table;
    Py_ssize_t goes_on_len, fp_table_len;
    if (!PyTuple_Check(ctx)) {
        PyErr_SetString(PyExc_TypeError, "ctx must be a tuple");
        return -1;
    }
    if (!PyArg_ParseTuple(
            ctx, "y#O!y#KnnO!OpO!OpppKKKKO!O!O!O!O!O!O!iKKKKKO!O!OO!OO(lllll)(OOOOOOOOOOOO)O",
            &goes_on, &goes_on_len, &PyDict_Type, &b->fp_values, &fp_table, &fp_table_len, &b->fp_seed, &b->fp_size,
            &b->route_cache_max, &PyDict_Type, &b->slots, &b->lookup, &b->unknown_401,
            &PyDict_Type, &b->routes, &b->route_of, &b->by_cl, &b->by_extra, &b->by_estimate, &b->cost_fixed,
            &b->cost_scale, &b->cost_scale_cl, &b->cost_max, &PyList_Type, &b->plan_regs, &PyList_Type, &b->plan_of,
            &PyList_Type, &b->last_t, &PyList_Type, &b->req_t, &PyList_Type, &b->cost_t, &PyList_Type, &b->allowed_t,
            &PyList_Type, &b->rejected_t, &b->q, &b->time_mask, &b->dt_max, &b->unit, &b->counter_mask, &b->now_ns,
            &PyList_Type, &b->hash_source, &PyDict_Type, &b->routed, &b->route_fn, &PyDict_Type, &b->record_cache,
            &b->new_record, &b->general, &b->f_base, &b->f_route, &b->f_chunked, &b->f_cl, &b->f_found, &b->forward,
            &b->reject, &b->ok, &b->rate_limited, &b->no_backend, &b->unknown_tenant, &b->status_401, &b->status_429,
            &b->status_ok, &b->status_unavailable, &b->zero, &b->u64_max, &router))
        return -1;
    b->has_router = 0;
    if (router != Py_None) {
        const char *t8, *cp, *pl, *wd;
        Py_ssize_t t8_len, cp_len, pl_len, wd_len;
        if (!PyArg_ParseTuple(router, "y#y#y#y#nn", &t8, &t8_len, &cp, &cp_len, &pl, &pl_len, &wd, &wd_len,
                              &b->per_word, &b->id_bits))
            return -1;
        if (t8_len != 8 * 256 * 4 || cp_len != 16 || pl_len % 24 != 0 || wd_len % 4 != 0 || b->per_word < 1 ||
            b->id_bits < 1 || b->id_bits > 32) {
            PyErr_SetString(PyExc_ValueError, "inconsistent router tables");
            return -1;
        }
        b->toeplitz8 = (const uint32_t *)t8;
        b->class_pool = (const unsigned char *)cp;
        b->pools = (const unsigned long long *)pl;
        b->pool_count = pl_len / 24;
        b->words = (const uint32_t *)wd;
        b->word_count = wd_len / 4;
        b->has_router = 1;
    }
    Py_ssize_t n = PyList_GET_SIZE(b->last_t);
    if (goes_on_len != 16 || fp_table_len != 256 * 8 || b->q < 0 || b->q > 63 ||
        PyList_GET_SIZE(b->hash_source) != 16 || PyList_GET_SIZE(b->plan_of) != n || PyList_GET_SIZE(b->req_t) != n ||
        PyList_GET_SIZE(b->cost_t) != n || PyList_GET_SIZE(b->allowed_t) != n || PyList_GET_SIZE(b->rejected_t) != n) {
        PyErr_SetString(PyExc_ValueError, "inconsistent batch tables");
        return -1;
    }
    b->goes_on = (const unsigned char *)goes_on;
    b->fp_table = (const uint64_t *)fp_table;
    return 0;
}

/* The batch loop: one record per packet appended to out, the global counts into counts_list (a list of 5), both also
 * when an error stops the batch (for the requests decided before it). plans: plan_count entries, filled on first
 * use. */
static PyObject *run_batch(Reader *self, Batch *b, Plan *plans, Py_ssize_t plan_count, PyObject *packets,
                           PyObject *counts_list, PyObject *out) {
    Py_ssize_t count = PyList_GET_SIZE(packets), counts[5] = {0, 0, 0, 0, 0};
    PyObject *result = Py_None;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *packet = PyList_GET_ITEM(packets, i), *record;
        Reading r;
        const unsigned char *buf;
        if (!PyBytes_CheckExact(packet) ||
            !read_block(self, buf = (const unsigned char *)PyBytes_AS_STRING(packet), PyBytes_GET_SIZE(packet), &r)) {
            record = batch_general(b, packet, Py_None);
        } else {
            int general = r.errors || r.key_source == 0 || r.upgrade || r.path_len == 0 || buf[r.path] != '/' ||
                          !b->goes_on[(r.method < 0 ? self->method_other_code : self->method_codes[r.method]) & 15];
            record = general ? NULL : batch_fast(b, plans, plan_count, buf, &r, counts, &general);
            if (general) {
                PyObject *fields = reading_tuple(self, buf, &r);
                if (fields == NULL) {
                    result = NULL;
                    break;
                }
                record = batch_general(b, packet, fields);
                Py_DECREF(fields);
            }
        }
        if (record == NULL || PyList_Append(out, record) < 0) {      /* (record: borrowed from the record cache) */
            result = NULL;
            break;
        }
    }
    for (int k = 0; k < 5; k++) {
        PyObject *v = PyLong_FromSsize_t(counts[k]);
        if (v == NULL || PyList_SetItem(counts_list, k, v) < 0) {
            result = NULL;
            break;
        }
    }
    Py_XINCREF(result);
    return result;
}

static int check_counts(PyObject *counts_list) {
    if (PyList_GET_SIZE(counts_list) != 5) {
        PyErr_SetString(PyExc_ValueError, "counts must be a list of 5");
        return -1;
    }
    return 0;
}

/* A Context: ctx parsed once and kept (with the plans derived from its plan registers) for as long as the tables it
 * names do not change (SoftwareClassifier builds one per generation of the model); each batch then costs its own
 * requests only. */
typedef struct {
    PyObject_HEAD
    Reader *reader;
    PyObject *ctx;
    Batch b;
    Plan *plans;
    Py_ssize_t plan_count;
} Context;

static PyTypeObject ContextType;

/* (Garbage-collected: ctx holds the classifier's bound methods, and the classifier holds the context.) */
static int context_traverse(Context *self, visitproc visit, void *arg) {
    Py_VISIT(self->reader);
    Py_VISIT(self->ctx);
    return 0;
}

static int context_clear(Context *self) {
    Py_CLEAR(self->reader);
    Py_CLEAR(self->ctx);                /* (b's borrowed references go with it: classify then refuses) */
    return 0;
}

static void context_dealloc(Context *self) {
    PyObject_GC_UnTrack(self);
    context_clear(self);
    PyMem_Free(self->plans);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Reader.context(ctx) -> Context. */
static PyObject *reader_context(Reader *self, PyObject *ctx) {
    Batch b;
    if (parse_ctx(ctx, &b) < 0)
        return NULL;
    Py_ssize_t plan_count = PyList_GET_SIZE(b.plan_regs);
    Plan *plans = PyMem_Calloc(plan_count ? plan_count : 1, sizeof(Plan));
    if (plans == NULL)
        return PyErr_NoMemory();
    Context *c = PyObject_GC_New(Context, &ContextType);
    if (c == NULL) {
        PyMem_Free(plans);
        return NULL;
    }
    Py_INCREF(self);
    Py_INCREF(ctx);
    c->reader = self;
    c->ctx = ctx;
    c->b = b;
    c->plans = plans;
    c->plan_count = plan_count;
    PyObject_GC_Track(c);
    return (PyObject *)c;
}

/* Context.classify(packets, now_ns, counts, out): SoftwareClassifier's loop for lookaside requests on this context's
 * tables at now_ns. */
static PyObject *context_classify(Context *self, PyObject *args) {
    PyObject *packets, *counts_list, *out;
    unsigned long long now_ns;
    if (!PyArg_ParseTuple(args, "O!KO!O!", &PyList_Type, &packets, &now_ns, &PyList_Type, &counts_list, &PyList_Type,
                          &out))
        return NULL;
    if (check_counts(counts_list) < 0)
        return NULL;
    if (self->ctx == NULL) {
        PyErr_SetString(PyExc_ValueError, "the context was cleared");
        return NULL;
    }
    self->b.now_ns = now_ns;
    return run_batch(self->reader, &self->b, self->plans, self->plan_count, packets, counts_list, out);
}

static PyMethodDef context_methods[] = {
    {"classify", (PyCFunction)context_classify, METH_VARARGS, "SoftwareClassifier's loop over a batch, at now_ns."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ContextType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fast_header.Context",
    .tp_basicsize = sizeof(Context),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)context_dealloc,
    .tp_traverse = (traverseproc)context_traverse,
    .tp_clear = (inquiry)context_clear,
    .tp_methods = context_methods,
};

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
    {"context", (PyCFunction)reader_context, METH_O, "The batch tables of ctx, parsed once: a Context."},
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

/* RecordMaker(record_type, names, actions, reasons, cache, cache_max, zero): SoftwareClassifier._record in C, the
 * loop's new_record. Called with a record key (see software.py, _ACTIONS), it makes the record as
 * record_type(actions[key[0]], key[1], reasons[key[2]], *key[3:], zero) would, each field set as object.__setattr__
 * sets it (the frozen dataclass's __init__ does the same, a Python call per field), and stores it in cache (emptied
 * first when it holds cache_max). */
typedef struct {
    PyObject_HEAD
    PyTypeObject *type;
    PyObject *names, *actions, *reasons, *cache, *zero;
    Py_ssize_t cache_max;
} RecordMaker;

static PyObject *empty_tuple;

static int maker_traverse(RecordMaker *self, visitproc visit, void *arg) {
    Py_VISIT(self->type);
    Py_VISIT(self->names);
    Py_VISIT(self->actions);
    Py_VISIT(self->reasons);
    Py_VISIT(self->cache);
    Py_VISIT(self->zero);
    return 0;
}

static int maker_clear(RecordMaker *self) {
    Py_CLEAR(self->type);
    Py_CLEAR(self->names);
    Py_CLEAR(self->actions);
    Py_CLEAR(self->reasons);
    Py_CLEAR(self->cache);
    Py_CLEAR(self->zero);
    return 0;
}

static void maker_dealloc(RecordMaker *self) {
    PyObject_GC_UnTrack(self);
    maker_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int maker_init(RecordMaker *self, PyObject *args, PyObject *kwds) {
    PyTypeObject *type;
    PyObject *names, *actions, *reasons, *cache, *zero;
    Py_ssize_t cache_max;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!nO", &PyType_Type, &type, &PyTuple_Type, &names, &PyDict_Type, &actions,
                          &PyDict_Type, &reasons, &PyDict_Type, &cache, &cache_max, &zero))
        return -1;
    if (PyTuple_GET_SIZE(names) != 14 || cache_max < 1) {
        PyErr_SetString(PyExc_ValueError, "a record has 14 fields, and the cache room for one at least");
        return -1;
    }
    for (Py_ssize_t i = 0; i < 14; i++)
        if (!PyUnicode_Check(PyTuple_GET_ITEM(names, i))) {
            PyErr_SetString(PyExc_TypeError, "field names are str");
            return -1;
        }
    maker_clear(self);
    Py_INCREF(type);
    Py_INCREF(names);
    Py_INCREF(actions);
    Py_INCREF(reasons);
    Py_INCREF(cache);
    Py_INCREF(zero);
    self->type = type;
    self->names = names;
    self->actions = actions;
    self->reasons = reasons;
    self->cache = cache;
    self->zero = zero;
    self->cache_max = cache_max;
    return 0;
}

static PyObject *maker_call(RecordMaker *self, PyObject *args, PyObject *kwds) {
    PyObject *key;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "RecordMaker takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!", &PyTuple_Type, &key))
        return NULL;
    if (self->type == NULL) {
        PyErr_SetString(PyExc_ValueError, "the record maker was cleared");
        return NULL;
    }
    if (PyTuple_GET_SIZE(key) != 13) {
        PyErr_SetString(PyExc_ValueError, "a record key has 13 items");
        return NULL;
    }
    PyObject *action = PyDict_GetItemWithError(self->actions, PyTuple_GET_ITEM(key, 0));
    PyObject *reason = action == NULL ? NULL : PyDict_GetItemWithError(self->reasons, PyTuple_GET_ITEM(key, 2));
    if (reason == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, action == NULL ? PyTuple_GET_ITEM(key, 0) : PyTuple_GET_ITEM(key, 2));
        return NULL;
    }
    PyObject *record = self->type->tp_new(self->type, empty_tuple, NULL);
    if (record == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < 14; i++) {
        PyObject *value = i == 0 ? action : i == 2 ? reason : i == 13 ? self->zero : PyTuple_GET_ITEM(key, i);
        if (PyObject_GenericSetAttr(record, PyTuple_GET_ITEM(self->names, i), value) < 0) {
            Py_DECREF(record);
            return NULL;
        }
    }
    if (PyDict_GET_SIZE(self->cache) >= self->cache_max)
        PyDict_Clear(self->cache);
    if (PyDict_SetItem(self->cache, key, record) < 0) {
        Py_DECREF(record);
        return NULL;
    }
    return record;
}

static PyTypeObject RecordMakerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fast_header.RecordMaker",
    .tp_basicsize = sizeof(RecordMaker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)maker_init,
    .tp_call = (ternaryfunc)maker_call,
    .tp_dealloc = (destructor)maker_dealloc,
    .tp_traverse = (traverseproc)maker_traverse,
    .tp_clear = (inquiry)maker_clear,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "fast_header", NULL, -1, module_methods};

PyMODINIT_FUNC PyInit_fast_header(void) {
    const char *tchar = "!#$%&'*+-.^_`|~";
    for (int c = 0; c < 256; c++) {
        TCHAR[c] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                   (c != 0 && strchr(tchar, c) != NULL);
        VALUE[c] = c == '\t' || (c >= 0x20 && c <= 0x7e) || c >= 0x80;
    }
    sixty_four = PyLong_FromLong(64);
    empty_tuple = PyTuple_New(0);
    if (sixty_four == NULL || empty_tuple == NULL || PyType_Ready(&ReaderType) < 0 ||
        PyType_Ready(&ContextType) < 0 || PyType_Ready(&RecordMakerType) < 0)
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
    Py_INCREF(&RecordMakerType);
    if (PyModule_AddObject(m, "RecordMaker", (PyObject *)&RecordMakerType) < 0) {
        Py_DECREF(&RecordMakerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

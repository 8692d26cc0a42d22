"""The ``"software"`` transport: the core's verdicts computed in Python at CPU speed, the gateway's fallback when no
FPGA is present.

``open("software")`` ─▶ :class:`SoftwareTransport` ─┬─ register access ─▶ :class:`~..models.device.CoreModel`
                                                     └─ ``classify_stream`` ─▶ :class:`SoftwareClassifier` (reads it)

Configuration (tenants, plans, pools, routes, keys, the clock) goes through the model's registers as on ``"model"``:
it is rare, and it keeps one copy of every table. Classification does not. :class:`SoftwareClassifier` reads the
model's state (parser configuration, tenant table, router buffers, limiter clock) and computes each verdict record
with the model's own stage functions, but without the submit window, the packet stream or any cycle accounting:

- headers: :class:`FastHeaderReader` reads a well-formed header block (in C, ``fast_header.c``, built on first use;
  else with two regular expressions) and returns exactly what :func:`~..models.parser.scan` returns; anything else
  (a byte outside the grammar, obs-fold, a bare CR or LF, a repeated Host, Content-Length or Transfer-Encoding, a
  block cut by the limit or the packet's end) goes to :func:`~..models.parser.scan` itself, so the reading is the
  model's in every case;
- fingerprints of API keys and extra header values: remembered per value (:class:`FingerprintCache`, computed in C
  when the reader is), since a gateway sees the same keys over and over; the path's and Host's fingerprints are not
  computed (no verdict field depends on them);
- the limiter, the router and the verdict, for the common request (read by the fast reader, no parser error, past
  the request policy, a key in the tenant table or one the unknown-key policy rejects): the limiter's
  :meth:`~LimiterModel.cost_of` and :meth:`~LimiterModel.take` (the buckets of
  :meth:`LimiterModel.decide_fields`) on the model's tables, the router's :meth:`~RouterModel.select` remembered per
  route class and hash input (no request changes the router's tables), the record built from field codes, and each
  global counter added once per batch. The tables are read once per generation of the model (any register access
  moves it). With the C module this whole loop is one C call per batch (``fast_header.c``, ``Context.classify``: the
  same reading, arithmetic and effects, on the same tables, with the route computed from the router's active
  buffer; it calls back into Python only for what it has not seen, and for the requests below). Every other request:
  :meth:`LimiterModel.decide_fields`, :meth:`RouterModel.route_fields` and
  :func:`~..models.pipeline.verdict_fields` themselves. Either way the effects are ``"model"``'s: buckets, per-tenant
  and global counters (``tests/driver/test_software.py`` holds both paths, with the C loop and with the Python one,
  to the model's verdicts and counters);
- records: one object per distinct record (they are immutable), which the driver decodes once per batch.

What differs from ``"model"``: ``latency_cycles`` is 0 in every record (there is no pipeline to time), and the
limiter reads its clock as it stands after the last register access (:meth:`SoftwareClassifier.now_ns`): classifying
advances no core cycle. With ``clock.ns_per_cycle = 0`` and the clock moved by ``clock.step()``, every decision is
the one ``"model"`` makes. The telemetry counters and the parser's counters count every verdict (with latency 0),
brought up to date before the next register access.
"""

from __future__ import annotations

import array
import dataclasses
import functools
import importlib.util
import os
import re
import subprocess
import sys
import sysconfig
import threading
from collections import Counter
from pathlib import Path

import numpy as np

from ...hdl.id.id_block import CoreParams
from ...hdl.parser.layouts import BUILTIN_NAMES, EXTRA_SLOTS, ErrorFlag, KeySource, METHODS, Method, Version
from ...hdl.limiter.layouts import COST_MAX, CostSource, UnknownPolicy
from ...hdl.pipeline.layouts import FLAG_NAMES, Action, Reason
from ...hdl.router.layouts import STATUS_OK, STATUS_UNAVAILABLE
from ..errors import TransportError
from ..keys import U64, _fp_table, fingerprint
from ..models.device import CoreModel
from ..models.frontend import FrontEndInfo, process_frame
from ..models.parser import _RE_BEARER, _TCHAR_CLASS, ParserConfig, content_length_value, scan
from ..models.pipeline import VerdictRecord, early_verdict, verdict_fields
from ..models.router import _KEY_SEL_HEADER, _KEY_SEL_L4
from ..rss import _toeplitz_tables, toeplitz
from .model import ModelTransport

__all__ = ["SoftwareTransport", "SoftwareClassifier", "FastHeaderReader", "FingerprintCache"]

# The commit rules of BUILTIN_NAMES, by index.
(_RULE_HOST, _RULE_CONTENT_LENGTH, _RULE_TRANSFER_ENCODING, _RULE_AUTHORIZATION, _RULE_X_API_KEY,
 _RULE_UPGRADE) = range(6)
_MISSING_HOST = ErrorFlag.missing_host.value
_CL_AND_TE = ErrorFlag.cl_and_te.value
_WS = b" \t"
_FLAG = {name: 1 << i for i, name in enumerate(FLAG_NAMES)}
_KEY_SOURCE_NONE, _KEY_SOURCE_AUTH, _KEY_SOURCE_X_API_KEY = KeySource.NONE, KeySource.AUTHORIZATION, KeySource.X_API_KEY
_METHOD_OTHER = Method.OTHER

# A whole header block the parser reads without a stop: the request line, field lines, the empty line. The same
# classes as the model's line expressions (``_RE_REQUEST_LINE``, ``_RE_FIELD_LINE`` in models/parser.py).
# (Possessive repeats: nothing to backtrack into, and about 20 % faster.)
_RE_BLOCK = re.compile(rb"([%s]++) ([\x21-\x7e]++) HTTP/1\.([01])\r\n(?:[%s]++:[\t\x20-\x7e\x80-\xff]*+\r\n)*+\r\n"
                       % (_TCHAR_CLASS, _TCHAR_CLASS))
_BLOCK_END = b"\r\n\r\n"


#: Set ``WIRESPEED_NATIVE=0`` to read headers in Python only (the C reader is then neither built nor loaded).
NATIVE_ENV = "WIRESPEED_NATIVE"
_NATIVE_SOURCE = Path(__file__).with_name("fast_header.c")
#: Why the C header reader is not in use (None while it is, or before the first reader asks for it).
native_error: str | None = None


@functools.cache
def _native_module():
    """The ``fast_header`` module (``Reader``, ``fingerprint``) from ``fast_header.c``, compiled with the system C
    compiler on first use into ``build/native/`` (one build per source text and interpreter), or None when it cannot
    be (no compiler, no Python headers, ``WIRESPEED_NATIVE=0``): :class:`FastHeaderReader` and
    :class:`FingerprintCache` then compute in Python, with the same results."""
    global native_error
    if os.environ.get(NATIVE_ENV, "1") == "0":
        native_error = f"{NATIVE_ENV}=0"
        return None
    try:
        from ...sim.toolchain import build_dir
        source = _NATIVE_SOURCE.read_text()
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        include = sysconfig.get_paths()["include"]
        compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
        command = [compiler, "-O2", "-shared", "-fPIC", f"-I{include}"]
        out = build_dir("native", "fast_header", "\n".join([source, sys.version, *command])) / f"fast_header{suffix}"
        if not out.exists():
            # Several processes may build at once: each into its own file, then an atomic rename.
            tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
            done = subprocess.run([*command, str(_NATIVE_SOURCE), "-o", str(tmp)], capture_output=True, text=True)
            if done.returncode != 0:
                tmp.unlink(missing_ok=True)
                raise OSError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "compile failed")
            os.replace(tmp, out)
        spec = importlib.util.spec_from_file_location("fast_header", out)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        native_error = None
        return module
    except Exception as e:                              # noqa: BLE001 - any failure means: read in Python
        native_error = f"{type(e).__name__}: {e}"
        return None


class FastHeaderReader:
    """The parser's reading of a well-formed, complete header block, for one :class:`ParserConfig`.

    :meth:`read` gives what the verdict needs of :func:`~..models.parser.scan`'s result for a packet whose header
    block ends within ``max_header_bytes``, matches the grammar line by line, and commits every line without an
    error; for any other packet it returns ``None`` and the caller uses ``scan``. When the C reader
    (``fast_header.c``, the same reading) could be built, ``read`` is its method; ``FastHeaderReader.read(reader,
    packet)`` is the Python one.

    Parameters
    ----------
    config : ParserConfig
        The register contents (limit, extra header names).
    native : bool, optional
        None (default): the C reader when it builds; False: Python only; True: the C reader or :class:`OSError`.

    Attributes
    ----------
    native : bool
        Whether ``read`` is the C reader's.
    context : callable or None
        With the C reader: ``Reader.context`` (``fast_header.c``), which parses a generation's tables once into the
        C form of :class:`SoftwareClassifier`'s fast loop over a batch of requests; else None.
    """

    context = None

    def __init__(self, config: ParserConfig, native: bool | None = None):
        self.config = config
        self.limit = config.max_header_bytes
        # Lower-cased name -> (builtin rule or None, extra slots): the only lines whose values matter.
        names = {name: (rule, ()) for rule, name in enumerate(BUILTIN_NAMES)}
        for name, slots in config._extra_slots.items():
            names[name] = (names.get(name, (None,))[0], slots)
        self._names = names
        self.native = False
        module = _native_module() if native is not False else None
        if module is not None:
            table = [(name, -1 if rule is None else rule, sum(1 << slot for slot in slots))
                     for name, (rule, slots) in names.items()]
            consts = (_KEY_SOURCE_NONE, _KEY_SOURCE_AUTH, _KEY_SOURCE_X_API_KEY, METHODS, _METHOD_OTHER, _MISSING_HOST,
                      _CL_AND_TE, EXTRA_SLOTS)
            native_reader = module.Reader(self.limit, table, consts)
            self.read, self.context = native_reader.read, native_reader.context
            self.native = True
        elif native:
            raise OSError(f"the C header reader is not available ({native_error})")
        alternatives = b"|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        # A field line with one of those names (any case), after the previous line's CRLF: name and value without
        # leading WS. Only run on a block _RE_BLOCK matched, so the value ends at a CR.
        self._named_lines = re.compile(rb"(?i)\r\n(%s):[ \t]*([^\r]*)" % alternatives).findall

    def read(self, packet: bytes):
        """``(path, key_source, key, cl_value, chunked, extra_values, errors, method, upgrade)`` as :func:`scan` reads
        them (with ``complete`` set; ``extra_values`` None when no extra header is present), or ``None`` when the
        packet is not on the fast path."""
        end = packet.find(_BLOCK_END, 0, self.limit)       # the header end within the limit
        if end < 0:
            return None
        header_len = end + 4
        block = _RE_BLOCK.fullmatch(packet, 0, header_len)
        if block is None:
            return None
        host = cl_value = auth = xkey = extra_values = None
        te_seen = chunked = upgrade = False
        names = self._names
        for name, value in self._named_lines(packet, 0, header_len):
            rule, slots = names[name.lower()]
            value = value.rstrip(_WS)
            if rule is None:
                pass
            elif rule == _RULE_HOST:
                if host is not None:
                    return None                         # duplicate_host
                host = value
            elif rule == _RULE_AUTHORIZATION:
                if auth is None:
                    bearer = _RE_BEARER.fullmatch(value)
                    if bearer is not None:
                        auth = bearer[1]
            elif rule == _RULE_CONTENT_LENGTH:
                if cl_value is not None:
                    return None                         # a repeat: compared (and maybe fingerprinted) by scan
                cl_value = content_length_value(value)
                if cl_value is None:
                    return None                         # bad_content_length
            elif rule == _RULE_X_API_KEY:
                if xkey is None:
                    xkey = value
            elif rule == _RULE_UPGRADE:
                upgrade = True
            else:                                       # transfer-encoding
                if te_seen or value.lower() != b"chunked":
                    return None                         # bad_transfer_encoding
                te_seen = chunked = True
            if slots:
                if extra_values is None:
                    extra_values = [None] * EXTRA_SLOTS
                for slot in slots:
                    if extra_values[slot] is None:
                        extra_values[slot] = value
        errors = 0
        if host is None and block[3] == b"1":
            errors = _MISSING_HOST
        if te_seen and cl_value is not None:
            errors |= _CL_AND_TE
        if auth is not None:
            key_source, key = _KEY_SOURCE_AUTH, auth
        elif xkey is not None:
            key_source, key = _KEY_SOURCE_X_API_KEY, xkey
        else:
            key_source, key = _KEY_SOURCE_NONE, None
        return (block[2].partition(b"?")[0], key_source, key, cl_value, chunked, extra_values, errors,
                METHODS.get(block[1], _METHOD_OTHER), upgrade)


class FingerprintCache:
    """Keyed fingerprints (``docs/parser.md``, "Fingerprints") of the values seen lately, for one key.

    At most ``size`` values are kept; when full, the cache starts afresh (a flood of distinct keys costs the
    fingerprint each, never memory). A new value's fingerprint is computed in C when the C header reader builds
    (``native`` as :class:`FastHeaderReader` takes it), else by :func:`~..keys.fingerprint`.
    """

    def __init__(self, poly: int, seed: int, size: int = 1 << 16, native: bool | None = None):
        self.poly, self.seed, self.size = poly, seed, size
        self.values: dict[bytes, int] = {}
        module = _native_module() if native is not False else None
        #: The polynomial's table (256 native uint64) and the seed, for the C loop; None without the C module.
        self.table = None
        if module is not None:
            table, seed = array.array("Q", _fp_table(poly & U64)).tobytes(), seed & U64
            self.table, self.seed_u64 = table, seed
            self.compute = lambda value: module.fingerprint(value, table, seed)
        elif native:
            raise OSError(f"the C fingerprint is not available ({native_error})")
        else:
            self.compute = lambda value: fingerprint(value, poly, seed)

    def __call__(self, value: bytes) -> int:
        fp = self.values.get(value)
        if fp is None:
            fp = self.compute(value)
            if len(self.values) >= self.size:
                self.values.clear()
            self.values[value] = fp
        return fp


class _Request:
    """What the limiter (``decide_fields``) and the router (``route_fields``) read of one request; one per batch,
    refilled for each packet."""
    __slots__ = ("route_class", "key_source", "key_present", "key_fp", "cl_present", "content_length", "extra_numeric",
                 "extra_value", "extra_present", "extra_fp", "errors", "l4_valid", "l4_v6", "l4_ports", "l4_src",
                 "l4_dst", "l4_sport", "l4_dport")

    def __init__(self, info: FrontEndInfo):
        self.set_l4(info)

    def set_l4(self, info: FrontEndInfo) -> None:
        # As route_request (models/pipeline.py) fills them.
        self.l4_valid = bool(info.inline and not info.punt)
        self.l4_v6, self.l4_ports = info.l4_v6, True
        self.l4_src, self.l4_dst, self.l4_sport, self.l4_dport = info.l4_src, info.l4_dst, info.l4_sport, info.l4_dport


_LOOKASIDE = FrontEndInfo()
_NO_EXTRA_FP = (0,) * EXTRA_SLOTS
#: Bounds of the per-path route cache and of the record cache (each starts afresh when full).
_ROUTE_CACHE = 1 << 12
_RECORD_CACHE = 1 << 14
_F_COMPLETE = _FLAG["complete"]
_F_ROUTE, _F_CL, _F_CHUNKED = _FLAG["route_match"], _FLAG["cl_present"], _FLAG["chunked"]
_F_FOUND = _FLAG["tenant_found"]
_F_BASE = _F_COMPLETE | _FLAG["key_present"] | _F_FOUND
#: Bound of the key -> slot and route verdicts a classifier keeps per generation of the model (each starts afresh
#: when full, checked before each batch).
_BATCH_CACHE = 1 << 16


# Record fields the software path keys its records by: VerdictRecord's fields in order, with the action and the
# reason as their codes and without latency_cycles (always 0 here). (Hashing an enum member runs Python code.)
_ACTIONS = {a.value: a for a in Action}
_REASONS = {r.value: r for r in Reason}
_FORWARD, _REJECT = Action.FORWARD.value, Action.REJECT.value
#: VerdictRecord's fields in order: the record key's items, then ``latency_cycles`` (0 here).
_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(VerdictRecord))
_OK, _RATE_LIMITED, _NO_BACKEND, _UNKNOWN_TENANT = (Reason.OK.value, Reason.RATE_LIMITED.value, Reason.NO_BACKEND.value,
                                                   Reason.UNKNOWN_TENANT.value)
_COST_FIXED, _COST_CL, _COST_EXTRA, _COST_ESTIMATE = (CostSource.FIXED, CostSource.CONTENT_LENGTH, CostSource.EXTRA,
                                                      CostSource.ESTIMATE)
_U64 = (1 << 64) - 1
# A route class's hash input in lookaside mode (route_hash_input): the API key's fingerprint, an extra header's
# (its slot, 0..3), or nothing (L4: no tuple without the front end).
_HASH_KEY, _HASH_NONE = -1, -2
_UNSEEN = object()
#: Bound of the Toeplitz hashes remembered per router key (starts afresh when full).
_HASH_CACHE = 1 << 16


class SoftwareClassifier:
    """Verdict records for packets, computed from a :class:`CoreModel`'s state without its pipeline timing.

    :meth:`records` takes each request on a fast path when it is the common case (read by :class:`FastHeaderReader`,
    no parser error, past the request policy, a key that is in the tenant table or that the unknown-key policy
    rejects): the limiter's bucket arithmetic of
    :meth:`LimiterModel.decide_fields` inline on the model's tables, and the router's verdict remembered per route
    class and hash input for the batch (the tables do not change within one). Any other request goes through the
    model's own functions (:func:`~..models.parser.scan`, :func:`early_verdict`, ``decide_fields``, ``route_fields``,
    :func:`verdict_fields`). Either way the effects are the model's: buckets, per-tenant and global counters.

    Parameters
    ----------
    core : CoreModel
        The model whose tables (parser, limiter, router, front end) decide; it must have the whole pipeline.

    Attributes
    ----------
    fast, fallback : int
        Packets read by :class:`FastHeaderReader`, and by :func:`~..models.parser.scan`.
    """

    def __init__(self, core: CoreModel):
        if core.pipeline is None or core.limiter is None or core.router is None:
            raise TransportError("the software path needs a core with the whole pipeline (submit, limiter, router)")
        self.core = core
        self._config = None
        self._reader = None
        self._fp = None
        self._routes = {}                           # path -> (route_match, route_class), for self._config
        self._record_cache = {}                     # record key (see _ACTIONS) -> the record (records are immutable)
        self._maker = None                          # what the C loop calls for a new record (_native_record)
        self._hash_key = None
        self._hashes = {}                           # fingerprint -> Toeplitz hash of its 8 bytes under _hash_key
        self._look: _Lookaside | None = None         # what lookaside batches read, for one generation of the model
        self._lock = threading.Lock()
        self._counted = []                          # records of big batches not yet in those counters
        self._tally = {}                            # (action, reason, flags) -> verdicts of small batches, likewise
        self._tallied = 0                           # verdicts in _tally
        self.fast = self.fallback = 0

    def now_ns(self) -> int:
        """The limiter clock every decision of a batch uses: the model's clock at its current cycle (the cycle of
        the last register access; classifying advances none). The one place "now" is read, for a wall-clock mode."""
        return self.core.limiter.clock.now(self.core.cycles)

    def _tables(self):
        config = self.core.parser.config()
        if config is not self._config:
            self._config = config
            self._reader = FastHeaderReader(config)
            self._routes = {}
            if self._fp is None or (self._fp.poly, self._fp.seed) != (config.poly, config.seed):
                self._fp = FingerprintCache(config.poly, config.seed)
        return config, self._reader, self._fp

    def records(self, packets, inline: bool = False) -> list[VerdictRecord]:
        """One :class:`VerdictRecord` per packet, in order, as ``"model"`` would give them but for
        ``latency_cycles`` (0) and the clock (see the module docstring). ``inline``: the packets are Ethernet frames
        through the front end."""
        with self._lock:
            return self._records(packets, inline)

    def _record(self, key: tuple) -> VerdictRecord:
        record_cache = self._record_cache
        if len(record_cache) >= _RECORD_CACHE:
            record_cache.clear()
        record = record_cache[key] = VerdictRecord(_ACTIONS[key[0]], key[1], _REASONS[key[2]], *key[3:], 0)
        return record

    def _native_record(self):
        """:meth:`_record` for the C loop: ``fast_header.RecordMaker`` on the same cache (about 0.3 µs a record,
        against the dataclass's 1.8), made once; :meth:`_record` itself without the C module."""
        if self._maker is None:
            module = _native_module()
            self._maker = self._record if module is None else module.RecordMaker(
                VerdictRecord, _RECORD_FIELDS, _ACTIONS, _REASONS, self._record_cache, _RECORD_CACHE, 0)
        return self._maker

    def _lookaside(self) -> "_Lookaside":
        """What a lookaside batch reads of the model's tables, kept while the model's :attr:`~CoreModel.generation`
        stays the same (no register access, no packet through its pipeline): the tables and registers, this
        generation's key → slot and route verdicts, and with the C module the whole of it parsed once
        (``Reader.context``). A lone request then costs its own work only."""
        t = self._look
        generation = self.core.generation
        if t is not None and t.generation == generation:
            return t
        self._look = None
        config, reader, fp = self._tables()
        core = self.core
        t = _Lookaside()
        t.generation, t.config, t.reader, t.fp, t.routes = generation, config, reader, fp, self._routes
        policy = core.pipeline.policy()
        t.general = _General(self, config, fp, 0, policy.verdict, False)
        # The request policy, per method code, for an origin-form request without Upgrade: True when it goes on.
        goes_on = [False] * 16
        for method in Method:
            goes_on[method.value] = policy.verdict(method, True, False) is None
        t.goes_on = goes_on
        # The limiter: its tables (updated in place, as decide_fields does) and what a batch needs of its registers.
        lim = core.limiter.model
        t.lim = lim
        lim_config = lim._config
        source = lim_config.cost_source
        t.by_cl = source is _COST_CL
        t.by_extra = source is _COST_EXTRA or source is _COST_ESTIMATE
        t.by_estimate = source is _COST_ESTIMATE
        unknown = lim_config.unknown_policy
        t.unknown_401 = unknown is UnknownPolicy.REJECT or (unknown is UnknownPolicy.DEFAULT and not lim._default_on)
        t.slots = {}                                # key fingerprint -> slot or None
        # The router: each route class's hash input, and its verdicts by (class, input).
        router = core.router.model
        t.router = router
        t.hash_source = [entry.header_slot & 3 if entry.key_sel & 3 == _KEY_SEL_HEADER else
                         _HASH_NONE if entry.key_sel & 3 == _KEY_SEL_L4 else _HASH_KEY
                         for entry in router._classes[router.active]]
        if router.key != self._hash_key:
            self._hash_key, self._hashes = router.key, {}
        t.routed = {}
        t.native = None
        if reader.context is not None and fp.table is not None:
            # The loop of _records, in C (fast_header.c): the same reading, decisions and effects, on these tables.
            t.native = reader.context((
                bytes(goes_on), fp.values, fp.table, fp.seed_u64, fp.size, _ROUTE_CACHE, t.slots, lim.lookup,
                t.unknown_401, t.routes, config.route, t.by_cl, t.by_extra, t.by_estimate, lim_config.cost_fixed,
                lim_config.cost_scale, lim_config.cost_scale_cl, COST_MAX, lim._plan_regs, lim._plan, lim._last,
                lim._req, lim._cost, lim._allowed, lim._rejected, *lim._decide_consts, 0, t.hash_source, t.routed,
                functools.partial(self._route, router), self._record_cache, self._native_record(), t.general.request,
                (_F_BASE, _F_ROUTE, _F_CHUNKED, _F_CL, _F_FOUND),
                (_FORWARD, _REJECT, _OK, _RATE_LIMITED, _NO_BACKEND, _UNKNOWN_TENANT, 401, 429, STATUS_OK,
                 STATUS_UNAVAILABLE, 0, _U64), _router_tables(router)))
        self._look = t
        return t

    def _records(self, packets, inline: bool) -> list[VerdictRecord]:
        now_ns = self.now_ns()
        record_cache, new_record = self._record_cache, self._record
        out = []
        append = out.append
        if inline:
            config, _reader, fp = self._tables()
            general = _General(self, config, fp, now_ns, self.core.pipeline.policy().verdict, True)
            try:
                for packet in packets:
                    key = general.frame(packet)
                    record = record_cache.get(key)
                    append(record if record is not None else new_record(key))
            finally:
                self._done(out, general)
            return out

        t = self._lookaside()
        general = t.general
        general.now_ns, general.scanned = now_ns, 0
        slots, routed = t.slots, t.routed
        if len(slots) >= _BATCH_CACHE:
            slots.clear()
        if len(routed) >= _BATCH_CACHE:
            routed.clear()
        if t.native is not None:
            counts = [0] * 5
            try:
                t.native.classify(packets if type(packets) is list else list(packets), now_ns, counts, out)
            finally:
                self._done(out, general, counts)
            return out
        config, read, fp, routes, goes_on = t.config, t.reader.read, t.fp, t.routes, t.goes_on
        lookup, take, cost_of, unknown_401 = t.lim.lookup, t.lim.take, t.lim.cost_of, t.unknown_401
        hash_source, router = t.hash_source, t.router
        f_base, f_route, f_chunked, f_cl, f_found = _F_BASE, _F_ROUTE, _F_CHUNKED, _F_CL, _F_FOUND
        allow_n = reject_n = reject_401_n = routed_n = unavailable_n = 0
        try:
            for packet in packets:
                fields = read(packet)
                if fields is None:
                    key = general.request(packet, None)
                    record = record_cache.get(key)
                    append(record if record is not None else new_record(key))
                    continue
                path, key_source, api_key, cl_value, chunked, extra_values, errors, method, upgrade = fields
                if (errors or api_key is None or upgrade or path[:1] != b"/"
                        or not goes_on[method._value_]):
                    key = general.request(packet, fields)
                    record = record_cache.get(key)
                    append(record if record is not None else new_record(key))
                    continue
                key_fp = fp(api_key)
                slot = slots.get(key_fp, _UNSEEN)
                if slot is _UNSEEN:
                    slot = slots[key_fp] = lookup(key_fp)
                if slot is None and not unknown_401:     # the default tenant's or a punt: through decide_fields
                    key = general.request(packet, fields)
                    record = record_cache.get(key)
                    append(record if record is not None else new_record(key))
                    continue
                # The request: as general.request reads it.
                route = routes.get(path)
                if route is None:
                    if len(routes) >= _ROUTE_CACHE:
                        routes.clear()
                    route = routes[path] = config.route(path)
                flags = f_base | f_route if route[0] else f_base
                if chunked:
                    flags |= f_chunked
                if cl_value is not None:
                    flags |= f_cl
                # The limiter (LimiterModel.decide_fields).
                if slot is None:                    # an unknown key under a policy that rejects it: 401
                    flags ^= f_found
                    reject_401_n += 1
                else:
                    # The cost and the buckets (LimiterModel.cost, LimiterModel.take).
                    extra = (content_length_value(extra_values[0]) if extra_values is not None
                             and extra_values[0] is not None else None)
                    retry = take(slot, cost_of(None if cl_value is None else cl_value[0],
                                               None if extra is None else extra[0]), now_ns)
                    if retry is None:
                        allow_n += 1
                    else:
                        reject_n += 1
                # The router (RouterModel.route_fields).
                route_class = route[1] & 0xF
                source_slot = hash_source[route_class]
                if source_slot == _HASH_KEY:
                    hashed_fp = key_fp
                elif source_slot == _HASH_NONE or extra_values is None or extra_values[source_slot] is None:
                    hashed_fp = None
                else:
                    hashed_fp = fp(extra_values[source_slot])
                rkey = (route_class, hashed_fp)
                route_verdict = routed.get(rkey)
                if route_verdict is None:
                    route_verdict = routed[rkey] = self._route(router, route_class, hashed_fp)
                status, pool, backend, hashed = route_verdict
                if status == STATUS_OK:
                    routed_n += 1
                else:
                    unavailable_n += 1
                # The record (verdict_fields).
                if slot is None:
                    key = (_REJECT, 401, _UNKNOWN_TENANT, False, 0, False, 0, False, 0, False, 0, flags, hashed)
                elif retry is None:
                    if status == STATUS_OK:
                        key = (_FORWARD, 200, _OK, True, slot, True, pool, True, backend, False, 0, flags, hashed)
                    else:
                        key = (_REJECT, STATUS_UNAVAILABLE, _NO_BACKEND, True, slot, True, pool, False, 0, False, 0,
                               flags, hashed)
                else:
                    key = (_REJECT, 429, _RATE_LIMITED, True, slot, False, 0, False, 0, True, retry, flags, hashed)
                record = record_cache.get(key)
                append(record if record is not None else new_record(key))
        finally:
            self._done(out, general, (allow_n, reject_n, reject_401_n, routed_n, unavailable_n))
        return out

    def _done(self, out: list, general: _General, counts=(0, 0, 0, 0, 0)) -> None:
        """Tally a batch's records ``out``: also when an error stopped it, the ones decided before (their effects on
        the buckets are made; the telemetry counts them too). ``counts`` are the fast loop's tallies for the
        limiter's and router's global counters: (allow, reject_429, reject_401, routed, unavailable)."""
        allow_n, reject_n, reject_401_n, routed_n, unavailable_n = counts
        lim, router = self.core.limiter.model, self.core.router.model
        lim.allow = (lim.allow + allow_n) & _U64
        lim.reject_429 = (lim.reject_429 + reject_n) & _U64
        lim.reject_401 = (lim.reject_401 + reject_401_n) & _U64
        router.routed = (router.routed + routed_n) & _U64
        router.unavailable = (router.unavailable + unavailable_n) & _U64
        self.fallback += general.scanned
        self.fast += len(out) - general.scanned
        if len(out) > _TALLY_INLINE:
            self._counted += out                    # (count() tallies each distinct record object once)
            return
        # A small batch (one request from Offload.classify): its fields tallied now, a little on every request,
        # instead of in one go in count(), where a thousand distinct records took 0.4 ms (0.5–1.4 ms under load) on the
        # request that happened to trigger it.
        tally = self._tally
        for r in out:
            key = _tally_key(r)
            tally[key] = tally.get(key, 0) + 1
        self._tallied += len(out)

    def _route(self, router, route_class: int, hashed_fp) -> tuple:
        """:meth:`RouterModel.route_fields` of a lookaside request of ``route_class`` whose hash input is the
        fingerprint ``hashed_fp`` (None: nothing), without counting it."""
        if hashed_fp is None:
            hashed = 0
        else:
            hashes = self._hashes
            hashed = hashes.get(hashed_fp)
            if hashed is None:
                if len(hashes) >= _HASH_CACHE:
                    hashes.clear()
                hashed = hashes[hashed_fp] = toeplitz(router.key, (hashed_fp & _U64).to_bytes(8, "big"))
        return (*router.select(route_class, hashed), hashed)

    @property
    def pending(self) -> int:
        """Verdicts given and not yet in the telemetry and parser counters (:meth:`count` brings them in)."""
        return len(self._counted) + self._tallied

    def count(self) -> None:
        """Bring the telemetry counters, the parser's counters and the limiter's counter registers up to date with
        the verdicts given so far (``"model"`` counts each one in its cycle)."""
        with self._lock:
            records, self._counted = self._counted, []
            tally, self._tally, self._tallied = self._tally, {}, 0
        if not records and not tally:
            return
        core = self.core
        # Records repeat (one object per distinct record): count the objects, then tally their fields.
        by_id = dict(zip(map(id, records), records))
        for rid, n in Counter(map(id, records)).items():
            key = _tally_key(by_id[rid])
            tally[key] = tally.get(key, 0) + n
        telemetry = core.telemetry.model
        bank = core.bank
        parser_errors = len(ErrorFlag)
        complete = _FLAG["complete"]
        for (action, reason, flags), n in tally.items():
            telemetry.record(action, reason, flags, 0, count=n)
            bank.incr("parser.requests.count", n)
            if flags & complete:
                bank.incr("parser.complete.count", n)
            for i in range(parser_errors):              # the descriptor's error flags are the record's first
                if flags >> i & 1:
                    bank.incr(f"parser.error_count[{i}].count", n)
        core.limiter._sync()


@functools.lru_cache(maxsize=8)
def _toeplitz8(key: bytes) -> bytes | None:
    """The Toeplitz tables of ``key``'s first 8 byte positions as 8 × 256 native uint32 (None: too short a key)."""
    tables = _toeplitz_tables(key)
    return array.array("I", [v for table in tables[:8] for v in table]).tobytes() if len(tables) >= 8 else None


def _router_tables(router) -> tuple | None:
    """The router's active buffer as the C loop reads it (``fast_header.c``, ``Batch``), so that it computes
    :meth:`SoftwareClassifier._route` itself: the Toeplitz tables of the key's first 8 byte positions, each class's
    pool, each pool's ``(enabled, base, m)`` and the table's words. None (the loop then calls ``_route``) for a key
    too short to hash 8 bytes."""
    toeplitz8 = _toeplitz8(bytes(router.key))
    if toeplitz8 is None:
        return None
    active = router.active
    pools = array.array("Q")
    for desc in router._pools[active]:
        pools.extend((int(bool(desc.enabled)), desc.base, desc.m))
    return (toeplitz8, bytes(entry.pool & 0xF for entry in router._classes[active]), pools.tobytes(),
            np.ascontiguousarray(router._words[active], dtype=np.uint32).tobytes(),
            router.params.ids_per_word, router.params.id_bits)


class _Lookaside:
    """What :meth:`SoftwareClassifier._records` reads of the model for lookaside batches, for one generation of the
    model (:meth:`SoftwareClassifier._lookaside`)."""
    __slots__ = ("generation", "config", "reader", "fp", "routes", "general", "goes_on", "lim", "by_cl", "by_extra",
                 "by_estimate", "unknown_401", "slots", "router", "hash_source", "routed", "native")


class _General:
    """One batch's general path: a packet's record key through the model's own functions (scan, early_verdict,
    decide_fields, route_fields, verdict_fields), for what the fast path of :meth:`SoftwareClassifier._records`
    does not take.

    ``scanned``: packets read by :func:`~..models.parser.scan`.
    """

    def __init__(self, classifier: SoftwareClassifier, config: ParserConfig, fp, now_ns: int, policy_verdict,
                 inline: bool):
        core = classifier.core
        self.config, self.fp, self.now_ns, self.policy_verdict = config, fp, now_ns, policy_verdict
        self.routes, self.read = classifier._routes, classifier._reader.read
        self.decide, self.route_fields = core.limiter.model.decide_fields, core.router.model.route_fields
        self.frontend = core.frontend_config() if inline else None
        self.cut = config.max_header_bytes + 1              # bytes_to_send's bound
        self.early = {}                                     # early_verdict by (errors, inline, punt, punt reason)
        self.req = _Request(_LOOKASIDE)
        self.scanned = 0

    def frame(self, frame: bytes) -> tuple:
        """The record key of an Ethernet frame through the front end."""
        info, packet = process_frame(frame, True, self.frontend)
        req = self.req
        req.set_l4(info)
        info_flags = _FLAG["inline"] | (_FLAG["l4_valid"] if req.l4_valid else 0)
        return self._key(packet, self.read(packet), info, info_flags)

    def request(self, packet: bytes, fields) -> tuple:
        """The record key of a lookaside request; ``fields``: :meth:`FastHeaderReader.read`'s (None: not read).
        ``packet`` may be whole: ``scan`` reads what the driver's ``bytes_to_send`` keeps of it, as on ``"model"``."""
        if fields is None:
            if type(packet) is not bytes:
                packet = bytes(packet)
            cut = self.cut
            end = packet.find(_BLOCK_END, 0, cut)
            packet = packet[:end + 4] if end >= 0 else packet[:cut]
        return self._key(packet, fields, _LOOKASIDE, 0)

    def _key(self, packet: bytes, fields, info: FrontEndInfo, info_flags: int) -> tuple:
        req, fp = self.req, self.fp
        if fields is not None:
            path, key_source, key, cl_value, chunked, extra_values, errors, method, upgrade = fields
            flags = errors | info_flags | _F_COMPLETE
        else:
            self.scanned += 1
            fields = scan(packet, self.config)
            path, key_source, key, cl_value, chunked, extra_values, errors, method, upgrade = (
                fields.path, fields.key_source, fields.key, fields.cl_value, fields.chunked, fields.extra_values,
                fields.errors, fields.method, fields.upgrade)
            flags = errors | info_flags | (_F_COMPLETE if fields.complete else 0)
        if path is None:
            path = b""
        routes = self.routes
        route = routes.get(path)
        if route is None:
            if len(routes) >= _ROUTE_CACHE:
                routes.clear()
            route = routes[path] = self.config.route(path)
        req.route_class = route[1]
        if route[0]:
            flags |= _FLAG["route_match"]
        req.key_source = key_source
        if key is None:
            req.key_present, req.key_fp = False, 0
        else:
            req.key_present, req.key_fp = True, fp(key)
            flags |= _FLAG["key_present"]
        if cl_value is None:
            req.cl_present, req.content_length = False, 0
        else:
            req.cl_present, req.content_length = True, cl_value[0]
            flags |= _FLAG["cl_present"]
        if chunked:
            flags |= _FLAG["chunked"]
        extra_present = 0
        if extra_values is None:
            req.extra_fp = _NO_EXTRA_FP
            req.extra_numeric, req.extra_value = False, 0
        else:
            extra_fp = [0] * EXTRA_SLOTS
            for slot, value in enumerate(extra_values):
                if value is not None:
                    extra_present |= 1 << slot
                    extra_fp[slot] = fp(value)
            req.extra_fp = extra_fp
            number = content_length_value(extra_values[0]) if extra_values[0] is not None else None
            if number is None:
                req.extra_numeric, req.extra_value = False, 0
            else:
                req.extra_numeric, req.extra_value = True, number[0]
        req.extra_present = extra_present
        if errors or info.punt:
            req.errors = errors
            # A function of the errors, inline and the front end's punt alone: once per batch for each.
            early_key = (errors, info.inline, info.punt, info.reason._value_)
            early = self.early.get(early_key, _UNSEEN)
            if early is _UNSEEN:
                early = self.early[early_key] = early_verdict(req, info, False)
        else:
            # The request policy (docs/pipeline.md), on the descriptor's method, origin_form and upgrade.
            early = self.policy_verdict(method, path[:1] == b"/", upgrade)
        lim = None if early is not None else self.decide(req, self.now_ns)
        values = verdict_fields(early, flags, lim, self.route_fields(req), 0)
        return (values[0]._value_, values[1], values[2]._value_) + values[3:13]


_LIMITS_REG, _CTRL_REG = "parser.limits", "pipeline.ctrl"
#: :meth:`SoftwareTransport.classify_requests` tallies its verdicts into the counters at least this often (a caller
#: that never reads a register would otherwise hold every record until it does).
_COUNT_EVERY = 1024
#: A batch of at most this many verdicts is tallied as it is given (SoftwareClassifier._done); a bigger one in count().
_TALLY_INLINE = 8


def _tally_key(record: VerdictRecord) -> tuple:
    """What the counters count a verdict record by: its action's and reason's codes and its flags (``.value`` is a
    slow property, hence ``_value_``)."""
    return (record.action._value_, record.reason._value_, record.flags)


class _LimiterClock:
    """The model's limiter clock as a discipline reads and steps it: what reading ``clock_now`` and pulsing
    ``clock_ctrl.step`` do, at the model's current cycle, without the register accesses (which advance no cycle
    here, as classifying does not)."""

    def __init__(self, model: CoreModel):
        self.model = model

    def now(self) -> int:
        return self.model.limiter.clock.now(self.model.cycles)

    def step(self, ns: int) -> None:
        self.model.limiter.clock.step(self.model.cycles, ns)


class SoftwareTransport(ModelTransport):
    """Register access to a :class:`CoreModel` (as ``"model"``), and ``classify_stream`` computed by a
    :class:`SoftwareClassifier` on the same model.

    Parameters
    ----------
    params : CoreParams
        The core the model is built as.
    model : CoreModel, optional
        An existing model to classify with (a test may share one).
    """

    scheme = "software"
    #: ``classify_stream`` takes whole requests: it reads no byte past the ones ``bytes_to_send`` keeps
    #: (``host/driver/submit.py``); the C reader finds the header end itself, and a request for ``scan`` is cut first.
    cuts_requests = True

    def __init__(self, params: CoreParams = CoreParams(), model: CoreModel | None = None):
        super().__init__(params, model)
        self.classifier = SoftwareClassifier(self.model)
        regmap = self.model.bank.regmap
        limits = regmap[_LIMITS_REG].field("max_header_bytes")
        inline = regmap[_CTRL_REG].field("axis_inline")
        self._limits_mask, self._limits_lsb, self._inline_mask = limits.mask, limits.lsb, inline.mask

    def read32(self, address: int) -> int:
        self.classifier.count()
        return super().read32(address)

    def write32(self, address: int, value: int) -> None:
        self.classifier.count()
        super().write32(address, value)

    @property
    def limiter_clock(self) -> "_LimiterClock":
        """The limiter clock without register accesses, for the driver's wall-clock discipline
        (``ClockCore.direct``)."""
        return _LimiterClock(self.model)

    def classify_requests(self, requests: list, width: int, window_bytes: int):
        """The driver's lookaside ``classify_many`` without its register program: the records
        :meth:`classify_stream` gives, with what the program around it does (read ``max_header_bytes`` to know that
        no request can be too large for the submit window of ``window_bytes`` at ``width`` bytes a beat; write
        ``pipeline.ctrl.axis_inline`` = 0) done on the model's register state directly. None when that state asks for
        the program after all: a request that is not ``bytes``, a header limit the window cannot hold (the driver
        then cuts and checks), or ``axis_inline`` set (the driver writes it). The telemetry and parser counters are
        brought up to date at the next register access, as after :meth:`classify_stream`, and at the latest every
        :data:`_COUNT_EVERY` verdicts."""
        if self._program_needed(width, window_bytes) or any(type(r) is not bytes for r in requests):
            return None
        return self._lookaside_records(requests)

    def _lookaside_records(self, requests: list) -> list:
        """The classifier's records for lookaside ``requests``, and the counters tallied when
        :data:`_COUNT_EVERY` verdicts wait for it."""
        classifier = self.classifier
        records = classifier.records(requests, False)
        if classifier.pending >= _COUNT_EVERY:
            classifier.count()
        return records

    def _program_needed(self, width: int, window_bytes: int) -> bool:
        """Whether the model's state asks for the driver's register program around a lookaside batch: a header limit
        the submit window of ``window_bytes`` at ``width`` bytes a beat cannot hold, or ``axis_inline`` set. Raises
        :class:`TransportError` once the transport is closed."""
        if self._closed:
            raise TransportError("software transport is closed")
        state = self.model.bank.state
        max_header = (state[_LIMITS_REG] & self._limits_mask) >> self._limits_lsb
        return bool(state[_CTRL_REG] & self._inline_mask) or max_header + 1 > min(window_bytes - width, 0xFFFF)

    def classify_request(self, request: bytes, width: int, window_bytes: int):
        """:meth:`classify_requests` of one request (``bytes``), without a list around it: its record, or None when
        the model's state asks for the driver's program."""
        if self._program_needed(width, window_bytes):
            return None
        return self._lookaside_records([request])[0]

    def classify_stream(self, packets, inline: bool = False):
        """Verdict records for ``packets`` (whole requests, or Ethernet frames when ``inline``), computed
        functionally (:class:`SoftwareClassifier`); ``latency_cycles`` is 0."""
        if self._closed:
            raise TransportError("software transport is closed")
        return self.classifier.records(packets, inline)

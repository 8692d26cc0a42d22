"""The ``"software"`` transport: the core's verdicts computed in Python at CPU speed, the gateway's fallback when no
FPGA is present.

``open("software")`` ─▶ :class:`SoftwareTransport` ─┬─ register access ─▶ :class:`~..models.device.CoreModel`
                                                     └─ ``classify_stream`` ─▶ :class:`SoftwareClassifier` (reads it)

Configuration (tenants, plans, pools, routes, keys, the clock) goes through the model's registers as on ``"model"``:
it is rare, and it keeps one copy of every table. Classification does not. :class:`SoftwareClassifier` reads the
model's state (parser configuration, tenant table, router buffers, limiter clock) and computes each verdict record
with the model's own stage functions, but without the submit window, the packet stream or any cycle accounting:

- headers: :class:`FastHeaderReader` reads a well-formed header block with two regular expressions and returns
  exactly what :func:`~..models.parser.scan` returns; anything else (a byte outside the grammar, obs-fold, a bare CR
  or LF, a repeated Host, Content-Length or Transfer-Encoding, a block cut by the limit or the packet's end) goes to
  :func:`~..models.parser.scan` itself, so the reading is the model's in every case;
- fingerprints of API keys and extra header values: remembered per value (:class:`FingerprintCache`), since a
  gateway sees the same keys over and over; the path's and Host's fingerprints are not computed (no verdict field
  depends on them);
- the limiter and the router: :meth:`LimiterModel.decide_fields` and :meth:`RouterModel.route_fields` on the
  model's tables (the same code as ``"model"``, and the same effects: buckets, per-tenant and global counters);
- the verdict: :func:`~..models.pipeline.verdict_fields`, as ``"model"`` combines it.

What differs from ``"model"``: ``latency_cycles`` is 0 in every record (there is no pipeline to time), and the
limiter reads its clock as it stands after the last register access (:meth:`SoftwareClassifier.now_ns`): classifying
advances no core cycle. With ``clock.ns_per_cycle = 0`` and the clock moved by ``clock.step()``, every decision is
the one ``"model"`` makes. The telemetry counters and the parser's counters count every verdict (with latency 0),
brought up to date before the next register access.
"""

from __future__ import annotations

import re
import threading

from ...hdl.id.id_block import CoreParams
from ...hdl.parser.layouts import BUILTIN_NAMES, EXTRA_SLOTS, ErrorFlag, KeySource, METHODS, Method, Version
from ...hdl.pipeline.layouts import FLAG_NAMES
from ..errors import TransportError
from ..keys import fingerprint
from ..models.device import CoreModel
from ..models.frontend import FrontEndInfo, process_frame
from ..models.parser import _RE_BEARER, _TCHAR_CLASS, ParserConfig, content_length_value, scan
from ..models.pipeline import VerdictRecord, early_verdict, verdict_fields
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


class FastHeaderReader:
    """The parser's reading of a well-formed, complete header block, for one :class:`ParserConfig`.

    :meth:`read` gives what the verdict needs of :func:`~..models.parser.scan`'s result for a packet whose header
    block ends within ``max_header_bytes``, matches the grammar line by line, and commits every line without an
    error; for any other packet it returns ``None`` and the caller uses ``scan``.

    Parameters
    ----------
    config : ParserConfig
        The register contents (limit, extra header names).
    """

    def __init__(self, config: ParserConfig):
        self.config = config
        self.limit = config.max_header_bytes
        # Lower-cased name -> (builtin rule or None, extra slots): the only lines whose values matter.
        names = {name: (rule, ()) for rule, name in enumerate(BUILTIN_NAMES)}
        for name, slots in config._extra_slots.items():
            names[name] = (names.get(name, (None,))[0], slots)
        self._names = names
        alternatives = b"|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        # A field line with one of those names (any case), after the previous line's CRLF: name and value without
        # leading WS. Only run on a block _RE_BLOCK matched, so the value ends at a CR.
        self._named_lines = re.compile(rb"(?i)\r\n(%s):[ \t]*([^\r]*)" % alternatives).findall

    def read(self, packet: bytes):
        """``(path, key_source, key, cl_value, chunked, extra_values, errors, method, upgrade)`` as :func:`scan` reads
        them (with ``complete`` set; ``extra_values`` None when no extra header is present), or ``None`` when the
        packet is not on the fast path."""
        end = packet.find(_BLOCK_END)
        if end < 0:
            return None
        header_len = end + 4
        if header_len > self.limit:
            return None
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
    fingerprint each, never memory).
    """

    def __init__(self, poly: int, seed: int, size: int = 1 << 16):
        self.poly, self.seed, self.size = poly, seed, size
        self.values: dict[bytes, int] = {}

    def __call__(self, value: bytes) -> int:
        fp = self.values.get(value)
        if fp is None:
            fp = fingerprint(value, self.poly, self.seed)
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


class SoftwareClassifier:
    """Verdict records for packets, computed from a :class:`CoreModel`'s state without its pipeline timing.

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
        self._record_cache = {}                     # VerdictRecord fields -> the record (records are immutable)
        self._lock = threading.Lock()
        self._counted = []                          # records not yet in the telemetry and parser counters
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

    def _records(self, packets, inline: bool) -> list[VerdictRecord]:
        config, reader, fp = self._tables()
        read, routes, record_cache = reader.read, self._routes, self._record_cache
        decide, route_fields = self.core.limiter.model.decide_fields, self.core.router.model.route_fields
        frontend = self.core.frontend_config() if inline else None
        now = self.now_ns()
        policy_verdict = self.core.pipeline.policy().verdict
        info = _LOOKASIDE
        req = _Request(info)
        # The flags request_flags (models/pipeline.py) sets from the front end: none in lookaside.
        info_flags = 0
        f_route, f_key, f_cl = _FLAG["route_match"], _FLAG["key_present"], _FLAG["cl_present"]
        f_chunked, f_complete = _FLAG["chunked"], _FLAG["complete"]
        out = []
        append = out.append
        fast = 0
        for packet in packets:
            if inline:
                info, packet = process_frame(packet, True, frontend)
                req.set_l4(info)
                info_flags = _FLAG["inline"] | (_FLAG["l4_valid"] if req.l4_valid else 0)
            fields = read(packet)
            if fields is not None:
                fast += 1
                path, key_source, key, cl_value, chunked, extra_values, errors, method, upgrade = fields
                flags = errors | info_flags | f_complete
            else:
                fields = scan(packet, config)
                path, key_source, key, cl_value, chunked, extra_values, errors, method, upgrade = (
                    fields.path, fields.key_source, fields.key, fields.cl_value, fields.chunked, fields.extra_values,
                    fields.errors, fields.method, fields.upgrade)
                flags = errors | info_flags | (f_complete if fields.complete else 0)
            if path is None:
                path = b""
            route = routes.get(path)
            if route is None:
                route = routes[path] = config.route(path) if len(routes) < _ROUTE_CACHE else config.route(path)
            req.route_class = route[1]
            if route[0]:
                flags |= f_route
            req.key_source = key_source
            if key is None:
                req.key_present, req.key_fp = False, 0
            else:
                req.key_present, req.key_fp = True, fp(key)
                flags |= f_key
            if cl_value is None:
                req.cl_present, req.content_length = False, 0
            else:
                req.cl_present, req.content_length = True, cl_value[0]
                flags |= f_cl
            if chunked:
                flags |= f_chunked
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
                early = early_verdict(req, info, False)
                lim = None if early is not None else decide(req, now)
            else:
                # The request policy (docs/pipeline.md), on the descriptor's method, origin_form and upgrade.
                early = policy_verdict(method, path[:1] == b"/", upgrade)
                lim = None if early is not None else decide(req, now)
            values = verdict_fields(early, flags, lim, route_fields(req), 0)
            record = record_cache.get(values)
            if record is None:
                if len(record_cache) >= _RECORD_CACHE:
                    record_cache.clear()
                record = record_cache[values] = VerdictRecord(*values)
            append(record)
        self.fast += fast
        self.fallback += len(out) - fast
        self._counted += out
        return out

    def count(self) -> None:
        """Bring the telemetry counters, the parser's counters and the limiter's counter registers up to date with
        the verdicts given so far (``"model"`` counts each one in its cycle)."""
        with self._lock:
            records, self._counted = self._counted, []
        if not records:
            return
        core = self.core
        tally = {}
        for r in records:
            key = (r.action._value_, r.reason._value_, r.flags)         # (.value is a slow property)
            tally[key] = tally.get(key, 0) + 1
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

    def __init__(self, params: CoreParams = CoreParams(), model: CoreModel | None = None):
        super().__init__(params, model)
        self.classifier = SoftwareClassifier(self.model)

    def read32(self, address: int) -> int:
        self.classifier.count()
        return super().read32(address)

    def write32(self, address: int, value: int) -> None:
        self.classifier.count()
        super().write32(address, value)

    def classify_stream(self, packets, inline: bool = False):
        """Verdict records for ``packets`` (whole requests, or Ethernet frames when ``inline``), computed
        functionally (:class:`SoftwareClassifier`); ``latency_cycles`` is 0."""
        if self._closed:
            raise TransportError("software transport is closed")
        return self.classifier.records(packets, inline)

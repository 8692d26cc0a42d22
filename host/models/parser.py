"""Bit-exact model of the HTTP/1.1 header parser (``hdl/parser/header_parser.py``), the front of the offload pipeline.

packet bytes ─▶ :func:`parse` / :class:`ParserModel` ─▶ one :class:`Descriptor` per packet ─▶ tenant lookup, router

``docs/parser.md`` is the specification; this module implements it to the bit, including where parsing stops
(``header_len``) and every field's value at that point. The keyed fingerprint it uses is in
:mod:`wirespeed.host.keys`.

Speed. Well-formed lines go through one regular expression each. Only the line where parsing stops is scanned
state by state, so the stop byte and its flag are exact. Fingerprints are computed once, at the end, for the values
that made it into the descriptor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple


from ...hdl.parser.layouts import (BUILTIN_NAMES, EXTRA_NAMES_RESET, EXTRA_SLOTS, FP_POLY_RESET, FP_SEED_RESET,
                                   LEN_MAX, METHODS, NAME_BYTES, PREFIX_BYTES, PREFIX_ENTRIES, ErrorFlag, KeySource, Method, Version)
from ...hdl.parser.layouts import Descriptor as DescriptorLayout
from ..errors import ConfigError, check_int
from ..keys import U64, fingerprint
from ..records import LayoutRecord
from .register_bank import BlockModel, RegisterBankModel

__all__ = ["ParserConfig", "Descriptor", "HeaderScan", "scan", "is_origin_form", "parse", "content_length_value", "ParserModel",
           "ParserBlock"]


# -- configuration ----------------------------------------------------------------------------------------------------

_TCHAR_CLASS = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TCHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _as_bytes(value, field_name: str) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("ascii")
        except UnicodeEncodeError:
            raise ConfigError(field_name, value, "must be ASCII") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise ConfigError(field_name, value, "must be bytes")


@dataclass(frozen=True)
class ParserConfig:
    """What the parser's registers hold (``hdl/parser/parser.rdl``), validated.

    Parameters
    ----------
    max_header_bytes : int
        Header block limit, 1..65535 (``limits.max_header_bytes``).
    default_class : int
        ``route_class`` when no prefix matches, 0..15.
    poly, seed : int
        Fingerprint key: low 64 bits of P and the seed S (see :func:`derive_key`).
    prefixes : sequence
        Up to 16 route prefix-table entries, at their table index; each is ``None`` (unused) or
        ``(prefix, route_class)`` with a prefix of 0..32 bytes and a class 0..15. Stored padded with ``None`` to 16.
    extras : sequence
        Up to 4 extra header names, at their slot; each ``None`` or a token of 1..32 bytes. Stored lower-cased and
        padded with ``None`` to 4. Reset: ``EXTRA_NAMES_RESET``, slot 0 ``x-token-estimate`` (the limiter's reset
        cost source reads its number).

    Raises
    ------
    ConfigError
        Naming the field, the value and the allowed range.
    """
    max_header_bytes: int = 8192
    default_class: int = 0
    poly: int = FP_POLY_RESET
    seed: int = FP_SEED_RESET
    prefixes: tuple = ()
    extras: tuple = EXTRA_NAMES_RESET
    # Lookup structures derived from the tables, for parse().
    _routes: tuple = field(init=False, repr=False, compare=False)
    _extra_slots: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        check_int("max_header_bytes", self.max_header_bytes, 1, LEN_MAX)
        check_int("default_class", self.default_class, 0, 15)
        check_int("poly", self.poly, 0, U64)
        check_int("seed", self.seed, 0, U64)

        prefixes = list(self.prefixes)
        if len(prefixes) > PREFIX_ENTRIES:
            raise ConfigError("prefixes", len(prefixes), f"at most {PREFIX_ENTRIES} entries")
        table = []
        for index, entry in enumerate(prefixes):
            if entry is None:
                table.append(None)
                continue
            try:
                prefix, route_class = entry
            except (TypeError, ValueError):
                raise ConfigError(f"prefixes[{index}]", entry, "must be None or (prefix, route_class)") from None
            prefix = _as_bytes(prefix, f"prefixes[{index}].prefix")
            if len(prefix) > PREFIX_BYTES:
                raise ConfigError(f"prefixes[{index}].prefix", prefix, f"at most {PREFIX_BYTES} bytes")
            check_int(f"prefixes[{index}].route_class", route_class, 0, 15)
            table.append((prefix, route_class))
        table += [None] * (PREFIX_ENTRIES - len(table))

        extras = list(self.extras)
        if len(extras) > EXTRA_SLOTS:
            raise ConfigError("extras", len(extras), f"at most {EXTRA_SLOTS} names")
        names = []
        for slot, name in enumerate(extras):
            if name is None:
                names.append(None)
                continue
            name = _as_bytes(name, f"extras[{slot}]")
            if not 1 <= len(name) <= NAME_BYTES:
                raise ConfigError(f"extras[{slot}]", name, f"must be 1..{NAME_BYTES} bytes")
            if not _TCHARS.issuperset(name):
                raise ConfigError(f"extras[{slot}]", name, "must be a header name token (RFC 9110 tchar)")
            if name.lower() == _AUTHORIZATION:
                # The parser fingerprints an authorization line's Bearer token, not its whole value.
                raise ConfigError(f"extras[{slot}]", name, "must not be authorization (its token is key_fp)")
            names.append(name.lower())
        names += [None] * (EXTRA_SLOTS - len(names))

        object.__setattr__(self, "prefixes", tuple(table))
        object.__setattr__(self, "extras", tuple(names))
        # Longest first, then lower index: the first entry of this order that matches is the winner.
        routes = sorted(((e[0], e[1], i) for i, e in enumerate(table) if e is not None),
                        key=lambda r: (-len(r[0]), r[2]))
        object.__setattr__(self, "_routes", tuple((p, c) for p, c, _ in routes))
        slots: dict[bytes, tuple[int, ...]] = {}
        for slot, name in enumerate(names):
            if name is not None:
                slots[name] = slots.get(name, ()) + (slot,)
        object.__setattr__(self, "_extra_slots", slots)

    def route(self, path: bytes) -> tuple[bool, int]:
        """``(route_match, route_class)`` for a path: longest matching prefix, ties to the lower entry index."""
        for prefix, route_class in self._routes:
            if path.startswith(prefix):
                return True, route_class
        return False, self.default_class


# -- descriptor -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Descriptor(LayoutRecord, layout=DescriptorLayout, decoders={"errors": ErrorFlag}):
    """One per packet; mirrors :class:`wirespeed.hdl.parser.layouts.Descriptor` field for field.

    The defaults are the reset values. 1-bit fields are ``bool``; ``extra_present`` is a bitmask (bit i = slot i).
    """
    method: Method = Method.NONE
    version: Version = Version.NONE
    path_len: int = 0
    path_fp: int = 0
    route_match: bool = False
    route_class: int = 0
    host_present: bool = False
    host_len: int = 0
    host_fp: int = 0
    key_source: KeySource = KeySource.NONE
    key_len: int = 0
    key_fp: int = 0
    cl_present: bool = False
    cl_overflow: bool = False
    content_length: int = 0
    chunked: bool = False
    extra_present: int = 0
    extra_fp: tuple = (0,) * EXTRA_SLOTS
    extra_numeric: bool = False
    extra_value: int = 0
    header_len: int = 0
    header_lines: int = 0
    complete: bool = False
    errors: ErrorFlag = ErrorFlag(0)
    origin_form: bool = False
    upgrade: bool = False

    @property
    def flags(self) -> frozenset:
        """Names of the error flags set."""
        return frozenset(f.name for f in ErrorFlag if f & self.errors)

    def stop_index(self, packet_len: int) -> int:
        """Byte index of the packet where parsing stopped: the last byte consumed for a complete block or an error,
        the first byte beyond the limit for ``header_too_large``, the last byte (or 0) for ``truncated``.

        The descriptor leaves the hardware a fixed number of cycles after the beat holding this byte."""
        if ErrorFlag.truncated in self.errors:
            return max(0, packet_len - 1)
        if ErrorFlag.header_too_large in self.errors:
            return self.header_len
        return self.header_len - 1



# -- parse ------------------------------------------------------------------------------------------------------------

CR, LF, SP, HTAB, COLON = 0x0D, 0x0A, 0x20, 0x09, 0x3A
_FIELD_CLASS = rb"\t\x20-\x7e\x80-\xff"          # WS, vchar, obs-text: what a field value may hold

# A whole well-formed field line, or request line: the fast path.
_RE_FIELD_LINE = re.compile(rb"([%s]+):([%s]*)\r\n" % (_TCHAR_CLASS, _FIELD_CLASS))
_RE_REQUEST_LINE = re.compile(rb"([%s]+) ([\x21-\x7e]+) HTTP/1\.([01])\r\n" % _TCHAR_CLASS)
# Runs of the bytes a state keeps consuming: the slow path's per-state scanners.
_RE_TCHAR_RUN = re.compile(rb"[%s]*" % _TCHAR_CLASS)
_RE_VCHAR_RUN = re.compile(rb"[\x21-\x7e]*")
_RE_VALUE_RUN = re.compile(rb"[%s]*" % _FIELD_CLASS)
_RE_CR_OR_LF = re.compile(rb"[\r\n]")
# On the trimmed value: "Bearer" (any case), 1+ SP, a token without WS.
_RE_BEARER = re.compile(rb"[Bb][Ee][Aa][Rr][Ee][Rr] +([^ \t]+)")

_HOST, _CONTENT_LENGTH, _TRANSFER_ENCODING, _AUTHORIZATION, _X_API_KEY, _UPGRADE = BUILTIN_NAMES
_WS = b" \t"
_CL_MAX_DIGITS = len(str(U64))                  # 20: longer content-length values are bad_content_length

_E = {f.name: f.value for f in ErrorFlag}
_BAD_REQUEST_LINE = _E["bad_request_line"]
_BARE_CR_LF = _E["bare_cr_lf"]
_OBS_FOLD = _E["obs_fold"]
_WS_BEFORE_COLON = _E["ws_before_colon"]
_BAD_FIELD_NAME = _E["bad_field_name"]
_BAD_FIELD_VALUE = _E["bad_field_value"]
_MISSING_HOST = _E["missing_host"]
_DUPLICATE_HOST = _E["duplicate_host"]
_BAD_CONTENT_LENGTH = _E["bad_content_length"]
_CL_MISMATCH = _E["cl_mismatch"]
_CL_AND_TE = _E["cl_and_te"]
_BAD_TRANSFER_ENCODING = _E["bad_transfer_encoding"]
_HEADER_TOO_LARGE = _E["header_too_large"]
_TRUNCATED = _E["truncated"]

# Scanner outcomes.
_STOP, _LINE, _BLOCK_END = range(3)


def _scan_request_line(packet: bytes, end: int):
    """Step the request line state by state, from byte 0, up to its stop or the end of the line.

    Returns ``(outcome, pos, flag, method, path, version)``: ``outcome`` is ``_STOP`` (``flag`` set, or 0 when the
    bytes ran out at ``end``) or ``_LINE`` (the line ended well; continue at ``pos``). ``pos`` counts the bytes
    consumed. ``path`` is None if TARGET was never entered.
    """
    method, path, version = Method.NONE, None, Version.NONE
    # METHOD
    p = _RE_TCHAR_RUN.match(packet, 0, end).end()
    if p == end:
        return _STOP, end, 0, method, path, version
    b = packet[p]
    if b != SP or p == 0:
        return _STOP, p + 1, _BARE_CR_LF if b == LF else _BAD_REQUEST_LINE, method, path, version
    method = METHODS.get(packet[:p], Method.OTHER)
    # TARGET
    t0 = p = p + 1
    p = _RE_VCHAR_RUN.match(packet, p, end).end()
    path = packet[t0:p].partition(b"?")[0]
    if p == end:
        return _STOP, end, 0, method, path, version
    b = packet[p]
    if b != SP or p == t0:
        return _STOP, p + 1, _BARE_CR_LF if b == LF else _BAD_REQUEST_LINE, method, path, version
    # VERSION: any 8 bytes, then CR; G2 catches an LF anywhere in them.
    v0 = p = p + 1
    m = _RE_CR_OR_LF.search(packet, v0, min(v0 + 9, end))
    if m is None:
        if end - v0 >= 9:
            return _STOP, v0 + 9, _BAD_REQUEST_LINE, method, path, version
        return _STOP, end, 0, method, path, version
    p = m.start()
    if packet[p] == LF:
        return _STOP, p + 1, _BARE_CR_LF, method, path, version
    text = packet[v0:p]
    if text == b"HTTP/1.1":
        version = Version.HTTP_1_1
    elif text == b"HTTP/1.0":
        version = Version.HTTP_1_0
    else:
        return _STOP, p + 1, _BAD_REQUEST_LINE, method, path, version
    # RL_LF
    p += 1
    if p == end:
        return _STOP, end, 0, method, path, version
    if packet[p] != LF:
        return _STOP, p + 1, _BARE_CR_LF, method, path, version
    return _LINE, p + 1, 0, method, path, version


def _scan_field_line(packet: bytes, p: int, end: int):
    """Step one line from LINE_START at ``p`` state by state.

    Returns ``(outcome, pos, flag, name, raw_value)``: ``_STOP`` (``flag`` set, or 0 when the bytes ran out at
    ``end``), ``_BLOCK_END`` (the empty line's LF was consumed) or ``_LINE`` (a well-formed field line to commit).
    """
    if p == end:
        return _STOP, end, 0, None, None
    b = packet[p]
    if b == CR:                                         # END_LF next
        p += 1
        if p == end:
            return _STOP, end, 0, None, None
        if packet[p] == LF:
            return _BLOCK_END, p + 1, 0, None, None
        return _STOP, p + 1, _BARE_CR_LF, None, None
    if b == LF:
        return _STOP, p + 1, _BARE_CR_LF, None, None
    if b == SP or b == HTAB:
        return _STOP, p + 1, _OBS_FOLD, None, None
    if b not in _TCHARS:
        return _STOP, p + 1, _BAD_FIELD_NAME, None, None
    # NAME
    n0 = p
    p = _RE_TCHAR_RUN.match(packet, p, end).end()
    if p == end:
        return _STOP, end, 0, None, None
    b = packet[p]
    if b != COLON:
        flag = _BARE_CR_LF if b == LF else _WS_BEFORE_COLON if b in _WS else _BAD_FIELD_NAME
        return _STOP, p + 1, flag, None, None
    name = packet[n0:p]
    # VALUE
    v0 = p = p + 1
    p = _RE_VALUE_RUN.match(packet, p, end).end()
    if p == end:
        return _STOP, end, 0, None, None
    b = packet[p]
    if b != CR:
        return _STOP, p + 1, _BARE_CR_LF if b == LF else _BAD_FIELD_VALUE, None, None
    value = packet[v0:p]
    # VALUE_LF
    p += 1
    if p == end:
        return _STOP, end, 0, None, None
    if packet[p] != LF:
        return _STOP, p + 1, _BARE_CR_LF, None, None
    return _LINE, p + 1, 0, name, value


def content_length_value(value: bytes):
    """``(value, overflow)`` of a ``1*DIGIT`` value of at most 20 digits, saturated at 2^64 − 1; None otherwise."""
    if not value or len(value) > _CL_MAX_DIGITS or not value.isdigit():    # bytes.isdigit() is ASCII-only
        return None
    number = int(value)
    return (U64, True) if number > U64 else (number, False)


class HeaderScan(NamedTuple):
    """What :func:`scan` read of one packet: the strings a :class:`Descriptor` holds fingerprints and lengths of, and
    its other fields, before any fingerprint is computed.

    ``path``, ``host``, ``key`` and each of ``extra_values`` are ``None`` when absent; ``cl_value`` is
    ``(content_length, cl_overflow)`` of the first Content-Length line, or ``None``; ``errors`` an int of
    :class:`ErrorFlag` bits; ``upgrade``: an ``Upgrade`` line was committed. (``origin_form`` is
    :func:`is_origin_form` of ``path``.)
    """
    method: Method
    version: Version
    path: bytes | None
    host: bytes | None
    key_source: KeySource
    key: bytes | None
    cl_value: tuple | None
    chunked: bool
    extra_values: list
    header_len: int
    lines: int
    complete: bool
    errors: int
    upgrade: bool


def is_origin_form(path) -> bool:
    """The descriptor's ``origin_form``: the request target's first byte is ``/``. ``path`` is :func:`scan`'s (the
    target up to its first ``?``, or None): it starts with ``/`` exactly when the target does."""
    return path is not None and path[:1] == b"/"


def scan(packet: bytes, config: ParserConfig = ParserConfig()) -> HeaderScan:
    """The parser's reading of one packet up to its stop (``docs/parser.md``), without fingerprints: what
    :func:`parse` turns into a :class:`Descriptor`. Callers that need only some fingerprints (the ``"software"``
    transport) compute those alone."""
    if not isinstance(packet, bytes):
        packet = bytes(packet)
    limit = config.max_header_bytes
    size = len(packet)
    end = size if size < limit else limit       # bytes that may be parsed
    end_flag = _HEADER_TOO_LARGE if size > limit else _TRUNCATED

    errors = 0
    complete = False
    lines = 0
    host = None
    cl_value = None                             # (value, overflow) of the first content-length line
    cl_raw = None                               # its trimmed value bytes, for the spelling check of a repeat
    te_seen = chunked = upgrade = False
    auth = xkey = None
    extra_values = [None] * EXTRA_SLOTS
    extra_slots = config._extra_slots

    m = _RE_REQUEST_LINE.match(packet, 0, end)
    if m is not None:
        method = METHODS.get(m[1], Method.OTHER)
        path = m[2].partition(b"?")[0]
        version = Version.HTTP_1_1 if m[3] == b"1" else Version.HTTP_1_0
        pos = m.end()
        outcome = _LINE
    else:
        outcome, pos, errors, method, path, version = _scan_request_line(packet, end)

    match_line = _RE_FIELD_LINE.match
    while outcome == _LINE:
        m = match_line(packet, pos, end)
        if m is not None:
            name, value = m.groups()
            pos = m.end()
        else:
            outcome, pos, errors, name, value = _scan_field_line(packet, pos, end)
            if outcome != _LINE:
                break
        # VALUE_LF took the LF: commit the line.
        lines += 1
        name = name.lower()
        value = value.strip(_WS)
        if name == _HOST:
            if host is not None:
                errors = _DUPLICATE_HOST
            else:
                host = value
        elif name == _CONTENT_LENGTH:
            parsed = content_length_value(value)
            if parsed is None:
                errors = _BAD_CONTENT_LENGTH
            elif cl_value is None:
                cl_value, cl_raw = parsed, value
            elif (len(value), parsed) != (len(cl_raw), cl_value) or (
                    fingerprint(value, config.poly, config.seed) != fingerprint(cl_raw, config.poly, config.seed)):
                # The gateware compares (length, value, overflow, fingerprint): byte equality unless both
                # overflow, and then only the keyed fingerprint tells two spellings apart.
                errors = _CL_MISMATCH
        elif name == _TRANSFER_ENCODING:
            if te_seen or value.lower() != b"chunked":
                errors = _BAD_TRANSFER_ENCODING
            else:
                chunked = True
            te_seen = True
        elif name == _AUTHORIZATION:
            if auth is None:
                bearer = _RE_BEARER.fullmatch(value)
                if bearer is not None:
                    auth = bearer[1]
        elif name == _X_API_KEY:
            if xkey is None:
                xkey = value
        elif name == _UPGRADE:
            upgrade = True
        if extra_slots:
            for slot in extra_slots.get(name, ()):
                if extra_values[slot] is None:
                    extra_values[slot] = value
        if errors:                              # a commit rule failed: stop after this LF
            outcome = _STOP

    if outcome == _BLOCK_END:
        complete = True
        if version == Version.HTTP_1_1 and host is None:
            errors |= _MISSING_HOST
        if cl_value is not None and te_seen:
            errors |= _CL_AND_TE
    elif not errors:
        errors = end_flag                       # ran out of bytes: the limit, or the end of the packet

    if auth is not None:
        key_source, key = KeySource.AUTHORIZATION, auth
    elif xkey is not None:
        key_source, key = KeySource.X_API_KEY, xkey
    else:
        key_source, key = KeySource.NONE, None
    return HeaderScan(method, version, path, host, key_source, key, cl_value, chunked, extra_values, pos, lines,
                      complete, errors, upgrade)


def parse(packet: bytes, config: ParserConfig = ParserConfig()) -> Descriptor:
    """The descriptor the parser emits for one packet (``docs/parser.md``).

    Parameters
    ----------
    packet : bytes
        The whole packet, from the first byte of the request line.
    config : ParserConfig
        The register contents.

    Returns
    -------
    Descriptor
        Fields reached before the stop hold their values at the stop; the rest hold their reset values.
    """
    (method, version, path, host, key_source, key, cl_value, chunked, extra_values, pos, lines, complete,
     errors, upgrade) = scan(packet, config)
    poly, seed = config.poly, config.seed
    route_match, route_class = config.route(path or b"")
    extra_present = 0
    extra_fp = [0] * EXTRA_SLOTS
    for slot, value in enumerate(extra_values):
        if value is not None:
            extra_present |= 1 << slot
            extra_fp[slot] = fingerprint(value, poly, seed)
    cl, cl_overflow = cl_value if cl_value is not None else (0, False)
    # Extra slot 0's value, read as a number like Content-Length (saturated at 2^64 − 1): a limiter cost source.
    extra_number = content_length_value(extra_values[0]) if extra_values[0] is not None else None
    return Descriptor(
        method, version,
        min(len(path), LEN_MAX) if path is not None else 0,
        fingerprint(path, poly, seed) if path is not None else 0,
        route_match, route_class,
        host is not None,
        min(len(host), LEN_MAX) if host is not None else 0,
        fingerprint(host, poly, seed) if host is not None else 0,
        key_source,
        min(len(key), LEN_MAX) if key is not None else 0,
        fingerprint(key, poly, seed) if key is not None else 0,
        cl_value is not None, cl_overflow, cl, chunked,
        extra_present, tuple(extra_fp),
        extra_number is not None, extra_number[0] if extra_number is not None else 0,
        pos, min(lines, LEN_MAX), complete, ErrorFlag(errors),
        is_origin_form(path), upgrade,
    )


# -- the parser block: descriptors and counters -----------------------------------------------------------------------

class ParserModel:
    """The parser block as the driver sees it: a configuration, one descriptor per packet, and the counters.

    Parameters
    ----------
    config : ParserConfig
        The register contents; assign :attr:`config` to reconfigure between packets.

    Attributes
    ----------
    requests : int
        Descriptors emitted (``requests``).
    complete : int
        Descriptors with ``complete`` set (``complete``).
    error_count : list of int
        Per :class:`ErrorFlag` bit, descriptors with that flag set (``error_count[i]``).
    """

    def __init__(self, config: ParserConfig = ParserConfig()):
        self.config = config
        self.requests = 0
        self.complete = 0
        self.error_count = [0] * len(ErrorFlag)

    def process(self, packet: bytes) -> Descriptor:
        desc = parse(packet, self.config)
        self.requests = (self.requests + 1) & U64
        self.complete = (self.complete + desc.complete) & U64
        errors = desc.errors.value
        if errors:
            for i in range(len(self.error_count)):
                if errors >> i & 1:
                    self.error_count[i] = (self.error_count[i] + 1) & U64
        return desc


# -- the parser's registers inside the core --------------------------------------------------------------------------

def _unpack(words, size: int) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in words)[:size]


class ParserBlock(BlockModel):
    """The parser's committed prefix table and extra names, its key and limits, and its counters."""

    PREFIX = "parser."

    def __init__(self, bank: RegisterBankModel):
        super().__init__(bank)
        self.prefixes: list = [None] * PREFIX_ENTRIES
        self.extras: list = list(EXTRA_NAMES_RESET)
        self._config = None

    def before_read(self, reg: str, cycle: int) -> None:
        pass

    def after_write(self, reg: str, cycle: int) -> None:
        name = reg[len(self.PREFIX):]
        if name == "prefix_commit" and self._fired("prefix_commit.go"):
            index = self._field("prefix_commit", "index")
            length = min(self._field("prefix_ctrl", "len"), PREFIX_BYTES)
            data = _unpack([self._value(f"prefix_data[{i}]") for i in range(PREFIX_BYTES // 4)], length)
            valid = self._field("prefix_ctrl", "valid")
            self.prefixes[index] = (data, self._field("prefix_ctrl", "route_class")) if valid else None
        elif name == "extra_commit" and self._fired("extra_commit.go"):
            slot = self._field("extra_commit", "index")
            length = min(self._field("extra_ctrl", "len"), NAME_BYTES)
            data = _unpack([self._value(f"extra_data[{i}]") for i in range(NAME_BYTES // 4)], length)
            self.extras[slot] = data or None
        self._config = None

    def config(self) -> ParserConfig:
        """The configuration the RTL parses with (raises ConfigError for register contents the driver never
        writes, such as a limit of 0)."""
        if self._config is None:
            self._config = ParserConfig(
                max_header_bytes=self._field("limits", "max_header_bytes"),
                default_class=self._field("route_default", "default_class"),
                poly=self._value("fp_poly"), seed=self._value("fp_seed"),
                prefixes=tuple(self.prefixes), extras=tuple(self.extras))
        return self._config

    def count(self, desc: Descriptor) -> None:
        """The counters one descriptor advances."""
        self.bank.incr("parser.requests.count")
        if desc.complete:
            self.bank.incr("parser.complete.count")
        for i, flag in enumerate(ErrorFlag):
            if flag & desc.errors:
                self.bank.incr(f"parser.error_count[{i}].count")

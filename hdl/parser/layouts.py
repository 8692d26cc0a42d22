"""Layouts and enums of the HTTP/1.1 header parser, shared by the gateware (:mod:`.header_parser`) and its model
(:mod:`wirespeed.host.models.parser`). The behaviour they encode is specified in ``docs/parser.md``.

(No ``from __future__ import annotations`` here: ``data.Struct`` reads its field shapes from the annotations.)
"""


import enum

from amaranth.lib import data
from amaranth.lib import enum as amaranth_enum

__all__ = ["Method", "Version", "KeySource", "ErrorFlag", "ERROR_NAMES", "Descriptor", "METHODS", "EXTRA_SLOTS",
           "EXTRA_NAMES_RESET", "extra_name_words",
           "PREFIX_ENTRIES", "PREFIX_BYTES", "NAME_BYTES", "LEN_MAX", "FP_POLY_RESET", "FP_SEED_RESET",
           "BUILTIN_NAMES"]

#: Configurable extra header slots, prefix-table entries, and their byte capacity.
EXTRA_SLOTS = 4
PREFIX_ENTRIES = 16
PREFIX_BYTES = 32
NAME_BYTES = 32
#: The extra header names at reset, one per slot (None: empty): slot 0 is the token-estimate header a gateway sets,
#: the limiter's reset cost source (``docs/limiter.md``, "Decision"), so token limits work with no configuration.
EXTRA_NAMES_RESET = (b"x-token-estimate", None, None, None)
assert len(EXTRA_NAMES_RESET) == EXTRA_SLOTS


def extra_name_words(names=EXTRA_NAMES_RESET) -> list[tuple[int, int]]:
    """``(name bytes as an integer, byte 0 lowest; length)`` for each of the EXTRA_SLOTS slots (``(0, 0)`` empty):
    the reset contents of the parsers' extra name storage."""
    names = list(names) + [None] * (EXTRA_SLOTS - len(names))
    return [(0, 0) if n is None else (int.from_bytes(n, "little"), len(n)) for n in names]


#: Lengths and counts in the descriptor saturate here.
LEN_MAX = 0xFFFF
#: Reset key (public: set a secret one before serving untrusted traffic): x^64 + x^4 + x^3 + x + 1, and a seed.
FP_POLY_RESET = 0x1B
FP_SEED_RESET = 0x5753504446503634


class Method(amaranth_enum.Enum, shape=4):
    NONE = 0
    GET = 1
    HEAD = 2
    POST = 3
    PUT = 4
    DELETE = 5
    CONNECT = 6
    OPTIONS = 7
    TRACE = 8
    PATCH = 9
    OTHER = 15


#: Method tokens and their codes (case-sensitive, RFC 9110 §9.1).
METHODS = {m.name.encode(): m for m in Method if m not in (Method.NONE, Method.OTHER)}


class Version(amaranth_enum.Enum, shape=2):
    NONE = 0
    HTTP_1_0 = 1
    HTTP_1_1 = 2


class KeySource(amaranth_enum.Enum, shape=2):
    NONE = 0
    AUTHORIZATION = 1
    X_API_KEY = 2


class ErrorFlag(enum.IntFlag):
    """Named error flags, in descriptor bit order."""
    bad_request_line = 1 << 0
    bare_cr_lf = 1 << 1
    obs_fold = 1 << 2
    ws_before_colon = 1 << 3
    bad_field_name = 1 << 4
    bad_field_value = 1 << 5
    missing_host = 1 << 6
    duplicate_host = 1 << 7
    bad_content_length = 1 << 8
    cl_mismatch = 1 << 9
    cl_and_te = 1 << 10
    bad_transfer_encoding = 1 << 11
    header_too_large = 1 << 12
    truncated = 1 << 13


ERROR_NAMES = tuple(f.name for f in ErrorFlag)

#: Header names the parser always recognises (lower case), in the order of its matchers.
BUILTIN_NAMES = (b"host", b"content-length", b"transfer-encoding", b"authorization", b"x-api-key", b"upgrade")


class Descriptor(data.Struct):
    """One per packet; see ``docs/parser.md`` for every field."""
    method: Method
    version: Version
    path_len: 16
    path_fp: 64
    route_match: 1
    route_class: 4
    host_present: 1
    host_len: 16
    host_fp: 64
    key_source: KeySource
    key_len: 16
    key_fp: 64
    cl_present: 1
    cl_overflow: 1
    content_length: 64
    chunked: 1
    extra_present: EXTRA_SLOTS
    extra_fp: data.ArrayLayout(64, EXTRA_SLOTS)
    extra_numeric: 1
    extra_value: 64
    header_len: 16
    header_lines: 16
    complete: 1
    errors: len(ErrorFlag)
    origin_form: 1
    upgrade: 1

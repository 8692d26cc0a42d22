"""The verdict: what the offload core answers for every packet, shared by the gateware (:mod:`.offload_pipeline`), the
telemetry block and the host (:mod:`wirespeed.host.driver.verdict`). The rules are specified in ``docs/pipeline.md``.

(No ``from __future__ import annotations``: ``data.Struct`` reads its field shapes from the annotations.)
"""

from amaranth.hdl import Cat, Const, Shape, Value, ValueCastable
from amaranth.lib import data
from amaranth.lib import enum as amaranth_enum

from ..frontend.layouts import PuntReason
from ..parser.layouts import ERROR_NAMES

__all__ = ["Action", "Reason", "PolicyAction", "POLICY_CHECKS", "POLICY_REASONS", "DEFAULT_ALLOWED_METHODS",
           "VerdictRecord", "FLAG_NAMES", "ERROR_FLAG_COUNT", "HIST_BUCKETS", "LATENCY_MAX",
           "reason_for_parser_error", "reason_for_punt", "REASON_NAMES", "ACTION_NAMES"]


class Action(amaranth_enum.Enum, shape=2):
    FORWARD = 0
    REJECT = 1
    PUNT = 2


class Reason(amaranth_enum.Enum, shape=6):
    """Why: one stable name per outcome. Parser errors come first, in ``ErrorFlag`` bit order."""
    OK = 0
    BAD_REQUEST_LINE = 1
    BARE_CR_LF = 2
    OBS_FOLD = 3
    WS_BEFORE_COLON = 4
    BAD_FIELD_NAME = 5
    BAD_FIELD_VALUE = 6
    MISSING_HOST = 7
    DUPLICATE_HOST = 8
    BAD_CONTENT_LENGTH = 9
    CL_MISMATCH = 10
    CL_AND_TE = 11
    BAD_TRANSFER_ENCODING = 12
    HEADER_TOO_LARGE = 13
    TRUNCATED = 14
    UNKNOWN_TENANT = 15        # 401, or punt under unknown_policy = punt
    RATE_LIMITED = 16          # 429
    NO_BACKEND = 17            # 503
    # The front end's punt reasons, PuntReason 1..8 (see reason_for_punt).
    NOT_IP = 18
    NOT_TCP = 19
    PORT_NOT_SERVED = 20
    IPV4_FRAGMENT = 21
    IPV6_EXT_HEADER = 22
    BAD_L3_L4_HEADER = 23
    TRUNCATED_FRAME = 24
    NO_PAYLOAD = 25
    HEADER_SPANS_SEGMENTS = 26  # inline: the header block does not end in this segment
    BAD_TKEEP = 27              # AXI-Stream beat with non-contiguous tkeep (or tkeep 0 before tlast)
    # The request policy's checks (docs/pipeline.md, "Request policy"), in POLICY_CHECKS order.
    CONNECT = 28                # method CONNECT
    METHOD_NOT_ALLOWED = 29     # method outside allowed_methods
    TARGET_FORM = 30            # target not origin-form
    UPGRADE = 31                # an Upgrade field line


class PolicyAction(amaranth_enum.Enum, shape=2):
    """A policy register's ``action`` (``pipeline.rdl``); the raw value 3 acts as ``REJECT``."""
    ALLOW = 0
    REJECT = 1
    PUNT = 2


#: The request policy's checks, in precedence order (the first that fires decides); each has its register
#: ``pipeline.policy_<check>`` and its reason.
POLICY_CHECKS = ("connect", "method", "target_form", "upgrade")
POLICY_REASONS = {"connect": Reason.CONNECT, "method": Reason.METHOD_NOT_ALLOWED, "target_form": Reason.TARGET_FORM,
                  "upgrade": Reason.UPGRADE}
#: ``allowed_methods`` at reset: GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH (the reset value in pipeline.rdl).
DEFAULT_ALLOWED_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")

#: Parser error bit ``i`` (``ErrorFlag`` order) is reason ``PARSER_ERROR_BASE + i``.
PARSER_ERROR_BASE = Reason.BAD_REQUEST_LINE.value
#: Front-end punt reason ``p`` is reason ``PUNT_REASON_BASE + p``.
PUNT_REASON_BASE = Reason.NOT_IP.value - PuntReason.NOT_IP.value


def _reason(number):
    """``number`` as a :class:`Reason`: an ``int`` gives the member, a value (in the gateware) a ``Reason`` view of it
    zero-extended to the enum's width."""
    if not isinstance(number, (Value, ValueCastable)):
        return Reason(number)
    number, width = Value.cast(number), Shape.cast(Reason).width
    assert len(number) <= width and not number.shape().signed
    return Reason(Cat(number, Const(0, width - len(number))))


def reason_for_parser_error(bit_index):
    """The reason for the parser's error bit ``bit_index`` (``ErrorFlag`` order): an ``int`` gives a
    :class:`Reason`, a value (in the gateware) a ``Reason`` view."""
    return _reason(PARSER_ERROR_BASE + bit_index)


def reason_for_punt(punt):
    """The reason for the front end's punt reason ``punt``: a :class:`PuntReason` gives a :class:`Reason`, a
    ``PuntReason`` view (in the gateware) a ``Reason`` view."""
    if isinstance(punt, (Value, ValueCastable)):
        return _reason(PUNT_REASON_BASE + Value.cast(punt))
    return _reason(PUNT_REASON_BASE + PuntReason(punt).value)


# The two blocks of reasons follow the parser's and the front end's enums name for name.
assert [reason_for_parser_error(i).name.lower() for i in range(len(ERROR_NAMES))] == list(ERROR_NAMES)
assert all(reason_for_punt(p).name == p.name for p in PuntReason if p is not PuntReason.NONE)

REASON_NAMES = {r.value: r.name.lower() for r in Reason}
ACTION_NAMES = {a.value: a.name.lower() for a in Action}

#: Verdict flag bits: the parser's error flags (bits 0..13), then the rest. Names are the public ``Verdict.flags``.
FLAG_NAMES = ERROR_NAMES + ("bad_tkeep", "inline", "l4_valid", "route_match", "key_present", "tenant_found",
                            "cl_present", "chunked", "complete", "mmio")
#: The first this many flags are pipeline error flags; telemetry counts each of them.
ERROR_FLAG_COUNT = len(ERROR_NAMES) + 1
assert len(FLAG_NAMES) <= 32

#: Latency histogram: bucket 0 counts latency 0..1 cycles, bucket k (1..HIST_BUCKETS-2) counts [2^k, 2^(k+1)),
#: the last bucket everything from 2^(HIST_BUCKETS-1) up.
HIST_BUCKETS = 16
#: ``latency_cycles`` saturates here.
LATENCY_MAX = (1 << 16) - 1


class VerdictRecord(data.Struct):
    """One per packet: on the verdict-record stream, in ``tuser`` of the packet's last beat, and in the result FIFO.

    A ``*_valid`` bit says whether the field beside it means anything (``None`` on the host when clear).
    """
    action: Action
    status: 10                 # HTTP status: 200 forward; 400/401/429/431/503 or the policy's (405) reject; 0 punt
    reason: Reason
    tenant_valid: 1
    tenant: 16
    pool_valid: 1
    pool: 4
    backend_valid: 1
    backend: 16
    retry_valid: 1
    retry_after_ns: 64
    flags: 32
    hash: 32
    latency_cycles: 16         # first beat accepted → verdict valid, saturating

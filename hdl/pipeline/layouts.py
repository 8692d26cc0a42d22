"""The verdict: what the offload core answers for every packet, shared by the gateware (:mod:`.pipeline`), the
telemetry block and the host (:mod:`wirespeed.host.driver.verdict`). The rules are specified in ``docs/pipeline.md``.

(No ``from __future__ import annotations``: ``data.Struct`` reads its field shapes from the annotations.)
"""

from amaranth.lib import data
from amaranth.lib import enum as amaranth_enum

from ..frontend.layouts import PuntReason
from ..parser.layouts import ERROR_NAMES

__all__ = ["Action", "Reason", "VerdictRecord", "FLAG_NAMES", "ERROR_FLAG_COUNT", "HIST_BUCKETS", "LATENCY_MAX",
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
    # The front end's punt reasons, PuntReason 1..8 at 17 + value.
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


# Parser error reasons are 1 + the ErrorFlag bit index.
assert [r.name.lower() for r in Reason][1:1 + len(ERROR_NAMES)] == list(ERROR_NAMES)
assert all(Reason(17 + p.value).name == p.name for p in PuntReason if p is not PuntReason.NONE)

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


def reason_for_parser_error(bit_index: int) -> Reason:
    return Reason(1 + bit_index)


def reason_for_punt(punt: PuntReason) -> Reason:
    return Reason(17 + punt.value)


class VerdictRecord(data.Struct):
    """One per packet: on the verdict-record stream, in ``tuser`` of the packet's last beat, and in the result FIFO.

    A ``*_valid`` bit says whether the field beside it means anything (``None`` on the host when clear).
    """
    action: Action
    status: 10                 # HTTP status: 200 forward; 400/401/429/431/503 reject; 0 punt
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

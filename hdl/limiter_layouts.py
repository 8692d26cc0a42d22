"""Layouts and constants of the tenant table and token-bucket limiter, shared by the gateware and its model
(:mod:`wirespeed.host.limiter`). The behaviour they encode is specified in ``docs/limiter.md``.

(No ``from __future__ import annotations``: ``data.Struct`` reads its field shapes from the annotations.)
"""

from amaranth.lib import data
from amaranth.lib import enum as amaranth_enum

__all__ = ["Decision", "UnknownPolicy", "CostSource", "LimitVerdict", "NANO", "PLANS", "WAYS", "HALVES",
           "REQ_RATE_MAX", "REQ_BURST_MAX", "COST_RATE_MAX", "COST_BURST_MAX", "DT_MAX_NS", "TOKEN_BITS",
           "COST_MAX"]

#: Nano-tokens per token: bucket counters hold tokens x 10^9, so a refill of dt_ns x rate_per_s is exact.
NANO = 10**9
PLANS = 64
WAYS = 4
HALVES = 2
REQ_RATE_MAX = (1 << 24) - 1
REQ_BURST_MAX = (1 << 20) - 1
COST_RATE_MAX = (1 << 32) - 1
COST_BURST_MAX = (1 << 32) - 1
COST_MAX = (1 << 32) - 1
#: Elapsed time is clamped here before the refill multiply; every bucket refills from empty in less.
DT_MAX_NS = (1 << 48) - 1
TOKEN_BITS = 64


class Decision(amaranth_enum.Enum, shape=2):
    ALLOW = 0
    REJECT = 1
    PUNT = 2


class UnknownPolicy(amaranth_enum.Enum, shape=2):
    REJECT = 0
    DEFAULT = 1
    PUNT = 2


class CostSource(amaranth_enum.Enum, shape=1):
    FIXED = 0
    CONTENT_LENGTH = 1


class LimitVerdict(data.Struct):
    """The limiter's decision for one descriptor (``docs/limiter.md``)."""
    decision: Decision
    status: 10
    tenant_found: 1
    tenant: 16
    cost: 32
    retry_after_ns: 64

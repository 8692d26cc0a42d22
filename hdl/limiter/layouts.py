"""Layouts and constants of the tenant table and token-bucket limiter, shared by the gateware and its model
(:mod:`wirespeed.host.models.limiter`). The behaviour they encode is specified in ``docs/limiter.md``.

(No ``from __future__ import annotations``: ``data.Struct`` reads its field shapes from the annotations.)
"""

from dataclasses import dataclass

from amaranth.lib import data
from amaranth.lib import enum as amaranth_enum

__all__ = ["LimiterParams", "TableOp", "Decision", "UnknownPolicy", "CostSource", "LimitVerdict", "NANO", "PLANS", "WAYS", "HALVES",
           "RATE_PERIOD_S", "TOKEN_UNITS", "REQ_RATE_MAX", "REQ_BURST_MAX", "COST_RATE_MAX", "COST_BURST_MAX",
           "DT_MAX_NS", "TOKEN_BITS", "COST_MAX", "COST_SCALE_CL_RESET"]

NANO = 10**9
#: Plan rates are whole numbers per this many seconds (per minute): every per-minute rate, and every per-second rate
#: that is a whole number per minute (0.5/s, 1.5/s), is exact.
RATE_PERIOD_S = 60
#: Bucket units per token at a 1 ns tick: a bucket gains ``rate`` (per minute) units per ns, so a refill of
#: dt_ns x rate_per_minute is exact.
TOKEN_UNITS = RATE_PERIOD_S * NANO
PLANS = 64
WAYS = 4
HALVES = 2
#: Rates, per minute (``plan_*_rate``); 0 in a plan means that bucket is unlimited.
REQ_RATE_MAX = (1 << 30) - 1
REQ_BURST_MAX = (1 << 20) - 1
COST_RATE_MAX = (1 << 32) - 1
#: A cost bucket of 2^28 − 1 tokens is 2^28 x 6x10^10 units: the 64-bit cap registers.
COST_BURST_MAX = (1 << 28) - 1
COST_MAX = (1 << 32) - 1
#: Reset of ``cost_scale_cl``: the estimate from Content-Length is a quarter of a token per body byte.
COST_SCALE_CL_RESET = 1 << 14
#: Elapsed time is clamped here before the refill multiply; every bucket refills from empty in less.
DT_MAX_NS = (1 << 48) - 1
TOKEN_BITS = 64


@dataclass(frozen=True)
class LimiterParams:
    """Elaboration parameters of the limiter, shared by the gateware, the model and the driver.

    Every width in the tenant slot is derived from these (``docs/limiter.md``, "Memory budget").

    Attributes
    ----------
    capacity : int
        N tenant slots: a power of two, 64..65536.
    plans : int
        Plan table entries, 1..64.
    tick_log2 : int
        The limiter's time quantum is 2^tick_log2 ns, 0..11. Bucket units are then 6x10^10 / 2^tick_log2 per
        token, an integer, so refill stays exact. 0 keeps full nanosecond resolution; larger values narrow every
        slot.
    req_burst_bits, cost_burst_bits : int
        Request bursts are at most 2^req_burst_bits − 1 (1..20); cost bursts at most 2^cost_burst_bits − 1 (1..28).
    counter_bits : int
        Width of each slot's allowed and rejected counters, 0..64 (0: no per-tenant counters).
    cmd_fifo_depth : int
        Debit/refund commands that can wait, 2..255.
    clock_hz : int
        Core clock; sets the reset value of ``clock_ns_per_cycle``.
    """
    capacity: int = 4096
    plans: int = 64
    tick_log2: int = 0
    req_burst_bits: int = 20
    cost_burst_bits: int = 28
    counter_bits: int = 32
    cmd_fifo_depth: int = 16
    clock_hz: int = 200_000_000

    def __post_init__(self):
        def need(name, ok, limit):
            if not ok:
                raise ValueError(f"LimiterParams.{name} = {getattr(self, name)!r}: {limit}")
        c = self.capacity
        need("capacity", isinstance(c, int) and 64 <= c <= 65536 and not c & (c - 1),
             "must be a power of two in 64..65536")
        need("plans", 1 <= self.plans <= PLANS, f"must be in 1..{PLANS}")
        need("tick_log2", 0 <= self.tick_log2 <= 11, "must be in 0..11")
        need("req_burst_bits", 1 <= self.req_burst_bits <= 20, "must be in 1..20")
        need("cost_burst_bits", 1 <= self.cost_burst_bits <= 28, "must be in 1..28")
        need("counter_bits", 0 <= self.counter_bits <= 64, "must be in 0..64")
        need("cmd_fifo_depth", 2 <= self.cmd_fifo_depth <= 255, "must be in 2..255")
        need("clock_hz", 1_000 <= self.clock_hz <= 1_000_000_000, "must be in 1e3..1e9")

    # -- derived --
    @property
    def unit(self) -> int:
        """Bucket units per token (or request): 6x10^10 / 2^tick_log2."""
        return TOKEN_UNITS >> self.tick_log2

    @property
    def req_burst_max(self) -> int:
        return (1 << self.req_burst_bits) - 1

    @property
    def cost_burst_max(self) -> int:
        return (1 << self.cost_burst_bits) - 1

    @property
    def req_bits(self) -> int:
        """Width of a request bucket."""
        return (self.req_burst_max * self.unit).bit_length()

    @property
    def cost_bits(self) -> int:
        """Width of a cost bucket."""
        return (self.cost_burst_max * self.unit).bit_length()

    @property
    def time_bits(self) -> int:
        """Width of a slot's ``last`` timestamp, in ticks: the whole 64-bit ns clock."""
        return 64 - self.tick_log2

    @property
    def dt_max(self) -> int:
        """Elapsed ticks are clamped here before the refill multiply (2^48 ns)."""
        return (1 << (48 - self.tick_log2)) - 1

    @property
    def slot_bits(self) -> int:
        return self.capacity.bit_length() - 1

    @property
    def bucket_bits(self) -> int:
        """k = log2(N/8): bucket index bits per half."""
        return self.slot_bits - 3

    @property
    def tag_bits(self) -> int:
        """Stored tag width: the fingerprint bits the bucket index does not already imply."""
        return 64 - self.bucket_bits

    @property
    def plan_bits(self) -> int:
        return max(1, (self.plans - 1).bit_length())

    @property
    def ns_per_cycle_reset(self) -> int:
        """Reset value of ``clock_ns_per_cycle``: 10^9 / clock_hz in 32.32 fixed point, rounded to nearest."""
        return ((NANO << 32) + self.clock_hz // 2) // self.clock_hz

    @property
    def slot_state_bits(self) -> dict:
        """Bits each tenant slot stores, by part (the on-chip memory budget)."""
        return {"tag": self.tag_bits, "valid": 1, "plan": 6, "last": self.time_bits, "req": self.req_bits,
                "cost": self.cost_bits, "counters": 2 * self.counter_bits}

    @property
    def table_bits(self) -> int:
        """Total tenant-table RAM bits."""
        return self.capacity * sum(self.slot_state_bits.values())


class TableOp(amaranth_enum.Enum, shape=3):
    """``tbl_op.op``: what a table op does (``docs/limiter.md``, "Table ops")."""
    NONE = 0
    WRITE = 1
    MOVE = 2
    READ = 3
    SET_DEFAULT = 4


class Decision(amaranth_enum.Enum, shape=2):
    ALLOW = 0
    REJECT = 1
    PUNT = 2


class UnknownPolicy(amaranth_enum.Enum, shape=2):
    REJECT = 0
    DEFAULT = 1
    PUNT = 2


class CostSource(amaranth_enum.Enum, shape=2):
    """Where a request's cost comes from (``ctrl.cost_source``). A request without the chosen field costs
    ``cost_fixed``."""
    FIXED = 0
    CONTENT_LENGTH = 1
    EXTRA = 2          # the value of the parser's extra header slot 0, when it is a number
    ESTIMATE = 3       # EXTRA when slot 0 holds a number, else CONTENT_LENGTH scaled by cost_scale_cl (the reset)


class LimitVerdict(data.Struct):
    """The limiter's decision for one descriptor (``docs/limiter.md``)."""
    decision: Decision
    status: 10
    tenant_found: 1
    tenant: 16
    cost: 32
    retry_after_ns: 64

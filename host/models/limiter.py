"""Bit-exact model of the tenant table and token-bucket rate limiter (``hdl/limiter/rate_limiter.py``).

parser :class:`~wirespeed.host.models.parser.Descriptor` ─▶ :class:`LimiterModel` (tenant lookup, refill, decide)
─▶ one :class:`LimitVerdict` per descriptor ─▶ router

``docs/limiter.md`` is the specification. This module implements it to the bit:
- :class:`Plan` is one entry of the plan table, validated against the limiter's
  :class:`~wirespeed.hdl.limiter.layouts.LimiterParams`, with the register values the host writes;
- :class:`LimiterModel` is the hardware: slot state in bucket units, plan table, table ops (with the quotiented tag
  storage), registers, decisions, debit and refund by key, counters.

Where the specification is silent, the choice made here is stated in the docstring of the method concerned.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
import numbers

from ...hdl.limiter.layouts import (COST_BURST_MAX, COST_MAX, COST_RATE_MAX, COST_SCALE_CL_RESET, PLANS,
                                    RATE_PERIOD_S, REQ_BURST_MAX, REQ_RATE_MAX, TOKEN_UNITS, WAYS, CostSource,
                                    Decision, LimiterParams, TableOp, UnknownPolicy)
from ...hdl.limiter.layouts import LimitVerdict as LimitVerdictLayout
from ...hdl.parser.layouts import KeySource
from ..errors import ConfigError, check_int
from ..records import LayoutRecord
from .register_bank import BlockModel, RegisterBankModel

__all__ = ["Plan", "per_minute", "LimiterConfig", "LimitVerdict", "TenantState", "TableResult", "LimiterModel", "wait_ticks", "U64",
           "LimiterBlock", "ClockModel", "WRITE_EFFECT_CYCLE", "STEP_PULSE_CYCLE", "READ_SAMPLE_CYCLE", "OP_NOW_CYCLE",
           "COUNTERS"]

U64 = (1 << 64) - 1
#: ``inv_*`` registers are 64 bits; ⌈2⁶⁴/1⌉ does not fit and is clamped here (see :attr:`Plan.inv_req_rate`).
INV_RATE_MAX = U64
_REFILL_LIMIT_NS = 1 << 48
_SCALE_MAX = (1 << 32) - 1
_AMOUNT_MAX = (1 << 32) - 1
#: Register widths of the table op fields: ``tbl_slot``, ``tbl_dst`` (16 bits), ``tbl_entry.plan`` (6 bits).
_SLOT_REG_MAX = (1 << 16) - 1
_PLAN_REG_MAX = PLANS - 1
_REQ_RATE_BITS = 30
_COST_RATE_BITS = 32


def _check_enum(field_name: str, value, enum):
    try:
        return enum(value)
    except ValueError:
        raise ConfigError(field_name, value, f"must be one of {[m.name for m in enum]}") from None


def _inv_rate(rate: int) -> int:
    # ⌈2⁶⁴/rate⌉ − 1 = ⌊(2⁶⁴−1)/rate⌋: fits 64 bits for every rate, rate 1 included; see wait_ticks.
    return U64 // rate


def wait_ticks(deficit: int, inv: int) -> int:
    """Ticks until a bucket short by ``deficit`` units suffices, with ``inv`` = ⌊(2⁶⁴−1)/rate⌋ (the plan register):
    ``(((deficit − 1)·(inv + 1)) >> 64) + 1``.

    This is exactly ⌈deficit/rate⌉ whenever ``(deficit − 1)·rate < 2⁶⁴``, which holds for the request bucket
    up to 2²⁸ requests per minute (deficit ≤ 6·10¹⁰). Beyond that (huge deficits at huge rates) it is at most one
    tick more. It is never less: the wait is never early.
    """
    return (((deficit - 1) * (inv + 1)) >> 64) + 1


# -- plans ------------------------------------------------------------------------------------------------------------

def per_minute(field_name: str, rate, limit: int):
    """``rate`` (per second: an int, a float, a :class:`~fractions.Fraction`) as a whole number per minute.

    The limiter's rates are whole numbers per minute, so a per-second rate is exact when it is a multiple of 1/60:
    ``0.5`` is 30 per minute. A float within 10⁻⁹ (relative) of such a rate is taken as it (``1/3`` written as
    ``0.3333333333333333`` is 20 per minute); any other rate is refused rather than rounded.

    Raises
    ------
    ConfigError
        Naming ``field_name``: not a real number, not positive, not a multiple of 1/60 per second, or above
        ``limit`` per minute.
    """
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise ConfigError(field_name, rate, "must be a number per second (int, float or Fraction)")
    if isinstance(rate, numbers.Rational):
        minute = Fraction(rate) * RATE_PERIOD_S
    else:
        exact = float(rate) * RATE_PERIOD_S
        if exact != exact or exact in (float("inf"), float("-inf")):
            raise ConfigError(field_name, rate, "must be a finite number per second")
        near = round(exact)
        minute = Fraction(near) if abs(exact - near) <= 1e-9 * max(1.0, abs(exact)) else Fraction(exact)
    if minute.denominator != 1:
        raise ConfigError(field_name, rate, f"must be a whole number per minute (a multiple of 1/{RATE_PERIOD_S} "
                                            f"per second): {float(minute):g} per minute is not")
    minute = int(minute)
    if not 1 <= minute <= limit:
        raise ConfigError(field_name, rate, f"must be 1/{RATE_PERIOD_S}..{Fraction(limit, RATE_PERIOD_S)} per "
                                            f"second (1..{limit} per minute)")
    return minute


def _per_second(minute):
    """A per-minute count as the per-second rate it is: an ``int`` when whole, else a :class:`Fraction`."""
    if minute is None:
        return None
    rate = Fraction(minute, RATE_PERIOD_S)
    return int(rate) if rate.denominator == 1 else rate


@dataclass(frozen=True, init=False)
class Plan:
    """One entry of the plan table: the rates and bursts of a tenant's two buckets.

    Construction checks the limits of the widest limiter; :meth:`validate` checks a plan against one limiter's
    :class:`~wirespeed.hdl.limiter.layouts.LimiterParams`.

    Parameters
    ----------
    req_rate : int, float, Fraction or None
        Requests per second, a multiple of 1/60 (the hardware counts per minute), 1/60..(2³⁰−1)/60; None: the
        request bucket is unlimited.
    req_burst : int or None
        Request bucket size in requests, 1..2²⁰−1; None exactly when ``req_rate`` is None.
    cost_rate : int, float, Fraction or None
        Cost units (LLM tokens) per second, a multiple of 1/60, 1/60..(2³²−1)/60; None: unlimited.
    cost_burst : int or None
        Cost bucket size in cost units, 1..2²⁸−1; None exactly when ``cost_rate`` is None.

    Attributes
    ----------
    req_rate, cost_rate : int, Fraction or None
        The rates per second, normalised: an ``int`` when whole, else a ``Fraction`` (so equal rates compare and
        hash equal, whatever type they were given as).
    req_per_minute, cost_per_minute : int or None
        What the plan table's rate registers hold (0 there means unlimited).

    Raises
    ------
    ConfigError
        Naming the field, when a value is out of range, a rate is not a whole number per minute, a burst is given
        for an unlimited bucket (or missing for a limited one), or a bucket would take 2⁴⁸ ns or more to refill
        from empty (``burst·60·10⁹ / rate_per_minute ≥ 2⁴⁸``; the ``*_burst`` field is named).
    """
    req_rate: object
    req_burst: object
    cost_rate: object
    cost_burst: object
    req_per_minute: object
    cost_per_minute: object

    def __init__(self, req_rate, req_burst, cost_rate, cost_burst):
        for kind, rate, burst, rate_max, burst_max in (("req", req_rate, req_burst, REQ_RATE_MAX, REQ_BURST_MAX),
                                                        ("cost", cost_rate, cost_burst, COST_RATE_MAX,
                                                         COST_BURST_MAX)):
            if rate is None:
                if burst is not None:
                    raise ConfigError(f"{kind}_burst", burst, f"must be None when {kind}_rate is None (unlimited)")
                minute = None
            else:
                minute = per_minute(f"{kind}_rate", rate, rate_max)
                if burst is None:
                    raise ConfigError(f"{kind}_burst", burst, f"must be given with {kind}_rate")
                check_int(f"{kind}_burst", burst, 1, burst_max)
            object.__setattr__(self, f"{kind}_per_minute", minute)
            object.__setattr__(self, f"{kind}_rate", _per_second(minute))
            object.__setattr__(self, f"{kind}_burst", burst)
        self._check_refill(None)

    @classmethod
    def per_minute(cls, req_per_minute, req_burst, cost_per_minute, cost_burst) -> "Plan":
        """The plan with these rates per minute (whole numbers, or None for unlimited).

        Raises
        ------
        ConfigError
            Naming ``req_rate`` or ``cost_rate`` for a rate that is not an ``int`` (a bool, a float, a str), or as
            the constructor does.
        """
        rates = []
        for name, minute in (("req_rate", req_per_minute), ("cost_rate", cost_per_minute)):
            if minute is not None and (isinstance(minute, bool) or not isinstance(minute, int)):
                raise ConfigError(name, minute, "must be a whole number per minute (an int), or None: unlimited")
            rates.append(None if minute is None else Fraction(minute, RATE_PERIOD_S))
        return cls(rates[0], req_burst, rates[1], cost_burst)

    def __repr__(self):
        return (f"Plan(req_rate={self.req_rate!s}, req_burst={self.req_burst}, cost_rate={self.cost_rate!s}, "
                f"cost_burst={self.cost_burst})")

    def _check_refill(self, params):
        for kind in ("req", "cost"):
            minute, burst = getattr(self, f"{kind}_per_minute"), getattr(self, f"{kind}_burst")
            if minute is None:
                continue
            if burst * TOKEN_UNITS >= _REFILL_LIMIT_NS * minute:
                raise ConfigError(f"{kind}_burst", burst,
                                  f"{kind}_burst / {kind}_rate must be < 2⁴⁸ ns (refill from empty); "
                                  f"with {kind}_rate={_per_second(minute)}/s at most "
                                  f"{(_REFILL_LIMIT_NS * minute - 1) // TOKEN_UNITS}")
            # In ticks the elapsed time is clamped to 2^(48−q)−1, which for q ≥ 3 can be a few units short of the
            # rule above: such a bucket would never refill completely.
            if params is not None and burst * params.unit > params.dt_max * minute:
                raise ConfigError(f"{kind}_burst", burst,
                                  f"must refill from empty within the {params.dt_max}-tick clamp "
                                  f"(tick_log2={params.tick_log2}): with {kind}_rate={_per_second(minute)}/s "
                                  f"at most {params.dt_max * minute // params.unit}")

    def validate(self, params: LimiterParams) -> Plan:
        """This plan if the limiter described by ``params`` can hold it.

        Returns
        -------
        Plan
            ``self``.

        Raises
        ------
        ConfigError
            Naming the field: ``req_burst`` above ``params.req_burst_max``, ``cost_burst`` above
            ``params.cost_burst_max``, or a bucket that would not refill from empty within the elapsed-time clamp
            (``burst·60·10⁹ / rate_per_minute ≥ 2⁴⁸`` ns, or ``burst·unit > dt_max·rate_per_minute`` ticks, which
            can be the stricter rule only for large ``tick_log2``: from q = 6 in practice).
        """
        if not isinstance(params, LimiterParams):
            raise ConfigError("params", params, "must be a LimiterParams")
        if self.req_burst is not None:
            check_int("req_burst", self.req_burst, 1, params.req_burst_max)
        if self.cost_burst is not None:
            check_int("cost_burst", self.cost_burst, 1, params.cost_burst_max)
        self._check_refill(params)
        return self

    def registers(self, params: LimiterParams) -> dict:
        """The plan table entry's register values for the limiter described by ``params``.

        Returns
        -------
        dict
            ``req_rate`` and ``cost_rate`` (per minute; 0 for an unlimited bucket), ``req_cap``
            (``req_burst·unit``), ``cost_cap`` (``cost_burst·unit``; 0 when unlimited), ``inv_req``, ``inv_cost``
            (:attr:`inv_req_rate`, :attr:`inv_cost_rate`; 0 when unlimited); the caps are in bucket units. Not
            validated: call :meth:`validate` first.
        """
        unit = params.unit
        return {"req_rate": self.req_per_minute or 0, "req_cap": (self.req_burst or 0) * unit,
                "cost_rate": self.cost_per_minute or 0, "cost_cap": (self.cost_burst or 0) * unit,
                "inv_req": self.inv_req_rate, "inv_cost": self.inv_cost_rate}

    @property
    def inv_req_rate(self) -> int:
        """``⌊(2⁶⁴−1) / req_per_minute⌋`` (= ⌈2⁶⁴/rate⌉ − 1), the reciprocal :func:`wait_ticks` uses; 0 when
        unlimited."""
        return _inv_rate(self.req_per_minute) if self.req_per_minute else 0

    @property
    def inv_cost_rate(self) -> int:
        """``⌊(2⁶⁴−1) / cost_per_minute⌋``, the reciprocal :func:`wait_ticks` uses; 0 when unlimited."""
        return _inv_rate(self.cost_per_minute) if self.cost_per_minute else 0


# -- the limiter ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LimiterConfig:
    """What the limiter's control registers hold, validated. The defaults are the reset values.

    The default tenant is not here: it is set by table op SET_DEFAULT (:meth:`LimiterModel.set_default`).

    Parameters
    ----------
    unknown_policy : UnknownPolicy
        What a descriptor without a key, or with a key not in the table, gets.
    cost_source : CostSource
        ``FIXED``: the cost is ``cost_fixed``. ``CONTENT_LENGTH``: ``min(2³²−1, (content_length·cost_scale) >> 16)``.
        ``EXTRA``: the same with the descriptor's ``extra_value`` (extra header slot 0 read as a number).
        ``ESTIMATE`` (the reset): ``EXTRA`` when slot 0 holds a number, else
        ``min(2³²−1, (content_length·cost_scale_cl) >> 16)``. A request without the chosen field costs
        ``cost_fixed``.
    cost_fixed : int
        0..2³²−1.
    cost_scale : int
        Cost units per unit of the field, 16.16 fixed point, 0..2³²−1 (1.0 = 0x10000).
    cost_scale_cl : int
        Cost units per body byte of ``ESTIMATE``'s fallback, 16.16, 0..2³²−1 (reset 0x4000, a quarter token).

    Raises
    ------
    ConfigError
        Naming the field, the value and the allowed range.
    """
    unknown_policy: UnknownPolicy = UnknownPolicy.REJECT
    cost_source: CostSource = CostSource.ESTIMATE
    cost_fixed: int = 0
    cost_scale: int = 1 << 16
    cost_scale_cl: int = COST_SCALE_CL_RESET

    def __post_init__(self):
        object.__setattr__(self, "unknown_policy", _check_enum("unknown_policy", self.unknown_policy, UnknownPolicy))
        object.__setattr__(self, "cost_source", _check_enum("cost_source", self.cost_source, CostSource))
        check_int("cost_fixed", self.cost_fixed, 0, COST_MAX)
        check_int("cost_scale", self.cost_scale, 0, _SCALE_MAX)
        check_int("cost_scale_cl", self.cost_scale_cl, 0, _SCALE_MAX)


@dataclass(frozen=True, slots=True)
class LimitVerdict(LayoutRecord, layout=LimitVerdictLayout):
    """One per descriptor; mirrors :class:`wirespeed.hdl.limiter.layouts.LimitVerdict` field for field.

    ``status`` is 200 (ALLOW), 429 or 401 (REJECT), 0 (PUNT). ``tenant`` is the slot whose buckets decided (0 when
    none did). ``cost`` is the request's cost whatever the decision. ``retry_after_ns`` is 0 unless the status is 429.
    """
    decision: Decision = Decision.ALLOW
    status: int = 0
    tenant_found: bool = False
    tenant: int = 0
    cost: int = 0
    retry_after_ns: int = 0


@dataclass(frozen=True)
class TenantState:
    """A snapshot of one slot of the tenant table, as table op READ returns it.

    ``tag`` is the fingerprint rebuilt from the stored quotient and the slot's bucket. Token counts are in bucket
    units (6·10¹⁰ / 2^tick_log2 per token). ``last_ns`` is the slot's ``last`` tick in ns (a multiple of the tick).
    """
    valid: bool
    tag: int
    plan: int
    req_tokens: int
    cost_tokens: int
    last_ns: int
    allowed: int
    rejected: int


@dataclass(frozen=True)
class TableResult:
    """The outcome of one table op: ``ok`` False is the ``tbl_status.error`` bit; ``state`` is READ's read-back."""
    ok: bool
    state: TenantState | None = None


_NO_PLAN = (0, 0, 0, 0, 0, 0)     # reset contents of a plan entry: rates, caps and reciprocals 0

_ALLOW, _REJECT, _PUNT = Decision.ALLOW, Decision.REJECT, Decision.PUNT
_KEY_NONE = KeySource.NONE
_WRITE, _MOVE, _READ, _SET_DEFAULT = (TableOp.WRITE.value, TableOp.MOVE.value, TableOp.READ.value,
                                      TableOp.SET_DEFAULT.value)
_FAILED = TableResult(False)
_DONE = TableResult(True)


class LimiterModel:
    """The limiter as the hardware holds it: tenant slots, plan table, registers, counters.

    Parameters
    ----------
    params : LimiterParams
        Elaboration parameters: capacity, plan count, time quantum, widths.
    config : LimiterConfig
        Register contents; assign :attr:`config` to reconfigure between decisions.

    Attributes
    ----------
    params : LimiterParams
    capacity, plans : int
        ``params.capacity``, ``params.plans``.
    default_slot : int
        The slot ``UnknownPolicy.DEFAULT`` uses (read-only; set by SET_DEFAULT, follows MOVE). Reset 0.
    allow, reject_429, reject_401, punt : int
        Global 64-bit counters, one per outcome of :meth:`decide`.
    cmd_applied, cmd_unknown : int
        Global 64-bit counters of :meth:`command`: found the tenant / did not.
    table_ops : int
        Global 64-bit counter of table ops, refused ones included.

    Notes
    -----
    Time runs in ticks of 2^q ns, q = ``params.tick_log2``: a decision at ``now_ns`` happens at tick
    ``now_ns >> q``, and a bucket gains ``rate`` units per tick. Choices where ``docs/limiter.md`` is silent:

    - Elapsed time is ``(now − last) mod 2^(64−q)`` ticks, so a ``now`` before ``last`` refills fully.
    - The refill product ``min(dt, dt_max)·rate`` is exact (up to 80 bits) before the ``min`` with the cap.
    - If a key ever matched two slots, the lowest slot index would win: half 0's bucket, then half 1's, ways in
      order. The driver never makes that happen: a relocation is one MOVE.
    - Debit and refund neither refill nor change ``last``.
    """

    def __init__(self, params: LimiterParams = LimiterParams(), config: LimiterConfig = LimiterConfig()):
        if not isinstance(params, LimiterParams):
            raise ConfigError("params", params, "must be a LimiterParams")
        self.params = params
        self.capacity = n = params.capacity
        self.plans = params.plans
        self._mask = (1 << params.bucket_bits) - 1       # bucket index within a half
        self._half = n // 2
        self._half_shift = params.slot_bits - 1
        # What decide() needs of the parameters, in one attribute: it runs millions of times in the tests, and
        # CPython reads attributes fastest from instances with at most 30 of them.
        self._decide_consts = (params.tick_log2, (1 << params.time_bits) - 1, params.dt_max, params.unit,
                               (1 << params.counter_bits) - 1)
        self._req_cap_mask = (1 << params.req_bits) - 1
        self._cost_cap_mask = (1 << params.cost_bits) - 1
        self._plan_entries: list = [None] * self.plans
        # Per plan (req_rate, req_cap, cost_rate, cost_cap, inv_req, inv_cost); the caps are in bucket units.
        self._plan_regs: list = [_NO_PLAN] * self.plans
        self._valid = [False] * n
        # The tag as read back: the reconstruction of the stored quotient (0 at reset) with the slot's bucket.
        self._tag = [self.reconstruct_tag(slot, 0) for slot in range(n)]
        self._key: list = [None] * n                    # tag if valid else None: what the lookup compares
        self._plan = [0] * n
        self._req = [0] * n
        self._cost = [0] * n
        self._last = [0] * n                            # ticks
        self._allowed = [0] * n
        self._rejected = [0] * n
        self._default_slot = 0
        self._default_on = False
        self.allow = self.reject_401 = self.reject_429 = self.punt = 0
        self.cmd_applied = self.cmd_unknown = self.table_ops = 0
        self.config = config

    # -- registers --

    @property
    def config(self) -> LimiterConfig:
        return self._config

    @config.setter
    def config(self, config: LimiterConfig):
        if not isinstance(config, LimiterConfig):
            raise ConfigError("config", config, "must be a LimiterConfig")
        self._config = config

    @property
    def default_slot(self) -> int:
        """The slot ``UnknownPolicy.DEFAULT`` uses: set by SET_DEFAULT, carried along by MOVE. Reset 0."""
        return self._default_slot

    @property
    def default_valid(self) -> bool:
        """Whether there is a default tenant (``default_slot.valid``); not a table op.

        SET_DEFAULT sets it when its slot holds a valid tenant. The default is that *tenant*: it follows it through
        MOVE and plan updates, and is cleared when the tenant is invalidated or overwritten by a new one (a later
        tenant in the same slot does not inherit it)."""
        return self._default_on

    def write_plan_regs(self, index: int, req_rate: int, req_cap: int, cost_rate: int, cost_cap: int,
                        inv_req: int, inv_cost: int):
        """Commit raw plan staging registers to plan table entry ``index``, as the hardware does.

        Each value is masked to its register width (``req_rate`` 30 bits, ``cost_rate`` 32, ``req_cap``
        ``params.req_bits``, ``cost_cap`` ``params.cost_bits``, ``inv_*`` 64) and not checked otherwise. Tenants on
        the plan keep their tokens; tokens above a smaller new cap are capped at their next refill. :meth:`plan`
        then returns None for the entry.

        Raises
        ------
        ConfigError
            If ``index`` is not in 0..plans−1.
        """
        check_int("index", index, 0, self.plans - 1)
        self._plan_entries[index] = None
        self._plan_regs[index] = (req_rate & ((1 << _REQ_RATE_BITS) - 1), req_cap & self._req_cap_mask,
                                  cost_rate & ((1 << _COST_RATE_BITS) - 1), cost_cap & self._cost_cap_mask,
                                  inv_req & U64, inv_cost & U64)

    def write_plan(self, index: int, plan: Plan):
        """Validate ``plan`` against :attr:`params` and write its registers (:meth:`Plan.registers`) to entry
        ``index``.

        Raises
        ------
        ConfigError
            If ``index`` is out of range, ``plan`` is not a :class:`Plan`, or :meth:`Plan.validate` refuses it.
        """
        check_int("index", index, 0, self.plans - 1)
        if not isinstance(plan, Plan):
            raise ConfigError("plan", plan, "must be a Plan")
        self.write_plan_regs(index, **plan.validate(self.params).registers(self.params))
        self._plan_entries[index] = plan

    def plan(self, index: int):
        """The :class:`Plan` last written to entry ``index`` by :meth:`write_plan`, or None (never written, or
        overwritten by :meth:`write_plan_regs`)."""
        check_int("index", index, 0, self.plans - 1)
        return self._plan_entries[index]

    def plan_regs(self, index: int) -> dict:
        """What plan table entry ``index`` holds, as :meth:`Plan.registers` names it (all 0 if never written)."""
        check_int("index", index, 0, self.plans - 1)
        return dict(zip(("req_rate", "req_cap", "cost_rate", "cost_cap", "inv_req", "inv_cost"),
                        self._plan_regs[index]))

    # -- tag storage --

    def _bucket(self, slot: int) -> int:
        return (slot >> 2) & self._mask

    def quotient_tag(self, slot: int, fp: int) -> int:
        """What ``slot`` stores of key ``fp``: the ``tag_bits`` = 64 − k bits that ``slot``'s bucket does not imply.

        Half 0 drops ``fp[0:k]`` (``fp >> k``); half 1 drops ``fp[32:32+k]``. Meaningful when ``fp`` belongs to
        ``slot`` (:meth:`belongs`); otherwise the dropped bits are lost.
        """
        k = self.params.bucket_bits
        if slot >> self._half_shift:
            return (fp & 0xFFFF_FFFF) | ((fp >> (32 + k)) << 32)
        return fp >> k

    def reconstruct_tag(self, slot: int, stored: int) -> int:
        """The 64-bit tag ``slot`` reads back from its stored quotient: the bucket index fills the dropped bits."""
        k, bucket = self.params.bucket_bits, self._bucket(slot)
        if slot >> self._half_shift:
            return (stored & 0xFFFF_FFFF) | (bucket << 32) | ((stored >> 32) << (32 + k))
        return (stored << k) | bucket

    def belongs(self, slot: int, fp: int) -> bool:
        """Whether ``slot``'s bucket is a candidate of key ``fp`` in ``slot``'s half (the only keys it can hold)."""
        if slot >> self._half_shift:
            return (fp >> 32) & self._mask == self._bucket(slot)
        return fp & self._mask == self._bucket(slot)

    # -- table ops --

    def _table_error(self, op: int, slot: int, dst: int, fp: int, plan: int, valid: bool):
        """None if the hardware carries out the op, else ``(field, value, why)`` for the error bit."""
        if op not in (_WRITE, _MOVE, _READ, _SET_DEFAULT):
            return "op", op, "must be WRITE, MOVE, READ or SET_DEFAULT"
        if slot >= self.capacity:
            return "slot", slot, f"must be below the capacity {self.capacity}"
        if op == _WRITE and valid:
            if not self.belongs(slot, fp):
                return "fp", fp, (f"does not belong to slot {slot}: its candidate bucket in half "
                                  f"{slot >> self._half_shift} is not the slot's bucket {self._bucket(slot)}")
            if plan >= self.plans:
                return "plan", plan, f"must be below the plan count {self.plans}"
        elif op == _MOVE:
            if dst >= self.capacity:
                return "dst", dst, f"must be below the capacity {self.capacity}"
            if (slot ^ dst) >> self._half_shift == 0:
                return "dst", dst, f"must be in the other half from slot {slot}"
            key = self._tag[slot]
            if not self.belongs(dst, key):
                return "dst", dst, f"is not a candidate slot of key 0x{key:016x} held by slot {slot}"
        return None

    def table_op(self, op, slot: int, dst: int, fp: int, plan: int, valid: bool, now_ns: int) -> TableResult:
        """One table op, as the hardware runs it between two decisions (``tbl_*`` registers, then ``tbl_op.go``).

        Every call counts in :attr:`table_ops`. A refused op (``ok`` False) changes nothing else. Refused: ``op``
        not WRITE, MOVE, READ or SET_DEFAULT; ``slot`` ≥ capacity; WRITE with ``valid`` of a key that does not
        belong to ``slot`` (:meth:`belongs`) or of ``plan`` ≥ plans; MOVE to ``dst`` ≥ capacity, in ``slot``'s half,
        or not a candidate of the key in ``slot``.

        - WRITE, ``valid``, same valid tag (an **update**): the plan changes; both token counts are capped at the new
          plan's caps; ``last`` and the counters stay. The time since ``last`` is refilled at the new rates by the
          next decision.
        - WRITE, ``valid``, otherwise (a **new tenant**): tag ``fp``, both buckets full, ``last`` = the tick of
          ``now_ns``, counters 0.
        - WRITE, not ``valid``: clears the valid bit only; ``fp`` and ``plan`` are ignored.
        - MOVE: copies valid, tag, plan, tokens, ``last`` and counters to ``dst`` and clears ``slot``'s valid bit,
          in one step. :attr:`default_slot` follows a moved default tenant.
        - READ: ``state`` is the slot's :class:`TenantState`.
        - SET_DEFAULT: :attr:`default_slot` = ``slot``; there is a default tenant if the slot is valid (see
          :attr:`default_valid`).

        Parameters
        ----------
        op : TableOp or int
            ``tbl_op.op``, 0..7.
        slot, dst : int
            ``tbl_slot``, ``tbl_dst``: 0..2¹⁶−1.
        fp : int
            ``tbl_fp``: 0..2⁶⁴−1.
        plan : int
            ``tbl_entry.plan``: 0..63.
        valid : bool
            ``tbl_entry.valid``.
        now_ns : int
            The clock, 0..2⁶⁴−1 (used by WRITE of a new tenant).

        Raises
        ------
        ConfigError
            If a value does not fit its register (nothing is counted then).
        """
        op = op.value if isinstance(op, TableOp) else check_int("op", op, 0, 7)
        check_int("slot", slot, 0, _SLOT_REG_MAX)
        check_int("dst", dst, 0, _SLOT_REG_MAX)
        check_int("fp", fp, 0, U64)
        check_int("plan", plan, 0, _PLAN_REG_MAX)
        check_int("now_ns", now_ns, 0, U64)
        valid = bool(valid)
        self.table_ops = (self.table_ops + 1) & U64
        if self._table_error(op, slot, dst, fp, plan, valid) is not None:
            return _FAILED
        if op == _READ:
            return TableResult(True, self._read(slot))
        if op == _SET_DEFAULT:
            self._default_slot = slot
            self._default_on = self._valid[slot]
        elif op == _MOVE:
            self._move(slot, dst)
        elif valid:
            self._write(slot, fp, plan, now_ns >> self.params.tick_log2)
        else:
            self._valid[slot], self._key[slot] = False, None
            if slot == self._default_slot:
                self._default_on = False
        return _DONE

    def _write(self, slot: int, fp: int, plan: int, now_ticks: int):
        _, req_cap, _, cost_cap, _, _ = self._plan_regs[plan]
        tag = self.reconstruct_tag(slot, self.quotient_tag(slot, fp))
        if self._valid[slot] and self._tag[slot] == tag:
            self._req[slot] = min(self._req[slot], req_cap)
            self._cost[slot] = min(self._cost[slot], cost_cap)
        else:
            self._req[slot], self._cost[slot], self._last[slot] = req_cap, cost_cap, now_ticks
            self._allowed[slot] = self._rejected[slot] = 0
            if slot == self._default_slot:
                self._default_on = False          # a new tenant does not inherit the default
        self._valid[slot], self._tag[slot], self._key[slot], self._plan[slot] = True, tag, tag, plan

    def _move(self, slot: int, dst: int):
        for column in (self._valid, self._plan, self._req, self._cost, self._last, self._allowed, self._rejected):
            column[dst] = column[slot]
        tag = self.reconstruct_tag(dst, self.quotient_tag(dst, self._tag[slot]))
        self._tag[dst] = tag
        self._key[dst] = tag if self._valid[dst] else None
        self._valid[slot], self._key[slot] = False, None
        if self._default_slot == slot:
            self._default_slot = dst
        elif self._default_slot == dst:
            self._default_on = False              # the default tenant was overwritten

    def _read(self, slot: int) -> TenantState:
        return TenantState(self._valid[slot], self._tag[slot], self._plan[slot], self._req[slot], self._cost[slot],
                           self._last[slot] << self.params.tick_log2, self._allowed[slot], self._rejected[slot])

    def _raise_unless_done(self, result: TableResult, op: int, slot: int, dst: int, fp: int, plan: int,
                           valid: bool, names: dict | None = None) -> TableResult:
        if not result.ok:
            field, value, why = self._table_error(op, slot, dst, fp, plan, valid)
            raise ConfigError((names or {}).get(field, field), value, why)
        return result

    def write_tenant(self, slot: int, fp: int, plan: int, valid: bool, now_ns: int):
        """Table op WRITE (see :meth:`table_op`).

        Raises
        ------
        ConfigError
            Naming the field, if a value does not fit its register or the hardware refuses the op.
        """
        result = self.table_op(_WRITE, slot, 0, fp, plan, valid, now_ns)
        self._raise_unless_done(result, _WRITE, slot, 0, fp, plan, valid)

    def move(self, old_slot: int, new_slot: int):
        """Table op MOVE, a relocation (see :meth:`table_op`): the whole slot goes to ``new_slot`` in one step.

        Raises
        ------
        ConfigError
            Naming ``old_slot`` or ``new_slot``, if the hardware refuses the op.
        """
        names = {"slot": "old_slot", "dst": "new_slot"}
        try:
            result = self.table_op(_MOVE, old_slot, new_slot, 0, 0, False, 0)
        except ConfigError as e:
            raise ConfigError(names.get(e.field, e.field), e.value, e.limit) from None
        self._raise_unless_done(result, _MOVE, old_slot, new_slot, 0, 0, False, names)

    def state(self, slot: int) -> TenantState:
        """Table op READ: a snapshot of ``slot`` (counts in :attr:`table_ops`, like any table op).

        Raises
        ------
        ConfigError
            If ``slot`` is not below the capacity.
        """
        check_int("slot", slot, 0, self.capacity - 1)
        self.table_ops = (self.table_ops + 1) & U64
        return self._read(slot)

    def set_default(self, slot: int):
        """Table op SET_DEFAULT: the slot ``UnknownPolicy.DEFAULT`` uses.

        Raises
        ------
        ConfigError
            If ``slot`` is not below the capacity.
        """
        result = self.table_op(_SET_DEFAULT, slot, 0, 0, 0, False, 0)
        self._raise_unless_done(result, _SET_DEFAULT, slot, 0, 0, 0, False)

    def lookup(self, fp: int):
        """The slot the hardware matches ``fp`` to, or None: the first valid tag equal to ``fp`` among
        bucket ``b0`` of half 0 then bucket ``b1`` of half 1, ways in order."""
        key = self._key
        base = (fp & self._mask) * WAYS
        for slot in range(base, base + WAYS):
            if key[slot] == fp:
                return slot
        base = self._half + ((fp >> 32) & self._mask) * WAYS
        for slot in range(base, base + WAYS):
            if key[slot] == fp:
                return slot
        return None

    # -- decisions --

    def cost(self, desc) -> int:
        """The request's cost under ``cost_source``: ``cost_fixed``, or the chosen field (Content-Length, or extra
        header slot 0's number) times ``cost_scale`` (16.16), capped at 2³²−1; ``cost_fixed`` when the descriptor
        lacks the field. ``ESTIMATE``: slot 0's number times ``cost_scale`` when there is one, else Content-Length
        times ``cost_scale_cl``."""
        return self.cost_of(desc.content_length if desc.cl_present else None,
                            desc.extra_value if desc.extra_numeric else None)

    def cost_of(self, content_length: int | None, extra_value: int | None) -> int:
        """:meth:`cost` of a request with this Content-Length and extra header slot 0's number (None: absent)."""
        config = self._config
        source = config.cost_source
        if extra_value is not None and (source is CostSource.EXTRA or source is CostSource.ESTIMATE):
            return min(COST_MAX, (extra_value * config.cost_scale) >> 16)
        if content_length is not None and (source is CostSource.CONTENT_LENGTH or source is CostSource.ESTIMATE):
            scale = config.cost_scale if source is CostSource.CONTENT_LENGTH else config.cost_scale_cl
            return min(COST_MAX, (content_length * scale) >> 16)
        return config.cost_fixed

    def decide(self, desc, now_ns: int) -> LimitVerdict:
        """The verdict for one descriptor at time ``now_ns`` (``docs/limiter.md``, "Decision").

        A descriptor without a key (``key_source`` NONE), or whose ``key_fp`` is not in the table, follows
        ``unknown_policy``: REJECT gives 401; PUNT gives decision PUNT with status 0; DEFAULT decides on
        :attr:`default_slot`'s buckets and counters (``tenant_found`` 0, ``tenant`` = :attr:`default_slot`), or
        gives 401 when that slot is not valid. The descriptor's error flags are not looked at.

        The decision happens at tick ``t = now_ns >> q``. Both buckets refill by
        ``min((t − last) mod 2^(64−q), dt_max)·rate`` units, capped at the plan's caps. One request needs ``unit``,
        a cost c needs ``c·unit``. A 429 keeps the refilled tokens; either way ``last = t``. A short bucket waits
        :func:`wait_ticks` ticks, the larger wait counts, and ``retry_after_ns`` is the ns from
        ``now_ns`` to the start of that tick, saturating at 2⁶⁴−1 (a cost far above the burst at a low rate). A
        bucket whose plan rate is 0 is unlimited: it always suffices and is never debited.

        Parameters
        ----------
        desc : wirespeed.host.models.parser.Descriptor
            Only ``key_source``, ``key_fp``, ``cl_present``, ``content_length``, ``extra_numeric`` and
            ``extra_value`` are read.
        now_ns : int
            The clock, 0..2⁶⁴−1.
        """
        return LimitVerdict(*self.decide_fields(desc, now_ns))

    def decide_fields(self, desc, now_ns: int) -> tuple:
        """:meth:`decide` as the tuple of :class:`LimitVerdict`'s fields in order, with the same effects (for the
        ``"software"`` transport, which builds no record per stage)."""
        config = self._config
        cost = self.cost(desc)

        slot = None if desc.key_source is _KEY_NONE else self.lookup(desc.key_fp)
        found = slot is not None
        if not found:
            policy = config.unknown_policy
            if policy is UnknownPolicy.PUNT:
                self.punt = (self.punt + 1) & U64
                return _PUNT, 0, False, 0, cost, 0
            if policy is UnknownPolicy.DEFAULT and self._default_on:
                slot = self._default_slot
            else:
                self.reject_401 = (self.reject_401 + 1) & U64
                return _REJECT, 401, False, 0, cost, 0

        retry = self.take(slot, cost, now_ns)
        if retry is None:
            self.allow = (self.allow + 1) & U64
            return _ALLOW, 200, found, slot, cost, 0
        self.reject_429 = (self.reject_429 + 1) & U64
        return _REJECT, 429, found, slot, cost, retry

    def take(self, slot: int, cost: int, now_ns: int) -> int | None:
        """The buckets of :meth:`decide` for a request of ``cost`` on tenant ``slot`` at ``now_ns``: refilled, and
        debited when both suffice; the slot's allowed or rejected counter counted (not the global ones). Returns None
        when allowed, else ``retry_after_ns``. (The ``"software"`` transport's C loop, ``fast_header.c``, computes
        the same; ``tests/driver/test_software.py`` holds it to this.)"""
        req_rate, req_cap, cost_rate, cost_cap, inv_req, inv_cost = self._plan_regs[self._plan[slot]]
        q, time_mask, dt_max, unit, counter_mask = self._decide_consts
        now = now_ns >> q
        dt = (now - self._last[slot]) & time_mask
        if dt > dt_max:
            dt = dt_max
        req = self._req[slot] + dt * req_rate
        if req > req_cap:
            req = req_cap
        tokens = self._cost[slot] + dt * cost_rate
        if tokens > cost_cap:
            tokens = cost_cap
        need = cost * unit
        self._last[slot] = now
        req_ok = req_rate == 0 or req >= unit
        cost_ok = cost_rate == 0 or tokens >= need
        if req_ok and cost_ok:
            self._req[slot] = req if req_rate == 0 else req - unit
            self._cost[slot] = tokens if cost_rate == 0 else tokens - need
            self._allowed[slot] = (self._allowed[slot] + 1) & counter_mask
            return None
        self._req[slot] = req
        self._cost[slot] = tokens
        wait = 0 if req_ok else (((unit - req - 1) * (inv_req + 1)) >> 64) + 1
        if not cost_ok:
            wait_cost = (((need - tokens - 1) * (inv_cost + 1)) >> 64) + 1
            if wait_cost > wait:
                wait = wait_cost
        self._rejected[slot] = (self._rejected[slot] + 1) & counter_mask
        if wait >> (64 - q):
            return U64
        return (wait << q) - (now_ns & ((1 << q) - 1))

    # -- debit and refund --

    def command(self, fp: int, amount: int, refund: bool) -> bool:
        """A debit or refund command for the tenant with key ``fp`` (``cmd_*`` registers), as the hardware runs it.

        The key is looked up as :meth:`decide` looks it up, without the unknown-key policy. Not found: counted in
        :attr:`cmd_unknown` and dropped. Found: a debit subtracts ``amount·unit`` from the cost bucket, saturating
        at 0; a refund adds it, capped at the cost cap of the slot's plan. No refill; ``last`` stays. Counted in
        :attr:`cmd_applied`.

        Returns
        -------
        bool
            Whether the key was found.

        Raises
        ------
        ConfigError
            If ``fp`` is not 0..2⁶⁴−1 or ``amount`` not 0..2³²−1.
        """
        check_int("fp", fp, 0, U64)
        check_int("amount", amount, 0, _AMOUNT_MAX)
        slot = self.lookup(fp)
        if slot is None:
            self.cmd_unknown = (self.cmd_unknown + 1) & U64
            return False
        if refund:
            cost_cap = self._plan_regs[self._plan[slot]][3]
            self._cost[slot] = min(cost_cap, self._cost[slot] + amount * self.params.unit)
        else:
            self._cost[slot] = max(0, self._cost[slot] - amount * self.params.unit)
        self.cmd_applied = (self.cmd_applied + 1) & U64
        return True

    def debit(self, fp: int, amount: int) -> bool:
        """``command(fp, amount, refund=False)``."""
        return self.command(fp, amount, False)

    def refund(self, fp: int, amount: int) -> bool:
        """``command(fp, amount, refund=True)``."""
        return self.command(fp, amount, True)


# -- the limiter's registers inside the core -------------------------------------------------------------------------

#: A write to ``clock_ns_per_cycle`` takes effect from this cycle: the accumulator adds the new rate at this
#: cycle's edge and every later one.
WRITE_EFFECT_CYCLE = -2
#: ``clock_ctrl.step`` pulses in this cycle; ``clock_step`` is added at its edge, with that cycle's rate.
STEP_PULSE_CYCLE = -2
#: A read of ``clock_now`` returns the clock as it stands in this cycle.
READ_SAMPLE_CYCLE = -3
#: A table op (``tbl_op.go``) samples ``now`` in this cycle (a new tenant's ``last``).
OP_NOW_CYCLE = -1

#: Global counters the block mirrors from the model, by register name under ``limiter.``.
COUNTERS = ("allow", "reject_429", "reject_401", "punt", "cmd_applied", "cmd_unknown", "table_ops")

_ACC_MOD = 1 << 96
_U64 = (1 << 64) - 1
_POLICIES = {p.value: p for p in UnknownPolicy}


class ClockModel:
    """The RTL's 96-bit clock accumulator ``{now_ns (64), frac (32)}``, advanced exactly and lazily.

    Every core cycle the accumulator adds ``rate`` (``clock_ns_per_cycle``, 32.32); a step pulse adds
    ``step << 32`` too. Between events the accumulator is linear in the cycle count, so only the value at the last
    event, its cycle and the rate are kept. ``value(c)`` is the accumulator after ``c`` cycles from reset. Events
    must come in cycle order.
    """

    def __init__(self, rate: int):
        self.acc = 0
        self.cycle = 0
        self.rate = rate

    def value(self, cycle: int) -> int:
        """The 96-bit accumulator at ``cycle``."""
        return (self.acc + self.rate * (cycle - self.cycle)) % _ACC_MOD

    def now(self, cycle: int) -> int:
        """``now_ns`` at ``cycle``: the accumulator's top 64 bits."""
        return self.value(cycle) >> 32

    def set_rate(self, cycle: int, rate: int) -> None:
        """The rate register holds ``rate`` from ``cycle`` on (it is added at that cycle's edge and later ones)."""
        self.acc, self.cycle, self.rate = self.value(cycle), cycle, rate

    def step(self, cycle: int, step_ns: int) -> None:
        """A step pulse in ``cycle``: the next edge adds ``step_ns`` (two's complement) besides the rate."""
        self.acc = (self.value(cycle + 1) + ((step_ns & _U64) << 32)) % _ACC_MOD
        self.cycle = cycle + 1


class LimiterBlock(BlockModel):
    """The limiter's registers as the RTL drives them, around a :class:`~.limiter.LimiterModel`.

    Parameters
    ----------
    params : LimiterParams
        The limiter's elaboration parameters.
    bank : RegisterBankModel
        The core's register bank; its map must hold the ``limiter.*`` registers, with ``clock_ns_per_cycle``
        resetting to ``params.ns_per_cycle_reset``.

    Attributes
    ----------
    model : LimiterModel
        The tenant table, plans and counters.
    clock : ClockModel
        The nanosecond clock.
    """

    PREFIX = "limiter."
    COUNTERS = COUNTERS

    def __init__(self, params: LimiterParams, bank: RegisterBankModel):
        super().__init__(bank)
        self.params = params
        self.model = LimiterModel(params, LimiterConfig())
        self.clock = ClockModel(bank.value("limiter.clock_ns_per_cycle"))
        p = params
        for name, value in {
            "params.plans": p.plans, "params.tick_log2": p.tick_log2, "params.counter_bits": p.counter_bits,
            "params.cmd_fifo_depth": p.cmd_fifo_depth, "widths.req_burst_bits": p.req_burst_bits,
            "widths.cost_burst_bits": p.cost_burst_bits, "widths.capacity_log2": p.slot_bits,
            "tbl_status.busy": 0, "tbl_status.error": 0, "cmd_status.waiting": 0,
        }.items():
            bank.set_hw(self.PREFIX + name, value)
        self._apply_config()
        self._sync()

    # -- bus events (called by CoreModel) --

    def before_read(self, reg: str, cycle: int) -> None:
        """A read of register ``reg`` (full name) is about to be answered; ``cycle`` is the access's cycle count."""
        if reg == "limiter.clock_now":
            self._set("clock_now.value", self.clock.now(cycle + READ_SAMPLE_CYCLE))

    def after_write(self, reg: str, cycle: int) -> None:
        """A write to register ``reg`` (full name) was accepted; ``cycle`` is the access's cycle count."""
        name = reg[len(self.PREFIX):]
        if name == "clock_ns_per_cycle":
            self.clock.set_rate(cycle + WRITE_EFFECT_CYCLE, self._value("clock_ns_per_cycle"))
        elif name == "clock_ctrl":
            if self._fired("clock_ctrl.step"):
                self.clock.step(cycle + STEP_PULSE_CYCLE, self._value("clock_step"))
        elif name in ("ctrl", "cost_fixed", "cost_scale", "cost_scale_cl"):
            self._apply_config()
        elif name == "plan_commit":
            if self._fired("plan_commit.go"):
                self._plan_commit()
        elif name == "tbl_op":
            if self._fired("tbl_op.go"):
                self._table_op(self.clock.now(cycle + OP_NOW_CYCLE))
        elif name == "cmd_push":
            if self._fired("cmd_push.go"):
                self.model.command(self._value("cmd_fp"), self._value("cmd_amount"),
                                   bool(self._field("cmd_push", "refund")))
                self._sync()

    # -- behaviour --

    def _apply_config(self) -> None:
        # The register keeps whatever was written; the RTL treats policy 3 like REJECT (cost source 3 is ESTIMATE).
        policy = _POLICIES.get(self._field("ctrl", "unknown_policy"), UnknownPolicy.REJECT)
        source = self._field("ctrl", "cost_source")
        self.model.config = LimiterConfig(
            unknown_policy=policy, cost_source=CostSource(source),
            cost_fixed=self._value("cost_fixed"), cost_scale=self._value("cost_scale"),
            cost_scale_cl=self._value("cost_scale_cl"))

    def _plan_commit(self) -> None:
        index = self._field("plan_commit", "index")
        if index >= self.params.plans:
            return                                          # no such entry: the RTL ignores the commit
        self.model.write_plan_regs(
            index, self._value("plan_req_rate"), self._value("plan_req_cap"), self._value("plan_cost_rate"),
            self._value("plan_cost_cap"), self._value("plan_inv_req"), self._value("plan_inv_cost"))

    def _table_op(self, now_ns: int) -> None:
        op = self._field("tbl_op", "op")
        result = self.model.table_op(
            op, self._value("tbl_slot"), self._value("tbl_dst"), self._value("tbl_fp"),
            self._field("tbl_entry", "plan"), bool(self._field("tbl_entry", "valid")), now_ns)
        self._set("tbl_status.error", int(not result.ok))
        if result.ok and op == TableOp.READ.value:
            s = result.state
            for name, value in {"rd_tag.value": s.tag, "rd_entry.plan": s.plan, "rd_entry.valid": int(s.valid),
                                "rd_req.value": s.req_tokens, "rd_cost.value": s.cost_tokens,
                                "rd_last.value": s.last_ns, "rd_allowed.value": s.allowed,
                                "rd_rejected.value": s.rejected}.items():
                self._set(name, value)
        self._sync()

    def _sync(self) -> None:
        """Drive the fields that follow the model: the default slot and the global counters."""
        slot = self.model.default_slot
        self._set("default_slot.slot", slot)
        self._set("default_slot.valid", int(self.model.default_valid))
        self._mirror_counters(self.model)

"""Bit-exact model of the tenant table and token-bucket rate limiter (``hdl/limiter.py``), and the host's placement.

parser :class:`~wirespeed.host.parser.Descriptor` ─▶ :class:`LimiterModel` (tenant lookup, refill, decide)
─▶ one :class:`LimitVerdict` per descriptor ─▶ router

``docs/limiter.md`` is the specification. This module implements it to the bit:
- :class:`Plan` is one entry of the plan table, validated, with the reciprocals the host writes;
- :class:`TenantPlacement` is the driver's side of the 2-choice, 4-way cuckoo table: which slot a key goes to and
  which relocations make room for it;
- :class:`LimiterModel` is the hardware: slot state in nano-tokens, plan table, registers, decisions, debit and
  refund, counters.

Where the specification is silent, the choice made here is stated in the docstring of the method concerned.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


from ..hdl.limiter_layouts import (COST_BURST_MAX, COST_MAX, COST_RATE_MAX, DT_MAX_NS, HALVES, NANO, PLANS,
                                   REQ_BURST_MAX, REQ_RATE_MAX, WAYS, CostSource, Decision, UnknownPolicy)
from ..hdl.limiter_layouts import LimitVerdict as LimitVerdictLayout
from ..hdl.parser_layouts import KeySource
from .errors import ConfigError, WirespeedError, check_int
from .records import LayoutRecord

__all__ = ["TableFull", "Plan", "TenantPlacement", "LimiterConfig", "LimitVerdict", "TenantState", "LimiterModel",
           "MAX_MOVES", "CAPACITY_MIN", "CAPACITY_MAX", "U64"]

U64 = (1 << 64) - 1
#: Longest relocation chain :meth:`TenantPlacement.insert` looks for.
MAX_MOVES = 500
CAPACITY_MIN = 64
#: The verdict's ``tenant`` field is 16 bits wide.
CAPACITY_MAX = 1 << 16
#: ``inv_rate`` registers are 64 bits; ⌈2⁶⁴/1⌉ does not fit and is clamped here (see :attr:`Plan.inv_req_rate`).
INV_RATE_MAX = U64
_REFILL_LIMIT_NS = 1 << 48
_SCALE_MAX = (1 << 32) - 1
_AMOUNT_MAX = (1 << 32) - 1


class TableFull(WirespeedError):
    """A hardware table has no room left: ``table`` is ``"tenants"`` or ``"plans"``."""

    def __init__(self, table: str, detail: str = ""):
        self.table = table
        super().__init__(f"{table} table is full" + (f": {detail}" if detail else ""))


def _check_capacity(capacity) -> int:
    if (isinstance(capacity, bool) or not isinstance(capacity, int) or not CAPACITY_MIN <= capacity <= CAPACITY_MAX
            or capacity & (capacity - 1)):
        raise ConfigError("capacity", capacity, f"must be a power of two in {CAPACITY_MIN}..{CAPACITY_MAX}")
    return capacity


def _check_enum(field_name: str, value, enum):
    try:
        return enum(value)
    except ValueError:
        raise ConfigError(field_name, value, f"must be one of {[m.name for m in enum]}") from None


def _inv_rate(rate: int) -> int:
    # Rounded up, so that ((deficit·inv) >> 64) + 1 is ⌈deficit/rate⌉ or one more: never early.
    return min(INV_RATE_MAX, -(-(1 << 64) // rate))


# -- plans ------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """One entry of the plan table: the rates and bursts of a tenant's two buckets.

    Parameters
    ----------
    req_rate : int
        Requests per second, 1..2²⁴−1.
    req_burst : int
        Request bucket size in requests, 1..2²⁰−1.
    cost_rate : int
        Cost units (LLM tokens) per second, 1..2³²−1.
    cost_burst : int
        Cost bucket size in cost units, 1..2³²−1.

    Raises
    ------
    ConfigError
        Naming the field, when a value is out of range or a bucket would take 2⁴⁸ ns or more to refill from empty
        (``burst·10⁹ / rate ≥ 2⁴⁸``; the ``*_burst`` field is named).
    """
    req_rate: int
    req_burst: int
    cost_rate: int
    cost_burst: int

    def __post_init__(self):
        check_int("req_rate", self.req_rate, 1, REQ_RATE_MAX)
        check_int("req_burst", self.req_burst, 1, REQ_BURST_MAX)
        check_int("cost_rate", self.cost_rate, 1, COST_RATE_MAX)
        check_int("cost_burst", self.cost_burst, 1, COST_BURST_MAX)
        for kind in ("req", "cost"):
            rate, burst = getattr(self, f"{kind}_rate"), getattr(self, f"{kind}_burst")
            if burst * NANO >= _REFILL_LIMIT_NS * rate:
                raise ConfigError(f"{kind}_burst", burst,
                                  f"{kind}_burst·10⁹ / {kind}_rate must be < 2⁴⁸ ns (refill from empty); "
                                  f"with {kind}_rate={rate} at most {(_REFILL_LIMIT_NS * rate - 1) // NANO}")

    @property
    def inv_req_rate(self) -> int:
        """``⌈2⁶⁴ / req_rate⌉``, clamped to 2⁶⁴−1 (the register width) for ``req_rate`` = 1.

        The clamp keeps the wait exact: for rate 1, ``((deficit·(2⁶⁴−1)) >> 64) + 1 = deficit``.
        """
        return _inv_rate(self.req_rate)

    @property
    def inv_cost_rate(self) -> int:
        """``⌈2⁶⁴ / cost_rate⌉``, clamped to 2⁶⁴−1 for ``cost_rate`` = 1 (see :attr:`inv_req_rate`)."""
        return _inv_rate(self.cost_rate)


# -- placement --------------------------------------------------------------------------------------------------------

class TenantPlacement:
    """The driver's copy of the tenant table's tags: where each key fingerprint lives, and how to make room.

    Slots are 2 halves × N/8 buckets × 4 ways; ``slot = half·N/2 + bucket·4 + way``. A key's fingerprint picks
    ``b0 = fp[0:k]`` in half 0 and ``b1 = fp[32:32+k]`` in half 1, k = log2(N/8) (``docs/limiter.md``).

    Parameters
    ----------
    capacity : int
        N, the slot count: a power of two, 64..65536.

    Raises
    ------
    ConfigError
        If ``capacity`` is not allowed.
    """

    def __init__(self, capacity: int = 4096):
        self.capacity = _check_capacity(capacity)
        self.buckets = capacity // (HALVES * WAYS)          # per half
        self._mask = self.buckets - 1
        self._slots: list = [None] * capacity                # fp or None
        self._where: dict[int, int] = {}                     # fp -> slot
        # Free ways per bucket, indexed by g = half·buckets + bucket; bucket g holds slots 4g .. 4g+3.
        self._free = [WAYS] * (HALVES * self.buckets)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, fp) -> bool:
        return fp in self._where

    @property
    def load_factor(self) -> float:
        """Placed keys / capacity."""
        return len(self._where) / self.capacity

    def candidates(self, fp: int) -> tuple[int, int]:
        """``(b0, b1)``: the key's bucket in half 0 and in half 1."""
        check_int("fp", fp, 0, U64)
        return fp & self._mask, (fp >> 32) & self._mask

    def slot(self, half: int, bucket: int, way: int) -> int:
        """The slot index of ``way`` in ``bucket`` of ``half``."""
        check_int("half", half, 0, HALVES - 1)
        check_int("bucket", bucket, 0, self.buckets - 1)
        check_int("way", way, 0, WAYS - 1)
        return half * (self.capacity // 2) + bucket * WAYS + way

    def occupant(self, slot: int):
        """The fingerprint placed in ``slot``, or None."""
        check_int("slot", slot, 0, self.capacity - 1)
        return self._slots[slot]

    def lookup(self, fp: int):
        """The slot holding ``fp``, or None."""
        return self._where.get(fp)

    def _alt(self, g: int, fp: int) -> int:
        """The other candidate bucket (as g) of a key that sits in bucket g."""
        if g < self.buckets:
            return self.buckets + ((fp >> 32) & self._mask)
        return fp & self._mask

    def _first_free(self, g: int) -> int:
        slots = self._slots
        for slot in range(g * WAYS, g * WAYS + WAYS):
            if slots[slot] is None:
                return slot
        raise AssertionError("bucket has no free way")     # pragma: no cover

    def insert(self, fp: int) -> tuple[int, list]:
        """Place a key.

        It goes into the emptier candidate bucket (half 0 on a tie), at its lowest free way. When both are full, a
        breadth-first search over buckets looks for the shortest chain of at most :data:`MAX_MOVES` relocations
        that frees a way in a candidate bucket (half 0's bucket is searched first, ways in order).

        Returns
        -------
        slot : int
            Where the key goes, once the moves are done.
        moves : list of (fp, old_slot, new_slot)
            Relocations to apply in this order, each by writing the copy to ``new_slot`` and then invalidating
            ``old_slot``; every key stays findable at every step. Empty when no relocation is needed.

        Raises
        ------
        ConfigError
            If ``fp`` is not a 64-bit value or is already placed.
        TableFull
            If no chain of at most :data:`MAX_MOVES` relocations frees a way. The table is unchanged.
        """
        check_int("fp", fp, 0, U64)
        if fp in self._where:
            raise ConfigError("fp", fp, f"is already placed, at slot {self._where[fp]}")
        free = self._free
        g0 = fp & self._mask
        g1 = self.buckets + ((fp >> 32) & self._mask)
        if free[g0] or free[g1]:
            g = g0 if free[g0] >= free[g1] else g1
            return self._put(fp, self._first_free(g), g), []

        slots = self._slots
        parent = {g0: None, g1: None}                       # bucket -> (bucket, way) whose occupant moves into it
        depth = {g0: 0, g1: 0}
        queue = deque((g0, g1))
        target = None
        while queue and target is None:
            g = queue.popleft()
            d = depth[g] + 1
            if d > MAX_MOVES:
                continue
            for way in range(WAYS):
                a = self._alt(g, slots[g * WAYS + way])
                if a in parent:
                    continue
                parent[a] = (g, way)
                depth[a] = d
                if free[a]:
                    target = a
                    break
                queue.append(a)
        if target is None:
            raise TableFull("tenants", f"no chain of at most {MAX_MOVES} relocations frees a way for "
                                       f"fp=0x{fp:016x} ({len(self._where)} of {self.capacity} slots used)")

        moves = []
        hole = self._first_free(target)
        cur = target
        while parent[cur] is not None:
            g, way = parent[cur]
            old = g * WAYS + way
            mover = slots[old]
            moves.append((mover, old, hole))
            slots[hole] = mover
            slots[old] = None
            self._where[mover] = hole
            hole, cur = old, g
        free[target] -= 1
        free[cur] += 1                                      # _put takes it back
        return self._put(fp, hole, cur), moves

    def _put(self, fp: int, slot: int, g: int) -> int:
        self._slots[slot] = fp
        self._where[fp] = slot
        self._free[g] -= 1
        return slot

    def remove(self, fp: int) -> int:
        """Forget a key; returns the slot it held (which the driver then invalidates).

        Raises
        ------
        ConfigError
            If ``fp`` is not placed.
        """
        slot = self._where.pop(fp, None)
        if slot is None:
            raise ConfigError("fp", fp, "is not placed")
        self._slots[slot] = None
        self._free[slot // WAYS] += 1
        return slot


# -- the limiter ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LimiterConfig:
    """What the limiter's control registers hold, validated. The defaults are the proposed reset values.

    Parameters
    ----------
    unknown_policy : UnknownPolicy
        What a descriptor without a key, or with a key not in the table, gets.
    default_slot : int
        The slot whose buckets ``UnknownPolicy.DEFAULT`` uses, 0..capacity−1.
    cost_source : CostSource
        ``FIXED``: the cost is ``cost_fixed``. ``CONTENT_LENGTH``: ``min(2³²−1, (content_length·cost_scale) >> 16)``.
    cost_fixed : int
        0..2³²−1.
    cost_scale : int
        Cost units per body byte, 16.16 fixed point, 0..2³²−1 (1.0 = 0x10000).

    Raises
    ------
    ConfigError
        Naming the field, the value and the allowed range.
    """
    unknown_policy: UnknownPolicy = UnknownPolicy.REJECT
    default_slot: int = 0
    cost_source: CostSource = CostSource.FIXED
    cost_fixed: int = 0
    cost_scale: int = 1 << 16

    def __post_init__(self):
        object.__setattr__(self, "unknown_policy", _check_enum("unknown_policy", self.unknown_policy, UnknownPolicy))
        check_int("default_slot", self.default_slot, 0, CAPACITY_MAX - 1)
        object.__setattr__(self, "cost_source", _check_enum("cost_source", self.cost_source, CostSource))
        check_int("cost_fixed", self.cost_fixed, 0, COST_MAX)
        check_int("cost_scale", self.cost_scale, 0, _SCALE_MAX)


@dataclass(frozen=True, slots=True)
class LimitVerdict(LayoutRecord, layout=LimitVerdictLayout):
    """One per descriptor; mirrors :class:`wirespeed.hdl.limiter_layouts.LimitVerdict` field for field.

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
    """A snapshot of one slot of the tenant table. Token counts are in nano-tokens."""
    valid: bool
    tag: int
    plan: int
    req_tokens: int
    cost_tokens: int
    last_ns: int
    allowed: int
    rejected: int


_NO_PLAN = (0, 0, 0, 0, 0, 0)     # reset contents of a plan entry: rates, bursts and reciprocals 0

_ALLOW, _REJECT, _PUNT = Decision.ALLOW, Decision.REJECT, Decision.PUNT
_KEY_NONE = KeySource.NONE


class LimiterModel:
    """The limiter as the hardware holds it: tenant slots, plan table, registers, counters.

    Parameters
    ----------
    capacity : int
        N tenant slots: a power of two, 64..65536.
    plans : int
        Plan table entries, 1..64.
    config : LimiterConfig
        Register contents; assign :attr:`config` to reconfigure between decisions.

    Attributes
    ----------
    allow, reject_401, reject_429, punt : int
        Global 64-bit counters, one per outcome of :meth:`decide`.

    Notes
    -----
    Choices where ``docs/limiter.md`` is silent:

    - Elapsed time is the 64-bit difference ``(now − last) mod 2⁶⁴``, so a ``now`` before ``last`` refills fully.
    - The refill product ``min(dt, 2⁴⁸−1)·rate`` is exact (up to 80 bits) before the ``min`` with the burst.
    - If a key ever matched two slots, the lowest slot index would win: half 0's bucket, then half 1's, ways in
      order. The driver never makes that happen: a relocation is one :meth:`move` commit.
    - Debit and refund neither refill nor change ``last``.
    """

    def __init__(self, capacity: int = 4096, plans: int = PLANS, config: LimiterConfig = LimiterConfig()):
        self.capacity = _check_capacity(capacity)
        self.plans = check_int("plans", plans, 1, PLANS)
        self._mask = capacity // (HALVES * WAYS) - 1
        self._half = capacity // 2
        self._plan_entries: list = [None] * plans
        # Per plan (req_rate, req_cap, cost_rate, cost_cap, inv_req, inv_cost); the caps are bursts in nano-tokens.
        self._plan_regs: list = [_NO_PLAN] * plans
        n = capacity
        self._valid = [False] * n
        self._tag = [0] * n
        self._key: list = [None] * n                    # tag if valid else None: what the lookup compares
        self._plan = [0] * n
        self._req = [0] * n
        self._cost = [0] * n
        self._last = [0] * n
        self._allowed = [0] * n
        self._rejected = [0] * n
        self.allow = self.reject_401 = self.reject_429 = self.punt = 0
        self.config = config

    # -- registers --

    @property
    def config(self) -> LimiterConfig:
        return self._config

    @config.setter
    def config(self, config: LimiterConfig):
        if not isinstance(config, LimiterConfig):
            raise ConfigError("config", config, "must be a LimiterConfig")
        check_int("default_slot", config.default_slot, 0, self.capacity - 1)
        self._config = config

    def write_plan(self, index: int, plan: Plan):
        """Write plan table entry ``index``, reciprocals included.

        Tenants on the plan keep their tokens; tokens above a smaller new burst are capped at their next refill.
        """
        check_int("index", index, 0, self.plans - 1)
        if not isinstance(plan, Plan):
            raise ConfigError("plan", plan, "must be a Plan")
        self._plan_entries[index] = plan
        self._plan_regs[index] = (plan.req_rate, plan.req_burst * NANO, plan.cost_rate, plan.cost_burst * NANO,
                                  plan.inv_req_rate, plan.inv_cost_rate)

    def plan(self, index: int):
        """Plan table entry ``index``: a :class:`Plan`, or None if never written."""
        check_int("index", index, 0, self.plans - 1)
        return self._plan_entries[index]

    # -- tenant table --

    def _check_slot(self, slot: int, name: str = "slot") -> int:
        return check_int(name, slot, 0, self.capacity - 1)

    def write_tenant(self, slot: int, fp: int, plan: int, valid: bool, now_ns: int):
        """Commit a staging entry ``(fp, plan, valid)`` to ``slot`` at time ``now_ns`` (between two decisions).

        - ``valid`` False: the slot is invalidated (tag and plan are written too; tokens and counters stay).
        - The slot is valid with the same tag (an **update**): the plan changes; both token counts are capped at the
          new plan's bursts; ``last_ns`` and the counters stay. The time since ``last_ns`` is refilled at the new
          rates by the next decision.
        - Otherwise (a **new tenant**): both buckets start full, ``last_ns = now_ns``, counters 0.

        Raises
        ------
        ConfigError
            For an argument out of range, or a valid entry naming a plan that was never written.
        """
        self._check_slot(slot)
        check_int("fp", fp, 0, U64)
        check_int("plan", plan, 0, self.plans - 1)
        check_int("now_ns", now_ns, 0, U64)
        if not valid:
            self._valid[slot], self._tag[slot], self._key[slot], self._plan[slot] = False, fp, None, plan
            return
        if self._plan_entries[plan] is None:
            raise ConfigError("plan", plan, "names a plan table entry that was never written")
        _, req_cap, _, cost_cap, _, _ = self._plan_regs[plan]
        if self._valid[slot] and self._tag[slot] == fp:
            self._req[slot] = min(self._req[slot], req_cap)
            self._cost[slot] = min(self._cost[slot], cost_cap)
        else:
            self._req[slot], self._cost[slot], self._last[slot] = req_cap, cost_cap, now_ns
            self._allowed[slot] = self._rejected[slot] = 0
        self._valid[slot], self._tag[slot], self._key[slot], self._plan[slot] = True, fp, fp, plan

    def move(self, old_slot: int, new_slot: int):
        """A relocation, one commit (``docs/limiter.md``): copy the whole slot (tag, valid, plan, tokens,
        ``last_ns``, counters) to ``new_slot`` and invalidate ``old_slot``, with no decision in between."""
        self._check_slot(old_slot, "old_slot")
        self._check_slot(new_slot, "new_slot")
        if old_slot == new_slot:
            return
        for column in (self._valid, self._tag, self._key, self._plan, self._req, self._cost, self._last,
                       self._allowed, self._rejected):
            column[new_slot] = column[old_slot]
        self._valid[old_slot], self._key[old_slot] = False, None

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

    def state(self, slot: int) -> TenantState:
        """A snapshot of ``slot``."""
        self._check_slot(slot)
        return TenantState(self._valid[slot], self._tag[slot], self._plan[slot], self._req[slot],
                           self._cost[slot], self._last[slot], self._allowed[slot], self._rejected[slot])

    # -- decisions --

    def cost(self, desc) -> int:
        """The request's cost under ``cost_source``; a descriptor without content-length counts as length 0."""
        config = self._config
        if config.cost_source is CostSource.FIXED:
            return config.cost_fixed
        length = desc.content_length if desc.cl_present else 0
        return min(COST_MAX, (length * config.cost_scale) >> 16)

    def decide(self, desc, now_ns: int) -> LimitVerdict:
        """The verdict for one descriptor at time ``now_ns`` (``docs/limiter.md``, "Decision").

        A descriptor without a key (``key_source`` NONE), or whose ``key_fp`` is not in the table, follows
        ``unknown_policy``: REJECT gives 401; PUNT gives decision PUNT with status 0; DEFAULT decides on
        ``default_slot``'s buckets and counters (``tenant_found`` 0, ``tenant`` = ``default_slot``), or gives 401
        when that slot is not valid. The descriptor's error flags are not looked at.

        Parameters
        ----------
        desc : wirespeed.host.parser.Descriptor
            Only ``key_source``, ``key_fp``, ``cl_present`` and ``content_length`` are read.
        now_ns : int
            The clock, 0..2⁶⁴−1.
        """
        config = self._config
        if config.cost_source is CostSource.FIXED:
            cost = config.cost_fixed
        else:
            cost = min(COST_MAX, ((desc.content_length if desc.cl_present else 0) * config.cost_scale) >> 16)

        slot = None if desc.key_source is _KEY_NONE else self.lookup(desc.key_fp)
        found = slot is not None
        if not found:
            policy = config.unknown_policy
            if policy is UnknownPolicy.PUNT:
                self.punt = (self.punt + 1) & U64
                return LimitVerdict(_PUNT, 0, False, 0, cost, 0)
            if policy is UnknownPolicy.DEFAULT and self._valid[config.default_slot]:
                slot = config.default_slot
            else:
                self.reject_401 = (self.reject_401 + 1) & U64
                return LimitVerdict(_REJECT, 401, False, 0, cost, 0)

        req_rate, req_cap, cost_rate, cost_cap, inv_req, inv_cost = self._plan_regs[self._plan[slot]]
        dt = (now_ns - self._last[slot]) & U64
        if dt > DT_MAX_NS:
            dt = DT_MAX_NS
        req = self._req[slot] + dt * req_rate
        if req > req_cap:
            req = req_cap
        tokens = self._cost[slot] + dt * cost_rate
        if tokens > cost_cap:
            tokens = cost_cap
        need = cost * NANO
        self._last[slot] = now_ns
        if req >= NANO and tokens >= need:
            self._req[slot] = req - NANO
            self._cost[slot] = tokens - need
            self._allowed[slot] = (self._allowed[slot] + 1) & U64
            self.allow = (self.allow + 1) & U64
            return LimitVerdict(_ALLOW, 200, found, slot, cost, 0)
        self._req[slot] = req
        self._cost[slot] = tokens
        wait = ((NANO - req) * inv_req >> 64) + 1 if req < NANO else 0
        if tokens < need:
            wait_cost = ((need - tokens) * inv_cost >> 64) + 1
            if wait_cost > wait:
                wait = wait_cost
        self._rejected[slot] = (self._rejected[slot] + 1) & U64
        self.reject_429 = (self.reject_429 + 1) & U64
        return LimitVerdict(_REJECT, 429, found, slot, cost, wait)

    # -- debit and refund --

    def debit(self, slot: int, amount: int) -> bool:
        """Subtract ``amount·10⁹`` from the cost bucket, saturating at 0. No refill; ``last_ns`` stays.

        Returns False, changing nothing, when ``slot`` holds no valid tenant (the hardware drops such a command).
        """
        self._check_slot(slot)
        check_int("amount", amount, 0, _AMOUNT_MAX)
        if not self._valid[slot]:
            return False
        self._cost[slot] = max(0, self._cost[slot] - amount * NANO)
        return True

    def refund(self, slot: int, amount: int) -> bool:
        """Add ``amount·10⁹`` to the cost bucket, capped at the plan's cost burst. No refill; ``last_ns`` stays.

        Returns False, changing nothing, when ``slot`` holds no valid tenant.
        """
        self._check_slot(slot)
        check_int("amount", amount, 0, _AMOUNT_MAX)
        if not self._valid[slot]:
            return False
        cost_cap = self._plan_regs[self._plan[slot]][3]
        self._cost[slot] = min(cost_cap, self._cost[slot] + amount * NANO)
        return True

"""The tenant table and the clock, as the driver offers them: ``Offload.tenants`` and ``Offload.clock``.

gateway code ─▶ :class:`Tenants` / :class:`Clock` (hold the Offload's lock, run one generator per call)
             ─▶ sans-IO :class:`TenantsCore` / :class:`ClockCore` (intents → limiter register operations)

:class:`TenantsCore` keeps the driver's side of the limiter: where each key lives (a
:class:`~wirespeed.host.placement.TenantPlacement`), which plan table entry holds which rates (shared by equal rates,
counted, rewritten only when free) and the default tenant. Every check is made before the first register write, so a
call that raises :class:`~wirespeed.host.errors.ConfigError` or :class:`~wirespeed.host.errors.TableFull` leaves the
device and the driver as they were. Registers and their behaviour: ``hdl/limiter/limiter.rdl``, ``docs/limiter.md``.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import asdict, dataclass
from fractions import Fraction

from ...hdl.limiter.layouts import RATE_PERIOD_S, CostSource, LimiterParams, TableOp, UnknownPolicy
from ...hdl.parser.layouts import FP_POLY_RESET, FP_SEED_RESET
from ..errors import ConfigError, FeatureMissing, IncompatibleBitstream, TableOpError, TransportError, check_int
from ..models.limiter import LimiterConfig, Plan
from ..errors import TableFull
from ..placement import TenantPlacement
from ..keys import fingerprint
from ...hdl.bus.regmap import RegMap
from .registers import Registers

__all__ = ["Tenants", "TenantInfo", "TenantId", "Clock", "TenantsCore", "ClockCore", "CLOCK_MODES", "check_clock_mode",
           "FeatureMissing", "TableOpError", "read_limiter_params", "read_features", "TABLE_OP_POLLS", "CMD_POLLS",
           "AMOUNT_MAX", "RATE_KEYWORDS"]

#: Reads of ``tbl_status`` a table op may stay busy for before the driver gives up. An op takes a few cycles and one
#: read takes several, so the first read normally finds it done.
TABLE_OP_POLLS = 1000
#: Reads of ``cmd_status`` the driver waits for room in the command FIFO. Commands run in cycles without a
#: request, so only sustained line-rate traffic keeps it full.
CMD_POLLS = 100_000
#: Largest debit or refund, in tokens (``cmd_amount`` is 32 bits).
AMOUNT_MAX = (1 << 32) - 1
_U64 = (1 << 64) - 1
_STEP_MAX = 1 << 63
_NS_PER_CYCLE_ONE = 1 << 32

#: Public keyword → :class:`~wirespeed.host.models.limiter.Plan` field, for error messages in the caller's terms.
_RATE_KEYWORDS = {"req_rate": "requests_per_s", "req_burst": "burst", "cost_rate": "tokens_per_s",
                  "cost_burst": "token_burst"}
#: The keywords of one bucket: (per second, per minute, burst), by Plan field prefix.
_LIMIT_KEYWORDS = {"req": ("requests_per_s", "requests_per_minute", "burst"),
                   "cost": ("tokens_per_s", "tokens_per_minute", "token_burst")}
#: Every rate keyword of ``add``/``update``/``plan``, e.g. for a configuration file that passes them through.
RATE_KEYWORDS = tuple(name for names in _LIMIT_KEYWORDS.values() for name in names)


def _is_unlimited(rate) -> bool:
    return isinstance(rate, float) and rate == math.inf


def _limit(kind: str, per_s, per_minute, burst, burst_max: int):
    """One bucket's ``(rate per second, burst)`` for :class:`Plan` from the caller's keywords.

    ``per_s`` and ``per_minute`` are alternatives; neither (or ``math.inf``) means unlimited, with no burst. A
    missing burst is one period of the rate as given: a second's worth of a per-second rate, a minute's worth of a
    per-minute rate (rounded up, at least 1, at most ``burst_max``).
    """
    s_name, m_name, b_name = _LIMIT_KEYWORDS[kind]
    if per_s is not None and per_minute is not None:
        raise ConfigError(m_name, per_minute, f"give {s_name} or {m_name}, not both")
    if _is_unlimited(per_s) or _is_unlimited(per_minute):
        per_s = per_minute = None
    if per_s is None and per_minute is None:
        if burst is not None:
            raise ConfigError(b_name, burst, f"needs {s_name} or {m_name} (without a rate the bucket is "
                                             f"unlimited)")
        return None, None
    if per_minute is not None:
        if isinstance(per_minute, bool) or not isinstance(per_minute, numbers.Real):
            raise ConfigError(m_name, per_minute, "must be a whole number per minute")
        minute = Fraction(per_minute) if isinstance(per_minute, numbers.Rational) else None
        if minute is None and float(per_minute).is_integer():
            minute = Fraction(int(per_minute))
        if minute is None or minute.denominator != 1 or minute < 1:
            raise ConfigError(m_name, per_minute, "must be a whole number per minute, at least 1")
        rate, period = minute / RATE_PERIOD_S, RATE_PERIOD_S
    else:
        rate, period = per_s, 1
    if burst is None:
        try:
            burst = min(burst_max, max(1, math.ceil(rate * period)))
        except (TypeError, ValueError, OverflowError):
            burst = 1                                  # the rate's own check names it
    return rate, burst


class TenantId(int):
    """A tenant's id: what :meth:`Tenants.add` returns and :attr:`Verdict.tenant` reports. It stays the tenant's until
    the tenant is removed, however the table relocates it, and is never given to another tenant of the same
    :class:`~wirespeed.Offload`. Every :class:`Tenants` method takes it where it takes a key.

    It is an ``int`` (ids count up from 1); a plain ``int`` given to :class:`Tenants` is a key fingerprint instead
    (``TenantId(n)`` turns a stored number back into an id)."""

    def __repr__(self):
        return f"TenantId({int(self)})"


@dataclass(frozen=True)
class TenantInfo:
    """One tenant as the device holds it (:meth:`Tenants.get`).

    The bucket contents are as of ``last_ns``, the tenant's last decision or creation: the device refills lazily,
    at the next decision.

    Attributes
    ----------
    fp : int
        The key fingerprint (the parser's ``key_fp``).
    slot : int
        The tenant table slot, where the tenant is now (relocations move it).
    plan : int
        The plan table entry.
    requests_per_s, tokens_per_s : int, Fraction or None
        The tenant's rates per second (an ``int`` when whole, else an exact ``Fraction``); None: unlimited.
    burst, token_burst : int or None
        The bucket sizes; None: unlimited.
    request_tokens, cost_tokens : Fraction
        Bucket contents in requests and tokens: ``req_units / unit``, ``cost_units / unit`` (0 for an unlimited
        bucket, which is never drawn from).
    req_units, cost_units : int
        The raw bucket counters (``unit`` = 6·10¹⁰ / 2^tick_log2 per token).
    last_ns : int
        The clock at the last decision or creation.
    allowed, rejected : int
        The tenant's counters (wrapping at 2^counter_bits).
    """
    fp: int
    slot: int
    plan: int
    requests_per_s: int
    burst: int
    tokens_per_s: int
    token_burst: int
    request_tokens: Fraction
    cost_tokens: Fraction
    req_units: int
    cost_units: int
    last_ns: int
    allowed: int
    rejected: int
    #: The tenant's :class:`TenantId`.
    id: TenantId = None

    @property
    def requests_per_minute(self):
        """The request rate per minute (an ``int``: the hardware counts per minute), or None: unlimited."""
        return None if self.requests_per_s is None else int(self.requests_per_s * RATE_PERIOD_S)

    @property
    def tokens_per_minute(self):
        """The token rate per minute (an ``int``), or None: unlimited."""
        return None if self.tokens_per_s is None else int(self.tokens_per_s * RATE_PERIOD_S)

    def as_dict(self) -> dict:
        """JSON-ready: the token counts and rates as floats (exact values are in ``req_units``/``cost_units`` and
        the per-minute rates, which are added)."""
        d = asdict(self)
        d["request_tokens"] = float(self.request_tokens)
        d["cost_tokens"] = float(self.cost_tokens)
        for name in ("requests_per_s", "tokens_per_s"):
            if isinstance(d[name], Fraction):
                d[name] = float(d[name])
        d["requests_per_minute"] = self.requests_per_minute
        d["tokens_per_minute"] = self.tokens_per_minute
        return d


# -- register helpers -------------------------------------------------------------------------------------------------

def _pack(regmap: RegMap, reg: str, **fields) -> int:
    """The whole-register value with ``fields`` set (others 0)."""
    r = regmap[reg]
    value = 0
    for name, v in fields.items():
        f = r.field(name)
        value |= (int(v) << f.lsb) & f.mask
    return value


def _unpack(regmap: RegMap, reg: str, value: int, name: str) -> int:
    f = regmap[reg].field(name)
    return (value & f.mask) >> f.lsb


def read_features(regs: Registers, need: str | None = None):
    """The names of the pipelines the core has (``id.features``), as a frozenset (an operation generator).

    Raises :class:`FeatureMissing` if ``need`` is given and the core lacks it.
    """
    bits = yield from regs.read("id.features")
    features = frozenset(f.name for f in regs.regmap["id.features"].fields if (bits & f.mask) >> f.lsb)
    if need is not None and need not in features:
        raise FeatureMissing(need)
    return features


def read_limiter_params(regs: Registers):
    """Read the core's limiter parameters from the ID and limiter registers (an operation generator).

    Returns
    -------
    LimiterParams

    Raises
    ------
    FeatureMissing
        If the core has no limiter.
    IncompatibleBitstream
        If the parameters are not ones this driver can use.
    """
    m = regs.regmap
    yield from read_features(regs, need="limiter")
    tenants = yield from regs.read("id.params_tenants")
    clock_hz = yield from regs.read("id.params_clock.hz")
    params = yield from regs.read("limiter.params")
    widths = yield from regs.read("limiter.widths")
    capacity_log2 = _unpack(m, "limiter.widths", widths, "capacity_log2")
    if tenants != 1 << capacity_log2:
        raise IncompatibleBitstream(f"id.params_tenants = {tenants} disagrees with limiter.widths.capacity_log2 = "
                                    f"{capacity_log2}; the bitstream's ID block is inconsistent")
    try:
        return LimiterParams(
            capacity=tenants, clock_hz=clock_hz,
            plans=_unpack(m, "limiter.params", params, "plans"),
            tick_log2=_unpack(m, "limiter.params", params, "tick_log2"),
            counter_bits=_unpack(m, "limiter.params", params, "counter_bits"),
            cmd_fifo_depth=_unpack(m, "limiter.params", params, "cmd_fifo_depth"),
            req_burst_bits=_unpack(m, "limiter.widths", widths, "req_burst_bits"),
            cost_burst_bits=_unpack(m, "limiter.widths", widths, "cost_burst_bits"))
    except ValueError as e:
        raise IncompatibleBitstream(f"limiter parameters this driver cannot use: {e}") from None


def _enum_arg(field: str, value, enum):
    """An enum member from a member, its name (any case, ``-`` for ``_``) or its value."""
    if isinstance(value, enum):
        return value
    if isinstance(value, str):
        member = enum.__members__.get(value.strip().upper().replace("-", "_"))
        if member is not None:
            return member
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            return enum(value)
        except ValueError:
            pass
    raise ConfigError(field, value, f"must be one of {[m.name.lower() for m in enum]}")


# -- tenants ----------------------------------------------------------------------------------------------------------

class TenantsCore:
    """The tenant table's driver logic, free of I/O: each public method is an operation generator.

    Parameters
    ----------
    regs : Registers
        Register access for the core map.
    params : LimiterParams
        The device's limiter parameters (:func:`read_limiter_params`).
    """

    def __init__(self, regs: Registers, params: LimiterParams):
        self.regs = regs
        self.regmap = regs.regmap
        self.params = params
        self.placement = TenantPlacement(params.capacity)
        self.poly, self.seed = FP_POLY_RESET, FP_SEED_RESET
        #: Key fingerprint → plan table entry.
        self._plan_of: dict[int, int] = {}
        #: Plan → entry and entry → plan, for entries in use.
        self._entry_of: dict[Plan, int] = {}
        self._plan_at: dict[int, Plan] = {}
        self._refs = [0] * params.plans
        #: What each plan entry holds on the device (None: never written by this driver).
        self._written: list = [None] * params.plans
        #: The default tenant's fingerprint, or None.
        self.default_fp: int | None = None
        #: Fingerprint → id and id → fingerprint, for the tenants present; the next id to give.
        self._id_of: dict[int, TenantId] = {}
        self._fp_of: dict[TenantId, int] = {}
        self._next_id = 1

    # -- arguments --

    def fp(self, api_key) -> int:
        """The key fingerprint of ``api_key``: a :class:`TenantId` is looked up, an int is one already
        (``key_fp``), text is fingerprinted."""
        if isinstance(api_key, TenantId):
            fp = self._fp_of.get(api_key)
            if fp is None:
                raise ConfigError("tenant", api_key, "no tenant has this id (removed, or given by another Offload)")
            return fp
        if isinstance(api_key, (str, bytes, bytearray, memoryview)) and not len(api_key):
            raise ConfigError("api_key", api_key, "must not be empty: an empty key names no tenant (a request with "
                              "an empty x-api-key is a key not in the table, which unknown_policy decides)")
        if isinstance(api_key, str):
            api_key = api_key.encode()
        if isinstance(api_key, (bytes, bytearray, memoryview)):
            return fingerprint(bytes(api_key), self.poly, self.seed)
        if isinstance(api_key, int) and not isinstance(api_key, bool):
            return check_int("api_key", api_key, 0, _U64)
        raise ConfigError("api_key", api_key, "must be the key text (str or bytes) or its 64-bit fingerprint (int)")

    def _present(self, api_key) -> int:
        fp = self.fp(api_key)
        if fp not in self.placement:
            raise ConfigError("api_key", api_key, f"no tenant has this key (fp 0x{fp:016x})")
        return fp

    def plan(self, requests_per_s=None, burst=None, tokens_per_s=None, token_burst=None,
             requests_per_minute=None, tokens_per_minute=None) -> Plan:
        """A validated :class:`~wirespeed.host.models.limiter.Plan` from the public keywords (:meth:`Tenants.add`);
        :class:`ConfigError` names the keyword that is out of range."""
        p = self.params
        req = _limit("req", requests_per_s, requests_per_minute, burst, p.req_burst_max)
        cost = _limit("cost", tokens_per_s, tokens_per_minute, token_burst, p.cost_burst_max)
        keywords = dict(_RATE_KEYWORDS)
        if requests_per_minute is not None:
            keywords["req_rate"] = "requests_per_minute"
        if tokens_per_minute is not None:
            keywords["cost_rate"] = "tokens_per_minute"
        try:
            plan = Plan(*req, *cost)
            plan.validate(p)
        except ConfigError as e:
            value = e.value
            if e.field == "req_rate" and requests_per_minute is not None:
                value = requests_per_minute
            elif e.field == "cost_rate" and tokens_per_minute is not None:
                value = tokens_per_minute
            raise ConfigError(keywords.get(e.field, e.field), value, e.limit) from None
        return plan

    def set_fingerprint_key(self, poly: int, seed: int) -> None:
        """Fingerprint key text with this key (the parser's ``fp_poly``/``fp_seed``) from now on."""
        check_int("poly", poly, 0, _U64)
        check_int("seed", seed, 0, _U64)
        self.poly, self.seed = poly, seed

    # -- plan entries --

    def _entry_for(self, plan: Plan, releasing: int | None = None) -> tuple[int, bool]:
        """``(entry, write)``: where ``plan`` lives or would go, and whether it must be written. Changes nothing.

        An entry in use is shared. Otherwise a free entry is taken, one that already holds the plan first. An entry
        whose only user is the tenant being updated (``releasing``) is rewritten in place: no other tenant sees it.
        """
        entry = self._entry_of.get(plan)
        if entry is not None:
            return entry, False
        free = [i for i, refs in enumerate(self._refs) if not refs]
        for i in free:
            if self._written[i] == plan:
                return i, False
        if free:
            return free[0], True
        if releasing is not None and self._refs[releasing] == 1:
            return releasing, True
        raise TableFull("plans", f"all {self.params.plans} plan entries hold other rates in use; "
                                 f"reuse an existing (rates, bursts) tuple or remove tenants")

    def _acquire(self, entry: int, plan: Plan) -> None:
        self._refs[entry] += 1
        self._entry_of[plan] = entry
        self._plan_at[entry] = plan

    def _release(self, entry: int) -> None:
        self._refs[entry] -= 1
        if not self._refs[entry]:
            del self._entry_of[self._plan_at.pop(entry)]

    def _write_plan(self, entry: int, plan: Plan):
        r = self.regs
        values = plan.registers(self.params)
        for reg, key in (("plan_req_rate", "req_rate"), ("plan_cost_rate", "cost_rate"), ("plan_req_cap", "req_cap"),
                         ("plan_cost_cap", "cost_cap"), ("plan_inv_req", "inv_req"), ("plan_inv_cost", "inv_cost")):
            yield from r.write(f"limiter.{reg}", values[key])
        yield from r.write("limiter.plan_commit", _pack(self.regmap, "limiter.plan_commit", index=entry, go=1))
        self._written[entry] = plan

    # -- table ops --

    def _table_op(self, op: TableOp, slot: int, *, dst: int | None = None, fp: int | None = None,
                  plan: int | None = None, valid: bool = True):
        """Stage, run and wait for one table op; :class:`TableOpError` if the device refuses it."""
        r, m = self.regs, self.regmap
        yield from r.write("limiter.tbl_slot", slot)
        if dst is not None:
            yield from r.write("limiter.tbl_dst", dst)
        if fp is not None:
            yield from r.write("limiter.tbl_fp", fp)
        if plan is not None:
            yield from r.write("limiter.tbl_entry", _pack(m, "limiter.tbl_entry", plan=plan, valid=valid))
        yield from r.write("limiter.tbl_op", _pack(m, "limiter.tbl_op", op=op.value, go=1))
        for _ in range(TABLE_OP_POLLS):
            status = yield from r.read("limiter.tbl_status")
            if not _unpack(m, "limiter.tbl_status", status, "busy"):
                break
        else:
            raise TransportError(f"limiter table op {op.name} on slot {slot} still busy after {TABLE_OP_POLLS} "
                                 f"status reads: the limiter pipeline is stalled")
        if _unpack(m, "limiter.tbl_status", status, "error"):
            where = f"slot {slot}" + (f" to slot {dst}" if dst is not None else "")
            raise TableOpError(f"the limiter refused table op {op.name} on {where}: a driver bug, or a device "
                               f"whose parameters differ from the ones the driver read")

    # -- intents --

    def add(self, api_key, **limits):
        fp = self.fp(api_key)
        if fp in self.placement:
            raise ConfigError("api_key", api_key, f"a tenant with this key exists (slot {self.placement.lookup(fp)})")
        plan = self.plan(**limits)
        entry, write = self._entry_for(plan)
        slot, moves = self.placement.insert(fp)            # TableFull leaves the placement unchanged
        self._acquire(entry, plan)
        self._plan_of[fp] = entry
        if write:
            yield from self._write_plan(entry, plan)
        for _mover, old, new in moves:
            # One commit: copy to the free slot, invalidate the old one (default_slot follows on the device).
            yield from self._table_op(TableOp.MOVE, old, dst=new)
        yield from self._table_op(TableOp.WRITE, slot, fp=fp, plan=entry, valid=True)
        tenant = TenantId(self._next_id)
        self._next_id += 1
        self._id_of[fp], self._fp_of[tenant] = tenant, fp
        return tenant

    def tenant_id(self, slot: int) -> TenantId | None:
        """The id of the tenant in ``slot`` (None: none this driver added)."""
        fp = self.placement.occupant(slot)
        return None if fp is None else self._id_of.get(fp)

    def update(self, api_key, requests_per_s=None, burst=None, tokens_per_s=None, token_burst=None,
               requests_per_minute=None, tokens_per_minute=None):
        fp = self._present(api_key)
        old_entry = self._plan_of[fp]
        old = self._plan_at[old_entry]
        # What is not given stays. A new rate keeps the old burst (a default one if the bucket was unlimited);
        # math.inf makes a bucket unlimited.
        given = {}
        for kind, per_s, per_minute, b in (("req", requests_per_s, requests_per_minute, burst),
                                           ("cost", tokens_per_s, tokens_per_minute, token_burst)):
            s_name, m_name, b_name = _LIMIT_KEYWORDS[kind]
            old_rate, old_burst = getattr(old, f"{kind}_rate"), getattr(old, f"{kind}_burst")
            if per_s is None and per_minute is None:
                if _is_unlimited(b):
                    raise ConfigError(b_name, b, "must be a whole number (math.inf goes to the rate)")
                if b is not None and old_rate is None:
                    raise ConfigError(b_name, b, f"needs {s_name} or {m_name}: the bucket is unlimited")
                given.update({s_name: old_rate, b_name: old_burst if b is None else b})
            else:
                unlimited = _is_unlimited(per_s) or _is_unlimited(per_minute)
                given.update({s_name: per_s, m_name: per_minute,
                              b_name: b if b is not None or unlimited or old_burst is None else old_burst})
        plan = self.plan(**given)
        slot = self.placement.lookup(fp)
        if plan == old:
            return self._id_of[fp]
        entry, write = self._entry_for(plan, releasing=old_entry)
        self._release(old_entry)
        self._acquire(entry, plan)
        self._plan_of[fp] = entry
        if write:
            yield from self._write_plan(entry, plan)
        # The same tag and slot: the device keeps the buckets, capped at the new bursts.
        yield from self._table_op(TableOp.WRITE, slot, fp=fp, plan=entry, valid=True)
        return self._id_of[fp]

    def remove(self, api_key):
        fp = self._present(api_key)
        entry = self._plan_of.pop(fp)
        slot = self.placement.remove(fp)
        self._release(entry)
        if self.default_fp == fp:
            self.default_fp = None
        tenant = self._id_of.pop(fp)
        del self._fp_of[tenant]
        yield from self._table_op(TableOp.WRITE, slot, fp=fp, plan=entry, valid=False)
        return tenant

    def set_default(self, api_key):
        fp = self._present(api_key)
        slot = self.placement.lookup(fp)
        yield from self._table_op(TableOp.SET_DEFAULT, slot)
        self.default_fp = fp
        return self._id_of[fp]

    def get(self, api_key) -> TenantInfo:
        fp = self._present(api_key)
        slot = self.placement.lookup(fp)
        r, m = self.regs, self.regmap
        yield from self._table_op(TableOp.READ, slot)
        tag = yield from r.read("limiter.rd_tag")
        entry_bits = yield from r.read("limiter.rd_entry")
        valid = _unpack(m, "limiter.rd_entry", entry_bits, "valid")
        entry = _unpack(m, "limiter.rd_entry", entry_bits, "plan")
        if not valid or tag != fp or entry != self._plan_of[fp]:
            raise TableOpError(f"slot {slot} holds tag 0x{tag:016x}, plan {entry}, valid {valid}; the driver put "
                               f"fp 0x{fp:016x} with plan {self._plan_of[fp]} there")
        req = yield from r.read("limiter.rd_req")
        cost = yield from r.read("limiter.rd_cost")
        last = yield from r.read("limiter.rd_last")
        allowed = yield from r.read("limiter.rd_allowed")
        rejected = yield from r.read("limiter.rd_rejected")
        plan = self._plan_at[entry]
        unit = self.params.unit
        return TenantInfo(fp=fp, slot=slot, plan=entry, requests_per_s=plan.req_rate, burst=plan.req_burst,
                          tokens_per_s=plan.cost_rate, token_burst=plan.cost_burst,
                          request_tokens=Fraction(req, unit), cost_tokens=Fraction(cost, unit), req_units=req,
                          cost_units=cost, last_ns=last, allowed=allowed, rejected=rejected, id=self._id_of[fp])

    def command(self, api_key, tokens, refund: bool):
        """A debit (``refund`` False) or refund of ``tokens`` on the tenant's cost bucket."""
        fp = self._present(api_key)
        check_int("tokens", tokens, 0, AMOUNT_MAX)
        r, m = self.regs, self.regmap
        depth = self.params.cmd_fifo_depth
        for _ in range(CMD_POLLS):
            waiting = yield from r.read("limiter.cmd_status.waiting")
            if waiting < depth:
                break
        else:
            raise TransportError(f"the limiter's command FIFO stayed full ({depth} waiting) for {CMD_POLLS} "
                                 f"status reads: the limiter pipeline is stalled")
        yield from r.write("limiter.cmd_fp", fp)
        yield from r.write("limiter.cmd_amount", tokens)
        yield from r.write("limiter.cmd_push", _pack(m, "limiter.cmd_push", refund=refund, go=1))

    def configure(self, unknown_policy=None, cost_source=None, cost_fixed=None, cost_scale=None, cost_scale_cl=None):
        given = {}
        if unknown_policy is not None:
            given["unknown_policy"] = _enum_arg("unknown_policy", unknown_policy, UnknownPolicy)
        if cost_source is not None:
            given["cost_source"] = _enum_arg("cost_source", cost_source, CostSource)
        if cost_fixed is not None:
            given["cost_fixed"] = cost_fixed
        if cost_scale is not None:
            given["cost_scale"] = cost_scale
        if cost_scale_cl is not None:
            given["cost_scale_cl"] = cost_scale_cl
        LimiterConfig(**given)                              # validates every given value before any write
        r = self.regs
        if "unknown_policy" in given and "cost_source" in given:
            yield from r.write("limiter.ctrl", _pack(self.regmap, "limiter.ctrl",
                                                     unknown_policy=given["unknown_policy"].value,
                                                     cost_source=given["cost_source"].value))
        elif "unknown_policy" in given:
            yield from r.write("limiter.ctrl.unknown_policy", given["unknown_policy"].value)
        elif "cost_source" in given:
            yield from r.write("limiter.ctrl.cost_source", given["cost_source"].value)
        if "cost_fixed" in given:
            yield from r.write("limiter.cost_fixed", given["cost_fixed"])
        if "cost_scale" in given:
            yield from r.write("limiter.cost_scale", given["cost_scale"])
        if "cost_scale_cl" in given:
            yield from r.write("limiter.cost_scale_cl", given["cost_scale_cl"])


class Tenants:
    """The tenant table of one core: ``Offload.tenants``. Every method holds the Offload's lock throughout.

    A tenant is named by its :class:`TenantId` (what :meth:`add` returns and :attr:`Verdict.tenant` reports) or by
    its API key: the key text (``str`` or ``bytes``, fingerprinted as the parser does, with the parser's reset key
    unless :meth:`set_fingerprint_key` says otherwise) or the 64-bit fingerprint the parser reports (``key_fp``, a
    plain ``int``). Rates and bursts are shared through the device's plan table: tenants with equal
    ``(requests_per_s, burst, tokens_per_s, token_burst)`` use one entry.

    The driver assumes it configured the table since the core's reset: it keeps its own copy of where each key
    lives.
    """

    def __init__(self, offload, core: TenantsCore, clock: "ClockCore | None" = None):
        self._offload = offload
        self.core = core
        #: The clock to discipline before a command (wall mode), or None.
        self.clock = clock

    def _run(self, ops):
        return self._offload._run(ops)

    def _timed(self, ops):
        """``ops`` after the wall-clock step, in one run."""
        if self.clock is not None:
            yield from self.clock.discipline()
        return (yield from ops)

    def add(self, api_key, *, requests_per_s=None, burst=None, tokens_per_s=None, token_burst=None,
            requests_per_minute=None, tokens_per_minute=None) -> TenantId:
        """Add a tenant with full buckets; returns its :class:`TenantId` (what :attr:`Verdict.tenant` reports).

        Parameters
        ----------
        requests_per_s, requests_per_minute : number, optional
            The request rate, per second or per minute (not both). The hardware counts whole requests per minute,
            so a per-second rate must be a multiple of 1/60 (``0.5`` is 30 per minute); integral floats such as
            ``1e6`` are accepted. Neither, or ``math.inf``: requests are unlimited.
        burst : int, optional
            The request bucket size. Default: one period of the rate as given, a second's worth of
            ``requests_per_s`` or a minute's worth of ``requests_per_minute`` (rounded up, at least 1, at most the
            device's ``req_burst_max``).
        tokens_per_s, tokens_per_minute, token_burst :
            The same for LLM tokens (the request's cost, ``configure(cost_source=…)``).

        Raises
        ------
        ConfigError
            A bad or present key, or a rate or burst out of range or not representable (named by its keyword).
        TableFull
            ``"plans"`` when the rates need a plan entry and none is free; ``"tenants"`` when no relocation makes
            room. Nothing is written in either case.
        """
        return self._run(self.core.add(api_key, requests_per_s=requests_per_s, burst=burst,
                                       tokens_per_s=tokens_per_s, token_burst=token_burst,
                                       requests_per_minute=requests_per_minute,
                                       tokens_per_minute=tokens_per_minute))

    def update(self, api_key, *, requests_per_s=None, burst=None, tokens_per_s=None, token_burst=None,
               requests_per_minute=None, tokens_per_minute=None) -> TenantId:
        """Change a tenant's rates or bursts (those not given stay); returns its id.

        A new rate keeps the bucket's burst unless one is given (or the bucket was unlimited: then :meth:`add`'s
        default). ``math.inf`` as a rate makes that bucket unlimited. The buckets keep their contents, capped at
        the new bursts. Raises as :meth:`add` does (an absent key is a :class:`ConfigError`).
        """
        return self._run(self.core.update(api_key, requests_per_s, burst, tokens_per_s, token_burst,
                                          requests_per_minute, tokens_per_minute))

    def remove(self, api_key) -> TenantId:
        """Remove a tenant; returns the id it had (never given again). If it was the default tenant, there is none
        afterwards."""
        return self._run(self.core.remove(api_key))

    def get(self, api_key) -> TenantInfo:
        """The tenant, named by its key or its :class:`TenantId`, as the device holds it."""
        return self._run(self.core.get(api_key))

    def debit(self, api_key, tokens: int) -> None:
        """Take ``tokens`` (0..2³²−1) from the tenant's token bucket, saturating at 0 (e.g. the LLM tokens a
        response used beyond the request's cost). Queued; it applies within a few cycles without traffic."""
        return self._run(self._timed(self.core.command(api_key, tokens, refund=False)))

    def refund(self, api_key, tokens: int) -> None:
        """Give ``tokens`` (0..2³²−1) back to the tenant's token bucket, capped at its ``token_burst``."""
        return self._run(self._timed(self.core.command(api_key, tokens, refund=True)))

    def set_default(self, api_key) -> TenantId:
        """Make this tenant's buckets the ones unknown keys use under ``unknown_policy="default"``; returns its id."""
        return self._run(self.core.set_default(api_key))

    def configure(self, *, unknown_policy=None, cost_source=None, cost_fixed: int | None = None,
                  cost_scale: int | None = None, cost_scale_cl: int | None = None) -> None:
        """Set the limiter's policy registers; only the arguments given are written, after all are checked.

        Parameters
        ----------
        unknown_policy : UnknownPolicy or str
            For a request with no key or a key not in the table: ``"reject"`` (401), ``"default"`` (the default
            tenant's buckets) or ``"punt"`` (to the host).
        cost_source : CostSource or str
            ``"estimate"`` (the reset): the number in the token-estimate header (the parser's extra header slot
            0, ``x-token-estimate`` at reset) times ``cost_scale >> 16``, or, without it, the estimate from the
            body size, ``content_length·cost_scale_cl >> 16`` (a quarter token per byte at reset).
            ``"fixed"`` (``cost_fixed`` per request), ``"content_length"`` (``content_length·cost_scale >> 16``)
            or ``"extra"`` (slot 0's number times ``cost_scale >> 16``). A request without the chosen field costs
            ``cost_fixed``.
        cost_fixed : int
            Tokens per request, 0..2³²−1.
        cost_scale : int
            Tokens per unit of the field, 16.16 fixed point, 0..2³²−1 (reset 1.0).
        cost_scale_cl : int
            Tokens per body byte of the estimate's fallback, 16.16, 0..2³²−1 (reset 0x4000).
        """
        return self._run(self.core.configure(unknown_policy, cost_source, cost_fixed, cost_scale, cost_scale_cl))

    def set_fingerprint_key(self, poly: int, seed: int) -> None:
        """Fingerprint key text with the parser's ``fp_poly``/``fp_seed`` when they are not the reset values."""
        with self._offload._lock:
            self.core.set_fingerprint_key(poly, seed)

    def fingerprint(self, api_key) -> int:
        """The 64-bit fingerprint the driver uses for ``api_key``."""
        with self._offload._lock:
            return self.core.fp(api_key)

    @property
    def default(self) -> int | None:
        """The default tenant's key fingerprint, or None."""
        with self._offload._lock:
            return self.core.default_fp

    @property
    def capacity(self) -> int:
        """Tenant slots on the device."""
        return self.core.params.capacity

    @property
    def params(self) -> LimiterParams:
        """The device's limiter parameters."""
        return self.core.params

    @property
    def load_factor(self) -> float:
        """Tenants / slots."""
        with self._offload._lock:
            return self.core.placement.load_factor

    def slot(self, api_key):
        """The slot the driver placed ``api_key`` in, or None (no bus access)."""
        with self._offload._lock:
            return self.core.placement.lookup(self.core.fp(api_key))

    def __len__(self) -> int:
        with self._offload._lock:
            return len(self.core.placement)

    def __contains__(self, api_key) -> bool:
        with self._offload._lock:
            if isinstance(api_key, TenantId):
                return api_key in self.core._fp_of
            return self.core.fp(api_key) in self.core.placement

    def __repr__(self):
        return f"<wirespeed.Tenants {len(self)}/{self.capacity}>"


# -- clock ------------------------------------------------------------------------------------------------------------

#: Clock modes of :func:`wirespeed.open`: ``"wall"`` keeps the device clock on the host's monotonic clock,
#: ``"manual"`` leaves it to :meth:`Clock.step` and ``ns_per_cycle``.
CLOCK_MODES = ("wall", "manual")


def check_clock_mode(mode) -> str:
    if mode not in CLOCK_MODES:
        raise ConfigError("clock", mode, f"must be one of {list(CLOCK_MODES)}")
    return mode


class ClockCore:
    """The limiter clock's driver logic, free of I/O.

    With ``wall`` set, :meth:`discipline` keeps the device clock on the host's ``time.monotonic_ns()``, as a PTP
    servo would, but only ever forward: the limiter reads a ``now`` before a tenant's ``last`` as a full refill
    (``docs/limiter.md``). The first call fixes the offset between the two clocks (the device keeps its reading);
    each later call steps the device forward by however much it lags the host. A device whose own clock runs fast
    is left ahead, by at most its oscillator's error. :meth:`step` moves the offset too, so a manual step is kept.
    """

    def __init__(self, regs: Registers, wall: bool = False, host_ns=time.monotonic_ns, direct=None):
        self.regs = regs
        self.wall = wall
        self.host_ns = host_ns
        #: A transport's own access to the clock (``now()``, ``step(ns)``), used by :meth:`discipline` instead of
        #: its five register accesses: ``"software"``, where they were most of a verdict's time. None: registers.
        self.direct = direct
        #: host ns − device ns, fixed by the first :meth:`discipline`; None before.
        self._offset: int | None = None

    def now(self):
        return (yield from self.regs.read("limiter.clock_now"))

    def _step(self, ns):
        yield from self.regs.write("limiter.clock_step", ns & _U64)
        yield from self.regs.write("limiter.clock_ctrl",
                                   _pack(self.regs.regmap, "limiter.clock_ctrl", step=1))

    def step(self, ns):
        check_int("ns", ns, -_STEP_MAX + 1, _STEP_MAX - 1)
        yield from self._step(ns)
        if self._offset is not None:
            self._offset -= ns

    def discipline(self):
        """In wall mode, step the device clock forward to the host's; returns the step in ns (0: none)."""
        if not self.wall:
            return 0
        if self.direct is not None:
            return self.discipline_direct()
        lag = self._lag((yield from self.now()))
        if lag:
            yield from self._step(lag)
        return lag

    def discipline_direct(self) -> int:
        """:meth:`discipline` on a ``direct`` clock, as a plain call."""
        if not self.wall:
            return 0
        lag = self._lag(self.direct.now())
        if lag:
            self.direct.step(lag)
        return lag

    def _lag(self, now: int) -> int:
        """How far to step a device clock that reads ``now`` (0: not behind); the first call fixes the offset."""
        host = self.host_ns()
        if self._offset is None:
            self._offset = host - now
            return 0
        return min(max(0, host - self._offset - now), _STEP_MAX - 1)

    def ns_per_cycle(self):
        raw = yield from self.regs.read("limiter.clock_ns_per_cycle")
        return Fraction(raw, _NS_PER_CYCLE_ONE)

    def set_ns_per_cycle(self, value):
        limit = "must be a number of ns in [0, 2**32), stored as 32.32 fixed point"
        if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
            raise ConfigError("ns_per_cycle", value, limit)
        try:
            raw = round(Fraction(value) * _NS_PER_CYCLE_ONE)
        except (ValueError, OverflowError):                 # nan, inf
            raise ConfigError("ns_per_cycle", value, limit) from None
        if not 0 <= raw <= _U64:
            raise ConfigError("ns_per_cycle", value, limit)
        yield from self.regs.write("limiter.clock_ns_per_cycle", raw)


class Clock:
    """The limiter's free-running nanosecond clock: ``Offload.clock``.

    It advances by ``ns_per_cycle`` every core cycle (reset: 10⁹ / clock_hz). With ``wirespeed.open(uri,
    clock="wall")``, the default, the driver also steps it forward to the host's monotonic clock before each
    classification and each tenant command, so rates are per real second on every transport, simulated ones
    included. With ``clock="manual"`` only :meth:`step` and ``ns_per_cycle`` move it: tests set ``ns_per_cycle = 0``
    and step time so that decisions see exactly the ``now`` they expect. :meth:`step` works in both modes.
    """

    def __init__(self, offload, core: ClockCore):
        self._offload = offload
        self.core = core

    def now(self) -> int:
        """The clock, in ns (64 bits, wrapping)."""
        return self._offload._run(self.core.now())

    @property
    def mode(self) -> str:
        """``"wall"`` or ``"manual"`` (see the class)."""
        return "wall" if self.core.wall else "manual"

    def step(self, ns: int) -> None:
        """Add ``ns`` to the clock, forward or backward (|ns| < 2⁶³). In wall mode the step is kept: the clock
        stays ``ns`` off the host's from then on."""
        return self._offload._run(self.core.step(ns))

    def set_ns_per_cycle(self, value) -> None:
        """Set :attr:`ns_per_cycle` (a method, so that ``AsyncOffload`` callers can await it)."""
        return self._offload._run(self.core.set_ns_per_cycle(value))

    @property
    def ns_per_cycle(self) -> Fraction:
        """Nanoseconds added per core cycle, exactly as stored (32.32 fixed point)."""
        return self._offload._run(self.core.ns_per_cycle())

    @ns_per_cycle.setter
    def ns_per_cycle(self, value) -> None:
        self._offload._run(self.core.set_ns_per_cycle(value))

    def __repr__(self):
        return "<wirespeed.Clock>"

"""The limiter's model (wirespeed.host.models.limiter.LimiterModel) against docs/limiter.md, rule by rule.

The centre is a differential test: an ideal token bucket written here in rational arithmetic (whole tokens,
``min(burst, tokens + Δt·rate/10⁹)`` with the plan's per-second rate as a Fraction, no clamp, no fixed point) must
make the same decision as the model on every one of a million seeded requests, and hold exactly the model's bucket
units divided by the unit (6·10¹⁰ / 2^tick_log2 per token: rates are whole numbers per minute). With a time quantum
(``tick_log2`` = 9) the ideal bucket sees the tick-quantized times, and must still agree to the unit.
"""

import copy
import random
import time
from fractions import Fraction

import pytest
from amaranth.lib import data
from hypothesis import given, settings
from hypothesis import strategies as st

from wirespeed.hdl.limiter.layouts import (COST_BURST_MAX, COST_MAX, COST_RATE_MAX, COST_SCALE_CL_RESET, DT_MAX_NS,
                                           NANO, PLANS, REQ_BURST_MAX, REQ_RATE_MAX, TOKEN_UNITS, CostSource,
                                           Decision, LimiterParams, TableOp, UnknownPolicy)
from wirespeed.hdl.limiter.layouts import LimitVerdict as LimitVerdictLayout
from wirespeed.hdl.parser.layouts import KeySource
from wirespeed.host.errors import ConfigError
from wirespeed.host.models.limiter import (U64, LimiterConfig, LimiterModel, LimitVerdict, Plan, TableResult,
                                           TenantState, per_minute, wait_ticks)
from wirespeed.host.errors import TableFull
from wirespeed.host.placement import TenantPlacement
from wirespeed.host.models.parser import Descriptor

SEED = 20251127
SEEDED = settings(derandomize=True, deadline=None, max_examples=300)
ALLOW, REJECT, PUNT = Decision.ALLOW, Decision.REJECT, Decision.PUNT
WRITE, MOVE, READ, SET_DEFAULT = TableOp.WRITE, TableOp.MOVE, TableOp.READ, TableOp.SET_DEFAULT
FIXED = CostSource.FIXED
BY_LENGTH = CostSource.CONTENT_LENGTH
BY_EXTRA = CostSource.EXTRA
ESTIMATE = CostSource.ESTIMATE
#: cost = content_length: the differential test draws costs through the descriptor.
COST_IS_LENGTH = LimiterConfig(cost_source=BY_LENGTH, cost_scale=1 << 16)
P64 = LimiterParams(capacity=64)
#: One token (or request) in bucket units at tick_log2 = 0: a bucket gains its per-minute rate in units per ns.
UNIT = P64.unit
assert UNIT == TOKEN_UNITS == 60 * NANO


def request(fp=None, content_length=None, source=KeySource.AUTHORIZATION) -> Descriptor:
    """A descriptor with key ``fp`` (None: no key) and a content-length (None: absent)."""
    return Descriptor(key_source=KeySource.NONE if fp is None else source, key_fp=fp or 0,
                      cl_present=content_length is not None, content_length=content_length or 0)


class Table:
    """A LimiterModel driven the way the driver drives it: slots from a TenantPlacement, moves copy then invalidate."""

    def __init__(self, params=P64, config=LimiterConfig()):
        self.model = LimiterModel(params, config=config)
        self.placement = TenantPlacement(params.capacity)

    def add(self, fp: int, plan: int, now_ns: int) -> int:
        slot, moves = self.placement.insert(fp)
        for mover, old, new in moves:
            self.model.move(old, new)                   # one commit: copy and invalidate
            assert self.model.lookup(mover) == new and not self.model.state(old).valid
        self.model.write_tenant(slot, fp, plan, True, now_ns)
        return slot

    def remove(self, fp: int, now_ns: int):
        self.model.write_tenant(self.placement.remove(fp), fp, 0, False, now_ns)


def one_tenant(plan: Plan, config=LimiterConfig(), fp=0x0123456789ABCDEF, now_ns=0, params=P64):
    table = Table(params, config)
    table.model.write_plan(0, plan)
    slot = table.add(fp, 0, now_ns)
    return table.model, slot, fp


def snapshot(model: LimiterModel):
    """Everything a table op could change, read from a copy (reads count as table ops)."""
    m = copy.deepcopy(model)
    return ([m.state(s) for s in range(m.capacity)], m.default_slot, m.allow, m.reject_429, m.reject_401, m.punt,
            m.cmd_applied, m.cmd_unknown)


def log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    """An integer in lo..hi, spread evenly over the orders of magnitude."""
    return max(lo, min(hi, int(2 ** rng.uniform(lo.bit_length() - 1, hi.bit_length()))))


def max_burst(per_minute: int, limit: int, params=P64) -> int:
    """The largest burst that refills from empty in under 2⁴⁸ ns at ``per_minute`` tokens a minute
    (``burst·60·10⁹ < 2⁴⁸·per_minute``) and within ``params``' elapsed-time clamp."""
    return min(limit, ((1 << 48) * per_minute - 1) // TOKEN_UNITS, params.dt_max * per_minute // params.unit)


def random_plan(rng: random.Random, req_per_minute=None, cost_per_minute=None, params=P64) -> Plan:
    """A plan with per-minute rates drawn log-uniformly (so most per-second rates are fractions) and bursts up to the
    largest that refill in time."""
    req_per_minute = req_per_minute or log_uniform(rng, 1, REQ_RATE_MAX)
    cost_per_minute = cost_per_minute or log_uniform(rng, 1, COST_RATE_MAX)
    return Plan(Fraction(req_per_minute, 60), log_uniform(rng, 1, max_burst(req_per_minute, REQ_BURST_MAX, params)),
                Fraction(cost_per_minute, 60),
                log_uniform(rng, 1, max_burst(cost_per_minute, COST_BURST_MAX, params)))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def key_for(params: LimiterParams, b0: int, b1: int, ident: int) -> int:
    """A fingerprint with candidate buckets b0 (half 0) and b1 (half 1); ``ident`` sits in bits no candidate reads."""
    return (ident << 48) | (b1 << 32) | b0


def slot_of(params: LimiterParams, half: int, bucket: int, way: int) -> int:
    return half * params.capacity // 2 + bucket * 4 + way


# -- the ideal bucket -------------------------------------------------------------------------------------------------

class IdealTenant:
    """Two token buckets in whole tokens, in exact rational arithmetic, refilled over the elapsed time at the plan's
    per-second rates (Fractions: 1/3 per second is 1/3). A bucket whose rate is None is unlimited: it always suffices
    and stays at 0."""

    def __init__(self, plan: Plan, now_ns: int):
        self.req_rate = None if plan.req_rate is None else Fraction(plan.req_rate)
        self.cost_rate = None if plan.cost_rate is None else Fraction(plan.cost_rate)
        self.req_burst, self.cost_burst = Fraction(plan.req_burst or 0), Fraction(plan.cost_burst or 0)
        self.req, self.cost = self.req_burst, self.cost_burst
        self.last = now_ns
        # Tokens per ns, computed once: the refill is one multiply and one add of Fractions.
        self._req_per_ns = None if self.req_rate is None else self.req_rate / NANO
        self._cost_per_ns = None if self.cost_rate is None else self.cost_rate / NANO

    def refill(self, now_ns: int):
        dt = now_ns - self.last
        self.last = now_ns
        if self._req_per_ns is not None:
            self.req = min(self.req_burst, self.req + dt * self._req_per_ns)
        if self._cost_per_ns is not None:
            self.cost = min(self.cost_burst, self.cost + dt * self._cost_per_ns)

    def decide(self, cost: int, now_ns: int) -> bool:
        self.refill(now_ns)
        if (self.req_rate is None or self.req >= 1) and (self.cost_rate is None or self.cost >= cost):
            if self.req_rate is not None:
                self.req -= 1
            if self.cost_rate is not None:
                self.cost -= cost
            return True
        return False

    def wait_ns(self, cost: int) -> Fraction:
        """After a refused :meth:`decide`: the exact time in ns until both buckets suffice (0 for a bucket that
        already does)."""
        wait = Fraction(0)
        if self.req_rate is not None and self.req < 1:
            wait = max(wait, (1 - self.req) * NANO / self.req_rate)
        if self.cost_rate is not None and self.cost < cost:
            wait = max(wait, (cost - self.cost) * NANO / self.cost_rate)
        return wait


SEGMENT = 20_000


@pytest.mark.parametrize("tick_log2,decisions", [(0, 1_000_000), (9, 200_000)])
def test_model_matches_ideal_bucket(tick_log2, decisions):
    """Segments of 20 000 requests over 6 tenants. Each segment draws new plans around one random rate scale, so
    that allows and rejects mix, and replaces the tenants (new tenants start full). Gaps are random, with 5 % back to
    back and 0.02 % beyond the 2⁴⁸-ns clamp; costs range up to one more than the cost burst. The ideal bucket sees
    each time rounded down to its tick, ``(t >> q) << q``."""
    seed = SEED + tick_log2
    rng = random.Random(seed)
    params = LimiterParams(capacity=64, tick_log2=tick_log2)
    unit = params.unit
    table = Table(params, COST_IS_LENGTH)
    model = table.model
    now = 0
    allowed = rejected = 0
    tenants_prev = []
    start = time.perf_counter()
    for segment in range(decisions // SEGMENT):
        scale = log_uniform(rng, 1, REQ_RATE_MAX)                  # requests per minute
        tenants = []
        tick_now = (now >> tick_log2) << tick_log2
        for i in range(6):
            req_per_minute = max(1, min(REQ_RATE_MAX, int(scale * 2 ** rng.uniform(-2, 2))))
            plan = random_plan(rng, req_per_minute=req_per_minute, params=params)
            model.write_plan(i, plan)
            fp = rng.getrandbits(64)
            if segment:
                table.remove(tenants_prev[i][0], now)
            table.add(fp, i, now)
            per_request = plan.cost_rate / plan.req_rate
            menu = sorted({min(COST_MAX, int(per_request * rng.uniform(0, 2))) for _ in range(12)}
                          | {0, plan.cost_burst, min(COST_MAX, plan.cost_burst + 1)})
            tenants.append((fp, IdealTenant(plan, tick_now), [(c, request(fp, c)) for c in menu],
                            max(1, TOKEN_UNITS // plan.req_per_minute // 6)))
        tenants_prev = tenants
        for _ in range(SEGMENT):
            fp, ideal, menu, mean_gap = tenants[rng.randrange(6)]
            r = rng.random()
            if r < 0.05:
                gap = 0
            elif r < 0.0502:
                gap = rng.randrange(DT_MAX_NS - 2, 1 << 49)
            else:
                gap = rng.randrange(0, 2 * mean_gap + 1)
            now += gap
            cost, desc = menu[rng.randrange(len(menu))]
            verdict = model.decide(desc, now)
            ok = ideal.decide(cost, (now >> tick_log2) << tick_log2)
            assert (verdict.decision is ALLOW) == ok, f"seed={seed} segment {segment}: {verdict} vs ideal {ok}"
            state = model.state(verdict.tenant)
            assert state.req_tokens == ideal.req * unit and state.cost_tokens == ideal.cost * unit, (
                f"seed={seed} segment {segment}: model {state} vs ideal req={ideal.req} cost={ideal.cost}")
            if ok:
                allowed += 1
            else:
                rejected += 1
    elapsed = time.perf_counter() - start
    assert now < 1 << 64
    assert allowed + rejected == decisions == model.allow + model.reject_429
    print(f"\nseed={seed} tick_log2={tick_log2}: {decisions} decisions identical to the ideal ({allowed} allowed, "
          f"{rejected} rejected) in {elapsed:.1f} s with the ideal")
    assert allowed > decisions // 10 and rejected > decisions // 10


def test_model_decision_rate_is_reported():
    model, slot, fp = one_tenant(Plan(1000, 100, 10**6, 10**6), LimiterConfig(cost_source=FIXED, cost_fixed=3))
    desc = request(fp)
    n = 200_000
    start = time.perf_counter()
    for i in range(n):
        model.decide(desc, i * 997)
    elapsed = time.perf_counter() - start
    print(f"\nmodel alone: {n / elapsed:,.0f} decisions/s")


# -- decide: allow, reject, refill ------------------------------------------------------------------------------------

def test_new_tenant_starts_full_and_back_to_back_requests_see_each_other():
    model, slot, fp = one_tenant(Plan(req_rate=1, req_burst=3, cost_rate=1, cost_burst=10),
                                 LimiterConfig(cost_source=FIXED, cost_fixed=3), now_ns=500)
    state = model.state(slot)
    assert (state.req_tokens, state.cost_tokens, state.last_ns) == (3 * UNIT, 10 * UNIT, 500)
    verdicts = [model.decide(request(fp), 500) for _ in range(4)]
    assert [v.decision for v in verdicts] == [ALLOW, ALLOW, ALLOW, REJECT]
    assert [v.status for v in verdicts] == [200, 200, 200, 429]
    assert all(v.tenant_found and v.tenant == slot and v.cost == 3 for v in verdicts)
    assert [v.retry_after_ns for v in verdicts] == [0, 0, 0, 2 * NANO]   # 1 s for a request, 2 s for 2 units
    state = model.state(slot)
    assert (state.req_tokens, state.cost_tokens, state.allowed, state.rejected) == (0, UNIT, 3, 1)


def test_reject_keeps_refilled_tokens_and_moves_last():
    model, slot, fp = one_tenant(Plan(req_rate=1000, req_burst=1, cost_rate=1, cost_burst=1))
    assert model.decide(request(fp), 0).decision is ALLOW
    v = model.decide(request(fp), 400_000)                  # 0.4 requests back: 1000/s is 60 000 units per ns
    assert v.status == 429 and model.state(slot).req_tokens == 400_000 * 60_000 == 2 * UNIT // 5
    assert model.state(slot).last_ns == 400_000
    assert v.retry_after_ns in (600_000, 600_001)


def test_ticks_quantize_time_units_and_last():
    """q = 9: a tick is 512 ns, a token 117 187 500 units (6·10¹⁰ / 512), and a bucket gains its per-minute rate in
    units per tick: 1000/s is 60 000 units a tick, 10/s 600."""
    params = LimiterParams(capacity=64, tick_log2=9)
    unit = 117_187_500
    assert params.unit == unit
    model, slot, fp = one_tenant(Plan(req_rate=1000, req_burst=2, cost_rate=10, cost_burst=5),
                                 LimiterConfig(cost_source=FIXED, cost_fixed=1), now_ns=1000, params=params)
    state = model.state(slot)
    assert (state.req_tokens, state.cost_tokens, state.last_ns) == (2 * unit, 5 * unit, 512)   # tick 1
    assert model.decide(request(fp), 1023).decision is ALLOW                  # still tick 1: no refill
    assert (model.state(slot).req_tokens, model.state(slot).last_ns) == (unit, 512)
    assert model.decide(request(fp), 1024 + 511).decision is ALLOW            # tick 2: one tick of refill
    state = model.state(slot)
    assert (state.req_tokens, state.cost_tokens, state.last_ns) == (60_000, 3 * unit + 600, 1024)
    v = model.decide(request(fp), 1024 + 100)
    # The request bucket is short by unit − 60 000; 60 000 units per tick: 1953 ticks (1952.125), counted from tick 2.
    deficit = unit - 60_000
    wait = wait_ticks(deficit, Plan(1000, 1, 1, 1).inv_req_rate)
    assert wait == ceil_div(deficit, 60_000) == 1953
    assert v.status == 429 and v.retry_after_ns == (wait << 9) - 100
    assert model.decide(request(fp), 1024 + 100 + v.retry_after_ns).decision is ALLOW


def test_refill_clamps_elapsed_time_and_caps_at_burst():
    plan = Plan(req_rate=1, req_burst=281_474, cost_rate=1, cost_burst=281_474)   # 2.8·10¹⁴ ns to refill
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_source=FIXED, cost_fixed=281_474))
    assert model.decide(request(fp), 0).decision is ALLOW              # cost bucket now empty
    v = model.decide(request(fp), DT_MAX_NS + 10**9)
    assert v.decision is ALLOW                                          # the clamp still refills fully
    assert model.state(slot).cost_tokens == 0
    # Time going backwards is a 64-bit wrap: a full refill (documented choice).
    assert model.decide(request(fp), 5).decision is ALLOW
    state = model.state(slot)
    assert (state.req_tokens, state.cost_tokens, state.last_ns) == (281_473 * UNIT, 0, 5)


@pytest.mark.parametrize("tick_log2", [0, 9])
def test_refill_clamp_in_ticks_and_wrap(tick_log2):
    """The elapsed time is ``(t − last) mod 2^(64−q)`` ticks, clamped to 2^(48−q)−1. A raw plan whose cap exceeds the
    clamp (rate 1 unit per tick) shows the refill tick for tick."""
    q = tick_log2
    params = LimiterParams(capacity=64, tick_log2=q)
    dt_max = params.dt_max
    model = LimiterModel(params)
    big = (1 << params.cost_bits) - 1
    assert big > dt_max
    model.write_plan_regs(0, 1, (1 << params.req_bits) - 1, 1, big, 0, 0)
    fp = 0x0123456789ABCDEF
    slot = (fp & 7) * 4                                                  # half 0, its bucket, way 0
    model.write_tenant(slot, fp, 0, True, 0)

    def cost_after(now_ns):
        while model.debit(fp, (1 << 32) - 1) and model.state(slot).cost_tokens:
            pass
        assert model.decide(request(fp), now_ns).decision is ALLOW        # cost 0, request bucket full
        return model.state(slot).cost_tokens

    t = (dt_max + 5) << q
    assert cost_after(t) == dt_max                                       # clamped
    t += ((dt_max - 5) << q) + (1 << q) - 1                              # dt_max − 5 ticks, at the end of a tick
    assert cost_after(t) == dt_max - 5
    assert cost_after(t - (1 << q)) == dt_max                            # backwards: the wrap is huge, clamped
    assert cost_after(U64) == dt_max
    assert cost_after(3 << q) == 4                                       # from tick 2^(64−q)−1 to 3: 4 ticks
    assert model.state(slot).last_ns == 3 << q


def test_the_slowest_valid_bucket_refills_fully_at_the_clamp():
    """The valid plan closest to the 2⁴⁸-ns rule needs 2⁴⁸ − 58.42 ns from empty: the clamp at 2⁴⁸ − 1 suffices,
    59 ns less would not. (With bursts up to 2²⁸ − 1 and per-minute rates, 27 695/min with a burst of 129 924 158 is
    the closest of all valid plans; it was 13 869/s with 3 903 776 452, 6.34 ns short, before the units changed.)"""
    plan = Plan.per_minute(60, 1, 27_695, 129_924_158)
    assert (1 << 48) - 59 < plan.cost_burst * TOKEN_UNITS / plan.cost_per_minute < (1 << 48) - 58
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_source=FIXED, cost_fixed=plan.cost_burst))
    model.debit(fp, plan.cost_burst)
    short = copy.deepcopy(model)
    assert model.decide(request(fp), 1 << 60).decision is ALLOW
    assert short.decide(request(fp), (1 << 48) - 59).status == 429


def test_cost_above_the_burst_is_never_allowed():
    plan = Plan(10, 10, 10, 10)
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_source=FIXED, cost_fixed=11))
    for t in (0, 10**12, 10**15):
        v = model.decide(request(fp), t)
        # Short by 1 token at 10/s (600/min), a wait that cannot work: the specification gives 429 and the formula's
        # wait.
        assert v.status == 429 and v.retry_after_ns == wait_ticks(UNIT, plan.inv_cost_rate) == 100_000_000


# -- fractional and per-minute rates ----------------------------------------------------------------------------------

def fractional_plans(rng: random.Random):
    """Plans whose per-second rates are not whole (0.5/s, 1/3 s, 1.5/s, 30/min, 7/min, 100 000 tokens a minute), two
    with an unlimited bucket, and four with random per-minute rates up to 600 requests and 10⁶ tokens a minute."""
    plans = [
        Plan(0.5, 3, Fraction(100_000, 60), 4000),              # 30/min; 100 000 TPM
        Plan(Fraction(1, 3), 2, 1.5, 10),                       # 20/min; 90/min
        Plan(1 / 3, 1, Fraction(7, 60), 5),                     # a float third is 20/min; 7 tokens a minute
        Plan(1.5, 4, 0.5, 3),
        Plan.per_minute(30, 30, 100_000, 100_000),
        Plan.per_minute(7, 2, 1, 2),                            # 7/min; one token a minute
        Plan(None, None, Fraction(7, 60), 20),                  # unlimited requests
        Plan(Fraction(1, 2), 5, None, None),                    # unlimited cost
    ]
    for _ in range(4):
        req, cost = log_uniform(rng, 1, 600), log_uniform(rng, 1, 10**6)
        plans.append(Plan(Fraction(req, 60), rng.randint(1, 20), Fraction(cost, 60),
                          log_uniform(rng, 1, max_burst(cost, 10**6))))
    return plans


@pytest.mark.parametrize("tick_log2", [0, 9])
def test_fractional_and_per_minute_rates_match_the_exact_buckets_over_1e5_seconds(tick_log2):
    """20 000 decisions spread over more than 10⁵ s of model time (runs of back-to-back requests at one tenant, gaps
    up to 50 s) on the plans of :func:`fractional_plans`. Every decision equals the ideal bucket's (Fraction
    arithmetic at the per-second rate, on the tick-quantized time), both buckets hold exactly the ideal's tokens in
    units, and every ``retry_after_ns`` is the ideal wait rounded up to the start of a tick: exactly, except where
    ``(deficit − 1)·rate ≥ 2⁶⁴`` allows one tick more."""
    q = tick_log2
    seed = SEED + 100 + q
    rng = random.Random(seed)
    params = LimiterParams(capacity=64, tick_log2=q)
    unit = params.unit
    table = Table(params, COST_IS_LENGTH)
    model = table.model
    plans = fractional_plans(rng)
    assert sum(isinstance(p.req_rate, Fraction) for p in plans) >= 6
    tenants = []
    for i, plan in enumerate(plans):
        model.write_plan(i, plan)
        fp = rng.getrandbits(64)
        table.add(fp, i, 0)
        if plan.cost_rate is None:
            menu = {0, 1, 10**6, COST_MAX}
        else:
            per_request = plan.cost_rate / (plan.req_rate or 1)
            menu = ({min(COST_MAX, int(per_request * rng.uniform(0, 2))) for _ in range(8)}
                    | {0, 1, plan.cost_burst, plan.cost_burst + 1})
        tenants.append((fp, plan, IdealTenant(plan, 0), [(c, request(fp, c)) for c in sorted(menu)]))
    now = 0
    allowed = rejected = late = 0
    current = tenants[0]
    for n in range(20_000):
        r = rng.random()
        if r < 0.4:
            gap = 0 if rng.random() < 0.3 else rng.randrange(0, 2 * NANO)       # the same tenant again, soon
        else:
            current = tenants[rng.randrange(len(tenants))]
            gap = rng.randrange(0, 2 * NANO) if r < 0.75 else rng.randrange(0, 50 * NANO)
        now += gap
        fp, plan, ideal, menu = current
        cost, desc = menu[rng.randrange(len(menu))]
        tick_ns = (now >> q) << q
        verdict = model.decide(desc, now)
        ok = ideal.decide(cost, tick_ns)
        where = f"seed={seed} decision {n} at {now} ns: {plan}, cost {cost}"
        assert (verdict.decision is ALLOW) == ok, f"{where}: {verdict}"
        state = model.state(verdict.tenant)
        assert (state.req_tokens, state.cost_tokens) == (ideal.req * unit, ideal.cost * unit), where
        if ok:
            allowed += 1
            assert verdict.retry_after_ns == 0
            continue
        rejected += 1
        wait = ideal.wait_ns(cost)                                     # ns from the start of this tick
        ticks = -(-wait // (1 << q))
        expected = tick_ns + (ticks << q) - now
        may_be_late = any((deficit * unit - 1) * rpm >= 1 << 64 for deficit, rpm in (
            (1 - ideal.req, plan.req_per_minute), (cost - ideal.cost, plan.cost_per_minute))
            if rpm is not None and deficit > 0)
        if verdict.retry_after_ns != expected:
            assert may_be_late and verdict.retry_after_ns == expected + (1 << q), f"{where}: {verdict} vs {expected}"
            late += 1
    assert now > 10**5 * NANO
    assert model.allow == allowed and model.reject_429 == rejected
    assert allowed > 2000 and rejected > 2000
    print(f"\nseed={seed} tick_log2={q}: 20000 decisions over {now / NANO:,.0f} s identical to the exact buckets "
          f"({allowed} allowed, {rejected} rejected, {late} waits a tick late)")


@pytest.mark.parametrize("tick_log2", [0, 9])
@pytest.mark.parametrize("plan", [Plan.per_minute(30, 30, None, None), Plan(0.5, 30, None, None),
                                  Plan(Fraction(1, 2), 30, 1000, 1000)], ids=["per-minute", "float", "fraction"])
def test_30_a_minute_with_a_burst_of_30(plan, tick_log2):
    """30 requests at once, then the 31st waits exactly 2 s; 2 s later exactly one more is allowed."""
    params = LimiterParams(capacity=64, tick_log2=tick_log2)
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_source=FIXED, cost_fixed=1), params=params)
    t0 = 512 * 1000
    for _ in range(30):
        assert model.decide(request(fp), t0).decision is ALLOW
    for t in (t0, t0 + 2 * NANO):
        v = model.decide(request(fp), t)
        assert (v.status, v.retry_after_ns) == (429, 2 * NANO)
        assert copy.deepcopy(model).decide(request(fp), t + 2 * NANO - 1).status == 429
        assert model.decide(request(fp), t + 2 * NANO).decision is ALLOW
    assert model.state(slot).allowed == 32


# -- unlimited buckets ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tick_log2", [0, 9])
def test_unlimited_request_bucket(tick_log2):
    """``Plan(None, None, 10, 100)``: requests are never what rejects, the request bucket stays 0, and a wait is the
    cost bucket's alone."""
    q = tick_log2
    params = LimiterParams(capacity=64, tick_log2=q)
    unit = params.unit
    plan = Plan(None, None, 10, 100)
    assert (plan.req_rate, plan.req_burst, plan.req_per_minute) == (None, None, None)
    assert plan.registers(params) == dict(req_rate=0, req_cap=0, cost_rate=600, cost_cap=100 * unit, inv_req=0,
                                          inv_cost=U64 // 600)
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_source=FIXED, cost_fixed=0), params=params)
    for i in range(3000):                                    # far more than any request bucket at one instant
        assert model.decide(request(fp), 1000 + (i & 1)).decision is ALLOW
    assert (model.state(slot).req_tokens, model.state(slot).cost_tokens) == (0, 100 * unit)
    model.config = LimiterConfig(cost_source=FIXED, cost_fixed=1)
    t = (5 << 40) + 3
    for _ in range(100):
        assert model.decide(request(fp), t).decision is ALLOW
    v = model.decide(request(fp), t)
    # Short by one token at 600 units a tick; the request bucket never waits.
    assert v.status == 429 and v.retry_after_ns == (ceil_div(unit, 600) << q) - (t & ((1 << q) - 1))
    assert v.retry_after_ns == (10**8 if q == 0 else 195_313 * 512 - 3)
    assert model.state(slot).req_tokens == 0 and model.state(slot).cost_tokens == 0
    assert model.refund(fp, 7) and model.state(slot).cost_tokens == 7 * unit
    assert model.debit(fp, 2) and model.state(slot).cost_tokens == 5 * unit
    assert (model.allow, model.reject_429) == (3100, 1)


@pytest.mark.parametrize("tick_log2", [0, 9])
def test_unlimited_cost_bucket(tick_log2):
    """``Plan(5, 5, None, None)``: no cost rejects, not even COST_MAX; the cost bucket stays 0 through decisions,
    debits and refunds; a wait is the request bucket's alone."""
    q = tick_log2
    params = LimiterParams(capacity=64, tick_log2=q)
    unit = params.unit
    plan = Plan(5, 5, None, None)
    assert plan.registers(params) == dict(req_rate=300, req_cap=5 * unit, cost_rate=0, cost_cap=0,
                                          inv_req=U64 // 300, inv_cost=0)
    model, slot, fp = one_tenant(plan, COST_IS_LENGTH, params=params)
    t = 1 << 30
    for cost in (COST_MAX, 0, 1, 10**9, COST_MAX):
        v = model.decide(request(fp, cost), t)
        assert (v.decision, v.cost) == (ALLOW, cost)
    v = model.decide(request(fp, COST_MAX), t)
    # Short by one request at 5/s: 0.2 s. A limited cost bucket would have saturated the wait.
    assert v.status == 429 and v.retry_after_ns == (ceil_div(unit, 300) << q) - (t & ((1 << q) - 1)) == 2 * 10**8
    assert model.state(slot).cost_tokens == 0
    for amount, refund in ((100, False), (100, True), ((1 << 32) - 1, True), ((1 << 32) - 1, False)):
        assert model.command(fp, amount, refund) and model.state(slot).cost_tokens == 0
    assert model.decide(request(fp, U64), t + 10**12).decision is ALLOW          # any content length: COST_MAX
    assert model.state(slot).cost_tokens == 0 and model.state(slot).req_tokens == 4 * unit


def test_unlimited_plan_always_allows():
    rng = random.Random(SEED)
    plan = Plan(None, None, None, None)
    assert plan.registers(P64) == dict(req_rate=0, req_cap=0, cost_rate=0, cost_cap=0, inv_req=0, inv_cost=0)
    assert plan.inv_req_rate == plan.inv_cost_rate == 0
    for q in (0, 9):
        params = LimiterParams(capacity=64, tick_log2=q)
        model, slot, fp = one_tenant(plan, COST_IS_LENGTH, params=params)
        now = 0
        for _ in range(2000):
            now = rng.choice([now, now + rng.randrange(1000), rng.randrange(1 << 64)])
            cost = rng.choice([0, 1, rng.randrange(1 << 32), COST_MAX])
            assert model.decide(request(fp, cost), now) == LimitVerdict(ALLOW, 200, True, slot, cost, 0)
        state = model.state(slot)
        assert (state.req_tokens, state.cost_tokens, state.allowed, state.rejected) == (0, 0, 2000, 0)
        assert model.debit(fp, 5) and model.refund(fp, 5) and model.state(slot).cost_tokens == 0


@pytest.mark.parametrize("args,field", [
    ((None, 3, 10, 100), "req_burst"), ((1, None, 10, 100), "req_burst"),
    ((10, 10, None, 100), "cost_burst"), ((10, 10, 1, None), "cost_burst"),
    ((None, 0, 10, 100), "req_burst"), ((10, 10, None, 0), "cost_burst"),
])
def test_unlimited_needs_no_burst_and_limited_needs_one(args, field):
    with pytest.raises(ConfigError) as info:
        Plan(*args)
    assert info.value.field == field and field in str(info.value)


# -- plan normalisation -----------------------------------------------------------------------------------------------

def test_plan_rates_are_normalised():
    a = Plan(0.5, 1, 1e6, 10**6)
    b = Plan(Fraction(1, 2), 1, 1_000_000, 10**6)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a == Plan.per_minute(30, 1, 60_000_000, 10**6) == Plan(Fraction(30, 60), 1, Fraction(6 * 10**7, 60), 10**6)
    assert type(a.req_rate) is Fraction and a.req_rate == Fraction(1, 2)
    assert type(a.cost_rate) is int and a.cost_rate == 10**6
    assert (a.req_per_minute, a.cost_per_minute) == (30, 60_000_000)
    whole = Plan(2.0, 1, Fraction(6, 2), 1)
    assert (type(whole.req_rate), whole.req_rate, type(whole.cost_rate), whole.cost_rate) == (int, 2, int, 3)
    # 0.01/s is 0.6 a minute: not whole, refused rather than rounded.
    with pytest.raises(ConfigError) as info:
        Plan(0.01, 1, 10, 10)
    assert info.value.field == "req_rate" and "req_rate" in str(info.value)
    with pytest.raises(ConfigError) as info:
        Plan(1, 1, 0.01, 10)
    assert info.value.field == "cost_rate"
    # A float third (0.333…) is 20 a minute, and the same plan as the exact third.
    third = Plan(1 / 3, 1, 1 / 3, 1)
    assert (third.req_per_minute, third.cost_per_minute) == (20, 20)
    assert third.req_rate == Fraction(1, 3) and third == Plan(Fraction(1, 3), 1, Fraction(1, 3), 1)
    assert Plan(Fraction(7, 60), 1, 1, 1) == Plan.per_minute(7, 1, 60, 1)
    assert Plan(1.5, 1, 1, 1).req_per_minute == 90 and Plan(1.5, 1, 1, 1).req_rate == Fraction(3, 2)
    assert Plan(None, None, 1, 1) == Plan.per_minute(None, None, 60, 1)
    assert Plan(None, None, 1, 1) != Plan(1, 1, 1, 1)


@pytest.mark.parametrize("rate,minute", [
    (Fraction(7, 60), 7), (0.5, 30), (1.5, 90), (1 / 3, 20), (2, 120), (1e6, 60_000_000),
    (Fraction(REQ_RATE_MAX, 60), REQ_RATE_MAX), (Fraction(1, 60), 1),
])
def test_per_minute_accepts_whole_numbers_per_minute(rate, minute):
    assert per_minute("req_rate", rate, REQ_RATE_MAX) == minute


@pytest.mark.parametrize("rate", [True, False, "30", None, float("nan"), float("inf"), float("-inf"), 0, -1, 0.01,
                                  Fraction(1, 120), Fraction(REQ_RATE_MAX + 1, 60), 1e300])
def test_per_minute_refuses_with_the_field(rate):
    with pytest.raises(ConfigError) as info:
        per_minute("req_rate", rate, REQ_RATE_MAX)
    assert info.value.field == "req_rate"


@pytest.mark.parametrize("bad", [True, "30", float("nan"), float("inf")])
def test_plan_per_minute_refuses_non_integers_with_the_field(bad):
    with pytest.raises(ConfigError) as info:
        Plan.per_minute(bad, 1, 60, 1)
    assert info.value.field == "req_rate"


# -- cost source ESTIMATE ---------------------------------------------------------------------------------------------

def numbered(value, content_length=None, numeric=True, fp=1) -> Descriptor:
    """A descriptor with key ``fp`` whose extra header slot 0 holds ``value`` (a number when ``numeric``), with a
    content-length (None: absent)."""
    return Descriptor(key_source=KeySource.AUTHORIZATION, key_fp=fp, extra_numeric=numeric, extra_value=value,
                      cl_present=content_length is not None, content_length=content_length or 0)


def estimate(**kwargs) -> LimiterConfig:
    return LimiterConfig(cost_source=ESTIMATE, **kwargs)


@pytest.mark.parametrize("config,desc,cost", [
    # The reset configuration: ESTIMATE, the header number at scale 1.0, Content-Length at a quarter.
    (LimiterConfig(), numbered(4096, 10**6), 4096),                         # the header number wins over CL
    (LimiterConfig(), request(1, 1000), 250),                               # no header: CL × 0x4000 >> 16
    (LimiterConfig(), request(1, 1003), 250),                               # floors
    (LimiterConfig(), request(1), 0),                                       # neither: cost_fixed (reset 0)
    (LimiterConfig(cost_fixed=7), request(1), 7),
    (estimate(cost_fixed=9), numbered(0, 1000), 0),                         # a header 0 is a number too
    (estimate(cost_fixed=9), numbered(5, 400, numeric=False), 100),         # not a number: CL
    (estimate(cost_fixed=9), numbered(5, None, numeric=False), 9),          # neither
    (estimate(cost_scale=1 << 14, cost_scale_cl=1 << 16), numbered(4097, 99), 1024),  # the header: cost_scale
    (estimate(cost_scale=3 << 16, cost_scale_cl=1 << 16), numbered(7, 1000), 21),
    (estimate(cost_scale=3 << 16, cost_scale_cl=1 << 16), request(1, 1000), 1000),   # CL: cost_scale_cl
    (estimate(cost_scale=3 << 16, cost_scale_cl=5 << 15), request(1, 7), 17),
    (estimate(cost_scale_cl=0, cost_fixed=9), request(1, 1000), 0),         # CL present: not cost_fixed
    (estimate(cost_scale=0, cost_fixed=9), numbered(1000, 1000), 0),
    (estimate(cost_scale_cl=1), request(1, 65535), 0),
    (estimate(cost_scale_cl=1), request(1, 65536), 1),
    # Saturation at 2³²−1.
    (estimate(), request(1, (1 << 34) - 5), COST_MAX - 1),
    (estimate(), request(1, (1 << 34) - 4), COST_MAX),
    (estimate(), request(1, 1 << 34), COST_MAX),
    (estimate(cost_scale_cl=1 << 16), request(1, (1 << 32) - 1), COST_MAX),
    (estimate(cost_scale_cl=1 << 16), request(1, 1 << 32), COST_MAX),
    (estimate(cost_scale_cl=(1 << 32) - 1), request(1, U64), COST_MAX),
    (estimate(), numbered((1 << 32) - 1, 5), COST_MAX),
    (estimate(), numbered(1 << 32, 5), COST_MAX),
    (estimate(cost_scale=(1 << 32) - 1), numbered(U64), COST_MAX),
    (estimate(cost_fixed=COST_MAX), request(1), COST_MAX),
])
def test_cost_source_estimate(config, desc, cost):
    model = LimiterModel(P64, config=config)
    assert model.config.cost_source is ESTIMATE
    assert model.cost(desc) == cost
    assert model.decide(desc, 0).cost == cost               # unknown key, 401: the cost is still reported


def test_cost_source_estimate_debits_the_estimate():
    model, slot, fp = one_tenant(Plan(10, 10, 100, 1000))
    assert model.config == LimiterConfig() and model.config.cost_source is ESTIMATE
    assert model.decide(request(fp, 400), 0).cost == 100
    assert model.decide(numbered(37, 400, fp=fp), 0).cost == 37
    assert model.state(slot).cost_tokens == (1000 - 137) * UNIT


# -- retry saturation -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tick_log2", [0, 9])
def test_retry_after_saturates_at_2_64_minus_1(tick_log2):
    """At the slowest rate (one a minute: one unit per tick) a cost far above the burst waits
    ``cost·unit`` ticks, more than 2⁶⁴ ns: ``retry_after_ns`` is 2⁶⁴−1. The largest cost whose wait fits is exact."""
    q = tick_log2
    params = LimiterParams(capacity=64, tick_log2=q)
    unit = params.unit
    plan = Plan.per_minute(1, 1, 1, 1)
    assert plan.inv_cost_rate == U64
    t = (7 << q) + (100 if q else 0)
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_source=FIXED, cost_fixed=COST_MAX), now_ns=t, params=params)
    v = model.decide(request(fp), t)
    assert (v.decision, v.status, v.retry_after_ns) == (REJECT, 429, U64)
    assert LimitVerdict.from_bits(v.to_bits()) == v
    # The boundary: from an empty cost bucket at rate 1 a wait of c·unit ticks fits while c·unit < 2^(64−q).
    fits = ((1 << (64 - q)) - 1) // unit
    assert fits == 307_445_734
    for cost, retry in ((fits, ((fits * unit) << q) - (t & ((1 << q) - 1))), (fits + 1, U64), (COST_MAX, U64)):
        m = copy.deepcopy(model)
        m.config = LimiterConfig(cost_source=FIXED, cost_fixed=cost)
        m.debit(fp, 1)
        v = m.decide(request(fp), t)
        assert (v.status, v.retry_after_ns) == (429, retry), cost
    assert ((fits * unit) << q) < 1 << 64 <= (((fits + 1) * unit) << q)


# -- retry_after_ns ---------------------------------------------------------------------------------------------------

def test_retry_after_request_bucket_is_ceil_or_one_more_and_never_early():
    rng = random.Random(SEED)
    exact = late = 0
    for trial in range(3000):
        plan = Plan.per_minute(log_uniform(rng, 1, REQ_RATE_MAX), rng.randint(1, 4), 60, 1)
        rate = plan.req_per_minute                                        # units per ns
        model, slot, fp = one_tenant(plan, LimiterConfig(cost_source=FIXED, cost_fixed=0))
        for _ in range(plan.req_burst):
            assert model.decide(request(fp), 0).decision is ALLOW
        t = rng.randrange(0, ceil_div(UNIT, rate))                        # still short of one request
        v = model.decide(request(fp), t)
        assert v.status == 429, f"seed={SEED} trial {trial}"
        deficit = UNIT - model.state(slot).req_tokens
        need = ceil_div(deficit, rate)
        assert v.retry_after_ns - need in (0, 1), f"seed={SEED} trial {trial}: {plan} deficit {deficit}"
        exact += v.retry_after_ns == need
        late += v.retry_after_ns == need + 1
        early = copy.deepcopy(model)
        assert model.decide(request(fp), t + v.retry_after_ns).decision is ALLOW, f"seed={SEED} trial {trial}"
        if v.retry_after_ns == need:                                      # ceil is the first ns that works
            assert early.decide(request(fp), t + need - 1).decision is REJECT
    print(f"\nseed={SEED}: request-bucket waits: {exact} exactly ⌈deficit/rate⌉, {late} one more")


def cost_bucket_case(rng: random.Random):
    """A tenant whose cost bucket is short at the returned time, the request bucket full."""
    plan = random_plan(rng, req_per_minute=REQ_RATE_MAX)
    plan = Plan.per_minute(REQ_RATE_MAX, REQ_BURST_MAX // 4, plan.cost_per_minute, plan.cost_burst)
    cost = rng.randint(1, plan.cost_burst)
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_source=FIXED, cost_fixed=cost))
    model.debit(fp, plan.cost_burst)
    model.refund(fp, rng.randrange(0, cost))
    t = rng.randrange(0, max(1, (cost * UNIT - model.state(slot).cost_tokens) // plan.cost_per_minute))
    return plan, cost, model, slot, fp, t


def test_retry_after_cost_bucket_is_ceil_or_one_more_while_deficit_times_rate_fits_64_bits():
    """Where ``deficit·cost_rate ≤ 2⁶⁴`` the floored reciprocal loses less than 1 ns, so the ``+ 1`` covers it."""
    rng = random.Random(SEED)
    tested = 0
    while tested < 3000:
        plan, cost, model, slot, fp, t = cost_bucket_case(rng)
        v = model.decide(request(fp), t)
        assert v.status == 429
        deficit = cost * UNIT - model.state(slot).cost_tokens
        if deficit * plan.cost_per_minute > 1 << 64:
            continue
        tested += 1
        need = ceil_div(deficit, plan.cost_per_minute)
        assert v.retry_after_ns - need in (0, 1), f"seed={SEED}: {plan} cost {cost} deficit {deficit}"
        assert model.decide(request(fp), t + v.retry_after_ns).decision is ALLOW, f"seed={SEED}: {plan}"


def late_cost_case():
    """A valid plan and cost where ``(deficit − 1)·rate ≥ 2⁶⁴``, so that the wait may be one tick late."""
    rate = 1_000_003                                     # per minute; 2⁶⁴ mod rate is large
    inv = U64 // rate
    for cost in range(COST_BURST_MAX, COST_BURST_MAX - 1_000_000, -1):
        deficit = cost * UNIT                            # from an empty bucket
        if wait_ticks(deficit, inv) > ceil_div(deficit, rate):
            return Plan.per_minute(60_000, 10, rate, COST_BURST_MAX), cost
    raise AssertionError("no late case found")          # pragma: no cover


def test_wait_ticks_is_exact_below_2_64_and_never_early():
    rng = random.Random(SEED)
    for _ in range(100_000):
        rate = rng.choice([1, 2, 3, 7, 1000, REQ_RATE_MAX, COST_RATE_MAX, rng.randrange(1, 1 << 32)])
        deficit = rng.randrange(1, (1 << rng.randrange(1, 63)) + 1)
        need = ceil_div(deficit, rate)
        got = wait_ticks(deficit, U64 // rate)
        if (deficit - 1) * rate < 1 << 64:
            assert got == need, (deficit, rate)
        else:
            assert got in (need, need + 1), (deficit, rate)
    # Divisible deficits (where a plain ⌈2⁶⁴/rate⌉ reciprocal is a tick late) are exact, rate 1 included.
    for rate in (1, 2, 3, 1000, REQ_RATE_MAX):
        for k in (1, 2, 999, 10**6):
            if (k * rate - 1) * rate < 1 << 64:
                assert wait_ticks(k * rate, U64 // rate) == k


def test_retry_after_is_never_early_for_large_cost_deficits():
    plan, cost = late_cost_case()
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_source=FIXED, cost_fixed=cost))
    model.debit(fp, plan.cost_burst)
    v = model.decide(request(fp), 0)
    assert v.status == 429
    assert v.retry_after_ns == wait_ticks(cost * UNIT, plan.inv_cost_rate) == (
        ceil_div(cost * UNIT, plan.cost_per_minute) + 1)
    assert model.decide(request(fp), v.retry_after_ns).decision is ALLOW


def test_retry_after_rate_1_is_exact():
    """Register rate 1 (one a minute: 1 unit per ns), where the reciprocal is 2⁶⁴ − 1."""
    plan = Plan.per_minute(1, 1, 1, 1)
    assert plan.inv_req_rate == plan.inv_cost_rate == U64
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_source=FIXED, cost_fixed=1))
    assert model.decide(request(fp), 0).decision is ALLOW
    for t in (0, 1, 123_456_789, 60 * NANO - 1):
        v = model.decide(request(fp), t)
        assert v.retry_after_ns == 60 * NANO - t
        assert copy.deepcopy(model).decide(request(fp), t + v.retry_after_ns - 1).decision is REJECT
    assert model.decide(request(fp), 60 * NANO).decision is ALLOW


def test_retry_after_is_the_larger_wait_and_a_full_bucket_waits_0():
    plan = Plan(req_rate=2, req_burst=1, cost_rate=4, cost_burst=8)
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_source=FIXED, cost_fixed=0))
    assert model.decide(request(fp), 0).decision is ALLOW
    v = model.decide(request(fp), 0)                      # request short by 1 at 2/s (120/min): 0.5 s
    # A deficit the rate divides: exactly ⌈deficit/rate⌉.
    assert v.retry_after_ns == wait_ticks(UNIT, plan.inv_req_rate) == NANO // 2
    model.config = LimiterConfig(cost_source=FIXED, cost_fixed=8)
    model.debit(fp, 8)
    v = model.decide(request(fp), NANO // 2)              # request full again; cost short by 6 units at 4/s
    assert v.retry_after_ns == 3 * NANO // 2
    model.config = LimiterConfig(cost_source=FIXED, cost_fixed=0)
    assert model.decide(request(fp), NANO // 2).decision is ALLOW      # empties the request bucket
    model.debit(fp, 8)
    model.config = LimiterConfig(cost_source=FIXED, cost_fixed=8)
    v = model.decide(request(fp), NANO // 2)              # request: 0.5 s; cost short by 8 units: 2 s
    assert v.retry_after_ns == 2 * NANO                   # both short: the larger wait


@st.composite
def short_bucket_case(draw):
    """One tenant whose request bucket (cost 0) or cost bucket (request bucket full) is short at ``t1``."""
    q = draw(st.sampled_from([0, 9]), label="tick_log2")
    params = LimiterParams(capacity=64, tick_log2=q)
    unit = params.unit
    kind = draw(st.sampled_from(["req", "cost"]), label="kind")
    t0 = draw(st.integers(0, 1 << 40), label="t0")
    if kind == "req":
        rate = draw(st.one_of(st.integers(1, 1000), st.integers(1, REQ_RATE_MAX)), label="req_per_minute")
        plan = Plan.per_minute(rate, draw(st.integers(1, min(4, max_burst(rate, REQ_BURST_MAX, params)))), 1, 1)
        cost, deficit = 0, unit                                  # after draining the bursts at t0
    else:
        rate = draw(st.one_of(st.integers(1, 1000), st.integers(1, COST_RATE_MAX)), label="cost_per_minute")
        burst = draw(st.integers(1, max_burst(rate, COST_BURST_MAX, params)), label="cost_burst")
        plan = Plan.per_minute(REQ_RATE_MAX, 1, rate, burst)
        cost = draw(st.integers(1, burst), label="cost")
        left = draw(st.integers(0, cost - 1), label="left")     # cost units left after the drain
        deficit = (cost - left) * unit
    gap_ticks = draw(st.integers(0, ceil_div(deficit, rate) - 1), label="gap_ticks")
    phase = draw(st.integers(0, (1 << q) - 1), label="phase")
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_source=FIXED, cost_fixed=cost), now_ns=t0, params=params)
    if kind == "req":
        for _ in range(plan.req_burst):
            assert model.decide(request(fp), t0).decision is ALLOW
    else:
        model.debit(fp, plan.cost_burst)
        model.refund(fp, left)
    t1 = (((t0 >> q) + gap_ticks) << q) | phase
    return q, kind, rate, model, slot, fp, t1


@SEEDED
@given(short_bucket_case())
def test_retry_after_is_the_first_tick_that_suffices(case):
    """With one short bucket and nothing else happening, ``now + retry_after_ns`` is the start of the tick at which
    the bucket first suffices, ``⌈deficit/rate⌉`` ticks on, so deciding 1 ns earlier is still rejected. The only
    exception is ``(deficit − 1)·rate ≥ 2⁶⁴``: a huge cost deficit, or a request deficit above 2²⁸ requests per
    minute (6·10¹⁰ units a request), which may wait one tick more. Never early."""
    q, kind, rate, model, slot, fp, t1 = case
    v = model.decide(request(fp), t1)
    assert v.status == 429
    state = model.state(slot)
    unit = model.params.unit
    cost_units = model.config.cost_fixed * unit
    deficit = unit - state.req_tokens if kind == "req" else cost_units - state.cost_tokens
    assert deficit > 0 and (kind == "cost" or state.cost_tokens >= cost_units)
    assert kind == "req" or state.req_tokens >= unit
    need = ceil_div(deficit, rate)                               # ticks
    end = t1 + v.retry_after_ns
    assert end % (1 << q) == 0                                   # the start of a tick
    wait = (end >> q) - (t1 >> q)
    if (deficit - 1) * rate < 1 << 64:
        assert wait == need, f"{kind} rate {rate} deficit {deficit}"
    else:
        assert wait in (need, need + 1) and (kind == "cost" or rate > 1 << 28), f"{kind} rate {rate}"
    first = ((t1 >> q) + need) << q                              # the first ns the bucket suffices
    for now_ns, decision in ((first - 1, REJECT), (first, ALLOW), (end, ALLOW)):
        assert copy.deepcopy(model).decide(request(fp), now_ns).decision is decision, now_ns - t1
    if wait == need:
        assert end == first
        assert copy.deepcopy(model).decide(request(fp), end - 1).decision is REJECT


def test_retry_after_of_a_fast_request_bucket_may_be_one_tick_late_never_early():
    """The case a fresh-clone run drew: 307 445 735 requests a minute (above 2²⁸), one request short at once after
    the burst: ``(deficit − 1)·rate ≥ 2⁶⁴``, so the reciprocal may give one tick more than ⌈deficit/rate⌉, never
    less."""
    rate = 307_445_735
    model, slot, fp = one_tenant(Plan.per_minute(rate, 1, 1, 1), LimiterConfig(cost_source=FIXED, cost_fixed=0),
                                 now_ns=28)
    assert model.decide(request(fp), 28).decision is ALLOW
    v = model.decide(request(fp), 28)
    need = ceil_div(UNIT, rate)
    assert (UNIT - 1) * rate >= 1 << 64 and v.retry_after_ns in (need, need + 1)
    assert copy.deepcopy(model).decide(request(fp), 28 + need - 1).decision is REJECT
    assert copy.deepcopy(model).decide(request(fp), 28 + v.retry_after_ns).decision is ALLOW


def test_retry_after_at_ticks_counts_from_now_to_the_tick_start():
    """q = 9, rate 1 a minute (exact reciprocal): the wait is deficit ticks, minus how far ``now`` is into its
    tick."""
    params = LimiterParams(capacity=64, tick_log2=9)
    model, slot, fp = one_tenant(Plan.per_minute(1, 1, 1, 1), LimiterConfig(cost_source=FIXED, cost_fixed=0),
                                 params=params)
    assert model.decide(request(fp), 0).decision is ALLOW
    v = model.decide(request(fp), 512 * 7 + 300)
    assert model.state(slot).req_tokens == 7
    assert v.retry_after_ns == (params.unit - 7) * 512 - 300
    assert model.decide(request(fp), 512 * 7 + 300 + v.retry_after_ns - 1).status == 429
    assert model.decide(request(fp), 512 * 7 + 300 + v.retry_after_ns).decision is ALLOW


# -- unknown keys -----------------------------------------------------------------------------------------------------

def test_unknown_key_policies():
    plan = Plan(10, 10, 10, 10)
    stranger = 0xFEEDFACECAFEBEEF
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_source=FIXED, cost_fixed=2))
    model.set_default(slot)
    assert model.default_slot == slot and model.default_valid
    for desc in (request(stranger), request(None), request(fp, source=KeySource.NONE)):
        # A descriptor without a key is unknown even when its key_fp field matches a tenant.
        model.config = LimiterConfig(unknown_policy=UnknownPolicy.REJECT, cost_source=FIXED, cost_fixed=2)
        assert model.decide(desc, 0) == LimitVerdict(REJECT, 401, False, 0, 2, 0)
        model.config = LimiterConfig(unknown_policy=UnknownPolicy.PUNT, cost_source=FIXED, cost_fixed=2)
        assert model.decide(desc, 0) == LimitVerdict(PUNT, 0, False, 0, 2, 0)
        model.config = LimiterConfig(unknown_policy=UnknownPolicy.DEFAULT, cost_source=FIXED, cost_fixed=2)
        assert model.decide(desc, 0) == LimitVerdict(ALLOW, 200, False, slot, 2, 0)
    assert (model.reject_401, model.punt, model.allow, model.reject_429) == (3, 3, 3, 0)
    assert model.state(slot).cost_tokens == 4 * UNIT and model.state(slot).allowed == 3
    # The default slot's buckets run dry like any tenant's.
    model.config = LimiterConfig(unknown_policy=UnknownPolicy.DEFAULT, cost_source=FIXED, cost_fixed=5)
    v = model.decide(request(None), 0)
    assert (v.decision, v.status, v.tenant_found, v.tenant) == (REJECT, 429, False, slot)
    assert v.retry_after_ns == wait_ticks(UNIT, plan.inv_cost_rate)
    # An invalid default slot: 401.
    model.set_default((slot + 1) % 64)
    assert model.decide(request(stranger), 0) == LimitVerdict(REJECT, 401, False, 0, 5, 0)
    # Invalidating the default tenant's slot: 401 too.
    model.set_default(slot)
    model.write_tenant(slot, 0, 0, False, 0)
    assert not model.default_valid and model.decide(request(stranger), 0).status == 401
    # The known tenant is unaffected by the policy.
    model.write_tenant(slot, fp, 0, True, 0)
    v = model.decide(request(fp, source=KeySource.X_API_KEY), 0)
    assert v.tenant_found and v.tenant == slot


# -- cost sources -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config,desc,cost", [
    (LimiterConfig(cost_source=FIXED, cost_fixed=0), request(1, 10**6), 0),
    (LimiterConfig(cost_source=FIXED, cost_fixed=COST_MAX), request(1, 5), COST_MAX),
    (LimiterConfig(cost_source=BY_LENGTH, cost_scale=1 << 16), request(1, 1234), 1234),
    (LimiterConfig(cost_source=BY_LENGTH, cost_scale=1 << 15), request(1, 1235), 617),       # floors
    (LimiterConfig(cost_source=BY_LENGTH, cost_scale=3 << 16), request(1, 7), 21),
    (LimiterConfig(cost_source=BY_LENGTH, cost_scale=1), request(1, 65535), 0),
    (LimiterConfig(cost_source=BY_LENGTH, cost_scale=1), request(1, 65536), 1),
    (LimiterConfig(cost_source=BY_LENGTH, cost_scale=1 << 16), request(1, (1 << 32) - 1), COST_MAX),
    (LimiterConfig(cost_source=BY_LENGTH, cost_scale=1 << 16), request(1, 1 << 32), COST_MAX),        # saturates
    (LimiterConfig(cost_source=BY_LENGTH, cost_scale=(1 << 32) - 1), request(1, U64), COST_MAX),
    (LimiterConfig(cost_source=BY_LENGTH, cost_scale=1 << 16), request(1), 0),                        # no length:
    (LimiterConfig(cost_source=BY_LENGTH, cost_scale=1 << 16, cost_fixed=7), request(1), 7),          # cost_fixed
    (LimiterConfig(cost_source=BY_LENGTH, cost_scale=1 << 16, cost_fixed=3),
     Descriptor(key_source=KeySource.AUTHORIZATION, key_fp=1, cl_present=False, content_length=99), 3),
    (LimiterConfig(cost_source=BY_EXTRA, cost_scale=1 << 16, cost_fixed=3),
     Descriptor(key_source=KeySource.AUTHORIZATION, key_fp=1, extra_numeric=True, extra_value=4096), 4096),
    (LimiterConfig(cost_source=BY_EXTRA, cost_scale=1 << 14, cost_fixed=3),
     Descriptor(key_source=KeySource.AUTHORIZATION, key_fp=1, extra_numeric=True, extra_value=4097), 1024),
    (LimiterConfig(cost_source=BY_EXTRA, cost_scale=1 << 16, cost_fixed=3),
     Descriptor(key_source=KeySource.AUTHORIZATION, key_fp=1, extra_numeric=True, extra_value=U64), COST_MAX),
    (LimiterConfig(cost_source=BY_EXTRA, cost_scale=1 << 16, cost_fixed=3),                          # not a number
     Descriptor(key_source=KeySource.AUTHORIZATION, key_fp=1, extra_numeric=False, extra_value=5), 3),
    (LimiterConfig(cost_source=BY_EXTRA, cost_scale=1 << 16, cost_fixed=3), request(1, 50), 3),      # CL ignored
])
def test_cost_sources(config, desc, cost):
    model = LimiterModel(P64, config=config)
    assert model.cost(desc) == cost
    assert model.decide(desc, 0).cost == cost               # unknown key, 401: the cost is still reported


# -- debit and refund -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tick_log2", [0, 9])
def test_debit_saturates_and_refund_caps_without_refill(tick_log2):
    params = LimiterParams(capacity=64, tick_log2=tick_log2)
    unit = params.unit
    model, slot, fp = one_tenant(Plan(10, 10, 100, 50), now_ns=7 << tick_log2, params=params)
    assert model.debit(fp, 20)
    assert model.state(slot).cost_tokens == 30 * unit
    assert model.debit(fp, 31) and model.state(slot).cost_tokens == 0
    assert model.debit(fp, (1 << 32) - 1) and model.state(slot).cost_tokens == 0
    assert model.refund(fp, 45) and model.state(slot).cost_tokens == 45 * unit
    assert model.refund(fp, 6) and model.state(slot).cost_tokens == 50 * unit
    assert model.refund(fp, (1 << 32) - 1) and model.state(slot).cost_tokens == 50 * unit
    assert model.command(fp, 0, False) and model.command(fp, 0, True)
    assert model.command(fp, 3, False) and model.state(slot).cost_tokens == 47 * unit
    state = model.state(slot)
    assert state.last_ns == 7 << tick_log2 and state.req_tokens == 10 * unit    # no refill, the clock untouched
    assert (model.cmd_applied, model.cmd_unknown) == (9, 0)
    assert (model.allow, model.reject_429, model.reject_401, model.punt) == (0, 0, 0, 0)


def test_commands_for_unknown_keys_are_counted_and_dropped():
    model, slot, fp = one_tenant(Plan(10, 10, 100, 50), LimiterConfig(unknown_policy=UnknownPolicy.DEFAULT))
    model.set_default(slot)
    model.debit(fp, 10)
    before = snapshot(model)
    other = fp ^ (1 << 60)                                  # same candidate buckets, different key
    assert model.debit(other, 5) is False and model.refund(other, 5) is False
    model.write_tenant(slot, 0, 0, False, 0)                # an invalid slot's key is not found either
    assert model.command(fp, 1, True) is False
    assert (model.cmd_applied, model.cmd_unknown) == (1, 3)
    # Nothing else changed: commands do not use the default tenant.
    assert model.state(slot).cost_tokens == before[0][slot].cost_tokens == 40 * UNIT
    model.cmd_unknown = U64
    model.debit(other, 1)
    assert model.cmd_unknown == 0                           # 64 bits wrap


def test_refund_then_decide_spends_the_refund():
    model, slot, fp = one_tenant(Plan(10, 10, 1, 100), LimiterConfig(cost_source=FIXED, cost_fixed=100))
    assert model.decide(request(fp), 0).decision is ALLOW
    assert model.decide(request(fp), 0).status == 429
    model.refund(fp, 100)
    assert model.decide(request(fp), 0).decision is ALLOW


def test_refund_caps_at_the_plan_of_the_slot_even_below_the_tokens():
    """A plan rewritten with a smaller cap: a refund lowers the tokens to the new cap (min with the cap)."""
    model, slot, fp = one_tenant(Plan(10, 10, 100, 100))
    model.write_plan(0, Plan(10, 10, 100, 30))
    assert model.state(slot).cost_tokens == 100 * UNIT
    model.refund(fp, 1)
    assert model.state(slot).cost_tokens == 30 * UNIT


@pytest.mark.parametrize("call,field", [
    (lambda m: m.debit(1, 1 << 32), "amount"), (lambda m: m.refund(1, -1), "amount"),
    (lambda m: m.command(-1, 1, True), "fp"), (lambda m: m.command(1 << 64, 1, False), "fp"),
])
def test_command_arguments_name_the_field(call, field):
    model = LimiterModel(P64)
    with pytest.raises(ConfigError) as info:
        call(model)
    assert info.value.field == field
    assert (model.cmd_applied, model.cmd_unknown) == (0, 0)


# -- tenant writes ----------------------------------------------------------------------------------------------------

def test_update_keeps_tokens_capped_at_the_new_burst_and_keeps_last():
    model, slot, fp = one_tenant(Plan(10, 10, 100, 100), LimiterConfig(cost_source=FIXED, cost_fixed=5), now_ns=1000)
    model.decide(request(fp), 2000)
    model.write_plan(1, Plan(20, 4, 1000, 200))
    model.write_tenant(slot, fp, 1, True, 10**9)           # an update: same key
    state = model.state(slot)
    assert (state.plan, state.req_tokens, state.cost_tokens) == (1, 4 * UNIT, 95 * UNIT)
    assert (state.last_ns, state.allowed) == (2000, 1)
    # The time since last_ns refills at the new rates.
    model.decide(request(fp), 2000 + 10**6)
    assert model.state(slot).cost_tokens == 95 * UNIT + 10**6 * 60_000 - 5 * UNIT


def test_new_key_in_a_slot_starts_over():
    model, slot, fp = one_tenant(Plan(10, 10, 100, 100), LimiterConfig(cost_source=FIXED, cost_fixed=5))
    model.decide(request(fp), 0)
    other = fp ^ (1 << 60)                                  # same buckets: it may take the slot
    model.write_tenant(slot, other, 0, True, 555)           # a different key: a new tenant
    state = model.state(slot)
    assert (state.tag, state.req_tokens, state.cost_tokens, state.last_ns, state.allowed, state.rejected) == (
        other, 10 * UNIT, 100 * UNIT, 555, 0, 0)
    assert model.lookup(fp) is None and model.lookup(other) == slot
    model.write_tenant(slot, other, 0, False, 600)
    model.write_tenant(slot, other, 0, True, 700)          # re-added after removal: new again
    assert model.state(slot).last_ns == 700


def test_invalidate_clears_only_the_valid_bit():
    model, slot, fp = one_tenant(Plan(10, 10, 100, 100), LimiterConfig(cost_source=FIXED, cost_fixed=5), now_ns=100)
    model.write_plan(1, Plan(10, 10, 100, 100))
    model.write_tenant(slot, fp, 1, True, 0)
    model.decide(request(fp), 300)
    before = model.state(slot)
    # fp and plan are ignored: a key that does not belong, and a plan beyond the table, are not errors.
    model.write_tenant(slot, fp ^ 1, PLANS - 1, False, 10**9)
    after = model.state(slot)
    assert after == TenantState(False, fp, 1, before.req_tokens, before.cost_tokens, 300, 1, 0)
    assert model.lookup(fp) is None
    assert model.decide(request(fp), 0).status == 401
    # Writing the same key again is a new tenant (the slot was not valid).
    model.write_tenant(slot, fp, 1, True, 5000)
    assert model.state(slot) == TenantState(True, fp, 1, 10 * UNIT, 100 * UNIT, 5000, 0, 0)


def test_unwritten_plans_are_zero_and_not_checked():
    model = LimiterModel(P64, LimiterConfig(cost_source=FIXED, cost_fixed=0))
    assert model.plan(3) is None
    assert model.plan_regs(3) == dict(req_rate=0, req_cap=0, cost_rate=0, cost_cap=0, inv_req=0, inv_cost=0)
    model.write_tenant(4, 1, 3, True, 0)                    # slot 4: half 0, bucket 1; a plan never written
    assert model.state(4) == TenantState(True, 1, 3, 0, 0, 0, 0, 0)
    # Rate 0 now means unlimited, so the reset plan entry is the all-unlimited plan: a tenant on it is always
    # allowed, whatever the cost, and its buckets stay at 0. (Before the change rate 0 was a bucket that never
    # refilled: never allowed. That check moved below, to a raw plan with rate 1 and cap 0.)
    assert model.plan_regs(3) == Plan(None, None, None, None).registers(P64)
    for now, cost in ((10**12, 0), (10**12, COST_MAX), (0, 1)):
        model.config = LimiterConfig(cost_source=FIXED, cost_fixed=cost)
        assert model.decide(request(1), now) == LimitVerdict(ALLOW, 200, True, 4, cost, 0)
    assert model.state(4) == TenantState(True, 1, 3, 0, 0, 0, 3, 0)
    # Raw registers are not checked either: rate 1, cap 0 is never allowed, and reciprocal 0 gives a 1-tick wait.
    model.write_plan_regs(3, 1, 0, 1, 0, 0, 0)
    model.config = LimiterConfig(cost_source=FIXED, cost_fixed=0)
    v = model.decide(request(1), 10**12)
    assert (v.status, v.retry_after_ns) == (429, 1)
    assert (model.state(4).req_tokens, model.state(4).cost_tokens) == (0, 0)


def test_relocations_keep_bucket_state_and_counters():
    """Fill a 64-slot table through the placement; each tenant's state survives every move it makes."""
    rng = random.Random(SEED)
    table = Table(config=LimiterConfig(cost_source=FIXED, cost_fixed=1))
    model = table.model
    model.write_plan(0, Plan(1, 100, 1, 100))             # slow: the state after a request is recognisable
    spent = {}
    moved = 0
    while True:
        fp = rng.getrandbits(64)
        before = {f: (model.lookup(f), model.state(model.lookup(f))) for f in spent}
        try:
            slot = table.add(fp, 0, 0)
        except TableFull:
            break
        for f, (old, state) in before.items():
            new = model.lookup(f)
            assert new == table.placement.lookup(f)
            assert model.state(new) == state, f"seed={SEED}: 0x{f:016x} lost its state in a move"
            moved += new != old
        n = rng.randint(1, 5)
        for _ in range(n):
            assert model.decide(request(fp), 0).tenant == slot
        spent[fp] = n
    for f, n in spent.items():
        state = model.state(model.lookup(f))
        assert state.allowed == n and state.req_tokens == (100 - n) * UNIT and state.tag == f
    assert moved > 0


def test_move_is_one_commit_copy_and_invalidate():
    model = LimiterModel(P64)
    model.write_plan(0, Plan(10, 10, 10, 10))
    fp = (3 << 32) | 5                                      # b0 = 5, b1 = 3
    model.write_tenant(32 + 12, fp, 0, True, 0)             # half 1, bucket 3, way 0
    model.decide(request(fp), 0)
    before = model.state(44)
    model.move(32 + 12, 20 + 2)                             # half 0, bucket 5, way 2
    assert model.lookup(fp) == 22
    assert model.state(22) == before                        # state and counters travel with the tenant
    assert not model.state(44).valid and model.state(44).tag == fp   # the old slot keeps its tag


def test_move_carries_the_default_slot():
    model = LimiterModel(P64, LimiterConfig(unknown_policy=UnknownPolicy.DEFAULT, cost_source=FIXED, cost_fixed=1))
    model.write_plan(0, Plan(10, 10, 10, 10))
    fp = (3 << 32) | 5
    model.write_tenant(44, fp, 0, True, 0)
    model.set_default(44)
    assert model.decide(request(None), 0).tenant == 44
    model.move(44, 22)
    assert model.default_slot == 22
    v = model.decide(request(None), 0)
    assert (v.decision, v.tenant, v.tenant_found) == (ALLOW, 22, False)
    assert model.state(22).allowed == 2
    # Moving another slot leaves the default alone; moving it back brings it back.
    model.write_tenant(21, 5, 0, True, 0)                   # fp 5: b0 = 5, b1 = 0
    model.move(21, 32)
    assert model.default_slot == 22
    model.move(22, 45)
    assert model.default_slot == 45 and model.decide(request(None), 0).tenant == 45
    # The default follows even an invalid slot it names.
    model.set_default(3)
    model.move(3, 32 + 1)                                   # slot 3 reads back tag 0: b1 = 0
    assert model.default_slot == 33 and model.decide(request(None), 0).status == 401


# -- table ops: tag storage -------------------------------------------------------------------------------------------

_MODELS = {}


def shared_model(capacity: int) -> LimiterModel:
    """One model per capacity for tests that only read (building a 65 536-slot model takes a while)."""
    if capacity not in _MODELS:
        _MODELS[capacity] = LimiterModel(LimiterParams(capacity=capacity))
    return _MODELS[capacity]


@SEEDED
@given(st.sampled_from([64, 4096, 16384, 65536]), st.integers(0, U64), st.integers(0, 1), st.integers(0, 3),
       st.integers(0, U64))
def test_tag_quotient_round_trip(capacity, fp, half, way, other):
    model = shared_model(capacity)
    k = model.params.bucket_bits
    mask = (1 << k) - 1
    bucket = (fp >> (32 * half)) & mask
    slot = half * capacity // 2 + bucket * 4 + way
    stored = model.quotient_tag(slot, fp)
    if half == 0:
        assert stored == fp >> k
    else:
        assert stored == (fp & 0xFFFF_FFFF) | ((fp >> (32 + k)) << 32)
    assert stored < 1 << model.params.tag_bits
    assert model.reconstruct_tag(slot, stored) == fp and model.belongs(slot, fp)
    # In any other bucket of that half the key does not belong, and the bucket's index replaces its bits.
    other_bucket = other & mask
    other_slot = half * capacity // 2 + other_bucket * 4 + way
    assert model.belongs(other_slot, fp) == (other_bucket == bucket)
    shift = 32 * half
    replaced = (fp & ~(mask << shift)) | (other_bucket << shift)
    assert model.reconstruct_tag(other_slot, model.quotient_tag(other_slot, fp)) == replaced


@SEEDED
@given(st.integers(0, U64), st.integers(0, 1), st.integers(0, 3), st.integers(0, 3))
def test_tag_read_back_through_write_and_move(fp, half, way, dst_way):
    model = LimiterModel(P64)
    b = ((fp & 7), ((fp >> 32) & 7))
    slot = slot_of(P64, half, b[half], way)
    dst = slot_of(P64, 1 - half, b[1 - half], dst_way)
    assert model.table_op(WRITE, slot, 0, fp, 0, True, 0) == TableResult(True)
    assert model.table_op(READ, slot, 0, 0, 0, False, 0).state.tag == fp
    assert model.table_op(MOVE, slot, dst, 0, 0, False, 0) == TableResult(True)
    read = model.table_op(READ, dst, 0, 0, 0, False, 0)
    assert read.ok and read.state.tag == fp and read.state.valid and model.lookup(fp) == dst
    assert model.state(slot).tag == fp and not model.state(slot).valid
    assert model.table_ops == 6


@pytest.mark.parametrize("capacity", [64, 4096])
def test_reset_slots_read_back_the_bucket_as_tag(capacity):
    model = LimiterModel(LimiterParams(capacity=capacity))
    for slot in range(capacity):
        bucket = (slot % (capacity // 2)) // 4
        tag = bucket if slot < capacity // 2 else bucket << 32
        assert model.state(slot) == TenantState(False, tag, 0, 0, 0, 0, 0, 0)
    assert model.default_slot == 0 and model.table_ops == capacity


# -- table ops: errors ------------------------------------------------------------------------------------------------

FP = key_for(P64, 5, 3, 0x77)                                # b0 = 5, b1 = 3


@pytest.mark.parametrize("args,why", [
    ((TableOp.NONE, 0, 0, 0, 0, False), "op"), ((5, 0, 0, 0, 0, False), "op"), ((7, 0, 0, 0, 0, False), "op"),
    ((0, 20, 0, FP, 0, True), "op"),
    ((WRITE, 64, 0, FP, 0, True), "slot"), ((READ, 64, 0, 0, 0, False), "slot"),
    ((SET_DEFAULT, 65535, 0, 0, 0, False), "slot"), ((MOVE, 64, 44, 0, 0, False), "slot"),
    ((WRITE, 64, 0, FP, 0, False), "slot"),
    ((WRITE, 24, 0, FP, 0, True), "fp"),                    # half 0, bucket 6: FP's half-0 bucket is 5
    ((WRITE, 32 + 20, 0, FP, 0, True), "fp"),               # half 1, bucket 5: FP's half-1 bucket is 3
    ((WRITE, 20, 0, FP, 8, True), "plan"),                  # 8 plans
    ((MOVE, 20, 64, 0, 0, False), "dst"), ((MOVE, 20, 21, 0, 0, False), "dst"),     # same half
    ((MOVE, 44, 45, 0, 0, False), "dst"), ((MOVE, 20, 32 + 16, 0, 0, False), "dst"),  # not FP's half-1 bucket
    ((MOVE, 44, 24, 0, 0, False), "dst"),                   # not FP's half-0 bucket
])
def test_refused_table_ops_change_nothing_but_are_counted(args, why):
    model = LimiterModel(LimiterParams(capacity=64, plans=8))
    model.write_plan(0, Plan(10, 10, 10, 10))
    model.write_tenant(20, FP, 0, True, 0)                  # half 0, bucket 5, way 0
    model.write_tenant(44, FP ^ (1 << 60), 0, True, 0)      # half 1, bucket 3, way 0
    model.set_default(44)
    before = snapshot(model)
    ops = model.table_ops
    assert model.table_op(*args, now_ns=99) == TableResult(False, None)
    assert snapshot(model) == before and model.table_ops == ops + 1
    assert model._table_error(args[0] if isinstance(args[0], int) else args[0].value, *args[1:])[0] == why


def test_accepted_counterparts_of_the_refused_ops():
    model = LimiterModel(LimiterParams(capacity=64, plans=8))
    model.write_plan(7, Plan(10, 10, 10, 10))
    assert model.table_op(1, 20, 0, FP, 7, True, 0).ok               # WRITE as an int
    assert model.table_op(WRITE, 32 + 12, 0, FP, 7, True, 0).ok      # half 1, bucket 3
    assert model.table_op(MOVE, 20, 32 + 13, 0, 0, False, 0).ok      # to half 1, bucket 3, way 1
    assert model.table_op(SET_DEFAULT, 63, 0, 0, 0, False, 0).ok and model.default_slot == 63
    assert model.table_op(READ, 63, 12345, U64, 63, True, U64).ok    # other fields are ignored
    assert model.table_ops == 5


@pytest.mark.parametrize("call,field", [
    (lambda m: m.write_tenant(64, FP, 0, True, 0), "slot"), (lambda m: m.write_tenant(0, -1, 0, True, 0), "fp"),
    (lambda m: m.write_tenant(20, 1 << 64, 0, True, 0), "fp"), (lambda m: m.write_tenant(0, 1, 0, True, 0), "fp"),
    (lambda m: m.write_tenant(20, FP, 8, True, 0), "plan"), (lambda m: m.write_tenant(20, FP, 64, False, 0), "plan"),
    (lambda m: m.write_tenant(20, FP, 0, True, -1), "now_ns"),
    (lambda m: m.write_tenant(1 << 16, 0, 0, False, 0), "slot"),
    (lambda m: m.move(20, 64), "new_slot"), (lambda m: m.move(-1, 0), "old_slot"),
    (lambda m: m.move(20, 21), "new_slot"),
    (lambda m: m.move(20, 32), "new_slot"), (lambda m: m.move(64, 32), "old_slot"),
    (lambda m: m.state(64), "slot"), (lambda m: m.set_default(64), "slot"),
    (lambda m: m.table_op(8, 0, 0, 0, 0, False, 0), "op"),
    (lambda m: m.table_op(READ, 0, 1 << 16, 0, 0, False, 0), "dst"),
])
def test_table_op_arguments_name_the_field(call, field):
    model = LimiterModel(LimiterParams(capacity=64, plans=8))
    model.write_plan(0, Plan(1, 1, 1, 1))
    model.write_tenant(20, FP, 0, True, 0)
    with pytest.raises(ConfigError) as info:
        call(model)
    assert info.value.field == field


def test_table_ops_counter_wraps():
    model = LimiterModel(P64)
    model.table_ops = U64
    assert model.table_op(TableOp.NONE, 0, 0, 0, 0, False, 0) == TableResult(False)
    assert model.table_ops == 0
    model.set_default(1)
    model.state(1)
    assert model.table_ops == 2


# -- counters ---------------------------------------------------------------------------------------------------------

def test_counters():
    model, slot, fp = one_tenant(Plan(1, 2, 10, 10), LimiterConfig(cost_source=FIXED, cost_fixed=1))
    for _ in range(3):
        model.decide(request(fp), 0)
    model.decide(request(1), 0)
    model.config = LimiterConfig(unknown_policy=UnknownPolicy.PUNT)
    model.decide(request(None), 0)
    assert (model.allow, model.reject_429, model.reject_401, model.punt) == (2, 1, 1, 1)
    state = model.state(slot)
    assert (state.allowed, state.rejected) == (2, 1)
    model.allow = U64
    model.decide(request(fp), 10**10)
    assert model.allow == 0                                 # 64 bits wrap


@pytest.mark.parametrize("counter_bits", [0, 3])
def test_slot_counters_wrap_at_counter_bits(counter_bits):
    params = LimiterParams(capacity=64, counter_bits=counter_bits)
    model, slot, fp = one_tenant(Plan(1, 11, 10**6, 10**6), LimiterConfig(cost_source=FIXED, cost_fixed=1),
                                 params=params)
    for _ in range(11 + 13):
        model.decide(request(fp), 0)
    state = model.state(slot)
    assert (state.allowed, state.rejected) == (11 % (1 << counter_bits), 13 % (1 << counter_bits))
    assert (model.allow, model.reject_429) == (11, 13)      # the global counters are 64 bits
    model.move(slot, slot_of(params, 1, (fp >> 32) & 7, 3))
    assert model.state(model.lookup(fp)).allowed == 11 % (1 << counter_bits)


# -- plans and configuration ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,field", [
    ({"req_rate": 0}, "req_rate"), ({"req_rate": REQ_RATE_MAX + 1}, "req_rate"),
    ({"req_rate": Fraction(REQ_RATE_MAX + 1, 60)}, "req_rate"),          # one above the per-minute maximum
    # A float is now a rate (1.0 is 60/min); one that is not a whole number per minute is refused, not rounded.
    ({"req_rate": 0.01}, "req_rate"), ({"req_rate": Fraction(1, 120)}, "req_rate"), ({"req_rate": -0.5}, "req_rate"),
    ({"req_rate": True}, "req_rate"), ({"req_rate": "1"}, "req_rate"), ({"req_rate": float("nan")}, "req_rate"),
    ({"req_burst": 0}, "req_burst"), ({"req_burst": REQ_BURST_MAX + 1}, "req_burst"),
    ({"cost_rate": 0}, "cost_rate"), ({"cost_rate": COST_RATE_MAX + 1}, "cost_rate"),
    ({"cost_rate": Fraction(COST_RATE_MAX + 1, 60)}, "cost_rate"), ({"cost_rate": 1e6 + 0.01}, "cost_rate"),
    ({"cost_burst": 0}, "cost_burst"), ({"cost_burst": COST_BURST_MAX + 1}, "cost_burst"),
    ({"cost_burst": "5"}, "cost_burst"),
    # Refill from empty within 2⁴⁸ ns: burst·60·10⁹ < 2⁴⁸·rate_per_minute.
    ({"req_rate": 1, "req_burst": 281_475}, "req_burst"), ({"cost_rate": 1, "cost_burst": 281_475}, "cost_burst"),
    ({"req_rate": Fraction(1, 60), "req_burst": 4692}, "req_burst"),      # 1/min: at most 4691
    # The largest bursts need 57 221/min (cost) and 224/min (requests); one less is refused.
    ({"cost_rate": Fraction(57_220, 60), "cost_burst": COST_BURST_MAX}, "cost_burst"),
    ({"req_rate": Fraction(223, 60), "req_burst": REQ_BURST_MAX}, "req_burst"),
    ({"req_rate": 3, "req_burst": REQ_BURST_MAX}, "req_burst"),
])
def test_plan_validation_names_the_field(kwargs, field):
    values = dict(req_rate=10, req_burst=10, cost_rate=1000, cost_burst=1000) | kwargs
    with pytest.raises(ConfigError) as info:
        Plan(**values)
    assert info.value.field == field and field in str(info.value)


def test_plan_limits_and_reciprocals():
    Plan(1, 281_474, 1, 281_474)                            # 281 474·6·10¹⁰ < 2⁴⁸·60
    Plan(Fraction(1, 60), 4691, Fraction(1, 60), 4691)      # 4691·6·10¹⁰ < 2⁴⁸ = 281 474 976 710 656
    Plan.per_minute(REQ_RATE_MAX, REQ_BURST_MAX, COST_RATE_MAX, COST_BURST_MAX)
    Plan(Fraction(REQ_RATE_MAX, 60), REQ_BURST_MAX, Fraction(COST_RATE_MAX, 60), COST_BURST_MAX)
    Plan.per_minute(224, REQ_BURST_MAX, 57_221, COST_BURST_MAX)    # the slowest rates that allow the largest bursts
    for rate in (1, 2, 3, 7, 60, 1000, REQ_RATE_MAX, COST_RATE_MAX):     # per minute
        plan = Plan.per_minute(min(rate, REQ_RATE_MAX), 1, rate, 1)
        assert plan.cost_per_minute == rate
        assert plan.inv_cost_rate == -(-(1 << 64) // rate) - 1 == U64 // rate
        assert plan.inv_req_rate == U64 // plan.req_per_minute
    assert Plan.per_minute(1, 1, 2, 1).inv_cost_rate == (1 << 63) - 1
    assert Plan(1, 1, 1, 1).inv_req_rate == U64 // 60


@pytest.mark.parametrize("params,plan,field", [
    (LimiterParams(req_burst_bits=10), Plan(10, 1024, 10, 10), "req_burst"),
    (LimiterParams(cost_burst_bits=16), Plan(10, 10, 10**6, 1 << 16), "cost_burst"),
    (LimiterParams(req_burst_bits=1), Plan(10, 2, 10, 10), "req_burst"),
    # q = 9: a tick clamp of 2³⁹−1 ticks. 193 373 309 cost units at 687/s refill within 2⁴⁸ ns but need
    # 193 373 309·1 953 125 > (2³⁹−1)·687 units of refill: they would never refill completely.
    # (687/s is 41 220/min: the same plan as before the units changed, since its rate is a whole number per second.)
    (LimiterParams(tick_log2=9), Plan(1, 1, 687, 193_373_309), "cost_burst"),
    # The clamp now binds first at q = 6 (it was q = 3 with bursts up to 2³²): 129 924 158 tokens at 27 695/min need
    # 2⁴⁸ − 58.4 ns, more than the (2⁴²−1)-tick clamp of 64 ns ticks gives.
    (LimiterParams(tick_log2=6), Plan.per_minute(60, 1, 27_695, 129_924_158), "cost_burst"),
])
def test_plan_validate_against_params(params, plan, field):
    with pytest.raises(ConfigError) as info:
        plan.validate(params)
    assert info.value.field == field and field in str(info.value)
    with pytest.raises(ConfigError):
        LimiterModel(params).write_plan(0, plan)


def test_plan_validate_accepts_the_limits():
    assert Plan(10, 1023, 10**6, (1 << 16) - 1).validate(LimiterParams(req_burst_bits=10, cost_burst_bits=16))
    assert Plan(1, 1, 687, 193_373_309).validate(LimiterParams(tick_log2=0))
    assert Plan(1, 1, 687, 193_373_309).validate(LimiterParams(tick_log2=8))
    assert Plan(1, 1, 687, 193_373_308).validate(LimiterParams(tick_log2=9))
    assert Plan.per_minute(60, 1, 27_695, 129_924_158).validate(LimiterParams(tick_log2=5))
    assert Plan.per_minute(60, 1, 27_695, 129_924_157).validate(LimiterParams(tick_log2=9))
    # At q ≤ 5 the tick clamp adds nothing to the 2⁴⁸-ns rule (it used to be q ≤ 2): checked for the largest burst
    # at every rate where that burst is below the limit (beyond, the bucket refills far faster).
    q5 = LimiterParams(tick_log2=5)
    for rate in range(1, 57_222):
        burst = min(COST_BURST_MAX, ((1 << 48) * rate - 1) // TOKEN_UNITS)
        Plan.per_minute(min(rate, 224), min(burst, REQ_BURST_MAX), rate, burst).validate(q5)
    rng = random.Random(SEED)
    for _ in range(2000):
        plan = random_plan(rng, params=LimiterParams(tick_log2=9))
        for q in range(10):
            plan.validate(LimiterParams(tick_log2=q))
    with pytest.raises(ConfigError) as info:
        Plan(1, 1, 1, 1).validate(P64.capacity)
    assert info.value.field == "params"


@pytest.mark.parametrize("tick_log2", [0, 9])
def test_plan_registers(tick_log2):
    params = LimiterParams(tick_log2=tick_log2)
    plan = Plan(3, 5, 7, 11)
    unit = TOKEN_UNITS >> tick_log2
    # The rate registers hold per-minute rates: 3/s is 180, 7/s is 420.
    regs = dict(req_rate=180, req_cap=5 * unit, cost_rate=420, cost_cap=11 * unit,
                inv_req=-(-(1 << 64) // 180) - 1, inv_cost=U64 // 420)
    assert plan.registers(params) == regs
    model = LimiterModel(params)
    model.write_plan(2, plan)
    assert model.plan_regs(2) == regs and model.plan(2) == plan
    assert Plan.per_minute(1, 1, 1, 1).registers(params)["inv_req"] == U64
    assert Plan(Fraction(1, 2), 2, Fraction(7, 60), 3).registers(params) == dict(
        req_rate=30, req_cap=2 * unit, cost_rate=7, cost_cap=3 * unit, inv_req=U64 // 30, inv_cost=U64 // 7)


def test_write_plan_regs_masks_to_the_register_widths():
    params = LimiterParams(capacity=64, tick_log2=9, req_burst_bits=4, cost_burst_bits=8)
    unit = params.unit
    assert (params.req_bits, params.cost_bits) == ((15 * unit).bit_length(), (255 * unit).bit_length())
    model = LimiterModel(params, LimiterConfig(cost_source=FIXED, cost_fixed=1))
    model.write_plan(1, Plan(1, 1, 1, 1))
    model.write_plan_regs(1, (1 << 30) | 5, (1 << params.req_bits) | 7, (1 << 32) | 9, (1 << params.cost_bits) | 11,
                          (1 << 64) | 13, (3 << 64) | 17)
    assert model.plan_regs(1) == dict(req_rate=5, req_cap=7, cost_rate=9, cost_cap=11, inv_req=13, inv_cost=17)
    assert model.plan(1) is None                             # no longer the Plan written before
    fp = 0x0123456789ABCDEF
    slot = slot_of(params, 0, fp & 7, 0)
    model.write_tenant(slot, fp, 1, True, 0)
    assert (model.state(slot).req_tokens, model.state(slot).cost_tokens) == (7, 11)
    # The masked values decide: both buckets capped at 7 and 11 units, each short, each with a 1-tick wait (an
    # unmasked reciprocal would give one of about 2⁶⁴·deficit / 2⁶⁴ ticks).
    v = model.decide(request(fp), 512 * 3 + 10)
    assert v.status == 429 and v.retry_after_ns == 512 - 10
    assert (model.state(slot).req_tokens, model.state(slot).cost_tokens) == (7, 11)
    # The largest wait register contents give: reciprocal 2⁶⁴−1 with rate 1 (rate 0 is now unlimited), the largest
    # cost, a nearly empty bucket. It is the deficit in ticks, about (2³²−1)·6·10¹⁰ ns: more than 64 bits hold, so
    # retry_after_ns saturates at 2⁶⁴−1 (it used to fit, at most (2³²−1)·10⁹ ns).
    model.config = LimiterConfig(cost_source=FIXED, cost_fixed=COST_MAX)
    model.write_plan_regs(1, 1, 7, 1, 11, U64, U64)
    v = model.decide(request(fp), 512 * 4 + 10)
    assert (COST_MAX * unit - 11) << 9 > U64
    assert v.status == 429 and v.retry_after_ns == U64
    assert LimitVerdict.from_bits(v.to_bits()) == v
    with pytest.raises(ConfigError) as info:
        model.write_plan_regs(64, 0, 0, 0, 0, 0, 0)
    assert info.value.field == "index"


@pytest.mark.parametrize("kwargs,field", [
    ({"unknown_policy": 3}, "unknown_policy"), ({"unknown_policy": "reject"}, "unknown_policy"),
    # 3 is ESTIMATE now: the first value outside the 2-bit field's sources is 4.
    ({"cost_source": 4}, "cost_source"), ({"cost_source": -1}, "cost_source"),
    ({"cost_source": "fixed"}, "cost_source"),
    ({"cost_fixed": COST_MAX + 1}, "cost_fixed"),
    ({"cost_scale": 1 << 32}, "cost_scale"), ({"cost_scale": -1}, "cost_scale"),
    ({"cost_scale_cl": 1 << 32}, "cost_scale_cl"), ({"cost_scale_cl": -1}, "cost_scale_cl"),
])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ConfigError) as info:
        LimiterConfig(**kwargs)
    assert info.value.field == field


def test_config_accepts_enum_values_and_has_no_default_slot():
    assert LimiterConfig(unknown_policy=2, cost_source=1).unknown_policy is UnknownPolicy.PUNT
    assert LimiterConfig(cost_source=3).cost_source is CostSource.ESTIMATE
    reset = LimiterConfig()
    assert (reset.unknown_policy, reset.cost_source, reset.cost_fixed, reset.cost_scale, reset.cost_scale_cl) == (
        UnknownPolicy.REJECT, ESTIMATE, 0, 1 << 16, 1 << 14)
    assert COST_SCALE_CL_RESET == 1 << 14
    with pytest.raises(TypeError):
        LimiterConfig(default_slot=1)
    model = LimiterModel(P64)
    with pytest.raises(ConfigError) as info:
        model.config = "fast"
    assert info.value.field == "config"


def test_model_parameters():
    model = LimiterModel(LimiterParams(capacity=128, plans=5, tick_log2=4))
    assert (model.capacity, model.plans, model.params.tick_log2) == (128, 5, 4)
    assert LimiterModel().params == LimiterParams() and LimiterModel().capacity == 4096
    with pytest.raises(ConfigError) as info:
        LimiterModel(4096)
    assert info.value.field == "params"


@pytest.mark.parametrize("call,field", [
    (lambda m: m.write_plan(8, Plan(1, 1, 1, 1)), "index"), (lambda m: m.write_plan(0, (1, 1, 1, 1)), "plan"),
    (lambda m: m.plan(-1), "index"), (lambda m: m.plan_regs(8), "index"),
])
def test_plan_arguments_name_the_field(call, field):
    model = LimiterModel(LimiterParams(capacity=64, plans=8))
    with pytest.raises(ConfigError) as info:
        call(model)
    assert info.value.field == field


def test_plan_table_rewrite_leaves_tokens_until_the_next_refill():
    model, slot, fp = one_tenant(Plan(10, 10, 100, 100), LimiterConfig(cost_source=FIXED, cost_fixed=1))
    model.write_plan(0, Plan(10, 2, 100, 3))
    assert model.plan(0) == Plan(10, 2, 100, 3) and model.plan(1) is None
    assert model.state(slot).cost_tokens == 100 * UNIT
    model.decide(request(fp), 0)
    assert (model.state(slot).req_tokens, model.state(slot).cost_tokens) == (UNIT, 2 * UNIT)


# -- verdict packing --------------------------------------------------------------------------------------------------

def test_verdict_bits_round_trip_against_the_amaranth_layout():
    rng = random.Random(SEED)
    layout = LimitVerdictLayout.as_shape()
    assert layout.size == 2 + 10 + 1 + 16 + 32 + 64
    for _ in range(500):
        v = LimitVerdict(rng.choice(list(Decision)), rng.randrange(1 << 10), rng.random() < 0.5,
                         rng.randrange(1 << 16), rng.randrange(1 << 32), rng.randrange(1 << 64))
        bits = v.to_bits()
        assert LimitVerdict.from_bits(bits) == v and bits < 1 << layout.size
        const = layout.const({name: getattr(v, name) for name, _ in layout})
        assert isinstance(const, data.Const) and const.as_bits() == bits
    assert LimitVerdict().to_bits() == 0 and LimitVerdict.from_bits(0) == LimitVerdict()
    with pytest.raises(ValueError):
        LimitVerdict(status=1024).to_bits()
    with pytest.raises(ValueError):
        LimitVerdict(retry_after_ns=1 << 64).to_bits()


def test_model_verdicts_fit_the_layout():
    model, slot, fp = one_tenant(Plan(1, 1, 1, 1), LimiterConfig(cost_source=FIXED, cost_fixed=COST_MAX))
    v = model.decide(request(fp), 0)
    assert v.status == 429 and LimitVerdict.from_bits(v.to_bits()) == v


def test_the_default_is_a_tenant_not_a_slot():
    """SET_DEFAULT names the tenant in a slot: it follows the tenant through updates and moves, and a later tenant in
    the same slot does not inherit it."""
    model = LimiterModel(LimiterParams(capacity=64), LimiterConfig(unknown_policy=UnknownPolicy.DEFAULT))
    model.write_plan(0, Plan(10, 10, 10, 10))
    model.write_plan(1, Plan(20, 20, 20, 20))
    fp = 0x0123_4567_89AB_CDE5
    slot = (fp & 7) * 4                                    # half 0, the key's bucket, way 0
    model.set_default(slot)
    assert not model.default_valid, "SET_DEFAULT on an empty slot sets no default"
    model.write_tenant(slot, fp, 0, True, 0)
    assert not model.default_valid, "a tenant written later does not become the default"
    model.set_default(slot)
    assert model.default_valid
    model.write_tenant(slot, fp, 1, True, 0)               # an update keeps it
    assert model.default_valid and model.decide(request(0xDEAD), 0).tenant == slot
    dst = 32 + ((fp >> 32) & 7) * 4 + 1                    # the key's bucket in half 1
    model.move(slot, dst)
    assert (model.default_slot, model.default_valid) == (dst, True)
    assert model.decide(request(0xDEAD), 0).tenant == dst
    model.write_tenant(dst, fp, 0, False, 0)               # invalidated: no default
    assert not model.default_valid and model.decide(request(0xDEAD), 0).status == 401
    model.write_tenant(dst, fp, 0, True, 0)                # the same key added again is a new tenant
    assert not model.default_valid
    # A MOVE onto the default tenant's slot overwrites it: no default.
    model.set_default(dst)
    assert model.default_valid
    other = fp ^ (1 << 40)                                 # same buckets as fp in both halves
    model.write_tenant(slot + 2, other, 0, True, 0)
    model.move(slot + 2, dst)
    assert not model.default_valid and model.default_slot == dst

"""The limiter's model (wirespeed.host.models.limiter.LimiterModel) against docs/limiter.md, rule by rule.

The centre is a differential test: an ideal token bucket written here in rational arithmetic (whole tokens,
``min(burst, tokens + Δt·rate/10⁹)``, no clamp, no fixed point) must make the same decision as the model on every
one of a million seeded requests, and hold exactly the model's bucket units divided by the unit. With a time quantum
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

from wirespeed.hdl.limiter.layouts import (COST_BURST_MAX, COST_MAX, COST_RATE_MAX, DT_MAX_NS, NANO, PLANS,
                                           REQ_BURST_MAX, REQ_RATE_MAX, CostSource, Decision, LimiterParams, TableOp,
                                           UnknownPolicy)
from wirespeed.hdl.limiter.layouts import LimitVerdict as LimitVerdictLayout
from wirespeed.hdl.parser.layouts import KeySource
from wirespeed.host.errors import ConfigError
from wirespeed.host.models.limiter import (U64, LimiterConfig, LimiterModel, LimitVerdict, Plan, TableResult,
                                           TenantState, wait_ticks)
from wirespeed.host.errors import TableFull
from wirespeed.host.placement import TenantPlacement
from wirespeed.host.models.parser import Descriptor

SEED = 20251127
SEEDED = settings(derandomize=True, deadline=None, max_examples=300)
ALLOW, REJECT, PUNT = Decision.ALLOW, Decision.REJECT, Decision.PUNT
WRITE, MOVE, READ, SET_DEFAULT = TableOp.WRITE, TableOp.MOVE, TableOp.READ, TableOp.SET_DEFAULT
BY_LENGTH = CostSource.CONTENT_LENGTH
BY_EXTRA = CostSource.EXTRA
#: cost = content_length: the differential test draws costs through the descriptor.
COST_IS_LENGTH = LimiterConfig(cost_source=BY_LENGTH, cost_scale=1 << 16)
P64 = LimiterParams(capacity=64)


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


def max_burst(rate: int, limit: int, params=P64) -> int:
    """The largest burst that refills from empty in under 2⁴⁸ ns and within ``params``' elapsed-time clamp."""
    return min(limit, ((1 << 48) * rate - 1) // NANO, params.dt_max * rate // params.unit)


def random_plan(rng: random.Random, req_rate=None, cost_rate=None, params=P64) -> Plan:
    req_rate = req_rate or log_uniform(rng, 1, REQ_RATE_MAX)
    cost_rate = cost_rate or log_uniform(rng, 1, COST_RATE_MAX)
    return Plan(req_rate, log_uniform(rng, 1, max_burst(req_rate, REQ_BURST_MAX, params)),
                cost_rate, log_uniform(rng, 1, max_burst(cost_rate, COST_BURST_MAX, params)))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def key_for(params: LimiterParams, b0: int, b1: int, ident: int) -> int:
    """A fingerprint with candidate buckets b0 (half 0) and b1 (half 1); ``ident`` sits in bits no candidate reads."""
    return (ident << 48) | (b1 << 32) | b0


def slot_of(params: LimiterParams, half: int, bucket: int, way: int) -> int:
    return half * params.capacity // 2 + bucket * 4 + way


# -- the ideal bucket -------------------------------------------------------------------------------------------------

class IdealTenant:
    """Two token buckets in whole tokens, in exact rational arithmetic, refilled over the elapsed time."""

    def __init__(self, plan: Plan, now_ns: int):
        self.req_rate, self.req_burst = plan.req_rate, Fraction(plan.req_burst)
        self.cost_rate, self.cost_burst = plan.cost_rate, Fraction(plan.cost_burst)
        self.req, self.cost = self.req_burst, self.cost_burst
        self.last = now_ns

    def decide(self, cost: int, now_ns: int) -> bool:
        dt = now_ns - self.last
        self.last = now_ns
        self.req = min(self.req_burst, self.req + Fraction(dt * self.req_rate, NANO))
        self.cost = min(self.cost_burst, self.cost + Fraction(dt * self.cost_rate, NANO))
        if self.req >= 1 and self.cost >= cost:
            self.req -= 1
            self.cost -= cost
            return True
        return False


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
        scale = log_uniform(rng, 1, REQ_RATE_MAX)
        tenants = []
        tick_now = (now >> tick_log2) << tick_log2
        for i in range(6):
            req_rate = max(1, min(REQ_RATE_MAX, int(scale * 2 ** rng.uniform(-2, 2))))
            plan = random_plan(rng, req_rate=req_rate, params=params)
            model.write_plan(i, plan)
            fp = rng.getrandbits(64)
            if segment:
                table.remove(tenants_prev[i][0], now)
            table.add(fp, i, now)
            per_request = plan.cost_rate / plan.req_rate
            menu = sorted({min(COST_MAX, int(per_request * rng.uniform(0, 2))) for _ in range(12)}
                          | {0, plan.cost_burst, min(COST_MAX, plan.cost_burst + 1)})
            tenants.append((fp, IdealTenant(plan, tick_now), [(c, request(fp, c)) for c in menu],
                            max(1, NANO // plan.req_rate // 6)))
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
    model, slot, fp = one_tenant(Plan(1000, 100, 10**6, 10**6), LimiterConfig(cost_fixed=3))
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
                                 LimiterConfig(cost_fixed=3), now_ns=500)
    state = model.state(slot)
    assert (state.req_tokens, state.cost_tokens, state.last_ns) == (3 * NANO, 10 * NANO, 500)
    verdicts = [model.decide(request(fp), 500) for _ in range(4)]
    assert [v.decision for v in verdicts] == [ALLOW, ALLOW, ALLOW, REJECT]
    assert [v.status for v in verdicts] == [200, 200, 200, 429]
    assert all(v.tenant_found and v.tenant == slot and v.cost == 3 for v in verdicts)
    assert [v.retry_after_ns for v in verdicts] == [0, 0, 0, 2 * NANO]   # 1 s for a request, 2 s for 2 units
    state = model.state(slot)
    assert (state.req_tokens, state.cost_tokens, state.allowed, state.rejected) == (0, NANO, 3, 1)


def test_reject_keeps_refilled_tokens_and_moves_last():
    model, slot, fp = one_tenant(Plan(req_rate=1000, req_burst=1, cost_rate=1, cost_burst=1))
    assert model.decide(request(fp), 0).decision is ALLOW
    v = model.decide(request(fp), 400_000)                  # 0.4 requests back
    assert v.status == 429 and model.state(slot).req_tokens == 400_000 * 1000
    assert model.state(slot).last_ns == 400_000
    assert v.retry_after_ns in (600_000, 600_001)


def test_ticks_quantize_time_units_and_last():
    """q = 9: a tick is 512 ns, a token 1 953 125 units, and a bucket gains ``rate`` units per tick."""
    params = LimiterParams(capacity=64, tick_log2=9)
    unit = 1_953_125
    assert params.unit == unit
    model, slot, fp = one_tenant(Plan(req_rate=1000, req_burst=2, cost_rate=10, cost_burst=5),
                                 LimiterConfig(cost_fixed=1), now_ns=1000, params=params)
    state = model.state(slot)
    assert (state.req_tokens, state.cost_tokens, state.last_ns) == (2 * unit, 5 * unit, 512)   # tick 1
    assert model.decide(request(fp), 1023).decision is ALLOW                  # still tick 1: no refill
    assert (model.state(slot).req_tokens, model.state(slot).last_ns) == (unit, 512)
    assert model.decide(request(fp), 1024 + 511).decision is ALLOW            # tick 2: one tick of refill
    state = model.state(slot)
    assert (state.req_tokens, state.cost_tokens, state.last_ns) == (1000, 3 * unit + 10, 1024)
    v = model.decide(request(fp), 1024 + 100)
    # The request bucket is short by unit − 1000; 1000 units per tick: 1953 ticks, counted from tick 2.
    deficit = unit - 1000
    wait = wait_ticks(deficit, Plan(1000, 1, 1, 1).inv_req_rate)
    assert wait == ceil_div(deficit, 1000) == 1953
    assert v.status == 429 and v.retry_after_ns == (wait << 9) - 100
    assert model.decide(request(fp), 1024 + 100 + v.retry_after_ns).decision is ALLOW


def test_refill_clamps_elapsed_time_and_caps_at_burst():
    plan = Plan(req_rate=1, req_burst=281_474, cost_rate=1, cost_burst=281_474)   # 2.8·10¹⁴ ns to refill
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_fixed=281_474))
    assert model.decide(request(fp), 0).decision is ALLOW              # cost bucket now empty
    v = model.decide(request(fp), DT_MAX_NS + 10**9)
    assert v.decision is ALLOW                                          # the clamp still refills fully
    assert model.state(slot).cost_tokens == 0
    # Time going backwards is a 64-bit wrap: a full refill (documented choice).
    assert model.decide(request(fp), 5).decision is ALLOW
    state = model.state(slot)
    assert (state.req_tokens, state.cost_tokens, state.last_ns) == (281_473 * NANO, 0, 5)


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
    """The valid plan closest to the 2⁴⁸-ns rule needs 2⁴⁸ − 6.34 ns from empty: the clamp at 2⁴⁸ − 1 suffices,
    7 ns less would not."""
    plan = Plan(1, 1, 13_869, 3_903_776_452)
    assert (1 << 48) - 7 < plan.cost_burst * NANO / plan.cost_rate < (1 << 48) - 6
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_fixed=plan.cost_burst))
    model.debit(fp, plan.cost_burst)
    short = copy.deepcopy(model)
    assert model.decide(request(fp), 1 << 60).decision is ALLOW
    assert short.decide(request(fp), (1 << 48) - 7).status == 429


def test_cost_above_the_burst_is_never_allowed():
    plan = Plan(10, 10, 10, 10)
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_fixed=11))
    for t in (0, 10**12, 10**15):
        v = model.decide(request(fp), t)
        # Short by 1 token at 10/s, a wait that cannot work: the specification gives 429 and the formula's wait.
        assert v.status == 429 and v.retry_after_ns == wait_ticks(NANO, plan.inv_cost_rate) == 100_000_000


# -- retry_after_ns ---------------------------------------------------------------------------------------------------

def test_retry_after_request_bucket_is_ceil_or_one_more_and_never_early():
    rng = random.Random(SEED)
    exact = late = 0
    for trial in range(3000):
        plan = Plan(log_uniform(rng, 1, REQ_RATE_MAX), rng.randint(1, 4), 1, 1)
        model, slot, fp = one_tenant(plan, LimiterConfig(cost_fixed=0))
        for _ in range(plan.req_burst):
            assert model.decide(request(fp), 0).decision is ALLOW
        t = rng.randrange(0, ceil_div(NANO, plan.req_rate))               # still short of one request
        v = model.decide(request(fp), t)
        assert v.status == 429, f"seed={SEED} trial {trial}"
        deficit = NANO - model.state(slot).req_tokens
        need = ceil_div(deficit, plan.req_rate)
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
    plan = random_plan(rng, req_rate=REQ_RATE_MAX)
    plan = Plan(REQ_RATE_MAX, REQ_BURST_MAX // 4, plan.cost_rate, plan.cost_burst)
    cost = rng.randint(1, plan.cost_burst)
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_fixed=cost))
    model.debit(fp, plan.cost_burst)
    model.refund(fp, rng.randrange(0, cost))
    t = rng.randrange(0, max(1, (cost * NANO - model.state(slot).cost_tokens) // plan.cost_rate))
    return plan, cost, model, slot, fp, t


def test_retry_after_cost_bucket_is_ceil_or_one_more_while_deficit_times_rate_fits_64_bits():
    """Where ``deficit·cost_rate ≤ 2⁶⁴`` the floored reciprocal loses less than 1 ns, so the ``+ 1`` covers it."""
    rng = random.Random(SEED)
    tested = 0
    while tested < 3000:
        plan, cost, model, slot, fp, t = cost_bucket_case(rng)
        v = model.decide(request(fp), t)
        assert v.status == 429
        deficit = cost * NANO - model.state(slot).cost_tokens
        if deficit * plan.cost_rate > 1 << 64:
            continue
        tested += 1
        need = ceil_div(deficit, plan.cost_rate)
        assert v.retry_after_ns - need in (0, 1), f"seed={SEED}: {plan} cost {cost} deficit {deficit}"
        assert model.decide(request(fp), t + v.retry_after_ns).decision is ALLOW, f"seed={SEED}: {plan}"


def late_cost_case():
    """A valid plan and cost where ``(deficit − 1)·rate ≥ 2⁶⁴``, so that the wait may be one tick late."""
    rate = 1_000_003                                     # 2⁶⁴ mod rate is large
    inv = U64 // rate
    for cost in range(4_000_000_000, 3_900_000_000, -1):
        deficit = cost * NANO                            # from an empty bucket
        if wait_ticks(deficit, inv) > ceil_div(deficit, rate):
            return Plan(1000, 10, rate, 4_000_000_000), cost
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
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_fixed=cost))
    model.debit(fp, plan.cost_burst)
    v = model.decide(request(fp), 0)
    assert v.status == 429
    assert v.retry_after_ns == wait_ticks(cost * NANO, plan.inv_cost_rate) == ceil_div(cost * NANO, plan.cost_rate) + 1
    assert model.decide(request(fp), v.retry_after_ns).decision is ALLOW


def test_retry_after_rate_1_is_exact():
    plan = Plan(1, 1, 1, 1)
    assert plan.inv_req_rate == plan.inv_cost_rate == U64
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_fixed=1))
    assert model.decide(request(fp), 0).decision is ALLOW
    for t in (0, 1, 123_456_789, NANO - 1):
        v = model.decide(request(fp), t)
        assert v.retry_after_ns == NANO - t
        assert copy.deepcopy(model).decide(request(fp), t + v.retry_after_ns - 1).decision is REJECT
    assert model.decide(request(fp), NANO).decision is ALLOW


def test_retry_after_is_the_larger_wait_and_a_full_bucket_waits_0():
    plan = Plan(req_rate=2, req_burst=1, cost_rate=4, cost_burst=8)
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_fixed=0))
    assert model.decide(request(fp), 0).decision is ALLOW
    v = model.decide(request(fp), 0)                      # request short by 1: 0.5 s; cost not short
    # A deficit the rate divides: exactly ⌈deficit/rate⌉.
    assert v.retry_after_ns == wait_ticks(NANO, plan.inv_req_rate) == NANO // 2
    model.config = LimiterConfig(cost_fixed=8)
    model.debit(fp, 8)
    v = model.decide(request(fp), NANO // 2)              # request full again; cost short by 6 units at 4/s
    assert v.retry_after_ns == 3 * NANO // 2
    model.config = LimiterConfig(cost_fixed=0)
    assert model.decide(request(fp), NANO // 2).decision is ALLOW      # empties the request bucket
    model.debit(fp, 8)
    model.config = LimiterConfig(cost_fixed=8)
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
        rate = draw(st.one_of(st.integers(1, 1000), st.integers(1, REQ_RATE_MAX)), label="req_rate")
        plan = Plan(rate, draw(st.integers(1, min(4, max_burst(rate, REQ_BURST_MAX, params)))), 1, 1)
        cost, deficit = 0, unit                                  # after draining the bursts at t0
    else:
        rate = draw(st.one_of(st.integers(1, 1000), st.integers(1, COST_RATE_MAX)), label="cost_rate")
        burst = draw(st.integers(1, max_burst(rate, COST_BURST_MAX, params)), label="cost_burst")
        plan = Plan(REQ_RATE_MAX, 1, rate, burst)
        cost = draw(st.integers(1, burst), label="cost")
        left = draw(st.integers(0, cost - 1), label="left")     # cost units left after the drain
        deficit = (cost - left) * unit
    gap_ticks = draw(st.integers(0, ceil_div(deficit, rate) - 1), label="gap_ticks")
    phase = draw(st.integers(0, (1 << q) - 1), label="phase")
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_fixed=cost), now_ns=t0, params=params)
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
    exception is a huge cost deficit, ``(deficit − 1)·rate ≥ 2⁶⁴``, which may wait one tick more. Never early."""
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
        assert kind == "cost" and wait in (need, need + 1)
    first = ((t1 >> q) + need) << q                              # the first ns the bucket suffices
    for now_ns, decision in ((first - 1, REJECT), (first, ALLOW), (end, ALLOW)):
        assert copy.deepcopy(model).decide(request(fp), now_ns).decision is decision, now_ns - t1
    if wait == need:
        assert end == first
        assert copy.deepcopy(model).decide(request(fp), end - 1).decision is REJECT


def test_retry_after_at_ticks_counts_from_now_to_the_tick_start():
    """q = 9, rate 1 (exact reciprocal): the wait is deficit ticks, minus how far ``now`` is into its tick."""
    params = LimiterParams(capacity=64, tick_log2=9)
    model, slot, fp = one_tenant(Plan(1, 1, 1, 1), LimiterConfig(cost_fixed=0), params=params)
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
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_fixed=2))
    model.set_default(slot)
    assert model.default_slot == slot and model.default_valid
    for desc in (request(stranger), request(None), request(fp, source=KeySource.NONE)):
        # A descriptor without a key is unknown even when its key_fp field matches a tenant.
        model.config = LimiterConfig(unknown_policy=UnknownPolicy.REJECT, cost_fixed=2)
        assert model.decide(desc, 0) == LimitVerdict(REJECT, 401, False, 0, 2, 0)
        model.config = LimiterConfig(unknown_policy=UnknownPolicy.PUNT, cost_fixed=2)
        assert model.decide(desc, 0) == LimitVerdict(PUNT, 0, False, 0, 2, 0)
        model.config = LimiterConfig(unknown_policy=UnknownPolicy.DEFAULT, cost_fixed=2)
        assert model.decide(desc, 0) == LimitVerdict(ALLOW, 200, False, slot, 2, 0)
    assert (model.reject_401, model.punt, model.allow, model.reject_429) == (3, 3, 3, 0)
    assert model.state(slot).cost_tokens == 4 * NANO and model.state(slot).allowed == 3
    # The default slot's buckets run dry like any tenant's.
    model.config = LimiterConfig(unknown_policy=UnknownPolicy.DEFAULT, cost_fixed=5)
    v = model.decide(request(None), 0)
    assert (v.decision, v.status, v.tenant_found, v.tenant) == (REJECT, 429, False, slot)
    assert v.retry_after_ns == wait_ticks(NANO, plan.inv_cost_rate)
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
    (LimiterConfig(cost_fixed=0), request(1, 10**6), 0),
    (LimiterConfig(cost_fixed=COST_MAX), request(1, 5), COST_MAX),
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
    assert model.state(slot).cost_tokens == before[0][slot].cost_tokens == 40 * NANO
    model.cmd_unknown = U64
    model.debit(other, 1)
    assert model.cmd_unknown == 0                           # 64 bits wrap


def test_refund_then_decide_spends_the_refund():
    model, slot, fp = one_tenant(Plan(10, 10, 1, 100), LimiterConfig(cost_fixed=100))
    assert model.decide(request(fp), 0).decision is ALLOW
    assert model.decide(request(fp), 0).status == 429
    model.refund(fp, 100)
    assert model.decide(request(fp), 0).decision is ALLOW


def test_refund_caps_at_the_plan_of_the_slot_even_below_the_tokens():
    """A plan rewritten with a smaller cap: a refund lowers the tokens to the new cap (min with the cap)."""
    model, slot, fp = one_tenant(Plan(10, 10, 100, 100))
    model.write_plan(0, Plan(10, 10, 100, 30))
    assert model.state(slot).cost_tokens == 100 * NANO
    model.refund(fp, 1)
    assert model.state(slot).cost_tokens == 30 * NANO


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
    model, slot, fp = one_tenant(Plan(10, 10, 100, 100), LimiterConfig(cost_fixed=5), now_ns=1000)
    model.decide(request(fp), 2000)
    model.write_plan(1, Plan(20, 4, 1000, 200))
    model.write_tenant(slot, fp, 1, True, 10**9)           # an update: same key
    state = model.state(slot)
    assert (state.plan, state.req_tokens, state.cost_tokens) == (1, 4 * NANO, 95 * NANO)
    assert (state.last_ns, state.allowed) == (2000, 1)
    # The time since last_ns refills at the new rates.
    model.decide(request(fp), 2000 + 10**6)
    assert model.state(slot).cost_tokens == 95 * NANO + 10**6 * 1000 - 5 * NANO


def test_new_key_in_a_slot_starts_over():
    model, slot, fp = one_tenant(Plan(10, 10, 100, 100), LimiterConfig(cost_fixed=5))
    model.decide(request(fp), 0)
    other = fp ^ (1 << 60)                                  # same buckets: it may take the slot
    model.write_tenant(slot, other, 0, True, 555)           # a different key: a new tenant
    state = model.state(slot)
    assert (state.tag, state.req_tokens, state.cost_tokens, state.last_ns, state.allowed, state.rejected) == (
        other, 10 * NANO, 100 * NANO, 555, 0, 0)
    assert model.lookup(fp) is None and model.lookup(other) == slot
    model.write_tenant(slot, other, 0, False, 600)
    model.write_tenant(slot, other, 0, True, 700)          # re-added after removal: new again
    assert model.state(slot).last_ns == 700


def test_invalidate_clears_only_the_valid_bit():
    model, slot, fp = one_tenant(Plan(10, 10, 100, 100), LimiterConfig(cost_fixed=5), now_ns=100)
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
    assert model.state(slot) == TenantState(True, fp, 1, 10 * NANO, 100 * NANO, 5000, 0, 0)


def test_unwritten_plans_are_zero_and_not_checked():
    model = LimiterModel(P64, LimiterConfig(cost_fixed=0))
    assert model.plan(3) is None
    assert model.plan_regs(3) == dict(req_rate=0, req_cap=0, cost_rate=0, cost_cap=0, inv_req=0, inv_cost=0)
    model.write_tenant(4, 1, 3, True, 0)                    # slot 4: half 0, bucket 1; a plan never written
    assert model.state(4) == TenantState(True, 1, 3, 0, 0, 0, 0, 0)
    v = model.decide(request(1), 10**12)                    # rate 0, cap 0: never allowed; reciprocal 0: 1 tick
    assert (v.status, v.retry_after_ns) == (429, 1)


def test_relocations_keep_bucket_state_and_counters():
    """Fill a 64-slot table through the placement; each tenant's state survives every move it makes."""
    rng = random.Random(SEED)
    table = Table(config=LimiterConfig(cost_fixed=1))
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
        assert state.allowed == n and state.req_tokens == (100 - n) * NANO and state.tag == f
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
    model = LimiterModel(P64, LimiterConfig(unknown_policy=UnknownPolicy.DEFAULT, cost_fixed=1))
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
    model, slot, fp = one_tenant(Plan(1, 2, 10, 10), LimiterConfig(cost_fixed=1))
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
    model, slot, fp = one_tenant(Plan(1, 11, 10**6, 10**6), LimiterConfig(cost_fixed=1), params=params)
    for _ in range(11 + 13):
        model.decide(request(fp), 0)
    state = model.state(slot)
    assert (state.allowed, state.rejected) == (11 % (1 << counter_bits), 13 % (1 << counter_bits))
    assert (model.allow, model.reject_429) == (11, 13)      # the global counters are 64 bits
    model.move(slot, slot_of(params, 1, (fp >> 32) & 7, 3))
    assert model.state(model.lookup(fp)).allowed == 11 % (1 << counter_bits)


# -- plans and configuration ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,field", [
    ({"req_rate": 0}, "req_rate"), ({"req_rate": REQ_RATE_MAX + 1}, "req_rate"), ({"req_rate": 1.0}, "req_rate"),
    ({"req_rate": True}, "req_rate"), ({"req_burst": 0}, "req_burst"), ({"req_burst": REQ_BURST_MAX + 1}, "req_burst"),
    ({"cost_rate": 0}, "cost_rate"), ({"cost_rate": COST_RATE_MAX + 1}, "cost_rate"),
    ({"cost_burst": 0}, "cost_burst"), ({"cost_burst": COST_BURST_MAX + 1}, "cost_burst"),
    ({"cost_burst": "5"}, "cost_burst"),
    # Refill from empty within 2⁴⁸ ns: burst·10⁹ < 2⁴⁸·rate.
    ({"req_rate": 1, "req_burst": 281_475}, "req_burst"), ({"cost_rate": 1, "cost_burst": 281_475}, "cost_burst"),
    ({"cost_rate": 15_258, "cost_burst": COST_BURST_MAX}, "cost_burst"),
    ({"req_rate": 3, "req_burst": REQ_BURST_MAX}, "req_burst"),
])
def test_plan_validation_names_the_field(kwargs, field):
    values = dict(req_rate=10, req_burst=10, cost_rate=1000, cost_burst=1000) | kwargs
    with pytest.raises(ConfigError) as info:
        Plan(**values)
    assert info.value.field == field and field in str(info.value)


def test_plan_limits_and_reciprocals():
    Plan(1, 281_474, 1, 281_474)                            # 281 474·10⁹ < 2⁴⁸ = 281 474 976 710 656
    Plan(REQ_RATE_MAX, REQ_BURST_MAX, COST_RATE_MAX, COST_BURST_MAX)
    Plan(4, REQ_BURST_MAX, 15_259, COST_BURST_MAX)           # the slowest rates that allow the largest bursts
    for rate in (1, 2, 3, 7, 1000, REQ_RATE_MAX, COST_RATE_MAX):
        plan = Plan(min(rate, REQ_RATE_MAX), 1, rate, 1)
        assert plan.inv_cost_rate == -(-(1 << 64) // rate) - 1 == U64 // rate
        assert plan.inv_req_rate == U64 // plan.req_rate
    assert Plan(1, 1, 2, 1).inv_cost_rate == (1 << 63) - 1


@pytest.mark.parametrize("params,plan,field", [
    (LimiterParams(req_burst_bits=10), Plan(10, 1024, 10, 10), "req_burst"),
    (LimiterParams(cost_burst_bits=16), Plan(10, 10, 10**6, 1 << 16), "cost_burst"),
    (LimiterParams(req_burst_bits=1), Plan(10, 2, 10, 10), "req_burst"),
    # q = 9: a tick clamp of 2³⁹−1 ticks. 193 373 309 cost units at 687/s refill within 2⁴⁸ ns but need
    # 193 373 309·1 953 125 > (2³⁹−1)·687 units of refill: they would never refill completely.
    (LimiterParams(tick_log2=9), Plan(1, 1, 687, 193_373_309), "cost_burst"),
    (LimiterParams(tick_log2=3), Plan(1, 1, 13_869, 3_903_776_452), "cost_burst"),
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
    assert Plan(1, 1, 687, 193_373_308).validate(LimiterParams(tick_log2=9))
    assert Plan(1, 1, 13_869, 3_903_776_452).validate(LimiterParams(tick_log2=2))
    # At q ≤ 2 the tick clamp adds nothing to the 2⁴⁸-ns rule; beyond, it binds at the largest bursts only.
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
    unit = NANO >> tick_log2
    regs = dict(req_rate=3, req_cap=5 * unit, cost_rate=7, cost_cap=11 * unit,
                inv_req=-(-(1 << 64) // 3) - 1, inv_cost=U64 // 7)
    assert plan.registers(params) == regs
    model = LimiterModel(params)
    model.write_plan(2, plan)
    assert model.plan_regs(2) == regs and model.plan(2) == plan
    assert Plan(1, 1, 1, 1).registers(params)["inv_req"] == U64


def test_write_plan_regs_masks_to_the_register_widths():
    params = LimiterParams(capacity=64, tick_log2=9, req_burst_bits=4, cost_burst_bits=8)
    unit = params.unit
    assert (params.req_bits, params.cost_bits) == ((15 * unit).bit_length(), (255 * unit).bit_length())
    model = LimiterModel(params, LimiterConfig(cost_fixed=1))
    model.write_plan(1, Plan(1, 1, 1, 1))
    model.write_plan_regs(1, (1 << 24) | 5, (1 << params.req_bits) | 7, (1 << 32) | 9, (1 << params.cost_bits) | 11,
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
    # The largest wait any register contents give: reciprocal 2⁶⁴−1 and rate 0, the largest cost, an empty bucket.
    # It is the deficit in ticks, (2³²−1)·10⁹ ns at most: retry_after_ns always fits its 64 bits.
    model.config = LimiterConfig(cost_fixed=COST_MAX)
    model.write_plan_regs(1, 0, 7, 0, 11, U64, U64)
    v = model.decide(request(fp), 512 * 4 + 10)
    assert v.retry_after_ns == ((COST_MAX * unit - 11) << 9) - 10 < 1 << 62
    assert LimitVerdict.from_bits(v.to_bits()) == v
    with pytest.raises(ConfigError) as info:
        model.write_plan_regs(64, 0, 0, 0, 0, 0, 0)
    assert info.value.field == "index"


@pytest.mark.parametrize("kwargs,field", [
    ({"unknown_policy": 3}, "unknown_policy"), ({"unknown_policy": "reject"}, "unknown_policy"),
    ({"cost_source": 3}, "cost_source"), ({"cost_fixed": COST_MAX + 1}, "cost_fixed"),
    ({"cost_scale": 1 << 32}, "cost_scale"), ({"cost_scale": -1}, "cost_scale"),
])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ConfigError) as info:
        LimiterConfig(**kwargs)
    assert info.value.field == field


def test_config_accepts_enum_values_and_has_no_default_slot():
    assert LimiterConfig(unknown_policy=2, cost_source=1).unknown_policy is UnknownPolicy.PUNT
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
    model, slot, fp = one_tenant(Plan(10, 10, 100, 100), LimiterConfig(cost_fixed=1))
    model.write_plan(0, Plan(10, 2, 100, 3))
    assert model.plan(0) == Plan(10, 2, 100, 3) and model.plan(1) is None
    assert model.state(slot).cost_tokens == 100 * NANO
    model.decide(request(fp), 0)
    assert (model.state(slot).req_tokens, model.state(slot).cost_tokens) == (NANO, 2 * NANO)


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
    model, slot, fp = one_tenant(Plan(1, 1, 1, 1), LimiterConfig(cost_fixed=COST_MAX))
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

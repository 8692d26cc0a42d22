"""The limiter's model (wirespeed.host.limiter.LimiterModel) against docs/limiter.md, rule by rule.

The centre is a differential test: an ideal token bucket written here in rational arithmetic (whole tokens,
``min(burst, tokens + Δt·rate/10⁹)``, no clamp, no fixed point) must make the same decision as the model on every
one of a million seeded requests, and hold exactly the model's nano-token counts divided by 10⁹.
"""

import copy
import random
import time
from fractions import Fraction

import pytest
from amaranth.lib import data

from wirespeed.hdl.limiter_layouts import (COST_BURST_MAX, COST_MAX, COST_RATE_MAX, DT_MAX_NS, NANO, PLANS,
                                           REQ_BURST_MAX, REQ_RATE_MAX, CostSource, Decision, UnknownPolicy)
from wirespeed.hdl.limiter_layouts import LimitVerdict as LimitVerdictLayout
from wirespeed.hdl.parser_layouts import KeySource
from wirespeed.host.errors import ConfigError
from wirespeed.host.limiter import (U64, LimiterConfig, LimiterModel, LimitVerdict, Plan, TableFull,
                                    TenantPlacement)
from wirespeed.host.parser import Descriptor

SEED = 20251127
ALLOW, REJECT, PUNT = Decision.ALLOW, Decision.REJECT, Decision.PUNT
BY_LENGTH = CostSource.CONTENT_LENGTH
#: cost = content_length: the differential test draws costs through the descriptor.
COST_IS_LENGTH = LimiterConfig(cost_source=BY_LENGTH, cost_scale=1 << 16)


def request(fp=None, content_length=None, source=KeySource.AUTHORIZATION) -> Descriptor:
    """A descriptor with key ``fp`` (None: no key) and a content-length (None: absent)."""
    return Descriptor(key_source=KeySource.NONE if fp is None else source, key_fp=fp or 0,
                      cl_present=content_length is not None, content_length=content_length or 0)


class Table:
    """A LimiterModel driven the way the driver drives it: slots from a TenantPlacement, moves copy then invalidate."""

    def __init__(self, capacity=64, config=LimiterConfig()):
        self.model = LimiterModel(capacity, config=config)
        self.placement = TenantPlacement(capacity)

    def add(self, fp: int, plan: int, now_ns: int) -> int:
        slot, moves = self.placement.insert(fp)
        for mover, old, new in moves:
            self.model.move(old, new)                   # one commit: copy and invalidate
            assert self.model.lookup(mover) == new and not self.model.state(old).valid
        self.model.write_tenant(slot, fp, plan, True, now_ns)
        return slot

    def remove(self, fp: int, now_ns: int):
        self.model.write_tenant(self.placement.remove(fp), fp, 0, False, now_ns)


def one_tenant(plan: Plan, config=LimiterConfig(), fp=0x0123456789ABCDEF, now_ns=0):
    table = Table(config=config)
    table.model.write_plan(0, plan)
    slot = table.add(fp, 0, now_ns)
    return table.model, slot, fp


def log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    """An integer in lo..hi, spread evenly over the orders of magnitude."""
    return max(lo, min(hi, int(2 ** rng.uniform(lo.bit_length() - 1, hi.bit_length()))))


def max_burst(rate: int, limit: int) -> int:
    """The largest burst that refills from empty in under 2⁴⁸ ns."""
    return min(limit, ((1 << 48) * rate - 1) // NANO)


def random_plan(rng: random.Random, req_rate=None, cost_rate=None) -> Plan:
    req_rate = req_rate or log_uniform(rng, 1, REQ_RATE_MAX)
    cost_rate = cost_rate or log_uniform(rng, 1, COST_RATE_MAX)
    return Plan(req_rate, log_uniform(rng, 1, max_burst(req_rate, REQ_BURST_MAX)),
                cost_rate, log_uniform(rng, 1, max_burst(cost_rate, COST_BURST_MAX)))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# -- the ideal bucket -------------------------------------------------------------------------------------------------

class IdealTenant:
    """Two token buckets in whole tokens, in exact rational arithmetic, refilled over the true elapsed time."""

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


DECISIONS = 1_000_000
SEGMENT = 20_000


def test_model_matches_ideal_bucket_on_a_million_decisions():
    """Segments of 20 000 requests over 6 tenants. Each segment draws new plans around one random rate scale, so
    that allows and rejects mix, and replaces the tenants (new tenants start full). Gaps are random, with 5 % back to
    back and 0.02 % beyond the 2⁴⁸-ns clamp; costs range up to one more than the cost burst."""
    rng = random.Random(SEED)
    table = Table(capacity=64, config=COST_IS_LENGTH)
    model = table.model
    now = 0
    allowed = rejected = 0
    start = time.perf_counter()
    for segment in range(DECISIONS // SEGMENT):
        scale = log_uniform(rng, 1, REQ_RATE_MAX)
        tenants = []
        for i in range(6):
            req_rate = max(1, min(REQ_RATE_MAX, int(scale * 2 ** rng.uniform(-2, 2))))
            plan = random_plan(rng, req_rate=req_rate)
            model.write_plan(i, plan)
            fp = rng.getrandbits(64)
            if segment:
                table.remove(tenants_prev[i][0], now)
            table.add(fp, i, now)
            per_request = plan.cost_rate / plan.req_rate
            menu = sorted({min(COST_MAX, int(per_request * rng.uniform(0, 2))) for _ in range(12)}
                          | {0, plan.cost_burst, min(COST_MAX, plan.cost_burst + 1)})
            tenants.append((fp, IdealTenant(plan, now), [(c, request(fp, c)) for c in menu],
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
            ok = ideal.decide(cost, now)
            assert (verdict.decision is ALLOW) == ok, f"seed={SEED} segment {segment}: {verdict} vs ideal {ok}"
            state = model.state(verdict.tenant)
            assert state.req_tokens == ideal.req * NANO and state.cost_tokens == ideal.cost * NANO, (
                f"seed={SEED} segment {segment}: model {state} vs ideal req={ideal.req} cost={ideal.cost}")
            if ok:
                allowed += 1
            else:
                rejected += 1
    elapsed = time.perf_counter() - start
    assert now < 1 << 64
    assert allowed + rejected == DECISIONS == model.allow + model.reject_429
    print(f"\nseed={SEED}: {DECISIONS} decisions identical to the ideal ({allowed} allowed, {rejected} rejected) "
          f"in {elapsed:.1f} s with the ideal")
    assert allowed > DECISIONS // 10 and rejected > DECISIONS // 10


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


def test_the_slowest_valid_bucket_refills_fully_at_the_clamp():
    """The valid plan closest to the 2⁴⁸-ns rule needs 2⁴⁸ − 6.34 ns from empty: the clamp at 2⁴⁸ − 1 suffices,
    7 ns less would not."""
    plan = Plan(1, 1, 13_869, 3_903_776_452)
    assert (1 << 48) - 7 < plan.cost_burst * NANO / plan.cost_rate < (1 << 48) - 6
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_fixed=plan.cost_burst))
    model.debit(slot, plan.cost_burst)
    short = copy.deepcopy(model)
    assert model.decide(request(fp), 1 << 60).decision is ALLOW
    assert short.decide(request(fp), (1 << 48) - 7).status == 429


def test_cost_above_the_burst_is_never_allowed():
    plan = Plan(10, 10, 10, 10)
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_fixed=11))
    for t in (0, 10**12, 10**15):
        v = model.decide(request(fp), t)
        # Short by 1 token at 10/s, a wait that cannot work: the specification gives 429 and the formula's wait.
        assert v.status == 429 and v.retry_after_ns == ((NANO * plan.inv_cost_rate) >> 64) + 1 == 100_000_001


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
    model.debit(slot, plan.cost_burst)
    model.refund(slot, rng.randrange(0, cost))
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


def early_cost_case():
    """A valid plan and cost where a wait computed with ⌊2⁶⁴/rate⌋ would be one ns short of ⌈deficit/rate⌉ (why the
    specification rounds the reciprocal up)."""
    rate = 1_000_003                                     # 2⁶⁴ mod rate is large
    inv = (1 << 64) // rate
    for cost in range(4_000_000_000, 3_900_000_000, -1):
        deficit = cost * NANO                            # from an empty bucket
        if ((deficit * inv) >> 64) + 1 < ceil_div(deficit, rate):
            return Plan(1000, 10, rate, 4_000_000_000), cost
    raise AssertionError("no early case found")         # pragma: no cover


def test_retry_after_is_never_early_for_large_cost_deficits():
    plan, cost = early_cost_case()
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_fixed=cost))
    model.debit(slot, plan.cost_burst)
    v = model.decide(request(fp), 0)
    assert v.status == 429
    assert model.decide(request(fp), v.retry_after_ns).decision is ALLOW


def test_the_early_case_waits_ceil_or_one_more_with_the_rounded_up_reciprocal():
    """What the model does in the case above, to the bit, so that the RTL is compared against it."""
    plan, cost = early_cost_case()
    assert plan.inv_cost_rate == -(-(1 << 64) // plan.cost_rate)
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_fixed=cost))
    model.debit(slot, plan.cost_burst)
    v = model.decide(request(fp), 0)
    assert v.retry_after_ns == ((cost * NANO * plan.inv_cost_rate) >> 64) + 1
    assert v.retry_after_ns - ceil_div(cost * NANO, plan.cost_rate) in (0, 1)


def test_retry_after_rate_1_uses_the_clamped_reciprocal_and_is_exact():
    plan = Plan(1, 1, 1, 1)
    assert plan.inv_req_rate == plan.inv_cost_rate == U64
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_fixed=1))
    assert model.decide(request(fp), 0).decision is ALLOW
    for t in (0, 1, 123_456_789, NANO - 1):
        v = model.decide(request(fp), t)
        assert v.retry_after_ns == NANO - t                  # ((d·(2⁶⁴−1)) >> 64) + 1 = d
    assert model.decide(request(fp), NANO).decision is ALLOW


def test_retry_after_is_the_larger_wait_and_a_full_bucket_waits_0():
    plan = Plan(req_rate=2, req_burst=1, cost_rate=4, cost_burst=8)
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_fixed=0))
    assert model.decide(request(fp), 0).decision is ALLOW
    v = model.decide(request(fp), 0)                      # request short by 1: 0.5 s; cost not short
    # An exact quotient with an exact reciprocal (rate 2): ⌈deficit/rate⌉ + 1.
    assert v.retry_after_ns == ((NANO * plan.inv_req_rate) >> 64) + 1 == NANO // 2 + 1
    model.config = LimiterConfig(cost_fixed=8)
    model.debit(slot, 8)
    v = model.decide(request(fp), NANO // 2)              # request full again; cost short by 6 units at 4/s
    assert v.retry_after_ns == 3 * NANO // 2 + 1
    model.config = LimiterConfig(cost_fixed=0)
    assert model.decide(request(fp), NANO // 2).decision is ALLOW      # empties the request bucket
    model.debit(slot, 8)
    model.config = LimiterConfig(cost_fixed=8)
    v = model.decide(request(fp), NANO // 2)              # request: 0.5 s; cost short by 8 units: 2 s
    assert v.retry_after_ns == 2 * NANO + 1               # both short: the larger wait


# -- unknown keys -----------------------------------------------------------------------------------------------------

def test_unknown_key_policies():
    plan = Plan(10, 10, 10, 10)
    stranger = 0xFEEDFACECAFEBEEF
    model, slot, fp = one_tenant(plan, LimiterConfig(cost_fixed=2))
    for desc in (request(stranger), request(None), request(fp, source=KeySource.NONE)):
        # A descriptor without a key is unknown even when its key_fp field matches a tenant.
        model.config = LimiterConfig(unknown_policy=UnknownPolicy.REJECT, cost_fixed=2)
        assert model.decide(desc, 0) == LimitVerdict(REJECT, 401, False, 0, 2, 0)
        model.config = LimiterConfig(unknown_policy=UnknownPolicy.PUNT, cost_fixed=2)
        assert model.decide(desc, 0) == LimitVerdict(PUNT, 0, False, 0, 2, 0)
        model.config = LimiterConfig(unknown_policy=UnknownPolicy.DEFAULT, default_slot=slot, cost_fixed=2)
        assert model.decide(desc, 0) == LimitVerdict(ALLOW, 200, False, slot, 2, 0)
    assert (model.reject_401, model.punt, model.allow, model.reject_429) == (3, 3, 3, 0)
    assert model.state(slot).cost_tokens == 4 * NANO and model.state(slot).allowed == 3
    # The default slot's buckets run dry like any tenant's.
    model.config = LimiterConfig(unknown_policy=UnknownPolicy.DEFAULT, default_slot=slot, cost_fixed=5)
    v = model.decide(request(None), 0)
    assert (v.decision, v.status, v.tenant_found, v.tenant) == (REJECT, 429, False, slot)
    assert v.retry_after_ns == ((NANO * plan.inv_cost_rate) >> 64) + 1
    # An invalid default slot: 401.
    model.config = LimiterConfig(unknown_policy=UnknownPolicy.DEFAULT, default_slot=(slot + 1) % 64, cost_fixed=2)
    assert model.decide(request(stranger), 0) == LimitVerdict(REJECT, 401, False, 0, 2, 0)
    # The known tenant is unaffected by the policy.
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
    (LimiterConfig(cost_source=BY_LENGTH, cost_scale=1 << 16), request(1), 0),                        # no length
    (LimiterConfig(cost_source=BY_LENGTH, cost_scale=1 << 16),
     Descriptor(key_source=KeySource.AUTHORIZATION, key_fp=1, cl_present=False, content_length=99), 0),
])
def test_cost_sources(config, desc, cost):
    model = LimiterModel(64, config=config)
    assert model.cost(desc) == cost
    assert model.decide(desc, 0).cost == cost               # unknown key, 401: the cost is still reported


# -- debit and refund -------------------------------------------------------------------------------------------------

def test_debit_saturates_and_refund_caps_without_refill():
    model, slot, fp = one_tenant(Plan(10, 10, 100, 50), now_ns=7)
    assert model.debit(slot, 20)
    assert model.state(slot).cost_tokens == 30 * NANO
    assert model.debit(slot, 31) and model.state(slot).cost_tokens == 0
    assert model.debit(slot, (1 << 32) - 1) and model.state(slot).cost_tokens == 0
    assert model.refund(slot, 45) and model.state(slot).cost_tokens == 45 * NANO
    assert model.refund(slot, 6) and model.state(slot).cost_tokens == 50 * NANO
    assert model.refund(slot, (1 << 32) - 1) and model.state(slot).cost_tokens == 50 * NANO
    state = model.state(slot)
    assert state.last_ns == 7 and state.req_tokens == 10 * NANO    # neither refills nor touches the clock
    empty = (slot + 1) % 64
    assert model.debit(empty, 1) is False and model.refund(empty, 1) is False
    with pytest.raises(ConfigError) as info:
        model.debit(slot, 1 << 32)
    assert info.value.field == "amount"
    with pytest.raises(ConfigError) as info:
        model.refund(64, 1)
    assert info.value.field == "slot"


def test_refund_then_decide_spends_the_refund():
    model, slot, fp = one_tenant(Plan(10, 10, 1, 100), LimiterConfig(cost_fixed=100))
    assert model.decide(request(fp), 0).decision is ALLOW
    assert model.decide(request(fp), 0).status == 429
    model.refund(slot, 100)
    assert model.decide(request(fp), 0).decision is ALLOW


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
    model.write_tenant(slot, fp ^ 1, 0, True, 555)          # a different key: a new tenant
    state = model.state(slot)
    assert (state.req_tokens, state.cost_tokens, state.last_ns, state.allowed, state.rejected) == (
        10 * NANO, 100 * NANO, 555, 0, 0)
    model.write_tenant(slot, fp ^ 1, 0, False, 600)
    model.write_tenant(slot, fp ^ 1, 0, True, 700)          # re-added after removal: new again
    assert model.state(slot).last_ns == 700


def test_invalidated_tenant_is_unknown():
    model, slot, fp = one_tenant(Plan(10, 10, 100, 100))
    model.write_tenant(slot, fp, 0, False, 0)
    assert model.lookup(fp) is None
    assert model.decide(request(fp), 0).status == 401


def test_relocations_keep_bucket_state_and_counters():
    """Fill a 64-slot table through the placement; each tenant's state survives every move it makes."""
    rng = random.Random(SEED)
    table = Table(capacity=64, config=LimiterConfig(cost_fixed=1))
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
        assert state.allowed == n and state.req_tokens == (100 - n) * NANO
    assert moved > 0


def test_move_is_one_commit_copy_and_invalidate():
    model = LimiterModel(64)
    model.write_plan(0, Plan(10, 10, 10, 10))
    fp = (3 << 32) | 5                                      # b0 = 5, b1 = 3
    model.write_tenant(32 + 12, fp, 0, True, 0)             # half 1, bucket 3, way 0
    model.decide(request(fp), 0)
    before = model.state(44)
    model.move(32 + 12, 20 + 2)                             # half 0, bucket 5, way 2
    assert model.lookup(fp) == 22
    assert model.state(22) == before                        # state and counters travel with the tenant
    assert not model.state(44).valid


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
        assert plan.inv_cost_rate == min(U64, -(-(1 << 64) // rate))      # rounded up: never early
        assert plan.inv_req_rate == min(U64, -(-(1 << 64) // plan.req_rate))
    assert Plan(1, 1, 2, 1).inv_cost_rate == 1 << 63


@pytest.mark.parametrize("kwargs,field", [
    ({"unknown_policy": 3}, "unknown_policy"), ({"unknown_policy": "reject"}, "unknown_policy"),
    ({"default_slot": -1}, "default_slot"), ({"default_slot": 1 << 16}, "default_slot"),
    ({"cost_source": 2}, "cost_source"), ({"cost_fixed": COST_MAX + 1}, "cost_fixed"),
    ({"cost_scale": 1 << 32}, "cost_scale"), ({"cost_scale": -1}, "cost_scale"),
])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ConfigError) as info:
        LimiterConfig(**kwargs)
    assert info.value.field == field


def test_config_accepts_enum_values_and_checks_default_slot_against_capacity():
    assert LimiterConfig(unknown_policy=2, cost_source=1).unknown_policy is UnknownPolicy.PUNT
    model = LimiterModel(64)
    with pytest.raises(ConfigError) as info:
        model.config = LimiterConfig(default_slot=64)
    assert info.value.field == "default_slot"
    with pytest.raises(ConfigError):
        LimiterModel(64, config=LimiterConfig(default_slot=100))


@pytest.mark.parametrize("kwargs,field", [
    ({"capacity": 32}, "capacity"), ({"capacity": 96}, "capacity"), ({"capacity": 1 << 17}, "capacity"),
    ({"plans": 0}, "plans"), ({"plans": PLANS + 1}, "plans"),
])
def test_model_parameters(kwargs, field):
    with pytest.raises(ConfigError) as info:
        LimiterModel(**kwargs)
    assert info.value.field == field


@pytest.mark.parametrize("call,field", [
    (lambda m: m.write_plan(64, Plan(1, 1, 1, 1)), "index"), (lambda m: m.write_plan(0, (1, 1, 1, 1)), "plan"),
    (lambda m: m.write_tenant(0, 1, 5, True, 0), "plan"),            # plan 5 never written
    (lambda m: m.write_tenant(64, 1, 0, True, 0), "slot"), (lambda m: m.write_tenant(0, -1, 0, True, 0), "fp"),
    (lambda m: m.write_tenant(0, 1, 64, True, 0), "plan"), (lambda m: m.write_tenant(0, 1, 0, True, -1), "now_ns"),
    (lambda m: m.move(0, 64), "new_slot"), (lambda m: m.move(-1, 0), "old_slot"), (lambda m: m.state(64), "slot"),
])
def test_model_arguments_name_the_field(call, field):
    model = LimiterModel(64)
    model.write_plan(0, Plan(1, 1, 1, 1))
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

"""Rates as a gateway writes them: per minute, fractional per second, absent (unlimited), default bursts, and the
token cost on by default. The same scenarios on ``"model"``, ``"software"`` and ``"sim"`` (the Verilated core).

Time is driven with ``clock="manual"`` and ``clock.step``, so every expected verdict is exact.
"""

import math
import random
from fractions import Fraction

import pytest

import wirespeed
from wirespeed.host.errors import ConfigError

URIS = ["model", "software", pytest.param("sim", marks=pytest.mark.rtl)]
SECOND = 10**9
HOST = b"Host: api\r\n"


def post(key: str, content_length: int = 0, estimate=None) -> bytes:
    extra = b"" if estimate is None else b"x-token-estimate: %d\r\n" % estimate
    return (b"POST /v1/chat/completions HTTP/1.1\r\n" + HOST + b"x-api-key: " + key.encode() + b"\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % content_length)


@pytest.fixture(params=URIS)
def dev(request):
    with wirespeed.open(request.param, clock="manual") as d:
        d.clock.ns_per_cycle = 0
        d.pools.set(0, ["127.0.0.1:9001"])
        d.routes.default(0)
        yield d


def statuses(dev, packets) -> list:
    return [v.status for v in dev.classify_many(packets)]


def test_per_minute_rate_with_its_default_burst(dev):
    """30 requests per minute: a minute's worth (30) at once, then one every 2 s, with the exact Retry-After."""
    t = dev.tenants.add("sk-rpm", requests_per_minute=30)
    info = dev.tenants.get(t)
    assert (info.requests_per_s, info.burst, info.requests_per_minute) == (Fraction(1, 2), 30, 30)
    assert (info.tokens_per_s, info.token_burst, info.tokens_per_minute) == (None, None, None)
    verdicts = dev.classify_many([post("sk-rpm")] * 31)
    assert [v.status for v in verdicts] == [200] * 30 + [429]
    assert verdicts[-1].retry_after_s == 2.0
    dev.clock.step(2 * SECOND - 1)
    assert statuses(dev, [post("sk-rpm")]) == [429]
    dev.clock.step(1)
    assert statuses(dev, [post("sk-rpm")] * 2) == [200, 429]


def test_fractional_per_second_rate(dev):
    """1.5 requests per second, burst 1 (a second's worth rounded up is 2; given as 1): one every 2/3 s."""
    t = dev.tenants.add("sk-frac", requests_per_s=1.5, burst=1)
    assert dev.tenants.get(t).requests_per_minute == 90
    v = dev.classify_many([post("sk-frac")] * 2)
    assert [x.status for x in v] == [200, 429]
    assert v[1].retry_after_s == 666_666_667 / 1e9       # ⌈2/3 s⌉ in ns
    dev.clock.step(666_666_667)
    assert statuses(dev, [post("sk-frac")]) == [200]
    # The same rate written three ways is one plan entry.
    a = dev.tenants.add("sk-frac2", requests_per_s=Fraction(3, 2), burst=1)
    b = dev.tenants.add("sk-frac3", requests_per_minute=90, burst=1)
    assert dev.tenants.get(a).plan == dev.tenants.get(b).plan == dev.tenants.get(t).plan


def test_absent_token_limit_is_unlimited(dev):
    """No token limit: a 10⁹-byte body (an estimate of 2.5·10⁸ tokens) passes; the request limit still holds."""
    dev.tenants.add("sk-req-only", requests_per_s=10, burst=2)
    assert statuses(dev, [post("sk-req-only", 10**9)] * 3) == [200, 200, 429]
    dev.tenants.add("sk-tokens-only", tokens_per_minute=600, token_burst=10)
    # No request limit: 50 requests without a body (cost 0) all pass; a body of 44 bytes (11 tokens) never does.
    assert statuses(dev, [post("sk-tokens-only")] * 50) == [200] * 50
    assert statuses(dev, [post("sk-tokens-only", 40), post("sk-tokens-only", 44)]) == [200, 429]
    dev.tenants.add("sk-free")
    assert statuses(dev, [post("sk-free", 10**12)] * 100) == [200] * 100


def test_token_limit_works_with_the_default_configuration(dev):
    """Nothing configured: the cost is the x-token-estimate header, else Content-Length / 4."""
    dev.tenants.add("sk-tok", requests_per_s=1000, burst=1000, tokens_per_s=1, token_burst=1)
    v = dev.classify_many([post("sk-tok", 100_000)])[0]
    assert (v.status, v.reason) == (429, "rate_limited")
    dev.tenants.add("sk-est", requests_per_s=1000, burst=1000, tokens_per_minute=6000, token_burst=100)
    # The header wins over the body's size: 60 + 40 tokens pass, 1 more does not.
    assert statuses(dev, [post("sk-est", 10**6, estimate=60), post("sk-est", 10**6, estimate=40),
                          post("sk-est", 0, estimate=1)]) == [200, 200, 429]
    dev.clock.step(SECOND // 100)                        # 100 tokens/s: one token back
    assert statuses(dev, [post("sk-est", 4)]) == [200]   # 4 bytes: 1 token
    dev.tenants.refund("sk-est", 30)
    assert statuses(dev, [post("sk-est", 120)]) == [200]  # 30 tokens


def test_update_between_limited_and_unlimited(dev):
    t = dev.tenants.add("sk-u", requests_per_s=1, burst=1)
    assert statuses(dev, [post("sk-u")] * 2) == [200, 429]
    dev.tenants.update(t, requests_per_s=math.inf)
    info = dev.tenants.get(t)
    assert (info.requests_per_s, info.burst) == (None, None)
    assert statuses(dev, [post("sk-u")] * 20) == [200] * 20
    dev.tenants.update(t, requests_per_minute=120)        # limited again, default burst: a minute's worth
    assert dev.tenants.get(t).burst == 120
    with pytest.raises(ConfigError) as e:
        dev.tenants.update(t, token_burst=5)              # the token bucket is unlimited: a burst needs a rate
    assert e.value.field == "token_burst"


@pytest.mark.parametrize("uri", ["model", "software"])
def test_fractional_rates_match_exact_bucket_math(uri):
    """Random fractional and per-minute tenants over 10⁵ simulated seconds: each verdict is the one an exact
    rational token bucket (written here) gives."""
    rng = random.Random(20261206)
    with wirespeed.open(uri, clock="manual") as d:
        d.clock.ns_per_cycle = 0
        d.pools.set(0, ["10.0.0.1:80"])
        d.routes.default(0)
        tenants = {}
        for i in range(3):
            rpm = rng.choice([1, 2, 7, 30, 90])
            burst = rng.randrange(1, 4)
            key = f"sk-{i}"
            d.tenants.add(key, requests_per_minute=rpm, burst=burst)
            tenants[key] = [Fraction(rpm, 60), Fraction(burst), Fraction(burst), 0]   # rate/s, burst, tokens, last
        now = 0
        allowed = 0
        for n in range(3000):
            key = rng.choice(list(tenants))
            # Half the gaps under 2 s (bursts that hit the limit), half up to 130 s: about 10⁵ s in all.
            now += rng.randrange(0, 2 * SECOND) if rng.random() < 0.5 else rng.randrange(0, 130 * SECOND)
            d.clock.step(now - d.clock.now())
            rate, burst, tokens, last = tenants[key]
            tokens = min(burst, tokens + rate * Fraction(now - last, SECOND))
            ok = tokens >= 1
            tenants[key] = [rate, burst, tokens - 1 if ok else tokens, now]
            v = d.classify(post(key))
            assert (v.status == 200) == ok, f"request {n} at {now} ns for {key}"
            allowed += ok
        assert now > 9 * 10**4 * SECOND and 100 < allowed < 3000 - 50      # both outcomes, many times

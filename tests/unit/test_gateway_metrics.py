"""The gateway's per-request series (``RequestCollector``) against prometheus-client's own ``Histogram`` and
``Counter``: the same values give the same exposition samples."""

import random

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from wirespeed.host.gateway.metrics import LATENCY_BUCKETS_S, STAGES, GatewayMetrics

LABELS = ("/v1/chat/completions", "acme", "http://127.0.0.1:9001", "200")
NAMES = ("route", "tenant", "backend", "status")


def samples(text: str, prefix: str) -> dict:
    """(sample name without the prefix, labels) -> value, for the samples whose name starts with ``prefix``."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith(prefix) and not s.name.endswith("_created"):
                out[s.name[len(prefix):], tuple(sorted(s.labels.items()))] = s.value
    return out


def test_stage_and_added_histograms_equal_prometheus_clients_on_the_same_values():
    rng = random.Random(19)
    edges = [0.0, *LATENCY_BUCKETS_S, LATENCY_BUCKETS_S[-1] * 2]     # on a bound counts in that bucket (<=)
    ours = GatewayMetrics()
    registry = CollectorRegistry()
    stage = Histogram("ref_stage_seconds", "x", ("stage",) + NAMES, buckets=LATENCY_BUCKETS_S, registry=registry)
    added = Histogram("ref_added_seconds", "x", NAMES, buckets=LATENCY_BUCKETS_S, registry=registry)
    requests = Counter("ref_requests", "x", NAMES, registry=registry)
    for i in range(3000):
        labels = LABELS if i % 3 else LABELS[:3] + ("429",)
        value = (lambda: rng.choice(edges) if rng.random() < 0.2 else rng.expovariate(2e3))
        stages = {name: value() for name in STAGES if i % 3 or name in ("device", "total")}
        own = value() if i % 3 else None
        ours.observe(labels, stages, own)
        requests.labels(*labels).inc()
        for name, seconds in stages.items():
            stage.labels(name, *labels).observe(seconds)
        if own is not None:
            added.labels(*labels).observe(own)
    mine, ref = ours.render().decode(), generate_latest(registry).decode()
    for kind in ("stage_seconds", "added_seconds", "requests"):
        got, want = samples(mine, f"wirespeed_gateway_{kind}"), samples(ref, f"ref_{kind}")
        assert got.keys() == want.keys() and got, kind
        for key, value in want.items():
            assert abs(got[key] - value) <= 1e-9 * max(1.0, abs(value)), (kind, key, got[key], value)
    # A label set without an added time has no added series (prometheus-client: no child, no series).
    assert not any(dict(labels).get("status") == "429" for _, labels in samples(mine, "wirespeed_gateway_added"))


def test_token_counts_equal_prometheus_clients_counter_on_the_same_values():
    rng = random.Random(7)
    ours = GatewayMetrics()
    registry = CollectorRegistry()
    ref = Counter("ref_tokens", "x", ("kind", "tenant"), registry=registry)
    for _ in range(2000):
        kind = rng.choice(("reserved", "used", "refunded", "debited"))
        tenant = rng.choice(("acme", "beta", "-"))
        n = rng.choice((0, 1, rng.randrange(1, 100_000)))
        ours.add_tokens(kind, tenant, n)
        ref.labels(kind, tenant).inc(n)
    got = samples(ours.render().decode(), "wirespeed_gateway_tokens")
    want = samples(generate_latest(registry).decode(), "ref_tokens")
    assert got == want and len(got) == 12
    assert ours.tokens.value("used", "acme") == want["_total", (("kind", "used"), ("tenant", "acme"))]

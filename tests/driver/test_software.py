"""``wirespeed.open("software")``: the same verdicts as ``"model"`` (every field but ``latency_cycles``), computed
without the register-level pipeline.

- parity on ≥ 20 000 requests and frames from the traffic generators, in one seeded gateway session (known, unknown
  and rate-limited tenants, an empty pool, three pools routed by tenant, session header and L4 tuple, bad requests,
  clock steps and policy changes), with the limiter clock stepped by hand (``ns_per_cycle`` 0) on both;
- the parser differential corpus through both devices;
- the fast header reader against :func:`~wirespeed.host.models.parser.scan` on that corpus and on hypothesis
  requests;
- bad URIs.
"""

import dataclasses
import functools
import os
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from support.gateway import configure_gateway, gateway_request

import wirespeed
from wirespeed.host.errors import DeviceNotFound
from wirespeed.host.keys import derive_key, fingerprint
from wirespeed.host.models.frontend import build_frame, random_frame
from wirespeed.host.models.parser import ParserConfig, scan
from wirespeed.host.tools import traffic
from wirespeed.host.transports.software import FastHeaderReader

SEED = int(os.environ.get("SOFTWARE_SEED", "20261206"))
REQUESTS = int(os.environ.get("SOFTWARE_REQUESTS", "20000"))


def configure(dev, rng):
    """The parity session's gateway (``support.gateway``) plus a secret fingerprint key, with the clock moved only by
    ``clock.step()``; returns the known and unknown API keys."""
    dev.set_fingerprint_key(b"software parity")
    dev.write_register("pipeline.ctrl.axis_inline", 0)
    dev.clock.ns_per_cycle = 0                                      # the clock moves only by clock.step()
    return configure_gateway(dev, rng)


def session(dev, seed, n, singles=False):
    """Verdicts (without ``latency_cycles``) and counter snapshots of one seeded session. ``singles``: every third
    batch of requests goes through ``classify``, one request at a time, instead of ``classify_many``."""
    rng = random.Random(seed)
    known, unknown = configure(dev, rng)
    verdicts, snapshots = [], []
    while len(verdicts) < n:
        step = rng.random()
        if step < 0.05:
            dev.clock.step(rng.choice([1_000, 250_000_000, 1_000_000_000, 30_000_000_000]))
        elif step < 0.07:
            dev.tenants.configure(unknown_policy=rng.choice(["reject", "default", "punt"]),
                                  cost_source=rng.choice(["content_length", "fixed", "extra"]))
        elif step < 0.08:
            dev.pools.set_state(0, rng.choice(range(10, 18)), rng.choice(["up", "draining", "down"]))
        elif step < 0.09:
            snapshots.append(counters(dev))
        if rng.random() < 0.2:
            payload = gateway_request(rng, known, unknown)
            frame = random_frame(rng, payload) if rng.random() < 0.5 else build_frame(
                payload, v6=rng.random() < 0.3, sport=rng.randrange(1024, 65536), dport=rng.choice([80, 8080]))
            verdicts.append(dev.classify_frame(frame))
        else:
            batch = [gateway_request(rng, known, unknown) for _ in range(rng.randrange(1, 80))]
            verdicts += list(map(dev.classify, batch)) if singles and len(verdicts) % 3 == 0 else \
                dev.classify_many(batch)
    snapshots.append(counters(dev))
    return [strip(v) for v in verdicts], snapshots


def strip(verdict):
    d = verdict.as_dict()
    del d["latency_cycles"]
    return d


def counters(dev):
    """What both devices count alike: telemetry events by action, reason and error flag (not the latencies), the
    limiter's, parser's and router's counters."""
    stats = dev.stats()
    del stats["cycle"], stats["latency"]
    names = ["limiter.allow", "limiter.reject_429", "limiter.reject_401", "limiter.punt", "parser.requests",
             "parser.complete", "router.routed", "router.unavailable"]
    return stats, {name: dev.read_register(name) for name in names}


@pytest.fixture(params=["c", "python"])
def loop(request, monkeypatch):
    """The software device's fast loop: ``"c"`` (``fast_header.c``'s ``Context.classify``; skipped when the C module
    cannot be built) or ``"python"`` (``WIRESPEED_NATIVE=0``: the Python loop and reader)."""
    from wirespeed.host.transports import software
    if request.param == "python":
        monkeypatch.setenv("WIRESPEED_NATIVE", "0")
        monkeypatch.setattr(software, "native_error", software.native_error)
        monkeypatch.setattr(software, "_native_module", software._native_module.__wrapped__)
    elif FastHeaderReader(ParserConfig()).native is False:
        pytest.skip("the C header reader is not in use (WIRESPEED_NATIVE=0, or no C compiler or Python headers)")
    return request.param


def ran(classifier, loop):
    """Whether ``classifier`` ran the ``loop`` asked for."""
    return (classifier._reader.context is not None) == (loop == "c")


@functools.cache
def on_model(run, *args):
    """``run(device, *args)`` on ``"model"``, once per module (each loop's test compares against it)."""
    with wirespeed.open("model", clock="manual") as dev:
        return run(dev, *args)


def test_software_gives_the_model_verdicts_on_a_gateway_session(loop):
    model, model_counts = on_model(session, SEED, REQUESTS)
    with wirespeed.open("software", clock="manual") as dev:
        singles = []                                # classify() takes the transport's one-request path
        one = dev._classify_request
        dev._classify_request = lambda *a: singles.append(1) or one(*a)
        software, software_counts = session(dev, SEED, REQUESTS, singles=True)
        classifier = dev.transport.classifier
    assert ran(classifier, loop)
    assert len(singles) > REQUESTS // 5
    assert len(model) == len(software) >= REQUESTS
    for i, (a, b) in enumerate(zip(model, software)):
        assert a == b, f"verdict {i} differs (seed {SEED}):\n model    {a}\n software {b}"
    assert model_counts == software_counts
    # The session exercised what it claims to, and mostly on the fast path.
    reasons = {v["reason"] for v in model}
    assert {"ok", "rate_limited", "unknown_tenant", "no_backend", "missing_host", "cl_and_te"} <= reasons
    assert {v["pool"] for v in model} >= {0, 1, 2} and {v["action"] for v in model} == {"forward", "reject", "punt"}
    assert any("inline" in v["flags"] and v["action"] == "forward" for v in model)
    assert classifier.fast > 2 * classifier.fallback > 0


# -- the parser differential corpus, through both devices and through the fast reader --------------------------

CORPUS_SEED = 20251125


def corpus():
    """As tests/unit/test_parser_differential.py builds it (seeded)."""
    rng = random.Random(CORPUS_SEED)
    items = [traffic.realistic(rng) for _ in range(2500)]
    items += [traffic.mutate(rng, traffic.realistic(rng)) for _ in range(1500)]
    items += [traffic.smuggling(rng, kind) for kind in traffic.SMUGGLING_KINDS for _ in range(20)]
    items += [traffic.random_bytes(rng) for _ in range(600)]
    items += [traffic.worst_case(rng, w, rng.randrange(64, 4096)) for w in (4, 8, 16) for _ in range(4)]
    items += [traffic.worst_case(rng, 8, 9000)]
    return items


POLY, KEY_SEED = derive_key(b"differential")
CONFIGS = {
    "reset": ParserConfig(),
    "keyed": ParserConfig(poly=POLY, seed=KEY_SEED, max_header_bytes=1024,
                          prefixes=[(b"/v1/chat/completions", 1), (b"/v1/", 2)],
                          extras=[b"user-agent", b"x-request-id", b"Host", b"content-length"]),
}


def reading(scanned):
    """What FastHeaderReader.read returns, from scan()'s result."""
    extras = scanned.extra_values if any(v is not None for v in scanned.extra_values) else None
    return (scanned.path, scanned.key_source, scanned.key, scanned.cl_value, scanned.chunked, extras,
            scanned.errors, scanned.method, scanned.upgrade)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fast_reader_equals_scan_on_the_corpus(name):
    config = CONFIGS[name]
    reader = FastHeaderReader(config)
    fast = 0
    for i, packet in enumerate(corpus()):
        got = reader.read(packet)
        if got is None:
            continue
        fast += 1
        want = scan(packet, config)
        assert want.complete and got == reading(want), f"corpus #{i} ({name}): {packet[:200]!r}"
    assert fast > 2500                                              # most of the realistic part


@settings(derandomize=True, deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(traffic.valid_request_strategy(extra_names=CONFIGS["keyed"].extras[:2]))
def test_fast_reader_equals_scan_on_hypothesis_requests(packet):
    for config in CONFIGS.values():
        got = FastHeaderReader(config).read(packet)
        want = scan(packet, config)
        if got is not None:
            assert want.complete and got == reading(want), packet
        elif len(packet) < config.max_header_bytes and want.complete and not want.errors:
            # Off the fast path only for the repeats scan compares (two Content-Length lines).
            assert packet.lower().count(b"\ncontent-length:") > 1, packet


def corpus_session(dev):
    packets = [p for p in corpus() if p]
    rng = random.Random(1)
    dev.set_fingerprint_key(b"differential")
    dev.pools.set(0, [1, 2, 3, 4], size=251)
    dev.routes.default(0, key="tenant")
    dev.tenants.add("sk-known", requests_per_s=1_000_000, burst=1_000_000)       # tokens unlimited
    dev.tenants.add("sk-other", requests_per_s=1_000_000, burst=1_000_000)
    dev.tenants.configure(unknown_policy="default")
    dev.tenants.set_default("sk-known")
    verdicts = [strip(v) for v in dev.classify_many(packets)]
    frames = [build_frame(p, sport=rng.randrange(1024, 65536)) for p in packets[:300]]
    verdicts += [strip(dev.classify_frame(f)) for f in frames]
    # The same requests with known keys (the fast path's share), under the policy that rejects unknown ones.
    dev.tenants.configure(unknown_policy="reject")
    keyed = [re.sub(rb"Bearer [!-~]+", b"Bearer sk-other", p, count=1) for p in packets]
    return verdicts + [strip(v) for v in dev.classify_many(keyed)]


def test_the_differential_corpus_gets_the_same_verdicts(loop):
    model = on_model(corpus_session)
    with wirespeed.open("software", clock="manual") as dev:
        software = corpus_session(dev)
        assert ran(dev.transport.classifier, loop)
    assert model == software
    assert len({v["reason"] for v in model}) > 10 and {"ok", "unknown_tenant"} <= {v["reason"] for v in model}


def test_latency_is_zero_and_single_calls_match_batches():
    with wirespeed.open("software", clock="manual") as dev:
        dev.pools.set(0, [1, 2], size=251)
        dev.routes.default(0, key="tenant")
        dev.tenants.add("sk-a", requests_per_s=1000, burst=1000, tokens_per_s=10**6, token_burst=10**6)
        req = traffic.realistic(random.Random(2), api_key="sk-a")
        one = dev.classify(req)
        assert (one.action, one.latency_cycles, one.tenant is not None) == ("forward", 0, True)
        assert dev.classify_many([req, req]) == [one, one]
        assert dev.stats()["events"] == 3 and dev.read_register("limiter.allow") == 3


@pytest.mark.parametrize("uri", ["software:fast", "software:", "softwares"])
def test_bad_uris_are_refused(uri):
    with pytest.raises(DeviceNotFound, match="software"):
        wirespeed.open(uri)


# -- the fast path's boundaries ------------------------------------------------------------------------------------

def boundary_request(rng, known, unknown):
    """A request near one of the software fast path's boundaries (SoftwareClassifier._records): method, target form,
    Upgrade, key header and spelling, unknown and absent keys, Content-Length (0, huge, 20 digits saturating, 21
    digits, chunked with and without it), the token estimate (numeric, not, huge), the session header, each route."""
    method = rng.choice([b"POST"] * 6 + [b"GET", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"BREW", b"post"])
    path = rng.choice([b"/v1/chat/completions", b"/v1/messages", b"/v1/embeddings", b"/v1/models", b"/",
                       b"/v1/messages?beta=1", b"*", b"http://gw/v1/messages"])
    lines = [b"Host: gw"] if rng.random() < 0.95 else []
    key = rng.choice(known + known + unknown).encode() if rng.random() < 0.9 else None
    if key is not None:
        form = rng.random()
        if form < 0.45:
            lines.append(b"Authorization: " + rng.choice([b"Bearer ", b"bearer  ", b"BEARER "]) + key)
        elif form < 0.55:
            lines += [b"Authorization: Basic abc", b"x-api-key: " + key]
        elif form < 0.6:
            lines += [b"X-Api-Key: " + key, b"authorization: Bearer " + rng.choice(unknown).encode()]
        else:
            lines.append(b"x-api-key:\t" + key + b" ")
    cl = rng.choice([None, None, b"0", b"37", b"4096", b"1000000000000", b"18446744073709551615",
                     b"99999999999999999999", b"123456789012345678901", b"12a"])
    if cl is not None:
        lines.append(b"Content-Length: " + cl)
    if rng.random() < 0.05:
        lines.append(b"Transfer-Encoding: chunked")
    if rng.random() < 0.5:
        lines.append(b"x-token-estimate: " + rng.choice([b"0", b"1", b"250", b"70000", b"4294967296000000",
                                                          b"99999999999999999999", b"many", b""]))
    if rng.random() < 0.4:
        lines.append(b"x-session-id: s" + str(rng.randrange(6)).encode())
    if rng.random() < 0.05:
        lines.append(b"Upgrade: websocket")
    rng.shuffle(lines)
    return method + b" " + path + b" HTTP/1." + rng.choice([b"1", b"1", b"0"]) + b"\r\n" + b"".join(
        line + b"\r\n" for line in lines) + b"\r\n" + b"x" * rng.randrange(3)


def boundary_session(dev, seed, n):
    rng = random.Random(seed)
    known, unknown = configure(dev, rng)
    dev.tenants.add("sk-tiny", requests_per_minute=1, tokens_per_minute=1, token_burst=1)   # retry saturates
    dev.tenants.add("sk-unlimited")                                                           # rate 0: never short
    known += ["sk-tiny", "sk-unlimited"]
    verdicts = []
    while len(verdicts) < n:
        step = rng.random()
        if step < 0.1:
            dev.clock.step(rng.choice([1, 1_000, 1_000_000_000, 60_000_000_000, 2**62]))
        elif step < 0.16:
            dev.tenants.configure(unknown_policy=rng.choice(["reject", "default", "punt"]),
                                  cost_source=rng.choice(["content_length", "fixed", "extra", "estimate"]),
                                  cost_fixed=rng.choice([0, 1, 3000]), cost_scale=rng.choice([1, 0x10000, 2**32 - 1]),
                                  cost_scale_cl=rng.choice([0, 0x4000, 2**32 - 1]))
        elif step < 0.2:
            dev.policy.set(rng.choice(["connect", "method", "target_form", "upgrade"]),
                           rng.choice(["allow", "reject", "punt"]))
        elif step < 0.22:
            dev.policy.allow_methods(rng.sample(["GET", "POST", "PUT", "DELETE", "OPTIONS", "OTHER"], 3))
        elif step < 0.24:
            dev.pools.set_state(0, rng.choice(range(10, 18)), rng.choice(["up", "down"]))
        verdicts += dev.classify_many([boundary_request(rng, known, unknown) for _ in range(rng.randrange(1, 60))])
    return [strip(v) for v in verdicts], counters(dev)


def test_fast_path_boundaries_give_the_model_verdicts(loop):
    model, model_counts = on_model(boundary_session, SEED + 1, 6000)
    with wirespeed.open("software", clock="manual") as dev:
        software, software_counts = boundary_session(dev, SEED + 1, 6000)
        classifier = dev.transport.classifier
    assert ran(classifier, loop)
    for i, (a, b) in enumerate(zip(model, software)):
        assert a == b, f"verdict {i} differs (seed {SEED + 1}):\n model    {a}\n software {b}"
    assert len(model) == len(software) and model_counts == software_counts
    reasons = {v["reason"] for v in model}
    assert {"ok", "rate_limited", "unknown_tenant", "no_backend", "bad_content_length"} <= reasons
    assert any(v["retry_after_s"] == (2**64 - 1) / 1e9 for v in model)                  # saturated retry
    assert classifier.fast > classifier.fallback > 0


# -- the C header reader ---------------------------------------------------------------------------------------------

def mutations(rng, packet):
    """Small edits of a request at the C reader's boundaries: a byte flipped, dropped, doubled or replaced by a
    delimiter or a non-ASCII byte; a name's case; a line repeated."""
    i = rng.randrange(len(packet)) if packet else 0
    edit = rng.randrange(6)
    if edit == 0:
        return packet[:i] + bytes([rng.randrange(256)]) + packet[i + 1:]
    if edit == 1:
        return packet[:i] + packet[i + 1:]
    if edit == 2:
        return packet[:i] + packet[i:i + 1] * 2 + packet[i + 1:]
    if edit == 3:
        return packet[:i] + rng.choice([b"\r", b"\n", b" ", b"\t", b":", b"?", b"\x7f", b"\x80", b"\x00"]) + packet[i:]
    if edit == 4:
        return packet.swapcase() if rng.random() < 0.2 else packet[:i] + packet[i:].upper()
    lines = packet.split(b"\r\n")
    if len(lines) > 2:
        j = rng.randrange(1, len(lines) - 1)
        lines.insert(j, lines[j])
    return b"\r\n".join(lines)


native_only = pytest.mark.skipif(FastHeaderReader(ParserConfig()).native is False,
                                 reason="the C header reader is not in use (WIRESPEED_NATIVE=0, or no C compiler or Python headers)")


@native_only
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_c_reader_equals_the_python_reader(name):
    config = CONFIGS[name]
    reader = FastHeaderReader(config, native=True)
    rng = random.Random(CORPUS_SEED + 1)
    packets = corpus()
    packets += [mutations(rng, rng.choice(packets)) for _ in range(20_000)]
    packets += [boundary_request(rng, ["sk-a", "sk-b"], ["sk-c"]) for _ in range(5_000)]
    fast = 0
    for i, packet in enumerate(packets):
        got, want = reader.read(packet), FastHeaderReader.read(reader, packet)
        assert got == want, f"packet #{i} ({name}): {packet[:300]!r}"
        fast += got is not None
    assert fast > 10_000
    assert reader.read(bytearray(packets[0])) is None                 # not bytes: scan reads it


def test_the_python_reader_is_used_without_the_c_one(monkeypatch):
    monkeypatch.setenv("WIRESPEED_NATIVE", "0")
    from wirespeed.host.transports import software
    monkeypatch.setattr(software, "native_error", software.native_error)
    monkeypatch.setattr(software, "_native_module", software._native_module.__wrapped__)
    reader = FastHeaderReader(CONFIGS["keyed"])
    assert reader.native is False and software.native_error == "WIRESPEED_NATIVE=0"
    with pytest.raises(OSError, match="not available"):
        FastHeaderReader(CONFIGS["keyed"], native=True)
    fp = software.FingerprintCache(POLY, KEY_SEED)
    assert fp(b"sk-a") == fingerprint(b"sk-a", POLY, KEY_SEED)


@native_only
def test_c_fingerprint_equals_keys_fingerprint():
    from wirespeed.host.transports.software import FingerprintCache
    rng = random.Random(7)
    for poly, seed in [(POLY, KEY_SEED), derive_key(b"other"), (0x1B, 0), (2**64 - 1, 2**64 - 1)]:
        cache = FingerprintCache(poly, seed, native=True)
        for n in [0, 1, 7, 8, 40, 300] + [rng.randrange(100) for _ in range(200)]:
            value = rng.randbytes(n)
            assert cache(value) == fingerprint(value, poly, seed), (poly, seed, value)


# -- the retry wait's saturation -------------------------------------------------------------------------------------

def retry_edge(transport_class, q, frac, loop=None):
    """Records (without ``latency_cycles``) of requests whose cost bucket is short by 2^(64-q)+2 ... 2^(64-q)-2 units,
    one unit less each: the wait in ticks crosses 2^(64-q), where ``retry_after_ns`` saturates at 2^64-1
    (``LimiterModel.decide_fields``). At 1 token a minute a tick refills exactly one unit and the wait is the deficit
    itself; ``frac`` ns past the tick boundary are taken off the retry. Records, not Verdicts: a float of seconds
    cannot tell 2^64-1 ns from 2^64-2^q ns."""
    from wirespeed.hdl.id.id_block import CoreParams
    from wirespeed.host.driver.offload import Offload
    params = CoreParams()
    params = dataclasses.replace(params, limiter=dataclasses.replace(params.limiter, tick_log2=q))
    with Offload(transport_class(params), "edge", clock="manual") as dev:
        unit, edge = params.limiter.unit, 1 << (64 - q)
        dev.pools.set(0, [1], size=251)
        dev.routes.default(0, key="tenant")
        dev.tenants.add("sk-edge", tokens_per_minute=1, token_burst=1)        # requests unlimited
        dev.tenants.configure(cost_source="content_length", cost_scale=0x10000)   # 16.16: cost = Content-Length
        dev.clock.ns_per_cycle = 0
        dev.clock.step(-dev.clock.now() % (1 << q))    # at a tick boundary (the setup's cycles moved the clock)

        def request(cost):
            return (b"POST /v1/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer sk-edge\r\nContent-Length: %d\r\n\r\n"
                    % cost)

        def record(cost):
            (r,) = dev.transport.classify_stream([request(cost)])
            return r._replace(latency_cycles=0) if hasattr(r, "_replace") else dataclasses.replace(r, latency_cycles=0)

        cost = -(-(edge + 2) // unit)                  # the smallest cost whose need exceeds the edge by 2 units
        records = [record(1)]                          # the burst (1 token) spent: the bucket at 0
        dev.clock.step(((cost * unit - edge - 2) << q) + frac)        # refilled to cost·unit - edge - 2
        for _ in range(5):
            records.append(record(cost))
            dev.clock.step(1 << q)                     # one tick: one unit more, the deficit one less
        if loop is not None:
            assert ran(dev.transport.classifier, loop)
        return records


@pytest.mark.parametrize("q", [0, 1, 4, 11])
def test_the_retry_wait_saturates_exactly_at_2_to_the_64(loop, q):
    from wirespeed.host.transports.model import ModelTransport
    from wirespeed.host.transports.software import SoftwareTransport
    frac = (1 << q) // 3
    model = retry_edge(ModelTransport, q, frac)
    software = retry_edge(SoftwareTransport, q, frac, loop)
    assert software == model
    u64 = 2**64 - 1
    assert model[0].status == 200
    # Short by edge+2, edge+1, edge units: the wait is 2^(64-q) ticks or more, saturated; then edge-1, edge-2 units.
    assert [r.retry_after_ns for r in model[1:]] == [u64, u64, u64, (1 << 64) - (1 << q) - frac,
                                                     (1 << 64) - (2 << q) - frac]
    assert all(r.status == 429 and r.retry_valid for r in model[1:])


# -- whole requests ---------------------------------------------------------------------------------------------------

def limit_session(dev, seed):
    """Verdicts of requests whose header end lies around ``max_header_bytes`` (before, on, across and past the
    bytes the driver's ``bytes_to_send`` keeps), with bodies that hold a header end of their own, a partial one, or
    none; then the window's own limit. ``"software"`` takes these requests whole (``cuts_requests``), ``"model"`` cut."""
    rng = random.Random(seed)
    dev.pools.set(0, [1, 2], size=251)
    dev.routes.default(0, key="tenant")
    dev.tenants.add("sk-a", requests_per_s=1_000_000, burst=1_000_000)
    dev.write_register("parser.limits.max_header_bytes", 200)
    requests = []
    for size in range(150, 215):
        head = b"POST /v1/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer sk-a\r\nx: "
        head += b"a" * (size - len(head))
        for tail in (b"\r\n\r\n", b"\r\n\r\nbody\r\n\r\nmore", b"\r\n", b"", b"\r\n\r", b"\r\n\r\n" + b"b" * 500,
                     b"\r\nContent-Length: 5\r\n\r\nhello\r\n\r\n"):
            requests.append(head + tail)
    rng.shuffle(requests)
    verdicts = [strip(v) for v in dev.classify_many(requests)]
    verdicts += [strip(dev.classify(r)) for r in requests[:40]]
    # With a limit past the window, the driver cuts (and checks) every request again, on both.
    dev.write_register("parser.limits.max_header_bytes", 0xFFFF)
    verdicts += [strip(v) for v in dev.classify_many([r + b"\r\n\r\n" for r in requests])]
    too_large = b"GET / HTTP/1.1\r\nx: " + b"a" * 20_000 + b"\r\n\r\n"
    with pytest.raises(wirespeed.ConfigError, match=r"requests\[3\].*fit the submit window"):
        dev.classify_many(requests[:3] + [too_large])
    return verdicts


def test_whole_requests_give_the_verdicts_of_cut_ones(loop):
    model = on_model(limit_session, SEED + 2)
    with wirespeed.open("software", clock="manual") as dev:
        assert dev.transport.cuts_requests
        software = limit_session(dev, SEED + 2)
        assert ran(dev.transport.classifier, loop)
    assert software == model
    reasons = {v["reason"] for v in model}
    assert {"ok", "header_too_large", "truncated"} <= reasons, reasons


def _one_tenant(dev, rng) -> bytes:
    """One pool of two backends routed by tenant, tenant ``sk-a`` far above any rate here; a request of it."""
    dev.pools.set(0, [1, 2], size=251)
    dev.routes.default(0, key="tenant")
    dev.tenants.add("sk-a", requests_per_s=1_000_000, burst=1_000_000)
    return traffic.realistic(rng, api_key="sk-a")


def test_an_error_in_a_batch_keeps_the_counts_of_the_requests_before_it(loop, monkeypatch):
    # A failure on the general path mid-batch propagates; the counters (limiter, router, telemetry) hold the fast
    # requests decided before it, as their tenants' buckets do (on either loop).
    from wirespeed.host.transports import software
    rng = random.Random(SEED + 3)
    with wirespeed.open("software", clock="manual") as dev:
        good = _one_tenant(dev, rng)
        calls = []

        def failing(self, packet, fields):
            calls.append(packet)
            raise RuntimeError("planted")
        # (Planted before the first batch: the classifier keeps its tables, with this method, from then on.)
        monkeypatch.setattr(software._General, "request", failing)
        dev.classify_many([good])
        with pytest.raises(RuntimeError, match="planted"):
            dev.classify_many([good] * 7 + [b"not http\r\n\r\n"] + [good] * 5)
        assert len(calls) == 1
        assert dev.read_register("limiter.allow") == dev.read_register("router.routed") == 1 + 7
        assert dev.stats()["events"] == 1 + 7
        assert ran(dev.transport.classifier, loop)


def test_lookaside_batches_take_no_register_access_unless_the_registers_ask_for_one(monkeypatch):
    # classify_many on "software" does what the driver's register program would (window check, axis_inline = 0) on
    # the model's state, so a batch costs no register access; the counters still come out right.
    from wirespeed.host.transports import software
    rng = random.Random(SEED + 4)
    with wirespeed.open("software", clock="manual") as dev:
        good = _one_tenant(dev, rng)
        first = dev.classify_many([good])[0]
        accesses = []
        for name in ("read32", "write32"):
            real = getattr(dev.transport, name)
            monkeypatch.setattr(dev.transport, name, lambda *a, real=real: accesses.append(a) or real(*a))
        assert [v.action for v in dev.classify_many([good] * 3)] == ["forward"] * 3
        assert dev.classify(good).action == "forward"            # one request: no list, no access either
        assert accesses == []
        assert dev.stats()["events"] == 5 and dev.read_register("limiter.allow") == 5
        # axis_inline set (a frame was classified): the driver's program runs and writes it back to 0.
        for classify in (lambda r: dev.classify_many([r])[0], dev.classify):
            dev.write_register("pipeline.ctrl.axis_inline", 1)
            accesses.clear()
            assert classify(good).action == "forward" and accesses
            assert dev.read_register("pipeline.ctrl.axis_inline") == 0
        # Not bytes: the driver's program too, with the same verdict.
        assert strip(dev.classify_many([bytearray(good)])[0]) == strip(first)
        # A header limit the submit window cannot hold: the driver cuts and checks (ConfigError names the request).
        dev.write_register("parser.limits.max_header_bytes", 0xFFFF)
        with pytest.raises(wirespeed.ConfigError, match=r"requests\[1\].*fit the submit window"):
            dev.classify_many([good, good.replace(b"\r\n\r\n", b"\r\nx-pad: " + b"a" * 70_000 + b"\r\n\r\n", 1)])
        # Nobody reads a register: the verdicts are still tallied every _COUNT_EVERY.
        dev.write_register("parser.limits.max_header_bytes", 8192)
        monkeypatch.setattr(software, "_COUNT_EVERY", 5)
        classifier = dev.transport.classifier
        dev.classify_many([good] * 4)
        assert classifier.pending == 4
        dev.classify_many([good])
        assert classifier.pending == 0
        # A batch bigger than _TALLY_INLINE waits whole for count(); a single request is tallied as it is given (no
        # spike of tallying on the request that reaches _COUNT_EVERY). Both reach the counters alike.
        big = software._TALLY_INLINE + 1
        monkeypatch.setattr(software, "_COUNT_EVERY", big + 2)
        events, allow = dev.stats()["events"], dev.read_register("limiter.allow")
        dev.classify_many([good] * big)
        assert len(classifier._counted) == big and classifier._tallied == 0
        dev.classify(good)
        assert len(classifier._counted) == big and classifier._tallied == 1 and classifier.pending == big + 1
        dev.classify(good)
        assert classifier.pending == 0 and classifier._tally == {}
        assert dev.stats()["events"] == events + big + 2 and dev.read_register("limiter.allow") == allow + big + 2


def test_the_classifier_keeps_its_tables_between_batches_until_a_register_access(loop):
    # A lone request costs its own work: the tables (and, in C, their parsed form) are kept while the model's
    # generation stays; a register access or a packet through the model's pipeline moves it, and the next batch
    # reads the tables afresh (the parity sessions above hold the verdicts to the model across such changes).
    import gc
    import weakref
    rng = random.Random(SEED + 5)
    dev = wirespeed.open("software", clock="manual")
    good = _one_tenant(dev, rng)
    classifier = dev.transport.classifier
    dev.classify_many([good])
    kept = classifier._look
    assert (kept.native is not None) == (loop == "c")
    dev.classify(good)
    dev.classify_many([good, good])
    assert classifier._look is kept
    dev.read_register("limiter.allow")
    dev.classify(good)
    assert classifier._look is not kept
    # The kept tables reference the classifier (its callbacks): the pair is still collected once the device is.
    dev.close()
    gone = weakref.ref(classifier)
    del dev, classifier, kept
    gc.collect()
    assert gone() is None


def test_the_c_record_maker_makes_the_records_the_dataclass_makes():
    # The C loop's new_record (fast_header.RecordMaker) against SoftwareClassifier._record's dataclass call.
    from wirespeed.host.models.pipeline import VerdictRecord
    from wirespeed.host.transports import software
    module = software._native_module()
    if module is None:
        pytest.skip(f"the C module is not in use ({software.native_error})")
    cache = {}
    maker = module.RecordMaker(VerdictRecord, software._RECORD_FIELDS, software._ACTIONS, software._REASONS, cache, 3,
                               0)
    keys = [(software._FORWARD, 200, software._OK, True, 5, True, 1, True, 7, False, 0, 0x1234, 0xDEADBEEF),
            (software._REJECT, 429, software._RATE_LIMITED, True, 5, False, 0, False, 0, True, 2 ** 64 - 1, 3, 9),
            (software._REJECT, 401, software._UNKNOWN_TENANT, False, 0, False, 0, False, 0, False, 0, 1 << 20, 0),
            (software._REJECT, 503, software._NO_BACKEND, True, 2, True, 3, False, 0, False, 0, 0, 2 ** 32 - 1)]
    for i, key in enumerate(keys):
        got = maker(key)
        want = VerdictRecord(software._ACTIONS[key[0]], key[1], software._REASONS[key[2]], *key[3:], 0)
        assert type(got) is VerdictRecord and got == want and hash(got) == hash(want) and repr(got) == repr(want)
        assert got.to_bits() == want.to_bits() and cache[key] is got
        assert len(cache) == (i % 3) + 1                        # emptied when it held 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.status = 200
    with pytest.raises(ValueError, match="13 items"):
        maker(keys[0][:-1])
    with pytest.raises(KeyError):
        maker((99,) + keys[0][1:])
    with pytest.raises(TypeError):
        maker(list(keys[0]))

"""``"model"`` and ``"sim"`` give identical verdicts: the whole core, end to end, through the public API.

The same seeded session runs on both devices: tenants (known, unknown, an abusive one on a tiny plan, a default),
pools (one empty, so 503s occur) and routes (tenant, session-header and L4 affinity), then ≥ 100 000 requests and
Ethernet frames (valid, malformed, smuggling attempts, every front-end punt reason), with clock steps and
configuration changes in between. Every ``Verdict`` (all fields, ``latency_cycles`` and ``retry_after_s`` included),
every ``stats()`` snapshot (but its ``cycle``) and the latency histogram must be equal. The sim side is the Verilated
RTL for every access (``wirespeed.open("sim")`` never falls back to the model).
"""

import os
import random

import pytest
from support.gateway import configure_gateway, gateway_request

import wirespeed
from wirespeed.host.tools import traffic
from wirespeed.hdl.pipeline.layouts import FLAG_NAMES
from wirespeed.host.models.frontend import build_frame, random_frame

SEED = int(os.environ.get("PARITY_SEED", "20261125"))
REQUESTS = int(os.environ.get("PARITY_REQUESTS", "100000"))


def session(dev, seed, n):
    rng = random.Random(seed)
    known, unknown = configure_gateway(dev, rng)
    verdicts, snapshots = [], []
    done = 0
    while done < n:
        step = rng.random()
        if step < 0.05:
            dev.clock.step(rng.choice([1_000, 250_000_000, 1_000_000_000, 30_000_000_000]))
        elif step < 0.07:
            dev.tenants.configure(unknown_policy=rng.choice(["reject", "default", "punt"]))
        elif step < 0.08:
            dev.pools.set_state(0, rng.choice(range(10, 18)), rng.choice(["up", "draining", "down"]))
        elif step < 0.09:
            snapshots.append(_stats(dev))
        rare = rng.random()
        if rare < 0.003:
            verdicts.append(dev.classify_frame(build_frame(b"")))                   # a bare segment
            done += 1
        elif rare < 0.006:
            verdicts.append(dev.classify(traffic.worst_case(rng, 8, 9000)))        # over the 8 KiB limit
            done += 1
        elif rng.random() < 0.25:
            payload = gateway_request(rng, known, unknown)
            frame = random_frame(rng, payload) if rng.random() < 0.5 else build_frame(
                payload, v6=rng.random() < 0.3, sport=rng.randrange(1024, 65536),
                dport=rng.choice([80, 8080]), vlans=[(0x8100, rng.randrange(4096))] * rng.randrange(3))
            verdicts.append(dev.classify_frame(frame))
            done += 1
        else:
            batch = [gateway_request(rng, known, unknown) for _ in range(rng.randrange(1, 40))]
            verdicts += dev.classify_many(batch)
            done += len(batch)
    snapshots.append(_stats(dev))
    return verdicts, snapshots, dev.latency_histogram()


def _stats(dev):
    """``stats()`` without ``cycle``: the block's cycle counter runs from reset, which the sim transport and the
    model reach through different numbers of cycles (as ``id.uptime_cycles``)."""
    stats = dev.stats()
    stats.pop("cycle")
    return stats


@pytest.mark.rtl
@pytest.mark.slow
def test_model_and_sim_give_identical_verdicts():
    results = {}
    for uri in ("model", "sim"):
        with wirespeed.open(uri, clock="manual") as dev:
            results[uri] = session(dev, SEED, REQUESTS)
    model, sim = results["model"], results["sim"]
    assert len(model[0]) == len(sim[0]) >= REQUESTS
    for i, (a, b) in enumerate(zip(model[0], sim[0])):
        assert a == b, f"verdict {i} differs (seed {SEED}):\n model {a}\n sim   {b}"
    assert model[1] == sim[1], "telemetry snapshots differ"
    assert model[2] == sim[2], "latency histograms differ"
    # The session exercised what it claims to.
    reasons = {v.reason for v in model[0]}
    assert {"ok", "rate_limited", "no_backend", "bare_cr_lf", "cl_and_te"} <= reasons, reasons
    assert {"not_ip", "not_tcp", "port_not_served", "ipv4_fragment", "ipv6_ext_header", "bad_l3_l4_header",
            "truncated_frame", "no_payload", "header_spans_segments", "header_too_large"} <= reasons, reasons
    assert {v.action for v in model[0]} == {"forward", "reject", "punt"}


@pytest.mark.rtl
def test_model_and_sim_agree_on_a_short_session():
    """The quick version for every run: 600 requests."""
    results = {}
    for uri in ("model", "sim"):
        with wirespeed.open(uri, clock="manual") as dev:
            results[uri] = session(dev, SEED + 1, 600)
    for i, (a, b) in enumerate(zip(results["model"][0], results["sim"][0])):
        assert a == b, f"verdict {i} differs:\n model {a}\n sim   {b}"
    assert results["model"][1:] == results["sim"][1:]


@pytest.mark.rtl
def test_model_and_sim_agree_through_the_mmio_window():
    """The MMIO submit window and result FIFO (what a board without DMA uses): ``classify_many`` on ``"sim"`` and
    ``"model"`` takes the stream path, so this drives the window directly with the driver's own ops."""
    results = {}
    for uri in ("model", "sim"):
        with wirespeed.open(uri, clock="manual") as dev:
            rng = random.Random(SEED + 2)
            known, unknown = configure_gateway(dev, rng)
            items = [(gateway_request(rng, known, unknown), False) for _ in range(1200)]
            items += [(build_frame(gateway_request(rng, known, unknown), sport=rng.randrange(1024, 65536)), True)
                      for _ in range(300)]
            rng.shuffle(items)
            records = dev._run(dev._submit_core().classify(items))
            results[uri] = (records, _stats(dev), dev.latency_histogram())
    model, sim = results["model"], results["sim"]
    assert len(model[0]) == len(sim[0]) == 1500
    for i, (a, b) in enumerate(zip(model[0], sim[0])):
        assert a == b, f"record {i} differs:\n model {a}\n sim   {b}"
    assert model[1:] == sim[1:]
    assert all(r.flags >> FLAG_NAMES.index("mmio") & 1 for r in model[0]), "every record came through the window"


@pytest.mark.rtl
def test_a_lookaside_packet_right_behind_a_realigned_frame_leaves_a_cycle_late():
    """The front end's output queue is one payload beat a cycle, in order, across packets. An inline frame whose last
    input beat completes two payload beats (the realigned payload needs one beat more) leaves the second a cycle
    later; a lookaside packet fed right behind it through the MMIO window is then a cycle late, on the RTL and in the
    model; a gap before it removes the delay."""
    from wirespeed.host.models.frontend import payload_beat_due
    width = wirespeed.open("model").info().width_bytes
    request = b"GET /v1/models HTTP/1.1\r\nHost: api\r\n\r\n"
    # A long frame (the window streams it while the host writes the next packet) whose last payload beat is an
    # extra one.
    for pad in range(800, 864):
        frame = build_frame(request + b"x" * pad)
        if payload_beat_due(frame, True, None, width)[-1][1] == 1:
            break
    else:
        pytest.fail("no frame with an extra final payload beat")
    short = (b"GET / HTTP/1.1\r\n\t:\r", False)
    latencies = {}
    for uri in ("model", "sim"):
        with wirespeed.open(uri, clock="manual") as dev:
            run = dev._submit_core().classify
            alone = dev._run(run([short]))[0].latency_cycles
            behind = [r.latency_cycles for r in dev._run(run([(frame, True), short]))]
            latencies[uri] = (alone, behind)
    assert latencies["model"] == latencies["sim"]
    alone, (_, behind) = latencies["sim"]
    assert behind == alone + 1, latencies

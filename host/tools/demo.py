"""``wirespeed demo``: a realistic AI API gateway configured on one core, a built-in traffic mix replayed through the
driver, and what the core decided.

:func:`configure` (key, pools, routes, tenants) ─▶ :func:`traffic_waves` (seeded mix) ─▶ ``Offload.classify_many`` /
``classify_frame`` ─▶ :func:`run` (verdict tables, telemetry, latency histogram) ─▶ on ``"sim"``,
:func:`~.bench.stream_core` (the same mix through ``s_axis`` at full rate: beats per cycle)

Everything but wall time is a function of the seed, and equal on ``"model"`` and ``"sim"``: the limiter clock is
frozen (``ns_per_cycle = 0``) and only moves by the ``clock.step`` between waves.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from . import traffic
from ..models.frontend import build_frame

__all__ = ["PLANS", "TENANTS", "POOLS", "Gateway", "configure", "traffic_waves", "run", "print_report"]

#: Rate plans, as SaaS tiers: requests/s and burst, LLM tokens/s and token burst (cost = body bytes / 4).
PLANS = {
    "enterprise": dict(requests_per_s=500, burst=1000, tokens_per_s=2_000_000, token_burst=4_000_000),
    "pro": dict(requests_per_s=40, burst=80, tokens_per_s=20_000, token_burst=40_000),
    "free": dict(requests_per_s=3, burst=6, tokens_per_s=1_000, token_burst=2_000),
    "trial": dict(requests_per_s=1, burst=3, tokens_per_s=500, token_burst=1_000),
}

#: (name, plan, API style, traffic weight). ``mallory`` is the abusive tenant: a trial plan and heavy traffic.
TENANTS = (
    ("acme", "enterprise", "openai", 14),
    ("globex", "enterprise", "anthropic", 14),
    ("initech", "pro", "openai", 7),
    ("umbrella", "pro", "anthropic", 7),
    ("hooli", "pro", "openai", 6),
    ("pied-piper", "free", "openai", 2),
    ("dunder", "free", "anthropic", 2),
    ("wayne", "free", "openai", 2),
    ("mallory", "trial", "openai", 10),
)

#: pool id → (name, backend ids, Maglev size). ``catalog`` has every backend down (maintenance): its routes get 503.
POOLS = {
    0: ("chat", list(range(10, 16)), 509),
    1: ("embeddings", [20, 21, 22], 251),
    2: ("anthropic", list(range(30, 36)), 509),
    3: ("catalog", [40, 41], 251),
}

#: Traffic that is not a known tenant's well-formed request, by row label, with its weight.
OTHERS = (("(unknown key)", 4), ("(malformed)", 4), ("(smuggling)", 4))

WAVE_STEP_NS = 1_000_000_000        # clock step between waves: one second of refill
SESSIONS_PER_TENANT = 4
FRAME_SHARE = 0.06                  # known-tenant requests sent as Ethernet frames (classify_frame)


@dataclass
class Gateway:
    """What :func:`configure` set up: tenant name → API key, pool names."""
    keys: dict
    pools: dict


def _api_key(rng: random.Random, style: str) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    body = "".join(rng.choice(alphabet) for _ in range(48))
    return ("sk-ant-api03-" if style == "anthropic" else "sk-proj-") + body


def configure(dev, rng: random.Random) -> Gateway:
    """Set up the gateway on ``dev``: secret Toeplitz and fingerprint keys, pools, routes, tenants and the limiter's
    policy."""
    dev.set_hash_key(rng.randbytes(40))
    dev.set_fingerprint_key(rng.randbytes(16))          # a secret modulus for API-key fingerprints
    for pool, (_, backends, size) in POOLS.items():
        dev.pools.set(pool, backends, size=size)
    for backend in POOLS[3][1]:
        dev.pools.set_state(3, backend, "down")
    dev.routes.default(0, key="tenant")
    dev.routes.add("/v1/chat/completions", 0, key="tenant")          # tenant affinity (prompt caches)
    dev.routes.add("/v1/messages", 2, key="header:x-session-id")     # session affinity
    dev.routes.add("/v1/embeddings", 1, key="tenant")
    dev.routes.add("/v1/models", 3, key="tenant")
    keys = {}
    for name, plan, style, _ in TENANTS:
        keys[name] = _api_key(rng, style)
        dev.tenants.add(keys[name], **PLANS[plan])
    dev.tenants.configure(unknown_policy="reject", cost_source="content_length", cost_fixed=1,
                          cost_scale=1 << 14)                         # a token per 4 body bytes
    dev.clock.ns_per_cycle = 0
    return Gateway(keys, {pool: spec[0] for pool, spec in POOLS.items()})


def _tenant_request(rng: random.Random, gw: Gateway, name: str, style: str) -> tuple[bytes, str | None]:
    key = gw.keys[name]
    if style == "anthropic":
        if rng.random() < 0.85:
            session = f"{name}-session-{rng.randrange(SESSIONS_PER_TENANT)}"
            return traffic.realistic(rng, api_key=key, session_id=session, kind="messages"), session
        return traffic.realistic(rng, api_key=key, kind="models"), None
    kind = rng.choices(["chat", "embeddings", "models"], weights=[75, 15, 10])[0]
    return traffic.realistic(rng, api_key=key, kind=kind), None


def traffic_waves(rng: random.Random, gw: Gateway, requests: int, waves: int = 10) -> list[list[dict]]:
    """The built-in mix, in ``waves`` waves: each item is ``{"label", "packet", "frame", "session"}``."""
    labels = [(name, style) for name, _, style, _ in TENANTS] + [(label, None) for label, _ in OTHERS]
    weights = [w for *_, w in TENANTS] + [w for _, w in OTHERS]
    known = [name for name, *_ in TENANTS]
    out = []
    for wave in range(waves):
        items = []
        for _ in range(requests // waves + (wave < requests % waves)):
            label, style = rng.choices(labels, weights=weights)[0]
            session, frame = None, False
            if label == "(unknown key)":
                packet = traffic.realistic(rng)
            elif label == "(malformed)":
                packet = traffic.mutate(rng, traffic.realistic(rng, api_key=gw.keys[rng.choice(known)])) or b"x"
            elif label == "(smuggling)":
                packet = traffic.smuggling(rng)
            else:
                packet, session = _tenant_request(rng, gw, label, style)
                if rng.random() < FRAME_SHARE:
                    frame = True
                    v6 = rng.random() < 0.5
                    packet = build_frame(packet, v6=v6, sport=rng.randrange(1024, 65536),
                                         src=None if v6 else f"10.0.{rng.randrange(256)}.{rng.randrange(1, 255)}")
            items.append({"label": label, "packet": packet, "frame": frame, "session": session})
        out.append(items)
    return out


def _classify_wave(dev, items: list[dict]) -> list:
    """Verdicts in order: runs of requests through ``classify_many``, frames one by one through ``classify_frame``."""
    verdicts, batch = [], []
    for item in items:
        if item["frame"]:
            if batch:
                verdicts += dev.classify_many(batch)
                batch = []
            verdicts.append(dev.classify_frame(item["packet"]))
        else:
            batch.append(item["packet"])
    if batch:
        verdicts += dev.classify_many(batch)
    return verdicts


def _tables(items: list[dict], verdicts: list, gw: Gateway) -> dict:
    rows = {}
    order = [name for name, *_ in TENANTS] + [label for label, _ in OTHERS]
    for label in order:
        rows[label] = {"requests": 0, "forward": 0, "429": 0, "503": 0, "400": 0, "401": 0, "431": 0, "punt": 0,
                       "backends": set()}
    sessions = {}
    for item, v in zip(items, verdicts):
        row = rows[item["label"]]
        row["requests"] += 1
        if v.action == "forward":
            row["forward"] += 1
            row["backends"].add((v.pool, v.backend))
            if item["session"] is not None:
                sessions.setdefault(item["session"], set()).add((v.pool, v.backend))
        elif v.action == "punt":
            row["punt"] += 1
        else:
            row[str(v.status)] += 1
    tenants = []
    for label, row in rows.items():
        backends = sorted(row.pop("backends"))
        row["other"] = row["requests"] - row["forward"] - row["429"]
        tenants.append({"tenant": label, **row,
                        "backends": [f"{gw.pools[p]}/{b}" for p, b in backends]})
    split = sorted(s for s, used in sessions.items() if len(used) > 1)
    affinity = {"sessions": len(sessions),
                "requests": sum(1 for i, v in zip(items, verdicts) if i["session"] and v.action == "forward"),
                "sessions_on_one_backend": len(sessions) - len(split), "split_sessions": split,
                "backend_of": {s: f"{gw.pools[p]}/{b}" for s, used in sorted(sessions.items())
                               for p, b in sorted(used)[:1]}}
    return {"tenants": tenants, "session_affinity": affinity}


def _stream_throughput(dev, gw_rng_seed: int, items: list[dict], count: int, progress=None) -> dict:
    """On ``"sim"``: the mix's first ``count`` requests through ``s_axis`` (lookaside), every ready held high."""
    from .bench import percentile, stream_core
    from ..driver.offload import open as ws_open
    packets = [i["packet"] for i in items if not i["frame"]][:count]
    # A model device configured alike gives the parser's stop byte of each packet (its prefixes and extra slots).
    with ws_open("model", clock="manual") as shadow:
        configure(shadow, random.Random(gw_rng_seed))
        core = shadow.transport.model
        stops = [core.classify(p, False, 0, mmio=False).descriptor.stop_index(len(p)) for p in packets]
    dev.write_register("pipeline.ctrl.axis_inline", 0)
    width = dev.info().width_bytes
    run = stream_core(dev.transport, packets, width, progress=progress)
    latencies = [run.verdict_cycles[k] - run.accepted[k][stops[k] // width] for k in range(len(packets))]
    return {"packets": len(packets), "beats": run.beats, "cycles": run.cycles,
            "beats_per_cycle": round(run.beats / run.cycles, 4),
            "decision_latency_cycles": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                                        "max": max(latencies)},
            "egress_mismatches": sum(a != b for a, b in zip(run.egress, packets)) + abs(len(run.egress) - len(packets))}


def run(uri: str = "sim", requests: int = 2000, seed: int = 1, stream_packets: int = 300, progress=None,
        opener=None) -> dict:
    """Configure the gateway on ``uri``, replay the mix, and return the report (see :func:`print_report`).

    ``progress(done, total)`` is called as requests complete; ``opener(uri)`` opens the device (default
    ``wirespeed.open``)."""
    from ..driver.offload import open as ws_open
    rng = random.Random(seed)
    config_seed = rng.getrandbits(64)
    start = time.perf_counter()
    with (opener or ws_open)(uri, clock="manual") as dev:
        info = dev.info()
        gw = configure(dev, random.Random(config_seed))
        waves = traffic_waves(rng, gw, requests)
        items, verdicts = [], []
        for wave in waves:
            dev.clock.step(WAVE_STEP_NS)
            for k in range(0, len(wave), 100):
                chunk = wave[k:k + 100]
                verdicts += _classify_wave(dev, chunk)
                items += chunk
                if progress:
                    progress(len(items), requests)
        stats = dev.stats()
        hist = dev.latency_histogram()
        classify_s = time.perf_counter() - start
        throughput = None
        if uri == "sim":
            throughput = _stream_throughput(dev, config_seed, items, stream_packets)
    ns_per_cycle = 1e9 / info.clock_hz
    tables = _tables(items, verdicts, gw)
    reasons = {}
    for v in verdicts:
        key = (v.reason, v.action, v.status)
        reasons[key] = reasons.get(key, 0) + 1
    return {
        "uri": uri, "seed": seed, "requests": len(items),
        "frames": sum(i["frame"] for i in items), "waves": len(waves), "clock_step_ns": WAVE_STEP_NS,
        "core": {"clock_hz": info.clock_hz, "width_bytes": info.width_bytes, "build_hash": info.as_dict()["build_hash"]},
        "pools": {name: {"backends": backends, "up": [] if pool == 3 else backends}
                  for pool, (name, backends, _) in POOLS.items()},
        "plans": {name: plan for name, plan, *_ in TENANTS},
        **tables,
        "reasons": [{"reason": r, "action": a, "status": s, "count": n}
                    for (r, a, s), n in sorted(reasons.items(), key=lambda e: (-e[1], e[0]))],
        "telemetry": {"events": stats["events"], "actions": stats["actions"],
                      "reasons": {k: v for k, v in stats["reasons"].items() if v}},
        "latency_histogram": {
            "buckets": [{"low_cycles": lo, "high_cycles": hi, "low_ns": lo * ns_per_cycle,
                         "high_ns": None if hi is None else hi * ns_per_cycle, "count": n}
                        for lo, hi, n in hist.buckets if n],
            "count": hist.count, "max_cycles": hist.max, "mean_cycles": round(hist.mean, 3) if hist.count else None,
            "p50_cycles": hist.percentile(50), "p99_cycles": hist.percentile(99)},
        "throughput": throughput,
        "throughput_note": None if throughput else
            f"the {uri!r} transport has no stream timing; run with --uri sim for beats per cycle",
        "wall_seconds": round(classify_s, 2),
    }


def print_report(r: dict) -> None:
    """The report as text tables."""
    print(f"wirespeed demo on {r['uri']} (seed {r['seed']}): {r['requests']} requests "
          f"({r['frames']} as Ethernet frames) in {r['waves']} waves, clock stepped "
          f"{r['clock_step_ns'] / 1e9:g} s before each")
    print("pools: " + ", ".join(f"{n} ({len(p['up'])}/{len(p['backends'])} up)" for n, p in r["pools"].items()))
    print()
    cols = ("requests", "forward", "429", "503", "400", "401", "431", "punt")
    print(f"{'tenant':<14} {'plan':<10} " + " ".join(f"{c:>8}" for c in cols) + "  backends used")
    for row in r["tenants"]:
        plan = r["plans"].get(row["tenant"], "")
        backends = ", ".join(row["backends"]) if len(row["backends"]) <= 4 else \
            f"{len(row['backends'])} backends: " + ", ".join(row["backends"][:3]) + ", ..."
        print(f"{row['tenant']:<14} {plan:<10} " + " ".join(f"{row[c]:>8}" for c in cols) + f"  {backends}")
    a = r["session_affinity"]
    print(f"\nsession affinity (/v1/messages hashed on x-session-id): {a['sessions']} sessions, {a['requests']} "
          f"forwarded requests, {a['sessions_on_one_backend']} sessions each stayed on one backend")
    print(f"\n{'reason':<28} {'action':<8} {'status':>6} {'count':>7}")
    for e in r["reasons"]:
        print(f"{e['reason']:<28} {e['action']:<8} {e['status']:>6} {e['count']:>7}")
    h = r["latency_histogram"]
    clock_mhz = r["core"]["clock_hz"] / 1e6
    print(f"\nhardware latency histogram (first beat to verdict; telemetry counters, {clock_mhz:g} MHz clock):")
    for b in h["buckets"]:
        hi_c = "+" if b["high_cycles"] is None else f"-{b['high_cycles']}"
        hi_n = "+" if b["high_ns"] is None else f"-{b['high_ns']:g}"
        print(f"  {b['low_cycles']:>5}{hi_c:<7} cycles  {b['low_ns']:>7g}{hi_n:<9} ns  {b['count']:>7}")
    print(f"  {h['count']} verdicts, mean {h['mean_cycles']} cycles, max {h['max_cycles']} cycles")
    t = r["throughput"]
    if t:
        lat = t["decision_latency_cycles"]
        print(f"\nthroughput: {t['packets']} requests streamed through s_axis (every ready high): {t['beats']} beats "
              f"in {t['cycles']} cycles = {t['beats_per_cycle']:.4f} beats/cycle; verdict "
              f"{lat['p50']}/{lat['p99']}/{lat['max']} cycles (p50/p99/max) after the beat holding the last header "
              f"byte")
    else:
        print(f"\nthroughput: not measured: {r['throughput_note']}")
    print(f"wall time: {r['wall_seconds']} s")

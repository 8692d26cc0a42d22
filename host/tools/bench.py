"""Measurements behind ``wirespeed bench`` (and ``make bench``): cycle counts from the Verilated RTL, and rates of the
software paths on this machine.

``wirespeed bench`` ─▶ :func:`parser_cycles` (the parser on Verilator, valid and ready held high)
                   ─▶ :func:`register_access` (model and sim transports)
                   ─▶ :func:`parser_model_rate` (the Python model)
                   ─▶ :func:`limiter_cycles` (the limiter on Verilator), :func:`placement_time` (host placement)
                   ─▶ :func:`router_cycles` (the router on Verilator), :func:`maglev_build` (numpy tables)
                   ─▶ :func:`core_cycles` (WirespeedCore on Verilator through s_axis, against the model),
                      :func:`core_model_rate` (``"model"`` classify_many), :func:`software_rate` (``"software"``),
                      :func:`software_baseline` (httptools)

Cycle figures are properties of the RTL and do not depend on the machine; rates (per second) do.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import numpy as np

from ...hdl.bus.packet import pack_beats
from ...hdl.bus.standalone import Standalone
from ...hdl.parser.header_parser import HeaderParser, parser_regmap
from . import traffic
from ..models.parser import ParserConfig, parse
from ..keys import derive_key
from ..driver.parser_config import configure_ops
from ..driver.registers import Registers, run

__all__ = ["parser_cycles", "register_access", "parser_model_rate", "percentile", "bench_config", "limiter_cycles",
           "placement_time", "router_cycles", "maglev_build", "stream_core", "StreamRun", "core_cycles",
           "sim_open_time", "sim_classify_rate", "block_harness",
           "core_model_rate", "software_rate", "software_baseline"]


def percentile(values, q: float):
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 100)) - 1))
    return ordered[rank]


def bench_config() -> ParserConfig:
    poly, seed = derive_key(b"wirespeed bench")
    return ParserConfig(poly=poly, seed=seed,
                        prefixes=[(b"/v1/chat/completions", 1), (b"/v1/messages", 2), (b"/v1/", 3)],
                        extras=[b"x-session-id", b"x-model", b"anthropic-version", None])


def _packets(mix: str, width: int, count: int, seed: int):
    rng = random.Random(seed)
    if mix == "realistic":
        return [traffic.realistic(rng) for _ in range(count)]
    if mix == "worst_case":
        return [traffic.worst_case(rng, width, rng.randrange(256, 2048)) for _ in range(count)]
    raise ValueError(f"mix must be realistic or worst_case, got {mix!r}")


def block_harness(top: str, make_component, params, last_fields=None):
    """A standalone block's :class:`~wirespeed.sim.harness.Harness` and a register transport on it (Verilog and
    build cached, see ``sim/``)."""
    from ...sim.elaborate import cached_verilog
    from ...sim.harness import Harness
    from ..transports.sim import HarnessAxiLite
    harness = Harness(cached_verilog(top, make_component, params), top, last_fields=last_fields)
    return harness, HarnessAxiLite(harness)


def parser_cycles(width: int, mix: str, count: int = 200, seed: int = 1, progress=None) -> dict:
    """Stream ``count`` packets through the Verilated parser (compiled harness) with ``valid`` and every ``ready``
    held high.

    Returns beats per cycle (beats accepted / cycles from the first to the last beat), the descriptor latency in
    cycles after the beat holding the stop byte (p50/p99/p99.99/max), and a descriptor check against the model.
    """
    from ...sim.harness import Batch, ints_from_words, words_from_ints

    top = f"parser_w{width}"            # the same build as the parser volume test's
    harness, bus = block_harness(top, lambda: Standalone(HeaderParser(width), parser_regmap()), width)
    try:
        config = bench_config()
        run(configure_ops(Registers(parser_regmap()), config), bus)
        bus.tick(2)

        packets = _packets(mix, width, count, seed)
        expected = [parse(p, config) for p in packets]
        beats = []
        stop_beat_index = []         # global beat index of each packet's stop byte
        for p, d in zip(packets, expected):
            stop_beat_index.append(len(beats) + d.stop_index(len(p)) // width)
            beats += pack_beats(p, width)
        stream = harness.by_name["i_stream"]
        result = harness.run(Batch(beats={"i_stream": words_from_ints(beats, stream.words)},
                                   expect={"o_desc": len(packets)}))
    finally:
        bus.close()
    accepted_at = result.accepted["i_stream"].tolist()
    descs = ints_from_words(result.beats["o_desc"])
    desc_cycles = result.beat_cycles["o_desc"].tolist()
    latencies = [c - accepted_at[stop_beat_index[k]] for k, c in enumerate(desc_cycles)]
    mismatches = sum(d != e.to_bits() for d, e in zip(descs, expected)) + abs(len(descs) - len(expected))
    span = accepted_at[-1] - accepted_at[0] + 1
    return {
        "width_bytes": width, "mix": mix, "packets": len(packets), "beats": len(beats), "cycles": span,
        "beats_per_cycle": round(len(beats) / span, 4),
        "descriptor_latency_cycles": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                                      "p99.99": percentile(latencies, 99.99), "max": max(latencies)},
        "descriptor_mismatches": mismatches,
        "bytes_per_cycle": round(sum(map(len, packets)) / span, 2),
    }


def parser_model_rate(count: int = 20_000, seed: int = 1) -> dict:
    """Requests per second through the Python model (realistic mix) on this machine."""
    packets = _packets("realistic", 8, count, seed)
    config = bench_config()
    start = time.perf_counter()
    for p in packets:
        parse(p, config)
    elapsed = time.perf_counter() - start
    return {"requests": count, "seconds": round(elapsed, 3), "requests_per_s": round(count / elapsed)}


def register_access(uri: str, accesses: int) -> dict:
    """Register write/read pairs on the scratch register through ``uri``; cycles per access on ``"sim"``."""
    from ..driver.offload import open as ws_open
    with ws_open(uri) as dev:
        address = dev.core.regmap["id.scratch"].address
        t = dev.transport
        c0 = getattr(t, "cycles", None)
        pairs = accesses // 2
        start = time.perf_counter()
        for i in range(pairs):
            t.write32(address, i)
            t.read32(address)
        elapsed = time.perf_counter() - start
        entry = {"accesses": 2 * pairs, "seconds": round(elapsed, 4), "accesses_per_s": round(2 * pairs / elapsed)}
        if c0 is not None:
            entry["cycles_per_access"] = (t.cycles - c0) / (2 * pairs)
            entry["sim_cycles_per_s"] = round((t.cycles - c0) / elapsed)
    return entry



def _limiter_setup(bus, params, model, tenants: int, rng):
    """Plans and tenants through the limiter's registers (standalone map), mirrored in ``model``."""
    from ...hdl.limiter.rate_limiter import limiter_regmap
    from ...hdl.limiter.layouts import TableOp
    from ..models.limiter import Plan
    from ..placement import TenantPlacement
    regs = Registers(limiter_regmap())
    plans = [Plan(1000, 50, 100_000, 20_000).validate(params), Plan(50_000, 500, 10**7, 10**6).validate(params)]
    for index, plan in enumerate(plans):
        r = plan.registers(params)
        for name in ("req_rate", "cost_rate", "req_cap", "cost_cap", "inv_req", "inv_cost"):
            run(regs.write(f"plan_{name}", r[name]), bus)
        run(regs.write("plan_commit", index | 1 << 31), bus)
        model.write_plan(index, plan)
    run(regs.write("clock_ns_per_cycle", 0), bus)
    bus.tick(4)
    now = run(regs.read("clock_now"), bus)
    placement = TenantPlacement(params.capacity)
    keys = []
    for _ in range(tenants):
        fp = rng.getrandbits(64)
        slot, moves = placement.insert(fp)
        for _, old, new in moves:
            for name, value in (("tbl_slot", old), ("tbl_dst", new), ("tbl_op", TableOp.MOVE.value | 1 << 31)):
                run(regs.write(name, value), bus)
            bus.tick(4)
            model.table_op(TableOp.MOVE, old, new, 0, 0, False, now)
        plan = len(keys) % len(plans)
        for name, value in (("tbl_slot", slot), ("tbl_fp", fp), ("tbl_entry", plan | 1 << 8),
                            ("tbl_op", TableOp.WRITE.value | 1 << 31)):
            run(regs.write(name, value), bus)
        bus.tick(4)
        assert model.table_op(TableOp.WRITE, slot, 0, fp, plan, True, now).ok
        keys.append(fp)
    run(regs.write("ctrl", 1 << 4), bus)                # cost from content-length
    bus.tick(4)
    return keys, now


def _stream(harness, out: str, bits: list, expected: list, vmask: int) -> tuple:
    """Offer ``bits`` on ``i_req`` with ``valid`` and ``<out>.ready`` held high (compiled harness), and compare each
    verdict (the payload under ``vmask``) with ``expected[k].to_bits()``. Returns (cycles from first to last
    acceptance, latency of each verdict in cycles after its acceptance, mismatches)."""
    from ...sim.harness import Batch, ints_from_words, words_from_ints
    stream = harness.by_name["i_req"]
    result = harness.run(Batch(beats={"i_req": words_from_ints(bits, stream.words)}, expect={out: len(bits)}))
    accepted_at = result.accepted["i_req"].tolist()
    got = ints_from_words(result.beats[out])
    latencies = [int(c) - accepted_at[k] for k, c in enumerate(result.beat_cycles[out].tolist())]
    mismatches = sum((g & vmask) != e.to_bits() for g, e in zip(got, expected)) + abs(len(got) - len(expected))
    return accepted_at[-1] - accepted_at[0] + 1, latencies, mismatches


def limiter_cycles(count: int = 20_000, hot_fraction: float = 0.5, tenants: int = 200, seed: int = 1,
                   params=None) -> dict:
    """Requests through the Verilated limiter with ``valid`` and ``ready`` held high.

    ``hot_fraction`` of the requests go to one tenant, many of them back to back (the read-modify-write forwarding
    path); the rest to random tenants, unknown keys and keyless requests. Returns decisions per cycle (accepted /
    cycles from first to last acceptance), the latency in cycles from acceptance to verdict, the verdict mix, and a
    check of every verdict against the model.
    """
    from types import SimpleNamespace

    from ...hdl.limiter.rate_limiter import LimitRequest, RateLimiter, limiter_regmap, limiter_resets
    from ...hdl.limiter.layouts import LimiterParams
    from ...hdl.limiter.layouts import LimitVerdict as VerdictLayout
    from ...hdl.parser.layouts import KeySource
    from ..models.limiter import LimiterConfig, LimiterModel

    params = params or LimiterParams()
    harness, bus = block_harness("limiter_bench", lambda: Standalone(
        RateLimiter(params), limiter_regmap().with_resets(limiter_resets(params))), params)
    rng = random.Random(seed)
    model = LimiterModel(params, LimiterConfig(cost_source=1))
    keys, now = _limiter_setup(bus, params, model, tenants, rng)
    offsets = {name: f.offset for name, f in LimitRequest}

    requests = []
    for i in range(count):
        r = rng.random()
        if r < hot_fraction:
            fp, present = keys[0], 1
        elif r < 0.95:
            fp, present = rng.choice(keys), 1
        else:
            fp, present = rng.getrandbits(64), int(rng.random() < 0.5)
        cl = rng.choice([0, 100, 2000, 50_000])
        bits = (present << offsets["key_present"]) | (fp << offsets["key_fp"]) | (1 << offsets["cl_present"]) \
            | (cl << offsets["content_length"])
        desc = SimpleNamespace(key_source=KeySource.AUTHORIZATION if present else KeySource.NONE, key_fp=fp,
                               cl_present=True, content_length=cl, extra_numeric=False, extra_value=0)
        requests.append((bits, model.decide(desc, now)))

    vmask = (1 << VerdictLayout.as_shape().size) - 1
    verdicts = [v for _, v in requests]
    try:
        span, latencies, mismatches = _stream(harness, "o_verdict", [b for b, _ in requests], verdicts, vmask)
    finally:
        bus.close()
    outcomes = {}
    for v in verdicts:
        outcomes[v.status] = outcomes.get(v.status, 0) + 1
    return {
        "capacity": params.capacity, "tick_log2": params.tick_log2, "requests": count, "tenants": len(keys),
        "hot_fraction": hot_fraction, "cycles": span, "decisions_per_cycle": round(count / span, 4),
        "latency_cycles": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                           "max": max(latencies)},
        "statuses": {str(k): v for k, v in sorted(outcomes.items())}, "verdict_mismatches": mismatches,
    }


def placement_time(capacity: int = 16384, keys: int | None = None, seed: int = 1) -> dict:
    """Host placement (:class:`~wirespeed.host.placement.TenantPlacement`) of random keys: time and load factor.

    With ``keys`` None, fills the table until ``TableFull`` (the load factor the placement reaches).
    """
    from ..errors import TableFull
    from ..placement import TenantPlacement
    rng = random.Random(seed)
    placement = TenantPlacement(capacity)
    moves = 0
    start = time.perf_counter()
    try:
        for _ in range(keys if keys is not None else capacity + 1):
            moves += len(placement.insert(rng.getrandbits(64))[1])
        full = False
    except TableFull:
        full = True
    elapsed = time.perf_counter() - start
    return {"capacity": capacity, "keys": len(placement), "seconds": round(elapsed, 3), "moves": moves,
            "load_factor": round(placement.load_factor, 4), "stopped_at_table_full": full}


def router_cycles(count: int = 20_000, seed: int = 1, params=None) -> dict:
    """Requests through the Verilated router with ``valid`` and ``ready`` held high: 4 pools (one empty, so some
    verdicts are 503), classes hashing the API key, an extra header or the L4 tuple (IPv4 and IPv6). Returns
    requests per cycle, the latency from acceptance to verdict, and a check of every verdict against the model."""
    from ...hdl.router.hash_router import Router, router_regmap
    from ...hdl.router.layouts import RouteRequest, RouterParams
    from ...hdl.router.layouts import RouteVerdict as VerdictLayout
    from ..models.router import RouterModel
    from ..maglev import maglev_table, pack_words

    params = params or RouterParams(table_entries=2048, pools=4)
    harness, bus = block_harness("router_bench", lambda: Standalone(Router(params), router_regmap()), params)
    regs = Registers(router_regmap())
    rng = random.Random(seed)
    model = RouterModel(params)
    key = bytes(rng.getrandbits(8) for _ in range(40))
    for i in range(10):
        run(regs.write(f"key[{i}]", int.from_bytes(key[4 * i:4 * i + 4], "big")), bus)
    model.set_key(key)
    entries = np.zeros(params.words * params.ids_per_word, dtype=np.uint32)
    sizes = [509, 251, 0, 1021][:params.pools]
    base = 0
    for index, m in enumerate(sizes):
        backends = rng.sample(range(1 << params.id_bits), 8) if m else []
        for reg, value in (("pool_base", base), ("pool_size", m | (int(bool(m)) << 31)),
                           ("pool_commit", index | 1 << 31)):
            run(regs.write(reg, value), bus)
        model.commit_pool(index, base, m, bool(m))
        if m:
            entries[base:base + m] = maglev_table(m, backends)
        base += m
    for c in range(16):
        pool, key_sel = c % params.pools, c % 3
        run(regs.write("class_stage", pool | key_sel << 4), bus)
        run(regs.write("class_commit", c | 1 << 31), bus)
        model.commit_class(c, pool, key_sel, 0)
    run(regs.write("table_addr", 0), bus)
    for addr, w in enumerate(pack_words(entries, params.id_bits)):
        run(regs.write("table_wdata", int(w)), bus)
        model.write_word(addr, int(w))
    run(regs.write("swap", 1), bus)
    model.swap()
    bus.tick(4)

    offsets = {name: f.offset for name, f in RouteRequest}
    requests = []
    for _ in range(count):
        v6 = rng.random() < 0.5
        fields = dict(route_class=rng.randrange(16), key_present=1, key_fp=rng.getrandbits(64), extra_present=1,
                      l4_valid=1, l4_v6=int(v6), l4_ports=1, l4_src=rng.getrandbits(128 if v6 else 32),
                      l4_dst=rng.getrandbits(128 if v6 else 32), l4_sport=rng.getrandbits(16),
                      l4_dport=rng.getrandbits(16))
        extra = tuple(rng.getrandbits(64) for _ in range(4))
        bits = sum(v << offsets[k] for k, v in fields.items())
        bits |= sum(fp << (offsets["extra_fp"] + 64 * i) for i, fp in enumerate(extra))
        requests.append((bits, dict(fields, extra_fp=extra)))

    from types import SimpleNamespace
    vmask = (1 << VerdictLayout.as_shape().size) - 1
    expected = [model.route(SimpleNamespace(**fields)) for _, fields in requests]     # in acceptance order
    try:
        span, latencies, mismatches = _stream(harness, "o_route", [b for b, _ in requests], expected, vmask)
    finally:
        bus.close()
    return {"table_entries": params.table_entries, "id_bits": params.id_bits, "requests": count, "cycles": span,
            "requests_per_cycle": round(count / span, 4),
            "latency_cycles": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                               "max": max(latencies)},
            "routed": model.routed, "unavailable": model.unavailable, "verdict_mismatches": mismatches}


def maglev_build(n_list=(1000, 100, 10, 1), m: int = 65537, repeat: int = 5) -> list:
    """Host Maglev table builds (numpy) for M = ``m`` and each backend count: best-of-``repeat`` time."""
    from ..maglev import maglev_build_time
    return [maglev_build_time(m=m, n=n, repeat=repeat) for n in n_list]


# -- the whole core, end to end -----------------------------------------------------------------------------------

@dataclass
class StreamRun:
    """What :func:`stream_core` saw.

    Attributes
    ----------
    accepted : list of list of int
        Per packet, the cycle each of its beats was accepted on ``s_axis``.
    verdict_cycles : list of int
        Per packet, the cycle its ``m_verdict`` record was valid (every ready is high, so also taken).
    records : list of int
        The ``m_verdict`` records' bits (``VerdictRecord.from_bits``).
    egress : list of bytes
        The packets as they left ``m_axis``; ``egress_tuser``: the ``tuser`` of each one's ``tlast`` beat.
    beats, cycles : int
        Beats offered, and cycles from the first acceptance to the last.
    sim_cycles, seconds : int, float
        Cycles simulated in the run (until the last output), and its wall time.
    """
    accepted: list
    verdict_cycles: list
    records: list
    egress: list
    egress_tuser: list
    beats: int
    cycles: int
    sim_cycles: int
    seconds: float


def stream_core(transport, packets, width: int, progress=None, timeout_cycles: int = 10_000) -> StreamRun:
    """Offer ``packets`` back to back on the core's ``s_axis`` (``tvalid`` held high), with ``m_axis`` and
    ``m_verdict`` ready held high, on a :class:`~wirespeed.host.transports.sim.SimTransport` (one compiled-harness
    batch); collect every output until each packet has its verdict and its egress copy."""
    from ...sim.harness import Batch, ints_from_words
    for k, p in enumerate(packets):
        if not p:
            raise ValueError(f"packet {k} is empty; an AXI-Stream packet carries at least one byte")
    harness = transport.harness
    beats = transport.axis_beats(packets)
    n = len(packets)
    start = time.perf_counter()
    result = harness.run(Batch(beats={"s_axis": beats}, expect={"m_verdict": n, "m_axis": n},
                               stall_cycles=timeout_cycles))
    seconds = time.perf_counter() - start
    if progress:
        progress(len(beats), len(beats))
    accepted_all = result.accepted["s_axis"].tolist()
    per_packet = [max(1, -(-len(p) // width)) for p in packets]
    accepted, k = [], 0
    for nb in per_packet:
        accepted.append(accepted_all[k:k + nb])
        k += nb
    m = harness.by_name["m_verdict"]
    d_off, d_bits = m.field("tdata")
    records = [v & ((1 << d_bits) - 1) for v in ints_from_words(result.beats["m_verdict"][:, d_off:])]
    out = harness.by_name["m_axis"]
    ob = result.beats["m_axis"]
    t_off, _ = out.field("tdata")
    k_off, _ = out.field("tkeep")
    l_off, _ = out.field("tlast")
    u_off, u_bits = out.field("tuser")
    egress, tusers, current = [], [], bytearray()
    data_bytes = np.ascontiguousarray(ob[:, t_off:t_off + width // 4]).view(np.uint8).reshape(-1, width)
    for i in range(len(ob)):
        current += data_bytes[i, :int(ob[i, k_off]).bit_length()].tobytes()
        if ob[i, l_off] & 1:
            egress.append(bytes(current))
            tusers.append(ints_from_words(ob[i:i + 1, u_off:])[0] & ((1 << u_bits) - 1))
            current = bytearray()
    first, last = accepted_all[0], accepted_all[-1]
    return StreamRun(accepted, result.beat_cycles["m_verdict"].tolist(), records, egress, tusers, len(beats),
                     last - first + 1, result.cycles, seconds)


#: Rates for the bench's tenants: generous, except one tiny plan, so that some requests are rate limited.
_BENCH_PLANS = (dict(requests_per_s=1_000_000, burst=1_000_000),             # tokens unlimited
                dict(requests_per_s=1, burst=4, tokens_per_s=1000, token_burst=2000))


def _core_setup(dev, rng: random.Random, tenants: int = 16) -> list:
    """The bench's gateway configuration (the same calls on the RTL and the model); returns the tenants' keys."""
    dev.set_hash_key(bytes(rng.getrandbits(8) for _ in range(40)))
    dev.pools.set(0, list(range(20, 28)), size=509)
    dev.pools.set(1, [7, 8, 9], size=251)
    dev.pools.set(2, [], size=251)
    dev.routes.default(0, key="tenant")
    dev.routes.add("/v1/messages", 1, key="header:x-session-id")
    dev.routes.add("/v1/embeddings", 2)
    dev.routes.add("/v1/chat/", 0, key="l4")
    keys = ["sk-" + "%040x" % rng.getrandbits(160) for _ in range(tenants)]
    for i, k in enumerate(keys):
        dev.tenants.add(k, **_BENCH_PLANS[i == 0])
    dev.tenants.configure(cost_source="content_length")
    dev.clock.ns_per_cycle = 0               # decisions independent of when each packet arrives
    return keys


def _core_packets(mix: str, keys: list, count: int, rng: random.Random, width: int) -> list:
    if mix == "worst_case":
        return [traffic.worst_case(rng, width, rng.randrange(256, 2048)) for _ in range(count)]
    if mix != "realistic":
        raise ValueError(f"mix must be realistic or worst_case, got {mix!r}")
    out = []
    for _ in range(count):
        r = rng.random()
        session = f"s{rng.randrange(9)}" if rng.random() < 0.3 else None
        if r < 0.85:
            p = traffic.realistic(rng, api_key=rng.choice(keys), session_id=session)
        elif r < 0.9:
            p = traffic.realistic(rng)                                      # unknown key: 401
        elif r < 0.95:
            p = traffic.mutate(rng, traffic.realistic(rng, api_key=rng.choice(keys)))
        else:
            p = traffic.smuggling(rng)
        out.append(p or b"x")
    return out


def core_cycles(mix: str, inline: bool, count: int = 300, seed: int = 1, progress=None) -> dict:
    """The whole core (``WirespeedCore`` on Verilator) with ``s_axis`` valid and every ready held high.

    ``mix``: ``realistic`` (known tenants, one on a tiny plan, unknown keys, malformed and smuggling requests) or
    ``worst_case``; ``inline``: the packets are Ethernet frames (``build_frame``) through the front end. Returns beats
    per cycle, the decision latency (cycles from the beat holding the parser's stop byte to ``m_verdict`` valid), a
    check of every record against the model (all fields but ``latency_cycles``) and of every egress packet against
    its input, and the simulated cycles per wall second.
    """
    from ..models.frontend import build_frame
    from ..transports.model import ModelTransport
    from ..driver.offload import Offload
    from ..transports.sim import SimTransport
    from ..driver.verdict import Verdict
    from ..models.pipeline import VerdictRecord

    rng = random.Random(seed)
    dev = Offload(SimTransport(), "sim", clock="manual")
    model = Offload(ModelTransport(), "model", clock="manual")
    try:
        keys_seed = rng.getrandbits(64)
        keys = _core_setup(dev, random.Random(keys_seed))
        _core_setup(model, random.Random(keys_seed))
        width = dev.info().width_bytes
        dev.write_register("pipeline.ctrl.axis_inline", int(inline))
        requests = _core_packets(mix, keys, count, rng, width)
        packets = [build_frame(p, v6=rng.random() < 0.3, sport=rng.randrange(1024, 65536)) if inline else p
                   for p in requests]
        core = model.transport.model
        outcomes = [core.classify(p, inline, 0, mmio=False) for p in packets]
        run_ = stream_core(dev.transport, packets, width, progress=progress)
    finally:
        dev.close()
        model.close()
    latencies, mismatches, statuses = [], 0, {}
    for k, (p, o) in enumerate(zip(packets, outcomes)):
        got = Verdict.from_record(VerdictRecord.from_bits(run_.records[k])).as_dict()
        want = Verdict.from_record(o.record).as_dict()
        got["latency_cycles"] = want["latency_cycles"] = None
        mismatches += got != want
        key = want["status"] if want["action"] != "punt" else "punt"
        statuses[str(key)] = statuses.get(str(key), 0) + 1
        if inline and o.info.punt:
            continue                              # no HTTP parse: nothing to time from
        stop = o.descriptor.stop_index(len(p) - o.info.payload_offset if inline else len(p))
        if inline:
            stop = o.info.payload_offset + min(stop, len(p) - 1 - o.info.payload_offset)
        beat = min(stop // width, len(run_.accepted[k]) - 1)
        latencies.append(run_.verdict_cycles[k] - run_.accepted[k][beat])
    egress_bad = sum(a != b for a, b in zip(run_.egress, packets)) + abs(len(run_.egress) - len(packets))
    tuser_bad = sum(t != r for t, r in zip(run_.egress_tuser, run_.records))
    return {
        "mix": mix, "mode": "inline" if inline else "lookaside", "width_bytes": width, "packets": count,
        "bytes": sum(map(len, packets)), "beats": run_.beats, "cycles": run_.cycles,
        "beats_per_cycle": round(run_.beats / run_.cycles, 4),
        "decision_latency_cycles": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                                    "p99.99": percentile(latencies, 99.99), "max": max(latencies),
                                    "timed": len(latencies)},
        "verdict_mismatches": mismatches, "egress_mismatches": egress_bad, "tuser_mismatches": tuser_bad,
        "statuses": dict(sorted(statuses.items())),
        "sim_cycles": run_.sim_cycles, "seconds": round(run_.seconds, 3),
        "sim_cycles_per_s": round(run_.sim_cycles / run_.seconds),
    }


def sim_open_time(repeat: int = 3) -> dict:
    """Seconds for ``wirespeed.open("sim")`` plus ``close()`` with the Verilog and the harness already cached (the
    first open, which may elaborate and compile, is not timed)."""
    from ..driver.offload import open as ws_open
    with ws_open("sim"):
        pass
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        with ws_open("sim"):
            pass
        times.append(time.perf_counter() - start)
    return {"repeat": repeat, "best_s": round(min(times), 3), "max_s": round(max(times), 3)}


def sim_classify_rate(count: int = 1000, seed: int = 1) -> dict:
    """Requests per second through ``wirespeed.open("sim").classify_many`` (the realistic mix, one call), and the
    number of verdicts that differ from ``open("model")`` on the same calls."""
    from ..driver.offload import open as ws_open
    rng = random.Random(seed)
    keys_seed = rng.getrandbits(64)
    with ws_open("sim") as dev, ws_open("model") as model:
        keys = _core_setup(dev, random.Random(keys_seed))
        _core_setup(model, random.Random(keys_seed))
        packets = _core_packets("realistic", keys, count, rng, 8)
        start = time.perf_counter()
        verdicts = dev.classify_many(packets)
        elapsed = time.perf_counter() - start
        want = model.classify_many(packets)
    return {"requests": count, "seconds": round(elapsed, 3), "requests_per_s": round(count / elapsed),
            "verdict_mismatches": sum(a != b for a, b in zip(verdicts, want)) + abs(len(verdicts) - len(want))}


def core_model_rate(count: int = 2000, seed: int = 1) -> dict:
    """Requests per second through ``wirespeed.open("model").classify_many`` (the realistic mix) on this machine."""
    from ..driver.offload import open as ws_open
    rng = random.Random(seed)
    with ws_open("model", clock="manual") as dev:
        keys = _core_setup(dev, random.Random(rng.getrandbits(64)))
        packets = _core_packets("realistic", keys, count, rng, 8)
        start = time.perf_counter()
        dev.classify_many(packets)
        elapsed = time.perf_counter() - start
    return {"requests": count, "seconds": round(elapsed, 3), "requests_per_s": round(count / elapsed)}


def software_rate(count: int = 20_000, seed: int = 1, single: int = 2000) -> dict:
    """Verdicts per second through ``wirespeed.open("software").classify_many`` (the realistic mix of
    :func:`core_model_rate`, the same gateway configuration, one call for all ``count`` requests) on this machine,
    through ``classify`` one request at a time for the first ``single`` requests, and through ``open_async`` with one
    awaited ``classify`` per request, all gathered (``gathered_requests_per_s``). ``fast``/``fallback``: requests
    read by the fast header reader, and by the parser model's ``scan``; ``native``: whether that reader is the C one
    (``host/transports/fast_header.c``), else why not."""
    from ..driver.offload import open as ws_open
    rng = random.Random(seed)
    with ws_open("software", clock="manual") as dev:
        keys = _core_setup(dev, random.Random(rng.getrandbits(64)))
        packets = _core_packets("realistic", keys, count, rng, 8)
        dev.classify_many(packets[:10])                 # tables and caches built outside the timing
        classifier = dev.transport.classifier
        fast, fallback = classifier.fast, classifier.fallback
        start = time.perf_counter()
        dev.classify_many(packets)
        elapsed = time.perf_counter() - start
        fast, fallback = classifier.fast - fast, classifier.fallback - fallback
        from ..transports import software
        native = True if classifier._reader.native else software.native_error
        start = time.perf_counter()
        for p in packets[:single]:
            dev.classify(p)
        single_elapsed = time.perf_counter() - start
    gathered = asyncio.run(_software_gathered(packets, seed))
    return {"requests": count, "seconds": round(elapsed, 3), "requests_per_s": round(count / elapsed),
            "per_request_us": round(elapsed / count * 1e6, 2), "fast": fast, "fallback": fallback, "native": native,
            "single_requests": single, "single_requests_per_s": round(single / single_elapsed),
            "gathered_requests_per_s": round(count / gathered)}


async def _software_gathered(packets, seed: int) -> float:
    """Seconds for ``open_async("software")`` to answer one awaited ``classify`` per packet, all gathered (as a
    gateway's handlers would each await theirs); the same configuration, on a fresh device."""
    from ..driver.offload import open_async
    rng = random.Random(seed)
    async with open_async("software", clock="manual") as dev:
        await dev._call(_core_setup, dev._sync, random.Random(rng.getrandbits(64)))
        await asyncio.gather(*[dev.classify(p) for p in packets[:10]])
        start = time.perf_counter()
        await asyncio.gather(*[dev.classify(p) for p in packets])
        return time.perf_counter() - start


def software_baseline(count: int = 20_000, seed: int = 1) -> dict:
    """The same job in plain Python on this machine, for comparison: httptools parses the request head, a dict of
    token buckets (refilled from ``time.monotonic_ns``) rate-limits the tenant, blake2b hashes the affinity key and a
    Maglev-sized table picks the backend. Requests per second over the realistic mix (every request is parsed; the
    bucket and hash steps run for requests that parse)."""
    import hashlib

    import httptools

    rng = random.Random(seed)
    keys = ["sk-" + "%040x" % rng.getrandbits(160) for _ in range(16)]
    packets = _core_packets("realistic", keys, count, rng, 8)
    rate_per_ns, burst = 1000 / 1e9, 2000.0
    buckets = {k.encode(): [burst, time.monotonic_ns()] for k in keys}
    table = [rng.randrange(8) for _ in range(509)]
    outcomes = {}

    class Head:
        __slots__ = ("url", "headers", "done")

        def __init__(self):
            self.url, self.headers, self.done = b"", {}, False

        def on_url(self, url):
            self.url += url

        def on_header(self, name, value):
            self.headers[name.lower()] = value

        def on_headers_complete(self):
            self.done = True

    def decide(packet: bytes) -> int:
        head = Head()
        try:
            httptools.HttpRequestParser(head).feed_data(packet)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError:
            return 400
        if not head.done:
            return 400
        auth = head.headers.get(b"authorization", b"")
        key = auth[7:] if auth[:7].lower() == b"bearer " else head.headers.get(b"x-api-key", b"")
        bucket = buckets.get(key.strip(b" \t"))
        if bucket is None:
            return 401
        now = time.monotonic_ns()
        tokens = min(burst, bucket[0] + (now - bucket[1]) * rate_per_ns)
        bucket[1] = now
        if tokens < 1:
            bucket[0] = tokens
            return 429
        bucket[0] = tokens - 1
        affinity = head.headers.get(b"x-session-id", key)
        h = int.from_bytes(hashlib.blake2b(affinity, digest_size=8).digest(), "little")
        table[h * len(table) >> 64]
        return 200

    start = time.perf_counter()
    for p in packets:
        status = decide(p)
        outcomes[status] = outcomes.get(status, 0) + 1
    elapsed = time.perf_counter() - start
    return {"requests": count, "seconds": round(elapsed, 3), "requests_per_s": round(count / elapsed),
            "per_request_us": round(elapsed / count * 1e6, 2), "httptools": httptools.__version__,
            "statuses": {str(k): v for k, v in sorted(outcomes.items())}}

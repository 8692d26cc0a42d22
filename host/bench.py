"""Measurements behind ``wirespeed bench`` (and ``make bench``): cycle counts from the Verilated RTL, and rates of the
software paths on this machine.

``wirespeed bench`` ─▶ :func:`parser_cycles` (StandaloneParser on Verilator, valid and ready held high)
                   ─▶ :func:`register_access` (model and sim transports)
                   ─▶ :func:`parser_model_rate` (the Python model)

Cycle figures are properties of the RTL and do not depend on the machine; rates (per second) do.
"""

from __future__ import annotations

import random
import time

from ..hdl.packet import pack_beats
from ..hdl.parser import StandaloneParser, parser_regmap
from ..sim.runner import to_verilog
from . import traffic
from .parser import ParserConfig, derive_key, parse
from .parser_registers import configure_ops
from .registers import Registers, run

__all__ = ["parser_cycles", "register_access", "parser_model_rate", "percentile", "bench_config"]


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


def parser_cycles(width: int, mix: str, count: int = 200, seed: int = 1, progress=None) -> dict:
    """Stream ``count`` packets through the Verilated parser with ``valid`` and every ``ready`` held high.

    Returns beats per cycle (beats accepted / cycles from the first to the last beat), the descriptor latency in
    cycles after the beat holding the stop byte (p50/p99/p99.99/max), and a descriptor check against the model.
    """
    from ..sim.pyverilator_shim import VerilatedModel
    from .transport_sim import VerilatedAxiLite

    top = f"parser_bench_w{width}"
    dut = VerilatedModel(to_verilog(StandaloneParser(width), top), top)
    bus = VerilatedAxiLite(dut)
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

    dut["o_stream__ready"] = 1
    dut["o_desc__ready"] = 1
    accepted_at = []
    latencies, mismatches, descs = [], 0, 0
    cycle = 0
    while len(accepted_at) < len(beats) or descs < len(packets):
        offering = len(accepted_at) < len(beats)
        if offering:
            dut["i_stream__payload"] = beats[len(accepted_at)]
        dut["i_stream__valid"] = int(offering)
        dut.eval()
        if offering and dut["i_stream__ready"]:
            accepted_at.append(cycle)
        if dut["o_desc__valid"]:
            latencies.append(cycle - accepted_at[stop_beat_index[descs]])
            mismatches += dut["o_desc__payload"] != expected[descs].to_bits()
            descs += 1
        bus.tick()
        cycle += 1
        if progress and cycle % 4096 == 0:
            progress(len(accepted_at), len(beats))
        if cycle > 4 * len(beats) + 1000:
            raise RuntimeError("parser stalled in the bench")
    dut["i_stream__valid"] = 0
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
    from .offload import open as ws_open
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


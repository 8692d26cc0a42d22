"""Drive a one-in, one-out stream component in Amaranth's own simulator, for the small sub-components' unit tests.

payload ints ─▶ ``i_stream`` ─▶ DUT ─▶ ``o_stream`` ─▶ [(accept cycle of the input, output cycle, payload int)]

The parser's sub-components are small, so Amaranth's Python simulator runs them fast enough for a few thousand
beats and needs no compiler. Whole blocks go through the compiled harness (``wirespeed.sim``).
"""

from __future__ import annotations

import random

from amaranth import Elaboratable
from amaranth.sim import Simulator

from wirespeed.hdl.bus.packet import pack_beats

from .streams import random_pauses

__all__ = ["run_stream", "run_streams", "packet_runs", "Chain"]


def run_stream(dut, payloads, in_pause, out_pause, *, drain: int = 64):
    """Send ``payloads`` through ``dut.i_stream``; take ``dut.o_stream`` with ``out_pause`` backpressure.

    ``in_pause`` and ``out_pause`` are iterators of bools (True: hold ``valid`` / ``ready`` low this cycle).
    Returns ``(accepted, outputs)``: the cycle each input beat was accepted, and ``(cycle, payload)`` for each output
    beat, as ints. Stops ``drain`` cycles after the last input was accepted and no output is left to take.
    """
    return run_streams(dut, [(payloads, in_pause, out_pause)], drain=drain)[0]


def run_streams(dut, runs, *, drain: int = 64):
    """:func:`run_stream` for each ``(payloads, in_pause, out_pause)`` of ``runs``, one after the other in one
    simulation: the next run starts when the previous one has drained. Cycles count from each run's first cycle.

    Building Amaranth's simulator is most of a short run's cost on a large design (about 63 s for the tokenizer and
    value trackers at W = 16), so a test that checks a component at full rate and under backpressure builds it once.
    """
    runs = [(list(p), i, o) for p, i, o in runs]
    results = [([], []) for _ in runs]

    async def bench(ctx):
        cycle = 0
        for (payloads, in_pause, out_pause), (accepted, outputs) in zip(runs, results):
            i, start, idle = 0, cycle, 0
            while idle < drain:
                offer = i < len(payloads) and not next(in_pause)
                ctx.set(dut.i_stream.valid, offer)
                if offer:
                    ctx.set(dut.i_stream.payload.as_value(), payloads[i])
                take = not next(out_pause)
                ctx.set(dut.o_stream.ready, take)
                _, _, in_ready, out_valid, out_payload = await ctx.tick().sample(
                    dut.i_stream.ready, dut.o_stream.valid, dut.o_stream.payload.as_value())
                if offer and in_ready:
                    accepted.append(cycle - start)
                    i += 1
                if take and out_valid:
                    outputs.append((cycle - start, int(out_payload)))
                cycle += 1
                idle = idle + 1 if i == len(payloads) else 0
            ctx.set(dut.i_stream.valid, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


def packet_runs(width: int, cases):
    """:func:`run_streams`' runs for ``(packets, in_p, out_p, seed)`` cases: each case's packets as ``width``-byte
    beats, and its valid/ready pauses (probabilities ``in_p``/``out_p``) drawn from ``random.Random(seed)``."""
    runs = []
    for packets, in_p, out_p, seed in cases:
        rng = random.Random(seed)
        runs.append(([beat for p in packets for beat in pack_beats(p, width)],
                     random_pauses(rng, in_p), random_pauses(rng, out_p)))
    return runs


class Chain(Elaboratable):
    """Stream components in series (each one's ``o_stream`` into the next one's ``i_stream``), as one DUT with the
    first one's ``i_stream`` and the last one's ``o_stream``. Extra ports stay on the parts; drive them with
    ``sets`` (a list of ``(signal, value)`` held for the whole run)."""

    def __init__(self, *parts, sets=()):
        self.parts = parts
        self.sets = list(sets)
        self.i_stream = parts[0].i_stream
        self.o_stream = parts[-1].o_stream

    def elaborate(self, platform):
        from amaranth import Module
        from amaranth.lib import wiring
        m = Module()
        for n, part in enumerate(self.parts):
            m.submodules[f"part{n}"] = part
        for a, b in zip(self.parts, self.parts[1:]):
            wiring.connect(m, a.o_stream, b.i_stream)
        m.d.comb += [signal.eq(value) for signal, value in self.sets]
        return m

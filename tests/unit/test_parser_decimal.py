"""The parser's BCD-to-binary converter (hdl/parser/decimal.py): every value of up to 20 digits, mod 2^64, exactly
BCD_LATENCY cycles later, one number per cycle."""

import random

from amaranth import Module, Signal
from amaranth.sim import Simulator

from wirespeed.hdl.parser.decimal import BCD_LATENCY, DIGITS, bcd_to_binary


def test_converts_every_width_at_one_per_cycle():
    rng = random.Random(20261206)
    numbers = [0, 1, 9, 10, 99_999, 100_000, 10 ** 19, 2 ** 64 - 1, 2 ** 64, 10 ** DIGITS - 1]
    numbers += [rng.randrange(10 ** rng.randrange(1, DIGITS + 1)) for _ in range(300)]
    m = Module()
    bcd = Signal(4 * DIGITS)
    value = bcd_to_binary(m, bcd, "dut")
    seen = []

    async def bench(ctx):
        for i in range(len(numbers) + BCD_LATENCY):
            if i < len(numbers):
                ctx.set(bcd, int(str(numbers[i]).zfill(DIGITS), 16))
            await ctx.tick()
            seen.append(ctx.get(value))

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen[BCD_LATENCY - 1:BCD_LATENCY - 1 + len(numbers)] == [n % (1 << 64) for n in numbers]

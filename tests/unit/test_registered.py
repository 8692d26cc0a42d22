"""RegisteredPorts (wirespeed.hdl.bus.registered): one register stage on every port, in both directions."""


from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from wirespeed.hdl.bus.registered import RegisteredPorts


class _Adder(wiring.Component):
    a: In(8)
    b: In(8)
    s: Out(9)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.s.eq(self.a + self.b)
        return m


def test_inputs_and_outputs_each_take_one_cycle():
    dut = RegisteredPorts(_Adder())
    assert {n: m.flow for n, m in dut.signature.members.items()} == {"a": In, "b": In, "s": Out}
    seen = []

    async def bench(ctx):
        ctx.set(dut.a, 3)
        ctx.set(dut.b, 4)
        for _ in range(3):
            seen.append(ctx.get(dut.s))
            await ctx.tick()
        seen.append(ctx.get(dut.s))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [0, 0, 7, 7]          # in register, then out register: the sum appears two edges later

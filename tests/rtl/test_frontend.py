"""L4FrontEnd RTL on Verilator against the bit-exact model (wirespeed.host.frontend).

DUT: ``StandaloneFrontEnd`` (AXI4-Lite target + the front end's generated register bank + L4FrontEnd), so the served
ports go through the real registers. The testbench streams random frames (every punt reason and every legal variant,
from ``random_frame``) mixed with lookaside packets, with random valid gaps and random ready on both outputs, and
scoreboards:

- every info, bit for bit, against ``process_frame()`` with the same configuration;
- every payload packet (bytes and boundaries) against the model's payload;
- exactly one info and one payload packet per input packet, the info no later than the payload's first beat;
- the cycle counts: one beat per cycle with valid and ready held high, and every payload beat exactly
  ``FRONTEND_LATENCY_CYCLES`` after its input beat as ``payload_beat_due`` says.
"""

import os
import random

import pytest
from wirespeed.hdl.frontend import StandaloneFrontEnd, frontend_regmap
from wirespeed.sim.runner import param, run_cocotb

SEED = int(os.environ.get("FRONTEND_SEED", "20261201"))


def _run(width, test, **parameters):
    run_cocotb(StandaloneFrontEnd(width), toplevel=f"frontend_harness_w{width}", test_file=__file__, testcase=test,
               parameters={"width": width, "seed": SEED, **parameters})


@pytest.mark.rtl
@pytest.mark.parametrize("width", [4, 8, 16])
def test_frontend_vs_model(width):
    """Full rate, then random gaps and backpressure, each with its own port configuration."""
    _run(width, "scoreboard_mix", packets=4000)


@pytest.mark.rtl
@pytest.mark.parametrize("width", [4, 8, 16])
def test_frontend_cycle_counts(width):
    _run(width, "cycle_counts", packets=1000)


# -- testbench (runs inside the simulator) ---------------------------------------------------------------------------

try:
    import cocotb
except ImportError:
    cocotb = None

if cocotb is not None:
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge
    from cocotbext.axi import AxiLiteBus, AxiLiteMaster

    from wirespeed.hdl.frontend import FRONTEND_LATENCY_CYCLES
    from wirespeed.hdl.packet import pack_beats
    from wirespeed.host.frontend import (FrontEndConfig, FrontEndInfo, configure_ops, payload_beat_due,
                                         process_frame, random_config, random_frame)
    from wirespeed.host.registers import Registers, arun
    from wirespeed.host.transport_cocotb import CocotbTransport

    def random_packet(rng: random.Random) -> tuple[bytes, bool]:
        """Mostly frames; a fifth lookaside packets (any bytes, the empty packet included)."""
        if rng.random() < 0.2:
            return rng.randbytes(rng.choice([0, 1, rng.randrange(1, 40), rng.randrange(1, 600)])), False
        return random_frame(rng), True

    class TB:
        def __init__(self, dut):
            self.dut = dut
            self.width = param("width")
            self.rng = random.Random(param("seed"))
            dut._log.info("seed %d (FRONTEND_SEED to override), W=%d", param("seed"), self.width)
            cocotb.start_soon(Clock(dut.clk, 4, unit="ns").start())
            self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__"), dut.clk, dut.rst)
            self.regs = Registers(frontend_regmap())
            self.transport = CocotbTransport(self.axil)
            self.config = FrontEndConfig()
            self.extra = self.skewed = 0         # timing corner cases seen (tail beats, beats behind a tail)
            w = self.width
            self.beat_bits = 8 * w + w.bit_length() + 1
            self.data_mask = (1 << 8 * w) - 1
            self.nv_at, self.nv_mask, self.last_at = 8 * w, (1 << w.bit_length()) - 1, 8 * w + w.bit_length()

        async def reset(self):
            self.dut.i_stream__valid.value = 0
            self.dut.o_payload__ready.value = 0
            self.dut.o_info__ready.value = 0
            self.dut.rst.value = 1
            await ClockCycles(self.dut.clk, 3)
            self.dut.rst.value = 0
            await ClockCycles(self.dut.clk, 2)

        async def configure(self, config: FrontEndConfig):
            await arun(configure_ops(self.regs, config), self.transport)
            self.config = config

        async def run(self, packets, valid_p=1.0, ready_p=1.0, info_ready_p=1.0, check_timing=False):
            """Stream ``packets`` ((bytes, inline) pairs) with the given per-cycle probabilities; scoreboard all."""
            dut, w, rng = self.dut, self.width, self.rng
            queue = []
            for pi, (p, inline) in enumerate(packets):
                for bi, b in enumerate(pack_beats(p, w)):
                    queue.append((pi, bi, b | (int(inline) << self.beat_bits)))
            expected = [process_frame(p, inline, self.config) for p, inline in packets]
            due = [payload_beat_due(p, inline, self.config, w) for p, inline in packets]
            accept_cycle = {}                   # (packet, input beat) -> cycle
            infos, pay_pkt, pay_beat = 0, 0, 0
            pay_bytes = bytearray()
            last_emit = -10
            qi, cycle, accepted = 0, 0, 0
            while pay_pkt < len(packets) or infos < len(packets) or qi < len(queue):
                offer = qi < len(queue) and rng.random() < valid_p
                if offer:
                    dut.i_stream__payload.value = queue[qi][2]
                dut.i_stream__valid.value = int(offer)
                dut.o_payload__ready.value = int(rng.random() < ready_p)
                dut.o_info__ready.value = int(rng.random() < info_ready_p)
                await FallingEdge(dut.clk)
                if check_timing and offer:
                    assert dut.i_stream__ready.value, f"stalled at cycle {cycle} with both outputs ready"
                if offer and dut.i_stream__ready.value:
                    accept_cycle[queue[qi][:2]] = cycle
                    accepted += 1
                    qi += 1
                if dut.o_info__valid.value and dut.o_info__ready.value:
                    k = infos
                    assert k < len(packets), "more infos than packets"
                    bits = int(dut.o_info__payload.value)
                    want = expected[k][0]
                    if bits != want.to_bits():
                        have = FrontEndInfo.from_bits(bits)
                        diffs = {f: (getattr(have, f), getattr(want, f)) for f in want.__dataclass_fields__
                                 if getattr(have, f) != getattr(want, f)}
                        raise AssertionError(f"packet {k} (seed {param('seed')}, W={w}): info RTL != model (RTL, "
                                             f"model) {diffs}\ninline={packets[k][1]} packet={packets[k][0].hex()}")
                    infos += 1
                if dut.o_payload__valid.value:
                    k = pay_pkt
                    assert k < len(packets), "a payload beat with no packet"
                    assert infos > k or dut.o_info__valid.value, f"packet {k}: payload before its info"
                    if dut.o_payload__ready.value:
                        out = int(dut.o_payload__payload.value)
                        n = (out >> self.nv_at) & self.nv_mask
                        last = (out >> self.last_at) & 1
                        assert last or n == w, f"packet {k}: a partial beat that is not the last"
                        if check_timing:
                            beats = due[k]
                            assert pay_beat < len(beats), f"packet {k}: more payload beats than the model's"
                            src, extra = beats[pay_beat]
                            want = max(accept_cycle[(k, src)] + FRONTEND_LATENCY_CYCLES + extra, last_emit + 1)
                            self.extra += extra
                            self.skewed += want > accept_cycle[(k, src)] + FRONTEND_LATENCY_CYCLES + extra
                            assert cycle == want, (f"packet {k} payload beat {pay_beat}: at cycle {cycle}, model "
                                                   f"says {want} (due {beats}, seed {param('seed')})")
                            last_emit = cycle
                        pay_bytes += (out & self.data_mask).to_bytes(w, "little")[:n]
                        pay_beat += 1
                        if last:
                            if bytes(pay_bytes) != expected[k][1]:
                                raise AssertionError(
                                    f"packet {k} (seed {param('seed')}, W={w}): payload RTL != model\n"
                                    f"RTL   {bytes(pay_bytes).hex()}\nmodel {expected[k][1].hex()}\n"
                                    f"inline={packets[k][1]} packet={packets[k][0].hex()}")
                            if check_timing:
                                assert pay_beat == len(due[k]), f"packet {k}: {pay_beat} beats, model {due[k]}"
                            pay_pkt += 1
                            pay_beat = 0
                            pay_bytes = bytearray()
                await RisingEdge(dut.clk)
                cycle += 1
                assert cycle < 50 * (len(queue) + 100), "front end stalled"
            dut.i_stream__valid.value = 0
            dut.o_payload__ready.value = 1
            dut.o_info__ready.value = 1
            for _ in range(FRONTEND_LATENCY_CYCLES + 3):
                await FallingEdge(dut.clk)
                assert not dut.o_info__valid.value, "an info with no packet"
                assert not dut.o_payload__valid.value, "a payload beat with no packet"
            self.cycles, self.beats_in = cycle, accepted
            return expected

    @cocotb.test()
    async def scoreboard_mix(dut):
        tb = TB(dut)
        await tb.reset()
        rng = tb.rng
        total = param("packets")
        reasons = {}
        for batch, (valid_p, ready_p, info_ready_p) in enumerate(
                [(1.0, 1.0, 1.0), (0.8, 0.7, 0.6), (0.5, 1.0, 0.3), (1.0, 0.5, 1.0)]):
            await tb.configure(FrontEndConfig() if batch == 0 else random_config(rng))
            packets = [random_packet(rng) for _ in range(total // 4)]
            expected = await tb.run(packets, valid_p, ready_p, info_ready_p)
            for info, _ in expected:
                reasons[info.reason.name] = reasons.get(info.reason.name, 0) + 1
        dut._log.info("W=%d: %d packets, zero mismatches; reasons %s", tb.width, total, reasons)

    @cocotb.test()
    async def cycle_counts(dut):
        """Valid and ready held high: one beat per cycle, each payload beat exactly when the model says."""
        tb = TB(dut)
        await tb.reset()
        rng = tb.rng
        await tb.configure(FrontEndConfig.serving(80, 8080, 8000))
        packets = [random_packet(rng) for _ in range(param("packets"))]
        await tb.run(packets, check_timing=True)
        # Every cycle took a beat, apart from the tail where the last outputs drain.
        assert tb.cycles - tb.beats_in <= FRONTEND_LATENCY_CYCLES + 2, (tb.cycles, tb.beats_in)
        assert tb.extra and tb.skewed, "the timing corner cases were not exercised"
        dut._log.info("W=%d: %d beats in %d cycles; %d tail beats one cycle late, %d beats behind one",
                      tb.width, tb.beats_in, tb.cycles, tb.extra, tb.skewed)

"""L4FrontEnd RTL on Verilator against the bit-exact model (wirespeed.host.models.frontend).

DUT: ``Standalone(L4FrontEnd)`` (AXI4-Lite target + the front end's generated register bank + L4FrontEnd), so the
served ports go through the real registers. The testbench streams random frames (every punt reason and every legal
variant, from ``random_frame``) mixed with lookaside packets, with random valid gaps and random ready on both outputs,
and scoreboards:

- every info, bit for bit, against ``process_frame()`` with the same configuration;
- every payload packet (bytes and boundaries) against the model's payload;
- exactly one info and one payload packet per input packet, the info no later than the payload's first beat;
- the cycle counts: one beat per cycle with valid and ready held high, and every payload beat exactly
  ``FRONTEND_LATENCY_CYCLES`` after its input beat as ``payload_beat_due`` says.
"""

import os
import random

import pytest
from wirespeed.hdl.bus.standalone import Standalone
from wirespeed.hdl.frontend.l4_frontend import L4FrontEnd, frontend_regmap
from wirespeed.sim.runner import param, run_cocotb

SEED = int(os.environ.get("FRONTEND_SEED", "20261201"))


def _run(width, test, **parameters):
    run_cocotb(lambda: Standalone(L4FrontEnd(width), frontend_regmap()), toplevel=f"frontend_harness_w{width}",
               test_file=__file__, testcase=test, parameters={"width": width, "seed": SEED, **parameters},
               design_key=width)


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
    from support import testbench
    from support.streams import StreamSink, StreamSource, random_pauses

    from wirespeed.hdl.frontend.l4_frontend import FRONTEND_LATENCY_CYCLES, FrontendInput
    from wirespeed.hdl.bus.packet import ByteBeat
    from wirespeed.host.models.frontend import (FrontEndConfig, FrontEndInfo, configure_ops, payload_beat_due,
                                         process_frame, random_config, random_frame)

    def random_packet(rng: random.Random) -> tuple[bytes, bool]:
        """Mostly frames; a fifth lookaside packets (any bytes, the empty packet included)."""
        if rng.random() < 0.2:
            return rng.randbytes(rng.choice([0, 1, rng.randrange(1, 40), rng.randrange(1, 600)])), False
        return random_frame(rng), True

    class TB(testbench.TB):
        def __init__(self, dut):
            super().__init__(dut, regmap=frontend_regmap(), seed_env="FRONTEND_SEED")
            self.width = param("width")
            dut._log.info("W=%d", self.width)
            self.source = StreamSource(self, "i_stream", FrontendInput(self.width))
            self.payload = StreamSink(self, "o_payload", ByteBeat(self.width))
            self.info = StreamSink(self, "o_info", record=FrontEndInfo)
            self.config = FrontEndConfig()
            self.extra = self.skewed = 0         # timing corner cases seen (tail beats, beats behind a tail)
            self.on_cycle(self.info_before_payload)

        def info_before_payload(self, cycle):
            """Every cycle: a payload beat is valid only once its packet's info was taken or is valid."""
            dut, pay = self.dut, self.payload
            if dut.o_payload__valid.value:
                # Packets whose payload ended before this cycle.
                k = pay.packets - (pay.handshake is not None and bool(pay.handshake.value.last))
                assert self.info.count > k or dut.o_info__valid.value, f"packet {k}: payload before its info"

        async def configure(self, config: FrontEndConfig):
            await self.run_ops(configure_ops(self.regs, config))
            self.config = config

        async def run(self, packets, valid_p=1.0, ready_p=1.0, info_ready_p=1.0, check_timing=False):
            """Stream ``packets`` ((bytes, inline) pairs) with the given per-cycle probabilities; scoreboard all."""
            w, rng = self.width, self.rng
            src, pay, info = self.source, self.payload, self.info
            expected = [process_frame(p, inline, self.config) for p, inline in packets]
            due = [payload_beat_due(p, inline, self.config, w) for p, inline in packets]
            src.accepted.clear()
            src.set_pause_generator(random_pauses(rng, 1 - valid_p))
            pay.set_pause_generator(random_pauses(rng, 1 - ready_p))
            info.set_pause_generator(random_pauses(rng, 1 - info_ready_p))
            first_beat, n_beats = [], 0          # each packet's first input beat, an index into src.accepted
            for p, inline in packets:
                first_beat.append(n_beats)
                n_beats += src.send_packet(p, inline=int(inline))
            n, infos0, packets0 = len(packets), info.count, pay.packets
            await self.wait_until(lambda: info.count - infos0 >= n and pay.packets - packets0 >= n and src.idle,
                                  timeout_cycles=50 * (n_beats + 100), what="front end stalled")
            pay.set_pause_generator(None)
            info.set_pause_generator(None)
            await self.wait_cycles(FRONTEND_LATENCY_CYCLES + 3)
            assert info.count - infos0 == n, f"{info.count - infos0 - n} infos with no packet"
            assert pay.packets - packets0 == n, f"{pay.packets - packets0 - n} payload packets with no packet"
            accepted = src.accepted
            assert len(accepted) == n_beats
            if check_timing:
                for a in accepted:
                    assert a.cycle == a.offered, f"stalled at cycle {a.offered} with both outputs ready"
            infos = info.drain()
            for k, got in enumerate(infos):
                want = expected[k][0]
                if got.bits != want.to_bits():
                    have = got.value
                    diffs = {f: (getattr(have, f), getattr(want, f)) for f in want.__dataclass_fields__
                             if getattr(have, f) != getattr(want, f)}
                    raise AssertionError(f"packet {k} (seed {self.seed}, W={w}): info RTL != model (RTL, "
                                         f"model) {diffs}\ninline={packets[k][1]} packet={packets[k][0].hex()}")
            last_emit = -10
            for k in range(n):
                got = await pay.recv_packet()
                if check_timing:
                    beats = due[k]
                    assert len(got.beats) <= len(beats), f"packet {k}: more payload beats than the model's"
                    for pay_beat, beat in enumerate(got.beats):
                        src_beat, extra = beats[pay_beat]
                        taken = accepted[first_beat[k] + src_beat].cycle
                        want = max(taken + FRONTEND_LATENCY_CYCLES + extra, last_emit + 1)
                        self.extra += extra
                        self.skewed += want > taken + FRONTEND_LATENCY_CYCLES + extra
                        assert beat.cycle == want, (f"packet {k} payload beat {pay_beat}: at cycle {beat.cycle}, "
                                                    f"model says {want} (due {beats}, seed {self.seed})")
                        last_emit = beat.cycle
                if got.data != expected[k][1]:
                    raise AssertionError(
                        f"packet {k} (seed {self.seed}, W={w}): payload RTL != model\n"
                        f"RTL   {got.data.hex()}\nmodel {expected[k][1].hex()}\n"
                        f"inline={packets[k][1]} packet={packets[k][0].hex()}")
                if check_timing:
                    assert len(got.beats) == len(due[k]), f"packet {k}: {len(got.beats)} beats, model {due[k]}"
            assert pay.empty(), "a payload beat with no packet"
            if packets:
                self.cycles = max(got.last_cycle, infos[-1].cycle, accepted[-1].cycle) - accepted[0].offered + 1
                self.beats_in = len(accepted)
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

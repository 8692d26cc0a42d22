"""Telemetry RTL on Verilator, scoreboarded against the bit-exact model (wirespeed.host.models.telemetry).

DUT: ``Standalone(Telemetry)`` (AXI4-Lite target + the block's generated register bank + Telemetry). Seeded random
events stream in (bursts of back-to-back events, random gaps, latencies over every bucket including saturation)
while the host takes snapshots, clears, and snapshot-and-clears at random moments and reads every register.

The testbench sees each cycle's ``ctrl`` pulses (``o_snapshot``/``o_clear``) and events, and applies them in cycle
order to a :class:`TelemetryModel` (pulses before the same cycle's event: the RTL's contract) and, through the
register-bank model, to a :class:`TelemetryBlock` fed with ``record(..., cycle)``. Every register read must equal
both. It also checks:

- ``snapshot_cycle`` is the cycle of the pulse (the block's cycle counter is 0 in the first cycle after reset);
- each pulse comes a fixed number of cycles before the write's B handshake;
- :func:`read_stats` and :func:`read_latency_histogram` over the async transport return the model's snapshot;
- the 64-bit latency sum carries into its high word (saturated latencies back to back).
"""

import os

import pytest
from wirespeed.hdl.bus.standalone import Standalone
from wirespeed.hdl.telemetry.counters import Telemetry, telemetry_regmap
from wirespeed.sim.runner import param, run_cocotb

SEED = int(os.environ.get("TELEMETRY_SEED", "20261125"))


def _run(test, **parameters):
    # o_snapshot, o_clear: the ctrl pulses as the block sees them (cycle P of the timing contract).
    dut = Standalone(Telemetry(), telemetry_regmap(), taps={"o_snapshot": ("ctrl", "snapshot"),
                                                            "o_clear": ("ctrl", "clear")})
    run_cocotb(dut, toplevel="telemetry", test_file=__file__, testcase=test,
               parameters={"seed": SEED, **parameters})


@pytest.mark.rtl
def test_telemetry_vs_model():
    _run("scoreboard", events=24000)


@pytest.mark.rtl
def test_telemetry_latency_sum_carries_into_the_high_word():
    _run("sum_carry", events=66000)


# -- testbench (runs inside the simulator) ---------------------------------------------------------------------------

try:
    import cocotb
except ImportError:
    cocotb = None

if cocotb is not None:
    from dataclasses import replace

    from cocotb.triggers import ClockCycles
    from support import testbench

    from wirespeed.hdl.pipeline.layouts import HIST_BUCKETS, LATENCY_MAX, Reason
    from wirespeed.host.models.register_bank import RegisterBankModel
    from wirespeed.host.driver.registers import arun
    from wirespeed.hdl.bus.regmap import RegMap
    from wirespeed.host.models.telemetry import CTRL_PULSE_CYCLE, TelemetryBlock, TelemetryModel, bucket_bounds
    from wirespeed.host.driver.stats import read_latency_histogram, read_stats

    def prefixed(regmap: RegMap, block: str) -> RegMap:
        """The standalone map with every path under ``block``, as the core's map places it."""
        return RegMap(regmap.name, tuple(replace(r, path=(block, *r.path)) for r in regmap.registers), ())

    class TB(testbench.TB):
        def __init__(self, dut):
            super().__init__(dut, regmap=telemetry_regmap(), seed_env="TELEMETRY_SEED")
            self.regmap = self.regs.regmap
            self.model = TelemetryModel()
            self.bank = RegisterBankModel(prefixed(self.regmap, "telemetry"))
            self.block = TelemetryBlock(self.bank)
            self.events = 0
            self.source = iter(())           # this cycle's event, or None: see traffic()
            self.pulses = []                 # (cycle, snapshot, clear)
            self.b_cycles = []               # cycles of the B handshakes
            self.snapshots = self.clears = 0
            # Pulses with an event in the cycle before (in the snapshot) or the same cycle (not in it).
            self.boundary = {"snapshot_after_event": 0, "snapshot_with_event": 0, "clear_with_event": 0}
            ctrl = self.regmap["ctrl"]
            self.snap_bit, self.clear_bit = ctrl.field("snapshot").lsb, ctrl.field("clear").lsb
            self.previous = None
            self.started = False

        async def reset(self):
            self.dut.i_event__valid.value = 0
            await super().reset()

        def on_reset_released(self):
            if not self.started:             # its first call is cycle 0, which TB.cycle equals the DUT's counter
                self.on_cycle(self.cycle_step)
                self.started = True

        # -- every cycle: observe this cycle's pulses, then drive this cycle's event --

        def cycle_step(self, n):
            dut = self.dut
            snapshot, clear = int(dut.o_snapshot.value), int(dut.o_clear.value)
            if snapshot or clear:
                # The contract: a pulse in cycle P covers the events of cycles before P.
                self.pulses.append((n, snapshot, clear))
                if snapshot:
                    self.model.snapshot(n)
                    self.snapshots += 1
                if clear:
                    self.model.clear()
                    self.clears += 1
                self.bank.write(self.regmap["ctrl"].address, snapshot << self.snap_bit | clear << self.clear_bit)
                self.block.after_write("telemetry.ctrl", n - CTRL_PULSE_CYCLE)
            if dut.s_axil__bvalid.value and dut.s_axil__bready.value:
                self.b_cycles.append(n)
            event = next(self.source, None)
            if snapshot:
                self.boundary["snapshot_after_event"] += self.previous is not None
                self.boundary["snapshot_with_event"] += event is not None
            if clear:
                self.boundary["clear_with_event"] += event is not None
            self.previous = event
            dut.i_event__valid.value = int(event is not None)
            if event is not None:
                action, reason, flags, latency = event
                dut.i_event__action.value = action
                dut.i_event__reason.value = reason
                dut.i_event__flags.value = flags
                dut.i_event__latency_cycles.value = latency
                self.model.record(*event)
                self.block.record(*event, cycle=n)
                self.events += 1

        # -- traffic --

        def random_latency(self):
            rng = self.rng
            roll = rng.random()
            if roll < 0.08:
                return LATENCY_MAX                                   # saturated
            if roll < 0.12:
                return rng.choice([0, 1, 2, 3, LATENCY_MAX - 1])
            low, high = bucket_bounds(rng.randrange(HIST_BUCKETS))
            return rng.randint(low, LATENCY_MAX if high is None else high)

        def random_event(self):
            rng = self.rng
            action = 3 if rng.random() < 0.01 else rng.choice([0, 0, 0, 1, 2])     # 3: not an Action
            reason = rng.randrange(len(Reason), 64) if rng.random() < 0.01 else rng.randrange(len(Reason))
            roll = rng.random()
            if roll < 0.6:
                flags = rng.getrandbits(32) & ~((1 << 15) - 1)                      # no error flag
            elif roll < 0.9:
                flags = 1 << rng.randrange(32)
            else:
                flags = rng.getrandbits(32)
            return action, reason, flags, self.random_latency()

        def traffic(self, count):
            """``count`` events as a per-cycle sequence: bursts of back-to-back events between random gaps."""
            rng = self.rng
            while count > 0:
                burst = min(count, rng.choice([1, 1, 2, 3, rng.randrange(4, 40), rng.randrange(100, 600)]))
                for _ in range(burst):
                    yield self.random_event()
                count -= burst
                for _ in range(rng.choice([0, 1, 1, 2, rng.randrange(3, 30), rng.randrange(50, 300)])):
                    yield None

        # -- checks --

        async def check_snapshot(self):
            """Read every register of the snapshot and compare with the model and the block model."""
            want = self.model.snap.register_values()
            assert self.block.model.snap == self.model.snap
            for name, value in want.items():
                got = await self.read(name)
                assert got == value, f"{name}: RTL {got} != model {value} (seed {self.seed})"
                assert self.bank.value(f"telemetry.{name.rpartition('.')[0]}") == value, name

        def check_pulse_timing(self):
            """Every ctrl pulse sits the same number of cycles before its write's B handshake."""
            offsets = set()
            for cycle, _, _ in self.pulses:
                b = min(c for c in self.b_cycles if c >= cycle)
                offsets.add(cycle - b)
            assert len(offsets) == 1, f"pulse-to-B offsets vary: {offsets}"
            return offsets.pop()

    @cocotb.test()
    async def scoreboard(dut):
        tb = TB(dut)
        await tb.reset()
        assert await tb.read("params.reasons") == len(Reason) == 32 and await tb.read("params.hist_buckets") == HIST_BUCKETS
        await tb.check_snapshot()                                   # all zero after reset
        total = param("events")
        tb.source = tb.traffic(total)
        rng = tb.rng
        snap_cycles = []
        while tb.events < total:
            await ClockCycles(dut.clk, rng.choice([0, 1, 5, rng.randrange(10, 400), rng.randrange(400, 3000)]))
            roll = rng.random()
            if roll < 0.6:
                await tb.write("ctrl.snapshot", 1)
                await tb.check_snapshot()
                snap_cycles.append(tb.model.snap.cycle)
            elif roll < 0.8:
                await tb.write("ctrl.clear", 1)
            elif roll < 0.9:
                await tb.write("ctrl", 0b11)                        # snapshot and clear at once
                await tb.check_snapshot()
            else:
                # The driver's reader: its own snapshot, everything read by name.
                stats = await arun(read_stats(tb.regs, prefix=""), tb.transport)
                assert stats == tb.model.snap.as_stats(), f"read_stats differs (seed {param('seed')})"
                hist = await arun(read_latency_histogram(tb.regs, prefix=""), tb.transport)
                snap = tb.model.snap
                assert [n for _, _, n in hist.buckets] == list(snap.histogram)
                assert (hist.sum, hist.max, hist.count) == (snap.latency_sum, snap.latency_max, snap.events)
        await ClockCycles(dut.clk, 5)
        stats = await arun(read_stats(tb.regs, prefix=""), tb.transport)
        assert stats == tb.model.snap.as_stats()
        assert stats["cycle"] == tb.pulses[-1][0]
        await tb.check_snapshot()
        offset = tb.check_pulse_timing()
        assert tb.snapshots >= 20 and tb.clears >= 5 and len(set(snap_cycles)) == len(snap_cycles)
        assert min(tb.boundary.values()) > 0, f"a boundary case never happened: {tb.boundary}"
        dut._log.info("%d events in %d cycles, %d snapshots, %d clears, every read matches the model; pulse %+d "
                      "cycles from the write's B handshake; boundary cases %s", tb.events, tb.cycle, tb.snapshots,
                      tb.clears, offset, tb.boundary)

    @cocotb.test()
    async def sum_carry(dut):
        """Saturated latencies back to back push latency_sum past 2^32: the bank's 64-bit read returns both words."""
        tb = TB(dut)
        await tb.reset()
        total = param("events")
        tb.source = iter([(0, 0, 1, LATENCY_MAX)] * total)
        while tb.events < total:
            await ClockCycles(dut.clk, 1000)
        await ClockCycles(dut.clk, 2)
        stats = await arun(read_stats(tb.regs, prefix=""), tb.transport)
        assert stats == tb.model.snap.as_stats()
        assert stats["latency"]["sum"] == total * LATENCY_MAX > 1 << 32
        assert stats["latency"]["histogram"][-1] == stats["events"] == stats["actions"]["forward"] == total
        assert stats["errors"]["bad_request_line"] == total and stats["latency"]["max"] == LATENCY_MAX
        await tb.check_snapshot()
        dut._log.info("latency_sum %d = %#x after %d saturated events", stats["latency"]["sum"],
                      stats["latency"]["sum"], total)

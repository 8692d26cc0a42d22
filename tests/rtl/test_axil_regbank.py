"""AXI4-Lite target + register bank regression on Verilator, scored against the bit-exact bus model.

The design under test is :class:`RegBankHarness`: :class:`~wirespeed.hdl.bus.axil.AXI4LiteTarget` in front of a
:class:`~wirespeed.hdl.bus.regbank.RegisterBank` built from ``regbank_kinds.rdl`` (every field kind, 32- and 64-bit
registers, list- and pattern-decoded memories, a read-only and a write-only memory, holes, space beyond the map).
Every ``hw`` port of the bank is a top-level pin, the memories are real :class:`amaranth.lib.memory.Memory` RAMs,
and a copy of the internal :class:`~wirespeed.hdl.bus.regbank.RegisterBus` is brought out for the scoreboard.

Scoreboard (:class:`Scoreboard`, shared by every cocotb test): once per cycle, at the falling edge, it

1. checks every storage/counter ``hw`` output, pulse and swmod strobe against the model (state as of last cycle);
2. on an accepted bus access (strobe high, ack low) sets the model's hw inputs to the sampled pins, applies the
   access to :class:`~wirespeed.host.models.register_bank.RegisterBankModel` and records the expected (addr, data,
   resp);
3. applies the counter increments sampled this cycle (on top of a write / read-clear, as the RTL does);
4. checks the bank's ack/data/resp one cycle after each accept, the target's ``error`` strobe, and AXI
   valid/payload stability on B and R.

Each AXI B/R result must then equal the next expected write/read: address and response, and for writes the data
and strobes the manager sent must be what reached the bank (the model follows the bus copy, so this closes the loop
on the target's data path). Memories are compared entry by entry through extra read ports at the end.

Seeds are printed; rerun with ``REGBANK_SEED=<n> pytest tests/rtl/test_axil_regbank.py``; ``WAVES=1`` dumps an FST.
"""

from __future__ import annotations

import functools
import os
import zlib
from pathlib import Path

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from wirespeed.hdl.bus.axil import AXI4LiteSignature, AXI4LiteTarget
from wirespeed.hdl.bus.regbank import RegisterBank, hw_name, hw_port
from wirespeed.hdl.bus.regmap import FieldKind, RegMap, compile_rdl, regmap_from_node
from wirespeed.sim.runner import param, run_cocotb

RDL = Path(__file__).with_name("regbank_kinds.rdl")
TOP = "regbank_kinds"
#: The map spans 0x800 bytes; 12 address bits leave 0x800-0xFFF unmapped beyond it.
ADDR_WIDTH = 12
TOPLEVEL = "axil_regbank_harness"


@functools.cache
def kinds_regmap() -> RegMap:
    return regmap_from_node(compile_rdl([RDL], TOP))


def mem_init(mem) -> list[int]:
    """Deterministic initial contents of a harness memory (the model gets the same)."""
    return [zlib.crc32(f"{mem.name}:{i}".encode()) for i in range(mem.entries)]


def _flat(path) -> str:
    """A register or memory path as a pin-name fragment (array elements ``arr[1]`` become ``arr_1``)."""
    return "_".join(hw_name(p) for p in path)


def field_ports(regmap: RegMap):
    """``(role, port name, register, field)`` for every field-level harness pin.

    Roles: ``hwv`` (In, HW_VALUE), ``incr`` (In, counter increment), ``q`` (Out, storage/counter value),
    ``pulse`` (Out, PULSE), ``swmod`` (Out, swmod strobe).
    """
    ports = []
    for reg in regmap.registers:
        base = _flat(reg.path)
        for f in reg.fields:
            if f.kind is FieldKind.HW_VALUE:
                ports.append(("hwv", f"hwv_{base}_{f.name}", reg, f))
            elif f.kind is FieldKind.PULSE:
                ports.append(("pulse", f"pulse_{base}_{f.name}", reg, f))
            elif f.kind in (FieldKind.STORAGE, FieldKind.COUNTER):
                ports.append(("q", f"q_{base}_{f.name}", reg, f))
                if f.kind is FieldKind.COUNTER:
                    ports.append(("incr", f"incr_{base}_{f.name}", reg, f))
            if f.swmod:
                ports.append(("swmod", f"swmod_{base}_{f.name}", reg, f))
    return ports


MONITOR = {"addr": ADDR_WIDTH, "r_stb": 1, "w_stb": 1, "w_data": 32, "w_strb": 4, "ack": 1, "r_data": 32, "resp": 2}


class RegBankHarness(wiring.Component):
    """AXI4LiteTarget + RegisterBank(regmap) with every ``hw`` port on a top-level pin.

    Pins: ``s_axil__*``; ``hwv_*``/``incr_*`` (In), ``q_*``/``pulse_*``/``swmod_*`` (Out) per :func:`field_ports`;
    ``mon_*`` (Out): the RegisterBus between target and bank; ``bus_error`` (Out): the target's error strobe;
    ``peek_<mem>_addr`` (In) / ``peek_<mem>_data`` (Out): an asynchronous read port on every memory, for end-of-test
    content checks.
    """

    def __init__(self, regmap: RegMap, addr_width: int):
        self.regmap, self.addr_width = regmap, addr_width
        members = {"s_axil": In(AXI4LiteSignature(addr_width)), "bus_error": Out(1)}
        for role, name, _, f in field_ports(regmap):
            members[name] = (In if role in ("hwv", "incr") else Out)(1 if role in ("incr", "swmod") else f.width)
        for name, width in MONITOR.items():
            members[f"mon_{name}"] = Out(width)
        for mem in regmap.memories:
            members[f"peek_{_flat(mem.path)}_addr"] = In(max(1, (mem.entries - 1).bit_length()))
            members[f"peek_{_flat(mem.path)}_data"] = Out(32)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.axil = axil = AXI4LiteTarget(self.addr_width)
        m.submodules.bank = bank = RegisterBank(self.regmap, self.addr_width)
        wiring.connect(m, wiring.flipped(self.s_axil), axil.axil)
        wiring.connect(m, axil.bus, bank.bus)
        m.d.comb += self.bus_error.eq(axil.error)
        for name in MONITOR:
            m.d.comb += getattr(self, f"mon_{name}").eq(getattr(axil.bus, name))

        for role, name, reg, f in field_ports(self.regmap):
            port, pin = hw_port(bank.hw, reg.path), getattr(self, name)
            if role == "hwv":
                m.d.comb += getattr(port, f.name).eq(pin)
            elif role == "incr":
                m.d.comb += getattr(port, f"{f.name}_incr").eq(pin)
            elif role == "swmod":
                m.d.comb += pin.eq(getattr(port, f"{f.name}_swmod"))
            else:
                m.d.comb += pin.eq(getattr(port, f.name))

        for mem in self.regmap.memories:
            name = _flat(mem.path)
            port = hw_port(bank.hw, mem.path)
            m.submodules[f"mem_{name}"] = ram = Memory(shape=32, depth=mem.entries, init=mem_init(mem))
            rd = ram.read_port(domain="sync")
            wr = ram.write_port(granularity=8)
            peek = ram.read_port(domain="comb")
            m.d.comb += [
                rd.addr.eq(port.addr), rd.en.eq(port.r_en), port.r_data.eq(rd.data),
                wr.addr.eq(port.addr), wr.en.eq(port.w_en), wr.data.eq(port.w_data),
                peek.addr.eq(getattr(self, f"peek_{name}_addr")), getattr(self, f"peek_{name}_data").eq(peek.data),
            ]
        return m


# -- pytest entry points ----------------------------------------------------------------------------------------------

#: Default seeds (fixed, so CI is reproducible); REGBANK_SEED=<n> overrides every test's seed.
_SEED_ENV = os.environ.get("REGBANK_SEED")
#: Random-traffic transactions per backpressure setting (each run asserts its own count): 2 x 20 000 >= 10 000.
RANDOM_TRANSACTIONS = 20000


def _run(testcase: str, seed: int, **parameters):
    seed = int(_SEED_ENV, 0) if _SEED_ENV else seed
    print(f"{testcase}: seed={seed} parameters={parameters}")
    run_cocotb(RegBankHarness(kinds_regmap(), ADDR_WIDTH), toplevel=TOPLEVEL, test_file=__file__,
               parameters={"seed": seed, **parameters}, testcase=testcase, seed=seed)


@pytest.mark.rtl
@pytest.mark.parametrize("backpressure", [False, True], ids=["no-backpressure", "backpressure"])
def test_random_traffic(backpressure):
    _run("random_traffic", seed=0x5EED_0000 + backpressure, backpressure=backpressure,
         transactions=RANDOM_TRANSACTIONS)


@pytest.mark.rtl
def test_raw_channels():
    _run("raw_channels", seed=0x5EED_0100)


@pytest.mark.rtl
def test_reset_values_and_errors():
    _run("reset_values_and_errors", seed=0x5EED_0200)


@pytest.mark.rtl
def test_read_latch_64():
    _run("read_latch_64", seed=0x5EED_0300)


# -- cocotb testbench -------------------------------------------------------------------------------------------------

try:
    import cocotb
except ImportError:  # collected by pytest without cocotb's simulator context: nothing below runs there
    cocotb = None

if cocotb is not None:
    import logging
    import random
    from collections import Counter, deque

    from cocotb.triggers import ClockCycles, RisingEdge, Timer
    from cocotbext.axi import AxiLiteBus
    from cocotbext.axi.axil_channels import AxiLiteARSource, AxiLiteAWSource, AxiLiteBSink, AxiLiteRSink, AxiLiteWSource

    from support import testbench
    from support.streams import phased_pauses

    from wirespeed.hdl.bus.regmap import Memory as MemNode
    from wirespeed.hdl.bus.regmap import DECERR, OKAY, RESP_NAMES, SLVERR
    from wirespeed.host.models.register_bank import RegisterBankModel, strobe_mask

    CONTIGUOUS_STRB = [((1 << n) - 1) << off for off in range(4) for n in range(1, 5 - off)]

    def _u(handle) -> int:
        return int(handle.value)

    class Scoreboard:
        """Cycle-accurate reference: samples the RegisterBus copy each falling edge and drives the model."""

        def __init__(self, dut, model: RegisterBankModel, log):
            self.dut, self.model, self.log = dut, model, log
            regmap = model.regmap
            ports = field_ports(regmap)
            self.hwv = [(getattr(dut, n), f"{r.name}.{f.name}") for role, n, r, f in ports if role == "hwv"]
            self.incr = [(getattr(dut, n), f"{r.name}.{f.name}", r, f) for role, n, r, f in ports if role == "incr"]
            self.q = [(getattr(dut, n), r, f) for role, n, r, f in ports if role == "q"]
            self.pulse = [(getattr(dut, n), f"{r.name}.{f.name}") for role, n, r, f in ports if role == "pulse"]
            self.swmod = [(getattr(dut, n), f"{r.name}.{f.name}") for role, n, r, f in ports if role == "swmod"]
            self.mon = {name: getattr(dut, f"mon_{name}") for name in MONITOR}
            # Expected AXI results, in bus order. Writes also keep the data and strobes that reached the bank, so
            # a corruption between the AXI port and the RegisterBus (which the model would follow) is caught too.
            self.reads: list[tuple[int, int, int]] = []
            self.writes: list[tuple[int, int, int, int]] = []     # (addr, w_data, w_strb, resp) per write
            self.read_next = self.write_next = 0       # next entry a B/R result is compared against
            self.pending_ack = None                    # (is_write, data, resp) accepted last cycle
            self.exp_pulse: dict[str, int] = {}        # strobes expected this cycle (from last cycle's write)
            self.pulse_seen: Counter = Counter()       # (reg.field, bit) -> cycles high
            self.swmod_seen: Counter = Counter()
            self.swmod_expected: Counter = Counter()
            self.errors_seen = 0
            self.cycles = 0
            self.kinds: list[str] = []                 # "r"/"w" per access, in bus order
            self.cov: Counter = Counter()
            self._axi_prev = None
            self.last_node = None
            self.in_reset = True
            self.resets = 0
            self.running = True

        def _model_reset(self):
            """The RTL just left reset: registers and the read latch are at reset; RAM contents survive (they are
            only initialised at configuration), and the pulse tally is the scoreboard's, not the hardware's."""
            mem, pulses = self.model.mem, self.model.pulses
            self.model.reset()
            self.model.mem, self.model.pulses = mem, pulses
            self.resets += 1

        # -- per-cycle sampling -------------------------------------------------------------------------------------

        def on_cycle(self, cycle):
            """The TB's cycle loop calls this at every falling edge (until ``running`` is cleared)."""
            if not self.running:
                return
            dut = self.dut
            if _u(dut.rst):
                self._axi_prev, self.pending_ack, self.exp_pulse, self.in_reset = None, None, {}, True
                return
            if self.in_reset:
                self.in_reset = False
                self._model_reset()
            self.cycles += 1
            self._check_outputs()
            self._check_axi_stability()
            r_stb, w_stb, ack = _u(self.mon["r_stb"]), _u(self.mon["w_stb"]), _u(self.mon["ack"])
            assert not (r_stb and w_stb), "r_stb and w_stb both high"
            if self.pending_ack is not None:
                self._check_ack(ack)
            else:
                assert not ack, f"cycle {self.cycles}: ack without a request accepted last cycle"
                if r_stb or w_stb:
                    self._access(bool(w_stb))
            self._increments()

        def _check_outputs(self):
            model = self.model
            for h, reg, f in self.q:
                want = (model.state[reg.name] & f.mask) >> f.lsb
                got = _u(h)
                assert got == want, f"cycle {self.cycles}: hw output {reg.name}.{f.name} = {got:#x}, model {want:#x}"
            for h, name in self.pulse:
                got, want = _u(h), self.exp_pulse.get(name, 0)
                assert got == want, f"cycle {self.cycles}: pulse {name} = {got:#x}, expected {want:#x}"
                for b in range(got.bit_length()):
                    if got >> b & 1:
                        self.pulse_seen[(name, b)] += 1
            for h, name in self.swmod:
                got, want = _u(h), self.exp_pulse.get(f"swmod:{name}", 0)
                assert got == want, f"cycle {self.cycles}: swmod {name} = {got}, expected {want}"
                if got:
                    self.swmod_seen[name] += got
            self.exp_pulse = {}

        def _check_axi_stability(self):
            d = self.dut
            now = (_u(d.s_axil__bvalid), _u(d.s_axil__bready), _u(d.s_axil__bresp),
                   _u(d.s_axil__rvalid), _u(d.s_axil__rready), _u(d.s_axil__rdata), _u(d.s_axil__rresp))
            prev = self._axi_prev
            if prev is not None:
                if prev[0] and not prev[1]:
                    assert now[0] and now[2] == prev[2], f"cycle {self.cycles}: B dropped/changed before BREADY"
                if prev[3] and not prev[4]:
                    assert now[3] and now[5:] == prev[5:], f"cycle {self.cycles}: R dropped/changed before RREADY"
            self._axi_prev = now

        def _check_ack(self, ack):
            is_write, data, resp = self.pending_ack
            self.pending_ack = None
            assert ack, f"cycle {self.cycles}: no ack one cycle after the accept"
            got_resp, err = _u(self.mon["resp"]), _u(self.dut.bus_error)
            assert got_resp == resp, f"cycle {self.cycles}: bank resp {got_resp}, model {resp}"
            if not is_write:
                got = _u(self.mon["r_data"])
                assert got == data, f"cycle {self.cycles}: bank r_data {got:#010x}, model {data:#010x}"
            assert err == (resp != OKAY), f"cycle {self.cycles}: target error strobe {err} for resp {resp}"
            self.errors_seen += err

        def _access(self, is_write: bool):
            model = self.model
            for h, name in self.hwv:
                model.set_hw(name, _u(h))
            addr = _u(self.mon["addr"])
            hit = model.regmap.decode(addr)
            node = "unmapped" if hit is None else hit[0].name
            self.last_node = None if hit is None else hit[0]
            self.kinds.append("w" if is_write else "r")
            if is_write:
                data, strb = _u(self.mon["w_data"]), _u(self.mon["w_strb"])
                before = Counter(model.pulses)
                resp = model.write(addr, data, strb)
                for (name, bit), n in (model.pulses - before).items():
                    self.exp_pulse[name] = self.exp_pulse.get(name, 0) | (n and 1 << bit)
                if resp == OKAY and hit is not None and not isinstance(hit[0], MemNode):
                    reg, word = hit
                    lanes = strobe_mask(strb) << (32 * word)
                    for f in reg.fields:
                        if f.swmod and lanes & f.mask:
                            self.exp_pulse[f"swmod:{reg.name}.{f.name}"] = 1
                            self.swmod_expected[f"{reg.name}.{f.name}"] += 1
                self.writes.append((addr, data, strb, resp))
                self.pending_ack = (True, None, resp)
                self.cov[("w", node, RESP_NAMES[resp])] += 1
                self.cov[("strb", strb)] += 1
            else:
                hi_word = hit is not None and not isinstance(hit[0], MemNode) and hit[1] == 1
                if hi_word:
                    live = (model.value(hit[0].name) >> 32) & 0xFFFF_FFFF
                data, resp = model.read(addr)
                if hi_word and data != live:
                    self.cov["latch_differs_from_live"] += 1
                self.reads.append((addr, data, resp))
                self.pending_ack = (False, data, resp)
                self.cov[("r", node, RESP_NAMES[resp])] += 1
            return addr

        def _increments(self):
            model = self.model
            accepted = self.pending_ack is not None
            for h, name, reg, f in self.incr:
                if _u(h):
                    old = (model.state[reg.name] & f.mask) >> f.lsb
                    model.incr(name)
                    if (model.state[reg.name] & f.mask) >> f.lsb < old:
                        self.cov[("wrap", name)] += 1
                    if f.width > 32 and ((old + 1) >> 32) != (old >> 32):
                        self.cov[("carry32", name)] += 1
                    if accepted and self.last_node is reg and (self.kinds[-1] == "w" or f.rclr):
                        self.cov[("incr_during_access", self.kinds[-1], name)] += 1

        # -- result checks ------------------------------------------------------------------------------------------

        def check_read(self, addr: int, data: int, resp: int, what="", lanes: int = 0xFFFF_FFFF):
            """An R result against the next read seen on the bus; only the bytes in ``lanes`` were returned."""
            assert self.read_next < len(self.reads), f"R result for {addr:#x} with no read seen on the bus {what}"
            e_addr, e_data, e_resp = self.reads[self.read_next]
            self.read_next += 1
            data, e_data = data & lanes, e_data & lanes
            assert (addr, data, resp) == (e_addr, e_data, e_resp), (
                f"read #{self.read_next - 1} {what}: AXI gave addr {addr:#x} data {data:#010x} "
                f"{RESP_NAMES.get(resp, resp)}; expected addr {e_addr:#x} data {e_data:#010x} {RESP_NAMES[e_resp]}")

        def check_write(self, addr: int, data: int, strb: int, resp: int, what=""):
            """A B result against the next write seen on the bus; ``data``/``strb``: what the manager sent on W."""
            assert self.write_next < len(self.writes), f"B result for {addr:#x} with no write seen on the bus {what}"
            e_addr, e_data, e_strb, e_resp = self.writes[self.write_next]
            self.write_next += 1
            assert (data, strb) == (e_data, e_strb), (
                f"write #{self.write_next - 1} {what} to {addr:#x}: sent data {data:#010x} strb {strb:#06b}, "
                f"the bank got data {e_data:#010x} strb {e_strb:#06b}")
            assert (addr, resp) == (e_addr, e_resp), (
                f"write #{self.write_next - 1} {what}: AXI gave addr {addr:#x} {RESP_NAMES.get(resp, resp)}; "
                f"expected addr {e_addr:#x} {RESP_NAMES[e_resp]}")

        def final_checks(self):
            assert self.read_next == len(self.reads), f"{len(self.reads) - self.read_next} reads never answered"
            assert self.write_next == len(self.writes), f"{len(self.writes) - self.write_next} writes never answered"
            assert self.pending_ack is None
            model_pulses = {k: v for k, v in self.model.pulses.items() if v}
            assert dict(self.pulse_seen) == model_pulses, (dict(self.pulse_seen), model_pulses)
            assert dict(self.swmod_seen) == {k: v for k, v in self.swmod_expected.items() if v}, \
                (dict(self.swmod_seen), dict(self.swmod_expected))
            n_err = sum(1 for *_, r in self.reads if r != OKAY) + sum(1 for *_, r in self.writes if r != OKAY)
            assert self.errors_seen == n_err, (self.errors_seen, n_err)

    class TB(testbench.TB):
        """Clock, reset, model + scoreboard, and either an AxiLiteMaster or raw AXI4-Lite channel endpoints."""

        def __init__(self, dut, raw: bool = False):
            super().__init__(dut, regmap=kinds_regmap(), axil=None if raw else "s_axil", seed_env="REGBANK_SEED")
            self.log = logging.getLogger("cocotb.tb")
            self.log.setLevel(logging.INFO)
            self.regmap = kinds_regmap()
            self.model = RegisterBankModel(self.regmap)
            for mem in self.regmap.memories:
                self.model.mem[mem.name] = mem_init(mem)
            self.sb = Scoreboard(dut, self.model, self.log)
            self._sb_started = False
            self.raw = raw
            # cocotbext-axi logs every transaction and reset edge at INFO: keep the log readable at 20 000 transfers.
            logging.getLogger(f"cocotb.{dut._name}.s_axil").setLevel(logging.WARNING)
            if raw:
                bus = AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__")
                self.aw = AxiLiteAWSource(bus.write.aw, dut.clk, dut.rst)
                self.w = AxiLiteWSource(bus.write.w, dut.clk, dut.rst)
                self.b = AxiLiteBSink(bus.write.b, dut.clk, dut.rst)
                self.ar = AxiLiteARSource(bus.read.ar, dut.clk, dut.rst)
                self.r = AxiLiteRSink(bus.read.r, dut.clk, dut.rst)
                for ch in (self.aw, self.w, self.b, self.ar, self.r):
                    ch.log.setLevel(logging.WARNING)
            ports = field_ports(self.regmap)
            self.hwv_pins = [(getattr(dut, n), f.width) for role, n, _, f in ports if role == "hwv"]
            self.incr_pins = {f"{r.name}.{f.name}": getattr(dut, n) for role, n, r, f in ports if role == "incr"}
            for h, _ in self.hwv_pins:
                h.value = 0
            for h in self.incr_pins.values():
                h.value = 0
            for mem in self.regmap.memories:
                getattr(dut, f"peek_{_flat(mem.path)}_addr").value = 0

        def on_reset_released(self):
            if not self._sb_started:            # the scoreboard sees every cycle from the first one out of reset
                self.on_cycle(self.sb.on_cycle)
                self._sb_started = True

        # -- stimulus helpers ---------------------------------------------------------------------------------------

        def set_backpressure(self):
            """Random AXI pauses on every channel: phases of free flow, light or heavy stalls, long solid stalls."""
            a = self.axil
            for ch in (a.write_if.aw_channel, a.write_if.w_channel, a.write_if.b_channel,
                       a.read_if.ar_channel, a.read_if.r_channel):
                ch.set_pause_generator(phased_pauses(random.Random(self.rng.getrandbits(64))))

        async def drive_hw(self, stop):
            """Randomly change hw_value inputs and counter increments, just after rising edges."""
            rng = random.Random(self.rng.getrandbits(64))
            re = RisingEdge(self.dut.clk)
            probs = {}
            p_hwv = 0.2
            left = 0
            while not stop():
                if left == 0:
                    left = rng.randint(32, 256)
                    probs = {n: rng.choice([0.0, 0.05, 0.3, 0.5, 0.9, 1.0]) for n in self.incr_pins}
                    p_hwv = rng.choice([0.0, 0.1, 0.5])
                left -= 1
                for name, h in self.incr_pins.items():
                    h.value = int(rng.random() < probs[name])
                if rng.random() < p_hwv:
                    h, width = rng.choice(self.hwv_pins)
                    h.value = rng.choice([0, (1 << width) - 1, rng.getrandbits(width)])
                await re
            for h in self.incr_pins.values():
                h.value = 0

        async def quiesce(self, cycles=4):
            for h in self.incr_pins.values():
                h.value = 0
            await ClockCycles(self.dut.clk, cycles)

        async def check_memories(self):
            """Read every RAM through its peek port and compare with the model's contents."""
            for mem in self.regmap.memories:
                name = _flat(mem.path)
                addr_pin, data_pin = getattr(self.dut, f"peek_{name}_addr"), getattr(self.dut, f"peek_{name}_data")
                for i in range(mem.entries):
                    addr_pin.value = i
                    await Timer(1, unit="ns")
                    got = _u(data_pin)
                    assert got == self.model.mem[mem.name][i], \
                        f"{mem.name}[{i}] = {got:#010x}, model {self.model.mem[mem.name][i]:#010x}"

        # -- AXI through the master ---------------------------------------------------------------------------------

        async def read(self, addr: int, length: int = 4, what=""):
            r = await self.axil.read(addr, length)
            off = addr % 4
            word = int.from_bytes(r.data, "little") << (8 * off)
            # The master returns only the requested bytes: compare those lanes of the expected word.
            self.sb.check_read(addr, word, int(r.resp), what, lanes=((1 << (8 * length)) - 1) << (8 * off))
            return word, int(r.resp)

        async def write(self, addr: int, data: bytes, what=""):
            r = await self.axil.write(addr, data)
            off = addr % 4
            self.sb.check_write(addr, int.from_bytes(data, "little") << (8 * off),
                                ((1 << len(data)) - 1) << off, int(r.resp), what)
            return int(r.resp)

        async def read32(self, addr, what=""):
            return await self.read(addr, 4, what)

        async def write32(self, addr, value, what=""):
            return await self.write(addr, value.to_bytes(4, "little"), what)

    def _word_addresses(regmap: RegMap, addr_width: int):
        regs, mems, unmapped = [], [], []
        for a in range(0, 1 << addr_width, 4):
            hit = regmap.decode(a)
            (unmapped if hit is None else mems if isinstance(hit[0], MemNode) else regs).append(a)
        return regs, mems, unmapped

    # -- a. random traffic ----------------------------------------------------------------------------------------

    @cocotb.test(timeout_time=20, timeout_unit="ms")
    async def random_traffic(dut):
        tb = TB(dut)
        n_total = param("transactions", 2000)
        backpressure = param("backpressure", False)
        tb.log.info("random traffic: %d transactions, backpressure=%s", n_total, backpressure)
        await tb.reset()
        if backpressure:
            tb.set_backpressure()
        regs, mems, unmapped = _word_addresses(tb.regmap, ADDR_WIDTH)
        holes = [a for a in unmapped if a < tb.regmap.size]
        beyond = [a for a in unmapped if a >= tb.regmap.size]
        assert holes and beyond

        def pick_word(rng):
            x = rng.random()
            if x < 0.55:
                return rng.choice(regs)
            if x < 0.82:
                return rng.choice(mems)
            return rng.choice(holes if x < 0.93 else beyond)

        n_reads = n_total // 2
        n_writes = n_total - n_reads
        done = {"r": 0, "w": 0}

        async def writer(k, count):
            rng = random.Random(tb.rng.getrandbits(64))
            for _ in range(count):
                if rng.random() < 0.3:
                    await ClockCycles(dut.clk, rng.choice([1, 2, 3, 7, 20]))
                strb = rng.choice(CONTIGUOUS_STRB)
                off = (strb & -strb).bit_length() - 1
                n = bin(strb).count("1")
                value = rng.choice([rng.getrandbits(32), 0, 0xFFFF_FFFF, rng.getrandbits(32)])
                data = (value >> (8 * off) & ((1 << (8 * n)) - 1)).to_bytes(n, "little")
                await tb.write(pick_word(rng) + off, data, f"(writer {k})")
                done["w"] += 1

        async def reader(k, count):
            rng = random.Random(tb.rng.getrandbits(64))
            for _ in range(count):
                if rng.random() < 0.3:
                    await ClockCycles(dut.clk, rng.choice([1, 2, 3, 7, 20]))
                word = pick_word(rng)
                # Mostly full words; sometimes a sub-word read at an unaligned address (ARADDR[1:0] != 0).
                if rng.random() < 0.8:
                    off, n = 0, 4
                else:
                    off = rng.randrange(4)
                    n = rng.randint(1, 4 - off)
                await tb.read(word + off, n, f"(reader {k})")
                done["r"] += 1

        hw_stop = {"stop": False}
        hw_task = cocotb.start_soon(tb.drive_hw(lambda: hw_stop["stop"]))
        tasks = []
        for k in range(2):      # two writers and two readers, so AW/W/AR queue behind responses still in flight
            tasks.append(cocotb.start_soon(writer(k, n_writes // 2 + (k < n_writes % 2))))
            tasks.append(cocotb.start_soon(reader(k, n_reads // 2 + (k < n_reads % 2))))
        for t in tasks:
            await t
        hw_stop["stop"] = True
        await hw_task
        await tb.quiesce(8)
        sb = tb.sb
        sb.running = False
        await ClockCycles(dut.clk, 2)
        sb.final_checks()
        await tb.check_memories()

        assert done == {"r": n_reads, "w": n_writes}, done
        assert len(sb.reads) == n_reads and len(sb.writes) == n_writes, (len(sb.reads), len(sb.writes))
        assert done["r"] + done["w"] >= n_total

        # Functional coverage: every node read and written, every response, every strobe pattern and corner.
        cov = sb.cov
        for node in [r.name for r in tb.regmap.registers] + [m.name for m in tb.regmap.memories]:
            assert any(k[:2] == ("r", node) for k in cov), f"{node} never read"
            assert any(k[:2] == ("w", node) for k in cov), f"{node} never written"
        for kind in "rw":
            assert cov[(kind, "unmapped", "DECERR")] > 0, f"no unmapped {kind}"
        for bad in ("magic", "version", "status", "events", "cnt64_ro", "cnt64_rc", "blk.live", "rom"):
            assert cov[("w", bad, "SLVERR")] > 0, f"no SLVERR write to {bad}"
        for strb in CONTIGUOUS_STRB:
            assert cov[("strb", strb)] > 0, f"strobe {strb:#06b} never used"
        for name in ("counters.a", "counters.b"):
            assert cov[("wrap", name)] > 0, f"{name} never wrapped"
        assert cov[("carry32", "cnt64_ro.count")] > 0, "cnt64_ro never carried into its high word"
        assert cov["latch_differs_from_live"] > 0, "no high-word read where the latch differed from the live value"
        assert any(k[0] == "incr_during_access" and k[1] == "w" for k in cov), "no increment during a counter write"
        assert any(k[0] == "incr_during_access" and k[1] == "r" for k in cov), "no increment during a read-clear"
        for _, name in sb.pulse:
            assert sb.pulse_seen[(name, 0)] > 0, f"pulse {name} never seen"
        for _, name in sb.swmod:
            assert sb.swmod_seen[name] > 0, f"swmod {name} never seen"
        resp_mix = Counter((k[0], k[2]) for k in cov.elements() if k[0] in ("r", "w"))
        tb.log.info("%d transactions (%d reads, %d writes) in %d cycles; responses %s; pulses %d; swmod %s; "
                    "errors %d; stale-latch reads %d", n_total, n_reads, n_writes, sb.cycles, dict(resp_mix),
                    sum(sb.pulse_seen.values()), dict(sb.swmod_seen), sb.errors_seen,
                    cov["latch_differs_from_live"])

    # -- b. raw channels ------------------------------------------------------------------------------------------

    @cocotb.test(timeout_time=2, timeout_unit="ms")
    async def raw_channels(dut):
        tb = TB(dut, raw=True)
        await tb.reset()
        sb, rm, clk = tb.sb, tb.regmap, dut.clk
        scratch, ctrl, cmd = rm["scratch"].address, rm["ctrl"].address, rm["cmd"].address
        small, big, wide = rm["small_mem"].address, rm["big_mem"].address, rm["wide"].address

        def aw(addr):
            t = tb.aw._transaction_obj()
            t.awaddr, t.awprot = addr, 0
            return t

        sent_w = deque()      # (wdata, wstrb) of every W beat handed to the source, in order

        def w(data, strb=0xF):
            t = tb.w._transaction_obj()
            t.wdata, t.wstrb = data, strb
            sent_w.append((data, strb))
            return t

        def ar(addr):
            t = tb.ar._transaction_obj()
            t.araddr, t.arprot = addr, 0
            return t

        async def b_result(addr, what):
            b = await tb.b.recv()
            sb.check_write(addr, *sent_w.popleft(), int(b.bresp), what)
            return int(b.bresp)

        async def r_result(addr, what):
            r = await tb.r.recv()
            sb.check_read(addr, int(r.rdata), int(r.rresp), what)
            return int(r.rdata), int(r.rresp)

        async def read(addr, what=""):
            await tb.ar.send(ar(addr))
            return await r_result(addr, what)

        async def write(addr, data, strb=0xF, what=""):
            tb.aw.send_nowait(aw(addr))
            tb.w.send_nowait(w(data, strb))
            return await b_result(addr, what)

        # W long before AW: nothing reaches the bank until AW arrives.
        n_bus = len(sb.writes)
        await tb.w.send(w(0x1357_9BDF))
        await ClockCycles(clk, 30)
        assert len(sb.writes) == n_bus and not _u(dut.s_axil__bvalid), "write started without AW"
        assert not _u(dut.s_axil__wready), "second W would be accepted while one is buffered"
        await tb.aw.send(aw(scratch))
        assert await b_result(scratch, "W before AW") == OKAY
        assert (await read(scratch))[0] == 0x1357_9BDF

        # AW long before W.
        await tb.aw.send(aw(small + 4 * 7))
        await ClockCycles(clk, 30)
        assert len(sb.writes) == n_bus + 1 and not _u(dut.s_axil__bvalid), "write started without W"
        assert not _u(dut.s_axil__awready)
        await tb.w.send(w(0xCAFE_F00D))
        assert await b_result(small + 4 * 7, "AW before W") == OKAY
        assert (await read(small + 4 * 7))[0] == 0xCAFE_F00D

        # AW and W in the same cycle, to a register, a memory word and a 64-bit high word.
        for addr, value in ((ctrl, 0x0102_0304), (big + 4 * 200, 0x8765_4321), (wide + 4, 0x00FF_00FF)):
            assert await write(addr, value, what="same cycle") == OKAY
            await read(addr)

        # Non-contiguous and empty WSTRB, to storage, memory, pulse/swmod and counter registers.
        for addr in (scratch, ctrl, small + 4 * 3, big + 4 * 255, cmd, rm["counters"].address, wide, wide + 4,
                     rm["cnt64_rw"].address + 4):
            for strb in (0b0101, 0b1001, 0b1010, 0b0110, 0b1011, 0b1101, 0, 0b1111):
                assert await write(addr, tb.rng.getrandbits(32), strb, f"strb {strb:#06b}") == OKAY
                await read(addr)
        assert sb.cov[("strb", 0)] > 0

        # Back-to-back writes: all AWs and Ws queued at once, B always ready.
        addrs = [scratch, ctrl, small, small + 4, big, big + 4, wide, wide + 4]
        values = [tb.rng.getrandbits(32) for _ in addrs]
        for a, v in zip(addrs, values):
            tb.aw.send_nowait(aw(a))
            tb.w.send_nowait(w(v))
        for a in addrs:
            assert await b_result(a, "back-to-back") == OKAY
        for a in addrs:
            await tb.ar.send(ar(a))
        for a in addrs:
            await r_result(a, "back-to-back read")

        # Simultaneous read and write streams, both directions ready every cycle: round-robin must interleave.
        start = len(sb.kinds)
        n = 16
        for i in range(n):
            tb.aw.send_nowait(aw(big + 4 * i))
            tb.w.send_nowait(w(i * 0x0101_0101))
            tb.ar.send_nowait(ar(big + 4 * i))
        for i in range(n):
            await b_result(big + 4 * i, "simultaneous")
        for i in range(n):
            await r_result(big + 4 * i, "simultaneous")
        seq = "".join(sb.kinds[start:])
        tb.log.info("simultaneous read/write bus order: %s", seq)
        assert "www" not in seq and "rrr" not in seq, f"arbitration starved one side: {seq}"

        # Same-cycle AR and AW+W to the same address: the bus order decides which value the read sees.
        for i in range(4):
            tb.aw.send_nowait(aw(scratch))
            tb.w.send_nowait(w(0xA000_0000 + i))
            tb.ar.send_nowait(ar(scratch))
            await b_result(scratch, "same-cycle r/w")
            await r_result(scratch, "same-cycle r/w")

        # Round-robin: when AR and AW+W arrive in the same cycle, the kind that did not go last goes first.
        for last in ("w", "r", "w", "r", "r", "w"):
            if last == "w":
                await write(ctrl, tb.rng.getrandbits(32), what="round-robin setup")
            else:
                await read(ctrl, "round-robin setup")
            await ClockCycles(clk, 3)
            start = len(sb.kinds)
            tb.aw.send_nowait(aw(scratch))
            tb.w.send_nowait(w(0xB000_0000 + start))
            tb.ar.send_nowait(ar(scratch))
            await b_result(scratch, "round-robin")
            await r_result(scratch, "round-robin")
            order = "".join(sb.kinds[start:])
            assert order == ("rw" if last == "w" else "wr"), f"after a lone {last}, simultaneous r+w went {order}"

        # B held off: the next write is buffered but does not reach the bank; reads still go through.
        tb.b.pause = True
        tb.aw.send_nowait(aw(scratch))
        tb.w.send_nowait(w(0x1111_1111))
        await ClockCycles(clk, 10)
        tb.aw.send_nowait(aw(ctrl))
        tb.w.send_nowait(w(0x2222_2222))
        await ClockCycles(clk, 20)
        n_w = len(sb.writes)
        assert sb.writes[-1][0] == scratch, "first write not done"
        assert _u(dut.s_axil__bvalid) and not _u(dut.s_axil__awready) and not _u(dut.s_axil__wready)
        assert (await read(rm["magic"].address, "read during B stall"))[0] == 0x57535044
        assert len(sb.writes) == n_w, "second write reached the bank while B was pending"
        tb.b.pause = False
        await b_result(scratch, "B stall 1")
        await b_result(ctrl, "B stall 2")

        # R held off: likewise for reads, writes still go through.
        tb.r.pause = True
        tb.ar.send_nowait(ar(scratch))
        await ClockCycles(clk, 10)
        tb.ar.send_nowait(ar(ctrl))
        await ClockCycles(clk, 20)
        n_r = len(sb.reads)
        assert _u(dut.s_axil__rvalid) and not _u(dut.s_axil__arready)
        assert await write(small, 0x3333_3333, what="write during R stall") == OKAY
        assert len(sb.reads) == n_r, "second read reached the bank while R was pending"
        tb.r.pause = False
        await r_result(scratch, "R stall 1")
        await r_result(ctrl, "R stall 2")

        # Errors through the raw channels, with odd strobes.
        assert await write(0x7FC + 0x800, 0xFFFF_FFFF, 0b0101) == DECERR
        assert await write(rm["rom"].address, 0, 0b1000) == SLVERR
        assert await read(0x100) == (0, DECERR)

        await tb.quiesce()
        sb.running = False
        await ClockCycles(clk, 2)
        sb.final_checks()
        await tb.check_memories()

    # -- c. reset values and error responses ----------------------------------------------------------------------

    @cocotb.test(timeout_time=2, timeout_unit="ms")
    async def reset_values_and_errors(dut):
        tb = TB(dut)
        await tb.reset()
        rm, model = tb.regmap, tb.model

        def reset_word(reg, word, cleared=False):
            """A register word's reset value as read; ``cleared``: after a first read cleared the rclr fields."""
            readable = sum(f.mask for f in reg.fields if f.sw_readable and not (cleared and f.rclr))
            return (reg.reset & readable) >> (32 * word) & 0xFFFF_FFFF

        async def read_all_registers(cleared=False):
            for reg in rm.registers:
                for word in range(reg.words):
                    data, resp = await tb.read32(reg.address + 4 * word, f"{reg.name}[{word}] after reset")
                    want = reset_word(reg, word, cleared)
                    assert resp == OKAY
                    assert data == want, f"{reg.name} word {word}: {data:#010x}, reset {want:#010x}"

        # Spot checks of the interpretation, independent of the model.
        assert reset_word(rm["ctrl"], 0) == 0x5C01_23A5
        assert reset_word(rm["key"], 0) == 0
        assert reset_word(rm["cmd"], 0) == 0x0095_0000
        assert reset_word(rm["cnt64_rw"], 1) == 1
        await read_all_registers()
        for mem in rm.memories:
            for i in (0, mem.entries - 1):
                data, resp = await tb.read32(mem.address + 4 * i)
                assert resp == OKAY and data == (mem_init(mem)[i] if mem.sw_readable else 0), (mem.name, i)

        # Unmapped: every hole and the space beyond the map, read and write, DECERR; writes change nothing.
        regs, mems, unmapped = _word_addresses(rm, ADDR_WIDTH)
        assert any(a < rm.size for a in unmapped) and any(a >= rm.size for a in unmapped)
        for a in unmapped:
            assert await tb.read32(a) == (0, DECERR), hex(a)
            assert await tb.write32(a, 0xFFFF_FFFF) == DECERR, hex(a)

        # Read-only registers and memory: SLVERR, nothing changes.
        for name in ("magic", "version", "status", "events", "cnt64_ro", "cnt64_rc", "blk.live"):
            reg = rm[name]
            for word in range(reg.words):
                assert await tb.write32(reg.address + 4 * word, 0xFFFF_FFFF) == SLVERR, name
        for i in (0, 5, 15):
            assert await tb.write32(rm["rom"].address + 4 * i, 0) == SLVERR
        await read_all_registers(cleared=True)
        assert reset_word(rm["events"], 0) == 7 and reset_word(rm["events"], 0, cleared=True) == 0

        # Write-only register and memory: writes land (visible on hw / in the RAM), reads give 0/OKAY.
        assert await tb.write32(rm["key"].address, 0x0BAD_CAFE) == OKAY
        assert _u(dut.q_key_value) == 0x0BAD_CAFE
        assert await tb.read32(rm["key"].address) == (0, OKAY)
        assert await tb.write32(rm["wo_mem"].address + 12, 0x600D_F00D) == OKAY
        assert await tb.read32(rm["wo_mem"].address + 12) == (0, OKAY)
        assert model.mem["wo_mem"][3] == 0x600D_F00D
        # A write to a register with some writable fields (cmd) is OKAY; its const/hw_value fields keep their value.
        assert await tb.write32(rm["cmd"].address, 0xFFFF_FFFF) == OKAY
        assert (await tb.read32(rm["cmd"].address))[0] == 0x009F_0000

        # hw_value fields read the pins.
        dut.hwv_status_lo.value = 0xABC
        dut.hwv_status_flag.value = 1
        dut.hwv_status_hi.value = 0x123
        dut.hwv_blk_live_value.value = 0xFEED_BEEF
        await ClockCycles(dut.clk, 1)
        assert (await tb.read32(rm["status"].address))[0] == 0x1231_0ABC
        assert (await tb.read32(rm["blk.live"].address))[0] == 0xFEED_BEEF

        # A second reset, after all that: registers (and the read latch) back to reset, RAM contents kept.
        for h, _ in tb.hwv_pins:
            h.value = 0
        await tb.quiesce()
        await tb.reset()
        assert tb.sb.resets == 2
        await read_all_registers()
        await tb.check_memories()

        await tb.quiesce()
        tb.sb.running = False
        await ClockCycles(dut.clk, 2)
        tb.sb.final_checks()
        await tb.check_memories()

    # -- d. 64-bit read latch -------------------------------------------------------------------------------------

    @cocotb.test(timeout_time=2, timeout_unit="ms")
    async def read_latch_64(dut):
        tb = TB(dut)
        await tb.reset()
        rm, clk = tb.regmap, dut.clk
        lo, hi = rm["cnt64_rw"].address, rm["cnt64_rw"].address + 4
        incr = tb.incr_pins["cnt64_rw.count"]

        # Load 0x00000005_FFFFFF80, then count every cycle: the low word wraps within ~128 cycles.
        assert await tb.write32(lo, 0xFFFF_FF80) == OKAY
        assert await tb.write32(hi, 0x5) == OKAY
        assert (await tb.read32(lo))[0] == 0xFFFF_FF80
        assert (await tb.read32(hi))[0] == 0x5
        incr.value = 1
        low, _ = await tb.read32(lo)                 # latches the high word (5)
        assert low >= 0xFFFF_FF80
        await ClockCycles(clk, 200)                  # the counter carries into the high word meanwhile
        live_hi = _u(dut.q_cnt64_rw_count) >> 32
        assert live_hi == 6, live_hi
        assert (await tb.read32(hi, "latched high"))[0] == 5, "high word is not the one latched with the low word"
        assert (await tb.read32(hi, "latched high again"))[0] == 5, "latch lost after one high read"
        # A new low read re-latches.
        low, _ = await tb.read32(lo)
        assert (await tb.read32(hi))[0] == 6
        # A low read of another 64-bit register takes the latch: a high read of this one is live again.
        assert await tb.write32(lo, 0xFFFF_FF80) == OKAY   # next carry is ~128 cycles away
        await tb.read32(lo)                                # latch: (cnt64_rw, 6)
        await tb.read32(rm["cnt64_ro"].address)            # latch moves to cnt64_ro
        await ClockCycles(clk, 200)
        assert _u(dut.q_cnt64_rw_count) >> 32 == 7
        assert (await tb.read32(hi, "live high"))[0] == 7, "high read after another register's low read is stale"
        incr.value = 0

        # The read-only counter starts 256 below a carry: read low, let it carry, read high.
        incr_ro = tb.incr_pins["cnt64_ro.count"]
        incr_ro.value = 1
        await ClockCycles(clk, 200)
        low, _ = await tb.read32(rm["cnt64_ro"].address)
        assert 0xFFFF_FF00 < low
        await ClockCycles(clk, 100)
        assert _u(dut.q_cnt64_ro_count) >> 32 == 1
        assert (await tb.read32(rm["cnt64_ro"].address + 4))[0] == 0
        incr_ro.value = 0

        # A write between the low and the high read does not update the latch (the pair is a snapshot).
        await tb.read32(lo)
        latched = (tb.model.state["cnt64_rw"] >> 32) & 0xFFFF_FFFF
        assert await tb.write32(hi, 0x1234_5678) == OKAY
        assert (await tb.read32(hi))[0] == latched

        await tb.quiesce()
        tb.sb.running = False
        await ClockCycles(clk, 2)
        tb.sb.final_checks()

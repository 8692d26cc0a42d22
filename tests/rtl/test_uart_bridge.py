"""UART-to-AXI4-Lite bridge on Verilator: the line protocol bit by bit (cocotb), and the real ``UartTransport`` driving
the whole core through it (pyverilator), against the model.

1. cocotb, DUT :class:`BridgeBankHarness`: ``UartAxiLiteBridge`` ─▶ ``AXI4LiteTarget`` ─▶ ``RegisterBank`` of the ID
   block's map (8 address bits, so 0x40..0xFF answer DECERR from the bank and 0x100.. from the bridge). A ``stall``
   pin cuts the AXI4-Lite link, standing in for a target that never answers. The testbench drives ``rx`` and samples
   ``tx`` itself, one bit at a time, and scores every response against ``RegisterBankModel``.
2. pyverilator, DUT :class:`BridgeCoreHarness`: ``UartAxiLiteBridge`` ─▶ ``WirespeedCore(uart_core_params())``, the
   whole core at the ECPIX-5's width (W = 4), as the bring-up build there has it. A
   :class:`VerilatedSerialPort` turns ``write``/``read`` into bits on the design's pins, so ``UartTransport`` and an
   ``Offload`` on top of it run unchanged and must agree with ``wirespeed.open("model")``.

Seeds are printed; ``UART_SEED=<n>`` overrides; ``WAVES=1`` dumps an FST.
"""

from __future__ import annotations

import os
import random

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from wirespeed.hdl.bus.axil import AXI4LiteTarget
from wirespeed.hdl.bus.regbank import RegisterBank
from wirespeed.hdl.platform.boards import BOARDS
from wirespeed.hdl.platform.uart_bridge import UartAxiLiteBridge, clocks_per_bit
from wirespeed.hdl.bus.regmap import core_regmap
from wirespeed.sim.runner import param, run_cocotb

SEED = int(os.environ.get("UART_SEED", "20261125"))

# cocotb harness: 16 clocks per bit.
BANK_CLK_HZ, BANK_BAUD, BANK_ADDR_WIDTH = 1_600_000, 100_000, 8
BANK_REQUEST_TIMEOUT_US = 400               # 640 cycles = 40 bit times
BANK_AXI_TIMEOUT_CYCLES = 8192              # > 33 characters, so a stalled target lets the RX FIFO overflow
# core harness: 8 clocks per bit, the fastest the receiver allows, because every access is ~100 bit times.
CORE_CLK_HZ, CORE_BAUD = 800_000, 100_000
CORE_REQUEST_TIMEOUT_US = 400               # 320 cycles = 40 bit times


def uart_core_params():
    """The core behind the bridge: the default core at the ECPIX-5's width (W = 4)."""
    from wirespeed.hdl.id.id_block import CoreParams
    return CoreParams(width_bytes=BOARDS["ecpix5"].width)


def id_regmap():
    return core_regmap().submap("id")


class BridgeBankHarness(wiring.Component):
    """``UartAxiLiteBridge`` in front of ``AXI4LiteTarget`` + ``RegisterBank(id map)``; ``stall`` high disconnects
    them (no handshakes, no responses)."""

    def __init__(self):
        super().__init__({"rx": In(1, init=1), "tx": Out(1), "stall": In(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = bridge = UartAxiLiteBridge(
            BANK_CLK_HZ, BANK_BAUD, BANK_ADDR_WIDTH, request_timeout_us=BANK_REQUEST_TIMEOUT_US,
            axi_timeout_cycles=BANK_AXI_TIMEOUT_CYCLES)
        m.submodules.target = target = AXI4LiteTarget(BANK_ADDR_WIDTH)
        m.submodules.bank = bank = RegisterBank(id_regmap(), BANK_ADDR_WIDTH)
        wiring.connect(m, target.bus, bank.bus)
        m.d.comb += [bridge.rx.eq(self.rx), self.tx.eq(bridge.tx)]
        manager, sub = bridge.axil, target.axil
        link = ~self.stall
        for name, member in manager.signature.members.items():
            src, dst = (getattr(manager, name), getattr(sub, name))
            if member.flow is Out:          # manager → target
                m.d.comb += dst.eq(src & link if name.endswith("valid") else src)
            else:
                m.d.comb += src.eq(dst & link if name.endswith(("valid", "ready")) else dst)
        return m


class BridgeCoreHarness(wiring.Component):
    """``UartAxiLiteBridge`` driving the whole core's ``s_axil``; the streaming ports stay idle."""

    def __init__(self):
        super().__init__({"rx": In(1, init=1), "tx": Out(1)})

    def elaborate(self, platform):
        from wirespeed.hdl.core.top import WirespeedCore
        m = Module()
        m.submodules.core = core = WirespeedCore(uart_core_params())
        m.submodules.bridge = bridge = UartAxiLiteBridge(CORE_CLK_HZ, CORE_BAUD, core.addr_width,
                                                         request_timeout_us=CORE_REQUEST_TIMEOUT_US)
        wiring.connect(m, bridge.axil, core.s_axil)
        m.d.comb += [bridge.rx.eq(self.rx), self.tx.eq(bridge.tx)]
        return m


# -- parameter validation (no simulator) ------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, words", [
    (dict(clk_hz=100, baud=20, addr_width=8), "clk_hz/baud"),
    (dict(clk_hz=1_000_000, baud=100_000, addr_width=2), "addr_width=2"),
    (dict(clk_hz=1_000_000, baud=100_000, addr_width=33), "addr_width=33"),
    (dict(clk_hz=1_000_000, baud=0, addr_width=8), "baud=0"),
    (dict(clk_hz=1_000_000, baud=57_600, addr_width=8), "off with a divider of 17"),
    (dict(clk_hz=1_000_000, baud=100_000, addr_width=8, request_timeout_us=100), "request_timeout_us=100"),
    (dict(clk_hz=1_000_000, baud=100_000, addr_width=8, axi_timeout_cycles=0), "axi_timeout_cycles=0"),
])
def test_bad_parameters_are_named(kwargs, words):
    from wirespeed.sim.runner import to_verilog
    with pytest.raises(ValueError, match="out of range|must be within") as e:
        to_verilog(UartAxiLiteBridge(**kwargs), "bridge")     # raised by the constructor already
    assert words in str(e.value)


def test_default_elaborates_for_the_core_clock():
    from wirespeed.hdl.id.id_block import CoreParams
    from wirespeed.sim.runner import to_verilog
    hz = CoreParams().clock_hz
    assert "module bridge" in to_verilog(UartAxiLiteBridge(hz, addr_width=15), "bridge")
    assert clocks_per_bit(100_000_000, 115_200) == 868


# -- cocotb: the protocol, bit by bit --------------------------------------------------------------------------------

BANK_CASES = ["random_vs_model", "error_responses", "garbage_and_framing", "incomplete_request",
              "stalled_target_and_overrun", "pipelined_requests"]


@pytest.mark.rtl
@pytest.mark.parametrize("case", BANK_CASES)
def test_bridge_protocol(case):
    print(f"{case}: seed={SEED} (UART_SEED to override)")
    run_cocotb(BridgeBankHarness(), toplevel="uart_bridge_bank", test_file=__file__, testcase=case, seed=SEED,
               parameters={"seed": SEED})


try:
    import cocotb
except ImportError:
    cocotb = None

if cocotb is not None:
    from cocotb.triggers import FallingEdge, Timer
    from support import testbench

    from wirespeed.hdl.platform.uart_bridge import (OP_READ, OP_WRITE, RX_FIFO_BYTES, STATUS_AXI_TIMEOUT, STATUS_BAD_OP,
                                                    STATUS_FRAMING, STATUS_INCOMPLETE, STATUS_OVERRUN)
    from wirespeed.hdl.bus.regmap import DECERR, OKAY, SLVERR
    from wirespeed.host.models.register_bank import RegisterBankModel
    from wirespeed.host.transports.uart import encode_request

    CLK_NS = 1e9 / BANK_CLK_HZ
    DIV = clocks_per_bit(BANK_CLK_HZ, BANK_BAUD)
    BIT_NS = DIV * CLK_NS

    class TB(testbench.TB):
        def __init__(self, dut):
            super().__init__(dut, axil=None, clock_ns=CLK_NS, seed_env="UART_SEED")
            self.received = []
            self.skew = 0.0             # the host's bit time is off by this fraction

        async def reset(self):
            self.dut.rx.value = 1
            self.dut.stall.value = 0
            await super().reset()
            cocotb.start_soon(self.receiver())

        # -- the host's UART --

        async def send(self, data: bytes, stop_bit: int = 1):
            bit = round(BIT_NS * (1 + self.skew), 3)
            for byte in data:
                for level in [0, *((byte >> i) & 1 for i in range(8)), stop_bit]:
                    self.dut.rx.value = level
                    await Timer(bit, unit="ns")
                self.dut.rx.value = 1
            if stop_bit == 0:
                await Timer(bit, unit="ns")

        async def receiver(self):
            """Decode ``tx`` into ``self.received``, checking each stop bit."""
            while True:
                await FallingEdge(self.dut.tx)
                await Timer(BIT_NS / 2, unit="ns")
                assert self.dut.tx.value == 0, "tx: start bit did not last half a bit"
                byte = 0
                for i in range(8):
                    await Timer(BIT_NS, unit="ns")
                    byte |= int(self.dut.tx.value) << i
                await Timer(BIT_NS, unit="ns")
                assert self.dut.tx.value == 1, "tx: framing error"
                self.received.append(byte)

        async def recv(self, n: int, timeout_bits: int = 200) -> bytes:
            for _ in range(timeout_bits):
                if len(self.received) >= n:
                    break
                await Timer(BIT_NS, unit="ns")
            out, self.received = bytes(self.received[:n]), self.received[n:]
            return out

        async def quiet(self, bits: int = 100):
            """Nothing more arrives for ``bits`` bit times."""
            await Timer(bits * BIT_NS, unit="ns")
            assert not self.received, f"unexpected bytes {bytes(self.received).hex()}"

        # -- accesses --

        async def read(self, address: int, timeout_bits: int = 200) -> tuple[int, int]:
            await self.send(encode_request("read", address))
            raw = await self.recv(5, timeout_bits)
            assert len(raw) == 5, f"read 0x{address:x}: response {raw.hex()}"
            return raw[0], int.from_bytes(raw[1:], "little")

        async def write(self, address: int, value: int, timeout_bits: int = 200) -> int:
            await self.send(encode_request("write", address, value))
            raw = await self.recv(1, timeout_bits)
            assert len(raw) == 1, f"write 0x{address:x}: no response"
            return raw[0]

    def check_read(model, address, status, data, seed):
        want_data, want_resp = model.read(address)
        assert (status, data if status == OKAY else 0) == (want_resp, want_data if want_resp == OKAY else 0), \
            f"read 0x{address:x}: got ({status}, {data:#x}), model ({want_resp}, {want_data:#x}); seed {seed}"

    @cocotb.test()
    async def random_vs_model(dut):
        """Random reads and writes over the map, its holes and beyond; every status and datum as the model says.
        The host's bit time is skewed by up to ±2.5 %."""
        tb = TB(dut)
        await tb.reset()
        model = RegisterBankModel(id_regmap())
        regs = [r.address + 4 * w for r in model.regmap.registers for w in range(r.words)]
        for i in range(150):
            tb.skew = tb.rng.choice([0.0, 0.025, -0.025])
            kind = tb.rng.random()
            address = (tb.rng.choice(regs) if kind < 0.7 else
                       tb.rng.randrange(0, 1 << BANK_ADDR_WIDTH, 4) if kind < 0.9 else
                       tb.rng.randrange(1 << BANK_ADDR_WIDTH, 1 << 32, 4))
            if tb.rng.random() < 0.5:
                value = tb.rng.getrandbits(32)
                status = await tb.write(address, value)
                want = model.write(address, value) if address < 1 << BANK_ADDR_WIDTH else DECERR
                assert status == want, f"write 0x{address:x}: {status} != model {want}; seed {param('seed')}"
            else:
                status, data = await tb.read(address)
                if address >= 1 << BANK_ADDR_WIDTH:
                    assert (status, data) == (DECERR, 0)
                else:
                    check_read(model, address, status, data, param("seed"))
        assert model.state["id.scratch"] == model.value("id.scratch")

    @cocotb.test()
    async def error_responses(dut):
        tb = TB(dut)
        await tb.reset()
        rm = id_regmap()
        scratch, magic = rm["id.scratch"].address, rm["id.magic"].address
        assert await tb.write(scratch, 0xDEADBEEF) == OKAY
        assert await tb.read(scratch) == (OKAY, 0xDEADBEEF)
        assert await tb.write(magic, 1) == SLVERR                       # read-only register
        assert (await tb.read(0x80))[0] == DECERR                       # a hole in the bank's space
        assert await tb.write(0x80, 1) == DECERR
        assert await tb.read(0x1_0000_0000 - 4) == (DECERR, 0)          # beyond addr_width: the bridge says so
        assert await tb.write(1 << BANK_ADDR_WIDTH, 5) == DECERR
        assert await tb.read(scratch) == (OKAY, 0xDEADBEEF)             # ... and it did not alias onto 0

    @cocotb.test()
    async def garbage_and_framing(dut):
        """Unknown op bytes get one STATUS_BAD_OP each; a framing error (also a long break) gets exactly one
        STATUS_FRAMING and drops the partial request; the next request works."""
        tb = TB(dut)
        await tb.reset()
        scratch = id_regmap()["id.scratch"].address
        garbage = bytes(b for b in (tb.rng.getrandbits(8) for _ in range(12)) if b not in (OP_READ, OP_WRITE))
        await tb.send(garbage)
        assert await tb.recv(len(garbage)) == bytes([STATUS_BAD_OP]) * len(garbage)
        await tb.quiet()
        assert await tb.write(scratch, 0x1234) == OKAY
        # A framing error in the middle of a write: one response, the write does not happen.
        await tb.send(encode_request("write", scratch, 0x5678)[:3])
        await tb.send(b"\x00", stop_bit=0)
        assert await tb.recv(1) == bytes([STATUS_FRAMING])
        await tb.quiet()
        assert await tb.read(scratch) == (OKAY, 0x1234)
        # A break (line low for 30 bit times) is one framing error.
        dut.rx.value = 0
        await Timer(30 * BIT_NS, unit="ns")
        dut.rx.value = 1
        await Timer(2 * BIT_NS, unit="ns")
        assert await tb.recv(1) == bytes([STATUS_FRAMING])
        await tb.quiet()
        # A glitch shorter than half a bit is no start bit.
        dut.rx.value = 0
        await Timer(3 * CLK_NS, unit="ns")
        dut.rx.value = 1
        await tb.quiet(20)
        assert await tb.read(scratch) == (OKAY, 0x1234)

    @cocotb.test()
    async def incomplete_request(dut):
        """A request that stops arriving is dropped after the request timeout with one STATUS_INCOMPLETE."""
        tb = TB(dut)
        await tb.reset()
        scratch = id_regmap()["id.scratch"].address
        for cut in (1, 5, 8):
            await tb.send(encode_request("write", scratch, 0xAAAA_0000 + cut)[:cut])
            assert await tb.recv(1, timeout_bits=60) == bytes([STATUS_INCOMPLETE])
            await tb.quiet(50)
        assert await tb.read(scratch) == (OKAY, 0)
        # A pause shorter than the timeout is fine.
        request = encode_request("write", scratch, 0x77)
        await tb.send(request[:4])
        await Timer(20 * BIT_NS, unit="ns")
        await tb.send(request[4:])
        assert await tb.recv(1) == bytes([OKAY])
        assert await tb.read(scratch) == (OKAY, 0x77)

    @cocotb.test()
    async def stalled_target_and_overrun(dut):
        """A target that never answers: STATUS_AXI_TIMEOUT (+ 4 data bytes for a read). Behind a slow one, bytes
        wait in the RX FIFO; beyond its depth they are lost and reported once as STATUS_OVERRUN."""
        tb = TB(dut)
        await tb.reset()
        scratch = id_regmap()["id.scratch"].address
        dut.stall.value = 1
        stalled = BANK_AXI_TIMEOUT_CYCLES // DIV + 100      # bit times
        assert await tb.write(scratch, 1, stalled) == STATUS_AXI_TIMEOUT
        assert await tb.read(scratch, stalled) == (STATUS_AXI_TIMEOUT, 0)
        # A slow target: requests queued behind a stalled read wait in the RX FIFO and are answered in order.
        reads = RX_FIFO_BYTES // 5
        await tb.send(encode_request("read", scratch) * (reads + 1))
        dut.stall.value = 0
        got = await tb.recv(5 * (reads + 1), timeout_bits=600)
        assert got == bytes([OKAY, 0, 0, 0, 0]) * (reads + 1), got.hex()
        await tb.quiet()
        # Overflow: 40 bytes behind a stalled read; RX_FIFO_BYTES of them fit (one BAD_OP each), the rest is lost
        # and reported once.
        dut.stall.value = 1
        await tb.send(encode_request("read", scratch) + bytes([STATUS_BAD_OP]) * 40)
        dut.stall.value = 0
        got = await tb.recv(5 + RX_FIFO_BYTES + 1, timeout_bits=600)
        assert got == bytes([OKAY, 0, 0, 0, 0]) + bytes([STATUS_BAD_OP]) * RX_FIFO_BYTES + bytes([STATUS_OVERRUN]), \
            got.hex()
        await tb.quiet()
        assert await tb.read(scratch) == (OKAY, 0)

    @cocotb.test()
    async def pipelined_requests(dut):
        """Back-to-back requests with no gap (as UartTransport's block accesses send them) are answered in order."""
        tb = TB(dut)
        await tb.reset()
        model = RegisterBankModel(id_regmap())
        scratch = id_regmap()["id.scratch"].address
        for _ in range(10):
            batch, expect = b"", b""
            while len(batch) < RX_FIFO_BYTES - 9:
                if tb.rng.random() < 0.5:
                    value = tb.rng.getrandbits(32)
                    batch += encode_request("write", scratch, value)
                    expect += bytes([model.write(scratch, value)])
                else:
                    address = tb.rng.choice([scratch, 0, 4, 0x1C])
                    data, resp = model.read(address)
                    batch += encode_request("read", address)
                    expect += bytes([resp]) + (data if resp == OKAY else 0).to_bytes(4, "little")
            await tb.send(batch)
            got = await tb.recv(len(expect))
            assert got == expect, f"{got.hex()} != {expect.hex()}"


# -- pyverilator: UartTransport and Offload on the whole core ---------------------------------------------------------

class VerilatedSerialPort:
    """A serial port whose far end is a Verilated design's ``rx``/``tx`` pins: what pyserial's ``Serial`` is to
    :class:`~wirespeed.host.transports.uart.UartTransport`.

    ``write`` shifts each byte onto ``rx`` at ``divisor`` clocks per bit (8N1, no gaps) and returns when its last stop
    bit is over; ``read(n)`` runs the clock until ``n`` bytes have come out of ``tx`` or ``timeout_bits`` bit times
    pass. ``tx`` is decoded on every cycle, also while writing, so pipelined responses are never missed.
    """

    def __init__(self, dut, divisor: int, timeout_bits: int = 150):
        self.dut, self.divisor = dut, divisor
        self.timeout_cycles = timeout_bits * divisor
        self.cycles = 0
        self.bytes_written = 0
        self._buffer = bytearray()
        self._countdown = None      # cycles to the next sample of tx, while decoding a character
        self._bit = 0
        self._byte = 0
        dut["rx"] = 1
        dut["clk"] = 0
        dut["rst"] = 1
        dut.eval()
        self._run(2)
        dut["rst"] = 0
        dut.eval()

    def _run(self, cycles: int, until: int | None = None) -> None:
        dut, half = self.dut, self.divisor // 2
        for _ in range(cycles):
            dut["clk"] = 1
            dut.eval()
            dut["clk"] = 0
            dut.eval()
            self.cycles += 1
            tx = dut["tx"]
            if self._countdown is None:
                if not tx:
                    self._countdown, self._bit, self._byte = half, -1, 0
                continue
            self._countdown -= 1
            if self._countdown:
                continue
            self._countdown = self.divisor
            if self._bit == -1:
                if tx:                  # not a start bit after all
                    self._countdown = None
                    continue
            elif self._bit < 8:
                self._byte |= tx << self._bit
            else:
                assert tx, "tx: framing error"
                self._buffer.append(self._byte)
                self._countdown = None
                if until is not None and len(self._buffer) >= until:
                    return
                continue
            self._bit += 1

    def write(self, data: bytes) -> int:
        for byte in data:
            for level in (0, *((byte >> i) & 1 for i in range(8)), 1):
                self.dut["rx"] = level
                self._run(self.divisor)
        self.bytes_written += len(data)
        return len(data)

    def read(self, n: int) -> bytes:
        start = self.cycles
        while len(self._buffer) < n and self.cycles - start < self.timeout_cycles:
            self._run(min(self.divisor, self.timeout_cycles - (self.cycles - start)), until=n)
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def reset_input_buffer(self) -> None:
        self._buffer.clear()

    def close(self) -> None:
        self.dut.close()


@pytest.fixture(scope="module")
def uart_core():
    """An Offload on the Verilated core through the bridge, and the model beside it."""
    import wirespeed
    from wirespeed.host.driver.offload import Offload
    from wirespeed.host.transports.uart import UartTransport
    from wirespeed.sim.pyverilator_shim import VerilatedModel
    from wirespeed.sim.runner import to_verilog, waves_enabled

    top = "uart_bridge_core"
    dut = VerilatedModel(to_verilog(BridgeCoreHarness(), top), top, waves=waves_enabled())
    port = VerilatedSerialPort(dut, clocks_per_bit(CORE_CLK_HZ, CORE_BAUD))
    with Offload(UartTransport(port, owns_port=True, name="sim"), "uart:sim", clock="manual") as dev, \
            wirespeed.open("model", params=uart_core_params(), submit="mmio", clock="manual") as model:
        yield dev, model, port


@pytest.mark.rtl
def test_info_over_uart_equals_model(uart_core):
    dev, model, port = uart_core
    c0 = port.cycles
    assert dev.info() == model.info()
    assert dev.info().width_bytes == 4 == BOARDS["ecpix5"].width
    # 8 reads of 10 characters each, at 8 clocks per bit: the RTL really was clocked through the UART.
    assert port.cycles - c0 >= 8 * 100 * port.divisor


@pytest.mark.rtl
def test_registers_blocks_and_bus_errors_over_uart(uart_core):
    from wirespeed.host.errors import BusError, TransportError
    dev, model, port = uart_core
    rng = random.Random(SEED)
    t = dev.transport
    regmap = dev.core.regmap
    for _ in range(5):
        value = rng.getrandbits(32)
        dev.write_register("id.scratch", value)
        assert dev.read_register("id.scratch") == value, f"seed {SEED}"
    # Pipelined block reads (several requests per write) equal the model's single reads.
    base = regmap["id.magic"].address
    stable = [a for a in range(base, base + 0x20, 4)]
    assert t.read_block(base, len(stable)) == [model.transport.read32(a) for a in stable]
    values = [rng.getrandbits(32) for _ in range(2)]
    t.write_block(regmap["id.scratch"].address, values[:1])
    assert t.read32(regmap["id.scratch"].address) == values[0]
    errors0 = dev.read_register("id.bus_errors")
    hole = next(a for a in range(0, regmap.size, 4) if regmap.decode(a) is None)
    with pytest.raises(BusError) as e:
        t.read32(hole)
    assert e.value.resp == "DECERR"
    with pytest.raises(BusError) as e:
        t.write32(regmap["id.magic"].address, 0)
    assert e.value.resp == "SLVERR"
    with pytest.raises(BusError) as e:
        t.read32(1 << 20)       # beyond the bridge's 15 address bits: DECERR from the bridge, no access
    assert dev.read_register("id.bus_errors") - errors0 == 2
    with pytest.raises(TransportError):
        t.read32(2)
    assert dev.read_register("id.magic") == model.read_register("id.magic")


@pytest.mark.rtl
def test_tenants_pools_and_classify_over_uart_equal_model(uart_core):
    dev, model, port = uart_core
    # Over the UART an access takes hundreds of core cycles, not the model's 5: stop the limiter's clock on both and
    # align them, so everything time-dependent (last_ns, refills) agrees.
    for d in (dev, model):
        d.clock.ns_per_cycle = 0
    model.clock.step(dev.clock.now() - model.clock.now())
    assert dev.clock.now() == model.clock.now()

    def session(d):
        out = []
        d.set_hash_key(bytes(range(40)))
        out.append(d.pools.set(0, [10, 11, 12], size=13).as_dict())
        d.routes.default(0, key="tenant")
        out.append(d.tenants.add("sk-uart-bridge", requests_per_s=10, burst=5, tokens_per_s=1000,
                                 token_burst=5000))
        out.append(d.tenants.get("sk-uart-bridge").as_dict())
        out.append(d.pools.get(0).as_dict())
        out.append(d.classify(b"POST /v1/chat/completions HTTP/1.1\r\nHost: api\r\n"
                              b"Authorization: Bearer sk-uart-bridge\r\nContent-Length: 2\r\n\r\n{}"))
        return out

    ours, theirs = session(dev), session(model)
    assert ours == theirs
    assert ours[-1].action == "forward" and ours[-1].backend is not None

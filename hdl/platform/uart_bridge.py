"""UART-to-AXI4-Lite bridge: the host's way in on a board with no CPU, only a USB-UART.

host (``UartTransport``) ─▶ USB-UART ─▶ ``rx`` ─▶ :class:`UartRx` ─▶ RX FIFO ─▶ request parser ─▶ ``axil`` (manager)
                                                                                                      │
host ◀─ USB-UART ◀─ ``tx`` ◀─ :class:`UartTx` ◀─ response bytes ◀─────────────────────── B / R ◀───┘

Protocol (8N1, ``baud``; multi-byte fields little-endian; ``docs/uart-bridge.md``)::

    read  request   0x52 'R', address (4 bytes)               response  status, data (4 bytes)
    write request   0x57 'W', address (4 bytes), data (4)      response  status

Status: the AXI response (0 OKAY, 1 EXOKAY, 2 SLVERR, 3 DECERR) or :data:`STATUS_AXI_TIMEOUT`, each followed by the
read data for a read (zero unless OKAY); or one of the single-byte line errors (:data:`STATUS_BAD_OP`,
:data:`STATUS_FRAMING`, :data:`STATUS_INCOMPLETE`, :data:`STATUS_OVERRUN`), after which the parser is back at the start
of a request. Every request, complete or not, gets exactly one response; an unknown op byte gets one each.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..bus.axil import AXI4LiteSignature

__all__ = ["UartAxiLiteBridge", "UartRx", "UartTx", "RxByte", "DEFAULT_BAUD", "OP_READ", "OP_WRITE",
           "STATUS_OKAY", "STATUS_AXI_TIMEOUT", "STATUS_BAD_OP", "STATUS_FRAMING", "STATUS_INCOMPLETE",
           "STATUS_OVERRUN", "LINE_ERRORS", "RX_FIFO_BYTES", "MIN_CLOCKS_PER_BIT", "MAX_BAUD_ERROR",
           "DEFAULT_REQUEST_TIMEOUT_US", "DEFAULT_AXI_TIMEOUT_CYCLES", "clocks_per_bit"]

#: Works on every USB-UART (FTDI, CP210x, CH340, PL2303); 1 Mbaud is fine on FTDI FT2232H (ECPIX-5) and CP2102N.
DEFAULT_BAUD = 115_200

OP_READ, OP_WRITE = 0x52, 0x57                  # 'R', 'W'
STATUS_OKAY = 0x00                              # 0x00..0x03: AXI OKAY / EXOKAY / SLVERR / DECERR
STATUS_AXI_TIMEOUT = 0x04                       # the target did not answer within axi_timeout_cycles
STATUS_BAD_OP = 0x10                            # unknown op byte, dropped
STATUS_FRAMING = 0x11                           # stop bit low (or a break); the partial request is dropped
STATUS_INCOMPLETE = 0x12                        # the line went idle mid-request; the partial request is dropped
STATUS_OVERRUN = 0x13                           # the RX FIFO overflowed; bytes were lost, the partial request dropped
#: Single-byte responses: the parser has discarded whatever it had and expects an op byte next.
LINE_ERRORS = (STATUS_BAD_OP, STATUS_FRAMING, STATUS_INCOMPLETE, STATUS_OVERRUN)

#: Received bytes wait here while a transaction or a response is under way, so a host may pipeline requests as long
#: as it never has more than this many request bytes unanswered.
RX_FIFO_BYTES = 32
#: The receiver checks the start bit at its midpoint and samples each bit there; it needs a few clocks per bit.
MIN_CLOCKS_PER_BIT = 8
#: Largest tolerated difference between ``baud`` and the rate the integer divider gives.
MAX_BAUD_ERROR = 0.02
DEFAULT_REQUEST_TIMEOUT_US = 10_000             # longer than a USB frame gap inside one request
DEFAULT_AXI_TIMEOUT_CYCLES = 1024

_SIZES = {OP_READ: 4, OP_WRITE: 8}              # bytes after the op


def clocks_per_bit(clk_hz: int, baud: int) -> int:
    """The bit period in clock cycles: ``clk_hz / baud`` rounded to the nearest integer."""
    return (clk_hz + baud // 2) // baud


#: What the receiver hands on per character.
RxByte = data.StructLayout({"data": 8, "framing_error": 1})
#: An RX FIFO entry: a character, or a line error (``error`` set, ``byte`` its status code).
_RX_ENTRY = data.StructLayout({"byte": 8, "error": 1})


class UartRx(wiring.Component):
    """8N1 receiver.

    ``rx`` passes a 2-flop synchronizer. A falling edge starts a character; the start bit must still be low half a
    bit later (else it was a glitch and is ignored); then 8 data bits (LSB first) and the stop bit are sampled at
    their midpoints. A low stop bit is a framing error, after which the receiver waits for the line to go high
    again, so a break gives one error, not a stream of them.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (≥ :data:`MIN_CLOCKS_PER_BIT`).

    Attributes
    ----------
    rx : In(1)
        The line, idle high, asynchronous to the clock.
    o_stream : Out(stream.Signature(RxByte, always_ready=True))
        One cycle of ``valid`` per character, at the stop bit's midpoint (2 cycles of synchronizer later).
    """

    def __init__(self, divisor: int):
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "o_stream": Out(stream.Signature(RxByte, always_ready=True))})

    def elaborate(self, platform):
        m = Module()
        div = self.divisor
        sync1, line = Signal(init=1), Signal(init=1)
        m.d.sync += [sync1.eq(self.rx), line.eq(sync1)]

        timer = Signal(range(div))
        bits = Signal(range(9))
        shreg = Signal(8)
        m.d.sync += self.o_stream.valid.eq(0)
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    with m.If(line):
                        m.next = "IDLE"         # a glitch, not a start bit
                    with m.Else():
                        m.d.sync += [timer.eq(div - 1), bits.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], line)), timer.eq(div - 1), bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer == 0):
                    m.d.sync += [self.o_stream.valid.eq(1), self.o_stream.payload.data.eq(shreg),
                                 self.o_stream.payload.framing_error.eq(~line)]
                    # Back to IDLE at mid-stop-bit, so the next start edge is caught wherever it falls.
                    m.next = "IDLE"
                    with m.If(~line):
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """8N1 transmitter.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit.

    Attributes
    ----------
    i_stream : In(stream.Signature(8))
        A byte is taken when the line is idle; it takes ``10 * divisor`` cycles on the line.
    tx : Out(1)
        The line, idle high, driven from a flop.
    """

    def __init__(self, divisor: int):
        self.divisor = divisor
        super().__init__({"i_stream": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        div = self.divisor
        timer = Signal(range(div))
        shreg = Signal(10, init=0x3FF)      # stop, data[7:0], start: shifted out LSB first
        left = Signal(range(11))
        m.d.comb += [self.i_stream.ready.eq(left == 0), self.tx.eq(shreg[0])]
        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.sync += [shreg.eq(Cat(Const(0, 1), self.i_stream.payload, Const(1, 1))), left.eq(10),
                         timer.eq(div - 1)]
        with m.Elif(left != 0):
            with m.If(timer == 0):
                m.d.sync += [shreg.eq(Cat(shreg[1:], Const(1, 1))), left.eq(left - 1), timer.eq(div - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


class UartAxiLiteBridge(wiring.Component):
    """A UART that executes register reads and writes as an AXI4-Lite manager (protocol in the module docstring).

    Parameters
    ----------
    clk_hz : int
        Frequency of the ``sync`` domain.
    baud : int
        Line rate; ``clk_hz / baud`` must be ≥ :data:`MIN_CLOCKS_PER_BIT` and the integer divider must land within
        :data:`MAX_BAUD_ERROR` of it.
    addr_width : int
        Width of ``axil.awaddr``/``araddr`` (3..32), e.g. ``core.addr_width``. A request whose address has bits set
        above it is answered DECERR without a bus transaction (no aliasing).
    request_timeout_us : int
        A request that stops arriving for this long is dropped with :data:`STATUS_INCOMPLETE`, so a lost byte never
        wedges the parser (at least two characters' time).
    axi_timeout_cycles : int
        A transaction the target has not completed within this many cycles is abandoned with
        :data:`STATUS_AXI_TIMEOUT` (an unconnected or hung target); its valid signals drop without a handshake.

    Attributes
    ----------
    rx : In(1)
        From the USB-UART's TXD. Idle high; asynchronous (synchronized inside).
    tx : Out(1)
        To the USB-UART's RXD. Idle high.
    axil : Out(AXI4LiteSignature(addr_width))
        The manager port: ``wiring.connect(m, bridge.axil, core.s_axil)``. One transaction at a time; a write drives
        AW and W together with ``wstrb = 0xF``; ``bready``/``rready`` are high while it waits.
    """

    def __init__(self, clk_hz: int, baud: int = DEFAULT_BAUD, addr_width: int = 32, *,
                 request_timeout_us: int = DEFAULT_REQUEST_TIMEOUT_US,
                 axi_timeout_cycles: int = DEFAULT_AXI_TIMEOUT_CYCLES):
        self.clk_hz, self.baud, self.addr_width = clk_hz, baud, addr_width
        self.request_timeout_us, self.axi_timeout_cycles = request_timeout_us, axi_timeout_cycles
        # Checked here, before the signature is built from them, and so before any elaboration.
        self.divisor, self.request_timeout_cycles = self._check()
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "axil": Out(AXI4LiteSignature(addr_width))})

    def _check(self) -> tuple[int, int]:
        def need_int(name, value, lo, hi=None):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
                rng = f"{lo}..{hi}" if hi is not None else f"≥ {lo}"
                raise ValueError(f"UartAxiLiteBridge: {name}={value!r} is out of range: must be an integer {rng}")
        need_int("clk_hz", self.clk_hz, 1)
        need_int("baud", self.baud, 1)
        need_int("addr_width", self.addr_width, 3, 32)
        need_int("axi_timeout_cycles", self.axi_timeout_cycles, 1)
        ratio = self.clk_hz / self.baud
        if ratio < MIN_CLOCKS_PER_BIT:
            raise ValueError(f"UartAxiLiteBridge: clk_hz/baud = {self.clk_hz}/{self.baud} = {ratio:.2f} is out of "
                             f"range: the receiver needs ≥ {MIN_CLOCKS_PER_BIT} clocks per bit")
        div = clocks_per_bit(self.clk_hz, self.baud)
        error = abs(self.clk_hz / div / self.baud - 1)
        if error > MAX_BAUD_ERROR:
            raise ValueError(f"UartAxiLiteBridge: baud={self.baud} at clk_hz={self.clk_hz} is {error:.1%} off with a "
                             f"divider of {div}; must be within {MAX_BAUD_ERROR:.0%}")
        need_int("request_timeout_us", self.request_timeout_us, 1)
        idle_cycles = self.clk_hz * self.request_timeout_us // 1_000_000
        if idle_cycles < 20 * div:
            raise ValueError(f"UartAxiLiteBridge: request_timeout_us={self.request_timeout_us} is out of range: must "
                             f"be ≥ two characters ({20 * div * 1_000_000 / self.clk_hz:.1f} us at baud={self.baud})")
        return div, idle_cycles

    def elaborate(self, platform):
        div, idle_cycles = self.divisor, self.request_timeout_cycles
        m = Module()
        axil = self.axil
        m.submodules.rx = rx = UartRx(div)
        m.submodules.tx = tx = UartTx(div)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]

        # -- RX FIFO: characters and line errors (:data:`_RX_ENTRY`), in arrival order ---------------------------
        m.submodules.rx_fifo = rx_fifo = fifo.SyncFIFOBuffered(width=_RX_ENTRY.size, depth=RX_FIFO_BYTES)
        rx_w, rx_r = rx_fifo.w_stream, rx_fifo.r_stream
        w_entry = data.View(_RX_ENTRY, rx_w.payload)
        overrun = Signal()
        rxp = rx.o_stream.payload
        with m.If(overrun & rx_w.ready):
            # A character arriving in this very cycle belongs to the same overrun.
            m.d.comb += [rx_w.valid.eq(1), w_entry.byte.eq(STATUS_OVERRUN), w_entry.error.eq(1)]
            m.d.sync += overrun.eq(0)
        with m.Elif(rx.o_stream.valid):
            with m.If(rx_w.ready):
                m.d.comb += [rx_w.valid.eq(1), w_entry.byte.eq(Mux(rxp.framing_error, STATUS_FRAMING, rxp.data)),
                             w_entry.error.eq(rxp.framing_error)]
            with m.Else():
                m.d.sync += overrun.eq(1)
        entry = data.View(_RX_ENTRY, rx_r.payload)
        byte, is_error = entry.byte, entry.error

        # -- request parser and AXI4-Lite manager -----------------------------------------------------------------
        is_write = Signal()
        count = Signal(range(9))                # request bytes still to come after the op
        shreg = Signal(64)                      # address (low word) and data (high word), shifted in from the top
        address, wdata = shreg[:32], shreg[32:]
        resp = Signal(40)                       # status, then read data; shifted out LSB first
        resp_len = Signal(range(6))
        idle = Signal(range(max(idle_cycles, div) + 1))
        axi_timer = Signal(range(self.axi_timeout_cycles + 1))

        m.d.comb += [axil.awaddr.eq(address), axil.araddr.eq(address), axil.wdata.eq(wdata), axil.wstrb.eq(0xF),
                     axil.awprot.eq(0), axil.arprot.eq(0)]

        # Reads' data goes out only with an AXI status; line errors are one byte.
        def respond(status, with_data=0, rdata=Const(0, 32)):
            status = Const(status, 8) if isinstance(status, int) else status.as_unsigned()
            return [resp.eq(Cat(status, Const(0, 8 - len(status)), rdata)),
                    resp_len.eq(1 + 4 * with_data)]

        in_range = Signal()
        if self.addr_width == 32:
            m.d.comb += in_range.eq(1)
        else:
            m.d.comb += in_range.eq(address[self.addr_width:] == 0)

        with m.FSM():
            with m.State("OP"):
                m.d.comb += rx_r.ready.eq(1)
                with m.If(rx_r.valid):
                    with m.If(is_error):
                        m.d.sync += respond(byte)
                        m.next = "RESPOND"
                    with m.Elif((byte == OP_READ) | (byte == OP_WRITE)):
                        m.d.sync += [is_write.eq(byte == OP_WRITE), idle.eq(0),
                                     count.eq(Mux(byte == OP_WRITE, _SIZES[OP_WRITE], _SIZES[OP_READ]))]
                        m.next = "ARGS"
                    with m.Else():
                        m.d.sync += respond(STATUS_BAD_OP)
                        m.next = "RESPOND"
            with m.State("ARGS"):
                m.d.comb += rx_r.ready.eq(1)
                with m.If(rx_r.valid):
                    m.d.sync += idle.eq(0)
                    with m.If(is_error):
                        m.d.sync += respond(byte)
                        m.next = "RESPOND"
                    with m.Else():
                        # A read's 4 bytes land in the high word; move them down when it is complete.
                        m.d.sync += [shreg.eq(Cat(shreg[8:], byte)), count.eq(count - 1)]
                        with m.If(count == 1):
                            m.next = "DECODE"
                with m.Elif(idle == idle_cycles - 1):
                    m.d.sync += respond(STATUS_INCOMPLETE)
                    m.next = "RESPOND"
                with m.Else():
                    m.d.sync += idle.eq(idle + 1)
            with m.State("DECODE"):
                with m.If(~is_write):
                    m.d.sync += address.eq(wdata)
                m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += axi_timer.eq(0)
                with m.If(~in_range):
                    m.d.sync += respond(0b11, ~is_write)
                    m.next = "RESPOND"
                with m.Elif(is_write):
                    m.d.sync += [axil.awvalid.eq(1), axil.wvalid.eq(1)]
                    m.next = "WRITE"
                with m.Else():
                    m.d.sync += axil.arvalid.eq(1)
                    m.next = "READ"
            with m.State("WRITE"):
                m.d.comb += axil.bready.eq(1)
                m.d.sync += axi_timer.eq(axi_timer + 1)
                with m.If(axil.awready):
                    m.d.sync += axil.awvalid.eq(0)
                with m.If(axil.wready):
                    m.d.sync += axil.wvalid.eq(0)
                with m.If(axil.bvalid):
                    m.d.sync += respond(axil.bresp)
                    m.next = "RESPOND"
                with m.Elif(axi_timer == self.axi_timeout_cycles - 1):
                    m.d.sync += [respond(STATUS_AXI_TIMEOUT), axil.awvalid.eq(0), axil.wvalid.eq(0)]
                    m.next = "RESPOND"
            with m.State("READ"):
                m.d.comb += axil.rready.eq(1)
                m.d.sync += axi_timer.eq(axi_timer + 1)
                with m.If(axil.arready):
                    m.d.sync += axil.arvalid.eq(0)
                with m.If(axil.rvalid):
                    m.d.sync += respond(axil.rresp, 1, axil.rdata)
                    m.next = "RESPOND"
                with m.Elif(axi_timer == self.axi_timeout_cycles - 1):
                    m.d.sync += [respond(STATUS_AXI_TIMEOUT, 1), axil.arvalid.eq(0)]
                    m.next = "RESPOND"
            with m.State("RESPOND"):
                m.d.comb += [tx.i_stream.valid.eq(1), tx.i_stream.payload.eq(resp[:8])]
                with m.If(tx.i_stream.ready):
                    m.d.sync += [resp.eq(resp >> 8), resp_len.eq(resp_len - 1)]
                    with m.If(resp_len == 1):
                        m.next = "OP"
        return m


"""AXI4-Lite target: the host's way in. It turns AXI4-Lite transactions into :class:`~.regbank.RegisterBus` accesses.

host (AXI4-Lite manager) ─▶ :class:`AXI4LiteTarget` ─▶ ``RegisterBus`` ─▶ :class:`~.regbank.RegisterBank`

- AW and W are buffered independently, so either may arrive first, or both in one cycle.
- Reads and writes are arbitrated round-robin when both are pending, so neither starves.
- Byte strobes pass through to the bank; responses (OKAY/SLVERR/DECERR) come from the bank.
- Each channel has a one-entry buffer: a new address is accepted while the previous response waits on B or R.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .regbank import RegisterBus

__all__ = ["AXI4LiteSignature", "AXI4LiteTarget"]


class AXI4LiteSignature(wiring.Signature):
    """AXI4-Lite with a 32-bit data bus, from the manager's point of view (members named as in the AXI spec, in
    lower case, without the ``s_axi_`` prefix)."""

    def __init__(self, addr_width: int):
        self.addr_width = addr_width
        super().__init__({
            "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })


class AXI4LiteTarget(wiring.Component):
    """AXI4-Lite target bridging to a :class:`RegisterBus`.

    Parameters
    ----------
    addr_width : int
        Address bits on both sides.

    Attributes
    ----------
    axil : In(AXI4LiteSignature)
        The AXI4-Lite target port. A write completes 3 cycles after its last of AW/W is accepted (B valid), a read 3
        cycles after AR (R valid), when the bank is idle.
    bus : Out(RegisterBus)
        Towards the register bank.
    error : Out(1)
        High for one cycle per transaction answered SLVERR or DECERR (feeds a bus-error counter).
    """

    def __init__(self, addr_width: int):
        super().__init__({
            "axil": In(AXI4LiteSignature(addr_width)),
            "bus": Out(RegisterBus(addr_width)),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        axil, bus = self.axil, self.bus

        aw_full, aw_addr = Signal(), Signal.like(axil.awaddr)
        w_full, w_data, w_strb = Signal(), Signal.like(axil.wdata), Signal.like(axil.wstrb)
        ar_full, ar_addr = Signal(), Signal.like(axil.araddr)
        b_valid, b_resp = Signal(), Signal(2)
        r_valid, r_data, r_resp = Signal(), Signal(32), Signal(2)

        m.d.comb += [
            axil.awready.eq(~aw_full), axil.wready.eq(~w_full), axil.arready.eq(~ar_full),
            axil.bvalid.eq(b_valid), axil.bresp.eq(b_resp),
            axil.rvalid.eq(r_valid), axil.rdata.eq(r_data), axil.rresp.eq(r_resp),
        ]
        with m.If(axil.awvalid & ~aw_full):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(axil.awaddr)]
        with m.If(axil.wvalid & ~w_full):
            m.d.sync += [w_full.eq(1), w_data.eq(axil.wdata), w_strb.eq(axil.wstrb)]
        with m.If(axil.arvalid & ~ar_full):
            m.d.sync += [ar_full.eq(1), ar_addr.eq(axil.araddr)]
        with m.If(b_valid & axil.bready):
            m.d.sync += b_valid.eq(0)
        with m.If(r_valid & axil.rready):
            m.d.sync += r_valid.eq(0)

        # One access in flight on the register bus at a time.
        write_ready = aw_full & w_full & ~b_valid
        read_ready = ar_full & ~r_valid
        in_flight = Signal()        # a request is on the bus, waiting for ack
        is_write = Signal()
        prefer_read = Signal()      # round-robin: who goes first when both are ready
        m.d.comb += [bus.addr.eq(0), bus.w_data.eq(w_data), bus.w_strb.eq(w_strb)]

        with m.If(~in_flight):
            with m.If(read_ready & (prefer_read | ~write_ready)):
                m.d.sync += [in_flight.eq(1), is_write.eq(0), prefer_read.eq(0)]
            with m.Elif(write_ready):
                m.d.sync += [in_flight.eq(1), is_write.eq(1), prefer_read.eq(1)]
        with m.Else():
            m.d.comb += [bus.addr.eq(Mux(is_write, aw_addr, ar_addr)),
                         bus.w_stb.eq(is_write), bus.r_stb.eq(~is_write)]
            with m.If(bus.ack):
                m.d.sync += in_flight.eq(0)
                m.d.comb += self.error.eq(bus.resp[1])
                with m.If(is_write):
                    m.d.sync += [b_valid.eq(1), b_resp.eq(bus.resp), aw_full.eq(0), w_full.eq(0)]
                with m.Else():
                    m.d.sync += [r_valid.eq(1), r_data.eq(bus.r_data), r_resp.eq(bus.resp), ar_full.eq(0)]
        return m


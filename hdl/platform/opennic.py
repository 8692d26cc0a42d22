"""OpenNIC shell user plugin for the 250 MHz box (Alveo U250/U280): the core inline on a CMAC port's receive path.

Port names follow the OpenNIC shell's ``box_250mhz`` and its example plugin ``p2p_250mhz``
(github.com/Xilinx/open-nic-shell: ``src/box_250mhz/box_250mhz.sv``, ``plugin/p2p/p2p_250mhz.sv``), for one
physical function and one CMAC port (``NUM_PHYS_FUNC = NUM_CMAC_PORT = 1``)::

    s_axis_adap_rx_250mhz (512 bit, from the MAC) ─▶ 512→8·W down-converter ─▶ WirespeedCore (inline) ─▶
        8·W→512 up-converter ─▶ m_axis_qdma_c2h (to the host)        tuser_size/src travel in a packet FIFO
    s_axis_qdma_h2c (from the host) ─────────────────────────────────▶ m_axis_adap_tx_250mhz (to the MAC), unchanged
    s_axil_* (axil_aclk, 125 MHz) ─▶ AXI4-Lite clock crossing ─▶ the core's registers (axis_aclk, 250 MHz)

Throughput: the parser takes at most W = 16 bytes a beat, so the receive path carries 16 B × 250 MHz = 32 Gb/s, a
quarter of the 512-bit bus (and of a 100 GbE port). A full-rate port needs four cores fed by a flow-hash
dispatcher; they would not share tenant buckets, so it is not done here (``docs/boards.md``).

What is not done: the verdict is not enforced. Frames reach the host unchanged, the verdict record in the core's
``m_axis`` ``tuser`` has no place in the shell's C2H ``tuser`` and is dropped, and the ``m_verdict`` records are
either dropped (the default: every one is still counted by the core's telemetry) or, with ``verdict_port``, offered
on an extra ``m_axis_verdict_*`` port that the shell does not have (wire it yourself).
"""

from __future__ import annotations

from amaranth import Cat, ClockDomain, ClockSignal, Const, DomainRenamer, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.fifo import AsyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..id.id_block import CoreParams
from ..core.top import WirespeedCore

__all__ = ["OpenNicBox250", "BUS_BYTES", "opennic_params", "opennic_verilog", "PLUGIN_MODULE"]

#: The shell's 250 MHz box streams: 512-bit ``tdata``, 64-bit ``tkeep``.
BUS_BYTES = 64
#: The Verilog module name of the plugin (instantiate it from the box's ``user_plugin_250mhz_inst.vh``).
PLUGIN_MODULE = "wirespeed_250mhz"
_TUSER = ("size", "src", "dst")


def opennic_params(**overrides) -> CoreParams:
    """The core for the 250 MHz box: W = 16 (the parser's widest) at 250 MHz, otherwise the defaults."""
    from ..limiter.layouts import LimiterParams
    clock_hz = overrides.pop("clock_hz", 250_000_000)
    limiter = overrides.pop("limiter", LimiterParams(capacity=overrides.pop("tenants", 4096), clock_hz=clock_hz))
    return CoreParams(**{"width_bytes": 16, "clock_hz": clock_hz, "limiter": limiter, **overrides})


def _stream_ports(prefix: str, direction) -> dict:
    """One shell AXI4-Stream port (``direction`` is that of the data): tdata/tkeep/tlast/tuser_*/tvalid, tready."""
    other = Out if direction is In else In
    ports = {f"{prefix}_tvalid": direction(1), f"{prefix}_tdata": direction(8 * BUS_BYTES),
             f"{prefix}_tkeep": direction(BUS_BYTES), f"{prefix}_tlast": direction(1)}
    ports.update({f"{prefix}_tuser_{name}": direction(16) for name in _TUSER})
    ports[f"{prefix}_tready"] = other(1)
    return ports


class OpenNicBox250(wiring.Component):
    """The wirespeed plugin for the OpenNIC shell's ``box_250mhz``, one CMAC port.

    Parameters
    ----------
    params : CoreParams
        The core (default :func:`opennic_params`: W = 16 at 250 MHz). ``submit`` (the whole pipeline) is required.
    port_index : int
        The CMAC port / physical function this plugin serves (sets ``tuser_dst`` as ``p2p_250mhz`` does: C2H to
        function ``1 << i``, TX to port ``1 << (6 + i)``).
    verdict_port : bool
        Add ``m_axis_verdict_*`` (256-bit records; not a shell port). Without it the records are dropped.

    Attributes
    ----------
    s_axil_* : AXI4-Lite target in ``axil_aclk`` (no ``*prot``/``wstrb``, as the shell's box has none): the core's
        registers at offsets 0.. of the plugin's window; address bits above the core's window are ignored.
    s_axis_adap_rx_250mhz_*, m_axis_qdma_c2h_* : the inline path, through the core (32 Gb/s at W = 16).
    s_axis_qdma_h2c_*, m_axis_adap_tx_250mhz_* : the transmit path, passed through combinationally.
    mod_rstn, mod_rst_done : the shell's reset handshake (``mod_rstn`` active low, in ``axil_aclk``).
    axil_aclk, axis_aclk : 125 MHz control clock, 250 MHz stream clock (the core's).
    """

    def __init__(self, params: CoreParams | None = None, port_index: int = 0, verdict_port: bool = False):
        params = params if params is not None else opennic_params()
        if "submit" not in params.features:
            raise ValueError("OpenNicBox250 needs the whole pipeline (features parser, limiter and router)")
        if not 0 <= port_index <= 1:
            raise ValueError(f"port_index = {port_index}: the shell has CMAC ports 0..1")
        self.params, self.port_index, self.verdict_port = params, port_index, verdict_port
        self.core = WirespeedCore(params)
        ports = {"s_axil_awvalid": In(1), "s_axil_awaddr": In(32), "s_axil_awready": Out(1),
                 "s_axil_wvalid": In(1), "s_axil_wdata": In(32), "s_axil_wready": Out(1),
                 "s_axil_bvalid": Out(1), "s_axil_bresp": Out(2), "s_axil_bready": In(1),
                 "s_axil_arvalid": In(1), "s_axil_araddr": In(32), "s_axil_arready": Out(1),
                 "s_axil_rvalid": Out(1), "s_axil_rdata": Out(32), "s_axil_rresp": Out(2), "s_axil_rready": In(1)}
        ports.update(_stream_ports("s_axis_qdma_h2c", In))
        ports.update(_stream_ports("m_axis_qdma_c2h", Out))
        ports.update(_stream_ports("m_axis_adap_tx_250mhz", Out))
        ports.update(_stream_ports("s_axis_adap_rx_250mhz", In))
        if verdict_port:
            ports.update({"m_axis_verdict_tvalid": Out(1), "m_axis_verdict_tdata": Out(256),
                          "m_axis_verdict_tlast": Out(1), "m_axis_verdict_tready": In(1)})
        ports.update({"mod_rstn": In(1), "mod_rst_done": Out(1), "axil_aclk": In(1), "axis_aclk": In(1)})
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        w = self.params.width_bytes

        # Clocks and resets: both domains from the shell's clocks, reset by mod_rstn (synchronised into each).
        m.domains.axil = ClockDomain("axil", local=True)
        m.domains.axis = ClockDomain("axis", local=True)
        m.d.comb += [ClockSignal("axil").eq(self.axil_aclk), ClockSignal("axis").eq(self.axis_aclk)]
        m.submodules.rst_axil = ResetSynchronizer(~self.mod_rstn, domain="axil")
        m.submodules.rst_axis = ResetSynchronizer(~self.mod_rstn, domain="axis")
        rst_done = Signal()
        m.d.axil += rst_done.eq(1)
        m.d.comb += self.mod_rst_done.eq(rst_done)

        core = self.core
        m.submodules.core = DomainRenamer("axis")(core)
        self._axil_crossing(m, core.s_axil, core.addr_width)

        # Transmit path: host to MAC, unchanged (tuser_dst selects the CMAC port, as in p2p_250mhz).
        for sig in ("tvalid", "tdata", "tkeep", "tlast", "tuser_size", "tuser_src"):
            m.d.comb += getattr(self, f"m_axis_adap_tx_250mhz_{sig}").eq(getattr(self, f"s_axis_qdma_h2c_{sig}"))
        m.d.comb += [self.m_axis_adap_tx_250mhz_tuser_dst.eq(1 << (6 + self.port_index)),
                     self.s_axis_qdma_h2c_tready.eq(self.m_axis_adap_tx_250mhz_tready)]

        # Receive path: MAC to host through the core, in inline mode (pipeline.ctrl.axis_inline, set by the host).
        m.submodules.down = down = DomainRenamer("axis")(_DownConverter(BUS_BYTES, w))
        m.submodules.up = up = DomainRenamer("axis")(_UpConverter(w, BUS_BYTES))
        # tuser_size/src of each packet, from its first beat in to its first beat out (the core keeps packets whole
        # and in order; 32 packets in flight is more than its buffers hold).
        m.submodules.meta = meta = DomainRenamer("axis")(SyncFIFOBuffered(width=32, depth=32))
        rx = "s_axis_adap_rx_250mhz"
        first_in = Signal(init=1)
        in_valid, in_last = getattr(self, f"{rx}_tvalid"), getattr(self, f"{rx}_tlast")
        need_meta = first_in & ~meta.w_rdy
        m.d.comb += [
            down.i_data.eq(getattr(self, f"{rx}_tdata")), down.i_keep.eq(getattr(self, f"{rx}_tkeep")),
            down.i_last.eq(in_last), down.i_valid.eq(in_valid & ~need_meta),
            getattr(self, f"{rx}_tready").eq(down.i_ready & ~need_meta),
            meta.w_data.eq(Cat(getattr(self, f"{rx}_tuser_size"), getattr(self, f"{rx}_tuser_src"))),
            meta.w_en.eq(in_valid & down.i_ready & first_in & meta.w_rdy),
        ]
        with m.If(in_valid & down.i_ready & ~need_meta):
            m.d.axis += first_in.eq(in_last)

        s, o = core.s_axis, core.m_axis
        m.d.comb += [s.tdata.eq(down.o_data), s.tkeep.eq(down.o_keep), s.tlast.eq(down.o_last),
                     s.tvalid.eq(down.o_valid), down.o_ready.eq(s.tready),
                     up.i_data.eq(o.tdata), up.i_keep.eq(o.tkeep), up.i_last.eq(o.tlast), up.i_valid.eq(o.tvalid),
                     o.tready.eq(up.i_ready)]

        c2h = "m_axis_qdma_c2h"
        first_out = Signal(init=1)
        # A packet's first 512-bit beat leaves only with its metadata (always there: it was pushed first).
        out_valid = up.o_valid & (~first_out | meta.r_rdy)
        m.d.comb += [
            getattr(self, f"{c2h}_tvalid").eq(out_valid), getattr(self, f"{c2h}_tdata").eq(up.o_data),
            getattr(self, f"{c2h}_tkeep").eq(up.o_keep), getattr(self, f"{c2h}_tlast").eq(up.o_last),
            getattr(self, f"{c2h}_tuser_size").eq(meta.r_data[:16]),
            getattr(self, f"{c2h}_tuser_src").eq(meta.r_data[16:]),
            getattr(self, f"{c2h}_tuser_dst").eq(1 << self.port_index),
            up.o_ready.eq(getattr(self, f"{c2h}_tready") & (~first_out | meta.r_rdy)),
        ]
        out_fire = out_valid & getattr(self, f"{c2h}_tready")
        with m.If(out_fire):
            m.d.axis += first_out.eq(up.o_last)
        # Pop after the packet's last beat: the shell's QDMA reads tuser_size on every beat of the packet.
        m.d.comb += meta.r_en.eq(out_fire & up.o_last)

        v = core.m_verdict
        if self.verdict_port:
            m.d.comb += [self.m_axis_verdict_tvalid.eq(v.tvalid), self.m_axis_verdict_tdata.eq(v.tdata),
                         self.m_axis_verdict_tlast.eq(v.tlast), v.tready.eq(self.m_axis_verdict_tready)]
        else:
            m.d.comb += v.tready.eq(1)
        return m

    def _axil_crossing(self, m, axil, addr_width):
        """AXI4-Lite from ``axil_aclk`` to the core in ``axis_aclk``: one small async FIFO per channel."""
        def fifo(name, width, w_domain, r_domain):
            f = AsyncFIFO(width=width, depth=4, w_domain=w_domain, r_domain=r_domain)
            m.submodules[f"axil_{name}"] = f
            return f

        aw = fifo("aw", addr_width, "axil", "axis")
        wd = fifo("w", 32, "axil", "axis")
        ar = fifo("ar", addr_width, "axil", "axis")
        b = fifo("b", 2, "axis", "axil")
        r = fifo("r", 34, "axis", "axil")
        m.d.comb += [
            aw.w_data.eq(self.s_axil_awaddr[:addr_width]), aw.w_en.eq(self.s_axil_awvalid),
            self.s_axil_awready.eq(aw.w_rdy),
            axil.awaddr.eq(aw.r_data), axil.awprot.eq(0), axil.awvalid.eq(aw.r_rdy), aw.r_en.eq(axil.awready),
            wd.w_data.eq(self.s_axil_wdata), wd.w_en.eq(self.s_axil_wvalid), self.s_axil_wready.eq(wd.w_rdy),
            axil.wdata.eq(wd.r_data), axil.wstrb.eq(0b1111), axil.wvalid.eq(wd.r_rdy), wd.r_en.eq(axil.wready),
            ar.w_data.eq(self.s_axil_araddr[:addr_width]), ar.w_en.eq(self.s_axil_arvalid),
            self.s_axil_arready.eq(ar.w_rdy),
            axil.araddr.eq(ar.r_data), axil.arprot.eq(0), axil.arvalid.eq(ar.r_rdy), ar.r_en.eq(axil.arready),
            b.w_data.eq(axil.bresp), b.w_en.eq(axil.bvalid), axil.bready.eq(b.w_rdy),
            self.s_axil_bresp.eq(b.r_data), self.s_axil_bvalid.eq(b.r_rdy), b.r_en.eq(self.s_axil_bready),
            r.w_data.eq(Cat(axil.rdata, axil.rresp)), r.w_en.eq(axil.rvalid), axil.rready.eq(r.w_rdy),
            self.s_axil_rdata.eq(r.r_data[:32]), self.s_axil_rresp.eq(r.r_data[32:]),
            self.s_axil_rvalid.eq(r.r_rdy), r.r_en.eq(self.s_axil_rready),
        ]


def _converter_members(i_bytes: int, o_bytes: int) -> dict:
    """The ports of a width converter: an AXI4-Stream of ``i_bytes`` in, one of ``o_bytes`` out."""
    return {"i_data": In(8 * i_bytes), "i_keep": In(i_bytes), "i_last": In(1), "i_valid": In(1), "i_ready": Out(1),
            "o_data": Out(8 * o_bytes), "o_keep": Out(o_bytes), "o_last": Out(1), "o_valid": Out(1),
            "o_ready": In(1)}


class _DownConverter(wiring.Component):
    """A wide AXI4-Stream beat (``wide`` bytes) as ``wide // narrow`` narrow beats, fewer on a packet's last beat.

    A beat's valid bytes are its low ``popcount(tkeep)`` bytes (every beat but the last is full, as the shell
    sends them); one narrow beat leaves per cycle, so the output carries ``narrow`` bytes a cycle.
    """

    def __init__(self, wide: int, narrow: int):
        self.wide, self.narrow = wide, narrow
        super().__init__(_converter_members(wide, narrow))

    def elaborate(self, platform):
        m = Module()
        wide, narrow = self.wide, self.narrow
        ratio = wide // narrow
        full, data, nbytes, last = Signal(), Signal(8 * wide), Signal(range(wide + 1)), Signal()
        k = Signal(range(ratio))
        rem = Signal(range(wide + 1))
        m.d.comb += rem.eq(nbytes - k * narrow)
        final = rem <= narrow
        m.d.comb += [
            self.o_valid.eq(full), self.o_data.eq(data.word_select(k, 8 * narrow)),
            self.o_last.eq(last & final),
            self.o_keep.eq(Mux(final, Cat(*[rem > j for j in range(narrow)]), Const((1 << narrow) - 1, narrow))),
            self.i_ready.eq(~full | (self.o_ready & final)),
        ]
        with m.If(full & self.o_ready):
            m.d.sync += k.eq(Mux(final, 0, k + 1))
            with m.If(final):
                m.d.sync += full.eq(0)
        with m.If(self.i_valid & self.i_ready):
            count = sum(self.i_keep[j] for j in range(wide))
            m.d.sync += [full.eq(1), data.eq(self.i_data), last.eq(self.i_last), k.eq(0),
                         nbytes.eq(Mux(self.i_last, count, wide))]
        return m


class _UpConverter(wiring.Component):
    """Narrow AXI4-Stream beats packed into wide ones: ``wide // narrow`` per beat, or fewer at a packet's end."""

    def __init__(self, narrow: int, wide: int):
        self.wide, self.narrow = wide, narrow
        super().__init__(_converter_members(narrow, wide))

    def elaborate(self, platform):
        m = Module()
        wide, narrow = self.wide, self.narrow
        ratio = wide // narrow
        acc = Signal(8 * wide)
        k = Signal(range(ratio))
        o_valid, o_data, o_keep, o_last = Signal(), Signal(8 * wide), Signal(wide), Signal()
        m.d.comb += [self.o_valid.eq(o_valid), self.o_data.eq(o_data), self.o_keep.eq(o_keep),
                     self.o_last.eq(o_last)]
        take = ~o_valid | self.o_ready
        m.d.comb += self.i_ready.eq(take)
        with m.If(o_valid & self.o_ready):
            m.d.sync += o_valid.eq(0)
        with m.If(self.i_valid & take):
            words = [Mux(k == j, self.i_data, Mux(k > j, acc.word_select(j, 8 * narrow), 0)) for j in range(ratio)]
            keeps = [Mux(k == j, self.i_keep, Mux(k > j, Const((1 << narrow) - 1, narrow), 0)) for j in range(ratio)]
            m.d.sync += acc.word_select(k, 8 * narrow).eq(self.i_data)
            with m.If(self.i_last | (k == ratio - 1)):
                m.d.sync += [o_valid.eq(1), o_data.eq(Cat(*words)), o_keep.eq(Cat(*keeps)),
                             o_last.eq(self.i_last), k.eq(0)]
            with m.Else():
                m.d.sync += k.eq(k + 1)
        return m


def opennic_verilog(params: CoreParams | None = None, **options) -> str:
    """The plugin as Verilog, top module :data:`PLUGIN_MODULE`."""
    from amaranth.back import verilog
    return verilog.convert(OpenNicBox250(params, **options), name=PLUGIN_MODULE, emit_src=False)

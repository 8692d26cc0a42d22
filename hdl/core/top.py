"""The wirespeed core: AXI4-Lite register access and the offload pipeline, at one bus beat per clock.

AXI4-Lite ─▶ ``bus.axil.AXI4LiteTarget`` ─▶ ``bus.regbank.RegisterBank`` (from ``core.rdl``) ─▶ blocks
s_axis ─▶ ``pipeline.offload_pipeline.OffloadPipeline`` ─▶ m_axis (packets, verdict in tuser), m_verdict (records)
"""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..bus.regmap import core_regmap
from ..bus.axil import AXI4LiteSignature, AXI4LiteTarget
from ..id.id_block import CoreParams, IdBlock
from ..bus.axis import AXIStreamSignature
from ..limiter.rate_limiter import RateLimiter, limiter_resets
from ..parser.header_parser import HeaderParser
from ..pipeline.offload_pipeline import OffloadPipeline
from ..router.hash_router import Router
from ..bus.regbank import RegisterBank
from ..pipeline.layouts import VerdictRecord

__all__ = ["WirespeedCore", "core_addr_width", "core_regmap_for"]


def core_addr_width() -> int:
    """AXI4-Lite address bits of the core: enough for its register map, at least a 4 KiB page."""
    return max(12, (core_regmap().size - 1).bit_length())


class WirespeedCore(wiring.Component):
    """Top of the offload core.

    Parameters
    ----------
    params : CoreParams
        Elaboration parameters (bus width, table sizes, clock), reported through the ID block.

    Attributes
    ----------
    s_axil : In(AXI4LiteSignature)
        Host register access (see ``docs/registers.md``).
    s_axis, m_axis, m_verdict :
        With the whole pipeline (feature ``submit``): packets in, packets out with their verdict in ``tuser`` of the
        ``tlast`` beat, and one verdict record per packet
        (:class:`~wirespeed.hdl.pipeline.offload_pipeline.OffloadPipeline`).
    """

    def __init__(self, params: CoreParams = CoreParams()):
        self.params = params
        self.addr_width = core_addr_width()
        ports = {"s_axil": In(AXI4LiteSignature(self.addr_width))}
        if "submit" in params.features:
            w = params.width_bytes
            ports.update({"s_axis": In(AXIStreamSignature(w)),
                          "m_axis": Out(AXIStreamSignature(w, VerdictRecord.as_shape().size)),
                          "m_verdict": Out(AXIStreamSignature(-(-VerdictRecord.as_shape().size // 8), keep=False))})
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        m.submodules.axil = axil = AXI4LiteTarget(self.addr_width)
        m.submodules.regs = regs = RegisterBank(core_regmap_for(self.params), self.addr_width)
        m.submodules.id = ident = IdBlock(self.params)
        wiring.connect(m, wiring.flipped(self.s_axil), axil.axil)
        wiring.connect(m, axil.bus, regs.bus)
        wiring.connect(m, regs.hw.id, ident.regs)
        m.d.comb += ident.bus_error.eq(axil.error)
        if "submit" in self.params.features:
            m.submodules.pipeline = pipe = OffloadPipeline(self.params)
            for name in ("frontend", "parser", "limiter", "router", "telemetry"):
                wiring.connect(m, getattr(regs.hw, name), getattr(pipe, name).regs)
            wiring.connect(m, regs.hw.pipeline, pipe.regs)
            wiring.connect(m, wiring.flipped(self.s_axis), pipe.s_axis)
            wiring.connect(m, pipe.m_axis, wiring.flipped(self.m_axis))
            v = self.m_verdict
            m.d.comb += [v.tdata.eq(pipe.m_verdict.payload), v.tlast.eq(1), v.tvalid.eq(pipe.m_verdict.valid),
                         pipe.m_verdict.ready.eq(v.tready)]
            return m
        # A core with only some of the blocks (bring-up, the large-table builds): each serves host operations only.
        if self.params.limiter is not None:
            m.submodules.limiter = limiter = RateLimiter(self.params.limiter)
            wiring.connect(m, regs.hw.limiter, limiter.regs)
            m.d.comb += [limiter.i_req.valid.eq(0), limiter.o_verdict.ready.eq(1)]
        if "parser" in self.params.features:
            m.submodules.parser = parser = HeaderParser(self.params.width_bytes)
            wiring.connect(m, regs.hw.parser, parser.regs)
            m.d.comb += [parser.i_stream.valid.eq(0), parser.o_stream.ready.eq(1), parser.o_desc.ready.eq(1)]
        if self.params.router is not None:
            m.submodules.router = router = Router(self.params.router)
            wiring.connect(m, regs.hw.router, router.regs)
            m.d.comb += [router.i_req.valid.eq(0), router.o_route.ready.eq(1)]
        return m


def core_regmap_for(params: CoreParams):
    """The core's register map with the reset values these parameters set."""
    regmap = core_regmap()
    if params.limiter is not None:
        regmap = regmap.with_resets(limiter_resets(params.limiter, "limiter."))
    return regmap

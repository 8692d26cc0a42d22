"""The offload pipeline: every packet in, one verdict out, at one beat per cycle.

::

    s_axis (AXI-S) ──┐                      ┌─▶ egress FIFO ─────────────────────────────▶ m_axis (verdict in tuser of tlast)
                     ├─▶ arbiter (packets) ─┤
    MMIO submit ─────┘                      └─▶ L4FrontEnd ─▶ HeaderParser ─▶ join ─┬─▶ RateLimiter ─┐
                                                 └─ info FIFO ───────────────────┘  └─▶ Router ──────┴─▶ verdict
                                                                                                          ├─▶ m_verdict
                                                                                                          ├─▶ result FIFO (MMIO)
                                                                                                          └─▶ Telemetry

The rules that turn a descriptor, the front end's info, the limiter's and the router's answers into a
:class:`~.verdict_layouts.VerdictRecord` are in ``docs/pipeline.md``; :mod:`wirespeed.host.models.pipeline` is the
bit-exact model. Timing (no stall): the verdict is valid :data:`DECISION_LATENCY_CYCLES` cycles after the beat holding
the last byte the parser reads (the stop byte), whatever the packet's source.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..bus.regmap import HDL_DIR, compile_rdl, regmap_from_node
from ..bus.axis import AXIStreamSignature
from ..frontend.l4_frontend import FRONTEND_LATENCY_CYCLES, L4FrontEnd
from ..frontend.layouts import FrontEndInfo
from ..id.id_block import CoreParams
from ..limiter.rate_limiter import LIMIT_LATENCY_CYCLES, LimitRequest, RateLimiter
from ..limiter.layouts import Decision
from ..bus.packet import ByteBeat
from ..parser.header_parser import DESC_LATENCY_CYCLES, HeaderParser
from ..parser.layouts import ERROR_NAMES, Descriptor, ErrorFlag, KeySource
from ..bus.regbank import hw_signature
from ..router.hash_router import ROUTE_LATENCY_CYCLES, Router
from ..router.layouts import RouteRequest, STATUS_UNAVAILABLE
from ..telemetry.counters import Telemetry
from .layouts import FLAG_NAMES, LATENCY_MAX, Action, Reason, VerdictRecord

__all__ = ["OffloadPipeline", "pipeline_regmap", "DECISION_LATENCY_CYCLES", "SUBMIT_START_CYCLES",
           "RESULT_DEPTH", "EGRESS_DEPTH"]

#: Cycles from the beat holding the parser's stop byte (as it enters the pipeline) to the verdict: the front end,
#: the parser, the join register, the limiter and router (in parallel) and the verdict register.
DECISION_LATENCY_CYCLES = FRONTEND_LATENCY_CYCLES + DESC_LATENCY_CYCLES + 1 + max(LIMIT_LATENCY_CYCLES,
                                                                                  ROUTE_LATENCY_CYCLES) + 1
assert DECISION_LATENCY_CYCLES <= 16, "the issue's bound: decision <= 16 cycles after the last header byte"
assert LIMIT_LATENCY_CYCLES == ROUTE_LATENCY_CYCLES, "the join below assumes both answer in the same cycle"
#: Cycles from the doorbell's pulse to the submitted packet's first beat entering the pipeline.
SUBMIT_START_CYCLES = 2
RESULT_DEPTH = 32
#: Beats the egress holds while a packet's last beat waits for its verdict; verdicts waiting for their packet's end.
EGRESS_DEPTH = 32
EGRESS_VERDICTS = EGRESS_DEPTH + 2
#: Packets between the input and the join (bounds the packet sequence numbers in flight).
INFLIGHT_PACKETS = 16
SEQ_BITS = 5
CYCLE_BITS = 32

_FLAG = {name: i for i, name in enumerate(FLAG_NAMES)}


def pipeline_regmap():
    """The pipeline's own register map (addresses from 0)."""
    return regmap_from_node(compile_rdl([HDL_DIR / "pipeline/pipeline.rdl"], "wirespeed_pipeline"))


# What travels beside a request from the join, through the router, to the verdict stage.
_Meta = data.StructLayout({
    "need_lim": 1,             # the limiter got this request (no earlier verdict)
    "early_action": Action,
    "early_reason": Reason,
    "early_status": 10,
    "flags": 32,               # every flag the join knows (all but tenant_found)
    "source_mmio": 1,
    "first_cycle": CYCLE_BITS,
})


class OffloadPipeline(wiring.Component):
    """Front end, parser, limiter, router and telemetry joined into one pipeline, with two inputs and three outputs.

    Parameters
    ----------
    params : CoreParams
        Must have the parser, the limiter and the router; ``submit_bytes`` sizes the MMIO submit window.

    Attributes
    ----------
    s_axis : In(AXIStreamSignature(W))
        Packets: Ethernet frames (``ctrl.axis_inline``) or request bytes. A beat whose ``tkeep`` is not ``0…01…1``
        (or not all ones before ``tlast``) sets the packet's ``bad_tkeep`` flag.
    m_axis : Out(AXIStreamSignature(W, VerdictRecord bits))
        The AXI-S packets, unchanged; ``tuser`` holds the packet's verdict on its ``tlast`` beat (0 on others).
    m_verdict : Out(stream.Signature(VerdictRecord))
        One record per AXI-S packet, in order.
    regs : In(hw signature of ``pipeline.rdl``)
    frontend, parser, limiter, router, telemetry :
        The blocks; connect each one's ``regs`` to the bank.
    """

    def __init__(self, params: CoreParams):
        if "submit" not in params.features:
            raise ValueError("OffloadPipeline needs the parser, the limiter and the router")
        w = params.width_bytes
        self.params, self.width, self.submit_bytes = params, w, params.submit_bytes
        self.record_bits = VerdictRecord.as_shape().size
        self.frontend = L4FrontEnd(w)
        self.parser = HeaderParser(w)
        self.limiter = RateLimiter(params.limiter)
        self.router = Router(params.router, _Meta.size)
        self.telemetry = Telemetry()
        super().__init__({
            "s_axis": In(AXIStreamSignature(w)),
            "m_axis": Out(AXIStreamSignature(w, self.record_bits)),
            "m_verdict": Out(stream.Signature(VerdictRecord)),
            "regs": In(hw_signature(pipeline_regmap())),
        })

    def elaborate(self, platform):
        m = Module()
        w, regs = self.width, self.regs
        beat_layout = ByteBeat(w)
        m.submodules.frontend = fe = self.frontend
        m.submodules.parser = parser = self.parser
        m.submodules.limiter = limiter = self.limiter
        m.submodules.router = router = self.router
        m.submodules.telemetry = telemetry = self.telemetry

        cycle = Signal(CYCLE_BITS)
        m.d.sync += cycle.eq(cycle + 1)

        # -- MMIO submit window: 32-bit words gathered into beats; the doorbell ends a packet -------------------------
        depth_beats = self.submit_bytes // w
        m.submodules.submit_beats = beats = SyncFIFOBuffered(width=beat_layout.size, depth=depth_beats)
        m.submodules.submit_pkts = pkts = SyncFIFOBuffered(width=1, depth=16)
        words_per_beat = w // 4
        gather = Signal(8 * w)
        gwords = Signal(range(words_per_beat + 1))
        pkt_beats = Signal(16)
        push = Signal(beat_layout)
        m.d.comb += beats.w_data.eq(push)
        with m.If(regs.submit_data.value_swmod):
            with m.If(gwords == words_per_beat):
                # The held beat is not the packet's last: push it whole.
                m.d.comb += [push.data.as_value().eq(gather), push.n_valid.eq(w), push.last.eq(0),
                             beats.w_en.eq(1)]
                m.d.sync += [gather.eq(regs.submit_data.value), gwords.eq(1), pkt_beats.eq(pkt_beats + 1)]
            with m.Else():
                m.d.sync += [gather.word_select(gwords, 32).eq(regs.submit_data.value), gwords.eq(gwords + 1)]
        with m.If(regs.doorbell.len_swmod):
            rest = Signal(range(1 << 17))
            m.d.comb += rest.eq(regs.doorbell.len - pkt_beats * w)
            m.d.comb += [push.data.as_value().eq(gather), push.last.eq(1),
                         push.n_valid.eq(Mux(regs.doorbell.len < pkt_beats * w, 0, Mux(rest > w, w, rest))),
                         beats.w_en.eq(1), pkts.w_data.eq(regs.doorbell.inline), pkts.w_en.eq(1)]
            m.d.sync += [gwords.eq(0), pkt_beats.eq(0)]
        overflow = (beats.w_en & ~beats.w_rdy) | (pkts.w_en & ~pkts.w_rdy)
        m.d.comb += [regs.submitted.count_incr.eq(regs.doorbell.len_swmod & pkts.w_rdy),
                     regs.overflows.count_incr.eq(overflow),
                     regs.submit_capacity.bytes.eq(self.submit_bytes)]
        free = Signal(range(depth_beats + 1))
        m.d.comb += free.eq(depth_beats - beats.level)
        m.d.comb += regs.status.free_beats.eq(Mux(free > 0xFFFF, 0xFFFF, free))

        mmio_beat = Signal(beat_layout)
        m.d.comb += mmio_beat.eq(beats.r_data)
        mmio_valid = pkts.r_rdy & beats.r_rdy

        # -- AXI-S input: tkeep to n_valid ----------------------------------------------------------------------------
        s = self.s_axis
        all_ones = (1 << w) - 1
        low_ones = Const(0, range(w + 1))
        for k in range(1, w + 1):
            low_ones = Mux(s.tkeep[:k] == (1 << k) - 1, k, low_ones)
        contiguous = Signal()
        m.d.comb += contiguous.eq(((s.tkeep + 1) & s.tkeep) == 0)
        axis_bad = Signal()
        m.d.comb += axis_bad.eq(~contiguous | (~s.tlast & (s.tkeep != all_ones)))
        axis_beat = Signal(beat_layout)
        m.d.comb += [axis_beat.data.as_value().eq(s.tdata), axis_beat.last.eq(s.tlast),
                     axis_beat.n_valid.eq(Mux(s.tlast, low_ones, w))]

        # -- arbiter: whole packets, round robin ----------------------------------------------------------------------
        in_pkt = Signal()
        sel_reg = Signal()             # 1: MMIO
        prefer_mmio = Signal()
        sel = Signal()
        with m.If(in_pkt):
            m.d.comb += sel.eq(sel_reg)
        with m.Else():
            m.d.comb += sel.eq(Mux(mmio_valid & s.tvalid, prefer_mmio, mmio_valid))
        a_valid = Mux(sel, mmio_valid, s.tvalid)
        a_beat = Signal(beat_layout)
        m.d.comb += a_beat.eq(Mux(sel, mmio_beat, axis_beat))
        a_inline = Mux(sel, pkts.r_data[0], regs.ctrl.axis_inline)
        a_bad = ~sel & axis_bad

        # -- per-packet bookkeeping: sequence number, bad_tkeep, first-beat cycle --------------------------------------
        m.submodules.meta_fifo = meta_fifo = SyncFIFOBuffered(width=1 + SEQ_BITS + CYCLE_BITS, depth=INFLIGHT_PACKETS)
        m.submodules.egress = egress = SyncFIFOBuffered(width=8 * w + w + 1, depth=EGRESS_DEPTH)
        seq = Signal(SEQ_BITS)
        bad_by_seq = Signal(1 << SEQ_BITS)
        first = ~in_pkt
        accept = Signal()
        m.d.comb += accept.eq(a_valid & fe.i_stream.ready & (sel | egress.w_rdy) & (~first | meta_fifo.w_rdy))
        m.d.comb += [
            fe.i_stream.valid.eq(a_valid & (sel | egress.w_rdy) & (~first | meta_fifo.w_rdy)),
            fe.i_stream.payload.beat.eq(a_beat),
            fe.i_stream.payload.inline.eq(a_inline),
            egress.w_data.eq(Cat(s.tdata, s.tkeep, s.tlast)),
            egress.w_en.eq(accept & ~sel),
            meta_fifo.w_data.eq(Cat(sel, seq, cycle)),
            meta_fifo.w_en.eq(accept & first),
            s.tready.eq(accept & ~sel),
            beats.r_en.eq(accept & sel),
            pkts.r_en.eq(accept & sel & mmio_beat.last),
        ]
        with m.If(accept):
            with m.If(first):
                m.d.sync += bad_by_seq.bit_select(seq, 1).eq(a_bad)
            with m.Elif(a_bad):
                m.d.sync += bad_by_seq.bit_select(seq, 1).eq(1)
            with m.If(a_beat.last):
                m.d.sync += [in_pkt.eq(0), seq.eq(seq + 1), prefer_mmio.eq(~sel)]
            with m.Else():
                m.d.sync += [in_pkt.eq(1), sel_reg.eq(sel)]

        # -- front end ─▶ parser; the front end's info waits in a FIFO for the descriptor ---------------------------
        m.submodules.info_fifo = info_fifo = SyncFIFOBuffered(width=FrontEndInfo.as_shape().size,
                                                              depth=INFLIGHT_PACKETS)
        wiring.connect(m, fe.o_payload, parser.i_stream)
        m.d.comb += [parser.o_stream.ready.eq(1),             # the parser's pass-through copy is not needed here
                     info_fifo.w_data.eq(fe.o_info.payload), info_fifo.w_en.eq(fe.o_info.valid),
                     fe.o_info.ready.eq(info_fifo.w_rdy)]

        # -- join: descriptor + info + packet meta ─▶ limiter and router requests (registered) ---------------------
        desc = Signal(Descriptor)
        info = Signal(FrontEndInfo)
        m.d.comb += [desc.eq(parser.o_desc.payload), info.eq(info_fifo.r_data)]
        pkt_mmio = meta_fifo.r_data[0]
        pkt_seq = meta_fifo.r_data[1:1 + SEQ_BITS]
        pkt_first = meta_fifo.r_data[1 + SEQ_BITS:]
        j_valid = Signal()
        j_need_lim = Signal()
        j_lim = Signal(LimitRequest)
        j_route = Signal(RouteRequest)
        j_meta = Signal(_Meta)
        j_lim_done = Signal()
        j_rt_done = Signal()
        lim_take = limiter.i_req.valid & limiter.i_req.ready
        rt_take = router.i_req.valid & router.i_req.ready
        j_advance = j_valid & (~j_need_lim | j_lim_done | lim_take) & (j_rt_done | rt_take)
        j_ready = ~j_valid | j_advance
        join = parser.o_desc.valid & info_fifo.r_rdy & meta_fifo.r_rdy & j_ready
        m.d.comb += [parser.o_desc.ready.eq(join), info_fifo.r_en.eq(join), meta_fifo.r_en.eq(join)]
        m.d.comb += [
            limiter.i_req.valid.eq(j_valid & j_need_lim & ~j_lim_done),
            limiter.i_req.payload.req.eq(j_lim),
            router.i_req.valid.eq(j_valid & ~j_rt_done),
            router.i_req.payload.req.eq(j_route),
            router.i_req.payload.meta.eq(j_meta),
        ]
        with m.If(j_advance):
            m.d.sync += [j_valid.eq(0), j_lim_done.eq(0), j_rt_done.eq(0)]
        with m.Else():
            with m.If(lim_take):
                m.d.sync += j_lim_done.eq(1)
            with m.If(rt_take):
                m.d.sync += j_rt_done.eq(1)

        bad = bad_by_seq.bit_select(pkt_seq, 1)
        errors = desc.errors
        # The lowest error bit names the reason (ErrorFlag order = Reason order).
        first_error = Const(0, range(len(ERROR_NAMES)))
        for i in reversed(range(len(ERROR_NAMES))):
            first_error = Mux(errors[i], i, first_error)
        too_large = ErrorFlag.header_too_large.bit_length() - 1          # bit indices
        truncated = ErrorFlag.truncated.bit_length() - 1
        early_action = Signal(Action)
        early_reason = Signal(Reason)
        early_status = Signal(10)
        with m.If(bad):
            m.d.comb += [early_action.eq(Action.PUNT), early_reason.eq(Reason.BAD_TKEEP)]
        with m.Elif(info.punt):
            m.d.comb += [early_action.eq(Action.PUNT), early_reason.eq(17 + info.reason.as_value())]
        with m.Elif(errors != 0):
            with m.If(info.inline & (first_error == too_large)):
                m.d.comb += [early_action.eq(Action.PUNT), early_reason.eq(Reason.HEADER_TOO_LARGE)]
            with m.Elif(info.inline & (first_error == truncated)):
                m.d.comb += [early_action.eq(Action.PUNT), early_reason.eq(Reason.HEADER_SPANS_SEGMENTS)]
            with m.Else():
                m.d.comb += [early_action.eq(Action.REJECT), early_reason.eq(1 + first_error),
                             early_status.eq(Mux(first_error == too_large, 431, 400))]
        early = bad | info.punt | (errors != 0)
        flags = Signal(32)
        key_present = desc.key_source != KeySource.NONE
        l4_valid = info.inline & ~info.punt
        m.d.comb += flags.eq(errors | (bad << _FLAG["bad_tkeep"]) | (info.inline << _FLAG["inline"])
                             | (l4_valid << _FLAG["l4_valid"]) | (desc.route_match << _FLAG["route_match"])
                             | (key_present << _FLAG["key_present"]) | (desc.cl_present << _FLAG["cl_present"])
                             | (desc.chunked << _FLAG["chunked"]) | (desc.complete << _FLAG["complete"])
                             | (pkt_mmio << _FLAG["mmio"]))
        with m.If(join):
            m.d.sync += [
                j_valid.eq(1),
                j_need_lim.eq(~early),
                j_lim.key_present.eq(key_present), j_lim.key_fp.eq(desc.key_fp),
                j_lim.cl_present.eq(desc.cl_present), j_lim.content_length.eq(desc.content_length),
                j_lim.extra_numeric.eq(desc.extra_numeric), j_lim.extra_value.eq(desc.extra_value),
                j_route.route_class.eq(desc.route_class), j_route.key_present.eq(key_present),
                j_route.key_fp.eq(desc.key_fp), j_route.extra_present.eq(desc.extra_present),
                j_route.extra_fp.eq(desc.extra_fp),
                j_route.l4_valid.eq(l4_valid), j_route.l4_v6.eq(info.l4_v6), j_route.l4_ports.eq(1),
                j_route.l4_src.eq(info.l4_src), j_route.l4_dst.eq(info.l4_dst),
                j_route.l4_sport.eq(info.l4_sport), j_route.l4_dport.eq(info.l4_dport),
                j_meta.need_lim.eq(~early), j_meta.early_action.eq(early_action),
                j_meta.early_reason.eq(early_reason), j_meta.early_status.eq(early_status),
                j_meta.flags.eq(flags), j_meta.source_mmio.eq(pkt_mmio), j_meta.first_cycle.eq(pkt_first),
            ]

        # -- verdict: router (+ limiter when it ran) ─▶ the record (registered) ------------------------------------
        rt = router.o_route.payload
        lim = limiter.o_verdict.payload.verdict
        meta = Signal(_Meta)
        m.d.comb += meta.eq(rt.meta)
        v_valid = Signal()
        v_rec = Signal(VerdictRecord)
        v_mmio = Signal()
        m.submodules.results = results = SyncFIFOBuffered(width=self.record_bits, depth=RESULT_DEPTH)
        m.submodules.egress_verdicts = e_verdicts = SyncFIFOBuffered(width=self.record_bits, depth=EGRESS_VERDICTS)
        v_advance = v_valid & Mux(v_mmio, results.w_rdy, self.m_verdict.ready & e_verdicts.w_rdy)
        v_ready = ~v_valid | v_advance
        v_in = router.o_route.valid & (~meta.need_lim | limiter.o_verdict.valid) & v_ready
        m.d.comb += [router.o_route.ready.eq(v_in), limiter.o_verdict.ready.eq(v_in & meta.need_lim)]

        rec = Signal(VerdictRecord)
        ran = meta.need_lim
        lim_reject = ran & (lim.decision == Decision.REJECT)
        lim_punt = ran & (lim.decision == Decision.PUNT)
        no_backend = rt.verdict.status == STATUS_UNAVAILABLE
        with m.If(~ran):
            m.d.comb += [rec.action.eq(meta.early_action), rec.reason.eq(meta.early_reason),
                         rec.status.eq(meta.early_status)]
        with m.Elif(lim_reject):
            m.d.comb += [rec.action.eq(Action.REJECT), rec.status.eq(lim.status),
                         rec.reason.eq(Mux(lim.status == 429, Reason.RATE_LIMITED, Reason.UNKNOWN_TENANT))]
        with m.Elif(lim_punt):
            m.d.comb += [rec.action.eq(Action.PUNT), rec.reason.eq(Reason.UNKNOWN_TENANT)]
        with m.Elif(no_backend):
            m.d.comb += [rec.action.eq(Action.REJECT), rec.status.eq(STATUS_UNAVAILABLE),
                         rec.reason.eq(Reason.NO_BACKEND)]
        with m.Else():
            m.d.comb += [rec.action.eq(Action.FORWARD), rec.status.eq(200), rec.reason.eq(Reason.OK)]
        forward = ran & ~lim_reject & ~lim_punt & ~no_backend
        latency = Signal(CYCLE_BITS)
        # The record is valid the cycle after v_in.
        m.d.comb += latency.eq(cycle + 1 - meta.first_cycle)
        tenant_valid = Signal()
        pool_valid = Signal()
        m.d.comb += [
            # The slot that decided: the tenant's own, or the default tenant's (tenant_found 0).
            tenant_valid.eq(ran & ~lim_punt & ~(lim_reject & (lim.status != 429))),
            pool_valid.eq(ran & ~lim_reject & ~lim_punt),
            rec.tenant_valid.eq(tenant_valid),
            rec.tenant.eq(Mux(tenant_valid, lim.tenant, 0)),
            rec.pool_valid.eq(pool_valid),
            rec.pool.eq(Mux(pool_valid, rt.verdict.pool, 0)),
            rec.backend_valid.eq(forward),
            rec.backend.eq(Mux(forward, rt.verdict.backend, 0)),
            rec.retry_valid.eq(lim_reject & (lim.status == 429)),
            rec.retry_after_ns.eq(Mux(lim_reject & (lim.status == 429), lim.retry_after_ns, 0)),
            rec.flags.eq(meta.flags | ((ran & lim.tenant_found) << _FLAG["tenant_found"])),
            rec.hash.eq(rt.verdict.hash),
            rec.latency_cycles.eq(Mux(latency > LATENCY_MAX, LATENCY_MAX, latency)),
        ]
        with m.If(v_in):
            m.d.sync += [v_valid.eq(1), v_rec.eq(rec), v_mmio.eq(meta.source_mmio)]
        with m.Elif(v_advance):
            m.d.sync += v_valid.eq(0)

        # -- outputs: the result FIFO (MMIO), the record stream and the egress tuser (AXI-S), telemetry -------------
        m.d.comb += [
            results.w_data.eq(v_rec), results.w_en.eq(v_advance & v_mmio),
            e_verdicts.w_data.eq(v_rec), e_verdicts.w_en.eq(v_advance & ~v_mmio),
            self.m_verdict.valid.eq(v_valid & ~v_mmio & e_verdicts.w_rdy),
            self.m_verdict.payload.eq(v_rec),
            telemetry.i_event.valid.eq(v_advance),
            telemetry.i_event.action.eq(v_rec.action),
            telemetry.i_event.reason.eq(v_rec.reason),
            telemetry.i_event.flags.eq(v_rec.flags),
            telemetry.i_event.latency_cycles.eq(v_rec.latency_cycles),
        ]
        head = Signal(self.record_bits)
        m.d.comb += head.eq(Mux(results.r_rdy, results.r_data, 0))
        for i in range(7):
            m.d.comb += getattr(regs, f"result_{i}").value.eq(head.word_select(i, 32) if 32 * (i + 1) <= self.record_bits
                                                               else head[32 * i:])
        m.d.comb += [results.r_en.eq(regs.result_pop.go), regs.status.results.eq(results.level),
                     regs.result_capacity.entries.eq(RESULT_DEPTH)]

        o = self.m_axis
        e_last = egress.r_data[8 * w + w]
        m.d.comb += [
            o.tdata.eq(egress.r_data[:8 * w]), o.tkeep.eq(egress.r_data[8 * w:8 * w + w]), o.tlast.eq(e_last),
            o.tuser.eq(Mux(e_last, e_verdicts.r_data, 0)),
            o.tvalid.eq(egress.r_rdy & (~e_last | e_verdicts.r_rdy)),
            egress.r_en.eq(o.tvalid & o.tready),
            e_verdicts.r_en.eq(o.tvalid & o.tready & e_last),
        ]
        return m

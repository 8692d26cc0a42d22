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
:class:`~.layouts.VerdictRecord` are in ``docs/pipeline.md``; :mod:`wirespeed.host.models.pipeline` is the
bit-exact model. Timing (no stall): the verdict is valid :data:`DECISION_LATENCY_CYCLES` cycles after the beat holding
the last byte the parser reads (the stop byte), whatever the packet's source.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal
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
from ..parser.layouts import ERROR_NAMES, Descriptor, ErrorFlag, KeySource, Method
from ..bus.regbank import hw_signature
from ..router.hash_router import ROUTE_LATENCY_CYCLES, Router
from ..router.layouts import RouteRequest, STATUS_UNAVAILABLE
from ..telemetry.counters import Telemetry
from .layouts import (FLAG_NAMES, LATENCY_MAX, POLICY_CHECKS, POLICY_REASONS, Action, PolicyAction, Reason,
                      VerdictRecord, reason_for_parser_error, reason_for_punt)

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

# A packet's tag, queued by the arbiter at its first beat for the join.
_PacketTag = data.StructLayout({
    "mmio": 1,                 # the packet came from the MMIO submit window
    "seq": SEQ_BITS,           # its sequence number (indexes the bad_tkeep bits)
    "first_cycle": CYCLE_BITS,
})

# A doorbell write: the request's length in bytes and whether it is an Ethernet frame.
_Doorbell = data.StructLayout({"len": 16, "inline": 1})


def _SubmitBeat(width: int) -> data.StructLayout:
    """A beat from the MMIO submit window, with its packet's ``inline`` bit."""
    return data.StructLayout({"beat": ByteBeat(width), "inline": 1})


def _AxisBeat(width: int) -> data.StructLayout:
    """An AXI-S beat as the egress holds it."""
    return data.StructLayout({"tdata": 8 * width, "tkeep": width, "tlast": 1})


class _SubmitWindow(wiring.Component):
    """The MMIO submit window: 32-bit words gathered into beats of ``width`` bytes; the doorbell ends a packet (its
    last beat holds ``len`` minus the bytes already pushed, clamped to 0..W) and queues its ``inline`` bit.

    ``i_word`` and ``i_doorbell`` never wait: a beat or doorbell that does not fit is dropped and pulses
    ``overflow``. ``o_stream`` gives a queued packet's beats, each with the packet's ``inline`` bit.
    """

    def __init__(self, width: int, submit_bytes: int):
        self.width, self.depth_beats = width, submit_bytes // width
        super().__init__({
            "i_word": In(stream.Signature(32, always_ready=True)),
            "i_doorbell": In(stream.Signature(_Doorbell, always_ready=True)),
            "o_stream": Out(stream.Signature(_SubmitBeat(width))),
            "submitted": Out(1),       # a doorbell queued its packet
            "overflow": Out(1),
            "free_beats": Out(16),     # saturating
        })

    def elaborate(self, platform):
        m = Module()
        w, depth_beats = self.width, self.depth_beats
        beat_layout = ByteBeat(w)
        m.submodules.beats = beats = SyncFIFOBuffered(width=beat_layout.size, depth=depth_beats)
        m.submodules.packets = pkts = SyncFIFOBuffered(width=1, depth=16)
        beats_w, pkts_w = beats.w_stream, pkts.w_stream
        word, bell = self.i_word, self.i_doorbell
        words_per_beat = w // 4
        gather = Signal(8 * w)
        gwords = Signal(range(words_per_beat + 1))
        pkt_beats = Signal(16)
        push = Signal(beat_layout)
        m.d.comb += beats_w.payload.eq(push)
        with m.If(word.valid):
            with m.If(gwords == words_per_beat):
                # The held beat is not the packet's last: push it whole.
                m.d.comb += [push.data.as_value().eq(gather), push.n_valid.eq(w), push.last.eq(0),
                             beats_w.valid.eq(1)]
                m.d.sync += [gather.eq(word.payload), gwords.eq(1), pkt_beats.eq(pkt_beats + 1)]
            with m.Else():
                m.d.sync += [gather.word_select(gwords, 32).eq(word.payload), gwords.eq(gwords + 1)]
        with m.If(bell.valid):
            rest = Signal(range(1 << 17))
            m.d.comb += rest.eq(bell.payload.len - pkt_beats * w)
            m.d.comb += [push.data.as_value().eq(gather), push.last.eq(1),
                         push.n_valid.eq(Mux(bell.payload.len < pkt_beats * w, 0, Mux(rest > w, w, rest))),
                         beats_w.valid.eq(1), pkts_w.payload.eq(bell.payload.inline), pkts_w.valid.eq(1)]
            m.d.sync += [gwords.eq(0), pkt_beats.eq(0)]
        free = Signal(range(depth_beats + 1))
        m.d.comb += [
            self.submitted.eq(bell.valid & pkts_w.ready),
            self.overflow.eq((beats_w.valid & ~beats_w.ready) | (pkts_w.valid & ~pkts_w.ready)),
            free.eq(depth_beats - beats.level),
            self.free_beats.eq(Mux(free > 0xFFFF, 0xFFFF, free)),
        ]

        # A beat goes out once its packet's doorbell is queued; the packet's last beat pops the doorbell.
        beats_r, pkts_r, o = beats.r_stream, pkts.r_stream, self.o_stream
        m.d.comb += [
            o.payload.beat.eq(beats_r.payload), o.payload.inline.eq(pkts_r.payload),
            o.valid.eq(pkts_r.valid & beats_r.valid),
            beats_r.ready.eq(o.ready),
            pkts_r.ready.eq(o.ready & o.payload.beat.last),
        ]
        return m


class _Egress(wiring.Component):
    """The AXI-S packets' copies wait here for their verdicts: every beat leaves ``m_axis`` unchanged, and a packet's
    ``tlast`` beat leaves once its verdict is in, with the verdict in ``tuser`` (0 on other beats)."""

    def __init__(self, width: int, record_bits: int):
        self.width, self.record_bits = width, record_bits
        super().__init__({
            "i_beat": In(stream.Signature(_AxisBeat(width))),
            "i_verdict": In(stream.Signature(VerdictRecord)),
            "m_axis": Out(AXIStreamSignature(width, record_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.beats = beats = SyncFIFOBuffered(width=_AxisBeat(self.width).size, depth=EGRESS_DEPTH)
        m.submodules.verdicts = verdicts = SyncFIFOBuffered(width=self.record_bits, depth=EGRESS_VERDICTS)
        wiring.connect(m, wiring.flipped(self.i_beat), beats.w_stream)
        wiring.connect(m, wiring.flipped(self.i_verdict), verdicts.w_stream)
        beats_r, verdicts_r, o = beats.r_stream, verdicts.r_stream, self.m_axis
        beat = _AxisBeat(self.width)(beats_r.payload)
        m.d.comb += [
            o.tdata.eq(beat.tdata), o.tkeep.eq(beat.tkeep), o.tlast.eq(beat.tlast),
            o.tuser.eq(Mux(beat.tlast, verdicts_r.payload, 0)),
            o.tvalid.eq(beats_r.valid & (~beat.tlast | verdicts_r.valid)),
            beats_r.ready.eq(o.tvalid & o.tready),
            verdicts_r.ready.eq(o.tvalid & o.tready & beat.tlast),
        ]
        return m


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
        m.submodules.frontend = self.frontend
        m.submodules.parser = self.parser
        m.submodules.limiter = self.limiter
        m.submodules.router = self.router
        m.submodules.telemetry = self.telemetry
        m.submodules.egress = egress = _Egress(self.width, self.record_bits)
        wiring.connect(m, egress.m_axis, wiring.flipped(self.m_axis))

        cycle = Signal(CYCLE_BITS)
        m.d.sync += cycle.eq(cycle + 1)

        mmio = self._submit_window(m)
        tags, bad_by_seq = self._ingress(m, mmio, egress.i_beat, cycle)
        info = self._frontend_to_parser(m)
        self._join(m, info, tags, bad_by_seq)
        results = self._result_window(m)
        self._verdict(m, cycle, results, egress.i_verdict)
        return m

    def _submit_window(self, m):
        """The MMIO submit window (:class:`_SubmitWindow`) on its registers; returns its stream of beats."""
        regs = self.regs
        m.submodules.submit = submit = _SubmitWindow(self.width, self.submit_bytes)
        m.d.comb += [
            submit.i_word.valid.eq(regs.submit_data.value_swmod),
            submit.i_word.payload.eq(regs.submit_data.value),
            submit.i_doorbell.valid.eq(regs.doorbell.len_swmod),
            submit.i_doorbell.payload.len.eq(regs.doorbell.len),
            submit.i_doorbell.payload.inline.eq(regs.doorbell.inline),
            regs.submitted.count_incr.eq(submit.submitted),
            regs.overflows.count_incr.eq(submit.overflow),
            regs.submit_capacity.bytes.eq(self.submit_bytes),
            regs.status.free_beats.eq(submit.free_beats),
        ]
        return submit.o_stream

    def _axis_beat(self, m):
        """The AXI-S input as a beat (``tkeep`` to ``n_valid``); returns the beat and whether its ``tkeep`` is bad
        (not ``0…01…1``, or not all ones before ``tlast``)."""
        w, s = self.width, self.s_axis
        low_ones = Const(0, range(w + 1))
        for k in range(1, w + 1):
            low_ones = Mux(s.tkeep[:k] == (1 << k) - 1, k, low_ones)
        contiguous = Signal()
        m.d.comb += contiguous.eq(((s.tkeep + 1) & s.tkeep) == 0)
        axis_bad = Signal()
        m.d.comb += axis_bad.eq(~contiguous | (~s.tlast & (s.tkeep != (1 << w) - 1)))
        axis_beat = Signal(ByteBeat(w))
        m.d.comb += [axis_beat.data.as_value().eq(s.tdata), axis_beat.last.eq(s.tlast),
                     axis_beat.n_valid.eq(Mux(s.tlast, low_ones, w))]
        return axis_beat, axis_bad

    def _ingress(self, m, mmio, egress_beat, cycle):
        """The arbiter: whole packets from the MMIO window and AXI-S, round robin, into the front end. An AXI-S beat
        is also copied to the egress; a packet's first beat queues its :data:`_PacketTag` for the join, and its
        bad_tkeep bit is kept by sequence number. Returns the tag FIFO's read stream and the bad_tkeep bits."""
        s, fe, regs = self.s_axis, self.frontend, self.regs
        axis_beat, axis_bad = self._axis_beat(m)
        in_pkt = Signal()
        sel_reg = Signal()             # 1: MMIO
        prefer_mmio = Signal()
        sel = Signal()
        with m.If(in_pkt):
            m.d.comb += sel.eq(sel_reg)
        with m.Else():
            m.d.comb += sel.eq(Mux(mmio.valid & s.tvalid, prefer_mmio, mmio.valid))
        a_valid = Mux(sel, mmio.valid, s.tvalid)
        a_beat = Signal(ByteBeat(self.width))
        m.d.comb += a_beat.eq(Mux(sel, mmio.payload.beat, axis_beat))
        a_inline = Mux(sel, mmio.payload.inline, regs.ctrl.axis_inline)
        a_bad = ~sel & axis_bad

        # Per-packet bookkeeping: sequence number, bad_tkeep, first-beat cycle.
        m.submodules.tag_fifo = tag_fifo = SyncFIFOBuffered(width=_PacketTag.size, depth=INFLIGHT_PACKETS)
        tags_w = tag_fifo.w_stream
        seq = Signal(SEQ_BITS)
        bad_by_seq = Signal(1 << SEQ_BITS)
        first = ~in_pkt
        room = (sel | egress_beat.ready) & (~first | tags_w.ready)
        accept = Signal()
        tag = Signal(_PacketTag)
        m.d.comb += [
            accept.eq(a_valid & fe.i_stream.ready & room),
            fe.i_stream.valid.eq(a_valid & room),
            fe.i_stream.payload.beat.eq(a_beat),
            fe.i_stream.payload.inline.eq(a_inline),
            egress_beat.payload.tdata.eq(s.tdata), egress_beat.payload.tkeep.eq(s.tkeep),
            egress_beat.payload.tlast.eq(s.tlast),
            egress_beat.valid.eq(accept & ~sel),
            tag.mmio.eq(sel), tag.seq.eq(seq), tag.first_cycle.eq(cycle),
            tags_w.payload.eq(tag),
            tags_w.valid.eq(accept & first),
            s.tready.eq(accept & ~sel),
            mmio.ready.eq(accept & sel),
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
        return tag_fifo.r_stream, bad_by_seq

    def _frontend_to_parser(self, m):
        """Front end ─▶ parser; the front end's info waits in a FIFO for the descriptor. Returns the FIFO's read
        stream."""
        fe, parser = self.frontend, self.parser
        m.submodules.info_fifo = info_fifo = SyncFIFOBuffered(width=FrontEndInfo.as_shape().size,
                                                              depth=INFLIGHT_PACKETS)
        wiring.connect(m, fe.o_payload, parser.i_stream)
        wiring.connect(m, fe.o_info, info_fifo.w_stream)
        m.d.comb += parser.o_stream.ready.eq(1)              # the parser's pass-through copy is not needed here
        return info_fifo.r_stream

    def _join(self, m, info_r, tags_r, bad_by_seq):
        """The join: descriptor + info + packet tag ─▶ limiter and router requests (registered), the early verdict
        and the flags travelling beside the router's request in :data:`_Meta`. The limiter only gets packets with no
        early verdict; the join takes the next packet once both requests it needs are taken."""
        parser, limiter, router = self.parser, self.limiter, self.router
        desc = Signal(Descriptor)
        info = Signal(FrontEndInfo)
        m.d.comb += [desc.eq(parser.o_desc.payload), info.eq(info_r.payload)]
        tag = _PacketTag(tags_r.payload)
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
        join = parser.o_desc.valid & info_r.valid & tags_r.valid & j_ready
        m.d.comb += [parser.o_desc.ready.eq(join), info_r.ready.eq(join), tags_r.ready.eq(join)]
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

        bad = bad_by_seq.bit_select(tag.seq, 1)
        early, early_action, early_reason, early_status = self._early_verdict(m, desc, info, bad)
        flags = Signal(32)
        key_present = desc.key_source != KeySource.NONE
        l4_valid = info.inline & ~info.punt
        m.d.comb += flags.eq(desc.errors | (bad << _FLAG["bad_tkeep"]) | (info.inline << _FLAG["inline"])
                             | (l4_valid << _FLAG["l4_valid"]) | (desc.route_match << _FLAG["route_match"])
                             | (key_present << _FLAG["key_present"]) | (desc.cl_present << _FLAG["cl_present"])
                             | (desc.chunked << _FLAG["chunked"]) | (desc.complete << _FLAG["complete"])
                             | (tag.mmio << _FLAG["mmio"]))
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
                j_meta.flags.eq(flags), j_meta.source_mmio.eq(tag.mmio), j_meta.first_cycle.eq(tag.first_cycle),
            ]

    def _early_verdict(self, m, desc, info, bad):
        """The verdict a packet gets before the limiter: bad_tkeep, else the front end's punt, else the parser's
        lowest error bit (inline, a header too large or truncated punts; any other error rejects), else the first
        request-policy check that fires (``POLICY_CHECKS`` order). Returns whether there is one, and its action,
        reason and status."""
        errors = desc.errors
        # The lowest error bit names the reason.
        first_error = Const(0, range(len(ERROR_NAMES)))
        for i in reversed(range(len(ERROR_NAMES))):
            first_error = Mux(errors[i], i, first_error)
        too_large = ErrorFlag.header_too_large.bit_length() - 1          # bit indices
        truncated = ErrorFlag.truncated.bit_length() - 1
        early_action = Signal(Action)
        early_reason = Signal(Reason)
        early_status = Signal(10)
        # The request policy: per check, whether the request is one it covers; it fires unless its action is allow.
        regs = self.regs
        covered = {"connect": desc.method == Method.CONNECT,
                   "method": ~regs.allowed_methods.mask.bit_select(desc.method.as_value(), 1),
                   "target_form": ~desc.origin_form,
                   "upgrade": desc.upgrade}
        policy = []
        for check in POLICY_CHECKS:
            reg = getattr(regs, f"policy_{check}")
            fires = Signal(name=f"policy_{check}_fires")
            m.d.comb += fires.eq(covered[check] & (reg.action != PolicyAction.ALLOW.value))
            policy.append((check, fires, reg.action == PolicyAction.PUNT.value, reg.status))
        with m.If(bad):
            m.d.comb += [early_action.eq(Action.PUNT), early_reason.eq(Reason.BAD_TKEEP)]
        with m.Elif(info.punt):
            m.d.comb += [early_action.eq(Action.PUNT), early_reason.eq(reason_for_punt(info.reason))]
        with m.Elif(errors != 0):
            with m.If(info.inline & (first_error == too_large)):
                m.d.comb += [early_action.eq(Action.PUNT), early_reason.eq(Reason.HEADER_TOO_LARGE)]
            with m.Elif(info.inline & (first_error == truncated)):
                m.d.comb += [early_action.eq(Action.PUNT), early_reason.eq(Reason.HEADER_SPANS_SEGMENTS)]
            with m.Else():
                m.d.comb += [early_action.eq(Action.REJECT), early_reason.eq(reason_for_parser_error(first_error)),
                             early_status.eq(Mux(first_error == too_large, 431, 400))]
        for check, fires, punt, status in policy:
            with m.Elif(fires):
                m.d.comb += [early_action.eq(Mux(punt, Action.PUNT, Action.REJECT)),
                             early_reason.eq(POLICY_REASONS[check]), early_status.eq(Mux(punt, 0, status))]
        early = bad | info.punt | (errors != 0)
        for _, fires, _, _ in policy:
            early = early | fires
        return early, early_action, early_reason, early_status

    def _result_window(self, m):
        """The result FIFO: records of MMIO-submitted packets, the head shown in ``result[0..6]`` (zero when empty)
        until ``result_pop``. Returns the FIFO's write stream."""
        regs = self.regs
        m.submodules.results = results = SyncFIFOBuffered(width=self.record_bits, depth=RESULT_DEPTH)
        results_r = results.r_stream
        head = Signal(self.record_bits)
        m.d.comb += head.eq(Mux(results_r.valid, results_r.payload, 0))
        for i in range(7):
            word = head.word_select(i, 32) if 32 * (i + 1) <= self.record_bits else head[32 * i:]
            m.d.comb += getattr(regs, f"result_{i}").value.eq(word)
        m.d.comb += [results_r.ready.eq(regs.result_pop.go), regs.status.results.eq(results.level),
                     regs.result_capacity.entries.eq(RESULT_DEPTH)]
        return results.w_stream

    def _verdict(self, m, cycle, results_w, egress_verdict):
        """The verdict stage: the router's answer (with the limiter's when it ran) ─▶ the record (registered), then
        to the result FIFO (MMIO packets) or to ``m_verdict`` and the egress together (AXI-S packets); telemetry
        counts every record."""
        router, limiter, telemetry = self.router, self.limiter, self.telemetry
        rt = router.o_route.payload
        meta = Signal(_Meta)
        m.d.comb += meta.eq(rt.meta)
        v_valid = Signal()
        v_rec = Signal(VerdictRecord)
        v_mmio = Signal()
        v_advance = v_valid & Mux(v_mmio, results_w.ready, self.m_verdict.ready & egress_verdict.ready)
        v_ready = ~v_valid | v_advance
        v_in = router.o_route.valid & (~meta.need_lim | limiter.o_verdict.valid) & v_ready
        m.d.comb += [router.o_route.ready.eq(v_in), limiter.o_verdict.ready.eq(v_in & meta.need_lim)]
        rec = self._verdict_record(m, meta, rt.verdict, limiter.o_verdict.payload.verdict, cycle)
        with m.If(v_in):
            m.d.sync += [v_valid.eq(1), v_rec.eq(rec), v_mmio.eq(meta.source_mmio)]
        with m.Elif(v_advance):
            m.d.sync += v_valid.eq(0)

        m.d.comb += [
            results_w.payload.eq(v_rec), results_w.valid.eq(v_advance & v_mmio),
            egress_verdict.payload.eq(v_rec), egress_verdict.valid.eq(v_advance & ~v_mmio),
            self.m_verdict.valid.eq(v_valid & ~v_mmio & egress_verdict.ready),
            self.m_verdict.payload.eq(v_rec),
            telemetry.i_event.valid.eq(v_advance),
            telemetry.i_event.action.eq(v_rec.action),
            telemetry.i_event.reason.eq(v_rec.reason),
            telemetry.i_event.flags.eq(v_rec.flags),
            telemetry.i_event.latency_cycles.eq(v_rec.latency_cycles),
        ]

    def _verdict_record(self, m, meta, route, lim, cycle):
        """The record (combinational) from the request's :data:`_Meta`, the router's verdict ``route`` and the
        limiter's ``lim`` (when it ran, else the early verdict); the rules of ``docs/pipeline.md``."""
        rec = Signal(VerdictRecord)
        ran = meta.need_lim
        lim_reject = ran & (lim.decision == Decision.REJECT)
        lim_punt = ran & (lim.decision == Decision.PUNT)
        no_backend = route.status == STATUS_UNAVAILABLE
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
            rec.pool.eq(Mux(pool_valid, route.pool, 0)),
            rec.backend_valid.eq(forward),
            rec.backend.eq(Mux(forward, route.backend, 0)),
            rec.retry_valid.eq(lim_reject & (lim.status == 429)),
            rec.retry_after_ns.eq(Mux(lim_reject & (lim.status == 429), lim.retry_after_ns, 0)),
            rec.flags.eq(meta.flags | ((ran & lim.tenant_found) << _FLAG["tenant_found"])),
            rec.hash.eq(route.hash),
            rec.latency_cycles.eq(Mux(latency > LATENCY_MAX, LATENCY_MAX, latency)),
        ]
        return rec

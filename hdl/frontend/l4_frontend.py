"""L2–L4 front end of the inline (bump-in-the-wire) mode: the first block of the pipeline.

Ethernet frames from the MAC (W bytes per beat) ─▶ :class:`L4FrontEnd` ─┬─▶ the TCP payload, realigned (``o_payload``)
                                                                        └─▶ one :class:`~.layouts.FrontEndInfo`
                                                                            per packet (``o_info``)
then ``o_payload`` ─▶ ``HeaderParser`` (``hdl/parser/``). Lookaside packets (``inline = 0``) pass through whole.

Behaviour is specified in ``docs/frontend.md``; :mod:`wirespeed.host.models.frontend` is the bit-exact model.

Structure (every stage advances together; the only stalls are a full output queue or a full info FIFO):

- **S0 capture.** Header bytes 12..95 are stored by absolute position (byte *p* comes from lane *p* mod W of beat
  *p* // W, no mux). The destination port is compared with the served set here, per 4-byte-aligned lane pair, for
  each of the 13 places the TCP header can start; "is byte *p* in the frame yet" flags for the checked positions are
  registered here too.
- **S1 decode.** The L2/L3 checks, from the stored bytes, for each of the three places the IP header can start
  (0, 1 or 2 tags), then selected by the tags. The TCP fields are picked by the L4 offset the previous beat decoded
  (it depends only on bytes 12..22, always in an earlier beat than any TCP byte).
- **S2 decide.** The TCP checks, the punt reason, the payload offset; the realigning shift of (previous beat, this
  beat); up to two payload beats (a full one and the final partial one) and the info are pushed.

Every header starts at an offset ≡ 2 (mod 4) (14 + 4·tags, + 4·IHL or 40, + 4·data offset), so the realigning
shift takes only W/4 values and the port bytes always sit in a 4-byte-aligned lane pair.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from ..bus.regmap import HDL_DIR, compile_rdl, regmap_from_node
from .layouts import PORT_ENTRIES, FrontEndInfo, PuntReason
from ..bus.packet import ByteBeat, check_width
from ..bus.regbank import hw_signature

__all__ = ["L4FrontEnd", "frontend_regmap", "FrontendInput", "FRONTEND_LATENCY_CYCLES",
           "INFO_FIFO_DEPTH"]

#: Cycles from accepting the input beat that completes an ``o_payload`` beat to that beat's ``valid``.
FRONTEND_LATENCY_CYCLES = 3
INFO_FIFO_DEPTH = 4
#: Bits of a byte position in the frame (positions saturate; inline frames are far shorter).
POS_BITS = 18
#: Header bytes stored: the farthest field is the TCP data offset at 22 + 60 + 12 = 94.
HB_FIRST, HB_END = 12, 96
#: Where the TCP header can start: 34 + 4k (k = 0..12; IPv4 14..22 + 20..60, IPv6 14..22 + 40).
L4_PLACES = 13

ETH_TPIDS = (0x8100, 0x88A8)
IPV6_EXT = (0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254)
PEND = 15                       # status code: more bytes needed (not a PuntReason value)
assert PEND not in {r.value for r in PuntReason}


def FrontendInput(width: int) -> data.StructLayout:
    """``i_stream`` payload: a :func:`~wirespeed.hdl.bus.packet.ByteBeat` and ``inline`` (sampled on a packet's first
    beat)."""
    return data.StructLayout({"beat": ByteBeat(width), "inline": 1})


def frontend_regmap():
    """The front end's register map on its own (addresses from 0), for a standalone bank."""
    return regmap_from_node(compile_rdl([HDL_DIR / "frontend/frontend.rdl"], "wirespeed_frontend"))


def _chain(steps, default):
    """The value of the first ``(condition, value)`` whose condition holds, else ``default`` (a priority mux)."""
    result = default
    for cond, value in reversed(steps):
        result = Mux(cond, value, result)
    return result


def _be16(hi, lo):
    return Cat(lo, hi)


def _l3_candidate(hb, av, t: int) -> dict:
    """The L3 decode if the IP header starts after ``t`` tags (at 14 + 4t): the punt code (or :data:`PEND`), IPv6 or
    not, the L4 place k (l4 = 34 + 4k), where the IP packet ends, and the addresses; ``av`` says which bytes are in."""
    l3 = 14 + 4 * t
    et = _be16(hb[l3 - 2], hb[l3 - 1])
    v4, v6 = et == 0x0800, et == 0x86DD
    vihl = hb[l3]
    ihl = vihl[0:4]
    total = _be16(hb[l3 + 2], hb[l3 + 3])
    frag = _be16(hb[l3 + 6], hb[l3 + 7])[0:14] != 0
    code4 = _chain([
        (~av[l3], PEND), ((vihl[4:8] != 4) | (ihl < 5), PuntReason.BAD_L3_L4_HEADER.value),
        (~av[l3 + 3], PEND), (total < Cat(Const(0, 2), ihl) + 20, PuntReason.BAD_L3_L4_HEADER.value),
        (~av[l3 + 7], PEND), (frag, PuntReason.IPV4_FRAGMENT.value),
        (~av[l3 + 9], PEND), (hb[l3 + 9] != 6, PuntReason.NOT_TCP.value),
    ], PuntReason.NONE.value)
    paylen = _be16(hb[l3 + 4], hb[l3 + 5])
    nh = hb[l3 + 6]
    is_ext = 0
    for code in IPV6_EXT:
        is_ext = is_ext | (nh == code)
    code6 = _chain([
        (~av[l3], PEND), (vihl[4:8] != 6, PuntReason.BAD_L3_L4_HEADER.value),
        (~av[l3 + 5], PEND), (paylen < 20, PuntReason.BAD_L3_L4_HEADER.value),
        (~av[l3 + 6], PEND), (is_ext, PuntReason.IPV6_EXT_HEADER.value),
        (nh != 6, PuntReason.NOT_TCP.value),
    ], PuntReason.NONE.value)
    return {
        "code": Mux(v4, code4, Mux(v6, code6, PuntReason.NOT_IP.value)),
        "v6": v6,
        "k": Mux(v6, t + 5, t + ihl - 5)[0:4],     # L4 place: l4 = 34 + 4k
        "ip_end": Mux(v6, l3 + 40 + paylen, l3 + total),
        "src": Mux(v6, Cat(*(hb[l3 + 23 - i] for i in range(16))),
                   Cat(*(hb[l3 + 15 - i] for i in range(4)))),
        "dst": Mux(v6, Cat(*(hb[l3 + 39 - i] for i in range(16))),
                   Cat(*(hb[l3 + 19 - i] for i in range(4)))),
    }


class L4FrontEnd(wiring.Component):
    """Finds the TCP payload of Ethernet frames and the flow they belong to.

    Parameters
    ----------
    width : int
        W, bytes per beat: 4, 8 or 16.

    Attributes
    ----------
    i_stream : In(stream.Signature(FrontendInput(W)))
        Packets. ``inline`` on the first beat: 1 = an Ethernet frame, 0 = pass through whole (lookaside). Accepted at
        one beat per cycle whenever ``o_payload`` and ``o_info`` are ready.
    o_payload : Out(stream.Signature(ByteBeat(W)))
        Exactly one packet per input packet: the TCP payload realigned to lane 0 and trimmed to the IP length, or
        one empty beat (``n_valid = 0``) for a punted or payload-less frame. A beat is valid
        :data:`FRONTEND_LATENCY_CYCLES` cycles after the input beat holding its last byte (docs/frontend.md).
    o_info : Out(stream.Signature(FrontEndInfo))
        Exactly one per packet, in order, pushed in the cycle its packet's first ``o_payload`` beat is.
    regs : In(hw signature of ``frontend.rdl``)
        The served ports.
    """

    def __init__(self, width: int = 8):
        self.width = check_width(width)
        super().__init__({
            "i_stream": In(stream.Signature(FrontendInput(width))),
            "o_payload": Out(stream.Signature(ByteBeat(width))),
            "o_info": Out(stream.Signature(FrontEndInfo)),
            "regs": In(hw_signature(frontend_regmap())),
        })

    def elaborate(self, platform):
        m = Module()
        out = self._outputs(m)
        s0 = self._capture(m, out.en)
        s1 = self._s1_registers(m, out.en, s0)
        l3 = self._decode(m, out.en, s0, s1)
        s2 = self._s2_registers(m, out.en, s1, l3)
        pay = self._realign(m, s2)
        self._push_info(m, out, s2, pay)
        self._payload_queue(m, out, pay)
        return m

    def _outputs(self, m):
        """The output side: a 3-entry payload queue (two pushes per cycle) and the info FIFO, and ``en``, the whole
        pipeline advancing."""
        beat_t = ByteBeat(self.width)
        q = [Signal(beat_t, name=f"q{i}") for i in range(3)]
        q_count = Signal(range(4))
        m.submodules.info_fifo = info_fifo = SyncFIFO(width=FrontEndInfo.as_shape().size, depth=INFO_FIFO_DEPTH)
        info_w = info_fifo.w_stream
        pop = Signal()
        en = Signal()                                   # the whole pipeline advances
        m.d.comb += [
            pop.eq((q_count != 0) & self.o_payload.ready),
            # Room for the two beats S2 may push, after this cycle's pop; never short while the outputs are ready.
            en.eq(((q_count - pop) <= 1) & info_w.ready),
            self.o_payload.valid.eq(q_count != 0),
            self.o_payload.payload.eq(q[0]),
        ]
        wiring.connect(m, info_fifo.r_stream, wiring.flipped(self.o_info))
        return SimpleNamespace(q=q, q_count=q_count, info_w=info_w, pop=pop, en=en)

    def _capture(self, m, en):
        """S0: the beat index, the header bytes stored by absolute position, the served-port compare for each L4
        place; what S1 needs of the input beat."""
        w = self.width
        lw = (w - 1).bit_length()                       # log2 W
        i_beat = self.i_stream.payload.beat
        accept = Signal()
        m.d.comb += [self.i_stream.ready.eq(en), accept.eq(self.i_stream.valid & en)]
        bi_bits = POS_BITS - 1 - lw
        bi = Signal(bi_bits)                            # beat index in the packet (saturating)
        inline_r = Signal()
        first0 = bi == 0
        inline0 = Mux(first0, self.i_stream.payload.inline, inline_r)
        with m.If(accept):
            m.d.sync += inline_r.eq(inline0)
            with m.If(i_beat.last):
                m.d.sync += bi.eq(0)
            with m.Elif(bi != (1 << bi_bits) - 1):
                m.d.sync += bi.eq(bi + 1)

        hb = {p: Signal(8, name=f"hb{p}") for p in range(HB_FIRST, HB_END)}
        with m.If(accept):
            for p, sig in hb.items():
                with m.If(bi == p // w):
                    m.d.sync += sig.eq(i_beat.data[p % w])

        # The served-port compare, per 4-byte-aligned lane pair (the destination port is at l4 + 2 ≡ 0 mod 4).
        served_lane = []
        for g in range(w // 4):
            port = _be16(i_beat.data[4 * g], i_beat.data[4 * g + 1])
            hit = 0
            for e in range(PORT_ENTRIES):
                entry = getattr(self.regs, f"port{e}")
                hit = hit | (entry.enable & (entry.port == port))
            served_lane.append(hit)
        served = [Signal(name=f"served{k}") for k in range(L4_PLACES)]
        with m.If(accept):
            for k, sig in enumerate(served):
                p = 36 + 4 * k
                with m.If(bi == p // w):
                    m.d.sync += sig.eq(served_lane[(p % w) // 4])
        return SimpleNamespace(beat=i_beat, accept=accept, bi=bi, first=first0, inline=inline0, hb=hb, served=served)

    def _s1_registers(self, m, en, s0):
        """The S1 registers: the beat and its position, and "byte p is in the frame so far" for every position a
        check needs."""
        w = self.width
        lw = (w - 1).bit_length()
        bi, n_valid0 = s0.bi, s0.beat.n_valid
        checked = sorted({13, 17, 21} | {14 + 4 * t + d for t in range(3) for d in (0, 3, 5, 6, 7, 9)}
                         | {37 + 4 * k for k in range(L4_PLACES)} | {46 + 4 * k for k in range(L4_PLACES)})
        s1_valid = Signal()
        s1_beat = Signal(ByteBeat(w))
        s1_first, s1_inline = Signal(), Signal()
        s1_bs = Signal(POS_BITS)                        # byte position of the beat's lane 0
        s1_ce = Signal(POS_BITS)                        # bytes in the frame so far, this beat included
        s1_av = {p: Signal(name=f"s1_av{p}") for p in checked}
        with m.If(en):
            m.d.sync += [
                s1_valid.eq(s0.accept),
                s1_beat.eq(s0.beat),
                s1_first.eq(s0.first),
                s1_inline.eq(s0.inline),
                s1_bs.eq(bi << lw),
                s1_ce.eq((bi << lw) + n_valid0),
            ]
            for p, sig in s1_av.items():
                m.d.sync += sig.eq((bi > p // w) | ((bi == p // w) & (n_valid0 > p % w)))
        return SimpleNamespace(valid=s1_valid, beat=s1_beat, first=s1_first, inline=s1_inline, bs=s1_bs, ce=s1_ce,
                               av=s1_av)

    def _decode(self, m, en, s0, s1):
        """S1: the L2/L3 checks for 0, 1 or 2 tags, selected by the tags, and the TCP fields at the L4 place the
        packet's earlier beats decoded."""
        hb, av = s0.hb, s1.av

        def is_tag(e):
            et = _be16(hb[e], hb[e + 1])
            return (et == ETH_TPIDS[0]) | (et == ETH_TPIDS[1])

        cand = [_l3_candidate(hb, av, t) for t in range(3)]
        # 0, 1 or 2 tags select the candidate; a third tag is NOT_IP.
        t_sel = Signal(2)
        m.d.comb += t_sel.eq(Mux(~is_tag(12), 0, Mux(~is_tag(16), 1, Mux(~is_tag(20), 2, 3))))
        l2_code = _chain([(~av[13], PEND), (t_sel == 0, 0), (~av[17], PEND), (t_sel == 1, 0),
                          (~av[21], PEND), (t_sel == 2, 0)], PuntReason.NOT_IP.value)

        def pick(name):
            return Mux(t_sel == 0, cand[0][name], Mux(t_sel == 1, cand[1][name], cand[2][name]))

        a_code = Mux(l2_code != 0, l2_code, pick("code"))
        a_k = Signal(4)
        m.d.comb += a_k.eq(pick("k"))

        # The L4 place this packet's earlier beats decoded (S1 state).
        k_prev = Signal(4)
        with m.If(en & s1.valid):
            m.d.sync += k_prev.eq(a_k)

        def at_l4(offset, mk=lambda p: hb[p]):
            """``mk(34 + 4k + offset)`` for the L4 place k of the previous beats."""
            return _chain([(k_prev == k, mk(34 + 4 * k + offset)) for k in range(L4_PLACES - 1)],
                          mk(34 + 4 * (L4_PLACES - 1) + offset))

        return SimpleNamespace(
            code=a_code, v6=pick("v6"), ip_end=pick("ip_end"), src=pick("src"), dst=pick("dst"), k_prev=k_prev,
            sport=_be16(at_l4(0), at_l4(1)), dport=_be16(at_l4(2), at_l4(3)),
            served=at_l4(2, lambda p: s0.served[(p - 36) // 4]), doff=at_l4(12)[4:8],
            dport_av=at_l4(3, lambda p: av[p]), doff_av=at_l4(12, lambda p: av[p]))

    def _s2_registers(self, m, en, s1, l3):
        """The S2 registers: the beat, the L3 decode and the TCP fields, and the payload offset."""
        s2_valid = Signal()
        s2_beat = Signal(ByteBeat(self.width))
        s2_first, s2_inline = Signal(), Signal()
        s2_bs, s2_ce = Signal(POS_BITS), Signal(POS_BITS)
        s2_a_code = Signal(4)
        s2_v6 = Signal()
        s2_ip_end = Signal(POS_BITS)
        s2_src, s2_dst = Signal(128), Signal(128)
        s2_sport, s2_dport = Signal(16), Signal(16)
        s2_served, s2_doff, s2_dport_av, s2_doff_av = Signal(), Signal(4), Signal(), Signal()
        s2_p0 = Signal(8)
        with m.If(en):
            m.d.sync += [
                s2_valid.eq(s1.valid),
                s2_beat.eq(s1.beat),
                s2_first.eq(s1.first),
                s2_inline.eq(s1.inline),
                s2_bs.eq(s1.bs),
                s2_ce.eq(s1.ce),
                s2_a_code.eq(l3.code),
                s2_v6.eq(l3.v6),
                s2_ip_end.eq(l3.ip_end),
                s2_src.eq(l3.src),
                s2_dst.eq(l3.dst),
                s2_sport.eq(l3.sport),
                s2_dport.eq(l3.dport),
                s2_served.eq(l3.served),
                s2_doff.eq(l3.doff),
                s2_dport_av.eq(l3.dport_av),
                s2_doff_av.eq(l3.doff_av),
                s2_p0.eq(34 + Cat(Const(0, 2), l3.k_prev + l3.doff)),
            ]
        return SimpleNamespace(valid=s2_valid, beat=s2_beat, first=s2_first, inline=s2_inline, bs=s2_bs, ce=s2_ce,
                               a_code=s2_a_code, v6=s2_v6, ip_end=s2_ip_end, src=s2_src, dst=s2_dst,
                               sport=s2_sport, dport=s2_dport, served=s2_served, doff=s2_doff,
                               dport_av=s2_dport_av, doff_av=s2_doff_av, p0=s2_p0)

    def _realign(self, m, s2):
        """S2: the TCP checks, the punt reason, and the (up to two) payload beats realigned from the previous beat
        and this one."""
        w = self.width
        lw = (w - 1).bit_length()
        beat_t = ByteBeat(w)
        beat = s2.beat
        last = beat.last
        p0 = s2.p0
        status = Signal(4)
        m.d.comb += status.eq(_chain([
            (s2.a_code != PuntReason.NONE.value, s2.a_code),
            (~s2.dport_av, PEND), (~s2.served, PuntReason.PORT_NOT_SERVED.value),
            (~s2.doff_av, PEND),
            ((s2.doff < 5) | (s2.ip_end < p0), PuntReason.BAD_L3_L4_HEADER.value),
            (s2.ce < p0, PEND), (s2.ip_end == p0, PuntReason.NO_PAYLOAD.value),
        ], PuntReason.NONE.value))
        reason = Signal(4)
        m.d.comb += reason.eq(Mux((status == PEND) & last, PuntReason.TRUNCATED_FRAME.value, status))
        ok = s2.inline & (reason == PuntReason.NONE.value)

        # Where the payload ends so far: at the IP length, or at the frame's end if that comes first.
        end_here = (s2.ip_end <= s2.ce) | last
        end = Mux(s2.ip_end < s2.ce, s2.ip_end, s2.ce)
        s = p0[0:lw]                                    # the shift: payload byte 0 sits in lane s (s ≡ 2 mod 4)
        split = s2.bs | s                               # frame position of lane s of this beat
        shifts = [sh for sh in range(2, w, 4)]

        def shifted(lo_bytes, hi_bytes):
            both = list(lo_bytes) + list(hi_bytes)
            return Cat(*(_chain([(s == sh, both[sh + i]) for sh in shifts[:-1]], both[shifts[-1] + i])
                         for i in range(w)))

        prev = Signal(8 * w)                            # the previous beat of this packet
        cur = [beat.data[i] for i in range(w)]
        prev_b = [prev[8 * i:8 * i + 8] for i in range(w)]
        # A beat straddling (previous beat lanes s.., this beat lanes ..s-1), and the tail (this beat lanes s..).
        straddle = ok & (s2.bs > p0) & (~end_here | (end > s2.bs))
        tail = ok & end_here & (s2.bs + w > p0) & (end > split)
        empty = s2.inline & last & ((reason != PuntReason.NONE.value) | (end == p0))
        st_beat, tl_beat, bypass_beat, empty_beat = (Signal(beat_t, name=n) for n in ("st", "tl", "bp", "em"))
        m.d.comb += [
            st_beat.data.eq(shifted(prev_b, cur)),
            st_beat.n_valid.eq(Mux(~end_here | (end >= split), w, end - (split - w))),
            st_beat.last.eq(end_here & (end <= split)),
            tl_beat.data.eq(shifted(cur, [Const(0, 8)] * w)),
            tl_beat.n_valid.eq(end - split),
            tl_beat.last.eq(1),
            bypass_beat.eq(beat),
            empty_beat.last.eq(1),
        ]
        push_a, push_b = Signal(), Signal()
        beat_a = Signal(beat_t)
        m.d.comb += [
            push_a.eq(s2.valid & (~s2.inline | straddle | tail | empty)),
            push_b.eq(s2.valid & straddle & tail),
            beat_a.eq(Mux(~s2.inline, bypass_beat, Mux(straddle, st_beat, Mux(tail, tl_beat, empty_beat)))),
        ]
        return SimpleNamespace(reason=reason, prev=prev, push_a=push_a, push_b=push_b, beat_a=beat_a, beat_b=tl_beat)

    def _push_info(self, m, out, s2, pay):
        """S2: the packet's info, pushed with its first payload beat; the previous beat kept for the realignment."""
        en, reason = out.en, pay.reason
        sent = Signal()
        sent_before = sent & ~s2.first
        info = Signal(FrontEndInfo)                     # named, so that waveforms show its fields
        full = s2.inline & ((reason == PuntReason.NONE.value) | (reason == PuntReason.NO_PAYLOAD.value))
        m.d.comb += [
            info.inline.eq(s2.inline),
            info.punt.eq(s2.inline & (reason != PuntReason.NONE.value)),
            info.reason.eq(Mux(s2.inline, reason, 0)),
            info.l4_v6.eq(full & s2.v6),
            info.l4_src.eq(Mux(full, s2.src, 0)),
            info.l4_dst.eq(Mux(full, s2.dst, 0)),
            info.l4_sport.eq(Mux(full, s2.sport, 0)),
            info.l4_dport.eq(Mux(full, s2.dport, 0)),
            info.payload_offset.eq(Mux(full, s2.p0, 0)),
            out.info_w.payload.eq(info),
            out.info_w.valid.eq(en & pay.push_a & ~sent_before),
        ]
        with m.If(en & s2.valid):
            m.d.sync += [pay.prev.eq(s2.beat.data.as_value()), sent.eq(sent_before | pay.push_a)]

    def _payload_queue(self, m, out, pay):
        """The payload queue: this cycle's pop, then up to two pushes (``beat_a``, then ``beat_b``) behind what
        remains."""
        q, en = out.q, out.en
        kept = q[1:] + [None]                           # the entries after a pop
        base = Signal(range(4))
        m.d.comb += base.eq(out.q_count - out.pop)
        n_push = Mux(en, pay.push_a + pay.push_b, 0)
        m.d.sync += out.q_count.eq(base + n_push)
        for i in range(3):
            after_pop = Mux(out.pop, kept[i], q[i]) if kept[i] is not None else Mux(out.pop, 0, q[i])
            m.d.sync += q[i].eq(_chain([(en & pay.push_a & (base == i), pay.beat_a),
                                        (en & pay.push_b & (base + 1 == i), pay.beat_b)], after_pop))

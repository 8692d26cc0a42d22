"""Where parsing stops, and the request line: the grammar checks of every byte, from the tokenizer's states.

TokenBeat ─▶ per-lane checks (state, byte class, a 9-byte window) ─▶ the packet's first stop ─▶ EventBeat

Each lane's byte is judged against ``docs/parser.md`` from the state the tokenizer reports for it. Rules that need more
than the state (an empty method or target, the version's exact 8 bytes, the method's spelling) read a window of the
states of the 9 bytes before the lane, kept across beats, and the lane features the tokenizer computed beside its
prefix tree (which word the bytes before a lane spell). All lanes are judged in parallel.

A lane *stops* the packet on a grammar error, on the LF that completes the header block, or at the byte with index
``max_header_bytes`` (which is not parsed). The only feedback loop is one bit: whether the packet already stopped.
A packet that ends before any stop stops at its last beat with ``truncated``. Field-line rules that depend on earlier
lines (a duplicate Host, a bad Content-Length ...) are decided later, by the commit stage, and may stop the packet
sooner; this unit marks every committing LF so that stage can.

Latency: :data:`EVENTS_LATENCY` cycles, one beat per cycle.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..bus.packet import check_width
from .layouts import ErrorFlag, Method, Version
from .tokenizer import STATE_BITS, Tok, TokenBeat

__all__ = ["Events", "EventBeat", "EVENTS_LATENCY", "WINDOW"]

EVENTS_LATENCY = 2
#: Bytes of history each lane can see: the version's 8 bytes and the SP before them.
WINDOW = 9
_NONE = (1 << STATE_BITS) - 1          # a history slot before the packet's first byte
assert _NONE not in set(Tok)


def EventBeat(width: int) -> data.StructLayout:
    """A beat judged: which lanes count, and, on the beat where parsing stops, how.

    ``live[k]``: lane k is parsed (valid, and before the stop). ``commit[k]``: lane k is an LF that commits a field
    line (live). ``pos``: the packet index of lane 0 (mod 2^16). On the beat that ``stop``s: ``stop_lane``,
    ``errors`` (one :class:`ErrorFlag`, or none with ``complete``) and ``header_len`` (bytes consumed). ``method_set``
    / ``version_set``: the request line's method / version is decided in this beat (``method``, ``version``).
    """
    return data.StructLayout({
        "tok": TokenBeat(width),
        "pos": 16,
        "live": width,
        "commit": width,
        "stop": 1,
        "stop_lane": range(width),
        "errors": len(ErrorFlag),
        "complete": 1,
        "header_len": 16,
        "method_set": 1,
        "method": Method,
        "version_set": 1,
        "version": Version,
    })


def _StopRecord(width: int) -> data.StructLayout:
    return data.StructLayout({"stop": 1, "errors": len(ErrorFlag), "complete": 1, "lane": range(width),
                              "consumed": range(width + 1)})


class Events(wiring.Component):
    """Per-lane grammar checks and the packet's first stop.

    Parameters
    ----------
    width : int
        W, bytes per beat: 4, 8 or 16.

    Attributes
    ----------
    i_stream : In(stream.Signature(TokenBeat(W)))
        The tokenizer's output.
    o_stream : Out(stream.Signature(EventBeat(W)))
        The same beats, :data:`EVENTS_LATENCY` cycles later, judged.
    max_header_bytes : In(16)
        The limit (``limits.max_header_bytes``, 1..65535); hold it steady while packets flow.
    """

    def __init__(self, width: int = 8):
        self.width = check_width(width)
        super().__init__({
            "i_stream": In(stream.Signature(TokenBeat(width))),
            "o_stream": Out(stream.Signature(EventBeat(width))),
            "max_header_bytes": In(16),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.width
        ce = Signal()
        m.d.comb += [ce.eq(~self.o_stream.valid | self.o_stream.ready), self.i_stream.ready.eq(ce)]
        tok = self.i_stream.payload
        beat = tok.beat
        take = Signal()
        m.d.comb += take.eq(self.i_stream.valid & ce)

        # The window: the last WINDOW bytes and states of this packet before this beat (NONE before its start).
        hist_s = [Signal(STATE_BITS, name=f"hist_s{j}", init=_NONE) for j in range(WINDOW)]
        # (The history is cleared by each packet's last beat, so a first beat finds it empty without a mux on the way.)
        ext_s = list(hist_s) + [tok.state[k] for k in range(W)]
        with m.If(take):
            m.d.sync += [h.eq(Mux(beat.last, _NONE, v)) for h, v in zip(hist_s, ext_s[W:])]

        # The packet index of lane 0; the lane holding index max_header_bytes (compared per lane with limit - k).
        pos = Signal(16)
        beat_pos = Signal(16)
        m.d.comb += beat_pos.eq(pos)
        with m.If(take):
            m.d.sync += pos.eq(Mux(beat.last, 0, beat_pos + W))
        limit_at = []
        for k in range(W):
            lk = Signal(17, name=f"limit_minus{k}")
            m.d.sync += lk.eq(self.max_header_bytes - k)      # a register: the limit changes between packets only
            limit_at.append(lk)

        # Stage 1: every lane judged.
        s1 = {name: Signal(W, name=f"s1_{name}") for name in ("valid", "stop", "commit", "limit", "complete")}
        s1_err = [Signal(len(ErrorFlag), name=f"s1_err{k}") for k in range(W)]
        s1_method = [Signal(Method, name=f"s1_method{k}") for k in range(W)]
        s1_mend = Signal(W)
        s1_vend = Signal(W)
        s1_v11 = Signal(W)
        s1_tok = Signal(TokenBeat(W))
        s1_pos = Signal(16)
        s1_pos_next = Signal(16)                            # s1_pos + W
        s1_valid = Signal()
        for k in range(W):
            j = WINDOW + k                                  # lane k's index in the window
            err, complete, commit, mend, method, vend, v11 = self._judge(m, k, tok, ext_s, j)
            valid = Mux(beat.last, k < beat.n_valid, 1)
            at_limit = (Cat(beat_pos, Const(0, 1)) == limit_at[k])
            with m.If(ce):
                m.d.sync += [
                    s1["valid"][k].eq(valid),
                    s1["limit"][k].eq(at_limit),
                    s1["stop"][k].eq(valid & (at_limit | (err != 0) | complete)),
                    s1["commit"][k].eq(commit),
                    s1["complete"][k].eq(complete),
                    s1_err[k].eq(err), s1_method[k].eq(method),
                    s1_mend[k].eq(mend), s1_vend[k].eq(vend), s1_v11[k].eq(v11),
                ]
        with m.If(ce):
            m.d.sync += [s1_tok.eq(tok), s1_pos.eq(beat_pos), s1_pos_next.eq(beat_pos + W),
                         s1_valid.eq(self.i_stream.valid)]

        # Stage 2: the packet's first stop. The loop is the one bit ``stopped``; the first stopping lane's record is
        # picked by a tree of 2:1 muxes (log2 W levels), not a priority chain.
        stopped = Signal()
        lg = W.bit_length() - 1
        records = []
        for k in range(W):
            rec = Signal(_StopRecord(W), name=f"stop_rec{k}")
            lim = s1["limit"][k]
            m.d.comb += [rec.stop.eq(s1["stop"][k]),
                         rec.errors.eq(Mux(lim, ErrorFlag.header_too_large, s1_err[k])),
                         rec.complete.eq(~lim & s1["complete"][k]),
                         rec.lane.eq(k), rec.consumed.eq(k + ~lim)]           # lanes consumed up to and with this one
            records.append(rec)
        while len(records) > 1:
            merged = []
            for a, b in zip(records[0::2], records[1::2]):
                rec = Signal(_StopRecord(W))
                m.d.comb += rec.eq(Mux(a.stop, a, b))
                m.d.comb += rec.stop.eq(a.stop | b.stop)
                merged.append(rec)
            records = merged
        first_stop = records[0]
        here = Signal()
        m.d.comb += here.eq(~stopped & first_stop.stop)
        seen = Signal(W)                                    # a stop in lanes 0..k
        m.d.comb += seen.eq(Cat(*(s1["stop"][:k + 1].any() for k in range(W))))
        live = Signal(W)
        m.d.comb += live.eq(Mux(stopped, 0, ~seen & s1["valid"]))
        method = Const(0, 4)
        for k in range(W):                                  # at most one lane ends the method
            method = method | Mux(s1_mend[k], s1_method[k], 0)

        # A beat's index is a multiple of W, so index + lanes is a concatenation; only index + W needs an adder, and
        # that one was made in stage 1.
        def index_plus(n):
            return Mux(n[lg], s1_pos_next, Cat(n[:lg], s1_pos[lg:]))

        out = self.o_stream.payload
        n_valid = s1_tok.beat.n_valid
        truncated = ~stopped & ~first_stop.stop & s1_tok.beat.last
        with m.If(ce):
            m.d.sync += self.o_stream.valid.eq(s1_valid)
            with m.If(s1_valid):
                m.d.sync += stopped.eq(~s1_tok.beat.last & (stopped | here))
            m.d.sync += [
                out.tok.eq(s1_tok), out.pos.eq(s1_pos), out.live.eq(live), out.commit.eq(s1["commit"] & live),
                out.stop.eq(here | truncated),
                out.stop_lane.eq(first_stop.lane),
                out.errors.eq(Mux(here, first_stop.errors, ErrorFlag.truncated)),
                out.complete.eq(here & first_stop.complete),
                # Bytes consumed: through the stop byte, but not a byte beyond the limit; the whole packet if none.
                out.header_len.eq(Mux(here, index_plus(first_stop.consumed), index_plus(n_valid))),
                out.method_set.eq((s1_mend & live).any()), out.method.eq(method),
                out.version_set.eq((s1_vend & live).any()),
                out.version.eq(Mux((s1_v11 & s1_vend).any(), Version.HTTP_1_1, Version.HTTP_1_0)),
            ]
        return m

    def _judge(self, m, k, tok, ext_s, j):
        """Lane ``k``'s error flag (one-hot or 0), and whether it completes the block, commits a line, ends the method
        (with the method's code) or ends a valid version (and whether it is 1.1)."""
        c, state, feat = tok.feat.cls[k], tok.state[k], tok.feat
        st = {t: Signal(name=f"l{k}_is_{t.name.lower()}") for t in Tok}
        for t in Tok:
            m.d.comb += st[t].eq(state == t)
        prev = ext_s[j - 1]
        E = ErrorFlag
        err = Signal(len(ErrorFlag), name=f"l{k}_err")
        bad_rl = Const(E.bad_request_line, len(E))

        def flag(f):
            return Const(f, len(E))

        # The version's 8 bytes are lanes j-8 .. j-1 when the target's SP is at j-9.
        version_began_8_ago = (ext_s[j - 8] == Tok.VERSION) & (ext_s[j - 9] == Tok.TARGET)
        v11 = feat.v11[k]
        v_ok = version_began_8_ago & (feat.v10[k] | v11)
        lf_err = flag(E.bare_cr_lf)
        with m.If(st[Tok.METHOD]):
            m.d.comb += err.eq(Mux(c.lf, lf_err, Mux(c.tchar, 0, Mux(c.sp & (prev != _NONE), 0, bad_rl))))
        with m.If(st[Tok.TARGET]):
            m.d.comb += err.eq(Mux(c.lf, lf_err, Mux(c.vchar, 0, Mux(c.sp & (prev != Tok.METHOD), 0, bad_rl))))
        with m.If(st[Tok.VERSION]):
            m.d.comb += err.eq(Mux(c.lf, lf_err, Mux(c.cr, Mux(v_ok, 0, bad_rl), Mux(version_began_8_ago, bad_rl, 0))))
        with m.If(st[Tok.CR_SEEN]):
            m.d.comb += err.eq(Mux(c.lf, 0, lf_err))
        with m.If(st[Tok.LINE_START]):
            m.d.comb += err.eq(Mux(c.lf, lf_err, Mux(c.cr | c.tchar, 0,
                                                     Mux(c.ws, flag(E.obs_fold), flag(E.bad_field_name)))))
        with m.If(st[Tok.NAME]):
            m.d.comb += err.eq(Mux(c.lf, lf_err, Mux(c.tchar | c.colon, 0,
                                                     Mux(c.ws, flag(E.ws_before_colon), flag(E.bad_field_name)))))
        with m.If(st[Tok.VALUE]):
            m.d.comb += err.eq(Mux(c.lf, lf_err, Mux(c.cr | c.ws | c.fvchar, 0, flag(E.bad_field_value))))
        lf_after_cr = st[Tok.CR_SEEN] & c.lf
        complete = lf_after_cr & (prev == Tok.LINE_START)
        commit = lf_after_cr & (prev == Tok.VALUE)

        # The method ends at this SP; the lane features say which token the bytes before it are, if any.
        mend = st[Tok.METHOD] & c.sp & (prev != _NONE)
        spelled = feat.method[k].as_value()
        method = Mux(spelled == Method.NONE, Method.OTHER, spelled)
        vend = st[Tok.VERSION] & c.cr & v_ok
        return err, complete, commit, mend, method, vend, v11

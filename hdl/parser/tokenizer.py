"""The header parser's tokenizer: the request-line and header-line state of every byte, W bytes per cycle.

beat ─▶ per-lane transition maps ─▶ registered prefix tree ─▶ one small loop mux ─▶ per-lane states ─▶ beat + states

The state machine (``docs/parser.md``) is cut down to what decides the next state. Seven states, three bits:

========== ===================================================================
METHOD      the request line's method
TARGET      the request target
VERSION     the version (its length and spelling are checked beside it, from a window of bytes)
CR_SEEN     after a CR: an LF must follow (it ends the request line, a field line or the header block)
LINE_START  the first byte of a field line
NAME        a field name
VALUE       a field value
========== ===================================================================

Each byte moves the state on only through three classes: SP, CR and ':' (:func:`next_state`). Everything a byte
*means* in a state (errors, the end of a name, a committed line) is decided behind the tokenizer from the state it
reports. What an erroring byte moves to does not matter, because parsing stops at the first error.

Structure. A byte's class picks its lane's *transition map*: the next state for each of the seven states (21 bits).
The maps of lanes 0..k are composed in a registered Sklansky prefix tree (log2 W levels; lane pairs are composed in
the first stage straight from their two classes). The only feedback loop is the state between beats: one 7:1 mux of
the beat's whole map. The same cycle resolves every lane's state from the prefix maps. Latency is
:data:`TOKENIZER_LATENCY` cycles at one beat per cycle, whatever the content.
"""

from __future__ import annotations

import enum

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..bus.packet import ByteBeat, check_width
from .classify import COLON, CR, SP, ByteClass, LaneFeatures, SpellWindow, SPELL_CHARS

__all__ = ["Tok", "next_state", "Tokenizer", "TokenBeat", "TOKENIZER_LATENCY", "STATE_BITS"]


class Tok(enum.IntEnum):
    METHOD = 0
    TARGET = 1
    VERSION = 2
    CR_SEEN = 3
    LINE_START = 4
    NAME = 5
    VALUE = 6


STATE_BITS = 3
N_STATES = len(Tok)
_OTHER, _SP, _CR, _COLON = range(4)      # a byte's transition class


def _code(byte: int) -> int:
    return {SP: _SP, CR: _CR, COLON: _COLON}.get(byte, _OTHER)


def _next(state: int, code: int) -> int:
    if state == Tok.METHOD:
        return Tok.TARGET if code == _SP else Tok.METHOD
    if state == Tok.TARGET:
        return Tok.VERSION if code == _SP else Tok.TARGET
    if state == Tok.CR_SEEN:
        return Tok.LINE_START
    if state == Tok.NAME:
        return Tok.VALUE if code == _COLON else Tok.NAME
    if code == _CR:                                      # VERSION, LINE_START, VALUE
        return Tok.CR_SEEN
    return {Tok.VERSION: Tok.VERSION, Tok.LINE_START: Tok.NAME, Tok.VALUE: Tok.VALUE}[Tok(state)]


def next_state(state: int, byte: int) -> int:
    """The reference step: the state after ``byte`` from ``state``."""
    return _next(state, _code(byte))


def _map_const(codes) -> int:
    """The composed transition map of bytes with these classes, packed 3 bits per start state."""
    word = 0
    for s in range(N_STATES):
        t = s
        for c in codes:
            t = _next(t, c)
        word |= t << (STATE_BITS * s)
    return word


MAP_BITS = STATE_BITS * N_STATES


def _entry(word, state):
    """Entry ``state`` (a 3-bit value) of a packed map: a 7:1 mux."""
    return Array(word[STATE_BITS * s:STATE_BITS * (s + 1)] for s in range(N_STATES))[state]


def _compose(m, first, then, name):
    """The map of ``first`` followed by ``then``: for each start state, ``then``'s entry at ``first``'s."""
    out = Signal(MAP_BITS, name=name)
    m.d.comb += out.eq(Cat(*(_entry(then, first[STATE_BITS * s:STATE_BITS * (s + 1)]) for s in range(N_STATES))))
    return out


def TokenBeat(width: int) -> data.StructLayout:
    """A beat with the tokenizer's state *before* each of its bytes (``state[k]``, a :class:`Tok`)."""
    return data.StructLayout({
        "beat": ByteBeat(width),
        "first": 1,                                     # the packet's first beat
        "state": data.ArrayLayout(STATE_BITS, width),
        "feat": LaneFeatures(width),                    # each lane's classes and the words before it
    })


def tokenizer_latency(width: int) -> int:
    """Cycles from a beat's acceptance to its states on ``o_stream`` (with ``o_stream`` ready)."""
    return check_width(width).bit_length()             # pairs, log2(W) - 1 tree levels, resolve: 3/4/5 for 4/8/16


TOKENIZER_LATENCY = {w: tokenizer_latency(w) for w in (4, 8, 16)}


class Tokenizer(wiring.Component):
    """Per-lane request/header-line states of a byte stream, at one beat per cycle.

    Parameters
    ----------
    width : int
        W, bytes per beat: 4, 8 or 16.

    Attributes
    ----------
    i_stream : In(stream.Signature(ByteBeat(W)))
        Packets; each starts in state METHOD.
    o_stream : Out(stream.Signature(TokenBeat(W)))
        The same beats, :func:`tokenizer_latency` cycles later, with ``first`` and the state before each byte.
        Lanes past ``n_valid`` carry don't-care states.
    """

    def __init__(self, width: int = 8):
        self.width = check_width(width)
        super().__init__({
            "i_stream": In(stream.Signature(ByteBeat(width))),
            "o_stream": Out(stream.Signature(TokenBeat(width))),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.width
        # One enable for the whole pipeline: it moves when its output can.
        ce = Signal()
        m.d.comb += [ce.eq(~self.o_stream.valid | self.o_stream.ready), self.i_stream.ready.eq(ce)]

        first = Signal(init=1)                          # the next beat taken starts a packet
        beat_no = Signal(2)                             # the beat's index in its packet, saturating at 3
        take = Signal()
        m.d.comb += take.eq(self.i_stream.valid & ce)
        with m.If(take):
            m.d.sync += [first.eq(self.i_stream.payload.last),
                         beat_no.eq(Mux(self.i_stream.payload.last, 0, Mux(beat_no == 3, 3, beat_no + 1)))]

        # Stage 1: each lane's class, and lane pairs' maps composed straight from their two classes (one LUT4 each).
        # Beside them, the first step of the lane features (classes and character hits).
        beat = self.i_stream.payload
        codes = []
        for k in range(W):
            b = beat.data[k]
            code = Signal(2, name=f"code{k}")
            m.d.comb += code.eq(Cat((b == SP) | (b == COLON), (b == CR) | (b == COLON)))
            codes.append(code)
        single = Array(Const(_map_const([c]), MAP_BITS) for c in range(4))
        pair = Array(Const(_map_const([c0, c1]), MAP_BITS) for c1 in range(4) for c0 in range(4))
        level = []
        for k in range(W):
            mk = Signal(MAP_BITS, name=f"p1_map{k}")
            if k % 2 == 0:
                m.d.comb += mk.eq(single[codes[k]])
            else:
                m.d.comb += mk.eq(pair[Cat(codes[k - 1], codes[k])])
            level.append(mk)
        spell = SpellWindow(W)
        step1 = spell.first_step(beat)
        cls1 = [Signal(ByteClass, name=f"p1_cls{k}") for k in range(W)]
        hits1 = [Signal(len(SPELL_CHARS), name=f"p1_hits{k}") for k in range(W)]
        beat_no1 = Signal(2)
        with m.If(ce):
            m.d.sync += [r.eq(c) for r, (c, _) in zip(cls1, step1)]
            m.d.sync += [r.eq(h) for r, (_, h) in zip(hits1, step1)]
            m.d.sync += beat_no1.eq(beat_no)
        side = Signal(TokenBeat(W), name="p0_side")
        m.d.comb += [side.beat.eq(beat), side.first.eq(first)]
        stage = self._register(m, ce, self.i_stream.valid, side, level, "p1")

        # Tree levels: in each group of g lanes, the upper half is prefixed by the lower half's last prefix. The first
        # level also finishes the lane features.
        g = 4
        while g <= W:
            valid, side_r, maps = stage
            nxt = []
            for k in range(W):
                lo = k - k % g + g // 2 - 1
                nxt.append(_compose(m, maps[lo], maps[k], f"l{g}_map{k}") if k % g >= g // 2 else maps[k])
            if g == 4:
                side_f = Signal(TokenBeat(W), name="p1_side_f")
                feat = spell.second_step(m, ce & valid, side_r.first, beat_no1, hits1, cls1)
                m.d.comb += [side_f.eq(side_r), side_f.feat.eq(feat)]
                side_r = side_f
            stage = self._register(m, ce, valid, side_r, nxt, f"p{g}")
            g *= 2

        # The loop: the state before this beat, and every lane resolved from it.
        valid, side_r, maps = stage
        cur = Signal(STATE_BITS, init=Tok.METHOD, name="state")
        out = self.o_stream.payload
        with m.If(ce):
            m.d.sync += self.o_stream.valid.eq(valid)
            m.d.sync += [out.eq(side_r), out.state[0].eq(cur)]
            m.d.sync += [out.state[k].eq(_entry(maps[k - 1], cur)) for k in range(1, W)]
            with m.If(valid):
                m.d.sync += cur.eq(_entry(maps[W - 1], cur))
                with m.If(side_r.beat.last):
                    m.d.sync += cur.eq(Tok.METHOD)
        return m

    def _register(self, m, ce, valid, side, maps, name):
        """One pipeline stage: the beat and what rides with it (``side``, a :func:`TokenBeat`), and the lanes' maps,
        moved on ``ce``."""
        v = Signal(name=f"{name}_valid")
        side_r = Signal(TokenBeat(self.width), name=f"{name}_side")
        regs = [Signal(MAP_BITS, name=f"{name}_r{k}") for k in range(len(maps))]
        with m.If(ce):
            m.d.sync += [v.eq(valid), side_r.eq(side)]
            m.d.sync += [r.eq(x) for r, x in zip(regs, maps)]
        return v, side_r, regs

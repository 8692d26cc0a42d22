"""The header parser's field-value trackers: what each field value is, at the CR that ends it, W bytes per cycle.

beat ─▶ lane flags ─▶ segmented prefix scan ─┬▶ line-state loop (2:1 muxes) ───────────▶ lane masks
                                             └▶ per slot: pick at its CR ─▶ merge ──────────────┐
     └▶ per lane: 20-byte windows (≥ 2^64, digit run, "chunked") ─▶ per slot: pick ─▶ hold ──────┴▶ records

A value's *trimmed* form drops its leading and trailing WS (SP, HTAB). At the CR that ends it, a :data:`ValueRecord`
gives ``len``, ``digits_ok``, the last 20 digits as BCD, ``overflow`` (20 digits, ≥ 2^64), ``chunked`` and ``bearer``
(with ``token_len``); lane masks mark the value's bytes from its first non-WS byte (``val_byte``), its non-WS bytes
(``val_keep``) and the same from its second word (``tok_byte``, ``tok_keep``: a Bearer token) for the fingerprints.

A field line takes at least 4 bytes (``a:`` CR LF), so before a packet's first error a beat holds at most W/4
value-ending CRs (:func:`value_slots`). Records are kept per *slot* (the beat's first W/4 such CRs in lane order, with
a one-hot lane), not per lane: the wide work (positions, BCD windows) is done W/4 times a beat, not W times.

Why this shape: the parser it replaces stepped W bytes through one chain per cycle (26 MHz). Here every question is
about positions, answered per lane in parallel; only the line's state at the beat boundary is fed back.

- **Line scan.** From per-lane flags (value byte, non-WS, *word start*: a non-WS byte after one that is not), a
  Sklansky scan (one registered level per stage) gives each lane, since the last non-value byte: the number of
  word starts (0..3+), the first and last start, the last non-WS byte (lane indices), a non-digit non-WS byte, and
  whether the last non-SP byte before the last start ends a word "bearer" (any case, preceded by WS or the colon).
- **Loop.** :data:`LineState` (start count, three positions, three flags) is the only feedback: each field is a
  2:1 or 3:1 mux between the carried value and the beat's. Positions are beat index · W + lane (a concatenation),
  17 bits, so lengths (differences, at the output stage) are exact below 2^17 bytes and saturate at 65 535.
  ``len`` = last non-WS − first non-WS + 1; ``digits_ok`` = no non-digit and at most one word; ``bearer`` = two
  words, the first "bearer" and only SPs after it; ``token_len`` = last non-WS − second word's start + 1.
  Each lane merges only the start count (for the masks); each slot picks the scan's summary before its CR (M1)
  and merges it with the state before the beat (M2).
- **Windows.** What depends on the value's last bytes needs no line state: at every lane, the last 20 nibbles,
  the digit-run mask ending there (the BCD: a digits-only trimmed value follows WS or the colon), whether they
  compare ≥ 2^64's digits (lexicographic: the first differing digit decides; a tree, two levels a stage) and whether
  the last seven bytes are "chunked". Each slot picks these at its *window lane* (the last non-WS byte before its
  CR, found beside the scan); a slot with none in its beat takes the hold register, the window at the last non-WS
  byte before the beat (trailing WS may span beats). ``overflow`` is the compare with ``len`` = 20, ``chunked``
  the match with ``len`` = 7.

Latency, :func:`value_latency`: flags (1), scan inputs (1), line scan (log2 W), pick (1), merge (1), records (1); the
window path runs beside it and ends in the same stage. One beat per cycle whatever the content. Records are exact at
every value-ending CR before the packet's first error (where the tokenizer's states are). Each packet starts afresh:
its first byte is never a value byte, and ``first`` also clears what the line state carries.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..bus.packet import check_width
from .classify import ByteClass, classify
from .layouts import LEN_MAX
from .stages import onehot_index, register_stage
from .tokenizer import Tok, TokenBeat

__all__ = ["ValueRecord", "ValueSlot", "ValueBeat", "ValueTracker", "LineState", "value_latency", "value_slots",
           "VALUE_LATENCY", "VALUE_DIGITS", "TWO_64", "POS_BITS", "MASKS"]

#: Digits held as BCD: enough for any 64-bit number, and the Content-Length limit.
VALUE_DIGITS = 20
BCD_BITS = 4 * VALUE_DIGITS
#: 2^64 in decimal: a value of 20 digits overflows if its digits compare >= these.
TWO_64 = b"18446744073709551616"
assert len(TWO_64) == VALUE_DIGITS and int(TWO_64) == 1 << 64
#: Byte positions in a packet are kept modulo 2^POS_BITS, so lengths are exact (then saturated) below 2^17 bytes.
POS_BITS = 17
LEN_BITS = 16
# Letters matched case-insensitively for "chunked" and "bearer", one flag each per byte.
_LETTERS = "abcdehknru"
_WINDOW = 6                                   # bytes of letter history: "chunked" ends 6 bytes after its 'c'
#: The lane masks of :func:`ValueBeat`.
MASKS = ("val_byte", "val_keep", "tok_byte", "tok_keep")

#: What one lane reports; valid where ``end`` is set (the lane holds the CR that ends a value).
ValueRecord = data.StructLayout({
    "end": 1,
    "len": LEN_BITS,                          # trimmed length, saturated at 65535
    "digits_ok": 1,                           # every byte a digit (true for an empty value)
    "bcd": BCD_BITS,                          # the last 20 digits, digit 0 in bits 0..3 (exact when digits_ok)
    "overflow": 1,                            # digits_ok, len == 20 and the value >= 2^64
    "chunked": 1,                             # "chunked", any case
    "bearer": 1,                              # [Bb][Ee][Aa][Rr][Ee][Rr] +[^ \t]+
    "token_len": LEN_BITS,                    # the token's length when bearer, else 0
})


def value_slots(width: int) -> int:
    """Value-ending CRs a beat can hold before its packet's first error: W/4 (a field line takes at least 4 bytes)."""
    return check_width(width) // 4


def ValueSlot(width: int) -> data.StructLayout:
    """One value-ending CR of a beat: its lane (one-hot ``cr``) and its :data:`ValueRecord` (``rec.end``: the slot
    holds one)."""
    return data.StructLayout({"cr": check_width(width), "rec": ValueRecord})


def ValueBeat(width: int) -> data.StructLayout:
    """The tokenizer's beat passed through (``tok``); the lanes holding a value-ending CR (``end``); the beat's first
    :func:`value_slots` such CRs in lane order with their records (``slot``); and four lane masks: ``val_byte``
    (value bytes from the first non-WS one on), ``val_keep`` (non-WS value bytes), ``tok_byte`` and ``tok_keep`` (the
    same from the value's second word on: a Bearer token)."""
    return data.StructLayout({
        "tok": TokenBeat(width),
        "end": width,
        "slot": data.ArrayLayout(ValueSlot(width), value_slots(width)),
        **{key: width for key in MASKS},
    })


def _levels(width: int) -> int:
    return width.bit_length() - 1


def value_latency(width: int) -> int:
    """Cycles from a beat's acceptance to its records on ``o_stream`` (with ``o_stream`` ready): 7/8/9 for 4/8/16."""
    return 5 + _levels(check_width(width))


VALUE_LATENCY = {w: value_latency(w) for w in (4, 8, 16)}


def _node_layout(width: int) -> data.StructLayout:
    """A lane range's summary in the line scan. After the range's last non-value byte (``hr``: there is one), or over
    the whole range: word starts (``cnt``, saturated at 3), the first (``fs``) and last (``ls``) start, the last
    non-WS byte (``ln``), a non-digit non-WS byte (``nd``); and over the whole range, the last non-SP byte
    (``ns``) with its ``bearer`` flag. ``ls_found``/``ls_nsb``: the non-SP byte before ``ls``, if in the range."""
    idx = _levels(width)
    return data.StructLayout({
        "hr": 1, "cnt": 2, "fs_v": 1, "fs": idx, "ls_v": 1, "ls": idx, "ls_found": 1, "ls_nsb": 1,
        "ln_v": 1, "ln": idx, "nd": 1, "ns_found": 1, "ns_bkb": 1,
    })


#: The line's state before a lane (and, in the loop, before a beat). Positions: ``fb`` the byte before the first
#: word, ``l`` the last non-WS byte, ``sb`` the byte before the last word. ``s_nsb``: the last non-SP byte before the
#: last word ends "bearer" as a word of its own. ``nsb``: the same for the last non-SP byte so far (not per line).
LineState = data.StructLayout({
    "starts": 2, "fb": POS_BITS, "l": POS_BITS, "sb": POS_BITS, "s_nsb": 1, "nd": 1, "nsb": 1,
})

#: The window at a lane: its BCD (zero above its digit run), ">= 2^64", "chunked"; ``any``: a non-WS byte in range.
_Window = data.StructLayout({"any": 1, "bcd": BCD_BITS, "ge": 1, "ck7": 1})


def _history(m, ce, valid, lanes, depth, name):
    """The ``depth`` bytes' values before the beat at a stage (oldest first), shifted in as each beat moves on."""
    hist = [Signal(lanes[0].shape(), name=f"{name}{i}") for i in range(depth)]
    with m.If(ce & valid):
        m.d.sync += [h.eq(x) for h, x in zip(hist, (hist + list(lanes))[-depth:])]
    return hist


def _comb(m, layout, name, **fields):
    out = Signal(layout, name=name)
    m.d.comb += [getattr(out, k).eq(v) for k, v in fields.items()]
    return out


def _line_op(m, lo, hi, name):
    """The summary of range ``lo`` followed by range ``hi``."""
    total = lo.cnt + hi.cnt
    return _comb(
        m, lo.shape(), name,
        hr=lo.hr | hi.hr,
        cnt=Mux(hi.hr, hi.cnt, Mux(total > 3, 3, total)),
        fs_v=Mux(hi.hr, hi.fs_v, lo.fs_v | hi.fs_v),
        fs=Mux(hi.hr | ~lo.fs_v, hi.fs, lo.fs),
        ls_v=hi.ls_v | (~hi.hr & lo.ls_v),
        ls=Mux(hi.ls_v, hi.ls, lo.ls),
        ls_found=Mux(hi.ls_v, hi.ls_found | lo.ns_found, lo.ls_found),
        ls_nsb=Mux(hi.ls_v, Mux(hi.ls_found, hi.ls_nsb, lo.ns_bkb), lo.ls_nsb),
        ln_v=hi.ln_v | (~hi.hr & lo.ln_v),
        ln=Mux(hi.ln_v, hi.ln, lo.ln),
        nd=hi.nd | (~hi.hr & lo.nd),
        ns_found=lo.ns_found | hi.ns_found,
        ns_bkb=Mux(hi.ns_found, hi.ns_bkb, lo.ns_bkb),
    )


def _window_op(m, lo, hi, name):
    """The window at the last non-WS byte of ``lo`` followed by ``hi``."""
    out = Signal(_Window, name=name)
    m.d.comb += [out.as_value().eq(Mux(hi.any, hi.as_value(), lo.as_value())), out.any.eq(lo.any | hi.any)]
    return out


def _sklansky_level(m, n, items, op, name):
    """Level ``n`` of a Sklansky scan: in each group of 2^(n+1) lanes, the upper half is prefixed by the lower
    half's last prefix."""
    g = 2 << n
    return [op(m, items[k - k % g + g // 2 - 1], items[k], f"{name}{k}") if k % g >= g // 2 else items[k]
            for k in range(len(items))]


def _lex_level(pairs):
    """One level of a lexicographic compare: (gt, eq) of adjacent digit groups, most significant first."""
    out = [(hg | (he & lg), he & le) for (hg, he), (lg, le) in zip(pairs[0::2], pairs[1::2])]
    return out + pairs[len(pairs) & ~1:]


def _lower(bits):
    """Per lane k: any of ``bits[0..k-1]``."""
    return Cat(*(bits[:k].any() for k in range(len(bits))))


def _upper(bits):
    """Per lane k: any of ``bits[k+1..]``."""
    return Cat(*(bits[k + 1:].any() for k in range(len(bits))))


def _before(idx, g, g_m1):
    """The position of the byte before lane ``idx`` of the beat with index ``g`` (``g_m1`` = g − 1)."""
    return Cat((idx - 1)[:len(idx)], Mux(idx == 0, g_m1, g))


class ValueTracker(wiring.Component):
    """Records of the field values ending in each beat, one per value slot, at one beat per cycle.

    Parameters
    ----------
    width : int
        W, bytes per beat: 4, 8 or 16.

    Attributes
    ----------
    i_stream : In(stream.Signature(TokenBeat(W)))
        The tokenizer's beats.
    o_stream : Out(stream.Signature(ValueBeat(W)))
        The same beats, :func:`value_latency` cycles later, with the value-ending CRs (``end``), the first W/4 of
        them as slots with their :data:`ValueRecord` (``slot[i].cr``, one-hot; ``slot[i].rec.end``: in use) and the
        lane masks. Exact for the lines before the packet's first error; what follows an
        error is don't-care, and each packet (``first``) starts afresh.
    """

    def __init__(self, width: int = 8):
        self.width = check_width(width)
        self.slots = value_slots(width)
        self._idx = _levels(width)
        super().__init__({
            "i_stream": In(stream.Signature(TokenBeat(width))),
            "o_stream": Out(stream.Signature(ValueBeat(width))),
        })

    def elaborate(self, platform):
        m = Module()
        # One enable for the whole pipeline: it moves when its output can.
        ce = Signal()
        m.d.comb += [ce.eq(~self.o_stream.valid | self.o_stream.ready), self.i_stream.ready.eq(ce)]
        st = {1: self._classes(m, ce)}
        st[2] = self._leaves(m, ce, st[1])
        self._line_scan(m, ce, st)
        self._line_merge(m, ce, st)
        windows = self._windows(m, ce, st)
        self._records(m, ce, st, windows)
        return m

    def _classes(self, m, ce):
        """Stage 1: each lane's classes, the beat's index in its packet."""
        W, p = self.width, self.i_stream.payload
        g_bits = POS_BITS - self._idx
        last_g = Signal(g_bits)                     # the index of the last beat taken
        g, g_m1 = Signal(g_bits), Signal(g_bits)
        m.d.comb += [g.eq(Mux(p.first, 0, last_g + 1)), g_m1.eq(Mux(p.first, (1 << g_bits) - 1, last_g))]
        with m.If(self.i_stream.valid & ce):
            m.d.sync += last_g.eq(g)
        lanes = {key: [] for key in ("v", "nws", "pre", "nd", "nsp", "dig", "end", "let")}
        for k in range(W):
            b = p.beat.data[k]
            cls = ByteClass(classify(b))
            in_value = (p.state[k] == Tok.VALUE) & (k < p.beat.n_valid)
            v = in_value & ~cls.cr
            for key, x in (("v", v), ("nws", v & ~cls.ws), ("pre", ~v | cls.ws), ("nd", v & ~cls.ws & ~cls.digit),
                           ("nsp", ~cls.sp), ("dig", cls.digit), ("end", in_value & cls.cr),
                           ("let", Cat(*((b & 0xDF) == ord(c.upper()) for c in _LETTERS)))):
                lanes[key].append(x)
        return register_stage(m, ce, "s1", {"valid": self.i_stream.valid, "tok": p, "g": g, "g_m1": g_m1, **lanes})

    def _leaves(self, m, ce, s1):
        """Stage 2: word starts, "bearer" ending a word, "chunked" ending at each lane; the beat's value-ending CRs as
        one-hot slots, in lane order."""
        W = self.width
        nws = _history(m, ce, s1["valid"], s1["nws"], 1, "h1_nws") + s1["nws"]
        pre = _history(m, ce, s1["valid"], s1["pre"], _WINDOW, "h1_pre") + s1["pre"]
        let = _history(m, ce, s1["valid"], s1["let"], _WINDOW, "h1_let") + s1["let"]

        def word(text, k):                          # ``text`` ends at lane k (any case)
            return Cat(*(let[_WINDOW + k - len(text) + 1 + i][_LETTERS.index(c)] for i, c in enumerate(text))).all()

        out = {key: s1[key] for key in ("valid", "tok", "g", "g_m1", "v", "nws", "nd", "nsp", "dig", "end")}
        out["st"] = [s1["nws"][k] & ~nws[k] for k in range(W)]
        out["bkb"] = [word("bearer", k) & pre[_WINDOW + k - 6] for k in range(W)]
        out["ck7"] = [word("chunked", k) for k in range(W)]
        rest, out["cr"] = Cat(*s1["end"]), []
        for _ in range(self.slots):
            first = rest & ~_lower(rest)
            out["cr"].append(first)
            rest = rest & ~first
        return register_stage(m, ce, "s2", out)

    def _line_scan(self, m, ce, st):
        """Stages 3 .. 2 + log2 W: each lane's summary of lanes 0..k (inclusive). Beside it, from stage 3, each slot's
        window lane (the last non-WS byte before its CR, if the beat has one) and the beat's last non-WS lane."""
        W, s2 = self.width, st[2]
        layout = _node_layout(W)
        nodes = [_comb(m, layout, f"leaf{k}", hr=~s2["v"][k], cnt=s2["st"][k], fs_v=s2["st"][k], fs=k,
                       ls_v=s2["st"][k], ls=k, ln_v=s2["nws"][k], ln=k, nd=s2["nd"][k], ns_found=s2["nsp"][k],
                       ns_bkb=s2["bkb"][k]) for k in range(W)]
        nws = Cat(*s2["nws"])
        # Window lanes: slot i's is the last non-WS lane below its CR; the last, the beat's last non-WS lane.
        cands = [nws & Cat(*(cr[k + 1:].any() for k in range(W))) for cr in s2["cr"]] + [nws]
        along = {key: s2[key] for key in ("valid", "tok", "g", "g_m1", "v", "nws", "st", "end", "cr")}
        along["win_at"] = [c & ~_upper(c) for c in cands]
        for n in range(self._idx):
            if n == 1:                              # the window lanes' numbers, for the nibble shifters
                along["win_j"] = [onehot_index(at) for at in along["win_at"]]
            nodes = _sklansky_level(m, n, nodes, _line_op, f"l{n}_")
            st[3 + n] = register_stage(m, ce, f"l{n}", {**along, "node": nodes})
            along = {key: st[3 + n][key] for key in along}
            nodes = st[3 + n]["node"]

    def _line_merge(self, m, ce, st):
        """The loop (the line state across beats); each lane's word-start count (for the masks); each slot's line
        summary before its CR, picked (M1) and merged with the state before the beat (M2)."""
        W, n = self.width, 2 + self._idx
        r = st[n]
        first = r["tok"].first
        ident = Signal(_node_layout(W), name="ident")          # all zero: the empty range
        state = Signal(LineState, name="line")                 # before the beat in ``r``
        before = [ident] + r["node"][:-1]
        starts = []
        for k, e in enumerate(before):
            total = state.starts + e.cnt
            starts.append(Mux(~e.hr & ~first, Mux(total > 3, 3, total), e.cnt))
        picked = []
        for i, cr in enumerate(r["cr"]):
            node = 0
            for k, e in enumerate(before):
                node = node | Mux(cr[k], e.as_value(), 0)
            pick = Signal(_node_layout(W), name=f"pick{i}")
            m.d.comb += pick.as_value().eq(node)
            picked.append(pick)
        with m.If(ce & r["valid"]):
            m.d.sync += state.eq(self._merge(m, state, r["node"][-1], first, r["g"], r["g_m1"], "merge_beat"))
        m1 = st[n + 1] = register_stage(m, ce, "m1", {
            **{k: r[k] for k in ("valid", "tok", "v", "nws", "st", "end", "cr", "g", "g_m1")},
            "starts": starts, "node": picked, "state": state})
        out = {k: m1[k] for k in ("valid", "tok", "end", "cr")}
        out.update((key, []) for key in MASKS)
        for k in range(W):
            v, nws, start, ln_starts = m1["v"][k], m1["nws"][k], m1["st"][k], m1["starts"][k]
            tok_byte = v & ((ln_starts + start) >= 2)
            for key, x in (("val_byte", v & ((ln_starts != 0) | start)), ("val_keep", nws), ("tok_byte", tok_byte),
                           ("tok_keep", tok_byte & nws)):
                out[key].append(x)
        out["line"] = [self._merge(m, m1["state"], e, m1["tok"].first, m1["g"], m1["g_m1"], f"merge{i}")
                       for i, e in enumerate(m1["node"])]
        st[n + 2] = register_stage(m, ce, "m2", out)

    def _merge(self, m, state, e, first, g, g_m1, name):
        """The line state after ``state`` followed by the range summarised by ``e`` (in the beat with index g)."""
        cont = ~e.hr & ~first                                   # the line goes on from ``state``
        total = state.starts + e.cnt
        return _comb(
            m, LineState, name,
            starts=Mux(cont, Mux(total > 3, 3, total), e.cnt),
            fb=Mux(cont & (state.starts != 0), state.fb, _before(e.fs, g, g_m1)),
            l=Mux(e.ln_v, Cat(e.ln, g), state.l),
            sb=Mux(e.ls_v, _before(e.ls, g, g_m1), state.sb),
            s_nsb=Mux(e.ls_v, Mux(e.ls_found, e.ls_nsb, state.nsb), state.s_nsb),
            nd=e.nd | (cont & state.nd),
            nsb=Mux(e.ns_found, e.ns_bkb, state.nsb),
        )

    def _windows(self, m, ce, st):
        """The window path: per lane up to the scan's last stage, then per slot; it ends in the stage of the M2.

        Per lane: ">= 2^64" (three stages: each digit of the 20-byte window against 2^64's and a first compare level,
        then two levels, then the last two), the digit-run mask (one stage) and "chunked" (from stage 2). At the scan's
        last stage (S) each slot picks the nibbles, mask and flags at its window lane (one-hot); at S+1 the mask is
        applied, and a slot whose beat has no non-WS byte before its CR takes the held window (the last one before
        the beat: trailing WS may span beats).
        """
        W, levels = self.width, self._idx
        leaf = 2 + levels                                           # S: the scan's last stage
        s0 = st[leaf - 3]
        nib = [s0["tok"].beat.data[k][0:4] for k in range(W)]
        seq = _history(m, ce, s0["valid"], nib, VALUE_DIGITS - 1, "hg_nib") + nib
        cmp = []
        for k in range(W):
            window = [seq[VALUE_DIGITS - 1 + k - i] for i in reversed(range(VALUE_DIGITS))]   # most significant first
            cmp.append(_lex_level([(d > int(c), d == int(c)) for d, c in zip(window, TWO_64.decode())]))
        for n in (1, 2):
            cmp = register_stage(m, ce, f"g{n}", {"cmp": [Cat(*(x for pair in c for x in pair)) for c in cmp]})["cmp"]
            cmp = [_lex_level(_lex_level([(c[2 * i], c[2 * i + 1]) for i in range(len(c) // 2)])) for c in cmp]
        ge = [gt | eq for ((gt, eq),) in cmp]

        late = {"dig": st[2]["dig"], "ck7": st[2]["ck7"]}
        for n in range(3, leaf):
            late = register_stage(m, ce, f"d{n}", late)
        dig = _history(m, ce, st[leaf - 1]["valid"], late["dig"], VALUE_DIGITS - 1, "hd_dig") + late["dig"]
        masks = [Cat(*(Cat(*dig[VALUE_DIGITS - 1 + k - i:VALUE_DIGITS + k]).all() for i in range(VALUE_DIGITS)))
                 for k in range(W)]
        late = register_stage(m, ce, f"d{leaf}", {"ge": ge, "mask": masks, "ck7": late["ck7"]})

        sl = st[leaf]
        nib = [sl["tok"].beat.data[k][0:4] for k in range(W)]
        seq = _history(m, ce, sl["valid"], nib, VALUE_DIGITS - 1, "hw_nib") + nib
        raw = {key: [] for key in ("any", "nib", "mask", "ge", "ck7")}
        for at, j in zip(sl["win_at"], sl["win_j"]):
            # The 20 nibbles ending at lane j are seq[j .. j + 19]: a logarithmic shifter on j's bits (2:1 muxes),
            # a quarter of the logic of a one-hot pick of 20-nibble windows.
            v = seq
            for b in reversed(range(levels)):
                n_b = len(v) - (1 << b)
                v = [Mux(j[b], hi, lo) for lo, hi in zip(v[:n_b], v[1 << b:])]
            raw["nib"].append(Cat(*reversed(v)))
            for key, lanes in (("mask", late["mask"]), ("ge", late["ge"]), ("ck7", late["ck7"])):
                x = 0
                for k in range(W):
                    x = x | Mux(at[k], lanes[k], 0)
                raw[key].append(x)
            raw["any"].append(at.any())
        wa = register_stage(m, ce, "wa", {"valid": sl["valid"], **raw})

        held = Signal(_Window, name="held")                     # the window at the last non-WS byte before the beat
        items = []
        for i in range(len(wa["any"])):
            w = _comb(m, _Window, f"win{i}", any=wa["any"][i], ge=wa["ge"][i], ck7=wa["ck7"][i],
                      bcd=Cat(*(wa["nib"][i][4 * d:4 * d + 4] & wa["mask"][i][d].replicate(4)
                                for d in range(VALUE_DIGITS))))
            items.append(Mux(w.any, w.as_value(), held.as_value()))
        with m.If(ce & wa["valid"] & wa["any"][-1]):
            m.d.sync += held.eq(items[-1])
        return register_stage(m, ce, "wb", {"w": items[:-1]})["w"]

    def _records(self, m, ce, st, windows):
        """The output stage: each slot's lengths and flags from its line state, saturated, with its window."""
        W, m2 = self.width, st[4 + self._idx]
        o = self.o_stream.payload
        with m.If(ce):
            m.d.sync += [self.o_stream.valid.eq(m2["valid"]), o.tok.eq(m2["tok"]), o.end.eq(Cat(*m2["end"]))]
            m.d.sync += [getattr(o, key).eq(Cat(*m2[key])) for key in MASKS]
            for i, (cr, ln, win_bits) in enumerate(zip(m2["cr"], m2["line"], windows)):
                win = _Window(win_bits)
                seen = ln.starts != 0
                digits_ok = ~ln.nd & (ln.starts <= 1)
                bearer = (ln.starts == 2) & ln.s_nsb
                len_raw, tl_raw = (ln.l - ln.fb)[:POS_BITS], (ln.l - ln.sb)[:POS_BITS]
                rec = o.slot[i].rec
                m.d.sync += [
                    o.slot[i].cr.eq(cr),
                    rec.end.eq(cr.any()),
                    rec.len.eq(Mux(seen, Mux(len_raw[LEN_BITS:].any(), LEN_MAX, len_raw[:LEN_BITS]), 0)),
                    rec.digits_ok.eq(digits_ok),
                    rec.bcd.eq(win.bcd & seen.replicate(BCD_BITS)),
                    rec.overflow.eq(digits_ok & seen & (len_raw == VALUE_DIGITS) & win.ge),
                    rec.chunked.eq(seen & (len_raw == len("chunked")) & win.ck7),
                    rec.bearer.eq(bearer),
                    rec.token_len.eq(Mux(bearer, Mux(tl_raw[LEN_BITS:].any(), LEN_MAX, tl_raw[:LEN_BITS]), 0)),
                ]

"""The header parser's path capture and route-prefix match: ``path_len``, ``route_match`` and ``route_class``, W bytes
per cycle.

EventBeat ─▶ lane flags ─▶ '?' prefix OR ─▶ path start (loop) ─▶ byte rotate ─▶ mask tables (EBR per lane) ─▶ lane AND
          ─▶ running AND (loop) ─▶ hits ─▶ longest match ─▶ EventBeat + path_len, route_match, route_class

The *path* is the request target's bytes before its first '?' (``docs/parser.md``). Lane k holds a path byte iff it
is live, in state TARGET, not the SP that ends the target, and no '?' of this target is at or before it. The route
is the longest valid prefix-table entry that is a prefix of the path, ties to the lower index; with none,
``route_match`` = 0 and ``route_class`` = ``default_class``.

Why this shape. The parser it replaces kept the path's first 32 bytes in a register, written through its lane chain,
and compared them with 16 entries of 32 bytes in flip-flops. Here each path byte asks one question instead:
"which entries allow this byte at this position?". The table is a TCAM emulated in EBR: for each residue lane r,
a memory of (32/W)·256 words of 16 bits, where bit e of word (j div W, b) says entry e is valid and (j ≥ len_e or
its byte j is b), for the positions j ≡ r mod W. Once the beat's bytes are rotated so that path byte j sits in
lane j mod W, every lane reads its own table (one read port each), the beat's words are ANDed, and a running AND
covers the path's beats. Entry e matches iff its running bit is set and len_e ≤ path_len, so the bytes after the
path (its '?', the SP, the query, later lines) may be looked up too: their positions are at least path_len, where
every candidate entry allows any byte. Only positions 0..31 are looked up. The tables take 8 EBR at W = 4 and 8
(2048 x 16 or 1024 x 16 per lane) and 16 at W = 16 (512 x 16 per lane).

Only two things depend on earlier beats, and each is a small loop: whether a '?' was seen in this target (one
bit), and where the path starts (its lane s, and a count of the beats since, saturating at 32/W + 1: a load, or a
2- to 4-bit increment); the running AND is a third, one LUT per entry. ``path_len`` is a difference of positions
(the end of the last path byte minus the path's first byte, each loaded from a beat with no arithmetic in a loop),
never a count. Everything else runs per lane, in registered stages of at most about three LUT levels. The longest
match uses the pairwise "longer" order computed when an entry is committed (16 comparators at commit time, none per
packet), so it is two levels of AND and a one-hot select.

Positions are kept modulo 2^16 like the events unit's ``pos``, and that is exact: a path byte is live, so its index
is below ``max_header_bytes`` ≤ 65 535, and the path's end is at most 65 535; no saturation is needed.

Table update. ``pfx_commit`` copies the staging entry (``pfx_data``/``pfx_len``/``pfx_class``/``pfx_valid``) into
entry ``pfx_index``: the entry is latched, ``busy`` rises, ``i_stream.ready`` goes low until the beats already taken
have left (they are matched against the old table), then bit e of every word of every lane table is rewritten
(read, modify, write: one word per lane per cycle, all lanes at once) and the entry's length, class and valid flag
and the length order are updated. ``busy`` falls :func:`route_fill_cycles` cycles after the pipeline drained. A
pulse while ``busy`` is high is ignored: wait for ``busy`` to fall between commits. After reset every entry is
invalid.

Latency: :data:`ROUTE_LATENCY` cycles at one beat per cycle, whatever the content: lane flags (1), '?' OR and start
lane (1), loops (1), rotate (1), table read (1), lane AND and path length (1), beat AND and fits (1), running AND and
hits (1), longest match (1), class (1); 10 at every W. The three path fields are exact on each packet's stop beat
(``ev.stop``); earlier beats carry the path so far, later ones don't-care values.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, MemoryData
from amaranth.lib.wiring import In, Out

from ..bus.packet import check_width
from .events import EventBeat
from .layouts import PREFIX_BYTES, PREFIX_ENTRIES
from .stages import register_stage
from .tokenizer import STATE_BITS, Tok

__all__ = ["RouteMatcher", "RouteBeat", "route_latency", "ROUTE_LATENCY", "route_fill_cycles", "ROUTE_FILL_CYCLES",
           "mask_table"]

#: ``pfx_len``: 0..63, clamped to PREFIX_BYTES (the old parser's register field).
LEN_BITS = 6
#: Registered stages from ``i_stream`` to ``o_stream``: flags, '?' OR, loop, rotate, table read, lane AND (groups of
#: four), beat AND and lengths, running AND and hits, longest match, class.
_STAGES = 10


def RouteBeat(width: int) -> data.StructLayout:
    """An event beat, unchanged (``ev``), with the packet's path fields (exact on its stop beat)."""
    return data.StructLayout({
        "ev": EventBeat(width),
        "path_len": 16,
        "route_match": 1,
        "route_class": 4,
    })


def route_latency(width: int) -> int:
    """Cycles from a beat's acceptance to its output on ``o_stream`` (with ``o_stream`` ready): 10 at every W."""
    check_width(width)
    return _STAGES


ROUTE_LATENCY = {w: route_latency(w) for w in (4, 8, 16)}


def _table_depth(width: int) -> int:
    """Words of one lane table: 256 byte values for each of its 32/W positions."""
    return 256 * (PREFIX_BYTES // check_width(width))


def route_fill_cycles(width: int) -> int:
    """Cycles ``busy`` stays high after a commit once the pipeline has drained: one per lane-table word, the start
    and the read-modify-write tail (2 052 / 1 028 / 516 for W = 4 / 8 / 16)."""
    return _table_depth(width) + 4


ROUTE_FILL_CYCLES = {w: route_fill_cycles(w) for w in (4, 8, 16)}


def mask_table(width: int, prefixes) -> list[list[int]]:
    """The reference contents of the lane tables for ``prefixes`` (up to 16, each None or the prefix bytes, 0..32).

    Returns one list per lane r, indexed by ``b | (j div W) << 8``: bit e is set iff entry e is a prefix and
    (j ≥ its length or its byte j is b), for the positions j ≡ r mod W below 32.
    """
    groups = PREFIX_BYTES // check_width(width)
    tables = [[0] * (256 * groups) for _ in range(width)]
    for e, prefix in enumerate(prefixes):
        if prefix is None:
            continue
        for j in range(PREFIX_BYTES):
            table, base = tables[j % width], (j // width) << 8
            if j >= len(prefix):
                for b in range(256):
                    table[base | b] |= 1 << e
            else:
                table[base | prefix[j]] |= 1 << e
    return tables


class RouteMatcher(wiring.Component):
    """Path length and longest route-prefix match of each packet, at one beat per cycle.

    Parameters
    ----------
    width : int
        W, bytes per beat: 4, 8 or 16.

    Attributes
    ----------
    i_stream : In(stream.Signature(EventBeat(W)))
        The events unit's beats.
    o_stream : Out(stream.Signature(RouteBeat(W)))
        The same beats, :func:`route_latency` cycles later, with ``path_len``, ``route_match`` and ``route_class``
        (exact on the beat with ``ev.stop``).
    pfx_data : In(256)
        The staging entry's bytes, byte j in bits 8j..8j+7 (``prefix_data``).
    pfx_len : In(6)
        Its length; values above 32 count as 32.
    pfx_class, pfx_valid : In(4), In(1)
        Its route class and whether it is in use.
    pfx_index : In(4)
        The entry a commit writes.
    pfx_commit : In(1)
        A one-cycle pulse: copy the staging entry into entry ``pfx_index`` (ignored while ``busy``). The staging
        ports are read in the cycle of the pulse only.
    default_class : In(4)
        ``route_class`` when no entry matches; read as a packet's result leaves.
    busy : Out(1)
        A commit is in progress (``i_stream.ready`` is low): the beats in flight leave, then the tables are
        rewritten for :func:`route_fill_cycles` cycles.
    tables : list of MemoryData
        The lane tables (:func:`mask_table`), for inspection.
    """

    def __init__(self, width: int = 8):
        self.width = check_width(width)
        self.tables = [MemoryData(shape=PREFIX_ENTRIES, depth=_table_depth(width), init=[]) for _ in range(width)]
        super().__init__({
            "i_stream": In(stream.Signature(EventBeat(width))),
            "o_stream": Out(stream.Signature(RouteBeat(width))),
            "pfx_data": In(8 * PREFIX_BYTES),
            "pfx_len": In(LEN_BITS),
            "pfx_class": In(4),
            "pfx_valid": In(1),
            "pfx_index": In(range(PREFIX_ENTRIES)),
            "pfx_commit": In(1),
            "default_class": In(4),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.width
        E = PREFIX_ENTRIES

        ce = Signal()
        take = Signal()
        m.d.comb += [ce.eq(~self.o_stream.valid | self.o_stream.ready),
                     self.i_stream.ready.eq(ce & ~self.busy),
                     take.eq(self.i_stream.valid & self.i_stream.ready)]

        # The entries beside the tables: length, class, valid, and the pairwise order by length (longer[(f, e)],
        # f < e: len[e] > len[f]), written by the fill engine while no beat is in flight.
        ent_len = [Signal(LEN_BITS, name=f"pfx{e}_len") for e in range(E)]
        ent_class = [Signal(4, name=f"pfx{e}_class") for e in range(E)]
        ent_valid = Signal(E)
        longer = {(f, e): Signal(name=f"pfx{e}_longer_than{f}") for e in range(E) for f in range(e)}
        filling = Signal()
        fill_addr = Signal(range(_table_depth(W)))

        d, valids = self._path_stages(m, ce, take)
        g, mems, words = self._lookup_stages(m, ce, d, filling, fill_addr, ent_len, valids)
        self._match_stages(m, ce, g, ent_class, ent_valid, longer, valids)

        # The update waits for every beat taken to leave (a registered flag: the input is closed while busy).
        idle = Signal()
        m.d.sync += idle.eq(~Cat(take, *valids, self.o_stream.valid).any())
        self._fill(m, mems, words, filling, fill_addr, idle, ent_len, ent_class, ent_valid, longer)
        return m

    def _path_stages(self, m, ce, take):
        """Stages A to D: the path's lanes, the loops (start lane, beats since, first position), the rotated bytes
        and their table addresses. Returns stage D and the stages' valid flags."""
        W = self.width
        lg = W.bit_length() - 1
        groups = PREFIX_BYTES // W                      # positions per lane table: 8 / 4 / 2
        q_bits = groups.bit_length() - 1
        far = groups + 1                                # "beats since the path's start" saturates here
        # A: per lane, a target byte (live, TARGET, not its closing SP), a '?' in TARGET, and the path's start (the
        # target's first byte: TARGET after METHOD; the lane before lane 0 is the previous beat's last).
        ev = self.i_stream.payload
        tok = ev.tok
        prev_state = Signal(STATE_BITS)
        with m.If(take):
            m.d.sync += prev_state.eq(tok.state[W - 1])
        before = [prev_state] + [tok.state[k] for k in range(W - 1)]
        in_target = [tok.state[k] == Tok.TARGET for k in range(W)]
        a = register_stage(m, ce, "a", {
            "valid": take, "ev": ev, "pos_next": (ev.pos + W)[0:16],
            "tgt": Cat(ev.live[k] & in_target[k] & ~tok.feat.cls[k].sp for k in range(W)),
            # No 'live' here: a '?' past the stop only hides lanes that are not live either.
            "qm": Cat(in_target[k] & tok.feat.cls[k].qmark for k in range(W)),
            "start": Cat(ev.live[k] & in_target[k] & (before[k] == Tok.METHOD) for k in range(W)),
        })

        # B: a '?' at or before each lane in this beat (prefix OR); the start lane as a number.
        q_at = [a["qm"][:k + 1].any() for k in range(W)]
        s_lane = Const(0, lg)
        for k in range(1, W):
            s_lane = s_lane | Mux(a["start"][k], k, 0)
        b = register_stage(m, ce, "b", {
            "valid": a["valid"], "ev": a["ev"], "pos_next": a["pos_next"],
            "path": Cat(a["tgt"][k] & ~q_at[k] for k in range(W)), "q_any": q_at[W - 1],
            "start": a["start"].any(), "s": s_lane,
        })

        # C, the loops: a '?' in an earlier beat of this target; the path's start lane, its first byte's position,
        # and the beats since its start (0 in the start beat, saturating at ``far``). Each is a load or a 2:1 mux.
        q_seen = Signal()
        started = Signal()
        s_reg = Signal(lg)
        since_reg = Signal(range(far + 1))
        t0_reg = Signal(16)
        b_last = b["ev"].tok.beat.last
        s_cur = Mux(b["start"], b["s"], s_reg)
        since_cur = Mux(b["start"], 0, since_reg)
        started_cur = started | b["start"]
        t0_cur = Mux(b["start"], Cat(b["s"], b["ev"].pos[lg:]), t0_reg)
        with m.If(ce & b["valid"]):
            m.d.sync += [q_seen.eq(~b_last & (q_seen | b["q_any"])), started.eq(~b_last & started_cur),
                         s_reg.eq(s_cur), t0_reg.eq(t0_cur),
                         since_reg.eq(Mux(since_cur == far, far, since_cur + 1))]
        c = register_stage(m, ce, "c", {
            "valid": b["valid"], "ev": b["ev"], "pos_next": b["pos_next"],
            "path": b["path"] & ~q_seen.replicate(W),
            "s": s_cur, "since": since_cur, "started": started_cur, "t0": t0_cur,
        })

        # D: the bytes rotated by s, so that path byte j sits in lane j mod W; lane r reads position group
        # since - 1 if it wrapped (its byte came from a lane below s), else since. Beside them, the position after
        # the beat's last path byte.
        beat_data = c["ev"].tok.beat.data
        addrs, use = [], []
        for r in range(W):
            byte = Array(beat_data[(r + s) % W] for s in range(W))[c["s"]]
            wrapped = c["s"] >= W - r
            since = c["since"]
            q = Mux(wrapped, since - 1, since)[0:q_bits]
            use.append(c["started"] & Mux(wrapped, (since >= 1) & (since <= groups), since < groups))
            addrs.append(Cat(byte, q))
        path = c["path"]
        c_pos = c["ev"].pos
        end_lo = Const(0, lg)
        for k in range(W - 1):
            end_lo = end_lo | Mux(path[k] & ~path[k + 1], k + 1, 0)
        d = register_stage(m, ce, "d", {
            "valid": c["valid"], "ev": c["ev"], "addr": addrs, "use": Cat(use), "t0": c["t0"],
            "any": path.any(), "end": Mux(path[W - 1], c["pos_next"], Cat(end_lo, c_pos[lg:])),
        })
        return d, [a["valid"], b["valid"], c["valid"], d["valid"]]

    def _lookup_stages(self, m, ce, d, filling, fill_addr, ent_len, valids):
        """Stages E to G: the lane tables' words, ANDed over the beat; the path's length; the entries that fit.
        Returns stage G, the memories and the registered words."""
        E = PREFIX_ENTRIES
        W = self.width
        ones = (1 << E) - 1
        # E: the lookups, one asynchronous read port per lane table and a register of our own (Yosys folds it into
        # the EBR, and only then honours ``no_rw_check``: reads and writes never meet, the fill runs alone).
        words = []
        mems = []
        for r in range(W):
            mem = Memory(data=self.tables[r], attrs={"no_rw_check": 1})
            m.submodules[f"table{r}"] = mem
            mems.append(mem)
            rd = mem.read_port(domain="comb")
            m.d.comb += rd.addr.eq(Mux(filling, fill_addr, d["addr"][r]))
            word = Signal(E, name=f"e_word{r}")
            with m.If(ce | filling):
                m.d.sync += word.eq(rd.data)
            words.append(word)
        # Beside them, the path's end so far (a load from the last beat with path bytes) and its length.
        has_reg = Signal()
        end_reg = Signal(16)
        has_cur = has_reg | d["any"]
        end_cur = Mux(d["any"], d["end"], end_reg)
        with m.If(ce & d["valid"]):
            m.d.sync += [has_reg.eq(~d["ev"].tok.beat.last & has_cur), end_reg.eq(end_cur)]
        e = register_stage(m, ce, "e", {
            "valid": d["valid"], "ev": d["ev"], "use": d["use"], "has": has_cur, "span": (end_cur - d["t0"])[0:16],
        })

        # F: the lanes' words ANDed in groups of four (a lane that looked nothing up counts as all ones).
        grp = []
        for g in range(0, W, 4):
            x = Const(ones, E)
            for r in range(g, g + 4):
                x = x & (words[r] | (~e["use"][r]).replicate(E))
            grp.append(x)
        f = register_stage(m, ce, "f", {
            "valid": e["valid"], "ev": e["ev"], "grp": grp, "path_len": Mux(e["has"], e["span"], 0),
        })

        # G: the beat's word; which entries fit in the path (len ≤ path_len).
        beat_word = Const(ones, E)
        for x in f["grp"]:
            beat_word = beat_word & x
        g = register_stage(m, ce, "g", {
            "valid": f["valid"], "ev": f["ev"], "path_len": f["path_len"], "word": beat_word,
            "fits": Cat(ent_len[n] <= f["path_len"] for n in range(E)),
        })
        valids += [e["valid"], f["valid"], g["valid"]]
        return g, mems, words

    def _match_stages(self, m, ce, g, ent_class, ent_valid, longer, valids):
        """Stages H, I and the output: the running AND over the packet's beats, the longest hit, its class."""
        E = PREFIX_ENTRIES
        ones = (1 << E) - 1
        # H, the loop: the running AND over the packet's beats (restarted after its last beat); the hits.
        run = Signal(E, init=ones)
        with m.If(ce & g["valid"]):
            m.d.sync += run.eq(Mux(g["ev"].tok.beat.last, ones, run & g["word"]))
        h = register_stage(m, ce, "h", {
            "valid": g["valid"], "ev": g["ev"], "path_len": g["path_len"],
            "hits": run & g["word"] & g["fits"] & ent_valid,
        })

        # I: entry e wins if it hits and beats every other hit (two levels of AND, no chain of compares).
        hits = h["hits"]
        wins = []
        for n in range(E):
            beats = [~hits[o] | (longer[(o, n)] if o < n else ~longer[(n, o)]) for o in range(E) if o != n]
            wins.append(hits[n] & Cat(*beats).all())
        i = register_stage(m, ce, "i", {
            "valid": h["valid"], "ev": h["ev"], "path_len": h["path_len"], "wins": Cat(wins), "any": hits.any(),
        })

        # O: the winner's class (one winner at most: an OR of masked classes), or the default.
        won = Const(0, 4)
        for n in range(E):
            won = won | (ent_class[n] & i["wins"][n].replicate(4))
        out = self.o_stream.payload
        with m.If(ce):
            m.d.sync += [self.o_stream.valid.eq(i["valid"]), out.ev.eq(i["ev"]), out.path_len.eq(i["path_len"]),
                         out.route_match.eq(i["any"]),
                         out.route_class.eq(Mux(i["any"], won, self.default_class))]
        valids += [h["valid"], i["valid"]]

    def _fill(self, m, mems, words, filling, fill_addr, idle, ent_len, ent_class, ent_valid, longer):
        """The commit: latch the staging entry; once the pipeline is empty, update the entry's registers and
        rewrite its bit in every word of every lane table, one word per lane per cycle.

        F0 issues word a (``fill_addr``) to every lane's read port; F1 holds the word read and, per lane, the new
        entry's byte at the lane's position j and whether j is inside it; F2 the new bit and the word; F3 the word
        with the bit replaced, written back. Each word is read once and written three cycles later, before no read.
        """
        W = self.width
        E = PREFIX_ENTRIES
        lg = W.bit_length() - 1
        groups = PREFIX_BYTES // W
        depth = _table_depth(W)
        busy = self.busy

        l_bytes = Signal(8 * PREFIX_BYTES)
        l_len = Signal(LEN_BITS)
        l_class = Signal(4)
        l_valid = Signal()
        l_onehot = Signal(E)
        pending = Signal()
        with m.If(self.pfx_commit & ~busy):
            m.d.sync += [l_bytes.eq(self.pfx_data),
                         l_len.eq(Mux(self.pfx_len > PREFIX_BYTES, PREFIX_BYTES, self.pfx_len)),
                         l_class.eq(self.pfx_class), l_valid.eq(self.pfx_valid),
                         l_onehot.eq((Const(1, E) << self.pfx_index)[0:E]),
                         pending.eq(1), busy.eq(1)]

        start = Signal()
        m.d.comb += start.eq(pending & idle)
        issuing = Signal()
        f1_valid, f2_valid, w_en = Signal(), Signal(), Signal()
        f1_addr, f2_addr, w_addr = (Signal(range(depth), name=n) for n in ("f1_addr", "f2_addr", "w_addr"))
        f1_pick = [Signal(8, name=f"f1_pick{r}") for r in range(W)]
        f1_inside = Signal(W)
        f2_new = Signal(W)
        f2_word = [Signal(E, name=f"f2_word{r}") for r in range(W)]
        w_data = [Signal(E, name=f"w_data{r}") for r in range(W)]

        with m.If(start):
            m.d.sync += [pending.eq(0), filling.eq(1), issuing.eq(1), fill_addr.eq(0)]
            for n in range(E):
                with m.If(l_onehot[n]):
                    m.d.sync += [ent_len[n].eq(l_len), ent_class[n].eq(l_class), ent_valid[n].eq(l_valid)]
                    m.d.sync += [longer[(o, n)].eq(l_len > ent_len[o]) for o in range(n)]
                    m.d.sync += [longer[(n, o)].eq(ent_len[o] > l_len) for o in range(n + 1, E)]
        with m.Elif(filling):
            q = fill_addr[8:]
            m.d.sync += [fill_addr.eq(fill_addr + 1), f1_valid.eq(issuing), f1_addr.eq(fill_addr),
                         f2_valid.eq(f1_valid), f2_addr.eq(f1_addr), w_en.eq(f2_valid), w_addr.eq(f2_addr)]
            with m.If(fill_addr == depth - 1):
                m.d.sync += issuing.eq(0)
            with m.If(~issuing & ~f1_valid & ~f2_valid):
                m.d.sync += [filling.eq(0), busy.eq(0)]          # F3 writes the last word this cycle
            for r in range(W):
                # Lane r's position in this group: j = q·W + r (a concatenation).
                j = Cat(Const(r, lg), q)
                pick = Array(l_bytes.word_select(g * W + r, 8) for g in range(groups))[q]
                m.d.sync += [f1_pick[r].eq(pick), f1_inside[r].eq(j < l_len)]
                m.d.sync += [f2_new[r].eq(l_valid & (~f1_inside[r] | (f1_pick[r] == f1_addr[0:8]))),
                             f2_word[r].eq(words[r])]
                m.d.sync += w_data[r].eq(Cat(Mux(l_onehot[n], f2_new[r], f2_word[r][n]) for n in range(E)))

        for r, mem in enumerate(mems):
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(w_addr), wp.data.eq(w_data[r]), wp.en.eq(w_en)]

"""The rebuilt header parser's datapath: the components joined, from beats to one descriptor per packet.

beat ─▶ Tokenizer ─┬─▶ Events ─────────┬──────────────────────────────▶ RouteMatcher ─────────────────────┐
                   ├─▶ NameMatcher ────┤                                                                   │
                   └─▶ ValueTracker ───┴─▶ P, M: field marks ─▶ FingerprintEngine ───┐                     │
                                                 └─▶ line slots ─▶ BCD to binary ────┴─▶ C0 decode ─▶ C1 compare
                                                                                 ─▶ C2 commit ─▶ C3 report, descriptor

Every unit is a fixed-latency pipeline that never stalls (its output is always taken), so the join is a matter of
delays. The three units behind the tokenizer are aligned at the pre-marks stage P (beat-local prefixes, each lane's
last colon); the marks stage M marks each beat's lanes for the fingerprint engine (the path, and each field value, or
its Bearer token on an ``authorization`` line) and gathers its committing LFs into at most W/4 *line slots* (the
name and value record found at the CR before each). The slots, their numbers converted to binary meanwhile, and a
summary of the beat wait beside the fingerprint engine and meet its fingerprints at C0, which gives each slot its
fingerprint; C1 compares each slot's number with the packet's previous Content-Length; C2 runs the rules that depend
on earlier lines (``docs/parser.md``, "Committing a header line") in lane order, and may stop the packet sooner than
the grammar did. Its loop holds only presence bits and ``done``; C3 picks the stop's error and length, counts the
lines and forms the descriptor, without a register of its own: the wrapper's FIFO (in EBR) registers it as it writes. The route unit's path fields go around the marks to C0: they are final from the
end of the request line, before any line commits.

The datapath takes no backpressure: :class:`~.parser_top.PipelinedParser` admits a packet only when the descriptor
FIFO has room for every packet in flight. ``busy`` is high while a unit rewrites its tables (after ``fp_update``,
``x_update`` or a prefix commit); pulse those only while no beat is in flight.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from ..bus.packet import ByteBeat, check_width
from .decimal import BCD_LATENCY, bcd_to_binary
from .events import EVENTS_LATENCY, Events
from .fingerprint import FingerprintEngine, fp_latency
from .layouts import (EXTRA_SLOTS, FP_POLY_RESET, FP_SEED_RESET, LEN_MAX, NAME_BYTES, PREFIX_BYTES, Descriptor,
                      ErrorFlag, KeySource, Method, Version, extra_name_words)
from .names import N_BUILTIN, N_NAMES, NameMatcher, name_latency
from .routes import RouteMatcher, route_latency
from .stages import onehot_index
from .tokenizer import TOKENIZER_LATENCY, Tok, Tokenizer
from .values import VALUE_DIGITS, ValueRecord, ValueSlot, ValueTracker, value_latency

__all__ = ["ParserCore", "core_latency"]

HOST, CONTENT_LENGTH, TRANSFER_ENCODING, AUTHORIZATION, X_API_KEY, UPGRADE = range(N_BUILTIN)
U64 = (1 << 64) - 1
SP, QMARK, SLASH = 0x20, 0x3F, 0x2F


def _align(width: int) -> int:
    """Cycles from the tokenizer's output to the marks stage: the slowest of the three branches."""
    return max(name_latency(width), value_latency(width), EVENTS_LATENCY)


def core_latency(width: int) -> int:
    """Cycles from a beat's acceptance to the (unregistered) descriptor of a packet that stops in it: the tokenizer,
    the slowest branch behind it, the pre-marks and marks stages, the fingerprint engine, the decode, compare and
    commit stages (the report stage C3 is logic on the commit stage's registers)."""
    return TOKENIZER_LATENCY[width] + _align(width) + 2 + fp_latency(width) + 3


def LineSlot(width: int) -> data.StructLayout:
    """A committed line: the lane of its LF and of the close before it (``close``: LF lane - 1, when not 0), its
    name vector and its value's record (from its CR)."""
    return data.StructLayout({"valid": 1, "lf": range(width), "close": range(width), "name": N_NAMES,
                              "rec": ValueRecord})


def _Summary(width: int) -> data.StructLayout:
    """What the commit stage needs of a beat, besides its line slots and fingerprints."""
    return data.StructLayout({
        "valid": 1, "last": 1, "pos": 16, "stop": 1, "errors": len(ErrorFlag), "complete": 1, "header_len": 16,
        "method_set": 1, "method": Method, "version_set": 1, "version": Version, "path_close": 1, "origin": 1,
    })


def _delay(m, value, cycles, name):
    """``value`` ``cycles`` cycles later (a chain of registers)."""
    for n in range(cycles):
        reg = Signal.like(value, name=f"{name}_d{n}")
        m.d.sync += reg.eq(value)
        value = reg
    return value


def _net(m, expr, name, shape=None):
    """``expr`` as a named signal: Amaranth re-emits an expression at every use, and these masks feed each other."""
    sig = Signal(shape if shape is not None else len(expr), name=name)
    m.d.comb += sig.eq(expr)
    return sig


def _before(bits, carry=Const(0)):
    """Per lane k: ``carry`` or any of ``bits[0..k-1]``."""
    return Cat(*((bits[:k].any() if k else Const(0)) | carry for k in range(len(bits))))


class ParserCore(wiring.Component):
    """The parser's datapath, W = 4, 8 or 16.

    Attributes
    ----------
    i_stream : In(stream.Signature(ByteBeat(W)))
        Packets; ``ready`` is low only while ``busy``.
    o_desc : Out(stream.Signature(Descriptor))
        One descriptor per packet, :func:`core_latency` cycles after the beat where it stops, *not registered*:
        stage C3's logic on the commit stage's registers, meant for a memory's write port (the wrapper's FIFO);
        ``ready`` is ignored.
    max_header_bytes, poly, seed, default_class
        The registers' values. ``fp_update``: pulse after ``poly``/``seed`` changed.
    x_name, x_len, x_update
        The extra names (lower case) and their lengths; pulse ``x_update`` after a change.
    pfx_data, pfx_len, pfx_class, pfx_valid, pfx_index, pfx_commit
        One prefix-table entry and its commit pulse (:class:`~.routes.RouteMatcher`).
    busy : Out(1)
    """

    def __init__(self, width: int = 8):
        self.width = check_width(width)
        self.slots = max(1, width // 4)
        super().__init__({
            "i_stream": In(stream.Signature(ByteBeat(width))),
            "o_desc": Out(stream.Signature(Descriptor)),
            "max_header_bytes": In(16, init=8192),
            "poly": In(64, init=FP_POLY_RESET),
            "seed": In(64, init=FP_SEED_RESET),
            "fp_update": In(1),
            "default_class": In(4),
            # Reset: EXTRA_NAMES_RESET, which the name matcher's table also holds at reset.
            "x_name": In(data.ArrayLayout(data.ArrayLayout(8, NAME_BYTES), EXTRA_SLOTS),
                         init=[list(word.to_bytes(NAME_BYTES, "little")) for word, _ in extra_name_words()]),
            "x_len": In(data.ArrayLayout(6, EXTRA_SLOTS), init=[length for _, length in extra_name_words()]),
            "x_update": In(1),
            "pfx_data": In(8 * PREFIX_BYTES),
            "pfx_len": In(6),
            "pfx_class": In(4),
            "pfx_valid": In(1),
            "pfx_index": In(4),
            "pfx_commit": In(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.width
        m.submodules.tokenizer = tok = Tokenizer(W)
        m.submodules.events = ev = Events(W)
        m.submodules.routes = rt = RouteMatcher(W)
        m.submodules.names = nm = NameMatcher(W)
        m.submodules.values = vt = ValueTracker(W)
        m.submodules.fingerprint = fpe = FingerprintEngine(W)

        # The units' outputs are always taken; the input waits only while a unit rewrites its tables.
        m.d.comb += [
            tok.i_stream.valid.eq(self.i_stream.valid & ~self.busy),
            tok.i_stream.payload.eq(self.i_stream.payload),
            self.i_stream.ready.eq(tok.i_stream.ready & ~self.busy),
            # A unit's ready falls the cycle after its update pulse; its busy flag may rise later (after it drains).
            self.busy.eq(fpe.busy | ~fpe.i_stream.ready | rt.busy | ~rt.i_stream.ready | ~nm.i_stream.ready),
            tok.o_stream.ready.eq(1), rt.o_stream.ready.eq(1), nm.o_stream.ready.eq(1), vt.o_stream.ready.eq(1),
            fpe.o_stream.ready.eq(1),
            ev.max_header_bytes.eq(self.max_header_bytes),
            fpe.poly.eq(self.poly), fpe.seed.eq(self.seed), fpe.update.eq(self.fp_update),
            nm.x_name.eq(self.x_name), nm.x_len.eq(self.x_len), nm.x_update.eq(self.x_update),
            rt.pfx_data.eq(self.pfx_data), rt.pfx_len.eq(self.pfx_len), rt.pfx_class.eq(self.pfx_class),
            rt.pfx_valid.eq(self.pfx_valid), rt.pfx_index.eq(self.pfx_index), rt.pfx_commit.eq(self.pfx_commit),
            rt.default_class.eq(self.default_class),
        ]
        for unit in (ev, nm, vt):
            m.d.comb += [unit.i_stream.valid.eq(tok.o_stream.valid), unit.i_stream.payload.eq(tok.o_stream.payload)]
        wiring.connect(m, ev.o_stream, rt.i_stream)

        # Align the three branches, then the pre-marks stage (P) and the marks stage (M).
        align = _align(W)
        e_valid = _delay(m, ev.o_stream.valid, align - EVENTS_LATENCY, "e_valid")
        e_beat = _delay(m, ev.o_stream.payload, align - EVENTS_LATENCY, "e_beat")
        n_beat = _delay(m, nm.o_stream.payload, align - name_latency(W), "n_beat")
        v_beat = _delay(m, vt.o_stream.payload, align - value_latency(W), "v_beat")
        pre = self._pre(m, e_valid, e_beat, n_beat, v_beat)
        summary, lanes = self._marks(m, pre, fpe)
        lines, values = self._slots(m, lanes)

        # Everything meets the fingerprints: the beat's summary, its line slots (their numbers converted meanwhile)
        # and the route unit's path fields (final from the end of the request line, before any line commits).
        fpl = fp_latency(W)
        summary = _delay(m, summary, fpl, "summary")
        lines = _delay(m, lines, fpl - 1, "lines")
        values = [_delay(m, v, fpl - 1 - BCD_LATENCY, f"value{i}") for i, v in enumerate(values)]
        route_wait = align + 2 + fpl - EVENTS_LATENCY - route_latency(W)
        assert route_wait >= 0 and fpl - 1 - BCD_LATENCY >= 0
        route = _delay(m, Cat(rt.o_stream.payload.path_len, rt.o_stream.payload.route_match,
                              rt.o_stream.payload.route_class), route_wait, "route")
        c0 = self._decode(m, summary, lines, values, fpe.o_stream.payload, route)
        self._commit(m, c0)
        return m

    # -- the marks ------------------------------------------------------------------------------------------------

    def _pre(self, m, valid, e, n, v):
        """Stage P: what each lane needs from its own beat only (byte classes, beat-local prefixes, the last colon
        at or before it), registered with the beat."""
        W = self.width
        t = e.tok
        data_ = t.beat.data
        st = [t.state[k] for k in range(W)]
        colon = _net(m, Cat(*((st[k] == Tok.NAME) & t.feat.cls[k].colon for k in range(W))), "pre_colon")
        q = _net(m, Cat(*((st[k] == Tok.TARGET) & (data_[k] == QMARK) for k in range(W))), "pre_q")
        # last[k][j]: lane j is the last colon at or before lane k.
        last = [Cat(*((colon[j] & ~colon[j + 1:k + 1].any()) if j <= k else Const(0) for j in range(W)))
                for k in range(W)]
        auth = Cat(*(n.match[k][AUTHORIZATION] for k in range(W)))
        p = {
            "valid": 1, "last": 1, "n_valid": range(W + 1), "data": data.ArrayLayout(8, W), "live": W, "pos": 16,
            "commit": W, "stop": 1, "errors": len(ErrorFlag), "complete": 1, "header_len": 16, "method_set": 1,
            "method": Method, "version_set": 1, "version": Version,
            "tgt": W, "spq": W, "mspace": W, "q_before": W, "q_any": 1, "colon_any": 1,
            "has_colon": W, "auth_local": W, "last_colon": data.ArrayLayout(W, W), "match": data.ArrayLayout(N_NAMES, W),
            "val_byte": W, "val_keep": W, "tok_byte": W, "tok_keep": W, "end": W,
            "vslot": data.ArrayLayout(ValueSlot(W), self.slots),
        }
        r = {k: Signal(shape, name=f"pre_{k}") for k, shape in p.items()}
        live = e.live
        m.d.sync += [
            r["valid"].eq(valid), r["last"].eq(t.beat.last), r["n_valid"].eq(t.beat.n_valid), r["data"].eq(data_),
            r["live"].eq(live), r["pos"].eq(e.pos), r["commit"].eq(e.commit), r["stop"].eq(e.stop),
            r["errors"].eq(e.errors), r["complete"].eq(e.complete), r["header_len"].eq(e.header_len),
            r["method_set"].eq(e.method_set), r["method"].eq(e.method), r["version_set"].eq(e.version_set),
            r["version"].eq(e.version),
            r["tgt"].eq(Cat(*(st[k] == Tok.TARGET for k in range(W)))),
            r["spq"].eq(Cat(*((data_[k] == SP) | (data_[k] == QMARK) for k in range(W)))),
            r["mspace"].eq(Cat(*(live[k] & (st[k] == Tok.METHOD) & (data_[k] == SP) for k in range(W)))),
            r["q_before"].eq(_before(q)), r["q_any"].eq(q.any()), r["colon_any"].eq(colon.any()),
            r["has_colon"].eq(Cat(*(colon[:k + 1].any() for k in range(W)))),
            r["auth_local"].eq(Cat(*((last[k] & auth).any() for k in range(W)))),
            r["match"].eq(n.match),
            r["val_byte"].eq(v.val_byte), r["val_keep"].eq(v.val_keep), r["tok_byte"].eq(v.tok_byte),
            r["tok_keep"].eq(v.tok_keep), r["end"].eq(v.end), r["vslot"].eq(v.slot),
        ]
        m.d.sync += [r["last_colon"][k].eq(last[k]) for k in range(W)]
        return r

    def _marks(self, m, r, fpe):
        """Stage M: the carries across beats applied; the field marks into the fingerprint engine, each lane's line
        name, and the beat's summary (all registered)."""
        W = self.width
        valid, last, live = r["valid"], r["last"], r["live"]
        carry = {k: Signal(name=f"m_{k}_carry", init=int(k == "live")) for k in ("q", "auth", "live", "ptake", "vtake")}
        name_c = Signal(N_NAMES, name="m_name_carry")

        # The path: from the first target byte to the first '?' or SP, or to the stop (the first lane not live).
        q_before = r["q_before"] | carry["q"].replicate(W)
        zone = _net(m, r["tgt"] & ~q_before, "m_zone")
        ptake = _net(m, zone & live & ~r["spq"], "m_ptake")
        first_dead = ~live & Cat(carry["live"], live[:W - 1])
        pclose = _net(m, zone & ~ptake & (live | first_dead), "m_pclose")
        popen = ptake & ~Cat(carry["ptake"], ptake[:W - 1])
        pend = last & (r["n_valid"] == W) & live[W - 1] & (ptake[W - 1] | r["mspace"][W - 1])

        # A value's lanes, or its Bearer token's on an authorization line.
        has = r["has_colon"]
        auth = _net(m, (has & r["auth_local"]) | (~has & carry["auth"].replicate(W)), "m_auth")
        vtake = _net(m, ((auth & r["tok_byte"]) | (~auth & r["val_byte"])) & live, "m_vtake")
        vkeep = ((auth & r["tok_keep"]) | (~auth & r["val_keep"])) & live
        vopen = vtake & ~Cat(carry["vtake"], vtake[:W - 1])
        cr_end = r["end"] & live
        with m.If(valid):
            m.d.sync += [carry["q"].eq(~last & (carry["q"] | r["q_any"])), carry["auth"].eq(~last & auth[W - 1]),
                         carry["live"].eq(last | live[W - 1]), carry["ptake"].eq(~last & ptake[W - 1]),
                         carry["vtake"].eq(~last & vtake[W - 1])]
        fb = fpe.i_stream.payload
        m.d.sync += [fpe.i_stream.valid.eq(valid),
                     fb.data.eq(r["data"]), fb.take.eq(ptake | vtake), fb.keep.eq(ptake | vkeep),
                     fb.open.eq(popen | vopen), fb.close.eq(pclose | cr_end), fb.end.eq(last)]

        # Each lane's line name: the match at the last colon at or before it, or the carried one.
        # The beat's committing LFs, in lane order: slot i's one-hot lane.
        lanes = {"valid": Signal(name="ml_valid"), "lf": Signal(data.ArrayLayout(W, self.slots), name="ml_lf"),
                 "name": Signal(data.ArrayLayout(N_NAMES, W), name="ml_name"),
                 "vslot": Signal(data.ArrayLayout(ValueSlot(W), self.slots), name="ml_vslot")}
        m.d.sync += [lanes["valid"].eq(valid), lanes["vslot"].eq(r["vslot"])]
        rest = r["commit"]
        for i in range(self.slots):
            first = _net(m, rest & ~_before(rest), f"m_lf{i}")
            rest = _net(m, rest & ~first, f"m_lf_rest{i}")
            m.d.sync += lanes["lf"][i].eq(first)
        for k in range(W):
            picked = Const(0, N_NAMES)
            for j in range(W):
                picked = picked | Mux(r["last_colon"][k][j], r["match"][j], 0)
            m.d.sync += lanes["name"][k].eq(Mux(r["has_colon"][k], picked, name_c))
            if k == W - 1:
                with m.If(valid):
                    m.d.sync += name_c.eq(Mux(last, 0, Mux(r["colon_any"], picked, name_c)))

        summary = Signal(_Summary(W), name="marks_summary")
        m.d.sync += [summary[k].eq(r[k]) for k in ("valid", "last", "pos", "stop", "errors", "complete",
                                                   "header_len", "method_set", "method", "version_set", "version")]
        m.d.sync += summary.path_close.eq(pclose.any() | pend)
        # Origin-form: the path's first byte (the target's, unless the target starts with '?') is '/'.
        m.d.sync += summary.origin.eq(valid & Cat(*(popen[k] & (r["data"][k] == SLASH) for k in range(W))).any())
        return summary, lanes

    def _slots(self, m, lanes):
        """Stage M+1: the beat's committing LFs as W/4 line slots, each with the name of its line and the record of
        the CR before it: the value slot at the LF's previous lane, or the previous beat's CR in its last lane for
        an LF in lane 0. Their numbers go to the converters."""
        W, NS = self.width, self.slots
        vs = lanes["vslot"]
        held = Signal(data.StructLayout({"name": N_NAMES, "rec": ValueRecord}), name="cr_held")
        with m.If(lanes["valid"]):
            m.d.sync += [held.name.eq(lanes["name"][W - 1]), held.rec.eq(0)]
            for j in range(NS):
                with m.If(vs[j].cr[W - 1]):
                    m.d.sync += held.rec.eq(vs[j].rec)
        lines = Signal(data.ArrayLayout(LineSlot(W), NS), name="slots")
        values = []
        for i in range(NS):
            first = lanes["lf"][i]
            lane, close = onehot_index(first), onehot_index(first[1:])     # close: the lane before the LF
            name = Mux(first[0], held.name, 0)
            rec = Mux(first[0], held.rec.as_value(), 0)
            for k in range(1, W):
                name = name | Mux(first[k], lanes["name"][k - 1], 0)
            for j in range(NS):
                rec = rec | Mux((first[1:] & vs[j].cr[:W - 1]).any(), vs[j].rec.as_value(), 0)
            slot = lines[i]
            m.d.sync += [slot.valid.eq(lanes["valid"] & first.any()), slot.lf.eq(lane), slot.close.eq(close),
                         slot.name.eq(name),
                         slot.rec.eq(rec)]
            values.append(bcd_to_binary(m, slot.rec.bcd, f"slot{i}_bcd"))
        return lines, values

    # -- the commit stage -------------------------------------------------------------------------------------------

    def _decode(self, m, s, lines, values, fps, route):
        """Stage C0: each line slot's fingerprint (the close at the lane before its LF) and its rules' inputs,
        registered with the beat's summary and the path's fields."""
        W, NS = self.width, self.slots
        fp_held = Signal(64, name="fp_held")     # the previous beat's close in its last lane
        with m.If(s.valid):
            m.d.sync += fp_held.eq(0)
            for j in range(NS):
                with m.If(fps[j].valid & (fps[j].lane == W - 1)):
                    m.d.sync += fp_held.eq(fps[j].fp)
        c = {"s": Signal.like(s, name="c0_summary"), "route": Signal.like(route, name="c0_route"),
             "path_fp": Signal(64, name="c0_path_fp")}
        m.d.sync += [c["s"].eq(s), c["route"].eq(route), c["path_fp"].eq(fps[0].fp)]
        c["lines"] = []
        for i in range(NS):
            line = lines[i]
            rec = line.rec
            fp = Mux(line.lf == 0, fp_held, 0)
            for j in range(NS):
                # ``close``: the lane before the LF, a register (no adder in front of the compare).
                fp = fp | Mux(fps[j].valid & (line.lf != 0) & (fps[j].lane == line.close), fps[j].fp, 0)
            f = {"go": 1, "lf": range(W), "name": N_NAMES, "len": 16, "number": 1, "overflow": 1, "value": 64,
                 "chunked": 1, "bearer": 1, "token_len": 16, "fp": 64, "cl_key": 64}
            reg = {k: Signal(shape, name=f"c0_line{i}_{k}") for k, shape in f.items()}
            m.d.sync += [reg["go"].eq(s.valid & line.valid), reg["lf"].eq(line.lf), reg["name"].eq(line.name),
                         reg["len"].eq(rec.len),
                         reg["number"].eq(rec.digits_ok & (rec.len != 0) & (rec.len <= VALUE_DIGITS)),
                         reg["overflow"].eq(rec.overflow), reg["value"].eq(values[i]), reg["chunked"].eq(rec.chunked),
                         reg["bearer"].eq(rec.bearer), reg["token_len"].eq(rec.token_len), reg["fp"].eq(fp),
                         # What C1 compares of a number besides its length and overflow: the value, or the
                         # fingerprint once it overflows (two numbers of equal value and length are the same bytes).
                         reg["cl_key"].eq(Mux(rec.overflow, fp, values[i]))]
            c["lines"].append(reg)
        return c

    def _compare(self, m, c0):
        """Stage C1: whether each slot's value equals the packet's previous Content-Length number (a slot before it
        in the beat, or ``last_cl``, kept here from the beats before). Equality is an equivalence, so equal to the
        previous one is equal to the first one for every line up to the packet's first failure (after it nothing
        counts). ``last_cl`` is taken at every Content-Length number, committed or not; the commit stage's presence
        bit says whether there was one. So the commit stage reads one bit, and no comparator sits in its loop."""

        # Two Content-Length numbers (1 to 20 digits, so the length fits in 5 bits) are the same when their
        # lengths and overflow bits are and, below 2^64, their values (then they are the same digits, so their
        # fingerprints agree too) or, both overflowing, their fingerprints: 70 bits, with C0's ``cl_key``.
        def equal(a, b):
            n = bits_for(VALUE_DIGITS)
            return ~((a["cl_key"] != b["cl_key"]) | (a["overflow"] != b["overflow"]) | (a["len"][:n] != b["len"][:n]))

        keys = {"cl_key": 64, "overflow": 1, "len": range(VALUE_DIGITS + 1)}
        last_cl = {k: Signal(shape, name=f"last_cl_{k}") for k, shape in keys.items()}
        c1 = {"s": Signal.like(c0["s"], name="c1_summary"), "route": Signal.like(c0["route"], name="c1_route"),
              "path_fp": Signal(64, name="c1_path_fp"), "lines": []}
        m.d.sync += [c1[k].eq(c0[k]) for k in ("s", "route", "path_fp")]
        # Each slot is compared with ``last_cl`` and with every slot before it, and the compare of the latest
        # Content-Length number before it is picked afterwards: no multiplexer over 70 bits in front of a comparator.
        lines = c0["lines"]
        is_nums = [_net(m, line["go"] & line["name"][CONTENT_LENGTH] & line["number"], f"c1_cl_num{i}", 1)
                   for i, line in enumerate(lines)]
        prev = last_cl
        for i, line in enumerate(lines):
            reg = {k: Signal.like(v, name=f"c1_line{i}_{k}") for k, v in line.items() if k != "cl_key"}
            m.d.sync += [reg[k].eq(line[k]) for k in reg]
            # The rules' inputs that do not depend on the packet's state, as flags (``is_``: a line of each name).
            flags = {"same": 1, "stop_len": 16, "is_": N_NAMES, "cl_num": 1, "cl_bad": 1, "te_bad": 1, "auth_ok": 1}
            reg.update({k: Signal(shape, name=f"c1_line{i}_{k}") for k, shape in flags.items()})
            go, name = line["go"], line["name"]
            is_num = is_nums[i]
            same = equal(line, last_cl)
            for j in range(i):
                same = Mux(is_nums[j], equal(line, lines[j]), same)
            m.d.sync += [reg["same"].eq(same), reg["stop_len"].eq(c0["s"].pos + line["lf"] + 1),
                         reg["is_"].eq(name & go.replicate(N_NAMES)), reg["cl_num"].eq(is_num),
                         reg["cl_bad"].eq(go & name[CONTENT_LENGTH] & ~line["number"]),
                         reg["te_bad"].eq(go & name[TRANSFER_ENCODING] & ~line["chunked"]),
                         reg["auth_ok"].eq(go & name[AUTHORIZATION] & line["bearer"])]
            c1["lines"].append(reg)
            prev = {k: _net(m, Mux(is_num, line[k][:len(last_cl[k])], prev[k]), f"c1_prev{i}_{k}", len(last_cl[k]))
                    for k in keys}
        m.d.sync += [last_cl[k].eq(prev[k]) for k in keys]
        return c1

    def _commit(self, m, c0):
        """Stage C2, the loop: the line rules in lane order, and the packet's stop.

        The loop holds only what the rules read: which fields are present and ``done``. A field's data
        (fingerprints, lengths, numbers) is written whenever a slot would set it, assuming the slots before it
        passed; the descriptor shows it only if its presence bit (which does account for a failed slot) is set. So no
        failure drives the wide data. Which error, the line count and the descriptor come a stage later (C3)."""
        small = {"done": 1, "host": 1, "cl": 1, "te": 1, "chunked": 1, "auth": 1, "xkey": 1, "extra": EXTRA_SLOTS,
                 "method": Method, "version": Version, "path": 1, "origin": 1, "upgrade": 1}
        wide = {"host_fp": 64, "host_len": 16, "cl_len": 16, "cl_val": 64, "cl_ovf": 1, "cl_fp": 64, "auth_fp": 64,
                "auth_len": 16, "xkey_fp": 64, "xkey_len": 16, "x0_num": 1, "x0_val": 64, "x0_ovf": 1,
                "path_fp": 64, "path_len": 16, "route_match": 1, "route_class": 4}
        for i in range(EXTRA_SLOTS):
            wide[f"extra_fp{i}"] = 64
        cur = {k: Signal(shape, name=f"pk_{k}") for k, shape in small.items()}
        data_ = {k: Signal(shape, name=f"pk_{k}") for k, shape in wide.items()}
        c = self._compare(m, c0)
        s = c["s"]
        nxt = {k: Signal(shape, name=f"pk_next_{k}") for k, shape in small.items()}
        m.d.comb += [nxt[k].eq(cur[k]) for k in small]
        with m.If(s.method_set):
            m.d.comb += nxt["method"].eq(s.method)
        with m.If(s.version_set):
            m.d.comb += nxt["version"].eq(s.version)
        new = {k: Signal(shape, name=f"pk_new_{k}") for k, shape in wide.items()}
        m.d.comb += [new[k].eq(data_[k]) for k in wide]
        with m.If(s.origin):
            m.d.comb += nxt["origin"].eq(1)
        with m.If(s.path_close & ~cur["path"]):
            m.d.comb += [nxt["path"].eq(1), new["path_fp"].eq(c["path_fp"])]
        with m.If(s.valid):
            m.d.comb += Cat(new["path_len"], new["route_match"], new["route_class"]).eq(c["route"])

        # The committed lines, in order; each sees the presence the lines before it left. A later slot is worked
        # out as if the earlier ones passed, and its presence bits dropped below if one failed.
        state = dict(nxt)
        after, fails, gos, errs = [], [], [], []
        live = _net(m, ~cur["done"], "commit_live", 1)
        for i, line in enumerate(c["lines"]):
            state, err, failed, writes = self._rules(m, i, live, line, state)
            for group, fields in writes:
                for k, v in fields.items():
                    with m.If(group):
                        m.d.comb += new[k].eq(v)
            fails.append(failed)
            after.append(state)
            gos.append(line["go"] & live)
            errs.append(err)
        state = after[-1]
        for i in reversed(range(len(after) - 1)):
            state = {k: Mux(fails[i], after[i][k], v) for k, v in state.items()}
        final = {k: Signal.like(after[0][k], name=f"pk_final_{k}") for k in state}
        m.d.comb += [final[k].eq(v) for k, v in state.items()]
        failed = Cat(*fails).any()
        m.d.sync += [data_[k].eq(new[k]) for k in wide]
        with m.If(s.valid):
            m.d.sync += [cur[k].eq(final[k]) for k in small]
            m.d.sync += cur["done"].eq(cur["done"] | failed | s.stop)
            with m.If(s.last):
                m.d.sync += [cur[k].eq(0) for k in small]

        # To C3: the outcome, registered.
        c2 = {"s": Signal.like(s, name="c2_summary"), "state": {}, "fails": Signal(len(fails), name="c2_fails"),
              "grammar_stop": Signal(name="c2_grammar_stop"),
              "errs": [Signal(len(ErrorFlag), name=f"c2_err{i}") for i in range(len(errs))],
              "stop_lens": [Signal(16, name=f"c2_stop_len{i}") for i in range(len(errs))]}
        c2["state"] = {k: Signal.like(v, name=f"c2_{k}") for k, v in final.items()}
        # The lines this beat counts: the committed ones up to the first that failed (it counts too).
        count, earlier = Const(0, range(len(gos) + 1)), Const(0)
        for go, slot_failed in zip(gos, fails):
            count = count + (go & ~earlier)
            earlier = earlier | slot_failed
        c2["count"] = Signal(range(len(gos) + 1), name="c2_count")
        m.d.sync += [c2["s"].eq(s), c2["fails"].eq(Cat(*fails)), c2["count"].eq(count),
                     c2["grammar_stop"].eq(s.valid & s.stop & ~cur["done"] & ~failed)]
        m.d.sync += [c2["state"][k].eq(v) for k, v in final.items()]
        m.d.sync += [r.eq(e) for r, e in zip(c2["errs"], errs)]
        m.d.sync += [r.eq(line["stop_len"]) for r, line in zip(c2["stop_lens"], c["lines"])]
        self._report(m, c2, data_)

    def _rules(self, m, i, live, line, state):
        """One committed line against the packet's presence bits (``live``: the packet has not stopped): the new
        ones, the error it raises (or 0), whether it failed, and the data it writes ([(enable, {field: value})]).
        A failed rule writes nothing; the line itself counts, extra names included."""
        E = ErrorFlag
        fp, is_ = line["fp"], line["is_"]
        n = {k: Signal.like(v, name=f"l{i}_{k}") for k, v in state.items()}
        m.d.comb += [n[k].eq(v) for k, v in state.items()]
        writes = []

        def write(cond, tag, fields):
            en = _net(m, live & cond, f"l{i}_w_{tag}", 1)
            writes.append((en, fields))
            return en

        # Host once; Content-Length a number of 1..20 digits, a repeat spelled the same (the values compare as the
        # model's saturated numbers), only the first written; Transfer-Encoding once, "chunked".
        dup_host = _net(m, is_[HOST] & state["host"], f"l{i}_dup_host", 1)
        cl_mismatch = _net(m, line["cl_num"] & state["cl"] & ~line["same"], f"l{i}_cl_mismatch", 1)
        bad_te = _net(m, (is_[TRANSFER_ENCODING] & state["te"]) | line["te_bad"], f"l{i}_bad_te", 1)
        failed = _net(m, live & (dup_host | line["cl_bad"] | cl_mismatch | bad_te), f"l{i}_failed", 1)
        err = _net(m, Mux(dup_host, E.duplicate_host, 0) | Mux(line["cl_bad"], E.bad_content_length, 0) |
                   Mux(cl_mismatch, E.cl_mismatch, 0) | Mux(bad_te, E.bad_transfer_encoding, 0), f"l{i}_err",
                   len(E))
        write(is_[HOST] & ~state["host"], "host", {"host_fp": fp, "host_len": line["len"]})
        write(line["cl_num"] & ~state["cl"], "cl",
              {"cl_len": line["len"], "cl_val": line["value"], "cl_ovf": line["overflow"], "cl_fp": fp})
        m.d.comb += [n["host"].eq(state["host"] | (live & is_[HOST])),
                     n["cl"].eq(state["cl"] | (live & line["cl_num"])),
                     n["te"].eq(state["te"] | (live & is_[TRANSFER_ENCODING])),
                     n["chunked"].eq(state["chunked"] |
                                     (live & is_[TRANSFER_ENCODING] & ~line["te_bad"] & ~state["te"]))]
        # The API key candidates (the marks fingerprinted the token on an authorization line).
        auth = write(line["auth_ok"] & ~state["auth"], "auth", {"auth_fp": fp, "auth_len": line["token_len"]})
        xkey = write(is_[X_API_KEY] & ~state["xkey"], "xkey", {"xkey_fp": fp, "xkey_len": line["len"]})
        m.d.comb += [n["auth"].eq(state["auth"] | auth), n["xkey"].eq(state["xkey"] | xkey),
                     n["upgrade"].eq(state["upgrade"] | (live & is_[UPGRADE]))]
        extra = []
        for x in range(EXTRA_SLOTS):
            fields = {f"extra_fp{x}": fp}
            if x == 0:
                fields.update({"x0_num": line["number"], "x0_val": line["value"], "x0_ovf": line["overflow"]})
            extra.append(write(is_[N_BUILTIN + x] & ~state["extra"][x], f"extra{x}", fields))
        m.d.comb += n["extra"].eq(state["extra"] | Cat(*extra))
        return n, err, failed, writes

    # -- the descriptor ---------------------------------------------------------------------------------------------

    def _report(self, m, c2, d):
        """Stage C3: the stop's error and length, the line count, and the descriptor, as logic on C2's registers
        (the FIFO's write port is the register). ``d`` holds the data as the beat in C3 left it; a field's data is
        shown only if it is present (the presence bits are registers here, not the commit loop's next state)."""
        E = ErrorFlag
        s, a, fails = c2["s"], c2["state"], c2["fails"]
        # The first failed slot stops the packet; the lines up to it count.
        stop_err, stop_len = Const(0, len(E)), Const(0, 16)
        earlier = Const(0)
        for i in range(self.slots):
            first_fail = fails[i] & ~earlier
            stop_err = Mux(first_fail, c2["errs"][i], stop_err)
            stop_len = Mux(first_fail, c2["stop_lens"][i], stop_len)
            earlier = earlier | fails[i]
        committed_stop = fails.any()
        lines = Signal(16, name="pk_lines")          # the lines committed by the beats before the one in C3
        total = _net(m, lines + c2["count"], "pk_lines_total", 17)
        lines_now = _net(m, Mux(total[16], LEN_MAX, total[:16]), "pk_lines_now", 16)
        with m.If(s.valid):
            m.d.sync += lines.eq(Mux(s.last, 0, lines_now))
        block = Mux((a["version"] == Version.HTTP_1_1) & ~a["host"], E.missing_host, 0) | \
            Mux(a["cl"] & a["te"], E.cl_and_te, 0)
        errors = Mux(committed_stop, stop_err, Mux(s.complete, block, s.errors))
        header_len = Mux(committed_stop, stop_len, s.header_len)
        complete = c2["grammar_stop"] & s.complete

        desc = self.o_desc.payload
        host, cl, auth, xkey, extra = (a[k] for k in ("host", "cl", "auth", "xkey", "extra"))
        x0 = extra[0] & d["x0_num"]
        m.d.comb += [
            self.o_desc.valid.eq(committed_stop | c2["grammar_stop"]),
            desc.method.eq(a["method"]), desc.version.eq(a["version"]),
            # A path exists once the method ended (a close before that is the limit or an error in the method).
            desc.path_len.eq(d["path_len"]),
            desc.path_fp.eq(Mux(a["path"] & (a["method"] != Method.NONE), d["path_fp"], 0)),
            desc.route_match.eq(d["route_match"]), desc.route_class.eq(d["route_class"]),
            desc.chunked.eq(a["chunked"]), desc.header_len.eq(header_len), desc.header_lines.eq(lines_now),
            desc.complete.eq(complete), desc.errors.eq(errors),
            desc.origin_form.eq(a["origin"]), desc.upgrade.eq(a["upgrade"]),
            desc.host_present.eq(host), desc.host_len.eq(Mux(host, d["host_len"], 0)),
            desc.host_fp.eq(Mux(host, d["host_fp"], 0)),
            desc.key_source.eq(Mux(auth, KeySource.AUTHORIZATION, Mux(xkey, KeySource.X_API_KEY, KeySource.NONE))),
            desc.key_len.eq(Mux(auth, d["auth_len"], Mux(xkey, d["xkey_len"], 0))),
            desc.key_fp.eq(Mux(auth, d["auth_fp"], Mux(xkey, d["xkey_fp"], 0))),
            desc.cl_present.eq(cl), desc.cl_overflow.eq(cl & d["cl_ovf"]),
            desc.content_length.eq(Mux(cl, Mux(d["cl_ovf"], U64, d["cl_val"]), 0)),
            desc.extra_present.eq(extra), desc.extra_numeric.eq(x0),
            desc.extra_value.eq(Mux(x0, Mux(d["x0_ovf"], U64, d["x0_val"]), 0)),
        ]
        m.d.comb += [desc.extra_fp[i].eq(Mux(extra[i], d[f"extra_fp{i}"], 0)) for i in range(EXTRA_SLOTS)]

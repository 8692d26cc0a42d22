"""The rebuilt header parser's datapath: the components joined, from beats to one descriptor per packet.

beat ─▶ Tokenizer ─┬─▶ Events ─▶ RouteMatcher ──┐
                   ├─▶ NameMatcher ─────────────┼─▶ field marks ─▶ FingerprintEngine ─┐
                   └─▶ ValueTracker ────────────┘        └─▶ line slots, beat summary ─┴─▶ commit ─▶ descriptor

Every unit is a fixed-latency pipeline that never stalls (its output is always taken), so the join is a matter of
delays: the three units behind the tokenizer are aligned at the *marks* stage, where each beat's lanes are marked
for the fingerprint engine (the path, and each field value, or its Bearer token on an ``authorization`` line) and
its committed lines are gathered into at most W/4 *line slots* (a value's name and record, found at its CR, for the
LF that commits it). The slots and a summary of the beat wait beside the fingerprint engine, and meet its
fingerprints at the *commit* stage: the rules that depend on earlier lines (``docs/parser.md``, "Committing a
header line") run there, in lane order, and may stop the packet sooner than the grammar did. The descriptor is
assembled in the following stages.

The datapath takes no backpressure: :class:`~.header_parser.HeaderParser` admits a beat only when the descriptors in
flight have room. ``busy`` is high while a unit rewrites its tables (after ``fp_update``, ``x_update`` or a prefix
commit); pulse those only while no beat is in flight.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..bus.packet import ByteBeat, check_width
from .events import EVENTS_LATENCY, Events
from .fingerprint import FingerprintEngine, fp_latency
from .layouts import (EXTRA_SLOTS, FP_POLY_RESET, FP_SEED_RESET, LEN_MAX, NAME_BYTES, PREFIX_BYTES, Descriptor,
                      ErrorFlag, KeySource, Method, Version)
from .names import N_BUILTIN, N_NAMES, NameMatcher, name_latency
from .routes import RouteMatcher, route_latency
from .tokenizer import TOKENIZER_LATENCY, Tok, Tokenizer
from .values import VALUE_DIGITS, ValueRecord, ValueTracker, value_latency

__all__ = ["ParserCore", "core_latency"]

HOST, CONTENT_LENGTH, TRANSFER_ENCODING, AUTHORIZATION, X_API_KEY = range(N_BUILTIN)
U64 = (1 << 64) - 1
SP, QMARK = 0x20, 0x3F
#: Stages of the descriptor after the commit stage: BCD terms, their sum.
_ASSEMBLY = 2


def _align(width: int) -> int:
    """Cycles from the tokenizer's output to the marks stage: the slowest of the three branches."""
    return max(name_latency(width), value_latency(width), EVENTS_LATENCY)


def core_latency(width: int) -> int:
    """Cycles from a beat's acceptance to the descriptor of a packet that stops in it."""
    return TOKENIZER_LATENCY[width] + _align(width) + 1 + fp_latency(width) + 1 + _ASSEMBLY


def LineSlot(width: int) -> data.StructLayout:
    """A committed line: the lane of its LF, its name vector and its value's record (from its CR)."""
    return data.StructLayout({"valid": 1, "lf": range(width), "name": N_NAMES, "rec": ValueRecord})


def _Summary(width: int, slots: int) -> data.StructLayout:
    """What the commit stage needs of a beat, besides its fingerprints."""
    return data.StructLayout({
        "valid": 1, "last": 1, "pos": 16, "stop": 1, "errors": len(ErrorFlag), "complete": 1, "header_len": 16,
        "method_set": 1, "method": Method, "version_set": 1, "version": Version,
        "path_close": 1,
        "lines": data.ArrayLayout(LineSlot(width), slots),
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
    """The parser's datapath, W = 4 or 8 (the fingerprint engine's widths).

    Attributes
    ----------
    i_stream : In(stream.Signature(ByteBeat(W)))
        Packets; ``ready`` is low only while ``busy``.
    o_desc : Out(stream.Signature(Descriptor))
        One descriptor per packet, :func:`core_latency` cycles after the beat where it stops; ``ready`` is ignored.
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
        if width not in (4, 8):
            raise ValueError(f"the parser's width W must be 4 or 8 bytes for now, got {width!r}")
        self.slots = max(1, width // 4)
        super().__init__({
            "i_stream": In(stream.Signature(ByteBeat(width))),
            "o_desc": Out(stream.Signature(Descriptor)),
            "max_header_bytes": In(16, init=8192),
            "poly": In(64, init=FP_POLY_RESET),
            "seed": In(64, init=FP_SEED_RESET),
            "fp_update": In(1),
            "default_class": In(4),
            "x_name": In(data.ArrayLayout(data.ArrayLayout(8, NAME_BYTES), EXTRA_SLOTS)),
            "x_len": In(data.ArrayLayout(6, EXTRA_SLOTS)),
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
            self.busy.eq(fpe.busy | rt.busy | ~nm.i_stream.ready),
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

        # Align the three branches at the marks stage.
        align = _align(W)
        e_valid = _delay(m, ev.o_stream.valid, align - EVENTS_LATENCY, "e_valid")
        e_beat = _delay(m, ev.o_stream.payload, align - EVENTS_LATENCY, "e_beat")
        n_beat = _delay(m, nm.o_stream.payload, align - name_latency(W), "n_beat")
        v_beat = _delay(m, vt.o_stream.payload, align - value_latency(W), "v_beat")

        summary = self._marks(m, e_valid, e_beat, n_beat, v_beat, fpe)
        summary = _delay(m, summary, fp_latency(W), "summary")
        # The route unit's path fields meet the summary at the commit stage; they are final from the end of the
        # request line, before any line commits, so they need not pass the marks stage.
        route_wait = align + 1 + fp_latency(W) - EVENTS_LATENCY - route_latency(W)
        assert route_wait >= 0
        route = _delay(m, Cat(rt.o_stream.payload.path_len, rt.o_stream.payload.route_match,
                              rt.o_stream.payload.route_class), route_wait, "route")
        self._commit(m, summary, fpe.o_stream, route)
        return m

    # -- the marks stage --------------------------------------------------------------------------------------------

    def _path_marks(self, m, valid, e):
        """The path's lanes: taken from the first target byte to the first '?', SP, error, limit or packet end.
        Returns the lane masks take, open and close, and ``end`` (the path is cut off by the packet's end)."""
        W = self.width
        t = e.tok
        data_ = t.beat.data
        live = e.live
        st = [t.state[k] for k in range(W)]
        started_c, q_c, closed_c, bytes_c = (Signal(name=f"path_{n}_carry") for n in ("started", "q", "closed",
                                                                                      "bytes"))
        mspace = _net(m, Cat(*(live[k] & (st[k] == Tok.METHOD) & (data_[k] == SP) for k in range(W))), "p_mspace")
        q = _net(m, Cat(*((st[k] == Tok.TARGET) & (data_[k] == QMARK) for k in range(W))), "p_q")
        started = _net(m, _before(mspace, started_c), "p_started")
        q_before = _net(m, _before(q, q_c), "p_q_before")
        zone = _net(m, Cat(*(started[k] & (st[k] == Tok.TARGET) & ~q_before[k] for k in range(W))), "p_zone")
        inpath = _net(m, Cat(*(zone[k] & live[k] & (data_[k] != SP) & (data_[k] != QMARK) for k in range(W))),
                      "p_inpath")
        cand = _net(m, zone & ~inpath, "p_cand")
        closed = _net(m, _before(cand, closed_c), "p_closed")
        close = _net(m, cand & ~closed, "p_close")
        take = _net(m, inpath & ~closed, "p_take")
        had = _net(m, _before(take, bytes_c), "p_had")
        opn = _net(m, take & ~had, "p_open")
        lw = W - 1
        end = t.beat.last & live[lw] & (inpath[lw] | mspace[lw]) & ~closed[lw] & (t.beat.n_valid == W)
        with m.If(valid):
            m.d.sync += [started_c.eq(~t.beat.last & (started[lw] | mspace[lw])),
                         q_c.eq(~t.beat.last & (q_before[lw] | q[lw])),
                         closed_c.eq(~t.beat.last & (closed[lw] | cand[lw])),
                         bytes_c.eq(~t.beat.last & (had[lw] | take[lw]))]
        return take, opn, close, end

    def _marks(self, m, valid, e, n, v, fpe):
        """Field marks into the fingerprint engine; the beat's summary with its line slots (registered)."""
        W, NS = self.width, self.slots
        t = e.tok
        live = e.live
        ptake, popen, pclose, pend = self._path_marks(m, valid, e)

        # The name of each lane's line: the match at the last colon at or before it (the colon's lane holds it).
        colon = Cat(*((t.state[k] == Tok.NAME) & t.feat.cls[k].colon for k in range(W)))
        name_c = Signal(N_NAMES, name="line_name_carry")
        lname = []
        cur = name_c
        for k in range(W):
            cur = Mux(colon[k], n.match[k], cur)
            sig = Signal(N_NAMES, name=f"line_name{k}")
            m.d.comb += sig.eq(cur)
            lname.append(sig)
        with m.If(valid):
            m.d.sync += name_c.eq(lname[W - 1])

        # A value's lanes, or its Bearer token's on an authorization line.
        auth = [lname[k][AUTHORIZATION] for k in range(W)]
        vtake = _net(m, Cat(*(Mux(auth[k], v.tok_byte[k], v.val_byte[k]) & live[k] for k in range(W))), "v_take")
        vkeep = _net(m, Cat(*(Mux(auth[k], v.tok_keep[k], v.val_keep[k]) & live[k] for k in range(W))), "v_keep")
        prev_c = Signal(name="vtake_carry")
        with m.If(valid):
            m.d.sync += prev_c.eq(~t.beat.last & vtake[W - 1])
        vprev = Cat(prev_c, vtake[:W - 1])
        vopen = _net(m, vtake & ~vprev, "v_open")
        cr_end = _net(m, Cat(*(v.rec[k].end & live[k] for k in range(W))), "v_cr_end")

        fb = fpe.i_stream.payload
        m.d.sync += [fpe.i_stream.valid.eq(valid),
                     fb.data.eq(t.beat.data), fb.take.eq(ptake | vtake), fb.keep.eq(ptake | vkeep),
                     fb.open.eq(popen | vopen), fb.close.eq(pclose | cr_end), fb.end.eq(t.beat.last)]

        # Line slots: the i-th committing LF of the beat, with the record and name of the CR before it (the
        # previous beat's last lane for an LF in lane 0).
        held = Signal(data.StructLayout({"name": N_NAMES, "rec": ValueRecord}), name="cr_held")
        with m.If(valid):
            m.d.sync += [held.name.eq(lname[W - 1]), held.rec.eq(v.rec[W - 1])]
        summary = Signal(_Summary(W, NS), name="marks_summary")
        rest = e.commit
        for i in range(NS):
            first = Signal(W, name=f"commit{i}")
            m.d.comb += first.eq(rest & ~_before(rest))
            rest = rest & ~first
            slot = summary.lines[i]
            lane = Const(0, range(W))
            name = held.name
            rec = held.rec.as_value()
            for k in range(1, W):
                lane = Mux(first[k], k, lane)
                name = Mux(first[k], lname[k - 1], name)
                rec = Mux(first[k], v.rec[k - 1].as_value(), rec)
            m.d.sync += [slot.valid.eq(first.any()), slot.lf.eq(lane), slot.name.eq(name),
                         slot.rec.eq(rec)]
        m.d.sync += [
            summary.valid.eq(valid), summary.last.eq(t.beat.last), summary.pos.eq(e.pos), summary.stop.eq(e.stop),
            summary.errors.eq(e.errors), summary.complete.eq(e.complete), summary.header_len.eq(e.header_len),
            summary.method_set.eq(e.method_set), summary.method.eq(e.method),
            summary.version_set.eq(e.version_set), summary.version.eq(e.version),
            summary.path_close.eq(pclose.any() | pend),
        ]
        return summary

    # -- the commit stage -------------------------------------------------------------------------------------------

    def _commit(self, m, s, fps, route):
        """The line rules in lane order, the packet's stop, and the descriptor."""
        W, NS = self.width, self.slots
        slots = fps.payload
        E = ErrorFlag

        # The packet so far (reset after its last beat).
        st = {
            "done": 1, "host": 1, "host_fp": 64, "host_len": 16, "cl": 1, "cl_len": 16, "cl_bcd": 4 * VALUE_DIGITS,
            "cl_ovf": 1, "cl_fp": 64, "te": 1, "chunked": 1, "auth": 1, "auth_fp": 64, "auth_len": 16, "xkey": 1,
            "xkey_fp": 64, "xkey_len": 16, "extra": EXTRA_SLOTS, "x0_num": 1, "x0_bcd": 4 * VALUE_DIGITS,
            "x0_ovf": 1, "lines": 16, "method": Method, "version": Version, "path": 1, "path_fp": 64,
            "path_len": 16, "route_match": 1, "route_class": 4,
        }
        for i in range(EXTRA_SLOTS):
            st[f"extra_fp{i}"] = 64
        cur = {k: Signal(shape, name=f"pk_{k}") for k, shape in st.items()}
        nxt = {k: Signal(shape, name=f"pk_next_{k}") for k, shape in st.items()}
        m.d.comb += [nxt[k].eq(cur[k]) for k in st]

        # This beat's fingerprints by lane; the previous beat's last-lane one (a CR before an LF in lane 0).
        fp_held = Signal(64)
        with m.If(s.valid):
            m.d.sync += fp_held.eq(0)
            for j in range(NS):
                with m.If(slots[j].valid & (slots[j].lane == W - 1)):
                    m.d.sync += fp_held.eq(slots[j].fp)

        def fp_for(lf):
            fp = fp_held
            for j in range(NS):
                fp = Mux(slots[j].valid & (slots[j].lane + 1 == lf) & (lf != 0), slots[j].fp, fp)
            return fp

        with m.If(s.method_set):
            m.d.comb += nxt["method"].eq(s.method)
        with m.If(s.version_set):
            m.d.comb += nxt["version"].eq(s.version)
        with m.If(s.path_close & ~cur["path"]):
            m.d.comb += [nxt["path"].eq(1), nxt["path_fp"].eq(slots[0].fp)]
        # The route unit's path fields are final from the end of the request line, before any line commits.
        with m.If(s.valid):
            m.d.comb += Cat(nxt["path_len"], nxt["route_match"], nxt["route_class"]).eq(route)

        # The committed lines, in order; each sees the state the lines before it left.
        stop_err = Const(0, len(E))
        stop_len = Const(0, 16)
        stopped = cur["done"]
        state = dict(nxt)
        for i in range(NS):
            line = s.lines[i]
            go = Signal(name=f"commit_go{i}")
            m.d.comb += go.eq(s.valid & line.valid & ~stopped)
            state, err = self._rules(m, i, go, line, fp_for(line.lf), state)
            failed = Signal(name=f"commit_failed{i}")
            m.d.comb += failed.eq(go & (err != 0))
            first_fail = failed & (stop_err == 0)
            stop_err = Mux(first_fail, err, stop_err)
            stop_len = Mux(first_fail, s.pos + line.lf + 1, stop_len)
            stopped = stopped | failed
        committed_stop = Signal()
        m.d.comb += committed_stop.eq(stopped & ~cur["done"])

        # The grammar's stop, with the block checks, unless a line stopped the packet first.
        block = Mux((state["version"] == Version.HTTP_1_1) & ~state["host"], E.missing_host, 0) | \
            Mux(state["cl"] & state["te"], E.cl_and_te, 0)
        grammar_stop = Signal()
        m.d.comb += grammar_stop.eq(s.valid & s.stop & ~stopped)
        emit = Signal()
        m.d.comb += emit.eq(committed_stop | grammar_stop)
        errors = Mux(committed_stop, stop_err, Mux(s.complete, block, s.errors))
        header_len = Mux(committed_stop, stop_len, s.header_len)
        complete = grammar_stop & s.complete

        with m.If(s.valid):
            m.d.sync += [cur[k].eq(state[k]) for k in st]
            m.d.sync += cur["done"].eq(stopped | grammar_stop)
            with m.If(s.last):
                m.d.sync += [cur[k].eq(0) for k in st]
        self._assemble(m, emit, state, errors, header_len, complete)

    def _rules(self, m, i, go, line, fp, state):
        """One committed line against the packet's state: the new state and the error it raises (or 0)."""
        E = ErrorFlag
        rec, name = line.rec, line.name
        n = {k: Signal.like(v, name=f"l{i}_{k}") for k, v in state.items()}
        m.d.comb += [n[k].eq(v) for k, v in state.items()]
        err = Signal(len(E), name=f"l{i}_err")
        is_ = [go & name[j] for j in range(N_NAMES)]
        with m.If(go):
            m.d.comb += n["lines"].eq(Mux(state["lines"] == LEN_MAX, LEN_MAX, state["lines"] + 1))
        # Host.
        with m.If(is_[HOST]):
            with m.If(state["host"]):
                m.d.comb += err.eq(E.duplicate_host)
            with m.Else():
                m.d.comb += [n["host"].eq(1), n["host_fp"].eq(fp), n["host_len"].eq(rec.len)]
        # Content-Length: a number of 1..20 digits; a repeat must be spelled the same.
        number = rec.digits_ok & (rec.len != 0) & (rec.len <= VALUE_DIGITS)
        differs = state["cl"] & (((state["cl_bcd"] != rec.bcd) & ~(state["cl_ovf"] & rec.overflow)) |
                                 (state["cl_ovf"] != rec.overflow) | (state["cl_len"] != rec.len) |
                                 (state["cl_fp"] != fp))
        with m.If(is_[CONTENT_LENGTH]):
            with m.If(~number):
                m.d.comb += err.eq(E.bad_content_length)
            with m.Elif(differs):
                m.d.comb += err.eq(E.cl_mismatch)
            with m.Else():
                m.d.comb += [n["cl"].eq(1), n["cl_len"].eq(rec.len), n["cl_bcd"].eq(rec.bcd),
                             n["cl_ovf"].eq(rec.overflow), n["cl_fp"].eq(fp)]
        # Transfer-Encoding: exactly one, "chunked".
        with m.If(is_[TRANSFER_ENCODING]):
            m.d.comb += n["te"].eq(1)
            with m.If(state["te"] | ~rec.chunked):
                m.d.comb += err.eq(E.bad_transfer_encoding)
            with m.Else():
                m.d.comb += n["chunked"].eq(1)
        # The API key candidates (the marks fingerprinted the token on an authorization line).
        with m.If(is_[AUTHORIZATION] & ~state["auth"] & rec.bearer):
            m.d.comb += [n["auth"].eq(1), n["auth_fp"].eq(fp), n["auth_len"].eq(rec.token_len)]
        with m.If(is_[X_API_KEY] & ~state["xkey"]):
            m.d.comb += [n["xkey"].eq(1), n["xkey_fp"].eq(fp), n["xkey_len"].eq(rec.len)]
        for x in range(EXTRA_SLOTS):
            with m.If(is_[N_BUILTIN + x] & ~state["extra"][x]):
                m.d.comb += [n["extra"][x].eq(1), n[f"extra_fp{x}"].eq(fp)]
                if x == 0:
                    m.d.comb += [n["x0_num"].eq(number), n["x0_bcd"].eq(Mux(number, rec.bcd, 0)),
                                 n["x0_ovf"].eq(number & rec.overflow)]
        # A failed rule stops the packet at this LF; the line itself counts, extra names included (the failed rule
        # changed nothing).
        return n, err

    # -- the descriptor ---------------------------------------------------------------------------------------------

    def _assemble(self, m, emit, pk, errors, header_len, complete):
        """Two stages: the registered packet record with the BCD terms, then the sums into the descriptor."""
        from .header_parser import _bcd_sum, _bcd_terms
        a_valid = Signal()
        a = {k: Signal.like(v, name=f"asm_{k}") for k, v in pk.items()}
        a_errors, a_len, a_complete = Signal(len(ErrorFlag)), Signal(16), Signal()
        cl_parts = [Signal(64, name=f"asm_cl_p{g}") for g in range(4)]
        x0_parts = [Signal(64, name=f"asm_x0_p{g}") for g in range(4)]
        m.d.sync += [a_valid.eq(emit), a_errors.eq(errors), a_len.eq(header_len), a_complete.eq(complete)]
        m.d.sync += [a[k].eq(v) for k, v in pk.items()]
        m.d.sync += [r.eq(v) for r, v in zip(cl_parts, _bcd_terms(m, pk["cl_bcd"], "cl"))]
        m.d.sync += [r.eq(v) for r, v in zip(x0_parts, _bcd_terms(m, pk["x0_bcd"], "x0"))]
        desc = self.o_desc.payload
        auth, xkey = a["auth"], a["xkey"]
        m.d.sync += [
            self.o_desc.valid.eq(a_valid),
            desc.method.eq(a["method"]), desc.version.eq(a["version"]),
            desc.path_len.eq(a["path_len"]), desc.path_fp.eq(Mux(a["path"], a["path_fp"], 0)),
            desc.route_match.eq(a["route_match"]), desc.route_class.eq(a["route_class"]),
            desc.host_present.eq(a["host"]), desc.host_len.eq(a["host_len"]), desc.host_fp.eq(a["host_fp"]),
            desc.key_source.eq(Mux(auth, KeySource.AUTHORIZATION, Mux(xkey, KeySource.X_API_KEY, KeySource.NONE))),
            desc.key_len.eq(Mux(auth, a["auth_len"], Mux(xkey, a["xkey_len"], 0))),
            desc.key_fp.eq(Mux(auth, a["auth_fp"], Mux(xkey, a["xkey_fp"], 0))),
            desc.cl_present.eq(a["cl"]), desc.cl_overflow.eq(a["cl_ovf"]),
            desc.content_length.eq(Mux(a["cl_ovf"], U64, _bcd_sum(cl_parts))), desc.chunked.eq(a["chunked"]),
            desc.extra_present.eq(a["extra"]),
            desc.extra_numeric.eq(a["x0_num"]), desc.extra_value.eq(Mux(a["x0_ovf"], U64, _bcd_sum(x0_parts))),
            desc.header_len.eq(a_len), desc.header_lines.eq(a["lines"]),
            desc.complete.eq(a_complete), desc.errors.eq(a_errors),
        ]
        m.d.sync += [desc.extra_fp[i].eq(a[f"extra_fp{i}"]) for i in range(EXTRA_SLOTS)]

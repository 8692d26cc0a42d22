"""HTTP/1.1 request header parser: the front of the offload pipeline.

packet bytes (W per beat) ─▶ :class:`HeaderParser` ─┬─▶ the same bytes, unchanged (``o_stream``)
                                                     └─▶ one :class:`~.layouts.Descriptor` per packet (``o_desc``)

Behaviour is specified in ``docs/parser.md``; :mod:`wirespeed.host.models.parser` is the bit-exact model.

Structure. Each beat runs W copies of one byte step, chained lane to lane, over the parser state (request-line
state machine, name matchers, field-value trackers, fingerprints). The state is registered between beats, so the
parser takes one beat per cycle whatever the content. When a packet stops (header end, first error, limit, or end of
packet) the final state is in the snapshot register (loaded every cycle, so the stop decision drives no enables);
the route prefix match and descriptor assembly follow in two more pipeline stages, and the descriptor leaves through
a small FIFO. A beat at cycle *c* that holds the final LF yields its descriptor at cycle *c* + 3 when ``o_desc`` is
ready.

Numbers (Content-Length, extra slot 0) are kept in the lane chain as BCD: a digit is a 4-bit shift, with no carry
chain, and the overflow test is a digit-by-digit comparison with 2^64 as the digits arrive. The binary value is
made after the packet stops, in the two stages the descriptor takes anyway (:func:`_bcd_terms`, then a sum).
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from ..bus.regmap import HDL_DIR, compile_rdl, regmap_from_node
from ..bus.packet import ByteBeat, check_width
from .layouts import (BUILTIN_NAMES, EXTRA_SLOTS, FP_POLY_RESET, METHODS, NAME_BYTES, PREFIX_BYTES,
                      PREFIX_ENTRIES, extra_name_words, Descriptor, ErrorFlag, KeySource, Method, Version)
from ..bus.regbank import hw_signature

__all__ = ["HeaderParser", "parser_regmap", "DESC_FIFO_DEPTH", "DESC_LATENCY_CYCLES"]

#: Cycles from the beat holding the stop byte (e.g. the final LF) to ``o_desc.valid``.
DESC_LATENCY_CYCLES = 3
DESC_FIFO_DEPTH = 8
#: Content-Length values longer than this are rejected (h11 does the same); 20 digits hold any 64-bit value.
CL_MAX_DIGITS = 20
#: 2^64 in decimal: a value of CL_MAX_DIGITS digits overflows if its digits compare >= these (leading zeros count).
_TWO_64 = b"18446744073709551616"
assert len(_TWO_64) == CL_MAX_DIGITS and int(_TWO_64) == 1 << 64
# The running comparison of a value's digits with the same number of leading digits of 2^64.
CMP_EQ, CMP_GT, CMP_LT = range(3)

CR, LF, SP, HTAB, COLON, QMARK = 0x0D, 0x0A, 0x20, 0x09, 0x3A, 0x3F

# Request-line and header states (docs/parser.md).
METHOD, TARGET, VERSION, RL_LF, LINE_START, NAME, VALUE, VALUE_LF, END_LF = range(9)

# Authorization value phases: scheme so far matches "bearer"; SP run; token; invalid; WS after the token.
PH_SCHEME, PH_SP, PH_TOKEN, PH_BAD, PH_TOKEN_WS = range(5)

N_BUILTIN = len(BUILTIN_NAMES)
HOST, CONTENT_LENGTH, TRANSFER_ENCODING, AUTHORIZATION, X_API_KEY, UPGRADE = range(N_BUILTIN)
U64 = (1 << 64) - 1


def _residue(poly_low: int, k: int) -> int:
    """x^(64+k) mod P, for the reset value of the residue registers."""
    r = poly_low
    for _ in range(k):
        r = ((r << 1) & U64) ^ (poly_low if r >> 63 else 0)
    return r


def parser_regmap():
    """The parser's register map on its own (addresses from 0), for a standalone bank."""
    return regmap_from_node(compile_rdl([HDL_DIR / "parser/parser.rdl"], "wirespeed_parser"))


def _is_tchar(b):
    alpha = ((b | 0x20) >= ord("a")) & ((b | 0x20) <= ord("z"))
    digit = (b >= ord("0")) & (b <= ord("9"))
    other = 0
    for c in b"!#$%&'*+-.^_`|~":
        other = other | (b == c)
    return alpha | digit | other


def _byte_at(text: bytes, index):
    """Byte ``index`` of a constant string (0 past its end), as a small case table rather than a shifter."""
    return Array(Const(c, 8) for c in text.ljust(1 << len(index), b"\0"))[index]


def _lower(b):
    return Mux((b >= ord("A")) & (b <= ord("Z")), b | 0x20, b)


def _sat_inc(v):
    return Mux(v == (1 << len(v)) - 1, v, v + 1)


def _bcd_terms(m, bcd, name):
    """Stage one of a BCD → binary conversion: ``CL_MAX_DIGITS`` digits (digit 0 least significant) into four
    64-bit partial sums, each of five ``digit · 10^i mod 2^64`` terms. A term is a table on the 4-bit digit (one
    LUT4 per output bit); the sum is taken mod 2^64, which is exact for every value that does not overflow."""
    parts = []
    for g in range(4):
        terms = []
        for i in range(5 * g, 5 * g + 5):
            digit = bcd[4 * i:4 * i + 4]
            t = Signal(64, name=f"{name}_t{i}")
            m.d.comb += t.eq(Array(Const((d * 10 ** i) & U64, 64) for d in range(16))[digit])
            terms.append(t)
        part = Signal(64, name=f"{name}_p{g}")
        m.d.comb += part.eq((terms[0] + terms[1]) + (terms[2] + terms[3]) + terms[4])
        parts.append(part)
    return parts


def _bcd_sum(parts):
    """Stage two: the value mod 2^64 from the four registered partial sums."""
    return ((parts[0] + parts[1]) + (parts[2] + parts[3]))[0:64]


class _Record:
    """A bundle of named signals (one copy of the parser state), so a lane step can copy and override it."""

    def __init__(self, fields: dict, prefix: str, reset=None):
        self.fields = fields
        reset = reset or {}
        for name, shape in fields.items():
            setattr(self, name, Signal(shape, name=f"{prefix}{name}", init=reset.get(name, 0)))

    def signals(self):
        return [getattr(self, n) for n in self.fields]

    def eq(self, other):
        return [getattr(self, n).eq(getattr(other, n)) for n in self.fields]


def _tracker_fields():
    """Per field value: fingerprint, length, CL digits, "chunked" match, and the Bearer token."""
    return {"fp": 64, "len": 16, "digits_ok": 1, "bcd": 4 * CL_MAX_DIGITS, "cmp": 2, "chunk_ok": 1,
            "phase": 3, "tok_fp": 64, "tok_len": 16}


def _state_fields():
    f = {
        "stopped": 1, "complete": 1, "errors": len(ErrorFlag), "state": 4, "pending_cr": 1, "pos": 16,
        "mbuf": 64, "mlen": 4, "method": 4, "target_any": 1, "origin_form": 1, "in_query": 1,
        "path_len": 16, "path_fp": 64, "path_buf": 8 * PREFIX_BYTES,
        "vbuf": 64, "vlen": 4, "version": 2, "header_lines": 16,
        "name_len": 6, "match": N_BUILTIN + EXTRA_SLOTS, "started": 1,
        "host_present": 1, "host_fp": 64, "host_len": 16, "upgrade": 1,
        "cl_present": 1, "cl_bcd": 4 * CL_MAX_DIGITS, "cl_ovf": 1, "cl_len": 16, "cl_fp": 64, "te_seen": 1, "chunked": 1,
        "auth_found": 1, "auth_fp": 64, "auth_len": 16, "xkey_found": 1, "xkey_fp": 64, "xkey_len": 16,
        "extra_present": EXTRA_SLOTS, "x0_num": 1, "x0_bcd": 4 * CL_MAX_DIGITS, "x0_ovf": 1,
    }
    for i in range(EXTRA_SLOTS):
        f[f"extra_fp{i}"] = 64
    for name, width in _tracker_fields().items():
        f[f"run_{name}"] = width
        f[f"com_{name}"] = width
    return f


class HeaderParser(wiring.Component):
    """HTTP/1.1 request header parser.

    Parameters
    ----------
    width : int
        W, bytes per beat: 4, 8 or 16.

    Attributes
    ----------
    i_stream : In(stream.Signature(ByteBeat(W)))
        Request packets, one request per packet. Accepted at one beat per cycle while ``o_stream`` is ready.
    o_stream : Out(stream.Signature(ByteBeat(W)))
        The same beats, unchanged, in the same cycle they are accepted.
    o_desc : Out(stream.Signature(Descriptor))
        Exactly one descriptor per packet, :data:`DESC_LATENCY_CYCLES` cycles after the beat holding the stop byte.
    regs : In(hw signature of ``parser.rdl``)
        Connect to the register bank's ``parser`` block.
    """

    def __init__(self, width: int = 8):
        self.width = check_width(width)
        regs_sig = hw_signature(parser_regmap())
        super().__init__({
            "i_stream": In(stream.Signature(ByteBeat(width))),
            "o_stream": Out(stream.Signature(ByteBeat(width))),
            "o_desc": Out(stream.Signature(Descriptor)),
            "regs": In(regs_sig),
        })

    # -- configuration tables (staging + commit) ------------------------------------------------------------------

    def _tables(self, m):
        regs = self.regs
        t = {}
        t["pfx_bytes"] = [Signal(8 * PREFIX_BYTES, name=f"pfx{e}_bytes") for e in range(PREFIX_ENTRIES)]
        t["pfx_len"] = [Signal(6, name=f"pfx{e}_len") for e in range(PREFIX_ENTRIES)]
        t["pfx_class"] = [Signal(4, name=f"pfx{e}_class") for e in range(PREFIX_ENTRIES)]
        t["pfx_valid"] = [Signal(name=f"pfx{e}_valid") for e in range(PREFIX_ENTRIES)]
        # Which of the 32 byte positions an entry compares (its first len bytes), kept beside the entry.
        t["pfx_mask"] = [Signal(PREFIX_BYTES, name=f"pfx{e}_mask") for e in range(PREFIX_ENTRIES)]
        # Reset: EXTRA_NAMES_RESET (slot 0 is x-token-estimate, the limiter's reset cost source).
        t["x_bytes"] = [Signal(8 * NAME_BYTES, name=f"extra{i}_name", init=word)
                        for i, (word, _) in enumerate(extra_name_words())]
        t["x_len"] = [Signal(6, name=f"extra{i}_len", init=length) for i, (_, length) in enumerate(extra_name_words())]
        stage_pfx = Cat(*(getattr(regs, f"prefix_data_{i}").value for i in range(PREFIX_BYTES // 4)))
        stage_x = Cat(*(getattr(regs, f"extra_data_{i}").value for i in range(NAME_BYTES // 4)))
        # The entries' order by length, kept beside them: longer[(f, e)] (f < e) is pfx_len[e] > pfx_len[f]. A commit
        # compares its new length with the 15 others (16 comparators), so the match needs none (it would need 120).
        new_len = Signal(6)
        m.d.comb += new_len.eq(Mux(regs.prefix_ctrl.len > PREFIX_BYTES, PREFIX_BYTES, regs.prefix_ctrl.len))
        t["longer"] = {(f, e): Signal(name=f"pfx{e}_longer_than{f}")
                       for e in range(PREFIX_ENTRIES) for f in range(e)}
        with m.If(regs.prefix_commit.go):
            with m.Switch(regs.prefix_commit.index):
                for e in range(PREFIX_ENTRIES):
                    with m.Case(e):
                        m.d.sync += [t["longer"][(f, e)].eq(new_len > t["pfx_len"][f]) for f in range(e)]
                        m.d.sync += [t["longer"][(e, f)].eq(t["pfx_len"][f] > new_len)
                                     for f in range(e + 1, PREFIX_ENTRIES)]
                        m.d.sync += [t["pfx_bytes"][e].eq(stage_pfx),
                                     t["pfx_mask"][e].eq(
                                         Array(Const((1 << i) - 1, PREFIX_BYTES) for i in range(64))[
                                             regs.prefix_ctrl.len]),
                                     t["pfx_len"][e].eq(new_len),
                                     t["pfx_class"][e].eq(regs.prefix_ctrl.route_class),
                                     t["pfx_valid"][e].eq(regs.prefix_ctrl.valid)]
        with m.If(regs.extra_commit.go):
            with m.Switch(regs.extra_commit.index):
                for i in range(EXTRA_SLOTS):
                    with m.Case(i):
                        m.d.sync += [t["x_bytes"][i].eq(stage_x),
                                     t["x_len"][i].eq(Mux(regs.extra_ctrl.len > NAME_BYTES, NAME_BYTES,
                                                          regs.extra_ctrl.len))]
        return t

    # -- one byte step --------------------------------------------------------------------------------------------

    def _crc(self, state, byte, red):
        """One MSB-first CRC byte step with the reduction residues ``red[k] = x^(64+k) mod P``."""
        f = state[56:64] ^ byte
        acc = Cat(Const(0, 8), state[0:56])
        for k in range(8):
            acc = acc ^ Mux(f[k], red[k], 0)
        return acc

    def _step(self, m, k, s, b, lane_valid, cfg):
        """Lane ``k``: the next state ``n`` from state ``s`` and byte ``b``.

        Written flat: every group of assignments sits under one ``If`` whose condition is the full path to it (a
        named 1-bit net), in the order of the decision tree in ``docs/parser.md``, so a later group overrides an
        earlier one exactly as a nested ``Elif`` would. Nesting ``If``/``Switch`` instead makes Yosys build one
        multiplexer per nesting level per field: 142 k mux bits for W=8, most of the parser's area.
        """
        n = _Record(_state_fields(), f"l{k}_")
        m.d.comb += n.eq(s)
        red, seed, limit, tables = cfg["red"], cfg["seed"], cfg["limit"], cfg["tables"]
        def net(expr, name, shape=1):
            # Amaranth re-emits an expression at every use; a named signal shares it (and shows in waveforms).
            sig = Signal(shape, name=f"l{k}_{name}")
            m.d.comb += sig.eq(expr)
            return sig

        def when(cond, name, *stmts):
            with m.If(net(cond, f"when_{name}")):
                m.d.comb += list(stmts)

        b = net(b, "byte", 8)
        is_tchar = net(_is_tchar(b), "is_tchar")
        is_vchar = net((b >= 0x21) & (b <= 0x7E), "is_vchar")
        is_fvchar = net(is_vchar | b[7], "is_fvchar")         # field-vchar: vchar or obs-text
        is_ws = net((b == SP) | (b == HTAB), "is_ws")
        is_digit = net((b >= ord("0")) & (b <= ord("9")), "is_digit")
        is_cr, is_lf, is_sp = net(b == CR, "is_cr"), net(b == LF, "is_lf"), net(b == SP, "is_sp")
        lb = net(_lower(b), "lower", 8)

        def failing(flag):
            return [n.errors.eq(s.errors | flag.value), n.stopped.eq(1)]

        # Name matchers: builtins are constants, extras come from the committed table.
        lens = [Const(len(nm), 6) for nm in BUILTIN_NAMES] + [tables["x_len"][i] for i in range(EXTRA_SLOTS)]

        def name_char_ok(i_pos, idx):
            if idx < N_BUILTIN:
                expect = _byte_at(BUILTIN_NAMES[idx], i_pos[0:5])
            else:
                # word_select ($shiftx, a mux tree) costs 1.5 k LUT4 less at W=4 than an Array ($pmux).
                expect = tables["x_bytes"][idx - N_BUILTIN].word_select(i_pos[0:5], 8)
            return (i_pos < lens[idx]) & (expect == lb)

        n_names = N_BUILTIN + EXTRA_SLOTS
        first_ok = net(Cat(*(name_char_ok(Const(0, 6), i) for i in range(n_names))), "name_first_ok", n_names)
        next_ok = net(Cat(*(name_char_ok(s.name_len, i) for i in range(n_names))), "name_next_ok", n_names)
        # Two CRC steps per lane, not four: the path is hashed only in TARGET and a value only in VALUE; a token
        # starts from the seed only in phase SP and continues only in phase TOKEN.
        crc_fp = net(self._crc(Mux(s.state == TARGET, s.path_fp, s.run_fp), b, red), "crc_fp", 64)
        crc_tok = net(self._crc(Mux(s.run_phase == PH_SP, seed, s.run_tok_fp), b, red), "crc_tok", 64)
        # A digit's low nibble is its value. Its index in the value is run_len (digits_ok says all were digits).
        ref = net(_byte_at(_TWO_64, s.run_len[0:5])[0:4], "cmp_ref", 4)
        cmp_next = net(Mux((s.run_cmp != CMP_EQ) | (s.run_len >= CL_MAX_DIGITS), s.run_cmp,
                           Mux(b[0:4] > ref, CMP_GT, Mux(b[0:4] < ref, CMP_LT, CMP_EQ))), "cmp_next", 2)

        # The decision tree's internal nodes, as nets.
        active = net(lane_valid & ~s.stopped, "active")
        at_limit = net(active & (s.pos == limit), "at_limit")
        consume = net(active & (s.pos != limit), "consume")
        crlf_bad = net(consume & ((s.pending_cr & ~is_lf) | (is_lf & ~s.pending_cr)), "crlf_bad")
        ok = net(consume & ~crlf_bad, "ok")
        st = {name: net(ok & (s.state == code), f"st_{name}") for name, code in
              (("method", METHOD), ("target", TARGET), ("version", VERSION), ("rl_lf", RL_LF),
               ("line_start", LINE_START), ("name", NAME), ("value", VALUE), ("value_lf", VALUE_LF),
               ("end_lf", END_LF))}

        def track(cond):
            """Update the running value tracker with byte ``b`` (a value byte: WS after the start, or field-vchar)."""
            i = s.run_len
            when(cond, "val_track",
                 n.run_fp.eq(crc_fp),
                 n.run_len.eq(_sat_inc(s.run_len)),
                 n.run_digits_ok.eq(s.run_digits_ok & is_digit),
                 n.run_chunk_ok.eq(s.run_chunk_ok & (i < 7) & (_byte_at(b"chunked", i[0:3]) == lb)))
            when(cond & is_digit, "val_digit",
                 n.run_bcd.eq(Cat(b[0:4], s.run_bcd[:-4])), n.run_cmp.eq(cmp_next))
            ph = s.run_phase
            scheme = cond & (ph == PH_SCHEME)
            when(scheme & (i < 6) & (_byte_at(b"bearer", i[0:3]) != lb), "val_scheme_bad", n.run_phase.eq(PH_BAD))
            when(scheme & (i >= 6) & is_sp, "val_scheme_sp", n.run_phase.eq(PH_SP))
            when(scheme & (i >= 6) & ~is_sp, "val_scheme_end_bad", n.run_phase.eq(PH_BAD))
            sp = cond & (ph == PH_SP)
            when(sp & (b == HTAB), "val_sp_bad", n.run_phase.eq(PH_BAD))
            when(sp & (b != HTAB) & ~is_sp, "val_tok_start",
                 n.run_phase.eq(PH_TOKEN), n.run_tok_fp.eq(crc_tok), n.run_tok_len.eq(1))
            token = cond & (ph == PH_TOKEN)
            when(token & is_ws, "val_tok_ws", n.run_phase.eq(PH_TOKEN_WS))
            when(token & ~is_ws, "val_tok",
                 n.run_tok_fp.eq(crc_tok), n.run_tok_len.eq(_sat_inc(s.run_tok_len)))
            when(cond & (ph == PH_TOKEN_WS) & ~is_ws, "val_tok_ws_bad", n.run_phase.eq(PH_BAD))

        def commit_line(c):
            """The LF ending a field line: apply the committed value to the header it names."""
            matched = [s.match[i] for i in range(N_BUILTIN + EXTRA_SLOTS)]
            when(c, "commit", n.header_lines.eq(_sat_inc(s.header_lines)))
            host = c & matched[HOST]
            when(host & s.host_present, "dup_host", *failing(ErrorFlag.duplicate_host))
            when(host & ~s.host_present, "host",
                 n.host_present.eq(1), n.host_fp.eq(s.com_fp), n.host_len.eq(s.com_len))
            cl = c & matched[CONTENT_LENGTH]
            cl_bad = net(~s.com_digits_ok | (s.com_len == 0) | (s.com_len > CL_MAX_DIGITS), "cl_bad")
            # Of a valid number (at most 20 digits, all held in com_bcd): does it reach 2^64?
            com_ovf = net((s.com_len == CL_MAX_DIGITS) & (s.com_cmp != CMP_LT), "com_ovf")
            # A repeat must be spelled the same: "5" then "05" is a mismatch, as in h11. The values compare as the
            # model's saturated numbers do: two that overflow are equal (U64) whatever their digits.
            value_differs = (s.com_bcd != s.cl_bcd) & ~(com_ovf & s.cl_ovf)
            cl_differs = net(s.cl_present & (value_differs | (com_ovf != s.cl_ovf) |
                                             (s.com_len != s.cl_len) | (s.com_fp != s.cl_fp)), "cl_differs")
            when(cl & cl_bad, "cl_bad", *failing(ErrorFlag.bad_content_length))
            when(cl & ~cl_bad & cl_differs, "cl_mismatch", *failing(ErrorFlag.cl_mismatch))
            when(cl & ~cl_bad & ~cl_differs, "cl",
                 n.cl_present.eq(1), n.cl_bcd.eq(s.com_bcd), n.cl_ovf.eq(com_ovf),
                 n.cl_len.eq(s.com_len), n.cl_fp.eq(s.com_fp))
            te = c & matched[TRANSFER_ENCODING]
            te_bad = s.te_seen | ~s.com_chunk_ok | (s.com_len != 7)
            when(te, "te", n.te_seen.eq(1))
            when(te & te_bad, "te_bad", *failing(ErrorFlag.bad_transfer_encoding))
            when(te & ~te_bad, "te_chunked", n.chunked.eq(1))
            when(c & matched[AUTHORIZATION] & ~s.auth_found & (s.com_phase == PH_TOKEN), "auth",
                 n.auth_found.eq(1), n.auth_fp.eq(s.com_tok_fp), n.auth_len.eq(s.com_tok_len))
            when(c & matched[X_API_KEY] & ~s.xkey_found, "xkey",
                 n.xkey_found.eq(1), n.xkey_fp.eq(s.com_fp), n.xkey_len.eq(s.com_len))
            when(c & matched[UPGRADE], "upgrade", n.upgrade.eq(1))          # any value: the policy's input
            for i in range(EXTRA_SLOTS):
                stmts = [n.extra_present[i].eq(1), getattr(n, f"extra_fp{i}").eq(s.com_fp)]
                if i == 0:
                    # Extra slot 0's value as a number (a cost source for the limiter), read like Content-Length.
                    numeric = s.com_digits_ok & (s.com_len != 0) & (s.com_len <= CL_MAX_DIGITS)
                    stmts += [n.x0_num.eq(numeric), n.x0_bcd.eq(Mux(numeric, s.com_bcd, 0)),
                              n.x0_ovf.eq(numeric & com_ovf)]
                when(c & matched[N_BUILTIN + i] & ~s.extra_present[i], f"extra{i}", *stmts)

        when(at_limit, "at_limit", *failing(ErrorFlag.header_too_large))     # this byte is not consumed
        when(consume, "consume", n.pos.eq(s.pos + 1))
        when(crlf_bad, "crlf_bad", *failing(ErrorFlag.bare_cr_lf))

        # METHOD
        method = Const(Method.OTHER.value, 4)
        for token, code in METHODS.items():
            hit = (s.mlen == len(token)) & (s.mbuf[0:8 * len(token)] == int.from_bytes(token, "big"))
            method = Mux(hit, code.value, method)
        when(st["method"] & is_tchar, "m_char",
             n.mbuf.eq(Cat(b, s.mbuf[0:56])), n.mlen.eq(Mux(s.mlen == 15, 15, s.mlen + 1)))
        when(st["method"] & ~is_tchar & is_sp & (s.mlen != 0), "m_end",
             n.method.eq(method), n.state.eq(TARGET), n.path_fp.eq(seed))
        when(st["method"] & ~is_tchar & ~(is_sp & (s.mlen != 0)), "m_bad", *failing(ErrorFlag.bad_request_line))

        # TARGET
        t_char = net(st["target"] & is_vchar, "t_char")
        when(t_char, "t_any", n.target_any.eq(1))
        when(t_char & ~s.target_any & (b == ord("/")), "t_origin", n.origin_form.eq(1))
        when(t_char & (b == QMARK) & ~s.in_query, "t_query", n.in_query.eq(1))
        t_path = net(t_char & ~((b == QMARK) & ~s.in_query) & ~s.in_query, "t_path")
        when(t_path, "t_path", n.path_fp.eq(crc_fp), n.path_len.eq(_sat_inc(s.path_len)))
        with m.If(net(t_path & (s.path_len < PREFIX_BYTES), "when_t_buf")):
            with m.Switch(s.path_len[0:5]):
                for j in range(PREFIX_BYTES):
                    with m.Case(j):
                        m.d.comb += n.path_buf[8 * j:8 * j + 8].eq(b)
        when(st["target"] & ~is_vchar & is_sp & s.target_any, "t_end", n.state.eq(VERSION))
        when(st["target"] & ~is_vchar & ~(is_sp & s.target_any), "t_bad", *failing(ErrorFlag.bad_request_line))

        # VERSION
        v11 = s.vbuf == int.from_bytes(b"HTTP/1.1", "big")
        v10 = s.vbuf == int.from_bytes(b"HTTP/1.0", "big")
        v_ok = net((s.vlen == 8) & (v11 | v10), "v_ok")
        when(st["version"] & is_cr & v_ok, "v_end",
             n.version.eq(Mux(v11, Version.HTTP_1_1.value, Version.HTTP_1_0.value)),
             n.pending_cr.eq(1), n.state.eq(RL_LF))
        when(st["version"] & is_cr & ~v_ok, "v_bad", *failing(ErrorFlag.bad_request_line))
        when(st["version"] & ~is_cr & (s.vlen == 8), "v_long", *failing(ErrorFlag.bad_request_line))
        when(st["version"] & ~is_cr & (s.vlen != 8), "v_char",
             n.vbuf.eq(Cat(b, s.vbuf[0:56])), n.vlen.eq(s.vlen + 1))

        # RL_LF
        when(st["rl_lf"], "rl_lf", n.pending_cr.eq(0), n.state.eq(LINE_START))

        # LINE_START
        when(st["line_start"] & is_cr, "ls_cr", n.pending_cr.eq(1), n.state.eq(END_LF))
        when(st["line_start"] & ~is_cr & is_ws, "ls_fold", *failing(ErrorFlag.obs_fold))
        when(st["line_start"] & ~is_cr & ~is_ws & is_tchar, "ls_name",
             n.state.eq(NAME), n.name_len.eq(1), n.match.eq(first_ok))
        when(st["line_start"] & ~is_cr & ~is_ws & ~is_tchar, "ls_bad", *failing(ErrorFlag.bad_field_name))

        # NAME
        when(st["name"] & is_tchar, "n_char",
             n.name_len.eq(Mux(s.name_len == 63, 63, s.name_len + 1)), n.match.eq(s.match & next_ok))
        init = {"fp": seed, "len": 0, "digits_ok": 1, "bcd": 0, "cmp": CMP_EQ,
                "chunk_ok": 1, "phase": PH_SCHEME, "tok_fp": 0, "tok_len": 0}
        when(st["name"] & ~is_tchar & (b == COLON), "n_colon",
             n.state.eq(VALUE), n.started.eq(0),
             n.match.eq(s.match & Cat(*(s.name_len == ln for ln in lens))),
             *[getattr(n, f"{kind}_{name}").eq(value) for name, value in init.items() for kind in ("run", "com")])
        when(st["name"] & ~is_tchar & (b != COLON) & is_ws, "n_ws", *failing(ErrorFlag.ws_before_colon))
        when(st["name"] & ~is_tchar & (b != COLON) & ~is_ws, "n_bad", *failing(ErrorFlag.bad_field_name))

        # VALUE
        when(st["value"] & is_cr, "val_cr", n.pending_cr.eq(1), n.state.eq(VALUE_LF))
        val_char = net(st["value"] & ~is_cr & ~is_ws & is_fvchar, "val_char")
        when(val_char, "val_started", n.started.eq(1))
        # One tracker update for both kinds of value byte: a WS inside the value, or a field-vchar.
        track(net((st["value"] & ~is_cr & is_ws & s.started) | val_char, "val_track"))
        # The committed copy follows every non-WS byte, so trailing WS never reaches it.
        when(val_char, "val_commit",
             *[getattr(n, f"com_{name}").eq(getattr(n, f"run_{name}")) for name in _tracker_fields()])
        when(st["value"] & ~is_cr & ~is_ws & ~is_fvchar, "val_bad", *failing(ErrorFlag.bad_field_value))

        # VALUE_LF
        when(st["value_lf"], "val_lf", n.pending_cr.eq(0), n.state.eq(LINE_START))
        commit_line(st["value_lf"])

        # END_LF
        block = Const(0, len(ErrorFlag))
        block = block | Mux((s.version == Version.HTTP_1_1.value) & ~s.host_present, ErrorFlag.missing_host.value, 0)
        block = block | Mux(s.cl_present & s.te_seen, ErrorFlag.cl_and_te.value, 0)
        when(st["end_lf"], "end",
             n.pending_cr.eq(0), n.complete.eq(1), n.stopped.eq(1), n.errors.eq(s.errors | block))
        return n

    # -- elaboration ----------------------------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        W = self.width
        regs = self.regs
        tables = self._tables(m)

        # Key: reduction residues x^(64+k) mod P, recomputed (one cycle later) whenever fp_poly changes.
        red = [Signal(64, name=f"fp_red{k}", init=_residue(FP_POLY_RESET, k)) for k in range(8)]
        r = regs.fp_poly.value
        for k in range(8):
            m.d.sync += red[k].eq(r)
            r = Mux(r[63], Cat(Const(0, 1), r[0:63]) ^ regs.fp_poly.value, Cat(Const(0, 1), r[0:63]))
        seed = regs.fp_seed.value
        cfg = {"red": red, "seed": seed, "limit": regs.limits.max_header_bytes, "tables": tables}

        # Descriptor FIFO and admission: a beat is taken only if every descriptor it could complete has room.
        m.submodules.desc_fifo = fifo = SyncFIFO(width=Descriptor.as_shape().size, depth=DESC_FIFO_DEPTH)
        stage_a, stage_b = Signal(), Signal()
        room = Signal()
        m.d.comb += room.eq(fifo.level + stage_a + stage_b < DESC_FIFO_DEPTH)
        beat = self.i_stream.payload
        take = Signal()
        m.d.comb += [
            self.o_stream.payload.eq(beat),
            self.o_stream.valid.eq(self.i_stream.valid & room),
            self.i_stream.ready.eq(self.o_stream.ready & room),
            take.eq(self.i_stream.valid & self.i_stream.ready),
        ]

        # The lane chain.
        state = _Record(_state_fields(), "s_")
        lanes = [state]
        for k in range(W):
            lane_valid = ~beat.last | (k < beat.n_valid)
            lanes.append(self._step(m, k, lanes[-1], beat.data[k], lane_valid, cfg))
        end = lanes[-1]

        emit = Signal()
        m.d.comb += emit.eq(take & ((end.stopped & ~state.stopped) | (beat.last & ~end.stopped)))
        with m.If(take):
            with m.If(beat.last):
                m.d.sync += [sig.eq(0) for sig in state.signals()]  # the next packet starts afresh
            with m.Else():
                m.d.sync += state.eq(end)
        m.d.sync += stage_a.eq(emit)
        # Stage A: the snapshot. It loads the chain's output every cycle, so in the cycle after ``emit`` it holds the
        # stopping beat's state; ``emit`` (the end of the lane chain) then drives one flip-flop, not 1 725 enables.
        snap = _Record(_state_fields(), "snap_")
        m.d.sync += snap.eq(end)
        final = _Record(_state_fields(), "final_")
        m.d.comb += final.eq(snap)
        with m.If(~snap.stopped):               # the packet ended before its header did
            m.d.comb += final.errors.eq(snap.errors | ErrorFlag.truncated.value)

        # Stage B: which prefix entries match the path.
        hits = Signal(PREFIX_ENTRIES)
        keep = _Record(_state_fields(), "keep_")
        m.d.sync += [stage_b.eq(stage_a), keep.eq(final)]
        # The numbers' BCD → binary conversion, first half (the second is in stage C).
        cl_parts = [Signal(64, name=f"keep_cl_p{g}") for g in range(4)]
        x0_parts = [Signal(64, name=f"keep_x0_p{g}") for g in range(4)]
        m.d.sync += [r.eq(v) for r, v in zip(cl_parts, _bcd_terms(m, final.cl_bcd, "cl"))]
        m.d.sync += [r.eq(v) for r, v in zip(x0_parts, _bcd_terms(m, final.x0_bcd, "x0"))]
        for e in range(PREFIX_ENTRIES):
            pfx = tables["pfx_bytes"][e]
            same = Cat(*(final.path_buf[8 * i:8 * i + 8] == pfx[8 * i:8 * i + 8] for i in range(PREFIX_BYTES)))
            m.d.sync += hits[e].eq(tables["pfx_valid"][e] & (tables["pfx_len"][e] <= final.path_len) &
                                   (same | ~tables["pfx_mask"][e]).all())

        # Stage C: longest match (ties: lower index) and descriptor assembly into the FIFO. Entry e wins if it hits
        # and beats every other hitting entry: the pairwise order is kept with the table (``longer``), so the decision
        # is two levels of AND and a one-hot select, not a 16-step chain of compares (the parser's worst path when it
        # was).
        longer = tables["longer"]
        wins = []
        for e in range(PREFIX_ENTRIES):
            beats = [~hits[f] | (longer[(f, e)] if f < e else ~longer[(e, f)])
                     for f in range(PREFIX_ENTRIES) if f != e]
            win = Signal(name=f"pfx{e}_wins")
            m.d.comb += win.eq(hits[e] & Cat(*beats).all())
            wins.append(win)
        best_hit = Signal()
        best_class = Signal(4)
        won_class = Const(0, 4)
        for e in range(PREFIX_ENTRIES):         # one winner at most: an OR of masked classes, not a priority chain
            won_class = won_class | (tables["pfx_class"][e] & wins[e].replicate(4))
        m.d.comb += [best_hit.eq(hits.any()),
                     best_class.eq(Mux(best_hit, won_class, regs.route_default.default_class))]
        desc = Signal(Descriptor)
        key_auth = keep.auth_found
        m.d.comb += [
            desc.method.eq(keep.method), desc.version.eq(keep.version),
            desc.path_len.eq(keep.path_len), desc.path_fp.eq(keep.path_fp),
            desc.route_match.eq(best_hit), desc.route_class.eq(best_class),
            desc.host_present.eq(keep.host_present), desc.host_len.eq(keep.host_len), desc.host_fp.eq(keep.host_fp),
            desc.key_source.eq(Mux(key_auth, KeySource.AUTHORIZATION.value,
                                   Mux(keep.xkey_found, KeySource.X_API_KEY.value, KeySource.NONE.value))),
            desc.key_len.eq(Mux(key_auth, keep.auth_len, Mux(keep.xkey_found, keep.xkey_len, 0))),
            desc.key_fp.eq(Mux(key_auth, keep.auth_fp, Mux(keep.xkey_found, keep.xkey_fp, 0))),
            desc.cl_present.eq(keep.cl_present), desc.cl_overflow.eq(keep.cl_ovf),
            desc.content_length.eq(Mux(keep.cl_ovf, U64, _bcd_sum(cl_parts))), desc.chunked.eq(keep.chunked),
            desc.extra_present.eq(keep.extra_present),
            desc.extra_numeric.eq(keep.x0_num), desc.extra_value.eq(Mux(keep.x0_ovf, U64, _bcd_sum(x0_parts))),
            desc.header_len.eq(keep.pos), desc.header_lines.eq(keep.header_lines),
            desc.complete.eq(keep.complete), desc.errors.eq(keep.errors),
            desc.origin_form.eq(keep.origin_form), desc.upgrade.eq(keep.upgrade),
        ]
        for i in range(EXTRA_SLOTS):
            m.d.comb += desc.extra_fp[i].eq(getattr(keep, f"extra_fp{i}"))
        # Admission keeps room for every descriptor in flight, so the FIFO's write side is never refused.
        m.d.comb += [fifo.w_stream.valid.eq(stage_b), fifo.w_stream.payload.eq(desc.as_value()),
                     self.o_desc.valid.eq(fifo.r_stream.valid), self.o_desc.payload.eq(fifo.r_stream.payload),
                     fifo.r_stream.ready.eq(self.o_desc.ready)]

        # Counters.
        m.d.comb += [regs.requests.count_incr.eq(stage_b), regs.complete.count_incr.eq(stage_b & keep.complete)]
        for i in range(len(ErrorFlag)):
            m.d.comb += getattr(regs, f"error_count_{i}").count_incr.eq(stage_b & keep.errors[i])
        return m


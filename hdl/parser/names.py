"""The header parser's name matcher: which of the ten known header names each field line names, W bytes per cycle.

token beat ─▶ lane codes ─▶ start-lane scan ─▶ positions (loop: start index) ─▶ name table (EBR per lane)
           ─▶ segmented AND scan ─▶ resolve (loop: running AND) ─▶ token beat + ``match[k]`` at each colon

Names 0..5 are :data:`~.layouts.BUILTIN_NAMES`, names 6..9 the four programmable extra slots. At lane k holding a
field line's colon (state NAME, byte ':'), bit i of ``match[k]`` says whether the field name equals name i, ASCII
case-insensitively; every other lane's ``match`` is 0.

Why this shape. Comparing names byte by byte against registers takes a 32:1 byte multiplexer per lane and name; that
did not route. Here each byte asks one question instead: "which names have this byte at this position?". A byte's
*code* (:func:`name_code`, 6 bits, case-folded: five wires and one LUT per lane) and its position in the name
(5 bits) address a 2048 x 10 table, one registered EBR read port per lane. The name's answer is the AND of its
bytes' answers. The colon asks the same table for "which names have this length" (the row of :data:`COLON_CODE` at
position length mod 32), so the colon's own lookup closes the AND and nothing else is compared. Positions 32 and
beyond read the all-zero row :data:`NONE_CODE`, so a name longer than 32 bytes matches nothing.

Only two things depend on the content of earlier beats, and each loop is one small mux or AND (the third loop, a
2..4-bit count of the beats taken, ignores the content):
- the index (byte count mod 64) of the current name's first byte: a 6-bit register loaded, without logic, when a
  beat holds a LINE_START lane. Positions are counted mod 64; a name reaching position 32 is already dead in the AND,
  so wrapping cannot revive it;
- the running AND of the current name's lookups: ``acc = V & (R | acc)``, one LUT4 per name.
Everything else runs per lane, in parallel, in registered stages of at most two LUT levels: the last LINE_START
lane at or before each lane (a Sklansky scan), the positions (a 6-bit subtract), the table lookup (its output goes
straight to a register: yosys does not use the EBR's own output register), and the segmented AND (a Sklansky scan
restarted at LINE_START lanes). Nothing restarts at a packet's ``first`` beat: the tokenizer starts every packet in
METHOD, so each name's first byte is a LINE_START lane of the same packet, and both loops are reloaded there.

Programmable names. The table's built-in bits never change (the memory's initial contents). After an ``x_update``
pulse the unit stops taking beats, lets the beats already taken pass the lookup, then rewrites all 2048 words, one
per cycle: each word's built-in bits are read back through lane 0's read port, and the extra bits are computed from
``x_name``/``x_len`` (:meth:`NameMatcher._fill`). ``i_stream.ready`` is low until the beats already taken have
passed their lookup, then for :data:`FILL_CYCLES` (2 052) cycles. Beats taken before the pulse are matched against
the old names, beats taken after the refresh against the new ones; pulse it between packets (a name in flight across
the refresh would mix the two tables). The fill engine's largest part is off the beat path but not small: reading
1 024 bits of ``x_name`` one position at a time takes four 32:1 multiplexers of 7 bits (about 0.5 LUT4 per bit).

Latency: :func:`name_latency` cycles at one beat per cycle, whatever the content: 7 at W=4, 9 at W=8 and W=16.
Lanes at or past ``n_valid`` carry don't-care ``match`` bits, like the tokenizer's states there, and so do lanes
after the packet's first error (later stages mask them).
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, MemoryData
from amaranth.lib.wiring import In, Out

from ..bus.packet import check_width
from .classify import COLON
from .layouts import BUILTIN_NAMES, EXTRA_NAMES_RESET, EXTRA_SLOTS, NAME_BYTES
from .stages import register_stage
from .tokenizer import Tok, TokenBeat, next_state

__all__ = ["NameMatcher", "NameBeat", "name_latency", "NAME_LATENCY", "N_NAMES", "name_code", "name_table",
           "reference_matches", "COLON_CODE", "NONE_CODE", "FILL_CYCLES"]

#: Names matched: the built-in ones, then the extra slots.
N_NAMES = len(BUILTIN_NAMES) + EXTRA_SLOTS
N_BUILTIN = len(BUILTIN_NAMES)
CODE_BITS = 6
POS_BITS = 5                                    # positions 0..31: NAME_BYTES
TABLE_DEPTH = 1 << (CODE_BITS + POS_BITS)       # 2048 x 10 bits: a DP16KD holds 2048 x 9, so two
#: Read ports per copy of the table (one copy per 8 lanes).
BANK_PORTS = 8
LEN_BITS = 6                                    # x_len: 0 (empty) .. 32
assert NAME_BYTES == 1 << POS_BITS


def name_code(byte: int) -> int:
    """The 6-bit code of a byte: its low 5 bits, and bit 5 = ``~b6 | (b5 & b4 & b3 & b2 & b1)``.

    It tells apart every tchar and ':' (:data:`COLON_CODE`), and an upper-case letter has its lower-case letter's
    code. Other bytes share codes with these; that is harmless, because a byte that is not a tchar ends the name with
    an error before its colon.
    """
    c5 = not (byte >> 6) & 1 or (byte >> 1) & 0x1F == 0x1F
    return (byte & 0x1F) | int(c5) << 5


COLON_CODE = name_code(COLON)                   # 58: its row holds the names' lengths
NONE_CODE = 63                                  # no tchar has it: the row read for positions 32 and beyond


def _hw_code(b):
    """:func:`name_code` of an 8-bit value: five wires and one LUT."""
    return Cat(b[0:5], ~b[6] | b[1:6].all())


def _names(extras) -> list:
    extras = list(extras) + [None] * (EXTRA_SLOTS - len(extras))
    if len(extras) != EXTRA_SLOTS:
        raise ValueError(f"at most {EXTRA_SLOTS} extra names, got {len(extras)}")
    names = list(BUILTIN_NAMES)
    for slot, name in enumerate(extras):
        if name is not None and not 1 <= len(name) <= NAME_BYTES:
            raise ValueError(f"extra name {slot} must be 1..{NAME_BYTES} bytes or None, got {name!r}")
        names.append(None if name is None else bytes(name).lower())
    return names


def name_table(extras=()) -> list[int]:
    """The table's 2048 words for these extra names (up to 4, each bytes or None), at address ``code | pos << 6``.

    Bit i of the word at (pos, code) is set iff name i has a byte of that code at ``pos``, or, in the row of
    :data:`COLON_CODE`, iff name i is ``pos`` bytes long (32 at ``pos`` 0). With ``EXTRA_NAMES_RESET`` it is the
    reset contents.
    """
    words = [0] * TABLE_DEPTH
    for i, name in enumerate(_names(extras)):
        if name is None:
            continue
        for pos, byte in enumerate(name):
            words[name_code(byte) | pos << CODE_BITS] |= 1 << i
        words[COLON_CODE | (len(name) % NAME_BYTES) << CODE_BITS] |= 1 << i
    return words


def reference_matches(packet: bytes, extras=(), end: int | None = None) -> dict[int, int]:
    """The reference: ``{index of a field line's colon: 10-bit match vector}`` for colons before ``end``.

    A colon is a ':' in state NAME (the tokenizer's reference step, :func:`~.tokenizer.next_state`); its name is the
    bytes from its line's first byte (state LINE_START). Bit i: that name equals name i, ASCII case-insensitively.
    Pass the packet's stop (the model's ``header_len``) as ``end``: the unit is exact only before the first error.
    """
    names = _names(extras)
    end = len(packet) if end is None else min(end, len(packet))
    out, state, start = {}, Tok.METHOD, 0
    for i in range(end):
        b = packet[i]
        if state == Tok.LINE_START:
            start = i
        elif state == Tok.NAME and b == COLON:
            name = packet[start:i].lower()
            out[i] = sum(1 << n for n, known in enumerate(names) if known == name)
        state = next_state(state, b)
    return out


def NameBeat(width: int) -> data.StructLayout:
    """A token beat, unchanged (``tok``), with ``match[k]``: the 10-bit name vector at a field line's colon, else 0."""
    return data.StructLayout({
        "tok": TokenBeat(width),
        "match": data.ArrayLayout(N_NAMES, width),
    })


def _scan_stages(width: int) -> int:
    """Registered stages of a Sklansky scan over W lanes, two levels (two LUT levels) per stage."""
    levels = check_width(width).bit_length() - 1
    return (levels + 1) // 2


def name_latency(width: int) -> int:
    """Cycles from a beat's acceptance to its matches on ``o_stream`` (with ``o_stream`` ready).

    Codes (1), start scan, positions (1), table read (1), read register (1), AND scan, resolve (1).
    """
    return 5 + 2 * _scan_stages(width)


NAME_LATENCY = {w: name_latency(w) for w in (4, 8, 16)}

#: Upper bound of the cycles ``i_stream.ready`` stays low after ``x_update`` once the pipeline has drained.
FILL_CYCLES = TABLE_DEPTH + 4


def _scan(m, ce, name, items, op, carry):
    """A Sklansky prefix scan of ``items`` (per lane, tuples of values) under ``op``, registered every two levels,
    with ``carry`` (a dict of values, with ``valid``) moved alongside. Returns the registered prefixes, the carry and
    the stages' valid registers."""
    width = len(items)
    levels = width.bit_length() - 1
    valids = []
    for n in range(levels):
        g = 2 << n
        items = [op(items[k - k % g + g // 2 - 1], items[k]) if k % g >= g // 2 else items[k] for k in range(width)]
        if n % 2 == 1 or n == levels - 1:
            fields = len(items[0])
            regs = register_stage(m, ce, f"{name}{n // 2}",
                                  {**carry, **{f"f{f}": [it[f] for it in items] for f in range(fields)}})
            valids.append(regs["valid"])
            carry = {key: regs[key] for key in carry}
            items = [tuple(regs[f"f{f}"][k] for f in range(fields)) for k in range(width)]
    return items, carry, valids


class NameMatcher(wiring.Component):
    """Header-name identification at each field line's colon, at one beat per cycle.

    Parameters
    ----------
    width : int
        W, bytes per beat: 4, 8 or 16.

    Attributes
    ----------
    i_stream : In(stream.Signature(TokenBeat(W)))
        The tokenizer's beats.
    o_stream : Out(stream.Signature(NameBeat(W)))
        The same beats, :func:`name_latency` cycles later, with ``match[k]`` (see the module docstring).
    x_name : In(ArrayLayout(ArrayLayout(8, 32), 4))
        The extra slots' names, byte 0 first, tchar only (as ``ParserConfig`` keeps them; the case does not matter).
    x_len : In(ArrayLayout(6, 4))
        Their lengths: 0 is an empty slot, 1..32 a name; any other value also disables the slot.
    x_update : In(1)
        A one-cycle pulse after ``x_name``/``x_len`` changed (they must then hold still). ``i_stream.ready`` is low
        from the next cycle until the table is rewritten: the beats already taken drain past the lookup, then
        :data:`FILL_CYCLES` cycles. A pulse during a refresh restarts it. Until the first pulse the slots are empty.
    table : MemoryData
        The name table (:func:`name_table`), 2048 words of 10 bits, address ``code | pos << 6``.
    """

    def __init__(self, width: int = 8):
        self.width = check_width(width)
        self.table = MemoryData(shape=N_NAMES, depth=TABLE_DEPTH, init=name_table(EXTRA_NAMES_RESET))
        super().__init__({
            "i_stream": In(stream.Signature(TokenBeat(width))),
            "o_stream": Out(stream.Signature(NameBeat(width))),
            "x_name": In(data.ArrayLayout(data.ArrayLayout(8, NAME_BYTES), EXTRA_SLOTS)),
            "x_len": In(data.ArrayLayout(LEN_BITS, EXTRA_SLOTS)),
            "x_update": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.width
        lane_bits = W.bit_length() - 1
        # One enable for the whole pipeline: it moves when its output can.
        ce = Signal()
        m.d.comb += ce.eq(~self.o_stream.valid | self.o_stream.ready)
        pending, filling = Signal(), Signal()          # x_update seen / table being rewritten
        take = Signal()
        m.d.comb += [self.i_stream.ready.eq(ce & ~pending & ~filling),
                     take.eq(self.i_stream.valid & self.i_stream.ready)]

        # A: per lane, the byte's code, the line starts and the colons (the tokenizer's ':' class in state NAME);
        # the beat's number mod 64/W.
        tok = self.i_stream.payload
        beat_no = Signal(CODE_BITS - lane_bits)
        with m.If(take):
            m.d.sync += beat_no.eq(beat_no + 1)
        a = register_stage(m, ce, "a", {
            "valid": take, "tok": tok, "beat_no": beat_no,
            "code": [_hw_code(tok.beat.data[k]) for k in range(W)],
            "start": Cat(tok.state[k] == Tok.LINE_START for k in range(W)),
            "colon": Cat((tok.state[k] == Tok.NAME) & tok.feat.cls[k].colon for k in range(W)),
        })

        # T: the last LINE_START lane at or before each lane: (any, its lane number).
        def last_start(lo, hi):
            return lo[0] | hi[0], Mux(hi[0], hi[1], lo[1])
        starts, t, t_valids = _scan(m, ce, "t", [(a["start"][k], Const(k, lane_bits)) for k in range(W)], last_start,
                                    {key: a[key] for key in ("valid", "tok", "beat_no", "code", "start", "colon")})

        # P: each lane's position in its name (mod 64) and its table address. The loop: the index of the current
        # name's first byte, loaded from the beat's last LINE_START lane.
        name_start = Signal(CODE_BITS)
        has_last, lane_last = starts[W - 1]
        with m.If(ce & t["valid"] & has_last):
            m.d.sync += name_start.eq(Cat(lane_last, t["beat_no"]))
        addrs = []
        for k in range(W):
            has, lane = starts[k]
            here = (Cat(Const(k, lane_bits), t["beat_no"]) - name_start)[0:CODE_BITS]
            pos = Mux(has, (Const(k, CODE_BITS) - lane)[0:CODE_BITS], here)
            dead = pos[POS_BITS] & ~t["colon"][k]              # position >= 32 (a colon reads length mod 32)
            addrs.append(Cat(t["code"][k] | dead.replicate(CODE_BITS), pos[0:POS_BITS]))
        p = register_stage(m, ce, "p", {"valid": t["valid"], "tok": t["tok"], "start": t["start"], "colon": t["colon"],
                                        "addr": addrs})

        # R: the lookups, one read port per lane; their data goes straight into a register (R2).
        # Banks of at most 8 read ports, written alike: Yosys 0.70's memory_libmap fails on one memory with 16.
        banks = [Memory(data=self.table if b == 0 else MemoryData(shape=N_NAMES, depth=TABLE_DEPTH,
                                                                   init=name_table()))
                 for b in range((W + BANK_PORTS - 1) // BANK_PORTS)]
        for b, bank in enumerate(banks):
            m.submodules[f"table{b}" if b else "table"] = bank
        ports = [banks[k // BANK_PORTS].read_port(domain="sync") for k in range(W)]
        for k, port in enumerate(ports):
            m.d.comb += [port.addr.eq(p["addr"][k]), port.en.eq(ce | filling if k == 0 else ce)]
        r = register_stage(m, ce, "r", {"valid": p["valid"], "tok": p["tok"], "start": p["start"], "colon": p["colon"]})
        r2 = register_stage(m, ce, "r2", {"valid": r["valid"], "tok": r["tok"], "start": r["start"],
                                          "colon": r["colon"], "vec": [port.data for port in ports]})

        # U: the AND of each name's lookups from its line's first byte, restarted at LINE_START lanes.
        def segment_and(lo, hi):
            return lo[0] | hi[0], Mux(hi[0], hi[1], lo[1] & hi[1])
        ands, u, _ = _scan(m, ce, "u", [(r2["start"][k], r2["vec"][k]) for k in range(W)], segment_and,
                           {key: r2[key] for key in ("valid", "tok", "colon")})

        # O: each lane against the running AND of a name begun in an earlier beat (the loop).
        acc = Signal(N_NAMES)
        restart_last, and_last = ands[W - 1]
        with m.If(ce & u["valid"]):
            m.d.sync += acc.eq(Mux(restart_last, and_last, and_last & acc))
        out = self.o_stream.payload
        with m.If(ce):
            m.d.sync += [self.o_stream.valid.eq(u["valid"]), out.tok.eq(u["tok"])]
            for k in range(W):
                restart, v = ands[k]
                m.d.sync += out.match[k].eq(Mux(u["colon"][k], Mux(restart, v, v & acc), 0))

        # The refresh waits for every beat taken to be past its lookup (lane 0's read data is reused).
        waiting = Cat(a["valid"], *t_valids, p["valid"], r["valid"])
        self._fill(m, banks, ports[0], p["addr"][0], pending, filling, drained=~waiting.any())
        return m

    def _fill(self, m, banks, lane0, lane0_addr, pending, filling, drained):
        """The refresh: wait until no beat waits for a lookup, then rewrite every word, one per cycle.

        F0 issues address a (lane 0's address register, its read port enabled); F1 holds the four names' bytes at
        a's position (a 32:1 multiplexer per slot, 7 bits: the code ignores bit 7); F2 the extra bits; F3 the word's
        built-in bits as read back, registered (no EBR-to-EBR path). F3 writes.
        """
        issuing = Signal()
        addr = Signal(CODE_BITS + POS_BITS)
        f1_valid, f2_valid, f3_valid = Signal(), Signal(), Signal()
        f1_addr, f2_addr, f3_addr = (Signal(CODE_BITS + POS_BITS, name=f"f{n}_addr") for n in (1, 2, 3))
        f1_bytes = [Signal(7, name=f"f1_byte{i}") for i in range(EXTRA_SLOTS)]
        f2_extra, f3_extra = Signal(EXTRA_SLOTS), Signal(EXTRA_SLOTS)
        f3_builtin = Signal(N_BUILTIN)

        with m.If(self.x_update):
            m.d.sync += [pending.eq(1), filling.eq(0), issuing.eq(0), f1_valid.eq(0), f2_valid.eq(0),
                         f3_valid.eq(0)]
        with m.Elif(pending & drained):
            m.d.sync += [pending.eq(0), filling.eq(1), issuing.eq(1), addr.eq(0)]
        with m.Elif(filling):
            m.d.sync += [lane0_addr.eq(addr), addr.eq(addr + 1), f1_valid.eq(issuing), f1_addr.eq(addr),
                         f2_valid.eq(f1_valid), f2_addr.eq(f1_addr), f3_valid.eq(f2_valid), f3_addr.eq(f2_addr),
                         f3_extra.eq(f2_extra), f3_builtin.eq(lane0.data[0:N_BUILTIN])]
            with m.If(addr == TABLE_DEPTH - 1):
                m.d.sync += issuing.eq(0)
            with m.If(~issuing & ~f1_valid & ~f2_valid):
                m.d.sync += filling.eq(0)                # F3 writes the last word this cycle
            pos = addr[CODE_BITS:]
            for i in range(EXTRA_SLOTS):
                m.d.sync += f1_bytes[i].eq(Array(self.x_name[i][q][0:7] for q in range(NAME_BYTES))[pos])

        # F2: extra bit i of word (pos, code): slot i is a name of 1..32 bytes and has that code at pos, or, in the
        # colon row, is pos bytes long (32 at pos 0).
        code, pos = f1_addr[0:CODE_BITS], f1_addr[CODE_BITS:]
        extra = []
        for i in range(EXTRA_SLOTS):
            length = self.x_len[i]
            used = (length != 0) & (length <= NAME_BYTES)
            byte_bit = (code != COLON_CODE) & (pos < length) & (_hw_code(f1_bytes[i]) == code)
            length_bit = (code == COLON_CODE) & (pos == length[0:POS_BITS])
            extra.append(used & (byte_bit | length_bit))
        with m.If(filling):
            m.d.sync += f2_extra.eq(Cat(extra))

        for bank in banks:
            writer = bank.write_port()
            m.d.comb += [writer.addr.eq(f3_addr), writer.data.eq(Cat(f3_builtin, f3_extra)),
                         writer.en.eq(filling & f3_valid)]

"""The keyed fingerprint of byte fields, W bytes per cycle, with fields starting and ending in any lane.

data + field marks ─▶ segments per beat ─▶ one-multiply loop (LUT RAM) ─▶ per-close finish (EBR tables) ─▶ fp per close

The fingerprint (``docs/parser.md``, "Fingerprints") is an MSB-first CRC with a secret degree-64 modulus P and seed S:
processing W bytes from state s gives ``s·x^(8W) + D·x^64 mod P``, where D is the beat's bytes as a polynomial. So a
field that runs through whole beats needs one multiplication by x^(8W) per beat, and nothing else depends on the
state. Writing ``t = s + D`` (W ≤ 8: D aligned to the top of 64 bits), the loop is

    t' = M(t) + y,   M(t) = t·x^(8W) mod P,   y: the next beat's bytes, chosen a stage earlier

M is a 64×64 matrix over GF(2) that depends on P. It is held as 16 nibble tables in LUT RAM (each entry the XOR of
the residues x^(64+i) mod P that the nibble's bits select), so the loop is a LUT-RAM read, a two-level XOR tree and
a mux. Everything else is off the loop:

- A field that *opens* at lane a enters as ``C[a] + its bytes`` with the constant C[a] = S·x^(-8a): the seed's share
  for its a missing lanes, so no shift is needed. An empty field (a close with no open) is C[0] = S.
- A field *closes* at a marked lane (its terminator), or after the beat's last lane (``end``: a field cut off by
  the end of its packet). Its fingerprint is the state after its last *kept* byte (so a
  value's trailing whitespace is taken but not kept): ``F(u, e) = u·x^(8e) mod P`` of that beat's ``u`` (the state
  at the beat's start, or C[a], plus the kept bytes, top-aligned) and ``e`` (lanes up to the last kept byte). F is a
  byte rotate (the low 8e bits are the ones shifted out) plus their reduction: W byte tables in EBR (8 at W = 16,
  below), each entry the XOR of 8 residues, and an XOR.
- A field whose last kept byte was in an earlier beat (trailing whitespace across a beat boundary) closes from a
  snapshot of ``u`` and ``e`` taken at that beat.
- Up to ``slots`` fields close per beat (a value's CR is at least 4 bytes from the next one's: W/4 per beat).

W = 16: the beat's 128 bits do not fit the state, so the loop holds ``r``, the state after the beat divided by x^64
(the state is ``r·x^64 mod P``), and runs ``r' = M(r) + y`` with M(r) = r·x^128 mod P (16 nibble tables, residues
x^128 to x^191) and y the next beat's 128 bits reduced mod P, formed in registered stages before the loop. Lane l < 8
weighs x^(64+8(7-l)) in it: 8 byte tables in EBR, one per lane 0 to 7, give G[a] = K[a] + (lanes a to 7)·x^64, the
state at lane 8 of a field opening at lane a, with K[a] = S·x^(64-8a) = C[a]·x^64 (so C[a] = K[a+8]), and G[16] =
(lanes 0 to 7)·x^64. M(r) is the state at the next beat's start times x^64; 16 more nibble tables (r·x^64 mod P, off
the loop, reading a copy of r) give that state itself. A close splits at lane 8, so F never needs more than e = 8:

- last kept byte in lanes 0 to 7: ``u`` = the state at the beat's start (or C[a]) plus the kept bytes of lanes 0
  to 7, as at W = 8;
- in lanes 8 to 15: ``u`` = the state at lane 8 (M(r) + G[16] for a field that ran into the beat, G[a] for one that
  opened in it) plus the kept bytes of lanes 8 to 15, and ``e`` counts from lane 8.

So each close slot has the same rotate and 8 byte tables as at W = 8, and its base is one pick among the 17 G values
(C[a] among them) plus 8 lanes of bytes.

The tables are functions of P and S. They hold the reset key's contents at reset; after a key change (``update``)
the engine waits for the beats in flight, then recomputes them (residues by repeated multiplication by x, each table
entry as an XOR of residues, C[a] by divisions by x and, at W = 16, K[a] by multiplications), holding
``i_stream.ready`` low for at most :func:`refill_cycles` cycles. No beat is lost or fingerprinted with half a key.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import FP_POLY_RESET, FP_SEED_RESET
from .stages import onehot_index

__all__ = ["FingerprintEngine", "FieldBeat", "FpSlot", "fp_latency", "refill_cycles", "residues"]

U64 = (1 << 64) - 1
#: Lanes per half of a W = 16 beat: a close finishes from the beat's start or from its lane 8.
HALF = 8


# -- the key's tables, in Python (for reset contents and the tests) ---------------------------------------------------

def residues(poly: int, count: int) -> list[int]:
    """``x^(64+i) mod P`` for i < count (P = x^64 + poly)."""
    out, r = [], poly & U64
    for _ in range(count):
        out.append(r)
        r = ((r << 1) & U64) ^ (poly if r >> 63 else 0)
    return out


def _combos(res: list[int]) -> list[int]:
    """Entry x = the XOR of ``res[j]`` for the set bits j of x."""
    out = [0] * (1 << len(res))
    for x in range(1, len(out)):
        low = (x & -x).bit_length() - 1
        out[x] = out[x & (x - 1)] ^ res[low]
    return out


def _inverse_powers(poly: int, seed: int, count: int) -> list[int]:
    """C[a] = S·x^(-8a) mod P for a < count (x is invertible: P has a constant term)."""
    out, k = [], seed & U64
    for _ in range(count):
        out.append(k)
        for _ in range(8):
            k = (k >> 1) ^ ((poly >> 1) | (1 << 63)) if k & 1 else k >> 1
    return out


def _seed_shares(poly: int, seed: int, width: int) -> list[int]:
    """The seed's share of a field opening at lane a, for a < W, as the engine holds it: C[a] = S·x^(-8a) at W ≤ 8;
    K[a] = S·x^(64-8a) mod P at W = 16 (the state at lane 8; K[a + 8] = C[a])."""
    if width <= HALF:
        return _inverse_powers(poly, seed, width)
    ups, k = [], seed & U64
    for _ in range(HALF):
        for _ in range(8):
            k = ((k << 1) & U64) ^ (poly & U64 if k >> 63 else 0)
        ups.append(k)
    return ups[::-1] + _inverse_powers(poly, seed, HALF)


# -- layouts ----------------------------------------------------------------------------------------------------------

def FieldBeat(width: int) -> data.StructLayout:
    """A beat of bytes with its field marks, one bit per lane.

    ``take``: the byte belongs to the open field. ``keep``: it may end the field (the fingerprint covers the field up
    to its last kept byte before the close). ``open``: the field's first byte (also taken and kept). ``close``: this
    lane terminates the open field (it is not part of it); a close with no field open gives the empty field's value,
    S. A field's lanes are contiguous from its open to its close; fields do not nest. ``end``: the open field closes
    after the beat's last lane (lane W, for a field cut off by the end of a packet).
    """
    return data.StructLayout({"data": data.ArrayLayout(8, width), "take": width, "keep": width, "open": width,
                              "close": width, "end": 1})


def FpSlot(width: int) -> data.StructLayout:
    """A finished fingerprint: ``lane`` is its close's lane (W for ``end``)."""
    return data.StructLayout({"valid": 1, "lane": range(width + 1), "fp": 64})


def fp_latency(width: int) -> int:
    """Cycles from a beat's acceptance to its closes' fingerprints on ``o_stream``: stages A0 to A2, the loop B, C to
    F and the output register; W = 16 adds stage P (before A0) and a third base stage (A3: the x^64 products of
    lanes 0 to 7 take a stage more)."""
    return 11 if width > HALF else 9


def refill_cycles(width: int) -> int:
    """Most cycles ``i_stream.ready`` stays low after ``update``: the beats in flight leave, then each of W steps
    takes 8 cycles of residues and 256 of entries (the byte tables from the first 8, the nibble tables from all)."""
    return fp_latency(width) + width * (8 + 256) + 2


# -- the engine -------------------------------------------------------------------------------------------------------

class FingerprintEngine(wiring.Component):
    """Fingerprints of marked fields, at one beat per cycle.

    Tables per engine: the loop's 16 nibble tables (16 × 64 bits, LUT RAM; 8 at W = 4), 8 byte tables (256 × 64 bits,
    EBR) per close slot (4 at W = 4); at W = 16 also 16 nibble tables for the state at a beat's start and 8 byte
    tables for the x^64 products of the beat's lanes 0 to 7.

    Parameters
    ----------
    width : int
        W, bytes per beat: 4, 8 or 16.
    slots : int
        Closes per beat it can finish (default W/4, at least 1).

    Attributes
    ----------
    i_stream : In(stream.Signature(FieldBeat(W)))
    o_stream : Out(stream.Signature(ArrayLayout(FpSlot(W), slots)))
        Per beat, the fingerprints of the fields that close in it, in lane order, :func:`fp_latency` cycles later.
    poly, seed : In(64)
        The key; pulse ``update`` after changing it.
    busy : Out(1)
        The tables are being recomputed (``i_stream.ready`` is low). After ``update``, beats in flight leave first,
        with the old key; then the tables are refilled; then beats are taken again, with the new key. Change the key
        only between fields (the parser does so between packets).
    """

    def __init__(self, width: int = 8, slots: int | None = None):
        if width not in (4, 8, 16):
            raise ValueError(f"fingerprint engine width W must be 4, 8 or 16 bytes, got {width!r}")
        self.width = width
        self.slots = slots or max(1, width // 4)
        super().__init__({
            "i_stream": In(stream.Signature(FieldBeat(width))),
            "o_stream": Out(stream.Signature(data.ArrayLayout(FpSlot(width), self.slots))),
            "poly": In(64, init=FP_POLY_RESET),
            "seed": In(64, init=FP_SEED_RESET),
            "update": In(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        W, NS = self.width, self.slots
        DB = 8 * W                                          # data bits per beat
        E = min(W, HALF)                                    # byte tables per close: F(u, e) for e ≤ 8
        res0 = residues(FP_POLY_RESET, max(64, DB))

        # A key change waits for the beats in flight to leave (they were fingerprinted with the old tables), then
        # refills the tables while no beat is taken.
        ce = Signal()
        pending = Signal()
        m.d.comb += [ce.eq(~self.o_stream.valid | self.o_stream.ready),
                     self.i_stream.ready.eq(ce & ~pending & ~self.busy)]
        take_in = Signal()
        m.d.comb += take_in.eq(self.i_stream.valid & self.i_stream.ready)
        with m.If(self.update):
            m.d.sync += pending.eq(1)

        # The key's tables: the seed's shares (C[a], or K[a] at W = 16) in registers, the loop's nibble tables in LUT
        # RAM, the finish's byte tables in EBR.
        shares = [Signal(64, name=f"{'k' if W > HALF else 'c'}{a}", init=v)
                  for a, v in enumerate(_seed_shares(FP_POLY_RESET, FP_SEED_RESET, W))]
        # Loop matrix M(t) = t·x^(8W): nibble q (bits 4q..4q+3 of t) reduces through residues 4q+i+8W-64 when that
        # index is >= 0; lower nibbles just shift.
        nib_mems = []
        for q in range(max(0, (64 - DB) // 4), 16):
            base = 4 * q + DB - 64
            mem = Memory(shape=64, depth=16, init=_combos(res0[base:base + 4]))
            m.submodules[f"nib{q}"] = mem
            nib_mems.append((q, base, mem))
        # W = 16: r·x^64 (the state at a beat's start) off the loop, and lane l's byte times x^(64+8(7-l)).
        x64_mems, lane_mems = [], []
        if W > HALF:
            for q in range(16):
                mem = Memory(shape=64, depth=16, init=_combos(res0[4 * q:4 * q + 4]))
                m.submodules[f"x64nib{q}"] = mem
                x64_mems.append((q, 4 * q, mem))
            for lane in range(HALF):
                b = HALF - 1 - lane
                mem = Memory(shape=64, depth=256, init=_combos(res0[8 * b:8 * b + 8]), attrs={"no_rw_check": 1})
                m.submodules[f"lane{lane}"] = mem
                lane_mems.append(mem)
        byte_mems = []
        for s in range(NS):
            row = []
            for b in range(E):
                # Reads and writes never meet (the tables are written only while no beat is in flight), so Yosys
                # need not add its read-during-write logic (64 LUT4 and 64 FF per table otherwise).
                mem = Memory(shape=64, depth=256, init=_combos(res0[8 * b:8 * b + 8]), attrs={"no_rw_check": 1})
                m.submodules[f"tab{s}_{b}"] = mem
                row.append(mem)
            byte_mems.append(row)

        valids = []
        p, a0 = self._closes(m, ce, take_in, valids)
        if W > HALF:
            a2, a2_slots = self._halves(m, ce, p, a0, shares, lane_mems, valids)
        else:
            a1, a1_slots = self._segments(m, ce, a0, valids)
            a2, a2_slots = self._bases(m, ce, a1, a1_slots, shares, valids)
        b, b_slots = self._loop(m, ce, a2, a2_slots, nib_mems, x64_mems, valids)
        self._finish(m, ce, b, b_slots, byte_mems, valids)

        # The pipeline is empty (a registered flag: the input is closed while ``pending``, so it cannot fill again).
        idle = Signal()
        m.d.sync += idle.eq(~Cat(*valids, self.o_stream.valid, take_in).any())
        start = Signal()
        m.d.comb += start.eq(pending & idle)
        with m.If(start):
            m.d.sync += pending.eq(0)
        # Byte table b of every slot, and the lane table whose residues are byte b's, are written at refill step b.
        byte_tables = ([(b, mem) for row in byte_mems for b, mem in enumerate(row)]
                       + [(HALF - 1 - lane, mem) for lane, mem in enumerate(lane_mems)])
        self._refill(m, start, shares, nib_mems + x64_mems, byte_tables)
        return m

    def _stage(self, m, ce, fields, valids, name):
        """Registers named ``name_<field>`` for one pipeline stage (moved on ``ce`` by the caller)."""
        regs = {f: Signal(shape, name=f"{name}_{f}") for f, shape in fields.items()}
        valids.append(regs["valid"])
        return regs

    def _closes(self, m, ce, take_in, valids):
        """Stage A0: each close's field's lanes (closes are peeled off in lane order, so slot i's lanes lie between
        close i-1 and close i), and the field left open at the beat's end. At W = 16, stage P first registers the
        beat with how many closes lie up to each group of 4 lanes, so that A0 finds slot i's lanes (those with i
        closes before them) in a few LUT levels, not through a chain of 4 peels. Returns P (None at W ≤ 8) and A0."""
        W, NS = self.width, self.slots
        carry_open = Signal()                               # a field is open at the beat boundary
        p = None
        if W > HALF:
            beat_in = self.i_stream.payload
            close_in = Cat(beat_in.close, beat_in.end)
            p = self._stage(m, ce, {"valid": 1, "beat": FieldBeat(W),
                                    "upto": data.ArrayLayout(range(NS + 1), W // 4)}, valids, "p")
            with m.If(ce):
                m.d.sync += [p["valid"].eq(take_in), p["beat"].eq(beat_in)]
                for g in range(W // 4):
                    n = sum(close_in[j] for j in range(4 * g + 4))
                    m.d.sync += p["upto"][g].eq(Mux(n > NS, NS, n))
            beat, valid, advance = p["beat"], p["valid"], ce & p["valid"]
        else:
            beat, valid, advance = self.i_stream.payload, take_in, take_in
        opn = beat.open
        close = Cat(beat.close, beat.end)                   # lane W: the end of the beat

        a0 = self._stage(m, ce, {"valid": 1, "beat": FieldBeat(W), "tail": W, "tail_cont": 1,
                                 "seg": data.ArrayLayout(W, NS), "first": data.ArrayLayout(W + 1, NS),
                                 "cont": 1}, valids, "a0")
        segs, firsts = [], []
        if W <= HALF:
            rest = close
            prev_before = Const((1 << (W + 1)) - 1, W + 1)  # lanes after the previous close (all, for slot 0)
            for i in range(NS):
                first = Signal(W + 1, name=f"close{i}")
                m.d.comb += first.eq(rest & ~_before(rest))
                seg = Signal(W, name=f"seg{i}")
                m.d.comb += seg.eq((prev_before & ~_before(first) & ~first)[:W])
                segs.append(seg)
                firsts.append(first)
                prev_before = _before(first)
                rest = rest & ~first
        else:
            # Closes before lane k: those up to its group's start (stage P) plus those in its group below it.
            before_k = []
            for k in range(W + 1):
                g = k // 4
                n = p["upto"][g - 1] if g else Const(0, range(NS + 1))
                for j in range(4 * g, k):
                    n = n + close[j]
                before_k.append(n)
            for i in range(NS):
                first = Signal(W + 1, name=f"close{i}")
                seg = Signal(W, name=f"seg{i}")
                m.d.comb += [first.eq(Cat(*((before_k[k] == i) & close[k] for k in range(W + 1)))),
                             seg.eq(Cat(*((before_k[k] == i) & ~close[k] for k in range(W))))]
                segs.append(seg)
                firsts.append(first)
        tail = Signal(W)
        m.d.comb += tail.eq(~_at_or_after(close, W))
        tail_opened = (opn & tail).any()
        tail_cont = carry_open & ~close.any()
        with m.If(advance):
            m.d.sync += carry_open.eq(tail_opened | tail_cont)
        with m.If(ce):
            m.d.sync += [a0["valid"].eq(valid), a0["beat"].eq(beat), a0["tail"].eq(tail),
                         a0["tail_cont"].eq(tail_cont), a0["cont"].eq(carry_open & ~(opn & segs[0]).any())]
            m.d.sync += [a0["seg"][i].eq(segs[i]) for i in range(NS)]
            m.d.sync += [a0["first"][i].eq(firsts[i] & Mux(valid, -1, 0)) for i in range(NS)]
        return p, a0

    def _segments(self, m, ce, a0, valids):
        """Stage A1 (W ≤ 8): per close, its lane, its kept end e, its top-aligned bytes and the one-hot lane of its
        C[a]; the same for the field left open at the beat's end."""
        W, NS = self.width, self.slots
        DB = 8 * W
        beat = a0["beat"]
        opn, keep, take = beat.open, beat.keep, beat.take

        def top(mask):
            """The A0 beat's bytes in the lanes of ``mask``, lane 0 in the top byte of 64 bits."""
            return Cat(*(Mux(mask[W - 1 - i], beat.data[W - 1 - i], 0) for i in range(W))) << (64 - DB)

        slots = Signal(data.ArrayLayout(_SlotA1(W), NS))
        for i in range(NS):
            seg, first = a0["seg"][i], a0["first"][i]
            kept = keep & seg
            opened = (opn & seg).any()
            cont = a0["cont"] if i == 0 else Const(0)
            sa = slots[i]
            m.d.comb += [sa.valid.eq(first.any()), sa.lane.eq(_lowest(first)), sa.cont.eq(cont),
                         sa.use_com.eq(cont & ~kept.any()), sa.e.eq(Mux(cont | opened, _highest_plus_one(kept), 0)),
                         sa.bytes.eq(top(take & seg & _at_or_after(kept, W))),
                         # C[a] for a field opening at a; C[0] = S for a close with no field (the empty field).
                         sa.c_lane.eq(Mux(cont, 0, Mux(opened, opn & seg, 1)))]
        tail = a0["tail"]
        tail_opened = (opn & tail).any()
        kept_t = keep & tail
        a1 = self._stage(m, ce, {"valid": 1, "open": 1, "keep": 1, "c_lane": W, "e": range(W + 1), "bytes": 64,
                                 "com_bytes": 64, "full": 64}, valids, "a1")
        a1_slots = Signal.like(slots, name="a1_slots")
        with m.If(ce):
            m.d.sync += [
                a1["valid"].eq(a0["valid"]), a1_slots.eq(slots), a1["open"].eq(tail_opened),
                a1["keep"].eq(kept_t.any()), a1["c_lane"].eq(opn & tail), a1["e"].eq(_highest_plus_one(kept_t)),
                a1["bytes"].eq(top(take & tail)),             # an opening field's lanes run to the beat's end
                a1["com_bytes"].eq(top(take & tail & _at_or_after(kept_t, W))), a1["full"].eq(top(Const(-1, W))),
            ]
        return a1, a1_slots

    def _bases(self, m, ce, a1, a1_slots, cinv, valids):
        """Stage A2 (W ≤ 8): the seed's share C[a] added (an AND-OR over the one-hot lane, two LUT levels): each
        closing field's base, the loop's input ``y`` and the base of the open field's snapshot."""
        W, NS = self.width, self.slots
        a2 = self._stage(m, ce, {"valid": 1, "open": 1, "keep": 1, "e": range(W + 1), "y": 64, "com_base": 64},
                         valids, "a2")
        slots = Signal(data.ArrayLayout(_SlotA2(W), NS), name="a2_slots")
        c_tail = Signal(64)
        m.d.comb += c_tail.eq(_pick(a1["c_lane"], cinv))
        with m.If(ce):
            m.d.sync += [a2[n].eq(a1[n]) for n in ("valid", "open", "keep", "e")]
            m.d.sync += [a2["y"].eq(Mux(a1["open"], a1["bytes"] ^ c_tail, a1["full"])),
                         a2["com_base"].eq(a1["com_bytes"] ^ Mux(a1["open"], c_tail, 0))]
            for i in range(NS):
                sa, sb = a1_slots[i], slots[i]
                m.d.sync += [sb.valid.eq(sa.valid), sb.lane.eq(sa.lane), sb.cont.eq(sa.cont),
                             sb.use_com.eq(sa.use_com), sb.e.eq(sa.e), sb.base.eq(sa.bytes ^ _pick(sa.c_lane, cinv))]
        return a2, slots

    def _halves(self, m, ce, p, a0, shares, lane_mems, valids):
        """Stages A1 to A3 (W = 16). Each close finishes from the beat's start (its last kept byte in lanes 0 to 7)
        or from lane 8 (in lanes 8 to 15: ``half``), with ``e`` counted from there and a base of one G value (a
        17-way pick) plus 8 lanes of bytes: A1 finds the lanes, A2 the half, e, the bytes and the G index, and
        computes G (the x^64 products of lanes 0 to 7, read from stage P's beat alongside A0, XORed); A3 picks. The
        loop's input ``y`` (the beat reduced mod P: G[a] or G[16] plus lanes 8 to 15) and the snapshot's base are
        formed the same way.

        G[a] (a < 8) = K[a] + lanes a to 7 times x^64: the state at lane 8 of a field opening at lane a. G[a] = K[a] =
        C[a - 8] (a ≥ 8). G[16] = lanes 0 to 7 times x^64 (plus M(r), the state at the start times x^64, for a field
        that ran into the beat). A close in lanes 0 to 7 of a field opening at lane a takes G[a + 8] = C[a]; an empty
        field G[8] = S."""
        W, NS = self.width, self.slots
        H = HALF

        # The lane tables' reads: registered in the EBR at A0, into flip-flops at A1 (an EBR's output is slow).
        prods = []
        for lane, mem in enumerate(lane_mems):
            rd = mem.read_port(domain="comb")
            m.d.comb += rd.addr.eq(p["beat"].data[lane])
            read0 = Signal(64, name=f"a0_prod{lane}")
            read1 = Signal(64, name=f"a1_prod{lane}")
            with m.If(ce):
                m.d.sync += [read0.eq(rd.data), read1.eq(read0)]
            prods.append(read1)

        # Stage A1: per close, its opening lane, whether its last kept byte is in lanes 8 to 15 (``second``), e in
        # its half and its taken lanes up to that byte; the same for the field left open at the beat's end.
        beat = a0["beat"]
        opn, keep, take = beat.open, beat.keep, beat.take
        slots = Signal(data.ArrayLayout(_SlotHalf(W), NS))
        for i in range(NS):
            seg, first = a0["seg"][i], a0["first"][i]
            kept = keep & seg
            second = kept[H:].any()
            sa = slots[i]
            m.d.comb += [sa.valid.eq(first.any()), sa.lane.eq(onehot_index(first)),
                         sa.cont.eq(a0["cont"] if i == 0 else 0), sa.use_com.eq(sa.cont & ~kept.any()),
                         sa.opened.eq(opn & seg), sa.second.eq(second), sa.e.eq(_kept_end(kept, second)),
                         sa.taken.eq(take & seg & _at_or_after(kept, W))]
        tail = a0["tail"]
        kept_t = keep & tail
        a1 = self._stage(m, ce, {"valid": 1, "data": data.ArrayLayout(8, W), "opened": W, "keep": 1, "second": 1,
                                 "e": range(H + 1), "taken": W, "com_taken": W}, valids, "a1")
        a1_slots = Signal.like(slots, name="a1_slots")
        with m.If(ce):
            m.d.sync += [
                a1["valid"].eq(a0["valid"]), a1["data"].eq(beat.data), a1_slots.eq(slots),
                a1["opened"].eq(opn & tail), a1["keep"].eq(kept_t.any()), a1["second"].eq(kept_t[H:].any()),
                a1["e"].eq(_kept_end(kept_t, kept_t[H:].any())), a1["taken"].eq(take & tail),
                a1["com_taken"].eq(take & tail & _at_or_after(kept_t, W)),
            ]

        # Stage A2: the half, e, the G index and the bytes of the half, top-aligned; G.
        d = a1["data"]

        def half_bytes(taken, half):
            return Mux(half, _top(taken[H:], d[H:]), _top(taken[:H], d[:H]))

        a2 = self._stage(m, ce, {"valid": 1, "open": 1, "keep": 1, "com_half": 1, "e": range(H + 1),
                                 "y_lane": W + 1, "y_bytes": 64, "com_lane": W + 1, "com_bytes": 64}, valids, "a2")
        a2_slots = Signal(data.ArrayLayout(_SlotHalfBytes(W), NS), name="a2_slots")
        g = [Signal(64, name=f"a2_g{a}") for a in range(H)]
        g_cont = Signal(64, name="a2_g_cont")
        t_open = a1["opened"].any()
        with m.If(ce):
            m.d.sync += [a2[n].eq(a1[n]) for n in ("valid", "keep", "e")]
            m.d.sync += [
                a2["open"].eq(t_open), a2["com_half"].eq(a1["second"]),
                # A field opening in the tail runs to the beat's end; a continuing one takes the whole beat.
                a2["y_lane"].eq(Mux(t_open, a1["opened"], 1 << W)),
                a2["y_bytes"].eq(_top(Mux(t_open, a1["taken"][H:], Const((1 << H) - 1, H)), d[H:])),
                a2["com_lane"].eq(Mux(t_open, _g_lane(a1["opened"], a1["second"]), Cat(Const(0, W), a1["second"]))),
                a2["com_bytes"].eq(half_bytes(a1["com_taken"], a1["second"])),
            ]
            for a in range(H):
                acc = shares[a]
                for prod in prods[a:]:
                    acc = acc ^ prod
                m.d.sync += g[a].eq(acc)
            acc = prods[0]
            for prod in prods[1:]:
                acc = acc ^ prod
            m.d.sync += g_cont.eq(acc)
            for i in range(NS):
                sa, sb = a1_slots[i], a2_slots[i]
                field = sa.cont | sa.opened.any()
                half = field & sa.second
                m.d.sync += [sb.valid.eq(sa.valid), sb.lane.eq(sa.lane), sb.cont.eq(sa.cont),
                             sb.use_com.eq(sa.use_com), sb.half.eq(half), sb.e.eq(Mux(field, sa.e, 0)),
                             sb.g_lane.eq(Mux(sa.cont, Cat(Const(0, W), half),
                                              Mux(sa.opened.any(), _g_lane(sa.opened, half), 1 << H))),
                             sb.bytes.eq(half_bytes(sa.taken, half))]

        # Stage A3: one G value picked (an AND-OR over the one-hot index, three LUT levels) and added.
        gs = g + shares[H:] + [g_cont]
        a3 = self._stage(m, ce, {"valid": 1, "open": 1, "keep": 1, "com_half": 1, "e": range(H + 1), "y": 64,
                                 "com_base": 64}, valids, "a3")
        a3_slots = Signal(data.ArrayLayout(_SlotA2(W), NS), name="a3_slots")
        with m.If(ce):
            m.d.sync += [a3[n].eq(a2[n]) for n in ("valid", "open", "keep", "com_half", "e")]
            m.d.sync += [a3["y"].eq(a2["y_bytes"] ^ _pick(a2["y_lane"], gs)),
                         a3["com_base"].eq(a2["com_bytes"] ^ _pick(a2["com_lane"], gs))]
            for i in range(NS):
                sa, sb = a2_slots[i], a3_slots[i]
                m.d.sync += [sb.valid.eq(sa.valid), sb.lane.eq(sa.lane), sb.cont.eq(sa.cont),
                             sb.use_com.eq(sa.use_com), sb.half.eq(sa.half), sb.e.eq(sa.e),
                             sb.base.eq(sa.bytes ^ _pick(sa.g_lane, gs))]
        return a3, a3_slots

    def _loop(self, m, ce, a2, a2_slots, nib_mems, x64_mems, valids):
        """Stage B, the loop: t' = M(t) + y for a field that runs through the beat (y: the beat's bytes), or y alone
        for one that opens in it (y: C[a] + its bytes). M(t) is also the state at the beat's start, for the closes.
        At W = 16, t is r (the state over x^64) and y the beat reduced mod P; M(t) is the state at the beat's start
        times x^64 (a close in lanes 8 to 15 starts from it) and t·x^64, from the second set of nibble tables, the
        state at the start (for a close in lanes 0 to 7)."""
        DB = 8 * self.width
        t = Signal(64)
        mt = Signal(64)
        acc = [Cat(Const(0, DB), t[0:64 - DB])] if DB < 64 else []
        for q, base, mem in nib_mems:
            rd = mem.read_port(domain="comb")
            m.d.comb += rd.addr.eq(t[4 * q:4 * q + 4])
            acc.append(rd.data)
        m.d.comb += mt.eq(_xor_tree(m, acc, "mt_part"))
        # With no field open after the beat, t is not used; the enable is the flip-flops'.
        t_next = Mux(a2["open"], 0, mt) ^ a2["y"]
        with m.If(ce & a2["valid"]):
            m.d.sync += t.eq(t_next)
        fields = {"valid": 1, "s": 64, "open": 1, "keep": 1, "e": range(self.width + 1), "com_base": 64}
        s = s_com = mt
        if x64_mems:
            # The x^64 tables read a copy of t, so that t drives no more table inputs than at W = 8 (the copy's reset
            # value differs from t's, which keeps Yosys from merging the two).
            t_copy = Signal(64, init=U64)
            with m.If(ce & a2["valid"]):
                m.d.sync += t_copy.eq(t_next)
            reads = []
            for q, base, mem in x64_mems:
                rd = mem.read_port(domain="comb")
                m.d.comb += rd.addr.eq(t_copy[4 * q:4 * q + 4])
                reads.append(rd.data)
            at_start = Signal(64)
            m.d.comb += at_start.eq(_xor_tree(m, reads, "x64_part"))
            s = Mux(a2_slots[0].half, mt, at_start)           # only slot 0 continues a field
            s_com = Mux(a2["com_half"], mt, at_start)
            fields["s_com"] = 64
        b = self._stage(m, ce, fields, valids, "b")
        slots = Signal.like(a2_slots, name="b_slots")
        with m.If(ce):
            m.d.sync += [b[n].eq(a2[n]) for n in ("valid", "open", "keep", "e", "com_base")]
            m.d.sync += [b["s"].eq(s), slots.eq(a2_slots)]
            if x64_mems:
                m.d.sync += b["s_com"].eq(s_com)
        return b, slots

    def _finish(self, m, ce, b, b_slots, byte_mems, valids):
        """Stages C to the output: each close's u (the state at the beat's start, for the field that runs into the
        beat, plus its base; or the snapshot of a field whose last kept byte was in an earlier beat), rotated by its
        e bytes, reduced through the byte tables, XORed. At W = 16, u and e are from the close's half (e ≤ 8)."""
        W, NS = self.width, self.slots
        E = min(W, HALF)
        com_u = Signal(64)
        com_e = Signal(range(W + 1))
        c = self._stage(m, ce, {"valid": 1}, valids, "c")
        cs = [Signal(_SlotC(W), name=f"c_slot{i}") for i in range(NS)]
        with m.If(ce):
            m.d.sync += c["valid"].eq(b["valid"])
            for i in range(NS):
                sb = b_slots[i]
                u = Mux(sb.cont, b["s"], 0) ^ sb.base
                m.d.sync += [cs[i].valid.eq(sb.valid), cs[i].lane.eq(sb.lane),
                             cs[i].u.eq(Mux(sb.use_com, com_u, u)), cs[i].e.eq(Mux(sb.use_com, com_e, sb.e))]
            with m.If(b["valid"] & b["keep"]):
                m.d.sync += [com_u.eq(Mux(b["open"], 0, b.get("s_com", b["s"])) ^ b["com_base"]), com_e.eq(b["e"])]

        # Stage D: u rotated left by e bytes. Its low 8e bits are the ones shifted out of u·x^(8e) (bit t is reduced
        # by residue t); the rest is u·x^(8e) mod x^64. A rotate by 0 and by 8 bytes are the same, so it is an 8:1 byte
        # mux on e mod 8; which bytes went out is applied at the table addresses, a stage later.
        d = self._stage(m, ce, {"valid": 1}, valids, "d")
        ds = [Signal(_SlotD(W), name=f"d_slot{i}") for i in range(NS)]
        with m.If(ce):
            m.d.sync += d["valid"].eq(c["valid"])
            for i in range(NS):
                u = cs[i].u
                rot = Array(Cat(u[64 - 8 * e:64], u[0:64 - 8 * e]) if e else u for e in range(8))[cs[i].e[0:3]]
                m.d.sync += [ds[i].valid.eq(cs[i].valid), ds[i].lane.eq(cs[i].lane), ds[i].rot.eq(rot),
                             ds[i].out_bytes.eq(Array(Const((1 << e) - 1, 8) for e in range(E + 1))[cs[i].e])]

        # Stage E: the byte tables (registered EBR reads), addressed by the bytes that went out (0 for the others:
        # entry 0 is 0); stage F: their outputs into flip-flops as they are (an EBR's output is slow and far from its
        # users); then their XOR into the output register.
        e = self._stage(m, ce, {"valid": 1}, valids, "e")
        f = self._stage(m, ce, {"valid": 1}, valids, "f")
        es = [Signal(_SlotE(W), name=f"e_slot{i}") for i in range(NS)]
        fs = [Signal(_SlotE(W), name=f"f_slot{i}") for i in range(NS)]
        f_reads = [[Signal(64, name=f"f_read{i}_{b}") for b in range(E)] for i in range(NS)]
        low = [Signal(64, name=f"low{i}") for i in range(NS)]
        for i in range(NS):
            m.d.comb += low[i].eq(Cat(*(Mux(ds[i].out_bytes[b], 0, ds[i].rot[8 * b:8 * b + 8]) if b < E
                                        else ds[i].rot[8 * b:8 * b + 8] for b in range(8))))
        out = self.o_stream.payload
        reads = []
        for i in range(NS):
            row = []
            for b, mem in enumerate(byte_mems[i]):
                # An asynchronous read port and a register of our own: Yosys folds the register into the EBR, and
                # only then honours ``no_rw_check``.
                rd = mem.read_port(domain="comb")
                m.d.comb += rd.addr.eq(Mux(ds[i].out_bytes[b], ds[i].rot[8 * b:8 * b + 8], 0))
                data_r = Signal(64, name=f"e_read{i}_{b}")
                with m.If(ce):
                    m.d.sync += data_r.eq(rd.data)
                row.append(data_r)
            reads.append(row)
        with m.If(ce):
            m.d.sync += [e["valid"].eq(d["valid"]), f["valid"].eq(e["valid"]), self.o_stream.valid.eq(f["valid"])]
            for i in range(NS):
                m.d.sync += [es[i].valid.eq(ds[i].valid), es[i].lane.eq(ds[i].lane), es[i].low.eq(low[i]),
                             fs[i].eq(es[i])]
                m.d.sync += [r.eq(v) for r, v in zip(f_reads[i], reads[i])]
                fp = fs[i].low
                for r in f_reads[i]:
                    fp = fp ^ r
                m.d.sync += [out[i].valid.eq(fs[i].valid), out[i].lane.eq(fs[i].lane), out[i].fp.eq(fp)]

    def _refill(self, m, start, shares, nib_mems, byte_tables):
        """After the beats in flight have left: residues by repeated multiplication by x, 8 per step (W steps), each
        byte table's 256 entries (an 8-input XOR per bit; ``byte_tables`` pairs a table with the step of its
        residues), the nibble tables from the same entries, and the seed's shares: C[a] by divisions by x and, at
        W = 16, K[a] for a < 8 by multiplications."""
        W = self.width
        H = HALF if W > HALF else 0                                      # shares[a] = S·x^(8(H - a))
        poly, seed = self.poly, self.seed
        busy = self.busy
        res = [Signal(64, name=f"refill_r{j}") for j in range(8)]      # the current byte's 8 residues
        nxt = Signal(64)                                                 # the next residue
        step = Signal(range(W + 1))                                      # which byte of residues
        loading = Signal()                                               # 8 cycles of residues, then 256 entries
        count = Signal(8)
        share_steps = 8 * max(W - H, H)
        kcount = Signal(range(share_steps + 1))
        creg = Signal(64)
        freg = Signal(64) if H else None

        w_entry = Signal(64)
        w_addr = Signal(8)
        w_step = Signal(range(W + 1))
        w_valid = Signal()
        m.d.sync += w_valid.eq(0)
        for b, mem in byte_tables:
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(w_addr), wp.data.eq(w_entry), wp.en.eq(w_valid & (w_step == b))]
        for q, base, mem in nib_mems:
            wp = mem.write_port()
            low_nibble = base % 8 == 0
            own, other = (w_addr[0:4], w_addr[4:8]) if low_nibble else (w_addr[4:8], w_addr[0:4])
            m.d.comb += [wp.data.eq(w_entry), wp.addr.eq(own),
                         wp.en.eq(w_valid & (w_step == base // 8) & (other == 0))]

        with m.If(~busy):
            with m.If(start):
                m.d.sync += [busy.eq(1), loading.eq(1), step.eq(0), count.eq(0), nxt.eq(poly), kcount.eq(0),
                             creg.eq(seed), shares[H].eq(seed)]
                if H:
                    m.d.sync += freg.eq(seed)
        with m.Else():
            # The shares: one division (and at W = 16 one multiplication) by x per cycle, stored every 8.
            with m.If(kcount < share_steps):
                over_x = Cat((creg ^ Mux(creg[0], poly, 0))[1:64], creg[0])
                m.d.sync += [creg.eq(over_x), kcount.eq(kcount + 1)]
                if H:
                    times_x = Cat(Const(0, 1), freg[0:63]) ^ Mux(freg[63], poly, 0)
                    m.d.sync += freg.eq(times_x)
                with m.Switch(kcount):
                    for n in range(1, max(W - H, H + 1)):
                        with m.Case(8 * n - 1):
                            if H + n < W:
                                m.d.sync += shares[H + n].eq(over_x)
                            if n <= H:
                                m.d.sync += shares[H - n].eq(times_x)
            m.d.sync += count.eq(count + 1)
            with m.If(loading):
                # Load this byte's 8 residues.
                m.d.sync += [res[7].eq(nxt)] + [res[j].eq(res[j + 1]) for j in range(7)]
                m.d.sync += nxt.eq(Cat(Const(0, 1), nxt[0:63]) ^ Mux(nxt[63], poly, 0))
                with m.If(count == 7):
                    m.d.sync += [loading.eq(0), count.eq(0)]
            with m.Else():
                # Entry x: the XOR of the residues its bits select, registered with its address and step, then
                # written (a cycle later) to the byte tables of this step (byte table ``step`` of every slot), and
                # to the nibble tables whose residues are this step's (entries with only the low / high nibble set).
                m.d.sync += [w_entry.eq(Cat(*(Cat(*(count[j] & res[j][bit] for j in range(8))).xor()
                                             for bit in range(64)))),
                             w_addr.eq(count), w_step.eq(step), w_valid.eq(1)]
                with m.If(count == 255):
                    m.d.sync += [loading.eq(1), step.eq(step + 1)]
                    with m.If(step == W - 1):
                        m.d.sync += busy.eq(0)


# -- lane masks and picks ---------------------------------------------------------------------------------------------

def _before(mask):
    """Lanes with a set bit of ``mask`` below them."""
    return Cat(*(mask[:k].any() if k else Const(0) for k in range(len(mask))))


def _at_or_after(mask, lanes):
    """Lanes (of the first ``lanes``) with a set bit of ``mask`` at or above them."""
    return Cat(*(mask[k:].any() for k in range(lanes)))


def _highest_plus_one(mask):
    e = Const(0, range(len(mask) + 1))
    for k in range(len(mask)):
        e = Mux(mask[k], k + 1, e)
    return e


def _lowest(mask):
    a = Const(0, range(len(mask)))
    for k in reversed(range(len(mask))):
        a = Mux(mask[k], k, a)
    return a


def _kept_end(kept, second):
    """e of a W = 16 close: lanes up to its last kept byte, from lane 8 when that byte is there (``second``)."""
    return Mux(second, _highest_plus_one(kept[HALF:]), _highest_plus_one(kept[:HALF]))


def _g_lane(opened, half):
    """The one-hot G index of a field opening in the one-hot lane ``opened`` (W = 16): its lane when it closes from
    lane 8, its lane + 8 (C[a]) when from the beat's start."""
    return Mux(half, opened, Cat(Const(0, HALF), opened[:HALF]))


def _top(mask, lanes):
    """The bytes of ``lanes`` selected by ``mask``, the first in the top byte (of 64 bits for 8 lanes)."""
    n = len(lanes)
    return Cat(*(Mux(mask[n - 1 - i], lanes[n - 1 - i], 0) for i in range(n)))


def _pick(onehot, values):
    """``values[k]`` for the set bit k of ``onehot`` (0 for none): an AND-OR."""
    acc = Const(0, 64)
    for k in range(len(onehot)):
        acc = acc | Mux(onehot[k], values[k], 0)
    return acc


def _xor_tree(m, terms, name):
    """The XOR of the tables' outputs as a two-level tree of 4-input XORs (kept, so the mapper does not deepen it)."""
    groups = []
    for g in range(0, len(terms), 4):
        x = Signal(64, name=f"{name}{g // 4}", attrs={"keep": 1})
        part = terms[g]
        for v in terms[g + 1:g + 4]:
            part = part ^ v
        m.d.comb += x.eq(part)
        groups.append(x)
    part = groups[0]
    for x in groups[1:]:
        part = part ^ x
    return part


def _SlotA1(width):
    return data.StructLayout({"valid": 1, "lane": range(width + 1), "cont": 1, "use_com": 1, "c_lane": width,
                              "e": range(width + 1), "bytes": 64})


def _SlotHalf(width):
    return data.StructLayout({"valid": 1, "lane": range(width + 1), "cont": 1, "use_com": 1, "opened": width,
                              "second": 1, "e": range(HALF + 1), "taken": width})


def _SlotHalfBytes(width):
    return data.StructLayout({"valid": 1, "lane": range(width + 1), "cont": 1, "use_com": 1, "half": 1,
                              "e": range(HALF + 1), "g_lane": width + 1, "bytes": 64})


def _SlotA2(width):
    fields = {"valid": 1, "lane": range(width + 1), "cont": 1, "use_com": 1, "e": range(width + 1), "base": 64}
    if width > HALF:
        fields["half"] = 1
    return data.StructLayout(fields)


def _SlotC(width):
    return data.StructLayout({"valid": 1, "lane": range(width + 1), "u": 64, "e": range(width + 1)})


def _SlotD(width):
    return data.StructLayout({"valid": 1, "lane": range(width + 1), "rot": 64, "out_bytes": 8})


def _SlotE(width):
    return data.StructLayout({"valid": 1, "lane": range(width + 1), "low": 64})

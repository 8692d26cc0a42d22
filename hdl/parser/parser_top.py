"""The rebuilt header parser with its registers: :class:`~.parser_core.ParserCore`, table updates, the descriptor
FIFO and the counters. Same ports, registers and descriptor as the lane-chain :class:`~.header_parser.HeaderParser`.

regs ─▶ table copies + dirty flags ─▶ update controller ─▶ ParserCore's table ports
beats ─▶ admission ─▶ ParserCore ─▶ descriptor FIFO ─▶ o_desc            (o_stream: the beats, unchanged)

Table updates. The units keep their tables in EBR and rewrite them in a few thousand cycles, so a register commit
cannot take effect in the next cycle as a flip-flop table did. A commit is recorded instead: the extra names in
flip-flops (the name matcher reads them while it refills), each prefix entry in a 16-entry LUT RAM with a dirty bit
(skipped when the entry did not change), the key as soon as ``fp_poly`` or ``fp_seed`` differs from the key in use.
The controller then stops admitting packets at the next packet boundary, waits for the beats in flight to leave,
and applies the updates one at a time (the key, the names, each dirty prefix entry), each unit holding ``busy``
while it rewrites. Packets admitted before a commit are parsed with the old tables, later ones with the new.

Admission. A beat is taken only while ``o_stream`` is ready and the descriptor FIFO has room for every packet in
flight, so the datapath never stalls and no descriptor is ever refused.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..bus.packet import ByteBeat, check_width
from ..bus.regbank import hw_signature
from .header_parser import parser_regmap
from .layouts import (EXTRA_SLOTS, FP_POLY_RESET, FP_SEED_RESET, NAME_BYTES, PREFIX_BYTES, PREFIX_ENTRIES, Descriptor,
                      ErrorFlag)
from .parser_core import ParserCore, core_latency

__all__ = ["PipelinedParser", "PIPELINED_FIFO_DEPTH", "desc_latency"]

#: Descriptors the FIFO holds: more than the packets that can be in flight at the longest latency (one-beat packets
#: back to back), so admission never waits while ``o_desc`` is ready. An EBR holds 512 words of 36 bits: depth is
#: free up to there, and the width takes 20 blocks.
PIPELINED_FIFO_DEPTH = 64


def desc_latency(width: int) -> int:
    """Cycles from the beat holding the stop byte to ``o_desc.valid``: the datapath's, and two through the FIFO (its
    write and its read)."""
    return core_latency(width) + 2


#: A prefix entry as the LUT-RAM copy holds it.
_ENTRY = data.StructLayout({"data": 8 * PREFIX_BYTES, "len": 6, "cls": 4, "valid": 1})


class PipelinedParser(wiring.Component):
    """HTTP/1.1 request header parser, W = 4, 8 or 16 (see :class:`~.header_parser.HeaderParser` for the ports)."""

    def __init__(self, width: int = 8):
        self.width = check_width(width)
        self.desc_latency = desc_latency(width)
        super().__init__({
            "i_stream": In(stream.Signature(ByteBeat(width))),
            "o_stream": Out(stream.Signature(ByteBeat(width))),
            "o_desc": Out(stream.Signature(Descriptor)),
            "regs": In(hw_signature(parser_regmap())),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.width
        regs = self.regs
        m.submodules.core = core = ParserCore(W)

        # Admission: a packet in flight is one that was started and whose descriptor is not yet in the FIFO; ``used``
        # counts those and the FIFO's entries, and ``room`` (registered) says one more may start.
        hold = Signal()                       # the controller wants the pipeline empty
        mid = Signal()                        # inside a packet
        used = Signal(range(PIPELINED_FIFO_DEPTH + 1))
        room = Signal(init=1)
        beat = self.i_stream.payload
        take = Signal()
        start = Signal()
        pop = Signal()
        # The core's own ready (low only while a unit rewrites its tables) is not in this path: the controller
        # pulses an update only with no packet in flight and holds admission until every unit is done (``settled``),
        # so a beat is never offered while it is low. The test's configuration segments exercise exactly that (a lost
        # beat would show as a wrong descriptor or pass-through beat).
        m.d.comb += [
            self.o_stream.payload.eq(beat),
            self.o_stream.valid.eq(self.i_stream.valid & (mid | (room & ~hold))),
            self.i_stream.ready.eq(self.o_stream.ready & (mid | (room & ~hold))),
            take.eq(self.i_stream.valid & self.i_stream.ready),
            start.eq(take & ~mid),
            core.i_stream.valid.eq(take), core.i_stream.payload.eq(beat),
        ]
        with m.If(take):
            m.d.sync += mid.eq(~beat.last)
        used_next = Signal.like(used)
        m.d.comb += used_next.eq(used + start - pop)
        m.d.sync += [used.eq(used_next), room.eq(used_next < PIPELINED_FIFO_DEPTH)]
        level = self._fifo(m, core, pop)

        # The pipeline is empty: no beat taken for the core's latency, and no packet in flight (every packet counted in
        # ``used`` has its descriptor in the FIFO).
        quiet = Signal(range(self.desc_latency + 4), init=self.desc_latency + 3)
        with m.If(take):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet != self.desc_latency + 3):
            m.d.sync += quiet.eq(quiet + 1)
        empty = Signal()
        m.d.comb += empty.eq((quiet == self.desc_latency + 3) & ~mid & (used == level) & ~take)

        m.d.comb += [core.max_header_bytes.eq(regs.limits.max_header_bytes),
                     core.default_class.eq(regs.route_default.default_class)]
        self._updates(m, core, hold, empty)

        # Counters.
        desc = Signal(Descriptor)
        m.d.comb += desc.eq(core.o_desc.payload)
        m.d.comb += [regs.requests.count_incr.eq(core.o_desc.valid),
                     regs.complete.count_incr.eq(core.o_desc.valid & desc.complete)]
        for i in range(len(ErrorFlag)):
            m.d.comb += getattr(regs, f"error_count_{i}").count_incr.eq(core.o_desc.valid & desc.errors[i])
        return m

    def _fifo(self, m, core, pop):
        """The descriptor FIFO, in EBR; returns its level. Its write port registers the core's unregistered
        descriptor, and its read port (the EBR's own output latch) reads the head after this cycle's pop at every
        edge, so an entry written at one edge is on ``o_desc`` after the next: the same two edges as a descriptor
        register and a LUT-RAM FIFO, without 700 bits of either. Admission keeps it from overflowing, so the core's
        ``valid`` is the write enable as it is."""
        D = PIPELINED_FIFO_DEPTH
        m.submodules.desc_fifo = mem = Memory(shape=Descriptor, depth=D, init=[], attrs={"ram_style": "block"})
        wr = mem.write_port()
        rd = mem.read_port(domain="sync")
        wp, rp = Signal(range(D)), Signal(range(D))
        level = Signal(range(D + 1))          # entries written at earlier edges and not popped
        valid = Signal()
        m.d.comb += [wr.addr.eq(wp), wr.data.eq(core.o_desc.payload), wr.en.eq(core.o_desc.valid),
                     pop.eq(valid & self.o_desc.ready),
                     rd.addr.eq((rp + pop)[:len(rp)]), rd.en.eq(1),
                     self.o_desc.payload.eq(rd.data), self.o_desc.valid.eq(valid)]
        with m.If(core.o_desc.valid):
            m.d.sync += wp.eq(wp + 1)
        with m.If(pop):
            m.d.sync += rp.eq(rp + 1)
        m.d.sync += [level.eq(level + core.o_desc.valid - pop), valid.eq(level - pop != 0)]
        return level

    def _updates(self, m, core, hold, empty):
        """Table copies, dirty flags and the controller that applies them while the pipeline is empty."""
        regs = self.regs
        # The key: the one in use, and whether the registers hold another.
        poly = Signal(64, init=FP_POLY_RESET)
        seed = Signal(64, init=FP_SEED_RESET)
        # Compared in 16-bit parts, then ORed: two registered steps (a key written now is seen two cycles later; the
        # controller re-checks after every update, so a late one is applied on the next round).
        key_diff = Signal(8)
        key_dirty = Signal()
        regs_key, key = Cat(regs.fp_poly.value, regs.fp_seed.value), Cat(poly, seed)
        m.d.sync += [key_diff.eq(Cat(*(regs_key[i:i + 16] != key[i:i + 16] for i in range(0, 128, 16)))),
                     key_dirty.eq(key_diff.any())]
        m.d.comb += [core.poly.eq(poly), core.seed.eq(seed)]

        # The extra names, in flip-flops (the name matcher reads them while it refills). A commit is written one
        # cycle later, with the name it replaces read then; the two are compared in 16-bit parts the cycle after,
        # and the names marked dirty the cycle after that if a part differs (registered steps, none deeper than a
        # 16-bit comparator).
        names_dirty = Signal()
        n1_valid, n1_index = Signal(), Signal(range(EXTRA_SLOTS))
        n1_new = Signal(8 * NAME_BYTES + 6)
        m.d.sync += [n1_valid.eq(regs.extra_commit.go), n1_index.eq(regs.extra_commit.index),
                     n1_new.eq(Cat(*(getattr(regs, f"extra_data_{i}").value for i in range(NAME_BYTES // 4)),
                                   Mux(regs.extra_ctrl.len > NAME_BYTES, NAME_BYTES, regs.extra_ctrl.len)))]
        copies = Array(Cat(core.x_name[i].as_value(), core.x_len[i]) for i in range(EXTRA_SLOTS))
        with m.If(n1_valid):
            m.d.sync += copies[n1_index].eq(n1_new)
        n2_valid, n2_old, n2_new = Signal(), Signal.like(n1_new), Signal.like(n1_new)
        m.d.sync += [n2_valid.eq(n1_valid), n2_old.eq(copies[n1_index]), n2_new.eq(n1_new)]
        n3_valid, n3_diff = Signal(), Signal((len(n1_new) + 15) // 16)
        m.d.sync += [n3_valid.eq(n2_valid),
                     n3_diff.eq(Cat(*(n2_old[i:i + 16] != n2_new[i:i + 16] for i in range(0, len(n1_new), 16))))]
        with m.If(n3_valid & n3_diff.any()):
            m.d.sync += names_dirty.eq(1)

        # The prefix entries: a LUT RAM copy and a dirty bit each; an unchanged entry stays clean.
        m.submodules.prefixes = table = Memory(shape=_ENTRY, depth=PREFIX_ENTRIES, init=[])
        wr = table.write_port()
        rd_commit = table.read_port(domain="comb")
        rd_apply = table.read_port(domain="comb")
        staged = Signal(_ENTRY)
        m.d.comb += [staged.data.eq(Cat(*(getattr(regs, f"prefix_data_{i}").value
                                          for i in range(PREFIX_BYTES // 4)))),
                     staged.len.eq(Mux(regs.prefix_ctrl.len > PREFIX_BYTES, PREFIX_BYTES, regs.prefix_ctrl.len)),
                     staged.cls.eq(regs.prefix_ctrl.route_class), staged.valid.eq(regs.prefix_ctrl.valid)]
        # A commit is written one cycle later; the entry it replaces is read then, compared the cycle after, and the
        # entry marked dirty the cycle after that if it changed (three registered steps, none deeper than a
        # comparator).
        c_valid, c_index, c_entry = Signal(), Signal(4), Signal(_ENTRY)
        m.d.sync += [c_valid.eq(regs.prefix_commit.go), c_index.eq(regs.prefix_commit.index), c_entry.eq(staged)]
        m.d.comb += [rd_commit.addr.eq(c_index), wr.addr.eq(c_index), wr.data.eq(c_entry), wr.en.eq(c_valid)]
        c2_valid, c2_index, c2_old, c2_new = Signal(), Signal(4), Signal(_ENTRY), Signal(_ENTRY)
        m.d.sync += [c2_valid.eq(c_valid), c2_index.eq(c_index), c2_old.eq(rd_commit.data), c2_new.eq(c_entry)]
        c3_valid, c3_mask = Signal(), Signal(PREFIX_ENTRIES)
        m.d.sync += [c3_valid.eq(c2_valid & (c2_old.as_value() != c2_new.as_value())),
                     c3_mask.eq(Const(1, PREFIX_ENTRIES) << c2_index)]
        # The copy starts all zero: invalid entries, as the route unit's tables start.
        pfx_dirty = Signal(PREFIX_ENTRIES)
        clear = Signal(PREFIX_ENTRIES)
        m.d.sync += pfx_dirty.eq((pfx_dirty & ~clear) | Mux(c3_valid, c3_mask, 0))
        c4_valid = Signal()                   # ... and ``pick`` below has seen it
        m.d.sync += c4_valid.eq(c3_valid)
        committing = Signal()
        m.d.comb += committing.eq(c_valid | c2_valid | c3_valid | c4_valid | n1_valid | n2_valid | n3_valid)
        # The lowest dirty entry, registered (the controller applies it a cycle or more after it became dirty).
        pick = Signal(4)
        lowest = Const(0, 4)
        for e in reversed(range(PREFIX_ENTRIES)):
            lowest = Mux(pfx_dirty[e], e, lowest)
        m.d.sync += pick.eq(lowest)
        m.d.comb += rd_apply.addr.eq(pick)
        # The entry and the pulses reach the units from registers: the controller's decision (dirty flags, the
        # lowest dirty entry, the state) is not in front of the units' update logic. The entry is registered every
        # cycle; nothing dirties an entry while ``settled`` holds, so it is still the picked one when the pulse is.
        entry, entry_index = Signal(_ENTRY), Signal(4)
        x_go, p_go = Signal(), Signal()
        m.d.sync += [entry.eq(rd_apply.data), entry_index.eq(pick), x_go.eq(0), p_go.eq(0)]
        m.d.comb += [core.pfx_data.eq(entry.data), core.pfx_len.eq(entry.len), core.pfx_class.eq(entry.cls),
                     core.pfx_valid.eq(entry.valid), core.pfx_index.eq(entry_index), core.pfx_commit.eq(p_go),
                     core.x_update.eq(x_go)]

        # The controller: hold at a packet boundary, wait for the pipeline to empty, apply one update, repeat.
        # ``settled`` is registered: nothing was in flight, being committed or being rewritten a cycle ago (every
        # step that could start something is in it, so it cannot be stale).
        dirty = Signal()
        m.d.comb += dirty.eq(key_dirty | names_dirty | pfx_dirty.any())
        settled = Signal()
        m.d.sync += settled.eq(empty & ~core.busy & ~committing & ~regs.extra_commit.go & ~regs.prefix_commit.go)
        with m.FSM():
            with m.State("RUN"):
                with m.If(dirty):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += hold.eq(1)
                with m.If(settled):
                    with m.If(key_dirty):
                        m.d.sync += [poly.eq(regs.fp_poly.value), seed.eq(regs.fp_seed.value)]
                        m.next = "KEY"
                    with m.Elif(names_dirty):
                        m.d.sync += [names_dirty.eq(0), x_go.eq(1)]
                        m.next = "PULSE"
                    with m.Elif(pfx_dirty.any()):
                        m.d.sync += p_go.eq(1)
                        m.d.comb += clear.eq(Const(1, PREFIX_ENTRIES) << pick)
                        m.next = "PULSE"
                    with m.Else():
                        m.next = "RUN"
            with m.State("PULSE"):           # the registered pulse reaches the unit now
                m.d.comb += hold.eq(1)
                m.next = "WAIT"
            with m.State("KEY"):             # the key registers settled a cycle ago
                m.d.comb += [hold.eq(1), core.fp_update.eq(1)]
                m.next = "WAIT"
            with m.State("WAIT"):            # the unit raises busy the cycle after its pulse
                m.d.comb += hold.eq(1)
                m.next = "DRAIN"

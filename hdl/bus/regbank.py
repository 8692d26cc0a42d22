"""Register bank elaborated from the SystemRDL register map: the hardware end of every host access.

AXI4-Lite (:mod:`.axil`) ─▶ :class:`RegisterBus` ─▶ :class:`RegisterBank` ─▶ ``hw`` ports of every block

The bank's ``hw`` interface mirrors the map's hierarchy: field ``value`` of register ``scratch`` in block ``id`` is
``bank.hw.id.scratch.value``. What a field becomes depends on its kind (see :class:`~.regmap.FieldKind`):

=========== =========================================================================
kind        ``hw`` members
=========== =========================================================================
const       none (reads return the reset value)
storage     ``<field>`` (Out); ``<field>_swmod`` (Out, 1 cycle) with ``swmod``
hw_value    ``<field>`` (In), sampled by reads
pulse       ``<field>`` (Out), high for one cycle per written 1
counter     ``<field>`` (Out, the count), ``<field>_incr`` (In, +1 per cycle high)
memory      ``addr``, ``r_en``, ``r_data`` (In, one cycle after ``r_en``), ``w_en`` (per byte), ``w_data``
=========== =========================================================================

The bus semantics are those of the host's register bank model (``host/models/register_bank.py``), which tests
compare against.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .regmap import BUS_WIDTH_BITS, DECERR, OKAY, SLVERR, FieldKind, Memory, RegMap, Register

__all__ = ["RegisterBus", "MemoryPort", "RegisterBank", "hw_signature", "hw_name", "hw_port"]


class RegisterBus(wiring.Signature):
    """A simple register bus, from the controller's point of view.

    The controller raises ``r_stb`` or ``w_stb`` (never both) with ``addr`` (a byte address; bits 1:0 ignored),
    ``w_data`` and ``w_strb``, and holds them until ``ack``. The target answers with ``ack`` high for exactly one
    cycle, exactly one cycle after it accepted the request, with ``r_data`` and ``resp`` (AXI encoding) valid in that
    cycle. The controller drops the strobe (or presents the next request) in the cycle after ``ack``.
    """

    def __init__(self, addr_width: int):
        if not 2 < addr_width <= 32:
            raise ValueError(f"addr_width must be 3..32, got {addr_width}")
        self.addr_width = addr_width
        super().__init__({
            "addr": Out(addr_width),
            "r_stb": Out(1),
            "w_stb": Out(1),
            "w_data": Out(BUS_WIDTH_BITS),
            "w_strb": Out(BUS_WIDTH_BITS // 8),
            "ack": In(1),
            "r_data": In(BUS_WIDTH_BITS),
            "resp": In(2),
        })


class MemoryPort(wiring.Signature):
    """The bank's side of an external table (a RAM with a synchronous read port and a byte-enable write port)."""

    def __init__(self, entries: int):
        super().__init__({
            "addr": Out(max(1, (entries - 1).bit_length())),
            "r_en": Out(1),
            "r_data": In(BUS_WIDTH_BITS),
            "w_en": Out(BUS_WIDTH_BITS // 8),
            "w_data": Out(BUS_WIDTH_BITS),
        })


def _register_members(reg: Register) -> dict:
    members = {}
    for f in reg.fields:
        if f.kind is FieldKind.STORAGE:
            members[f.name] = Out(f.width, init=f.reset)
            if f.swmod:
                members[f"{f.name}_swmod"] = Out(1)
        elif f.kind is FieldKind.HW_VALUE:
            members[f.name] = In(f.width)
        elif f.kind is FieldKind.PULSE:
            members[f.name] = Out(f.width)
        elif f.kind is FieldKind.COUNTER:
            members[f.name] = Out(f.width, init=f.reset)
            members[f"{f.name}_incr"] = In(1)
    return members


def hw_signature(regmap: RegMap) -> wiring.Signature:
    """The nested ``hw`` signature of a bank for ``regmap`` (registers with no hardware ports are left out)."""
    tree: dict = {}
    leaves = [(reg.path, wiring.Signature(members)) for reg in regmap.registers
              if (members := _register_members(reg))]
    leaves += [(mem.path, MemoryPort(mem.entries)) for mem in regmap.memories]
    for path, leaf in leaves:
        node = tree
        for name in path[:-1]:
            node = node.setdefault(hw_name(name), {})
        node[hw_name(path[-1])] = leaf

    def build(node) -> wiring.Signature:
        return wiring.Signature({name: Out(sub if isinstance(sub, wiring.Signature) else build(sub))
                                 for name, sub in node.items()})
    return build(tree)


def hw_name(name: str) -> str:
    """The ``hw`` member name of a map component: array elements ``data[3]`` become ``data_3``."""
    return name.replace("[", "_").replace("]", "")


def hw_port(iface, path):
    """The ``hw`` sub-interface for a register or memory path, e.g. ``hw_port(bank.hw, ("parser", "limits"))``."""
    for name in path:
        iface = getattr(iface, hw_name(name))
    return iface



class RegisterBank(wiring.Component):
    """Register bank for a :class:`RegMap`.

    Parameters
    ----------
    regmap : RegMap
        The map to implement (addresses are absolute on ``bus``).
    addr_width : int
        Width of ``bus.addr``; addresses beyond the map answer ``DECERR``.

    Attributes
    ----------
    bus : In(RegisterBus)
        One access per two cycles: accepted in cycle *n*, acknowledged in cycle *n+1*.
    hw : Out(hw_signature(regmap))
        The hardware side of every field and memory.
    """

    def __init__(self, regmap: RegMap, addr_width: int):
        if regmap.size > (1 << addr_width):
            raise ValueError(f"regmap {regmap.name} spans {regmap.size:#x} bytes; addr_width {addr_width} is too narrow")
        for reg in regmap.registers:
            # Reads go through 64-bit slots (see ``elaborate``): a register must not straddle two of them.
            if reg.words > 2 or (reg.words == 2 and reg.address % 8):
                raise ValueError(f"register {'.'.join(reg.path)} at {reg.address:#x} is {reg.words} words: the bank "
                                 f"takes registers of 32 bits, or of 64 bits aligned to 8 bytes")
        self.regmap = regmap
        super().__init__({"bus": In(RegisterBus(addr_width)), "hw": Out(hw_signature(regmap))})

    def elaborate(self, platform):
        m = Module()
        bus, regmap = self.bus, self.regmap
        word = bus.addr[2:]

        busy = Signal()           # a request was accepted last cycle; this cycle acks it
        accept = Signal()
        m.d.comb += accept.eq((bus.r_stb | bus.w_stb) & ~busy)
        m.d.sync += busy.eq(accept)
        m.d.comb += bus.ack.eq(busy)

        resp = Signal(2)
        r_data = Signal(BUS_WIDTH_BITS)
        m.d.sync += resp.eq(OKAY)
        m.d.comb += [bus.resp.eq(resp), bus.r_data.eq(r_data)]

        lanes = Signal(BUS_WIDTH_BITS)
        m.d.comb += lanes.eq(Cat(*(b.replicate(8) for b in bus.w_strb)))

        # 64-bit read latch: the bus word address of the register's high word it holds, and that word.
        latch_valid = Signal()
        latch_word = Signal.like(word)
        latch_data = Signal(BUS_WIDTH_BITS)
        # Register reads go through one pruned binary mux tree over 64-bit slots (two bus words), not through the
        # ``Switch`` below: there they became an AND-OR ``$pmux`` over every register word, and the bank for the
        # core's map took 28.5 k LUT4 on ECP5 (15.5 k with the tree). ``reg_read``/``multi_low`` say what the
        # accepted read hit.
        reg_read = Signal()
        multi_low = Signal()

        # Memories: their read data is muxed in during the ack cycle.
        mem_read_sel = Signal(range(len(regmap.memories) + 2))
        m.d.sync += mem_read_sel.eq(0)

        self._strobe_defaults(m)
        counter_base = self._counters(m)

        with m.If(accept):
            with m.Switch(word):
                for reg in regmap.registers:
                    for w in range(reg.words):
                        with m.Case(reg.address // 4 + w):
                            lo, hi = BUS_WIDTH_BITS * w, BUS_WIDTH_BITS * (w + 1)
                            with m.If(bus.r_stb):
                                m.d.comb += reg_read.eq(1)
                                if w == 0:
                                    if reg.words > 1:
                                        m.d.comb += multi_low.eq(1)
                                    for f in reg.fields:
                                        if f.rclr:
                                            m.d.comb += counter_base[(reg.name, f.name)].eq(0)
                            with m.Else():  # write
                                if not reg.sw_writable:
                                    m.d.sync += resp.eq(SLVERR)
                                self._write_word(m, reg, lo, hi, lanes, counter_base)
                for mi, mem in enumerate(regmap.memories):
                    port = hw_port(self.hw, mem.path)
                    m.d.comb += [port.addr.eq(word - mem.address // 4), port.w_data.eq(bus.w_data)]
                    with m.Case(*range(mem.address // 4, mem.address // 4 + mem.entries)) \
                            if mem.entries <= 64 else m.Case(_mem_pattern(mem, len(word))):
                        with m.If(bus.r_stb):
                            if mem.sw_readable:
                                m.d.comb += port.r_en.eq(1)
                                m.d.sync += mem_read_sel.eq(mi + 1)
                            else:
                                m.d.sync += r_data.eq(0)
                        with m.Else():
                            if mem.sw_writable:
                                m.d.comb += port.w_en.eq(bus.w_strb)
                            else:
                                m.d.sync += resp.eq(SLVERR)
                with m.Default():
                    m.d.sync += [resp.eq(DECERR), r_data.eq(0)]

        slot = self._read_slot(m, word)
        slot_lo, slot_hi = slot[:BUS_WIDTH_BITS], slot[BUS_WIDTH_BITS:]
        with m.If(accept & reg_read):
            with m.If(latch_valid & (latch_word == word)):
                m.d.sync += r_data.eq(latch_data)
            with m.Else():
                m.d.sync += r_data.eq(Mux(word[0], slot_hi, slot_lo))
            with m.If(multi_low):
                m.d.sync += [latch_valid.eq(1), latch_word.eq(word | 1), latch_data.eq(slot_hi)]

        for mi, mem in enumerate(regmap.memories):
            port = hw_port(self.hw, mem.path)
            with m.If(mem_read_sel == mi + 1):
                m.d.comb += bus.r_data.eq(port.r_data)
        return m

    def _field_signal(self, reg: Register, f):
        return getattr(hw_port(self.hw, reg.path), f.name)

    def _strobe_defaults(self, m):
        """Pulses and swmod strobes are 0 in every cycle a write does not set them."""
        for reg in self.regmap.registers:
            for f in reg.fields:
                if f.kind is FieldKind.PULSE:
                    m.d.sync += hw_port(self.hw, reg.path + (f.name,)).eq(0)
                if f.swmod:
                    m.d.sync += hw_port(self.hw, reg.path + (f"{f.name}_swmod",)).eq(0)

    def _counters(self, m) -> dict:
        """Counters count every cycle their incr is high; bus writes (and read-clear) act on the pre-increment value,
        the ``base`` signal returned for each ``(register, field)``."""
        counter_base = {}
        for reg in self.regmap.registers:
            for f in reg.fields:
                if f.kind is FieldKind.COUNTER:
                    port = hw_port(self.hw, reg.path)
                    value = getattr(port, f.name)
                    base = Signal(f.width, name=f"{'_'.join(reg.path)}_{f.name}_base")
                    m.d.comb += base.eq(value)
                    m.d.sync += value.eq(base + getattr(port, f"{f.name}_incr"))
                    counter_base[(reg.name, f.name)] = base
        return counter_base

    def _write_word(self, m, reg: Register, lo: int, hi: int, lanes, counter_base: dict):
        """A bus write to the register word holding bits ``lo..hi-1``: each writable field's part in it, by lane."""
        for f in reg.fields:
            if not f.sw_writable:
                continue
            # The part of the field inside this bus word.
            f_lo, f_hi = max(f.lsb, lo), min(f.msb + 1, hi)
            if f_lo >= f_hi:
                continue
            sl = slice(f_lo - f.lsb, f_hi - f.lsb)
            wd = self.bus.w_data[f_lo - lo:f_hi - lo]
            ln = lanes[f_lo - lo:f_hi - lo]
            sig = self._field_signal(reg, f)
            if f.kind is FieldKind.PULSE:
                m.d.sync += sig[sl].eq(wd & ln)
            elif f.kind is FieldKind.COUNTER:
                base = counter_base[(reg.name, f.name)]
                m.d.comb += base[sl].eq((sig[sl] & ~ln) | (wd & ln))
            else:
                m.d.sync += sig[sl].eq((sig[sl] & ~ln) | (wd & ln))
            if f.swmod:
                m.d.sync += hw_port(self.hw, reg.path + (f"{f.name}_swmod",)).eq(ln.any())

    def _read_value(self, m, reg: Register):
        """The register's readable fields at their bit positions (constants for ``const`` fields, 0 elsewhere)."""
        value = Signal(reg.width, name=f"{'_'.join(reg.path)}_rd")
        for f in reg.fields:
            if not f.sw_readable:
                continue
            src = Const(f.reset, f.width) if f.kind is FieldKind.CONST else self._field_signal(reg, f)
            m.d.comb += value[f.lsb:f.lsb + len(src)].eq(src)
        return value

    def _read_slot(self, m, word):
        """The 64-bit slot (two bus words) ``word`` falls in, through the pruned mux tree over every register."""
        words = {}
        for reg in self.regmap.registers:
            full = self._read_value(m, reg)
            for w in range(reg.words):
                words[reg.address // 4 + w] = full[BUS_WIDTH_BITS * w:BUS_WIDTH_BITS * (w + 1)]
        slots = {}
        for a in sorted(words):
            slots.setdefault(a >> 1, [Const(0, BUS_WIDTH_BITS), Const(0, BUS_WIDTH_BITS)])[a & 1] = words[a]
        slot = Signal(2 * BUS_WIDTH_BITS)
        m.d.comb += slot.eq(_mux_tree({k: Cat(*v) for k, v in slots.items()}, word[1:], 2 * BUS_WIDTH_BITS))
        return slot


def _mux_tree(entries: dict, index, width: int):
    """``entries[index]`` (0 where there is no entry) as a binary tree of 2:1 multiplexers on ``index``'s bits,
    pruned to the subtrees that hold entries."""
    keys = sorted(entries)

    def node(lo: int, bits: int, first: int, last: int):
        # keys[first:last] are the entries in [lo, lo + 2**bits).
        if first == last:
            return Const(0, width)
        if bits == 0:
            return entries[keys[first]]
        mid_key = lo + (1 << (bits - 1))
        split = first
        while split < last and keys[split] < mid_key:
            split += 1
        return Mux(index[bits - 1], node(mid_key, bits - 1, split, last), node(lo, bits - 1, first, split))

    return node(0, len(index), 0, len(keys))


def _mem_pattern(mem: Memory, width: int) -> str:
    """A ``Case`` pattern matching every word of ``mem``; memories are aligned to their power-of-two size."""
    words = mem.entries
    span = 1 << (words - 1).bit_length()
    base = mem.address // 4
    if base % span or words != span:
        raise ValueError(f"memory {mem.name}: {words} entries at {mem.address:#x} must be a power of two, "
                         f"aligned to its size, when it has more than 64 entries")
    low = (span - 1).bit_length()
    return format(base >> low, f"0{width - low}b") + "-" * low

"""Bit-exact model of the register bank behind the AXI4-Lite target (:mod:`wirespeed.hdl.bus.regbank`).

It answers bus reads and writes exactly as the RTL does: byte strobes, responses, write-only and read-only fields,
single-pulse fields, counters (with read-clear) and the 64-bit read latch. Hardware inputs (``HW_VALUE`` fields,
counter increments, memory contents) are set by whoever owns the model: a block model, or a testbench that drives the
same values into the RTL.
"""

from __future__ import annotations

from collections import Counter

from ...hdl.bus.regmap import BUS_WIDTH_BITS, DECERR, OKAY, RESP_NAMES, SLVERR, FieldKind, Memory, RegMap, Register

__all__ = ["RegisterBankModel", "OKAY", "SLVERR", "DECERR", "RESP_NAMES"]


def strobe_mask(strb: int) -> int:
    """The 32-bit mask of the byte lanes enabled by a 4-bit WSTRB."""
    return sum(0xFF << (8 * i) for i in range(4) if strb >> i & 1)


class RegisterBankModel:
    """Register bank state and bus semantics for one :class:`RegMap`.

    Response rules (identical in the RTL):

    - an address outside every register and memory: ``DECERR``, for reads and writes;
    - a write to a register with no software-writable field, or to a read-only memory: ``SLVERR``, nothing changes;
    - a read of a write-only register or memory returns 0 with ``OKAY`` (so a key can be written but never read).
    """

    def __init__(self, regmap: RegMap):
        self.regmap = regmap
        self.reg_index = {reg.name: i for i, reg in enumerate(regmap.registers)}
        self.reset()

    def reset(self) -> None:
        #: Stored bits of every register (STORAGE and COUNTER fields), by register name.
        self.state: dict[str, int] = {r.name: r.reset for r in self.regmap.registers}
        #: Values the hardware drives into HW_VALUE fields, by ``register.field``.
        self.hw_inputs: dict[str, int] = {}
        #: Memory contents, by memory name.
        self.mem: dict[str, list[int]] = {m.name: [0] * m.entries for m in self.regmap.memories}
        #: Pulses emitted on PULSE fields, by ``register.field`` and bit.
        self.pulses: Counter[tuple[str, int]] = Counter()
        # The 64-bit read latch: (register index, high word) of the last low-word read.
        self.latch: tuple[int, int] | None = None

    # -- hardware side --------------------------------------------------------------------------------------------

    def set_hw(self, name: str, value: int) -> None:
        """Drive a HW_VALUE field (``register.field``)."""
        reg_name, _, field_name = name.rpartition(".")
        fld = self.regmap[reg_name].field(field_name)
        assert fld.kind is FieldKind.HW_VALUE, name
        self.hw_inputs[name] = value & ((1 << fld.width) - 1)

    def incr(self, name: str, times: int = 1) -> None:
        """Count ``times`` increments on a COUNTER field (``register.field``); wraps at its width."""
        reg_name, _, field_name = name.rpartition(".")
        reg = self.regmap[reg_name]
        fld = reg.field(field_name)
        assert fld.kind is FieldKind.COUNTER, name
        value = ((self.state[reg_name] >> fld.lsb) + times) & ((1 << fld.width) - 1)
        self.state[reg_name] = (self.state[reg_name] & ~fld.mask) | (value << fld.lsb)

    def value(self, name: str) -> int:
        """The full current value of a register as the hardware sees it (no read side effects)."""
        reg: Register = self.regmap[name]
        value = 0
        for f in reg.fields:
            if f.kind in (FieldKind.STORAGE, FieldKind.COUNTER):
                value |= self.state[name] & f.mask
            elif f.kind is FieldKind.CONST:
                value |= f.reset << f.lsb
            elif f.kind is FieldKind.HW_VALUE:
                value |= self.hw_inputs.get(f"{name}.{f.name}", 0) << f.lsb
        return value

    # -- bus side -------------------------------------------------------------------------------------------------

    def read(self, address: int) -> tuple[int, int]:
        """One 32-bit bus read: ``(data, resp)``."""
        hit = self.regmap.decode(address)
        if hit is None:
            return 0, DECERR
        node, word = hit
        if isinstance(node, Memory):
            return (self.mem[node.name][word] if node.sw_readable else 0), OKAY
        reg: Register = node
        readable = sum(f.mask for f in reg.fields if f.sw_readable)
        index = self.reg_index[reg.name]
        if word == 0:
            full = self.value(reg.name) & readable
            if reg.words > 1:
                self.latch = (index, full >> BUS_WIDTH_BITS)
            for f in reg.fields:
                if f.rclr:
                    self.state[reg.name] &= ~f.mask
            return full & 0xFFFF_FFFF, OKAY
        if self.latch is not None and self.latch[0] == index:
            return self.latch[1] & 0xFFFF_FFFF, OKAY
        return (self.value(reg.name) & readable) >> (BUS_WIDTH_BITS * word) & 0xFFFF_FFFF, OKAY

    def write(self, address: int, data: int, strb: int = 0xF) -> int:
        """One 32-bit bus write with byte strobes: returns ``resp``."""
        hit = self.regmap.decode(address)
        if hit is None:
            return DECERR
        node, word = hit
        lanes = strobe_mask(strb)
        if isinstance(node, Memory):
            if not node.sw_writable:
                return SLVERR
            old = self.mem[node.name][word]
            self.mem[node.name][word] = (old & ~lanes) | (data & lanes)
            return OKAY
        reg: Register = node
        if not reg.sw_writable:
            return SLVERR
        shift = BUS_WIDTH_BITS * word
        lanes <<= shift
        data = (data << shift) & lanes
        for f in reg.fields:
            if not f.sw_writable:
                continue
            if f.kind is FieldKind.PULSE:
                bits = (data & f.mask) >> f.lsb
                for b in range(f.width):
                    if bits >> b & 1:
                        self.pulses[(f"{reg.name}.{f.name}", b)] += 1
            else:
                m = f.mask & lanes
                self.state[reg.name] = (self.state[reg.name] & ~m) | (data & m)
        return OKAY


class BlockModel:
    """Base of a block's register-level model (``limiter_block``, ``router_block``): access to the block's fields in
    the core's bank, pulse detection, and counters that mirror a model's.

    Subclasses set :attr:`PREFIX` (``"limiter."``) and :attr:`COUNTERS` (register names under it whose ``count``
    field follows the model attribute of the same name).
    """

    PREFIX = ""
    COUNTERS: tuple = ()

    def __init__(self, bank: RegisterBankModel):
        self.bank = bank
        self.regmap = bank.regmap
        self._pulses_seen: dict[str, int] = {}
        self._mirrored = dict.fromkeys(self.COUNTERS, 0)

    def _field(self, reg: str, name: str) -> int:
        f = self.regmap[self.PREFIX + reg].field(name)
        return (self.bank.value(self.PREFIX + reg) & f.mask) >> f.lsb

    def _value(self, reg: str) -> int:
        return self.bank.value(self.PREFIX + reg)

    def _set(self, name: str, value: int) -> None:
        self.bank.set_hw(self.PREFIX + name, value)

    def _fired(self, name: str) -> bool:
        """Whether the pulse field ``name`` fired since the last look."""
        count = self.bank.pulses[(self.PREFIX + name, 0)]
        fired = count != self._pulses_seen.get(name, 0)
        self._pulses_seen[name] = count
        return fired

    def _mirror_counters(self, model) -> None:
        """Count in the bank what ``model``'s counters advanced since the last call (64-bit wrap)."""
        for name in self.COUNTERS:
            value = getattr(model, name)
            delta = (value - self._mirrored[name]) & ((1 << 64) - 1)
            if delta:
                self.bank.incr(f"{self.PREFIX}{name}.count", delta)
                self._mirrored[name] = value

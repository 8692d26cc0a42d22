"""Register access by name, sans-IO: names from the register map become bus operations that any transport executes.

The driver's logic is written once, as generators that ``yield`` :class:`Read`/:class:`Write` operations and
``return`` a result (as h11 keeps HTTP logic free of sockets). :func:`run` executes one against a synchronous
:class:`~wirespeed.host.transports.base.Transport`, :func:`arun` against an
:class:`~wirespeed.host.transports.base.AsyncTransport` inside a cocotb testbench.

>>> regs = Registers(core_regmap())
>>> run(regs.read("id.version.major"), transport)
1
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Generator, Sequence

from ..errors import ConfigError
from ...hdl.bus.regmap import BUS_WIDTH_BITS, FieldKind, Memory, RegMap, Register

__all__ = ["Read", "Write", "ReadBlock", "WriteBlock", "Registers", "RegisterFile", "run", "arun"]


@dataclass(frozen=True)
class Read:
    address: int


@dataclass(frozen=True)
class Write:
    address: int
    value: int


@dataclass(frozen=True)
class ReadBlock:
    address: int
    count: int


@dataclass(frozen=True)
class WriteBlock:
    address: int
    values: tuple[int, ...]


Op = Read | Write | ReadBlock | WriteBlock
Ops = Generator[Op, object, object]


def _execute(op: Op, transport):
    if isinstance(op, Read):
        return transport.read32(op.address)
    if isinstance(op, Write):
        return transport.write32(op.address, op.value)
    if isinstance(op, ReadBlock):
        return transport.read_block(op.address, op.count)
    if isinstance(op, WriteBlock):
        return transport.write_block(op.address, op.values)
    raise TypeError(f"not a bus operation: {op!r}")


def run(ops: Ops, transport):
    """Execute a sans-IO operation generator against a synchronous transport; return its result."""
    try:
        op = next(ops)
        while True:
            op = ops.send(_execute(op, transport))
    except StopIteration as stop:
        return stop.value


async def arun(ops: Ops, transport):
    """Execute a sans-IO operation generator against an async transport; return its result."""
    try:
        op = next(ops)
        while True:
            if isinstance(op, Read):
                result = await transport.read32(op.address)
            elif isinstance(op, Write):
                result = await transport.write32(op.address, op.value)
            elif isinstance(op, ReadBlock):
                result = await transport.read_block(op.address, op.count)
            elif isinstance(op, WriteBlock):
                result = await transport.write_block(op.address, op.values)
            else:
                raise TypeError(f"not a bus operation: {op!r}")
            op = ops.send(result)
    except StopIteration as stop:
        return stop.value


class Registers:
    """Compiles register and field names of one :class:`RegMap` into bus operations.

    Names are ``block.register`` (the whole register) or ``block.register.field``. 64-bit registers are read low
    word first (which latches the high word in hardware) and written low word first. A name the map does not hold
    raises :class:`ConfigError` (field ``name``) with the closest names it does hold, before any access.
    """

    def __init__(self, regmap: RegMap):
        self.regmap = regmap

    def _unknown(self, name) -> ConfigError:
        """The error for a name the map does not hold, with the closest names it does hold as the hint."""
        if not isinstance(name, str):
            return ConfigError("name", name, "must be a register or field name (a str such as 'id.scratch')")
        names = [n.name for n in (*self.regmap.registers, *self.regmap.memories)]
        names += [f"{r.name}.{f.name}" for r in self.regmap.registers for f in r.fields]
        close = difflib.get_close_matches(name, names, n=3)
        if close:
            hint = f"did you mean {', '.join(close)}?"
        else:
            blocks = sorted({n.partition(".")[0] for n in names})
            hint = f"names are block.register[.field], blocks {', '.join(blocks)} (`wirespeed regs` exports the map)"
        return ConfigError("name", name, f"no register or field of that name in {self.regmap.name}; {hint}")

    def _resolve(self, name: str) -> tuple[Register, object]:
        if not isinstance(name, str):
            raise self._unknown(name)
        if name in self.regmap:
            node = self.regmap[name]
            if not isinstance(node, Register):
                raise ConfigError("name", name, "is a memory; use read_mem/write_mem")
            return node, None
        head, _, field_name = name.rpartition(".")
        if head in self.regmap and isinstance(self.regmap[head], Register) \
                and any(f.name == field_name for f in self.regmap[head].fields):
            return self.regmap[head], self.regmap[head].field(field_name)
        raise self._unknown(name)

    def read(self, name: str) -> Ops:
        """Read a register (all its words) or one field of it."""
        reg, fld = self._resolve(name)
        words = yield ReadBlock(reg.address, reg.words) if reg.words > 1 else Read(reg.address)
        if reg.words == 1:
            words = [words]
        value = sum(w << (BUS_WIDTH_BITS * i) for i, w in enumerate(words))
        if fld is None:
            return value
        return (value & fld.mask) >> fld.lsb

    def write(self, name: str, value: int) -> Ops:
        """Write a register, or one field with a read-modify-write of the other storage fields.

        Raises :class:`ConfigError` before any access if the value does not fit or the target is not writable.
        """
        reg, fld = self._resolve(name)
        width = fld.width if fld else reg.width
        if not isinstance(value, int) or not 0 <= value < (1 << width):
            raise ConfigError(name, value, f"an integer in [0, 2**{width})")
        if fld is not None:
            if not fld.sw_writable:
                raise ConfigError(name, value, "field is read-only")
            others = [f for f in reg.fields if f is not fld and f.kind in (FieldKind.STORAGE, FieldKind.COUNTER)
                      and f.sw_writable]
            hidden = [f.name for f in others if not f.sw_readable]
            if hidden:
                # A read-modify-write would read the write-only fields as 0 and wipe them.
                raise ConfigError(name, value, f"{reg.name} also holds write-only fields {hidden}; "
                                               f"write the whole register instead of one field")
            if others:
                current = yield from self.read(reg.name)
                value = (current & ~fld.mask) | (value << fld.lsb)
            else:
                value <<= fld.lsb
        elif not reg.sw_writable:
            raise ConfigError(name, value, "register is read-only")
        for i in range(reg.words):
            yield Write(reg.address + 4 * i, (value >> (BUS_WIDTH_BITS * i)) & 0xFFFF_FFFF)

    def _mem(self, name: str, index: int, count: int) -> Memory:
        if not isinstance(name, str) or name not in self.regmap:
            raise self._unknown(name)
        mem = self.regmap[name]
        if not isinstance(mem, Memory):
            raise ConfigError("name", name, "is a register, not a memory; use read/write")
        if not (0 <= index and count >= 0 and index + count <= mem.entries):
            raise ConfigError(f"{name}[{index}:{index + count}]", index, f"entries are 0..{mem.entries - 1}")
        return mem

    def read_mem(self, name: str, index: int = 0, count: int = 1) -> Ops:
        mem = self._mem(name, index, count)
        return (yield ReadBlock(mem.address + 4 * index, count))

    def write_mem(self, name: str, index: int, values: Sequence[int]) -> Ops:
        values = tuple(values)
        mem = self._mem(name, index, len(values))
        for i, v in enumerate(values):
            if not isinstance(v, int) or not 0 <= v <= 0xFFFF_FFFF:
                raise ConfigError(f"{name}[{index + i}]", v, "a 32-bit unsigned integer")
        yield WriteBlock(mem.address + 4 * index, values)


class RegisterFile:
    """:class:`Registers` bound to a synchronous transport: ``regs.read("id.magic")``, ``regs.write(...)``."""

    def __init__(self, regmap: RegMap, transport):
        self.ops = Registers(regmap)
        self.transport = transport

    def read(self, name: str) -> int:
        return run(self.ops.read(name), self.transport)

    def write(self, name: str, value: int) -> None:
        run(self.ops.write(name, value), self.transport)

    def read_mem(self, name: str, index: int = 0, count: int = 1) -> list[int]:
        return run(self.ops.read_mem(name, index, count), self.transport)

    def write_mem(self, name: str, index: int, values: Sequence[int]) -> None:
        run(self.ops.write_mem(name, index, values), self.transport)

    def dump(self) -> dict[str, int]:
        """Every readable register without read side effects, by name."""
        return {reg.name: self.read(reg.name) for reg in self.ops.regmap.registers
                if not reg.read_side_effects and any(f.sw_readable for f in reg.fields)}

"""Register map, read from the SystemRDL sources: the one description every other view is built from.

``.rdl`` (beside each block in ``hdl/``) ─▶ systemrdl-compiler ─▶ :class:`RegMap` ─▶
    the Amaranth register bank (:mod:`wirespeed.hdl.bus.regbank`), the host register access
    (:mod:`wirespeed.host.driver.registers`), the bus model (:mod:`wirespeed.host.models.register_bank`); PeakRDL
    exports (:mod:`wirespeed.host.tools.export`) use the compiled tree directly.

No address appears anywhere but in the ``.rdl`` files. This module is pure Python (no Amaranth): the gateware and the
host driver both import it, and it imports neither.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field as dc_field, replace
from importlib import resources
from pathlib import Path

from systemrdl import RDLCompiler, RDLCompileError
from systemrdl.messages import MessagePrinter
from systemrdl.node import AddrmapNode, FieldNode, MemNode, RegNode, RegfileNode
from systemrdl.rdltypes import AccessType

__all__ = ["FieldKind", "Field", "Register", "Memory", "RegMap", "RegMapError", "core_regmap", "compile_rdl",
           "HDL_DIR", "CORE_RDL", "BUS_WIDTH_BITS", "OKAY", "SLVERR", "DECERR", "RESP_NAMES"]

#: The register bus is 32 bits wide: every register is accessed in 32-bit words.
BUS_WIDTH_BITS = 32

#: AXI response codes, as the register bank answers and the bus model predicts.
OKAY, SLVERR, DECERR = 0b00, 0b10, 0b11
RESP_NAMES = {OKAY: "OKAY", 0b01: "EXOKAY", SLVERR: "SLVERR", DECERR: "DECERR"}

HDL_DIR = Path(str(resources.files("wirespeed.hdl")))
#: The core map: each block's .rdl (in its folder under ``hdl/``), then the top that places them (order matters:
#: definitions first).
CORE_RDL = ("id/id.rdl", "limiter/limiter.rdl", "parser/parser.rdl", "router/router.rdl", "frontend/frontend.rdl",
            "telemetry/telemetry.rdl", "pipeline/pipeline.rdl", "core/core.rdl")
CORE_TOP = "wirespeed_core"


class RegMapError(Exception):
    """The SystemRDL source uses something the register bank generator does not implement."""


class FieldKind(enum.Enum):
    """How a field behaves, derived from its SystemRDL properties."""
    #: ``sw=r, hw=na|r``: a constant, the field's reset value.
    CONST = "const"
    #: ``sw=rw|w, hw=r|na``: a register the host writes and the hardware reads. ``sw=w`` reads back 0.
    STORAGE = "storage"
    #: ``sw=r, hw=w|rw``: a live value the hardware drives; reads sample it.
    HW_VALUE = "hw_value"
    #: ``singlepulse``: writing 1 pulses the hardware output for one cycle; reads return 0.
    PULSE = "pulse"
    #: ``counter``: the hardware increments it by one per cycle its ``incr`` input is high; ``rclr`` clears on read;
    #: ``sw=rw`` lets the host load it.
    COUNTER = "counter"


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int
    kind: FieldKind
    sw_readable: bool
    sw_writable: bool
    reset: int
    rclr: bool = False
    swmod: bool = False
    desc: str = ""

    @property
    def msb(self) -> int:
        return self.lsb + self.width - 1

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb


@dataclass(frozen=True)
class Register:
    """A register of 32 or 64 bits. A 64-bit register is two bus words; reading the low word latches the high word
    so that the two halves always come from the same cycle (read low first, then high)."""
    path: tuple[str, ...]
    address: int
    width: int
    fields: tuple[Field, ...]
    desc: str = ""

    @property
    def name(self) -> str:
        return ".".join(self.path)

    @property
    def words(self) -> int:
        return self.width // BUS_WIDTH_BITS

    @property
    def reset(self) -> int:
        value = 0
        for f in self.fields:
            if f.kind in (FieldKind.CONST, FieldKind.STORAGE, FieldKind.COUNTER):
                value |= f.reset << f.lsb
        return value

    @property
    def sw_writable(self) -> bool:
        return any(f.sw_writable for f in self.fields)

    @property
    def read_side_effects(self) -> bool:
        return any(f.rclr for f in self.fields)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.name} has no field {name!r}; fields: {[f.name for f in self.fields]}")


@dataclass(frozen=True)
class Memory:
    """An external table: ``entries`` words of 32 bits mapped to a RAM's read and write ports."""
    path: tuple[str, ...]
    address: int
    entries: int
    sw_readable: bool
    sw_writable: bool
    desc: str = ""

    width: int = BUS_WIDTH_BITS

    @property
    def name(self) -> str:
        return ".".join(self.path)

    @property
    def size(self) -> int:
        return self.entries * (self.width // 8)


@dataclass(frozen=True)
class RegMap:
    """A flattened address map: every register and memory with its absolute byte address."""
    name: str
    registers: tuple[Register, ...]
    memories: tuple[Memory, ...]
    _by_name: dict = dc_field(default_factory=dict, compare=False, repr=False)
    _by_word: dict = dc_field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        for node in (*self.registers, *self.memories):
            self._by_name[node.name] = node
        # Word address -> (register, word index): bus models decode every access.
        for reg in self.registers:
            for word in range(reg.words):
                self._by_word.setdefault(reg.address + 4 * word, (reg, word))

    @property
    def size(self) -> int:
        """Bytes spanned by the map, rounded up to a power of two (the window a bus decoder needs)."""
        end = max([r.address + r.words * 4 for r in self.registers] + [m.address + m.size for m in self.memories])
        return 1 << max(2, (end - 1).bit_length())

    def __getitem__(self, name: str) -> Register | Memory:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no register or memory named {name!r} in {self.name}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def decode(self, address: int) -> tuple[Register | Memory, int] | None:
        """Which node holds the 32-bit word at byte ``address``, and the word index within it; ``None`` if unmapped."""
        address &= ~3
        hit = self._by_word.get(address)
        if hit is not None:
            return hit
        for mem in self.memories:
            if mem.address <= address < mem.address + mem.size:
                return mem, (address - mem.address) // 4
        return None

    def with_resets(self, resets: dict) -> "RegMap":
        """A copy whose fields named ``register.field`` in ``resets`` reset to the given values: elaboration
        parameters (such as the clock rate) that set a register's power-on value."""
        todo = dict(resets)
        regs = []
        for reg in self.registers:
            fields = []
            for f in reg.fields:
                key = f"{reg.name}.{f.name}"
                if key in todo:
                    value = todo.pop(key)
                    if f.kind is not FieldKind.STORAGE or not 0 <= value < (1 << f.width):
                        raise ValueError(f"reset of {key}: {value!r} does not fit a {f.width}-bit storage field")
                    f = replace(f, reset=value)
                fields.append(f)
            regs.append(replace(reg, fields=tuple(fields)))
        if todo:
            raise KeyError(f"no fields {sorted(todo)} in {self.name}")
        return RegMap(self.name, tuple(regs), self.memories)

    def submap(self, prefix: str) -> "RegMap":
        """The registers and memories under ``prefix`` (addresses stay absolute)."""
        head = tuple(prefix.split("."))
        keep = lambda n: n.path[:len(head)] == head
        return RegMap(f"{self.name}.{prefix}", tuple(filter(keep, self.registers)),
                      tuple(filter(keep, self.memories)))


def _field_from_node(reg: RegNode, node: FieldNode) -> Field:
    sw: AccessType = node.get_property("sw")
    hw: AccessType = node.get_property("hw")
    sw_readable = sw in (AccessType.r, AccessType.rw, AccessType.rw1)
    sw_writable = sw in (AccessType.w, AccessType.rw, AccessType.w1, AccessType.rw1)
    reset = node.get_property("reset")
    where = f"{reg.get_path()}.{node.inst_name}"
    if reset is not None and not isinstance(reset, int):
        raise RegMapError(f"{where}: reset must be a constant, got {reset!r}")
    reset = reset or 0
    unsupported = [p for p in ("we", "wel", "hwset", "hwclr", "woclr", "woset", "swacc", "incrsaturate",
                               "decr", "threshold") if node.get_property(p, default=False)]
    if unsupported:
        raise RegMapError(f"{where}: properties {unsupported} are not implemented by the register bank")
    if node.get_property("counter"):
        if sw_writable and sw != AccessType.rw:
            raise RegMapError(f"{where}: a counter is sw=r or sw=rw")
        kind = FieldKind.COUNTER
    elif node.get_property("singlepulse"):
        if not sw_writable:
            raise RegMapError(f"{where}: a singlepulse field must be sw-writable")
        kind = FieldKind.PULSE
        sw_readable = False
    elif sw_writable:
        if hw in (AccessType.w, AccessType.rw):
            raise RegMapError(f"{where}: sw-writable fields written by hardware need `we`, which is not implemented")
        kind = FieldKind.STORAGE
    elif hw in (AccessType.w, AccessType.rw):
        kind = FieldKind.HW_VALUE
    else:
        kind = FieldKind.CONST
    rclr = bool(node.get_property("rclr"))
    if rclr and kind != FieldKind.COUNTER:
        raise RegMapError(f"{where}: rclr is implemented for counters only")
    return Field(name=node.inst_name, lsb=node.lsb, width=node.width, kind=kind, sw_readable=sw_readable,
                 sw_writable=sw_writable, reset=reset, rclr=rclr, swmod=bool(node.get_property("swmod")),
                 desc=(node.get_property("desc") or "").strip())


def _path(node, root) -> tuple[str, ...]:
    return tuple(node.get_path(hier_separator=".").split(".")[1:])


def regmap_from_node(root: AddrmapNode) -> RegMap:
    """Flatten a compiled SystemRDL address map."""
    registers, memories = [], []

    def walk(node):
        for child in node.children(unroll=True):
            if isinstance(child, RegNode):
                width = child.get_property("regwidth")
                if width not in (32, 64) or child.get_property("accesswidth") != BUS_WIDTH_BITS:
                    raise RegMapError(f"{child.get_path()}: registers are 32 or 64 bits with accesswidth 32")
                if child.is_virtual:
                    continue
                fields = tuple(_field_from_node(child, f) for f in child.fields())
                registers.append(Register(_path(child, root), child.absolute_address, width, fields,
                                          (child.get_property("desc") or "").strip()))
            elif isinstance(child, MemNode):
                if child.get_property("memwidth") != BUS_WIDTH_BITS:
                    raise RegMapError(f"{child.get_path()}: memories are {BUS_WIDTH_BITS} bits wide "
                                      f"(pack narrower entries), got memwidth={child.get_property('memwidth')}")
                sw: AccessType = child.get_property("sw")
                memories.append(Memory(_path(child, root), child.absolute_address,
                                       child.get_property("mementries"),
                                       sw in (AccessType.r, AccessType.rw), sw in (AccessType.w, AccessType.rw),
                                       (child.get_property("desc") or "").strip()))
            elif isinstance(child, (AddrmapNode, RegfileNode)):
                walk(child)

    walk(root)
    registers.sort(key=lambda r: r.address)
    memories.sort(key=lambda m: m.address)
    return RegMap(root.inst_name, tuple(registers), tuple(memories))


def compile_rdl(files, top: str) -> AddrmapNode:
    """Compile ``files`` in order and elaborate ``top``. Raises :class:`RegMapError` with the compiler's messages."""
    printer = _CollectingPrinter()
    rdlc = RDLCompiler(message_printer=printer)
    try:
        for f in files:
            rdlc.compile_file(str(f))
        return rdlc.elaborate(top_def_name=top).top
    except RDLCompileError as exc:
        details = "\n".join(printer.lines) or str(exc)
        raise RegMapError(f"SystemRDL compile of {[str(f) for f in files]} failed:\n{details}") from None


class _CollectingPrinter(MessagePrinter):
    """Keeps the compiler's messages (file, line, caret) for the exception instead of printing them."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit_message(self, lines):
        self.lines.extend(lines)


def core_rdl_files() -> tuple[Path, ...]:
    return tuple(HDL_DIR / name for name in CORE_RDL)


@functools.cache
def core_node() -> AddrmapNode:
    """The compiled core map (for PeakRDL exporters)."""
    return compile_rdl(core_rdl_files(), CORE_TOP)


@functools.cache
def core_regmap() -> RegMap:
    """The wirespeed core's register map."""
    return regmap_from_node(core_node())

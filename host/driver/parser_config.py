"""Driver side of the header parser: a :class:`~wirespeed.host.models.parser.ParserConfig` compiled into register
writes (sans-IO).

``ParserConfig`` ─▶ :func:`configure_ops` ─▶ Write operations on ``parser.rdl`` ─▶ any transport

Table entries go through the staging registers and one commit write each, so the hardware never matches against
half an entry.
"""

from __future__ import annotations

from ...hdl.parser.layouts import EXTRA_SLOTS, NAME_BYTES, PREFIX_BYTES, PREFIX_ENTRIES
from ..models.parser import ParserConfig
from .registers import Registers

__all__ = ["configure_ops", "pack_bytes"]


def pack_bytes(text: bytes, size: int) -> list[int]:
    """``text`` as little-endian 32-bit words, byte i in bits [8*(i%4)+7 : 8*(i%4)] of word i//4."""
    padded = text.ljust(size, b"\0")
    return [int.from_bytes(padded[i:i + 4], "little") for i in range(0, size, 4)]


def configure_ops(regs: Registers, config: ParserConfig, block: str = ""):
    """Write every parser register from ``config`` (already validated by :class:`ParserConfig`).

    ``block`` is the map prefix of the parser: ``""`` for a standalone parser map, ``"parser."`` inside the core.
    """
    p = block
    yield from regs.write(f"{p}limits.max_header_bytes", config.max_header_bytes)
    yield from regs.write(f"{p}route_default.default_class", config.default_class)
    yield from regs.write(f"{p}fp_poly", config.poly)
    yield from regs.write(f"{p}fp_seed", config.seed)
    commit = regs.regmap[f"{p}prefix_commit"]
    for index in range(PREFIX_ENTRIES):
        entry = config.prefixes[index]
        prefix, route_class = entry if entry is not None else (b"", 0)
        for i, word in enumerate(pack_bytes(prefix, PREFIX_BYTES)):
            yield from regs.write(f"{p}prefix_data[{i}]", word)
        ctrl = regs.regmap[f"{p}prefix_ctrl"]
        yield from regs.write(f"{p}prefix_ctrl", (len(prefix) << ctrl.field("len").lsb)
                              | (route_class << ctrl.field("route_class").lsb)
                              | (int(entry is not None) << ctrl.field("valid").lsb))
        yield from regs.write(f"{p}prefix_commit", (index << commit.field("index").lsb)
                              | (1 << commit.field("go").lsb))
    commit = regs.regmap[f"{p}extra_commit"]
    for slot in range(EXTRA_SLOTS):
        name = config.extras[slot] or b""
        for i, word in enumerate(pack_bytes(name, NAME_BYTES)):
            yield from regs.write(f"{p}extra_data[{i}]", word)
        yield from regs.write(f"{p}extra_ctrl.len", len(name))
        yield from regs.write(f"{p}extra_commit", (slot << commit.field("index").lsb)
                              | (1 << commit.field("go").lsb))

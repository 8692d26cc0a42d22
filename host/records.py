"""Host mirrors of gateware records: a frozen dataclass that matches an Amaranth ``data.Struct`` field for field, and
packs to and from its bits exactly as the gateware does.

``hdl/*_layouts.py`` (the Struct) ─▶ :class:`LayoutRecord` subclass in the block's model ─▶ ``to_bits()`` /
``from_bits()`` for scoreboards and simulators

Offsets are read from the Struct, never written here, so the two cannot drift: a mismatch of field names raises
``RuntimeError`` on first use (the model tests pack every record).
"""

from __future__ import annotations

import dataclasses
import enum

from amaranth.lib import data
from amaranth.lib import enum as amaranth_enum

__all__ = ["LayoutRecord"]


class LayoutRecord:
    """Mixin for a frozen dataclass mirroring the Struct named by ``layout=`` in its class statement.

    Field values: Amaranth enums as their Python enum members, ``ArrayLayout`` fields as tuples of ints, 1-bit fields
    as ``bool``, everything else as ``int``. ``decoders`` maps a field name to a callable turning its raw integer into
    the model's type (e.g. an ``IntFlag``).
    """

    def __init_subclass__(cls, layout=None, decoders=None, **kwargs):
        super().__init_subclass__(**kwargs)
        # dataclass(slots=True) re-creates the class from its namespace without these arguments: keep what it has.
        if layout is not None:
            cls._layout = layout
            cls._decoders = dict(decoders or {})

    @classmethod
    def _packing(cls):
        packing = cls.__dict__.get("_packing_cache")
        if packing is None:
            struct = cls._layout.as_shape()
            model_fields = [f.name for f in dataclasses.fields(cls)]
            layout_fields = [name for name, _ in struct]
            if model_fields != layout_fields:
                raise RuntimeError(f"{cls.__name__} fields {model_fields} != gateware layout {layout_fields}")
            packing = []
            for name, fld in struct:
                if isinstance(fld.shape, data.ArrayLayout):
                    decode = ("array", fld.shape.length, fld.width // fld.shape.length)
                elif isinstance(fld.shape, type) and issubclass(fld.shape, (amaranth_enum.Enum, enum.Enum)):
                    decode = ("enum", fld.shape)
                elif name in cls._decoders:
                    decode = ("call", cls._decoders[name])
                else:
                    decode = ("bool",) if fld.width == 1 else ("int",)
                packing.append((name, fld.offset, fld.width, decode))
            packing = tuple(packing)
            cls._packing_cache = packing
        return packing

    def to_bits(self) -> int:
        """The record as the gateware's layout packs it (the first field at bit 0)."""
        bits = 0
        for name, offset, width, decode in self._packing():
            value = getattr(self, name)
            if decode[0] == "array":
                _, length, elem_width = decode
                if len(value) != length:
                    raise ValueError(f"{type(self).__name__}.{name} needs {length} elements, got {len(value)}")
                for i, elem in enumerate(value):
                    if not 0 <= elem < (1 << elem_width):
                        raise ValueError(f"{type(self).__name__}.{name}[{i}]={elem!r} does not fit in {elem_width} "
                                         f"bits")
                    bits |= elem << (offset + i * elem_width)
                continue
            value = value.value if decode[0] == "enum" else int(value)
            if not 0 <= value < (1 << width):
                raise ValueError(f"{type(self).__name__}.{name}={value!r} does not fit in {width} bits")
            bits |= value << offset
        return bits

    @classmethod
    def from_bits(cls, bits: int):
        """Unpack the gateware's bits."""
        values = {}
        for name, offset, width, decode in cls._packing():
            raw = (bits >> offset) & ((1 << width) - 1)
            kind = decode[0]
            if kind == "array":
                _, length, elem_width = decode
                values[name] = tuple((raw >> (i * elem_width)) & ((1 << elem_width) - 1) for i in range(length))
            elif kind in ("enum", "call"):
                values[name] = decode[1](raw)
            elif kind == "bool":
                values[name] = bool(raw)
            else:
                values[name] = raw
        return cls(**values)

"""Stream payloads to and from bits, through the Amaranth layouts that define them.

test value (mapping, :class:`~wirespeed.host.records.LayoutRecord`, bytes) ─▶ :class:`LayoutCodec` ─▶ payload bits
─▶ the DUT ─▶ payload bits ─▶ :class:`LayoutCodec` ─▶ a ``LayoutRecord`` or :class:`Fields`

Every offset and width is read from the layout once (as ``LayoutRecord`` does for a single record), so no test
shifts bits by hand and a layout change needs no test change. ``amaranth.lib.data.Const`` does the same job but
takes ~100 µs per beat; this codec takes a few.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import SimpleNamespace

from amaranth.hdl import Shape
from amaranth.lib import data

from wirespeed.host.records import LayoutRecord

__all__ = ["LayoutCodec", "Fields", "as_layout", "unpack"]


def as_layout(shape) -> data.Layout | None:
    """The :class:`~amaranth.lib.data.Layout` behind ``shape`` (a layout, a ``data.Struct`` class, a
    ``LayoutRecord`` class, or anything whose ``as_shape()`` leads to one); ``None`` for a plain or enum shape."""
    if isinstance(shape, type) and issubclass(shape, LayoutRecord):
        shape = shape._layout          # the layout the record mirrors (records.py keeps it there)
    for _ in range(8):
        if isinstance(shape, data.Layout):
            return shape
        if isinstance(shape, type) and issubclass(shape, enum.Enum):
            return None
        as_shape = getattr(shape, "as_shape", None)
        if as_shape is None:
            return None
        shape = as_shape()
    raise TypeError(f"{shape!r} does not lead to a layout")


class Fields(SimpleNamespace):
    """A decoded struct: its fields as attributes (``beat.req.key_fp``) and by name (``beat["req"]``)."""

    def __getitem__(self, name):
        return getattr(self, name)


def _check(value: int, width: int, path: str) -> int:
    if not 0 <= value < (1 << width):
        raise ValueError(f"{path}={value!r} does not fit in {width} bits")
    return value


class LayoutCodec:
    """Packs values into the bits of ``layout`` and unpacks bits into records or :class:`Fields`.

    Parameters
    ----------
    layout :
        The payload's layout: a ``data.StructLayout``/``ArrayLayout``, a ``data.Struct`` class, or a
        ``LayoutRecord`` class (its layout). ``None`` with a ``record`` class takes the record's layout.
    record :
        How to decode: a ``LayoutRecord`` class for the whole payload, or a mapping from field name to a
        ``LayoutRecord`` class for struct fields that have one (``{"verdict": LimitVerdict}``). Other fields decode
        to :class:`Fields` (structs), ``bytes`` (arrays of 8-bit elements), tuples (other arrays), enum members
        (enum shapes) or ``int``.

    What :meth:`pack` takes, at any level: an ``int`` (the field's raw bits), a ``LayoutRecord``, an
    ``amaranth.lib.data.Const``, an enum member; for a struct a mapping (missing fields are 0, unknown names
    raise) or an object with every field as an attribute; for an array a sequence (``bytes`` for 8-bit
    elements) no longer than the array, zero-filled.
    """

    def __init__(self, layout=None, record=None):
        if layout is None:
            if not (isinstance(record, type) and issubclass(record, LayoutRecord)):
                raise TypeError("LayoutCodec needs a layout, or a LayoutRecord class as record")
            layout = record
        self.layout = as_layout(layout)
        if self.layout is None:
            raise TypeError(f"{layout!r} is not a data layout")
        self.size = self.layout.size
        self.record = record
        self._pack = self._packer(self.layout, "payload")
        if isinstance(record, type) and issubclass(record, LayoutRecord):
            self._unpack = record.from_bits
        else:
            self._unpack = self._unpacker(self.layout, dict(record or {}))

    def pack(self, value) -> int:
        """``value`` as the layout's bits."""
        return self._pack(value)

    def unpack(self, bits: int):
        """The layout's ``bits`` as a record or :class:`Fields`."""
        return self._unpack(bits)

    def offset(self, path: str) -> tuple[int, int]:
        """``(offset, width)`` of the field at ``path`` (dotted, e.g. ``"beat.last"``)."""
        offset, shape = 0, self.layout
        for name in path.split("."):
            field = as_layout(shape)[name]
            offset += field.offset
            shape = field.shape
        return offset, Shape.cast(shape).width

    # -- compiled per layout: a closure per field, built once --------------------------------------------------

    @classmethod
    def _packer(cls, shape, path):
        layout = as_layout(shape)
        if layout is None:
            width = Shape.cast(shape).width

            def pack_scalar(value):
                if isinstance(value, enum.Enum):
                    value = value.value
                return _check(int(value), width, path)
            return pack_scalar

        width = layout.size

        def pack_bits(value):
            if isinstance(value, LayoutRecord):
                return _check(value.to_bits(), width, path)
            if isinstance(value, data.Const):
                return value.as_bits()
            return None

        if isinstance(layout, data.ArrayLayout):
            length, elem_width = layout.length, Shape.cast(layout.elem_shape).width
            elem = cls._packer(layout.elem_shape, f"{path}[]")
            plain_bytes = elem_width == 8 and as_layout(layout.elem_shape) is None

            def pack_array(value):
                if isinstance(value, int):
                    return _check(value, width, path)
                bits = pack_bits(value)
                if bits is not None:
                    return bits
                if len(value) > length:
                    raise ValueError(f"{path} holds {length} elements, got {len(value)}")
                if plain_bytes and isinstance(value, (bytes, bytearray)):
                    return int.from_bytes(value, "little")
                bits = 0
                for i, v in enumerate(value):
                    bits |= elem(v) << (i * elem_width)
                return bits
            return pack_array

        fields = [(name, f.offset, cls._packer(f.shape, f"{path}.{name}")) for name, f in layout]
        names = {name for name, _, _ in fields}

        def pack_struct(value):
            if isinstance(value, int):
                return _check(value, width, path)
            bits = pack_bits(value)
            if bits is not None:
                return bits
            bits = 0
            if isinstance(value, Mapping):
                unknown = set(value) - names
                if unknown:
                    raise KeyError(f"{path} has no field {sorted(unknown)} (fields: {sorted(names)})")
                for name, offset, pack in fields:
                    v = value.get(name)
                    if v is not None:
                        bits |= pack(v) << offset
                return bits
            for name, offset, pack in fields:
                bits |= pack(getattr(value, name)) << offset
            return bits
        return pack_struct

    @classmethod
    def _unpacker(cls, shape, records):
        layout = as_layout(shape)
        if layout is None:
            if isinstance(shape, type) and issubclass(shape, enum.Enum):
                return shape
            s = Shape.cast(shape)
            if s.signed:
                sign = 1 << (s.width - 1)
                return lambda raw: (raw ^ sign) - sign
            return int

        if isinstance(layout, data.ArrayLayout):
            length, elem_width = layout.length, Shape.cast(layout.elem_shape).width
            if elem_width == 8 and as_layout(layout.elem_shape) is None:
                return lambda raw: raw.to_bytes(length, "little")
            elem, mask = cls._unpacker(layout.elem_shape, {}), (1 << elem_width) - 1
            return lambda raw: tuple(elem((raw >> (i * elem_width)) & mask) for i in range(length))

        fields = []
        for name, f in layout:
            record = records.get(name)
            decode = record.from_bits if record is not None else cls._unpacker(f.shape, {})
            fields.append((name, f.offset, (1 << f.width) - 1, decode))
        unknown = set(records) - {name for name, *_ in fields}
        if unknown:
            raise KeyError(f"no field {sorted(unknown)} to decode as a record")

        def unpack_struct(raw):
            return Fields(**{name: decode((raw >> offset) & mask) for name, offset, mask, decode in fields})
        return unpack_struct


_CODECS: dict = {}


def unpack(layout, bits: int, record=None):
    """Decode ``bits`` through ``layout`` (a probe, a trace); see :class:`LayoutCodec`. The codec is built once
    per layout."""
    key = (id(layout), id(record))
    entry = _CODECS.get(key)
    if entry is None:
        entry = _CODECS[key] = (layout, record, LayoutCodec(layout, record))   # keeps the ids alive
    return entry[2].unpack(bits)

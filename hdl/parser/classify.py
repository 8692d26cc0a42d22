"""Per-lane byte classification for the header parser: the character classes of ``docs/parser.md``, with no state.

byte ─▶ :func:`classify` ─▶ :data:`ByteClass` (tchar, vchar, field-vchar, WS, digit, CR, LF, SP, ':', '?', lower-case)

Every later stage of the parser works on these bits instead of the byte, so each class is decided once per lane. Each
bit is a function of the 8 byte bits only: two LUT4 levels on ECP5, computed in parallel for all W lanes.
"""

from __future__ import annotations

from amaranth import Cat, Const, Mux
from amaranth.lib import data

__all__ = ["ByteClass", "classify", "TCHARS", "class_of"]

#: RFC 9110 ``tchar``.
TCHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

CR, LF, SP, HTAB, COLON, QMARK = 0x0D, 0x0A, 0x20, 0x09, 0x3A, 0x3F

#: The classes of one byte. ``fvchar`` is a field-value character: ``vchar`` or ``obs-text``.
ByteClass = data.StructLayout({
    "tchar": 1, "vchar": 1, "fvchar": 1, "ws": 1, "digit": 1,
    "cr": 1, "lf": 1, "sp": 1, "colon": 1, "qmark": 1,
    "lower": 8,
})


def class_of(b: int) -> dict:
    """The reference: :data:`ByteClass` of one byte, as a dict of ints (what :func:`classify` computes)."""
    vchar = 0x21 <= b <= 0x7E
    return {"tchar": int(b in TCHARS), "vchar": int(vchar), "fvchar": int(vchar or b >= 0x80),
            "ws": int(b in (SP, HTAB)), "digit": int(0x30 <= b <= 0x39), "cr": int(b == CR), "lf": int(b == LF),
            "sp": int(b == SP), "colon": int(b == COLON), "qmark": int(b == QMARK),
            "lower": b | 0x20 if 0x41 <= b <= 0x5A else b}


def classify(b) -> data.Const | object:
    """The :data:`ByteClass` value of byte ``b`` (an 8-bit Amaranth value), as a ``Cat`` in the layout's field order.

    The tchar test is a 256-entry table (one LUT per output after mapping), not a chain of compares.
    """
    table = Const(sum(1 << c for c in TCHARS), 256)
    tchar = table.bit_select(b, 1)
    vchar = (b >= 0x21) & (b <= 0x7E)
    upper = (b >= 0x41) & (b <= 0x5A)
    fields = {
        "tchar": tchar, "vchar": vchar, "fvchar": vchar | b[7], "ws": (b == SP) | (b == HTAB),
        "digit": (b >= 0x30) & (b <= 0x39), "cr": b == CR, "lf": b == LF, "sp": b == SP, "colon": b == COLON,
        "qmark": b == QMARK, "lower": Mux(upper, b | 0x20, b),
    }
    return Cat(*(fields[name] for name in ByteClass.members))

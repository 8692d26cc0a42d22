"""Per-lane byte classification for the header parser: the character classes of ``docs/parser.md``, with no state.

byte ─▶ :func:`classify` ─▶ :data:`ByteClass` (tchar, vchar, field-vchar, WS, digit, CR, LF, SP, ':', '?', lower-case)
beat ─▶ :class:`SpellWindow` ─▶ :func:`LaneFeatures` (the classes, and which version or method the bytes before a lane spell)

Every later stage of the parser works on these bits instead of the byte, so each class is decided once per lane. Each
bit is a function of the 8 byte bits only: two LUT4 levels on ECP5, computed in parallel for all W lanes. The lane
features need the bytes before a lane too; they are computed beside the tokenizer's prefix tree, so they cost no
latency.
"""

from __future__ import annotations

from amaranth import Cat, Const, Mux, Signal
from amaranth.lib import data

from .layouts import METHODS, Method

__all__ = ["ByteClass", "classify", "TCHARS", "class_of", "LaneFeatures", "SpellWindow", "VERSIONS", "SPELL_CHARS"]

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


#: The two versions the request line may name, in ``Version`` order after NONE.
VERSIONS = (b"HTTP/1.0", b"HTTP/1.1")
#: The characters the versions and the method tokens use: one hit bit each per lane.
SPELL_CHARS = sorted(set(b"".join(VERSIONS) + b"".join(METHODS)))
_WINDOW = max(8, max(map(len, METHODS)))


def LaneFeatures(width: int) -> data.StructLayout:
    """What a lane's byte and the bytes before it are, whatever the state: its classes; whether the 8 bytes before it
    spell ``HTTP/1.0`` / ``HTTP/1.1`` (``v10``/``v11``); and ``method``, the :class:`Method` whose token is exactly the
    packet's bytes before the lane (NONE when they are not one)."""
    return data.StructLayout({
        "cls": data.ArrayLayout(ByteClass, width),
        "v10": width,
        "v11": width,
        "method": data.ArrayLayout(Method, width),
    })


class SpellWindow:
    """Computes :func:`LaneFeatures` in two registered steps that run beside the tokenizer's prefix tree.

    Step one (:meth:`first_step`) turns each byte into its classes and one bit per character of :data:`VERSIONS` and
    the method tokens. Step two (:meth:`second_step`) ANDs those bits along each word, over the lanes of this beat and a
    window of the previous beats' (kept here, cleared at each packet's start), so no byte is compared twice.
    """

    def __init__(self, width: int):
        self.width = width

    def first_step(self, beat):
        """Per lane: ``(classes, character hits)``, combinational from the beat."""
        return [(classify(beat.data[k]), Cat(*(beat.data[k] == c for c in SPELL_CHARS))) for k in range(self.width)]

    def second_step(self, m, advance, first, beat_no, hits, cls):
        """:func:`LaneFeatures` from step one's registered ``hits`` and ``cls`` (lists per lane), the beat's index in
        its packet (``beat_no``, saturating) and ``first``; ``advance`` moves the window on."""
        W = self.width
        hist = [Signal(len(SPELL_CHARS), name=f"spell_hist{j}") for j in range(_WINDOW)]
        window = [Mux(first, 0, h) for h in hist] + list(hits)
        with m.If(advance):
            m.d.sync += [h.eq(v) for h, v in zip(hist, window[W:])]

        def spelled(j, word):
            return Cat(*(window[j - len(word) + i][SPELL_CHARS.index(c)] for i, c in enumerate(word))).all()

        feat = Signal(LaneFeatures(W))
        for k in range(W):
            j = _WINDOW + k
            m.d.comb += [feat.cls[k].eq(cls[k]), feat.v10[k].eq(spelled(j, VERSIONS[0])),
                         feat.v11[k].eq(spelled(j, VERSIONS[1]))]
            method = Const(0, 4)
            for token, code in METHODS.items():
                n = len(token)
                at_n = (beat_no == n // W) & (k == n % W) if n // W < 3 else Const(0)
                method = method | Mux(at_n & spelled(j, token), code.value, 0)
            m.d.comb += feat.method[k].eq(method)
        return feat

"""Packet byte streams: the payload every wirespeed pipeline passes along, W bytes per beat.

``amaranth.lib.stream`` carries :func:`ByteBeat` payloads. Only the last beat of a packet may be partial; its valid
bytes are lanes ``0 .. n_valid-1`` (lane 0 is the first byte on the wire).
"""

from __future__ import annotations

from amaranth.lib import data

__all__ = ["ByteBeat", "check_width", "pack_beats", "WIDTHS"]

#: Supported stream widths W in bytes.
WIDTHS = (4, 8, 16)


def check_width(width: int) -> int:
    if width not in WIDTHS:
        raise ValueError(f"stream width W must be one of {WIDTHS} bytes, got {width!r}")
    return width


def ByteBeat(width: int) -> data.StructLayout:
    """One beat: ``data`` (W bytes, lane 0 first), ``n_valid`` (1..W; only the ``last`` beat may be below W) and
    ``last`` (the packet's final beat)."""
    check_width(width)
    return data.StructLayout({
        "data": data.ArrayLayout(8, width),
        "n_valid": range(width + 1),
        "last": 1,
    })


def pack_beats(packet: bytes, width: int) -> list[int]:
    """``packet`` as :func:`ByteBeat` payload values (integers, for testbenches and simulators). An empty packet is
    one beat with ``n_valid = 0``."""
    check_width(width)
    chunks = [packet[i:i + width] for i in range(0, len(packet), width)] or [b""]
    n_valid_at, last_at = 8 * width, 8 * width + width.bit_length()
    return [int.from_bytes(c.ljust(width, b"\0"), "little") | (len(c) << n_valid_at)
            | (int(i == len(chunks) - 1) << last_at) for i, c in enumerate(chunks)]

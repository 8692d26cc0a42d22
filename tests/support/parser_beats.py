"""Parser stream helpers shared by the tests that run the parser on the compiled harness: byte beats as harness
words, and the fixed configuration the volume tests alternate with random ones."""

from __future__ import annotations

import numpy as np
from wirespeed.hdl.bus.packet import ByteBeat
from wirespeed.host.keys import derive_key
from wirespeed.host.models.parser import ParserConfig
from wirespeed.sim.harness import pack_bytes_beats

__all__ = ["FIXED_CONFIG", "beat_bits", "byte_beats", "beat_fields"]

_KEY = derive_key(b"wirespeed")
FIXED_CONFIG = ParserConfig(poly=_KEY[0], seed=_KEY[1],
                            prefixes=[(b"/v1/chat/completions", 1), (b"/v1/messages", 2), (b"/v1/", 3)],
                            extras=[b"x-session-id", b"x-model", b"anthropic-version", None])


# -- beats ------------------------------------------------------------------------------------------------------------

def beat_bits(width: int) -> tuple[int, int]:
    """Bit offsets of ``n_valid`` and ``last`` in a :func:`ByteBeat` payload, from the layout."""
    fields = {name: f.offset for name, f in ByteBeat(width)}
    assert fields["data"] == 0
    return fields["n_valid"], fields["last"]


def byte_beats(packets, width: int, words: int) -> np.ndarray:
    """``packets`` as ``i_stream`` beats: ``uint32`` rows of ``words`` words, laid out as :func:`ByteBeat`."""
    data, (n_valid, last, _) = pack_bytes_beats(packets, width)
    beats = np.zeros((len(data), words), np.uint32)
    beats[:, :width // 4] = data
    for bit, values in zip(beat_bits(width), (n_valid, last)):
        beats[:, bit // 32] |= values.astype(np.uint32) << np.uint32(bit % 32)
    return beats


def beat_fields(beats: np.ndarray, width: int):
    """``(data bytes (n, width), n_valid, last)`` of ``o_stream`` beats, through the layout's offsets."""
    n_valid_at, last_at = beat_bits(width)
    n_valid = (beats[:, n_valid_at // 32] >> np.uint32(n_valid_at % 32)) & np.uint32((1 << width.bit_length()) - 1)
    last = (beats[:, last_at // 32] >> np.uint32(last_at % 32)) & np.uint32(1)
    data = np.ascontiguousarray(beats[:, :width // 4]).view(np.uint8)
    return data, n_valid, last

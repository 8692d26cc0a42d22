"""AXI4-Stream at the core's boundary: ``tdata``/``tkeep``/``tlast``/``tuser`` with ``tvalid``/``tready``.

Inside, packets travel as ``amaranth.lib.stream`` beats of :func:`~.packet.ByteBeat`;
:mod:`~wirespeed.hdl.pipeline.offload_pipeline` converts at the
edge, and flags a non-contiguous ``tkeep`` instead of guessing what it meant.
"""

from __future__ import annotations

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AXIStreamSignature"]


class AXIStreamSignature(wiring.Signature):
    """An AXI4-Stream manager's ports (``Out`` = driven by the manager). Byte 0 is ``tdata[7:0]``.

    Parameters
    ----------
    data_bytes : int
        Width of ``tdata`` in bytes; ``tkeep`` has one bit per byte (omitted when ``keep`` is false).
    user_bits : int
        Width of ``tuser`` (omitted when 0).
    """

    def __init__(self, data_bytes: int, user_bits: int = 0, keep: bool = True):
        members = {"tdata": Out(8 * data_bytes), "tlast": Out(1), "tvalid": Out(1), "tready": In(1)}
        if keep:
            members["tkeep"] = Out(data_bytes)
        if user_bits:
            members["tuser"] = Out(user_bits)
        self.data_bytes, self.user_bits = data_bytes, user_bits
        super().__init__(members)

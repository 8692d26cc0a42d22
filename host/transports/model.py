"""The ``"model"`` transport: register accesses (and ``classify*`` batches) answered by the bit-exact core model.

``wirespeed.open("model")`` ─▶ :class:`ModelTransport` ─▶ :class:`~wirespeed.host.models.device.CoreModel`
"""

from __future__ import annotations

from ...hdl.bus.regmap import OKAY, RESP_NAMES
from ...hdl.id.id_block import CoreParams
from ..errors import BusError, TransportError
from ..models.device import CoreModel
from .base import Transport, check_access, check_submit

__all__ = ["ModelTransport"]


class ModelTransport(Transport):
    """Register access to a :class:`CoreModel`; error responses raise :class:`BusError` as on ``"sim"``.

    ``submit``: ``"stream"`` (default, as ``"sim"`` does) sends ``classify*`` batches through ``s_axis``;
    ``"mmio"`` makes the driver use the MMIO submit window, as on a board without DMA (``"uart:"``, ``"uio:"`` ...).
    """

    scheme = "model"

    def __init__(self, params: CoreParams = CoreParams(), model: CoreModel | None = None, submit: str = "stream"):
        self.model = model or CoreModel(params)
        self._closed = False
        if check_submit(submit) == "mmio":
            self.classify_stream = None

    def read32(self, address: int) -> int:
        self._check(address)
        data, resp = self.model.read(address)
        if resp != OKAY:
            raise BusError("read", address, RESP_NAMES[resp])
        return data

    def write32(self, address: int, value: int) -> None:
        self._check(address, value)
        resp = self.model.write(address, value)
        if resp != OKAY:
            raise BusError("write", address, RESP_NAMES[resp])

    def classify_stream(self, packets, inline: bool = False):
        """Verdict records for ``packets`` through ``s_axis`` back to back, as :meth:`SimTransport.classify_stream`
        does on the RTL (same cycles, same records)."""
        if self._closed:
            raise TransportError("model transport is closed")
        return [o.record for o in self.model.classify_stream(packets, inline)]

    def _check(self, address, value=None):
        if self._closed:
            raise TransportError("model transport is closed")
        check_access(address, None, value)

    def close(self) -> None:
        self._closed = True

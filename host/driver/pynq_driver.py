"""PYNQ driver for the wirespeed core: ``overlay.wirespeed_core_0`` is a :class:`WirespeedDriver`.

``pynq.Overlay`` ─▶ ``ip_dict`` entry with our VLNV ─▶ :class:`WirespeedDriver` (``pynq.DefaultIP``, ``bindto``)
─▶ :class:`~wirespeed.host.transports.pynq.PynqTransport` on the IP's register window ─▶ :class:`~.offload.Offload`

Import this module before loading the overlay; pynq binds drivers by VLNV when it builds the overlay's attributes::

    import pynq
    import wirespeed.host.driver.pynq_driver
    ol = pynq.Overlay("wirespeed.bit")          # the Vivado plan of wirespeed.host.tools.xilinx
    dev = ol.wirespeed_core_0.offload           # an Offload, as wirespeed.open() returns
    dev.classify(b"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")
    ol.wirespeed_core_0.classify_dma(requests, ol.axi_dma_0)      # lookaside through the AXI DMA

The module imports without pynq; :class:`WirespeedDriver` then refuses to be built, with the install hint.
"""

from __future__ import annotations

import importlib

from ..errors import DeviceNotFound, TransportError
from .offload import Offload
from .submit import bytes_to_send
from ..transports.pynq import PynqTransport
from .verdict import Verdict
from ..models.pipeline import VerdictRecord
from ..xilinx_ip import VERDICT_TDATA_BITS, vlnv

__all__ = ["WirespeedDriver", "VLNV", "HAVE_PYNQ"]

#: The VLNV the IP is packaged under (``wirespeed.host.xilinx_ip.vlnv``: the register map's major.minor).
VLNV = vlnv()

try:
    _pynq = importlib.import_module("pynq")
    _DefaultIP = _pynq.DefaultIP
    HAVE_PYNQ = True
except ImportError:
    _pynq = None
    HAVE_PYNQ = False

    class _DefaultIP:          # stands in so the class below can be defined; it cannot be instantiated
        def __init__(self, description):
            raise DeviceNotFound("the PYNQ driver needs the pynq package; install it with: "
                                 "pip install 'wirespeed[pynq]'")

#: Bytes of one verdict record as the AXI DMA writes it (the wrapper pads the record to a DMA stream width).
VERDICT_BYTES = VERDICT_TDATA_BITS // 8


def _record_from_bytes(raw: bytes) -> VerdictRecord:
    bits = int.from_bytes(bytes(raw), "little")
    from ...hdl.pipeline.layouts import VerdictRecord as Layout
    return VerdictRecord.from_bits(bits & ((1 << Layout.as_shape().size) - 1))


class WirespeedDriver(_DefaultIP):
    """The wirespeed core in a PYNQ overlay.

    Parameters
    ----------
    description : dict
        The IP's ``ip_dict`` entry (``phys_addr``, ``addr_range``, optionally ``device``), as pynq passes it.

    Attributes
    ----------
    offload : Offload
        The driver's handle: tenants, pools, routes, classify, stats (built on first use; checks the ID block).
    transport : PynqTransport
        Register access on the IP's window.
    """

    bindto = [VLNV]

    def __init__(self, description):
        super().__init__(description)
        self.transport = PynqTransport.from_mmio(int(description["phys_addr"]), int(description["addr_range"]),
                                                 self.device)
        self.transport.ip_name = description.get("fullpath")
        self._offload = None

    @property
    def offload(self) -> Offload:
        if self._offload is None:
            where = self.transport.ip_name or f"{self.transport.base_addr:#x}"
            self._offload = Offload(self.transport, uri=f"pynq:{where}")
        return self._offload

    # The common calls, so that ``ol.wirespeed_core_0.classify(...)`` reads naturally.
    def info(self):
        """The decoded ID block (:meth:`Offload.info`)."""
        return self.offload.info()

    def classify(self, request: bytes) -> Verdict:
        """One lookaside verdict through the MMIO submit window (:meth:`Offload.classify`)."""
        return self.offload.classify(request)

    def classify_many(self, requests) -> list[Verdict]:
        return self.offload.classify_many(requests)

    def stats(self, clear: bool = False) -> dict:
        return self.offload.stats(clear)

    def classify_dma(self, requests, dma, allocate=None) -> list[Verdict]:
        """Lookaside verdicts through the overlay's AXI DMA: MM2S sends each request's header block to ``s_axis``,
        S2MM receives its verdict record from ``m_axis_verdict`` (the block design of ``wirespeed.host.tools.xilinx``).

        Parameters
        ----------
        requests : iterable of bytes
            HTTP/1.1 requests; only the header block is sent (as for :meth:`classify`).
        dma : pynq.lib.dma.DMA
            The overlay's ``axi_dma_0`` (simple mode: one transfer per request and per record).
        allocate : callable, optional
            ``pynq.allocate`` (the default), or a stand-in with the same signature.

        Sets ``pipeline.ctrl.axis_inline`` to 0 first (``s_axis`` carries request bytes, not frames). One request is
        in flight at a time, so this path is bounded by the DMA's per-transfer set-up (microseconds), not the core.
        """
        dev = self.offload
        if allocate is None:
            if _pynq is None:
                raise DeviceNotFound("classify_dma needs the pynq package; install it with: "
                                     "pip install 'wirespeed[pynq]'")
            allocate = _pynq.allocate
        import numpy as np

        dev.write_register("pipeline.ctrl.axis_inline", 0)
        max_header = dev.read_register("parser.limits.max_header_bytes")
        verdicts = []
        out = allocate(shape=(VERDICT_BYTES,), dtype=np.uint8)
        try:
            for index, request in enumerate(requests):
                data = bytes_to_send(bytes(request), max_header)
                if not data:
                    raise TransportError(f"requests[{index}] is empty: the DMA cannot send 0 bytes")
                buf = allocate(shape=(len(data),), dtype=np.uint8)
                try:
                    buf[:] = np.frombuffer(data, np.uint8)
                    if hasattr(buf, "flush"):
                        buf.flush()
                    # Receive first: the record may come back before the send call returns.
                    dma.recvchannel.transfer(out)
                    dma.sendchannel.transfer(buf)
                    dma.sendchannel.wait()
                    dma.recvchannel.wait()
                    if hasattr(out, "invalidate"):
                        out.invalidate()
                    verdicts += dev._verdicts([_record_from_bytes(out.tobytes())])
                finally:
                    if hasattr(buf, "freebuffer"):
                        buf.freebuffer()
        finally:
            if hasattr(out, "freebuffer"):
                out.freebuffer()
        return verdicts

    def close(self) -> None:
        self.transport.close()

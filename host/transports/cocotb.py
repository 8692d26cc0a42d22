"""Async transport over cocotbext-axi's ``AxiLiteMaster``: the driver's own code, running inside a testbench.

cocotb test ─▶ ``AsyncOffload`` (``host/driver/offload.py``) ─▶ :class:`CocotbTransport` ─▶ AxiLiteMaster ─▶ ``s_axil``
"""

from __future__ import annotations

from ..errors import BusError
from ...hdl.bus.regmap import RESP_NAMES
from .base import AsyncTransport, check_access

__all__ = ["CocotbTransport"]


class CocotbTransport(AsyncTransport):
    """Register access through an ``AxiLiteMaster``; SLVERR/DECERR raise :class:`BusError`.

    Parameters
    ----------
    master : cocotbext.axi.AxiLiteMaster
        Connected to the core's AXI4-Lite port.
    base : int
        Byte address of the core on that bus.
    """

    scheme = "cocotb"

    def __init__(self, master, base: int = 0):
        self.master = master
        self.base = base

    async def read32(self, address: int) -> int:
        check_access(address, None)
        resp = await self.master.read(self.base + address, 4)
        if int(resp.resp):
            raise BusError("read", address, RESP_NAMES[int(resp.resp)])
        return int.from_bytes(resp.data, "little")

    async def write32(self, address: int, value: int) -> None:
        check_access(address, None, value)
        resp = await self.master.write(self.base + address, value.to_bytes(4, "little"))
        if int(resp.resp):
            raise BusError("write", address, RESP_NAMES[int(resp.resp)])

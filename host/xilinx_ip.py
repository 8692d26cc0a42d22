"""The identity of the packaged Vivado IP, shared by the Vivado plan (:mod:`wirespeed.host.tools.xilinx`) and the
PYNQ driver binding (:mod:`wirespeed.host.driver.pynq_driver`): its VLNV and the width of its verdict stream.
"""

from __future__ import annotations

from ..hdl.bus.regmap import RegMap, core_regmap

__all__ = ["vlnv", "VERDICT_TDATA_BITS"]

VENDOR, LIBRARY, NAME = "wirespeed.dev", "offload", "wirespeed_core"


def vlnv(regmap: RegMap | None = None) -> str:
    """The IP's VLNV; the version is the register map's ``major.minor`` (reset values of ``id.version``)."""
    regmap = regmap or core_regmap()
    version = regmap["id.version"]
    return f"{VENDOR}:{LIBRARY}:{NAME}:{version.field('major').reset}.{version.field('minor').reset}"


#: The verdict record is padded to a width the AXI DMA's S2MM stream accepts (8..1024 bits, a power of two).
VERDICT_TDATA_BITS = 256

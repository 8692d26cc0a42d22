"""wirespeed: an FPGA offload for the hot path of an AI API gateway.

Gateway code talks to the offload through one call::

    import wirespeed
    with wirespeed.open("sim") as dev:      # or "model", "software", "pynq:<bitfile>", "uio:/dev/uio0", "pci:<bdf>"
        print(dev.info())

    async with wirespeed.open_async("model") as dev:     # asyncio code: every call is awaited
        verdict = await dev.classify(request)

Subpackages: :mod:`wirespeed.hdl` (Amaranth gateware, one folder per block), :mod:`wirespeed.host` (``driver/``,
``transports/``, ``models/``, ``tools/``), :mod:`wirespeed.sim` (Verilator, the compiled harness, cocotb wiring).
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("wirespeed")            # pyproject.toml's, as installed (`pip install -e .` included)
except PackageNotFoundError:                       # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

from .host.errors import (WirespeedError, DeviceNotFound, IncompatibleBitstream, ConfigError, TransportError, BusError,
                          TableFull, FeatureMissing, TableOpError)
from .host.driver.offload import AsyncOffload, Offload, open, open_async
from .host.driver.pools import PoolInfo, Pools, Route, Routes
from .host.driver.stats import LatencyHistogram
from .host.driver.tenants import Clock, TenantId, TenantInfo, Tenants
from .host.driver.verdict import Verdict

__all__ = ["__version__", "open", "open_async", "Offload", "AsyncOffload", "Verdict", "LatencyHistogram", "Tenants", "TenantId", "TenantInfo", "Clock", "Pools", "PoolInfo", "Routes", "Route",
           "WirespeedError", "DeviceNotFound", "IncompatibleBitstream", "ConfigError", "TransportError", "BusError",
           "TableFull", "FeatureMissing", "TableOpError"]

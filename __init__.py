"""wirespeed: an FPGA offload for the hot path of an AI API gateway.

Gateway code talks to the offload through one call::

    import wirespeed
    with wirespeed.open("sim") as dev:      # or "model", "pynq:<bitfile>", "uio:/dev/uio0", "pci:<bdf>[/barN]"
        print(dev.info())

Subpackages: :mod:`wirespeed.hdl` (Amaranth gateware), :mod:`wirespeed.host` (driver, models, CLI),
:mod:`wirespeed.sim` (Verilator/cocotb wiring).
"""

from .host.errors import (WirespeedError, DeviceNotFound, IncompatibleBitstream, ConfigError,
                          TransportError, BusError)
from .host.limiter import TableFull
from .host.offload import Offload, open
from .host.pools import PoolInfo, Pools, Route, Routes
from .host.telemetry import LatencyHistogram
from .host.tenants import Clock, FeatureMissing, TableOpError, TenantInfo, Tenants
from .host.verdict import Verdict

__all__ = ["open", "Offload", "Verdict", "LatencyHistogram", "Tenants", "TenantInfo", "Clock", "Pools", "PoolInfo", "Routes", "Route",
           "WirespeedError", "DeviceNotFound", "IncompatibleBitstream", "ConfigError", "TransportError", "BusError",
           "TableFull", "FeatureMissing", "TableOpError"]

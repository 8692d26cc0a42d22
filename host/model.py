"""Bit-exact software model of the wirespeed core, behind the ``"model"`` URI.

``wirespeed.open("model")`` ─▶ :class:`ModelTransport` ─▶ :class:`CoreModel` (register bank model + block models)

It answers every register access exactly as the RTL does (see :mod:`.register_model`). The pipelines' models plug
in here as they are built.
"""

from __future__ import annotations

from ..hdl.id import FEATURES, CoreParams, build_hash
from .errors import BusError, TransportError
from .register_model import OKAY, RESP_NAMES, RegisterBankModel
from .regmap import core_regmap
from .transport import Transport, check_access

__all__ = ["CoreModel", "ModelTransport", "AXIL_ACCESS_CYCLES"]

#: Core clock cycles one register access takes on the ``"sim"`` transport (AR or AW/W handshake, the target's
#: decide/accept/ack cycles, the R or B handshake); the model's notional clock advances by this much per access, and
#: a test asserts the two agree.
AXIL_ACCESS_CYCLES = 5


class CoreModel:
    """The whole core in Python: its register bank and the ID block's build-dependent values."""

    def __init__(self, params: CoreParams = CoreParams()):
        self.params = params
        self.regmap = core_regmap()
        self.bank = RegisterBankModel(self.regmap)
        self.cycles = 0
        p = params
        for name, value in {
            "id.build_hash.value": build_hash(p),
            "id.params_stream.width_bytes": p.width_bytes,
            "id.params_tenants.value": p.tenants,
            "id.params_maglev.value": p.maglev_size,
            "id.params_clock.hz": p.clock_hz,
        }.items():
            self.bank.set_hw(name, value)
        for feature in FEATURES:
            self.bank.set_hw(f"id.features.{feature}", feature in p.features)

    def _tick(self) -> None:
        self.cycles += AXIL_ACCESS_CYCLES
        self.bank.set_hw("id.uptime_cycles.cycles", self.cycles)

    def read(self, address: int) -> tuple[int, int]:
        self._tick()
        data, resp = self.bank.read(address)
        if resp != OKAY:
            self.bank.incr("id.bus_errors.count")
        return data, resp

    def write(self, address: int, data: int, strb: int = 0xF) -> int:
        self._tick()
        resp = self.bank.write(address, data, strb)
        if resp != OKAY:
            self.bank.incr("id.bus_errors.count")
        return resp


class ModelTransport(Transport):
    """Register access to a :class:`CoreModel`; error responses raise :class:`BusError` as on ``"sim"``."""

    scheme = "model"

    def __init__(self, params: CoreParams = CoreParams(), model: CoreModel | None = None):
        self.model = model or CoreModel(params)
        self._closed = False

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

    def _check(self, address, value=None):
        if self._closed:
            raise TransportError("model transport is closed")
        check_access(address, None, value)

    def close(self) -> None:
        self._closed = True

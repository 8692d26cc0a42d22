"""Bit-exact software model of the wirespeed core, behind the ``"model"`` URI.

``wirespeed.open("model")`` ─▶ :class:`ModelTransport` ─▶ :class:`CoreModel` (register bank model + block models)

It answers every register access exactly as the RTL does (see :mod:`.register_model`). The pipelines' models plug
in here as they are built: the limiter as a :class:`~.limiter_block.LimiterBlock` and the router as a
:class:`~.router_block.RouterBlock` when the core has them. The parser's registers are plain storage here.
"""

from __future__ import annotations

from ..hdl.id import FEATURES, CoreParams, build_hash
from .errors import BusError, TransportError
from .limiter_block import OP_NOW_CYCLE, READ_SAMPLE_CYCLE, STEP_PULSE_CYCLE, WRITE_EFFECT_CYCLE, LimiterBlock
from .register_model import OKAY, RESP_NAMES, RegisterBankModel
from .regmap import core_regmap
from .router_block import RouterBlock
from .transport import Transport, check_access

__all__ = ["CoreModel", "ModelTransport", "AXIL_ACCESS_CYCLES"]

#: Core clock cycles one register access takes on the ``"sim"`` transport (AR or AW/W handshake, the target's
#: decide/accept/ack cycles, the R or B handshake); the model's notional clock advances by this much per access, and
#: a test asserts the two agree.
AXIL_ACCESS_CYCLES = 5
# The limiter block's events stay in cycle order only if each falls within its own access.
assert all(-AXIL_ACCESS_CYCLES < c <= 0 for c in (OP_NOW_CYCLE, READ_SAMPLE_CYCLE, STEP_PULSE_CYCLE, WRITE_EFFECT_CYCLE))


class CoreModel:
    """The whole core in Python: its register bank, the ID block's build-dependent values and the block models.

    Attributes
    ----------
    cycles : int
        The notional core cycle count: :data:`AXIL_ACCESS_CYCLES` per access. Block models time their events from it.
    limiter : LimiterBlock or None
        The limiter's register-level model, when ``params.limiter`` is set.
    router : RouterBlock or None
        The router's register-level model, when ``params.router`` is set.
    """

    def __init__(self, params: CoreParams = CoreParams()):
        self.params = params
        regmap = core_regmap()
        if params.limiter is not None:
            regmap = regmap.with_resets({"limiter.clock_ns_per_cycle.value": params.limiter.ns_per_cycle_reset})
        self.regmap = regmap
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
        self.limiter = LimiterBlock(p.limiter, self.bank) if p.limiter is not None else None
        self.router = RouterBlock(p.router, self.bank) if p.router is not None else None
        # Word address -> (block model, register name) of the registers a block model watches.
        self._watched = {}
        for block in (self.limiter, self.router):
            if block is not None:
                for reg in self.regmap.registers:
                    if reg.name.startswith(block.PREFIX):
                        for word in range(reg.words):
                            self._watched[reg.address + 4 * word] = (block, reg.name)

    def _tick(self) -> None:
        self.cycles += AXIL_ACCESS_CYCLES
        self.bank.set_hw("id.uptime_cycles.cycles", self.cycles)

    def read(self, address: int) -> tuple[int, int]:
        self._tick()
        hit = self._watched.get(address & ~3)
        if hit is not None:
            block, reg = hit
            block.before_read(reg, self.cycles)
        data, resp = self.bank.read(address)
        if resp != OKAY:
            self.bank.incr("id.bus_errors.count")
        return data, resp

    def write(self, address: int, data: int, strb: int = 0xF) -> int:
        self._tick()
        resp = self.bank.write(address, data, strb)
        if resp != OKAY:
            self.bank.incr("id.bus_errors.count")
        else:
            hit = self._watched.get(address & ~3)
            if hit is not None:
                block, reg = hit
                block.after_write(reg, self.cycles)
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

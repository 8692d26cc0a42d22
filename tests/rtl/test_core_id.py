"""The core's ID block over AXI4-Lite on Verilator, read by the driver's own code (AsyncOffload over an
AsyncTransport) and compared with the bit-exact model: the default core under cocotb (CocotbTransport; the build is
shared with test_pipeline.py), the largest tables on the compiled harness (SimTransport, awaited in this thread; the
build is shared with test_sim_transport.py). Both run the same two check functions: the info block, every register
against the model, the scratch register, uptime, a refused write counted as a bus error; and the async driver's
tenants, clock, pools and routes."""

import asyncio

import pytest

from wirespeed.hdl.id.id_block import CoreParams
from wirespeed.hdl.limiter.layouts import LimiterParams
from wirespeed.hdl.router.layouts import RouterParams
from wirespeed.hdl.core.top import WirespeedCore
from wirespeed.host.transports.base import AsyncTransport
from wirespeed.sim.runner import param, run_cocotb

#: The largest tables (one M = 65 537 pool, 16 384 tenants); no parser, whose W = 16 build is the slow one.
W16_FULL = CoreParams(width_bytes=16, tenants=16384, maglev_size=65538, clock_hz=250_000_000,
                      features=frozenset({"router", "limiter"}))
#: The w16-full core is built for a few hundred register accesses here and in test_sim_transport.py: at -O0.
W16_FULL_OPT = "-O0"


@pytest.mark.rtl
@pytest.mark.parametrize("params", [CoreParams()], ids=["default"])
def test_core_id(params):
    run_cocotb(lambda: WirespeedCore(params), toplevel="wirespeed_core", test_file=__file__,
               parameters={"params": {**params.__dict__, "features": sorted(params.features),
                                      "limiter": params.limiter and params.limiter.__dict__,
                                      "router": params.router and params.router.__dict__}},
               design_key=params)


class _Awaited(AsyncTransport):
    """A :class:`SimTransport` behind the awaited contract, run in this thread, so the cocotb testbench's check
    functions drive the harness through the same AsyncOffload path."""

    def __init__(self, sim):
        self.sim = sim

    async def read32(self, address: int) -> int:
        return self.sim.read32(address)

    async def write32(self, address: int, value: int) -> None:
        self.sim.write32(address, value)

    async def tick(self, cycles: int) -> None:
        self.sim.tick(cycles)

    def close(self) -> None:
        self.sim.close()


@pytest.mark.rtl
def test_core_id_w16_full_on_the_harness():
    """The cocotb testbench's checks, on the w16-full core in the compiled harness (a fresh core for each)."""
    from wirespeed.host.driver.offload import AsyncOffload
    from wirespeed.host.transports.sim import SimTransport

    async def on_a_fresh_core(check):
        dev = await AsyncOffload.open(_Awaited(SimTransport(W16_FULL, opt=W16_FULL_OPT)))
        try:
            await check(dev)
        finally:
            dev.transport.close()

    async def checks():
        await on_a_fresh_core(lambda dev: _info_matches_model(dev, W16_FULL, dev.transport.tick))
        await on_a_fresh_core(lambda dev: _async_driver_matches_model(dev, W16_FULL))

    asyncio.run(checks())


async def _info_matches_model(dev, params, advance):
    """The info block, every register and the scratch register equal the model's; uptime advances over
    ``await advance(100)`` cycles; a write to a read-only register is refused (SLVERR) and counted."""
    from wirespeed.host.driver.offload import Offload
    from wirespeed.host.driver.registers import Registers, arun, run
    from wirespeed.host.errors import BusError
    from wirespeed.host.models.device import CoreModel
    from wirespeed.host.transports.model import ModelTransport
    model = CoreModel(params)
    expected = Offload(ModelTransport(model=model)).info()
    got = await dev.info()
    assert got == expected, (got, expected)
    assert got.features == params.features
    # Scratch round trip and every register readable.
    await dev.write_register("id.scratch", 0x1234_5678)
    assert await dev.read_register("id.scratch") == 0x1234_5678
    regs, model_bus = Registers(model.regmap), ModelTransport(model=model)
    for reg in model.regmap.registers:
        value = await arun(regs.read(reg.name), dev.transport)
        if reg.name not in ("id.uptime_cycles", "id.scratch", "limiter.clock_now"):
            # What a bus read of the model returns (write-only fields read 0, as on the RTL).
            assert value == run(regs.read(reg.name), model_bus), reg.name
    # Uptime advances; an error response is counted.
    t0 = await dev.read_register("id.uptime_cycles")
    await advance(100)
    assert await dev.read_register("id.uptime_cycles") >= t0 + 100
    try:
        await dev.transport.write32(model.regmap["id.magic"].address, 0)
    except BusError as e:
        assert e.resp == "SLVERR"
    else:
        raise AssertionError("write to a read-only register was not refused")
    assert await dev.read_register("id.bus_errors") == 1


async def _async_driver_matches_model(dev, params):
    """AsyncOffload's tenants, clock, pools and routes on the RTL give what Offload gives on the model."""
    from wirespeed.host.driver.offload import Offload
    from wirespeed.host.transports.model import ModelTransport
    model = Offload(ModelTransport(params), "model")
    await dev.clock.set_ns_per_cycle(0)
    model.clock.ns_per_cycle = 0
    await dev.clock.step(10**9)
    model.clock.step(10**9)
    for i in range(20):
        rates = dict(requests_per_s=10 + i % 3, burst=5, tokens_per_s=1000, token_burst=500)
        assert await dev.tenants.add(f"key-{i}", **rates) == model.tenants.add(f"key-{i}", **rates)
    await dev.tenants.debit("key-3", 120)
    model.tenants.debit("key-3", 120)
    await dev.tenants.refund("key-4", 7)
    model.tenants.refund("key-4", 7)
    await dev.tenants.update("key-5", burst=2)
    model.tenants.update("key-5", burst=2)
    for i in range(20):
        got, want = (await dev.tenants.get(f"key-{i}")).as_dict(), model.tenants.get(f"key-{i}").as_dict()
        # The clock stands still after the step, but the RTL and model reached that value differently.
        assert {**got, "last_ns": 0} == {**want, "last_ns": 0}, (i, got, want)
    assert await dev.clock.now() == await dev.clock.now()
    await dev.routes.set_hash_key(bytes(range(40)))
    model.routes.set_hash_key(bytes(range(40)))
    info = await dev.pools.set(1, [5, 6, 7], [1, 2, 1], size=251)
    assert info.as_dict() == model.pools.set(1, [5, 6, 7], [1, 2, 1], size=251).as_dict()
    names = ["router.status", "router.swaps", "limiter.table_ops", "limiter.cmd_applied"]
    if "parser" in params.features:            # a route is also a parser prefix entry
        assert await dev.routes.add("/v1/", 1, key="header:x-session-id") == \
            model.routes.add("/v1/", 1, key="header:x-session-id")
        names += ["parser.prefix_ctrl", "parser.extra_ctrl"]
    for name in names:
        assert await dev.read_register(name) == model.read_register(name), name
    model.close()


try:
    import cocotb
except ImportError:  # collected by pytest without cocotb's simulator context: nothing below runs there
    cocotb = None

if cocotb is not None:
    from cocotb.triggers import ClockCycles
    from support.testbench import TB

    from wirespeed.host.driver.offload import AsyncOffload

    def core_params() -> CoreParams:
        """The CoreParams test_core_id passed (as JSON)."""
        p = param("params")
        return CoreParams(**{**p, "features": frozenset(p["features"]),
                             "limiter": p["limiter"] and LimiterParams(**p["limiter"]),
                             "router": p["router"] and RouterParams(**p["router"])})

    @cocotb.test()
    async def info_matches_model(dut):
        tb = TB(dut)
        await tb.reset()
        await _info_matches_model(await AsyncOffload.open(tb.transport), core_params(),
                                  lambda cycles: ClockCycles(dut.clk, cycles))

    @cocotb.test()
    async def async_driver_matches_model(dut):
        """AsyncOffload's tenants, clock, pools and routes on the RTL give what Offload gives on the model."""
        tb = TB(dut)
        await tb.reset()
        await _async_driver_matches_model(await AsyncOffload.open(tb.transport), core_params())

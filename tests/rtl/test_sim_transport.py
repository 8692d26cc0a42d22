"""``wirespeed.open("sim")``: the driver on the Verilated RTL through the pyverilator shim, against the model."""

import random

import pytest

import wirespeed
from wirespeed.hdl.id.id_block import CoreParams
from wirespeed.host.errors import BusError, ConfigError, TransportError
from wirespeed.host.models.device import AXIL_ACCESS_CYCLES
from wirespeed.host.transports.model import ModelTransport
from wirespeed.host.driver.offload import Offload
from wirespeed.host.transports.sim import SimTransport

pytestmark = pytest.mark.rtl

SEED = 20261125


@pytest.fixture(scope="module")
def sim():
    with wirespeed.open("sim", clock="manual") as dev:
        yield dev


def test_info_is_read_from_rtl_and_matches_model(sim):
    assert isinstance(sim.transport, SimTransport)
    c0 = sim.transport.cycles
    info = sim.info()
    assert sim.transport.cycles > c0, "info() must clock the RTL"
    with wirespeed.open("model", clock="manual") as model:
        assert info == model.info()


def test_register_dump_parity(sim):
    with wirespeed.open("model", clock="manual") as model:
        sim.write_register("id.scratch", 0)
        model.write_register("id.scratch", 0)
        # Free-running values depend on how many cycles this shared simulator has run (see the clock tests).
        names = [r.name for r in model.core.regmap.registers
                 if r.name not in ("id.uptime_cycles", "limiter.clock_now")]
        ours = {n: sim.read_register(n) for n in names}
        theirs = {n: model.read_register(n) for n in names}
        assert ours == theirs


def test_scratch_random_round_trips(sim):
    rng = random.Random(SEED)
    for _ in range(500):
        value = rng.getrandbits(32)
        sim.write_register("id.scratch", value)
        assert sim.read_register("id.scratch") == value, f"seed {SEED}"


def test_access_cost_in_cycles_matches_model(sim):
    """Deterministic: every access takes exactly AXIL_ACCESS_CYCLES core cycles on an idle bus."""
    t = sim.transport
    address = sim.core.regmap["id.scratch"].address
    c0 = t.cycles
    for i in range(100):
        t.write32(address, i)
        t.read32(address)
    assert t.cycles - c0 == 200 * AXIL_ACCESS_CYCLES


def test_uptime_counts_cycles(sim):
    t = sim.transport
    a = sim.read_register("id.uptime_cycles")
    c0 = t.cycles
    b = sim.read_register("id.uptime_cycles")
    # Two 32-bit reads: the low word is sampled when the target accepts the first read.
    assert b - a == t.cycles - c0


def test_error_responses_and_counter():
    with wirespeed.open("sim", clock="manual") as dev:
        regmap = dev.core.regmap
        assert dev.read_register("id.bus_errors") == 0
        with pytest.raises(BusError) as e:
            dev.transport.read32(next(a for a in range(0, regmap.size, 4) if regmap.decode(a) is None))
        assert e.value.resp == "DECERR"
        with pytest.raises(BusError) as e:
            dev.transport.write32(regmap["id.magic"].address, 0)
        assert e.value.resp == "SLVERR"
        assert dev.read_register("id.magic") == dev.core.magic
        assert dev.read_register("id.bus_errors") == 2
        with pytest.raises(TransportError):
            dev.transport.read32(1 << 20)   # outside the AXI window: refused before the bus
        with pytest.raises(TransportError):
            dev.transport.read32(2)         # unaligned


def test_parameters_reach_the_id_block():
    params = CoreParams(width_bytes=16, tenants=16384, maglev_size=65538, clock_hz=250_000_000,
                        features=frozenset({"limiter", "router"}))
    # At -O0, as test_core_id.py's checks on the same core: one build of it, quick to compile, for a few accesses.
    with Offload(SimTransport(params, opt="-O0"), "sim", clock="manual") as dev, \
            Offload(ModelTransport(params), "model", clock="manual") as model:
        assert dev.info() == model.info()
        assert dev.info().features == params.features
    with pytest.raises(ConfigError, match="opt"):
        SimTransport(params, opt="-Ofast")


def test_closed_transport_refuses():
    dev = wirespeed.open("sim", clock="manual")
    dev.close()
    with pytest.raises(TransportError):
        dev.info()


# -- the stream batch path and the compiled harness ------------------------------------------------------------------

def _timed_session(dev, rng):
    """A tenant on a plan whose tokens refill every few hundred cycles, with the clock at 0.3-3 µs per cycle: whether
    a request is admitted, and its exact retry_after, depend on the cycle its limiter decision happens in."""
    from wirespeed.host.tools import traffic
    dev.clock.ns_per_cycle = 997
    dev.pools.set(0, [1, 2, 3], size=251)
    dev.routes.default(0, key="tenant")
    key = "sk-" + "t" * 40
    dev.tenants.add(key, requests_per_s=5_000, burst=2)                     # tokens unlimited
    verdicts = []
    for _ in range(6):
        # A rate change between batches: a decision's time then depends on where the batch sits relative to this
        # access, not only on the distance between decisions.
        dev.clock.ns_per_cycle = rng.randrange(300, 3000)
        batch = [traffic.realistic(rng, api_key=key) for _ in range(rng.randrange(20, 80))]
        verdicts += dev.classify_many(batch)
    return verdicts


def test_stream_batch_follows_the_model_cycle_for_cycle():
    """The batch path's timing (first beat right after the last access, one beat per cycle, a fixed tail) is what
    the model assumes: with the limiter clock at 0.3-3 µs per cycle, changed between batches, one cycle of
    difference changes decisions and retry_afters (checked by moving the model's start by one cycle)."""
    results = {}
    for uri in ("model", "sim"):
        with wirespeed.open(uri, clock="manual") as dev:
            results[uri] = _timed_session(dev, random.Random(SEED))
    model, sim = results["model"], results["sim"]
    assert model == sim
    statuses = [v.status for v in model]
    assert 0.2 < statuses.count(429) / len(statuses) < 0.8, statuses      # decided at the refill boundary
    assert len({v.retry_after_s for v in model if v.retry_after_s}) > 10


def test_stream_batch_is_one_beat_per_cycle_and_timed(sim):
    from wirespeed.host.tools import traffic
    from wirespeed.host.models.pipeline import stream_batch_cycles
    rng = random.Random(SEED)
    packets = [traffic.realistic(rng) for _ in range(50)]
    t = sim.transport
    sim.write_register("pipeline.ctrl.axis_inline", 0)
    c0 = t.cycles
    records = t.classify_stream(packets)
    beats = sum(-(-len(p) // t.width) for p in packets)
    assert t.cycles - c0 == stream_batch_cycles(beats)
    assert len(records) == len(packets)


def test_open_sim_does_not_elaborate_when_cached(monkeypatch):
    """The second open of the same configuration reads the cached Verilog: no Amaranth elaboration."""
    import wirespeed.sim.runner as runner
    with wirespeed.open("sim", clock="manual"):
        pass

    def refuse(*args, **kwargs):
        raise AssertionError("elaborated although the Verilog is cached")
    monkeypatch.setattr(runner, "to_verilog", refuse)
    with wirespeed.open("sim", clock="manual") as dev:
        assert dev.info().width_bytes == 8


def test_a_stalled_stream_is_named():
    """m_verdict held not ready: the batch stops after stall_cycles and names the port; nothing hangs."""
    from wirespeed.host.tools import traffic
    from wirespeed.sim.harness import Batch, HarnessStall
    with wirespeed.open("sim", clock="manual") as dev:
        t = dev.transport
        packets = [traffic.realistic(random.Random(SEED)) for _ in range(40)]
        with pytest.raises(HarnessStall) as e:
            t.harness.run(Batch(beats={"s_axis": t.axis_beats(packets)}, expect={"m_verdict": 40, "m_axis": 40},
                                ready={"m_verdict": b"\0"}, stall_cycles=500))
        assert "s_axis" in str(e.value) and e.value.port == "s_axis"      # the input backs up first
        assert isinstance(e.value, TransportError)
        with pytest.raises(HarnessStall) as e:
            t.harness.run(Batch(expect={"m_verdict": 1000}, stall_cycles=200))     # more than are in flight
        assert e.value.port == "m_verdict" and "of 1000 packets" in str(e.value)


def test_a_batch_too_large_is_refused_before_it_starts():
    import numpy as np
    from wirespeed.host.errors import ConfigError
    from wirespeed.sim import harness as h
    with wirespeed.open("sim", clock="manual") as dev:
        hs = dev.transport.harness
        c0 = hs.cycle
        with pytest.raises(h.BatchTooLarge) as e:
            hs.run(h.Batch(expect={"m_verdict": 10}, capacity={"m_verdict": 5}))
        assert isinstance(e.value, ConfigError) and e.value.field == "expect['m_verdict']"
        with pytest.raises(h.BatchTooLarge) as e:
            hs.run(h.Batch(beats={"s_axis": np.zeros((h.MAX_BEATS + 1, 4), np.uint32)}))
        assert str(h.MAX_BEATS) in str(e.value)
        with pytest.raises(h.BatchTooLarge):
            hs.run(h.Batch(beats={"m_axis": np.zeros((1, 4), np.uint32)}))    # an output is not an input
        assert hs.cycle == c0, "nothing ran"


def test_a_harness_build_failure_names_the_error_and_the_command(tmp_path, monkeypatch):
    from wirespeed.sim.harness import Harness, HarnessBuildError
    monkeypatch.setenv("WIRESPEED_BUILD", str(tmp_path))
    verilog = "module broken(input clk, input rst, output y);\n  assign y = undefined_signal +;\nendmodule\n"
    with pytest.raises(HarnessBuildError) as e:
        Harness(verilog, "broken")
    text = str(e.value)
    assert "Error" in text and "reproduce: cd " in text and "verilator" in text


def test_open_async_on_the_rtl_gives_the_models_verdicts():
    """``open_async`` on ``"sim"``: the RTL through the worker thread, 100 calls gathered, against the model."""
    import asyncio

    requests = [b"GET /v1/models HTTP/1.1\r\nHost: api\r\nx-api-key: sk-%d\r\n\r\n" % (i % 4) for i in range(100)]

    def configure(dev):
        dev.clock.ns_per_cycle = 0
        dev.pools.set(0, ["10.0.0.1:8000", "10.0.0.2:8000"])
        for i in range(4):
            dev.tenants.add(f"sk-{i}", requests_per_s=10, burst=10, tokens_per_s=100, token_burst=100)

    async def main():
        async with wirespeed.open_async("sim", clock="manual") as dev:
            await dev._call(configure, dev._sync)
            return await asyncio.gather(*[dev.classify(r) for r in requests])

    got = asyncio.run(main())
    with wirespeed.open("model", clock="manual") as model:
        configure(model)
        want = [model.classify(r) for r in requests]
    assert [v.as_dict() for v in got] == [v.as_dict() for v in want]
    assert {v.reason for v in got} == {"ok", "rate_limited"}


def test_wall_clock_on_the_rtl_follows_a_driven_host_clock():
    """``clock="wall"`` on "sim": the driver steps the RTL's limiter clock forward to the host's, never back."""
    now = [10**12]
    request = b"GET /v1/models HTTP/1.1\r\nHost: api\r\nx-api-key: sk-a\r\n\r\n"
    with Offload(SimTransport(), "sim", clock="wall") as dev:
        dev.clock.core.host_ns = lambda: now[0]
        dev.clock.ns_per_cycle = 0
        dev.pools.set(0, ["10.0.0.1:8000"])
        dev.tenants.add("sk-a", requests_per_s=1, burst=1, tokens_per_s=1000, token_burst=1000)
        start = dev.clock.now()
        assert dev.classify(request).reason == "ok"
        assert dev.classify(request).reason == "rate_limited"
        now[0] -= 5_000_000                                     # the host clock going back is not followed
        dev.classify(request)
        assert dev.clock.now() == start
        now[0] += 5_000_000 + 1_000_000_000
        assert dev.classify(request).reason == "ok"
        assert dev.clock.now() == start + 1_000_000_000


def test_wall_clock_disciplines_the_rtl_clock():
    """``clock="wall"`` on ``"sim"``: before each classification the driver steps the RTL's clock forward to the
    host's monotonic clock (a clock the test moves), so a 1 request/s tenant refills after one host second, however
    few cycles the simulator ran meanwhile; a host clock that goes back never steps the device back."""
    host = {"now": 10**12}
    request = b"GET /v1/models HTTP/1.1\r\nHost: api\r\nx-api-key: sk-a\r\n\r\n"
    with Offload(SimTransport(), "sim", clock="wall") as dev:
        dev.clock.core.host_ns = lambda: host["now"]
        dev.clock.ns_per_cycle = 0                    # only the driver's steps move the RTL's clock
        dev.pools.set(0, ["10.0.0.1:8000"])
        dev.tenants.add("sk-a", requests_per_s=1, burst=1)
        start = dev.clock.now()
        assert [dev.classify(request).reason for _ in range(2)] == ["ok", "rate_limited"]
        host["now"] += 999_999_999
        assert dev.classify(request).reason == "rate_limited"
        host["now"] -= 500_000_000                    # back in time: no step back
        assert dev.classify(request).reason == "rate_limited"
        host["now"] += 500_000_001
        assert dev.classify(request).reason == "ok"
        assert dev.clock.now() - start == 1_000_000_000

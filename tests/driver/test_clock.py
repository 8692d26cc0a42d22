"""The limiter clock on the host: ``wirespeed.open(uri, clock="wall")`` (the default) against ``clock="manual"``.

In wall mode the driver steps the device clock forward to the host's monotonic clock before each classification and
each tenant command, so a rate means per real second on ``"model"`` too. One test sleeps for real; the others drive
the host clock by hand through ``ClockCore.host_ns``.
"""

import time

import pytest

import wirespeed
from wirespeed.host.driver.offload import Offload
from wirespeed.host.errors import ConfigError
from wirespeed.host.transports.model import ModelTransport
from wirespeed.host.transports.software import SoftwareTransport

REQUEST = b"GET /v1/models HTTP/1.1\r\nHost: api\r\nx-api-key: sk-a\r\n\r\n"


class FakeHost:
    """A host clock the test moves: ``now`` ns."""

    def __init__(self, now: int = 10**12):
        self.now = now

    def __call__(self) -> int:
        return self.now


def one_per_second(dev):
    dev.pools.set(0, ["10.0.0.1:8000"])
    dev.tenants.add("sk-a", requests_per_s=1, burst=1, tokens_per_s=1000, token_burst=1000)


def test_wall_clock_refills_after_a_real_sleep():
    """The issue's case: a 1 req/s tenant is allowed again after a real 1.5 s sleep, with no clock.step(), on
    "model" and on "software" side by side (one sleep for both)."""
    with wirespeed.open("model") as dev, wirespeed.open("software") as soft:
        for d in (dev, soft):
            assert d.clock.mode == "wall"
            one_per_second(d)
            first, second = d.classify(REQUEST), d.classify(REQUEST)
            assert (first.reason, second.reason) == ("ok", "rate_limited")
            assert 0 < second.retry_after_s <= 1.0
        time.sleep(1.5)
        assert [d.classify(REQUEST).reason for d in (dev, soft)] == ["ok", "ok"]


def test_manual_clock_does_not_move_without_a_step():
    with wirespeed.open("model", clock="manual") as dev:
        assert dev.clock.mode == "manual"
        dev.clock.ns_per_cycle = 0
        one_per_second(dev)
        before = dev.clock.now()
        assert [dev.classify(REQUEST).reason for _ in range(2)] == ["ok", "rate_limited"]
        assert dev.clock.now() == before
        dev.clock.step(1_000_000_000)
        assert dev.classify(REQUEST).reason == "ok"


def wall_model(host: FakeHost, transport=ModelTransport) -> Offload:
    dev = Offload(transport(), transport.scheme, clock="wall")
    dev.clock.core.host_ns = host
    dev.clock.ns_per_cycle = 0            # only the driver's steps move the device clock
    return dev


@pytest.mark.parametrize("transport", [ModelTransport, SoftwareTransport])
def test_wall_mode_steps_the_device_to_the_host_and_only_forward(transport):
    host = FakeHost()
    with wall_model(host, transport) as dev:
        one_per_second(dev)
        start = dev.clock.now()
        assert dev.classify(REQUEST).reason == "ok"              # the first discipline fixes the offset
        assert dev.clock.now() == start
        host.now += 250_000_000
        assert dev.classify(REQUEST).reason == "rate_limited"
        assert dev.clock.now() == start + 250_000_000
        host.now -= 100_000_000                                   # a host clock that went back: no step back
        dev.classify(REQUEST)
        assert dev.clock.now() == start + 250_000_000
        host.now += 100_000_000 + 750_000_000                     # one second after the first request
        assert dev.classify(REQUEST).reason == "ok"
        assert dev.clock.now() == start + 1_000_000_000


def test_a_manual_step_is_kept_in_wall_mode():
    host = FakeHost()
    with wall_model(host) as dev:
        one_per_second(dev)
        start = dev.clock.now()
        dev.classify(REQUEST)
        dev.clock.step(5_000_000_000)                             # jump ahead; the servo must not wait it out
        host.now += 1_000
        dev.classify(REQUEST)
        assert dev.clock.now() == start + 5_000_000_000 + 1_000
        dev.clock.step(-2_000_000_000)                            # and back: the offset follows
        host.now += 1_000
        dev.classify(REQUEST)
        assert dev.clock.now() == start + 3_000_000_000 + 2_000


def test_tenant_commands_see_the_wall_clock():
    host = FakeHost()
    with wall_model(host) as dev:
        dev.tenants.add("sk-a", requests_per_s=100, burst=100, tokens_per_s=10, token_burst=10)
        start = dev.clock.now()
        dev.classify(REQUEST)
        host.now += 3_000_000_000
        dev.tenants.debit("sk-a", 5)
        assert dev.clock.now() == start + 3_000_000_000


def test_bad_clock_mode_is_named():
    with pytest.raises(ConfigError) as e:
        wirespeed.open("model", clock="ntp")
    assert e.value.field == "clock" and e.value.value == "ntp" and "manual" in e.value.limit
    with pytest.raises(ConfigError):
        Offload(ModelTransport(), "model", clock=None)



def test_software_disciplines_its_clock_without_register_reads():
    """On "software" the wall-clock discipline reads and steps the model's clock directly (``ClockCore.direct``):
    its five register accesses were most of a one-request verdict's time in the gateway. (Planted check: with
    ``direct`` left None, this reads ``clock_now``.)"""
    host = FakeHost()
    with wall_model(host, SoftwareTransport) as dev:
        one_per_second(dev)
        assert dev.classify(REQUEST).reason == "ok"
        reads = []
        read32 = dev.transport.read32
        dev.transport.read32 = lambda address: reads.append(address) or read32(address)
        host.now += 1_000_000_000
        assert dev.classify(REQUEST).reason == "ok"              # the step happened: the bucket refilled
        clock = dev.core.regs.regmap["limiter.clock_now"].address
        assert not {clock, clock + 4} & set(reads)               # (nor any other register: classify_requests)
        dev.read_register("limiter.clock_now")
        assert {clock, clock + 4} <= set(reads)                  # (and reads are seen when they happen)

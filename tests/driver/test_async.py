"""``wirespeed.open_async`` and :class:`AsyncOffload` on synchronous transports (``"model"`` here; ``"sim"`` in
``tests/rtl/test_sim_transport.py``): the same verdicts as :class:`Offload`, every call awaited, the event loop free
while the device works."""

import asyncio
import random

import pytest

import wirespeed
from wirespeed.host.driver.offload import AsyncOffload
from wirespeed.host.errors import ConfigError, WirespeedError
from wirespeed.host.tools.traffic import realistic
from wirespeed.host.transports.model import ModelTransport

KEYS = [f"sk-{i}" for i in range(8)]


def request(i: int) -> bytes:
    return b"POST /v1/chat/completions HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer %s\r\n" \
           b"Content-Length: 2\r\n\r\n{}" % KEYS[i % len(KEYS)].encode()


def configure_sync(dev):
    dev.clock.ns_per_cycle = 0
    dev.set_hash_key(bytes(range(40)))
    dev.pools.set(0, ["10.0.0.1:8000", "10.0.0.2:8000", "http://gpu-3:9001"])
    for key in KEYS:
        dev.tenants.add(key, requests_per_s=5, burst=5, tokens_per_s=10_000, token_burst=10_000)


async def configure_async(dev):
    await dev.clock.set_ns_per_cycle(0)
    await dev.set_hash_key(bytes(range(40)))
    await dev.pools.set(0, ["10.0.0.1:8000", "10.0.0.2:8000", "http://gpu-3:9001"])
    for key in KEYS:
        await dev.tenants.add(key, requests_per_s=5, burst=5, tokens_per_s=10_000, token_burst=10_000)


def test_gather_of_100_calls_gives_the_sync_verdicts_in_order():
    with wirespeed.open("model", clock="manual") as dev:
        configure_sync(dev)
        want = [dev.classify(request(i)) for i in range(100)]

    async def main():
        async with wirespeed.open_async("model", clock="manual") as dev:
            assert isinstance(dev, AsyncOffload) and dev.clock.mode == "manual"
            await configure_async(dev)
            return await asyncio.gather(*[dev.classify(request(i)) for i in range(100)])

    got = asyncio.run(main())
    assert [v.as_dict() for v in got] == [v.as_dict() for v in want]
    assert {v.reason for v in got} == {"ok", "rate_limited"}          # 8 tenants × 5 allowed, then 429
    assert {v.backend for v in got if v.reason == "ok"} <= {"10.0.0.1:8000", "10.0.0.2:8000", "http://gpu-3:9001"}


@pytest.mark.parametrize("uri", ["model", "software"])
def test_awaited_open_batches_stats_and_close(uri):
    async def main():
        dev = await wirespeed.open_async(uri)
        try:
            assert dev.clock.mode == "wall"
            await configure_async(dev)
            verdicts = await dev.classify_many([request(i) for i in range(16)])
            stats = await dev.stats()
            info = await dev.info()
            return verdicts, stats, info
        finally:
            await dev.aclose()

    verdicts, stats, info = asyncio.run(main())
    assert len(verdicts) == 16 and all(v.reason == "ok" for v in verdicts)
    assert stats["actions"]["forward"] == 16 and info.width_bytes == 8


def test_the_event_loop_runs_while_a_batch_is_classified():
    """A ticker keeps running while 1 500 requests go through the model (which takes about a second)."""
    rng = random.Random(3)
    requests = [realistic(rng) for _ in range(1500)]

    async def main():
        ticks = 0
        done = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.005)

        async with wirespeed.open_async("model", clock="manual") as dev:
            task = asyncio.create_task(ticker())
            await asyncio.sleep(0)
            before = ticks
            verdicts = await dev.classify_many(requests)
            during = ticks - before
            done.set()
            await task
        return verdicts, during

    verdicts, during = asyncio.run(main())
    assert len(verdicts) == 1500
    assert during >= 3, f"the loop ticked {during} times while the batch ran"


def test_async_offload_open_takes_a_synchronous_transport():
    """The issue's failure: ``AsyncOffload`` on the model raised ``TypeError: object int can't be used in 'await'``."""
    async def main():
        dev = await AsyncOffload.open(ModelTransport(), clock="manual")
        async with dev:
            await configure_async(dev)
            return await dev.classify(request(0)), await dev.read_register("id.version.major")

    verdict, major = asyncio.run(main())
    assert verdict.reason == "ok" and major == 2


def test_errors_reach_the_awaiting_caller():
    with pytest.raises(ConfigError) as e:
        wirespeed.open_async(None)
    assert e.value.field == "uri"
    with pytest.raises(ConfigError) as e:
        wirespeed.open_async("model", clock="ntp")
    assert e.value.field == "clock"

    async def main():
        async with wirespeed.open_async("model") as dev:
            with pytest.raises(ConfigError) as e:
                await dev.tenants.add("sk-x", requests_per_s=0, burst=1, tokens_per_s=1, token_burst=1)
            assert e.value.field == "requests_per_s"
            with pytest.raises(WirespeedError):
                await dev.classify_many(b"GET / HTTP/1.1\r\n\r\n")
        with pytest.raises(WirespeedError):
            await wirespeed.open_async("model:foo")

    asyncio.run(main())


def test_concurrent_classify_calls_are_batched_and_errors_stay_with_their_call():
    """100 coroutines each awaiting ``classify`` go to the device in a few ``classify_many`` batches; when a batch
    is refused because of one request, that request's caller gets the error and the others their verdicts."""
    refused = request(5) + b"refused"

    async def main():
        async with wirespeed.open_async("model", clock="manual") as dev:
            await configure_async(dev)
            batches = []
            inner = dev._sync.classify_many

            def counting(requests):                  # stands for a device that refuses one request of a batch
                batches.append(len(requests))
                if refused in requests:
                    raise ConfigError("requests", refused[:20], "refused by the test")
                return inner(requests)

            dev._sync.classify_many = counting
            results = await asyncio.gather(*[dev.classify(request(i)) for i in range(100)])
            first = list(batches)
            mixed = await asyncio.gather(dev.classify(request(0)), dev.classify(refused), dev.classify(request(1)),
                                         return_exceptions=True)
            return results, first, mixed

    results, batches, mixed = asyncio.run(main())
    assert len(results) == 100 and sum(batches) == 100 and len(batches) <= 3, batches
    assert isinstance(mixed[1], ConfigError) and mixed[1].limit == "refused by the test"
    assert mixed[0].tenant is not None and mixed[2].tenant is not None

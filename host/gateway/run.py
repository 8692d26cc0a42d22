"""``wirespeed gateway``: start a :class:`~.server.Gateway` (on uvloop when it is installed) and serve until
interrupted; with ``--demo``, two mock backends and the sample configuration first (:mod:`.demo`)."""

from __future__ import annotations

import asyncio
import gc
import json
import signal

from ..errors import ConfigError
from .config import load_config
from .server import Gateway

__all__ = ["run_gateway", "new_event_loop"]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _main(config, uri, listen, metrics, demo, as_json, status) -> dict:
    mocks = []
    if demo:
        from .demo import demo_config, how_to_call
        from .mock import start_mocks
        mocks = await start_mocks(2, chunk_delay_s=0.05)
        config = demo_config([m.url for m in mocks], listen=listen or "127.0.0.1:8080",
                             metrics=metrics or "127.0.0.1:9464")
    gw = Gateway(config, uri=uri, listen=listen, metrics=metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await gw.start()
        # What start() built (tables, tokenizers, the driver) lives as long as the process: keep it out of the
        # collector's full passes, which otherwise took 25-38 ms and showed in the p99 (docs/performance.md).
        gc.collect()
        gc.freeze()
        ready = {"listen": f"{gw.address[0]}:{gw.address[1]}", "device": gw.uri,
                 "metrics": f"{gw.metrics_address[0]}:{gw.metrics_address[1]}" if gw.metrics_address else None,
                 "backends": sorted(gw.backends)}
        if as_json:
            print(json.dumps({"ready": ready}), flush=True)
        elif demo:
            print(how_to_call(gw.address, gw.metrics_address), flush=True)
        else:
            status(f"wirespeed gateway on {ready['listen']} (device {gw.uri!r}; metrics {ready['metrics']})")
        await stop.wait()
    finally:
        await gw.stop()
        for m in mocks:
            await m.stop()
    return {"stopped": ready}


def run_gateway(*, config=None, uri=None, listen=None, metrics=None, demo=False, as_json=False,
                status=print) -> dict:
    """The ``wirespeed gateway`` command: serve until SIGINT or SIGTERM; returns what it served."""
    if config is None and not demo:
        raise ConfigError("--config", None, "give the gateway's TOML file (or --demo for a sample in front of mocks)")
    cfg = load_config(config) if config is not None else None
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(_main(cfg, uri, listen, metrics, demo, as_json, status))

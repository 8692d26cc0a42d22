"""``Offload.pools`` and ``Offload.routes`` on the Verilated core ("sim") against the model ("model").

The same random session of driver calls runs on both. Afterwards both buffers of the router's table are read back
through the registers (``table_addr`` / ``table_rdata`` read the shadow; a swap exposes the other one) and must be
identical on the two devices, and equal to what the driver meant to write (``maglev_table`` of each pool at its
base). The parser prefix and extra-name staging registers and the router status must agree too.
"""

import os
import random

import numpy as np
import pytest

import wirespeed
from wirespeed.host.maglev import failover_table, maglev_table, pack_words, unpack_words

SEED = int(os.environ.get("POOLS_SEED", "20261125"))


def _session(dev, steps=60):
    rng = random.Random(SEED)
    pools, routes = dev.pools, dev.routes
    routes.set_hash_key(bytes(rng.getrandbits(8) for _ in range(40)))
    configured = []
    for _ in range(steps):
        action = rng.choice(["set", "set", "state", "route", "unroute"])
        if action == "set" or not configured:
            pool = rng.randrange(4)
            backends = rng.sample(range(1000), rng.randrange(0, 9))
            weights = [rng.randrange(1, 4) for _ in backends] if rng.random() < 0.5 else None
            pools.set(pool, backends, weights, size=rng.choice([251, 509, 1021]))
            if pool not in configured:
                configured.append(pool)
        elif action == "state":
            pool = rng.choice(configured)
            info = pools.get(pool)
            if info.backends:
                pools.set_state(pool, rng.choice(info.backends), rng.choice(["up", "draining", "down"]))
        elif action == "route":
            key = rng.choice(["tenant", "l4", "header:x-session-id", "header:x-conversation"])
            routes.add(f"/v{rng.randrange(6)}/", rng.choice(configured), key=key)
        elif action == "unroute" and routes.list():
            routes.remove(rng.choice(routes.list()).prefix)
    return {p: pools.get(p) for p in configured}


def _read_buffer(dev, words):
    out = []
    for addr in range(words):
        dev.write_register("router.table_addr", addr)
        out.append(dev.read_register("router.table_rdata"))
    return np.array(out, dtype=np.uint32)


@pytest.mark.rtl
def test_pool_session_sim_equals_model():
    with wirespeed.open("sim", clock="manual") as sim, wirespeed.open("model", clock="manual") as model:
        infos = {name: _session(dev) for name, dev in (("sim", sim), ("model", model))}
        assert {p: i.as_dict() for p, i in infos["sim"].items()} == {p: i.as_dict() for p, i in infos["model"].items()}
        words = sim.pools.params.words
        buffers = {}
        for name, dev in (("sim", sim), ("model", model)):
            shadow = _read_buffer(dev, words)
            dev.write_register("router.swap", 1)           # expose the active buffer as the shadow
            assert not dev.read_register("router.status.busy")
            active = _read_buffer(dev, words)
            dev.write_register("router.swap", 1)
            buffers[name] = (shadow, active)
        assert np.array_equal(buffers["sim"][0], buffers["model"][0]), "shadow buffers differ"
        assert np.array_equal(buffers["sim"][1], buffers["model"][1]), "active buffers differ"
        # The active buffer holds every enabled pool's Maglev table at its base.
        entries = unpack_words(buffers["sim"][1], sim.pools.params.id_bits)
        for pool, info in infos["sim"].items():
            up = [b for b in info.backends if info.states[b] == "up"]
            if up:
                want = failover_table(maglev_table(info.size, info.ids, info.weights), info.ids, info.weights, up)
                assert np.array_equal(entries[info.base:info.base + info.size], want), f"pool {pool}"
                assert np.array_equal(info.table, want)
        for name in ("router.status", "router.swaps", "parser.route_default", "parser.prefix_ctrl",
                     "parser.extra_ctrl"):
            assert sim.read_register(name) == model.read_register(name), name
        assert pack_words(entries, sim.pools.params.id_bits).tolist() == buffers["sim"][1].tolist()


@pytest.mark.rtl
def test_one_pool_of_65537_entries_on_the_rtl():
    """The ECP5-85 target: one pool of M = 65 537 with 1 000 backends, written into the RTL's table and read back."""
    from wirespeed.hdl.id.id_block import CoreParams
    from wirespeed.host.transports.model import ModelTransport
    from wirespeed.host.driver.offload import Offload
    from wirespeed.host.transports.sim import SimTransport

    params = CoreParams(maglev_size=65538, features=frozenset({"router"}))
    backends = list(range(1000, 2000))
    with Offload(SimTransport(params), "sim") as dev:
        info = dev.pools.set(0, backends, size=65537)
        assert (info.size, info.base) == (65537, 0)
        dev.write_register("router.swap", 1)                 # the active buffer becomes the shadow: read it back
        entries = unpack_words(_read_buffer(dev, dev.pools.params.words), 16)
    want = maglev_table(65537, backends)
    assert np.array_equal(entries[:65537], want)
    counts = np.bincount(want, minlength=2000)[1000:]
    assert set(counts.tolist()) <= {65537 // 1000, 65537 // 1000 + 1}


@pytest.mark.rtl
def test_health_flap_on_the_rtl_moves_only_that_backends_sessions():
    """On "sim": 300 sessions over address-labelled backends. Marking one down moves exactly the sessions it had (to
    up backends) and no other; "up" gives every session its backend back. Verdicts name the tenant by its id and the
    backend by its label."""
    backends = [f"10.0.0.{i}:8000" for i in range(6)]
    requests = [b"POST /v1/chat/completions HTTP/1.1\r\nHost: api\r\nx-api-key: sk-a\r\nx-session-id: s%d\r\n"
                b"Content-Length: 2\r\n\r\n{}" % i for i in range(300)]
    with wirespeed.open("sim", clock="manual") as dev:
        dev.set_hash_key(bytes(range(40)))
        dev.clock.ns_per_cycle = 0
        tenant = dev.tenants.add("sk-a", requests_per_s=10**6, burst=10**6)          # tokens unlimited
        dev.pools.set(0, backends)
        dev.routes.add("/v1/chat/", 0, key="header:x-session-id")
        before = [v.backend for v in dev.classify_many(requests)]
        assert set(before) == set(backends)
        assert {v.tenant for v in dev.classify_many(requests[:5])} == {tenant}
        dev.pools.set_state(0, "10.0.0.3:8000", "down")
        during = [v.backend for v in dev.classify_many(requests)]
        dev.pools.set_state(0, "10.0.0.3:8000", "up")
        after = [v.backend for v in dev.classify_many(requests)]
    moved = [i for i, (b, d) in enumerate(zip(before, during)) if b != d]
    assert moved and all(before[i] == "10.0.0.3:8000" for i in moved)
    assert "10.0.0.3:8000" not in during
    assert after == before

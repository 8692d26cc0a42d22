"""``Offload.tenants`` and ``Offload.clock`` on the Verilated core ("sim") against the model ("model").

The same random sequence of driver calls runs on both; every value returned must be identical, including clock
readings and each tenant's ``last_ns``. This pins the register-level model's cycle offsets (host/models/limiter.py)
to the RTL: the sim transport takes exactly ``AXIL_ACCESS_CYCLES`` per access, as the model assumes.
"""

import os
import random

import pytest

import wirespeed
from wirespeed.host.errors import ConfigError
from wirespeed.host.errors import TableFull

SEED = int(os.environ.get("TENANTS_SEED", "20261125"))


def _both(fn):
    with wirespeed.open("sim", clock="manual") as sim, wirespeed.open("model", clock="manual") as model:
        return fn(sim), fn(model)


def _session(dev, rng_seed=SEED, steps=400):
    """A random session of driver calls; returns everything the device answered."""
    rng = random.Random(rng_seed)
    t, clock = dev.tenants, dev.clock
    keys = []
    log = []
    plans = [dict(requests_per_s=rng.randrange(1, 10_000), burst=rng.randrange(1, 500),
                  tokens_per_s=rng.randrange(1, 10**6), token_burst=rng.randrange(1, 10**6)) for _ in range(5)]
    plans += [dict(requests_per_minute=rng.randrange(1, 10**6), tokens_per_minute=rng.randrange(1, 10**8)),
              dict(requests_per_s=rng.randrange(1, 600) / 60, burst=rng.randrange(1, 500)),     # tokens unlimited
              dict(tokens_per_s=7.5, token_burst=rng.randrange(1, 10**6))]                       # requests unlimited
    for i in range(steps):
        action = rng.choice(["add", "add", "add", "update", "remove", "get", "get", "debit", "refund", "now",
                             "step", "rate", "default"])
        if action == "add" or not keys:
            key = f"sk-{rng.getrandbits(64):016x}"
            log.append(("add", t.add(key, **rng.choice(plans))))
            keys.append(key)
        elif action == "update":
            log.append(("update", t.update(rng.choice(keys), **rng.choice(plans))))
        elif action == "remove" and len(keys) > 3:
            key = keys.pop(rng.randrange(len(keys)))
            log.append(("remove", t.remove(key)))
        elif action == "get":
            log.append(("get", t.get(rng.choice(keys)).as_dict()))
        elif action in ("debit", "refund"):
            getattr(t, action)(rng.choice(keys), rng.choice([0, 1, 100, 10**6]))
            log.append((action, t.get(rng.choice(keys)).as_dict()))
        elif action == "now":
            log.append(("now", clock.now()))
        elif action == "step":
            clock.step(rng.choice([1, 10**6, 10**9, -5000, rng.getrandbits(40)]))
        elif action == "rate":
            clock.ns_per_cycle = rng.choice([0, 1, 5, 4.5, 1000.25, 123456.789])
        elif action == "default":
            t.set_default(rng.choice(keys))
    log.append(("counters", {n: dev.read_register(f"limiter.{n}") for n in
                             ("table_ops", "cmd_applied", "cmd_unknown", "allow", "reject_429")}))
    return log


@pytest.mark.rtl
def test_tenant_session_sim_equals_model():
    ours, theirs = _both(_session)
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a == b, f"step {i}: sim {a} != model {b} (seed {SEED})"


@pytest.mark.rtl
def test_clock_readings_sim_equals_model():
    def readings(dev):
        out = [dev.clock.now() for _ in range(3)]
        dev.clock.ns_per_cycle = 2.75
        out += [dev.clock.now() for _ in range(3)]
        dev.clock.step(-100)
        out.append(dev.clock.now())
        dev.clock.ns_per_cycle = 0
        out += [dev.clock.now(), dev.clock.now()]
        return out
    ours, theirs = _both(readings)
    assert ours == theirs
    assert ours[-1] == ours[-2], "ns_per_cycle 0 stops the clock"


@pytest.mark.rtl
def test_named_errors_write_nothing_on_sim():
    with wirespeed.open("sim", clock="manual") as dev:
        t = dev.tenants
        before = dev.transport.cycles
        with pytest.raises(ConfigError) as e:
            t.add("k", requests_per_s=-1, burst=1, tokens_per_s=1, token_burst=1)
        assert e.value.field == "requests_per_s"
        with pytest.raises(ConfigError) as e:
            t.add("k", requests_per_s=1, burst=1 << 20, tokens_per_s=1, token_burst=1)
        assert e.value.field == "burst"
        t.add("k", requests_per_s=1, burst=1, tokens_per_s=1, token_burst=1)
        for i in range(63):
            t.add(f"k{i}", requests_per_s=2 + i, burst=1, tokens_per_s=1, token_burst=1)
        cycles = dev.transport.cycles
        with pytest.raises(TableFull) as full:
            t.add("one-too-many", requests_per_s=999_999, burst=1, tokens_per_s=1, token_burst=1)
        assert full.value.table == "plans"
        assert dev.transport.cycles == cycles, "a refused add touched the bus"
        assert before < cycles

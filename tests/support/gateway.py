"""The parity sessions' gateway: one configuration and one request generator, shared by the model ≡ sim parity
(``tests/rtl/test_pipeline_parity.py``) and the software ≡ model parity (``tests/driver/test_software.py``)."""

from __future__ import annotations

import random

from wirespeed.host.tools import traffic


def api_keys(rng: random.Random, n: int) -> list[str]:
    return ["sk-" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(40)) for _ in range(n)]


def configure_gateway(dev, rng: random.Random) -> tuple[list[str], list[str]]:
    """A gateway's configuration: three pools (one empty: 503), routes by tenant, session header and L4 tuple,
    40 tenants (the first an abusive 2 requests/s; per-second, per-minute, fractional and unlimited limits), a
    default tenant, the reset cost source. Returns the known and unknown API keys."""
    dev.set_hash_key(bytes(rng.getrandbits(8) for _ in range(40)))
    dev.pools.set(0, list(range(10, 18)), size=509)
    dev.pools.set(1, [100, 101, 102], weights=[1, 2, 3], size=251)
    dev.pools.set(2, [], size=251)                                 # empty: 503
    dev.routes.default(0, key="tenant")
    dev.routes.add("/v1/messages", 1, key="header:x-session-id")
    dev.routes.add("/v1/embeddings", 2)
    dev.routes.add("/v1/chat/", 0, key="l4")
    known = api_keys(rng, 40)
    for i, key in enumerate(known):
        if i == 0:      # the abusive tenant: 2 requests/s, burst 3
            dev.tenants.add(key, requests_per_s=2, burst=3, tokens_per_s=1000, token_burst=5000)
        elif i % 4 == 1:  # per-minute rates, default bursts (a minute's worth)
            dev.tenants.add(key, requests_per_minute=rng.choice([30, 600, 6000]),
                            tokens_per_minute=rng.choice([10_000, 100_000, 1_000_000]))
        elif i % 4 == 2:  # fractional per-second rates; a third of them without a token limit
            limits = dict(requests_per_s=rng.choice([0.5, 1.5, 2.25, 100]), burst=rng.choice([1, 10, 50]))
            if rng.random() < 0.66:
                limits.update(tokens_per_s=rng.choice([0.5, 7.25, 10_000]), token_burst=rng.choice([1000, 20_000]))
            dev.tenants.add(key, **limits)
        else:
            dev.tenants.add(key, requests_per_s=rng.choice([50, 100, 1000]), burst=rng.choice([10, 50]),
                            tokens_per_s=rng.choice([10_000, 100_000]), token_burst=rng.choice([20_000, 200_000]))
    dev.tenants.set_default(known[1])
    # The cost source stays at its reset: the token-estimate header, else Content-Length / 4.
    dev.tenants.configure(unknown_policy="reject")
    return known, api_keys(rng, 10)


def gateway_request(rng: random.Random, known: list[str], unknown: list[str]) -> bytes:
    """60 % realistic requests from the tenants (the abusive one often, an unknown key sometimes, a session header
    half the time, a token estimate half the time), 40 % the traffic mix (malformed and smuggling attempts
    included)."""
    r = rng.random()
    if r < 0.6:
        key = known[0] if rng.random() < 0.15 else rng.choice(known)
        if rng.random() < 0.05:
            key = rng.choice(unknown)
        session = f"sess-{rng.randrange(50)}" if rng.random() < 0.5 else None
        # Half set the token estimate a gateway would (the reset cost source); the rest cost Content-Length / 4.
        estimate = rng.choice([0, 1, 150, 4096, 250_000]) if rng.random() < 0.5 else None
        return traffic.realistic(rng, api_key=key, session_id=session, token_estimate=estimate)
    return next(traffic.mix(rng, 1))

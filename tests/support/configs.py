"""Random configurations and request mixes that several RTL tests share (the cocotb scoreboards and the volume tests
on the compiled harness draw from the same distributions)."""

from __future__ import annotations

import random

from wirespeed.host.models.parser import ParserConfig
from wirespeed.host.keys import derive_key

__all__ = ["random_parser_config", "limiter_requests", "random_plan"]


def random_parser_config(rng: random.Random) -> ParserConfig:
    """A random parser configuration: random key, prefixes (some the same path twice with different classes: equal
    lengths both hit, and the lower index must win), extra names, Content-Length in slot 0 half the time, small
    limits."""
    poly, seed = derive_key(rng.randbytes(16))
    prefixes = [None] * 16
    for path, cls in [(b"/v1/chat/completions", 1), (b"/v1/messages", 2), (b"/v1/", 3), (b"/v1/models", 4),
                      (b"/", 5), (b"/v1/chat", 6), (b"", 7)]:
        if rng.random() < 0.8:
            prefixes[rng.randrange(16)] = (path, cls)
    for path, cls in [(b"/v1/", 9), (b"/v1/chat/completions", 10), (b"", 11), (b"/", 12)]:
        if rng.random() < 0.5:
            prefixes[rng.randrange(16)] = (path, cls)
    extras = [rng.choice([None, b"x-session-id", b"x-model", b"anthropic-version", b"content-type",
                          b"host", b"user-agent", b"x-request-id"]) for _ in range(4)]
    if rng.random() < 0.5:
        extras[0] = b"content-length"       # numeric values: slot 0's extra_numeric / extra_value
    return ParserConfig(max_header_bytes=rng.choice([8192, 8192, 1024, 300]), default_class=rng.randrange(16),
                        poly=poly, seed=seed, prefixes=prefixes, extras=extras)


def limiter_requests(rng: random.Random, keys: list, n: int) -> list[tuple]:
    """``n`` limiter requests ``(key_fp, key_present, content_length, cl_present, x_numeric, x_value)``: a third to
    three hot tenants (back to back: the forwarding path), most to known tenants, some unknown or keyless; numbers at
    the edges (0, 2^64 - 1 ...)."""
    hot = keys[:3]
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.35 and hot:
            fp, present = rng.choice(hot), 1
        elif r < 0.85 and keys:
            fp, present = rng.choice(keys), 1
        elif r < 0.95:
            fp, present = rng.getrandbits(64), 1
        else:
            fp, present = rng.getrandbits(64), 0
        cl_present = int(rng.random() < 0.5)
        cl = rng.choice([0, 10, 1000, 70_000, rng.getrandbits(64)]) if cl_present else rng.getrandbits(8)
        x_numeric = int(rng.random() < 0.5)
        x_value = rng.choice([0, 1, 4096, 100_000, rng.getrandbits(64)]) if x_numeric else rng.getrandbits(4)
        out.append((fp, present, cl, cl_present, x_numeric, x_value))
    return out


def random_plan(rng: random.Random, params):
    """A random limiter plan that ``params`` can hold: rates per minute from 1 to the maxima (so per-second rates are
    often fractional), sometimes unlimited (None), small and large bursts."""
    from wirespeed.host.models.limiter import Plan
    p = params
    while True:
        req_rate = rng.choice([None, 1, 30, 60, 7_000, 3_000_000, rng.randrange(1, 1 << 30)])
        cost_rate = rng.choice([None, 7, 1000, 100_000, 6_000_000, rng.randrange(1, 1 << 32)])
        req_burst = None if req_rate is None else rng.randrange(1, min(p.req_burst_max, 64) + 1)
        cost_burst = None if cost_rate is None else rng.randrange(1, min(p.cost_burst_max, 1 << 20) + 1)
        try:
            return Plan.per_minute(req_rate, req_burst, cost_rate, cost_burst).validate(p)
        except Exception:
            continue

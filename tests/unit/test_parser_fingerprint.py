"""The parser's fingerprint engine (hdl/parser/fingerprint.py) against the keyed fingerprint (wirespeed.host.keys).

Random marked fields (any start lane, any length, trailing bytes that are taken but not kept, empty fields, fields
spanning many beats, fields cut off at the end of a beat, the closest closes the parser can produce), W = 4, 8 and 16,
at full rate with the exact latency and under random valid/ready backpressure; a key change in mid-stream, through
``update``, at W = 8 and 16.
"""

import random

import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from support.pysim import run_stream
from support.streams import random_pauses
from wirespeed.hdl.parser.fingerprint import (FieldBeat, FingerprintEngine, FpSlot, _combos, _inverse_powers,
                                              _seed_shares, fp_latency, refill_cycles, residues)
from wirespeed.host.keys import derive_key, fingerprint

SEED = 20261206


def _fields(rng, width, n, spacing=4):
    """A lane stream of ``n`` fields: a list of (byte, take, keep, open, close) per lane, and the kept bytes of each
    field in close order."""
    lanes, fields = [], []
    for _ in range(n):
        length = rng.choice([0, 0, 1, 2, 3, rng.randrange(4, 12), rng.randrange(12, 60), rng.randrange(60, 300)])
        trailing = rng.choice([0, 0, 0, 1, 3, rng.randrange(5, 20)]) if length else 0
        gap = max(rng.choice([0, 0, 1, 2, rng.randrange(3, 30)]), spacing - 1 - length - trailing)
        # Some fields are cut off by the end of a beat (``end``, as at the end of a packet) instead of a close lane.
        at_end = length + trailing > 0 and rng.random() < 0.15
        if at_end:
            # ... never in the beat of the previous close (the parser's path, the only such field, has none there).
            gap += -(len(lanes) + gap + length + trailing) % width
            if lanes and (len(lanes) - 1) // width == (len(lanes) + gap + length + trailing - 1) // width:
                gap += width
        lanes += [(rng.randrange(256), 0, 0, 0, 0) for _ in range(gap)]
        body = [rng.randrange(256) for _ in range(length)]
        keep = [1] + [int(rng.random() < 0.8) for _ in range(length - 1)]
        if length:
            keep[-1] = 1
        for i, b in enumerate(body):
            lanes.append((b, 1, keep[i], int(i == 0), 0))
        lanes += [(rng.randrange(256), 1, 0, 0, 0) for _ in range(trailing)]
        if at_end:
            lanes[-1] = lanes[-1] + (1,)
        else:
            lanes.append((rng.randrange(256), 0, 0, 0, 1))
        fields.append(bytes(body))
    return lanes, fields


def _beats(lanes, width):
    layout = FieldBeat(width)
    lanes = lanes + [(0, 0, 0, 0, 0)] * (-len(lanes) % width)
    beats = []
    for i in range(0, len(lanes), width):
        chunk = lanes[i:i + width]
        beats.append(layout.const({
            "data": [c[0] for c in chunk],
            **{name: sum(c[j] << k for k, c in enumerate(chunk)) for j, name in enumerate(
                ("take", "keep", "open", "close"), start=1)},
            "end": int(len(chunk[-1]) > 5)}).as_value().value)
    return beats


def _collect(width, slots, outputs):
    layout = data.ArrayLayout(FpSlot(width), slots)
    fps = []
    for _, value in outputs:
        view = data.Const(layout, value)
        fps += [int(view[i].fp) for i in range(slots) if int(view[i].valid)]
    return fps


def test_tables_are_the_keys_residues():
    poly, seed = derive_key(b"tables")
    res = residues(poly, 64)
    assert res[0] == poly
    assert _combos(res[0:8])[0b101] == res[0] ^ res[2]
    c = _inverse_powers(poly, seed, 8)
    assert fingerprint(b"\0" * 3, poly, c[3]) == seed
    # W = 16 holds K[a] = S·x^(64-8a): the state at lane 8 of a field opening at lane a (C[a] = K[a + 8]).
    k = _seed_shares(poly, seed, 16)
    assert k[8:] == c and _seed_shares(poly, seed, 8) == c
    assert all(fingerprint(b"\0" * (8 - a), poly, seed) == k[a] for a in range(8))


@pytest.mark.parametrize("width", [4, 8, 16])
def test_fingerprints_at_full_rate(width):
    rng = random.Random(SEED + width)
    lanes, fields = _fields(rng, width, 150)
    dut = FingerprintEngine(width)
    beats = _beats(lanes, width)
    accepted, outputs = run_stream(dut, beats, random_pauses(rng, 0), random_pauses(rng, 0))
    assert accepted == list(range(len(beats)))
    assert [c for c, _ in outputs] == [a + fp_latency(width) for a in accepted]
    assert _collect(width, dut.slots, outputs) == [fingerprint(f) for f in fields]


@pytest.mark.parametrize("width", [4, 8, 16])
def test_fingerprints_under_backpressure(width):
    rng = random.Random(SEED * 5 + width)
    lanes, fields = _fields(rng, width, 150)
    dut = FingerprintEngine(width)
    _, outputs = run_stream(dut, _beats(lanes, width), random_pauses(rng, 0.3), random_pauses(rng, 0.4))
    assert _collect(width, dut.slots, outputs) == [fingerprint(f) for f in fields]


@pytest.mark.parametrize("width", [8, 16])
def test_key_change_refills_the_tables(width):
    rng = random.Random(SEED * 9)
    poly, seed = derive_key(b"a secret key")
    before, f1 = _fields(rng, width, 20)
    after, f2 = _fields(rng, width, 40)
    b1, b2 = _beats(before, width), _beats(after, width)
    dut = FingerprintEngine(width)
    layout = data.ArrayLayout(FpSlot(width), dut.slots)
    fps, stalled = [], []

    async def bench(ctx):
        async def send(beats):
            for beat in beats:
                ctx.set(dut.i_stream.valid, 1)
                ctx.set(dut.i_stream.payload.as_value(), beat)
                while True:
                    _, _, ready, valid, out = await ctx.tick().sample(
                        dut.i_stream.ready, dut.o_stream.valid, dut.o_stream.payload.as_value())
                    if valid:
                        view = data.Const(layout, int(out))
                        fps.extend(int(view[i].fp) for i in range(dut.slots) if int(view[i].valid))
                    if ready:
                        break
                    stalled.append(1)
            ctx.set(dut.i_stream.valid, 0)

        ctx.set(dut.o_stream.ready, 1)
        await send(b1)
        ctx.set(dut.poly, poly)
        ctx.set(dut.seed, seed)
        ctx.set(dut.update, 1)
        _, _, valid, out = await ctx.tick().sample(dut.o_stream.valid, dut.o_stream.payload.as_value())
        if valid:                                   # a beat in flight leaves with the old key
            view = data.Const(layout, int(out))
            fps.extend(int(view[i].fp) for i in range(dut.slots) if int(view[i].valid))
        ctx.set(dut.update, 0)
        await send(b2)
        for _ in range(fp_latency(width) + 2):
            _, _, valid, out = await ctx.tick().sample(dut.o_stream.valid, dut.o_stream.payload.as_value())
            if valid:
                view = data.Const(layout, int(out))
                fps.extend(int(view[i].fp) for i in range(dut.slots) if int(view[i].valid))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert fps == [fingerprint(f) for f in f1] + [fingerprint(f, poly, seed) for f in f2]
    assert width * (8 + 256) <= len(stalled) <= refill_cycles(width)

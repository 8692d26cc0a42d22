"""HeaderParser RTL on Verilator against the bit-exact model (wirespeed.host.models.parser).

DUT: ``Standalone(HeaderParser)`` (AXI4-Lite target + the parser's generated register bank + HeaderParser) on the
compiled harness (``support/parser_rig.py``), so every configuration (key, prefix table, extra names, limit) goes
through the real registers. The tests drive the packet stream with seeded valid gaps, take the outputs with seeded
ready gaps, and scoreboard (``check_segment``):

- every descriptor, bit for bit, against ``parse()`` with the same configuration;
- every pass-through beat, in the cycle it was accepted, and the bytes and packet boundaries against the input;
- exactly one descriptor per packet, none before or after;
- the cycle counts: one beat per cycle with valid and ready held high, and the descriptor exactly
  ``DESC_LATENCY_CYCLES`` (≤ 4) cycles after the beat holding the stop byte;
- the ``requests``/``complete``/``error_count`` counters against the model's descriptors.

The traffic: mixed requests under alternating fixed and random configurations, full rate and under backpressure;
worst-case and realistic packets at full rate (timing); valid requests drawn by hypothesis; numbers around 2⁶⁴.
The same scoreboard runs 10⁶ requests in ``test_parser_volume.py``; ``test_harness_vs_cocotb.py`` holds the harness to
a cocotb testbench on the same batch.
"""

import os
import random

import pytest
from support.configs import random_parser_config
from support.parser_beats import FIXED_CONFIG
from support.parser_rig import ParserRig, Segment, check_segment

from wirespeed.hdl.parser.header_parser import DESC_LATENCY_CYCLES
from wirespeed.hdl.parser.layouts import ErrorFlag
from wirespeed.host.keys import derive_key
from wirespeed.host.models.parser import ParserConfig
from wirespeed.host.tools import traffic

pytestmark = pytest.mark.rtl
SEED = int(os.environ.get("PARSER_SEED", "20261125"))
HYPOTHESIS_EXTRAS = [b"x-session-id", b"x-model"]
#: Per-cycle gap probabilities (i_stream valid, o_stream ready, o_desc ready) of the backpressure runs.
BACKPRESSURE = (0.2, 0.2, 0.4)


def _run(width: int, segments, check_timing: bool = False):
    """Each ``(packets, config, gaps)`` through one fresh parser, in order, every segment checked; then the counters
    against the model. Returns the segments (their ``expected`` descriptors) and the last run's ``Result``."""
    rig = ParserRig(width)
    try:
        done, want, previous, last = [], {}, b"", None
        for index, (packets, config, gaps) in enumerate(segments):
            seg = Segment(rig, packets, config, gaps, seed=SEED + 1000 * index + width, index=index)
            settle, last, tail = rig.segment(seg)
            check_segment(seg, settle, last, tail, previous, check_timing=check_timing,
                          where=f"W={width}, segment {index}, seed {SEED} (PARSER_SEED)")
            previous = seg.packets[-1] if seg.packets else previous
            for name, value in seg.model_counters().items():
                want[name] = want.get(name, 0) + value
            done.append(seg)
        counters = rig.counters()
    finally:
        rig.close()
    wrong = {name: (counters[name], want[name]) for name in want if counters[name] != want[name]}
    assert not wrong, f"W={width}: counters (RTL, model): {wrong}, seed {SEED} (PARSER_SEED)"
    return done, last


@pytest.mark.parametrize("width", [4, 8, 16])
@pytest.mark.parametrize("backpressure", [False, True], ids=["full-rate", "backpressure"])
def test_parser_vs_model(width, backpressure):
    """Three batches of 500 mixed requests: the fixed configuration, a random one (duplicate prefixes, extra slot 0
    numeric ...), the fixed one again."""
    rng = random.Random(SEED + width + 100 * backpressure)
    gaps = BACKPRESSURE if backpressure else (0.0, 0.0, 0.0)
    segments = [(list(traffic.mix(rng, 500)), random_parser_config(rng) if i % 2 else FIXED_CONFIG, gaps)
                for i in range(3)]
    done, _ = _run(width, segments)
    expected = [d for seg in done for d in seg.expected]
    assert len(expected) == 1500
    # The mix reaches the error paths and the complete path, so the counters compare something.
    assert 0 < sum(d.complete for d in expected) < len(expected)
    assert sum(1 for d in expected if d.errors) > 50


@pytest.mark.parametrize("width", [4, 8, 16])
def test_parser_cycle_counts(width):
    """Valid and ready held high: one beat per cycle, descriptor exactly DESC_LATENCY_CYCLES after the stop."""
    rng = random.Random(SEED + width)
    n = 300
    packets = [traffic.worst_case(rng, width, rng.randrange(64, 1024)) for _ in range(n // 3)]
    packets += [traffic.realistic(rng) for _ in range(n // 3)]
    packets += list(traffic.mix(rng, n - len(packets)))
    config = ParserConfig(prefixes=[(b"/v1/", 1)], extras=[b"x-session-id"])
    _, result = _run(width, [(packets, config, (0.0, 0.0, 0.0))], check_timing=True)
    accepted = result.accepted["i_stream"]
    beats_in = len(accepted)
    cycles = int(result.beat_cycles["o_desc"][-1]) - int(accepted[0]) + 1
    # Every cycle took a beat, apart from the tail where the last descriptors drain.
    assert (accepted[1:] - accepted[:-1] == 1).all(), "a cycle with valid and ready high took no beat"
    assert cycles - beats_in <= DESC_LATENCY_CYCLES + 1, (cycles, beats_in)


@pytest.mark.parametrize("width", [4, 8, 16])
def test_parser_hypothesis_requests(width):
    """Valid requests drawn by hypothesis (derandomized), through the RTL under backpressure: all parse complete and
    error-free, and the RTL equals the model."""
    from hypothesis import HealthCheck, given, settings
    packets = []

    @settings(derandomize=True, max_examples=400, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(traffic.valid_request_strategy(extra_names=HYPOTHESIS_EXTRAS))
    def collect(packet):
        packets.append(packet)

    collect()
    poly, seed = derive_key(b"hypothesis")
    config = ParserConfig(poly=poly, seed=seed, extras=HYPOTHESIS_EXTRAS, prefixes=[(b"/", 1), (b"/a", 2), (b"/v1/", 3)])
    (seg,), _ = _run(width, [(packets, config, (0.3, 0.2, 0.3))])
    assert len(packets) >= 300
    bad = [p for p, d in zip(packets, seg.expected) if d.errors or not d.complete]
    assert not bad, f"valid requests the model rejects: {bad[:3]!r}"


def number_requests(rng: random.Random, n: int) -> list[bytes]:
    """Requests whose Content-Length and X-Cost (extra slot 0, read as a number) sit around the edges of the
    parser's number handling: 2^64 − 1 / 2^64 (saturation and ``cl_overflow``), 20 digits (the longest accepted) with
    and without leading zeros, 21 digits, digits sharing a long prefix with 2^64, and repeated Content-Lengths that
    agree, differ in spelling only, or both overflow with different digits."""
    two64 = str(1 << 64)

    def number() -> str:
        kind = rng.randrange(7)
        if kind == 0:
            return str((1 << 64) + rng.randrange(-3, 4))
        if kind == 1:   # the first k digits of 2^64, then any digits: the overflow test digit by digit
            k = rng.randrange(20)
            return (two64[:k] + "".join(rng.choice("0123456789") for _ in range(20 - k)))[:20]
        if kind == 2:
            return str(rng.randrange(10 ** 20)).zfill(20)
        if kind == 3:
            v = str(rng.randrange(1 << 64))
            return v.zfill(rng.randrange(len(v), 22))
        if kind == 4:
            return rng.choice(["0", "9" * 19, "9" * 20, "9" * 21, "1" + "0" * 19, "0" * 20, "0" * 19 + "1",
                               "18446744073709551615", "18446744073709551616", "1" + "0" * 20])
        if kind == 5:
            return str(rng.randrange(1, 10 ** rng.randrange(1, 21)))
        return str(rng.randrange(10 ** 21))

    def respell(v: str) -> str:
        return rng.choice([v, "0" + v, v.lstrip("0") or "0", number()])

    packets = []
    for _ in range(n):
        lines = [b"POST /v1/chat/completions HTTP/1.1", b"Host: api.example"]
        cl = number()
        if rng.random() < 0.8:
            lines.append(b"Content-Length: " + cl.encode())
        if rng.random() < 0.35:
            lines.append(b"Content-Length:" + rng.choice([b" ", b"", b"\t"]) + respell(cl).encode())
        if rng.random() < 0.7:
            lines.append(b"X-Cost: " + number().encode() + rng.choice([b"", b" ", b"x"]))
        rng.shuffle(lines[1:])
        packets.append(b"\r\n".join(lines) + b"\r\n\r\n")
    return packets


@pytest.mark.parametrize("width", [4, 16])
def test_parser_numbers(width):
    """Content-Length and extra-slot numbers around 2^64 and 20 digits (kept as BCD in the RTL, converted after the
    packet stops), X-Cost in extra slot 0, against the model under backpressure."""
    packets = number_requests(random.Random(SEED + width), 3000)
    poly, seed = derive_key(b"numbers")
    config = ParserConfig(poly=poly, seed=seed, extras=[b"x-cost", None, None, None])
    (seg,), _ = _run(width, [(packets, config, (0.2, 0.2, 0.3))])
    expected = seg.expected
    # The file exercises what it is meant to (else the test proves nothing).
    u64 = (1 << 64) - 1
    assert sum(d.cl_overflow for d in expected) > 50
    assert sum(d.cl_present and not d.cl_overflow and d.content_length > 10 ** 19 for d in expected) > 50
    assert sum(d.extra_numeric and d.extra_value == u64 for d in expected) > 50
    assert sum(ErrorFlag.cl_mismatch in d.errors for d in expected) > 50
    assert sum(ErrorFlag.bad_content_length in d.errors for d in expected) > 50

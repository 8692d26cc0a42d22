"""The parser's tokenizer (hdl/parser/tokenizer.py) and byte classes (hdl/parser/classify.py) against their references.

- ``classify`` against ``class_of`` for all 256 bytes;
- the reference state sequence (``next_state``) against the bit-exact parser model: where a request line, a field
  line and the header block end;
- the RTL's per-lane states against the reference, on mixed good and bad traffic, W = 4/8/16, at full rate (with the
  exact latency) and under random valid/ready backpressure.
"""

import random

import pytest
from amaranth import Module, Signal
from amaranth.lib import data
from amaranth.sim import Simulator

from support.pysim import packet_runs, run_streams
from wirespeed.hdl.parser.classify import ByteClass, class_of, classify
from wirespeed.hdl.parser.tokenizer import TOKENIZER_LATENCY, Tok, TokenBeat, Tokenizer, next_state
from wirespeed.host.models.parser import parse
from wirespeed.host.tools import traffic

SEED = 20261206


def reference_states(packet: bytes) -> list[int]:
    """The tokenizer state before each byte of ``packet``."""
    states, s = [], Tok.METHOD
    for b in packet:
        states.append(s)
        s = next_state(s, b)
    return states


def test_classify_matches_reference_for_every_byte():
    m = Module()
    b = Signal(8)
    out = Signal(ByteClass)
    m.d.comb += out.eq(classify(b))
    seen = {}

    async def bench(ctx):
        for v in range(256):
            ctx.set(b, v)
            got = ctx.get(out)
            seen[v] = {name: int(getattr(got, name)) for name in ByteClass.members}

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    for v in range(256):
        assert seen[v] == class_of(v), hex(v)


def _complete_end(packet: bytes) -> int | None:
    """From the reference states alone: one past the LF that ends the header block (LF after a CR at line start)."""
    states = reference_states(packet)
    for i in range(2, len(packet)):
        if packet[i] == 0x0A and states[i] == Tok.CR_SEEN and states[i - 1] == Tok.LINE_START:
            return i + 1
    return None


def _committed_lines(packet: bytes, end: int) -> int:
    states = reference_states(packet)
    return sum(1 for i in range(2, end) if packet[i] == 0x0A and states[i] == Tok.CR_SEEN
               and states[i - 1] == Tok.VALUE)


def test_reference_states_agree_with_the_model():
    rng = random.Random(SEED)
    checked = 0
    for packet in traffic.mix(rng, 400, {"realistic": 80, "smuggling": 20}):
        desc = parse(packet)
        if not desc.complete:
            continue
        checked += 1
        assert _complete_end(packet) == desc.header_len
        assert _committed_lines(packet, desc.header_len) == desc.header_lines
    assert checked > 300


def _run(width, cases):
    """Each ``(packets, in_p, out_p, seed)`` of ``cases`` through one simulation of the tokenizer, one after the other,
    checked against the reference states; returns each case's ``(accepted, outputs)``."""
    runs = packet_runs(width, cases)
    results = run_streams(Tokenizer(width), runs)
    layout = TokenBeat(width)
    for (packets, _, _, _), (beats, _, _), (accepted, outputs) in zip(cases, runs, results):
        assert len(outputs) == len(beats)
        expected = []
        for p in packets:
            states = reference_states(p)
            chunks = [states[i:i + width] for i in range(0, len(p), width)] or [[]]
            expected += [(c, i == 0) for i, c in enumerate(chunks)]
        for n, ((cycle, value), beat, (states, first)) in enumerate(zip(outputs, beats, expected)):
            view = data.Const(layout, value)
            assert int(view.beat.as_value().value) == beat, n
            assert int(view.first) == first, n
            got = [int(view.state[k]) for k in range(len(states))]
            assert got == states, (n, got, states)
    return results


@pytest.mark.parametrize("width", [4, 8, 16])
def test_tokenizer_full_rate_then_under_backpressure(width):
    """At full rate (one beat per cycle, exact latency), then, in the same simulation once that has drained, under
    random valid/ready backpressure with a worst-case packet (support/pysim.py run_streams)."""
    rng = random.Random(SEED + width)
    full = list(traffic.mix(rng, 60))
    rng = random.Random(SEED * 3 + width)
    paused = list(traffic.mix(rng, 60)) + [traffic.worst_case(rng, width, 512)]
    (accepted, outputs), _ = _run(width, [(full, 0.0, 0.0, SEED), (paused, 0.3, 0.4, SEED + 1)])
    assert accepted == list(range(len(accepted)))                   # one beat per cycle, whatever the content
    assert [c for c, _ in outputs] == [a + TOKENIZER_LATENCY[width] for a in accepted]

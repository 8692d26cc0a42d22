"""HeaderParser volume: 10⁶ requests through the RTL (W=16) on the compiled harness, against the bit-exact model.

traffic.mix ─▶ ``i_stream`` ─▶ the parser (``Standalone``, Verilated, ``sim/harness.cpp``) ─▶ ``o_stream``, ``o_desc``
                  ``s_axil`` ─▶ (``configure_ops`` over :class:`HarnessAxiLite`)
host.parser.parse ─▶ expected descriptors ─▶ compared with ``o_desc`` here, in numpy

The requests go in segments of :data:`SEGMENT`; before each one the configuration changes, alternating between a fixed
one and a random one (duplicate prefixes, extra slot 0 numeric ...), written through the real registers. Every stream
has seeded random valid/ready gaps. Per segment the test checks:

- every pass-through beat equals the beat accepted, in the cycle it was accepted (nothing lost or added), and the
  bytes and packet boundaries reassembled from ``o_stream`` are the packets;
- exactly one descriptor per packet (none more during the cycles after the segment), each bit for bit ``parse()``;

and at the end the ``requests``/``complete``/``error_count`` counters against the model's descriptors.

The harness runs in a worker thread (the ctypes call releases the GIL) while this thread draws and parses the next
segment, so the model and the RTL cost about the larger of the two, and only two segments live at a time.
"""

import os
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from support.configs import random_parser_config
from support.parser_beats import FIXED_CONFIG, beat_bits, beat_fields, byte_beats
from wirespeed.hdl.bus.standalone import Standalone
from wirespeed.hdl.parser.header_parser import DESC_LATENCY_CYCLES, HeaderParser, parser_regmap
from wirespeed.hdl.parser.layouts import ErrorFlag
from wirespeed.host.tools import traffic
from wirespeed.host.models.parser import Descriptor, parse
from wirespeed.host.driver.parser_config import configure_ops
from wirespeed.host.driver.registers import Registers, run
from wirespeed.host.transports.sim import HarnessAxiLite
from wirespeed.sim.elaborate import cached_verilog
from wirespeed.sim.harness import ALWAYS, Batch, Harness, pause_pattern, words_from_ints

SEED = int(os.environ.get("PARSER_SEED", "20261125"))
WIDTH = 16
#: Requests per configuration.
SEGMENT = 2000
#: Per-cycle probabilities of a gap: i_stream valid, o_stream ready, o_desc ready (as the cocotb scoreboard had).
VALID_GAP, READY_GAP, DESC_READY_GAP = 0.2, 0.2, 0.4
#: Pattern lengths, distinct primes, so the three streams' gaps do not repeat together for ~7·10¹⁰ cycles.
PATTERN_LENGTHS = (4099, 4093, 4091)


# -- the harness side (runs in the worker thread) ---------------------------------------------------------------------

class ParserRig:
    """The parser (:class:`Standalone`) on the harness, with its registers over :class:`HarnessAxiLite`."""

    def __init__(self, width: int):
        top = f"parser_w{width}"
        verilog = cached_verilog(top, lambda: Standalone(HeaderParser(width), parser_regmap()), {"width": width})
        _, last_at = beat_bits(width)
        self.harness = Harness(verilog, top, last_fields={"o_stream": ("payload", last_at)}, reset_cycles=3)
        self.axil = HarnessAxiLite(self.harness)
        self.regs = Registers(parser_regmap())
        self.in_words = self.harness.by_name["i_stream"].words
        self.desc_words = self.harness.by_name["o_desc"].words

    def idle(self, cycles: int):
        """``cycles`` with both outputs ready and nothing offered: whatever comes out is a stray beat."""
        return self.harness.run(Batch(ready={"o_stream": ALWAYS, "o_desc": ALWAYS}, min_cycles=cycles))

    def segment(self, seg):
        run(configure_ops(self.regs, seg.config), self.axil)
        settle = self.idle(2)          # key residues settle one cycle after fp_poly changes
        result = self.harness.run(Batch(
            beats={"i_stream": seg.beats}, valid={"i_stream": seg.valid},
            ready={"o_stream": seg.ready, "o_desc": seg.desc_ready},
            expect={"o_desc": len(seg.packets)},
            capacity={"o_desc": len(seg.packets) + 64, "o_stream": len(seg.beats) + 64}))
        tail = self.idle(DESC_LATENCY_CYCLES + 2)
        return settle, result, tail

    def read(self, name: str) -> int:
        return run(self.regs.read(name), self.axil)


# -- the model side (this thread) -------------------------------------------------------------------------------------

class Segment:
    """One configuration's requests, their beats, their expected descriptors and the gap patterns."""

    def __init__(self, index: int, rng: random.Random, n: int, in_words: int, desc_words: int):
        self.index = index
        self.config = random_parser_config(rng) if index % 2 else FIXED_CONFIG
        self.packets = list(traffic.mix(rng, n))
        self.expected = [parse(p, self.config) for p in self.packets]
        self.beats = byte_beats(self.packets, WIDTH, in_words)
        self.want = words_from_ints([d.to_bits() for d in self.expected], desc_words)
        self.valid, self.ready, self.desc_ready = (
            pause_pattern(rng.getrandbits(32), p, length)
            for p, length in zip((VALID_GAP, READY_GAP, DESC_READY_GAP), PATTERN_LENGTHS))


def _first(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def check_segment(seg: Segment, settle, result, tail, previous: bytes):
    """Every check of one segment; the message names the packet, the segment and the seed."""
    where = f"segment {seg.index}, seed {SEED} (PARSER_SEED)"
    n = len(seg.packets)
    for name, r in (("before", settle), ("after", tail)):
        for stream in ("o_desc", "o_stream"):
            assert len(r.beats[stream]) == 0, f"{where}: {len(r.beats[stream])} {stream} beats with no packet " \
                                              f"({name} the segment)"

    # Pass-through: the very beats accepted, each in the cycle it was accepted.
    out, accepted = result.beats["o_stream"], result.accepted["i_stream"]
    beat_packet = np.repeat(np.arange(n), [max(1, -(-len(p) // WIDTH)) for p in seg.packets])
    assert len(out) == len(seg.beats), f"{where}: {len(out)} o_stream beats for {len(seg.beats)} accepted"
    differs = (out != seg.beats).any(axis=1)
    if differs.any():
        k = _first(differs)
        raise AssertionError(f"{where}: pass-through beat {k} differs (packet {beat_packet[k]})")
    late = result.beat_cycles["o_stream"] != accepted
    if late.any():
        k = _first(late)
        raise AssertionError(f"{where}: o_stream beat {k} (packet {beat_packet[k]}) in cycle "
                             f"{result.beat_cycles['o_stream'][k]}, accepted in cycle {accepted[k]}")
    # Bytes and boundaries, reassembled from o_stream alone.
    data, n_valid, last = beat_fields(out, WIDTH)
    assert result.packets["o_stream"] == n and last[-1], f"{where}: {result.packets['o_stream']} packet ends " \
                                                          f"on o_stream for {n} packets"
    lanes = np.arange(WIDTH)[None, :] < n_valid[:, None]
    got_bytes = data[lanes]
    want_bytes = np.frombuffer(b"".join(seg.packets), np.uint8)
    if len(got_bytes) != len(want_bytes) or (got_bytes != want_bytes).any():
        starts = np.cumsum([0] + [len(p) for p in seg.packets])
        k = _first(got_bytes[:len(want_bytes)] != want_bytes[:len(got_bytes)]) if len(got_bytes) == len(want_bytes) \
            else min(len(got_bytes), len(want_bytes))
        pi = int(np.searchsorted(starts, k, side="right")) - 1
        raise AssertionError(f"{where}: pass-through bytes differ from byte {k - starts[pi]} of packet {pi} "
                             f"({len(got_bytes)} bytes out, {len(want_bytes)} in)")
    ends = np.flatnonzero(last) + 1
    assert (np.diff(ends, prepend=0) == np.diff(np.searchsorted(beat_packet, np.arange(n + 1)))).all(), \
        f"{where}: packet boundaries differ"

    # One descriptor per packet, bit for bit.
    got = result.beats["o_desc"]
    assert len(got) == n, f"{where}: {len(got)} descriptors for {n} packets"
    wrong = (got != seg.want).any(axis=1)
    if wrong.any():
        k = _first(wrong)
        have = Descriptor.from_bits(int.from_bytes(got[k].tobytes(), "little"))
        want = seg.expected[k]
        diffs = {f: (getattr(have, f), getattr(want, f)) for f in want.__dataclass_fields__
                 if getattr(have, f) != getattr(want, f)}
        before = seg.packets[k - 1] if k else previous
        raise AssertionError(f"{where}: packet {k}: RTL != model {diffs} (RTL, model)\n"
                             f"config={seg.config}\npacket={seg.packets[k][:300]!r}\n"
                             f"previous packet={before[-200:]!r}")


def parser_volume(total: int):
    print(f"seed {SEED} (PARSER_SEED to override), {total} requests, W={WIDTH}")
    rng = random.Random(SEED)
    complete, errors = 0, [0] * len(ErrorFlag)
    with ThreadPoolExecutor(1, thread_name_prefix="harness") as pool:
        rig = pool.submit(ParserRig, WIDTH).result()   # the harness lives and runs in the worker thread only
        try:
            pending, previous, index = None, b"", 0
            done = 0
            while done < total or pending:
                seg = None
                if done < total:
                    n = min(SEGMENT, total - done)
                    seg = Segment(index, rng, n, rig.in_words, rig.desc_words)
                    for d in seg.expected:
                        complete += d.complete
                        for i, flag in enumerate(ErrorFlag):
                            errors[i] += flag in d.errors
                    done += n
                    index += 1
                if pending:
                    last_seg, future = pending
                    outcome = future.result()
                    pending = (seg, pool.submit(rig.segment, seg)) if seg else None
                    check_segment(last_seg, *outcome, previous)
                    previous = last_seg.packets[-1]
                else:
                    pending = (seg, pool.submit(rig.segment, seg))
            # The hardware counters agree with the model's descriptors.
            counters = pool.submit(lambda: {name: rig.read(name) for name in
                                            ["requests", "complete"] + [f"error_count[{i}]"
                                                                        for i in range(len(ErrorFlag))]}).result()
        finally:
            pool.submit(rig.axil.close).result()
    want = {"requests": total, "complete": complete, **{f"error_count[{i}]": errors[i] for i in range(len(ErrorFlag))}}
    wrong = {f"{name} ({list(ErrorFlag)[int(name[12:-1])].name})" if name.startswith("error_count") else name:
             (counters[name], want[name]) for name in want if counters[name] != want[name]}
    assert not wrong, f"counters (RTL, model): {wrong}, seed {SEED} (PARSER_SEED)"
    print(f"{total} requests, zero mismatches; error counters {errors}")


@pytest.mark.rtl
def test_parser_volume_fast():
    """20 000 requests: ten configurations, every stream with gaps."""
    parser_volume(20_000)


@pytest.mark.rtl
@pytest.mark.slow
def test_parser_volume():
    """10⁶ requests (PARSER_VOLUME to change), zero mismatches."""
    parser_volume(int(os.environ.get("PARSER_VOLUME", 1_000_000)))

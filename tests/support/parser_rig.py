"""HeaderParser (``Standalone``, Verilated) on the compiled harness, and the scoreboard every parser RTL test applies.

``ParserRig(width)`` ─▶ ``i_stream`` beats with a valid pattern ─▶ the parser ─▶ ``o_stream`` / ``o_desc`` with ready
patterns; its registers over :class:`HarnessAxiLite`, so every configuration goes through the real register bank.
:class:`Segment` holds one configuration's packets, their model descriptors (``parse``) and the gap patterns;
:func:`check_segment` checks one segment's run:

- no ``o_stream`` or ``o_desc`` beat before the segment or after it (``DESC_LATENCY_CYCLES`` + 2 idle cycles);
- every pass-through beat equals the beat accepted, in the cycle it was accepted, and the bytes and packet
  boundaries reassembled from ``o_stream`` alone are the packets;
- exactly one descriptor per packet, each bit for bit ``parse()``;
- with ``check_timing``: each descriptor exactly ``DESC_LATENCY_CYCLES`` after the beat holding the stop byte.

Used by ``tests/rtl/test_parser.py`` (directed, hypothesis and number traffic at W = 4/8/16) and
``tests/rtl/test_parser_volume.py`` (10⁶ requests at W = 16).
"""

from __future__ import annotations

import numpy as np

from support.parser_beats import beat_bits, beat_fields, byte_beats
from wirespeed.hdl.bus.standalone import Standalone
from wirespeed.hdl.parser.header_parser import DESC_LATENCY_CYCLES, HeaderParser, parser_regmap
from wirespeed.hdl.parser.layouts import ErrorFlag
from wirespeed.host.driver.parser_config import configure_ops
from wirespeed.host.driver.registers import Registers, run
from wirespeed.host.models.parser import Descriptor, ParserConfig, parse
from wirespeed.host.transports.sim import HarnessAxiLite
from wirespeed.sim.elaborate import cached_verilog
from wirespeed.sim.harness import ALWAYS, Batch, Harness, pause_pattern, words_from_ints

__all__ = ["ParserRig", "Segment", "check_segment", "COUNTERS", "PATTERN_LENGTHS"]

#: Pattern lengths, distinct primes, so the three streams' gaps do not repeat together for ~7·10¹⁰ cycles.
PATTERN_LENGTHS = (4099, 4093, 4091)
#: The parser's counters, read at the end of a run and compared with the model's descriptors.
COUNTERS = ["requests", "complete"] + [f"error_count[{i}]" for i in range(len(ErrorFlag))]


class ParserRig:
    """The parser (:class:`Standalone`) on the harness, with its registers over :class:`HarnessAxiLite`. One build per
    width (cached under ``build/harness``), shared by every test at that width."""

    def __init__(self, width: int):
        top = f"parser_w{width}"
        # params = width, as bench.parser_cycles and test_harness_vs_cocotb: one elaboration and one build per width
        verilog = cached_verilog(top, lambda: Standalone(HeaderParser(width), parser_regmap()), width)
        _, last_at = beat_bits(width)
        self.width = width
        self.harness = Harness(verilog, top, last_fields={"o_stream": ("payload", last_at)}, reset_cycles=3)
        self.axil = HarnessAxiLite(self.harness)
        self.regs = Registers(parser_regmap())
        self.in_words = self.harness.by_name["i_stream"].words
        self.desc_words = self.harness.by_name["o_desc"].words

    def idle(self, cycles: int):
        """``cycles`` with both outputs ready and nothing offered: whatever comes out is a stray beat."""
        return self.harness.run(Batch(ready={"o_stream": ALWAYS, "o_desc": ALWAYS}, min_cycles=cycles))

    def segment(self, seg: "Segment"):
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

    def counters(self) -> dict:
        return {name: self.read(name) for name in COUNTERS}

    def close(self):
        self.axil.close()


class Segment:
    """One configuration's packets, their beats, their expected descriptors and the three gap patterns (per-cycle
    probabilities of a gap on i_stream valid, o_stream ready, o_desc ready; 0 is a stream held high)."""

    def __init__(self, rig: ParserRig, packets: list[bytes], config: ParserConfig, gaps=(0.0, 0.0, 0.0),
                 seed: int = 0, index: int = 0):
        self.index, self.width = index, rig.width
        self.config = config
        self.packets = list(packets)
        self.expected = [parse(p, config) for p in self.packets]
        self.beats = byte_beats(self.packets, rig.width, rig.in_words)
        self.want = words_from_ints([d.to_bits() for d in self.expected], rig.desc_words)
        self.valid, self.ready, self.desc_ready = (
            pause_pattern(seed + k, p, length) if p else ALWAYS
            for k, (p, length) in enumerate(zip(gaps, PATTERN_LENGTHS)))

    def model_counters(self) -> dict:
        """What the parser's counters gain over this segment, from the model's descriptors."""
        out = {"requests": len(self.expected), "complete": sum(d.complete for d in self.expected)}
        for i, flag in enumerate(ErrorFlag):
            out[f"error_count[{i}]"] = sum(flag in d.errors for d in self.expected)
        return out


def _first(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def check_segment(seg: Segment, settle, result, tail, previous: bytes = b"", where: str = "",
                  check_timing: bool = False):
    """Every check of one segment; the message names the packet and ``where`` (segment and seed)."""
    where = where or f"segment {seg.index}"
    width = seg.width
    n = len(seg.packets)
    for name, r in (("before", settle), ("after", tail)):
        for stream in ("o_desc", "o_stream"):
            assert len(r.beats[stream]) == 0, f"{where}: {len(r.beats[stream])} {stream} beats with no packet " \
                                              f"({name} the segment)"

    # Pass-through: the very beats accepted, each in the cycle it was accepted.
    out, accepted = result.beats["o_stream"], result.accepted["i_stream"]
    per_packet = [max(1, -(-len(p) // width)) for p in seg.packets]
    beat_packet = np.repeat(np.arange(n), per_packet)
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
    data, n_valid, last = beat_fields(out, width)
    assert result.packets["o_stream"] == n and last[-1], f"{where}: {result.packets['o_stream']} packet ends " \
                                                          f"on o_stream for {n} packets"
    lanes = np.arange(width)[None, :] < n_valid[:, None]
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

    if check_timing:
        # Each descriptor exactly DESC_LATENCY_CYCLES after the cycle its stop beat was accepted.
        first_beat = np.cumsum([0] + per_packet[:-1])
        stop_beat = first_beat + np.array([d.stop_index(len(p)) // width
                                           for p, d in zip(seg.packets, seg.expected)], dtype=np.int64)
        latency = result.beat_cycles["o_desc"].astype(np.int64) - accepted[stop_beat].astype(np.int64)
        off = np.flatnonzero(latency != DESC_LATENCY_CYCLES)
        assert not len(off), f"{where}: packet {off[0]}: descriptor {latency[off[0]]} cycles after its stop beat " \
                             f"was accepted, not {DESC_LATENCY_CYCLES}"

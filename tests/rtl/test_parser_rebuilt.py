"""The rebuilt parser (``PipelinedParser``: the components joined) on the compiled harness, against the model.

DUT: ``Standalone(PipelinedParser(W))``, W = 4, 8 and 16, every configuration written through the real registers
(``configure_ops``), alternating the volume test's fixed configuration and random ones, so every segment also
exercises the table updates (key refill, name table, prefix entries) between packets. Per segment:

- every descriptor, bit for bit, ``parse()`` with the segment's configuration, under random valid/ready gaps;
- every pass-through beat is the beat accepted, in its cycle;
- at full rate (``traffic.mix`` with the corner packets and runs of one-beat packets mixed in, back to back, so up to
  one packet per cycle is in flight): one beat per cycle, any content, and each descriptor exactly
  ``desc_latency(W)`` cycles after the beat holding its stop byte (commit-rule stops included: a duplicate Host stops
  at its LF).
"""

import os
import random

import numpy as np
import pytest
from support.configs import random_parser_config
from support.parser_beats import FIXED_CONFIG, beat_bits, byte_beats
from wirespeed.hdl.bus.standalone import Standalone
from wirespeed.hdl.parser.header_parser import parser_regmap
from wirespeed.hdl.parser.parser_top import PipelinedParser, desc_latency
from wirespeed.host.driver.parser_config import configure_ops
from wirespeed.host.driver.registers import Registers, run
from wirespeed.host.models.parser import Descriptor, parse
from wirespeed.host.tools import traffic
from wirespeed.host.transports.sim import HarnessAxiLite
from wirespeed.sim.elaborate import cached_verilog
from wirespeed.sim.harness import ALWAYS, NO_DFG_PEEPHOLE, Batch, Harness, ints_from_words, pause_pattern

SEED = int(os.environ.get("PARSER_SEED", "20261206"))
#: The descriptor's latency after the stop beat (docs/performance.md): tokenizer, names, marks, fingerprint engine,
#: decode, compare, commit, report, FIFO.
LATENCY = {4: 26, 8: 29, 16: 32}
#: Cycles a configuration may hold the input: the key refill, the name table and 16 prefix entries, with margin.
UPDATE_STALL = 60_000

CORNERS = [
    b"GET /a?b HTTP/1.1\r\nhost: x\r\n\r\n", b"GET /abc", b"GET /abcdefg", b"GET ", b"GE", b"", b"GET ?q HTTP/1.1\r\n",
    b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
    b"POST /x HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 05\r\nhost: h\r\n\r\n",
    b"POST /x HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 5\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nauthorization: Bearer abc \r\nx-api-key: k\r\nhost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nauthorization: Basic abc\r\nx-api-key:\r\nhost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\na:\r\nb:\r\nc:\r\nhost:\r\n\r\n", b"GET /\x01 HTTP/1.1\r\n\r\n",
    b"GET /" + b"p" * 40 + b" HTTP/1.0\r\n\r\n", b"GET /v1/chat/completions?x HTTP/1.1\r\nhost: h\r\n\r\n",
    # A repeated Content-Length beats after the first, equal and then not; a repeat within one beat; a bad one.
    b"POST /x HTTP/1.1\r\ncontent-length: 7\r\nhost: h\r\nx-a: 1\r\ncontent-length: 7\r\ncontent-length: 8\r\n\r\n",
    b"POST /x HTTP/1.1\r\nhost: h\r\nc:\r\ncontent-length:1\r\ncontent-length:1\r\ncontent-length:2\r\n\r\n",
    b"POST /x HTTP/1.1\r\nhost: h\r\ncontent-length: 1x\r\nhost: i\r\n\r\n",
    b"POST /x HTTP/1.1\r\ncontent-length: 18446744073709551616\r\ncontent-length: 18446744073709551616\r\n"
    b"host: h\r\n\r\n",
    # Two different overflowing numbers of one length (only their fingerprints differ), and 2^64 - 1 then 2^64
    # (one length, the overflow bits differ): both repeats are mismatches.
    b"POST /x HTTP/1.1\r\ncontent-length: 18446744073709551616\r\ncontent-length: 18446744073709551617\r\n"
    b"host: h\r\n\r\n",
    b"POST /x HTTP/1.1\r\ncontent-length: 18446744073709551615\r\ncontent-length: 18446744073709551616\r\n"
    b"host: h\r\n\r\n",
]


class Rig:
    def __init__(self, width):
        top = f"pparser_w{width}"
        verilog = cached_verilog(top, lambda: Standalone(PipelinedParser(width), parser_regmap()), {"width": width})
        _, last_at = beat_bits(width)
        self.width = width
        # Verilator's DFG peephole pass is most of the W = 16 build's Verilating time (sim/harness.py NO_DFG_PEEPHOLE),
        # and the C++ compiles at -O0: the build is large (15 MB of C++ at W = 16) and the run is a few seconds.
        self.harness = Harness(verilog, top, last_fields={"o_stream": ("payload", last_at)}, reset_cycles=3,
                               verilator_args=NO_DFG_PEEPHOLE, opt="-O0")
        self.axil = HarnessAxiLite(self.harness)
        self.regs = Registers(parser_regmap())

    def segment(self, config, packets, valid, ready):
        run(configure_ops(self.regs, config), self.axil)
        beats = byte_beats(packets, self.width, self.harness.by_name["i_stream"].words)
        result = self.harness.run(Batch(
            beats={"i_stream": beats}, valid={"i_stream": valid}, ready={"o_stream": ready, "o_desc": ready},
            expect={"o_desc": len(packets)}, stall_cycles=UPDATE_STALL,
            capacity={"o_desc": len(packets) + 64, "o_stream": len(beats) + 64}))
        got = [Descriptor.from_bits(v) for v in ints_from_words(result.beats["o_desc"])]
        assert np.array_equal(result.beats["o_stream"], beats)
        assert np.array_equal(result.beat_cycles["o_stream"], result.accepted["i_stream"])
        return result, got


def _check(packets, got, config):
    assert len(got) == len(packets)
    for n, (packet, desc) in enumerate(zip(packets, got)):
        want = parse(packet, config)
        assert desc == want, (n, packet[:100], {f: (getattr(desc, f), getattr(want, f))
                                                for f in want.__dataclass_fields__
                                                if getattr(desc, f) != getattr(want, f)})


@pytest.mark.rtl
# W = 16 is slow (about 100 s alone, most of it Verilating 20 MB of Verilog; 300-440 s in the suite before its C++
# compiled at -O0): marked so, it starts at the head of a worker's queue (tests/conftest.py) instead of being the
# suite's tail.
@pytest.mark.parametrize("width", [4, 8, pytest.param(16, marks=pytest.mark.slow)])
def test_rebuilt_parser_vs_model(width):
    rng = random.Random(SEED + width)
    rig = Rig(width)
    for seg in range(4):
        config = random_parser_config(rng) if seg % 2 else FIXED_CONFIG
        full = seg == 0
        if full:
            # Any content at one beat per cycle: runs of one-beat packets (a packet starts every cycle, so the
            # FIFO must hold a descriptor for each one in flight) and the corner packets among realistic requests.
            runs = [[bytes(rng.choice(b"GET /\r\n:x") for _ in range(rng.randrange(width + 1)))
                     for _ in range(rng.randrange(1, 3 * width))] for _ in range(8)]
            packets = CORNERS * 2 + list(traffic.mix(rng, 300))
            rng.shuffle(packets)
            for run_ in runs:
                at = rng.randrange(len(packets))
                packets[at:at] = run_
        else:
            packets = CORNERS + list(traffic.mix(rng, 300))
        gaps = ALWAYS if full else pause_pattern(rng.getrandbits(32), 0.25, 4099)
        result, got = rig.segment(config, packets, gaps, ALWAYS if full else pause_pattern(rng.getrandbits(32),
                                                                                              0.25, 4093))
        _check(packets, got, config)
        if full:
            accepted = result.accepted["i_stream"]
            assert np.all(np.diff(accepted) == 1), "one beat per cycle"
            first, stops = 0, []
            for packet, desc in zip(packets, got):
                stops.append(accepted[first + desc.stop_index(len(packet)) // width])
                first += max(1, -(-len(packet) // width))
            latency = result.beat_cycles["o_desc"] - np.array(stops)
            assert set(latency.tolist()) == {desc_latency(width)} == {LATENCY[width]}


def test_rebuilt_parser_names_the_widths_it_has():
    # A width the stream has no layout for: a named error, before any elaboration.
    with pytest.raises(ValueError, match=r"stream width W must be one of \(4, 8, 16\) bytes, got 32"):
        PipelinedParser(32)

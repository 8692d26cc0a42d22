"""Bit-exact model of the telemetry counters, and their register-level block model.

verdicts ─▶ :class:`TelemetryModel` (the counters of :class:`~wirespeed.hdl.telemetry.counters.Telemetry`)
:class:`~.device.CoreModel` (bus access) ─▶ :class:`TelemetryBlock` ─▶ :class:`TelemetryModel`

Registers: ``hdl/telemetry/telemetry.rdl``. The driver's readers are in :mod:`wirespeed.host.driver.stats`.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from ...hdl.pipeline.layouts import ACTION_NAMES, ERROR_FLAG_COUNT, FLAG_NAMES, HIST_BUCKETS, LATENCY_MAX, REASON_NAMES
from .register_bank import BlockModel, RegisterBankModel

__all__ = ["TelemetryModel", "TelemetrySnapshot", "TelemetryBlock", "histogram_bucket", "bucket_bounds",
           "CTRL_PULSE_CYCLE", "ACTIONS", "REASONS", "ERROR_FLAGS"]

#: The cycle of a ``ctrl`` write's pulse (*P* of the RTL's contract, see :mod:`wirespeed.hdl.telemetry.counters`)
#: relative to the access's cycle count (:attr:`~.device.CoreModel.cycles` once the access is counted). The bank
#: fires single pulses in the cycle after it accepts the write, as for ``limiter.clock_ctrl.step``
#: (:data:`~.limiter.STEP_PULSE_CYCLE`, calibrated against the RTL).
CTRL_PULSE_CYCLE = -2

#: Counter names in register order: ``action_count[i]`` is ``ACTIONS[i]``, and so on.
ACTIONS = tuple(ACTION_NAMES[i] for i in range(len(ACTION_NAMES)))
REASONS = tuple(REASON_NAMES[i] for i in range(len(REASON_NAMES)))
ERROR_FLAGS = FLAG_NAMES[:ERROR_FLAG_COUNT]

_U64 = (1 << 64) - 1


def histogram_bucket(latency_cycles: int) -> int:
    """The histogram bucket of a latency: 0 for 0..1 cycles, *k* for [2^k, 2^(k+1)), the last for the rest."""
    if latency_cycles < 0:
        raise ValueError(f"latency_cycles={latency_cycles} is negative")
    return min(max(latency_cycles.bit_length() - 1, 0), HIST_BUCKETS - 1)


def bucket_bounds(bucket: int) -> tuple[int, int | None]:
    """The latencies bucket ``bucket`` counts: ``(low, high)`` in cycles, both inclusive; ``high`` is ``None`` for the
    last bucket (everything from ``2^(HIST_BUCKETS-1)`` up, saturated latencies included)."""
    if not 0 <= bucket < HIST_BUCKETS:
        raise ValueError(f"bucket={bucket} is not in 0..{HIST_BUCKETS - 1}")
    low = 0 if bucket == 0 else 1 << bucket
    return low, None if bucket == HIST_BUCKETS - 1 else (1 << (bucket + 1)) - 1


@dataclass(frozen=True)
class TelemetrySnapshot:
    """The telemetry counters at one moment, as the snapshot registers hold them (64-bit values wrap).

    Attributes
    ----------
    cycle : int
        ``snapshot_cycle``: the cycle of the snapshot pulse; the snapshot holds the events of earlier cycles.
    events : int
    actions, reasons, errors, histogram : tuple of int
        Indexed like :data:`ACTIONS`, :data:`REASONS`, :data:`ERROR_FLAGS` and the histogram buckets.
    latency_sum, latency_max : int
        In cycles.
    """
    cycle: int
    events: int
    actions: tuple[int, ...]
    reasons: tuple[int, ...]
    errors: tuple[int, ...]
    histogram: tuple[int, ...]
    latency_sum: int
    latency_max: int

    @classmethod
    def zero(cls) -> "TelemetrySnapshot":
        """The registers after reset."""
        return cls(0, 0, (0,) * len(ACTIONS), (0,) * len(REASONS), (0,) * len(ERROR_FLAGS), (0,) * HIST_BUCKETS,
                   0, 0)

    def register_values(self) -> dict[str, int]:
        """Every snapshot field by its name under the block (``"reason_count[3].count"``)."""
        values = {"snapshot_cycle.cycles": self.cycle, "events.count": self.events,
                  "latency_sum.cycles": self.latency_sum, "latency_max.cycles": self.latency_max}
        for reg, counts in (("action_count", self.actions), ("reason_count", self.reasons),
                            ("error_count", self.errors), ("latency_hist", self.histogram)):
            values |= {f"{reg}[{i}].count": n for i, n in enumerate(counts)}
        return values

    def as_stats(self) -> dict:
        """The snapshot as :func:`read_stats` returns it."""
        return {
            "cycle": self.cycle,
            "events": self.events,
            "actions": dict(zip(ACTIONS, self.actions)),
            "reasons": dict(zip(REASONS, self.reasons)),
            "errors": dict(zip(ERROR_FLAGS, self.errors)),
            "latency": {"histogram": list(self.histogram), "sum": self.latency_sum, "max": self.latency_max},
        }


def _check_event(action, reason, flags: int, latency_cycles: int) -> tuple[int, int]:
    action, reason = getattr(action, "value", action), getattr(reason, "value", reason)     # enum members too
    if not 0 <= action < 4 or not 0 <= reason < 64 or not 0 <= flags <= 0xFFFF_FFFF \
            or not 0 <= latency_cycles <= LATENCY_MAX:
        raise ValueError(f"event (action={action}, reason={reason}, flags={flags:#x}, "
                         f"latency_cycles={latency_cycles}) does not fit the event's fields (2, 6, 32 and 16 bits)")
    return action, reason


class TelemetryModel:
    """The live counters of :class:`~wirespeed.hdl.telemetry.counters.Telemetry` and their snapshot, event by event.

    The model has no clock: it counts what :meth:`record` gives it, in call order. :class:`TelemetryBlock` puts
    events and ``ctrl`` pulses in cycle order.

    Attributes
    ----------
    snap : TelemetrySnapshot
        What the registers read: the last :meth:`snapshot` (zeros before the first).
    """

    def __init__(self):
        self.snap = TelemetrySnapshot.zero()
        self.clear()

    def clear(self) -> None:
        """Zero the live counters (the snapshot keeps its values)."""
        self.events = 0
        self.actions = [0] * len(ACTIONS)
        self.reasons = [0] * len(REASONS)
        self.errors = [0] * len(ERROR_FLAGS)
        self.histogram = [0] * HIST_BUCKETS
        self.latency_sum = 0
        self.latency_max = 0

    def record(self, action: int, reason: int, flags: int, latency_cycles: int, count: int = 1) -> None:
        """Count one event (``count`` identical events). Arguments are the raw field values (``Action``/``Reason``
        members or ints); an action or reason outside its enum counts in ``events``, the error flags and the latency
        counters only, as in the RTL.
        """
        action, reason = _check_event(action, reason, flags, latency_cycles)
        self.events += count
        if action < len(self.actions):
            self.actions[action] += count
        if reason < len(self.reasons):
            self.reasons[reason] += count
        errors = flags & ((1 << ERROR_FLAG_COUNT) - 1)
        while errors:
            low = errors & -errors
            self.errors[low.bit_length() - 1] += count
            errors ^= low
        self.histogram[histogram_bucket(latency_cycles)] += count
        self.latency_sum += latency_cycles * count
        self.latency_max = max(self.latency_max, latency_cycles)

    def live(self, cycle: int = 0) -> TelemetrySnapshot:
        """The live counters as a snapshot at ``cycle`` would copy them."""
        w = lambda xs: tuple(x & _U64 for x in xs)
        return TelemetrySnapshot(cycle & _U64, self.events & _U64, w(self.actions), w(self.reasons), w(self.errors),
                                 w(self.histogram), self.latency_sum & _U64, self.latency_max)

    def snapshot(self, cycle: int) -> TelemetrySnapshot:
        """Copy the live counters, with ``cycle`` as ``snapshot_cycle``; returns the new :attr:`snap`."""
        self.snap = self.live(cycle)
        return self.snap


class TelemetryBlock(BlockModel):
    """The telemetry registers as the RTL drives them, around a :class:`TelemetryModel`.

    Cycle contract. ``record(..., cycle)`` takes the event's cycle *E*: the core cycle, in
    :attr:`~.device.CoreModel.cycles`' time base, in which the RTL's ``i_event.valid`` is high for it. A ``ctrl``
    write counted at access cycle *c* (``CoreModel.cycles`` after the access) pulses in *P* = *c* +
    :data:`CTRL_PULSE_CYCLE`. A snapshot in *P* holds exactly the events with *E* < *P* and reads *P* as
    ``snapshot_cycle``; a clear in *P* discards exactly the events with *E* < *P*.

    Events may be recorded ahead of time (*E* in the future: they wait for their cycle), but not late: recording an
    event with *E* below the last pulse's *P* raises ``ValueError``, since the RTL would have counted it on the other
    side of that pulse. Pending events are counted at the next pulse, or by :meth:`advance`.

    Parameters
    ----------
    bank : RegisterBankModel
        The core's register bank; its map must hold the ``telemetry.*`` registers.

    Attributes
    ----------
    model : TelemetryModel
        The counters, up to the last pulse.
    """

    PREFIX = "telemetry."

    def __init__(self, bank: RegisterBankModel):
        super().__init__(bank)
        self.model = TelemetryModel()
        self._pending: list[tuple[int, int, tuple]] = []    # (cycle, order, event): a heap
        self._order = 0
        self._counted_before = -1 << 64                    # the pulses and advance() so far reached this cycle
        for name, value in {"params.reasons": len(REASONS), "params.error_flags": len(ERROR_FLAGS),
                            "params.hist_buckets": HIST_BUCKETS}.items():
            self._set(name, value)
        self._publish()

    def record(self, action: int, reason: int, flags: int, latency_cycles: int, cycle: int) -> None:
        """One event whose ``i_event.valid`` is high in core cycle ``cycle`` (see the class docstring)."""
        if cycle < self._counted_before:
            raise ValueError(f"event at cycle {cycle} recorded after the block counted up to cycle "
                             f"{self._counted_before} (a ctrl pulse or advance()); record events in time")
        _check_event(action, reason, flags, latency_cycles)                 # fail here, not at the pulse
        heapq.heappush(self._pending, (cycle, self._order, (action, reason, flags, latency_cycles)))
        self._order += 1

    def advance(self, cycle: int) -> None:
        """Count now the events recorded for cycles before ``cycle``. Optional: it bounds the memory pending events
        take. Call it only when no ``ctrl`` pulse can come before ``cycle`` (e.g. with ``CoreModel.cycles`` after an
        access: the next access pulses later); a later pulse before ``cycle`` raises ``ValueError``."""
        self._advance(cycle)

    # -- bus events (called by CoreModel) --

    def before_read(self, reg: str, cycle: int) -> None:
        """Reads return the snapshot, published at its pulse: nothing to do."""

    def after_write(self, reg: str, cycle: int) -> None:
        """A write to register ``reg`` (full name) was accepted; ``cycle`` is the access's cycle count."""
        if reg != self.PREFIX + "ctrl":
            return
        snapshot, clear = self._fired("ctrl.snapshot"), self._fired("ctrl.clear")
        if not (snapshot or clear):
            return
        pulse = cycle + CTRL_PULSE_CYCLE
        if pulse < self._counted_before:
            raise ValueError(f"ctrl pulse at cycle {pulse} after advance({self._counted_before})")
        self._advance(pulse)
        if snapshot:
            self.model.snapshot(pulse)
            self._publish()
        if clear:
            self.model.clear()

    # -- behaviour --

    def _advance(self, cycle: int) -> None:
        """Count the pending events of cycles before ``cycle``."""
        pending = self._pending
        while pending and pending[0][0] < cycle:
            self.model.record(*heapq.heappop(pending)[2])
        self._counted_before = max(self._counted_before, cycle)

    def _publish(self) -> None:
        for name, value in self.model.snap.register_values().items():
            self._set(name, value)

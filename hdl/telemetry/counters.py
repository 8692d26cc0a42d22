"""Telemetry: counters and a latency histogram over every verdict the core decides, frozen by a snapshot.

verdict (one :class:`TelemetryEvent` per packet) ─▶ :class:`Telemetry` ─▶ snapshot registers ─▶ AXI4-Lite (host)

:mod:`wirespeed.host.models.telemetry` is the bit-exact model, :mod:`wirespeed.host.driver.stats` the driver's reader;
registers: ``telemetry.rdl``.

Counters (64 bits, wrapping): events; per ``Action``; per ``Reason`` (``hdl/pipeline/layouts.py``); per pipeline error
flag (flag bits ``0 .. ERROR_FLAG_COUNT-1``, each counted when set); a log2 histogram of ``latency_cycles``
(``HIST_BUCKETS`` buckets); the latency sum. Also
the latency maximum (16 bits) and a free-running 64-bit cycle counter (0 in the first cycle after reset, never
cleared). An event with an action or reason outside the enums counts in ``events`` (and the latency and error
counters) only.

Timing contract, with *E* the cycle in which ``i_event.valid`` is high and *P* the cycle in which the bank's
``ctrl.snapshot`` / ``ctrl.clear`` pulse (``regs.ctrl.*``) is high:

- a snapshot in cycle *P* copies exactly the events with *E* < *P*, and ``snapshot_cycle`` = the cycle counter in
  *P*. The copy is visible from cycle *P* + 1, so any read the bank accepts after the write's ack sees it;
- a clear in cycle *P* discards exactly the events with *E* < *P*; an event with *E* = *P* is counted after the clear
  (the clear does not win over it). The snapshot copy is untouched;
- both in one cycle (one ``ctrl`` write): the snapshot holds the events before *P*, the live counters restart with
  those from *P* on, so a snapshot-and-clear loses and double-counts nothing.

Structure. The input stage registers the event already decoded into one increment bit per counter (action, reason
and histogram bucket one-hot, error flags masked, latency zeroed when not valid). Event *E* is in that stage in cycle
*E* + 1 and reaches the live counters at its end. The snapshot copies each counter's *next* value without the clear
(``count + increment``), so the event in the stage during *P* (*E* = *P* - 1) is in the snapshot, and the clear
zeroes the same next value, so that event is not counted twice.

Cost: about 65 counters of 64 bits, each with its own 64-bit incrementer (a 32-slice CCU2 carry chain on ECP5) and
a 64-bit snapshot copy: about 8.4 k flip-flops and 4.2 k LUT4 for the adders and enables. The longest path is one
64-bit carry chain from a counter back to itself or to its snapshot; ``ctrl.snapshot`` and ``ctrl.clear`` each fan
out to every counter bit (about 4 k loads), which the router may need to buffer at 200 MHz.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..bus.regmap import HDL_DIR, compile_rdl, regmap_from_node
from ..bus.regbank import hw_signature
from ..pipeline.layouts import ERROR_FLAG_COUNT, HIST_BUCKETS, LATENCY_MAX, Action, Reason

__all__ = ["Telemetry", "TelemetryEvent", "telemetry_regmap", "COUNTER_BITS",
           "LATENCY_BITS"]

#: Width of every counter, the latency sum and the cycle counter.
COUNTER_BITS = 64
#: Width of ``latency_cycles`` (it saturates at ``LATENCY_MAX``).
LATENCY_BITS = LATENCY_MAX.bit_length()

#: Array registers and the count each must have.
_ARRAYS = {"action_count": len(Action), "reason_count": len(Reason), "error_count": ERROR_FLAG_COUNT,
           "latency_hist": HIST_BUCKETS}


def telemetry_regmap():
    """The telemetry block's register map on its own (addresses from 0), for a standalone bank.

    Raises ``ValueError`` if an array in ``telemetry.rdl`` does not match ``hdl/pipeline/layouts.py`` (a new reason
    needs a new ``reason_count`` entry there).
    """
    regmap = regmap_from_node(compile_rdl([HDL_DIR / "telemetry/telemetry.rdl"], "wirespeed_telemetry"))
    for name, count in _ARRAYS.items():
        have = sum(1 for reg in regmap.registers if reg.name.startswith(name + "["))
        if have != count:
            raise ValueError(f"telemetry.rdl declares {name}[{have}]; verdict_layouts needs {name}[{count}]")
    return regmap


class TelemetryEvent(wiring.Signature):
    """One decided packet, from the producer's point of view. No ``ready``: telemetry never stalls the pipeline.

    Members
    -------
    valid : Out(1)
        An event this cycle (at most one per cycle).
    action : Out(Action)
    reason : Out(Reason)
    flags : Out(32)
        The verdict's flags; bit *i* is ``FLAG_NAMES[i]``.
    latency_cycles : Out(16)
        First beat accepted → verdict valid, saturating at ``LATENCY_MAX``.
    """

    def __init__(self):
        super().__init__({
            "valid": Out(1),
            "action": Out(Action),
            "reason": Out(Reason),
            "flags": Out(32),
            "latency_cycles": Out(LATENCY_BITS),
        })


def _bucket_hits(latency) -> list:
    """One bit per histogram bucket: bucket 0 holds 0..1, bucket k holds [2^k, 2^(k+1)), the last one the rest."""
    last = HIST_BUCKETS - 1
    hits = [latency < 2]
    hits += [(latency >= (1 << k)) & (latency < (1 << (k + 1))) for k in range(1, last)]
    hits.append(latency >= (1 << last))
    return hits


class Telemetry(wiring.Component):
    """Verdict counters, latency histogram, and their snapshot (see the module docstring for the cycle contract).

    Attributes
    ----------
    i_event : In(TelemetryEvent)
        One event per cycle at most; sampled in the cycle ``valid`` is high, never stalled.
    regs : In(hw signature of ``telemetry.rdl``)
        Connect to the register bank's ``telemetry`` block: ``ctrl`` pulses in, snapshot values out.
    """

    def __init__(self):
        super().__init__({
            "i_event": In(TelemetryEvent()),
            "regs": In(hw_signature(telemetry_regmap())),
        })

    def elaborate(self, platform):
        m = Module()
        ev, regs = self.i_event, self.regs
        snap, clear = regs.ctrl.snapshot, regs.ctrl.clear

        m.d.comb += [regs.params.reasons.eq(len(Reason)), regs.params.error_flags.eq(ERROR_FLAG_COUNT),
                     regs.params.hist_buckets.eq(HIST_BUCKETS)]

        # -- input stage: the event, decoded to one increment bit per counter ------------------------------------
        v = ev.valid
        incr = {"events": v}
        incr |= {f"action_count_{a.value}": v & (ev.action == a) for a in Action}
        incr |= {f"reason_count_{r.value}": v & (ev.reason == r) for r in Reason}
        incr |= {f"error_count_{i}": v & ev.flags[i] for i in range(ERROR_FLAG_COUNT)}
        incr |= {f"latency_hist_{k}": v & hit for k, hit in enumerate(_bucket_hits(ev.latency_cycles))}
        incr_r = {}
        for name, bit in incr.items():
            incr_r[name] = Signal(name=f"incr_{name}")
            m.d.sync += incr_r[name].eq(bit)
        latency_r = Signal(LATENCY_BITS)                    # 0 when no event: adds nothing, raises no maximum
        m.d.sync += latency_r.eq(Mux(v, ev.latency_cycles, 0))

        # -- live counters and their snapshot ----------------------------------------------------------------------
        def counter(name: str, delta, port):
            live = Signal(COUNTER_BITS, name=f"live_{name}")
            nxt = Signal(COUNTER_BITS, name=f"next_{name}")
            copy = Signal(COUNTER_BITS, name=f"snap_{name}")
            m.d.comb += [nxt.eq(live + delta), port.eq(copy)]
            m.d.sync += live.eq(Mux(clear, 0, nxt))
            with m.If(snap):
                m.d.sync += copy.eq(nxt)

        for name, bit in incr_r.items():
            counter(name, bit, getattr(regs, name).count)
        counter("latency_sum", latency_r, regs.latency_sum.cycles)

        live_max = Signal(LATENCY_BITS)
        next_max = Signal(LATENCY_BITS)
        snap_max = Signal(LATENCY_BITS)
        m.d.comb += [next_max.eq(Mux(latency_r > live_max, latency_r, live_max)),
                     regs.latency_max.cycles.eq(snap_max)]
        m.d.sync += live_max.eq(Mux(clear, 0, next_max))
        with m.If(snap):
            m.d.sync += snap_max.eq(next_max)

        # The cycle counter is never cleared; the snapshot takes its value in the pulse's cycle.
        cycle = Signal(COUNTER_BITS)
        snap_cycle = Signal(COUNTER_BITS)
        m.d.sync += cycle.eq(cycle + 1)
        with m.If(snap):
            m.d.sync += snap_cycle.eq(cycle)
        m.d.comb += regs.snapshot_cycle.cycles.eq(snap_cycle)
        return m


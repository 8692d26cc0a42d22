"""The testbench base every RTL (cocotb) test builds its ``TB`` on: clock, reset, register access through the
production driver, and one per-cycle loop for streams and monitors.

test_<block>.py's ``TB(support.testbench.TB)`` ─▶ :class:`TB` ─┬▶ ``Clock`` on ``clk``, reset on ``rst``
                                                               ├▶ ``AxiLiteMaster`` ─▶ ``CocotbTransport`` ─▶
                                                               │  ``Registers`` + ``arun`` (the driver's own ops)
                                                               └▶ the cycle loop: stream endpoints, ``on_cycle``
                                                                  monitors, ``wait_until``

Cycles are counted at falling edges; ``TB.cycle`` is 0 in the first cycle after reset is released (the cycle in
which the DUT's own cycle counters read 0).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Callable

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, FallingEdge, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from wirespeed.host.driver.registers import Registers, arun
from wirespeed.host.transports.cocotb import CocotbTransport
from wirespeed.sim.runner import param

__all__ = ["TB"]


@dataclass
class _Waiter:
    predicate: Callable[[], object]
    event: Event
    what: str
    start: int
    timeout_cycles: int | None
    stall_cycles: int | None
    error: str | None = None


class TB:
    """Clock, reset and AXI4-Lite for one DUT with ``clk``/``rst`` ports.

    Parameters
    ----------
    dut :
        cocotb's handle of the toplevel.
    regmap : wirespeed.hdl.bus.regmap.RegMap, optional
        The map behind ``s_axil``, for :meth:`read`/:meth:`write` by name.
    axil : str or None
        Prefix of the AXI4-Lite port (``"s_axil"``); ``None`` for a DUT without one, or a test that drives the
        channels itself.
    clock_ns : float
        Clock period.
    seed : int, optional
        Seeds :attr:`rng`; default the ``seed`` parameter of :func:`~wirespeed.sim.runner.run_cocotb`, else
        cocotb's random seed. Logged, with ``seed_env`` as the variable that overrides it.

    Attributes
    ----------
    rng : random.Random
        The test's seeded generator.
    cycle : int
        The current cycle (updated at each falling edge while the cycle loop runs).
    axil, transport, regs :
        ``AxiLiteMaster``, the :class:`~wirespeed.host.transports.cocotb.CocotbTransport` over it, and
        :class:`~wirespeed.host.driver.registers.Registers` of ``regmap``.
    """

    def __init__(self, dut, *, regmap=None, axil: str | None = "s_axil", clock_ns: float = 4, seed: int | None = None,
                 seed_env: str | None = None):
        self.dut = dut
        self.clk, self.rst = dut.clk, dut.rst
        self.log = dut._log
        self.seed = seed if seed is not None else param("seed", cocotb.RANDOM_SEED)
        self.rng = random.Random(self.seed)
        self.log.info("seed %d%s", self.seed, f" ({seed_env} to override)" if seed_env else "")
        cocotb.start_soon(Clock(dut.clk, clock_ns, unit="ns").start())
        self.axil = self.transport = None
        if axil is not None:
            self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, axil, bus_separator="__"), dut.clk, dut.rst)
            # cocotbext-axi logs every access at INFO: thousands per test, and slow.
            self.axil.write_if.log.setLevel(logging.WARNING)
            self.axil.read_if.log.setLevel(logging.WARNING)
            self.transport = CocotbTransport(self.axil)
        self.regs = Registers(regmap) if regmap is not None else None
        self.cycle = 0
        self.in_reset = False
        self._endpoints = []
        self._hooks: list[Callable[[int], object]] = []
        self._waiters: list[_Waiter] = []
        self._loop = None
        self._restart = False
        self._progress_cycle = 0

    # -- reset --------------------------------------------------------------------------------------------------------

    async def reset(self, cycles: int = 3, settle: int = 2) -> None:
        """Hold ``rst`` for ``cycles`` rising edges (sources drop what they hold), release it, wait ``settle``
        cycles. :meth:`on_reset_released` runs at the release."""
        self.in_reset = True
        for endpoint in self._endpoints:
            endpoint._on_reset()
        self.rst.value = 1
        await ClockCycles(self.clk, cycles)
        self.rst.value = 0
        self.in_reset = False
        self._restart = True            # the next falling edge is cycle 0
        self.on_reset_released()
        await ClockCycles(self.clk, settle)

    def on_reset_released(self) -> None:
        """Called at the edge that releases reset, before the first cycle out of it (a monitor that must see that
        cycle starts here)."""

    # -- registers, through the driver's sans-IO ops ------------------------------------------------------------------

    async def run_ops(self, ops):
        """Execute a driver operation generator (``configure_ops(...)``, ``regs.read(...)``) on the DUT."""
        return await arun(ops, self.transport)

    async def read(self, name: str) -> int:
        return await arun(self.regs.read(name), self.transport)

    async def write(self, name: str, value: int) -> None:
        await arun(self.regs.write(name, value), self.transport)

    # -- the cycle loop -----------------------------------------------------------------------------------------------

    def _attach(self, endpoint) -> None:
        self._endpoints.append(endpoint)
        self._start()

    def on_cycle(self, hook: Callable[[int], object]):
        """Call ``hook(cycle)`` at every falling edge, after the streams sampled their handshakes (so
        ``source.handshake`` / ``sink.handshake`` are this cycle's). A hook may drive inputs for the next edge.
        Returns ``hook``."""
        self._hooks.append(hook)
        self._start()
        return hook

    def remove_hook(self, hook) -> None:
        self._hooks.remove(hook)

    def _start(self) -> None:
        if self._loop is None:
            self._loop = cocotb.start_soon(self._cycle_loop())

    async def _cycle_loop(self):
        rising, falling = RisingEdge(self.clk), FallingEdge(self.clk)
        endpoints, hooks = self._endpoints, self._hooks
        while True:
            if endpoints:
                await rising
                for endpoint in endpoints:
                    endpoint._drive()
            await falling
            if self._restart:
                self.cycle, self._restart, self._progress_cycle = 0, False, 0
            else:
                self.cycle += 1
            cycle, in_reset = self.cycle, self.in_reset
            progress = False
            for endpoint in endpoints:
                progress |= endpoint._sample(cycle, in_reset)
            if progress:
                self._progress_cycle = cycle
            for hook in hooks:
                hook(cycle)
            if self._waiters:
                self._check_waiters(cycle)

    def _check_waiters(self, cycle: int) -> None:
        for w in list(self._waiters):
            if w.predicate():
                pass
            elif w.timeout_cycles is not None and cycle - w.start >= w.timeout_cycles:
                w.error = f"{w.what}: not reached after {w.timeout_cycles} cycles (cycle {cycle}, seed {self.seed})"
            elif w.stall_cycles is not None and cycle - max(w.start, self._progress_cycle) >= w.stall_cycles:
                w.error = (f"{w.what}: no handshake on any stream for {w.stall_cycles} cycles (cycle {cycle}, "
                           f"seed {self.seed})")
            else:
                continue
            if w.error:
                w.error += "; streams: " + ", ".join(e.status() for e in self._endpoints)
            self._waiters.remove(w)
            w.event.set()

    async def wait_until(self, predicate: Callable[[], object], *, timeout_cycles: int | None = None,
                         stall_cycles: int | None = None, what: str = "condition") -> None:
        """Return at the first falling edge where ``predicate()`` holds (at once if it already does).

        Raises ``AssertionError`` after ``timeout_cycles`` cycles, or after ``stall_cycles`` cycles without a
        handshake on any stream of this TB: a stalled DUT fails the test instead of hanging it.
        """
        if predicate():
            return
        self._start()
        waiter = _Waiter(predicate, Event(), what, self.cycle, timeout_cycles, stall_cycles)
        self._waiters.append(waiter)
        await waiter.event.wait()
        if waiter.error:
            raise AssertionError(waiter.error)

    async def wait_cycles(self, n: int) -> None:
        """``n`` rising edges."""
        await ClockCycles(self.clk, n)

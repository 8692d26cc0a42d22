"""Bit-exact software model of the wirespeed core, behind the ``"model"`` URI.

``wirespeed.open("model")`` ─▶ :class:`~wirespeed.host.transports.model.ModelTransport` ─▶ :class:`CoreModel`
(register bank model + block models)

It answers every register access exactly as the RTL does (see :mod:`.register_bank`). Each block's register-level
model watches its registers: :class:`~.parser.ParserBlock`, :class:`~.limiter.LimiterBlock`,
:class:`~.router.RouterBlock`, :class:`~.telemetry.TelemetryBlock` and, for the submit window and result
FIFO, :class:`~.pipeline.PipelineBlock`, which runs each submitted packet through the pipeline model
(:func:`~.pipeline.classify_packet`) with the RTL's cycle timing.
"""

from __future__ import annotations

from ...hdl.frontend.layouts import PORT_ENTRIES
from ...hdl.id.id_block import FEATURES, CoreParams, build_hash
from .frontend import FrontEndConfig, payload_beat_ready_cycles
from .limiter import OP_NOW_CYCLE, READ_SAMPLE_CYCLE, STEP_PULSE_CYCLE, WRITE_EFFECT_CYCLE, LimiterBlock
from .parser import ParserBlock
from .pipeline import (STREAM_START_CYCLE, Outcome, PipelineBlock, classify_packet, limiter_now_cycle,
                       stream_batch_cycles)
from ...hdl.bus.regmap import OKAY
from .register_bank import RegisterBankModel
from ...hdl.bus.regmap import core_regmap
from .router import RouterBlock
from .telemetry import TelemetryBlock

__all__ = ["CoreModel", "AXIL_ACCESS_CYCLES"]

#: Core clock cycles one register access takes on the ``"sim"`` transport (AR or AW/W handshake, the target's
#: decide/accept/ack cycles, the R or B handshake); the model's notional clock advances by this much per access, and
#: a test asserts the two agree.
AXIL_ACCESS_CYCLES = 5
# The limiter block's events stay in cycle order only if each falls within its own access.
assert all(-AXIL_ACCESS_CYCLES < c <= 0 for c in (OP_NOW_CYCLE, READ_SAMPLE_CYCLE, STEP_PULSE_CYCLE, WRITE_EFFECT_CYCLE))


class CoreModel:
    """The whole core in Python: its register bank, the ID block's build-dependent values and the block models.

    Attributes
    ----------
    cycles : int
        The notional core cycle count: :data:`AXIL_ACCESS_CYCLES` per access. Block models time their events from it.
    limiter : LimiterBlock or None
        The limiter's register-level model, when ``params.limiter`` is set.
    router : RouterBlock or None
        The router's register-level model, when ``params.router`` is set.
    parser : ParserBlock or None
    pipeline : PipelineBlock or None
        The submit window and result FIFO, when the core has the whole pipeline (``submit`` feature).
    telemetry : TelemetryBlock or None
    """

    def __init__(self, params: CoreParams = CoreParams()):
        self.params = params
        regmap = core_regmap()
        if params.limiter is not None:
            regmap = regmap.with_resets({"limiter.clock_ns_per_cycle.value": params.limiter.ns_per_cycle_reset})
        self.regmap = regmap
        self.bank = RegisterBankModel(self.regmap)
        self.cycles = 0
        #: Moves at every register access and every packet through the pipeline (:meth:`read`, :meth:`write`,
        #: :meth:`classify`): a reader that derives something from the block models' tables (the ``"software"``
        #: transport's classifier) may keep it while this stays the same.
        self.generation = 0
        #: The cycle the front end's last payload beat left (``first_cycle + ready``, as ``classify`` counts), or
        #: None: its queue is one output beat a cycle, in order, across packets.
        self._payload_out = None
        p = params
        for name, value in {
            "id.build_hash.value": build_hash(p),
            "id.params_stream.width_bytes": p.width_bytes,
            "id.params_tenants.value": p.tenants,
            "id.params_maglev.value": p.maglev_size,
            "id.params_clock.hz": p.clock_hz,
        }.items():
            self.bank.set_hw(name, value)
        for feature in FEATURES:
            self.bank.set_hw(f"id.features.{feature}", feature in p.features)
        self.limiter = LimiterBlock(p.limiter, self.bank) if p.limiter is not None else None
        self.router = RouterBlock(p.router, self.bank) if p.router is not None else None
        self.parser = ParserBlock(self.bank) if "parser" in p.features else None
        has_pipeline = "submit" in p.features
        self.telemetry = TelemetryBlock(self.bank) if has_pipeline else None
        self.pipeline = PipelineBlock(self, p.submit_bytes) if has_pipeline else None
        # Word address -> (block model, register name) of the registers a block model watches.
        self._watched = {}
        for block in (self.limiter, self.router, self.parser, self.telemetry, self.pipeline):
            if block is not None:
                for reg in self.regmap.registers:
                    if reg.name.startswith(block.PREFIX):
                        for word in range(reg.words):
                            self._watched[reg.address + 4 * word] = (block, reg.name)

    def frontend_config(self) -> FrontEndConfig:
        """The front end's port set, as its registers hold it now."""
        return FrontEndConfig.from_register_values(
            {f"port{i}": self.bank.value(f"frontend.port{i}") for i in range(PORT_ENTRIES)})

    def classify(self, packet: bytes, inline: bool, first_cycle: int, mmio: bool = True) -> Outcome:
        """Run one packet whose first beat enters the pipeline in ``first_cycle`` through every block model, and
        count it where the RTL counts it (parser, limiter and router counters; telemetry at its verdict cycle)."""
        self.generation += 1
        limiter, clock = self.limiter.model, self.limiter.clock
        frontend = self.frontend_config()
        # The front end's output queue emits one beat a cycle, in order. A realigned inline packet whose last input
        # beat completes two payload beats leaves the second a cycle later; a packet right behind it whose first
        # beat is payload at once (lookaside) then leaves each beat a cycle late, until an input cycle without
        # payload (a gap, or an inline packet's headers) lets the queue catch up. Input is never stalled by it.
        ready, last = [], self._payload_out
        for r in payload_beat_ready_cycles(packet, inline, frontend, self.params.width_bytes):
            at = first_cycle + r if last is None else max(first_cycle + r, last + 1)
            ready.append(at - first_cycle)
            last = at
        self._payload_out = last
        outcome = classify_packet(
            packet, inline, self.params.width_bytes, self.parser.config(), frontend, limiter,
            self.router.model, lambda latency: clock.now(limiter_now_cycle(first_cycle, latency)), mmio=mmio,
            policy=self.pipeline.policy(), ready=ready)
        self.parser.count(outcome.descriptor)
        self.limiter._sync()
        rec = outcome.record
        self.telemetry.record(rec.action.value, rec.reason.value, rec.flags, rec.latency_cycles,
                              cycle=first_cycle + outcome.latency_cycles)
        return outcome

    def classify_stream(self, packets, inline: bool) -> list[Outcome]:
        """Packets sent back to back through ``s_axis`` right after the last access, every ready high (the
        ``"sim"`` transport's batch path): each first beat enters as the previous packet's last beat leaves, and the
        batch takes :func:`~.pipeline.stream_batch_cycles` cycles."""
        w = self.params.width_bytes
        cycle = start = self.cycles + STREAM_START_CYCLE
        outcomes = []
        for p in packets:
            outcomes.append(self.classify(p, inline, cycle, mmio=False))
            cycle += max(1, -(-len(p) // w))
        self.cycles += stream_batch_cycles(cycle - start)
        self.bank.set_hw("id.uptime_cycles.cycles", self.cycles)
        return outcomes

    def _tick(self) -> None:
        self.cycles += AXIL_ACCESS_CYCLES
        self.bank.set_hw("id.uptime_cycles.cycles", self.cycles)

    def read(self, address: int) -> tuple[int, int]:
        self.generation += 1
        self._tick()
        hit = self._watched.get(address & ~3)
        if hit is not None:
            block, reg = hit
            block.before_read(reg, self.cycles)
        data, resp = self.bank.read(address)
        if resp != OKAY:
            self.bank.incr("id.bus_errors.count")
        return data, resp

    def write(self, address: int, data: int, strb: int = 0xF) -> int:
        self.generation += 1
        self._tick()
        resp = self.bank.write(address, data, strb)
        if resp != OKAY:
            self.bank.incr("id.bus_errors.count")
        else:
            hit = self._watched.get(address & ~3)
            if hit is not None:
                block, reg = hit
                block.after_write(reg, self.cycles)
        return resp

"""Register-level model of the limiter block: the ``limiter.*`` registers of the core answered as the RTL answers them.

:class:`~.model.CoreModel` (bus access, one notional cycle count) ─▶ :class:`LimiterBlock`
    ─▶ :class:`~.limiter.LimiterModel` (tenant table, plans, commands) and :class:`ClockModel` (the ns clock)

The register bank model holds the storage; this block reacts to the writes the RTL reacts to (``go`` pulses, policy
registers, the clock rate and step) and drives the fields the RTL drives (parameters, read-back, status, counters,
``clock_now``). There is no traffic in the core model yet, so table ops and commands complete at once.
"""

from __future__ import annotations

from ..hdl.limiter_layouts import CostSource, LimiterParams, TableOp, UnknownPolicy
from .limiter import LimiterConfig, LimiterModel
from .register_model import BlockModel, RegisterBankModel

__all__ = ["LimiterBlock", "ClockModel", "WRITE_EFFECT_CYCLE", "STEP_PULSE_CYCLE", "READ_SAMPLE_CYCLE",
           "OP_NOW_CYCLE", "COUNTERS"]

# When things happen within one bus access, in core cycles relative to the access's cycle count (the value
# ``CoreModel.cycles`` has once the access is counted; every access takes AXIL_ACCESS_CYCLES). Calibrated against
# the RTL by tests/rtl/test_tenants_sim.py, where "sim" and "model" must return identical clock readings and
# tenant timestamps: the register bank accepts a request 3 cycles before the end of its access (the B or R
# handshake and the transport's return take the rest), samples hardware values in that cycle, updates storage and
# fires single pulses in the next one; a table op enters the pipeline's S0 the cycle after its pulse.

#: A write to ``clock_ns_per_cycle`` takes effect from this cycle: the accumulator adds the new rate at this
#: cycle's edge and every later one.
WRITE_EFFECT_CYCLE = -2
#: ``clock_ctrl.step`` pulses in this cycle; ``clock_step`` is added at its edge, with that cycle's rate.
STEP_PULSE_CYCLE = -2
#: A read of ``clock_now`` returns the clock as it stands in this cycle.
READ_SAMPLE_CYCLE = -3
#: A table op (``tbl_op.go``) samples ``now`` in this cycle (a new tenant's ``last``).
OP_NOW_CYCLE = -1

#: Global counters the block mirrors from the model, by register name under ``limiter.``.
COUNTERS = ("allow", "reject_429", "reject_401", "punt", "cmd_applied", "cmd_unknown", "table_ops")

_ACC_MOD = 1 << 96
_U64 = (1 << 64) - 1
_POLICIES = {p.value: p for p in UnknownPolicy}


class ClockModel:
    """The RTL's 96-bit clock accumulator ``{now_ns (64), frac (32)}``, advanced exactly and lazily.

    Every core cycle the accumulator adds ``rate`` (``clock_ns_per_cycle``, 32.32); a step pulse adds
    ``step << 32`` too. Between events the accumulator is linear in the cycle count, so only the value at the last
    event, its cycle and the rate are kept. ``value(c)`` is the accumulator after ``c`` cycles from reset. Events
    must come in cycle order.
    """

    def __init__(self, rate: int):
        self.acc = 0
        self.cycle = 0
        self.rate = rate

    def value(self, cycle: int) -> int:
        """The 96-bit accumulator at ``cycle``."""
        return (self.acc + self.rate * (cycle - self.cycle)) % _ACC_MOD

    def now(self, cycle: int) -> int:
        """``now_ns`` at ``cycle``: the accumulator's top 64 bits."""
        return self.value(cycle) >> 32

    def set_rate(self, cycle: int, rate: int) -> None:
        """The rate register holds ``rate`` from ``cycle`` on (it is added at that cycle's edge and later ones)."""
        self.acc, self.cycle, self.rate = self.value(cycle), cycle, rate

    def step(self, cycle: int, step_ns: int) -> None:
        """A step pulse in ``cycle``: the next edge adds ``step_ns`` (two's complement) besides the rate."""
        self.acc = (self.value(cycle + 1) + ((step_ns & _U64) << 32)) % _ACC_MOD
        self.cycle = cycle + 1


class LimiterBlock(BlockModel):
    """The limiter's registers as the RTL drives them, around a :class:`~.limiter.LimiterModel`.

    Parameters
    ----------
    params : LimiterParams
        The limiter's elaboration parameters.
    bank : RegisterBankModel
        The core's register bank; its map must hold the ``limiter.*`` registers, with ``clock_ns_per_cycle``
        resetting to ``params.ns_per_cycle_reset``.

    Attributes
    ----------
    model : LimiterModel
        The tenant table, plans and counters.
    clock : ClockModel
        The nanosecond clock.
    """

    PREFIX = "limiter."
    COUNTERS = COUNTERS

    def __init__(self, params: LimiterParams, bank: RegisterBankModel):
        super().__init__(bank)
        self.params = params
        self.model = LimiterModel(params, LimiterConfig())
        self.clock = ClockModel(bank.value("limiter.clock_ns_per_cycle"))
        p = params
        for name, value in {
            "params.plans": p.plans, "params.tick_log2": p.tick_log2, "params.counter_bits": p.counter_bits,
            "params.cmd_fifo_depth": p.cmd_fifo_depth, "widths.req_burst_bits": p.req_burst_bits,
            "widths.cost_burst_bits": p.cost_burst_bits, "widths.capacity_log2": p.slot_bits,
            "tbl_status.busy": 0, "tbl_status.error": 0, "cmd_status.waiting": 0,
        }.items():
            bank.set_hw(self.PREFIX + name, value)
        self._apply_config()
        self._sync()

    # -- bus events (called by CoreModel) --

    def before_read(self, reg: str, cycle: int) -> None:
        """A read of register ``reg`` (full name) is about to be answered; ``cycle`` is the access's cycle count."""
        if reg == "limiter.clock_now":
            self._set("clock_now.value", self.clock.now(cycle + READ_SAMPLE_CYCLE))

    def after_write(self, reg: str, cycle: int) -> None:
        """A write to register ``reg`` (full name) was accepted; ``cycle`` is the access's cycle count."""
        name = reg[len(self.PREFIX):]
        if name == "clock_ns_per_cycle":
            self.clock.set_rate(cycle + WRITE_EFFECT_CYCLE, self._value("clock_ns_per_cycle"))
        elif name == "clock_ctrl":
            if self._fired("clock_ctrl.step"):
                self.clock.step(cycle + STEP_PULSE_CYCLE, self._value("clock_step"))
        elif name in ("ctrl", "cost_fixed", "cost_scale"):
            self._apply_config()
        elif name == "plan_commit":
            if self._fired("plan_commit.go"):
                self._plan_commit()
        elif name == "tbl_op":
            if self._fired("tbl_op.go"):
                self._table_op(self.clock.now(cycle + OP_NOW_CYCLE))
        elif name == "cmd_push":
            if self._fired("cmd_push.go"):
                self.model.command(self._value("cmd_fp"), self._value("cmd_amount"),
                                   bool(self._field("cmd_push", "refund")))
                self._sync()

    # -- behaviour --

    def _apply_config(self) -> None:
        # The register keeps whatever was written; the RTL treats policy 3 like REJECT and cost source 3 like FIXED.
        policy = _POLICIES.get(self._field("ctrl", "unknown_policy"), UnknownPolicy.REJECT)
        source = self._field("ctrl", "cost_source")
        self.model.config = LimiterConfig(
            unknown_policy=policy, cost_source=CostSource(source) if source < 3 else CostSource.FIXED,
            cost_fixed=self._value("cost_fixed"), cost_scale=self._value("cost_scale"))

    def _plan_commit(self) -> None:
        index = self._field("plan_commit", "index")
        if index >= self.params.plans:
            return                                          # no such entry: the RTL ignores the commit
        self.model.write_plan_regs(
            index, self._value("plan_req_rate"), self._value("plan_req_cap"), self._value("plan_cost_rate"),
            self._value("plan_cost_cap"), self._value("plan_inv_req"), self._value("plan_inv_cost"))

    def _table_op(self, now_ns: int) -> None:
        op = self._field("tbl_op", "op")
        result = self.model.table_op(
            op, self._value("tbl_slot"), self._value("tbl_dst"), self._value("tbl_fp"),
            self._field("tbl_entry", "plan"), bool(self._field("tbl_entry", "valid")), now_ns)
        self._set("tbl_status.error", int(not result.ok))
        if result.ok and op == TableOp.READ.value:
            s = result.state
            for name, value in {"rd_tag.value": s.tag, "rd_entry.plan": s.plan, "rd_entry.valid": int(s.valid),
                                "rd_req.value": s.req_tokens, "rd_cost.value": s.cost_tokens,
                                "rd_last.value": s.last_ns, "rd_allowed.value": s.allowed,
                                "rd_rejected.value": s.rejected}.items():
                self._set(name, value)
        self._sync()

    def _sync(self) -> None:
        """Drive the fields that follow the model: the default slot and the global counters."""
        slot = self.model.default_slot
        self._set("default_slot.slot", slot)
        self._set("default_slot.valid", int(self.model.default_valid))
        self._mirror_counters(self.model)

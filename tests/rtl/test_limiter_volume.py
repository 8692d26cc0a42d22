"""RateLimiter volume: 10⁶ decisions through the RTL on the compiled harness, with the host busy all the while.

make_requests ─▶ ``i_req`` ─▶ ``Standalone(RateLimiter)`` (Verilated, ``sim/harness.cpp``) ─▶ ``o_verdict``
host actions ─▶ ``s_axil`` (table ops, debits/refunds, clock steps and rates, policy)      ─▶ ``o_probe``: S0
the S0 ops, in cycle order ─▶ ``LimiterModel`` ─▶ expected verdicts, table results ─▶ compared here

As the cocotb scoreboard in ``test_limiter.py`` did, the testbench learns from the pipeline's S0 (``probe``, here
made a stream by :class:`ProbedLimiter` so that the harness stamps every op with its cycle) which op entered at what
clock, applies the same op to the model in the same order, and checks bit for bit:

- in every cycle, a request was accepted exactly when a DECIDE entered S0;
- every verdict, in order (a 16-bit sequence number rides in ``meta``), against ``LimiterModel.decide``, and no
  sooner than ``LIMIT_LATENCY_CYCLES`` after its request;
- every table op's error flag, and every READ's state, against ``LimiterModel.table_op``;
- the counters at the end, and 50 tenants read back.

The host is the same random mix of actions (adding, updating, removing, reading tenants; refused table ops; debits and
refunds; clock steps and rate changes; policy changes; idle gaps), written as sans-IO generators of register
operations. The harness runs them as successive batches: each batch carries the host's operations up to the next
read whose value the host needs (a status poll, a read-back) or the next idle gap, together with a share of the
requests; the model catches up with each batch's S0 ops before the host sees its read data.
"""

import os
import random
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
from support.configs import limiter_requests, random_plan
from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import Out
from wirespeed.hdl.bus.standalone import Standalone
from wirespeed.hdl.limiter.rate_limiter import (LIMIT_LATENCY_CYCLES, LimitRequest, OpKind, RateLimiter, Trace,
                                   limiter_regmap, limiter_resets)
from wirespeed.hdl.limiter.layouts import CostSource, LimiterParams, TableOp, UnknownPolicy
from wirespeed.hdl.limiter.layouts import LimitVerdict as VerdictLayout
from wirespeed.hdl.parser.layouts import KeySource
from wirespeed.host.models.limiter import LimiterConfig, LimiterModel, LimitVerdict, Plan
from wirespeed.host.errors import TableFull
from wirespeed.host.placement import TenantPlacement
from wirespeed.hdl.bus.regmap import OKAY, RESP_NAMES
from wirespeed.host.driver.registers import Read, ReadBlock, Registers, Write, WriteBlock
from wirespeed.sim.elaborate import cached_verilog
from wirespeed.sim.harness import ALWAYS, Batch, Harness, ints_from_words, pause_pattern, words_from_ints

SEED = int(os.environ.get("LIMITER_SEED", "20261125"))
META = 16
U64 = (1 << 64) - 1
#: Requests per round; each round has its own valid/ready probabilities.
ROUND = 2000
ROUND_RATES = [(0.9, 0.9), (0.5, 1.0), (1.0, 0.6), (1.0, 1.0)]
#: Cycles one AXI4-Lite access takes on the harness's bus master.
ACCESS_CYCLES = 5


class ProbedLimiter(wiring.Component):
    """The limiter (:class:`Standalone`) with its ``probe`` as a stream, valid in the cycles an op enters S0, so that
    the harness records every op with its cycle (``o_probe`` is a monitor: its ``ready`` is ignored)."""

    def __init__(self, params: LimiterParams, meta_width: int):
        regmap = limiter_regmap().with_resets(limiter_resets(params))
        self._inner = Standalone(RateLimiter(params, meta_width), regmap)
        members = self._inner.signature.members
        super().__init__({"s_axil": members["s_axil"], "i_req": members["i_req"],
                          "o_verdict": members["o_verdict"], "o_probe": Out(stream.Signature(Trace))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.limiter = lim = self._inner
        wiring.connect(m, wiring.flipped(self.s_axil), lim.s_axil)
        wiring.connect(m, wiring.flipped(self.i_req), lim.i_req)
        wiring.connect(m, lim.o_verdict, wiring.flipped(self.o_verdict))
        m.d.comb += [self.o_probe.payload.eq(lim.probe), self.o_probe.valid.eq(lim.probe.kind != OpKind.NOP)]
        return m


@dataclass(frozen=True)
class Wait:
    """A host operation besides the bus's: let ``cycles`` clock cycles pass."""
    cycles: int


def _fields(layout):
    return {name: (f.offset, f.width) for name, f in layout}


REQ_F = _fields(LimitRequest)
TRACE_F = _fields(Trace)
VERDICT_BITS = VerdictLayout.as_shape().size


def _get(value, fields, name):
    off, width = fields[name]
    return (value >> off) & ((1 << width) - 1)


_REQ_SHIFTS = tuple(REQ_F[name][0] for name in ("key_fp", "key_present", "content_length", "cl_present",
                                                  "extra_numeric", "extra_value")) + (LimitRequest.size,)


def pack_request(key_fp, key_present, cl, cl_present, x_numeric, x_value, seq):
    """One ``i_req`` payload: the :data:`LimitRequest` fields, then ``seq`` in ``meta``."""
    s_fp, s_present, s_cl, s_cl_present, s_numeric, s_value, s_seq = _REQ_SHIFTS
    return ((key_fp << s_fp) | (key_present << s_present) | (cl << s_cl) | (cl_present << s_cl_present)
            | (x_numeric << s_numeric) | (x_value << s_value) | (seq << s_seq))


class LimiterBench:
    """The limiter on the harness, the model beside it, and the host's random activity."""

    def __init__(self, params: LimiterParams, seed: int):
        self.params = p = params
        self.seed = seed
        self.rng = random.Random(seed)
        top = "limiter_probed"
        verilog = cached_verilog(top, lambda: ProbedLimiter(p, META), (p, META))
        self.harness = Harness(verilog, top, reset_cycles=3)
        self.req_words = self.harness.by_name["i_req"].words
        self.regs = Registers(limiter_regmap())
        self.model = LimiterModel(p)
        self.placement = TenantPlacement(p.capacity)
        self.tenants = {}                      # fp -> plan index
        self.plan_of = {}                      # plan index -> Plan
        self.table_expect = None               # the table op the host started, not yet seen in S0
        self.table_result = None
        self.cmd_queue = []                    # commands pushed, not yet seen in S0
        self.events = {"decide": 0, "table": 0, "cmd": 0}
        self.expected = []                     # (seq, verdict, S0 cycle), in order, verdict not yet out
        self.outcomes = {}                     # (status, tenant|default) -> count
        self.verdicts = 0
        self.batches = 0
        self._config_key = None
        # The traffic of the current round (none outside rounds).
        self.requests, self.beats, self.offered = [], np.zeros((0, self.req_words), np.uint32), 0
        self.valid_pattern = self.ready_pattern = ALWAYS
        self.traffic_cycles = 0
        self.rate = 1.0
        self.round_target = 0

    def fail(self, message: str):
        raise AssertionError(f"{message} (seed {self.seed}, LIMITER_SEED to override)")

    # -- batches: the host's operations plus a share of the requests ------------------------------------------

    def batch(self, ops, min_cycles: int = 0):
        """Run ``ops`` (and ``min_cycles``) with the next share of the round's requests; update the model."""
        active = self.verdicts < self.round_target
        n = 0
        if self.offered < len(self.requests):
            cycles = ACCESS_CYCLES * len(ops) + min_cycles
            n = min(len(self.requests) - self.offered, int(cycles * self.rate * 2 * self.rng.random() + 0.5))
        beats = self.beats[self.offered:self.offered + n]
        valid = ready = ALWAYS
        if active:       # the round's patterns run on from batch to batch (pattern_offset)
            valid, ready = self.valid_pattern, self.ready_pattern
        result = self.harness.run(Batch(
            beats={"i_req": beats}, valid={"i_req": valid}, ready={"o_verdict": ready, "o_probe": ALWAYS}, ops=ops,
            min_cycles=min_cycles, stall_cycles=20_000, pattern_offset=self.traffic_cycles if active else 0,
            capacity={"o_probe": n + len(ops) + 64, "o_verdict": len(self.expected) + n + 64}))
        self.batches += 1
        for (write, address, _), resp in zip(ops, result.resps):
            if resp != OKAY:
                self.fail(f"AXI4-Lite {'write' if write else 'read'} at {address:#x}: {RESP_NAMES[resp]}")
        if active:
            self.traffic_cycles += result.cycles
        self.scoreboard(result, self.offered)
        self.offered += n
        return result

    def scoreboard(self, result, first: int):
        """Apply the batch's S0 ops to the model in cycle order, then check its verdicts."""
        probe_cycles = result.beat_cycles["o_probe"]
        traces = ints_from_words(result.beats["o_probe"])
        kinds = [_get(t, TRACE_F, "kind") for t in traces]
        decide_cycles = probe_cycles[np.array(kinds, dtype=np.int64) == OpKind.DECIDE]
        accepted = result.accepted["i_req"]
        if len(decide_cycles) != len(accepted) or (decide_cycles != accepted).any():
            only_s0 = sorted(set(decide_cycles.tolist()) - set(accepted.tolist()))
            only_acc = sorted(set(accepted.tolist()) - set(decide_cycles.tolist()))
            self.fail(f"requests accepted in cycles {only_acc[:5]} with no DECIDE in S0, DECIDEs in S0 in cycles "
                      f"{only_s0[:5]} with no request accepted")
        index = first
        for trace, kind, cycle in zip(traces, kinds, probe_cycles.tolist()):
            if kind == OpKind.DECIDE:
                self.decide(trace, self.requests[index], index & 0xFFFF, cycle)
                index += 1
            elif kind == OpKind.CMD:
                if not self.cmd_queue:
                    self.fail(f"cycle {cycle}: a command entered S0 that was never pushed")
                self.model.command(*self.cmd_queue.pop(0))
                self.events["cmd"] += 1
            elif kind == OpKind.TABLE:
                if self.table_expect is None:
                    self.fail(f"cycle {cycle}: a table op entered S0 that was never started")
                op, slot, dst, fp, plan, valid = self.table_expect
                self.table_expect = None
                self.table_result = self.model.table_op(op, slot, dst, fp, plan, valid, _get(trace, TRACE_F, "now"))
                self.events["table"] += 1
        for bits, cycle in zip(ints_from_words(result.beats["o_verdict"]), result.beat_cycles["o_verdict"].tolist()):
            verdict, seq = bits & ((1 << VERDICT_BITS) - 1), bits >> VERDICT_BITS
            if not self.expected:
                self.fail(f"cycle {cycle}: a verdict with no request")
            want_seq, want, s0_cycle = self.expected.pop(0)
            if seq != want_seq:
                self.fail(f"cycle {cycle}: verdict for request {seq} where {want_seq} was due")
            if verdict != want.to_bits():
                self.fail(f"request {seq}: RTL {LimitVerdict.from_bits(verdict)} != model {want}")
            if cycle - s0_cycle < LIMIT_LATENCY_CYCLES:
                self.fail(f"request {seq}: verdict {cycle - s0_cycle} cycles after S0, before "
                          f"LIMIT_LATENCY_CYCLES = {LIMIT_LATENCY_CYCLES}")
            self.verdicts += 1

    def decide(self, trace, request, seq, cycle):
        key = (_get(trace, TRACE_F, "policy"), _get(trace, TRACE_F, "cost_source"),
               _get(trace, TRACE_F, "cost_fixed"), _get(trace, TRACE_F, "cost_scale"),
               _get(trace, TRACE_F, "cost_scale_cl"))
        if key != self._config_key:
            policy, source, fixed, scale, scale_cl = self._config_key = key
            self.model.config = LimiterConfig(
                unknown_policy=UnknownPolicy.REJECT if policy == 3 else UnknownPolicy(policy),
                cost_source=CostSource(source), cost_fixed=fixed, cost_scale=scale, cost_scale_cl=scale_cl)
        fp, present, cl, cl_present, x_numeric, x_value = request
        desc = SimpleNamespace(key_source=KeySource.AUTHORIZATION if present else KeySource.NONE,
                               key_fp=fp, cl_present=bool(cl_present), content_length=cl,
                               extra_numeric=bool(x_numeric), extra_value=x_value)
        self.events["decide"] += 1
        source = self.model.config.cost_source
        if {CostSource.CONTENT_LENGTH: desc.cl_present, CostSource.EXTRA: desc.extra_numeric,
                CostSource.ESTIMATE: desc.extra_numeric or desc.cl_present}.get(source):
            self.events[source.name] = self.events.get(source.name, 0) + 1
        verdict = self.model.decide(desc, _get(trace, TRACE_F, "now"))
        outcome = (verdict.status, "default" if verdict.status in (200, 429) and not verdict.tenant_found
                   else "tenant")
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.expected.append((seq, verdict, cycle))

    def drive(self, ops_gen):
        """Run a host generator to its end: its operations go out batch by batch, each batch ending at a read whose
        value the generator needs or at a :class:`Wait`; returns the generator's value."""
        send, pending = None, []
        while True:
            try:
                op = ops_gen.send(send)
            except StopIteration as stop:
                if pending:
                    self.batch(pending)
                return stop.value
            send = None
            if isinstance(op, Write):
                pending.append((True, op.address, op.value))
            elif isinstance(op, WriteBlock):
                pending += [(True, op.address + 4 * i, v) for i, v in enumerate(op.values)]
            elif isinstance(op, Read):
                send = self.batch(pending + [(False, op.address, 0)]).reads[-1]
                pending = []
            elif isinstance(op, ReadBlock):
                send = self.batch(pending + [(False, op.address + 4 * i, 0) for i in range(op.count)]).reads
                pending = []
            elif isinstance(op, Wait):
                if pending:
                    self.batch(pending)
                    pending = []
                self.batch([], min_cycles=op.cycles)
            else:
                raise TypeError(f"not a host operation: {op!r}")

    # -- host side: sans-IO generators of register operations ----------------------------------------------------

    def read(self, name):
        return (yield from self.regs.read(name))

    def write(self, name, value):
        yield from self.regs.write(name, value)

    def write_plan(self, index, plan: Plan):
        regs = plan.registers(self.params)
        for name in ("req_rate", "cost_rate", "req_cap", "cost_cap"):
            yield from self.write(f"plan_{name}", regs[name])
        yield from self.write("plan_inv_req", regs["inv_req"])
        yield from self.write("plan_inv_cost", regs["inv_cost"])
        yield from self.write("plan_commit", index | (1 << 31))
        # Plans are written in setup only, with no request in flight, so the model may take it right away.
        self.model.write_plan(index, plan)
        self.plan_of[index] = plan

    def table_op(self, op, slot=0, dst=0, fp=0, plan=0, valid=False):
        yield from self.write("tbl_slot", slot)
        yield from self.write("tbl_dst", dst)
        yield from self.write("tbl_fp", fp)
        yield from self.write("tbl_entry", plan | (int(valid) << 8))
        self.table_expect = (op, slot, dst, fp, plan, valid)
        self.table_result = None
        yield from self.write("tbl_op", getattr(op, "value", op) | (1 << 31))
        for _ in range(1000):
            status = yield from self.read("tbl_status")
            if not status & 1:
                break
        else:
            self.fail("table op still busy after 1000 polls")
        result = self.table_result
        if result is None:
            self.fail(f"the table op {self.table_expect} never entered S0")
        if bool(status >> 1 & 1) != (not result.ok):
            self.fail(f"table op {op} slot {slot} dst {dst}: error flag {status >> 1 & 1}, model {result}")
        if op == TableOp.READ and result.ok:
            s = result.state
            got = {}
            for n in ("tag", "req", "cost", "last", "allowed", "rejected"):
                got[n] = yield from self.read(f"rd_{n}")
            entry = yield from self.read("rd_entry")
            want = {"tag": s.tag, "req": s.req_tokens, "cost": s.cost_tokens, "last": s.last_ns,
                    "allowed": s.allowed, "rejected": s.rejected}
            if got != want or (entry & 0x3F, entry >> 8 & 1) != (s.plan, int(s.valid)):
                self.fail(f"READ slot {slot}: RTL {got} entry {entry:#x}, model {s}")
        return result

    def push_command(self, fp, amount, refund):
        while (yield from self.read("cmd_status")) >= self.params.cmd_fifo_depth - 1:
            yield Wait(20)
        yield from self.write("cmd_fp", fp)
        yield from self.write("cmd_amount", amount)
        self.cmd_queue.append((fp, amount, refund))
        yield from self.write("cmd_push", int(refund) | (1 << 31))

    def random_plan(self):
        return random_plan(self.rng, self.params)

    def add_tenant(self, fp):
        index = self.rng.choice(list(self.plan_of))
        try:
            slot, moves = self.placement.insert(fp)
        except TableFull:
            return None
        for _, old, new in moves:
            r = yield from self.table_op(TableOp.MOVE, slot=old, dst=new)
            assert r.ok
        r = yield from self.table_op(TableOp.WRITE, slot=slot, fp=fp, plan=index, valid=True)
        assert r.ok
        self.tenants[fp] = index
        return slot

    def host(self, stop):
        """Random host activity until ``stop()``; ``self.keys`` grows as tenants are added."""
        rng, p = self.rng, self.params
        while not stop():
            action = rng.choices(
                ["add", "update", "remove", "read", "debit", "step", "policy", "default", "bad", "rate",
                 "idle"], [8, 3, 2, 4, 6, 3, 2, 1, 1, 1, 6])[0]
            live = list(self.tenants)
            if action == "add" and len(self.tenants) < p.capacity * 0.9:
                fp = rng.getrandbits(64)
                if (yield from self.add_tenant(fp)) is not None:
                    self.keys.append(fp)
            elif action == "update" and live:
                fp = rng.choice(live)
                index = rng.choice(list(self.plan_of))
                r = yield from self.table_op(TableOp.WRITE, slot=self.placement.lookup(fp), fp=fp, plan=index,
                                             valid=True)
                assert r.ok
                self.tenants[fp] = index
            elif action == "remove" and len(live) > 4:
                fp = rng.choice([k for k in live if k != self.generous])
                slot = self.placement.remove(fp)
                r = yield from self.table_op(TableOp.WRITE, slot=slot, fp=fp, valid=False)
                assert r.ok
                del self.tenants[fp]
            elif action == "read":
                slot = self.placement.lookup(rng.choice(live)) if live and rng.random() < 0.8 \
                    else rng.randrange(p.capacity)
                yield from self.table_op(TableOp.READ, slot=slot)
            elif action == "debit":
                fp = rng.choice(live) if live and rng.random() < 0.9 else rng.getrandbits(64)
                amount = rng.choice([0, 1, 5, 1000, rng.getrandbits(32)])
                yield from self.push_command(fp, amount, rng.random() < 0.5)
            elif action == "step":
                delta = rng.choice([1, 1000, 10**6, 10**9, rng.getrandbits(40), -rng.getrandbits(20)])
                yield from self.write("clock_step", delta & U64)
                yield from self.write("clock_ctrl", 1)
            elif action == "policy":
                yield from self.write("ctrl", rng.choice([0, 1, 1, 2, 3]) | (rng.randrange(4) << 4))
                yield from self.write("cost_fixed", rng.choice([0, 1, 3, 100, rng.getrandbits(32)]))
                yield from self.write("cost_scale", rng.choice([0, 1 << 16, 3 << 14, rng.getrandbits(32)]))
                yield from self.write("cost_scale_cl", rng.choice([0, 1 << 14, 1 << 16, rng.getrandbits(32)]))
            elif action == "default" and live:
                # Mostly the generous tenant from setup (when still present), so that defaults also pass.
                fp = self.generous if self.generous in self.tenants and rng.random() < 0.7 else rng.choice(live)
                yield from self.table_op(TableOp.SET_DEFAULT, slot=self.placement.lookup(fp))
            elif action == "bad":
                # Refused ops: out-of-range slot, a key that does not belong to the slot, same-half move,
                # unknown op code, a plan index beyond the table.
                choice = rng.randrange(5)
                if choice == 0:
                    r = yield from self.table_op(TableOp.READ, slot=p.capacity + rng.randrange(100))
                elif choice == 1:       # half 0, a bucket that is not the key's
                    fp = rng.getrandbits(64)
                    wrong = ((fp & (p.capacity // 8 - 1)) ^ 1) * 4
                    r = yield from self.table_op(TableOp.WRITE, slot=wrong, fp=fp, plan=0, valid=True)
                elif choice == 2:
                    half = p.capacity // 2
                    r = yield from self.table_op(TableOp.MOVE, slot=rng.randrange(half), dst=rng.randrange(half))
                elif choice == 3:
                    r = yield from self.table_op(rng.choice([0, 5, 6, 7]), slot=0)
                else:
                    fp = rng.getrandbits(64)
                    slot = (fp & (p.capacity // 8 - 1)) * 4
                    if self.placement.occupant(slot) is None and p.plans < 64:
                        r = yield from self.table_op(TableOp.WRITE, slot=slot, fp=fp, plan=p.plans, valid=True)
                    else:
                        continue
                if r.ok:
                    self.fail(f"op expected to be refused was accepted: {self.table_expect}")
            elif action == "rate":
                yield from self.write("clock_ns_per_cycle", rng.choice([0, 1 << 32, 5 << 32, 50_000 << 32,
                                                                        rng.getrandbits(48)]))
            else:
                yield Wait(rng.randrange(1, 40))

    # -- traffic ------------------------------------------------------------------------------------------------

    def make_requests(self, n):
        return limiter_requests(self.rng, self.keys, n)

    def round(self, requests, valid_p, ready_p):
        """Offer ``requests`` with random valid and ready while the host keeps the table, clock and policy busy,
        until every verdict is out; then the host finishes its current action."""
        self.requests, self.offered = requests, 0
        self.beats = words_from_ints([pack_request(*r, i & 0xFFFF) for i, r in enumerate(requests)], self.req_words)
        self.valid_pattern = pause_pattern(self.rng.getrandbits(32), 1 - valid_p, 4099)
        self.ready_pattern = pause_pattern(self.rng.getrandbits(32), 1 - ready_p, 4093)
        self.traffic_cycles = 0
        self.rate = min(valid_p, ready_p)
        self.round_target = self.verdicts + len(requests)
        self.drive(self.host(lambda: self.verdicts >= self.round_target))

    def idle_until(self, done, limit=200_000):
        for _ in range(0, limit, 20):
            if done():
                return
            self.batch([], min_cycles=20)
        self.fail("host activity did not finish")

    def check_counters(self):
        for name in ("allow", "reject_429", "reject_401", "punt", "cmd_applied", "cmd_unknown", "table_ops"):
            got = yield from self.read(name)
            if got != getattr(self.model, name):
                self.fail(f"counter {name}: RTL {got}, model {getattr(self.model, name)}")
        overflow = yield from self.read("cmd_overflow")
        if overflow:
            self.fail(f"cmd_overflow = {overflow}")

    def setup(self, tenants):
        p = self.params
        yield from self.write_plan(0, Plan(100_000, min(p.req_burst_max, 1000), 1 << 26,
                                           min(p.cost_burst_max, 1 << 22)).validate(p))
        for i in range(1, min(p.plans, 6)):
            yield from self.write_plan(i, self.random_plan())
        self.keys = []
        self.generous = self.rng.getrandbits(64)
        self.placement.insert(self.generous)
        slot = self.placement.lookup(self.generous)
        assert (yield from self.table_op(TableOp.WRITE, slot=slot, fp=self.generous, plan=0, valid=True)).ok
        assert (yield from self.table_op(TableOp.SET_DEFAULT, slot=slot)).ok
        self.tenants[self.generous] = 0
        yield from self.write("clock_ns_per_cycle", 20_000 << 32)      # 20 µs per cycle: refill is visible
        for _ in range(tenants):
            fp = self.rng.getrandbits(64)
            if (yield from self.add_tenant(fp)) is not None:
                self.keys.append(fp)


def limiter_volume(total: int):
    print(f"seed {SEED} (LIMITER_SEED to override), {total} requests")
    tb = LimiterBench(LimiterParams(), SEED)
    try:
        tb.drive(tb.setup(tenants=min(60, tb.params.capacity // 2)))
        tb.idle_until(lambda: tb.table_expect is None)
        done = 0
        for index in range(-(-total // ROUND)):
            n = min(ROUND, total - done)
            tb.round(tb.make_requests(n), *ROUND_RATES[index % len(ROUND_RATES)])
            done += n
        tb.idle_until(lambda: not tb.cmd_queue)
        tb.drive(tb.check_counters())
        # Every slot the model knows of reads back identically.
        for fp in list(tb.tenants)[:50]:
            tb.drive(tb.table_op(TableOp.READ, slot=tb.placement.lookup(fp)))
    finally:
        tb.harness.close()
    print(f"{total} requests, {tb.events}; {len(tb.tenants)} tenants; outcomes {tb.outcomes}; {tb.batches} batches; "
          f"verdicts and state match the model")
    assert tb.verdicts == total, (tb.verdicts, total)
    # The trace must have exercised every outcome: allowed and 429 (own and default tenant), 401, punt.
    for outcome in [(200, "tenant"), (429, "tenant"), (200, "default"), (429, "default"), (401, "tenant"),
                    (0, "tenant")]:
        assert tb.outcomes.get(outcome, 0) > 0, f"outcome {outcome} never occurred: {tb.outcomes}"
    assert tb.events["cmd"] > 20 and tb.events["table"] > 100, tb.events
    assert tb.events.get("CONTENT_LENGTH") and tb.events.get("EXTRA") and tb.events.get("ESTIMATE"), \
        "costs from both descriptor fields and the estimate"


@pytest.mark.rtl
@pytest.mark.slow
def test_limiter_volume():
    """At least 1 000 000 decisions (LIMITER_VOLUME to raise) with everything interleaved, zero mismatches."""
    limiter_volume(max(1_000_000, int(os.environ.get("LIMITER_VOLUME", 0))))

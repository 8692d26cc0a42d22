"""RateLimiter RTL on Verilator, scoreboarded against the bit-exact model (wirespeed.host.models.limiter).

DUT: ``Standalone(RateLimiter)`` (AXI4-Lite target + the limiter's generated register bank + RateLimiter), so plans,
tenants, commands, policy and the clock all go through the real registers, while requests stream in.

The testbench watches the pipeline's S0 (``probe``): every cycle it learns which op entered (request, debit/refund
command, table op) and at what clock value, and applies the same op to the model in the same order. Then it
checks, bit for bit:

- every verdict, in order (a 16-bit sequence number rides in ``meta``), against ``LimiterModel.decide``;
- every table op's error flag and every READ's state against ``LimiterModel.table_op``;
- the counters at the end;
- cycle counts: one decision per cycle with valid and ready held high (including one hot tenant back to back,
  which only works with the read-modify-write forwarding), and each verdict exactly ``LIMIT_LATENCY_CYCLES``
  after its request.
"""

import os

import pytest
from wirespeed.hdl.bus.standalone import Standalone
from wirespeed.hdl.limiter.rate_limiter import RateLimiter, limiter_regmap, limiter_resets
from wirespeed.hdl.limiter.layouts import LimiterParams
from wirespeed.sim.runner import param, run_cocotb

SEED = int(os.environ.get("LIMITER_SEED", "20261125"))

PARAMS = {
    "default": LimiterParams(),
    "small": LimiterParams(capacity=128, plans=8, cmd_fifo_depth=4),
    "compact": LimiterParams(capacity=1024, tick_log2=11, req_burst_bits=12, cost_burst_bits=22, counter_bits=0),
    "narrow-counters": LimiterParams(capacity=256, tick_log2=3, counter_bits=5),
}
META = 16


def _run(name, test, **parameters):
    p = PARAMS[name]
    run_cocotb(lambda: Standalone(RateLimiter(p, META), limiter_regmap().with_resets(limiter_resets(p))),
               toplevel=f"limiter_{name.replace('-', '_')}", test_file=__file__, testcase=test,
               parameters={"params": p.__dict__, "seed": SEED, **parameters}, design_key=(p, META))


@pytest.mark.rtl
@pytest.mark.parametrize("name", list(PARAMS))
def test_limiter_vs_model(name):
    """Long random trace: many tenants, hot tenants, clock steps, table ops, debits and refunds interleaved with
    traffic, random valid/ready."""
    _run(name, "scoreboard", requests=6000 if name != "default" else 20000)


@pytest.mark.rtl
@pytest.mark.parametrize("name", ["default", "compact"])
def test_limiter_cycle_counts(name):
    _run(name, "cycle_counts", requests=3000)


@pytest.mark.rtl
def test_limiter_commands_wait_for_idle_cycles():
    _run("small", "command_starvation")


@pytest.mark.rtl
def test_limiter_clock():
    _run("default", "clock")


# -- testbench (runs inside the simulator) ---------------------------------------------------------------------------

try:
    import cocotb
except ImportError:
    cocotb = None

if cocotb is not None:
    import random
    from collections import deque
    from types import SimpleNamespace

    from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge
    from support import testbench
    from support.configs import limiter_requests, random_plan
    from support.layouts import LayoutCodec, unpack
    from support.streams import StreamSink, StreamSource, random_pauses

    from wirespeed.hdl.limiter.rate_limiter import LIMIT_LATENCY_CYCLES, OpKind, Trace
    from wirespeed.hdl.limiter.layouts import CostSource, TableOp, UnknownPolicy
    from wirespeed.hdl.parser.layouts import KeySource
    from wirespeed.host.models.limiter import LimiterConfig, LimiterModel, LimitVerdict, Plan
    from wirespeed.host.errors import TableFull
    from wirespeed.host.placement import TenantPlacement

    U64 = (1 << 64) - 1
    TRACE = LayoutCodec(Trace)
    #: The order of make_requests' tuples: LimitRequest fields.
    REQUEST_FIELDS = ("key_fp", "key_present", "content_length", "cl_present", "extra_numeric", "extra_value")

    class TB(testbench.TB):
        def __init__(self, dut):
            super().__init__(dut, regmap=limiter_regmap(), seed_env="LIMITER_SEED")
            self.params = LimiterParams(**param("params"))
            dut._log.info("%s", self.params)
            layouts = RateLimiter(self.params, META)
            self.req = StreamSource(self, "i_req", layouts.in_layout)
            # The monitor checks each verdict in its cycle: nothing to queue.
            self.verdict_out = StreamSink(self, "o_verdict", layouts.out_layout, record={"verdict": LimitVerdict},
                                          queue=False)
            self.model = LimiterModel(self.params)
            self.placement = TenantPlacement(self.params.capacity)
            self.tenants = {}                      # fp -> plan index
            self.plan_of = {}                      # plan index -> Plan
            self.table_expect = None               # the table op the host is about to start
            self.table_result = None
            self.cmd_queue = []                    # commands pushed, not yet seen in S0
            self.events = {"decide": 0, "table": 0, "cmd": 0}
            self.expected = deque()                # (seq, verdict, accept cycle) in order
            self.latencies = []
            self.outcomes = {}                     # (status, tenant|default) -> count
            self.verdicts = 0
            self.monitoring = False

        async def reset(self):
            await super().reset()
            await RisingEdge(self.dut.clk)
            if not self.monitoring:
                self.on_cycle(self.monitor)
                self.monitoring = True

        # -- host side (AXI4-Lite), running concurrently with the traffic --

        async def write_plan(self, index, plan: Plan):
            regs = plan.registers(self.params)
            for name in ("req_rate", "cost_rate", "req_cap", "cost_cap"):
                await self.write(f"plan_{name}", regs[name])
            await self.write("plan_inv_req", regs["inv_req"])
            await self.write("plan_inv_cost", regs["inv_cost"])
            await self.write("plan_commit", index | (1 << 31))
            self.model.write_plan(index, plan)
            self.plan_of[index] = plan

        async def table_op(self, op, slot=0, dst=0, fp=0, plan=0, valid=False):
            await self.write("tbl_slot", slot)
            await self.write("tbl_dst", dst)
            await self.write("tbl_fp", fp)
            await self.write("tbl_entry", plan | (int(valid) << 8))
            self.table_expect = (op, slot, dst, fp, plan, valid)
            self.table_result = None
            await self.write("tbl_op", getattr(op, "value", op) | (1 << 31))
            for _ in range(1000):
                status = await self.read("tbl_status")
                if not status & 1:
                    break
            else:
                raise AssertionError("table op still busy after 1000 polls")
            result = self.table_result
            assert result is not None, "the table op never entered S0"
            assert bool(status >> 1 & 1) == (not result.ok), (op, slot, dst, result)
            if op == TableOp.READ and result.ok:
                s = result.state
                got = {n: await self.read(f"rd_{n}") for n in ("tag", "req", "cost", "last", "allowed",
                                                               "rejected")}
                entry = await self.read("rd_entry")
                want = {"tag": s.tag, "req": s.req_tokens, "cost": s.cost_tokens, "last": s.last_ns,
                        "allowed": s.allowed, "rejected": s.rejected}
                assert got == want, f"READ slot {slot}: RTL {got} model {want}"
                assert (entry & 0x3F, entry >> 8 & 1) == (s.plan, int(s.valid)), (entry, s)
            return result

        async def push_command(self, fp, amount, refund):
            while await self.read("cmd_status") >= self.params.cmd_fifo_depth - 1:
                await ClockCycles(self.dut.clk, 20)
            await self.write("cmd_fp", fp)
            await self.write("cmd_amount", amount)
            self.cmd_queue.append((fp, amount, refund))
            await self.write("cmd_push", int(refund) | (1 << 31))

        def random_plan(self):
            return random_plan(self.rng, self.params)

        async def add_tenant(self, fp):
            index = self.rng.choice(list(self.plan_of))
            try:
                slot, moves = self.placement.insert(fp)
            except TableFull:
                return None
            for _, old, new in moves:
                r = await self.table_op(TableOp.MOVE, slot=old, dst=new)
                assert r.ok
            r = await self.table_op(TableOp.WRITE, slot=slot, fp=fp, plan=index, valid=True)
            assert r.ok
            self.tenants[fp] = index
            return slot

        async def host(self, stop):
            """Random host activity until ``stop()``; ``self.keys`` grows as tenants are added."""
            rng, p = self.rng, self.params
            while not stop():
                action = rng.choices(
                    ["add", "update", "remove", "read", "debit", "step", "policy", "default", "bad", "rate",
                     "idle"], [8, 3, 2, 4, 6, 3, 2, 1, 1, 1, 6])[0]
                live = list(self.tenants)
                if action == "add" and len(self.tenants) < p.capacity * 0.9:
                    fp = rng.getrandbits(64)
                    if await self.add_tenant(fp) is not None:
                        self.keys.append(fp)
                elif action == "update" and live:
                    fp = rng.choice(live)
                    index = rng.choice(list(self.plan_of))
                    r = await self.table_op(TableOp.WRITE, slot=self.placement.lookup(fp), fp=fp, plan=index,
                                            valid=True)
                    assert r.ok
                    self.tenants[fp] = index
                elif action == "remove" and len(live) > 4:
                    fp = rng.choice([k for k in live if k != self.generous])
                    slot = self.placement.remove(fp)
                    r = await self.table_op(TableOp.WRITE, slot=slot, fp=fp, valid=False)
                    assert r.ok
                    del self.tenants[fp]
                elif action == "read":
                    slot = self.placement.lookup(rng.choice(live)) if live and rng.random() < 0.8 \
                        else rng.randrange(p.capacity)
                    await self.table_op(TableOp.READ, slot=slot)
                elif action == "debit":
                    fp = rng.choice(live) if live and rng.random() < 0.9 else rng.getrandbits(64)
                    amount = rng.choice([0, 1, 5, 1000, rng.getrandbits(32)])
                    await self.push_command(fp, amount, rng.random() < 0.5)
                elif action == "step":
                    delta = rng.choice([1, 1000, 10**6, 10**9, rng.getrandbits(40), -rng.getrandbits(20)])
                    await self.write("clock_step", delta & U64)
                    await self.write("clock_ctrl", 1)
                elif action == "policy":
                    await self.write("ctrl", rng.choice([0, 1, 1, 2, 3]) | (rng.randrange(4) << 4))
                    await self.write("cost_fixed", rng.choice([0, 1, 3, 100, rng.getrandbits(32)]))
                    await self.write("cost_scale", rng.choice([0, 1 << 16, 3 << 14, rng.getrandbits(32)]))
                    await self.write("cost_scale_cl", rng.choice([0, 1 << 14, 1 << 16, rng.getrandbits(32)]))
                elif action == "default" and live:
                    # Mostly the generous tenant from setup (when still present), so that defaults also pass.
                    fp = self.generous if self.generous in self.tenants and rng.random() < 0.7 else rng.choice(live)
                    await self.table_op(TableOp.SET_DEFAULT, slot=self.placement.lookup(fp))
                elif action == "bad":
                    # Refused ops: out-of-range slot, a key that does not belong to the slot, same-half move,
                    # unknown op code, a plan index beyond the table.
                    choice = rng.randrange(5)
                    if choice == 0:
                        r = await self.table_op(TableOp.READ, slot=p.capacity + rng.randrange(100))
                    elif choice == 1:       # half 0, a bucket that is not the key's
                        fp = rng.getrandbits(64)
                        wrong = ((fp & (p.capacity // 8 - 1)) ^ 1) * 4
                        r = await self.table_op(TableOp.WRITE, slot=wrong, fp=fp, plan=0, valid=True)
                    elif choice == 2:
                        half = p.capacity // 2
                        r = await self.table_op(TableOp.MOVE, slot=rng.randrange(half), dst=rng.randrange(half))
                    elif choice == 3:
                        r = await self.table_op(rng.choice([0, 5, 6, 7]), slot=0)
                    else:
                        fp = rng.getrandbits(64)
                        slot = (fp & (p.capacity // 8 - 1)) * 4
                        if self.placement.occupant(slot) is None and p.plans < 64:
                            r = await self.table_op(TableOp.WRITE, slot=slot, fp=fp, plan=p.plans, valid=True)
                        else:
                            continue
                    if r.ok:
                        raise AssertionError(f"op expected to be refused was accepted: {self.table_expect}")
                elif action == "rate":
                    await self.write("clock_ns_per_cycle", rng.choice([0, 1 << 32, 5 << 32, 50_000 << 32,
                                                                       rng.getrandbits(48)]))
                else:
                    await ClockCycles(self.dut.clk, rng.randrange(1, 40))

        # -- the scoreboard: a monitor that runs every cycle from reset on --

        def monitor(self, cycle):
            """Each cycle: apply what entered S0 to the model, and check every verdict that leaves."""
            trace = TRACE.unpack(int(self.dut.probe.value))
            took = self.req.handshake
            assert (took is not None) == (trace.kind == OpKind.DECIDE), \
                f"cycle {cycle}: accepted={took is not None} but S0 kind {trace.kind}"
            if trace.kind != OpKind.NOP:
                self.apply_trace(trace, None if took is None else self.req.codec.unpack(took.bits), cycle)
            out = self.verdict_out.handshake
            if out is not None:
                got = out.value
                assert self.expected, f"cycle {cycle}: a verdict with no request"
                want_seq, want, accepted_at = self.expected.popleft()
                assert got.meta == want_seq, f"verdict for request {got.meta} where {want_seq} was due"
                if got.verdict != want:
                    raise AssertionError(f"request {got.meta}: RTL {got.verdict} != model {want} (seed {self.seed})")
                self.latencies.append(cycle - accepted_at)
                self.verdicts += 1

        def apply_trace(self, trace, offered, cycle):
            kind, now = trace.kind, trace.now
            if kind == OpKind.DECIDE:
                self.model.config = LimiterConfig(
                    unknown_policy=UnknownPolicy.REJECT if trace.policy == 3 else UnknownPolicy(trace.policy),
                    cost_source=CostSource(trace.cost_source),
                    cost_fixed=trace.cost_fixed, cost_scale=trace.cost_scale,
                    cost_scale_cl=trace.cost_scale_cl)
                r, seq = offered.req, offered.meta
                desc = SimpleNamespace(key_source=KeySource.AUTHORIZATION if r.key_present else KeySource.NONE,
                                       key_fp=r.key_fp, cl_present=bool(r.cl_present),
                                       content_length=r.content_length, extra_numeric=bool(r.extra_numeric),
                                       extra_value=r.extra_value)
                self.events["decide"] += 1
                sources = {CostSource.CONTENT_LENGTH: desc.cl_present, CostSource.EXTRA: desc.extra_numeric,
                           CostSource.ESTIMATE: desc.extra_numeric or desc.cl_present}
                if sources.get(self.model.config.cost_source):
                    self.events[self.model.config.cost_source.name] = \
                        self.events.get(self.model.config.cost_source.name, 0) + 1
                verdict = self.model.decide(desc, now)
                outcome = (verdict.status, "default" if verdict.status in (200, 429) and not verdict.tenant_found
                           else "tenant")
                self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
                self.expected.append((seq, verdict, cycle))
            elif kind == OpKind.CMD:
                assert self.cmd_queue, "a command entered S0 that was never pushed"
                fp, amount, refund = self.cmd_queue.pop(0)
                self.model.command(fp, amount, refund)
                self.events["cmd"] += 1
            elif kind == OpKind.TABLE:
                assert self.table_expect is not None, "a table op entered S0 that was never started"
                op, slot, dst, fp, plan, valid = self.table_expect
                self.table_expect = None
                self.table_result = self.model.table_op(op, slot, dst, fp, plan, valid, now)
                self.events["table"] += 1

        async def traffic(self, requests, valid_p, ready_p):
            """Offer ``requests`` (tuples: fp, present, cl, cl_present, x_numeric, x_value) with random valid and
            ready, until every verdict is out. Returns the cycles of the first and last acceptance."""
            src, sink = self.req, self.verdict_out
            src.accepted.clear()
            # Pauses from their own generators: the host activity drawn from self.rng meanwhile does not depend on
            # how many cycles the traffic takes.
            src.set_pause_generator(random_pauses(random.Random(self.rng.getrandbits(64)), 1 - valid_p))
            sink.set_pause_generator(random_pauses(random.Random(self.rng.getrandbits(64)), 1 - ready_p))
            for qi, r in enumerate(requests):
                src.send({"req": dict(zip(REQUEST_FIELDS, r)), "meta": qi & 0xFFFF})
            target = self.verdicts + len(requests)
            await self.wait_until(lambda: self.verdicts >= target, stall_cycles=5000,
                                  what=f"verdicts for {len(requests)} requests")
            src.set_pause_generator(None)
            sink.set_pause_generator(None)
            return src.accepted[0].cycle, src.accepted[-1].cycle

        async def idle_until(self, done, limit=200_000):
            self.verdict_out.set_pause_generator(None)
            await self.wait_until(done, timeout_cycles=limit, what="host activity finished")

        def make_requests(self, n):
            return limiter_requests(self.rng, self.keys, n)

        async def check_counters(self):
            for name in ("allow", "reject_429", "reject_401", "punt", "cmd_applied", "cmd_unknown", "table_ops"):
                got = await self.read(name)
                assert got == getattr(self.model, name), f"counter {name}: RTL {got}, model {getattr(self.model, name)}"
            assert await self.read("cmd_overflow") == 0

        async def setup(self, tenants):
            p = self.params
            await self.write_plan(0, Plan(100_000, min(p.req_burst_max, 1000), 1 << 26,
                                          min(p.cost_burst_max, 1 << 22)).validate(p))
            for i in range(1, min(p.plans, 6)):
                await self.write_plan(i, self.random_plan())
            self.keys = []
            self.generous = self.rng.getrandbits(64)
            self.placement.insert(self.generous)
            slot = self.placement.lookup(self.generous)
            assert (await self.table_op(TableOp.WRITE, slot=slot, fp=self.generous, plan=0, valid=True)).ok
            assert (await self.table_op(TableOp.SET_DEFAULT, slot=slot)).ok
            self.tenants[self.generous] = 0
            await self.write("clock_ns_per_cycle", 20_000 << 32)      # 20 µs per cycle: refill is visible
            for _ in range(tenants):
                fp = self.rng.getrandbits(64)
                if await self.add_tenant(fp) is not None:
                    self.keys.append(fp)
            await self.idle_until(lambda: self.table_expect is None)

    async def _with_host(tb, coro):
        """Run the traffic coroutine while the host coroutine keeps the table, clock and policy busy."""
        done = False
        host = cocotb.start_soon(tb.host(lambda: done))
        result = await coro
        done = True
        await tb.idle_until(lambda: host.done())
        return result

    @cocotb.test()
    async def scoreboard(dut):
        tb = TB(dut)
        await tb.reset()
        await tb.setup(tenants=min(60, tb.params.capacity // 2))
        total = param("requests")
        done = 0
        batch = 0
        while done < total:
            n = min(2000, total - done)
            valid_p, ready_p = [(0.9, 0.9), (0.5, 1.0), (1.0, 0.6), (1.0, 1.0)][batch % 4]
            await _with_host(tb, tb.traffic(tb.make_requests(n), valid_p, ready_p))
            done += n
            batch += 1
        await tb.idle_until(lambda: not tb.cmd_queue)
        await tb.check_counters()
        # Every slot the model knows of reads back identically.
        for fp in list(tb.tenants)[:50]:
            await tb.table_op(TableOp.READ, slot=tb.placement.lookup(fp))
        dut._log.info("%d requests, %s; %d tenants; outcomes %s; verdicts and state match the model", total,
                      tb.events, len(tb.tenants), tb.outcomes)
        # The trace must have exercised every outcome: allowed and 429 (own and default tenant), 401, punt.
        for outcome in [(200, "tenant"), (429, "tenant"), (200, "default"), (429, "default"), (401, "tenant"),
                        (0, "tenant")]:
            assert tb.outcomes.get(outcome, 0) > 0, f"outcome {outcome} never occurred: {tb.outcomes}"
        assert tb.events["cmd"] > 20 and tb.events["table"] > 100, tb.events
        assert tb.events.get("CONTENT_LENGTH") and tb.events.get("EXTRA") and tb.events.get("ESTIMATE"), \
        "costs from both descriptor fields and the estimate"

    @cocotb.test()
    async def cycle_counts(dut):
        """valid and ready held high, no host activity: a decision every cycle, each LIMIT_LATENCY_CYCLES after its
        request. Half the requests hit one hot tenant back to back (the forwarding path)."""
        tb = TB(dut)
        await tb.reset()
        await tb.setup(tenants=20)
        await tb.write("clock_ns_per_cycle", 0)
        n = param("requests")
        hot = tb.keys[0]
        reqs = [(hot, 1, 0, 0, 0, 0) if i % 2 == 0 or i < n // 4 else (tb.rng.choice(tb.keys), 1, 0, 0, 0, 0)
                for i in range(n)]
        await tb.write("clock_step", 10**9)
        await tb.write("clock_ctrl", 1)
        await tb.write("clock_ns_per_cycle", 3 << 32)
        tb.latencies.clear()
        first, last = await tb.traffic(reqs, valid_p=1.0, ready_p=1.0)
        assert last - first == n - 1, f"{n} requests took {last - first + 1} cycles"
        assert set(tb.latencies) == {LIMIT_LATENCY_CYCLES}, sorted(set(tb.latencies))
        assert tb.model.allow and tb.model.reject_429, "the hot tenant must both pass and run dry"
        await tb.check_counters()
        dut._log.info("%d decisions in %d cycles, latency %d", n, last - first + 1, LIMIT_LATENCY_CYCLES)

    @cocotb.test()
    async def command_starvation(dut):
        """Commands wait while requests take every cycle (never delaying one), overflow is counted, and all queued
        commands run as soon as a cycle is free."""
        tb = TB(dut)
        await tb.reset()
        await tb.setup(tenants=10)
        depth = tb.params.cmd_fifo_depth
        reqs = [(tb.rng.choice(tb.keys), 1, 0, 0, 0, 0) for _ in range(3000)]

        async def pushes():
            await ClockCycles(dut.clk, 20)
            for i in range(depth + 3):
                fp = tb.keys[i % len(tb.keys)]
                if i < depth:
                    tb.cmd_queue.append((fp, 1, i % 2 == 1))
                await tb.write("cmd_fp", fp)
                await tb.write("cmd_amount", 1)
                await tb.write("cmd_push", (i % 2) | (1 << 31))
            assert await tb.read("cmd_status") == depth
            assert await tb.read("cmd_overflow") == 3

        task = cocotb.start_soon(pushes())
        first, last = await tb.traffic(reqs, valid_p=1.0, ready_p=1.0)
        assert last - first == len(reqs) - 1, "a command delayed a request"
        assert task.done()
        await tb.idle_until(lambda: not tb.cmd_queue)
        assert tb.events["cmd"] == depth
        assert await tb.read("cmd_status") == 0
        assert await tb.read("cmd_applied") == tb.model.cmd_applied == depth

    @cocotb.test()
    async def clock(dut):
        """The clock adds ns_per_cycle (32.32) every cycle and clock_step on a step pulse, exactly."""
        tb = TB(dut)
        await tb.reset()
        rate = (7 << 32) | 0x9E3779B9                    # 7.618... ns per cycle
        await tb.write("clock_ns_per_cycle", rate)
        await FallingEdge(dut.clk)
        seen = []
        for _ in range(50):
            seen.append(unpack(Trace, int(dut.probe.value)).now)
            await FallingEdge(dut.clk)
        # now is the integer part of a 96-bit accumulator: each step adds floor or ceil of the rate.
        for a, b in zip(seen, seen[1:]):
            assert b - a in (rate >> 32, (rate >> 32) + 1), (a, b)
        total = seen[-1] - seen[0]
        assert abs(total - (49 * rate >> 32)) <= 1
        before = await tb.read("clock_now")
        await tb.write("clock_ns_per_cycle", 0)
        frozen = await tb.read("clock_now")
        assert await tb.read("clock_now") == frozen, "with ns_per_cycle 0 the clock stands still"
        await tb.write("clock_step", (-12345) & U64)
        await tb.write("clock_ctrl", 1)
        assert await tb.read("clock_now") == (frozen - 12345) & U64
        assert before <= frozen

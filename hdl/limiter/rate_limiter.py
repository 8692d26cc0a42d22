"""Tenant table and token-bucket rate limiter: one decision per cycle.

parser descriptor (as a :data:`LimitRequest`) ─▶ :class:`RateLimiter` ─▶ one :class:`~.layouts.LimitVerdict`
per request, :data:`LIMIT_LATENCY_CYCLES` cycles after it is accepted

Behaviour is specified in ``docs/limiter.md``; :mod:`wirespeed.host.models.limiter` is the bit-exact model.

Pipeline (every stage advances together; the only stall is ``o_verdict`` not ready):

- **S0 select.** One op enters per cycle, by priority: a host table op (then two bubbles, so that no later op reads
  a tag before the op's tag write lands), a request, a debit/refund command (only in a cycle without a request, so
  commands never delay a decision). S0 samples the clock and the policy registers, and addresses both halves' tag
  RAMs.
- **S1 match.** The 8 tags of the two candidate buckets are compared with the key: the matching way gives the slot
  and the plan. The state RAM and the plan RAM are read. The request's cost is computed.
- **S2 update** (the read-modify-write loop). The slot's state comes from the RAM, or from the previous cycle's
  S2 write when that wrote the same slot (forwarding: the RAM read in S1 cannot see a write in the same cycle).
  Refill, decide, debit/refund, table writes; the new state is written back.
- **S3 retry.** ``retry_after`` from the deficits and the plan's reciprocals (two 64-bit multiplies): the exact
  ceiling division of :func:`wirespeed.host.models.limiter.wait_ticks`.
- **Output** register: ``o_verdict``.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..bus.regmap import HDL_DIR, compile_rdl, regmap_from_node
from .layouts import (COST_MAX, HALVES, WAYS, CostSource, Decision, LimiterParams, LimitVerdict, TableOp,
                              UnknownPolicy)
from ..bus.regbank import hw_signature

__all__ = ["RateLimiter", "LimitRequest", "limiter_regmap", "limiter_resets", "OpKind",
           "LIMIT_LATENCY_CYCLES", "TABLE_OP_BUBBLES", "Trace"]

#: Cycles from a request's acceptance (``i_req.valid & i_req.ready``) to its ``o_verdict.valid``.
LIMIT_LATENCY_CYCLES = 4
#: Idle S0 cycles after a WRITE, MOVE or SET_DEFAULT table op.
TABLE_OP_BUBBLES = 2

#: What the limiter needs of a parser descriptor.
LimitRequest = data.StructLayout({
    "key_present": 1,          # the descriptor's key_source is not NONE
    "key_fp": 64,
    "cl_present": 1,
    "content_length": 64,
    "extra_numeric": 1,        # the descriptor's extra slot 0 value is a number ...
    "extra_value": 64,         # ... this one
})


class OpKind:
    """The kind of op in a pipeline stage (also reported on ``probe.kind``)."""
    NOP, DECIDE, CMD, TABLE = range(4)


#: What the pipeline admitted in S0 this cycle, for testbenches (unused in synthesis).
Trace = data.StructLayout({
    "kind": 2,                 # OpKind; NOP also when nothing entered
    "now": 64,                 # the clock the op uses
    "policy": 2,
    "cost_source": 2,
    "cost_fixed": 32,
    "cost_scale": 32,
    "cost_scale_cl": 32,
})


def limiter_regmap():
    """The limiter's register map on its own (addresses from 0), for a standalone bank."""
    return regmap_from_node(compile_rdl([HDL_DIR / "limiter/limiter.rdl"], "wirespeed_limiter"))


def limiter_resets(params: LimiterParams, prefix: str = "") -> dict:
    """Register reset values that depend on the elaboration parameters (for :meth:`RegMap.with_resets`)."""
    return {f"{prefix}clock_ns_per_cycle.value": params.ns_per_cycle_reset}


def _quotient(fp, half: int, k: int):
    """The stored tag: the fingerprint bits the bucket index (``fp[0:k]`` in half 0, ``fp[32:32+k]`` in half 1)
    does not already imply."""
    return fp[k:64] if half == 0 else Cat(fp[0:32], fp[32 + k:64])


def _reconstruct(stored, half, bucket, k: int):
    """The full fingerprint from a stored tag and its slot's half (a Value) and bucket."""
    h0 = Cat(bucket, stored)
    h1 = Cat(stored[0:32], bucket, stored[32:])
    return Mux(half, h1, h0)


class RateLimiter(wiring.Component):
    """Per-tenant token buckets over a 2-choice, 4-way tenant table in on-chip RAM.

    Parameters
    ----------
    params : LimiterParams
        Capacity, plan count, time quantum, bucket and counter widths (``docs/limiter.md``, "Memory budget").
    meta_width : int
        Bits carried unchanged from each request to its verdict (e.g. the rest of the descriptor).

    Attributes
    ----------
    i_req : In(stream.Signature({"req": LimitRequest, "meta": meta_width}))
        Requests. Accepted one per cycle unless a table op takes the cycle.
    o_verdict : Out(stream.Signature({"verdict": LimitVerdict, "meta": meta_width}))
        One verdict per request, in order, :data:`LIMIT_LATENCY_CYCLES` cycles after acceptance when not stalled.
    regs : In(hw signature of ``limiter.rdl``)
        Connect to the register bank's ``limiter`` block.
    probe : Out(Trace)
        What entered S0 this cycle (for testbenches).
    """

    def __init__(self, params: LimiterParams = LimiterParams(), meta_width: int = 0):
        if not isinstance(params, LimiterParams):
            raise TypeError(f"params must be a LimiterParams, got {params!r}")
        self.params = params
        self.meta_width = meta_width
        self.in_layout = in_layout = data.StructLayout({"req": LimitRequest, "meta": unsigned(meta_width)})
        self.out_layout = out_layout = data.StructLayout({"verdict": LimitVerdict, "meta": unsigned(meta_width)})
        super().__init__({
            "i_req": In(stream.Signature(in_layout)),
            "o_verdict": Out(stream.Signature(out_layout)),
            "regs": In(hw_signature(limiter_regmap().with_resets(limiter_resets(params)))),
            "probe": Out(Trace),
        })

    def elaborate(self, platform):
        m = Module()
        p, regs = self.params, self.regs
        k, q = p.bucket_bits, p.tick_log2
        n_buckets = p.capacity // (HALVES * WAYS)
        sb = p.slot_bits
        unit = p.unit
        tb, rb, cb, nb = p.time_bits, p.req_bits, p.cost_bits, p.counter_bits
        pb = p.plan_bits

        # -- memories --------------------------------------------------------------------------------------------
        entry = data.StructLayout({"valid": 1, "plan": pb, "tag": p.tag_bits})
        ew = entry.size
        tag_mem = [Memory(shape=unsigned(WAYS * ew), depth=n_buckets, init=[]) for _ in range(HALVES)]
        for h, mem in enumerate(tag_mem):
            m.submodules[f"tags{h}"] = mem
        tag_rd = [mem.read_port(domain="sync") for mem in tag_mem]
        tag_wr = [mem.write_port(granularity=ew) for mem in tag_mem]

        state = data.StructLayout({"last": tb, "req": rb, "cost": cb, "allowed": nb, "rejected": nb})
        m.submodules.state = state_mem = Memory(shape=unsigned(state.size), depth=p.capacity, init=[])
        st_rd = state_mem.read_port(domain="sync")
        st_wr = state_mem.write_port()

        # ``*_unl``: the rate is 0, the bucket unlimited (decided at commit, so the decision loop reads a bit).
        plan = data.StructLayout({"req_rate": 30, "req_cap": rb, "cost_rate": 32, "cost_cap": cb,
                                  "inv_req": 64, "inv_cost": 64, "req_unl": 1, "cost_unl": 1})
        m.submodules.plans = plan_mem = Memory(shape=unsigned(plan.size), depth=p.plans, init=[])
        plan_rd = plan_mem.read_port(domain="sync")
        plan_wr = plan_mem.write_port()

        # -- output and the global advance -------------------------------------------------------------------------
        out = self.o_verdict
        advance = Signal()
        m.d.comb += advance.eq(~out.valid | out.ready)
        for port in (*tag_rd, st_rd, plan_rd):
            m.d.comb += port.en.eq(advance)

        # -- the clock ------------------------------------------------------------------------------------------------
        now = Signal(64)
        frac = Signal(32)
        step = Mux(regs.clock_ctrl.step, regs.clock_step.value, 0)
        m.d.sync += Cat(frac, now).eq(Cat(frac, now) + regs.clock_ns_per_cycle.value + Cat(Const(0, 32), step))
        m.d.comb += regs.clock_now.value.eq(now)

        # -- plan table writes (staging + commit) ---------------------------------------------------------------------
        plan_stage = Signal(plan)
        m.d.comb += [
            plan_stage.req_rate.eq(regs.plan_req_rate.value),
            plan_stage.req_cap.eq(regs.plan_req_cap.value),
            plan_stage.cost_rate.eq(regs.plan_cost_rate.value),
            plan_stage.cost_cap.eq(regs.plan_cost_cap.value),
            plan_stage.inv_req.eq(regs.plan_inv_req.value),
            plan_stage.inv_cost.eq(regs.plan_inv_cost.value),
            plan_stage.req_unl.eq(regs.plan_req_rate.value == 0),
            plan_stage.cost_unl.eq(regs.plan_cost_rate.value == 0),
            plan_wr.addr.eq(regs.plan_commit.index),
            plan_wr.data.eq(plan_stage),
            plan_wr.en.eq(regs.plan_commit.go & (regs.plan_commit.index < p.plans)),
        ]

        # -- host table op: latched on go, waits for S0 ---------------------------------------------------------------
        t_pending = Signal()
        t_op = Signal(3)
        t_slot = Signal(16)
        t_dst = Signal(16)
        t_fp = Signal(64)
        t_plan = Signal(6)
        t_valid = Signal()
        with m.If(regs.tbl_op.go & ~t_pending):
            m.d.sync += [t_pending.eq(1), t_op.eq(regs.tbl_op.op), t_slot.eq(regs.tbl_slot.value),
                         t_dst.eq(regs.tbl_dst.value), t_fp.eq(regs.tbl_fp.value),
                         t_plan.eq(regs.tbl_entry.plan), t_valid.eq(regs.tbl_entry.valid)]

        # -- debit/refund command FIFO --------------------------------------------------------------------------------
        cmd_layout = data.StructLayout({"fp": 64, "amount": 32, "refund": 1})
        m.submodules.cmd_fifo = cmd_fifo = SyncFIFO(width=cmd_layout.size, depth=p.cmd_fifo_depth)
        cmd_in = Signal(cmd_layout)
        m.d.comb += [
            cmd_in.fp.eq(regs.cmd_fp.value), cmd_in.amount.eq(regs.cmd_amount.value),
            cmd_in.refund.eq(regs.cmd_push.refund),
            cmd_fifo.w_data.eq(cmd_in),
            cmd_fifo.w_en.eq(regs.cmd_push.go),
            regs.cmd_overflow.count_incr.eq(regs.cmd_push.go & ~cmd_fifo.w_rdy),
            regs.cmd_status.waiting.eq(cmd_fifo.level),
        ]
        cmd_out = Signal(cmd_layout)
        m.d.comb += cmd_out.eq(cmd_fifo.r_data)

        # -- default tenant shadow ------------------------------------------------------------------------------------
        d_slot = Signal(sb)
        d_valid = Signal()
        d_plan = Signal(pb)
        m.d.comb += [regs.default_slot.slot.eq(d_slot), regs.default_slot.valid.eq(d_valid)]

        # -- parameters and read-only registers ----------------------------------------------------------------------
        m.d.comb += [
            regs.params.plans.eq(p.plans), regs.params.tick_log2.eq(q), regs.params.counter_bits.eq(nb),
            regs.params.cmd_fifo_depth.eq(p.cmd_fifo_depth),
            regs.widths.req_burst_bits.eq(p.req_burst_bits), regs.widths.cost_burst_bits.eq(p.cost_burst_bits),
            regs.widths.capacity_log2.eq(sb),
        ]

        # ================================================================================================ S0 select
        bubbles = Signal(range(TABLE_OP_BUBBLES + 1))
        s0_kind = Signal(2)
        sel_table = Signal()
        sel_req = Signal()
        sel_cmd = Signal()
        m.d.comb += [
            sel_table.eq(t_pending & (bubbles == 0)),
            sel_req.eq(~t_pending & (bubbles == 0) & self.i_req.valid),
            sel_cmd.eq(~t_pending & (bubbles == 0) & ~self.i_req.valid & cmd_fifo.r_rdy),
            self.i_req.ready.eq(advance & sel_req),
            cmd_fifo.r_en.eq(advance & sel_cmd),
            s0_kind.eq(Mux(sel_table, OpKind.TABLE, Mux(sel_req, OpKind.DECIDE,
                                                        Mux(sel_cmd, OpKind.CMD, OpKind.NOP)))),
        ]
        req = self.i_req.payload.req
        s0_fp = Signal(64)
        m.d.comb += s0_fp.eq(Mux(sel_table, t_fp, Mux(sel_req, req.key_fp, cmd_out.fp)))
        # Tag RAM addresses: the key's two candidate buckets; for a table op, the bucket of its slot.
        t_bucket = t_slot[2:2 + k]
        m.d.comb += [
            tag_rd[0].addr.eq(Mux(sel_table, t_bucket, s0_fp[0:k])),
            tag_rd[1].addr.eq(Mux(sel_table, t_bucket, s0_fp[32:32 + k])),
        ]
        tr = self.probe
        m.d.comb += [
            tr.kind.eq(Mux(advance, s0_kind, OpKind.NOP)), tr.now.eq(now),
            tr.policy.eq(regs.ctrl.unknown_policy), tr.cost_source.eq(regs.ctrl.cost_source),
            tr.cost_fixed.eq(regs.cost_fixed.value), tr.cost_scale.eq(regs.cost_scale.value),
            tr.cost_scale_cl.eq(regs.cost_scale_cl.value),
        ]
        with m.If(advance):
            with m.If(sel_table & (t_op != TableOp.READ)):
                m.d.sync += bubbles.eq(TABLE_OP_BUBBLES)
            with m.Elif(bubbles != 0):
                m.d.sync += bubbles.eq(bubbles - 1)
            with m.If(sel_table):
                m.d.sync += t_pending.eq(0)

        # S0 → S1 registers
        s1 = dict(kind=Signal(2), fp=Signal(64), key_present=Signal(), field=Signal(64), field_ok=Signal(),
                  meta=Signal(self.meta_width), now=Signal(64), policy=Signal(2), cost_source=Signal(2),
                  cost_fixed=Signal(32),
                  cost_scale=Signal(32), amount=Signal(32), refund=Signal(), op=Signal(3), slot=Signal(16),
                  dst=Signal(16), plan=Signal(6), valid=Signal())
        s1 = {n: Signal(s.shape(), name=f"s1_{n}") for n, s in s1.items()}
        # The field the cost comes from and its scale, chosen here so S1 has one multiply.
        source = regs.ctrl.cost_source
        by_extra = Signal()
        m.d.comb += by_extra.eq((source == CostSource.EXTRA)
                                | ((source == CostSource.ESTIMATE) & req.extra_numeric))
        by_length = Signal()
        m.d.comb += by_length.eq((source == CostSource.CONTENT_LENGTH)
                                 | ((source == CostSource.ESTIMATE) & ~req.extra_numeric))
        with m.If(advance):
            m.d.sync += [
                s1["kind"].eq(s0_kind), s1["fp"].eq(s0_fp),
                s1["key_present"].eq(Mux(sel_req, req.key_present, 1)),
                s1["field"].eq(Mux(by_extra, req.extra_value, req.content_length)),
                s1["field_ok"].eq(Mux(by_extra, req.extra_numeric, Mux(by_length, req.cl_present, 0))),
                s1["meta"].eq(self.i_req.payload.meta),
                s1["now"].eq(now), s1["policy"].eq(regs.ctrl.unknown_policy),
                s1["cost_source"].eq(regs.ctrl.cost_source), s1["cost_fixed"].eq(regs.cost_fixed.value),
                s1["cost_scale"].eq(Mux(by_length & (source == CostSource.ESTIMATE), regs.cost_scale_cl.value,
                                        regs.cost_scale.value)),
                s1["amount"].eq(cmd_out.amount), s1["refund"].eq(cmd_out.refund),
                s1["op"].eq(t_op), s1["slot"].eq(t_slot), s1["dst"].eq(t_dst), s1["plan"].eq(t_plan),
                s1["valid"].eq(t_valid),
            ]

        # ================================================================================================ S1 match
        ways = []                                        # (half, way, entry view)
        for h in range(HALVES):
            for w in range(WAYS):
                ways.append((h, w, data.View(entry, tag_rd[h].data[w * ew:(w + 1) * ew])))
        match = Signal(HALVES * WAYS)
        for i, (h, w, e) in enumerate(ways):
            m.d.comb += match[i].eq(e.valid & (e.tag == _quotient(s1["fp"], h, k)))
        found = Signal()
        m.d.comb += found.eq(match.any() & s1["key_present"])
        hit_slot = Signal(sb)
        hit_plan = Signal(pb)
        hit_bucket = [s1["fp"][0:k], s1["fp"][32:32 + k]]
        for i, (h, w, e) in reversed(list(enumerate(ways))):      # lowest index wins
            with m.If(match[i]):
                m.d.comb += [hit_slot.eq(Cat(Const(w, 2), hit_bucket[h], Const(h, 1))), hit_plan.eq(e.plan)]

        # The table op's own slot entry (its half, its way).
        t_half = s1["slot"][sb - 1]
        t_way = s1["slot"][0:2]
        t_entry = Signal(entry)
        raw = [tag_rd[h].data[w * ew:(w + 1) * ew] for h in range(HALVES) for w in range(WAYS)]
        m.d.comb += t_entry.eq(Array(raw)[Cat(t_way, t_half)])
        t_recon = Signal(64)
        m.d.comb += t_recon.eq(_reconstruct(t_entry.tag, t_half, s1["slot"][2:2 + k], k))

        # Which slot S1 reads, and with which plan.
        use_default = Signal()
        m.d.comb += use_default.eq(~found & (s1["policy"] == UnknownPolicy.DEFAULT) & d_valid)
        s1_slot = Signal(sb)
        s1_plan = Signal(pb)
        s1_found = Signal()
        with m.Switch(s1["kind"]):
            with m.Case(OpKind.TABLE):
                m.d.comb += [s1_slot.eq(s1["slot"][0:sb]),
                             s1_plan.eq(Mux(s1["op"] == TableOp.WRITE, s1["plan"][0:pb], t_entry.plan))]
            with m.Default():
                m.d.comb += [s1_slot.eq(Mux(found, hit_slot, d_slot)), s1_plan.eq(Mux(found, hit_plan, d_plan)),
                             s1_found.eq(found)]
        m.d.comb += [st_rd.addr.eq(s1_slot), plan_rd.addr.eq(s1_plan)]

        # Cost.
        scaled = Signal(96)
        m.d.comb += scaled.eq((s1["field"] * s1["cost_scale"]) >> 16)
        s1_cost = Signal(32)
        m.d.comb += s1_cost.eq(Mux(s1["field_ok"], Mux(scaled > COST_MAX, COST_MAX, scaled), s1["cost_fixed"]))

        # Table-op checks that need no state.
        slot_ok = (s1["slot"] < p.capacity)
        dst_ok = (s1["dst"] < p.capacity)
        belongs_w = Mux(t_half, s1["fp"][32:32 + k] == s1["slot"][2:2 + k], s1["fp"][0:k] == s1["slot"][2:2 + k])
        d_half = s1["dst"][sb - 1]
        belongs_m = Mux(d_half, t_recon[32:32 + k] == s1["dst"][2:2 + k], t_recon[0:k] == s1["dst"][2:2 + k])
        t_ok = Signal()
        with m.Switch(s1["op"]):
            with m.Case(TableOp.WRITE):
                m.d.comb += t_ok.eq(slot_ok & (~s1["valid"] | (belongs_w & (s1["plan"] < p.plans))))
            with m.Case(TableOp.MOVE):
                m.d.comb += t_ok.eq(slot_ok & dst_ok & (d_half != t_half) & belongs_m)
            with m.Case(TableOp.READ, TableOp.SET_DEFAULT):
                m.d.comb += t_ok.eq(slot_ok)

        # S1 → S2 registers
        s2 = {n: Signal(sig.shape(), name=f"s2_{n}") for n, sig in s1.items()
              if n in ("kind", "fp", "meta", "now", "policy", "amount", "refund", "op", "dst", "valid")}
        s2.update(slot=Signal(sb, name="s2_slot"), plan=Signal(pb, name="s2_plan"), found=Signal(name="s2_found"),
                  use_default=Signal(name="s2_use_default"), cost=Signal(32, name="s2_cost"),
                  t_ok=Signal(name="s2_t_ok"), t_entry=Signal(entry, name="s2_t_entry"),
                  t_recon=Signal(64, name="s2_t_recon"))
        with m.If(advance):
            m.d.sync += [s2[n].eq(s1[n]) for n in ("kind", "fp", "meta", "now", "policy", "amount", "refund", "op",
                                                    "dst", "valid")]
            m.d.sync += [s2["slot"].eq(s1_slot), s2["plan"].eq(s1_plan), s2["found"].eq(s1_found),
                         s2["use_default"].eq(use_default), s2["cost"].eq(s1_cost), s2["t_ok"].eq(t_ok),
                         s2["t_entry"].eq(t_entry), s2["t_recon"].eq(t_recon)]

        # ================================================================================================ S2 update
        fwd_valid = Signal()
        fwd_slot = Signal(sb)
        fwd_data = Signal(state)
        cur = Signal(state)
        m.d.comb += cur.eq(Mux(fwd_valid & (fwd_slot == s2["slot"]), fwd_data, st_rd.data))
        pl = Signal(plan)
        m.d.comb += pl.eq(plan_rd.data)
        now_ticks = Signal(tb)
        m.d.comb += now_ticks.eq(s2["now"][q:])

        dt = Signal(tb)
        m.d.comb += dt.eq(now_ticks - cur.last)
        dtc = Signal(48 - q)
        m.d.comb += dtc.eq(Mux(dt > p.dt_max, p.dt_max, dt))
        req_sum = Signal(max(rb, 48 - q + 30) + 1)
        cost_sum = Signal(max(cb, 48 - q + 32) + 1)
        m.d.comb += [req_sum.eq(cur.req + dtc * pl.req_rate), cost_sum.eq(cur.cost + dtc * pl.cost_rate)]
        req_r = Signal(rb)
        cost_r = Signal(cb)
        m.d.comb += [req_r.eq(Mux(req_sum > pl.req_cap, pl.req_cap, req_sum)),
                     cost_r.eq(Mux(cost_sum > pl.cost_cap, pl.cost_cap, cost_sum))]
        need = Signal(32 + unit.bit_length())
        m.d.comb += need.eq(s2["cost"] * unit)
        req_ok = Signal()
        cost_ok = Signal()
        # An unlimited bucket (rate 0, cap 0) always suffices and is never debited.
        m.d.comb += [req_ok.eq(pl.req_unl | (req_r >= unit)), cost_ok.eq(pl.cost_unl | (cost_r >= need))]
        allow = Signal()
        m.d.comb += allow.eq(req_ok & cost_ok)
        decided = Signal()                                # a request with a tenant (found or default)
        m.d.comb += decided.eq(s2["found"] | s2["use_default"])

        # Debit/refund.
        amount_u = Signal(32 + unit.bit_length())
        m.d.comb += amount_u.eq(s2["amount"] * unit)
        debited = Signal(cb)
        refunded = Signal(cb)
        refund_sum = Signal(cb + 1)
        m.d.comb += [
            debited.eq(Mux(cur.cost > amount_u, cur.cost - amount_u, 0)),
            refund_sum.eq(cur.cost + amount_u),
            refunded.eq(Mux((refund_sum > pl.cost_cap) | (amount_u >= (1 << cb)), pl.cost_cap, refund_sum)),
        ]

        new = Signal(state)
        st_write = Signal()
        st_addr = Signal(sb)
        m.d.comb += [new.eq(cur), st_addr.eq(s2["slot"])]
        is_update = Signal()
        m.d.comb += is_update.eq(s2["t_entry"].valid & (s2["t_recon"] == s2["fp"]))
        tag_we = [Signal(WAYS, name=f"tag_we{h}") for h in range(HALVES)]
        tag_wdata = [Signal(entry, name=f"tag_wdata{h}") for h in range(HALVES)]
        tag_waddr = [Signal(k, name=f"tag_waddr{h}") for h in range(HALVES)]
        s2_half = s2["slot"][sb - 1]
        s2_way = s2["slot"][0:2]
        s2_bucket = s2["slot"][2:2 + k]
        dst_half = s2["dst"][sb - 1]
        dst_way = s2["dst"][0:2]
        dst_bucket = s2["dst"][2:2 + k]
        t_fire = Signal()
        m.d.comb += t_fire.eq(advance & (s2["kind"] == OpKind.TABLE))
        rd_update = Signal()

        with m.If(advance):
            with m.Switch(s2["kind"]):
                with m.Case(OpKind.DECIDE):
                    with m.If(decided):
                        m.d.comb += [st_write.eq(1), new.last.eq(now_ticks)]
                        with m.If(allow):
                            m.d.comb += [new.req.eq(Mux(pl.req_unl, req_r, req_r - unit)),
                                         new.cost.eq(Mux(pl.cost_unl, cost_r, cost_r - need))]
                            if nb:
                                m.d.comb += new.allowed.eq(cur.allowed + 1)
                        with m.Else():
                            m.d.comb += [new.req.eq(req_r), new.cost.eq(cost_r)]
                            if nb:
                                m.d.comb += new.rejected.eq(cur.rejected + 1)
                with m.Case(OpKind.CMD):
                    with m.If(s2["found"]):
                        m.d.comb += [st_write.eq(1), new.cost.eq(Mux(s2["refund"], refunded, debited))]
                with m.Case(OpKind.TABLE):
                    with m.If(s2["t_ok"]):
                        with m.Switch(s2["op"]):
                            with m.Case(TableOp.WRITE):
                                m.d.comb += tag_waddr[0].eq(s2_bucket)
                                m.d.comb += tag_waddr[1].eq(s2_bucket)
                                for h in range(HALVES):
                                    m.d.comb += tag_we[h].eq(Mux(s2_half == h, 1 << s2_way, 0))
                                    with m.If(s2["valid"]):
                                        m.d.comb += [tag_wdata[h].valid.eq(1), tag_wdata[h].plan.eq(s2["plan"]),
                                                     tag_wdata[h].tag.eq(_quotient(s2["fp"], h, k))]
                                    with m.Else():
                                        m.d.comb += [tag_wdata[h].eq(s2["t_entry"]), tag_wdata[h].valid.eq(0)]
                                with m.If(s2["valid"]):
                                    m.d.comb += st_write.eq(1)
                                    with m.If(is_update):
                                        m.d.comb += [new.req.eq(Mux(cur.req > pl.req_cap, pl.req_cap, cur.req)),
                                                     new.cost.eq(Mux(cur.cost > pl.cost_cap, pl.cost_cap,
                                                                     cur.cost))]
                                    with m.Else():
                                        m.d.comb += [new.req.eq(pl.req_cap), new.cost.eq(pl.cost_cap),
                                                     new.last.eq(now_ticks)]
                                        if nb:
                                            m.d.comb += [new.allowed.eq(0), new.rejected.eq(0)]
                            with m.Case(TableOp.MOVE):
                                m.d.comb += [st_write.eq(1), st_addr.eq(s2["dst"][0:sb])]
                                for h in range(HALVES):
                                    is_dst = dst_half == h
                                    m.d.comb += [
                                        tag_waddr[h].eq(Mux(is_dst, dst_bucket, s2_bucket)),
                                        tag_we[h].eq(Mux(is_dst, 1 << dst_way, 1 << s2_way)),
                                    ]
                                    with m.If(is_dst):
                                        m.d.comb += [tag_wdata[h].valid.eq(s2["t_entry"].valid),
                                                     tag_wdata[h].plan.eq(s2["t_entry"].plan),
                                                     tag_wdata[h].tag.eq(_quotient(s2["t_recon"], h, k))]
                                    with m.Else():
                                        m.d.comb += [tag_wdata[h].eq(s2["t_entry"]), tag_wdata[h].valid.eq(0)]
                            with m.Case(TableOp.READ):
                                m.d.comb += rd_update.eq(1)

        for h in range(HALVES):
            m.d.comb += [tag_wr[h].addr.eq(tag_waddr[h]), tag_wr[h].en.eq(tag_we[h]),
                         tag_wr[h].data.eq(Cat(*([tag_wdata[h]] * WAYS)))]
        m.d.comb += [st_wr.addr.eq(st_addr), st_wr.data.eq(new), st_wr.en.eq(st_write)]
        with m.If(advance):
            m.d.sync += [fwd_valid.eq(st_write), fwd_slot.eq(st_addr), fwd_data.eq(new)]

        # The default tenant (set by SET_DEFAULT on a valid slot) follows its tenant through MOVE and plan updates,
        # and is cleared when that tenant is invalidated or overwritten.
        with m.If(t_fire & s2["t_ok"]):
            with m.Switch(s2["op"]):
                with m.Case(TableOp.SET_DEFAULT):
                    m.d.sync += [d_slot.eq(s2["slot"]), d_valid.eq(s2["t_entry"].valid),
                                 d_plan.eq(s2["t_entry"].plan)]
                with m.Case(TableOp.WRITE):
                    with m.If(s2["slot"] == d_slot):
                        with m.If(s2["valid"] & is_update):
                            m.d.sync += d_plan.eq(s2["plan"])
                        with m.Else():
                            m.d.sync += d_valid.eq(0)
                with m.Case(TableOp.MOVE):
                    with m.If(s2["slot"] == d_slot):
                        m.d.sync += d_slot.eq(s2["dst"])
                    with m.Elif(s2["dst"] == d_slot):
                        m.d.sync += d_valid.eq(0)

        # Table op status and read-back.
        busy = Signal()
        m.d.comb += busy.eq(t_pending | (s1["kind"] == OpKind.TABLE) | (s2["kind"] == OpKind.TABLE))
        error = Signal()
        with m.If(t_fire):
            m.d.sync += error.eq(~s2["t_ok"])
        m.d.comb += [regs.tbl_status.busy.eq(busy), regs.tbl_status.error.eq(error),
                     regs.table_ops.count_incr.eq(t_fire)]
        rd = dict(tag=Signal(64), plan=Signal(pb), valid=Signal(), req=Signal(rb), cost=Signal(cb),
                  last=Signal(64), allowed=Signal(max(1, nb)), rejected=Signal(max(1, nb)))
        rd = {n: Signal(s.shape(), name=f"rd_{n}") for n, s in rd.items()}
        with m.If(rd_update & s2["t_ok"]):
            m.d.sync += [rd["tag"].eq(s2["t_recon"]), rd["plan"].eq(s2["t_entry"].plan),
                         rd["valid"].eq(s2["t_entry"].valid), rd["req"].eq(cur.req), rd["cost"].eq(cur.cost),
                         rd["last"].eq(cur.last << q)]
            if nb:
                m.d.sync += [rd["allowed"].eq(cur.allowed), rd["rejected"].eq(cur.rejected)]
        m.d.comb += [regs.rd_tag.value.eq(rd["tag"]), regs.rd_entry.plan.eq(rd["plan"]),
                     regs.rd_entry.valid.eq(rd["valid"]), regs.rd_req.value.eq(rd["req"]),
                     regs.rd_cost.value.eq(rd["cost"]), regs.rd_last.value.eq(rd["last"])]
        if nb:
            m.d.comb += [regs.rd_allowed.value.eq(rd["allowed"]), regs.rd_rejected.value.eq(rd["rejected"])]

        # Command counters.
        cmd_fire = Signal()
        m.d.comb += cmd_fire.eq(advance & (s2["kind"] == OpKind.CMD))
        m.d.comb += [regs.cmd_applied.count_incr.eq(cmd_fire & s2["found"]),
                     regs.cmd_unknown.count_incr.eq(cmd_fire & ~s2["found"])]

        # S2 → S3: what the verdict needs.
        dec_fire = Signal()
        m.d.comb += dec_fire.eq(advance & (s2["kind"] == OpKind.DECIDE))
        s3 = dict(valid=Signal(), meta=Signal(self.meta_width), decision=Signal(2), status=Signal(10),
                  found=Signal(), tenant=Signal(16), cost=Signal(32), req_short=Signal(), cost_short=Signal(),
                  req_def=Signal(rb), cost_def=Signal(32 + unit.bit_length()), inv_req=Signal(64), inv_cost=Signal(64), now_lo=Signal(max(1, q)))
        s3 = {n: Signal(s.shape(), name=f"s3_{n}") for n, s in s3.items()}
        v_decision = Signal(2)
        v_status = Signal(10)
        with m.If(decided):
            m.d.comb += [v_decision.eq(Mux(allow, Decision.ALLOW, Decision.REJECT)), v_status.eq(Mux(allow, 200, 429))]
        with m.Elif(s2["policy"] == UnknownPolicy.PUNT):
            m.d.comb += [v_decision.eq(Decision.PUNT), v_status.eq(0)]
        with m.Else():
            m.d.comb += [v_decision.eq(Decision.REJECT), v_status.eq(401)]
        m.d.comb += [
            regs.allow.count_incr.eq(dec_fire & decided & allow),
            regs.reject_429.count_incr.eq(dec_fire & decided & ~allow),
            regs.punt.count_incr.eq(dec_fire & ~decided & (s2["policy"] == UnknownPolicy.PUNT)),
            regs.reject_401.count_incr.eq(dec_fire & ~decided & (s2["policy"] != UnknownPolicy.PUNT)),
        ]
        with m.If(advance):
            m.d.sync += [
                s3["valid"].eq(s2["kind"] == OpKind.DECIDE), s3["meta"].eq(s2["meta"]),
                s3["decision"].eq(v_decision), s3["status"].eq(v_status), s3["found"].eq(s2["found"]),
                s3["tenant"].eq(Mux(decided, s2["slot"], 0)), s3["cost"].eq(s2["cost"]),
                s3["req_short"].eq(decided & ~allow & ~req_ok), s3["cost_short"].eq(decided & ~allow & ~cost_ok),
                # deficit − 1, for the exact ceiling division of S3 (wirespeed.host.models.limiter.wait_ticks).
                s3["req_def"].eq(unit - req_r - 1), s3["cost_def"].eq(need - cost_r - 1),
                s3["inv_req"].eq(pl.inv_req), s3["inv_cost"].eq(pl.inv_cost),
                s3["now_lo"].eq(s2["now"][0:max(1, q)] if q else 0),
            ]

        # ================================================================================================ S3 retry
        wait_req = Signal(64)
        wait_cost = Signal(len(s3["cost_def"]) + 1)
        m.d.comb += [
            # ⌈deficit/rate⌉ = (((deficit − 1)·(inv + 1)) >> 64) + 1, with inv = ⌊(2⁶⁴−1)/rate⌋ from the plan.
            wait_req.eq(Mux(s3["req_short"], ((s3["req_def"] * s3["inv_req"] + s3["req_def"]) >> 64) + 1, 0)),
            wait_cost.eq(Mux(s3["cost_short"], ((s3["cost_def"] * s3["inv_cost"] + s3["cost_def"]) >> 64) + 1, 0)),
        ]
        # A cost far above the bucket at a low rate can wait longer than 2^64 ns: the retry saturates there.
        wait = Signal(len(s3["cost_def"]) + 1)
        m.d.comb += wait.eq(Mux(wait_cost > wait_req, wait_cost, wait_req))
        retry = Signal(64)
        if q:
            m.d.comb += retry.eq(Mux(wait == 0, 0, Mux(wait >> (64 - q) != 0, (1 << 64) - 1,
                                                       (wait << q) - s3["now_lo"])))
        else:
            m.d.comb += retry.eq(Mux(wait >> 64 != 0, (1 << 64) - 1, wait))

        v = out.payload.verdict
        with m.If(advance):
            m.d.sync += [
                out.valid.eq(s3["valid"]), out.payload.meta.eq(s3["meta"]),
                v.decision.eq(s3["decision"]), v.status.eq(s3["status"]), v.tenant_found.eq(s3["found"]),
                v.tenant.eq(s3["tenant"]), v.cost.eq(s3["cost"]), v.retry_after_ns.eq(retry),
            ]
        return m


"""Offload.tenants and Offload.clock over the "model" URI: the driver against the limiter's register-level model.

Checks the driver's results (slots, tokens, errors) and, through ``CoreModel.limiter`` (the block's
:class:`~wirespeed.host.models.limiter.LimiterModel`), that the device holds what the driver believes it holds.
"""

import json
import random
import time
import threading
from fractions import Fraction

import pytest
from support.transport import RecordingTransport

import wirespeed
from wirespeed.hdl.id.id_block import CoreParams
from wirespeed.hdl.limiter.layouts import CostSource, Decision, LimiterParams, TableOp, UnknownPolicy
from wirespeed.hdl.parser.layouts import KeySource
from wirespeed.host.driver import tenants as tenants_module
from wirespeed.host.errors import ConfigError, IncompatibleBitstream, TransportError, WirespeedError
from wirespeed.host.errors import TableFull
from wirespeed.host.models.limiter import READ_SAMPLE_CYCLE, STEP_PULSE_CYCLE, WRITE_EFFECT_CYCLE
from wirespeed.host.models.device import AXIL_ACCESS_CYCLES
from wirespeed.host.models.parser import Descriptor
from wirespeed.host.keys import fingerprint
from wirespeed.hdl.bus.regmap import core_regmap
from wirespeed.host.errors import FeatureMissing, TableOpError
from wirespeed.host.driver.tenants import TenantId, TenantInfo

SEED = 20251128
REGMAP = core_regmap()
RATES = dict(requests_per_s=10, burst=20, tokens_per_s=1000, token_burst=5000)
U64 = (1 << 64) - 1
ONE = 1 << 32                       # 1.0 in 32.32


def open_model(uri="model", **limiter):
    """A model device (or ``"software"``, which holds the same model); ``limiter`` overrides LimiterParams fields."""
    if not limiter:
        return wirespeed.open(uri, clock="manual")
    params = LimiterParams(**limiter)
    return wirespeed.open(uri, params=CoreParams(clock_hz=params.clock_hz, limiter=params), clock="manual")


def core_model(dev):
    return RecordingTransport.innermost(dev.transport).model


def block(dev):
    return core_model(dev).limiter


def unit_of(dev) -> int:
    return dev.tenants.params.unit


def tbl_ops_written(writes, op: TableOp) -> int:
    """How many of ``writes`` started table op ``op``."""
    reg = REGMAP["limiter.tbl_op"]
    return sum(1 for address, value in writes if address == reg.address and value & 0x7 == op.value)


# -- round trip -------------------------------------------------------------------------------------------------------

def test_add_get_update_remove_round_trip():
    with open_model() as dev:
        t, model = dev.tenants, block(dev).model
        unit = unit_of(dev)
        tenant = t.add("sk-alice", **RATES)
        assert isinstance(tenant, TenantId) and tenant == 1
        fp = fingerprint(b"sk-alice")
        assert len(t) == 1 and "sk-alice" in t and fp in t and b"sk-alice" in t and tenant in t
        slot = t.slot("sk-alice")
        assert slot == model.lookup(fp) and t.slot(tenant) == slot
        info = t.get("sk-alice")
        assert isinstance(info, TenantInfo)
        assert (info.fp, info.slot, info.id) == (fp, slot, tenant)
        assert t.get(tenant) == info                                # the id names the tenant
        assert (info.requests_per_s, info.burst, info.tokens_per_s, info.token_burst) == (10, 20, 1000, 5000)
        # Full buckets, exactly.
        assert info.request_tokens == Fraction(20) and info.cost_tokens == Fraction(5000)
        assert (info.req_units, info.cost_units) == (20 * unit, 5000 * unit)
        assert (info.allowed, info.rejected) == (0, 0)
        assert t.get(fp) == info                                    # the int fingerprint names the same tenant
        json.dumps(info.as_dict())

        # Smaller bursts cap the tokens; keywords not given stay.
        assert t.update("sk-alice", burst=5, token_burst=300) == tenant
        info = t.get("sk-alice")
        assert (info.requests_per_s, info.burst, info.tokens_per_s, info.token_burst) == (10, 5, 1000, 300)
        assert (info.request_tokens, info.cost_tokens) == (5, 300)
        # Larger bursts keep them.
        t.update("sk-alice", burst=50, tokens_per_s=7)
        info = t.get("sk-alice")
        assert (info.requests_per_s, info.burst, info.tokens_per_s, info.token_burst) == (10, 50, 7, 300)
        assert (info.request_tokens, info.cost_tokens) == (5, 300)
        assert t.update(tenant, burst=50) == tenant                 # unchanged: nothing to do

        assert t.remove("sk-alice") == tenant
        assert len(t) == 0 and "sk-alice" not in t
        assert model.lookup(fp) is None
        assert not model.state(slot).valid
        with pytest.raises(ConfigError) as e:
            t.get("sk-alice")
        assert e.value.field == "api_key"
        assert tenant not in t
        with pytest.raises(ConfigError) as e:
            t.get(tenant)
        assert e.value.field == "tenant"
        # The key can come back, with full buckets again, and a new id (an id is never given twice).
        again = t.add("sk-alice", **RATES)
        assert again == 2 and t.get("sk-alice").cost_tokens == 5000 and t.get(again).slot == t.slot("sk-alice")


def test_new_tenant_last_is_the_clock_at_the_op():
    with open_model() as dev:
        dev.clock.ns_per_cycle = 0
        dev.clock.step(123_456_789)
        frozen = dev.clock.now()
        dev.tenants.add("k", **RATES)
        assert dev.tenants.get("k").last_ns == frozen == dev.clock.now()


def test_bytes_str_and_fingerprint_keys_agree_and_the_fingerprint_key_can_change():
    with open_model() as dev:
        t = dev.tenants
        assert t.fingerprint("sk-x") == t.fingerprint(b"sk-x") == fingerprint(b"sk-x")
        assert t.fingerprint(7) == 7
        t.set_fingerprint_key(0x42F0E1EBA9EA3693, 12345)
        fp = fingerprint(b"sk-x", 0x42F0E1EBA9EA3693, 12345)
        assert t.fingerprint("sk-x") == fp
        t.add("sk-x", **RATES)
        assert t.get(fp).fp == fp and block(dev).model.lookup(fp) == t.slot("sk-x")
        with pytest.raises(ConfigError):
            t.set_fingerprint_key(-1, 0)


def test_other_limiter_params_are_read_from_the_device():
    params = dict(capacity=1024, plans=8, tick_log2=3, req_burst_bits=12, cost_burst_bits=24, counter_bits=16,
                  cmd_fifo_depth=4, clock_hz=250_000_000)
    with open_model(**params) as dev:
        t = dev.tenants
        assert t.params == LimiterParams(**params) and t.capacity == 1024
        assert unit_of(dev) == 7_500_000_000              # 6·10¹⁰ / 2³
        dev.clock.ns_per_cycle = 0
        dev.clock.step(-dev.clock.now() + 1_000_003)
        t.add("k", **RATES)
        info = t.get("k")
        assert info.request_tokens == 20 and info.req_units == 20 * 7_500_000_000
        assert info.last_ns == 1_000_000                           # a multiple of the 8 ns tick
        assert dev.clock.ns_per_cycle == 0


# -- debit and refund -------------------------------------------------------------------------------------------------

def test_debit_and_refund_change_cost_tokens_exactly():
    with open_model() as dev:
        t = dev.tenants
        t.add("k", requests_per_s=1, burst=1, tokens_per_s=1, token_burst=1000)
        t.debit("k", 300)
        assert t.get("k").cost_tokens == 700
        t.refund("k", 100)
        assert t.get("k").cost_tokens == 800
        t.refund("k", 10**6)
        assert t.get("k").cost_tokens == 1000                      # capped at the burst
        t.debit("k", 999)
        assert t.get("k").cost_tokens == 1
        t.debit("k", (1 << 32) - 1)
        assert t.get("k").cost_tokens == 0 and t.get("k").cost_units == 0   # saturates at 0
        t.refund("k", 0)
        t.debit("k", 0)
        assert t.get("k").cost_tokens == 0
        assert t.get("k").request_tokens == 1                      # the request bucket is untouched
        assert dev.read_register("limiter.cmd_applied") == 7
        assert dev.read_register("limiter.cmd_unknown") == 0
        assert dev.read_register("limiter.cmd_status.waiting") == 0


def test_debit_writes_key_amount_then_one_push(record_bus):
    with open_model() as dev:
        t = dev.tenants
        t.add("k", **RATES)
        bus = record_bus(dev)
        t.refund("k", 5)
        push = REGMAP["limiter.cmd_push"]
        assert [a for a, _ in bus.writes] == [REGMAP["limiter.cmd_fp"].address, REGMAP["limiter.cmd_fp"].address + 4,
                                             REGMAP["limiter.cmd_amount"].address, push.address]
        assert bus.writes[-1][1] == 1 << 31 | 1                    # refund and go in one write


def test_command_fifo_full_is_bounded(monkeypatch, record_bus):
    monkeypatch.setattr(tenants_module, "CMD_POLLS", 10)
    with open_model() as dev:
        dev.tenants.add("k", **RATES)
        depth = dev.tenants.params.cmd_fifo_depth
        bus = record_bus(dev, stuck={REGMAP["limiter.cmd_status"].address: depth})
        with pytest.raises(TransportError, match="stalled"):
            dev.tenants.debit("k", 1)
        assert bus.writes == [] and len(bus.reads) == 10
        bus.stuck[REGMAP["limiter.cmd_status"].address] = depth - 1
        dev.tenants.debit("k", 1)
        assert dev.tenants.get("k").cost_tokens == 4999


def test_table_op_stuck_busy_is_bounded(monkeypatch, record_bus):
    monkeypatch.setattr(tenants_module, "TABLE_OP_POLLS", 7)
    with open_model() as dev:
        dev.tenants.add("k", **RATES)
        busy = REGMAP["limiter.tbl_status"].field("busy")
        record_bus(dev, stuck={REGMAP["limiter.tbl_status"].address: 1 << busy.lsb})
        with pytest.raises(TransportError, match="pipeline is stalled"):
            dev.tenants.get("k")


def test_device_changed_behind_the_driver_raises_table_op_error():
    with open_model() as dev:
        dev.tenants.add("k", **RATES)
        slot = dev.tenants.slot("k")
        # Someone else invalidates the slot.
        dev.write_register("limiter.tbl_slot", slot)
        dev.write_register("limiter.tbl_entry", 0)
        dev.write_register("limiter.tbl_op", 1 << 31 | TableOp.WRITE.value)
        with pytest.raises(TableOpError, match=f"slot {slot}"):
            dev.tenants.get("k")


# -- plans ------------------------------------------------------------------------------------------------------------

def test_plans_are_shared_refcounted_and_freed(record_bus):
    with open_model() as dev:
        t, model = dev.tenants, block(dev).model
        t.add("a", **RATES)
        bus = record_bus(dev)
        t.add("b", **RATES)
        commit = REGMAP["limiter.plan_commit"].address
        assert commit not in [a for a, _ in bus.writes]            # an equal plan is shared, not written again
        assert t.get("a").plan == t.get("b").plan == 0
        t.add("c", **{**RATES, "burst": 21})
        assert t.get("c").plan == 1
        assert model.plan_regs(1)["req_cap"] == 21 * unit_of(dev)
        # Entry 0 stays while "b" uses it; freed when no one does, then taken by the next new plan.
        t.remove("a")
        t.add("d", **{**RATES, "burst": 22})
        assert t.get("d").plan == 2
        t.remove("b")
        t.add("e", **{**RATES, "burst": 23})
        assert t.get("e").plan == 0
        assert model.plan_regs(0)["req_cap"] == 23 * unit_of(dev)
        # A freed entry that still holds the wanted rates is taken without a rewrite.
        t.remove("d")
        bus.clear()
        t.add("f", **{**RATES, "burst": 22})
        assert t.get("f").plan == 2 and commit not in [a for a, _ in bus.writes]


def test_65th_distinct_plan_is_table_full_and_writes_nothing(record_bus):
    with open_model() as dev:
        t = dev.tenants
        plans = t.params.plans
        for i in range(plans):
            t.add(f"k{i}", **{**RATES, "token_burst": 1000 + i})
        bus = record_bus(dev)
        with pytest.raises(TableFull) as e:
            t.add("one-too-many", **{**RATES, "token_burst": 999})
        assert e.value.table == "plans"
        assert bus.writes == [] and bus.reads == []
        assert len(t) == plans and "one-too-many" not in t
        assert t.load_factor == plans / t.capacity
        # Rates already in the table still fit.
        t.add("shares", **{**RATES, "token_burst": 1000})
        assert t.get("shares").plan == t.get("k0").plan
        # So does an update that only its own tenant's entry is affected by (rewritten in place).
        t.update("k5", token_burst=999)
        assert t.get("k5").token_burst == 999 and t.get("k5").cost_tokens == 999
        # An update to a new plan while k0's entry is shared needs a free entry: none.
        bus.clear()
        with pytest.raises(TableFull) as e:
            t.update("k0", token_burst=998)
        assert e.value.table == "plans" and bus.writes == []
        assert t.get("k0").token_burst == 1000
        # Freeing one entry makes room.
        t.remove("k7")
        t.add("fits", **{**RATES, "token_burst": 998})
        assert t.get("fits").token_burst == 998


# -- placement --------------------------------------------------------------------------------------------------------

def test_fill_until_table_full_keeps_every_key_findable(record_bus):
    rng = random.Random(SEED)
    with open_model() as dev:
        t, model = dev.tenants, block(dev).model
        keys = []
        while True:
            fp = rng.getrandbits(64)
            if fp in t:
                continue
            bus = record_bus(dev)
            try:
                t.add(fp, **RATES)
            except TableFull as e:
                assert e.table == "tenants", f"seed={SEED}"
                assert bus.writes == [], f"seed={SEED}: the failing add wrote {bus.writes}"
                break
            finally:
                dev.transport = bus.inner
            keys.append(fp)
        assert t.load_factor >= 0.90, f"seed={SEED}: {t.load_factor:.4f}"
        assert len(t) == len(keys)
        for fp in keys:
            slot = t.slot(fp)
            assert model.lookup(fp) == slot, f"seed={SEED}: 0x{fp:016x}"
            assert t.get(fp).slot == slot, f"seed={SEED}: 0x{fp:016x}"


def test_relocations_keep_every_key_findable_and_the_default_follows(record_bus):
    rng = random.Random(SEED + 1)
    with open_model(capacity=64) as dev:
        t, model = dev.tenants, block(dev).model
        bus = record_bus(dev)
        first = rng.getrandbits(64)
        t.add(first, **RATES)
        t.set_default(first)
        keys = [first]
        while True:
            fp = rng.getrandbits(64)
            try:
                t.add(fp, **RATES)
            except TableFull:
                break
            keys.append(fp)
            for k in keys:
                assert model.lookup(k) == t.slot(k), f"seed={SEED + 1}: 0x{k:016x} after {len(keys)} adds"
        moves = tbl_ops_written(bus.writes, TableOp.MOVE)
        assert moves > 0, f"seed={SEED + 1}: the fill never relocated"
        for k in keys:
            assert t.get(k).slot == t.slot(k) == model.lookup(k), f"seed={SEED + 1}: 0x{k:016x}"
        # The device carried the default slot through every MOVE of the default tenant.
        assert t.default == first
        assert dev.read_register("limiter.default_slot.slot") == t.slot(first) == model.default_slot
        assert dev.read_register("limiter.default_slot.valid") == 1
        assert dev.read_register("limiter.table_ops") == model.table_ops


# -- named errors -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("keyword, value", [
    ("requests_per_s", -1), ("requests_per_s", 0), ("requests_per_s", (1 << 30) // 60 + 1),
    ("requests_per_s", 0.01), ("requests_per_s", "10"), ("requests_per_s", float("nan")),
    ("requests_per_minute", 0.5), ("requests_per_minute", 1 << 30), ("tokens_per_minute", 1 << 32),
    ("burst", 0), ("burst", 1 << 20), ("tokens_per_s", -5), ("tokens_per_s", 1 << 32), ("token_burst", 0),
    ("token_burst", 1 << 28), ("burst", True),
])
def test_bad_rates_and_bursts_name_the_keyword_and_write_nothing(keyword, value, record_bus):
    with open_model() as dev:
        t = dev.tenants
        t.add("present", **RATES)
        bus = record_bus(dev)
        rates = dict(RATES)
        if keyword.endswith("_per_minute"):                  # instead of the per-second keyword
            del rates[keyword.replace("_per_minute", "_per_s")]
        with pytest.raises(ConfigError) as e:
            t.add("new", **{**rates, keyword: value})
        assert e.value.field == keyword and (e.value.value == value or value != value)
        with pytest.raises(ConfigError) as e:
            t.update("present", **{keyword: value})
        assert e.value.field == keyword
        assert bus.writes == [] and len(t) == 1
        assert t.get("present").burst == RATES["burst"]


def test_bursts_over_the_device_widths(record_bus):
    with open_model(req_burst_bits=10, cost_burst_bits=16) as dev:
        t = dev.tenants
        t.add("ok", requests_per_s=1000, burst=1023, tokens_per_s=100_000, token_burst=65535)
        bus = record_bus(dev)
        for keyword, value in (("burst", 1024), ("token_burst", 65536)):
            with pytest.raises(ConfigError) as e:
                t.add("new", **{**RATES, keyword: value})
            assert e.value.field == keyword and e.value.value == value
        assert bus.writes == []


def test_bucket_that_cannot_refill_in_time_is_refused():
    with open_model() as dev:
        with pytest.raises(ConfigError) as e:
            dev.tenants.add("k", requests_per_s=1, burst=1, tokens_per_s=1, token_burst=281_475)   # 2⁴⁸ ns is 281 474.98 s
        assert e.value.field == "token_burst"


@pytest.mark.parametrize("tokens", [-1, 1 << 32, 1.0, None, True])
def test_token_amounts_out_of_range(tokens, record_bus):
    with open_model() as dev:
        dev.tenants.add("k", **RATES)
        bus = record_bus(dev)
        for call in (dev.tenants.debit, dev.tenants.refund):
            with pytest.raises(ConfigError) as e:
                call("k", tokens)
            assert e.value.field == "tokens"
        assert bus.writes == []


@pytest.mark.parametrize("key", [1.5, None, -1, 1 << 64, True, ["k"], object(), "", b"", bytearray()])
def test_bad_api_key_types(key, record_bus):
    with open_model() as dev:
        t = dev.tenants
        bus = record_bus(dev)
        for call in (lambda: t.add(key, **RATES), lambda: t.get(key), lambda: t.remove(key),
                     lambda: t.update(key, burst=2), lambda: t.debit(key, 1), lambda: t.refund(key, 1),
                     lambda: t.set_default(key), lambda: key in t):
            with pytest.raises(ConfigError) as e:
                call()
            assert e.value.field == "api_key"
        assert bus.writes == []


def test_empty_key_names_no_tenant_and_an_empty_x_api_key_is_unknown():
    with wirespeed.open("model", clock="manual") as dev:
        t = dev.tenants
        for key in ("", b""):
            with pytest.raises(ConfigError, match="must not be empty") as e:
                t.add(key, **RATES)
            assert e.value.field == "api_key" and e.value.value == key and "api_key=" in str(e.value)
        t.add("k", **RATES)
        dev.pools.set(0, [1], size=251)
        request = b"GET / HTTP/1.1\r\nHost: a\r\nx-api-key: \r\n\r\n"
        v = dev.classify(request)
        assert (v.action, v.status) == ("reject", 401) and "key_present" in v.flags and "tenant_found" not in v.flags
        t.configure(unknown_policy="default")
        t.set_default("k")
        assert dev.classify(request).action == "forward"          # as the default tenant, not as a tenant of its own
        assert len(t) == 1


def test_duplicate_and_absent_keys(record_bus):
    with open_model() as dev:
        t = dev.tenants
        t.add("k", **RATES)
        slot = t.slot("k")
        bus = record_bus(dev)
        with pytest.raises(ConfigError, match=f"slot {slot}") as e:
            t.add("k", **{**RATES, "burst": 3})
        assert e.value.field == "api_key"
        with pytest.raises(ConfigError):
            t.add(fingerprint(b"k"), **RATES)                      # the same key as a fingerprint
        for call in (lambda: t.get("absent"), lambda: t.remove("absent"), lambda: t.update("absent", burst=2),
                     lambda: t.debit("absent", 1), lambda: t.refund("absent", 1), lambda: t.set_default("absent")):
            with pytest.raises(ConfigError) as e:
                call()
            assert e.value.field == "api_key"
        assert bus.writes == [] and len(t) == 1


def test_no_limiter_is_feature_missing():
    with wirespeed.open("model", params=CoreParams(features=frozenset({"parser"}))) as dev:
        for attribute in ("tenants", "clock"):
            with pytest.raises(FeatureMissing) as e:
                getattr(dev, attribute)
            assert isinstance(e.value, WirespeedError) and e.value.feature == "limiter"


def test_inconsistent_id_block_is_incompatible(record_bus):
    with open_model() as dev:
        record_bus(dev, stuck={REGMAP["id.params_tenants"].address: 1000})
        with pytest.raises(IncompatibleBitstream):
            dev.tenants


# -- policy -----------------------------------------------------------------------------------------------------------

def test_set_default_and_unknown_policy_default():
    with open_model() as dev:
        t, model = dev.tenants, block(dev).model
        t.add("other", **RATES)
        tenant = t.add("fallback", **{**RATES, "token_burst": 100})
        slot = t.slot(tenant)
        assert dev.read_register("limiter.default_slot.valid") == int(model.state(0).valid)
        assert t.set_default("fallback") == tenant
        assert t.default == fingerprint(b"fallback")
        assert dev.read_register("limiter.default_slot.slot") == slot
        assert dev.read_register("limiter.default_slot.valid") == 1
        t.configure(unknown_policy="default", cost_fixed=30)
        assert dev.read_register("limiter.ctrl.unknown_policy") == UnknownPolicy.DEFAULT.value
        assert model.config.unknown_policy is UnknownPolicy.DEFAULT and model.config.cost_fixed == 30
        # No descriptors reach the limiter in the core yet: decide on the block's model directly.
        unknown = Descriptor(key_source=KeySource.AUTHORIZATION, key_fp=fingerprint(b"stranger"))
        verdict = model.decide(unknown, dev.clock.now())
        assert (verdict.decision, verdict.tenant, verdict.tenant_found, verdict.cost) == (Decision.ALLOW, slot,
                                                                                          False, 30)
        assert dev.read_register("limiter.allow") == 0             # mirrored at the next register event
        t.debit("fallback", 0)
        assert dev.read_register("limiter.allow") == 1
        assert t.get("fallback").allowed == 1
        # Removing the default tenant leaves no valid default.
        t.remove("fallback")
        assert t.default is None and dev.read_register("limiter.default_slot.valid") == 0


def test_configure_accepts_members_names_and_writes_only_what_is_given(record_bus):
    with open_model() as dev:
        t, model = dev.tenants, block(dev).model
        t.configure(cost_source=CostSource.CONTENT_LENGTH, cost_scale=0x8000)
        assert model.config.cost_source is CostSource.CONTENT_LENGTH and model.config.cost_scale == 0x8000
        assert model.config.unknown_policy is UnknownPolicy.REJECT
        bus = record_bus(dev)
        t.configure(unknown_policy="PUNT")
        ctrl = REGMAP["limiter.ctrl"].address
        assert {a for a, _ in bus.writes} == {ctrl}
        assert model.config.cost_source is CostSource.CONTENT_LENGTH    # the other ctrl field survives
        assert model.config.unknown_policy is UnknownPolicy.PUNT
        t.configure(unknown_policy=UnknownPolicy.REJECT, cost_source="fixed")
        assert (model.config.unknown_policy, model.config.cost_source) == (UnknownPolicy.REJECT, CostSource.FIXED)
        t.configure(cost_source="content-length")
        assert model.config.cost_source is CostSource.CONTENT_LENGTH
        t.configure(cost_source="extra")
        assert model.config.cost_source is CostSource.EXTRA
        t.configure(cost_source=CostSource.CONTENT_LENGTH)
        bus.clear()
        for kwargs, field in (({"unknown_policy": "bogus"}, "unknown_policy"), ({"cost_source": 4}, "cost_source"),
                              ({"unknown_policy": "punt", "cost_fixed": -1}, "cost_fixed"),
                              ({"cost_scale": 1 << 32}, "cost_scale"), ({"cost_fixed": 2.0}, "cost_fixed")):
            with pytest.raises(ConfigError) as e:
                t.configure(**kwargs)
            assert e.value.field == field
        assert bus.writes == []


def test_raw_policy_3_is_stored_and_acts_as_reject():
    with open_model() as dev:
        dev.write_register("limiter.ctrl.unknown_policy", 3)
        assert dev.read_register("limiter.ctrl.unknown_policy") == 3
        assert block(dev).model.config.unknown_policy is UnknownPolicy.REJECT


# -- register-level behaviour of the block ----------------------------------------------------------------------------

def test_block_reports_params_and_refuses_bad_ops():
    with open_model(capacity=256, plans=4) as dev:
        assert dev.read_register("limiter.params.plans") == 4
        assert dev.read_register("limiter.widths.capacity_log2") == 8
        assert dev.read_register("limiter.tbl_status") == 0
        dev.write_register("limiter.tbl_op", 1 << 31 | 7)                   # not an op
        assert dev.read_register("limiter.tbl_status.error") == 1
        assert dev.read_register("limiter.table_ops") == 1
        dev.write_register("limiter.tbl_op", 1 << 31 | TableOp.READ.value)  # the next op clears the error
        assert dev.read_register("limiter.tbl_status.error") == 0
        assert dev.read_register("limiter.table_ops") == 2
        # A commit to an entry the limiter does not have is ignored.
        dev.write_register("limiter.plan_req_rate", 9)
        dev.write_register("limiter.plan_commit", 1 << 31 | 10)
        assert all(block(dev).model.plan_regs(i)["req_rate"] == 0 for i in range(4))
        dev.write_register("limiter.plan_commit", 1 << 31 | 3)
        assert block(dev).model.plan_regs(3)["req_rate"] == 9


# -- clock ------------------------------------------------------------------------------------------------------------

def test_clock_runs_at_the_reset_rate():
    with open_model() as dev:
        clock, cm = dev.clock, core_model(dev)
        assert clock.ns_per_cycle == Fraction(10**9, 200_000_000) == 5
        now = clock.now()
        # clock_now is sampled by the low-word read, the second-to-last access.
        low_read = cm.cycles - AXIL_ACCESS_CYCLES
        assert now == 5 * (low_read + READ_SAMPLE_CYCLE)
        assert clock.now() - now == 2 * AXIL_ACCESS_CYCLES * 5      # two accesses of 5 cycles per now()


def test_clock_step_forward_and_backward_exactly(record_bus):
    with open_model() as dev:
        clock = dev.clock
        clock.ns_per_cycle = 0
        frozen = clock.now()
        assert clock.now() == frozen
        clock.step(1_000_000)
        assert clock.now() == frozen + 1_000_000
        clock.step(-300)
        assert clock.now() == frozen + 999_700
        clock.step(-(frozen + 999_700) - 1)                         # before 0: wraps like the 64-bit register
        assert clock.now() == U64
        clock.step(1)
        assert clock.now() == 0
        bus = record_bus(dev)
        for bad in (1 << 63, -(1 << 63), 1.0, "1", True):
            with pytest.raises(ConfigError) as e:
                clock.step(bad)
            assert e.value.field == "ns"
        assert bus.writes == []


def test_clock_fractional_rate_is_exact_32_32():
    with open_model() as dev:
        clock, cm = dev.clock, core_model(dev)
        clock.ns_per_cycle = 0
        clock.step(1000)
        base = clock.now()
        rate = round(Fraction(10, 3) * ONE)                         # 3.333… ns per cycle, rounded to 32.32
        clock.ns_per_cycle = Fraction(10, 3)
        high_write = cm.cycles                                      # low word, then high word (0: no change)
        low_write = high_write - AXIL_ACCESS_CYCLES
        assert rate >> 32 == 3                                      # so the low-word write alone set rate & ~0
        assert clock.ns_per_cycle == Fraction(rate, ONE)
        readings = []
        for _ in range(4):
            now = clock.now()
            sample = cm.cycles - AXIL_ACCESS_CYCLES + READ_SAMPLE_CYCLE
            readings.append((sample, now))
        # From first principles: the accumulator held base·2³² (no fraction: every rate before was whole) when the
        # low-word write made the rate (rate mod 2³²), and the high-word write made it `rate`.
        start = low_write + WRITE_EFFECT_CYCLE
        switch = high_write + WRITE_EFFECT_CYCLE
        for sample, now in readings:
            acc = (base << 32) + (rate & 0xFFFF_FFFF) * (switch - start) + rate * (sample - switch)
            assert now == acc >> 32, (sample, now)
        # Between two reads with no write, exactly 2 accesses × 5 cycles × rate of accumulator.
        (s0, n0), (s1, n1) = readings[:2]
        assert s1 - s0 == 2 * AXIL_ACCESS_CYCLES

        # A step lands in the accumulator one edge after its pulse, on top of that cycle's rate.
        clock.step(-500)
        pulse = cm.cycles + STEP_PULSE_CYCLE
        now = clock.now()
        sample = cm.cycles - AXIL_ACCESS_CYCLES + READ_SAMPLE_CYCLE
        acc = (base << 32) + (rate & 0xFFFF_FFFF) * (switch - start) + rate * (sample - switch) - (500 << 32)
        assert pulse < sample and now == acc >> 32


def test_clock_ns_per_cycle_range(record_bus):
    with open_model() as dev:
        clock = dev.clock
        clock.ns_per_cycle = 0.5
        assert clock.ns_per_cycle == Fraction(1, 2)
        clock.ns_per_cycle = Fraction(2**32 - 1)
        assert clock.ns_per_cycle == 2**32 - 1
        clock.ns_per_cycle = 7
        assert dev.read_register("limiter.clock_ns_per_cycle") == 7 << 32
        bus = record_bus(dev)
        for bad in (-1, 2**32, float("nan"), float("inf"), "5", True, None):
            with pytest.raises(ConfigError) as e:
                clock.ns_per_cycle = bad
            assert e.value.field == "ns_per_cycle"
        assert bus.writes == []


# -- threads ----------------------------------------------------------------------------------------------------------

def test_concurrent_calls_keep_the_table_consistent():
    # Random key texts: with the parser's reset fingerprint key (a sparse modulus), keys that differ only in their
    # last bytes differ only in their fingerprints' low bits, and so share their half-1 bucket.
    rng = random.Random(SEED + 2)
    keys = [[f"sk-{rng.getrandbits(128):032x}" for _ in range(40)] for _ in range(4)]
    with open_model() as dev:
        t, model = dev.tenants, block(dev).model
        errors = []

        def worker(n):
            try:
                for i, key in enumerate(keys[n]):
                    slot = t.add(key, **{**RATES, "burst": 1 + n})
                    assert t.get(key).burst == 1 + n
                    t.debit(key, 1)
                    if i % 3 == 0:
                        assert t.remove(key) == slot
            except Exception as e:                                  # surfaced below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, f"seed={SEED + 2}: {errors}"
        assert len(t) == 4 * (40 - 14)
        for n in range(4):
            for i, key in enumerate(keys[n]):
                if i % 3:
                    info = t.get(key)
                    assert info.slot == model.lookup(t.fingerprint(key)) and info.burst == 1 + n
                    assert info.cost_tokens == RATES["token_burst"] - 1


def test_package_exports():
    for name in ("Tenants", "TenantInfo", "Clock", "TableFull", "FeatureMissing", "TableOpError"):
        assert name in wirespeed.__all__ and getattr(wirespeed, name)
    assert wirespeed.TableFull is TableFull and wirespeed.FeatureMissing is FeatureMissing


# -- stable ids -------------------------------------------------------------------------------------------------------

def _request(key: str) -> bytes:
    return b"GET /v1/models HTTP/1.1\r\nHost: api\r\nx-api-key: " + key.encode() + b"\r\n\r\n"


@pytest.mark.parametrize("uri", ["model", "software"])
def test_ids_stay_across_ten_thousand_adds_and_removes_with_relocations(record_bus, uri):
    """A 64-slot table kept near full: 10⁴ random adds and removes relocate tenants, and every id keeps naming its
    key (``get``), and is what the verdicts report, lookaside and inline."""
    rng = random.Random(SEED + 7)
    from wirespeed.host.models.frontend import build_frame
    with open_model(uri, capacity=64) as dev:
        t = dev.tenants
        dev.pools.set(0, [1])
        bus = record_bus(dev)
        ids, seen = {}, set()
        for step in range(10_000):
            if ids and (len(ids) >= 58 or rng.random() < 0.45):
                key = rng.choice(sorted(ids))
                assert t.remove(key) == ids.pop(key)
            else:
                key = f"sk-{rng.getrandbits(40):010x}"
                try:
                    tenant = t.add(key, **RATES)
                except TableFull:
                    continue
                assert tenant not in seen, f"seed={SEED + 7}: id {tenant} given twice"
                seen.add(tenant)
                ids[key] = tenant
            if step % 1000 == 999:
                for key, tenant in ids.items():
                    assert t.get(tenant).fp == t.fingerprint(key) and t.get(key).id == tenant
                keys = sorted(ids)
                verdicts = dev.classify_many([_request(k) for k in keys])
                assert [v.tenant for v in verdicts] == [ids[k] for k in keys], f"seed={SEED + 7} step {step}"
                frame = dev.classify_frame(build_frame(_request(keys[0])))
                assert frame.tenant == ids[keys[0]]
        assert tbl_ops_written(bus.writes, TableOp.MOVE) > 100, f"seed={SEED + 7}: too few relocations"


@pytest.mark.parametrize("uri", ["model", "software"])
def test_verdicts_keep_their_tenant_while_another_thread_adds_and_removes(uri):
    import threading
    with open_model(uri, capacity=64) as dev:
        dev.pools.set(0, [1])
        mine = dev.tenants.add("sk-mine", requests_per_s=1000, burst=1000, tokens_per_s=10**6, token_burst=10**6)
        stop = threading.Event()
        ops = [0]

        def churn():
            rng = random.Random(SEED + 8)
            present = []
            while not stop.is_set():
                ops[0] += 1
                if len(present) > 50 or (present and rng.random() < 0.5):
                    dev.tenants.remove(present.pop(rng.randrange(len(present))))
                else:
                    try:
                        present.append(dev.tenants.add(f"other-{rng.getrandbits(32)}", **RATES))
                    except TableFull:
                        pass

        worker = threading.Thread(target=churn)
        worker.start()
        try:
            while ops[0] < 10:                                     # the churn is under way
                time.sleep(0.001)
            before = ops[0]
            tenants = [v.tenant for _ in range(40) for v in dev.classify_many([_request("sk-mine")] * 5)]
            during = ops[0] - before
        finally:
            stop.set()
            worker.join()
        assert tenants == [mine] * 200
        assert during > 0, "no add or remove ran between the batches"
        assert dev.tenants.get(mine).fp == dev.tenants.fingerprint("sk-mine")

"""The tenant table's on-chip memory, measured on the elaborated gateware (not on the documentation's arithmetic).

docs/limiter.md, "Memory budget": each slot stores LimiterParams.slot_state_bits; the ECP5-85 profile fits 16 384
tenants in its 208 EBR blocks of 18 Kbit. Synthesis (issue 7) reports the EBRs actually used.
"""

import pytest
from amaranth.lib.memory import Memory

from wirespeed.hdl.limiter.rate_limiter import RateLimiter

from wirespeed.hdl.limiter.layouts import LimiterParams
from wirespeed.hdl.platform.boards import ECP5_85_COMPACT_LIMITER

ECP5_85_EBR = 208
EBR_BITS = 18 * 1024
ECP5_PROFILE = LimiterParams(capacity=16384, **ECP5_85_COMPACT_LIMITER)


def memories(params):
    limiter = RateLimiter(params)
    m = limiter.elaborate(None)
    # Elaborated only to inspect the memories: tell Amaranth these objects are not forgotten design parts.
    for obj in (limiter, m, *(sub for sub, _ in m._named_submodules.values())):
        obj._MustUse__silence = True
    return {name: sub for name, (sub, _) in m._named_submodules.items() if isinstance(sub, Memory)}


@pytest.mark.parametrize("params", [LimiterParams(), ECP5_PROFILE, LimiterParams(capacity=64, counter_bits=5)],
                         ids=["default", "ecp5-85", "small"])
def test_the_table_rams_hold_exactly_the_documented_bits_per_slot(params):
    mems = memories(params)
    table = sum(mems[n].shape.width * mems[n].depth for n in ("tags0", "tags1", "state"))
    assert table == params.table_bits
    assert mems["state"].depth == params.capacity
    assert mems["tags0"].depth == mems["tags1"].depth == params.capacity // 8


def test_the_ecp5_profile_fits_16384_tenants_in_the_ecp5_85():
    mems = memories(ECP5_PROFILE)
    bits = sum(m.shape.width * m.depth for m in mems.values())        # tenant table and plan table
    # 6·10¹⁰ units per token (per-minute rates) widen each bucket by 6 bits; the profile wins them back with a
    # 2 048 ns tick (2 bits from last and from each bucket) and bursts of 2¹² − 1 requests and 2²² − 1 tokens: the
    # same 197 bits as the per-second profile at q = 9 with 16- and 24-bit bursts.
    assert ECP5_PROFILE.slot_state_bits == {"tag": 53, "valid": 1, "plan": 6, "last": 53, "req": 37, "cost": 47,
                                            "counters": 0}
    assert sum(ECP5_PROFILE.slot_state_bits.values()) == 197
    assert bits / EBR_BITS <= 0.85 * ECP5_85_EBR, f"{bits / EBR_BITS:.0f} EBR at full packing"
    # The default layout would not fit: that is why the profile exists.
    assert LimiterParams(capacity=16384).table_bits > ECP5_85_EBR * EBR_BITS

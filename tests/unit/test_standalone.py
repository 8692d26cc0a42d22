"""The one wrapper that puts a block behind its own register bank (wirespeed.hdl.bus.standalone): its ports, and the
named errors for a register map that is not the block's, and for a tap that would shadow a port."""

from __future__ import annotations

import dataclasses

import pytest

from wirespeed.hdl.bus.standalone import Standalone, standalone_addr_width
from wirespeed.hdl.limiter.layouts import LimiterParams
from wirespeed.hdl.limiter.rate_limiter import RateLimiter, limiter_regmap, limiter_resets
from wirespeed.hdl.parser.header_parser import HeaderParser, parser_regmap
from wirespeed.hdl.router.hash_router import router_regmap
from wirespeed.hdl.telemetry.counters import Telemetry, telemetry_regmap


def test_the_wrapper_has_the_blocks_ports_and_an_axi_lite_target():
    parser = HeaderParser(4)
    wrapped = Standalone(parser, parser_regmap())
    assert set(wrapped.signature.members) == {"s_axil"} | set(parser.signature.members) - {"regs"}
    for name, member in parser.signature.members.items():
        if name != "regs":
            assert wrapped.signature.members[name] == member
    assert wrapped.addr_width == standalone_addr_width(parser_regmap()) >= 12
    assert wrapped.block is parser


def test_another_blocks_map_is_refused():
    with pytest.raises(ValueError, match="HeaderParser.regs is not the hw side of register map"):
        Standalone(HeaderParser(4), router_regmap())


def test_a_map_with_other_resets_is_refused():
    """The limiter's map carries its clock in its resets; the bare map (or another clock's) is not its bank."""
    params = dataclasses.replace(LimiterParams(), clock_hz=125_000_000)
    limiter = RateLimiter(params)
    with pytest.raises(ValueError, match="other resets"):
        Standalone(limiter, limiter_regmap())
    Standalone(limiter, limiter_regmap().with_resets(limiter_resets(params)))


def test_taps_add_outputs_and_may_not_shadow_a_port():
    wrapped = Standalone(Telemetry(), telemetry_regmap(), taps={"o_snapshot": ("ctrl", "snapshot")})
    assert wrapped.signature.members["o_snapshot"].flow.name == "Out"
    with pytest.raises(ValueError, match="would shadow a port"):
        Standalone(Telemetry(), telemetry_regmap(), taps={"s_axil": ("ctrl", "snapshot")})

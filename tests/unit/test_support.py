"""The shared testbench layer's own pieces that run without a simulator: the layout codec and the recording
transport (tests/support/)."""

import random
import threading

import pytest
from support.layouts import Fields, LayoutCodec, unpack

from wirespeed.hdl.limiter.rate_limiter import LimitRequest, RateLimiter, Trace
from wirespeed.hdl.limiter.layouts import LimiterParams
from wirespeed.hdl.bus.packet import WIDTHS, ByteBeat, pack_beats
from wirespeed.host.errors import TransportError
from wirespeed.host.models.limiter import LimitVerdict
from wirespeed.host.transports.model import ModelTransport
from wirespeed.host.models.parser import Descriptor
from wirespeed.hdl.bus.regmap import core_regmap
from wirespeed.host.models.router import RouteRequest


@pytest.mark.parametrize("width", WIDTHS)
def test_byte_beats_pack_as_the_gateware_helper_does(width):
    codec = LayoutCodec(ByteBeat(width))
    rng = random.Random(width)
    for n in [0, 1, width - 1, width, width + 1, 3 * width, rng.randrange(200)]:
        packet = rng.randbytes(n)
        chunks = [packet[i:i + width] for i in range(0, n, width)] or [b""]
        mine = [codec.pack({"data": c, "n_valid": len(c), "last": i == len(chunks) - 1})
                for i, c in enumerate(chunks)]
        assert mine == pack_beats(packet, width)
        back = [codec.unpack(b) for b in mine]
        assert b"".join(f.data[:f.n_valid] for f in back) == packet and back[-1].last == 1


def test_records_and_nested_structs_round_trip():
    d = Descriptor(path_len=7, key_fp=(1 << 64) - 1, extra_fp=(1, 2, 3, 4), complete=True)
    codec = LayoutCodec(record=Descriptor)
    assert codec.pack(d) == d.to_bits() and codec.unpack(d.to_bits()) == d
    lim = RateLimiter(LimiterParams(), 16)
    c_in = LayoutCodec(lim.in_layout)
    bits = c_in.pack({"req": {"key_fp": 0xABC, "key_present": 1, "extra_value": 5}, "meta": 0xBEEF})
    f = c_in.unpack(bits)
    assert isinstance(f, Fields) and (f.req.key_fp, f.req.key_present, f.req.extra_value, f["meta"]) == \
        (0xABC, 1, 5, 0xBEEF)
    assert c_in.pack({"req": LimitRequest.const({"key_fp": 0xABC, "key_present": 1, "extra_value": 5}),
                      "meta": 0xBEEF}) == bits
    v = LimitVerdict(status=429, tenant_found=True, tenant=3, cost=9, retry_after_ns=1000)
    c_out = LayoutCodec(lim.out_layout, {"verdict": LimitVerdict})
    assert c_out.unpack(c_out.pack({"verdict": v, "meta": 2})).verdict == v
    r = RouteRequest(route_class=3, key_present=True, key_fp=11, extra_fp=(5, 6, 7, 8), l4_src=1 << 100)
    from wirespeed.hdl.router.hash_router import Router
    from wirespeed.hdl.router.layouts import RouterParams
    c_route = LayoutCodec(Router(RouterParams(), 16).in_layout, {"req": RouteRequest})
    assert c_route.unpack(c_route.pack({"req": r, "meta": 1})).req == r
    assert unpack(Trace, 1 | 5 << 2).now == 5


def test_codec_names_what_does_not_fit():
    codec = LayoutCodec(ByteBeat(4))
    with pytest.raises(ValueError, match=r"payload.n_valid=9"):
        codec.pack({"n_valid": 9})
    with pytest.raises(KeyError, match="lats"):
        codec.pack({"lats": 1})
    with pytest.raises(ValueError, match="4 elements"):
        codec.pack({"data": b"12345"})


def test_recording_transport_records_and_injects_faults(record_bus):
    regmap = core_regmap()
    scratch, magic = regmap["id.scratch"].address, regmap["id.magic"].address
    bus = record_bus(ModelTransport(), stuck={magic: 7}, clear_bits={scratch: 0xF})
    bus.write32(scratch, 0x1234)
    assert bus.read32(scratch) == 0x1230 and bus.read32(magic) == 7
    assert bus.writes == [(scratch, 0x1234)] and bus.reads == [scratch, magic]
    assert bus.named() == [("w", "id.scratch", 0x1234), ("r", "id.scratch", 0x1230), ("r", "id.magic", 7)]
    bus.set_bits_after_write(scratch, magic, 0x100, reads=2)
    bus.write32(scratch, 0)
    assert [bus.read32(magic) for _ in range(3)] == [0x107, 0x107, 7]
    bus.clear()
    assert bus.log == []
    failing = record_bus(ModelTransport(), fail_after_writes=1)
    failing.write32(scratch, 1)
    with pytest.raises(TransportError, match="link down"):
        failing.write32(scratch, 2)
    assert failing.named_writes == [("id.scratch", 1)]


def test_recording_transport_counts_overlapping_threads(record_bus):
    bus = record_bus(ModelTransport(), yield_inside=True)
    scratch = core_regmap()["id.scratch"].address
    threads = [threading.Thread(target=lambda: [bus.read32(scratch) for _ in range(300)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bus.overlaps > 0 and len(bus.reads) == 1200

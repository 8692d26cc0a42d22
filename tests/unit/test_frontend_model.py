"""The front end's model (wirespeed.host.models.frontend): hand-computed expectations for every punt reason and
precedence case, the frame builders against an independent decode (struct + ipaddress; dpkt is not a dependency),
payload
trimming, the L4 tuple, the beat timing, the record packing and the register values."""

import ipaddress
import random
import struct

import pytest

from wirespeed.hdl.frontend.l4_frontend import frontend_regmap
from wirespeed.hdl.frontend.layouts import PORT_ENTRIES, PuntReason
from wirespeed.host.errors import ConfigError
from wirespeed.host.models.frontend import (FrontEndConfig, FrontEndInfo, build_frame, configure_ops, ethernet_frame,
                                            ipv4_checksum, ipv4_packet, ipv6_packet, payload_beat_due,
                                            payload_beat_ready_cycles, process_frame, random_config, random_frame,
                                            tcp_segment)
from wirespeed.host.driver.registers import Registers, Write

SEED = 20261201
R = PuntReason
REQ = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def reason(frame, config=None):
    return process_frame(frame, True, config)[0].reason


def independent_decode(frame: bytes) -> dict:
    """A straightforward decode of a well-formed frame with struct, for checking the builders."""
    off, tags = 12, []
    (et,) = struct.unpack_from("!H", frame, off)
    while et in (0x8100, 0x88A8):
        tags.append(struct.unpack_from("!HH", frame, off))
        off += 4
        (et,) = struct.unpack_from("!H", frame, off)
    l3 = off + 2
    if et == 0x0800:
        vihl, _, total, _, ff, _, proto, csum = struct.unpack_from("!BBHHHBBH", frame, l3)
        ihl = (vihl & 15) * 4
        src, dst = frame[l3 + 12:l3 + 16], frame[l3 + 16:l3 + 20]
        l4, end = l3 + ihl, l3 + total
        hdr_ok = ipv4_checksum(frame[l3:l3 + ihl]) == 0
    else:
        plen, proto = struct.unpack_from("!HB", frame, l3 + 4)
        src, dst = frame[l3 + 8:l3 + 24], frame[l3 + 24:l3 + 40]
        l4, end, hdr_ok = l3 + 40, l3 + 40 + plen, True
    sport, dport, _, _, doff = struct.unpack_from("!HHIIB", frame, l4)
    p0 = l4 + 4 * (doff >> 4)
    return dict(tags=tags, ethertype=et, proto=proto, src=ipaddress.ip_address(src), dst=ipaddress.ip_address(dst),
                sport=sport, dport=dport, payload_offset=p0, payload=frame[p0:end], checksum_ok=hdr_ok)


# -- well-formed frames ------------------------------------------------------------------------------------------------

VARIANTS = [(v6, vlans, ip_options, tcp_options)
            for v6 in (False, True)
            for vlans in ((), ((0x8100, 5),), ((0x88A8, 7), (0x8100, 9)))
            for ip_options in ((b"",) if v6 else (b"", b"\x01" * 4, b"\x07" * 40))
            for tcp_options in (b"", b"\x02\x04\x05\xb4", b"\x01" * 40)]


@pytest.mark.parametrize("v6, vlans, ip_options, tcp_options", VARIANTS,
                         ids=[f"v{6 if a else 4}-tags{len(b)}-ipopt{len(c)}-tcpopt{len(d)}" for a, b, c, d in VARIANTS])
def test_well_formed(v6, vlans, ip_options, tcp_options):
    src, dst = ("2001:db8::1:2", "fe80::99") if v6 else ("10.1.2.3", "192.168.200.1")
    frame = build_frame(REQ, v6=v6, src=src, dst=dst, sport=51515, dport=8080, vlans=vlans, ip_options=ip_options,
                        tcp_options=tcp_options)
    ref = independent_decode(frame)
    assert ref["checksum_ok"] and ref["payload"] == REQ and ref["tags"] == [tuple(v) for v in vlans]
    info, payload = process_frame(frame, True)
    assert payload == REQ
    assert info == FrontEndInfo(inline=True, punt=False, reason=R.NONE, l4_v6=v6,
                                l4_src=int(ipaddress.ip_address(src)), l4_dst=int(ipaddress.ip_address(dst)),
                                l4_sport=51515, l4_dport=8080, payload_offset=ref["payload_offset"])
    assert info.src_address == ipaddress.ip_address(src) and info.dst_address == ipaddress.ip_address(dst)
    expected_offset = 14 + 4 * len(vlans) + (40 if v6 else 20 + len(ip_options)) + 20 + len(tcp_options)
    assert info.payload_offset == expected_offset
    assert FrontEndInfo.from_bits(info.to_bits()) == info


def test_padding_is_trimmed():
    frame = build_frame(b"GET", pad_to=60)
    assert len(frame) == 60                        # 14 + 20 + 20 + 3 = 57, padded
    assert process_frame(frame, True)[1] == b"GET"
    frame = build_frame(b"GET", pad_to=200) + b"trailing junk"
    assert process_frame(frame, True)[1] == b"GET"


def test_frame_shorter_than_ip_length_is_not_a_punt():
    frame = build_frame(REQ, pad_to=0)[:-5]        # the last 5 payload bytes missing
    info, payload = process_frame(frame, True)
    assert info.reason is R.NONE and payload == REQ[:-5]
    header_only = build_frame(REQ, pad_to=0)[:-len(REQ)]
    info, payload = process_frame(header_only, True)
    assert (info.reason, payload, info.payload_offset) == (R.NONE, b"", 54)


def test_bypass_passes_everything():
    for packet in (b"", b"x", REQ, build_frame(b"", dport=1)):
        assert process_frame(packet, False) == (FrontEndInfo(), packet)


# -- punt reasons
# --------------------------------------------------------------------------------------------------------

def v4(seg, **kw):
    return ethernet_frame(ipv4_packet("10.0.0.1", "10.0.0.2", seg, **kw))


def v6(seg, **kw):
    return ethernet_frame(ipv6_packet("::1", "::2", seg, **kw), ethertype=0x86DD)


SEG = tcp_segment(1234, 80, REQ)


@pytest.mark.parametrize("frame, want", [
    (ethernet_frame(b"\0" * 46, ethertype=0x0806), R.NOT_IP),
    (ethernet_frame(ipv4_packet("1.2.3.4", "5.6.7.8", SEG), vlans=[(0x8100, 1)] * 3), R.NOT_IP),   # a third tag
    (ethernet_frame(b"\0" * 46, ethertype=0x0806, vlans=[(0x88A8, 1), (0x8100, 2)]), R.NOT_IP),
    (v4(SEG, protocol=17), R.NOT_TCP),
    (v6(SEG, next_header=17), R.NOT_TCP),
    (v4(tcp_segment(1234, 443, REQ)), R.PORT_NOT_SERVED),
    (v6(tcp_segment(1234, 81, REQ)), R.PORT_NOT_SERVED),
    (v4(SEG, mf=True), R.IPV4_FRAGMENT),
    (v4(SEG, frag_offset=1), R.IPV4_FRAGMENT),
    (v4(SEG, df=True), R.NONE),                                          # DF alone is fine
    (v6(SEG, next_header=44), R.IPV6_EXT_HEADER),
    (v6(SEG, next_header=0), R.IPV6_EXT_HEADER),
    (v4(SEG, version=6), R.BAD_L3_L4_HEADER),
    (v4(SEG, ihl=4), R.BAD_L3_L4_HEADER),
    (v4(SEG, total_length=39), R.BAD_L3_L4_HEADER),                     # < 20 + 20
    (v6(SEG, version=4), R.BAD_L3_L4_HEADER),
    (v6(SEG, payload_length=19), R.BAD_L3_L4_HEADER),
    (v4(tcp_segment(1234, 80, REQ, data_offset=4)), R.BAD_L3_L4_HEADER),
    (v4(tcp_segment(1234, 80, b"", options=b"\x01" * 8), total_length=20 + 24), R.BAD_L3_L4_HEADER),  # doff 7
    (v4(tcp_segment(1234, 80, b"")), R.NO_PAYLOAD),
    (v6(tcp_segment(1234, 80, b"")), R.NO_PAYLOAD),
    (build_frame(REQ)[:40], R.TRUNCATED_FRAME),
    (build_frame(REQ)[:53], R.TRUNCATED_FRAME),                           # one byte short of the TCP header
    (build_frame(REQ)[:13], R.TRUNCATED_FRAME),
    (b"", R.TRUNCATED_FRAME),
])
def test_punt_reasons(frame, want):
    info, payload = process_frame(frame, True)
    assert info.reason is want
    assert info.punt == (want is not R.NONE) and info.inline
    if want is not R.NONE:
        assert payload == b""
    if want not in (R.NONE, R.NO_PAYLOAD):           # the tuple is filled only for a fully parsed header
        assert info == FrontEndInfo(inline=True, punt=True, reason=want)


def test_precedence_is_wire_order():
    # A fragment (byte l3+7) to a port not served (later): the fragment is first.
    assert reason(v4(tcp_segment(1, 443, REQ), mf=True)) is R.IPV4_FRAGMENT
    # Not TCP and truncated right after the protocol byte: NOT_TCP (byte 23 present).
    assert reason(v4(SEG, protocol=17)[:24]) is R.NOT_TCP
    # The same frame one byte shorter ends before the protocol: TRUNCATED_FRAME.
    assert reason(v4(SEG, protocol=17)[:23]) is R.TRUNCATED_FRAME
    # Port not served and a bad data offset: the port (l4+3) comes before the data offset (l4+12).
    assert reason(v4(tcp_segment(1, 443, REQ, data_offset=2))) is R.PORT_NOT_SERVED
    # Port not served, the frame ending just after the port: PORT_NOT_SERVED, one byte earlier: TRUNCATED_FRAME.
    frame = v4(tcp_segment(1, 443, REQ))
    assert reason(frame[:38]) is R.PORT_NOT_SERVED and reason(frame[:37]) is R.TRUNCATED_FRAME
    # A bad version beats a short total length in the same header.
    assert reason(v4(SEG, version=5, total_length=1)) is R.BAD_L3_L4_HEADER


def test_truncation_at_every_length():
    """Cutting a good frame anywhere inside its headers is TRUNCATED_FRAME; at or past the header end it is not."""
    for frame in (build_frame(REQ, vlans=[(0x8100, 1)], ip_options=b"\1" * 8, tcp_options=b"\1" * 12, pad_to=0),
                  build_frame(REQ, v6=True, vlans=[(0x8100, 1), (0x8100, 2)], pad_to=0)):
        p0 = process_frame(frame, True)[0].payload_offset
        for n in range(len(frame) + 1):
            info, payload = process_frame(frame[:n], True)
            assert info.reason is (R.TRUNCATED_FRAME if n < p0 else R.NONE), n
            assert payload == frame[p0:n]


def test_served_ports_config():
    frame = build_frame(REQ, dport=8443)
    assert reason(frame) is R.PORT_NOT_SERVED
    assert reason(frame, FrontEndConfig.serving(8443)) is R.NONE
    disabled = FrontEndConfig(((8443, False),) + ((0, False),) * (PORT_ENTRIES - 1))
    assert reason(frame, disabled) is R.PORT_NOT_SERVED
    assert reason(build_frame(REQ, dport=0), disabled) is R.PORT_NOT_SERVED     # disabled entries match nothing
    with pytest.raises(ConfigError):
        FrontEndConfig(((80, True),))
    with pytest.raises(ConfigError):
        FrontEndConfig(((70000, True),) + ((0, False),) * (PORT_ENTRIES - 1))
    with pytest.raises(ConfigError):
        FrontEndConfig.serving(*range(PORT_ENTRIES + 1))


def test_register_values_match_rdl_resets():
    regmap = frontend_regmap()
    default = FrontEndConfig().register_values()
    assert default == {reg.name: reg.reset for reg in regmap.registers}
    ops = list(configure_ops(Registers(regmap), FrontEndConfig.serving(443, 8443)))
    assert ops[0] == Write(regmap["port0"].address, 443 | 1 << 16)
    assert ops[1] == Write(regmap["port1"].address, 8443 | 1 << 16)
    assert len(ops) == PORT_ENTRIES and all(op.value == 0 for op in ops[2:])
    # The model reads its configuration back from the registers with the inverse.
    for config in (FrontEndConfig(), FrontEndConfig.serving(443, 8443), FrontEndConfig.serving()):
        assert FrontEndConfig.from_register_values(config.register_values()) == config


# -- timing ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("width", [4, 8, 16])
def test_payload_beat_due(width):
    # Bypass: beat j after input beat j.
    assert payload_beat_ready_cycles(bytes(3 * width + 1), False, None, width) == [0, 1, 2, 3]
    assert payload_beat_ready_cycles(b"", False, None, width) == [0]
    # A punt: one empty beat after the last input beat.
    frame = build_frame(REQ, dport=1, pad_to=0)
    assert payload_beat_ready_cycles(frame, True, None, width) == [(len(frame) - 1) // width]
    # A payload: beat j after the input beat holding byte p0 + (j+1)W - 1 (or the last payload byte).
    frame = build_frame(bytes(range(100)), pad_to=0)
    p0, end = 54, len(frame)
    due = payload_beat_due(frame, True, None, width)
    starts = range(p0, end, width)
    assert len(due) == len(starts)
    for (k, extra), start in zip(due[:-1], starts):
        assert (k, extra) == ((start + width - 1) // width, 0)
    last_k = (end - 1) // width
    assert due[-1] == (last_k, int(len(due) > 1 and due[-2][0] == last_k))
    # Padding after the payload does not delay it.
    padded = build_frame(bytes(range(100)), pad_to=400)
    assert payload_beat_due(padded, True, None, width) == due


def test_tail_beat_one_cycle_later():
    """W=8, payload from byte 54 (lane 6 of beat 6), 10 bytes: the first output beat ends at byte 61 (beat 7) and
    the 2-byte tail (bytes 62, 63) lies in beat 7 too, so it follows one cycle later."""
    frame = build_frame(bytes(10), pad_to=0)       # 64 bytes: beats 0..7
    assert payload_beat_due(frame, True, None, 8) == [(7, 0), (7, 1)]
    assert payload_beat_ready_cycles(frame, True, None, 8) == [7, 8]


# -- random frames ---------------------------------------------------------------------------------------------------

def test_random_frames_cover_every_reason():
    rng = random.Random(SEED)
    seen = {}
    for _ in range(6000):
        frame = random_frame(rng)
        info, payload = process_frame(frame, True)
        seen[info.reason] = seen.get(info.reason, 0) + 1
        assert FrontEndInfo.from_bits(info.to_bits()) == info
        if info.reason is R.NONE:
            assert payload == frame[info.payload_offset:info.payload_offset + len(payload)]
            due = payload_beat_due(frame, True, None, 8)
            assert len(due) == max(1, -(-len(payload) // 8))
        else:
            assert payload == b""
    assert set(seen) == set(PuntReason), seen
    assert seen[R.NONE] > 3000


def test_random_config():
    rng = random.Random(SEED)
    for _ in range(50):
        config = random_config(rng)
        assert len(config.ports) == PORT_ENTRIES

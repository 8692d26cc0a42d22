"""Bit-exact model of the L2–L4 front end (``hdl/frontend/l4_frontend.py``): the inline (bump-in-the-wire) entry of
the pipeline.

Ethernet frame (or a lookaside request) ─▶ :func:`process_frame` ─▶ one :class:`FrontEndInfo` + the TCP payload ─▶
:func:`wirespeed.host.models.parser.parse`

``docs/frontend.md`` is the specification. Besides the model this module holds the frame builders the tests, the demo
and the end-to-end runs use (:func:`build_frame`, :func:`ethernet_frame`, :func:`ipv4_packet`, :func:`ipv6_packet`,
:func:`tcp_segment`, :func:`random_frame`) and the driver's register values (:meth:`FrontEndConfig.register_values`,
:func:`configure_ops`).
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

from ...hdl.frontend.layouts import PORT_ENTRIES, PuntReason
from ...hdl.frontend.layouts import FrontEndInfo as FrontEndInfoLayout
from ..errors import ConfigError, check_int
from ..records import LayoutRecord

__all__ = ["FrontEndConfig", "FrontEndInfo", "process_frame", "payload_beat_due", "payload_beat_ready_cycles",
           "configure_ops", "ETH_VLAN_TPIDS", "IPV6_EXTENSION_HEADERS", "MAX_VLAN_TAGS",
           "ipv4_checksum", "tcp_segment", "ipv4_packet", "ipv6_packet", "ethernet_frame", "build_frame",
           "random_frame", "random_config"]

ETHERTYPE_IPV4, ETHERTYPE_IPV6 = 0x0800, 0x86DD
#: 802.1Q and 802.1ad tag protocol identifiers.
ETH_VLAN_TPIDS = (0x8100, 0x88A8)
#: Tags skipped; a third tag makes the frame NOT_IP.
MAX_VLAN_TAGS = 2
#: IPv6 next-header codes the front end recognises as extension headers (punted, not parsed).
IPV6_EXTENSION_HEADERS = frozenset({0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254})
PROTO_TCP = 6
RESET_PORTS = ((80, True), (8080, True)) + ((0, False),) * (PORT_ENTRIES - 2)


# -- configuration ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FrontEndConfig:
    """The TCP destination ports served inline: ``PORT_ENTRIES`` entries of ``(port, enabled)``.

    The default is the register reset: entry 0 = port 80, entry 1 = port 8080, both enabled; the rest disabled.
    """
    ports: tuple = RESET_PORTS

    def __post_init__(self):
        ports = tuple(tuple(e) for e in self.ports)
        if len(ports) != PORT_ENTRIES:
            raise ConfigError("ports", self.ports, f"exactly {PORT_ENTRIES} (port, enabled) entries")
        for i, entry in enumerate(ports):
            if len(entry) != 2 or not isinstance(entry[1], bool):
                raise ConfigError(f"ports[{i}]", entry, "a (port, enabled) pair with enabled a bool")
            check_int(f"ports[{i}].port", entry[0], 0, 0xFFFF)
        object.__setattr__(self, "ports", ports)

    @classmethod
    def serving(cls, *ports: int) -> "FrontEndConfig":
        """Serve exactly ``ports`` (at most ``PORT_ENTRIES``), the other entries disabled."""
        if len(ports) > PORT_ENTRIES:
            raise ConfigError("ports", ports, f"at most {PORT_ENTRIES} ports")
        return cls(tuple((p, True) for p in ports) + ((0, False),) * (PORT_ENTRIES - len(ports)))

    def served(self, port: int) -> bool:
        return any(enabled and p == port for p, enabled in self.ports)

    def register_values(self) -> dict[str, int]:
        """Register name (in ``frontend.rdl``) → value: ``port<i>`` = port in bits 15:0, enable in bit 16."""
        return {f"port{i}": port | (int(enabled) << 16) for i, (port, enabled) in enumerate(self.ports)}

    @classmethod
    def from_register_values(cls, values) -> "FrontEndConfig":
        """The inverse of :meth:`register_values`: ``values`` maps ``port<i>`` to the register's contents."""
        return cls(tuple((values[f"port{i}"] & 0xFFFF, bool(values[f"port{i}"] >> 16 & 1))
                         for i in range(PORT_ENTRIES)))


def configure_ops(regs, config: FrontEndConfig, block: str = ""):
    """Write every front-end register from ``config`` (sans-IO, like :mod:`~wirespeed.host.driver.parser_config`).
    ``block`` is the map
    prefix: ``""`` for a standalone front-end map, ``"frontend."`` inside the core."""
    for name, value in config.register_values().items():
        yield from regs.write(f"{block}{name}", value)


# -- info record ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FrontEndInfo(LayoutRecord, layout=FrontEndInfoLayout):
    """One per packet; mirrors :class:`wirespeed.hdl.frontend.layouts.FrontEndInfo` field for field.

    The L4 tuple and ``payload_offset`` are filled only when the whole L2–L4 header was parsed (reason ``NONE`` or
    ``NO_PAYLOAD``); every other punt, and a bypassed packet, carries zeros there.
    """
    inline: bool = False
    punt: bool = False
    reason: PuntReason = PuntReason.NONE
    l4_v6: bool = False
    l4_src: int = 0
    l4_dst: int = 0
    l4_sport: int = 0
    l4_dport: int = 0
    payload_offset: int = 0

    @property
    def src_address(self):
        return ipaddress.IPv6Address(self.l4_src) if self.l4_v6 else ipaddress.IPv4Address(self.l4_src)

    @property
    def dst_address(self):
        return ipaddress.IPv6Address(self.l4_dst) if self.l4_v6 else ipaddress.IPv4Address(self.l4_dst)


# -- the decision -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Decision:
    reason: PuntReason
    payload_offset: int = 0       # P0 (valid for NONE / NO_PAYLOAD)
    ip_end: int = 0               # end of the IP datagram in the frame (l3 + IP length)
    v6: bool = False
    src: int = 0
    dst: int = 0
    sport: int = 0
    dport: int = 0


def _be(frame: bytes, at: int, n: int) -> int:
    return int.from_bytes(frame[at:at + n], "big")


def _decide(frame: bytes, config: FrontEndConfig) -> _Decision:
    """Walk the headers in wire order. Each check needs the bytes up to its decision byte; the frame ending before a
    needed byte is TRUNCATED_FRAME, so the first problem in wire order wins (docs/frontend.md, "Precedence")."""
    n = len(frame)
    trunc = _Decision(PuntReason.TRUNCATED_FRAME)

    def punt(reason):
        return _Decision(reason)

    e = 12
    for tags in range(MAX_VLAN_TAGS + 1):
        if n < e + 2:
            return trunc
        ethertype = _be(frame, e, 2)
        if ethertype not in ETH_VLAN_TPIDS:
            break
        if tags == MAX_VLAN_TAGS:
            return punt(PuntReason.NOT_IP)          # a third tag
        e += 4
    l3 = e + 2
    if ethertype == ETHERTYPE_IPV4:
        if n <= l3:
            return trunc
        version, ihl = frame[l3] >> 4, frame[l3] & 15
        if version != 4 or ihl < 5:
            return punt(PuntReason.BAD_L3_L4_HEADER)
        if n < l3 + 4:
            return trunc
        total = _be(frame, l3 + 2, 2)
        if total < 4 * ihl + 20:
            return punt(PuntReason.BAD_L3_L4_HEADER)
        if n < l3 + 8:
            return trunc
        flags_frag = _be(frame, l3 + 6, 2)
        if flags_frag & 0x3FFF:                      # MF or a fragment offset
            return punt(PuntReason.IPV4_FRAGMENT)
        if n < l3 + 10:
            return trunc
        if frame[l3 + 9] != PROTO_TCP:
            return punt(PuntReason.NOT_TCP)
        v6, l4, ip_end = False, l3 + 4 * ihl, l3 + total
        src, dst = _be(frame, l3 + 12, 4), _be(frame, l3 + 16, 4)
    elif ethertype == ETHERTYPE_IPV6:
        if n <= l3:
            return trunc
        if frame[l3] >> 4 != 6:
            return punt(PuntReason.BAD_L3_L4_HEADER)
        if n < l3 + 6:
            return trunc
        payload_length = _be(frame, l3 + 4, 2)
        if payload_length < 20:
            return punt(PuntReason.BAD_L3_L4_HEADER)
        if n < l3 + 7:
            return trunc
        next_header = frame[l3 + 6]
        if next_header in IPV6_EXTENSION_HEADERS:
            return punt(PuntReason.IPV6_EXT_HEADER)
        if next_header != PROTO_TCP:
            return punt(PuntReason.NOT_TCP)
        v6, l4, ip_end = True, l3 + 40, l3 + 40 + payload_length
        src, dst = _be(frame, l3 + 8, 16), _be(frame, l3 + 24, 16)
    else:
        return punt(PuntReason.NOT_IP)
    # (The addresses and IPv4 options have no check of their own: a frame ending there is caught by the next need.)
    if n < l4 + 4:
        return trunc
    sport, dport = _be(frame, l4, 2), _be(frame, l4 + 2, 2)
    if not config.served(dport):
        return punt(PuntReason.PORT_NOT_SERVED)
    if n < l4 + 13:
        return trunc
    data_offset = frame[l4 + 12] >> 4
    payload_offset = l4 + 4 * data_offset
    if data_offset < 5 or ip_end < payload_offset:
        return punt(PuntReason.BAD_L3_L4_HEADER)
    if n < payload_offset:
        return trunc
    reason = PuntReason.NO_PAYLOAD if ip_end == payload_offset else PuntReason.NONE
    return _Decision(reason, payload_offset, ip_end, v6, src, dst, sport, dport)


def _info(d: _Decision) -> FrontEndInfo:
    if d.reason not in (PuntReason.NONE, PuntReason.NO_PAYLOAD):
        return FrontEndInfo(inline=True, punt=True, reason=d.reason)
    return FrontEndInfo(inline=True, punt=d.reason is not PuntReason.NONE, reason=d.reason, l4_v6=d.v6,
                        l4_src=d.src, l4_dst=d.dst, l4_sport=d.sport, l4_dport=d.dport,
                        payload_offset=d.payload_offset)


def process_frame(packet: bytes, inline: bool, config: FrontEndConfig | None = None) -> tuple[FrontEndInfo, bytes]:
    """The front end's two outputs for one packet: its info and its ``o_payload`` bytes.

    ``inline=False`` (lookaside) passes the packet through whole. Inline, the payload is the TCP payload up to the end
    given by the IP length (Ethernet padding dropped), or up to the frame's end if the frame is shorter; ``b""`` when
    the frame is punted or has no payload.
    """
    packet = bytes(packet)
    if not inline:
        return FrontEndInfo(), packet
    d = _decide(packet, config or FrontEndConfig())
    if d.reason is not PuntReason.NONE:
        return _info(d), b""
    return _info(d), packet[d.payload_offset:min(d.ip_end, len(packet))]


def payload_beat_due(packet: bytes, inline: bool, config: FrontEndConfig | None, width: int) -> list[tuple[int, int]]:
    """For each ``o_payload`` beat (the single empty beat included): ``(k, extra)``. With no backpressure the beat is
    valid ``FRONTEND_LATENCY_CYCLES + extra`` cycles after the cycle that accepted input beat ``k`` of the packet.

    ``extra`` is 1 only for a final partial beat whose bytes lie in the same input beat as the last byte of the
    beat before it (the realigned payload then needs one output beat more than the input had); else 0.
    """
    n_beats = max(1, -(-len(packet) // width))
    if not inline:
        return [(k, 0) for k in range(n_beats)]
    d = _decide(bytes(packet), config or FrontEndConfig())
    end = min(d.ip_end, len(packet))
    if d.reason is not PuntReason.NONE or end == d.payload_offset:
        return [(n_beats - 1, 0)]
    due = []
    for start in range(d.payload_offset, end, width):
        k = (min(start + width, end) - 1) // width
        due.append((k, 1) if due and due[-1][0] == k else (k, 0))
    return due


def payload_beat_ready_cycles(packet: bytes, inline: bool, config: FrontEndConfig | None, width: int) -> list[int]:
    """For each ``o_payload`` beat: the input beat index after which it is emitted, ``k + extra`` of
    :func:`payload_beat_due`. With the input at one beat per cycle and no backpressure, the beat is valid exactly
    ``FRONTEND_LATENCY_CYCLES + value`` cycles after the packet's first beat was accepted."""
    return [k + extra for k, extra in payload_beat_due(packet, inline, config, width)]


# -- frame builders ---------------------------------------------------------------------------------------------------

def _ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ipv4_checksum(header: bytes) -> int:
    """The IPv4 header checksum of ``header`` (its checksum field taken as it is; zero it first)."""
    return ~_ones_complement_sum(header) & 0xFFFF


def _address(a, v6: bool) -> bytes:
    addr = ipaddress.ip_address(a) if not isinstance(a, int) else (
        ipaddress.IPv6Address(a) if v6 else ipaddress.IPv4Address(a))
    if (addr.version == 6) != v6:
        raise ValueError(f"{a!r} is not an IPv{6 if v6 else 4} address")
    return addr.packed


def tcp_segment(sport: int, dport: int, payload: bytes = b"", *, seq: int = 0, ack: int = 0, flags: int = 0x18,
                window: int = 65535, options: bytes = b"", data_offset: int | None = None, checksum: int = 0) -> bytes:
    """A TCP segment. ``options`` are padded with NOPs to a multiple of 4; ``data_offset`` overrides the header
    length field (to build bad headers). The checksum is taken as given (:func:`build_frame` computes it)."""
    options = options + b"\x01" * (-len(options) % 4)
    doff = 5 + len(options) // 4 if data_offset is None else data_offset
    header = (sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + seq.to_bytes(4, "big") + ack.to_bytes(4, "big")
              + bytes([doff << 4, flags]) + window.to_bytes(2, "big") + checksum.to_bytes(2, "big") + b"\0\0")
    return header + options + payload


def ipv4_packet(src, dst, l4: bytes, *, protocol: int = PROTO_TCP, options: bytes = b"", ttl: int = 64,
                ident: int = 0, df: bool = True, mf: bool = False, frag_offset: int = 0,
                total_length: int | None = None, ihl: int | None = None, version: int = 4) -> bytes:
    """An IPv4 datagram with a correct header checksum; ``total_length``, ``ihl`` and ``version`` override the header
    fields (to build bad headers)."""
    options = options + b"\0" * (-len(options) % 4)
    ihl = 5 + len(options) // 4 if ihl is None else ihl
    total = 20 + len(options) + len(l4) if total_length is None else total_length
    flags_frag = (int(df) << 14) | (int(mf) << 13) | frag_offset
    header = (bytes([(version << 4) | ihl, 0]) + total.to_bytes(2, "big") + ident.to_bytes(2, "big")
              + flags_frag.to_bytes(2, "big") + bytes([ttl, protocol]) + b"\0\0"
              + _address(src, False) + _address(dst, False) + options)
    checksum = ipv4_checksum(header)
    return header[:10] + checksum.to_bytes(2, "big") + header[12:] + l4


def ipv6_packet(src, dst, l4: bytes, *, next_header: int = PROTO_TCP, payload_length: int | None = None,
                hop_limit: int = 64, version: int = 6, flow_label: int = 0) -> bytes:
    """An IPv6 packet (fixed header only); ``payload_length`` and ``version`` override the header fields."""
    length = len(l4) if payload_length is None else payload_length
    return ((version << 28 | flow_label).to_bytes(4, "big") + length.to_bytes(2, "big")
            + bytes([next_header, hop_limit]) + _address(src, True) + _address(dst, True) + l4)


def ethernet_frame(l3: bytes, *, ethertype: int = ETHERTYPE_IPV4, vlans=(), dst_mac: bytes = b"\x02\0\0\0\0\x01",
                   src_mac: bytes = b"\x02\0\0\0\0\x02", pad_to: int = 60) -> bytes:
    """An Ethernet II frame (no FCS) zero-padded to ``pad_to`` bytes; ``vlans`` are ``(tpid, tci)`` pairs, outer
    first."""
    tags = b"".join(tpid.to_bytes(2, "big") + tci.to_bytes(2, "big") for tpid, tci in vlans)
    frame = dst_mac + src_mac + tags + ethertype.to_bytes(2, "big") + l3
    return frame.ljust(pad_to, b"\0")


def build_frame(payload: bytes = b"", *, v6: bool = False, src=None, dst=None, sport: int = 40000, dport: int = 80,
                vlans=(), ip_options: bytes = b"", tcp_options: bytes = b"", pad_to: int = 60, seq: int = 1,
                ack: int = 1) -> bytes:
    """A well-formed Ethernet/[VLAN]/IPv4-or-IPv6/TCP frame carrying ``payload``, checksums included."""
    src = src if src is not None else ("2001:db8::1" if v6 else "192.0.2.1")
    dst = dst if dst is not None else ("2001:db8::2" if v6 else "198.51.100.7")
    seg = tcp_segment(sport, dport, payload, seq=seq, ack=ack, options=tcp_options)
    if v6:
        pseudo = _address(src, True) + _address(dst, True) + len(seg).to_bytes(4, "big") + bytes([0, 0, 0, 6])
    else:
        pseudo = _address(src, False) + _address(dst, False) + bytes([0, 6]) + len(seg).to_bytes(2, "big")
    checksum = ~_ones_complement_sum(pseudo + seg) & 0xFFFF
    seg = seg[:16] + checksum.to_bytes(2, "big") + seg[18:]
    if v6:
        return ethernet_frame(ipv6_packet(src, dst, seg), ethertype=ETHERTYPE_IPV6, vlans=vlans, pad_to=pad_to)
    return ethernet_frame(ipv4_packet(src, dst, seg, options=ip_options), vlans=vlans, pad_to=pad_to)


# -- random traffic ---------------------------------------------------------------------------------------------------

def random_config(rng: random.Random) -> FrontEndConfig:
    """Random served ports; 80 and 8080 usually among them, duplicates and disabled entries included."""
    entries = []
    for _ in range(PORT_ENTRIES):
        port = rng.choice([80, 8080, 443, 8000, rng.randrange(65536), 0])
        entries.append((port, rng.random() < 0.7))
    return FrontEndConfig(tuple(entries))


def _random_payload(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.1:
        return b""
    if kind < 0.5:
        return (b"GET /v1/models HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer " + rng.randbytes(8).hex()
                .encode() + b"\r\n\r\n")
    return rng.randbytes(rng.choice([1, 2, 3, rng.randrange(1, 64), rng.randrange(1, 1460)]))


def random_frame(rng: random.Random, payload: bytes | None = None) -> bytes:
    """A random frame: every legal variant (0–2 VLAN tags, IPv4 with options, IPv6, TCP options, padding) and every
    punt reason (non-IP, a third tag, bad headers, fragments, other protocols, extension headers, ports not served,
    bare segments, truncations), weighted towards frames the parser gets."""
    if payload is None:
        payload = _random_payload(rng)
    r = rng.random
    vlans = [(rng.choice(ETH_VLAN_TPIDS), rng.randrange(1 << 16)) for _ in range(rng.choice([0, 0, 0, 1, 2]))]
    if r() < 0.02:
        vlans.append((rng.choice(ETH_VLAN_TPIDS), 1))              # a third tag: NOT_IP
    v6 = r() < 0.3
    dport = rng.choice([80, 80, 8080, 8080, 443, 8000, rng.randrange(65536)]) if r() < 0.3 else 80
    sport = rng.randrange(65536)
    tcp_options = rng.randbytes(rng.choice([0, 0, 4, 12, rng.randrange(0, 41)])) if r() < 0.4 else b""
    tcp_options = tcp_options[:40]
    data_offset = None
    if r() < 0.03:
        data_offset = rng.randrange(5)                               # < 5: BAD
    elif r() < 0.03:
        data_offset = 15                                             # longer than the IP length allows: BAD
    seg = tcp_segment(sport, dport, payload, seq=rng.randrange(1 << 32), options=tcp_options,
                      data_offset=data_offset, flags=rng.choice([0x18, 0x10, 0x02]))
    src = rng.randrange(1 << (128 if v6 else 32))
    dst = rng.randrange(1 << (128 if v6 else 32))
    if v6:
        nh = PROTO_TCP if r() < 0.9 else rng.choice(sorted(IPV6_EXTENSION_HEADERS) + [17, 58, rng.randrange(256)])
        length = None
        if r() < 0.05:
            length = rng.randrange(20)                               # shorter than a TCP header: BAD
        elif r() < 0.1:
            length = len(seg) + rng.randrange(1, 100)                # claims more than the frame holds
        elif r() < 0.1 and payload:
            length = len(seg) - rng.randrange(len(payload) + 1)      # trailing bytes beyond the IP length
        l3 = ipv6_packet(src, dst, seg, next_header=nh, payload_length=length,
                         version=6 if r() < 0.98 else rng.randrange(16))
        ethertype = ETHERTYPE_IPV6
    else:
        options = rng.randbytes(4 * rng.randrange(11)) if r() < 0.3 else b""
        proto = PROTO_TCP if r() < 0.93 else rng.choice([17, 1, rng.randrange(256)])
        frag = r() < 0.05
        mf, frag_offset = (rng.random() < 0.5, rng.randrange(1 << 13)) if frag else (False, 0)
        if frag and not mf and frag_offset == 0:
            mf = True
        total = None
        ihl = None
        if r() < 0.03:
            ihl = rng.randrange(5)                                   # IHL < 5: BAD
        if r() < 0.03:
            total = rng.randrange(20 + len(options) + 20)            # shorter than its headers: BAD
        elif r() < 0.08:
            total = 20 + len(options) + len(seg) + rng.randrange(1, 200)   # more than the frame holds
        elif r() < 0.1 and payload:
            total = 20 + len(options) + len(seg) - rng.randrange(len(payload) + 1)
        l3 = ipv4_packet(src, dst, seg, protocol=proto, options=options, mf=mf, frag_offset=frag_offset,
                         df=r() < 0.5, total_length=total, ihl=ihl, version=4 if r() < 0.98 else rng.randrange(16))
        ethertype = ETHERTYPE_IPV4
    if r() < 0.04:
        ethertype = rng.choice([0x0806, 0x88CC, 0x8847, rng.randrange(1 << 16)])   # not IP
    frame = ethernet_frame(l3, ethertype=ethertype, vlans=vlans,
                           pad_to=rng.choice([60, 60, 64, 128]) if r() < 0.9 else 0)
    if r() < 0.08:                                                   # truncated somewhere in (or just past) headers
        frame = frame[:rng.randrange(min(len(frame), 160) + 1)]
    elif r() < 0.03:
        frame = frame + rng.randbytes(rng.randrange(1, 40))          # trailing garbage (padding)
    return frame

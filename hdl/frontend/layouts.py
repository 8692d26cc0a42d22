"""Layouts of the L2–L4 front end (inline mode), shared by the gateware (:mod:`.l4_frontend`) and its model
(:mod:`wirespeed.host.models.frontend`). The behaviour they encode is specified in ``docs/frontend.md``.

(No ``from __future__ import annotations``: ``data.Struct`` reads its field shapes from the annotations.)
"""

from amaranth.lib import data
from amaranth.lib import enum as amaranth_enum

__all__ = ["PuntReason", "FrontEndInfo", "PORT_ENTRIES"]

#: Configured TCP destination ports the inline front end serves.
PORT_ENTRIES = 8


class PuntReason(amaranth_enum.Enum, shape=4):
    """Why the front end hands a frame to the host instead of the parser (never a drop)."""
    NONE = 0
    NOT_IP = 1                 # EtherType (after up to two 802.1Q/802.1ad tags) is neither IPv4 nor IPv6
    NOT_TCP = 2                # IP, but the protocol / next header is not TCP (and not an IPv6 extension header)
    PORT_NOT_SERVED = 3        # TCP destination port not in the configured set
    IPV4_FRAGMENT = 4          # MF set or a non-zero fragment offset
    IPV6_EXT_HEADER = 5        # IPv6 next header is an extension header (not parsed)
    BAD_L3_L4_HEADER = 6       # IPv4 version/IHL < 5, IP length shorter than its headers, TCP data offset < 5
    TRUNCATED_FRAME = 7        # the frame ends inside its L2–L4 headers
    NO_PAYLOAD = 8             # a TCP segment without payload (e.g. a bare ACK)


class FrontEndInfo(data.Struct):
    """One per packet, from the front end: where the payload is and the flow it belongs to."""
    inline: 1                  # the packet was parsed as an Ethernet frame (else passed through whole)
    punt: 1
    reason: PuntReason
    l4_v6: 1                   # IPv6; else IPv4 in the low 32 bits of l4_src / l4_dst
    l4_src: 128                # addresses as big-endian integers (int(ipaddress.ip_address(...)))
    l4_dst: 128
    l4_sport: 16
    l4_dport: 16
    payload_offset: 16         # byte offset of the TCP payload in the frame (0 when not inline)

"""Layouts and constants of the hash router (Toeplitz + Maglev), shared by the gateware and its model
(:mod:`wirespeed.host.models.router`). The behaviour they encode is specified in ``docs/router.md``.

(No ``from __future__ import annotations``: ``data.Struct`` reads its field shapes from the annotations.)
"""

from dataclasses import dataclass

from amaranth.lib import data
from amaranth.lib import enum as amaranth_enum

from ..parser.layouts import EXTRA_SLOTS

__all__ = ["RouterParams", "KeySelect", "RouteRequest", "RouteVerdict", "TOEPLITZ_KEY_BYTES", "HASH_INPUT_BYTES",
           "CLASSES", "POOLS_MAX", "M_MAX", "STATUS_OK", "STATUS_UNAVAILABLE"]

#: The RSS key: 40 bytes, enough for a 36-byte input (IPv6 + ports) and a 32-bit window.
TOEPLITZ_KEY_BYTES = 40
#: The longest hash input: IPv6 source and destination addresses and two ports.
HASH_INPUT_BYTES = 36
#: Route classes (the parser's 4-bit ``route_class``).
CLASSES = 16
POOLS_MAX = 16
#: Largest Maglev table per pool: 2^16 + 1, a prime.
M_MAX = 65537
STATUS_OK = 200
STATUS_UNAVAILABLE = 503


@dataclass(frozen=True)
class RouterParams:
    """Elaboration parameters of the router.

    Attributes
    ----------
    table_entries : int
        Backend-id entries per table buffer, shared by all pools through host-set partitions (even, 2..131072).
        There are two buffers (shadow and active).
    pools : int
        Pools, 1..16.
    id_bits : int
        Width of a backend id: 16 (any id) or 8 (ids below 256, half the RAM).
    """
    table_entries: int = 8192
    pools: int = 16
    id_bits: int = 16

    def __post_init__(self):
        if not (isinstance(self.table_entries, int) and 2 <= self.table_entries <= 131072
                and self.table_entries % 2 == 0):
            raise ValueError(f"RouterParams.table_entries = {self.table_entries!r}: must be even, 2..131072")
        if not 1 <= self.pools <= POOLS_MAX:
            raise ValueError(f"RouterParams.pools = {self.pools!r}: must be in 1..{POOLS_MAX}")
        if self.id_bits not in (8, 16):
            raise ValueError(f"RouterParams.id_bits = {self.id_bits!r}: must be 8 or 16")

    @property
    def ids_per_word(self) -> int:
        """Backend ids per 32-bit RAM word."""
        return 32 // self.id_bits

    @property
    def words(self) -> int:
        """RAM words per buffer."""
        return -(-self.table_entries // self.ids_per_word)

    @property
    def table_bits(self) -> int:
        """RAM bits of both buffers."""
        return 2 * self.words * 32


class KeySelect(amaranth_enum.Enum, shape=2):
    """What a route class hashes (``class_stage.key_sel``)."""
    TENANT = 0         # the API-key fingerprint (tenant affinity)
    HEADER = 1         # an extra header's fingerprint, slot ``header_slot`` (session affinity)
    L4 = 2             # the L4 tuple (from the inline front end)


#: What the router needs of a request: the parser's descriptor fields, and the L4 tuple when the front end has one.
RouteRequest = data.StructLayout({
    "route_class": 4,
    "key_present": 1,
    "key_fp": 64,
    "extra_present": EXTRA_SLOTS,
    "extra_fp": data.ArrayLayout(64, EXTRA_SLOTS),
    "l4_valid": 1,
    "l4_v6": 1,                # IPv6; else IPv4 in the low 32 bits of l4_src / l4_dst
    "l4_ports": 1,             # TCP/UDP ports are part of the tuple
    "l4_src": 128,
    "l4_dst": 128,
    "l4_sport": 16,
    "l4_dport": 16,
})


class RouteVerdict(data.Struct):
    """The router's answer for one request (``docs/router.md``)."""
    status: 10         # 200, or 503 when the pool has no backend
    pool: 4
    backend: 16
    hash: 32

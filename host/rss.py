"""The Microsoft RSS (Toeplitz) hash and its standard L3/L4 input, with the published verification suite.

:func:`toeplitz` is the hash the router computes in hardware; :func:`rss_input` builds the standard input from an
address pair and ports; :data:`RSS_VECTORS` is Microsoft's verification suite, which the tests run.
"""

from __future__ import annotations

import functools
import ipaddress

from .errors import ConfigError, check_int

__all__ = ["MS_RSS_KEY", "RSS_VECTORS", "toeplitz", "rss_input", "ip_address"]

_U32 = (1 << 32) - 1

# -- Toeplitz (RSS) hash ----------------------------------------------------------------------------------------------

#: The key of Microsoft's RSS verification suite.
MS_RSS_KEY = bytes.fromhex("6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa")

#: Microsoft's RSS verification suite, every row: "Verifying the RSS Hash Calculation", Microsoft Learn, Windows
#: drivers / network (learn.microsoft.com/windows-hardware/drivers/network/verifying-the-rss-hash-calculation),
#: copied from its source, MicrosoftDocs/windows-driver-docs
#: ``windows-driver-docs-pr/network/verifying-the-rss-hash-calculation.md``, and checked against DPDK
#: ``app/test/test_thash.c`` (which cites the 82599 datasheet, 7.1.2.8.3). Key :data:`MS_RSS_KEY`. The hash input
#: is source address, destination address (``ip_only``), then source port, destination port (``with_ports``, the
#: TCP columns); see :func:`rss_input`.
RSS_VECTORS = [
    {"family": 4, "src": "66.9.149.187", "dst": "161.142.100.80", "sport": 2794, "dport": 1766,
     "ip_only": 0x323e8fc2, "with_ports": 0x51ccc178},
    {"family": 4, "src": "199.92.111.2", "dst": "65.69.140.83", "sport": 14230, "dport": 4739,
     "ip_only": 0xd718262a, "with_ports": 0xc626b0ea},
    {"family": 4, "src": "24.19.198.95", "dst": "12.22.207.184", "sport": 12898, "dport": 38024,
     "ip_only": 0xd2d0a5de, "with_ports": 0x5c2b394a},
    {"family": 4, "src": "38.27.205.30", "dst": "209.142.163.6", "sport": 48228, "dport": 2217,
     "ip_only": 0x82989176, "with_ports": 0xafc7327f},
    {"family": 4, "src": "153.39.163.191", "dst": "202.188.127.2", "sport": 44251, "dport": 1303,
     "ip_only": 0x5d1809c5, "with_ports": 0x10e828a2},
    {"family": 6, "src": "3ffe:2501:200:1fff::7", "dst": "3ffe:2501:200:3::1", "sport": 2794, "dport": 1766,
     "ip_only": 0x2cc18cd5, "with_ports": 0x40207d3d},
    {"family": 6, "src": "3ffe:501:8::260:97ff:fe40:efab", "dst": "ff02::1", "sport": 14230, "dport": 4739,
     "ip_only": 0x0f0c461c, "with_ports": 0xdde51bbf},
    {"family": 6, "src": "3ffe:1900:4545:3:200:f8ff:fe21:67cf", "dst": "fe80::200:f8ff:fe21:67cf", "sport": 44251,
     "dport": 38024, "ip_only": 0x4b61e985, "with_ports": 0x02d1feef},
]


@functools.lru_cache(maxsize=64)
def _toeplitz_tables(key: bytes) -> tuple:
    """Per input byte position p, the 256 XORs of the 32-bit key windows its set bits select."""
    k, nbits = int.from_bytes(key, "big"), 8 * len(key)
    tables = []
    for p in range(len(key) - 4):
        # bit b of byte p (b = 0 the MSB) is input bit 8p+b: window K[8p+b .. 8p+b+31]
        window = {0x80 >> b: (k >> (nbits - 32 - 8 * p - b)) & _U32 for b in range(8)}
        table = [0] * 256
        for v in range(1, 256):
            low = v & -v
            table[v] = table[v ^ low] ^ window[low]
        tables.append(tuple(table))
    return tuple(tables)


def toeplitz(key: bytes, data: bytes) -> int:
    """The Microsoft RSS (Toeplitz) hash of ``data`` under ``key``.

    Key bit i is bit ``7 − i mod 8`` of key byte ``i // 8`` (K[0] is the MSB of byte 0); input bits likewise. The
    result is the XOR, over the set input bits d[i], of the 32-bit key window K[i..i+31], K[i] its MSB. Empty data
    hash to 0.

    Parameters
    ----------
    key : bytes
        At least 4 bytes; a key of n bytes hashes up to n − 4 bytes (40 bytes: up to 36, IPv6 with ports).
    data : bytes

    Raises
    ------
    ConfigError
        If the key is shorter than 4 bytes or ``data`` is longer than the key allows.
    """
    key = bytes(key)
    if len(key) < 4:
        raise ConfigError("key", key, "must be at least 4 bytes")
    tables = _toeplitz_tables(key)
    if len(data) > len(tables):
        raise ConfigError("data", bytes(data), f"a {len(key)}-byte key hashes at most {len(tables)} bytes")
    result = 0
    for table, byte in zip(tables, data):
        result ^= table[byte]
    return result


def ip_address(value, name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``value`` as an address, or :class:`ConfigError` naming ``name``."""
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(name, value, "must be an IPv4 or IPv6 address") from None


def rss_input(src, dst, sport: int | None = None, dport: int | None = None) -> bytes:
    """The RSS hash input of a flow: source and destination address, then (when given) source and destination port,
    all big-endian: 8 or 12 bytes for IPv4, 32 or 36 for IPv6.

    Parameters
    ----------
    src, dst : str or ipaddress.IPv4Address or ipaddress.IPv6Address
        Of the same family.
    sport, dport : int, optional
        Both or neither, 0..65535.
    """
    src, dst = ip_address(src, "src"), ip_address(dst, "dst")
    if src.version != dst.version:
        raise ConfigError("dst", str(dst), f"must be IPv{src.version} like src")
    data = src.packed + dst.packed
    if (sport is None) != (dport is None):
        raise ConfigError("dport" if dport is None else "sport", None, "give both ports or neither")
    if sport is not None:
        data += check_int("sport", sport, 0, 0xFFFF).to_bytes(2, "big")
        data += check_int("dport", dport, 0, 0xFFFF).to_bytes(2, "big")
    return data



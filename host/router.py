"""Bit-exact model of the hash router (Toeplitz + Maglev), and the host's Maglev table builder.

parser descriptor + L4 tuple ─▶ :class:`RouteRequest` ─▶ :class:`RouterModel` (class ─▶ hash input ─▶
:func:`toeplitz` ─▶ pool ─▶ Maglev entry ``base + (hash·M >> 32)``) ─▶ one :class:`RouteVerdict` per request

``docs/router.md`` is the specification; the registers are ``hdl/router.rdl``. This module holds:
- :func:`toeplitz` and :func:`rss_input`, the Microsoft RSS hash and its standard L3/L4 input, with the published
  verification suite in :data:`RSS_VECTORS`;
- :func:`maglev_table`, the host's weighted Maglev builder (numpy), and :func:`pack_words` / :func:`unpack_words`,
  the table's RAM word format;
- :class:`RouterModel`, the hardware: key, double-buffered pools, classes and table words, routing, counters.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from dataclasses import dataclass

import numpy as np

from ..hdl.router_layouts import (CLASSES, STATUS_OK, STATUS_UNAVAILABLE, TOEPLITZ_KEY_BYTES, KeySelect,
                                  RouterParams)
from ..hdl.router_layouts import RouteRequest as RouteRequestLayout
from ..hdl.router_layouts import RouteVerdict as RouteVerdictLayout
from .errors import ConfigError, check_int
from .records import LayoutRecord

__all__ = ["MS_RSS_KEY", "RSS_VECTORS", "toeplitz", "rss_input", "is_prime", "maglev_table", "maglev_quotas",
           "maglev_build_time", "pack_words", "unpack_words", "route_hash_input", "RouteRequest", "RouteVerdict",
           "PoolDescriptor", "ClassEntry", "RouterModel", "BACKEND_ID_MAX", "MAGLEV_M_MAX", "U64"]

U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1
#: Backend ids are 16-bit in the table (8-bit when ``id_bits`` is 8).
BACKEND_ID_MAX = (1 << 16) - 1
#: Largest Maglev table the builder makes (the RTL's ``M_MAX``).
MAGLEV_M_MAX = 65537

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


def _address(value, name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
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
    src, dst = _address(src, "src"), _address(dst, "dst")
    if src.version != dst.version:
        raise ConfigError("dst", str(dst), f"must be IPv{src.version} like src")
    data = src.packed + dst.packed
    if (sport is None) != (dport is None):
        raise ConfigError("dport" if dport is None else "sport", None, "give both ports or neither")
    if sport is not None:
        data += check_int("sport", sport, 0, 0xFFFF).to_bytes(2, "big")
        data += check_int("dport", dport, 0, 0xFFFF).to_bytes(2, "big")
    return data


# -- Maglev table builder ---------------------------------------------------------------------------------------------

_GOLDEN = 0x9E3779B97F4A7C15
#: Seeds of the two splitmix64 streams that place a backend: "maglevOF" (offset) and "maglevSK" (skip).
_SEED_OFFSET = 0x6D61676C65764F46
_SEED_SKIP = 0x6D61676C6576534B
#: Rounds the builder aims at when quotas are large (see :func:`maglev_table`, "Batches").
_ROUNDS = 256
#: Widest scan window per backend (keeps the int32 candidate arithmetic exact) and most cells per window.
_WINDOW_MAX = 32000
_WINDOW_CELLS = 1 << 22


def _splitmix64(seed: int, x: np.ndarray) -> np.ndarray:
    """The first output of splitmix64 seeded with ``seed + x`` (uint64 arithmetic wraps)."""
    z = x.astype(np.uint64) + np.uint64((seed + _GOLDEN) & U64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def is_prime(n: int) -> bool:
    """Whether ``n`` is prime (trial division: meant for table sizes)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        return False
    n = int(n)
    if n < 4:
        return True
    if n % 2 == 0 or n % 3 == 0:
        return False
    f = 5
    while f * f <= n:
        if n % f == 0 or n % (f + 2) == 0:
            return False
        f += 6
    return True


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _check_backends(m, backends, weights) -> tuple[np.ndarray, list[int]]:
    """``(ids, weights)`` sorted by id, validated; raises :class:`ConfigError` naming the bad argument."""
    if not _is_int(m) or not 1 <= m <= MAGLEV_M_MAX or not is_prime(m):
        raise ConfigError("size", m, f"must be a prime in 2..{MAGLEV_M_MAX}")
    backends = list(backends)
    if not backends:
        raise ConfigError("backends", backends, "needs at least one backend")
    if not all(_is_int(b) and 0 <= b <= BACKEND_ID_MAX for b in backends):
        raise ConfigError("backends", backends, f"ids must be integers in 0..{BACKEND_ID_MAX}")
    ids = [int(b) for b in backends]
    if len(set(ids)) != len(ids):
        raise ConfigError("backends", backends, "ids must be distinct")
    if len(ids) > m:
        raise ConfigError("backends", len(ids), f"a table of {m} entries holds at most {m} backends")
    if weights is None:
        weights = [1] * len(ids)
    else:
        weights = list(weights)
        if len(weights) != len(ids):
            raise ConfigError("weights", weights, f"needs one weight per backend ({len(ids)})")
        if not all(_is_int(w) and w > 0 for w in weights):
            raise ConfigError("weights", weights, "weights must be positive integers")
        weights = [int(w) for w in weights]
    order = sorted(range(len(ids)), key=ids.__getitem__)
    return np.array([ids[i] for i in order], dtype=np.int64), [weights[i] for i in order]


def maglev_quotas(m: int, weights) -> np.ndarray:
    """Entries per backend: ``m`` apportioned by weight with the largest-remainder (Hamilton) method.

    Backend i gets ⌊m·wᵢ/W⌋, and the entries left over go one each to the largest remainders ``m·wᵢ mod W``, ties to
    the lower index (the builder passes weights sorted by backend id). Exact integer arithmetic.
    """
    weights = [int(w) for w in weights]
    total = sum(weights)
    quotas = [m * w // total for w in weights]
    left = m - sum(quotas)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(m * weights[i] % total), i))
    for i in by_remainder[:left]:
        quotas[i] += 1
    return np.array(quotas, dtype=np.int64)


class _MaglevFill:
    """The fill state of one :func:`maglev_table` build."""

    def __init__(self, m: int, ids: np.ndarray, quotas: np.ndarray):
        self.m = m
        self.ids = ids
        self.offset = (_splitmix64(_SEED_OFFSET, ids) % np.uint64(m)).astype(np.int64)
        self.skip = (_splitmix64(_SEED_SKIP, ids) % np.uint64(m - 1)).astype(np.int64) + 1
        self.skip32 = self.skip.astype(np.int32)
        self.remaining = quotas.copy()
        self.next = np.zeros(len(ids), dtype=np.int64)   # preferences before next[i] are all taken
        self.taken = np.zeros(m, dtype=bool)
        self.free = m
        self.table = np.zeros(m, dtype=np.uint32)

    def propose(self, who: np.ndarray, want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each backend ``who[r]``, its next ``want[r]`` free preferences, scanned from ``next``: returns
        ``(row, entry)`` pairs, rows ascending and each row's entries in preference order, and moves ``next`` past
        the last one proposed."""
        m, taken = self.m, self.taken
        rows_out, entries_out = [], []
        rows = np.arange(who.size)
        pos = self.next[who]
        need = want.copy()
        while rows.size:
            backends = who[rows]
            # expected scan need·m/free, so most rows finish in one window; int32 while start + (w−1)·skip < 2³¹
            width = min(_WINDOW_MAX, m, 2 * int(need.max()) * m // max(self.free, 1) + 4)
            width = max(1, min(width, _WINDOW_CELLS // rows.size))
            start = ((self.offset[backends] + pos * self.skip[backends]) % m).astype(np.int32)
            cand = start[:, None] + np.arange(width, dtype=np.int32) * self.skip32[backends, None]
            cand %= m
            busy = taken[cand]
            if need.max() == 1:
                last = np.argmin(busy, axis=1)
                done = ~busy[np.arange(rows.size), last]
                picked = np.flatnonzero(done)
                rows_out.append(rows[picked])
                entries_out.append(cand[picked, last[picked]])
                got = done.astype(np.int64)
            else:
                rank = np.cumsum(~busy, axis=1, dtype=np.int32)
                r, c = np.nonzero(~busy & (rank <= need[:, None]))
                rows_out.append(rows[r])
                entries_out.append(cand[r, c])
                got = rank[:, -1].astype(np.int64)
                done = got >= need
                last = np.argmax(rank >= need[:, None], axis=1)
            # a finished row resumes after its last pick, an unfinished one after the whole window
            pos = pos + np.where(done, last, width - 1) + 1
            self.next[backends[done]] = pos[done]
            keep = ~done
            rows, pos, need = rows[keep], pos[keep], (need - got)[keep]
        if len(rows_out) == 1:
            return rows_out[0], entries_out[0].astype(np.int64)
        rows, entries = np.concatenate(rows_out), np.concatenate(entries_out).astype(np.int64)
        order = np.argsort(rows, kind="stable")
        return rows[order], entries[order]

    def round(self, who: np.ndarray, want: np.ndarray):
        """Backends ``who`` (ascending ids) each claim ``want`` entries: all propose their next free preferences; an
        entry proposed by several goes to the lowest id; the others propose again until each has claimed its share."""
        while who.size:
            rows, entries = self.propose(who, want)
            order = np.argsort(entries, kind="stable")    # within one entry, rows stay ascending: lowest id first
            entries, rows = entries[order], rows[order]
            first = np.ones(entries.size, dtype=bool)
            first[1:] = entries[1:] != entries[:-1]
            won_entries, won_rows = entries[first], rows[first]
            self.taken[won_entries] = True
            self.table[won_entries] = self.ids[who[won_rows]]
            self.free -= won_entries.size
            wins = np.bincount(won_rows, minlength=who.size)
            self.remaining[who] -= wins
            want = want - wins
            keep = want > 0
            who, want = who[keep], want[keep]

    def run(self) -> np.ndarray:
        while True:
            active = np.flatnonzero(self.remaining > 0)
            if active.size == 0:
                return self.table
            remaining = self.remaining[active]
            if active.size == 1:
                batch = int(remaining[0])          # no one to interleave with: claim all at once
            else:
                batch = max(1, int(remaining.max()) // _ROUNDS)
            self.round(active, np.minimum(remaining, batch))


def maglev_table(m: int, backends, weights=None) -> np.ndarray:
    """The Maglev lookup table of ``m`` entries for a set of weighted backends (Eisenbud et al., NSDI'16, §3.4).

    Each backend has a preference list, a permutation of the entries: entry ``(offsetᵢ + j·skipᵢ) mod m`` for
    j = 0, 1, … with ``offsetᵢ = h₁(idᵢ) mod m`` and ``skipᵢ = h₂(idᵢ) mod (m − 1) + 1``. ``h₁``, ``h₂`` are the
    first splitmix64 outputs seeded with ``id + 0x6D61676C65764F46`` and ``id + 0x6D61676C6576534B``. Backend i owns
    exactly its quota (:func:`maglev_quotas`: ``m`` apportioned by weight, largest remainder).

    Fill, in rounds: every backend with quota left claims its next free preference. This is a vectorized variant of
    the paper's sequential loop: all such backends propose at once; an entry proposed by several goes to the
    lowest id; the others move on to their next free preference and propose again, until each has claimed one
    entry; then the next round. (The paper lets backend i see what backends < i claimed earlier in the same round;
    here a retry also skips entries that higher ids won in the round.)

    Batches: when quotas are large (few backends) rounds would be many, so each backend claims
    ``max(1, r // 256)`` entries a round, r the largest quota left (1 whenever r < 512, e.g. 1 000 backends in
    65 537 entries): its next free preferences, with contested ones again to the lowest id. A backend left alone
    claims the rest at once. Quotas stay exact and the result is a function of the set of (id, weight) pairs only:
    the input order does not matter, and removing a backend and adding it back gives the same table.

    Parameters
    ----------
    m : int
        Table size, a prime in 2..65537.
    backends : iterable of int
        Distinct backend ids, 0..65535; at most ``m`` of them.
    weights : iterable of int, optional
        Positive weights, one per backend (in the order of ``backends``); all 1 when omitted.

    Returns
    -------
    numpy.ndarray
        ``m`` backend ids, dtype uint32.

    Raises
    ------
    ConfigError
        Field ``size`` (m not a prime in range), ``backends`` (none, duplicates, out of range, more than m) or
        ``weights`` (wrong length, not positive integers).
    """
    ids, weights = _check_backends(m, backends, weights)
    return _MaglevFill(int(m), ids, maglev_quotas(int(m), weights)).run()


def maglev_build_time(m: int = 65537, n: int = 1000, repeat: int = 5) -> dict:
    """Best-of-``repeat`` wall time of :func:`maglev_table` for ``n`` equal-weight backends (ids 0..n−1)."""
    backends = list(range(n))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        maglev_table(m, backends)
        times.append(time.perf_counter() - start)
    return {"m": m, "backends": n, "repeat": repeat, "best_ms": 1e3 * min(times),
            "median_ms": 1e3 * sorted(times)[len(times) // 2]}


# -- table RAM words --------------------------------------------------------------------------------------------------

def _check_id_bits(id_bits: int) -> int:
    if id_bits not in (8, 16):
        raise ConfigError("id_bits", id_bits, "must be 8 or 16")
    return id_bits


def pack_words(entries, id_bits: int) -> np.ndarray:
    """Table entries as 32-bit RAM words: entry j of a word in bits ``[id_bits·(j+1)−1 : id_bits·j]`` (the lowest
    lane first), the last word padded with id 0.

    Raises
    ------
    ConfigError
        If ``id_bits`` is not 8 or 16, or an entry does not fit in it.
    """
    per_word = 32 // _check_id_bits(id_bits)
    entries = np.asarray(entries)
    if entries.size and (entries.min() < 0 or entries.max() >= 1 << id_bits):
        raise ConfigError("entries", int(entries.max() if entries.max() >= 1 << id_bits else entries.min()),
                          f"backend ids must fit in {id_bits} bits")
    lanes = np.zeros(-(-entries.size // per_word) * per_word, dtype=np.uint32)
    lanes[:entries.size] = entries
    lanes = lanes.reshape(-1, per_word)
    words = np.zeros(lanes.shape[0], dtype=np.uint32)
    for j in range(per_word):
        words |= lanes[:, j] << np.uint32(id_bits * j)
    return words


def unpack_words(words, id_bits: int, count: int | None = None) -> np.ndarray:
    """The inverse of :func:`pack_words`: the first ``count`` entries (all lanes when omitted), dtype uint32."""
    per_word = 32 // _check_id_bits(id_bits)
    words = np.asarray(words, dtype=np.uint32)
    mask = np.uint32((1 << id_bits) - 1)
    lanes = np.stack([(words >> np.uint32(id_bits * j)) & mask for j in range(per_word)], axis=1).reshape(-1)
    return lanes if count is None else lanes[:count]


# -- requests and verdicts --------------------------------------------------------------------------------------------

class _RouteRequestShape:
    # LayoutRecord reads a Struct's layout through as_shape(); RouteRequest is a bare StructLayout.
    @staticmethod
    def as_shape():
        return RouteRequestLayout


@dataclass(frozen=True, slots=True)
class RouteRequest(LayoutRecord, layout=_RouteRequestShape):
    """What the router reads of one request; mirrors :data:`wirespeed.hdl.router_layouts.RouteRequest`.

    ``extra_present`` is a bit mask over the extra header slots; ``extra_fp`` their fingerprints. For IPv4
    (``l4_v6`` false) the addresses are in the low 32 bits of ``l4_src`` / ``l4_dst``.
    """
    route_class: int = 0
    key_present: bool = False
    key_fp: int = 0
    extra_present: int = 0
    extra_fp: tuple = (0, 0, 0, 0)
    l4_valid: bool = False
    l4_v6: bool = False
    l4_ports: bool = False
    l4_src: int = 0
    l4_dst: int = 0
    l4_sport: int = 0
    l4_dport: int = 0

    @classmethod
    def for_flow(cls, src, dst, sport: int | None = None, dport: int | None = None, **fields) -> RouteRequest:
        """A request carrying the L4 tuple of a flow (as :func:`rss_input` takes it); ``fields`` set the rest."""
        s, d = _address(src, "src"), _address(dst, "dst")
        rss_input(s, d, sport, dport)          # validates family and ports
        return cls(l4_valid=True, l4_v6=s.version == 6, l4_ports=sport is not None, l4_src=int(s), l4_dst=int(d),
                   l4_sport=sport or 0, l4_dport=dport or 0, **fields)


@dataclass(frozen=True, slots=True)
class RouteVerdict(LayoutRecord, layout=RouteVerdictLayout):
    """One per request; mirrors :class:`wirespeed.hdl.router_layouts.RouteVerdict` field for field.

    ``status`` is 200 (``backend`` from the pool's table) or 503 (the pool has no backend; ``backend`` 0). ``hash``
    is the Toeplitz hash of the class's key, whatever the status.
    """
    status: int = 0
    pool: int = 0
    backend: int = 0
    hash: int = 0


@dataclass(frozen=True, slots=True)
class PoolDescriptor:
    """One pool of a buffer: the partition ``base .. base+m−1`` of the table. ``enabled`` as the hardware stored it
    (see :meth:`RouterModel.commit_pool`)."""
    base: int = 0
    m: int = 0
    enabled: bool = False


@dataclass(frozen=True, slots=True)
class ClassEntry:
    """One route class of a buffer: its pool and hash input (``key_sel`` as stored, 0..3; 3 acts as TENANT)."""
    pool: int = 0
    key_sel: int = 0
    header_slot: int = 0


def route_hash_input(req, key_sel: int, header_slot: int) -> bytes:
    """The bytes the router hashes for ``req`` under a class's ``key_sel`` / ``header_slot``; empty when the selected
    key is absent.

    - TENANT (and ``key_sel`` 3): ``key_fp``, 8 bytes big-endian, if ``key_present``;
    - HEADER: ``extra_fp[header_slot]``, 8 bytes big-endian, if bit ``header_slot`` of ``extra_present``;
    - L4: if ``l4_valid``: source then destination address, big-endian (IPv4: the low 32 bits of ``l4_src`` /
      ``l4_dst``, 4 bytes each; IPv6: 16 bytes each), then, if ``l4_ports``, source and destination port (2 bytes
      each): the RSS input of :func:`rss_input`.

    Fields are read at their layout widths (higher bits ignored, as the hardware has none).
    """
    key_sel &= 3
    if key_sel == KeySelect.HEADER.value:
        slot = header_slot & 3
        if (req.extra_present >> slot) & 1:
            return (req.extra_fp[slot] & U64).to_bytes(8, "big")
        return b""
    if key_sel == KeySelect.L4.value:
        if not req.l4_valid:
            return b""
        if req.l4_v6:
            mask, size = (1 << 128) - 1, 16
        else:
            mask, size = _U32, 4
        data = (req.l4_src & mask).to_bytes(size, "big") + (req.l4_dst & mask).to_bytes(size, "big")
        if req.l4_ports:
            data += (req.l4_sport & 0xFFFF).to_bytes(2, "big") + (req.l4_dport & 0xFFFF).to_bytes(2, "big")
        return data
    return (req.key_fp & U64).to_bytes(8, "big") if req.key_present else b""


# -- the router -------------------------------------------------------------------------------------------------------

_REG_MAX = _U32
_KEY_WORDS = TOEPLITZ_KEY_BYTES // 4


class RouterModel:
    """Bit-exact model of the router (``hdl/router.rdl``, ``docs/router.md``).

    Two buffers, each with ``params.pools`` pool descriptors, 16 route classes and ``params.words`` table words.
    Requests use the :attr:`active` one; the host writes the other (the shadow) and swaps. A swap copies nothing:
    the new shadow holds what the old active buffer held. The Toeplitz key is not buffered.

    Register values are masked to their fields' widths as the hardware does (``base`` 18 bits, ``m`` 17, indexes and
    ``pool`` 4, ``key_sel`` and ``header_slot`` 2); a value that is not a 32-bit register value raises
    :class:`ConfigError`.

    Attributes
    ----------
    params : RouterParams
    key : bytes
        The 40-byte Toeplitz key (all zero at reset).
    active : int
        The buffer requests use, 0 or 1 (0 at reset).
    routed, unavailable, swaps : int
        The 64-bit counters: requests given a backend, requests answered 503, swaps done.
    """

    def __init__(self, params: RouterParams = RouterParams()):
        if not isinstance(params, RouterParams):
            raise ConfigError("params", params, "must be a RouterParams")
        self.params = params
        self.key = bytes(TOEPLITZ_KEY_BYTES)
        self.active = 0
        self._pools = [[PoolDescriptor()] * params.pools for _ in range(2)]
        self._classes = [[ClassEntry()] * CLASSES for _ in range(2)]
        self._words = [np.zeros(params.words, dtype=np.uint32) for _ in range(2)]
        self.routed = self.unavailable = self.swaps = 0

    @property
    def shadow(self) -> int:
        """The buffer the host writes: the one not active."""
        return self.active ^ 1

    def _buffer(self, buffer) -> int:
        return self.active if buffer is None else check_int("buffer", buffer, 0, 1)

    # -- key --

    def set_key(self, key: bytes):
        """Write all 10 key words: ``key`` is the 40-byte RSS key."""
        key = bytes(key)
        if len(key) != TOEPLITZ_KEY_BYTES:
            raise ConfigError("key", key, f"must be {TOEPLITZ_KEY_BYTES} bytes")
        self.key = key

    def set_key_word(self, index: int, value: int):
        """Register ``key[index]``: key bytes 4·index .. 4·index+3, byte 4·index in bits 31:24."""
        check_int("index", index, 0, _KEY_WORDS - 1)
        check_int("value", value, 0, _REG_MAX)
        self.key = self.key[:4 * index] + value.to_bytes(4, "big") + self.key[4 * index + 4:]

    # -- shadow buffer --

    def commit_pool(self, index: int, base: int, m: int, enabled: bool):
        """``pool_base`` / ``pool_size`` staged, then ``pool_commit.go`` with ``index``: pool ``index`` of the shadow.

        The hardware stores ``enabled`` only if ``1 ≤ m`` and ``base + m ≤ table_entries``; otherwise the pool is
        stored disabled (it answers 503). ``index`` ≥ pools is ignored. Whether m is prime is the host's business.
        """
        for name, value in (("index", index), ("base", base), ("m", m)):
            check_int(name, value, 0, _REG_MAX)
        index, base, m = index & 0xF, base & 0x3FFFF, m & 0x1FFFF
        if index >= self.params.pools:
            return
        enabled = bool(enabled) and 1 <= m and base + m <= self.params.table_entries
        self._pools[self.shadow][index] = PoolDescriptor(base, m, enabled)

    def commit_class(self, index: int, pool: int, key_sel: int, header_slot: int):
        """``class_stage`` staged, then ``class_commit.go`` with ``index``: route class ``index`` of the shadow."""
        key_sel = key_sel.value if isinstance(key_sel, KeySelect) else key_sel
        for name, value in (("index", index), ("pool", pool), ("key_sel", key_sel), ("header_slot", header_slot)):
            check_int(name, value, 0, _REG_MAX)
        self._classes[self.shadow][index & 0xF] = ClassEntry(pool & 0xF, key_sel & 3, header_slot & 3)

    def write_word(self, addr: int, value: int):
        """``table_addr`` = addr, then ``table_wdata`` = value: shadow word ``addr`` (ignored past the last word)."""
        check_int("addr", addr, 0, _REG_MAX)
        check_int("value", value, 0, _REG_MAX)
        if addr < self.params.words:
            self._words[self.shadow][addr] = value

    def read_word(self, addr: int) -> int:
        """``table_rdata`` at ``table_addr`` = addr: shadow word ``addr`` (0 past the last word)."""
        check_int("addr", addr, 0, _REG_MAX)
        return int(self._words[self.shadow][addr]) if addr < self.params.words else 0

    def write_entries(self, base: int, entries):
        """Store backend ids in shadow entries ``base ..`` as a driver does: whole words, read-modify-write where
        ``base`` or the end is not word-aligned.

        Raises
        ------
        ConfigError
            If the entries do not fit below ``table_entries`` or an id does not fit in ``id_bits``.
        """
        entries = np.asarray(entries, dtype=np.int64)
        table_entries, id_bits = self.params.table_entries, self.params.id_bits
        check_int("base", base, 0, table_entries)
        if base + entries.size > table_entries:
            raise ConfigError("entries", entries.size, f"entries {base}.. must end by table_entries = {table_entries}")
        per_word = self.params.ids_per_word
        first, end = base // per_word, -(-(base + entries.size) // per_word)
        lanes = unpack_words(self._words[self.shadow][first:end], id_bits).astype(np.int64)
        lanes[base - first * per_word:base - first * per_word + entries.size] = entries
        for addr, word in enumerate(pack_words(lanes, id_bits), first):
            self.write_word(addr, int(word))

    # -- inspection --

    def pool(self, index: int, buffer: int | None = None) -> PoolDescriptor:
        """Pool ``index`` of ``buffer`` (the active one by default)."""
        return self._pools[self._buffer(buffer)][check_int("index", index, 0, self.params.pools - 1)]

    def class_entry(self, index: int, buffer: int | None = None) -> ClassEntry:
        """Route class ``index`` of ``buffer`` (the active one by default)."""
        return self._classes[self._buffer(buffer)][check_int("index", index, 0, CLASSES - 1)]

    def read_entries(self, base: int, count: int, buffer: int | None = None) -> np.ndarray:
        """Backend ids of entries ``base .. base+count−1`` of ``buffer`` (the active one by default)."""
        per_word = self.params.ids_per_word
        check_int("base", base, 0, self.params.table_entries)
        check_int("count", count, 0, self.params.table_entries - base)
        first = base // per_word
        words = self._words[self._buffer(buffer)][first:-(-(base + count) // per_word)]
        return unpack_words(words, self.params.id_bits)[base - first * per_word:][:count]

    # -- swap and requests --

    def swap(self):
        """``swap.go``: the shadow becomes active (between two requests)."""
        self.active ^= 1
        self.swaps = (self.swaps + 1) & U64

    def route(self, req) -> RouteVerdict:
        """The verdict for one request, from the active buffer.

        Class ``route_class``; hash = :func:`toeplitz` (key, :func:`route_hash_input`) (0 when the key is absent).
        If the class's pool is ≥ pools or not enabled: 503 with backend 0, counted in :attr:`unavailable`.
        Otherwise entry ``base + (hash·m >> 32)`` of the table (``id_bits`` per id, lane ``entry mod ids_per_word``
        of word ``entry // ids_per_word``): 200, counted in :attr:`routed`.

        Parameters
        ----------
        req : RouteRequest or any object with its fields
        """
        active = self.active
        entry = self._classes[active][req.route_class & 0xF]
        data = route_hash_input(req, entry.key_sel, entry.header_slot)
        hashed = toeplitz(self.key, data) if data else 0
        pool = entry.pool
        desc = self._pools[active][pool] if pool < self.params.pools else None
        if desc is None or not desc.enabled:
            self.unavailable = (self.unavailable + 1) & U64
            return RouteVerdict(STATUS_UNAVAILABLE, pool, 0, hashed)
        index = desc.base + ((hashed * desc.m) >> 32)
        per_word, id_bits = self.params.ids_per_word, self.params.id_bits
        word = int(self._words[active][index // per_word])
        backend = (word >> (id_bits * (index % per_word))) & ((1 << id_bits) - 1)
        self.routed = (self.routed + 1) & U64
        return RouteVerdict(STATUS_OK, pool, backend, hashed)

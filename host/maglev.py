"""The host's weighted Maglev table builder (numpy) and the table's RAM word format.

:func:`maglev_table` fills a table of M entries from backend ids and weights, as in Maglev (NSDI '16) with weighted
quotas; :func:`pack_words` / :func:`unpack_words` convert entries to and from the router's 32-bit RAM words
(``docs/router.md``). The router model and the pools driver both use them.
"""

from __future__ import annotations

import time

import numpy as np

from .errors import ConfigError

__all__ = ["is_prime", "maglev_table", "maglev_quotas", "maglev_build_time", "failover_table", "disruption",
           "pack_words", "unpack_words", "BACKEND_ID_MAX", "MAGLEV_M_MAX"]

#: Backend ids are 16-bit in the table (8-bit when ``id_bits`` is 8).
BACKEND_ID_MAX = (1 << 16) - 1
#: Largest Maglev table the builder makes (the RTL's ``M_MAX``).
MAGLEV_M_MAX = 65537

U64 = (1 << 64) - 1

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


#: Seed of the splitmix64 stream that ranks the up backends for an entry whose own backend is out ("maglevFV").
_SEED_FAILOVER = 0x6D61676C65764656
#: Entries × backends scored at once by :func:`failover_table`.
_FAILOVER_CELLS = 1 << 22


def failover_table(table, backends, weights=None, up=None) -> np.ndarray:
    """``table`` with each entry whose backend is not ``up`` handed to an ``up`` backend; every other entry is kept.

    The entry ``e`` of a backend that is out goes to the up backend ``b`` with the highest weighted rendezvous score
    ``ln(w_b) − ln(−ln u(e, b))``, where ``u(e, b)`` in (0, 1) is the first splitmix64 output seeded with
    ``0x6D61676C65764656 + (b << 20) + e``, its top 53 bits. So an entry lands on ``b`` with probability
    ``w_b / Σw`` over the up backends, and the result depends only on the table, the weights and the set of up
    backends:
    - taking one more backend out changes exactly the entries that pointed at it;
    - putting it back gives the table it had before.

    This is how a health flap is applied (``Pools.set_state``): the Maglev table of all the pool's backends stays
    the reference, and no session on another backend moves.

    Parameters
    ----------
    table : numpy.ndarray
        Backend ids, e.g. :func:`maglev_table` over all of ``backends``: a prime number of entries.
    backends : iterable of int
        The backend ids the table may hold, distinct.
    weights : iterable of int, optional
        Their positive weights (all 1 when omitted).
    up : iterable of int, optional
        The backends in service; all of ``backends`` when omitted. Must not be empty.

    Returns
    -------
    numpy.ndarray
        A new table (uint32), the same size as ``table``.
    """
    ids, weights = _check_backends(len(table), backends, weights)
    weight_of = dict(zip(ids.tolist(), weights))
    up_ids = sorted(weight_of) if up is None else sorted({int(b) for b in up})
    if not up_ids or any(b not in weight_of for b in up_ids):
        raise ConfigError("up", up, f"must be a non-empty subset of the backends {sorted(weight_of)}")
    out = np.array(table, dtype=np.uint32, copy=True)
    moved = np.flatnonzero(~np.isin(out, np.array(up_ids, dtype=np.uint32)))
    if not moved.size:
        return out
    cand = np.array(up_ids, dtype=np.uint64)
    log_w = np.log(np.array([weight_of[b] for b in up_ids], dtype=np.float64))
    step = max(1, _FAILOVER_CELLS // len(up_ids))
    for start in range(0, moved.size, step):
        entries = moved[start:start + step].astype(np.uint64)
        z = _splitmix64(_SEED_FAILOVER, (cand[None, :] << np.uint64(20)) + entries[:, None])
        u = ((z >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
        score = log_w[None, :] - np.log(-np.log(u))
        out[moved[start:start + step]] = cand[np.argmax(score, axis=1)].astype(np.uint32)
    return out


def disruption(m: int, n: int, trials: int = 10, seed: int = 1) -> dict:
    """How many sessions on *other* backends move when one of ``n`` equal backends leaves a table of ``m`` entries.

    For ``trials`` backends chosen at random (ids drawn from 0..65535 with ``seed``), one at a time: the share of
    the entries not on the leaving backend whose backend changes, when the pool is rebuilt with Maglev without it
    (``Pools.set`` with a shorter list) and when it is marked down (``Pools.set_state``, :func:`failover_table`).
    Sessions hash uniformly onto entries, so these are also the shares of sessions moved.

    Returns
    -------
    dict
        ``m``, ``n``, ``trials``, ``rebuild_mean``, ``rebuild_max``, ``set_state_max``, ``minimum`` (0: nothing has
        to move).
    """
    import random
    rng = random.Random(seed)
    ids = rng.sample(range(BACKEND_ID_MAX + 1), n)
    full = maglev_table(m, ids)
    rebuild, flap = [], []
    for gone in rng.sample(ids, min(trials, n)):
        others = full != gone
        rest = [b for b in ids if b != gone]
        rebuild.append(float(np.count_nonzero(maglev_table(m, rest)[others] != full[others]) / others.sum()))
        down = failover_table(full, ids, up=rest)
        flap.append(float(np.count_nonzero(down[others] != full[others]) / others.sum()))
    return {"m": m, "n": n, "trials": len(rebuild), "rebuild_mean": float(np.mean(rebuild)),
            "rebuild_max": max(rebuild), "set_state_max": max(flap), "minimum": 0.0}


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



"""The router's model (wirespeed.host.models.router): the Toeplitz hash against Microsoft's RSS verification suite, the
Maglev builder against a plain-loop reference of its definition and the paper's properties, and RouterModel rule by
rule."""

import ipaddress
import math
import random
from fractions import Fraction

import numpy as np
import pytest
from amaranth.lib import data
from hypothesis import given, settings
from hypothesis import strategies as st

from wirespeed.hdl.router.layouts import CLASSES, RouterParams
from wirespeed.hdl.router.layouts import RouteRequest as RouteRequestLayout
from wirespeed.hdl.router.layouts import RouteVerdict as RouteVerdictLayout
from wirespeed.host.errors import ConfigError
from wirespeed.host.rss import MS_RSS_KEY, RSS_VECTORS, rss_input, toeplitz
from wirespeed.host.models.router import U64, ClassEntry, PoolDescriptor, RouteRequest, RouterModel, RouteVerdict
from wirespeed.host.maglev import is_prime, maglev_build_time, maglev_quotas, maglev_table, pack_words, unpack_words

SEED = 20251125
SEEDED = settings(derandomize=True, deadline=None, max_examples=60)
TENANT, HEADER, L4 = 0, 1, 2
PRIMES = [2, 3, 5, 13, 101, 211, 503, 1009, 2003, 5003, 10007, 20011, 65537]


# -- Toeplitz -------------------------------------------------------------------------------------------------------

def toeplitz_by_bits(key: bytes, data: bytes) -> int:
    """Microsoft's pseudocode, bit by bit: for each input bit from the left, XOR the leftmost 32 key bits if it is
    set, then shift the key left by one."""
    k, nbits, result = int.from_bytes(key, "big"), 8 * len(key), 0
    for i in range(8 * len(data)):
        if (data[i // 8] >> (7 - i % 8)) & 1:
            result ^= (k >> (nbits - 32 - i)) & 0xFFFFFFFF
    return result


def test_the_verification_suite_is_complete():
    assert [v["family"] for v in RSS_VECTORS] == [4] * 5 + [6] * 3
    assert len({(v["src"], v["dst"]) for v in RSS_VECTORS}) == 8
    assert MS_RSS_KEY[:4] == bytes([0x6d, 0x5a, 0x56, 0xda]) and MS_RSS_KEY[-2:] == bytes([0x01, 0xfa])
    assert len(MS_RSS_KEY) == 40


@pytest.mark.parametrize("v", RSS_VECTORS, ids=lambda v: f"{v['src']}>{v['dst']}")
def test_microsoft_rss_verification_suite(v):
    ip_only = rss_input(v["src"], v["dst"])
    with_ports = rss_input(v["src"], v["dst"], v["sport"], v["dport"])
    assert len(ip_only) == (8 if v["family"] == 4 else 32) and len(with_ports) == len(ip_only) + 4
    assert toeplitz(MS_RSS_KEY, ip_only) == v["ip_only"]
    assert toeplitz(MS_RSS_KEY, with_ports) == v["with_ports"]
    assert toeplitz_by_bits(MS_RSS_KEY, with_ports) == v["with_ports"]


@SEEDED
@given(st.binary(min_size=40, max_size=40), st.binary(max_size=36))
def test_toeplitz_tables_equal_the_bitwise_definition(key, data):
    assert toeplitz(key, data) == toeplitz_by_bits(key, data)


def test_toeplitz_is_linear_and_limited_by_the_key():
    rng = random.Random(SEED)
    for _ in range(50):
        a, b = rng.randbytes(36), rng.randbytes(36)
        xor = bytes(x ^ y for x, y in zip(a, b))
        assert toeplitz(MS_RSS_KEY, xor) == toeplitz(MS_RSS_KEY, a) ^ toeplitz(MS_RSS_KEY, b)
    assert toeplitz(MS_RSS_KEY, b"") == 0 and toeplitz(bytes(40), b"\xff" * 36) == 0
    with pytest.raises(ConfigError) as e:
        toeplitz(MS_RSS_KEY, bytes(37))
    assert e.value.field == "data"
    with pytest.raises(ConfigError):
        toeplitz(b"abc", b"")


def test_rss_input_layout_and_errors():
    assert rss_input("1.2.3.4", ipaddress.ip_address("5.6.7.8")) == bytes([1, 2, 3, 4, 5, 6, 7, 8])
    assert rss_input("1.2.3.4", "5.6.7.8", 0x0102, 0xfffe) == bytes([1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 0xff, 0xfe])
    assert rss_input("::1", "ff02::2", 1, 2) == bytes(15) + b"\x01" + b"\xff\x02" + bytes(13) + b"\x02\x00\x01\x00\x02"
    for args, field in [(("1.2.3.4", "::1"), "dst"), (("1.2.3.4", "5.6.7.8", 1), "dport"),
                        (("1.2.3.4", "5.6.7.8", None, 1), "sport"), (("nope", "5.6.7.8"), "src"),
                        (("1.2.3.4", "5.6.7.8", 1, 65536), "dport")]:
        with pytest.raises(ConfigError) as e:
            rss_input(*args)
        assert e.value.field == field, args


# -- Maglev ---------------------------------------------------------------------------------------------------------

def splitmix64(seed: int, x: int) -> int:
    z = (seed + x + 0x9E3779B97F4A7C15) & U64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & U64
    return z ^ (z >> 31)


def reference_maglev(m, backends, weights=None):
    """maglev_table's docstring, one loop at a time (no numpy): the rounds, the lowest-id rule, the batches."""
    weights = weights or [1] * len(backends)
    pairs = sorted(zip(backends, weights))
    ids = [b for b, _ in pairs]
    total = sum(w for _, w in pairs)
    quota = [Fraction(m * w, total) for _, w in pairs]
    remaining = [math.floor(q) for q in quota]
    for i in sorted(range(len(ids)), key=lambda i: (-(quota[i] - remaining[i]), i))[:m - sum(remaining)]:
        remaining[i] += 1
    offset = [splitmix64(0x6D61676C65764F46, b) % m for b in ids]
    skip = [splitmix64(0x6D61676C6576534B, b) % (m - 1) + 1 for b in ids]
    nxt = [0] * len(ids)
    table = [None] * m
    while any(remaining):
        active = [i for i in range(len(ids)) if remaining[i]]
        batch = remaining[active[0]] if len(active) == 1 else max(1, max(remaining) // 256)
        want = {i: min(batch, remaining[i]) for i in active}
        while want:
            proposals = {}                             # entry -> backends proposing it, ascending
            for i in sorted(want):
                found = 0
                while found < want[i]:
                    entry = (offset[i] + nxt[i] * skip[i]) % m
                    nxt[i] += 1
                    if table[entry] is None:
                        proposals.setdefault(entry, []).append(i)
                        found += 1
            for entry, who in proposals.items():
                table[entry] = ids[who[0]]
                remaining[who[0]] -= 1
                want[who[0]] -= 1
            want = {i: w for i, w in want.items() if w}
    return np.array(table, dtype=np.uint32)


def classic_maglev(m, backends):
    """The NSDI'16 paper's sequential population loop (equal weights), for comparison."""
    ids = sorted(backends)
    offset = [splitmix64(0x6D61676C65764F46, b) % m for b in ids]
    skip = [splitmix64(0x6D61676C6576534B, b) % (m - 1) + 1 for b in ids]
    nxt, table, filled = [0] * len(ids), [None] * m, 0
    while True:
        for i, b in enumerate(ids):
            entry = (offset[i] + nxt[i] * skip[i]) % m
            while table[entry] is not None:
                nxt[i] += 1
                entry = (offset[i] + nxt[i] * skip[i]) % m
            table[entry], filled = b, filled + 1
            nxt[i] += 1
            if filled == m:
                return np.array(table, dtype=np.uint32)


def quotas_by_fraction(m, weights):
    shares = [Fraction(m * w, sum(weights)) for w in weights]
    quotas = [math.floor(s) for s in shares]
    for i in sorted(range(len(weights)), key=lambda i: (-(shares[i] - quotas[i]), i))[:m - sum(quotas)]:
        quotas[i] += 1
    return quotas


def changed(a, b) -> float:
    return float(np.mean(a != b))


@st.composite
def sized_sets(draw, min_ratio=1, max_m=65537):
    m = draw(st.sampled_from([p for p in PRIMES if p <= max_m]))
    n = draw(st.integers(1, max(1, min(m // min_ratio, 300))))
    ids = draw(st.lists(st.integers(0, 65535), min_size=n, max_size=n, unique=True))
    return m, ids


@SEEDED
@given(sized_sets(max_m=2003), st.data())
def test_maglev_equals_the_reference_loop(case, draw):
    m, ids = case
    weights = draw.draw(st.none() | st.lists(st.integers(1, 9), min_size=len(ids), max_size=len(ids)))
    assert np.array_equal(maglev_table(m, ids, weights), reference_maglev(m, ids, weights))


def test_maglev_reference_covers_the_batch_and_alone_paths():
    # quotas ≥ 512 make batches of ≥ 2; a heavy backend ends alone
    for m, ids, weights in [(2003, [7, 9], None), (5003, [1, 2, 3], [1, 1, 8]), (1009, [42], None)]:
        assert np.array_equal(maglev_table(m, ids, weights), reference_maglev(m, ids, weights))


@SEEDED
@given(sized_sets(min_ratio=100))
def test_equal_weights_balance(case):
    m, ids = case
    counts = np.bincount(maglev_table(m, ids), minlength=65536)[sorted(ids)]
    assert set(counts.tolist()) <= {m // len(ids), -(-m // len(ids))}
    assert counts.sum() == m


@pytest.mark.parametrize("n", [1, 2, 10, 1000])
def test_equal_weights_balance_at_full_size(n):
    counts = np.bincount(maglev_table(65537, range(n)), minlength=n)
    assert counts.min() >= 65537 // n and counts.max() <= -(-65537 // n) and counts.sum() == 65537


@SEEDED
@given(sized_sets(), st.data())
def test_weighted_counts_are_the_largest_remainder_quotas(case, draw):
    m, ids = case
    weights = draw.draw(st.lists(st.integers(1, 1000), min_size=len(ids), max_size=len(ids)))
    table = maglev_table(m, ids, weights)
    counts = np.bincount(table, minlength=65536)
    by_id = sorted(zip(ids, weights))
    expected = quotas_by_fraction(m, [w for _, w in by_id])
    assert [int(counts[b]) for b, _ in by_id] == expected
    assert maglev_quotas(m, [w for _, w in by_id]).tolist() == expected
    assert set(np.unique(table).tolist()) <= set(ids)


def test_weighted_apportionment_examples():
    assert maglev_quotas(13, [1, 1, 1]).tolist() == [5, 4, 4]            # ties go to the lower id
    assert maglev_quotas(101, [1, 2, 7]).tolist() == [10, 20, 71]
    assert maglev_quotas(7, [1, 1000]).tolist() == [0, 7]                 # a quota may be 0
    counts = np.bincount(maglev_table(65537, [5, 6, 7], [1, 2, 1]), minlength=8)[5:]
    assert counts.tolist() == [16384, 32769, 16384]


@SEEDED
@given(sized_sets(), st.data())
def test_every_entry_holds_a_backend_of_the_set_and_order_does_not_matter(case, draw):
    m, ids = case
    weights = draw.draw(st.lists(st.integers(1, 5), min_size=len(ids), max_size=len(ids)))
    table = maglev_table(m, ids, weights)
    assert table.dtype == np.uint32 and table.shape == (m,)
    assert set(table.tolist()) <= set(ids)
    order = draw.draw(st.permutations(range(len(ids))))
    assert np.array_equal(table, maglev_table(m, [ids[i] for i in order], [weights[i] for i in order]))
    assert np.array_equal(table, maglev_table(m, np.array(ids)[list(order)], tuple(weights[i] for i in order)))


@pytest.mark.parametrize("n", [5, 10, 50, 100, 500])
def test_removing_one_backend_disrupts_at_most_one_nth_plus_one_percent(n):
    m = 65537
    rng = random.Random(SEED + n)
    ids = rng.sample(range(65536), n)
    full = maglev_table(m, ids)
    for gone in (ids if n <= 10 else rng.sample(ids, 8)):
        rest = [b for b in ids if b != gone]
        table = maglev_table(m, rest)
        assert changed(table, full) <= 1 / n + 0.01, f"seed={SEED + n} removed {gone}"
        assert not np.any(table == gone)
        assert np.array_equal(maglev_table(m, rest + [gone]), full), f"seed={SEED + n} re-added {gone}"


@pytest.mark.parametrize("n, m", [(5, 503), (10, 1009), (50, 5003), (100, 10007)])
def test_disruption_at_100_entries_per_backend_is_the_papers(n, m):
    """At m ≈ 100·n Maglev itself (the paper's sequential loop) moves about 1.5–2.5 % more than the 1/n minimum, so
    the 1/n + 1 % bound cannot hold there: the vectorized variant must match the paper's loop instead, on average
    within 5 %, and must stay below 1/n + 5 %. Re-adding restores the table."""
    rng = random.Random(SEED + m)
    ids = rng.sample(range(65536), n)
    full, classic_full = maglev_table(m, ids), classic_maglev(m, ids)
    ours, paper = [], []
    for gone in (ids if n <= 10 else rng.sample(ids, 10)):
        rest = [b for b in ids if b != gone]
        ours.append(changed(maglev_table(m, rest), full))
        paper.append(changed(classic_maglev(m, rest), classic_full))
        assert ours[-1] <= 1 / n + 0.05, f"seed={SEED + m} removed {gone}"
        assert np.array_equal(maglev_table(m, rest + [gone]), full)
    assert np.mean(ours) <= 1.05 * np.mean(paper), f"seed={SEED + m}: {np.mean(ours):.4f} vs {np.mean(paper):.4f}"


@pytest.mark.parametrize("args, field", [
    ((4, [1]), "size"), ((1, [1]), "size"), ((65539, [1]), "size"), ((0, [1]), "size"), ((13.0, [1]), "size"),
    ((13, []), "backends"), ((13, [1, 1]), "backends"), ((13, [65536]), "backends"), ((13, [-1]), "backends"),
    ((13, [True]), "backends"), ((13, [1.0]), "backends"), ((5, range(6)), "backends"),
    ((13, [1, 2], [1]), "weights"), ((13, [1, 2], [1, 0]), "weights"), ((13, [1, 2], [1, -2]), "weights"),
    ((13, [1, 2], [1, 1.5]), "weights"), ((13, [1, 2], [1, True]), "weights"),
])
def test_maglev_refuses_bad_arguments(args, field):
    with pytest.raises(ConfigError) as e:
        maglev_table(*args)
    assert e.value.field == field


def test_is_prime():
    assert [n for n in range(30) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    assert is_prime(65537) and is_prime(10007) and not is_prime(65535) and not is_prime(65541)


def test_build_time_reports_a_best_of():
    result = maglev_build_time(m=1009, n=10, repeat=2)
    assert result["m"] == 1009 and result["backends"] == 10 and result["repeat"] == 2
    assert 0 < result["best_ms"] <= result["median_ms"]
    print(f"\nmaglev_table(65537, 1000 backends): {maglev_build_time(repeat=3)['best_ms']:.1f} ms best of 3")


# -- table words ----------------------------------------------------------------------------------------------------

def test_pack_words_lane_order():
    assert pack_words([1, 2, 3, 4, 5], 8).tolist() == [0x04030201, 0x00000005]
    assert pack_words([0x1234, 0xabcd, 7], 16).tolist() == [0xabcd1234, 0x00000007]
    assert pack_words([], 16).tolist() == []
    assert unpack_words([0x04030201, 5], 8).tolist() == [1, 2, 3, 4, 5, 0, 0, 0]
    assert unpack_words([0x04030201, 5], 8, 5).tolist() == [1, 2, 3, 4, 5]
    for entries, bits in [([256], 8), ([65536], 16), ([-1], 16)]:
        with pytest.raises(ConfigError):
            pack_words(entries, bits)
    with pytest.raises(ConfigError):
        pack_words([1], 12)


@SEEDED
@given(st.sampled_from([8, 16]), st.data())
def test_pack_unpack_round_trip(bits, draw):
    entries = draw.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=40))
    words = pack_words(entries, bits)
    assert words.dtype == np.uint32 and len(words) == -(-len(entries) // (32 // bits))
    assert unpack_words(words, bits, len(entries)).tolist() == entries


# -- the router model -----------------------------------------------------------------------------------------------

def configured(params=RouterParams(), m=4099, base=1000, pool=2, backends=range(40), weights=None,
               key=MS_RSS_KEY, classes=((3, L4, 0),)):
    """A model with one pool of a Maglev table and some classes, swapped in; returns (model, table)."""
    model = RouterModel(params)
    model.set_key(key)
    table = maglev_table(m, backends, weights)
    model.write_entries(base, table)
    model.commit_pool(pool, base, m, True)
    for index, key_sel, slot in classes:
        model.commit_class(index, pool, key_sel, slot)
    model.swap()
    return model, table


def expected_backend(table, m, hashed):
    return int(table[(hashed * m) >> 32])


@pytest.mark.parametrize("id_bits, base", [(16, 1000), (8, 1001)])
def test_rss_vectors_route_through_the_l4_key(id_bits, base):
    params = RouterParams(table_entries=8192, pools=4, id_bits=id_bits)
    backends = range(40) if id_bits == 16 else range(200, 256)
    model, table = configured(params, base=base, backends=backends)
    for v in RSS_VECTORS:
        for ports, want in ((True, v["with_ports"]), (False, v["ip_only"])):
            flow = (v["src"], v["dst"], v["sport"], v["dport"]) if ports else (v["src"], v["dst"])
            verdict = model.route(RouteRequest.for_flow(*flow, route_class=3))
            assert verdict == RouteVerdict(200, 2, expected_backend(table, 4099, want), want), v
    assert model.routed == 2 * len(RSS_VECTORS) and model.unavailable == 0


def test_ipv4_uses_only_the_low_32_bits_of_the_l4_addresses():
    model, table = configured()
    v = RSS_VECTORS[0]
    plain = RouteRequest.for_flow(v["src"], v["dst"], v["sport"], v["dport"], route_class=3)
    noisy = RouteRequest(**{**{f: getattr(plain, f) for f in plain.__dataclass_fields__},
                            "l4_src": plain.l4_src | (0xdead << 64), "l4_dst": plain.l4_dst | (1 << 127)})
    assert model.route(noisy) == model.route(plain) and model.route(plain).hash == v["with_ports"]


def test_key_selection_all_modes_and_absent_keys():
    classes = [(0, TENANT, 0), (1, HEADER, 0), (2, HEADER, 2), (3, L4, 0), (4, 3, 0), (5, HEADER, 3)]
    model, table = configured(classes=classes)
    fp, extras = 0x0123456789abcdef, (0x1111, 0x2222222222222222, 0xfedcba9876543210, U64)
    h = {name: toeplitz(MS_RSS_KEY, value.to_bytes(8, "big"))
         for name, value in (("fp", fp), ("x0", extras[0]), ("x2", extras[2]), ("x3", extras[3]))}
    l4 = dict(l4_valid=True, l4_src=int(ipaddress.ip_address("66.9.149.187")),
              l4_dst=int(ipaddress.ip_address("161.142.100.80")))
    everything = dict(key_present=True, key_fp=fp, extra_present=0b1111, extra_fp=extras, **l4)
    cases = [
        (0, everything, h["fp"]), (0, {**everything, "key_present": False}, 0),
        (1, everything, h["x0"]), (1, {**everything, "extra_present": 0b1110}, 0),
        (2, everything, h["x2"]), (2, {**everything, "extra_present": 0b0100}, h["x2"]),
        (2, {**everything, "extra_present": 0b1011}, 0),
        (5, {**everything, "extra_present": 0b1000}, h["x3"]),
        (3, everything, RSS_VECTORS[0]["ip_only"]), (3, {**everything, "l4_valid": False}, 0),
        (3, {**everything, "l4_ports": True, "l4_sport": 2794, "l4_dport": 1766}, RSS_VECTORS[0]["with_ports"]),
        (4, everything, h["fp"]), (4, {**everything, "key_present": False}, 0),     # key_sel 3 acts as TENANT
    ]
    for route_class, fields, want in cases:
        verdict = model.route(RouteRequest(route_class=route_class, **fields))
        assert verdict == RouteVerdict(200, 2, expected_backend(table, 4099, want), want), (route_class, fields)
    # an absent key hashes to 0: entry base + 0
    assert model.route(RouteRequest(route_class=0)).backend == int(table[0])
    assert model.routed == len(cases) + 1


def test_unconfigured_classes_use_pool_0_and_a_zero_key_hashes_to_0():
    model = RouterModel(RouterParams(table_entries=64, pools=2))
    assert model.route(RouteRequest(route_class=9, key_present=True, key_fp=5)) == RouteVerdict(503, 0, 0, 0)
    model.write_entries(0, [7] * 13)
    model.commit_pool(0, 0, 13, True)
    model.swap()
    assert model.route(RouteRequest(route_class=9, key_present=True, key_fp=5)) == RouteVerdict(200, 0, 7, 0)
    assert (model.routed, model.unavailable, model.swaps) == (1, 1, 1)


def test_503_for_disabled_pools_and_partitions_past_the_table():
    params = RouterParams(table_entries=8192, pools=4)
    model = RouterModel(params)
    model.set_key(MS_RSS_KEY)
    model.write_entries(0, np.arange(8192) % 65536)
    model.commit_pool(0, 0, 13, False)               # disabled by the host
    model.commit_pool(1, 8192 - 13, 13, True)        # ends at the last entry: fine
    model.commit_pool(2, 8192 - 12, 13, True)        # one past the end: stored disabled
    model.commit_pool(3, 100, 0, True)               # m = 0: stored disabled
    for index in range(CLASSES):
        model.commit_class(index, index % 8, TENANT, 0)     # pools 4..7 do not exist
    model.swap()
    assert model.pool(1) == PoolDescriptor(8192 - 13, 13, True)
    assert model.pool(2) == PoolDescriptor(8192 - 12, 13, False) and not model.pool(3).enabled
    for route_class in range(CLASSES):
        req = RouteRequest(route_class=route_class, key_present=True, key_fp=0xabcdef)
        h = toeplitz(MS_RSS_KEY, (0xabcdef).to_bytes(8, "big"))
        pool = route_class % 8
        if pool == 1:
            assert model.route(req) == RouteVerdict(200, 1, 8192 - 13 + ((h * 13) >> 32), h)
        else:
            assert model.route(req) == RouteVerdict(503, pool, 0, h)
    assert model.routed == 2 and model.unavailable == CLASSES - 2


def test_register_fields_are_masked_and_out_of_range_targets_ignored():
    params = RouterParams(table_entries=1 << 17, pools=3)
    model = RouterModel(params)
    model.commit_pool(0, (1 << 18) + 5, (1 << 17) + 13, True)
    assert model.pool(0, model.shadow) == PoolDescriptor(5, 13, True)
    model.commit_pool(0x12, 7, 11, True)             # index 0x12 & 0xF = 2
    assert model.pool(2, model.shadow) == PoolDescriptor(7, 11, True)
    model.commit_pool(3, 0, 13, True)                # pool 3 ≥ pools: ignored
    model.commit_pool(0, 0x3FFFF, 0x1FFFF, True)     # base + m far past the table
    assert model.pool(0, model.shadow) == PoolDescriptor(0x3FFFF, 0x1FFFF, False)
    model.commit_class(0x1F, 0x13, 0x6, 0x7)
    assert model.class_entry(15, model.shadow) == ClassEntry(3, 2, 3)
    model.write_word(params.words, 0xFFFFFFFF)       # past the last word: ignored
    assert model.read_word(params.words) == 0 and model.read_word(params.words - 1) == 0
    model.write_word(params.words - 1, 0x89abcdef)
    assert model.read_word(params.words - 1) == 0x89abcdef
    for call in (lambda: model.write_word(0, 1 << 32), lambda: model.commit_pool(-1, 0, 1, True),
                 lambda: model.set_key_word(10, 0), lambda: model.set_key(bytes(39))):
        with pytest.raises(ConfigError):
            call()


def test_key_words_are_big_endian_key_bytes():
    model = RouterModel()
    assert model.key == bytes(40)
    for i in range(10):
        model.set_key_word(i, int.from_bytes(MS_RSS_KEY[4 * i:4 * i + 4], "big"))
    assert model.key == MS_RSS_KEY
    model.set_key_word(0, 0x01020304)
    assert model.key[:4] == b"\x01\x02\x03\x04" and model.key[4:] == MS_RSS_KEY[4:]


def test_id_bits_8_packs_four_ids_a_word_and_routes_every_lane():
    params = RouterParams(table_entries=64, pools=1, id_bits=8)
    assert params.ids_per_word == 4 and params.words == 16
    model = RouterModel(params)
    model.write_entries(3, [0xa1, 0xb2, 0xc3, 0xd4, 0xe5])
    assert [model.read_word(0), model.read_word(1)] == [0xa1000000, 0xe5d4c3b2]
    model.write_entries(0, [1, 2, 3])                # read-modify-write keeps lane 3
    assert model.read_word(0) == 0xa1030201
    model.commit_pool(0, 0, 8, True)
    model.commit_class(0, 0, TENANT, 0)
    model.swap()
    model.set_key(MS_RSS_KEY)
    rng = random.Random(SEED)
    seen = set()
    for _ in range(400):
        fp = rng.getrandbits(64)
        h = toeplitz(MS_RSS_KEY, fp.to_bytes(8, "big"))
        verdict = model.route(RouteRequest(key_present=True, key_fp=fp))
        want = [1, 2, 3, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5][(h * 8) >> 32]
        assert verdict == RouteVerdict(200, 0, want, h)
        seen.add((h * 8) >> 32)
    assert seen == set(range(8))
    assert model.read_entries(0, 8).tolist() == [1, 2, 3, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5]


def test_shadow_writes_are_invisible_until_the_swap():
    params = RouterParams(table_entries=64, pools=2)
    model = RouterModel(params)
    model.set_key(MS_RSS_KEY)
    req = RouteRequest(key_present=True, key_fp=42)
    assert model.active == 0 and model.shadow == 1
    model.write_entries(0, [5] * 13)
    model.commit_pool(0, 0, 13, True)
    assert model.route(req).status == 503            # all in the shadow
    assert model.read_entries(0, 13, buffer=1).tolist() == [5] * 13 and model.read_entries(0, 13).tolist() == [0] * 13
    model.swap()
    assert model.active == 1 and model.route(req).backend == 5
    # the new shadow is the old active buffer, as it was: nothing is copied
    assert model.read_word(0) == 0 and model.pool(0, model.shadow) == PoolDescriptor()
    model.write_entries(0, [9] * 13)
    model.commit_pool(0, 0, 13, True)
    model.commit_class(0, 1, TENANT, 0)              # shadow class 0 now uses pool 1 (disabled there)
    assert model.route(req).backend == 5
    model.swap()
    assert model.route(req) == RouteVerdict(503, 1, 0, model.route(req).hash)
    model.commit_class(0, 0, TENANT, 0)
    model.swap()
    assert model.route(req).backend == 5             # buffer 1 still holds what it held
    assert model.swaps == 3 and model.active == 1


def test_counters_wrap_at_64_bits():
    model = RouterModel(RouterParams(table_entries=64, pools=1))
    model.routed = model.unavailable = model.swaps = U64
    model.route(RouteRequest())
    model.swap()
    assert (model.unavailable, model.swaps) == (0, 0)
    model.commit_pool(0, 0, 13, True)
    model.swap()
    model.route(RouteRequest())
    assert model.routed == 0


def test_write_entries_refuses_what_does_not_fit():
    model = RouterModel(RouterParams(table_entries=64, pools=1, id_bits=8))
    with pytest.raises(ConfigError):
        model.write_entries(60, range(5))
    with pytest.raises(ConfigError):
        model.write_entries(0, [256])


# -- records --------------------------------------------------------------------------------------------------------

def test_verdict_bits_match_the_amaranth_layout():
    rng = random.Random(SEED)
    layout = RouteVerdictLayout.as_shape()
    assert layout.size == 10 + 4 + 16 + 32
    for _ in range(300):
        v = RouteVerdict(rng.choice([200, 503]), rng.randrange(16), rng.randrange(1 << 16), rng.getrandbits(32))
        const = layout.const({name: getattr(v, name) for name, _ in layout})
        assert isinstance(const, data.Const) and const.as_bits() == v.to_bits()
        assert RouteVerdict.from_bits(v.to_bits()) == v
    with pytest.raises(ValueError):
        RouteVerdict(status=1024).to_bits()


def test_request_bits_match_the_amaranth_layout():
    rng = random.Random(SEED)
    for _ in range(200):
        v6 = rng.random() < 0.5
        req = RouteRequest(rng.randrange(16), rng.random() < 0.5, rng.getrandbits(64), rng.randrange(16),
                           tuple(rng.getrandbits(64) for _ in range(4)), True, v6, rng.random() < 0.5,
                           rng.getrandbits(128 if v6 else 32), rng.getrandbits(128 if v6 else 32),
                           rng.getrandbits(16), rng.getrandbits(16))
        const = RouteRequestLayout.const({name: getattr(req, name) for name, _ in RouteRequestLayout})
        assert const.as_bits() == req.to_bits() and RouteRequest.from_bits(req.to_bits()) == req
    flow = RouteRequest.for_flow("::1", "::2", 1, 2, route_class=4)
    assert (flow.l4_valid, flow.l4_v6, flow.l4_ports, flow.l4_src, flow.l4_dst, flow.route_class) == \
        (True, True, True, 1, 2, 4)

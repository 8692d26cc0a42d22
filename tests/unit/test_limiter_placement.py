"""The host's tenant placement (wirespeed.host.placement.TenantPlacement) against docs/limiter.md, "Tenant table".

Every relocation an insert returns is replayed, copy then invalidate, on a shadow of the hardware's tag array that is
searched the way the hardware searches it (both candidate buckets, all 8 ways), so a key that the driver's moves
would lose for even one step is caught. The same placement, replayed as table ops on the limiter's model, must never
be refused by the hardware's checks (a key only in its candidate buckets, a MOVE only across halves).
"""

import random
import time

import pytest

from wirespeed.hdl.limiter.layouts import WAYS, LimiterParams, TableOp
from wirespeed.host.errors import ConfigError
from wirespeed.host.placement import MAX_MOVES, TenantPlacement
from wirespeed.host.models.limiter import LimiterModel, Plan
from wirespeed.host.errors import TableFull

SEED = 20251126


def where(n: int, slot: int) -> tuple[int, int, int]:
    """(half, bucket, way) of a slot: slot = half·N/2 + bucket·4 + way."""
    half, rest = divmod(slot, n // 2)
    bucket, way = divmod(rest, WAYS)
    return half, bucket, way


def shadow_find(shadow: list, placement: TenantPlacement, fp: int) -> list:
    """Slots of the shadow tag array where a hardware lookup of ``fp`` matches."""
    hits = []
    for half, bucket in enumerate(placement.candidates(fp)):
        base = placement.slot(half, bucket, 0)
        hits += [s for s in range(base, base + WAYS) if shadow[s] == fp]
    return hits


def apply(shadow: list, placement: TenantPlacement, fp: int, slot: int, moves: list, check_all=None):
    """Replay one insert's moves and its final write on ``shadow``, checking each step.

    With ``check_all`` (the set of keys placed so far) every one of them is looked up after every step.
    """
    def check_everyone():
        if check_all is not None:
            for key in check_all:
                assert shadow_find(shadow, placement, key), f"seed={SEED}: 0x{key:016x} lost mid-relocation"

    assert len(moves) <= MAX_MOVES
    for mover, old, new in moves:
        assert shadow[old] == mover, f"seed={SEED}: move names 0x{mover:016x} at {old}, shadow holds {shadow[old]}"
        assert shadow[new] is None, f"seed={SEED}: move to {new} would overwrite {shadow[new]}"
        shadow[new] = mover                                  # step 1: the copy
        assert set(shadow_find(shadow, placement, mover)) == {old, new}
        check_everyone()
        shadow[old] = None                                   # step 2: invalidate the old slot
        assert shadow_find(shadow, placement, mover) == [new]
        check_everyone()
    assert shadow[slot] is None
    shadow[slot] = fp
    assert shadow_find(shadow, placement, fp) == [slot]


def in_candidate_bucket(placement: TenantPlacement, fp: int, slot: int) -> bool:
    half, bucket, _ = where(placement.capacity, slot)
    return placement.candidates(fp)[half] == bucket


# -- filling ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [4096, 16384])
def test_fill_until_table_full(n):
    rng = random.Random(SEED + n)
    placement = TenantPlacement(n)
    shadow = [None] * n
    keys = []
    moved = longest = 0
    start = time.perf_counter()
    while True:
        fp = rng.getrandbits(64)
        try:
            slot, moves = placement.insert(fp)
        except TableFull as e:
            assert e.table == "tenants"
            assert fp not in placement and len(placement) == len(keys)
            break
        apply(shadow, placement, fp, slot, moves)
        keys.append(fp)
        moved += len(moves)
        longest = max(longest, len(moves))
    elapsed = time.perf_counter() - start
    print(f"\nseed={SEED + n} N={n}: load factor {placement.load_factor:.4f} ({len(keys)} keys) in {elapsed:.3f} s "
          f"incl. shadow replay; {moved} relocations, longest chain {longest}")
    assert placement.load_factor >= 0.90, f"seed={SEED + n}"
    assert placement.load_factor == len(keys) / n
    # The placement, the shadow the moves built, and the hardware's search all agree.
    assert [placement.occupant(s) for s in range(n)] == shadow
    for fp in keys:
        slot = placement.lookup(fp)
        assert slot is not None and placement.occupant(slot) == fp
        assert in_candidate_bucket(placement, fp, slot), f"seed={SEED + n}: 0x{fp:016x} at {slot}"
        assert shadow_find(shadow, placement, fp) == [slot]


@pytest.mark.parametrize("n", [64, 4096])
def test_the_hardware_accepts_every_placement_and_move(n):
    """Fill the table through the placement, each move and write as a table op: none is refused, the model finds
    every key where the placement put it, and each slot reads back its key through the quotiented tag."""
    rng = random.Random(SEED + 1 + n)
    placement = TenantPlacement(n)
    model = LimiterModel(LimiterParams(capacity=n))
    model.write_plan(0, Plan(1, 1, 1, 1))
    ops = 0
    while True:
        fp = rng.getrandbits(64)
        try:
            slot, moves = placement.insert(fp)
        except TableFull:
            break
        for mover, old, new in moves:
            assert model.table_op(TableOp.MOVE, old, new, 0, 0, False, 0).ok, f"seed={SEED + 1 + n}"
            assert model.lookup(mover) == new
        assert model.table_op(TableOp.WRITE, slot, 0, fp, 0, True, 0).ok, f"seed={SEED + 1 + n}"
        ops += len(moves) + 1
    assert model.table_ops == ops and placement.load_factor >= 0.85
    for s in range(n):
        fp = placement.occupant(s)
        state = model.table_op(TableOp.READ, s, 0, 0, 0, False, 0).state
        assert state.valid == (fp is not None)
        if fp is not None:
            assert state.tag == fp and model.lookup(fp) == s


def test_every_key_findable_at_every_step_of_every_relocation():
    """A small table is filled to the end, looking every placed key up after each half of each move."""
    for seed in range(SEED, SEED + 8):
        rng = random.Random(seed)
        placement = TenantPlacement(64)
        shadow = [None] * 64
        placed = set()
        relocations = 0
        while True:
            fp = rng.getrandbits(64)
            try:
                slot, moves = placement.insert(fp)
            except TableFull:
                break
            apply(shadow, placement, fp, slot, moves, check_all=placed)
            placed.add(fp)
            relocations += len(moves)
        assert relocations > 0, f"seed={seed}: the fill never relocated"
        assert len(placed) >= 0.85 * 64, f"seed={seed}: {len(placed)}"


def test_table_full_leaves_the_table_unchanged():
    # Every key picks bucket 0 in both halves: 8 ways in all, and no key has anywhere else to go.
    placement = TenantPlacement(64)
    keys = [(i << 48) for i in range(1, 10)]                 # fp[0:3] = fp[32:35] = 0
    for fp in keys[:8]:
        placement.insert(fp)
    before = [placement.occupant(s) for s in range(64)]
    with pytest.raises(TableFull) as info:
        placement.insert(keys[8])
    assert info.value.table == "tenants" and "tenants" in str(info.value)
    assert [placement.occupant(s) for s in range(64)] == before and len(placement) == 8
    assert keys[8] not in placement and placement.lookup(keys[8]) is None


def test_placement_time_is_reported():
    """16 384 keys into N = 16 384 until TableFull, and 16 384 keys into N = 65 536 (timed, not asserted)."""
    rng = random.Random(SEED)
    placement = TenantPlacement(16384)
    start = time.perf_counter()
    with pytest.raises(TableFull):
        for _ in range(16384):
            placement.insert(rng.getrandbits(64))
    full = time.perf_counter() - start
    big = TenantPlacement(65536)
    start = time.perf_counter()
    for _ in range(16384):
        big.insert(rng.getrandbits(64))
    sparse = time.perf_counter() - start
    print(f"\nseed={SEED}: N=16384 filled to {placement.load_factor:.4f} in {full:.3f} s; "
          f"16384 keys into N=65536 in {sparse:.3f} s")


# -- placement rules --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [64, 4096, 16384, 65536])
def test_candidates_and_slot_numbering(n):
    placement = TenantPlacement(n)
    k = (n // 8).bit_length() - 1
    assert placement.buckets == n // 8 == 1 << k
    rng = random.Random(SEED)
    for _ in range(200):
        fp = rng.getrandbits(64)
        assert placement.candidates(fp) == (fp & ((1 << k) - 1), (fp >> 32) & ((1 << k) - 1))
    seen = set()
    for half in range(2):
        for bucket in range(n // 8):
            for way in range(WAYS):
                slot = placement.slot(half, bucket, way)
                assert slot == half * n // 2 + bucket * 4 + way and where(n, slot) == (half, bucket, way)
                seen.add(slot)
    assert seen == set(range(n))


def test_emptier_bucket_first_and_half_0_on_a_tie():
    n = 64
    placement = TenantPlacement(n)
    # b0 = 5, b1 = 2 for all: i in the bits no candidate reads.
    keys = [(i << 40) | (2 << 32) | (i << 8) | 5 for i in range(1, 9)]
    slots = [placement.insert(fp) for fp in keys]
    assert all(moves == [] for _, moves in slots)
    b0, b1 = placement.slot(0, 5, 0), placement.slot(1, 2, 0)
    assert [s for s, _ in slots] == [b0, b1, b0 + 1, b1 + 1, b0 + 2, b1 + 2, b0 + 3, b1 + 3]
    # An emptier half-1 bucket wins even though half 0 is not full.
    placement = TenantPlacement(n)
    placement.insert((1 << 8) | 5)                           # b0 = 5, b1 = 0: takes bucket 5, way 0
    slot, _ = placement.insert((2 << 32) | 5)                # b0 = 5 (3 free), b1 = 2 (4 free)
    assert slot == placement.slot(1, 2, 0)


def key(b0: int, b1: int, ident: int) -> int:
    """A fingerprint with candidate buckets b0 and b1 in a 64-slot table; ``ident`` sits in bits no candidate reads."""
    return (ident << 40) | (b1 << 32) | b0


def test_relocation_makes_room_when_both_buckets_are_full():
    n = 64
    placement = TenantPlacement(n)
    shadow = [None] * n
    ident = iter(range(1, 100))

    def put(b0, b1):
        fp = key(b0, b1, next(ident))
        slot, moves = placement.insert(fp)
        assert moves == []
        apply(shadow, placement, fp, slot, moves)
        return fp, slot

    # Bucket 0 of half 0 gets X1..X4, whose other buckets (half 1, buckets 1..4) hold 0..3 fillers: each X sees a
    # tie and takes half 0.
    xs = []
    for b in (1, 2, 3, 4):
        for _ in range(b - 1):
            assert where(n, put(0, b)[1])[:2] == (1, b)
        fp, slot = put(0, b)
        assert where(n, slot) == (0, 0, b - 1)
        xs.append(fp)
    # Bucket 0 of half 1 fills up with keys whose half-0 bucket is the full one.
    for way in range(WAYS):
        assert where(n, put(0, 0)[1]) == (1, 0, way)
    newcomer = key(0, 0, 99)
    slot, moves = placement.insert(newcomer)
    # The shortest chain is one move: half 0's bucket is searched first, way 0 first; X1's other bucket is empty.
    assert moves == [(xs[0], 0, placement.slot(1, 1, 0))] and slot == 0
    apply(shadow, placement, newcomer, slot, moves)
    assert placement.lookup(xs[0]) == placement.slot(1, 1, 0) and placement.lookup(newcomer) == 0


# -- remove, lookup, errors -------------------------------------------------------------------------------------------

def test_remove_and_lookup():
    rng = random.Random(SEED)
    placement = TenantPlacement(256)
    keys = [rng.getrandbits(64) for _ in range(200)]
    for fp in keys:
        placement.insert(fp)
    for fp in keys[::3]:
        slot = placement.lookup(fp)
        assert placement.remove(fp) == slot
        assert placement.lookup(fp) is None and placement.occupant(slot) is None and fp not in placement
    assert len(placement) == 200 - len(keys[::3])
    for fp in keys[1::3]:
        assert placement.occupant(placement.lookup(fp)) == fp
    # The freed ways are usable again.
    for fp in keys[::3]:
        slot, _ = placement.insert(fp)
        assert placement.lookup(fp) == slot
    assert len(placement) == 200
    with pytest.raises(ConfigError) as info:
        placement.remove(12345)
    assert info.value.field == "fp"


def test_duplicate_insert_is_rejected():
    placement = TenantPlacement(64)
    slot, _ = placement.insert(0xDEADBEEF)
    with pytest.raises(ConfigError) as info:
        placement.insert(0xDEADBEEF)
    assert info.value.field == "fp" and str(slot) in str(info.value)
    assert len(placement) == 1 and placement.lookup(0xDEADBEEF) == slot


@pytest.mark.parametrize("capacity", [0, 32, 63, 100, 4095, 1 << 17, -64, True, "4096", 4096.0, None])
def test_bad_capacity(capacity):
    with pytest.raises(ConfigError) as info:
        TenantPlacement(capacity)
    assert info.value.field == "capacity" and "power of two" in str(info.value)


@pytest.mark.parametrize("capacity", [64, 128, 4096, 16384, 65536])
def test_good_capacity(capacity):
    placement = TenantPlacement(capacity)
    assert placement.capacity == capacity and placement.load_factor == 0.0 and len(placement) == 0


@pytest.mark.parametrize("call,field", [
    (lambda p: p.insert(-1), "fp"), (lambda p: p.insert(1 << 64), "fp"), (lambda p: p.candidates(1 << 64), "fp"),
    (lambda p: p.slot(2, 0, 0), "half"), (lambda p: p.slot(0, 8, 0), "bucket"), (lambda p: p.slot(0, 0, 4), "way"),
    (lambda p: p.occupant(64), "slot"),
])
def test_bad_arguments_name_the_field(call, field):
    with pytest.raises(ConfigError) as info:
        call(TenantPlacement(64))
    assert info.value.field == field

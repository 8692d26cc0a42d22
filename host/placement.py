"""The driver's copy of the tenant table's tags: where each key's fingerprint lives, and how to make room.

The tenant table is a 2-choice, 4-way cuckoo table (``docs/limiter.md``). :class:`TenantPlacement` picks a key's
slot and the relocations that make room for it; the tenants driver replays them as table ops, and the limiter model
checks capacities with :func:`check_capacity`.
"""

from __future__ import annotations

from collections import deque

from ..hdl.limiter.layouts import HALVES, WAYS
from .errors import ConfigError, TableFull, check_int
from .keys import U64

__all__ = ["TenantPlacement", "check_capacity", "MAX_MOVES", "CAPACITY_MIN", "CAPACITY_MAX"]

#: Longest relocation chain :meth:`TenantPlacement.insert` looks for.
MAX_MOVES = 500
CAPACITY_MIN = 64
#: The verdict's ``tenant`` field is 16 bits wide.
CAPACITY_MAX = 1 << 16


def check_capacity(capacity) -> int:
    if (isinstance(capacity, bool) or not isinstance(capacity, int) or not CAPACITY_MIN <= capacity <= CAPACITY_MAX
            or capacity & (capacity - 1)):
        raise ConfigError("capacity", capacity, f"must be a power of two in {CAPACITY_MIN}..{CAPACITY_MAX}")
    return capacity


# -- placement --------------------------------------------------------------------------------------------------------

class TenantPlacement:
    """The driver's copy of the tenant table's tags: where each key fingerprint lives, and how to make room.

    Slots are 2 halves × N/8 buckets × 4 ways; ``slot = half·N/2 + bucket·4 + way``. A key's fingerprint picks
    ``b0 = fp[0:k]`` in half 0 and ``b1 = fp[32:32+k]`` in half 1, k = log2(N/8) (``docs/limiter.md``).

    Parameters
    ----------
    capacity : int
        N, the slot count: a power of two, 64..65536.

    Raises
    ------
    ConfigError
        If ``capacity`` is not allowed.
    """

    def __init__(self, capacity: int = 4096):
        self.capacity = check_capacity(capacity)
        self.buckets = capacity // (HALVES * WAYS)          # per half
        self._mask = self.buckets - 1
        self._slots: list = [None] * capacity                # fp or None
        self._where: dict[int, int] = {}                     # fp -> slot
        # Free ways per bucket, indexed by g = half·buckets + bucket; bucket g holds slots 4g .. 4g+3.
        self._free = [WAYS] * (HALVES * self.buckets)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, fp) -> bool:
        return fp in self._where

    @property
    def load_factor(self) -> float:
        """Placed keys / capacity."""
        return len(self._where) / self.capacity

    def candidates(self, fp: int) -> tuple[int, int]:
        """``(b0, b1)``: the key's bucket in half 0 and in half 1."""
        check_int("fp", fp, 0, U64)
        return fp & self._mask, (fp >> 32) & self._mask

    def slot(self, half: int, bucket: int, way: int) -> int:
        """The slot index of ``way`` in ``bucket`` of ``half``."""
        check_int("half", half, 0, HALVES - 1)
        check_int("bucket", bucket, 0, self.buckets - 1)
        check_int("way", way, 0, WAYS - 1)
        return half * (self.capacity // 2) + bucket * WAYS + way

    def occupant(self, slot: int):
        """The fingerprint placed in ``slot``, or None."""
        check_int("slot", slot, 0, self.capacity - 1)
        return self._slots[slot]

    def lookup(self, fp: int):
        """The slot holding ``fp``, or None."""
        return self._where.get(fp)

    def _alt(self, g: int, fp: int) -> int:
        """The other candidate bucket (as g) of a key that sits in bucket g."""
        if g < self.buckets:
            return self.buckets + ((fp >> 32) & self._mask)
        return fp & self._mask

    def _first_free(self, g: int) -> int:
        slots = self._slots
        for slot in range(g * WAYS, g * WAYS + WAYS):
            if slots[slot] is None:
                return slot
        raise AssertionError("bucket has no free way")     # pragma: no cover

    def insert(self, fp: int) -> tuple[int, list]:
        """Place a key.

        It goes into the emptier candidate bucket (half 0 on a tie), at its lowest free way. When both are full, a
        breadth-first search over buckets looks for the shortest chain of at most :data:`MAX_MOVES` relocations
        that frees a way in a candidate bucket (half 0's bucket is searched first, ways in order).

        Returns
        -------
        slot : int
            Where the key goes, once the moves are done.
        moves : list of (fp, old_slot, new_slot)
            Relocations to apply in this order, each by writing the copy to ``new_slot`` and then invalidating
            ``old_slot``; every key stays findable at every step. Empty when no relocation is needed.

        Raises
        ------
        ConfigError
            If ``fp`` is not a 64-bit value or is already placed.
        TableFull
            If no chain of at most :data:`MAX_MOVES` relocations frees a way. The table is unchanged.
        """
        check_int("fp", fp, 0, U64)
        if fp in self._where:
            raise ConfigError("fp", fp, f"is already placed, at slot {self._where[fp]}")
        free = self._free
        g0 = fp & self._mask
        g1 = self.buckets + ((fp >> 32) & self._mask)
        if free[g0] or free[g1]:
            g = g0 if free[g0] >= free[g1] else g1
            return self._put(fp, self._first_free(g), g), []

        slots = self._slots
        parent = {g0: None, g1: None}                       # bucket -> (bucket, way) whose occupant moves into it
        depth = {g0: 0, g1: 0}
        queue = deque((g0, g1))
        target = None
        while queue and target is None:
            g = queue.popleft()
            d = depth[g] + 1
            if d > MAX_MOVES:
                continue
            for way in range(WAYS):
                a = self._alt(g, slots[g * WAYS + way])
                if a in parent:
                    continue
                parent[a] = (g, way)
                depth[a] = d
                if free[a]:
                    target = a
                    break
                queue.append(a)
        if target is None:
            raise TableFull("tenants", f"no chain of at most {MAX_MOVES} relocations frees a way for "
                                       f"fp=0x{fp:016x} ({len(self._where)} of {self.capacity} slots used)")

        moves = []
        hole = self._first_free(target)
        cur = target
        while parent[cur] is not None:
            g, way = parent[cur]
            old = g * WAYS + way
            mover = slots[old]
            moves.append((mover, old, hole))
            slots[hole] = mover
            slots[old] = None
            self._where[mover] = hole
            hole, cur = old, g
        free[target] -= 1
        free[cur] += 1                                      # _put takes it back
        return self._put(fp, hole, cur), moves

    def _put(self, fp: int, slot: int, g: int) -> int:
        self._slots[slot] = fp
        self._where[fp] = slot
        self._free[g] -= 1
        return slot

    def remove(self, fp: int) -> int:
        """Forget a key; returns the slot it held (which the driver then invalidates).

        Raises
        ------
        ConfigError
            If ``fp`` is not placed.
        """
        slot = self._where.pop(fp, None)
        if slot is None:
            raise ConfigError("fp", fp, "is not placed")
        self._slots[slot] = None
        self._free[slot // WAYS] += 1
        return slot



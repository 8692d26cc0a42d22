"""A 20-digit BCD number to its binary value (mod 2^64), pipelined: five groups of digits, DSP products, two adds.

bcd (20 digits) ─▶ 4 groups of 5 digits, each digit·10^i from a table ─▶ group sums (< 10^5, 17 bits)
                ─▶ group × 18-bit pieces of 10^(5g) (one multiplier each) ─▶ a tree of 64-bit adds

A digit times a power of ten is a 4-input table (one LUT4 per bit), so the group sums are short adds; the large
powers are constant products, which the ECP5's multipliers take instead of a chain of 64-bit adders in LUTs, split
into 17 × 18-bit pieces so that each is one multiplier with nothing after it in its stage. Each registered stage
holds at most one adder (or one multiplier) in depth. The result is exact for every value below
2^64; above, it is the value mod 2^64 (the parser reports those as overflowing anyway).
"""

from __future__ import annotations

from amaranth import Array, Const, Signal

__all__ = ["bcd_to_binary", "BCD_LATENCY", "DIGITS"]

DIGITS = 20
_GROUP = 5
#: Registered stages from the BCD digits to the binary value: terms, group sums, partial products, three adds.
BCD_LATENCY = 6
U64 = (1 << 64) - 1


def bcd_to_binary(m, bcd, name: str):
    """The binary value of ``bcd`` (digit 0 in bits 0..3), :data:`BCD_LATENCY` cycles later (free-running)."""
    groups = DIGITS // _GROUP
    gbits = (10 ** _GROUP - 1).bit_length()
    # Stage 1: each digit's term, and the group's first two pair sums.
    s1 = []
    for g in range(groups):
        terms = []
        for i in range(_GROUP):
            digit = bcd[4 * (_GROUP * g + i):4 * (_GROUP * g + i) + 4]
            table = Array(Const(min(d, 9) * 10 ** i, gbits) for d in range(16))
            terms.append(table[digit])
        parts = [Signal(gbits + 1, name=f"{name}_g{g}_s{j}") for j in range(3)]
        m.d.sync += [parts[0].eq(terms[0] + terms[1]), parts[1].eq(terms[2] + terms[3]), parts[2].eq(terms[4])]
        s1.append(parts)
    # Stage 2: the group sums.
    s2 = []
    for g, parts in enumerate(s1):
        total = Signal(gbits, name=f"{name}_g{g}")
        m.d.sync += total.eq(parts[0] + parts[1] + parts[2])
        s2.append(total)
    # Stage 3: each group times its power of ten, as 17 x 18-bit partial products (one multiplier each).
    low = Signal(gbits, name=f"{name}_p0")
    m.d.sync += low.eq(s2[0])
    terms = [(low, 0)]
    for g in range(1, groups):
        power = 10 ** (_GROUP * g) & U64
        shift = 0
        while power >> shift:
            chunk = (power >> shift) & ((1 << 18) - 1)
            if chunk:
                product = Signal(gbits + 18, name=f"{name}_p{g}_{shift}")
                m.d.sync += product.eq(s2[g] * chunk)
                terms.append((product, shift))
            shift += 18
    # Stages 4 ..: a tree of 64-bit adds, one add deep per stage.
    level = [Signal(64, name=f"{name}_t{n}") for n in range(len(terms))]
    for reg, (value, shift) in zip(level, terms):
        m.d.comb += reg.eq((value << shift)[:64])
    depth = 0
    while len(level) > 1:
        nxt = []
        for n in range(0, len(level), 2):
            reg = Signal(64, name=f"{name}_sum{depth}_{n // 2}")
            m.d.sync += reg.eq(level[n] + level[n + 1] if n + 1 < len(level) else level[n])
            nxt.append(reg)
        level = nxt
        depth += 1
    return level[0]


def _stages() -> int:
    """The converter's stages: terms, group sums, partial products, then the add tree."""
    count = 1                                              # the group sum g0 passes with the products
    for g in range(1, DIGITS // _GROUP):
        power, shift = 10 ** (_GROUP * g) & U64, 0
        while power >> shift:
            count += bool((power >> shift) & ((1 << 18) - 1))
            shift += 18
    return 3 + (count - 1).bit_length()


assert _stages() == BCD_LATENCY

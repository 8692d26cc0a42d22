"""A 20-digit BCD number to its binary value (mod 2^64), pipelined: five groups of digits, DSP products, two adds.

bcd (20 digits) ─▶ 4 groups of 5 digits, each digit·10^i from a table ─▶ group sums (< 10^5, 17 bits)
                ─▶ group · 10^(5g) (DSP multipliers) ─▶ two 64-bit sums ─▶ one

A digit times a power of ten is a 4-input table (one LUT4 per bit), so the group sums are short adds; the large
powers are constant products, which the ECP5's multipliers take instead of a chain of 64-bit adders in LUTs. Each
registered stage holds at most one adder (or one multiplier) in depth. The result is exact for every value below
2^64; above, it is the value mod 2^64 (the parser reports those as overflowing anyway).
"""

from __future__ import annotations

from amaranth import Array, Const, Signal

__all__ = ["bcd_to_binary", "BCD_LATENCY", "DIGITS"]

DIGITS = 20
_GROUP = 5
#: Registered stages from the BCD digits to the binary value.
BCD_LATENCY = 5
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
    # Stage 3: each group times its power of ten (multipliers).
    s3 = []
    for g, total in enumerate(s2):
        product = Signal(64, name=f"{name}_p{g}")
        m.d.sync += product.eq((total * (10 ** (_GROUP * g) & U64))[:64])
        s3.append(product)
    # Stages 4 and 5: two sums, then one.
    a, b = Signal(64, name=f"{name}_a"), Signal(64, name=f"{name}_b")
    m.d.sync += [a.eq(s3[0] + s3[1]), b.eq(s3[2] + s3[3])]
    value = Signal(64, name=f"{name}_value")
    m.d.sync += value.eq(a + b)
    return value

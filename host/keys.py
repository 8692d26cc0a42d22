"""The API-key fingerprint and the driver's key derivation.

:func:`fingerprint` is the keyed 64-bit CRC-style fold the parser computes over the API key (``docs/parser.md``);
:func:`derive_key` turns a secret into its modulus and seed (a dense irreducible polynomial, so fingerprints of
different keys spread). The parser model and the tenants driver both use them.
"""

from __future__ import annotations

import functools
import hashlib
import itertools

from ..hdl.parser.layouts import FP_POLY_RESET, FP_SEED_RESET
from .errors import ConfigError

__all__ = ["fingerprint", "is_irreducible", "derive_key", "U64"]

U64 = (1 << 64) - 1

# -- fingerprint ------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _fp_table(poly: int) -> tuple[int, ...]:
    """``table[i] = (i · x^64) mod P``: the state change of one byte step, indexed by the 8 bits shifted out."""
    table = []
    for i in range(256):
        state = i << 56
        for _ in range(8):
            state = ((state << 1) & U64) ^ poly if state >> 63 else (state << 1) & U64
        table.append(state)
    return tuple(table)


def fingerprint(data: bytes, poly: int = FP_POLY_RESET, seed: int = FP_SEED_RESET) -> int:
    """The keyed Rabin fingerprint of ``data`` (``docs/parser.md``, "Fingerprints").

    Parameters
    ----------
    data : bytes
        The string, e.g. a field value after trimming.
    poly : int
        Low 64 bits of the monic degree-64 modulus P (``fp_poly``).
    seed : int
        Initial CRC state S (``fp_seed``).

    Returns
    -------
    int
        The MSB-first CRC-64 state after all bytes: ``(S·x^(8n) + M(x)·x^64) mod P``. The empty string gives ``seed``.
    """
    table = _fp_table(poly & U64)
    state = seed & U64
    for b in data:
        state = ((state << 8) & U64) ^ table[(state >> 56) ^ b]
    return state


# -- key derivation ---------------------------------------------------------------------------------------------------

_P64 = 1 << 64


def _gf2_mod(a: int, m: int) -> int:
    """``a mod m`` for GF(2) polynomials held as ints (bit i = coefficient of x^i)."""
    mlen = m.bit_length()
    while (alen := a.bit_length()) >= mlen:
        a ^= m << (alen - mlen)
    return a


def _gf2_gcd(a: int, b: int) -> int:
    while b:
        a, b = b, _gf2_mod(a, b)
    return a


# Squaring in GF(2)[x] spreads the bits apart: bit i moves to bit 2i.
_SPREAD = tuple(sum(((i >> k) & 1) << (2 * k) for k in range(8)) for i in range(256))


def _gf2_square_mod(a: int, m: int) -> int:
    sq = 0
    shift = 0
    while a:
        sq |= _SPREAD[a & 0xFF] << shift
        a >>= 8
        shift += 16
    return _gf2_mod(sq, m)


def is_irreducible(poly_low: int) -> bool:
    """Whether x^64 + ``poly_low`` is irreducible over GF(2) (Ben-Or's test).

    P of degree 64 is irreducible iff gcd(x^(2^i) − x, P) = 1 for i = 1 … 32: a reducible P has a factor of degree
    at most 32, and that factor divides x^(2^d) − x for its degree d. Reducible candidates usually fail at small i,
    which makes this fast for rejection sampling.
    """
    if not 0 <= poly_low <= U64:
        raise ValueError(f"poly_low must be a 64-bit value, got {poly_low!r}")
    p = _P64 | poly_low
    if not poly_low & 1:        # divisible by x
        return False
    x_pow = 0b10                # x^(2^0)
    for _ in range(32):
        x_pow = _gf2_square_mod(x_pow, p)
        if _gf2_gcd(p, x_pow ^ 0b10) != 1:
            return False
    return True


_POLY_DOMAIN = b"wirespeed/parser/fp_poly/v1\x00"
_SEED_DOMAIN = b"wirespeed/parser/fp_seed/v1\x00"


def derive_key(key: bytes) -> tuple[int, int]:
    """The fingerprint key ``(poly_low, seed)`` derived from a user's secret key bytes.

    ``poly_low`` is rejection-sampled: SHA-256 over a domain tag, a 32-bit counter and the key gives 64-bit
    candidates until one makes x^64 + candidate irreducible. Every irreducible P has a constant term, so bit 0 is
    forced to 1 first; that halves the tries without biasing the choice among irreducible polynomials. ``seed``
    comes from SHA-256 under a separate domain tag.

    Raises
    ------
    ConfigError
        If ``key`` is empty, or not bytes, a bytearray or a str (UTF-8 encoded).
    """
    if isinstance(key, str):
        key = key.encode()
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise ConfigError("key", key, "must be bytes (or a str, UTF-8 encoded)")
    key = bytes(key)
    if not key:
        raise ConfigError("key", key, "must be at least 1 byte")
    for counter in itertools.count():
        digest = hashlib.sha256(_POLY_DOMAIN + counter.to_bytes(4, "big") + key).digest()
        candidate = int.from_bytes(digest[:8], "big") | 1
        if is_irreducible(candidate):
            break
    seed = int.from_bytes(hashlib.sha256(_SEED_DOMAIN + key).digest()[:8], "big")
    return candidate, seed



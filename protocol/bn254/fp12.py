"""Fp12 packed into one integer: the pairing's target field.

Basis: py_ecc's flat basis Fp12 = Fp[w]/(w^12 - 18w^6 + 82), so coefficients compare
directly with ``py_ecc.optimized_bn128``. Since (w^6 - 9)^2 = -1, u = w^6 - 9 embeds Fp2,
w^6 = ξ = 9 + u, and the flat pair (c_i, c_{i+6}) is the Fp2 coefficient
A_i = (c_i + 9c_{i+6}) + c_{i+6}*u of w^i in the tower Fp2[w]/(w^6 - ξ).

Packing (Kronecker substitution): the 12 coefficients sit in 544-bit slots of one
mpz, F = Σ c_i·2^(544i). A product is then ONE gmpy2 multiplication followed by a
packed reduction, ~14 interpreter operations in all instead of ~200 for a tower:

1. Reduce mod w^12 = 18w^6 - 82 in one pass: split C at slot 12 and again at slot 18
   (C = L + H_lo·w^12 + H_hi·w^18) and use w^(12+j) = 18w^(6+j) - 82w^j and
   w^(18+j) = 242w^(6+j) - 1476w^j. OFF is a multiple of p in the slots that lose
   terms, large enough that no slot goes negative, so slots never borrow.
2. Packed Montgomery REDC with R = 2^272 in every slot at once:
   m = ((C & LOWK)·N') & LOWK, C = (C + m·p) >> 272.

Invariant: every slot of a packed element holds a value in [0, 2p], the element's
coefficients times R (Montgomery form; ``val(F) = F·R^-1`` slot by slot). Scaling by
R is scaling by an element of Fp, so it commutes with everything Fp-linear.

Slot bounds (p < 2^254): for inputs with slots <= 2p, raw product slots are sums of
<= 12 products, so <= B0 = 48p^2 < 2^514; after the reduction a slot is at most
B0 + 1558·B0 (OFF) + 18·B0 + 242·B0 = 1819·B0 < 2^16.5·p^2. REDC returns
C/R + p < (2^16.5·p/2^272 + 1)·p < 1.34p, so the invariant holds. Inside REDC the
slot products (C & LOWK)·N' stay below 2^544 and C + m·p below 2^527: no slot ever
spills into the next, which is what fixes the slot width at 544 bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import gmpy2
from gmpy2 import mpz

from protocol.bn254.fields import PZ, P, fp_inv
from protocol.bn254.fp2 import XI, Fp2, fp2_conj, fp2_mul, fp2_pow

SLOT: Final = 544
S12: Final = 12 * SLOT
S6: Final = 6 * SLOT
SLOT_MASK: Final = mpz((1 << SLOT) - 1)
MONT_BITS: Final = 272
R_MONT: Final = mpz((1 << MONT_BITS) % P)  # Montgomery R mod p
R_MONT_INV: Final = mpz(pow(1 << MONT_BITS, -1, P))
N_PRIME: Final = mpz((-pow(P, -1, 1 << MONT_BITS)) % (1 << MONT_BITS))


def _spread(value: int, slots: range) -> int:
    """The packed integer holding ``value`` in each of ``slots``."""
    out: int = mpz(sum(value << (SLOT * i) for i in slots))
    return out


LOWK: Final = _spread((1 << MONT_BITS) - 1, range(12))
_B0: Final = 48 * P * P
OFF: Final = _spread(1558 * _B0, range(6))
TWO_P_ODD: Final = _spread(2 * P, range(1, 12, 2))
ODD_MASK: Final = _spread((1 << SLOT) - 1, range(1, 12, 2))
EVEN_MASK: Final = _spread((1 << SLOT) - 1, range(0, 12, 2))

ONE: Final = mpz(R_MONT)  # 1 in Montgomery form, slot 0

# The slot bounds of the module header, checked with the actual numbers.
_C_MAX: Final = 1819 * _B0  # largest slot entering REDC
if not (
    2 * MONT_BITS <= SLOT  # (C & LOWK)·N' fits its slot
    and _C_MAX + ((1 << MONT_BITS) - 1) * P < 1 << SLOT  # C + m·p fits its slot
    and _C_MAX // (1 << MONT_BITS) + P <= 2 * P  # REDC output stays <= 2p
    and 1558 * _B0 % P == 0  # OFF is 0 mod p
):
    raise RuntimeError("bn254 constant check failed: packed Fp12 slot bounds")


def mul(a: int, b: int) -> int:
    """a·b in packed Montgomery form."""
    h, c = gmpy2.t_divmod_2exp(a * b, S12)
    hh, hl = gmpy2.t_divmod_2exp(h, S6)
    c = c + OFF + ((hl * 18 + hh * 242) << S6) - hl * 82 - hh * 1476
    m = ((c & LOWK) * N_PRIME) & LOWK
    out: int = (c + m * PZ) >> MONT_BITS
    return out


def sqr(a: int) -> int:
    """a^2 in packed Montgomery form (GMP squares faster than it multiplies)."""
    h, c = gmpy2.t_divmod_2exp(a * a, S12)
    hh, hl = gmpy2.t_divmod_2exp(h, S6)
    c = c + OFF + ((hl * 18 + hh * 242) << S6) - hl * 82 - hh * 1476
    m = ((c & LOWK) * N_PRIME) & LOWK
    out: int = (c + m * PZ) >> MONT_BITS
    return out


def conj(a: int) -> int:
    """a^(p^6): negates the odd coefficients (w^(p^6) = -w). The inverse on the
    cyclotomic subgroup, where every pairing value lives after the easy part."""
    odd = a & ODD_MASK
    out: int = (a & EVEN_MASK) + (TWO_P_ODD - odd)
    return out


def unpack(a: int) -> list[int]:
    """The 12 raw slots (Montgomery form, each in [0, 2p])."""
    return [(a >> (SLOT * i)) & SLOT_MASK for i in range(12)]


def pack(slots: Sequence[int]) -> int:
    """Pack 12 slot values, each in [0, 2p]."""
    out: int = mpz(0)
    for i in range(11, -1, -1):
        out = (out << SLOT) + slots[i]
    return out


def from_coeffs(coeffs: Sequence[int]) -> int:
    """Packed Montgomery form of the element with flat coefficients ``coeffs``."""
    return pack([mpz(c) * R_MONT % PZ for c in coeffs])


def to_coeffs(a: int) -> tuple[int, ...]:
    """The 12 canonical flat coefficients, as Python ints in [0, p)."""
    return tuple(int(s * R_MONT_INV % PZ) for s in unpack(a))


def is_one(a: int) -> bool:
    return to_coeffs(a) == (1,) + (0,) * 11


def power(a: int, e: int) -> int:
    """a^e for e >= 0 (left-to-right square and multiply)."""
    result: int = ONE
    for bit in bin(e)[2:]:
        result = sqr(result)
        if bit == "1":
            result = mul(result, a)
    return result


# --- Frobenius maps -------------------------------------------------------------------
# f^(p^k) = Σ conj^k(A_i)·γ_{k,i}·w^i with γ_{k,i} = ξ^(i(p^k - 1)/6): on the flat pair
# (c_i, c_{i+6}) this is a fixed 2×2 matrix over Fp, derived here from the formula.


def _frobenius_blocks(k: int) -> tuple[tuple[int, int, int, int], ...]:
    blocks = []
    for i in range(6):
        gamma = fp2_pow(XI, i * (P**k - 1) // 6)
        columns = []
        for c_lo, c_hi in ((1, 0), (0, 1)):
            a: Fp2 = ((c_lo + 9 * c_hi) % PZ, mpz(c_hi))
            if k % 2:
                a = fp2_conj(a)
            b0, b1 = fp2_mul(a, gamma)
            columns.append(((b0 - 9 * b1) % PZ, b1))  # back to the flat pair
        (m00, m10), (m01, m11) = columns
        blocks.append((mpz(m00), mpz(m01), mpz(m10), mpz(m11)))
    return tuple(blocks)


FROBENIUS: Final = {k: _frobenius_blocks(k) for k in (1, 2, 3)}


def frobenius(a: int, k: int) -> int:
    """a^(p^k) for k in {1, 2, 3}."""
    s = unpack(a)
    out = [mpz(0)] * 12
    for i, (m00, m01, m10, m11) in enumerate(FROBENIUS[k]):
        lo, hi = s[i], s[i + 6]
        out[i] = (m00 * lo + m01 * hi) % PZ
        out[i + 6] = (m10 * lo + m11 * hi) % PZ
    return pack(out)


# --- Inversion through the tower Fp6 = Fp2[v]/(v^3 - ξ), Fp12 = Fp6[w]/(w^2 - v) ---------

Fp6 = tuple[Fp2, Fp2, Fp2]


def _mul_xi(a: Fp2) -> Fp2:
    return ((9 * a[0] - a[1]) % PZ, (a[0] + 9 * a[1]) % PZ)


def _fp2_sub(a: Fp2, b: Fp2) -> Fp2:
    return ((a[0] - b[0]) % PZ, (a[1] - b[1]) % PZ)


def _fp2_add(a: Fp2, b: Fp2) -> Fp2:
    return ((a[0] + b[0]) % PZ, (a[1] + b[1]) % PZ)


def _fp6_mul(a: Fp6, b: Fp6) -> Fp6:
    a0, a1, a2 = a
    b0, b1, b2 = b
    t0, t1, t2 = fp2_mul(a0, b0), fp2_mul(a1, b1), fp2_mul(a2, b2)
    c0 = _fp2_add(t0, _mul_xi(_fp2_add(fp2_mul(a1, b2), fp2_mul(a2, b1))))
    c1 = _fp2_add(_fp2_add(fp2_mul(a0, b1), fp2_mul(a1, b0)), _mul_xi(t2))
    c2 = _fp2_add(_fp2_add(fp2_mul(a0, b2), fp2_mul(a2, b0)), t1)
    return (c0, c1, c2)


def _fp6_inv_scaled(c: Fp6, scale: int) -> Fp6:
    """scale / c in Fp6."""
    c0, c1, c2 = c
    t0 = _fp2_sub(fp2_mul(c0, c0), _mul_xi(fp2_mul(c1, c2)))
    t1 = _fp2_sub(_mul_xi(fp2_mul(c2, c2)), fp2_mul(c0, c1))
    t2 = _fp2_sub(fp2_mul(c1, c1), fp2_mul(c0, c2))
    n0, n1 = _fp2_add(fp2_mul(c0, t0), _mul_xi(_fp2_add(fp2_mul(c2, t1), fp2_mul(c1, t2))))
    d = fp_inv((n0 * n0 + n1 * n1) % PZ) * scale % PZ
    n_inv: Fp2 = (n0 * d % PZ, (-n1) * d % PZ)
    return (fp2_mul(t0, n_inv), fp2_mul(t1, n_inv), fp2_mul(t2, n_inv))


def inverse(a: int) -> int:
    """a^-1 in packed Montgomery form (raises ZeroDivisionError for 0).

    With val(a) = a/R slot-wise, the packed result must be R^2/a (as plain elements).
    """
    s = unpack(a)
    tower = [((s[i] + 9 * s[i + 6]) % PZ, s[i + 6] % PZ) for i in range(6)]
    even: Fp6 = (tower[0], tower[2], tower[4])  # f = even + odd*w, v = w^2
    odd: Fp6 = (tower[1], tower[3], tower[5])
    e2 = _fp6_mul(even, even)
    o2 = _fp6_mul(odd, odd)
    o2v = (_mul_xi(o2[2]), o2[0], o2[1])
    denom = (_fp2_sub(e2[0], o2v[0]), _fp2_sub(e2[1], o2v[1]), _fp2_sub(e2[2], o2v[2]))
    d = _fp6_inv_scaled(denom, R_MONT * R_MONT % PZ)
    inv_even = _fp6_mul(even, d)
    inv_odd = _fp6_mul(odd, d)
    out = [mpz(0)] * 12
    for j in range(3):
        for i, (b0, b1) in ((2 * j, inv_even[j]), (2 * j + 1, inv_odd[j])):
            if i % 2:
                b0, b1 = (-b0) % PZ, (-b1) % PZ
            out[i] = (b0 - 9 * b1) % PZ
            out[i + 6] = b1
    return pack(out)

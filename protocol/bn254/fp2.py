"""Fp2 = Fp[u]/(u^2 + 1), the field of the G2 coordinates, and the twist constants.

An element a0 + a1*u is the tuple ``(a0, a1)`` of reduced mpz values (py_ecc and gnark
order: real part first). These helpers are the readable reference used off the hot
paths (validation, tables, square roots); g2.py and pairing.py inline the same
formulas in their loops.

Twist: G2 lives on E'(Fp2): y^2 = x^3 + 3/ξ with ξ = 9 + u (a D-type sextic twist).
The untwist-Frobenius-twist endomorphism ψ(x, y) = (conj(x)·ψx, conj(y)·ψy) uses
ψx = ξ^((p-1)/3) and ψy = ξ^((p-1)/2); ψ² uses ξ^((p²-1)/3) and ξ^((p²-1)/2), which
lie in Fp. They are derived here from ξ, not typed in.
"""

from __future__ import annotations

from typing import Final

from gmpy2 import mpz

from protocol.bn254.fields import PZ, fp_inv, fp_sqrt

Fp2 = tuple[int, int]

FP2_ZERO: Final[Fp2] = (mpz(0), mpz(0))
FP2_ONE: Final[Fp2] = (mpz(1), mpz(0))
XI: Final[Fp2] = (mpz(9), mpz(1))  # the non-residue ξ = 9 + u


def fp2(a0: int, a1: int) -> Fp2:
    """The reduced element a0 + a1*u."""
    return (mpz(a0) % PZ, mpz(a1) % PZ)


def fp2_add(a: Fp2, b: Fp2) -> Fp2:
    return ((a[0] + b[0]) % PZ, (a[1] + b[1]) % PZ)


def fp2_sub(a: Fp2, b: Fp2) -> Fp2:
    return ((a[0] - b[0]) % PZ, (a[1] - b[1]) % PZ)


def fp2_neg(a: Fp2) -> Fp2:
    return ((-a[0]) % PZ, (-a[1]) % PZ)


def fp2_conj(a: Fp2) -> Fp2:
    """The Frobenius a^p = a0 - a1*u."""
    return (a[0], (-a[1]) % PZ)


def fp2_mul(a: Fp2, b: Fp2) -> Fp2:
    a0, a1 = a
    b0, b1 = b
    t0 = a0 * b0
    t1 = a1 * b1
    return ((t0 - t1) % PZ, ((a0 + a1) * (b0 + b1) - t0 - t1) % PZ)


def fp2_sqr(a: Fp2) -> Fp2:
    a0, a1 = a
    return ((a0 + a1) * (a0 - a1) % PZ, 2 * a0 * a1 % PZ)


def fp2_mul_fp(a: Fp2, k: int) -> Fp2:
    return (a[0] * k % PZ, a[1] * k % PZ)


def fp2_inv(a: Fp2) -> Fp2:
    """a^-1 = conj(a) / (a0^2 + a1^2) (raises ZeroDivisionError for 0)."""
    a0, a1 = a
    t = fp_inv((a0 * a0 + a1 * a1) % PZ)
    return (a0 * t % PZ, (-a1) * t % PZ)


def fp2_pow(a: Fp2, e: int) -> Fp2:
    """a^e for e >= 0 (square and multiply; used only for constants)."""
    result = FP2_ONE
    for bit in bin(e)[2:]:
        result = fp2_sqr(result)
        if bit == "1":
            result = fp2_mul(result, a)
    return result


def fp2_sqrt(a: Fp2) -> Fp2 | None:
    """A square root of a in Fp2, or None if a is not a square.

    Uses the norm: if x = x0 + x1*u squares to a, then x0^2 = (a0 ± sqrt(a0^2 + a1^2))/2
    and x1 = a1 / (2*x0). Which of the two roots comes back is unspecified; callers
    that need a canonical root choose between x and -x themselves.
    """
    a0, a1 = mpz(a[0]) % PZ, mpz(a[1]) % PZ
    if a1 == 0:
        s = fp_sqrt(a0)
        if s is not None:
            return (mpz(s), mpz(0))
        s = fp_sqrt(-a0)  # then (s*u)^2 = -s^2 = a0
        return None if s is None else (mpz(0), mpz(s))
    n = fp_sqrt(a0 * a0 + a1 * a1)
    if n is None:
        return None
    half = (PZ + 1) // 2
    x0 = fp_sqrt((a0 + n) * half)
    if x0 is None:
        x0 = fp_sqrt((a0 - n) * half)
        if x0 is None:
            return None
    x1 = a1 * fp_inv(2 * x0) % PZ
    root = (mpz(x0), x1)
    return root if fp2_sqr(root) == (a0, a1) else None


# b' = 3/ξ, the constant of the twist y^2 = x^3 + b'.
TWIST_B: Final[Fp2] = fp2_mul((mpz(3), mpz(0)), fp2_inv(XI))
PSI_X: Final[Fp2] = fp2_pow(XI, (PZ - 1) // 3)
PSI_Y: Final[Fp2] = fp2_pow(XI, (PZ - 1) // 2)
PSI2_X: Final[Fp2] = fp2_pow(XI, (PZ * PZ - 1) // 3)
PSI2_Y: Final[Fp2] = fp2_pow(XI, (PZ * PZ - 1) // 2)

if not (PSI2_X[1] == 0 and PSI2_Y[1] == 0):
    raise RuntimeError("bn254 constant check failed: ψ² constants lie in Fp")
if fp2_mul(TWIST_B, XI) != (3, 0):
    raise RuntimeError("bn254 constant check failed: twist b' * ξ == 3")

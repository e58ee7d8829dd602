"""BN254 base field Fp and scalar field Fr: moduli, the curve parameter, the GLV
endomorphism constants, and the Fp helpers (inversion, square root, Legendre symbol).

BN254 (alt_bn128) is the Barreto–Naehrig curve with seed x = 0x44E992B44A6909F1:

    p = 36x^4 + 36x^3 + 24x^2 + 6x + 1      (254 bits, p ≡ 3 mod 4)
    r = 36x^4 + 36x^3 + 18x^2 + 6x + 1      (the prime group order)
    E:  y^2 = x^3 + 3 over Fp, cofactor 1

Representation: field elements are gmpy2 ``mpz`` values; the hot paths in the other
modules inline their arithmetic and reduce ``% p`` only after products. gmpy2 is
typed as ``Any``, so values are annotated ``int`` here.

Every constant is checked when the module is imported (a failed check raises
``RuntimeError``): the moduli against the seed, the cube roots of unity, and the
GLV lattice basis.
"""

from __future__ import annotations

from typing import Final

import gmpy2
from gmpy2 import mpz

X0: Final = 0x44E992B44A6909F1  # the BN seed x (also called u)
P: Final = 21888242871839275222246405745257275088696311157297823662689037894645226208583
R: Final = 21888242871839275222246405745257275088548364400416034343698204186575808495617

PZ: Final = mpz(P)  # p as an mpz (mixing int and mpz operands costs a conversion)
RZ: Final = mpz(R)

B: Final = 3  # the curve constant b in y^2 = x^3 + b

# GLV: phi(x, y) = (BETA * x, y) acts on G1 as multiplication by LAMBDA.
# BETA is a primitive cube root of unity in Fp, LAMBDA one in Fr; the pair is matched
# numerically in g1.py (beta with lambda^2 would be wrong).
BETA: Final = 0x30644E72E131A0295E6DD9E7E0ACCCB0C28F069FBB966E3DE4BD44E5607CFD48
LAMBDA: Final = 0x30644E72E131A029048B6E193FD84104CC37A73FEC2BC5E9B8CA0B2D36636F23

# A reduced basis (a1, b1), (a2, b2) of the lattice {(a, b) : a + b*LAMBDA ≡ 0 mod r}
# (Guide to ECC, Alg. 3.74); both vectors are about 128 bits long.
GLV_A1: Final = 0x6F4D8248EEB859FC8211BBEB7D4F1128
GLV_B1: Final = -0x89D3256894D213E3
GLV_A2: Final = 0x89D3256894D213E3
GLV_B2: Final = 0x6F4D8248EEB859FD0BE4E1541221250B

_SQRT_EXP: Final = mpz((P + 1) // 4)


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise RuntimeError(f"bn254 constant check failed: {what}")


def fp_inv(a: int) -> int:
    """a^-1 mod p (raises ZeroDivisionError for a ≡ 0)."""
    inv: int = gmpy2.invert(a, PZ)
    return inv


def fp_is_square(a: int) -> bool:
    """True iff a is a square in Fp (0 counts as a square)."""
    symbol: int = gmpy2.jacobi(a % PZ, PZ)
    return symbol != -1


def fp_sqrt(a: int) -> int | None:
    """The square root a^((p+1)/4) mod p if a is a square, else None.

    This is the root EigenLayer's hash-to-G1 uses (never negated or normalised).
    """
    a = mpz(a) % PZ
    y: int = gmpy2.powmod(a, _SQRT_EXP, PZ)
    if y * y % PZ != a:
        return None
    return y


def glv_split(k: int) -> tuple[int, int]:
    """Split k (0 <= k < r) into (k1, k2) with k ≡ k1 + k2*LAMBDA (mod r), |k1|, |k2| < 2^128."""
    c1 = (2 * GLV_B2 * k + R) // (2 * R)
    c2 = (-2 * GLV_B1 * k + R) // (2 * R)
    return k - c1 * GLV_A1 - c2 * GLV_A2, -c1 * GLV_B1 - c2 * GLV_B2


def wnaf(k: int, width: int) -> list[tuple[int, int]]:
    """Width-w NAF of k >= 0 as (bit position, odd digit) pairs, lowest first.

    Digits lie in (-2^(w-1), 2^(w-1)) and any two non-zero digits are >= w bits apart.
    (Python ints: on 128-bit values their small operations beat mpz ones.)
    """
    out = []
    full = 1 << width
    half = full >> 1
    mask = full - 1
    pos = 0
    k = int(k)
    scan1 = gmpy2.bit_scan1
    while k:
        z = scan1(k)
        k >>= z
        pos += z
        d = k & mask
        if d >= half:
            d -= full
        out.append((pos, d))
        k = (k - d) >> width
        pos += width
    return out


_check(P == 36 * X0**4 + 36 * X0**3 + 24 * X0**2 + 6 * X0 + 1, "p from the seed")
_check(R == 36 * X0**4 + 36 * X0**3 + 18 * X0**2 + 6 * X0 + 1, "r from the seed")
_check(P % 4 == 3, "p ≡ 3 mod 4")
_check(gmpy2.is_prime(P) and gmpy2.is_prime(R), "p and r prime")


def _is_primitive_cube_root(z: int, modulus: int) -> bool:
    return z % modulus != 1 and (z * z + z + 1) % modulus == 0


_check(_is_primitive_cube_root(BETA, P), "beta is a primitive cube root of 1 in Fp")
_check(_is_primitive_cube_root(LAMBDA, R), "lambda is a primitive cube root of 1 in Fr")
_check((GLV_A1 + GLV_B1 * LAMBDA) % R == 0, "GLV basis vector 1 in the lattice")
_check((GLV_A2 + GLV_B2 * LAMBDA) % R == 0, "GLV basis vector 2 in the lattice")
_check(GLV_A1 * GLV_B2 - GLV_A2 * GLV_B1 == R, "GLV basis has determinant r")
_check(not fp_is_square(B), "3 is not a square (no G1 point has x = 0)")

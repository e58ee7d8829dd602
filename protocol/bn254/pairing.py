"""The optimal-ate pairing e: G1 × G2 -> GT on BN254, and products of pairings.

Public: ``GT`` (immutable element of the order-r subgroup of Fp12*), ``pairing(P, Q)``,
``G2Prepared`` / ``prepare_g2(Q)`` (the Miller-loop lines of a fixed G2 point) and
``pairing_check(pairs)`` (is Π e(P_i, Q_i) == 1, with one shared final exponentiation).
Inputs are NOT subgroup-checked here: points must come from the validating
constructors of G1/G2. Infinity on either side contributes 1.

Results equal ``py_ecc.optimized_bn128.pairing(Q, P)`` coefficient for coefficient.

Miller loop (optimal ate): f_{6x+2,Q}(P) · l_{T,π(Q)}(P) · l_{T',-π²(Q)}(P), walking the
NAF of 6x+2 (66 digits, 22 non-zero). The twist point T stays affine (one Fp2
inversion a step). The line through T with slope λ, evaluated at P and mapped to the
flat basis (u = w^6 - 9, twist (x, y) -> (x·w^2, y·w^3)), is

    l(P) = -y_P + λ·x_P·w + (y_T - λ·x_T)·w^3,

so it has five non-zero flat slots (0, 1, 7, 3, 9). ``G2Prepared`` stores, per line,
the four P-independent slot values; f·l is then five 254-bit × packed products
(cheaper than one dense product) and one packed reduction (fp12.py). The lines are in
plain form while f is in Montgomery form, which multiplies f by a constant of Fp*;
vertical lines are omitted. The final exponentiation kills both (p - 1 and the
Fp6 subfield orders divide (p^12 - 1)/r). A product of pairings shares the squarings.

Final exponentiation f^((p^12-1)/r): easy part f^((p^6-1)(p^2+1)) with one inversion
(through the tower), then the hard part (p^4 - p^2 + 1)/r with the vectorial addition
chain of Scott et al. (2009), as in go-ethereum's bn256: three exponentiations by x
(signed 4-bit windows, conjugation as the inverse on the cyclotomic subgroup) and Frobenius maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import gmpy2
from gmpy2 import mpz

from protocol.bn254 import fp12
from protocol.bn254.fields import PZ, X0, P, R, wnaf
from protocol.bn254.fp2 import PSI2_X, PSI2_Y, fp2_mul
from protocol.bn254.g1 import G1
from protocol.bn254.g2 import G2, psi
from protocol.errors import InvalidPoint

Line = tuple[int, int, int, int]  # flat slots 1, 7, 3, 9 of the line (slot 0 is -y_P)


def _naf(k: int) -> tuple[int, ...]:
    """The NAF of k > 0, most significant digit first."""
    digits = []
    while k:
        d = 2 - (k & 3) if k & 1 else 0
        digits.append(d)
        k = (k - d) >> 1
    return tuple(reversed(digits))


ATE_LOOP: Final = 6 * X0 + 2
ATE_NAF: Final = _naf(ATE_LOOP)
X0_WNAF4: Final = tuple(reversed(wnaf(X0, 4)))  # (position, digit), highest first
_S1, _S3, _S7, _S9 = (fp12.SLOT * i for i in (1, 3, 7, 9))

if sum(d << i for i, d in enumerate(reversed(ATE_NAF))) != ATE_LOOP or ATE_NAF[0] != 1:
    raise RuntimeError("bn254 constant check failed: NAF(6x+2)")
if sum(d << i for i, d in X0_WNAF4) != X0:
    raise RuntimeError("bn254 constant check failed: signed windows of x")


class GT:
    """An element of GT (the order-r subgroup of Fp12*), immutable."""

    __slots__ = ("_f",)
    _f: int

    def __init__(self, packed: int) -> None:
        """Internal: wraps a packed Montgomery Fp12 (see fp12.py). Use ``from_coeffs``."""
        object.__setattr__(self, "_f", packed)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("GT is immutable")

    @classmethod
    def from_coeffs(cls, coeffs: Sequence[int]) -> GT:
        """The element with these 12 flat coefficients (py_ecc's basis); unchecked."""
        if len(coeffs) != 12:
            raise ValueError("GT.from_coeffs: need 12 coefficients")
        return cls(fp12.from_coeffs([c % P for c in coeffs]))

    @classmethod
    def one(cls) -> GT:
        return cls(fp12.ONE)

    def coeffs(self) -> tuple[int, ...]:
        """The 12 coefficients in py_ecc's flat basis Fp[w]/(w^12 - 18 w^6 + 82)."""
        return fp12.to_coeffs(self._f)

    def is_one(self) -> bool:
        return fp12.is_one(self._f)

    def __mul__(self, other: GT) -> GT:
        return GT(fp12.mul(self._f, other._f))

    def __pow__(self, k: int) -> GT:
        """self^k; k is taken mod r (GT has order r), so negative k inverts."""
        return GT(fp12.power(self._f, k % R))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GT) and self.coeffs() == other.coeffs()

    def __hash__(self) -> int:
        return hash(("GT", self.coeffs()))

    def __repr__(self) -> str:
        return "GT(...)"


# --- G2 side: the lines ------------------------------------------------------------------


def _g2_lines(q: G2) -> tuple[Line, ...]:
    """The Miller-loop lines of Q in the order the loop consumes them.

    T walks the ate loop in affine coordinates over Fp2; each step is one inversion.
    Per line we keep the flat slots 1, 7 (from λ) and 3, 9 (from c = y_T - λ·x_T).
    """
    p = PZ
    qx0, qx1 = mpz(q.x[0]), mpz(q.x[1])
    qy0, qy1 = mpz(q.y[0]), mpz(q.y[1])
    plus, minus = (qx0, qx1, qy0, qy1), (qx0, qx1, (-qy0) % p, (-qy1) % p)
    # one entry per line: None doubles T, a point is added to T
    schedule: list[tuple[int, int, int, int] | None] = []
    for digit in ATE_NAF[1:]:
        schedule.append(None)
        if digit:
            schedule.append(plus if digit == 1 else minus)
    # Frobenius lines: Q1 = π(Q) = ψ(Q), then -π²(Q) = -ψ²(Q) = -(x·ψ2x, y·ψ2y).
    schedule.append(psi(plus))
    q2x = fp2_mul((qx0, qx1), PSI2_X)
    q2y = fp2_mul((qy0, qy1), PSI2_Y)
    schedule.append((q2x[0], q2x[1], (-q2y[0]) % p, (-q2y[1]) % p))

    x0, x1, y0, y1 = plus
    lines: list[Line] = []
    append = lines.append
    for step in schedule:
        if step is None:  # tangent: λ = 3x^2 / 2y = 3x^2·conj(y) / (2·N(y))
            n0 = 3 * (x0 + x1) * (x0 - x1)
            n1 = 6 * x0 * x1
            s = gmpy2.invert(2 * (y0 * y0 + y1 * y1) % p, p)
            lam0 = (n0 * y0 + n1 * y1) % p * s % p
            lam1 = (n1 * y0 - n0 * y1) % p * s % p
            ax0, ax1 = x0, x1
        else:  # chord through T and A: λ = (y - a_y)·conj(x - a_x) / N(x - a_x)
            ax0, ax1, ay0, ay1 = step
            dx0, dx1, dy0, dy1 = x0 - ax0, x1 - ax1, y0 - ay0, y1 - ay1
            s = gmpy2.invert((dx0 * dx0 + dx1 * dx1) % p, p)
            lam0 = (dy0 * dx0 + dy1 * dx1) % p * s % p
            lam1 = (dy1 * dx0 - dy0 * dx1) % p * s % p
        lx0 = lam0 * x0 - lam1 * x1  # λ·x_T, unreduced
        lx1 = lam0 * x1 + lam1 * x0
        c0 = (y0 - lx0) % p
        c1 = (y1 - lx1) % p
        append(((lam0 - 9 * lam1) % p, lam1, (c0 - 9 * c1) % p, c1))
        nx0 = ((lam0 + lam1) * (lam0 - lam1) - x0 - ax0) % p
        nx1 = (2 * lam0 * lam1 - x1 - ax1) % p
        y0, y1 = (lx0 - lam0 * nx0 + lam1 * nx1 - y0) % p, (lx1 - lam0 * nx1 - lam1 * nx0 - y1) % p
        x0, x1 = nx0, nx1
    return tuple(lines)


class G2Prepared:
    """A G2 point with its Miller-loop lines precomputed (88 lines, ~1 ms to build).

    Use it for a G2 point that is paired many times (the generator, a group key).
    """

    __slots__ = ("_lines", "point")
    point: G2
    _lines: tuple[Line, ...]

    def __init__(self, point: G2) -> None:
        object.__setattr__(self, "point", point)
        if point.is_infinity():
            lines: tuple[Line, ...] = ()
        else:
            try:
                lines = _g2_lines(point)
            except ZeroDivisionError:
                # only for points outside the order-r subgroup (unvalidated input)
                raise InvalidPoint("G2 point", "degenerate Miller loop") from None
        object.__setattr__(self, "_lines", lines)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("G2Prepared is immutable")

    def __repr__(self) -> str:
        return f"G2Prepared({self.point!r})"


def prepare_g2(q: G2) -> G2Prepared:
    """Precompute the Miller-loop lines of q for repeated pairings with it."""
    return G2Prepared(q)


# --- Miller loop -------------------------------------------------------------------------


def _miller_loop(pairs: Sequence[tuple[int, int, tuple[Line, ...]]]) -> int:
    """Π f_Q(P) over (x_P, -y_P mod p, lines of Q); packed Montgomery, up to Fp* factors."""
    p = PZ
    s12, s6, mb = fp12.S12, fp12.S6, fp12.MONT_BITS
    off, lowk, nprime = fp12.OFF, fp12.LOWK, fp12.N_PRIME
    s1, s3, s7, s9 = _S1, _S3, _S7, _S9
    divmod2exp = gmpy2.t_divmod_2exp
    f: int = fp12.ONE
    idx = 0
    first = True

    for digit in (*ATE_NAF[1:], 2, 3):
        # digit 2/3 mark the two Frobenius lines (no squaring before them)
        if digit < 2 and not first:
            f = fp12.sqr(f)
        first = False
        rounds = 2 if digit in (1, -1) else 1
        for _ in range(rounds):
            for x, ny, lines in pairs:
                l1, l7, c3, c9 = lines[idx]
                a = l1 * x % p
                b = l7 * x % p
                c = f * ny + (f * a << s1) + (f * c3 << s3) + (f * b << s7) + (f * c9 << s9)
                h, c = divmod2exp(c, s12)
                hh, hl = divmod2exp(h, s6)
                c = c + off + ((hl * 18 + hh * 242) << s6) - hl * 82 - hh * 1476
                m = ((c & lowk) * nprime) & lowk
                f = (c + m * p) >> mb
            idx += 1
    return f


# --- final exponentiation ----------------------------------------------------------------


def _exp_by_x(f: int) -> int:
    """f^x for f in the cyclotomic subgroup: signed width-4 windows over x (14 non-zero
    digits, 16 multiplications in all instead of 23 for the NAF), conjugation as the
    inverse for negative digits."""
    mul, sqr, conj = fp12.mul, fp12.sqr, fp12.conj
    f2 = sqr(f)
    f3 = mul(f, f2)
    f5 = mul(f3, f2)
    f7 = mul(f5, f2)
    table = {1: f, 3: f3, 5: f5, 7: f7}
    table.update({-d: conj(v) for d, v in table.items()})
    digits = X0_WNAF4
    pos, d = digits[0]
    out = table[d]
    for nxt, d in digits[1:]:
        for _ in range(pos - nxt):
            out = sqr(out)
        out = mul(out, table[d])
        pos = nxt
    for _ in range(pos):
        out = sqr(out)
    return out


def final_exponentiation(f: int) -> int:
    """f^((p^12 - 1)/r), exactly (packed Montgomery in and out)."""
    mul, conj, frob = fp12.mul, fp12.conj, fp12.frobenius
    # easy part: f^((p^6 - 1)(p^2 + 1))
    t = mul(conj(f), fp12.inverse(f))
    t = mul(frob(t, 2), t)
    # hard part (Scott et al. 2009; go-ethereum bn256 gfp12 finalExponentiation)
    fp1 = frob(t, 1)
    fp2_ = frob(t, 2)
    fp3 = frob(fp2_, 1)
    fu = _exp_by_x(t)
    fu2 = _exp_by_x(fu)
    fu3 = _exp_by_x(fu2)
    y3 = conj(frob(fu, 1))
    fu2p = frob(fu2, 1)
    fu3p = frob(fu3, 1)
    y2 = frob(fu2, 2)
    y0 = mul(mul(fp1, fp2_), fp3)
    y1 = conj(t)
    y5 = conj(fu2)
    y4 = conj(mul(fu, fu2p))
    y6 = conj(mul(fu3, fu3p))
    t0 = mul(mul(fp12.sqr(y6), y4), y5)
    t1 = mul(mul(y3, y5), t0)
    t0 = mul(t0, y2)
    t1 = fp12.sqr(t1)
    t1 = mul(t1, t0)
    t1 = fp12.sqr(t1)
    t0 = mul(t1, y1)
    t1 = mul(t1, y0)
    t0 = fp12.sqr(t0)
    return mul(t0, t1)


# --- public entry points -------------------------------------------------------------------


def _lines_of(q: G2 | G2Prepared) -> tuple[Line, ...]:
    return (q if isinstance(q, G2Prepared) else G2Prepared(q))._lines


def pairing(p: G1, q: G2 | G2Prepared) -> GT:
    """e(p, q); 1 if either is infinity."""
    lines = _lines_of(q)
    if p.is_infinity() or not lines:
        return GT.one()
    f = _miller_loop([(mpz(p.x), PZ - p.y, lines)])
    return GT(final_exponentiation(f))


def pairing_check(pairs: Sequence[tuple[G1, G2 | G2Prepared]]) -> bool:
    """True iff Π e(P_i, Q_i) == 1 (one shared Miller loop and final exponentiation).

    Pairs may mix G2 and G2Prepared; a pair with infinity on either side contributes 1.
    """
    loop = []
    for p, q in pairs:
        if p.is_infinity() or (isinstance(q, G2) and q.is_infinity()):
            continue
        lines = _lines_of(q)
        if lines:
            loop.append((mpz(p.x), PZ - p.y, lines))
    if not loop:
        return True
    return fp12.is_one(final_exponentiation(_miller_loop(loop)))

"""G2 of BN254: the order-r subgroup of the sextic twist E': y^2 = x^3 + 3/(9 + u) over Fp2.

Public: ``G2`` (immutable affine point; x, y are (real, imag) int pairs; infinity is
((0, 0), (0, 0))), ``G2_GENERATOR``, ``G2_INFINITY``, ``g2_mul_generator``.

Inside, on gmpy2 integers with the Fp2 arithmetic written out on the coordinate
halves (schoolbook products: in Python four multiplications beat Karatsuba's three
multiplications plus its extra additions):

* Accumulators are Jacobian over Fp2, additions mixed against affine tables; the
  same formulas as in g1.py, inlined in ``_straus2``.
* Variable base: GLS with ψ (untwist–Frobenius–twist), which acts on G2 as
  multiplication by p ≡ 6x^2 (mod r), a 127-bit number. So k = k0 + k1·6x^2 is a plain
  division, both halves have ~127 bits, and their width-5 NAF streams share one
  doubling chain. The table of ψ(Q) costs two Fp2 products per point.
* Fixed base (the generator): signed 8-bit windows over 32 × 128 affine points, built
  on first use.
* Subgroup membership (El Housni–Guillevic–Piellard, ePrint 2022/348, for the BN254
  seed, which satisfies x ≢ 4 mod 13 and x ≢ 92 mod 97): Q is in G2 iff
  [x+1]Q + ψ([x]Q) + ψ²([x]Q) == ψ³([2x]Q), one 63-bit multiplication. The slow
  reference r·Q == 0 stays available as ``in_subgroup_slow``.

Nothing here is constant time (see docs/threat-model.md, "Constant time").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from gmpy2 import mpz

from protocol.bn254.fields import PZ, X0, P, R, wnaf
from protocol.bn254.fp2 import (
    PSI_X,
    PSI_Y,
    TWIST_B,
    Fp2,
    fp2_add,
    fp2_conj,
    fp2_inv,
    fp2_mul,
    fp2_sqr,
)
from protocol.errors import InvalidPoint

Fp2Pair = tuple[int, int]
Affine2 = tuple[int, int, int, int]  # (x0, x1, y0, y1), never infinity
Jacobian2 = tuple[int, int, int, int, int, int]  # (x0, x1, y0, y1, z0, z1); Z == 0 is infinity

PSI_EIGENVALUE: Final = P % R  # ψ(Q) == [p]Q on G2, and p ≡ 6x^2 (mod r)
WNAF_WIDTH: Final = 5
FIXED_WINDOW: Final = 8
FIXED_WINDOWS: Final = 32
_THREE_HALVES: Final = mpz(3 * pow(2, -1, P) % P)
_JAC_INFINITY: Final[Jacobian2] = (mpz(0), mpz(0), mpz(1), mpz(0), mpz(0), mpz(0))


class G2:
    """An immutable affine G2 point; x, y are (real, imag); infinity is ((0,0),(0,0))."""

    __slots__ = ("x", "y")
    x: Fp2Pair
    y: Fp2Pair

    def __init__(self, x: Fp2Pair, y: Fp2Pair) -> None:
        """Unchecked constructor: use ``from_affine`` for untrusted input."""
        object.__setattr__(self, "x", (int(x[0]), int(x[1])))
        object.__setattr__(self, "y", (int(y[0]), int(y[1])))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("G2 is immutable")

    @classmethod
    def from_affine(
        cls, x: Fp2Pair, y: Fp2Pair, *, field: str = "G2 point", allow_infinity: bool = False
    ) -> G2:
        """Validated constructor: coordinates < p, on the twist, in the order-r subgroup."""
        if not all(0 <= c < P for c in (*x, *y)):
            raise InvalidPoint(field, "coordinate not in [0, p)")
        if tuple(x) == (0, 0) and tuple(y) == (0, 0):
            if not allow_infinity:
                raise InvalidPoint(field, "point at infinity not allowed here")
            return G2_INFINITY
        pt = cls(x, y)
        if not pt.is_on_curve():
            raise InvalidPoint(field, "not on the twist curve")
        if not pt.in_subgroup():
            raise InvalidPoint(field, "not in the order-r subgroup")
        return pt

    def is_infinity(self) -> bool:
        return self.x == (0, 0) and self.y == (0, 0)

    def is_on_curve(self) -> bool:
        if self.is_infinity():
            return True
        x: Fp2 = (mpz(self.x[0]), mpz(self.x[1]))
        y: Fp2 = (mpz(self.y[0]), mpz(self.y[1]))
        return fp2_sqr(y) == fp2_add(fp2_mul(fp2_sqr(x), x), TWIST_B)

    def in_subgroup(self) -> bool:
        """Fast check with ψ: [x+1]Q + ψ([x]Q) + ψ²([x]Q) == ψ³([2x]Q) (on-curve points)."""
        if self.is_infinity():
            return True
        q = _affine(self)
        xq = _to_affine(_straus2(_events(q, X0, WNAF_WIDTH)))
        if xq is None:  # [x]Q == 0: Q has order dividing x, never r
            return False
        psi_xq = psi(xq)
        lhs = _add_affine(_add_affine(_add_affine(xq, q), psi_xq), psi(psi_xq))
        two_xq = _add_affine(xq, xq)
        rhs = None if two_xq is None else psi(psi(psi(two_xq)))
        return lhs == rhs

    def in_subgroup_slow(self) -> bool:
        """r·Q == infinity by plain double-and-add (the reference for ``in_subgroup``)."""
        if self.is_infinity():
            return True
        return _to_affine(_straus2(_events(_affine(self), R, 2))) is None

    def __add__(self, other: G2) -> G2:
        return _g2(_add_affine(_affine_or_none(self), _affine_or_none(other)))

    def __neg__(self) -> G2:
        if self.is_infinity():
            return self
        return G2(self.x, ((-self.y[0]) % P, (-self.y[1]) % P))

    def __sub__(self, other: G2) -> G2:
        return self + (-other)

    def __mul__(self, k: int) -> G2:
        k %= R
        if k == 0 or self.is_infinity():
            return G2_INFINITY
        return _g2(_to_affine(_gls_mul(_affine(self), k)))

    __rmul__ = __mul__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, G2) and self.x == other.x and self.y == other.y

    def __hash__(self) -> int:
        return hash(("G2", self.x, self.y))

    def __repr__(self) -> str:
        return f"G2(x=({self.x[0]:#x}, {self.x[1]:#x}), y=({self.y[0]:#x}, {self.y[1]:#x}))"


G2_INFINITY: Final = G2((0, 0), (0, 0))
G2_GENERATOR: Final = G2(
    (
        10857046999023057135944570762232829481370756359578518086990519993285655852781,
        11559732032986387107991004021392285783925812861821192530917403151452391805634,
    ),
    (
        8495653923123431417604973247489272438418190587263600148770280649306958101930,
        4082367875863433681332203403145435568316851327593401208105741076214120093531,
    ),
)


def _affine(pt: G2) -> Affine2:
    return (mpz(pt.x[0]), mpz(pt.x[1]), mpz(pt.y[0]), mpz(pt.y[1]))


def _affine_or_none(pt: G2) -> Affine2 | None:
    return None if pt.is_infinity() else _affine(pt)


def _g2(pt: Affine2 | None) -> G2:
    if pt is None:
        return G2_INFINITY
    out = object.__new__(G2)
    object.__setattr__(out, "x", (int(pt[0]), int(pt[1])))
    object.__setattr__(out, "y", (int(pt[2]), int(pt[3])))
    return out


def psi(pt: Affine2) -> Affine2:
    """ψ(x, y) = (conj(x)·ξ^((p-1)/3), conj(y)·ξ^((p-1)/2))."""
    x = fp2_mul(fp2_conj((pt[0], pt[1])), PSI_X)
    y = fp2_mul(fp2_conj((pt[2], pt[3])), PSI_Y)
    return (x[0], x[1], y[0], y[1])


def _add_affine(a: Affine2 | None, b: Affine2 | None) -> Affine2 | None:
    """Affine addition with every special case (None is infinity); one Fp2 inversion."""
    if a is None:
        return b
    if b is None:
        return a
    xa, ya, xb, yb = (a[0], a[1]), (a[2], a[3]), (b[0], b[1]), (b[2], b[3])
    if xa == xb:
        if ya != yb or ya == (0, 0):
            return None
        x2 = fp2_sqr(xa)
        lam = fp2_mul((3 * x2[0], 3 * x2[1]), fp2_inv((2 * ya[0] % PZ, 2 * ya[1] % PZ)))
    else:
        dx = ((xb[0] - xa[0]) % PZ, (xb[1] - xa[1]) % PZ)
        lam = fp2_mul(((yb[0] - ya[0]) % PZ, (yb[1] - ya[1]) % PZ), fp2_inv(dx))
    l2 = fp2_sqr(lam)
    x3 = ((l2[0] - xa[0] - xb[0]) % PZ, (l2[1] - xa[1] - xb[1]) % PZ)
    t = fp2_mul(lam, ((xa[0] - x3[0]) % PZ, (xa[1] - x3[1]) % PZ))
    return (x3[0], x3[1], (t[0] - ya[0]) % PZ, (t[1] - ya[1]) % PZ)


def _to_affine(pt: Jacobian2) -> Affine2 | None:
    x0, x1, y0, y1, z0, z1 = pt
    if not (z0 or z1):
        return None
    zi = fp2_inv((z0, z1))
    zi2 = fp2_sqr(zi)
    zi3 = fp2_mul(zi2, zi)
    x = fp2_mul((x0, x1), zi2)
    y = fp2_mul((y0, y1), zi3)
    return (x[0], x[1], y[0], y[1])


def _batch_to_affine(points: Sequence[Jacobian2]) -> list[Affine2]:
    """Jacobian -> affine with one Fp2 inversion (Montgomery's trick); no infinity."""
    prefix: list[Fp2] = []
    acc: Fp2 = (mpz(1), mpz(0))
    for pt in points:
        prefix.append(acc)
        acc = fp2_mul(acc, (pt[4], pt[5]))
    inv = fp2_inv(acc)
    out: list[Affine2] = [(mpz(0), mpz(0), mpz(0), mpz(0))] * len(points)
    for i in range(len(points) - 1, -1, -1):
        x0, x1, y0, y1, z0, z1 = points[i]
        zi = fp2_mul(inv, prefix[i])
        inv = fp2_mul(inv, (z0, z1))
        zi2 = fp2_sqr(zi)
        x = fp2_mul((x0, x1), zi2)
        y = fp2_mul((y0, y1), fp2_mul(zi2, zi))
        out[i] = (x[0], x[1], y[0], y[1])
    return out


def _jac_double(pt: Jacobian2) -> Jacobian2:
    """dbl-2009-l over Fp2 rescaled by 1/2 as in g1.py (the formula ``_straus2`` inlines):
    N = (3/2)·X^2, B = X·Y^2, X3 = N^2 - 2B, Y3 = N·(B - X3) - Y^4, Z3 = Y·Z."""
    x0, x1, y0, y1, z0, z1 = pt
    p, c = PZ, _THREE_HALVES
    yy0 = (y0 + y1) * (y0 - y1) % p
    yy1 = 2 * y0 * y1 % p
    b0 = (x0 * yy0 - x1 * yy1) % p
    b1 = (x0 * yy1 + x1 * yy0) % p
    n0 = (x0 + x1) * (x0 - x1) * c % p
    n1 = 3 * x0 * x1 % p
    nx0 = ((n0 + n1) * (n0 - n1) - 2 * b0) % p
    nx1 = (2 * n0 * n1 - 2 * b1) % p
    nz0 = (y0 * z0 - y1 * z1) % p
    nz1 = (y0 * z1 + y1 * z0) % p
    t0 = b0 - nx0
    t1 = b1 - nx1
    ny0 = (n0 * t0 - n1 * t1 - (yy0 + yy1) * (yy0 - yy1)) % p
    ny1 = (n0 * t1 + n1 * t0 - 2 * yy0 * yy1) % p
    return nx0, nx1, ny0, ny1, nz0, nz1


def _jac_madd(pt: Jacobian2, q: Affine2) -> Jacobian2:
    """pt + q for affine q with every special case (madd-2007-bl over Fp2)."""
    x0, x1, y0, y1, z0, z1 = pt
    a0, a1, b0, b1 = q
    p = PZ
    if not (z0 or z1):
        return a0, a1, b0, b1, mpz(1), mpz(0)
    zz0 = (z0 + z1) * (z0 - z1) % p
    zz1 = 2 * z0 * z1 % p
    h0 = (a0 * zz0 - a1 * zz1 - x0) % p
    h1 = (a0 * zz1 + a1 * zz0 - x1) % p
    zzz0 = (z0 * zz0 - z1 * zz1) % p
    zzz1 = (z0 * zz1 + z1 * zz0) % p
    r0 = (b0 * zzz0 - b1 * zzz1 - y0) % p
    r1 = (b0 * zzz1 + b1 * zzz0 - y1) % p
    if not (h0 or h1):
        return _jac_double(pt) if not (r0 or r1) else _JAC_INFINITY
    hh0 = (h0 + h1) * (h0 - h1) % p
    hh1 = 2 * h0 * h1 % p
    hhh0 = (h0 * hh0 - h1 * hh1) % p
    hhh1 = (h0 * hh1 + h1 * hh0) % p
    v0 = (x0 * hh0 - x1 * hh1) % p
    v1 = (x0 * hh1 + x1 * hh0) % p
    nx0 = ((r0 + r1) * (r0 - r1) - hhh0 - 2 * v0) % p
    nx1 = (2 * r0 * r1 - hhh1 - 2 * v1) % p
    t0 = v0 - nx0
    t1 = v1 - nx1
    ny0 = (r0 * t0 - r1 * t1 - y0 * hhh0 + y1 * hhh1) % p
    ny1 = (r0 * t1 + r1 * t0 - y0 * hhh1 - y1 * hhh0) % p
    return nx0, nx1, ny0, ny1, (z0 * h0 - z1 * h1) % p, (z0 * h1 + z1 * h0) % p


def _straus2(events: list[list[Affine2]]) -> Jacobian2:
    """Σ over positions i (from the top) of 2^i · (sum of the affine points at i)."""
    p, c = PZ, _THREE_HALVES
    x0, x1, y0, y1, z0, z1 = _JAC_INFINITY
    for i in range(len(events) - 1, -1, -1):
        if z0 or z1:  # inlined _jac_double
            yy0 = (y0 + y1) * (y0 - y1) % p
            yy1 = 2 * y0 * y1 % p
            b0 = (x0 * yy0 - x1 * yy1) % p
            b1 = (x0 * yy1 + x1 * yy0) % p
            n0 = (x0 + x1) * (x0 - x1) * c % p
            n1 = 3 * x0 * x1 % p
            nz0 = (y0 * z0 - y1 * z1) % p
            z1 = (y0 * z1 + y1 * z0) % p
            z0 = nz0
            x0 = ((n0 + n1) * (n0 - n1) - 2 * b0) % p
            x1 = (2 * n0 * n1 - 2 * b1) % p
            t0 = b0 - x0
            t1 = b1 - x1
            y0 = (n0 * t0 - n1 * t1 - (yy0 + yy1) * (yy0 - yy1)) % p
            y1 = (n0 * t1 + n1 * t0 - 2 * yy0 * yy1) % p
        for q in events[i]:
            a0, a1, b0, b1 = q
            if not (z0 or z1):
                x0, x1, y0, y1, z0, z1 = a0, a1, b0, b1, mpz(1), mpz(0)
                continue
            zz0 = (z0 + z1) * (z0 - z1) % p
            zz1 = 2 * z0 * z1 % p
            h0 = (a0 * zz0 - a1 * zz1 - x0) % p
            h1 = (a0 * zz1 + a1 * zz0 - x1) % p
            zzz0 = (z0 * zz0 - z1 * zz1) % p
            zzz1 = (z0 * zz1 + z1 * zz0) % p
            r0 = (b0 * zzz0 - b1 * zzz1 - y0) % p
            r1 = (b0 * zzz1 + b1 * zzz0 - y1) % p
            if not (h0 or h1):
                x0, x1, y0, y1, z0, z1 = _jac_madd((x0, x1, y0, y1, z0, z1), q)
                continue
            hh0 = (h0 + h1) * (h0 - h1) % p
            hh1 = 2 * h0 * h1 % p
            hhh0 = (h0 * hh0 - h1 * hh1) % p
            hhh1 = (h0 * hh1 + h1 * hh0) % p
            v0 = (x0 * hh0 - x1 * hh1) % p
            v1 = (x0 * hh1 + x1 * hh0) % p
            nx0 = ((r0 + r1) * (r0 - r1) - hhh0 - 2 * v0) % p
            nx1 = (2 * r0 * r1 - hhh1 - 2 * v1) % p
            t0 = v0 - nx0
            t1 = v1 - nx1
            ny0 = (r0 * t0 - r1 * t1 - y0 * hhh0 + y1 * hhh1) % p
            y1 = (r0 * t1 + r1 * t0 - y0 * hhh1 - y1 * hhh0) % p
            y0 = ny0
            nz0 = (z0 * h0 - z1 * h1) % p
            z1 = (z0 * h1 + z1 * h0) % p
            z0 = nz0
            x0, x1 = nx0, nx1
    return x0, x1, y0, y1, z0, z1


def _odd_multiples(q: Affine2, count: int) -> list[Affine2]:
    """[Q, 3Q, 5Q, ...] (``count`` points) in affine."""
    two_q = _add_affine(q, q)
    out = [q]
    for _ in range(count - 1):
        nxt = _add_affine(out[-1], two_q)
        if nxt is None:  # only for points of tiny order, i.e. outside G2
            raise InvalidPoint("G2", "point of small order (not in the subgroup)")
        out.append(nxt)
    return out


def _signed_table(multiples: Sequence[Affine2]) -> dict[int, Affine2]:
    table = {}
    for j, (x0, x1, y0, y1) in enumerate(multiples):
        table[2 * j + 1] = (x0, x1, y0, y1)
        table[-2 * j - 1] = (x0, x1, (-y0) % PZ, (-y1) % PZ)
    return table


def _events(q: Affine2, k: int, width: int) -> list[list[Affine2]]:
    """The wNAF digit stream of k·q (k > 0) laid out by bit position."""
    digits = wnaf(k, width)
    table = _signed_table(_odd_multiples(q, 1 << (width - 2)))
    events: list[list[Affine2]] = [[] for _ in range(digits[-1][0] + 1)]
    for pos, d in digits:
        events[pos].append(table[d])
    return events


def _gls_mul(q: Affine2, k: int) -> Jacobian2:
    """k·q for 0 < k < r: k = k0 + k1·p (mod r), ψ(q) = [p]q."""
    k1, k0 = divmod(k, PSI_EIGENVALUE)
    multiples = _odd_multiples(q, 1 << (WNAF_WIDTH - 2))
    events: list[list[Affine2]] = [[] for _ in range(130)]
    for half, pts in ((k0, multiples), (k1, [psi(m) for m in multiples] if k1 else [])):
        if half:
            table = _signed_table(pts)
            for pos, d in wnaf(half, WNAF_WIDTH):
                events[pos].append(table[d])
    return _straus2(events)


# --- fixed base: the generator -------------------------------------------------------------

# Built on first use and published by one assignment: concurrent first callers may both
# build it, but nobody ever sees a half-built table.
_fixed_table: list[list[Affine2]] | None = None


def _build_fixed_table() -> list[list[Affine2]]:
    """rows[i][j-1] = j·2^(8i)·G2 for j in 1..128, i in 0..31, all affine."""
    rows: list[list[Affine2]] = []
    base = _affine(G2_GENERATOR)
    half = 1 << (FIXED_WINDOW - 1)
    one, zero = mpz(1), mpz(0)
    for _ in range(FIXED_WINDOWS):
        start: Jacobian2 = (*base, one, zero)
        jac = [start, _jac_double(start)]
        while len(jac) < half:
            jac.append(_jac_madd(jac[-1], base))
        row = _batch_to_affine(jac)
        rows.append(row)
        nxt = _to_affine(_jac_double((*row[-1], one, zero)))
        if nxt is None:
            raise RuntimeError("bn254: G2 fixed-base table hit infinity")
        base = nxt
    return rows


def g2_mul_generator(k: int) -> G2:
    """k·G2 with the fixed-base table (built on first use)."""
    k %= R
    if not k:
        return G2_INFINITY
    global _fixed_table
    table = _fixed_table
    if table is None:
        table = _fixed_table = _build_fixed_table()
    points: list[Affine2] = []
    half = 1 << (FIXED_WINDOW - 1)
    full = 1 << FIXED_WINDOW
    for row in table:
        d = k & (full - 1)
        k >>= FIXED_WINDOW
        if d > half:
            d -= full
            k += 1
        if d > 0:
            points.append(row[d - 1])
        elif d < 0:
            x0, x1, y0, y1 = row[-d - 1]
            points.append((x0, x1, PZ - y0 if y0 else y0, PZ - y1 if y1 else y1))
    return _g2(_to_affine(_straus2([points])))


def _check_constants() -> None:
    """The generator is on the twist, and ψ acts on it as multiplication by p."""
    g = _affine(G2_GENERATOR)
    if not G2_GENERATOR.is_on_curve():
        raise RuntimeError("bn254 constant check failed: G2 generator on the twist")
    by_p = _to_affine(_straus2(_events(g, PSI_EIGENVALUE, 4)))
    if by_p != psi(g) or PSI_EIGENVALUE != 6 * X0 * X0:
        raise RuntimeError("bn254 constant check failed: psi(G2) == [6x^2] G2")


_check_constants()

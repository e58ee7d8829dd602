"""G1 of BN254: y^2 = x^3 + 3 over Fp, prime order r, cofactor 1.

Public: ``G1`` (immutable affine point, int coordinates, infinity = (0, 0)),
``G1_GENERATOR``, ``G1_INFINITY``, ``g1_mul_generator`` and ``g1_msm``.

Inside, everything runs on gmpy2 integers and is written to minimise interpreter
operations rather than field multiplications:

* Accumulators are Jacobian (X : Y : Z), x = X/Z^2, y = Y/Z^3. Doubling is dbl-2009-l
  with S = 4·X·Y^2; additions are mixed (madd-2007-bl) against affine tables. Both are
  inlined in the loops; ``_jac_double``/``_jac_madd`` are the same formulas as functions
  for table building (the doubling is rescaled to save operations, see below).
* Variable base: GLV. φ(x, y) = (β·x, y) = [λ]P splits k into two 128-bit halves, each
  recoded in width-5 NAF, and the two digit streams share one doubling chain (Straus).
  The table of φ(P) is free (multiply x by β).
* Fixed base (the generator): signed 8-bit windows over a table of 32 × 128 affine
  points j·2^(8i)·G, built lazily on first use; k·G is ~32 mixed additions.
* MSM: Straus over all GLV halves of all terms with one shared doubling chain.

Nothing here is constant time: digits, branches and table indices depend on the
scalar (see docs/threat-model.md, "Constant time").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import gmpy2
from gmpy2 import mpz

from protocol.bn254.fields import BETA, LAMBDA, PZ, B, P, R, glv_split
from protocol.errors import InvalidPoint

Affine = tuple[int, int]
Jacobian = tuple[int, int, int]  # Z == 0 is the point at infinity

_BETA: Final = mpz(BETA)
WNAF_WIDTH: Final = 5
FIXED_WINDOW: Final = 8
FIXED_WINDOWS: Final = 32  # 32 signed 8-bit digits cover every k < r < 2^254


class G1:
    """An immutable affine G1 point with int coordinates; infinity is (0, 0)."""

    __slots__ = ("x", "y")
    x: int
    y: int

    def __init__(self, x: int, y: int) -> None:
        """Unchecked constructor: use ``from_affine`` for untrusted input."""
        object.__setattr__(self, "x", int(x))
        object.__setattr__(self, "y", int(y))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("G1 is immutable")

    @classmethod
    def from_affine(
        cls, x: int, y: int, *, field: str = "G1 point", allow_infinity: bool = False
    ) -> G1:
        """Validated constructor: coordinates < p, on the curve; (0, 0) is infinity."""
        if not (0 <= x < P and 0 <= y < P):
            raise InvalidPoint(field, "coordinate not in [0, p)")
        if x == 0 and y == 0:
            if not allow_infinity:
                raise InvalidPoint(field, "point at infinity not allowed here")
            return G1_INFINITY
        pt = cls(x, y)
        if not pt.is_on_curve():
            raise InvalidPoint(field, "not on the curve y^2 = x^3 + 3")
        return pt

    def is_infinity(self) -> bool:
        return self.x == 0 and self.y == 0

    def is_on_curve(self) -> bool:
        if self.is_infinity():
            return True
        return (self.y * self.y - self.x * self.x * self.x - B) % P == 0

    def __add__(self, other: G1) -> G1:
        if self.is_infinity():
            return other
        if other.is_infinity():
            return self
        x1, y1, x2, y2 = mpz(self.x), mpz(self.y), mpz(other.x), mpz(other.y)
        if x1 == x2:
            if y1 != y2 or y1 == 0:
                return G1_INFINITY
            lam = 3 * x1 * x1 * gmpy2.invert(2 * y1, PZ) % PZ
        else:
            lam = (y2 - y1) * gmpy2.invert(x2 - x1, PZ) % PZ
        x3 = (lam * lam - x1 - x2) % PZ
        return _g1(x3, (lam * (x1 - x3) - y1) % PZ)

    def __neg__(self) -> G1:
        if self.is_infinity():
            return self
        return G1(self.x, (-self.y) % P)

    def __sub__(self, other: G1) -> G1:
        return self + (-other)

    def __mul__(self, k: int) -> G1:
        k %= R
        if k == 0 or self.is_infinity():
            return G1_INFINITY
        return _from_jacobian(_glv_mul(mpz(self.x), mpz(self.y), k))

    __rmul__ = __mul__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, G1) and self.x == other.x and self.y == other.y

    def __hash__(self) -> int:
        return hash(("G1", self.x, self.y))

    def __repr__(self) -> str:
        return f"G1(x={self.x:#066x}, y={self.y:#066x})"


def _g1(x: int, y: int) -> G1:
    """A G1 from trusted reduced mpz coordinates (skips the int() of __init__ checks)."""
    pt = object.__new__(G1)
    object.__setattr__(pt, "x", int(x))
    object.__setattr__(pt, "y", int(y))
    return pt


G1_INFINITY: Final = G1(0, 0)
G1_GENERATOR: Final = G1(1, 2)


# --- Jacobian formulas (reference versions of what the loops inline) ----------------------
# Doubling is dbl-2009-l rescaled by 1/2 (a valid Jacobian representative of 2P):
#   N = (3/2)·X^2, B = X·Y^2, X3 = N^2 - 2B, Y3 = N·(B - X3) - Y^4, Z3 = Y·Z,
# three interpreter operations fewer than the textbook form. Mixed addition is
# madd-2007-bl without its factors 2 and 4. Some products stay unreduced where one more
# multiplication follows: in Python a wider product is cheaper than a ``%``.

_THREE_HALVES: Final = mpz(3 * pow(2, -1, P) % P)
_P5: Final = 5 * PZ  # 256 bits: see _straus


def _jac_double(pt: Jacobian) -> Jacobian:
    x, y, z = pt
    yy = y * y % PZ
    b = x * yy
    n = x * x * _THREE_HALVES % PZ
    x3 = (n * n - 2 * b) % PZ
    return x3, (n * (b - x3) - yy * yy) % PZ, y * z % PZ


def _jac_madd(pt: Jacobian, x2: int, y2: int) -> Jacobian:
    """pt + (x2, y2) for an affine (x2, y2) != infinity; handles every special case."""
    x1, y1, z1 = pt
    if not z1:
        return mpz(x2), mpz(y2), mpz(1)
    zz = z1 * z1
    h = (x2 * zz - x1) % PZ
    rr = (y2 * zz * z1 - y1) % PZ
    if not h:
        if rr:
            return mpz(0), mpz(1), mpz(0)
        return _jac_double(pt)
    hh = h * h % PZ
    hhh = h * hh
    v = x1 * hh
    x3 = (rr * rr - hhh - 2 * v) % PZ
    return x3, (rr * (v - x3) - y1 * hhh) % PZ, z1 * h % PZ


def _from_jacobian(pt: Jacobian) -> G1:
    x, y, z = pt
    if not z:
        return G1_INFINITY
    zi = gmpy2.invert(z, PZ)
    zi2 = zi * zi % PZ
    return _g1(x * zi2 % PZ, y * zi2 * zi % PZ)


def _batch_to_affine(points: Sequence[Jacobian]) -> list[Affine]:
    """Jacobian -> affine with one inversion (Montgomery's trick); no infinity allowed."""
    prefix = []
    acc = mpz(1)
    for _, _, z in points:
        prefix.append(acc)
        acc = acc * z % PZ
    inv = gmpy2.invert(acc, PZ)
    out: list[Affine] = [(mpz(0), mpz(0))] * len(points)
    for i in range(len(points) - 1, -1, -1):
        x, y, z = points[i]
        zi = inv * prefix[i] % PZ
        inv = inv * z % PZ
        zi2 = zi * zi % PZ
        out[i] = (x * zi2 % PZ, y * zi2 * zi % PZ)
    return out


# --- variable base: GLV + wNAF, Straus ----------------------------------------------------

Event = tuple[int, Affine]  # (bit position, affine point to add there)
_ODD: Final = tuple(range(1, 1 << (WNAF_WIDTH - 1), 2))
_MASK: Final = (1 << WNAF_WIDTH) - 1
_HALF: Final = 1 << (WNAF_WIDTH - 1)


def _odd_multiples(x: int, y: int, count: int) -> tuple[list[int], list[int]]:
    """The x and y coordinates of [P, 3P, 5P, ...] (``count`` points), affine, one
    inversion per point (cheaper here than a batched inversion over Jacobian points)."""
    p, inv = PZ, gmpy2.invert
    lam = 3 * x * x * inv(2 * y, p) % p
    x2 = (lam * lam - 2 * x) % p
    y2 = (lam * (x - x2) - y) % p
    xs, ys = [x], [y]
    for _ in range(count - 1):
        lam = (y2 - y) * inv(x2 - x, p) % p
        x3 = (lam * lam - x - x2) % p
        y = (lam * (x - x3) - y) % p
        x = x3
        xs.append(x)
        ys.append(y)
    return xs, ys


def _glv_events(x: int, y: int, k: int, events: list[Event]) -> None:
    """Append the two wNAF digit streams of k·(x, y) (GLV split, 0 < k < r) to ``events``.

    The recoding is ``fields.wnaf`` inlined, with the table lookup folded in: the table
    is indexed by the raw low ``WNAF_WIDTH`` bits (odd i < 16 holds i·P, odd i > 16
    holds (i - 32)·P), so the signed digit is never formed.
    """
    k1, k2 = glv_split(k)
    xs, ys = _odd_multiples(x, y, len(_ODD))
    nys = [PZ - b for b in ys]
    scan1 = gmpy2.bit_scan1
    append = events.append
    for half, beta in ((k1, False), (k2, True)):
        if not half:
            continue
        if beta:  # φ(x, y) = (β·x, y)
            xs = [a * _BETA % PZ for a in xs]
        pos_y, neg_y = (ys, nys) if half > 0 else (nys, ys)
        table: list[Affine] = [(PZ, PZ)] * (1 << WNAF_WIDTH)
        table[1::2] = [*zip(xs, pos_y, strict=True), *zip(xs[::-1], neg_y[::-1], strict=True)]
        rest, pos = abs(half), 0
        while rest:
            zeros = scan1(rest)
            rest >>= zeros
            pos += zeros
            append((pos, table[rest & _MASK]))
            rest = (rest + _HALF) >> WNAF_WIDTH
            pos += WNAF_WIDTH


def _straus(events: list[Event]) -> Jacobian:
    """Σ 2^pos·point over the events, highest position first, one doubling chain."""
    if not events:
        return mpz(0), mpz(1), mpz(0)
    events.sort(reverse=True)  # by position; ties compare points, which is harmless
    # Residues are kept modulo 5p, a 256-bit (limb-normalised) multiple of p: GMP
    # divides by it without shifting, ~6% faster. Only h is reduced mod p exactly,
    # for the P == ±Q test; z ≡ 0 (mod p) only ever arrives as the exact 0 of infinity.
    px, pe, c = _P5, PZ, _THREE_HALVES
    cur, (x, y) = events[0]
    z = mpz(1)
    for pos, (x2, y2) in events[1:]:
        for _ in range(cur - pos):  # inlined _jac_double
            yy = y * y % px
            b = x * yy
            n = x * x * c % px
            x3 = (n * n - 2 * b) % px
            z = y * z % px
            y = (n * (b - x3) - yy * yy) % px
            x = x3
        cur = pos
        if not z:  # the accumulator reached infinity
            x, y, z = x2, y2, mpz(1)
            continue
        zz = z * z  # inlined _jac_madd
        h = (x2 * zz - x) % pe
        rr = (y2 * zz * z - y) % px
        if not h:
            x, y, z = _jac_madd((x, y, z), x2, y2)
            continue
        hh = h * h % px
        hhh = h * hh
        v = x * hh
        x3 = (rr * rr - hhh - 2 * v) % px
        y = (rr * (v - x3) - y * hhh) % px
        x = x3
        z = z * h % px
    for _ in range(cur):
        yy = y * y % px
        b = x * yy
        n = x * x * c % px
        x3 = (n * n - 2 * b) % px
        z = y * z % px
        y = (n * (b - x3) - yy * yy) % px
        x = x3
    return x, y, z


def _glv_mul(x: int, y: int, k: int) -> Jacobian:
    """k·(x, y) for 0 < k < r."""
    events: list[Event] = []
    _glv_events(x, y, k, events)
    return _straus(events)


# --- fixed base: the generator ---------------------------------------------------------------

# Built on first use and published by one assignment: concurrent first callers may both
# build it, but nobody ever sees a half-built table.
_fixed_table: list[list[Affine]] | None = None


def _build_fixed_table() -> list[list[Affine]]:
    """rows[i][j-1] = j·2^(8i)·G for j in 1..128, i in 0..31, all affine."""
    rows: list[list[Affine]] = []
    base: Affine = (mpz(1), mpz(2))
    half = 1 << (FIXED_WINDOW - 1)
    for _ in range(FIXED_WINDOWS):
        bx, by = base
        jac: list[Jacobian] = [(bx, by, mpz(1)), _jac_double((bx, by, mpz(1)))]
        while len(jac) < half:
            jac.append(_jac_madd(jac[-1], bx, by))
        row = _batch_to_affine(jac)
        rows.append(row)
        base = _batch_to_affine([_jac_double((*row[-1], mpz(1)))])[0]
    return rows


def _fixed_base_events(k: int, events: list[Event]) -> None:
    """Append the table points of k·G (0 < k < r), all at bit position 0 (no doublings)."""
    global _fixed_table
    table = _fixed_table
    if table is None:
        table = _fixed_table = _build_fixed_table()
    half = 1 << (FIXED_WINDOW - 1)
    full = 1 << FIXED_WINDOW
    for row in table:
        d = k & (full - 1)
        k >>= FIXED_WINDOW
        if d > half:
            d -= full
            k += 1
        if d > 0:
            events.append((0, row[d - 1]))
        elif d < 0:
            x, y = row[-d - 1]
            events.append((0, (x, PZ - y)))


def g1_mul_generator(k: int) -> G1:
    """k·G1 with the fixed-base table (built on first use, ~20 ms)."""
    k %= R
    if not k:
        return G1_INFINITY
    events: list[Event] = []
    _fixed_base_events(k, events)
    return _from_jacobian(_straus(events))


def g1_msm(points: Sequence[G1], scalars: Sequence[int]) -> G1:
    """Σ scalars[i]·points[i] (Straus + GLV: one shared doubling chain).

    Terms with scalar ±1 are plain additions and the generator uses its fixed-base
    table, so the EigenLayer combinations σ + γ·apk and H(m) + γ·G1 stay cheap.
    """
    if len(points) != len(scalars):
        raise ValueError("g1_msm: points and scalars differ in length")
    events: list[Event] = []
    for pt, k in zip(points, scalars, strict=True):
        k %= R
        if not k or pt.is_infinity():
            continue
        x, y = mpz(pt.x), mpz(pt.y)
        if k == 1:
            events.append((0, (x, y)))
        elif k == R - 1:
            events.append((0, (x, PZ - y)))
        elif pt == G1_GENERATOR:
            _fixed_base_events(k, events)
        else:
            _glv_events(x, y, k, events)
    return _from_jacobian(_straus(events))


def _check_constants() -> None:
    """G1 on the curve; φ(G) = [λ]G pairs β with λ (checked by double-and-add)."""
    g = G1_GENERATOR
    if not g.is_on_curve():
        raise RuntimeError("bn254 constant check failed: G1 generator on the curve")
    acc: Jacobian = (mpz(0), mpz(1), mpz(0))
    for bit in bin(LAMBDA)[2:]:
        acc = _jac_double(acc)
        if bit == "1":
            acc = _jac_madd(acc, mpz(g.x), mpz(g.y))
    if _from_jacobian(acc) != G1(BETA * g.x % P, g.y):
        raise RuntimeError("bn254 constant check failed: phi(G1) == lambda * G1")


_check_constants()

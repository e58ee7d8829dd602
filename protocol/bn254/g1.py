# mypy: ignore-errors
"""G1 of BN254: y^2 = x^3 + 3 over Fp, cofactor 1.

REFERENCE PLACEHOLDER built on py_ecc so that code above it can be written and
tested now; the fast gmpy2 implementation replaces the internals, keeping this API.
"""

from __future__ import annotations

from collections.abc import Sequence

from py_ecc import optimized_bn128 as ob

from protocol.bn254.fields import P, R
from protocol.errors import InvalidPoint


class G1:
    """An immutable affine G1 point; infinity is (0, 0)."""

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
        return (self.y * self.y - self.x * self.x * self.x - 3) % P == 0

    def _to_ob(self) -> tuple[ob.FQ, ob.FQ, ob.FQ]:
        if self.is_infinity():
            return ob.Z1
        return (ob.FQ(self.x), ob.FQ(self.y), ob.FQ.one())

    @staticmethod
    def _from_ob(pt: tuple[ob.FQ, ob.FQ, ob.FQ]) -> G1:
        if ob.is_inf(pt):
            return G1_INFINITY
        x, y = ob.normalize(pt)
        return G1(int(x), int(y))

    def __add__(self, other: G1) -> G1:
        return G1._from_ob(ob.add(self._to_ob(), other._to_ob()))

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
        return G1._from_ob(ob.multiply(self._to_ob(), k))

    __rmul__ = __mul__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, G1) and self.x == other.x and self.y == other.y

    def __hash__(self) -> int:
        return hash(("G1", self.x, self.y))

    def __repr__(self) -> str:
        return f"G1(x={self.x:#066x}, y={self.y:#066x})"


G1_INFINITY = G1(0, 0)
G1_GENERATOR = G1(1, 2)


def g1_mul_generator(k: int) -> G1:
    """k * G1 (fixed base)."""
    return G1_GENERATOR * k


def g1_msm(points: Sequence[G1], scalars: Sequence[int]) -> G1:
    """Sum of scalars[i] * points[i]."""
    if len(points) != len(scalars):
        raise ValueError("g1_msm: points and scalars differ in length")
    acc = G1_INFINITY
    for pt, k in zip(points, scalars, strict=True):
        acc = acc + pt * k
    return acc

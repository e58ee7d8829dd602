# mypy: ignore-errors
"""G2 of BN254: the sextic twist y^2 = x^3 + 3/(9 + i) over Fp2, order-r subgroup.

Coordinates are (real, imag) pairs. REFERENCE PLACEHOLDER built on py_ecc; the fast
gmpy2 implementation replaces the internals, keeping this API.
"""

from __future__ import annotations

from py_ecc import optimized_bn128 as ob

from protocol.bn254.fields import P, R
from protocol.errors import InvalidPoint

Fp2Pair = tuple[int, int]


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
        if x == (0, 0) and y == (0, 0):
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

    def _to_ob(self) -> tuple[ob.FQ2, ob.FQ2, ob.FQ2]:
        if self.is_infinity():
            return ob.Z2
        return (ob.FQ2(list(self.x)), ob.FQ2(list(self.y)), ob.FQ2.one())

    @staticmethod
    def _from_ob(pt: tuple[ob.FQ2, ob.FQ2, ob.FQ2]) -> G2:
        if ob.is_inf(pt):
            return G2_INFINITY
        x, y = ob.normalize(pt)
        return G2((int(x.coeffs[0]), int(x.coeffs[1])), (int(y.coeffs[0]), int(y.coeffs[1])))

    def is_on_curve(self) -> bool:
        if self.is_infinity():
            return True
        return bool(ob.is_on_curve(self._to_ob(), ob.b2))

    def in_subgroup(self) -> bool:
        return bool(ob.is_inf(ob.multiply(self._to_ob(), R)))

    def in_subgroup_slow(self) -> bool:
        """r * Q == infinity (the reference the fast check is tested against)."""
        return self.in_subgroup()

    def __add__(self, other: G2) -> G2:
        return G2._from_ob(ob.add(self._to_ob(), other._to_ob()))

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
        return G2._from_ob(ob.multiply(self._to_ob(), k))

    __rmul__ = __mul__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, G2) and self.x == other.x and self.y == other.y

    def __hash__(self) -> int:
        return hash(("G2", self.x, self.y))

    def __repr__(self) -> str:
        return f"G2(x=({self.x[0]:#x}, {self.x[1]:#x}), y=({self.y[0]:#x}, {self.y[1]:#x}))"


G2_INFINITY = G2((0, 0), (0, 0))
G2_GENERATOR = G2(
    (
        10857046999023057135944570762232829481370756359578518086990519993285655852781,
        11559732032986387107991004021392285783925812861821192530917403151452391805634,
    ),
    (
        8495653923123431417604973247489272438418190587263600148770280649306958101930,
        4082367875863433681332203403145435568316851327593401208105741076214120093531,
    ),
)


def g2_mul_generator(k: int) -> G2:
    """k * G2 (fixed base)."""
    return G2_GENERATOR * k

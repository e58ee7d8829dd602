# mypy: ignore-errors
"""The optimal-ate pairing e: G1 x G2 -> GT on BN254.

REFERENCE PLACEHOLDER built on py_ecc; the fast implementation replaces the
internals, keeping this API. Inputs are NOT subgroup-checked here: points must
come from the validating constructors of G1/G2.
"""

from __future__ import annotations

from collections.abc import Sequence

from py_ecc import optimized_bn128 as ob
from py_ecc.optimized_bn128 import optimized_pairing as op

from protocol.bn254.g1 import G1
from protocol.bn254.g2 import G2


class GT:
    """An element of GT (an Fp12 element of order r), immutable."""

    __slots__ = ("_f",)

    def __init__(self, f: ob.FQ12) -> None:
        object.__setattr__(self, "_f", f)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("GT is immutable")

    def coeffs(self) -> tuple[int, ...]:
        """The 12 coefficients in py_ecc's flat basis Fp[w]/(w^12 - 18 w^6 + 82)."""
        return tuple(int(c) for c in self._f.coeffs)

    def is_one(self) -> bool:
        return self._f == ob.FQ12.one()

    def __mul__(self, other: GT) -> GT:
        return GT(self._f * other._f)

    def __pow__(self, k: int) -> GT:
        return GT(self._f**k)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GT) and self._f == other._f

    def __hash__(self) -> int:
        return hash(self.coeffs())

    def __repr__(self) -> str:
        return "GT(...)"


class G2Prepared:
    """Precomputed Miller-loop lines for a fixed G2 point."""

    __slots__ = ("point",)

    def __init__(self, point: G2) -> None:
        self.point = point


def prepare_g2(q: G2) -> G2Prepared:
    return G2Prepared(q)


def pairing(p: G1, q: G2) -> GT:
    """e(p, q)."""
    if p.is_infinity() or q.is_infinity():
        return GT(ob.FQ12.one())
    return GT(ob.pairing(q._to_ob(), p._to_ob()))


def pairing_check(pairs: Sequence[tuple[G1, G2 | G2Prepared]]) -> bool:
    """True iff the product of e(P_i, Q_i) is 1 (one shared final exponentiation)."""
    acc = ob.FQ12.one()
    for p, q in pairs:
        qq = q.point if isinstance(q, G2Prepared) else q
        if p.is_infinity() or qq.is_infinity():
            continue
        acc = acc * op.miller_loop(
            op.twist(qq._to_ob()), op.cast_point_to_fq12(p._to_ob()), final_exponentiate=False
        )
    return bool(ob.final_exponentiate(acc) == ob.FQ12.one())

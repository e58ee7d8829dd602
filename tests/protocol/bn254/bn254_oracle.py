"""The test oracle for protocol.bn254: conversions to and from py_ecc.optimized_bn128,
and hypothesis strategies whose points do NOT come from our own scalar multiplication."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from py_ecc import optimized_bn128 as ob

from protocol.bn254 import G1, G2, P, R

Fp2Pair = tuple[int, int]


def to_ob_g1(p: G1) -> Any:
    return ob.Z1 if p.is_infinity() else (ob.FQ(p.x), ob.FQ(p.y), ob.FQ.one())


def from_ob_g1(q: Any) -> G1:
    if ob.is_inf(q):
        return G1(0, 0)
    x, y = ob.normalize(q)
    return G1(int(x), int(y))


def to_ob_g2(q: G2) -> Any:
    if q.is_infinity():
        return ob.Z2
    return (ob.FQ2(list(q.x)), ob.FQ2(list(q.y)), ob.FQ2.one())


def from_ob_g2(q: Any) -> G2:
    if ob.is_inf(q):
        return G2((0, 0), (0, 0))
    x, y = ob.normalize(q)
    return G2((int(x.coeffs[0]), int(x.coeffs[1])), (int(y.coeffs[0]), int(y.coeffs[1])))


def fq2(a: Fp2Pair) -> Any:
    return ob.FQ2(list(a))


def pair(a: Any) -> Fp2Pair:
    return (int(a.coeffs[0]), int(a.coeffs[1]))


def g1_from_x(x: int) -> G1 | None:
    """The G1 point (x, sqrt(x^3+3)) if there is one (cofactor 1: it is in G1)."""
    rhs = (x * x * x + 3) % P
    y = pow(rhs, (P + 1) // 4, P)
    return G1(x, y) if y * y % P == rhs else None


scalars = st.one_of(
    st.integers(min_value=0, max_value=R - 1),
    st.sampled_from([0, 1, 2, R - 1, R, R + 1, 2 * R + 5, -1, -R + 3]),
    st.integers(min_value=-(2**300), max_value=2**300),
)
nonzero_scalars = st.integers(min_value=1, max_value=R - 1)
field_elements = st.integers(min_value=0, max_value=P - 1)


@st.composite
def g1_points(draw: st.DrawFn) -> G1:
    """G1 points from a random x, incremented until x^3 + 3 is a square (no scalar
    multiplication involved: cofactor 1 makes every curve point a G1 point)."""
    x = draw(field_elements)
    while (pt := g1_from_x(x)) is None:
        x = (x + 1) % P
    return -pt if draw(st.booleans()) else pt


@st.composite
def g2_points(draw: st.DrawFn) -> G2:
    """k·G2 computed by py_ecc (the oracle), k random."""
    return from_ob_g2(ob.multiply(ob.G2, draw(nonzero_scalars)))

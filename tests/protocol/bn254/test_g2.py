"""protocol.bn254.g2 against py_ecc.optimized_bn128: group law, scalar multiplication,
the ψ endomorphism, the fast subgroup check against r·Q == 0, and validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from py_ecc import optimized_bn128 as ob

from protocol.bn254 import G2, G2_GENERATOR, G2_INFINITY, P, R, g2_mul_generator
from protocol.bn254.fp2 import TWIST_B, fp2_add, fp2_mul, fp2_sqr, fp2_sqrt
from protocol.bn254.g2 import psi
from protocol.errors import InvalidPoint
from tests.protocol.bn254.bn254_oracle import (
    field_elements,
    fq2,
    from_ob_g2,
    g2_points,
    pair,
    scalars,
    to_ob_g2,
)

slow = settings(max_examples=12, deadline=None)
points_or_infinity = g2_points() | st.just(G2_INFINITY)


@st.composite
def twist_points(draw: st.DrawFn) -> G2:
    """A random point on the twist, almost surely OUTSIDE the order-r subgroup: random
    x in Fp2 (incremented until x^3 + b' is a square), y from the square root."""
    x = (draw(field_elements), draw(field_elements))
    while (y := fp2_sqrt(fp2_add(fp2_mul(fp2_sqr(x), x), TWIST_B))) is None:
        x = ((x[0] + 1) % P, x[1])
    q = G2(x, y)
    assert ob.is_on_curve(to_ob_g2(q), ob.b2)  # the oracle agrees it is on the twist
    return q


@st.composite
def torsion_points(draw: st.DrawFn) -> G2:
    """r·T for a random twist point T: a point whose order divides the cofactor."""
    return from_ob_g2(ob.multiply(to_ob_g2(draw(twist_points())), R))


@slow
@given(points_or_infinity, points_or_infinity)
def test_add_matches_py_ecc(a: G2, b: G2) -> None:
    assert a + b == from_ob_g2(ob.add(to_ob_g2(a), to_ob_g2(b)))


@slow
@given(g2_points())
def test_doubling_and_inverse_laws(a: G2) -> None:
    assert a + a == from_ob_g2(ob.double(to_ob_g2(a)))
    assert a + (-a) == G2_INFINITY
    assert a - a == G2_INFINITY
    assert -a == from_ob_g2(ob.neg(to_ob_g2(a)))
    assert a + G2_INFINITY == a == G2_INFINITY + a


@slow
@given(g2_points(), scalars)
def test_mul_matches_py_ecc_for_every_scalar(a: G2, k: int) -> None:
    expected = from_ob_g2(ob.multiply(to_ob_g2(a), k % R))
    assert a * k == expected
    assert k * a == expected


@pytest.mark.parametrize("k", [0, 1, 2, R - 1, R, R + 1, -1, 2**127, 6 * 0x44E992B44A6909F1**2])
def test_mul_special_scalars_match_py_ecc(k: int) -> None:
    expected = from_ob_g2(ob.multiply(ob.G2, k % R))
    assert G2_GENERATOR * k == expected
    assert g2_mul_generator(k) == expected


@slow
@given(scalars)
def test_fixed_base_equals_variable_base(k: int) -> None:
    assert g2_mul_generator(k) == G2_GENERATOR * k


@slow
@given(g2_points())
def test_psi_acts_on_g2_as_multiplication_by_p(a: G2) -> None:
    x0, x1, y0, y1 = psi((a.x[0], a.x[1], a.y[0], a.y[1]))
    x = (x0, x1)
    assert G2(x, (y0, y1)) == from_ob_g2(ob.multiply(to_ob_g2(a), P % R))
    # and ψ is the untwisted Frobenius: x^p·ξ^((p-1)/3)
    assert fq2(x) == fq2(a.x) ** P * ob.FQ2([9, 1]) ** ((P - 1) // 3)


@slow
@given(g2_points())
def test_fast_subgroup_check_accepts_subgroup_points_like_the_slow_one(a: G2) -> None:
    assert a.in_subgroup() and a.in_subgroup_slow()


@settings(max_examples=25, deadline=None)
@given(twist_points())
def test_fast_subgroup_check_rejects_random_twist_points_like_the_slow_one(a: G2) -> None:
    assert a.in_subgroup() == a.in_subgroup_slow()
    assert not a.in_subgroup()


@settings(max_examples=10, deadline=None)
@given(torsion_points(), g2_points())
def test_fast_subgroup_check_rejects_subgroup_point_plus_cofactor_torsion(t: G2, a: G2) -> None:
    for q in (t, a + t):
        if q.is_infinity():
            continue
        assert q.in_subgroup() == q.in_subgroup_slow() == (t.is_infinity())


def test_coordinates_are_int_pairs_and_points_hash_by_value() -> None:
    a = G2_GENERATOR * 99
    assert all(type(c) is int for c in (*a.x, *a.y))
    assert a == G2(a.x, a.y) and hash(a) == hash(G2(a.x, a.y))
    with pytest.raises(AttributeError):
        a.y = (0, 0)  # type: ignore[misc]


@slow
@given(g2_points())
def test_from_affine_accepts_subgroup_points(a: G2) -> None:
    assert G2.from_affine(a.x, a.y) == a


@slow
@given(g2_points(), st.integers(min_value=0, max_value=3))
def test_from_affine_rejects_a_coordinate_not_below_p(a: G2, which: int) -> None:
    coords = [*a.x, *a.y]
    coords[which] += P
    with pytest.raises(InvalidPoint, match="apkG2") as info:
        G2.from_affine((coords[0], coords[1]), (coords[2], coords[3]), field="apkG2")
    assert info.value.field == "apkG2"


@slow
@given(g2_points(), field_elements.filter(bool))
def test_from_affine_rejects_points_off_the_twist(a: G2, d: int) -> None:
    y = ((a.y[0] + d) % P, a.y[1])
    assert not ob.is_on_curve(to_ob_g2(G2(a.x, y)), ob.b2)
    with pytest.raises(InvalidPoint, match="twist"):
        G2.from_affine(a.x, y)


@settings(max_examples=5, deadline=None)
@given(twist_points())
def test_from_affine_rejects_twist_points_outside_the_subgroup(a: G2) -> None:
    with pytest.raises(InvalidPoint, match="subgroup"):
        G2.from_affine(a.x, a.y, field="pk")


def test_from_affine_infinity_only_when_allowed() -> None:
    with pytest.raises(InvalidPoint, match="infinity"):
        G2.from_affine((0, 0), (0, 0))
    assert G2.from_affine((0, 0), (0, 0), allow_infinity=True) == G2_INFINITY


def test_generator_matches_py_ecc() -> None:
    assert from_ob_g2(ob.G2) == G2_GENERATOR
    assert pair(ob.normalize(ob.G2)[0]) == G2_GENERATOR.x

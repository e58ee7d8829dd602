"""protocol.bn254.g1 against py_ecc.optimized_bn128: group law, scalar multiplication
(variable and fixed base), MSM, and validation of untrusted coordinates."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from py_ecc import optimized_bn128 as ob

from protocol.bn254 import G1, G1_GENERATOR, G1_INFINITY, P, R, g1_msm, g1_mul_generator
from protocol.errors import InvalidPoint
from tests.protocol.bn254.bn254_oracle import from_ob_g1, g1_points, scalars, to_ob_g1

points_or_infinity = g1_points() | st.just(G1_INFINITY)


@given(points_or_infinity, points_or_infinity)
def test_add_matches_py_ecc(a: G1, b: G1) -> None:
    assert a + b == from_ob_g1(ob.add(to_ob_g1(a), to_ob_g1(b)))


@given(g1_points())
def test_doubling_and_inverse_laws(a: G1) -> None:
    assert a + a == from_ob_g1(ob.double(to_ob_g1(a)))
    assert a + (-a) == G1_INFINITY
    assert a - a == G1_INFINITY
    assert -a == from_ob_g1(ob.neg(to_ob_g1(a)))
    assert a + G1_INFINITY == a == G1_INFINITY + a


@settings(max_examples=40)
@given(g1_points(), scalars)
def test_mul_matches_py_ecc_for_every_scalar(a: G1, k: int) -> None:
    expected = from_ob_g1(ob.multiply(to_ob_g1(a), k % R))
    assert a * k == expected
    assert k * a == expected


@pytest.mark.parametrize("k", [0, 1, 2, 3, R - 1, R, R + 1, 2 * R, -1, -2, 2**127, 2**255])
def test_mul_special_scalars_match_py_ecc(k: int) -> None:
    a = G1(1, 2) * 0xC0FFEE
    assert a * k == from_ob_g1(ob.multiply(to_ob_g1(a), k % R))
    assert g1_mul_generator(k) == from_ob_g1(ob.multiply(ob.G1, k % R))


@settings(max_examples=40)
@given(scalars)
def test_fixed_base_equals_variable_base_and_py_ecc(k: int) -> None:
    fixed = g1_mul_generator(k)
    assert fixed == G1_GENERATOR * k
    assert fixed == from_ob_g1(ob.multiply(ob.G1, k % R))


@given(g1_points(), st.integers(min_value=0, max_value=R - 1), st.integers(0, R - 1))
def test_mul_distributes_over_scalar_addition(a: G1, j: int, k: int) -> None:
    assert a * j + a * k == a * (j + k)


def test_mul_by_infinity_point_is_infinity() -> None:
    assert G1_INFINITY * 12345 == G1_INFINITY


def naive_sum(points: list[G1], ks: list[int]) -> G1:
    acc = ob.Z1
    for pt, k in zip(points, ks, strict=True):
        acc = ob.add(acc, ob.multiply(to_ob_g1(pt), k % R))
    return from_ob_g1(acc)


@settings(max_examples=10)
@given(st.lists(st.tuples(points_or_infinity, scalars), max_size=6))
def test_msm_equals_naive_sum(terms: list[tuple[G1, int]]) -> None:
    points = [pt for pt, _ in terms]
    ks = [k for _, k in terms]
    assert g1_msm(points, ks) == naive_sum(points, ks)


@settings(max_examples=10)
@given(g1_points(), st.lists(scalars, min_size=1, max_size=5))
def test_msm_with_duplicate_and_opposite_points(a: G1, ks: list[int]) -> None:
    points = [a if i % 2 else -a for i in range(len(ks))] + [a]
    ks = [*ks, 0]
    assert g1_msm(points, ks) == naive_sum(points, ks)
    assert g1_msm([a, a, -a], [5, 7, 12]) == G1_INFINITY


@settings(max_examples=10, deadline=None)
@given(g1_points(), scalars, scalars, st.sampled_from([1, R - 1, R + 1, -1]))
def test_msm_fast_paths_for_unit_scalars_and_the_generator_equal_naive_sum(
    a: G1, j: int, k: int, unit: int
) -> None:
    points = [G1_GENERATOR, a, a, G1_GENERATOR, a]
    ks = [j, 1, unit, k, R - 1]
    assert g1_msm(points, ks) == naive_sum(points, ks)


def test_msm_edge_cases() -> None:
    a = G1(1, 2) * 77
    assert g1_msm([], []) == G1_INFINITY
    assert g1_msm([a, a], [0, R]) == G1_INFINITY
    assert g1_msm([G1_INFINITY, a], [5, 1]) == a
    with pytest.raises(ValueError):
        g1_msm([a], [1, 2])


def test_coordinates_are_python_ints_and_points_hash_by_value() -> None:
    a = G1_GENERATOR * 99
    assert type(a.x) is int and type(a.y) is int
    assert a == G1(a.x, a.y) and hash(a) == hash(G1(a.x, a.y))
    assert len({a, G1(a.x, a.y), -a}) == 2
    with pytest.raises(AttributeError):
        a.x = 5  # type: ignore[misc]


@given(g1_points())
def test_from_affine_accepts_curve_points(a: G1) -> None:
    assert G1.from_affine(a.x, a.y) == a


@given(g1_points(), st.sampled_from(["x", "y"]))
def test_from_affine_rejects_a_coordinate_not_below_p(a: G1, which: str) -> None:
    x, y = (a.x + P, a.y) if which == "x" else (a.x, a.y + P)
    with pytest.raises(InvalidPoint, match=r"sig\.X") as info:
        G1.from_affine(x, y, field="sig.X")
    assert info.value.field == "sig.X"
    with pytest.raises(InvalidPoint):
        G1.from_affine(-1 if which == "x" else a.x, -1 if which == "y" else a.y)


@given(g1_points(), st.integers(min_value=1, max_value=P - 1))
def test_from_affine_rejects_points_off_the_curve(a: G1, dy: int) -> None:
    y = (a.y + dy) % P
    assume(y != (-a.y) % P)  # (x, ±y) are the only points with this x
    with pytest.raises(InvalidPoint, match="curve"):
        G1.from_affine(a.x, y)


def test_from_affine_infinity_only_when_allowed() -> None:
    with pytest.raises(InvalidPoint, match="infinity"):
        G1.from_affine(0, 0, field="apk")
    assert G1.from_affine(0, 0, allow_infinity=True) == G1_INFINITY
    assert G1.from_affine(0, 0, allow_infinity=True).is_infinity()

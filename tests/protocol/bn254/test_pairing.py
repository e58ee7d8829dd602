"""protocol.bn254.pairing: equality with py_ecc's pairing coefficient for coefficient,
the pairing laws, prepared lines, products of pairings, and GT arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from py_ecc import optimized_bn128 as ob

from protocol.bn254 import (
    G1,
    G1_GENERATOR,
    G1_INFINITY,
    G2,
    G2_GENERATOR,
    G2_INFINITY,
    GT,
    G2Prepared,
    R,
    pairing,
    pairing_check,
    prepare_g2,
)
from tests.protocol.bn254.bn254_oracle import g1_points, g2_points, to_ob_g1, to_ob_g2

nonzero = st.integers(min_value=1, max_value=R - 1)


def py_ecc_pairing(p: G1, q: G2) -> tuple[int, ...]:
    return tuple(int(c) for c in ob.pairing(to_ob_g2(q), to_ob_g1(p)).coeffs)


def test_pairing_of_the_generators_equals_py_ecc() -> None:
    assert pairing(G1_GENERATOR, G2_GENERATOR).coeffs() == py_ecc_pairing(
        G1_GENERATOR, G2_GENERATOR
    )


@settings(max_examples=5, deadline=None)
@given(g1_points(), g2_points())
def test_pairing_equals_py_ecc_coefficient_for_coefficient(p: G1, q: G2) -> None:
    expected = py_ecc_pairing(p, q)
    assert pairing(p, q).coeffs() == expected
    assert pairing(p, prepare_g2(q)).coeffs() == expected


@settings(max_examples=5, deadline=None)
@given(nonzero, nonzero)
def test_bilinearity_e_aP_bQ_equals_e_P_Q_to_the_ab(a: int, b: int) -> None:
    base = pairing(G1_GENERATOR, G2_GENERATOR)
    assert pairing(G1_GENERATOR * a, G2_GENERATOR * b) == base ** (a * b)


@settings(max_examples=4, deadline=None)
@given(g1_points(), g1_points(), g2_points())
def test_linearity_in_g1_e_P1_plus_P2_Q_equals_product(p1: G1, p2: G1, q: G2) -> None:
    assert pairing(p1 + p2, q) == pairing(p1, q) * pairing(p2, q)


def test_non_degeneracy_and_order_r() -> None:
    e = pairing(G1_GENERATOR, G2_GENERATOR)
    assert not e.is_one()
    assert (e**R).is_one()
    assert e ** (R + 5) == e**5
    assert e**-1 * e == GT.one()


def test_infinity_on_either_side_pairs_to_one() -> None:
    assert pairing(G1_INFINITY, G2_GENERATOR).is_one()
    assert pairing(G1_GENERATOR, G2_INFINITY).is_one()
    assert pairing(G1_GENERATOR, prepare_g2(G2_INFINITY)).is_one()


@settings(max_examples=5, deadline=None)
@given(nonzero, g1_points(), st.booleans(), st.booleans())
def test_pairing_check_e_aP_Q_times_e_minus_P_aQ_is_one(
    a: int, p: G1, prep1: bool, prep2: bool
) -> None:
    q1: G2 | G2Prepared = prepare_g2(G2_GENERATOR) if prep1 else G2_GENERATOR
    aq = G2_GENERATOR * a
    q2: G2 | G2Prepared = prepare_g2(aq) if prep2 else aq
    assert pairing_check([(p * a, q1), (-p, q2)])
    assert not pairing_check([(p * a, q1), (p, q2)])
    assert not pairing_check([(p * (a + 1), q1), (-p, q2)])


def test_pairing_check_edge_cases() -> None:
    g, h = G1_GENERATOR, G2_GENERATOR
    assert pairing_check([])
    assert pairing_check([(G1_INFINITY, h), (g, G2_INFINITY), (g, prepare_g2(G2_INFINITY))])
    assert not pairing_check([(g, h)])
    assert pairing_check([(g, h), (G1_INFINITY, h), (-g, h)])
    assert pairing_check([(g * 3, h), (g, h * 4), (-g, h * 7)])  # three pairs


def test_prepared_point_keeps_its_point_and_is_immutable() -> None:
    prepared = prepare_g2(G2_GENERATOR)
    assert prepared.point == G2_GENERATOR
    assert isinstance(G2Prepared(G2_GENERATOR), G2Prepared)
    with pytest.raises(AttributeError):
        prepared.point = G2_INFINITY  # type: ignore[misc]


def test_gt_mul_and_pow_match_py_ecc_fq12() -> None:
    e = pairing(G1_GENERATOR, G2_GENERATOR)
    f = pairing(G1_GENERATOR * 2, G2_GENERATOR)
    fe, ff = ob.FQ12(list(e.coeffs())), ob.FQ12(list(f.coeffs()))
    assert (e * f).coeffs() == tuple(int(c) for c in (fe * ff).coeffs)
    assert (e**12345).coeffs() == tuple(int(c) for c in (fe**12345).coeffs)
    assert GT.from_coeffs(e.coeffs()) == e
    assert hash(GT.from_coeffs(e.coeffs())) == hash(e)
    assert GT.one().coeffs() == (1,) + (0,) * 11

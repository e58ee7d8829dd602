"""protocol.bn254.fp12 (packed Montgomery Fp12) against py_ecc's FQ12, slot for slot."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from py_ecc import optimized_bn128 as ob

from protocol.bn254 import P, fp12
from tests.protocol.bn254.bn254_oracle import field_elements

coefficient_lists = st.lists(field_elements, min_size=12, max_size=12)
# extreme slots: the packed reduction's bounds are tightest at 0 and p - 1
edge_lists = st.lists(st.sampled_from([0, 1, P - 1, P - 2]), min_size=12, max_size=12)
elements = coefficient_lists | edge_lists


def coeffs(f: ob.FQ12) -> tuple[int, ...]:
    return tuple(int(c) for c in f.coeffs)


@given(elements)
def test_from_coeffs_then_to_coeffs_is_identity(a: list[int]) -> None:
    assert fp12.to_coeffs(fp12.from_coeffs(a)) == tuple(a)


@settings(max_examples=50, deadline=None)
@given(elements, elements)
def test_mul_and_sqr_match_py_ecc(a: list[int], b: list[int]) -> None:
    x, y = fp12.from_coeffs(a), fp12.from_coeffs(b)
    assert fp12.to_coeffs(fp12.mul(x, y)) == coeffs(ob.FQ12(a) * ob.FQ12(b))
    assert fp12.to_coeffs(fp12.sqr(x)) == coeffs(ob.FQ12(a) * ob.FQ12(a))


@settings(max_examples=25, deadline=None)
@given(elements, elements)
def test_long_product_chains_stay_reduced(a: list[int], b: list[int]) -> None:
    """Outputs feed back as inputs (slots stay in [0, 2p]); compare after 6 rounds."""
    x, y = fp12.from_coeffs(a), fp12.from_coeffs(b)
    fa, fb = ob.FQ12(a), ob.FQ12(b)
    for _ in range(6):
        x, y = fp12.mul(fp12.conj(x), y), fp12.sqr(fp12.mul(x, y))
        fa_conj = ob.FQ12([(-c if i % 2 else c) for i, c in enumerate(fa.coeffs)])
        fa, fb = fa_conj * fb, (fa * fb) ** 2
    assert fp12.to_coeffs(x) == coeffs(fa)
    assert fp12.to_coeffs(y) == coeffs(fb)


@given(elements)
def test_conj_is_the_p6_frobenius_and_negates_odd_slots(a: list[int]) -> None:
    got = fp12.to_coeffs(fp12.conj(fp12.from_coeffs(a)))
    assert got == tuple((-c if i % 2 else c) % P for i, c in enumerate(a))


@settings(max_examples=6, deadline=None)
@given(elements, st.sampled_from([1, 2, 3]))
def test_frobenius_is_power_p_to_the_k(a: list[int], k: int) -> None:
    got = fp12.to_coeffs(fp12.frobenius(fp12.from_coeffs(a), k))
    assert got == coeffs(ob.FQ12(a) ** (P**k))


@settings(max_examples=30, deadline=None)
@given(elements.filter(any))
def test_inverse_matches_py_ecc(a: list[int]) -> None:
    assert fp12.to_coeffs(fp12.inverse(fp12.from_coeffs(a))) == coeffs(ob.FQ12(a).inv())


@settings(max_examples=10, deadline=None)
@given(coefficient_lists, st.integers(min_value=0, max_value=2**70))
def test_power_matches_py_ecc(a: list[int], e: int) -> None:
    assert fp12.to_coeffs(fp12.power(fp12.from_coeffs(a), e)) == coeffs(ob.FQ12(a) ** e)


def test_one_is_one() -> None:
    assert fp12.is_one(fp12.ONE)
    assert fp12.to_coeffs(fp12.ONE) == coeffs(ob.FQ12.one())
    assert not fp12.is_one(fp12.from_coeffs([2] + [0] * 11))

"""protocol.bn254.fields and fp2: Fp helpers, scalar recoding, Fp2 against py_ecc's FQ2."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from py_ecc import optimized_bn128 as ob

from protocol.bn254 import P, R
from protocol.bn254.fields import LAMBDA, fp_inv, fp_is_square, fp_sqrt, glv_split, wnaf
from protocol.bn254.fp2 import (
    PSI_X,
    PSI_Y,
    TWIST_B,
    fp2,
    fp2_add,
    fp2_conj,
    fp2_inv,
    fp2_mul,
    fp2_neg,
    fp2_sqr,
    fp2_sqrt,
    fp2_sub,
)
from tests.protocol.bn254.bn254_oracle import field_elements, fq2, pair

fp2_elements = st.tuples(field_elements, field_elements)
nonzero_fp2 = fp2_elements.filter(lambda a: a != (0, 0))


def legendre(a: int) -> int:
    return pow(a % P, (P - 1) // 2, P)


@given(field_elements.filter(bool))
def test_fp_inverse_times_element_is_one(a: int) -> None:
    assert a * fp_inv(a) % P == 1


@given(field_elements)
def test_fp_sqrt_squares_back_iff_euler_criterion_says_square(a: int) -> None:
    root = fp_sqrt(a)
    is_square = legendre(a) in (0, 1)
    assert fp_is_square(a) == is_square
    assert (root is not None) == is_square
    if root is not None:
        assert root * root % P == a
        assert root == pow(a, (P + 1) // 4, P)  # the root EigenLayer uses, never negated


@given(st.integers(min_value=0, max_value=R - 1))
def test_glv_split_recombines_to_k_with_short_halves(k: int) -> None:
    k1, k2 = glv_split(k)
    assert (k1 + k2 * LAMBDA - k) % R == 0
    assert abs(k1) < 2**128 and abs(k2) < 2**128


@given(st.integers(min_value=0, max_value=2**300), st.integers(min_value=2, max_value=8))
def test_wnaf_digits_are_odd_bounded_spaced_and_sum_to_k(k: int, width: int) -> None:
    digits = wnaf(k, width)
    assert sum(d << pos for pos, d in digits) == k
    assert all(d % 2 == 1 and abs(d) < 2 ** (width - 1) for _, d in digits)
    positions = [pos for pos, _ in digits]
    assert all(b - a >= width for a, b in itertools.pairwise(positions))


@given(fp2_elements, fp2_elements)
def test_fp2_ring_operations_match_py_ecc(a: tuple[int, int], b: tuple[int, int]) -> None:
    x, y = fp2(*a), fp2(*b)
    assert pair(fq2(a) * fq2(b)) == fp2_mul(x, y)
    assert pair(fq2(a) * fq2(a)) == fp2_sqr(x)
    assert pair(fq2(a) + fq2(b)) == fp2_add(x, y)
    assert pair(fq2(a) - fq2(b)) == fp2_sub(x, y)
    assert pair(-fq2(a)) == fp2_neg(x)
    assert pair(fq2(a) ** P) == fp2_conj(x)  # conjugation is the Frobenius


@given(nonzero_fp2)
def test_fp2_inverse_matches_py_ecc(a: tuple[int, int]) -> None:
    assert fp2_inv(fp2(*a)) == pair(fq2(a).inv())


@settings(max_examples=50)
@given(fp2_elements)
def test_fp2_sqrt_exists_iff_norm_is_a_square_and_squares_back(a: tuple[int, int]) -> None:
    root = fp2_sqrt(a)
    norm_is_square = legendre(a[0] * a[0] + a[1] * a[1]) in (0, 1)
    assert (root is not None) == norm_is_square
    if root is not None:
        assert fq2(root) * fq2(root) == fq2(a)


@settings(max_examples=20)
@given(fp2_elements)
def test_fp2_sqrt_of_a_square_is_plus_or_minus_the_element(a: tuple[int, int]) -> None:
    root = fp2_sqrt(fp2_sqr(fp2(*a)))
    assert root in (fp2(*a), fp2_neg(fp2(*a)))


def test_twist_constants_match_py_ecc() -> None:
    assert fq2(TWIST_B) == ob.b2
    xi = ob.FQ2([9, 1])
    assert fq2(PSI_X) == xi ** ((P - 1) // 3)
    assert fq2(PSI_Y) == xi ** ((P - 1) // 2)

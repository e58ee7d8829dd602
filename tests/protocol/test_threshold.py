"""Shamir, Lagrange, Feldman and combination of partial signatures."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from py_ecc import optimized_bn128 as ob

from protocol.bn254 import G1, G1_GENERATOR, R, g1_mul_generator
from protocol.eigenlayer import hash_to_g1, verify_signature
from protocol.errors import InvalidScalar
from protocol.hashing import keccak256
from protocol.proofs import prove_dleq, verify_dleq
from protocol.rng import os_rng, seeded_rng
from protocol.threshold import (
    Polynomial,
    ThresholdParameterError,
    combine_g1,
    feldman_verify,
    interpolate_at_zero,
    lagrange_at_zero,
    public_share,
    random_polynomial,
    split,
)

scalars = st.integers(min_value=1, max_value=R - 1)


def _oracle_mul(p: G1, k: int) -> tuple[int, int]:
    x, y = ob.normalize(ob.multiply((ob.FQ(p.x), ob.FQ(p.y), ob.FQ.one()), k))
    return int(x), int(y)


@settings(max_examples=40, deadline=None)
@given(scalars, st.integers(min_value=1, max_value=7), st.data())
def test_any_t_shares_reconstruct_and_t_minus_1_do_not(
    secret: int, t: int, data: st.DataObject
) -> None:
    n = data.draw(st.integers(min_value=t, max_value=9))
    shares = split(secret, t, n, seeded_rng(secret.to_bytes(32, "big")))
    assert sorted(shares) == list(range(1, n + 1))
    subset = data.draw(st.permutations(list(range(1, n + 1)))).copy()[:t]
    assert interpolate_at_zero({j: shares[j] for j in subset}) == secret
    if t > 1:
        fewer = subset[: t - 1]
        assert interpolate_at_zero({j: shares[j] for j in fewer}) != secret


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=R - 1), min_size=1, max_size=6, unique=True))
def test_lagrange_coefficients_interpolate_every_low_degree_polynomial(indices: list[int]) -> None:
    lam = lagrange_at_zero(indices)
    assert set(lam) == set(indices)
    assert sum(lam.values()) % R == 1  # the constant polynomial 1
    for k in range(1, len(indices)):  # x^k vanishes at 0
        assert sum(lam[i] * pow(i, k, R) for i in indices) % R == 0


@pytest.mark.parametrize(
    "indices", [[1, 1], [0, 1], [R, 1], [-1, 2], [1, 2, 2], [True, 2], ["1", 2], [1.0, 2]]
)
def test_lagrange_rejects_bad_index_sets(indices: list[object]) -> None:
    with pytest.raises(InvalidScalar):
        lagrange_at_zero(indices)  # type: ignore[arg-type]


def test_lagrange_rejects_empty_set_and_split_rejects_bad_parameters() -> None:
    with pytest.raises(ThresholdParameterError):
        lagrange_at_zero([])
    for t, n in [(0, 3), (4, 3), (-1, 2)]:
        with pytest.raises(ThresholdParameterError):
            split(5, t, n)
    for secret in [0, R, -1]:
        with pytest.raises(InvalidScalar):
            split(secret, 2, 3)


def test_combined_signature_is_sk_times_h_for_every_t_subset() -> None:
    """3-of-5: all ten 3-subsets give sk*H(m) (checked with py_ecc); 2 do not; it verifies."""
    rng = seeded_rng(b"combine")
    sk = int.from_bytes(rng(32), "big") % R
    t, n = 3, 5
    shares = split(sk, t, n, rng)
    msg = keccak256(b"threshold message")
    h = hash_to_g1(msg)
    partials = {j: h * s for j, s in shares.items()}
    expected = _oracle_mul(h, sk)
    results = {
        combine_g1({j: partials[j] for j in subset})
        for subset in itertools.combinations(range(1, n + 1), t)
    }
    assert len(results) == 1
    (sigma,) = results
    assert (sigma.x, sigma.y) == expected
    for pair in itertools.combinations(range(1, n + 1), t - 1):
        assert combine_g1({j: partials[j] for j in pair}) != sigma
    # every superset of t also works
    assert combine_g1(partials) == sigma
    from protocol.bn254 import g2_mul_generator

    assert verify_signature(msg, g1_mul_generator(sk), g2_mul_generator(sk), sigma)


def test_a_wrong_partial_spoils_the_combination_and_its_dleq_proof_names_it() -> None:
    rng = seeded_rng(b"wrong partial")
    poly = random_polynomial(2, rng)
    commitments = poly.commitments()
    msg = keccak256(b"who lied")
    h = hash_to_g1(msg)
    ctx = b"key-1/epoch-0/" + msg
    partials, proofs = {}, {}
    for j in (1, 2, 3):
        s = poly.evaluate(j)
        partials[j] = h * s
        proofs[j] = prove_dleq(s, h, context=ctx, rng=os_rng)
    liar = 2
    partials[liar] = partials[liar] + G1_GENERATOR
    assert combine_g1(partials) != h * poly.coeffs[0]
    verdicts = {
        j: verify_dleq(public_share(commitments, j), h, partials[j], proofs[j], context=ctx)
        for j in partials
    }
    assert verdicts == {1: True, 2: False, 3: True}


@settings(max_examples=15, deadline=None)
@given(st.integers(min_value=0, max_value=4), st.integers(min_value=1, max_value=20))
def test_feldman_verify_and_public_shares(degree: int, index: int) -> None:
    poly = random_polynomial(degree, seeded_rng(bytes([degree, index])))
    commitments = poly.commitments()
    share = poly.evaluate(index)
    assert feldman_verify(index, share, commitments)
    assert not feldman_verify(index, (share + 1) % R, commitments)
    if degree > 0:  # a constant polynomial gives every index the same share
        assert not feldman_verify(index + 1, share, commitments)
    assert public_share(commitments, index) == g1_mul_generator(share)
    assert not feldman_verify(0, share, commitments)
    assert not feldman_verify(index, R, commitments)
    assert commitments[0] == g1_mul_generator(poly.coeffs[0])


def test_polynomial_hides_its_coefficients_and_validates() -> None:
    poly = random_polynomial(2, seeded_rng(b"p"), constant=123456789)
    assert poly.coeffs[0] == 123456789 and poly.degree == 2
    assert "123456789" not in repr(poly) and "123456789" not in str(poly)
    assert all(str(c) not in repr(poly) for c in poly.coeffs)
    assert Polynomial((1, 2, 3)).evaluate(2) == 17
    assert random_polynomial(1, seeded_rng(b"z"), constant=0).evaluate(0) == 0
    for bad in [(), (R,), (-1,), (True,)]:
        with pytest.raises((InvalidScalar, ThresholdParameterError)):
            Polynomial(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidScalar):
        random_polynomial(1, constant=R)
    with pytest.raises(ThresholdParameterError):
        random_polynomial(-1)


def test_split_uses_the_injected_rng() -> None:
    a = split(42, 3, 5, seeded_rng(b"same"))
    b = split(42, 3, 5, seeded_rng(b"same"))
    c = split(42, 3, 5, seeded_rng(b"other"))
    assert a == b and a != c

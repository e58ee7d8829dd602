"""Threshold signing: node partials and the coordinator's optimistic aggregation."""

from __future__ import annotations

import itertools

import pytest

from protocol.aggregation import (
    Aggregation,
    AggregationError,
    Done,
    GroupKey,
    NeedMore,
    PartialSignature,
    sign_partial,
)
from protocol.bn254 import G1_GENERATOR, g1_mul_generator, g2_mul_generator
from protocol.eigenlayer import hash_to_g1, verify_signature
from protocol.encoding import g1_to_bytes
from protocol.hashing import keccak256
from protocol.rng import seeded_rng
from protocol.threshold import public_share, random_polynomial

T, N = 3, 5
MSG = keccak256(b"aggregation test")
Dealt = tuple[int, dict[int, int], GroupKey]


@pytest.fixture(scope="module")
def dealt() -> Dealt:
    poly = random_polynomial(T - 1, seeded_rng(b"aggregation"))
    commitments = poly.commitments()
    shares = {j: poly.evaluate(j) for j in range(1, N + 1)}
    key = GroupKey(
        key_id="k1",
        epoch=1,
        threshold=T,
        pk_g1=commitments[0],
        pk_g2=g2_mul_generator(poly.coeffs[0]),
        public_shares={j: public_share(commitments, j) for j in range(1, N + 1)},
    )
    return poly.coeffs[0], shares, key


def partial(shares: dict[int, int], j: int, msg: bytes = MSG) -> PartialSignature:
    return sign_partial(shares[j], key_id="k1", epoch=1, index=j, msg_hash=msg)


def test_every_t_subset_gives_the_same_valid_signature(dealt: Dealt) -> None:
    sk, shares, key = dealt
    expected = hash_to_g1(MSG) * sk  # the single-key signature, computed independently
    for subset in itertools.combinations(range(1, N + 1), T):
        agg = Aggregation(key, MSG)
        results = [agg.add(partial(shares, j)) for j in subset]
        assert all(isinstance(r, NeedMore) for r in results[:-1])
        done = results[-1]
        assert isinstance(done, Done)
        assert done.sigma == expected
        assert done.signers == subset and done.blamed == ()
        assert verify_signature(MSG, key.pk_g1, key.pk_g2, done.sigma)


def test_a_wrong_partial_is_blamed_and_the_request_still_succeeds(dealt: Dealt) -> None:
    sk, shares, key = dealt
    good = partial(shares, 2)
    forged = PartialSignature(index=2, sigma=good.sigma + G1_GENERATOR, proof=good.proof)
    agg = Aggregation(key, MSG)
    assert isinstance(agg.add(partial(shares, 1)), NeedMore)
    assert isinstance(agg.add(forged), NeedMore)
    r = agg.add(partial(shares, 3))
    assert isinstance(r, NeedMore) and r.blamed == (2,)  # 2 dropped, only 2 partials left
    done = agg.add(partial(shares, 4))
    assert isinstance(done, Done)
    assert done.blamed == (2,) and 2 not in done.signers
    assert done.sigma == hash_to_g1(MSG) * sk


def test_a_partial_for_another_message_is_blamed(dealt: Dealt) -> None:
    _, shares, key = dealt
    agg = Aggregation(key, MSG)
    agg.add(partial(shares, 1))
    agg.add(partial(shares, 2, msg=keccak256(b"unrelated")))
    r = agg.add(partial(shares, 3))
    assert isinstance(r, NeedMore) and r.blamed == (2,)


def test_t_minus_one_partials_never_finish(dealt: Dealt) -> None:
    _, shares, key = dealt
    agg = Aggregation(key, MSG)
    for j in range(1, T):
        assert isinstance(agg.add(partial(shares, j)), NeedMore)


def test_unknown_and_duplicate_partials_are_refused(dealt: Dealt) -> None:
    _, shares, key = dealt
    agg = Aggregation(key, MSG)
    agg.add(partial(shares, 1))
    with pytest.raises(AggregationError):
        agg.add(partial(shares, 1))
    with pytest.raises(AggregationError):
        agg.add(PartialSignature(index=9, sigma=G1_GENERATOR, proof=partial(shares, 1).proof))


def test_sign_point_mode(dealt: Dealt) -> None:
    sk, shares, key = dealt
    point = g1_mul_generator(12345)
    raw = g1_to_bytes(point)
    agg = Aggregation(key, raw, point=point)
    result = None
    for j in (5, 3, 1):
        p = sign_partial(shares[j], key_id="k1", epoch=1, index=j, msg_hash=raw, point=point)
        result = agg.add(p)
    assert isinstance(result, Done) and result.sigma == point * sk

"""BLS keys, signatures, aggregation and batch verification (bisection names the bad items)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from py_ecc import optimized_bn128 as ob

from protocol import bls
from protocol.bn254 import G1, G1_GENERATOR, G1_INFINITY, G2_INFINITY, R, prepare_g2
from protocol.eigenlayer import hash_to_g1
from protocol.errors import InvalidScalar
from protocol.hashing import keccak256
from protocol.rng import seeded_rng

KEY = bls.keypair_from_secret(0x5EC7E7)
MSGS = [keccak256(b"batch message %d" % i) for i in range(4)]
SIGS = [bls.sign(KEY.sk, m) for m in MSGS]


def test_keygen_uses_the_rng_and_keys_match_py_ecc() -> None:
    a, b = bls.keygen(seeded_rng(b"k")), bls.keygen(seeded_rng(b"k"))
    assert a == b and a != bls.keygen(seeded_rng(b"other"))
    assert 0 < a.sk < R
    x, y = ob.normalize(ob.multiply(ob.G1, a.sk))
    assert (a.pk_g1.x, a.pk_g1.y) == (int(x), int(y))
    qx, qy = ob.normalize(ob.multiply(ob.G2, a.sk))
    assert a.pk_g2.x == tuple(int(c) for c in qx.coeffs)
    assert a.pk_g2.y == tuple(int(c) for c in qy.coeffs)
    fresh = bls.keygen()
    assert fresh.sk != a.sk


def test_keypair_repr_hides_the_secret() -> None:
    kp = bls.keypair_from_secret(123456789123456789)
    assert "123456789123456789" not in repr(kp) and "1b69b4bacd05f15" not in repr(kp).lower()
    assert "hidden" in repr(kp)


def test_sign_matches_py_ecc_and_verifies() -> None:
    msg = keccak256(b"plain")
    sigma = bls.sign(KEY.sk, msg)
    h = hash_to_g1(msg)
    x, y = ob.normalize(ob.multiply((ob.FQ(h.x), ob.FQ(h.y), ob.FQ.one()), KEY.sk))
    assert (sigma.x, sigma.y) == (int(x), int(y))
    assert bls.verify(KEY.pk_g2, msg, sigma)
    assert bls.verify(prepare_g2(KEY.pk_g2), msg, sigma)
    assert not bls.verify(KEY.pk_g2, keccak256(b"unrelated"), sigma)
    assert not bls.verify(G2_INFINITY, msg, sigma)
    assert not bls.verify(KEY.pk_g2, msg, G1_INFINITY)
    assert not bls.verify(KEY.pk_g2, msg, G1(sigma.x, sigma.y + 1))


@pytest.mark.parametrize("sk", [0, R, -1, R + 5])
def test_sign_rejects_bad_secrets(sk: int) -> None:
    with pytest.raises(InvalidScalar):
        bls.sign(sk, bytes(32))
    with pytest.raises(InvalidScalar):
        bls.keypair_from_secret(sk)


def test_aggregation_is_point_addition() -> None:
    keys = [bls.keypair_from_secret(k) for k in (3, 11, 2**200 + 1)]
    msg = keccak256(b"aggregate")
    sigma = bls.aggregate_g1(bls.sign(k.sk, msg) for k in keys)
    total = sum(k.sk for k in keys) % R
    assert sigma == bls.sign(total, msg)
    assert bls.aggregate_g1(k.pk_g1 for k in keys) == bls.keypair_from_secret(total).pk_g1
    apk2 = bls.aggregate_g2(k.pk_g2 for k in keys)
    assert apk2 == bls.keypair_from_secret(total).pk_g2
    assert bls.aggregate_g1([]) == G1_INFINITY and bls.aggregate_g2([]) == G2_INFINITY


class _Counting:
    """Counts pairing checks made by protocol.bls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = bls.pairing_check

        def counted(pairs: Sequence[Any]) -> bool:
            self.calls += 1
            assert len(pairs) == 2  # two pairings per batch
            return real(pairs)

        monkeypatch.setattr(bls, "pairing_check", counted)


def _items(bad: set[int]) -> list[tuple[bytes, G1]]:
    return [
        (m, s + G1_GENERATOR if i in bad else s)
        for i, (m, s) in enumerate(zip(MSGS, SIGS, strict=True))
    ]


@pytest.mark.parametrize("bad", [set(), {3}, {1, 2}])
def test_batch_verify_finds_exactly_the_bad_indices(
    monkeypatch: pytest.MonkeyPatch, bad: set[int]
) -> None:
    counter = _Counting(monkeypatch)
    assert bls.batch_verify(KEY.pk_g2, _items(bad), seeded_rng(b"rho")) == sorted(bad)
    if not bad:
        assert counter.calls == 1  # one check, two pairings, for the whole batch


def test_batch_verify_all_bad() -> None:
    assert bls.batch_verify(KEY.pk_g2, _items(set(range(3)))[:3]) == [0, 1, 2]


@settings(max_examples=2, deadline=None)
@given(st.sets(st.integers(min_value=0, max_value=3), min_size=1, max_size=2))
def test_batch_verify_random_bad_sets(bad: set[int]) -> None:
    assert bls.batch_verify(KEY.pk_g2, _items(bad)[:4]) == sorted(bad)


def test_batch_verify_catches_swapped_signatures_and_malformed_items() -> None:
    """Two signatures swapped between messages: each is valid somewhere, both are bad here.
    Malformed items (infinity sigma, short hash) are bad without a pairing."""
    items = list(zip(MSGS[:3], SIGS[:3], strict=True))
    items[1], items[2] = (MSGS[1], SIGS[2]), (MSGS[2], SIGS[1])
    items.append((MSGS[0], G1_INFINITY))
    items.append((b"short", SIGS[0]))
    assert bls.batch_verify(KEY.pk_g2, items, seeded_rng(b"swap")) == [1, 2, 3, 4]


def test_batch_verify_zero_key_and_empty_batch() -> None:
    assert bls.batch_verify(G2_INFINITY, _items(set())[:3]) == [0, 1, 2]
    assert bls.batch_verify(KEY.pk_g2, []) == []


def test_batch_coefficients_come_from_the_rng() -> None:
    """A cancelling pair of forgeries (sigma_0 + D, sigma_1 - D) passes a batch with
    equal coefficients; the random 128-bit coefficients catch it."""
    d = G1_GENERATOR * 12345
    items = [(MSGS[0], SIGS[0] + d), (MSGS[1], SIGS[1] - d)]
    assert bls.batch_verify(KEY.pk_g2, items, lambda n: b"\x01" * n) == []  # rho_0 = rho_1
    assert bls.batch_verify(KEY.pk_g2, items, seeded_rng(b"real")) == [0, 1]

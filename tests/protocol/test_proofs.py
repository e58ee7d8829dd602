"""DLEQ and Schnorr proofs: completeness, soundness against wrong statements, context
binding, strict encoding, and hedged nonces that never repeat."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.bn254 import G1_GENERATOR, G1_INFINITY, R, g1_mul_generator
from protocol.eigenlayer import hash_to_g1
from protocol.encoding import InvalidFormat
from protocol.errors import DecodeError, InvalidLength, InvalidPoint, InvalidScalar
from protocol.hashing import keccak256
from protocol.proofs import (
    DleqProof,
    SchnorrProof,
    Transcript,
    prove_dleq,
    prove_schnorr,
    verify_dleq,
    verify_schnorr,
)
from protocol.rng import os_rng, seeded_rng

scalars = st.integers(min_value=1, max_value=R - 1)
H = hash_to_g1(keccak256(b"proof base"))
CTX = b"tkms-test/key-7/epoch-0"


@settings(max_examples=15, deadline=None)
@given(scalars, st.binary(min_size=32, max_size=32))
def test_dleq_complete_and_rejects_wrong_statements(x: int, msg: bytes) -> None:
    h = hash_to_g1(msg)
    pub, y = g1_mul_generator(x), h * x
    proof = prove_dleq(x, h, context=CTX, rng=os_rng)
    assert verify_dleq(pub, h, y, proof, context=CTX)
    assert DleqProof.from_bytes(proof.to_bytes()) == proof
    assert not verify_dleq(pub, h, y + G1_GENERATOR, proof, context=CTX)  # wrong y
    assert not verify_dleq(pub + G1_GENERATOR, h, y, proof, context=CTX)  # wrong pub
    assert not verify_dleq(pub, H, H * x, proof, context=CTX)  # other base, same x
    assert not verify_dleq(pub, h, y, proof, context=CTX + b"!")  # wrong context
    assert not verify_dleq(pub, h, y, proof, context=b"")


@settings(max_examples=15, deadline=None)
@given(scalars, st.binary(max_size=40))
def test_schnorr_complete_and_context_bound(a: int, ctx: bytes) -> None:
    big_a = g1_mul_generator(a)
    proof = prove_schnorr(a, context=ctx, rng=os_rng)
    assert verify_schnorr(big_a, proof, context=ctx)
    assert SchnorrProof.from_bytes(proof.to_bytes()) == proof
    assert not verify_schnorr(big_a + G1_GENERATOR, proof, context=ctx)
    assert not verify_schnorr(big_a, proof, context=ctx + b"\x00")
    assert not verify_schnorr(-big_a, proof, context=ctx)


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=63), st.integers(min_value=1, max_value=255))
def test_mutated_proofs_are_rejected(position: int, flip: int) -> None:
    x = 0x1234567
    pub, y = g1_mul_generator(x), H * x
    dleq = prove_dleq(x, H, context=CTX, rng=seeded_rng(b"m"))
    schnorr = prove_schnorr(x, context=CTX, rng=seeded_rng(b"m"))
    for proof, cls, check in (
        (dleq, DleqProof, lambda p: verify_dleq(pub, H, y, p, context=CTX)),
        (schnorr, SchnorrProof, lambda p: verify_schnorr(pub, p, context=CTX)),
    ):
        raw = bytearray(proof.to_bytes())
        raw[position] ^= flip
        try:
            mutated = cls.from_bytes(bytes(raw))
        except DecodeError:
            continue
        assert not check(mutated)


def test_proof_decoding_is_strict() -> None:
    good = prove_schnorr(5, context=b"", rng=seeded_rng(b"s")).to_bytes()
    for cls in (DleqProof, SchnorrProof):
        with pytest.raises(InvalidLength):
            cls.from_bytes(good[:-1])
        with pytest.raises(InvalidLength):
            cls.from_bytes(good + b"\x00")
        with pytest.raises(InvalidScalar, match=r"\.c"):
            cls.from_bytes(R.to_bytes(32, "big") + good[32:])
        with pytest.raises(InvalidScalar, match=r"\.s"):
            cls.from_bytes(good[:32] + (2**256 - 1).to_bytes(32, "big"))
        with pytest.raises(InvalidFormat):
            cls.from_bytes(good.hex())  # type: ignore[arg-type]
        with pytest.raises(InvalidScalar):
            cls(R, 0)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=100))
def test_random_bytes_into_proof_decoders(raw: bytes) -> None:
    """Any bytes: a DecodeError, or a proof whose encoding is exactly those bytes
    (a strict decoder has one encoding per proof)."""
    for cls in (DleqProof, SchnorrProof):
        try:
            proof = cls.from_bytes(raw)
        except DecodeError:
            continue
        assert proof.to_bytes() == raw


def test_two_proofs_of_the_same_statement_never_share_a_nonce() -> None:
    """With a real rng the hedged nonce differs each time, so (c, s) differ."""
    x = 987654321
    proofs = [prove_dleq(x, H, context=CTX, rng=os_rng) for _ in range(8)]
    assert len({p.c for p in proofs}) == len(proofs)
    assert len({p.s for p in proofs}) == len(proofs)
    schnorrs = [prove_schnorr(x, context=CTX, rng=os_rng) for _ in range(8)]
    assert len({p.c for p in schnorrs}) == len(schnorrs)
    # nonce k = s - c x: all distinct
    assert len({(p.s - p.c * x) % R for p in proofs}) == len(proofs)


def test_hedging_survives_a_stuck_rng() -> None:
    """A broken rng that always returns the same bytes still gives distinct nonces
    for distinct statements (the secret and statement go into the hash)."""

    def stuck(n: int) -> bytes:
        return b"\x00" * n

    x = 424242
    p1 = prove_dleq(x, H, context=b"one", rng=stuck)
    p2 = prove_dleq(x, H, context=b"two", rng=stuck)
    k1, k2 = (p1.s - p1.c * x) % R, (p2.s - p2.c * x) % R
    assert k1 != k2


def test_provers_refuse_meaningless_input() -> None:
    with pytest.raises(InvalidScalar):
        prove_dleq(0, H, context=CTX)
    with pytest.raises(InvalidScalar):
        prove_schnorr(R, context=CTX)
    with pytest.raises(InvalidPoint):
        prove_dleq(5, G1_INFINITY, context=CTX)
    with pytest.raises(InvalidFormat):
        prove_schnorr(5, context="text")  # type: ignore[arg-type]
    proof = prove_dleq(5, H, context=CTX)
    assert not verify_dleq(G1_INFINITY, H, H * 5, proof, context=CTX)
    assert not verify_dleq(g1_mul_generator(5), H, G1_INFINITY, proof, context=CTX)
    assert not verify_schnorr(G1_INFINITY, SchnorrProof(0, 0), context=CTX)


def test_transcript_is_length_prefixed_and_order_sensitive() -> None:
    def challenge(parts: list[tuple[bytes, bytes]], domain: bytes = b"d") -> int:
        t = Transcript(domain)
        for label, data in parts:
            t.append(label, data)
        return t.challenge_scalar(b"c")

    base = challenge([(b"a", b"bc")])
    assert base == challenge([(b"a", b"bc")])
    assert base != challenge([(b"ab", b"c")])
    assert base != challenge([(b"a", b"b"), (b"", b"c")])
    assert base != challenge([(b"a", b"bc")], domain=b"e")
    t = Transcript(b"d")
    assert t.challenge_scalar(b"c") != t.challenge_scalar(b"c")  # challenges are absorbed
    assert 0 <= base < R


def test_proof_objects_hold_no_secret() -> None:
    x = 0xDEADBEEFCAFE
    proof = prove_dleq(x, H, context=CTX)
    assert hex(x)[2:] not in repr(proof).lower() and str(x) not in repr(proof)


def test_dleq_with_a_precomputed_y_equals_the_plain_proof_and_a_wrong_y_fails() -> None:
    x, h = 987654321, G1_GENERATOR * 5
    ctx = b"precomputed"
    plain = prove_dleq(x, h, context=ctx, rng=seeded_rng(b"n"))
    fast = prove_dleq(x, h, context=ctx, rng=seeded_rng(b"n"), y=h * x)
    assert fast == plain
    assert verify_dleq(G1_GENERATOR * x, h, h * x, fast, context=ctx)
    wrong = prove_dleq(x, h, context=ctx, rng=seeded_rng(b"n"), y=h * (x + 1))
    assert not verify_dleq(G1_GENERATOR * x, h, h * (x + 1), wrong, context=ctx)
    assert not verify_dleq(G1_GENERATOR * x, h, h * x, wrong, context=ctx)

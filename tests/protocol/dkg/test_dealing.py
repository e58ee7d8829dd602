"""Dealing and the public checks of one bundle, including the key-import dealer
mode (a known secret whose public key is the constant commitment)."""

from __future__ import annotations

import dataclasses

from py_ecc import optimized_bn128 as ob

from protocol.bn254 import G1_GENERATOR, g1_mul_generator, g2_mul_generator
from protocol.dkg.crypto import x25519_keypair
from protocol.dkg.dealing import (
    Exclusion,
    VerifiedBundle,
    check_bundle,
    check_dealt_public_key,
    deal_known_secret,
    g1_g2_consistent,
    open_share,
    public_share_horner,
)
from protocol.encoding import g1_to_bytes
from protocol.rng import seeded_rng
from protocol.threshold import public_share, random_polynomial

PARTICIPANTS = (1, 2, 3, 4)
SECRET = 0x1234_5678_9ABC_DEF0_1122_3344_5566_7788


def _import_bundle() -> tuple[VerifiedBundle, dict[int, tuple[bytes, bytes]], object]:
    rng = seeded_rng(b"import")
    keypairs = {j: x25519_keypair(rng) for j in PARTICIPANTS}
    bundle, polynomial = deal_known_secret(
        SECRET,
        3,
        ceremony=b"c" * 32,
        dealer=9,
        recipient_keys={j: pub for j, (_, pub) in keypairs.items()},
        rng=rng,
    )
    verified = check_bundle(bundle, threshold=3, participants=PARTICIPANTS)
    assert isinstance(verified, VerifiedBundle)
    return verified, keypairs, polynomial


def test_a_known_secret_is_dealt_with_its_public_key_as_constant_commitment() -> None:
    verified, keypairs, polynomial = _import_bundle()
    x, y = ob.normalize(ob.multiply(ob.G1, SECRET))
    assert (verified.commitments[0].x, verified.commitments[0].y) == (int(x), int(y))
    assert check_dealt_public_key(verified, g1_mul_generator(SECRET))
    assert not check_dealt_public_key(verified, G1_GENERATOR)
    wrong_g2 = dataclasses.replace(verified, commitment_g2=g2_mul_generator(SECRET + 1))
    assert not g1_g2_consistent(wrong_g2)
    for j, (secret, public) in keypairs.items():
        share = open_share(verified, recipient=j, recipient_secret=secret, recipient_key=public)
        assert share == polynomial.evaluate(j)  # type: ignore[attr-defined]
    assert g1_g2_consistent(verified)
    assert repr(polynomial).endswith("<hidden>)")


def test_a_share_for_someone_else_does_not_open() -> None:
    verified, keypairs, _ = _import_bundle()
    secret, public = keypairs[2]
    assert open_share(verified, recipient=1, recipient_secret=secret, recipient_key=public) is None


def test_each_public_fault_has_its_exclusion_code() -> None:
    verified, _, _ = _import_bundle()
    b = verified.bundle
    infinity = g1_to_bytes(g1_mul_generator(0))
    off_curve = (1).to_bytes(32, "big") + (1).to_bytes(32, "big")
    cases = {
        Exclusion.COMMITMENT_COUNT: dataclasses.replace(b, commitments=b.commitments * 2),
        Exclusion.RECIPIENTS: dataclasses.replace(b, shares=b.shares[1:]),
        Exclusion.INVALID_POINT: dataclasses.replace(b, commitments=(infinity, *b.commitments[1:])),
        Exclusion.PROOF: dataclasses.replace(b, proof=b.proof[:-1]),
    }
    cases_off = dataclasses.replace(b, commitments=(*b.commitments[:2], off_curve))
    assert (
        check_bundle(cases_off, threshold=3, participants=PARTICIPANTS) is Exclusion.INVALID_POINT
    )
    for code, bundle in cases.items():
        assert check_bundle(bundle, threshold=3, participants=PARTICIPANTS) is code
    swapped = dataclasses.replace(b, sender=8)  # the proof is bound to dealer 9
    assert check_bundle(swapped, threshold=3, participants=PARTICIPANTS) is Exclusion.PROOF


def test_public_share_horner_matches_reference() -> None:
    rng = seeded_rng(b"horner")
    for t in (1, 2, 3, 7):
        commitments = random_polynomial(t - 1, rng).commitments()
        for index in (1, 2, 5, 64, 1024):
            assert public_share_horner(commitments, index) == public_share(commitments, index)

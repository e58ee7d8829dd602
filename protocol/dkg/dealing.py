"""Dealing and the public checks of a dealer's bundle (DESIGN.md §DKG steps 1–3).

A *dealer* picks f_i of degree t-1 and publishes a ``DealBundle``: C_ik = a_ik·G1
(exactly t), D_i = a_i0·G2, a Schnorr proof of knowledge of a_i0 bound to (ceremony,
i), and s_ij = f_i(j) encrypted to every participant j (``protocol.dkg.crypto``).
``deal_known_secret`` is the same with a_i0 fixed: the building block of key import,
where one dealer (the importer) deals an existing key and C_i0 is its public key.

Anyone can check a signed bundle *publicly* (``check_bundles``): the commitment count,
the recipient list, every point decoded with validation (on the curve, G2 in the
subgroup, none at infinity), the proof, and e(C_i0, G2) = e(G1, D_i). The pairing
equations of all dealers are checked at once with random 128-bit weights ρ_i,
e(Σ ρ_i C_i0, G2) · e(−G1, Σ ρ_i D_i) = 1, and only when that fails one by one to
name the culprits (a batch passes for a bad bundle with probability 2^-128). Public
failures exclude the dealer deterministically, so they need no complaint: every honest
node sees the same signed bytes and reaches the same verdict, which is recorded as a
stable ``Exclusion`` code. Only what is private to a recipient, its own share, is
checked by that recipient (``open_share``) and answered by a signed complaint.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from protocol.bn254 import (
    G1,
    G1_GENERATOR,
    G2,
    G2_GENERATOR,
    G2_INFINITY,
    R,
    g1_msm,
    g1_mul_generator,
    g2_mul_generator,
    pairing_check,
)
from protocol.canonical import encode_canonical
from protocol.dkg.crypto import (
    ShareDecryptionError,
    batch_weights,
    decrypt_share,
    encrypt_share,
    x25519_keypair,
)
from protocol.dkg.messages import DealBundle
from protocol.encoding import g1_from_bytes, g1_to_bytes, g2_from_bytes, g2_to_bytes
from protocol.errors import DecodeError
from protocol.proofs import SchnorrProof, prove_schnorr, verify_schnorr
from protocol.rng import Rng
from protocol.threshold import Polynomial, random_polynomial


class Exclusion(enum.Enum):
    """Why a participant's dealing is not in QUAL (stable codes: they are hashed)."""

    ABSENT = "absent"  # no bundle reached the relay before the deadline
    EQUIVOCATION = "equivocation"  # two different validly signed bundles
    COMMITMENT_COUNT = "commitment-count"  # not exactly t commitments
    RECIPIENTS = "recipients"  # ciphertexts not for exactly the participants
    INVALID_POINT = "invalid-point"  # off curve, outside the subgroup, or infinity
    PROOF = "proof"  # proof of possession of a_i0 does not verify
    G1_G2_MISMATCH = "g1-g2-mismatch"  # e(C_i0, G2) != e(G1, D_i)
    COMPLAINTS = "complaints"  # t or more complaints: disqualified, nothing revealed
    JUSTIFICATION = "justification"  # complaints not answered, or answered wrongly


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    """A bundle that passed every public check, with its points decoded."""

    bundle: DealBundle
    commitments: tuple[G1, ...]
    commitment_g2: G2

    @property
    def dealer(self) -> int:
        return self.bundle.sender

    def ciphertext_for(self, recipient: int) -> bytes | None:
        for j, ct in self.bundle.shares:
            if j == recipient:
                return ct
        return None


@dataclass(frozen=True, slots=True)
class BundleVerdict:
    """The public verdict on a set of bundles: who may still enter QUAL."""

    candidates: Mapping[int, VerifiedBundle]
    excluded: Mapping[int, Exclusion]


def pok_context(ceremony: bytes, dealer: int) -> bytes:
    """The context a dealer's proof of possession is bound to."""
    return encode_canonical(["dkg-pok", ceremony, dealer])


def deal(
    polynomial: Polynomial,
    *,
    ceremony: bytes,
    dealer: int,
    recipient_keys: Mapping[int, bytes],
    rng: Rng,
) -> DealBundle:
    """An unsigned bundle dealing ``polynomial`` to ``recipient_keys`` (index → X25519
    key); sign it with ``DealBundle.signed_by``.

    Raises:
        InvalidScalar: a_0 is zero (nothing to prove possession of).
        VerificationError: a recipient key has small order.
    """
    a0 = polynomial.coeffs[0]
    proof = prove_schnorr(a0, context=pok_context(ceremony, dealer), rng=rng)
    eph_secret, eph_public = x25519_keypair(rng)
    shares = tuple(
        (
            j,
            encrypt_share(
                polynomial.evaluate(j),
                ceremony=ceremony,
                dealer=dealer,
                recipient=j,
                ephemeral_secret=eph_secret,
                ephemeral_public=eph_public,
                recipient_key=recipient_keys[j],
            ),
        )
        for j in sorted(recipient_keys)
    )
    return DealBundle(
        ceremony=ceremony,
        sender=dealer,
        commitments=tuple(g1_to_bytes(cm) for cm in polynomial.commitments()),
        commitment_g2=g2_to_bytes(g2_mul_generator(a0)),
        proof=proof.to_bytes(),
        ephemeral=eph_public,
        shares=shares,
    )


def deal_known_secret(
    secret: int,
    threshold: int,
    *,
    ceremony: bytes,
    dealer: int,
    recipient_keys: Mapping[int, bytes],
    rng: Rng,
) -> tuple[DealBundle, Polynomial]:
    """Dealer mode for key import: deal an existing key ``secret`` (C_0 is then its
    public key, which ``check_dealt_public_key`` confirms). Returns the unsigned
    bundle and the polynomial (secret: erase it after use).

    Raises:
        InvalidScalar: ``secret`` is not in [1, r-1].
    """
    polynomial = random_polynomial(threshold - 1, rng, constant=secret)
    bundle = deal(
        polynomial, ceremony=ceremony, dealer=dealer, recipient_keys=recipient_keys, rng=rng
    )
    return bundle, polynomial


def check_dealt_public_key(verified: VerifiedBundle, pubkey_g1: G1) -> bool:
    """True iff a (publicly verified) bundle deals the key whose G1 public key is
    ``pubkey_g1`` (import: the operator's existing key)."""
    return verified.commitments[0] == pubkey_g1


def check_bundle(
    bundle: DealBundle, *, threshold: int, participants: Sequence[int]
) -> VerifiedBundle | Exclusion:
    """Every public check of one bundle except the G1/G2 pairing equation."""
    if len(bundle.commitments) != threshold:
        return Exclusion.COMMITMENT_COUNT
    if tuple(j for j, _ in bundle.shares) != tuple(participants):
        return Exclusion.RECIPIENTS
    try:
        commitments = tuple(
            g1_from_bytes(raw, field=f"commitments[{k}]")
            for k, raw in enumerate(bundle.commitments)
        )
        commitment_g2 = g2_from_bytes(bundle.commitment_g2, field="commitment_g2")
    except DecodeError:
        return Exclusion.INVALID_POINT
    try:
        proof = SchnorrProof.from_bytes(bundle.proof)
    except DecodeError:
        return Exclusion.PROOF
    if not verify_schnorr(
        commitments[0], proof, context=pok_context(bundle.ceremony, bundle.sender)
    ):
        return Exclusion.PROOF
    return VerifiedBundle(bundle, commitments, commitment_g2)


def g1_g2_consistent(vb: VerifiedBundle) -> bool:
    """e(C_0, G2) = e(G1, D) for one bundle (key import checks its single dealer
    with this; ``check_bundles`` batches it)."""
    return pairing_check([(vb.commitments[0], G2_GENERATOR), (-G1_GENERATOR, vb.commitment_g2)])


def _batch_consistent(bundles: Sequence[VerifiedBundle], seed: bytes) -> bool:
    weights = batch_weights(seed, len(bundles))
    lhs = g1_msm([vb.commitments[0] for vb in bundles], weights)
    rhs = G2_INFINITY
    for vb, w in zip(bundles, weights, strict=True):
        rhs = rhs + vb.commitment_g2 * w
    return pairing_check([(lhs, G2_GENERATOR), (-G1_GENERATOR, rhs)])


def check_bundles(
    bundles: Iterable[DealBundle],
    *,
    threshold: int,
    participants: Sequence[int],
    weight_seed: bytes,
) -> BundleVerdict:
    """The public verdict on distinct, validly signed bundles of one ceremony.

    ``weight_seed`` seeds the batch weights: fresh random bytes on a node, or the hash
    of the bundles for an offline verifier (the weights then depend on everything a
    cheater could choose, so it cannot aim for a cancellation).
    """
    by_dealer: dict[int, list[DealBundle]] = {}
    for b in bundles:
        by_dealer.setdefault(b.sender, []).append(b)
    excluded: dict[int, Exclusion] = {}
    checked: list[VerifiedBundle] = []
    for dealer in participants:
        mine = by_dealer.get(dealer, [])
        if not mine:
            excluded[dealer] = Exclusion.ABSENT
        elif len({b.digest() for b in mine}) > 1:
            excluded[dealer] = Exclusion.EQUIVOCATION
        else:
            result = check_bundle(mine[0], threshold=threshold, participants=participants)
            if isinstance(result, Exclusion):
                excluded[dealer] = result
            else:
                checked.append(result)
    if checked and not _batch_consistent(checked, weight_seed):
        for vb in list(checked):
            if not g1_g2_consistent(vb):
                excluded[vb.dealer] = Exclusion.G1_G2_MISMATCH
                checked.remove(vb)
    return BundleVerdict(
        candidates={vb.dealer: vb for vb in checked},
        excluded=dict(sorted(excluded.items())),
    )


def public_share_horner(commitments: Sequence[G1], index: int) -> G1:
    """Σ_k index^k·C_k by Horner's rule: t-1 multiplications by the small integer
    ``index`` instead of t by full-size powers (``protocol.threshold.public_share``
    is the reference it is tested against)."""
    acc = commitments[-1]
    for c in reversed(commitments[:-1]):
        acc = acc * index + c
    return acc


def share_matches(index: int, share: int, commitments: Sequence[G1]) -> bool:
    """Feldman's check s·G1 = Σ_k index^k·C_k."""
    return 0 <= share < R and g1_mul_generator(share) == public_share_horner(commitments, index)


def open_share(
    verified: VerifiedBundle,
    *,
    recipient: int,
    recipient_secret: bytes,
    recipient_key: bytes,
) -> int | None:
    """Decrypt and Feldman-check the recipient's share; ``None`` means "complain"."""
    ciphertext = verified.ciphertext_for(recipient)
    if ciphertext is None:
        return None
    try:
        share = decrypt_share(
            ciphertext,
            ceremony=verified.bundle.ceremony,
            dealer=verified.dealer,
            recipient=recipient,
            recipient_secret=recipient_secret,
            recipient_key=recipient_key,
            ephemeral_public=verified.bundle.ephemeral,
        )
    except ShareDecryptionError:
        return None
    return share if share_matches(recipient, share, verified.commitments) else None


def check_revealed_share(verified: VerifiedBundle, recipient: int, raw: bytes) -> int | None:
    """A share revealed in a justification, if it is < r and matches the commitments."""
    value = int.from_bytes(raw, "big")
    if value >= R:
        return None
    return value if share_matches(recipient, value, verified.commitments) else None

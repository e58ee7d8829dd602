"""The importer's side of key import (``protocol.key_import``): split an existing key,
then encrypt each share to its holder's per-import key.

``split_key(secret, pubkey_g1, threshold=t, indices=..., rng=...)`` draws f of degree
t-1 with f(0) = secret (fresh random coefficients), checks that the Feldman
commitment C_0 equals the keystore's stated public key, computes the G2 key and the
shares f(j) for every index that may become a holder, and drops the polynomial before
it returns: from then on only the shares exist (t of them would rebuild the key, so
``ImportSplit.forget`` drops them as soon as they are encrypted). Python cannot
overwrite an int in place, so "drop" means "no reference left" — the garbage
collector frees the memory; the CLI process exits right after.

``check_opens`` verifies the nodes' opens against the manifest (never trusting the
relay) and ``seal_bundle`` encrypts the shares into an ``ImportBundle`` that carries
public data and ciphertexts only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from protocol.bn254 import G1, G2, g2_mul_generator
from protocol.dkg.crypto import encrypt_share, x25519_keypair
from protocol.encoding import g1_to_bytes, g2_to_bytes
from protocol.errors import InvalidScalar
from protocol.key_import import (
    DEALER,
    SHARE_PURPOSE,
    ImportBundle,
    ImportOpen,
    ImportRejected,
    import_id,
    open_problem,
)
from protocol.manifest import Manifest
from protocol.rng import Rng
from protocol.threshold import random_polynomial

MIN_THRESHOLD = 2


class ImportSplit:
    """A split key: public commitments and G2 key, and the shares (secret; the repr
    hides them). Use ``share(j)`` while encrypting, then ``forget()``."""

    __slots__ = ("_shares", "commitments", "pubkey_g2", "threshold")

    def __init__(
        self, threshold: int, commitments: tuple[G1, ...], pubkey_g2: G2, shares: dict[int, int]
    ) -> None:
        self.threshold = threshold
        self.commitments = commitments
        self.pubkey_g2 = pubkey_g2
        self._shares = shares

    @property
    def pubkey_g1(self) -> G1:
        return self.commitments[0]

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(sorted(self._shares))

    def share(self, index: int) -> int:
        try:
            return self._shares[index]
        except KeyError:
            raise ImportRejected("holders", f"no share was split for node {index}") from None

    def forget(self) -> None:
        """Drop every share (nothing secret is left in this object)."""
        self._shares.clear()

    def __repr__(self) -> str:
        return (
            f"ImportSplit(threshold={self.threshold}, indices={list(self.indices)}, "
            "shares=<hidden>)"
        )


def split_key(
    secret: int, pubkey_g1: G1, *, threshold: int, indices: Iterable[int], rng: Rng
) -> ImportSplit:
    """Split ``secret`` (in [1, r-1]) t-of-n over ``indices`` (see the module header).

    Raises:
        InvalidScalar: the secret is not in [1, r-1].
        ImportRejected: t out of range, or C_0 differs from ``pubkey_g1``.
    """
    wanted = sorted(set(indices))
    if not MIN_THRESHOLD <= threshold <= len(wanted):
        raise ImportRejected("threshold", f"must be in [{MIN_THRESHOLD}, {len(wanted)}]")
    if isinstance(secret, bool) or not isinstance(secret, int):
        raise InvalidScalar("secret", "must be an integer")
    polynomial = random_polynomial(threshold - 1, rng, constant=secret)  # checks 0 <= secret < r
    if polynomial.coeffs[0] == 0:
        raise InvalidScalar("secret", "is zero")
    commitments = polynomial.commitments()
    if commitments[0] != pubkey_g1:
        raise ImportRejected("pubkeyG1", "the key's public key is not secret * G1")
    shares = {j: polynomial.evaluate(j) for j in wanted}
    pubkey_g2 = g2_mul_generator(polynomial.coeffs[0])
    del polynomial
    return ImportSplit(threshold, commitments, pubkey_g2, shares)


def check_opens(
    opens: Sequence[ImportOpen],
    *,
    manifest: Manifest,
    key_id: str,
    epoch: int,
    min_holders: int,
) -> tuple[ImportOpen, ...]:
    """The opens to deal to, sorted by node, each checked against the manifest.

    Raises:
        ImportRejected: an open that fails its check (the relay is misbehaving: the
            import stops rather than drop it quietly), two opens from one node, or
            fewer than ``min_holders`` of them.
    """
    for message in opens:
        problem = open_problem(message, manifest=manifest, key_id=key_id, epoch=epoch)
        if problem:
            raise ImportRejected("opens", problem)
    senders = [o.sender for o in opens]
    if len(set(senders)) != len(senders):
        raise ImportRejected("opens", "two opens from one node")
    if len(opens) < min_holders:
        raise ImportRejected("opens", f"{len(opens)} nodes opened the import, need {min_holders}")
    return tuple(sorted(opens, key=lambda o: o.sender))


def seal_bundle(
    split: ImportSplit,
    opens: Sequence[ImportOpen],
    *,
    manifest: Manifest,
    key_id: str,
    epoch: int,
    rng: Rng,
) -> ImportBundle:
    """Encrypt each holder's share to its open key; the bundle holds no secret.
    ``opens`` must have passed ``check_opens``."""
    ordered = tuple(sorted(opens, key=lambda o: o.sender))
    if split.threshold > len(ordered):
        raise ImportRejected("threshold", f"{split.threshold} > {len(ordered)} holders")
    iid = import_id(manifest.cluster_id, key_id, epoch, ordered)
    eph_secret, eph_public = x25519_keypair(rng)
    shares = tuple(
        (
            o.sender,
            encrypt_share(
                split.share(o.sender),
                ceremony=iid,
                dealer=DEALER,
                recipient=o.sender,
                ephemeral_secret=eph_secret,
                ephemeral_public=eph_public,
                recipient_key=o.enc_key,
                purpose=SHARE_PURPOSE,
            ),
        )
        for o in ordered
    )
    del eph_secret
    return ImportBundle(
        cluster=manifest.cluster_id,
        key_id=key_id,
        epoch=epoch,
        threshold=split.threshold,
        opens=ordered,
        commitments=tuple(g1_to_bytes(cm) for cm in split.commitments),
        pubkey_g2=g2_to_bytes(split.pubkey_g2),
        ephemeral=eph_public,
        shares=shares,
    )

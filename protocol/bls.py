"""BLS signatures on BN254 in EigenLayer's convention (signatures in G1, keys in G1 and G2).

* ``keygen(rng)``: sk uniform in [1, r-1] from an injected generator (OS CSPRNG by
  default); pk_g1 = sk*G1, pk_g2 = sk*G2.
* ``sign``: sigma = sk*hashToG1(msgHash).
* ``verify``: the plain SDK check e(H(m), pk_g2) = e(sigma, G2) (eigensdk-go,
  cerberus); ``verify_gamma`` is the on-chain check that also binds pk_g1.
* ``aggregate_g1`` / ``aggregate_g2``: point sums.
* ``batch_verify``: many messages under one key with random 128-bit coefficients
  rho_i: e(sum rho_i sigma_i, -G2) * e(sum rho_i H(m_i), pk) = 1, two pairings per
  batch; a failing batch is bisected to name exactly the bad items.

Zero keys and infinity signatures are rejected explicitly (spec 12.2).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from protocol.bn254 import (
    G1,
    G1_INFINITY,
    G2,
    G2_INFINITY,
    G2Prepared,
    g1_msm,
    g1_mul_generator,
    g2_mul_generator,
    pairing_check,
    prepare_g2,
)
from protocol.eigenlayer import NEG_G2_PREPARED, hash_to_g1, verify_signature
from protocol.encoding import WORD, check_scalar, g1_usable, g2_usable
from protocol.rng import Rng, os_rng, random_scalar

BATCH_COEFFICIENT_BYTES = 16  # 128-bit random coefficients


@dataclass(frozen=True, repr=False)
class KeyPair:
    """A BLS key pair; ``repr`` never shows the secret."""

    sk: int
    pk_g1: G1
    pk_g2: G2

    def __repr__(self) -> str:
        return f"KeyPair(sk=<hidden>, pk_g1={self.pk_g1!r}, pk_g2={self.pk_g2!r})"


def keypair_from_secret(sk: int) -> KeyPair:
    """The key pair of a secret in [1, r-1]."""
    check_scalar(sk, field="sk")
    return KeyPair(sk, g1_mul_generator(sk), g2_mul_generator(sk))


def keygen(rng: Rng = os_rng) -> KeyPair:
    """A fresh key pair from ``rng``."""
    return keypair_from_secret(random_scalar(rng))


def sign(sk: int, msg_hash: bytes) -> G1:
    """sigma = sk * hashToG1(msgHash) (``msg_hash`` is the 32-byte digest, not hashed again)."""
    check_scalar(sk, field="sk")
    return hash_to_g1(msg_hash) * sk


def verify(pk_g2: G2 | G2Prepared, msg_hash: bytes, sigma: G1) -> bool:
    """Plain check e(H(m), pk_g2) = e(sigma, G2); False for a zero key or infinity sigma.

    ``pk_g2`` may be prepared (``prepare_g2``) when many signatures share a key; then
    the caller is responsible for it not being infinity.
    """
    if isinstance(pk_g2, G2) and not g2_usable(pk_g2):
        return False
    if not g1_usable(sigma):
        return False
    return pairing_check([(hash_to_g1(msg_hash), pk_g2), (sigma, NEG_G2_PREPARED)])


def verify_gamma(pk_g1: G1, pk_g2: G2, msg_hash: bytes, sigma: G1) -> bool:
    """The on-chain gamma check (``BLSSignatureChecker``) for a single key."""
    return verify_signature(msg_hash, pk_g1, pk_g2, sigma)


def aggregate_g1(points: Iterable[G1]) -> G1:
    """Sum of G1 points (signatures or G1 keys); infinity for an empty input."""
    acc = G1_INFINITY
    for p in points:
        acc = acc + p
    return acc


def aggregate_g2(points: Iterable[G2]) -> G2:
    """Sum of G2 keys; infinity for an empty input."""
    acc = G2_INFINITY
    for q in points:
        acc = acc + q
    return acc


def _coefficient(rng: Rng) -> int:
    while True:
        rho = int.from_bytes(rng(BATCH_COEFFICIENT_BYTES), "big")
        if rho:
            return rho


def batch_verify(
    pk_g2: G2 | G2Prepared, items: Sequence[tuple[bytes, G1]], rng: Rng = os_rng
) -> list[int]:
    """Indices of the items (msg_hash, sigma) that do not verify under ``pk_g2``
    (sorted; empty = all good).

    One random 128-bit coefficient per item; each (sub)batch costs one two-pairing
    check. On failure the batch is halved; when the left half passes, the right half
    is known to fail without checking it (the same coefficients are reused, so the
    GT products multiply exactly). A wrong item escapes with probability <= 2^-128
    per check. Items with a malformed hash or an infinity/off-curve sigma are bad
    without a pairing; a zero key makes every item bad.
    """
    if isinstance(pk_g2, G2):
        if not g2_usable(pk_g2):
            return list(range(len(items)))
        pk: G2 | G2Prepared = prepare_g2(pk_g2) if len(items) > 1 else pk_g2
    else:
        pk = pk_g2
    bad: list[int] = []
    good: list[tuple[int, G1, G1, int]] = []  # (index, H(m), sigma, rho)
    for i, (msg_hash, sigma) in enumerate(items):
        ok_hash = isinstance(msg_hash, bytes | bytearray) and len(msg_hash) == WORD
        if not (ok_hash and g1_usable(sigma)):
            bad.append(i)
            continue
        good.append((i, hash_to_g1(bytes(msg_hash)), sigma, _coefficient(rng)))

    def check(group: Sequence[tuple[int, G1, G1, int]]) -> bool:
        rhos = [g[3] for g in group]
        s = g1_msm([g[2] for g in group], rhos)
        h = g1_msm([g[1] for g in group], rhos)
        return pairing_check([(s, NEG_G2_PREPARED), (h, pk)])

    def bisect(group: Sequence[tuple[int, G1, G1, int]], known_bad: bool) -> None:
        if not known_bad and check(group):
            return
        if len(group) == 1:
            bad.append(group[0][0])
            return
        mid = len(group) // 2
        left, right = group[:mid], group[mid:]
        left_ok = check(left)
        if not left_ok:
            bisect(left, True)
        # If the left half passed, the right half must be the failing one.
        bisect(right, left_ok)

    if good:
        bisect(good, False)
    return sorted(bad)

"""The DKG's symmetric and hashing primitives (DESIGN.md §DKG steps 0–2).

* ``tagged_hash(tag, value)``: SHA-256 over ``b"tkms/v1/" + tag + b"\\0" +
  canonical(value)``, the hashing twin of ``protocol.signing`` (one domain tag per
  use: ceremony id, bundle hash, transcript hash, batch weights).
* Share encryption. Dealer i encrypts s_ij = f_i(j) to recipient j:
  a fresh ephemeral X25519 key (e, E) per *bundle*; k_ij = HKDF-SHA256(ikm =
  X25519(e, P_j), salt = ceremony id, info = ``SHARE_KEY_LABEL`` ‖ E ‖ P_j ‖ i ‖ j);
  ciphertext = ChaCha20-Poly1305(k_ij, nonce = 0^12, plaintext = s_ij as 32 bytes,
  AAD = canonical([ceremony, i, j])). Each key is used for exactly one message, so a
  constant nonce is safe; the AAD stops a ciphertext from being replayed for another
  recipient, dealer or ceremony.

Recipient keys (the choice DESIGN.md leaves open): P_j is a *per-ceremony* X25519
key that node j generates when it opens the ceremony and publishes, signed with its
Ed25519 key, next to its nonce (``protocol.dkg.messages.Open``); it is hashed into the
ceremony id. We do not reuse the manifest's Noise static key: (1) transcripts, which
hold every ciphertext, are stored by every node and kept for years, and a later leak
of a long-term key must not decrypt old shares (the per-ceremony secret is dropped
when the ceremony ends, so this is forward secrecy); (2) the Noise static key lives in
the transport shell and is used for Noise only (key separation); (3) it costs one
32-byte field per node in a round that exists anyway.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
    crypto_scalarmult,
    crypto_scalarmult_base,
)
from nacl.exceptions import CryptoError
from nacl.exceptions import RuntimeError as NaclRuntimeError

from protocol.bn254 import R
from protocol.canonical import encode_canonical
from protocol.errors import VerificationError
from protocol.rng import Rng

DOMAIN = b"tkms/v1/"
SHARE_KEY_LABEL = b"tkms/v1/dkg-share-key"
# Share-encryption purposes: HKDF label tkms/v1/<purpose>-share-key, AAD tag <purpose>-share.
SHARE_PURPOSES = ("dkg", "import")
_NONCE = bytes(12)
BATCH_WEIGHT_BITS = 128


class ShareDecryptionError(VerificationError):
    """A share ciphertext that does not decrypt (wrong key, tampered, or garbage)."""


def tagged_hash(tag: str, value: Any) -> bytes:
    """SHA-256 of the domain-separated canonical encoding of ``value``."""
    return hashlib.sha256(DOMAIN + tag.encode() + b"\0" + encode_canonical(value)).digest()


def x25519_keypair(rng: Rng) -> tuple[bytes, bytes]:
    """A fresh X25519 (secret, public) pair from ``rng``."""
    secret = rng(32)
    return secret, crypto_scalarmult_base(secret)


def x25519_public_ok(public: bytes) -> bool:
    """False for keys of small order (every shared secret with them is all zero)."""
    if len(public) != 32:
        return False
    try:
        crypto_scalarmult(b"\x01" * 32, public)
    except NaclRuntimeError:
        return False
    return True


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _share_label(purpose: str) -> bytes:
    if purpose not in SHARE_PURPOSES:
        raise ValueError(f"unknown share-encryption purpose {purpose!r}")
    return DOMAIN + purpose.encode() + b"-share-key"


def _share_key(
    shared: bytes,
    ceremony: bytes,
    ephemeral: bytes,
    recipient_key: bytes,
    dealer: int,
    recipient: int,
    purpose: str = "dkg",
) -> bytes:
    info = (
        _share_label(purpose)
        + ephemeral
        + recipient_key
        + dealer.to_bytes(4, "big")
        + recipient.to_bytes(4, "big")
    )
    return _hkdf_sha256(shared, ceremony, info)


def _aad(ceremony: bytes, dealer: int, recipient: int, purpose: str = "dkg") -> bytes:
    return encode_canonical([f"{purpose}-share", ceremony, dealer, recipient])


def encrypt_share(
    share: int,
    *,
    ceremony: bytes,
    dealer: int,
    recipient: int,
    ephemeral_secret: bytes,
    ephemeral_public: bytes,
    recipient_key: bytes,
    purpose: str = "dkg",
) -> bytes:
    """The 48-byte ciphertext of ``share`` for ``recipient``. ``purpose`` separates
    the uses (``SHARE_PURPOSES``: the DKG, key import): HKDF label and AAD differ.

    Raises:
        VerificationError: ``recipient_key`` is a small-order X25519 point.
    """
    try:
        shared = crypto_scalarmult(ephemeral_secret, recipient_key)
    except NaclRuntimeError:
        raise VerificationError(f"encryption key of node {recipient} has small order") from None
    key = _share_key(shared, ceremony, ephemeral_public, recipient_key, dealer, recipient, purpose)
    ct: bytes = crypto_aead_chacha20poly1305_ietf_encrypt(
        share.to_bytes(32, "big"), _aad(ceremony, dealer, recipient, purpose), _NONCE, key
    )
    return ct


def decrypt_share(
    ciphertext: bytes,
    *,
    ceremony: bytes,
    dealer: int,
    recipient: int,
    recipient_secret: bytes,
    recipient_key: bytes,
    ephemeral_public: bytes,
    purpose: str = "dkg",
) -> int:
    """The share in ``ciphertext`` (an integer < r), encrypted for ``purpose``.

    Raises:
        ShareDecryptionError: it does not decrypt, or holds a value >= r.
    """
    try:
        shared = crypto_scalarmult(recipient_secret, ephemeral_public)
    except NaclRuntimeError:
        raise ShareDecryptionError("ephemeral key has small order") from None
    key = _share_key(shared, ceremony, ephemeral_public, recipient_key, dealer, recipient, purpose)
    try:
        plain: bytes = crypto_aead_chacha20poly1305_ietf_decrypt(
            ciphertext, _aad(ceremony, dealer, recipient, purpose), _NONCE, key
        )
    except (CryptoError, ValueError, TypeError):
        raise ShareDecryptionError("ciphertext does not authenticate") from None
    if len(plain) != 32:
        raise ShareDecryptionError("plaintext is not 32 bytes")
    value = int.from_bytes(plain, "big")
    if value >= R:
        raise ShareDecryptionError("share is not < r")
    return value


def batch_weights(seed: bytes, count: int) -> list[int]:
    """``count`` nonzero 128-bit weights derived from ``seed`` (random linear
    combination for batched checks; the seed is fresh randomness, or for an offline
    verifier the hash of everything being checked)."""
    out: list[int] = []
    counter = 0
    while len(out) < count:
        block = tagged_hash("dkg-batch-weight", [seed, counter])
        counter += 1
        w = int.from_bytes(block[: BATCH_WEIGHT_BITS // 8], "big")
        if w:
            out.append(w)
    return out

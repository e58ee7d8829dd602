"""Noise primitives (Noise Protocol Framework rev. 34, sections 4 and 12) on PyNaCl
and the standard library: X25519 (``DH``, ``GENERATE_KEYPAIR``), ChaCha20-Poly1305
IETF (``ENCRYPT``/``DECRYPT``), BLAKE2b and SHA-256 (``HASH``) and the HMAC-based
``HKDF`` of section 4.3.

The AEAD is one seam (``aead_encrypt``/``aead_decrypt``): swapping libsodium for
another ChaCha20-Poly1305 touches only those two functions.

Invariants: a DH result of all zeros (a low-order peer key) raises
``InvalidPublicKey``; a tag failure raises ``DecryptError``. Nothing here validates
that an X25519 public key is canonical (< 2^255-19): X25519 does not need it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import nacl.exceptions
from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
    crypto_scalarmult,
    crypto_scalarmult_base,
)

from protocol.noise.errors import DecryptError, InvalidPublicKey, NoiseConfigError
from protocol.rng import Rng, os_rng

DHLEN = 32
KEYLEN = 32
TAGLEN = 16
MAX_MESSAGE_LEN = 65535  # every Noise message, handshake or transport
MAX_PLAINTEXT_LEN = MAX_MESSAGE_LEN - TAGLEN  # 65,519
_ZERO_NONCE_PREFIX = b"\x00\x00\x00\x00"


class KeyPair:
    """An X25519 key pair. The private key never appears in ``repr``."""

    __slots__ = ("_private", "public")

    def __init__(self, private: bytes, public: bytes) -> None:
        self._private = private
        self.public = public

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        """The key pair of a raw 32-byte X25519 private key (clamped by X25519 itself).

        Raises:
            NoiseConfigError: the private key is not 32 bytes.
        """
        if not isinstance(private, bytes) or len(private) != DHLEN:
            raise NoiseConfigError("an X25519 private key is 32 bytes")
        return cls(private, crypto_scalarmult_base(private))

    @classmethod
    def generate(cls, rng: Rng = os_rng) -> KeyPair:
        """A fresh key pair from ``rng`` (the OS generator by default)."""
        return cls.from_private(rng(DHLEN))

    @property
    def private(self) -> bytes:
        """The raw private key; handle with care (never log it)."""
        return self._private

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public.hex()}, private=<hidden>)"


def dh(keypair: KeyPair, public: bytes) -> bytes:
    """X25519(keypair.private, public).

    Raises:
        InvalidPublicKey: ``public`` is not 32 bytes, or the shared secret is all
            zero (a low-order point).
    """
    if len(public) != DHLEN:
        raise InvalidPublicKey("noise.public_key", f"must be {DHLEN} bytes, got {len(public)}")
    try:
        return crypto_scalarmult(keypair.private, bytes(public))
    except nacl.exceptions.RuntimeError:
        # libsodium refuses an all-zero output: the peer sent a low-order point.
        raise InvalidPublicKey(
            "noise.public_key", "low-order point (all-zero shared secret)"
        ) from None


def _nonce(n: int) -> bytes:
    return _ZERO_NONCE_PREFIX + n.to_bytes(8, "little")


def aead_encrypt(key: bytes, n: int, ad: bytes, plaintext: bytes) -> bytes:
    """ChaCha20-Poly1305 IETF with the Noise nonce layout (4 zero bytes, 64-bit LE n)."""
    return crypto_aead_chacha20poly1305_ietf_encrypt(bytes(plaintext), ad, _nonce(n), key)


def aead_decrypt(key: bytes, n: int, ad: bytes, ciphertext: bytes) -> bytes:
    """The inverse of ``aead_encrypt``.

    Raises:
        DecryptError: the tag does not verify (or the ciphertext is shorter than a tag).
    """
    if len(ciphertext) < TAGLEN:
        raise DecryptError("ciphertext shorter than the authentication tag")
    try:
        return crypto_aead_chacha20poly1305_ietf_decrypt(bytes(ciphertext), ad, _nonce(n), key)
    except nacl.exceptions.CryptoError:
        raise DecryptError("authentication tag does not verify") from None


@dataclass(frozen=True, slots=True)
class HashFunction:
    """A Noise HASH with its HASHLEN and the HMAC built on it (RFC 2104)."""

    name: str  # the Noise name: "BLAKE2b" or "SHA256"
    hashlen: int
    hashlib_name: str
    new: Callable[[bytes], Any]  # a hashlib constructor

    def hash(self, data: bytes) -> bytes:
        digest: bytes = self.new(data).digest()
        return digest

    def hmac(self, key: bytes, data: bytes) -> bytes:
        return hmac.digest(key, data, self.hashlib_name)

    def hkdf(self, chaining_key: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
        """HKDF of Noise section 4.3: two or three HASHLEN outputs."""
        temp_key = self.hmac(chaining_key, ikm)
        out1 = self.hmac(temp_key, b"\x01")
        out2 = self.hmac(temp_key, out1 + b"\x02")
        if outputs == 2:
            return out1, out2
        return out1, out2, self.hmac(temp_key, out2 + b"\x03")


HASHES: Mapping[str, HashFunction] = MappingProxyType(
    {
        "BLAKE2b": HashFunction("BLAKE2b", 64, "blake2b", hashlib.blake2b),
        "SHA256": HashFunction("SHA256", 32, "sha256", hashlib.sha256),
    }
)

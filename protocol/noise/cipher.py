"""CipherState and SymmetricState (Noise Protocol Framework rev. 34, sections 5.1 and 5.2).

``CipherState`` holds a key ``k`` and the 64-bit nonce ``n``. Invariants:
* ``n`` advances only after a successful encryption or decryption, so a tampered,
  replayed or reordered ciphertext leaves the state exactly as it was;
* ``n = 2^64-1`` is reserved: reaching it raises ``NonceExhausted`` and the session
  must end (we never rekey);
* a transport plaintext is at most 65,519 bytes, so every message fits in 65,535.

``SymmetricState`` holds the chaining key ``ck`` and the handshake hash ``h``. With a
64-byte hash (BLAKE2b) every HKDF output used as a cipher key is truncated to 32
bytes; ``ck`` and ``h`` keep HASHLEN bytes.
"""

from __future__ import annotations

from protocol.noise.errors import MalformedMessage, MessageTooLong, NonceExhausted
from protocol.noise.primitives import (
    KEYLEN,
    MAX_MESSAGE_LEN,
    MAX_PLAINTEXT_LEN,
    HashFunction,
    aead_decrypt,
    aead_encrypt,
)

MAX_NONCE = 2**64 - 1  # reserved by Noise: never used to encrypt or decrypt


class CipherState:
    """A key (or none) and a nonce. Without a key, encryption is the identity."""

    __slots__ = ("_k", "n")

    def __init__(self, key: bytes | None = None, n: int = 0) -> None:
        self._k = key
        self.n = n

    def has_key(self) -> bool:
        return self._k is not None

    def copy(self) -> CipherState:
        return CipherState(self._k, self.n)

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """ENCRYPT(k, n++, ad, plaintext), or ``plaintext`` if there is no key.

        Raises:
            MessageTooLong: the plaintext is above 65,519 bytes.
            NonceExhausted: ``n`` reached 2^64-1.
        """
        if self._k is None:
            return bytes(plaintext)
        if len(plaintext) > MAX_PLAINTEXT_LEN:
            raise MessageTooLong(f"plaintext of {len(plaintext)} bytes exceeds {MAX_PLAINTEXT_LEN}")
        if self.n >= MAX_NONCE:
            raise NonceExhausted("nonce reached 2^64-1; the session must end")
        ciphertext = aead_encrypt(self._k, self.n, ad, plaintext)
        self.n += 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """DECRYPT(k, n, ad, ciphertext), advancing ``n`` only on success.

        Raises:
            MalformedMessage: the ciphertext is above 65,535 bytes.
            DecryptError: the tag does not verify.
            NonceExhausted: ``n`` reached 2^64-1.
        """
        if self._k is None:
            return bytes(ciphertext)
        if len(ciphertext) > MAX_MESSAGE_LEN:
            raise MalformedMessage(
                "noise.ciphertext", f"{len(ciphertext)} bytes exceeds {MAX_MESSAGE_LEN}"
            )
        if self.n >= MAX_NONCE:
            raise NonceExhausted("nonce reached 2^64-1; the session must end")
        plaintext = aead_decrypt(self._k, self.n, ad, ciphertext)
        self.n += 1
        return plaintext

    def __repr__(self) -> str:
        return f"CipherState(key={'<hidden>' if self._k else None}, n={self.n})"


class SymmetricState:
    """``ck``, ``h`` and a CipherState, for the duration of one handshake."""

    __slots__ = ("cipher", "ck", "h", "hash")

    def __init__(self, hash_fn: HashFunction, ck: bytes, h: bytes, cipher: CipherState) -> None:
        self.hash = hash_fn
        self.ck = ck
        self.h = h
        self.cipher = cipher

    @classmethod
    def initialize(cls, protocol_name: bytes, hash_fn: HashFunction) -> SymmetricState:
        """InitializeSymmetric: ``h`` is the name padded to HASHLEN, or its hash if longer."""
        if len(protocol_name) <= hash_fn.hashlen:
            h = protocol_name.ljust(hash_fn.hashlen, b"\x00")
        else:
            h = hash_fn.hash(protocol_name)
        return cls(hash_fn, h, h, CipherState())

    def copy(self) -> SymmetricState:
        return SymmetricState(self.hash, self.ck, self.h, self.cipher.copy())

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = self.hash.hkdf(self.ck, ikm, 2)
        self.cipher = CipherState(temp_k[:KEYLEN])

    def mix_hash(self, data: bytes) -> None:
        self.h = self.hash.hash(self.h + data)

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, temp_k = self.hash.hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.cipher = CipherState(temp_k[:KEYLEN])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """The two transport CipherStates (initiator→responder, responder→initiator)."""
        temp_k1, temp_k2 = self.hash.hkdf(self.ck, b"", 2)
        return CipherState(temp_k1[:KEYLEN]), CipherState(temp_k2[:KEYLEN])

    def __repr__(self) -> str:
        return f"SymmetricState(hash={self.hash.name}, keys=<hidden>)"

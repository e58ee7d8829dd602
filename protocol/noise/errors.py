"""Typed errors of the Noise layer (``protocol.noise``).

Each error says whose fault it was (``protocol.errors.Fault``): a peer that sent a bad
message or a bad public key (PEER), our own caller using the handshake in the wrong
order or with too much data (LOCAL). Messages never contain key material.
"""

from __future__ import annotations

from typing import ClassVar

from protocol.errors import DecodeError, Fault, InvalidPoint, TkmsError, VerificationError


class NoiseError(TkmsError):
    """Base of every Noise error."""

    fault: ClassVar[Fault] = Fault.LOCAL


class NoiseStateError(NoiseError):
    """An operation called in the wrong state (e.g. writing when it is the peer's turn,
    splitting before the handshake is done). Nothing changed."""

    fault: ClassVar[Fault] = Fault.LOCAL


class NoiseConfigError(NoiseError, ValueError):
    """An unsupported protocol name, a missing key the pattern needs, a PSK of the wrong
    size or count."""

    fault: ClassVar[Fault] = Fault.LOCAL


class MessageTooLong(NoiseError):
    """We were asked to produce a Noise message above 65,535 bytes (or a transport
    plaintext above 65,519)."""

    fault: ClassVar[Fault] = Fault.LOCAL


class MalformedMessage(NoiseError, DecodeError):
    """A received Noise message that is too short or above 65,535 bytes."""

    fault: ClassVar[Fault] = Fault.PEER


class InvalidPublicKey(NoiseError, InvalidPoint):
    """A Diffie-Hellman public key of the wrong length, or of low order (the X25519
    shared secret is all zero)."""

    fault: ClassVar[Fault] = Fault.PEER


class DecryptError(NoiseError, VerificationError):
    """An AEAD tag that does not verify: tampered, replayed, reordered or foreign
    ciphertext, or a handshake with a different prologue or key. The nonce does not
    advance."""

    fault: ClassVar[Fault] = Fault.PEER


class NonceExhausted(NoiseError):
    """The 64-bit nonce reached 2^64-1, which Noise reserves: the session must end."""

    fault: ClassVar[Fault] = Fault.LOCAL

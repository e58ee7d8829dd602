"""Noise Protocol Framework (rev. 34), sans-IO, on PyNaCl primitives.

The cluster speaks ``Noise_XX_25519_ChaChaPoly_BLAKE2b`` (``CLUSTER_PROTOCOL``) with a
prologue binding ``b"tkms"``, the protocol version and the cluster id
(``cluster_prologue``); see DESIGN.md §Transport and docs/threat-model.md §Transport.
The general HandshakeState (NK, KK, IK, XX and psk modifiers, BLAKE2b or SHA256)
exists so that every public vector in tests/vectors/noise passes.

Layers: ``primitives`` (DH, AEAD, HASH, HKDF) → ``cipher`` (CipherState,
SymmetricState) → ``handshake`` (pattern tables, HandshakeState). Nothing here does
I/O; framing and RPC live in ``protocol.rpc``.
"""

from __future__ import annotations

from protocol.noise.cipher import MAX_NONCE, CipherState, SymmetricState
from protocol.noise.errors import (
    DecryptError,
    InvalidPublicKey,
    MalformedMessage,
    MessageTooLong,
    NoiseConfigError,
    NoiseError,
    NoiseStateError,
    NonceExhausted,
)
from protocol.noise.handshake import (
    PATTERNS,
    HandshakeState,
    Phase,
    TransportState,
    parse_protocol_name,
)
from protocol.noise.primitives import (
    DHLEN,
    MAX_MESSAGE_LEN,
    MAX_PLAINTEXT_LEN,
    TAGLEN,
    KeyPair,
    dh,
)

CLUSTER_PROTOCOL = "Noise_XX_25519_ChaChaPoly_BLAKE2b"
CLUSTER_ID_LEN = 16


def cluster_prologue(version: int, cluster_id: bytes) -> bytes:
    """The prologue of every cluster session: ``b"tkms" ‖ u16 version ‖ cluster id``.

    Raises:
        NoiseConfigError: the version is not a u16 or the cluster id not 16 bytes.
    """
    if not 0 <= version < 2**16:
        raise NoiseConfigError("protocol version must fit in 16 bits")
    if len(cluster_id) != CLUSTER_ID_LEN:
        raise NoiseConfigError(f"cluster id must be {CLUSTER_ID_LEN} bytes")
    return b"tkms" + version.to_bytes(2, "big") + bytes(cluster_id)


__all__ = [
    "CLUSTER_ID_LEN",
    "CLUSTER_PROTOCOL",
    "DHLEN",
    "MAX_MESSAGE_LEN",
    "MAX_NONCE",
    "MAX_PLAINTEXT_LEN",
    "PATTERNS",
    "TAGLEN",
    "CipherState",
    "DecryptError",
    "HandshakeState",
    "InvalidPublicKey",
    "KeyPair",
    "MalformedMessage",
    "MessageTooLong",
    "NoiseConfigError",
    "NoiseError",
    "NoiseStateError",
    "NonceExhausted",
    "Phase",
    "SymmetricState",
    "TransportState",
    "cluster_prologue",
    "dh",
    "parse_protocol_name",
]

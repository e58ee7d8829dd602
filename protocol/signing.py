"""Domain-separated Ed25519 signatures over canonical msgpack.

Every Ed25519 signature in tkms (DKG bundles, echoes, complaints, transcripts,
commits, audit checkpoints) signs ``b"tkms/v1/" + purpose + b"\\0" + canonical(fields)``.
One helper, one purpose tag per use, so a signature made for one purpose can never
be replayed as another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from protocol.canonical import encode_canonical
from protocol.errors import InvalidLength

DOMAIN = b"tkms/v1/"
SIGNATURE_LEN = 64
PUBLIC_KEY_LEN = 32


def signed_bytes(purpose: str, fields: Mapping[str, Any]) -> bytes:
    """The exact bytes that are signed for ``purpose`` and ``fields``."""
    if not purpose or "\0" in purpose:
        raise ValueError("purpose must be a non-empty string without NUL")
    return DOMAIN + purpose.encode() + b"\0" + encode_canonical(dict(fields))


def sign_fields(key: SigningKey, purpose: str, fields: Mapping[str, Any]) -> bytes:
    """A 64-byte Ed25519 signature over the domain-separated fields."""
    sig: bytes = key.sign(signed_bytes(purpose, fields)).signature
    return sig


def verify_fields(
    public_key: bytes, purpose: str, fields: Mapping[str, Any], signature: bytes
) -> bool:
    """True iff ``signature`` is ``public_key``'s signature for ``purpose`` over ``fields``."""
    if len(public_key) != PUBLIC_KEY_LEN:
        raise InvalidLength("ed25519 public key", f"expected 32 bytes, got {len(public_key)}")
    if len(signature) != SIGNATURE_LEN:
        return False
    try:
        VerifyKey(public_key).verify(signed_bytes(purpose, fields), signature)
    except (BadSignatureError, ValueError):
        return False
    return True

"""Sealed blobs: secrets encrypted by a key that never leaves the node's token.

Blob format (version 1), all integers big-endian:

    offset  size  field
    0       1     blob version (1)
    1       1     mechanism id (1 = AES-256-GCM in the token, 96-bit IV, 128-bit tag)
    2       2     header length H
    4       H     public header: canonical msgpack {"kind": ..., "context": {...}}
    4+H     1     IV length L
    5+H     L     IV (as returned by the mechanism)
    5+H+L   rest  ciphertext || tag

The AAD binds everything that says what the blob is, in canonical (length-prefixed)
msgpack: ``["tkms/v1/sealed-blob", version, mechanism, kind, context]`` where the
context is, per DESIGN.md,

* identity secrets (kind ``identity``): node name, token label, purpose
  (``noise-x25519`` / ``ed25519``), under the node's identity token key;
* key shares (kind ``share``): cluster id, key id, node index, epoch, under the
  token key of that (key id, epoch) alone, so destroying that key shreds the share.

The header repeats the context in clear so that a blob copied from another node,
key or epoch is named as such (``SealedBlobMisplaced``) before the token is asked
anything. The AAD is always built from what the caller *expects*, never from the
header, so a header edited to match still fails authentication
(``SealedBlobTampered``). Nothing is ever decrypted to be compared.

Mechanisms sit behind ``SealMechanism``: a backend without GCM (YubiHSM 2: AES-CCM
wrap keys) adds one with a new id; old blobs keep their id.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from node.hsm import GCM_IV_BYTES, GcmAuthFailed, TokenKeyMissing
from protocol.canonical import decode_canonical, encode_canonical
from protocol.errors import DecodeError, TkmsError

BLOB_VERSION = 1
MECH_AES256_GCM = 1
AAD_DOMAIN = "tkms/v1/sealed-blob"
IDENTITY_KEY_LABEL = "tkms/identity/v1"
MAX_HEADER = 1024
GCM_TAG_BYTES = 16


class SealError(TkmsError):
    """A sealed blob could not be produced or opened (fault LOCAL: our own disk/token)."""


class MalformedBlob(SealError):
    """The blob's framing is broken (truncated, bad lengths, bad header)."""


class UnknownBlobVersion(SealError):
    """The blob's version byte is not one this build reads."""


class UnknownMechanism(SealError):
    """The blob names a sealing mechanism this build does not have."""


class SealedBlobMisplaced(SealError):
    """The blob's public header names another node, key, epoch or cluster: it was copied."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class SealedBlobTampered(SealError):
    """Authentication failed: ciphertext, IV, header or the binding context was altered."""


class SealKeyUnavailable(SealError):
    """The token key for this blob is not in this token (destroyed, or another token)."""


class TokenCrypto(Protocol):
    """What a mechanism needs from the token (``HsmCore`` provides it)."""

    def aes_gcm_encrypt(self, label: str, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]: ...

    def aes_gcm_decrypt(self, label: str, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes: ...


class SealMechanism(Protocol):
    """One way of sealing bytes under a token key, identified by ``mechanism_id``."""

    mechanism_id: int
    name: str

    def seal(self, token: Any, key_label: str, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """Returns (IV, ciphertext||tag)."""
        ...

    def unseal(self, token: Any, key_label: str, iv: bytes, body: bytes, aad: bytes) -> bytes: ...


class AesGcmMechanism:
    """AES-256-GCM inside the token; 12-byte IV from the token's RNG."""

    mechanism_id = MECH_AES256_GCM
    name = "AES-256-GCM"

    def seal(
        self, token: TokenCrypto, key_label: str, plaintext: bytes, aad: bytes
    ) -> tuple[bytes, bytes]:
        try:
            return token.aes_gcm_encrypt(key_label, plaintext, aad)
        except TokenKeyMissing:
            raise SealKeyUnavailable(f"seal key {key_label!r} is not in this token") from None

    def unseal(
        self, token: TokenCrypto, key_label: str, iv: bytes, body: bytes, aad: bytes
    ) -> bytes:
        if len(iv) != GCM_IV_BYTES:
            raise MalformedBlob(f"AES-GCM IV must be {GCM_IV_BYTES} bytes, blob has {len(iv)}")
        if len(body) < GCM_TAG_BYTES:
            raise MalformedBlob("AES-GCM ciphertext shorter than its tag")
        try:
            return token.aes_gcm_decrypt(key_label, iv, body, aad)
        except TokenKeyMissing:
            raise SealKeyUnavailable(
                f"seal key {key_label!r} is not in this token (destroyed, or another token)"
            ) from None
        except GcmAuthFailed:
            raise SealedBlobTampered(
                f"sealed blob under {key_label!r} failed authentication (tampered or corrupted)"
            ) from None


MECHANISMS: dict[int, SealMechanism] = {MECH_AES256_GCM: AesGcmMechanism()}


@dataclass(frozen=True, slots=True)
class IdentityContext:
    """What an identity secret is bound to."""

    kind: ClassVar[str] = "identity"
    node: str
    token_label: str
    purpose: str

    @property
    def seal_key_label(self) -> str:
        return IDENTITY_KEY_LABEL

    def fields(self) -> dict[str, Any]:
        return {"node": self.node, "tokenLabel": self.token_label, "purpose": self.purpose}

    def describe(self, field: str) -> str:
        return {
            "node": "another node",
            "tokenLabel": "another token",
            "purpose": "another identity key",
        }.get(field, "elsewhere")


@dataclass(frozen=True, slots=True)
class ShareContext:
    """What a key share is bound to."""

    kind: ClassVar[str] = "share"
    cluster_id: bytes
    key_id: str
    node_index: int
    epoch: int

    @property
    def seal_key_label(self) -> str:
        return share_key_label(self.key_id, self.epoch)

    def fields(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster_id,
            "keyId": self.key_id,
            "nodeIndex": self.node_index,
            "epoch": self.epoch,
        }

    def describe(self, field: str) -> str:
        return {
            "cluster": "another cluster",
            "keyId": "another key id",
            "nodeIndex": "another node",
            "epoch": "another epoch",
        }.get(field, "elsewhere")


SealContext = IdentityContext | ShareContext


def share_key_label(key_id: str, epoch: int) -> str:
    """The token label of the key that seals the share of (key id, epoch)."""
    return f"tkms/share/{key_id}/{epoch}"


def build_aad(version: int, mechanism: int, ctx: SealContext) -> bytes:
    """The canonical AAD: domain, blob version, mechanism, kind and context."""
    return encode_canonical([AAD_DOMAIN, version, mechanism, ctx.kind, ctx.fields()])


@dataclass(frozen=True, slots=True)
class BlobHeader:
    """The public part of a blob (no secret)."""

    version: int
    mechanism: int
    kind: str
    context: dict[str, Any]
    iv: bytes
    body: bytes


def seal(
    token: TokenCrypto,
    ctx: SealContext,
    plaintext: bytes,
    *,
    mechanism: int = MECH_AES256_GCM,
) -> bytes:
    """Seal ``plaintext`` under the token key of ``ctx``; returns the blob."""
    mech = MECHANISMS.get(mechanism)
    if mech is None:
        raise UnknownMechanism(f"unknown sealing mechanism id {mechanism}")
    aad = build_aad(BLOB_VERSION, mechanism, ctx)
    iv, body = mech.seal(token, ctx.seal_key_label, plaintext, aad)
    header = encode_canonical({"kind": ctx.kind, "context": ctx.fields()})
    if len(header) > MAX_HEADER or len(iv) > 255:
        raise SealError("sealed blob header or IV too long")
    return (
        struct.pack(">BBH", BLOB_VERSION, mechanism, len(header))
        + header
        + bytes([len(iv)])
        + iv
        + body
    )


def parse_blob(blob: bytes) -> BlobHeader:
    """Split a blob into its public parts; typed errors for version/mechanism/framing."""
    if len(blob) < 1:
        raise MalformedBlob("sealed blob is empty")
    if blob[0] != BLOB_VERSION:
        raise UnknownBlobVersion(
            f"sealed blob version {blob[0]} is not supported (this build reads {BLOB_VERSION})"
        )
    if len(blob) < 4:
        raise MalformedBlob("sealed blob truncated before its header")
    _, mechanism, hlen = struct.unpack(">BBH", blob[:4])
    if mechanism not in MECHANISMS:
        raise UnknownMechanism(f"sealed blob uses unknown mechanism id {mechanism}")
    if hlen > MAX_HEADER or len(blob) < 4 + hlen + 1:
        raise MalformedBlob("sealed blob header length out of range")
    try:
        header = decode_canonical(
            blob[4 : 4 + hlen], field="sealed blob header", max_len=MAX_HEADER
        )
    except DecodeError as exc:
        raise MalformedBlob(f"sealed blob header: {exc.reason}") from None
    if (
        not isinstance(header, dict)
        or set(header) != {"kind", "context"}
        or not isinstance(header["kind"], str)
        or not isinstance(header["context"], dict)
    ):
        raise MalformedBlob("sealed blob header is not {kind, context}")
    pos = 4 + hlen
    ivlen = blob[pos]
    iv = blob[pos + 1 : pos + 1 + ivlen]
    if len(iv) != ivlen:
        raise MalformedBlob("sealed blob truncated in its IV")
    return BlobHeader(
        version=BLOB_VERSION,
        mechanism=mechanism,
        kind=header["kind"],
        context=header["context"],
        iv=iv,
        body=blob[pos + 1 + ivlen :],
    )


def check_placement(header: BlobHeader, ctx: SealContext) -> None:
    """Raise ``SealedBlobMisplaced`` if the public header names another context."""
    if header.kind != ctx.kind:
        raise SealedBlobMisplaced(
            "kind", f"sealed blob holds a {header.kind!r} secret, expected {ctx.kind!r}"
        )
    expected = ctx.fields()
    for name, want in expected.items():
        got = header.context.get(name)
        if got != want:
            raise SealedBlobMisplaced(
                name,
                f"sealed blob belongs to {ctx.describe(name)} ({name} {_show(got)}, "
                f"expected {_show(want)}): copied from elsewhere?",
            )
    if set(header.context) != set(expected):
        raise SealedBlobMisplaced("context", "sealed blob context has unexpected fields")


def unseal(token: TokenCrypto, ctx: SealContext, blob: bytes) -> bytes:
    """Open a blob sealed for ``ctx`` (refusing a blob sealed for anything else)."""
    header = parse_blob(blob)
    check_placement(header, ctx)
    mech = MECHANISMS[header.mechanism]
    aad = build_aad(header.version, header.mechanism, ctx)
    return mech.unseal(token, ctx.seal_key_label, header.iv, header.body, aad)


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    return repr(value)

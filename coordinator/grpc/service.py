"""cerberus semantics on top of the coordinator ``Backend`` (spec section 9).

Serves ``signer.v1.Signer/SignGeneric`` and ``SignG1`` and
``keymanager.v1.KeyManager/ListKeys`` and ``GetKeyMetadata`` the way eigensdk-go's
remote BLS signer expects from cerberus:

* keys are addressed by the gnark-compressed G1 public key in hex (optional ``0x``,
  any case); answers carry lowercase hex without ``0x``;
* the API key arrives raw in the ``authorization`` metadata and is checked by the
  same ``authenticate`` callable as the HTTP API (same roles); ``GetKeyMetadata``
  answers without one, as eigensdk-go's ``GetPublicKeyG2`` sends none; ``ListKeys``
  needs a valid key (any role);
* ``password`` is accepted and ignored (tkms has no per-key password);
* SignGeneric ``data`` shorter than 32 bytes is zero-padded on the right, longer is
  INVALID_ARGUMENT; the signature is 64 raw bytes X || Y;
* SignG1 ``data`` is 64 bytes X || Y of an already hashed point, checked to be on the
  curve and not infinity (cerberus does not check), and the answer is sk * point.

Errors map to gRPC codes: no or bad API key UNAUTHENTICATED, not allowed
PERMISSION_DENIED, unknown key NOT_FOUND, bad input INVALID_ARGUMENT, a key that is
not active FAILED_PRECONDITION, over the nodes' usage limits RESOURCE_EXHAUSTED, too
few signers UNAVAILABLE (naming the missing nodes), anything else INTERNAL without
details.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeAlias

from coordinator.backend import (
    Backend,
    BackendError,
    Client,
    Forbidden,
    InvalidRequest,
    KeyExists,
    KeyInfo,
    KeyNotActive,
    NotEnoughSigners,
    UnknownKey,
    UsageLimitExceeded,
)
from protocol import cerberus as api
from protocol.encoding import g1_from_bytes, g1_to_bytes, g1_to_compressed, g2_to_compressed
from protocol.errors import DecodeError
from protocol.grpcwire import GrpcError, StatusCode
from protocol.protowire import Message, decode_message

log = logging.getLogger("tkms.grpc")

Authenticate: TypeAlias = Callable[[str], Client | None]
Metadata: TypeAlias = Mapping[str, tuple[bytes, ...]]

MSG_HASH_LEN = 32
G1_RAW_LEN = 64
_HEX_KEY = re.compile(r"\A[0-9a-f]{64}\Z")
_LISTED_STATUSES = frozenset({"pending", "active", "retiring"})


def normalize_key_hex(value: str) -> bytes:
    """A ``public_key_g1`` field -> the 32 compressed bytes it names."""
    text = value.strip().lower()
    text = text.removeprefix("0x")
    if not _HEX_KEY.match(text):
        raise GrpcError(
            StatusCode.INVALID_ARGUMENT,
            "public_key_g1 must be a 32-byte gnark-compressed G1 key in hex",
        )
    return bytes.fromhex(text)


def _backend_status(exc: BackendError) -> tuple[StatusCode, str]:
    if isinstance(exc, UnknownKey):
        return StatusCode.NOT_FOUND, "key not found"
    if isinstance(exc, Forbidden):
        return StatusCode.PERMISSION_DENIED, "this API key may not use this key"
    if isinstance(exc, KeyNotActive):
        return StatusCode.FAILED_PRECONDITION, f"key is {exc.status}, not active"
    if isinstance(exc, NotEnoughSigners):
        return StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, InvalidRequest):
        return StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, KeyExists):
        return StatusCode.ALREADY_EXISTS, "key exists"
    if isinstance(exc, UsageLimitExceeded):
        return StatusCode.RESOURCE_EXHAUSTED, str(exc)
    return StatusCode.INTERNAL, "internal error"


class CerberusService:
    """The cerberus-compatible router the gRPC server calls (``UnaryRouter``)."""

    def __init__(self, backend: Backend, authenticate: Authenticate) -> None:
        self._backend = backend
        self._authenticate = authenticate
        self._handlers: dict[str, Callable[[Message, Metadata], Awaitable[Message]]] = {
            api.SIGN_GENERIC: self._sign_generic,
            api.SIGN_G1: self._sign_g1,
            api.LIST_KEYS: self._list_keys,
            api.GET_KEY_METADATA: self._get_key_metadata,
        }

    @property
    def services(self) -> tuple[str, ...]:
        return ("signer.v1.Signer", "keymanager.v1.KeyManager")

    def serves(self, path: str) -> bool:
        return path in self._handlers

    async def handle(self, path: str, message: bytes, metadata: Metadata) -> bytes:
        spec = api.METHODS[path]
        try:
            request = decode_message(spec.request, message, max_size=api.MAX_REQUEST_SIZE)
        except DecodeError as exc:
            raise GrpcError(StatusCode.INVALID_ARGUMENT, f"malformed request: {exc}") from None
        try:
            response = await self._handlers[path](request, metadata)
        except BackendError as exc:
            status, text = _backend_status(exc)
            if status is StatusCode.INTERNAL:
                log.error("grpc: %s: backend error %r", path, exc)
            raise GrpcError(status, text) from None
        except DecodeError as exc:  # e.g. a point the backend rejected
            raise GrpcError(StatusCode.INVALID_ARGUMENT, str(exc)) from None
        return response.to_bytes()

    # --- helpers ----------------------------------------------------------------

    def _client(self, metadata: Metadata) -> Client:
        values = metadata.get("authorization", ())
        if not values:
            raise GrpcError(StatusCode.UNAUTHENTICATED, "missing authorization header")
        if len(values) > 1:
            raise GrpcError(StatusCode.UNAUTHENTICATED, "more than one authorization header")
        try:
            raw = values[0].decode("ascii")
        except UnicodeDecodeError:
            raise GrpcError(StatusCode.UNAUTHENTICATED, "invalid API key") from None
        try:
            client = self._authenticate(raw)
        except Exception:
            log.exception("grpc: API key check failed")
            raise GrpcError(StatusCode.INTERNAL, "could not check the API key") from None
        if client is None:
            raise GrpcError(StatusCode.UNAUTHENTICATED, "invalid API key")
        return client

    async def _find_key(self, public_key_g1: str) -> KeyInfo:
        wanted = normalize_key_hex(public_key_g1)
        for info in await self._backend.list_keys():
            if info.status in _LISTED_STATUSES and g1_to_compressed(info.pk_g1) == wanted:
                return info
        raise GrpcError(StatusCode.NOT_FOUND, f"key {wanted.hex()} not found")

    async def _key_to_sign(self, public_key_g1: str, client: Client) -> KeyInfo:
        info = await self._find_key(public_key_g1)
        if not client.may_sign(info.key_id):
            raise GrpcError(StatusCode.PERMISSION_DENIED, "this API key may not sign with this key")
        return info

    # --- the four methods -------------------------------------------------------

    async def _sign_generic(self, request: Message, metadata: Metadata) -> Message:
        if not isinstance(request, api.SignGenericRequest):
            raise TypeError(type(request).__name__)
        client = self._client(metadata)
        if len(request.data) > MSG_HASH_LEN:
            raise GrpcError(StatusCode.INVALID_ARGUMENT, "data is too long, must be 32 bytes")
        msg_hash = request.data.ljust(MSG_HASH_LEN, b"\x00")
        info = await self._key_to_sign(request.public_key_g1, client)
        result = await self._backend.sign(info.key_id, msg_hash, client=client)
        return api.SignGenericResponse(signature=g1_to_bytes(result.sigma))

    async def _sign_g1(self, request: Message, metadata: Metadata) -> Message:
        if not isinstance(request, api.SignG1Request):
            raise TypeError(type(request).__name__)
        client = self._client(metadata)
        if len(request.data) != G1_RAW_LEN:
            raise GrpcError(StatusCode.INVALID_ARGUMENT, "data must be a 64-byte G1 point X || Y")
        try:
            point = g1_from_bytes(request.data, field="data", allow_infinity=False)
        except DecodeError as exc:
            raise GrpcError(StatusCode.INVALID_ARGUMENT, str(exc)) from None
        info = await self._key_to_sign(request.public_key_g1, client)
        sigma = await self._backend.sign_point(info.key_id, point, client=client)
        return api.SignG1Response(signature=g1_to_bytes(sigma))

    async def _list_keys(self, request: Message, metadata: Metadata) -> Message:
        self._client(metadata)
        keys = tuple(
            api.PublicKey(
                public_key_g1=g1_to_compressed(info.pk_g1).hex(),
                public_key_g2=g2_to_compressed(info.pk_g2).hex(),
            )
            for info in await self._backend.list_keys()
            if info.status in _LISTED_STATUSES
        )
        return api.ListKeysResponse(public_keys=keys)

    async def _get_key_metadata(self, request: Message, metadata: Metadata) -> Message:
        if not isinstance(request, api.GetKeyMetadataRequest):
            raise TypeError(type(request).__name__)
        info = await self._find_key(request.public_key_g1)
        return api.GetKeyMetadataResponse(
            public_key_g1=g1_to_compressed(info.pk_g1).hex(),
            public_key_g2=g2_to_compressed(info.pk_g2).hex(),
        )

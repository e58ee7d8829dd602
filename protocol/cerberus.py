"""The cerberus remote-signer API messages (sans-IO), as frozen proto3 dataclasses.

Mirrors ``proto/signer/v1/signer.proto`` and ``proto/keymanager/v1/key_manager.proto``
(names and field numbers of Layr-Labs/cerberus-api, which eigensdk-go's remote BLS
signer calls). ``METHODS`` maps each gRPC path tkms serves to its request and response
types. Passwords never appear in a repr.

Size caps are generous for real clients and small for abuse: a key in hex is 64
characters (66 with ``0x``); SignGeneric ``data`` is at most 32 bytes and SignG1
``data`` 64, but the caps sit higher so the service can say exactly what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.protowire import FieldSpec, Kind, Message, decode_message

MAX_KEY_HEX_LEN = 256  # cap on a public_key_g1 / public_key_g2 string
MAX_DATA_LEN = 1024  # cap on a data field
MAX_PASSWORD_LEN = 1024
MAX_LISTED_KEYS = 100_000
MAX_REQUEST_SIZE = 16 * 1024  # a request message never needs more

SIGN_GENERIC = "/signer.v1.Signer/SignGeneric"
SIGN_G1 = "/signer.v1.Signer/SignG1"
LIST_KEYS = "/keymanager.v1.KeyManager/ListKeys"
GET_KEY_METADATA = "/keymanager.v1.KeyManager/GetKeyMetadata"


def _key_field(number: int, name: str = "public_key_g1") -> FieldSpec:
    return FieldSpec(number, name, Kind.STRING, max_len=MAX_KEY_HEX_LEN)


def _password_field(number: int) -> FieldSpec:
    return FieldSpec(number, "password", Kind.STRING, max_len=MAX_PASSWORD_LEN)


@dataclass(frozen=True, slots=True)
class SignGenericRequest(Message):
    NAME = "signer.v1.SignGenericRequest"
    FIELDS = (
        _key_field(1),
        FieldSpec(2, "data", Kind.BYTES, max_len=MAX_DATA_LEN),
        _password_field(3),
    )

    public_key_g1: str = ""
    data: bytes = b""
    password: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class SignGenericResponse(Message):
    NAME = "signer.v1.SignGenericResponse"
    FIELDS = (FieldSpec(1, "signature", Kind.BYTES, max_len=MAX_DATA_LEN),)

    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class SignG1Request(Message):
    NAME = "signer.v1.SignG1Request"
    FIELDS = (
        _key_field(1),
        FieldSpec(2, "data", Kind.BYTES, max_len=MAX_DATA_LEN),
        _password_field(3),
    )

    public_key_g1: str = ""
    data: bytes = b""
    password: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class SignG1Response(Message):
    NAME = "signer.v1.SignG1Response"
    FIELDS = (FieldSpec(1, "signature", Kind.BYTES, max_len=MAX_DATA_LEN),)

    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class PublicKey(Message):
    NAME = "keymanager.v1.PublicKey"
    FIELDS = (_key_field(1), _key_field(2, "public_key_g2"))

    public_key_g1: str = ""
    public_key_g2: str = ""


@dataclass(frozen=True, slots=True)
class ListKeysRequest(Message):
    NAME = "keymanager.v1.ListKeysRequest"
    FIELDS = ()


@dataclass(frozen=True, slots=True)
class ListKeysResponse(Message):
    NAME = "keymanager.v1.ListKeysResponse"
    FIELDS = (
        FieldSpec(
            1,
            "public_keys",
            Kind.MESSAGE,
            repeated=True,
            message=PublicKey,
            max_count=MAX_LISTED_KEYS,
        ),
    )

    public_keys: tuple[PublicKey, ...] = ()


@dataclass(frozen=True, slots=True)
class GetKeyMetadataRequest(Message):
    NAME = "keymanager.v1.GetKeyMetadataRequest"
    FIELDS = (_key_field(1),)

    public_key_g1: str = ""


@dataclass(frozen=True, slots=True)
class GetKeyMetadataResponse(Message):
    NAME = "keymanager.v1.GetKeyMetadataResponse"
    FIELDS = (
        _key_field(1),
        _key_field(2, "public_key_g2"),
        FieldSpec(3, "created_at", Kind.INT64),
        FieldSpec(4, "updated_at", Kind.INT64),
    )

    public_key_g1: str = ""
    public_key_g2: str = ""
    created_at: int = 0  # unix seconds
    updated_at: int = 0


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """One unary RPC: its full path and message types."""

    path: str
    request: type[Message]
    response: type[Message]


METHODS: dict[str, MethodSpec] = {
    m.path: m
    for m in (
        MethodSpec(SIGN_GENERIC, SignGenericRequest, SignGenericResponse),
        MethodSpec(SIGN_G1, SignG1Request, SignG1Response),
        MethodSpec(LIST_KEYS, ListKeysRequest, ListKeysResponse),
        MethodSpec(GET_KEY_METADATA, GetKeyMetadataRequest, GetKeyMetadataResponse),
    )
}

__all__ = [
    "GET_KEY_METADATA",
    "LIST_KEYS",
    "METHODS",
    "SIGN_G1",
    "SIGN_GENERIC",
    "GetKeyMetadataRequest",
    "GetKeyMetadataResponse",
    "ListKeysRequest",
    "ListKeysResponse",
    "MethodSpec",
    "PublicKey",
    "SignG1Request",
    "SignG1Response",
    "SignGenericRequest",
    "SignGenericResponse",
    "decode_message",
]

"""The bytes of the RPC protocol, apart from encryption: the cleartext hello, the
Noise handshake payloads (each side's limits), frames and the msgpack envelopes.

Wire format (DESIGN.md §Transport):

* hello, cleartext, both directions, first: ``b"tkms" ‖ u16 version`` (6 bytes).
  The version is also bound into the Noise prologue, so a hello altered in flight
  fails the handshake.
* frame: ``u16 length ‖ Noise message`` (length 1..65,535, and at most the
  receiver's ``max_frame_bytes``).
* transport plaintext: ``flag ‖ chunk`` with flag 0 (last chunk of a message) or 1
  (more chunks follow). A message is the concatenation of its chunks.
* message: msgpack of one envelope, decoded strictly (``unpack_strict``: UTF-8
  strings, str map keys, no duplicate keys, no extension types, nothing after the
  value): request ``{id, method, params}``, response ``{id, result}`` or
  ``{id, error: {code, message}}``. Not the canonical form of
  ``protocol.canonical``: nothing here is signed, and canonical checking cost a
  third of a round trip; schemas then check every value.
* handshake payloads: message 1 empty; message 2 (responder) and 3 (initiator)
  carry the sender's ``Limits`` as canonical msgpack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from protocol.canonical import MSGPACK_DECODE_ERRORS, decode_canonical
from protocol.errors import DecodeError
from protocol.rpc.errors import FrameError, LocalSchemaError, ProtocolViolation, SchemaError
from protocol.rpc.schema import Int, Str, Struct

MAGIC = b"tkms"
PROTOCOL_VERSION = 1
HELLO_LEN = 6
FRAME_HEADER_LEN = 2
MAX_FRAME_LEN = 65535  # Noise's limit on any message
MIN_FRAME_LEN = 512  # room for every handshake message
FLAG_LAST = 0
FLAG_MORE = 1
MAX_REQUEST_ID = 2**64 - 1
MAX_ERROR_MESSAGE = 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """What one side accepts from its peer; advertised in the handshake so the peer
    never exceeds it.

    Attributes:
        max_frame_bytes: largest frame (Noise message) accepted; 65,535 is Noise's
            own limit. A peer sending more is disconnected.
        max_message_bytes: largest reassembled message (default 16 MiB: a DKG
            bundle for 1,024 nodes is well below that).
        max_in_flight: requests the peer may have outstanding with us at once.
    """

    max_frame_bytes: int = MAX_FRAME_LEN
    max_message_bytes: int = 16 * 1024 * 1024
    max_in_flight: int = 32

    def __post_init__(self) -> None:
        try:
            _LIMITS.check(self.to_dict(), "limits")
        except SchemaError as exc:
            raise LocalSchemaError(exc.field, exc.reason) from None

    def to_dict(self) -> dict[str, int]:
        return {
            "max_frame_bytes": self.max_frame_bytes,
            "max_message_bytes": self.max_message_bytes,
            "max_in_flight": self.max_in_flight,
        }

    @classmethod
    def decode(cls, payload: bytes) -> Limits:
        """Limits from a handshake payload.

        Raises:
            ProtocolViolation: not canonical msgpack of a valid limits map.
        """
        try:
            value = _LIMITS.check(decode_canonical(payload, field="limits", max_len=256), "limits")
        except (DecodeError, SchemaError) as exc:
            raise ProtocolViolation("handshake.limits", str(exc)) from None
        return cls(**value)


_LIMITS = Struct(
    {
        "max_frame_bytes": Int(MIN_FRAME_LEN, MAX_FRAME_LEN),
        "max_message_bytes": Int(1024, 2**32 - 1),
        "max_in_flight": Int(1, 65535),
    }
)


def encode_hello(version: int = PROTOCOL_VERSION) -> bytes:
    return MAGIC + version.to_bytes(2, "big")


def decode_hello(data: bytes) -> int:
    """The version in a 6-byte hello.

    Raises:
        FrameError: the magic is not ``b"tkms"``.
    """
    if data[:4] != MAGIC:
        raise FrameError("hello", "not a tkms peer (bad magic)")
    return int.from_bytes(data[4:6], "big")


def frame(noise_message: bytes) -> bytes:
    return len(noise_message).to_bytes(2, "big") + noise_message


# -- envelopes --------------------------------------------------------------------

_ID = Int(0, MAX_REQUEST_ID)
_METHOD = Str(max_len=64)
_ERROR = Struct({"code": Int(0, 2**31 - 1), "message": Str(max_len=MAX_ERROR_MESSAGE)})


@dataclass(frozen=True, slots=True)
class RequestEnvelope:
    request_id: int
    method: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ResponseEnvelope:
    request_id: int
    result: Any = None
    error: tuple[int, str] | None = None  # (code, message)


def _pack(value: Any) -> bytes:
    """msgpack of ``value`` (already schema-checked by the caller).

    Raises:
        TypeError, ValueError, OverflowError: a value msgpack cannot encode.
    """
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def encode_request(request_id: int, method: str, params: Any) -> bytes:
    return _pack({"id": request_id, "method": method, "params": params})


def encode_result(request_id: int, result: Any) -> bytes:
    return _pack({"id": request_id, "result": result})


def encode_error(request_id: int, code: int, message: str) -> bytes:
    message = message[:MAX_ERROR_MESSAGE]
    return _pack({"id": request_id, "error": {"code": code, "message": message}})


def _unique_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("duplicate map key")
    return value


def _no_extensions(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code}")


def unpack_strict(data: bytes, *, field: str, max_len: int) -> Any:
    """Decode one msgpack value strictly (see the module docstring).

    Raises:
        ProtocolViolation: too long, malformed, trailing bytes, invalid UTF-8,
            non-string map keys, duplicate keys or an extension type.
    """
    if len(data) > max_len:
        raise ProtocolViolation(field, f"{len(data)} bytes exceeds the limit of {max_len}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            object_pairs_hook=_unique_keys,
            ext_hook=_no_extensions,
        )
    except MSGPACK_DECODE_ERRORS as exc:
        raise ProtocolViolation(field, f"not valid msgpack ({type(exc).__name__})") from None


def _decode_map(data: bytes, max_len: int) -> dict[str, Any]:
    value = unpack_strict(data, field="message", max_len=max_len)
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ProtocolViolation("message", "must be a map with string keys")
    return value


def decode_request(data: bytes, *, max_len: int) -> RequestEnvelope:
    """A request envelope; params are checked later, against the method's schema.

    Raises:
        ProtocolViolation: not strict msgpack, or not ``{id, method, params}``.
    """
    value = _decode_map(data, max_len)
    if set(value) != {"id", "method", "params"}:
        raise ProtocolViolation("request", "must have exactly id, method and params")
    try:
        _ID.check(value["id"], "request.id")
        _METHOD.check(value["method"], "request.method")
    except SchemaError as exc:
        raise ProtocolViolation(exc.field, exc.reason) from None
    if not isinstance(value["params"], dict):
        raise ProtocolViolation("request.params", "must be a map")
    return RequestEnvelope(value["id"], value["method"], value["params"])


def decode_response(data: bytes, *, max_len: int) -> ResponseEnvelope:
    """A response envelope; the result is checked later, against the method's schema.

    Raises:
        ProtocolViolation: not strict msgpack, or not ``{id, result}`` /
            ``{id, error: {code, message}}``.
    """
    value = _decode_map(data, max_len)
    try:
        if set(value) == {"id", "result"}:
            return ResponseEnvelope(_ID.check(value["id"], "response.id"), value["result"])
        if set(value) == {"id", "error"}:
            error = _ERROR.check(value["error"], "response.error")
            request_id = _ID.check(value["id"], "response.id")
            return ResponseEnvelope(request_id, None, (error["code"], error["message"]))
    except SchemaError as exc:
        raise ProtocolViolation(exc.field, exc.reason) from None
    raise ProtocolViolation("response", "must be {id, result} or {id, error}")

"""A strict, sans-IO proto3 wire codec for the few messages tkms speaks.

Only what the cerberus gRPC API needs: ``string``, ``bytes`` and ``int64`` scalars and
repeated embedded messages. A message type is a frozen dataclass deriving from
:class:`Message` with a ``FIELDS`` schema (field numbers ascending).

Encoding is byte-identical to the official protobuf runtime: known fields in field
number order, proto3 default values omitted, ``int64`` as a two's complement varint.

Decoding accepts a subset of what protobuf accepts and gives the same values for it:
unknown fields of every wire type (groups included, nested at most
``MAX_GROUP_DEPTH`` deep) are skipped, a repeated singular scalar keeps the last
value. Everything else is a :class:`DecodeError` naming the field: truncated or
overlong varints (tags and lengths at most 5 bytes, values at most 10 bytes and below
2**64), field number 0 or above 2**29-1, wire types 6 and 7, a stray end-group, a known
field with the wrong wire type (protobuf would file it as unknown), invalid UTF-8 in a
string, and anything over the size caps (whole message, each field, each repeated
count).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from protocol.errors import DecodeError, InvalidLength, TkmsError

MAX_VARINT_BYTES = 10
MAX_TAG_BYTES = 5
MAX_FIELD_NUMBER = (1 << 29) - 1
MAX_GROUP_DEPTH = 16
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024
DEFAULT_MAX_FIELD_LEN = 4096
DEFAULT_MAX_COUNT = 4096

_U64 = 1 << 64
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1


class WireType(enum.IntEnum):
    VARINT = 0
    I64 = 1
    LEN = 2
    SGROUP = 3
    EGROUP = 4
    I32 = 5


class Kind(enum.Enum):
    """The proto3 field types this codec supports."""

    STRING = "string"
    BYTES = "bytes"
    INT64 = "int64"
    MESSAGE = "message"  # only as a repeated field

    @property
    def wire_type(self) -> WireType:
        return WireType.VARINT if self is Kind.INT64 else WireType.LEN


class ProtoEncodeError(TkmsError):
    """A value our own code asked to encode does not fit its proto3 type."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a message schema."""

    number: int
    name: str
    kind: Kind
    repeated: bool = False
    message: type[Message] | None = None  # element type of a repeated message field
    max_len: int = DEFAULT_MAX_FIELD_LEN  # bytes / UTF-8 bytes of a string, per value
    max_count: int = DEFAULT_MAX_COUNT  # elements of a repeated field

    def default(self) -> Any:
        if self.repeated:
            return ()
        return {Kind.STRING: "", Kind.BYTES: b"", Kind.INT64: 0}[self.kind]


class Message:
    """Base of the frozen dataclasses that describe proto3 messages.

    Subclasses set ``NAME`` (the full proto name, e.g. ``signer.v1.SignG1Request``)
    and ``FIELDS``; the dataclass attribute names equal the field names.
    """

    __slots__ = ()
    NAME: ClassVar[str] = ""
    FIELDS: ClassVar[tuple[FieldSpec, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        numbers = [f.number for f in cls.FIELDS]
        if numbers != sorted(set(numbers)) or any(not 1 <= n <= MAX_FIELD_NUMBER for n in numbers):
            raise TypeError(f"{cls.__name__}: field numbers must be unique and ascending")
        for f in cls.FIELDS:
            if (f.kind is Kind.MESSAGE) != (f.message is not None) or (
                f.kind is Kind.MESSAGE and not f.repeated
            ):
                raise TypeError(f"{cls.__name__}.{f.name}: unsupported field shape")

    def to_bytes(self) -> bytes:
        return encode_message(self)


M = TypeVar("M", bound=Message)


# --- primitives ------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Base-128 varint of an unsigned 64-bit value."""
    if not 0 <= value < _U64:
        raise ProtoEncodeError(f"varint out of range: {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(
    data: bytes, pos: int, *, field: str, max_bytes: int = MAX_VARINT_BYTES
) -> tuple[int, int]:
    """Decode a varint at ``pos``: ``(value, new_pos)``. Truncated, longer than
    ``max_bytes`` or >= 2**64 raises :class:`DecodeError`."""
    result = 0
    shift = 0
    end = len(data)
    for i in range(max_bytes):
        if pos >= end:
            raise DecodeError(field, "truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >= _U64:
                raise DecodeError(field, "varint exceeds 64 bits")
            if max_bytes == MAX_TAG_BYTES and result >= 1 << 32:
                raise DecodeError(field, "varint exceeds 32 bits")
            return result, pos
        shift += 7
        if i == max_bytes - 1:
            break
    raise DecodeError(field, f"varint longer than {max_bytes} bytes")


def encode_tag(number: int, wire_type: WireType) -> bytes:
    return encode_varint((number << 3) | int(wire_type))


def _int64_to_u64(value: int) -> int:
    if not _I64_MIN <= value <= _I64_MAX:
        raise ProtoEncodeError(f"int64 out of range: {value}")
    return value + _U64 if value < 0 else value


def _u64_to_int64(value: int) -> int:
    return value - _U64 if value > _I64_MAX else value


# --- encoding --------------------------------------------------------------------


def _encode_len(number: int, payload: bytes) -> bytes:
    return encode_tag(number, WireType.LEN) + encode_varint(len(payload)) + payload


def encode_message(msg: Message) -> bytes:
    """Serialize ``msg`` exactly as the official protobuf runtime does."""
    out = bytearray()
    for spec in type(msg).FIELDS:
        value = getattr(msg, spec.name)
        if spec.repeated:
            for item in value:
                if not isinstance(item, Message):
                    raise ProtoEncodeError(f"{type(msg).NAME}.{spec.name}: not a message")
                out += _encode_len(spec.number, encode_message(item))
        elif spec.kind is Kind.STRING:
            if not isinstance(value, str):
                raise ProtoEncodeError(f"{type(msg).NAME}.{spec.name}: not a str")
            if value:
                out += _encode_len(spec.number, value.encode("utf-8"))
        elif spec.kind is Kind.BYTES:
            if not isinstance(value, bytes):
                raise ProtoEncodeError(f"{type(msg).NAME}.{spec.name}: not bytes")
            if value:
                out += _encode_len(spec.number, value)
        else:  # INT64
            if not isinstance(value, int) or isinstance(value, bool):
                raise ProtoEncodeError(f"{type(msg).NAME}.{spec.name}: not an int")
            if value:
                out += encode_tag(spec.number, WireType.VARINT)
                out += encode_varint(_int64_to_u64(value))
    return bytes(out)


# --- decoding --------------------------------------------------------------------


def _read_len(data: bytes, pos: int, *, field: str) -> tuple[int, int]:
    length, pos = decode_varint(data, pos, field=field, max_bytes=MAX_TAG_BYTES)
    if length > len(data) - pos:
        raise DecodeError(field, f"length {length} runs past the end of the message")
    return length, pos


def _read_tag(data: bytes, pos: int, *, field: str) -> tuple[int, int, int]:
    tag, pos = decode_varint(data, pos, field=field, max_bytes=MAX_TAG_BYTES)
    number, wire = tag >> 3, tag & 7
    if number == 0 or number > MAX_FIELD_NUMBER:
        raise DecodeError(field, f"invalid field number {number}")
    if wire > WireType.I32:
        raise DecodeError(f"{field}#{number}", f"invalid wire type {wire}")
    return number, wire, pos


def _skip_field(data: bytes, pos: int, number: int, wire: int, *, field: str) -> int:
    """Skip one unknown field whose tag has been read; returns the new position."""
    groups: list[int] = []  # field numbers of the open groups
    while True:
        where = f"{field}#{number}"
        if wire == WireType.VARINT:
            _, pos = decode_varint(data, pos, field=where)
        elif wire in (WireType.I64, WireType.I32):
            size = 8 if wire == WireType.I64 else 4
            if len(data) - pos < size:
                raise DecodeError(where, "truncated fixed-width value")
            pos += size
        elif wire == WireType.LEN:
            length, pos = _read_len(data, pos, field=where)
            pos += length
        elif wire == WireType.SGROUP:
            if len(groups) >= MAX_GROUP_DEPTH:
                raise DecodeError(where, f"groups nested deeper than {MAX_GROUP_DEPTH}")
            groups.append(number)
        else:  # EGROUP
            if not groups or groups[-1] != number:
                raise DecodeError(where, "end-group without a matching start-group")
            groups.pop()
        if not groups:
            return pos
        if pos >= len(data):
            raise DecodeError(where, "unterminated group")
        number, wire, pos = _read_tag(data, pos, field=field)


def _decode_value(spec: FieldSpec, data: bytes, pos: int, *, where: str) -> tuple[Any, int]:
    if spec.kind is Kind.INT64:
        raw, pos = decode_varint(data, pos, field=where)
        return _u64_to_int64(raw), pos
    length, pos = _read_len(data, pos, field=where)
    if spec.kind is not Kind.MESSAGE and length > spec.max_len:
        raise InvalidLength(where, f"{length} bytes exceeds the cap of {spec.max_len}")
    chunk = bytes(data[pos : pos + length])
    pos += length
    if spec.kind is Kind.BYTES:
        return chunk, pos
    if spec.kind is Kind.STRING:
        try:
            return chunk.decode("utf-8"), pos
        except UnicodeDecodeError:
            raise DecodeError(where, "string is not valid UTF-8") from None
    if spec.message is None:  # excluded by Message.__init_subclass__
        raise ProtoEncodeError(f"{where}: message field without a message type")
    return _decode_fields(spec.message, chunk, field=where), pos


def _decode_fields(cls: type[M], data: bytes, *, field: str) -> M:
    by_number = {f.number: f for f in cls.FIELDS}
    values: dict[str, Any] = {}
    lists: dict[str, list[Any]] = {}
    pos = 0
    while pos < len(data):
        number, wire, pos = _read_tag(data, pos, field=field)
        spec = by_number.get(number)
        if spec is None:
            pos = _skip_field(data, pos, number, wire, field=field)
            continue
        where = f"{field}.{spec.name}"
        if wire != spec.kind.wire_type:
            raise DecodeError(where, f"wire type {wire}, expected {int(spec.kind.wire_type)}")
        value, pos = _decode_value(spec, data, pos, where=where)
        if spec.repeated:
            items = lists.setdefault(spec.name, [])
            if len(items) >= spec.max_count:
                raise DecodeError(where, f"more than {spec.max_count} elements")
            items.append(value)
        else:
            values[spec.name] = value
    for name, items in lists.items():
        values[name] = tuple(items)
    return cls(**values)


def decode_message(
    cls: type[M], data: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE, field: str = ""
) -> M:
    """Parse ``data`` as a ``cls`` message; any malformed input is a DecodeError."""
    name = field or cls.NAME
    if len(data) > max_size:
        raise InvalidLength(name, f"message of {len(data)} bytes exceeds the cap of {max_size}")
    return _decode_fields(cls, bytes(data), field=name)

"""protocol/protowire + protocol/cerberus against the official protobuf runtime.

Encodings must be byte-identical to protobuf's, decodings must agree with it (unknown
fields included), and the schemas must match the descriptors protoc builds from our
.proto files.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import cerberus as c
from protocol.protowire import (
    Kind,
    Message,
    ProtoEncodeError,
    WireType,
    decode_message,
    decode_varint,
    encode_message,
    encode_tag,
    encode_varint,
)
from tests.protocol.official_protobuf import official_modules

ALL: list[type[Message]] = [
    c.SignGenericRequest,
    c.SignGenericResponse,
    c.SignG1Request,
    c.SignG1Response,
    c.PublicKey,
    c.ListKeysRequest,
    c.ListKeysResponse,
    c.GetKeyMetadataRequest,
    c.GetKeyMetadataResponse,
]
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def official_class(cls: type[Message]) -> Any:
    package, name = cls.NAME.rsplit(".", 1)
    module = official_modules()["signer" if package.startswith("signer") else "keymanager"]
    return getattr(module, name)


def to_official(msg: Message) -> Any:
    pb = official_class(type(msg))()
    for spec in type(msg).FIELDS:
        value = getattr(msg, spec.name)
        if spec.repeated:
            getattr(pb, spec.name).extend(to_official(item) for item in value)
        else:
            setattr(pb, spec.name, value)
    return pb


def from_official(cls: type[Message], pb: Any) -> Message:
    values: dict[str, Any] = {}
    for spec in cls.FIELDS:
        value = getattr(pb, spec.name)
        if spec.repeated:
            assert spec.message is not None
            values[spec.name] = tuple(from_official(spec.message, v) for v in value)
        else:
            values[spec.name] = value
    return cls(**values)


def strategy(cls: type[Message]) -> st.SearchStrategy[Message]:
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for spec in cls.FIELDS:
        if spec.repeated:
            assert spec.message is not None
            fields[spec.name] = st.lists(strategy(spec.message), max_size=4).map(tuple)
        elif spec.kind is Kind.STRING:
            fields[spec.name] = st.text(max_size=40).filter(
                lambda s, cap=spec.max_len: len(s.encode()) <= cap
            )
        elif spec.kind is Kind.BYTES:
            fields[spec.name] = st.binary(max_size=80)
        else:
            fields[spec.name] = INT64
    return st.builds(cls, **fields)


ANY_MESSAGE = st.sampled_from(ALL).flatmap(strategy)


@pytest.mark.parametrize("cls", ALL, ids=lambda k: k.NAME)
def test_schema_matches_the_official_descriptor(cls: type[Message]) -> None:
    desc = official_class(cls).DESCRIPTOR
    assert desc.full_name == cls.NAME
    kinds = {
        Kind.STRING: descriptor.FieldDescriptor.TYPE_STRING,
        Kind.BYTES: descriptor.FieldDescriptor.TYPE_BYTES,
        Kind.INT64: descriptor.FieldDescriptor.TYPE_INT64,
        Kind.MESSAGE: descriptor.FieldDescriptor.TYPE_MESSAGE,
    }
    ours = [(f.number, f.name, kinds[f.kind], f.repeated) for f in cls.FIELDS]
    theirs = [
        (f.number, f.name, f.type, f.is_repeated)
        for f in sorted(desc.fields, key=lambda f: f.number)
    ]
    assert ours == theirs


def test_methods_match_the_official_services() -> None:
    official: dict[str, tuple[str, str]] = {}
    for module in official_modules().values():
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                official[f"/{service.full_name}/{m.name}"] = (
                    m.input_type.full_name,
                    m.output_type.full_name,
                )
    for path, spec in c.METHODS.items():
        assert official[path] == (spec.request.NAME, spec.response.NAME)
    assert set(c.METHODS) == {c.SIGN_GENERIC, c.SIGN_G1, c.LIST_KEYS, c.GET_KEY_METADATA}


@settings(max_examples=150, deadline=None)
@given(ANY_MESSAGE)
def test_encoding_is_byte_identical_to_protobuf(msg: Message) -> None:
    ours = encode_message(msg)
    assert ours == to_official(msg).SerializeToString()
    assert decode_message(type(msg), ours) == msg


@settings(max_examples=150, deadline=None)
@given(ANY_MESSAGE, st.data())
def test_unknown_fields_are_skipped_like_protobuf(msg: Message, data: st.DataObject) -> None:
    cls = type(msg)
    known = {f.number for f in cls.FIELDS}
    unknown = st.integers(1, 2**29 - 1).filter(lambda n: n not in known)
    chunks = [encode_message(msg)]
    for _ in range(data.draw(st.integers(0, 4))):
        number = data.draw(unknown)
        kind = data.draw(st.sampled_from(["varint", "i64", "len", "i32", "group"]))
        if kind == "varint":
            field = encode_tag(number, WireType.VARINT) + encode_varint(
                data.draw(st.integers(0, 2**64 - 1))
            )
        elif kind == "i64":
            field = encode_tag(number, WireType.I64) + data.draw(st.binary(min_size=8, max_size=8))
        elif kind == "i32":
            field = encode_tag(number, WireType.I32) + data.draw(st.binary(min_size=4, max_size=4))
        elif kind == "len":
            blob = data.draw(st.binary(max_size=20))
            field = encode_tag(number, WireType.LEN) + encode_varint(len(blob)) + blob
        else:
            inner = encode_tag(number, WireType.VARINT) + b"\x01"
            start, end = encode_tag(number, WireType.SGROUP), encode_tag(number, WireType.EGROUP)
            field = start + inner + end
        chunks.insert(data.draw(st.integers(0, len(chunks))), field)
    wire = b"".join(chunks)
    pb = official_class(cls)()
    pb.ParseFromString(wire)
    ours = decode_message(cls, wire)
    assert ours == from_official(cls, pb)
    assert ours == msg  # the unknown fields change nothing, wherever they sit


def test_last_value_wins_for_a_repeated_singular_field() -> None:
    wire = (
        c.SignGenericRequest(public_key_g1="aa").to_bytes()
        + c.SignGenericRequest(public_key_g1="bb", data=b"\x01").to_bytes()
    )
    pb = official_class(c.SignGenericRequest)()
    pb.ParseFromString(wire)
    assert pb.public_key_g1 == "bb"
    assert decode_message(c.SignGenericRequest, wire) == c.SignGenericRequest("bb", b"\x01")


def test_empty_repeated_elements_and_defaults() -> None:
    msg = c.ListKeysResponse((c.PublicKey(), c.PublicKey("a", "")))
    assert msg.to_bytes() == to_official(msg).SerializeToString() == b"\x0a\x00\x0a\x03\x0a\x01a"
    assert c.GetKeyMetadataResponse().to_bytes() == b""
    assert decode_message(c.ListKeysRequest, b"") == c.ListKeysRequest()


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**64 - 1))
def test_varint_round_trip(value: int) -> None:
    raw = encode_varint(value)
    assert decode_varint(raw + b"\xff", 0, field="v") == (value, len(raw))
    assert len(raw) <= 10


def test_encoder_rejects_values_outside_their_type() -> None:
    with pytest.raises(ProtoEncodeError):
        encode_message(c.GetKeyMetadataResponse(created_at=2**63))
    with pytest.raises(ProtoEncodeError):
        encode_message(c.SignGenericResponse(signature="not bytes"))  # type: ignore[arg-type]
    with pytest.raises(ProtoEncodeError):
        encode_varint(-1)


def test_password_never_appears_in_a_repr() -> None:
    req = c.SignGenericRequest("ab", b"\x00", password="hunter2-secret")
    g1 = c.SignG1Request("ab", b"\x00", password="hunter2-secret")
    assert "hunter2" not in repr(req) and "hunter2" not in repr(g1)
    assert req.password == "hunter2-secret"

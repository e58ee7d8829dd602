"""protocol/grpcwire: header parsing, unary body framing, status encodings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.grpcwire import (
    GrpcError,
    HttpError,
    StatusCode,
    UnaryBody,
    decode_grpc_message,
    encode_grpc_message,
    frame_message,
    parse_request_head,
    parse_timeout,
    trailers_only,
    unknown_method_error,
)

BASE = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/signer.v1.Signer/SignGeneric"),
    (b":authority", b"127.0.0.1"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
]


def test_request_head_extracts_path_timeout_and_metadata() -> None:
    head = parse_request_head(
        [
            *BASE,
            (b"grpc-timeout", b"250m"),
            (b"authorization", b"key-1"),
            (b"x-extra", b"a"),
            (b"x-extra", b"b"),
            (b"user-agent", b"grpc-go/1.70"),
        ]
    )
    assert head.path == "/signer.v1.Signer/SignGeneric"
    assert head.timeout == pytest.approx(0.25)
    assert head.encoding == "identity"
    assert head.metadata_value("authorization") == (b"key-1",)
    assert head.metadata_value("x-extra") == (b"a", b"b")
    assert "user-agent" not in head.metadata and "te" not in head.metadata


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ((b":method", b"GET"), 405),
        ((b"content-type", b"application/json"), 415),
        ((b"content-type", b"application/grpcx"), 415),
    ],
)
def test_non_grpc_requests_get_an_http_status(change: tuple[bytes, bytes], status: int) -> None:
    headers = [change if name == change[0] else (name, v) for name, v in BASE]
    with pytest.raises(HttpError) as info:
        parse_request_head(headers)
    assert info.value.http_status == status


def test_content_type_variants_are_grpc() -> None:
    for ct in (b"application/grpc+proto", b"application/grpc;charset=utf-8"):
        headers = [(n, ct if n == b"content-type" else v) for n, v in BASE]
        assert parse_request_head(headers).path.endswith("SignGeneric")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(b"1S", 1.0), (b"2M", 120.0), (b"1H", 3600.0), (b"5u", 5e-6), (b"99999999n", 0.099999999)],
)
def test_timeouts(value: bytes, seconds: float) -> None:
    assert parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"S", b"1", b"1s", b"123456789S", b"-1S", b"1.5S"])
def test_malformed_timeouts_are_internal(value: bytes) -> None:
    with pytest.raises(GrpcError) as info:
        parse_timeout(value)
    assert info.value.status is StatusCode.INTERNAL


def test_unknown_method_texts() -> None:
    services = ["signer.v1.Signer"]
    e = unknown_method_error("/signer.v1.Signer/Nope", services)
    assert (e.status, e.message) == (
        StatusCode.UNIMPLEMENTED,
        "unknown method Nope for service signer.v1.Signer",
    )
    e = unknown_method_error("/foo.Bar/Baz", services)
    assert e.message == "unknown service foo.Bar"
    assert unknown_method_error("nonsense", services).message.startswith("malformed method name")


def test_unary_body_accepts_one_message_in_pieces() -> None:
    framed = frame_message(b"hello")
    body = UnaryBody(max_message_size=100)
    for i in range(len(framed)):
        body.feed(framed[i : i + 1])
    assert body.finish() == b"hello"
    empty = UnaryBody(max_message_size=100)
    empty.feed(frame_message(b""))
    assert empty.finish() == b""


@pytest.mark.parametrize(
    ("body", "encoding", "status", "text"),
    [
        (b"\x01\x00\x00\x00\x01x", "identity", StatusCode.INTERNAL, "compressed flag set"),
        (b"\x01\x00\x00\x00\x01x", "gzip", StatusCode.UNIMPLEMENTED, "Decompressor"),
        (b"\x02\x00\x00\x00\x01x", "identity", StatusCode.INTERNAL, "invalid compressed flag"),
        (b"\x00\x00\x00\x10\x01", "identity", StatusCode.RESOURCE_EXHAUSTED, "(4097 vs. 4096)"),
        (frame_message(b"a") + frame_message(b"b"), "identity", StatusCode.INTERNAL, "more than"),
    ],
)
def test_unary_body_rejections(body: bytes, encoding: str, status: StatusCode, text: str) -> None:
    ub = UnaryBody(max_message_size=4096, encoding=encoding)
    with pytest.raises(GrpcError) as info:
        ub.feed(body)
        ub.finish()
    assert info.value.status is status
    assert text in info.value.message


@pytest.mark.parametrize("body", [b"", b"\x00\x00", b"\x00\x00\x00\x00\x05abc"])
def test_unary_body_incomplete(body: bytes) -> None:
    ub = UnaryBody(max_message_size=4096)
    ub.feed(body)
    with pytest.raises(GrpcError) as info:
        ub.finish()
    assert info.value.status is StatusCode.INTERNAL


def test_oversize_is_rejected_from_the_prefix_alone() -> None:
    ub = UnaryBody(max_message_size=10)
    with pytest.raises(GrpcError):
        ub.feed(b"\x00\x00\x00\x00\x0b")  # 11 announced, nothing sent yet


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_grpc_message_percent_encoding_round_trips(text: str) -> None:
    raw = encode_grpc_message(text)
    assert all(0x20 <= b <= 0x7E for b in raw)
    assert decode_grpc_message(raw) == text


def test_grpc_message_examples() -> None:
    assert encode_grpc_message("a%b\n") == b"a%25b%0A"
    assert encode_grpc_message("é") == b"%C3%A9"
    assert decode_grpc_message(b"100%") == "100%"


def test_status_names_match_grpc_go() -> None:
    assert StatusCode.OK.go_name == "OK"
    assert StatusCode.CANCELLED.go_name == "Canceled"
    assert StatusCode.INVALID_ARGUMENT.go_name == "InvalidArgument"
    assert StatusCode.UNAUTHENTICATED.go_name == "Unauthenticated"
    assert StatusCode.DEADLINE_EXCEEDED.go_name == "DeadlineExceeded"
    headers = dict(trailers_only(StatusCode.NOT_FOUND, "no key"))
    assert headers[b"grpc-status"] == b"5" and headers[b"grpc-message"] == b"no key"

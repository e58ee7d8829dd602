"""Wire format decoders: for any bytes, each returns a valid value or raises its typed
error (h11's fuzz invariant), and valid envelopes round-trip."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.canonical import encode_canonical
from protocol.rpc import FrameError, Limits, LocalSchemaError, ProtocolViolation
from protocol.rpc.messages import (
    decode_hello,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_result,
)


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_decoders_on_arbitrary_bytes(data: bytes) -> None:
    for decode in (decode_request, decode_response):
        with contextlib.suppress(ProtocolViolation):
            decode(data, max_len=1024)
    with contextlib.suppress(ProtocolViolation):
        Limits.decode(data)


@settings(max_examples=100)
@given(
    st.dictionaries(
        st.sampled_from(["id", "method", "params", "result", "error", "x"]),
        st.none()
        | st.integers(-5, 2**64 - 1)
        | st.text(max_size=5)
        | st.dictionaries(
            st.sampled_from(["code", "message"]), st.integers(-1, 9) | st.text(max_size=3)
        ),
        max_size=4,
    )
)
def test_decoders_on_arbitrary_maps(value: dict[str, object]) -> None:
    data = encode_canonical(value)
    for decode in (decode_request, decode_response):
        try:
            envelope = decode(data, max_len=1024)
        except ProtocolViolation:
            continue
        assert envelope.request_id == value["id"]


def test_envelopes_round_trip() -> None:
    req = decode_request(encode_request(7, "node.sign", {"a": b"x"}), max_len=100)
    assert (req.request_id, req.method, req.params) == (7, "node.sign", {"a": b"x"})
    assert decode_response(encode_result(7, [1, 2]), max_len=100).result == [1, 2]
    err = decode_response(encode_error(7, 3, "boom" * 1000), max_len=4096)
    assert err.error is not None and err.error[0] == 3 and len(err.error[1]) == 1024


def test_envelope_strictness() -> None:
    with pytest.raises(ProtocolViolation):
        decode_request(encode_canonical({"id": 1, "method": "m", "params": {}, "x": 1}), max_len=99)
    with pytest.raises(ProtocolViolation):
        decode_request(encode_canonical({"id": -1, "method": "m", "params": {}}), max_len=99)
    with pytest.raises(ProtocolViolation):
        decode_request(encode_canonical({"id": 1, "method": "m", "params": []}), max_len=99)
    with pytest.raises(ProtocolViolation):
        decode_response(encode_canonical({"id": 1, "result": 1, "error": None}), max_len=99)
    with pytest.raises(ProtocolViolation):
        decode_response(b"\x82\xa2id\x01\xa2id\x02", max_len=99)  # duplicate key
    with pytest.raises(ProtocolViolation):
        decode_response(b"\x82\xa2id\x01\xa6result\xd4\x05\x00", max_len=99)  # extension type
    with pytest.raises(ProtocolViolation):
        decode_response(encode_result(1, None) + b"\x00", max_len=99)  # trailing byte
    with pytest.raises(ProtocolViolation):
        decode_response(b"\x82\xa2id\x01\xa6result\xa2\xff\xfe", max_len=99)  # bad UTF-8
    with pytest.raises(ProtocolViolation):
        decode_response(b"\x82\xa2id\x01\x01\x02", max_len=99)  # integer map key
    with pytest.raises(ProtocolViolation):
        decode_response(encode_result(1, b"x" * 200), max_len=99)  # over the limit


def test_hello_and_limits() -> None:
    assert decode_hello(b"tkms\x00\x07") == 7
    with pytest.raises(FrameError):
        decode_hello(b"http/1")
    with pytest.raises(LocalSchemaError):
        Limits(max_frame_bytes=100)  # below what a handshake message needs
    with pytest.raises(LocalSchemaError):
        Limits(max_frame_bytes=70_000)  # above Noise's 65,535
    limits = Limits(max_frame_bytes=1000, max_message_bytes=5000, max_in_flight=3)
    assert Limits.decode(encode_canonical(limits.to_dict())) == limits
    with pytest.raises(ProtocolViolation):
        Limits.decode(encode_canonical({**limits.to_dict(), "extra": 1}))

"""The sans-IO RPC connection: handshake, pinning, version refusal, requests and
responses, chunking, limits; and hypothesis driving garbage, truncated, replayed,
reordered and oversized input into every phase: a typed PEER error, state unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import event as event_note
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import Fault, TkmsError
from protocol.noise import DecryptError, KeyPair
from protocol.rpc import (
    NEED_DATA,
    Bytes,
    Connection,
    ConnectionClosed,
    ConnectionStateError,
    ErrorCode,
    ErrorReceived,
    Event,
    FrameError,
    HandshakeComplete,
    Int,
    Limits,
    LocalSchemaError,
    MessageTooLarge,
    Method,
    Nil,
    OutgoingTooLarge,
    PeerNotAllowed,
    Phase,
    ProtocolViolation,
    RequestReceived,
    RequestRejected,
    ResponseReceived,
    ResultRejected,
    Role,
    Str,
    Struct,
    TooManyInFlight,
    VersionMismatch,
)
from protocol.rpc.messages import encode_hello, encode_result, frame

CID = b"\x11" * 16
ECHO = Method(
    "test.echo", Struct({"data": Bytes(max_len=1 << 20)}), Struct({"data": Bytes(max_len=1 << 20)})
)
COUNT = Method("test.count", Struct({"n": Int(0, 10)}), Int(0, 10))
SERVER_LIMITS = Limits(max_frame_bytes=4096, max_message_bytes=64 * 1024, max_in_flight=4)
CLIENT_LIMITS = Limits(max_frame_bytes=8192)


def make_pair(
    *,
    client_version: int = 1,
    client_cluster: bytes = CID,
    client_key: KeyPair | None = None,
    pinned_server_key: bytes | None = None,
    server_limits: Limits = SERVER_LIMITS,
    client_limits: Limits | None = None,
    server_methods: Sequence[Method] = (ECHO, COUNT),
) -> tuple[Connection, Connection]:
    kc, ks = KeyPair.generate(), KeyPair.generate()
    allowed_client = kc.public
    client = Connection(
        Role.INITIATOR,
        static=client_key or kc,
        cluster_id=client_cluster,
        allowed_peers=[pinned_server_key or ks.public],
        version=client_version,
        limits=client_limits,
    )
    server = Connection(
        Role.RESPONDER,
        static=ks,
        cluster_id=CID,
        allowed_peers=[allowed_client],
        methods=server_methods,
        limits=server_limits,
    )
    return client, server


def drain(conn: Connection) -> list[Event]:
    events: list[Event] = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, ConnectionClosed):
            break
    return events


def transfer(src: Connection, dst: Connection) -> list[Event]:
    dst.receive_data(src.data_to_send())
    return drain(dst)


def open_pair(**kwargs: Any) -> tuple[Connection, Connection]:
    client, server = make_pair(**kwargs)
    assert transfer(client, server) == []
    (done_c,) = transfer(server, client)
    (done_s,) = transfer(client, server)
    assert isinstance(done_c, HandshakeComplete) and isinstance(done_s, HandshakeComplete)
    assert done_c.handshake_hash == done_s.handshake_hash
    assert client.phase is server.phase is Phase.OPEN
    return client, server


def core(conn: Connection) -> tuple[object, ...]:
    """Everything observable except bytes merely sitting in the input buffer."""
    s = conn.statistics()
    return (
        s.phase,
        s.partial_message_bytes,
        s.frames_received,
        s.messages_received,
        s.frames_sent,
        s.messages_sent,
        s.requests_in_flight,
        conn.remote_static,
        conn.peer_limits,
    )


# -- the happy paths ------------------------------------------------------------------


def test_handshake_learns_the_pinned_keys_and_limits() -> None:
    client, server = open_pair()
    assert client.peer_limits == SERVER_LIMITS
    assert server.peer_limits == Limits()
    assert client.remote_static is not None and server.remote_static is not None


def test_several_requests_in_flight_answered_out_of_order() -> None:
    client, server = open_pair()
    ids = [client.send_request(COUNT, {"n": n}) for n in range(3)]
    received = transfer(client, server)
    assert [e.request_id for e in received if isinstance(e, RequestReceived)] == ids
    assert client.statistics().requests_in_flight == 3
    for event in reversed(received):
        assert isinstance(event, RequestReceived)
        server.send_response(event.request_id, event.params["n"])
    answers = transfer(server, client)
    assert [(e.request_id, e.result) for e in answers if isinstance(e, ResponseReceived)] == [
        (2, 2),
        (1, 1),
        (0, 0),
    ]
    assert client.statistics().requests_in_flight == server.statistics().requests_in_flight == 0


def test_large_messages_are_chunked_to_the_peers_frame_limit_and_reassembled() -> None:
    client, server = open_pair()
    data = bytes(range(256)) * 200  # 51,200 bytes > 4,096-byte frames
    client.send_request(ECHO, {"data": data})
    wire = client.data_to_send()
    assert client.statistics().frames_sent >= 13  # 1 handshake + >= 13 chunks
    server.receive_data(wire)
    (event,) = drain(server)
    assert isinstance(event, RequestReceived) and event.params["data"] == data
    server.send_response(event.request_id, {"data": data * 4})  # client accepts 16 MiB
    (answer,) = transfer(server, client)
    assert isinstance(answer, ResponseReceived) and answer.result["data"] == data * 4


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(1, 5000), max_size=30))
def test_any_split_of_the_byte_stream_gives_the_same_events(cuts: list[int]) -> None:
    client, server = make_pair()
    server.receive_data(client.data_to_send())
    drain(server)
    client.receive_data(server.data_to_send())
    drain(client)
    client.send_request(ECHO, {"data": b"z" * 9000})
    client.send_request(COUNT, {"n": 3})
    wire = client.data_to_send()
    events: list[Event] = []
    pos = 0
    for cut in [*cuts, len(wire)]:
        server.receive_data(wire[pos : pos + cut])
        pos += cut
        events += drain(server)
        if pos >= len(wire):
            break
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["HandshakeComplete", "RequestReceived", "RequestReceived"]


# -- refusals before any RPC --------------------------------------------------------------


def test_version_mismatch_is_refused_by_both_sides_before_the_handshake() -> None:
    client, server = make_pair(client_version=2)
    server.receive_data(client.data_to_send())
    with pytest.raises(VersionMismatch) as info:
        server.next_event()
    assert (info.value.ours, info.value.theirs) == (1, 2)
    assert "newer" in str(info.value) and info.value.fault is Fault.PEER
    assert server.statistics().frames_received == 0
    client.receive_data(server.data_to_send())  # the server's hello tells the client why
    with pytest.raises(VersionMismatch) as info:
        client.next_event()
    assert (info.value.ours, info.value.theirs) == (2, 1)


def test_other_cluster_fails_the_handshake() -> None:
    client, server = make_pair(client_cluster=b"\x22" * 16)
    assert transfer(client, server) == []  # XX message 1 is not authenticated
    with pytest.raises(DecryptError):
        transfer(server, client)
    assert client.phase is Phase.HELLO  # the whole failing call was undone
    assert server.phase is Phase.HANDSHAKE


def test_unlisted_client_key_is_refused_before_its_first_request_surfaces() -> None:
    client, server = make_pair(client_key=KeyPair.generate())
    transfer(client, server)
    transfer(server, client)  # the client thinks it is open...
    client.send_request(COUNT, {"n": 1})  # ...and pipelines a request behind message 3
    server.receive_data(client.data_to_send())
    for _ in range(2):  # sticky: the request behind it never surfaces
        with pytest.raises(PeerNotAllowed):
            server.next_event()
    assert server.phase is Phase.HANDSHAKE and server.statistics().messages_received == 0


def test_client_refuses_a_server_key_other_than_the_pinned_one() -> None:
    client, server = make_pair(pinned_server_key=KeyPair.generate().public)
    transfer(client, server)
    with pytest.raises(PeerNotAllowed):
        transfer(server, client)
    assert client.data_to_send() == b""  # message 3 was never written


# -- error responses and limits ------------------------------------------------------------


def test_unknown_method_and_invalid_params_are_answered_without_a_request_event() -> None:
    client, server = open_pair(server_methods=(COUNT,))
    client.send_request(ECHO, {"data": b"x"})  # not served by this server
    bad = Method("test.count", Struct({"n": Str(max_len=5)}), Nil())  # client's own idea
    client.send_request(bad, {"n": "nope"})
    events = transfer(client, server)
    assert [(type(e), e.code) for e in events if isinstance(e, RequestRejected)] == [
        (RequestRejected, ErrorCode.UNKNOWN_METHOD),
        (RequestRejected, ErrorCode.INVALID_PARAMS),
    ]
    assert not any(isinstance(e, RequestReceived) for e in events)
    answers = transfer(server, client)
    assert [(e.code, "params.n" in e.message) for e in answers if isinstance(e, ErrorReceived)] == [
        (ErrorCode.UNKNOWN_METHOD, False),
        (ErrorCode.INVALID_PARAMS, True),
    ]


def test_requests_above_the_in_flight_cap() -> None:
    client, server = open_pair()
    for n in range(4):
        client.send_request(COUNT, {"n": n})
    with pytest.raises(TooManyInFlight):
        client.send_request(COUNT, {"n": 4})
    # A rogue client that ignores the advertised cap gets BUSY, not a closed connection.
    client._peer_limits = Limits(max_in_flight=100)
    client.send_request(COUNT, {"n": 5})
    events = transfer(client, server)
    assert [type(e) for e in events] == [RequestReceived] * 4 + [RequestRejected]
    assert isinstance(events[-1], RequestRejected) and events[-1].code is ErrorCode.BUSY


def test_result_schema_is_checked_on_both_sides() -> None:
    client, server = open_pair(server_methods=(Method("test.count", COUNT.params, Int(0, 100)),))
    rid = client.send_request(COUNT, {"n": 1})
    (event,) = transfer(client, server)
    assert isinstance(event, RequestReceived)
    before = core(server)
    with pytest.raises(LocalSchemaError):
        server.send_response(rid, "not an int")
    assert core(server) == before
    server.send_response(rid, 50)  # valid for the server's schema, not the client's
    (answer,) = transfer(server, client)
    assert isinstance(answer, ResultRejected) and "result" in answer.reason


def test_abandoned_request_drops_its_late_answer() -> None:
    client, server = open_pair()
    rid = client.send_request(COUNT, {"n": 1})
    client.abandon(rid)
    assert client.statistics().requests_in_flight == 1  # still outstanding at the server
    (event,) = transfer(client, server)
    assert isinstance(event, RequestReceived)
    server.send_response(rid, 1)
    assert transfer(server, client) == []
    assert client.statistics().requests_in_flight == 0


def test_outgoing_size_limits_and_wrong_state() -> None:
    client, server = make_pair()
    with pytest.raises(ConnectionStateError):
        client.send_request(COUNT, {"n": 1})  # not open yet
    client, server = open_pair()
    with pytest.raises(OutgoingTooLarge):
        client.send_request(ECHO, {"data": bytes(70_000)})  # server accepts 64 KiB
    with pytest.raises(LocalSchemaError):
        client.send_request(COUNT, {"n": 11})
    with pytest.raises(ConnectionStateError):
        client.send_response(0, 1)  # the initiator does not serve
    with pytest.raises(ConnectionStateError):
        server.send_error(42, 1, "no such request")
    with pytest.raises(ConnectionStateError):
        server.send_request(COUNT, {"n": 1})
    assert client.statistics().messages_sent == 0


def test_response_to_a_request_never_made_and_duplicate_ids() -> None:
    client, server = open_pair()
    server._queue_message(encode_result(99, None))  # a rogue server
    with pytest.raises(ProtocolViolation):
        transfer(server, client)
    client, server = open_pair()
    client.send_request(COUNT, {"n": 1})
    client._next_id = 0  # a rogue client reusing an id in flight
    client.send_request(COUNT, {"n": 2})
    server.receive_data(client.data_to_send())
    assert isinstance(server.next_event(), RequestReceived)
    with pytest.raises(ProtocolViolation):
        server.next_event()


def test_end_of_stream() -> None:
    client, server = open_pair()
    server.receive_data(b"")
    assert drain(server) == [ConnectionClosed(Phase.OPEN)]
    assert server.phase is Phase.CLOSED
    client, server = make_pair()
    server.receive_data(client.data_to_send()[:10])
    server.receive_data(b"")
    with pytest.raises(FrameError, match="ends in the middle"):
        server.next_event()


# -- hypothesis: bad input into every phase of both sides ---------------------------------

STAGES = ["hello", "handshake", "open"]
MUTATIONS = ["garbage", "truncated", "replayed", "reordered", "oversized"]


def _stage(
    stage: str, *, attack_server: bool
) -> tuple[Connection, Connection, list[bytes], list[bytes]]:
    """(victim, peer, next valid units for the victim, units it already accepted)."""
    client, server = make_pair(client_limits=CLIENT_LIMITS)
    c_flight = client.data_to_send()  # hello + message 1
    hello, msg1 = c_flight[:6], c_flight[6:]
    if stage == "hello":
        if attack_server:
            return server, client, [hello, msg1], []
        s_flight = (server.receive_data(c_flight), drain(server), server.data_to_send())[2]
        return client, server, [s_flight[:6], s_flight[6:]], []
    server.receive_data(c_flight)
    drain(server)
    s_flight = server.data_to_send()
    if stage == "handshake":
        if attack_server:
            client.receive_data(s_flight)
            drain(client)
            return server, client, [client.data_to_send()], [msg1]
        client.receive_data(s_flight[:6])  # the client got the hello, not message 2
        assert drain(client) == [] and client.phase is Phase.HANDSHAKE
        return client, server, [s_flight[6:]], [msg1]
    client.receive_data(s_flight)
    drain(client)
    msg3 = client.data_to_send()
    server.receive_data(msg3)
    drain(server)
    if attack_server:
        units = []
        for n in range(3):
            client.send_request(COUNT, {"n": n})
            units.append(client.data_to_send())
        server.receive_data(units[0])
        (first,) = drain(server)
        assert isinstance(first, RequestReceived)
        return server, client, units[1:], [units[0]]
    client.send_request(COUNT, {"n": 1})
    client.send_request(COUNT, {"n": 2})
    client.send_request(COUNT, {"n": 3})
    server.receive_data(client.data_to_send())
    drain(server)
    units = []
    for rid in (0, 1, 2):
        server.send_response(rid, rid)
        units.append(server.data_to_send())
    client.receive_data(units[0])
    assert isinstance(drain(client)[0], ResponseReceived)
    return client, server, units[1:], [units[0]]


def _bad_bytes(
    mutation: str, victim: Connection, valid: list[bytes], seen: list[bytes], data: st.DataObject
) -> tuple[bytes, bool]:
    joined = b"".join(valid)
    if mutation == "garbage":
        body = data.draw(st.binary(min_size=1, max_size=300))
        if data.draw(st.booleans()):  # well-framed garbage reaches the cryptography
            body = frame(body)
        return body, data.draw(st.booleans())
    if mutation == "truncated":
        return joined[: data.draw(st.integers(1, len(joined) - 1))], True
    if mutation == "replayed":
        return (seen[-1] if seen else joined), False
    if mutation == "reordered":
        return (valid[1] + valid[0]) if len(valid) > 1 else (joined[3:] + joined[:3]), False
    # oversized: a frame header above the victim's limit
    limit = SERVER_LIMITS if victim.role is Role.RESPONDER else CLIENT_LIMITS
    size = data.draw(st.integers(limit.max_frame_bytes + 1, 65535))
    return size.to_bytes(2, "big") + data.draw(st.binary(max_size=64)), False


@settings(max_examples=120, deadline=None)
@given(
    stage=st.sampled_from(STAGES),
    mutation=st.sampled_from(MUTATIONS),
    attack_server=st.booleans(),
    data=st.data(),
)
def test_bad_input_in_any_phase_is_a_typed_error_and_changes_nothing(
    stage: str, mutation: str, attack_server: bool, data: st.DataObject
) -> None:
    victim, peer, valid, seen = _stage(stage, attack_server=attack_server)
    bad, eof = _bad_bytes(mutation, victim, valid, seen, data)
    victim.receive_data(bad)
    if eof:
        victim.receive_data(b"")
    while True:
        # A valid prefix may be processed; the unit that fails must change nothing.
        before = core(victim)
        try:
            event = victim.next_event()
        except TkmsError as exc:
            event_note(f"{stage}/{mutation}: {type(exc).__name__}")
            assert exc.fault is Fault.PEER, exc
            assert core(victim) == before
            with pytest.raises(type(exc)):  # sticky, and still nothing changes
                victim.next_event()
            assert core(victim) == before
            break
        if event is NEED_DATA:
            event_note(f"{stage}/{mutation}: need data")
            assert not eof  # incomplete input, and the stream goes on
            return
        if isinstance(event, ConnectionClosed):
            event_note(f"{stage}/{mutation}: clean end")
            stats = victim.statistics()  # a clean end, exactly at a unit boundary
            assert stats.buffered_bytes == stats.partial_message_bytes == 0
            return
    if stage == "open" and victim.role is Role.RESPONDER:
        victim.send_response(0, 0)  # the sending direction still works after the error
        (answer,) = transfer(victim, peer)
        assert isinstance(answer, ResponseReceived) and answer.result == 0


def test_oversized_reassembled_message_is_refused() -> None:
    client, server = open_pair()
    client._peer_limits = Limits(max_frame_bytes=4096, max_message_bytes=1 << 20)  # rogue
    client.send_request(ECHO, {"data": bytes(100_000)})
    server.receive_data(client.data_to_send())
    before = core(server)
    with pytest.raises(MessageTooLarge):
        drain(server)
    assert core(server)[0] == before[0] and server.statistics().messages_received == 0


def test_hello_bytes() -> None:
    assert encode_hello(1) == b"tkms\x00\x01"
    assert frame(b"abc") == b"\x00\x03abc"

"""The shared connection writer: everything queued arrives once, over real TCP; a
write that times out is reported and nothing more is ever sent on that stream."""

from __future__ import annotations

import trio
import trio.testing

from protocol.noise import KeyPair
from protocol.rpc import NEED_DATA, Connection, Phase, Role
from shell.rpc_stream import RECEIVE_BYTES, ConnectionWriter

CID = b"\x5a" * 16


def _initiator(static: KeyPair | None = None) -> Connection:
    """A fresh initiator: its hello and first handshake message are queued at once."""
    return Connection(
        Role.INITIATOR,
        static=static or KeyPair.generate(),
        cluster_id=CID,
        allowed_peers=[KeyPair.generate().public],
    )


async def test_concurrent_flushes_send_each_byte_once_over_tcp() -> None:
    me = KeyPair.generate()
    conn = _initiator(me)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(5):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listeners[0].accept()
        writer = ConnectionWriter(conn, client, send_timeout_s=1.0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.flush)
            nursery.start_soon(writer.flush)
        assert writer.failed is None and conn.data_to_send() == b""
        await client.send_eof()
        received = b""
        while chunk := await server.receive_some(RECEIVE_BYTES):
            received += chunk
    # A responder accepts exactly these bytes: a frame sent twice or cut would raise.
    responder = Connection(
        Role.RESPONDER, static=KeyPair.generate(), cluster_id=CID, allowed_peers=[me.public]
    )
    responder.receive_data(received)
    while responder.next_event() is not NEED_DATA:
        pass
    assert responder.phase is Phase.HANDSHAKE
    for s in (client, server, *listeners):
        await s.aclose()


async def test_a_write_that_times_out_is_reported_and_the_stream_is_left_alone() -> None:
    conn = _initiator()
    sender, _receiver = trio.testing.lockstep_stream_pair()  # send_all waits for a reader
    writer = ConnectionWriter(conn, sender, send_timeout_s=0.05)
    with trio.fail_after(5):
        reason = await writer.flush()
    assert reason is not None and reason.startswith("send failed")
    assert writer.failed == reason
    # A later flush neither blocks nor writes: it repeats the first failure.
    with trio.fail_after(5):
        assert await writer.flush() == reason

"""coordinator/grpc/server: the h2 unary server, against the real grpcio client and a
raw h2 client, over real 127.0.0.1 sockets, with a test router."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import grpc
import h2.config
import h2.connection
import pytest
import trio

from coordinator.grpc import GrpcConfig, GrpcMetrics, serve_router
from coordinator.metrics import Registry
from protocol.grpcwire import GrpcError, StatusCode, frame_message
from tests.coordinator.grpc.grpc_clients import (
    NO_PROXY,
    RawH2,
    acall,
    insecure_channel,
    self_signed,
)

ECHO = "/test.v1.Echo/Echo"
SLOW = "/test.v1.Echo/Slow"
FAIL = "/test.v1.Echo/Fail"
BIG = "/test.v1.Echo/Big"
META = "/test.v1.Echo/Meta"
DENY = "/test.v1.Echo/Deny"
BIG_SIZE = 300_000


class Router:
    """Echo and friends; records what happened to the calls it saw."""

    services = ("test.v1.Echo",)

    def __init__(self) -> None:
        self.cancelled = 0
        self.slow_started = trio.Event()
        self.cancel_seen = trio.Event()

    def serves(self, path: str) -> bool:
        return path in {ECHO, SLOW, FAIL, BIG, META, DENY}

    async def handle(
        self, path: str, message: bytes, metadata: Mapping[str, tuple[bytes, ...]]
    ) -> bytes:
        if path == SLOW:
            self.slow_started.set()
            try:
                await trio.sleep(60)
            except trio.Cancelled:
                self.cancelled += 1
                self.cancel_seen.set()
                raise
        if path == FAIL:
            raise RuntimeError("boom: a secret-looking detail")
        if path == DENY:
            raise GrpcError(StatusCode.PERMISSION_DENIED, "nope é%")
        if path == BIG:
            return bytes(i % 251 for i in range(BIG_SIZE))
        if path == META:
            return b"|".join(metadata.get("authorization", ()))
        return message


FAST = GrpcConfig(handshake_timeout=1.0, idle_timeout=1.0, request_timeout=5.0, send_timeout=5.0)


@asynccontextmanager
async def serving(
    router: Router,
    config: GrpcConfig = FAST,
    metrics: GrpcMetrics | None = None,
    **kw: object,
) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(
                serve_router, router, host="127.0.0.1", port=0, config=config, metrics=metrics, **kw
            )
        )
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def test_echo_metadata_and_a_large_response() -> None:
    registry = Registry()
    other = registry.counter("tkms_http_requests_total", "HTTP requests.", ("route",))
    other.inc(route="/v1/keys")
    router, metrics = Router(), GrpcMetrics(registry)
    async with serving(router, metrics=metrics) as port, insecure_channel(port) as ch:
        reply = await acall(ch, ECHO, b"hello")
        assert (reply.code, reply.body) == (grpc.StatusCode.OK, b"hello")
        empty = await acall(ch, ECHO, b"")
        assert (empty.code, empty.body) == (grpc.StatusCode.OK, b"")
        meta = await acall(ch, META, b"", metadata=[("authorization", "k-123")])
        assert meta.body == b"k-123"
        big = await acall(ch, BIG, b"")  # more than the 64 KiB initial window
        assert big.code == grpc.StatusCode.OK
        assert big.body == bytes(i % 251 for i in range(BIG_SIZE))
    assert metrics.request_total(ECHO, StatusCode.OK) == 2
    text = metrics.render()
    assert 'cerberus_rpc_server_request_total{method="/test.v1.Echo/Echo",code="OK"} 2' in text
    assert (
        'cerberus_rpc_server_request_duration_seconds_count{method="/test.v1.Echo/Big"} 1' in text
    )


async def test_statuses_reach_the_client() -> None:
    router = Router()
    async with serving(router) as port, insecure_channel(port) as ch:
        deny = await acall(ch, DENY, b"x")
        assert (deny.code, deny.details) == (grpc.StatusCode.PERMISSION_DENIED, "nope é%")
        fail = await acall(ch, FAIL, b"x")
        assert (fail.code, fail.details) == (grpc.StatusCode.INTERNAL, "internal error")
        missing = await acall(ch, "/test.v1.Echo/Nope", b"x")
        assert missing.code == grpc.StatusCode.UNIMPLEMENTED
        assert missing.details == "unknown method Nope for service test.v1.Echo"
        other = await acall(ch, "/signer.v1.Signer/SignGeneric", b"x")
        assert (other.code, other.details) == (
            grpc.StatusCode.UNIMPLEMENTED,
            "unknown service signer.v1.Signer",
        )
        assert (await acall(ch, ECHO, b"still fine")).body == b"still fine"


async def test_deadlines_client_and_server_side() -> None:
    router, metrics = Router(), GrpcMetrics()
    config = GrpcConfig(handshake_timeout=1.0, idle_timeout=5.0, request_timeout=0.3)
    async with serving(router, config, metrics) as port, insecure_channel(port) as ch:
        server_side = await acall(ch, SLOW, b"")
        assert server_side.code == grpc.StatusCode.DEADLINE_EXCEEDED
        client_side = await acall(ch, SLOW, b"", timeout=0.2)
        assert client_side.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert (await acall(ch, ECHO, b"ok")).body == b"ok"
    assert router.cancelled == 2
    assert metrics.request_total(SLOW, StatusCode.DEADLINE_EXCEEDED) >= 1


async def test_oversized_and_compressed_requests() -> None:
    config = GrpcConfig(handshake_timeout=1.0, idle_timeout=5.0, max_message_size=1000)
    async with serving(Router(), config) as port, insecure_channel(port) as ch:
        big = await acall(ch, ECHO, b"x" * 1001)
        assert big.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "(1001 vs. 1000)" in big.details
        assert (await acall(ch, ECHO, b"x" * 1000)).code == grpc.StatusCode.OK
        gz = await acall(ch, ECHO, b"y" * 200, compression=grpc.Compression.Gzip)
        assert gz.code == grpc.StatusCode.UNIMPLEMENTED
        assert "Decompressor is not installed" in gz.details


async def test_client_cancel_cancels_the_handler() -> None:
    router, metrics = Router(), GrpcMetrics()
    async with serving(router, metrics=metrics) as port:
        raw = await RawH2.connect(port)
        sid = raw.request(SLOW.encode(), frame_message(b""))
        await raw.flush()
        with trio.fail_after(10):
            await router.slow_started.wait()
        raw.conn.reset_stream(sid, error_code=8)
        await raw.flush()
        with trio.fail_after(10):
            await router.cancel_seen.wait()
        assert router.cancelled == 1
        assert metrics.request_total(SLOW, StatusCode.CANCELLED) == 1
        sid2 = raw.request(ECHO.encode(), frame_message(b"after"))
        result = await raw.wait(sid2)
        assert result.data == frame_message(b"after")
        assert result.header(b"grpc-status") == b"0"
        await raw.aclose()


async def test_non_grpc_requests_and_body_corners() -> None:
    async with serving(Router()) as port:
        raw = await RawH2.connect(port)
        r = await raw.wait(raw.request(ECHO.encode(), None, method=b"GET"))
        assert r.header(b":status") == b"405"
        r = await raw.wait(raw.request(ECHO.encode(), b"{}", content_type=b"application/json"))
        assert r.header(b":status") == b"415"
        r = await raw.wait(raw.request(ECHO.encode(), b"\x00\x00\x00"))  # truncated prefix
        assert r.header(b"grpc-status") == str(int(StatusCode.INTERNAL)).encode()
        r = await raw.wait(raw.request(ECHO.encode(), frame_message(b"a") + frame_message(b"b")))
        assert r.header(b"grpc-status") == str(int(StatusCode.INTERNAL)).encode()
        r = await raw.wait(raw.request(ECHO.encode(), b"\x01\x00\x00\x00\x01z"))
        assert (
            r.header(b"grpc-message")
            == b"grpc: compressed flag set with identity or empty encoding"
        )
        r = await raw.wait(
            raw.request(ECHO.encode(), frame_message(b"ok"), extra=[(b"grpc-timeout", b"bad")])
        )
        assert r.header(b"grpc-status") == str(int(StatusCode.INTERNAL)).encode()
        r = await raw.wait(raw.request(ECHO.encode(), frame_message(b"fine")))
        assert r.data == frame_message(b"fine") and r.header(b"grpc-status") == b"0"
        await raw.aclose()


async def _garbage_connection(port: int, payload: bytes) -> bool:
    """Send ``payload`` on a raw socket; True once the server closed it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        await stream.send_all(payload)
        with trio.fail_after(10):
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return True
                if not data:
                    return True
    finally:
        await stream.aclose()


async def test_garbage_closes_only_its_own_connection() -> None:
    router = Router()
    async with serving(router) as port, insecure_channel(port) as ch:
        assert (await acall(ch, ECHO, b"before")).body == b"before"
        assert await _garbage_connection(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await _garbage_connection(port, b"\x00" * 100 + b"\xff" * 100)
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        assert await _garbage_connection(
            port, preface + b"\x00\x00\x04\x09\x00\x00\x00\x00\x01abcd"
        )
        assert await _garbage_connection(port, b"")  # says nothing: handshake timeout
        assert (await acall(ch, ECHO, b"after")).body == b"after"


async def test_idle_connection_gets_goaway() -> None:
    async with serving(Router()) as port:
        raw = await RawH2.connect(port)
        r = await raw.wait(raw.request(ECHO.encode(), frame_message(b"x")))
        assert r.header(b"grpc-status") == b"0"
        idle = await raw.wait(-1, limit=10)  # nothing in flight: idle_timeout = 1 s
        assert idle.goaway == 0  # GOAWAY(NO_ERROR), then the server closes
        await raw.aclose()


async def test_connection_limit() -> None:
    config = GrpcConfig(handshake_timeout=5.0, idle_timeout=5.0, max_connections=1)
    async with serving(Router(), config) as port:
        first = await RawH2.connect(port)
        r = await first.wait(first.request(ECHO.encode(), frame_message(b"1")))
        assert r.data == frame_message(b"1")
        assert await _garbage_connection(port, b"")  # refused at once
        await first.aclose()
        await trio.sleep(0.05)
        again = await RawH2.connect(port)
        r = await again.wait(again.request(ECHO.encode(), frame_message(b"2")))
        assert r.data == frame_message(b"2")
        await again.aclose()


async def test_tls_with_alpn_h2(tmp_path: Path) -> None:
    ctx, cert_pem = self_signed(tmp_path)
    async with serving(Router(), ssl_context=ctx) as port:
        creds = grpc.ssl_channel_credentials(root_certificates=cert_pem)
        channel = grpc.secure_channel(f"localhost:{port}", creds, options=NO_PROXY)
        try:
            reply = await acall(channel, ECHO, b"over tls")  # grpcio insists on ALPN h2
            assert (reply.code, reply.body) == (grpc.StatusCode.OK, b"over tls")
            # a plaintext client, a broken ClientHello and a silent socket fail alone
            async with insecure_channel(port) as plain:
                assert (await acall(plain, ECHO, b"x", timeout=3)).code != grpc.StatusCode.OK
            assert await _garbage_connection(port, b"\x16\x03\x01\x00\x05hello")
            assert await _garbage_connection(port, b"")
            again = await acall(channel, ECHO, b"still tls")
            assert (again.code, again.body) == (grpc.StatusCode.OK, b"still tls")
        finally:
            await trio.to_thread.run_sync(channel.close)


async def test_too_many_streams_close_only_that_connection() -> None:
    config = GrpcConfig(handshake_timeout=5.0, idle_timeout=5.0, max_concurrent_streams=4)
    router = Router()
    async with serving(router, config) as port, insecure_channel(port) as ch:
        raw = await RawH2.connect(port)
        r = await raw.wait(raw.request(ECHO.encode(), frame_message(b"x")))  # SETTINGS acked
        assert r.header(b"grpc-status") == b"0"
        assert raw.conn.remote_settings.max_concurrent_streams == 4
        raw.conn.remote_settings.max_concurrent_streams = 100  # misbehave on purpose
        raw.conn.remote_settings.acknowledge()
        sids = [raw.request(SLOW.encode(), frame_message(b"")) for _ in range(5)]
        result = await raw.wait(sids[-1])
        assert result.goaway == 1  # PROTOCOL_ERROR: the whole connection goes
        await raw.aclose()
        assert (await acall(ch, ECHO, b"others fine")).body == b"others fine"


def _valid_request_bytes() -> bytes:
    """The bytes a client sends for one echo call (preface, SETTINGS, HEADERS, DATA)."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(
        sid,
        [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", ECHO.encode()),
            (b":authority", b"127.0.0.1"),
            (b"content-type", b"application/grpc"),
        ],
    )
    conn.send_data(sid, frame_message(b"fuzz"), end_stream=True)
    return conn.data_to_send()


async def test_mutated_request_streams_never_hurt_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rng = random.Random(20261128)
    valid = _valid_request_bytes()
    quick = GrpcConfig(handshake_timeout=0.2, idle_timeout=0.2, request_timeout=1.0)
    async with serving(Router(), quick) as port, insecure_channel(port) as ch:
        for _ in range(30):
            data = bytearray(valid)
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(24, len(data))  # keep the preface, break the frames
                data[i] = rng.randrange(256)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(bytes(data))
            with trio.fail_after(10):  # answered, or closed (at worst after idle_timeout)
                try:
                    while await stream.receive_some(65536):
                        pass
                except trio.BrokenResourceError:
                    pass
            await stream.aclose()
        assert (await acall(ch, ECHO, b"alive")).body == b"alive"
    # every failure was a protocol error or a dropped peer, never an unexpected crash
    assert not [r for r in caplog.records if r.getMessage() == "grpc: connection failed"]

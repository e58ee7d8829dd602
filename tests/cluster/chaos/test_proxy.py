"""The chaos proxy over real loopback sockets: bytes pass unchanged (both directions,
half-close included), a partition resets or blackholes existing and new connections,
heal restores forwarding, and delay adds at least the configured latency per direction
while keeping the order of the bytes."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio

from cluster.chaos.proxy import Proxy, ProxyConfig, ProxyMode, serve_proxy


@dataclass
class Echo:
    """A loopback echo server that remembers what it received."""

    port: int = 0
    connections: int = 0
    received: bytearray = field(default_factory=bytearray)

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    break
                self.received += data
                await stream.send_all(data)
            await stream.send_eof()
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()


@asynccontextmanager
async def echo_and_proxy() -> AsyncIterator[tuple[Echo, Proxy]]:
    echo = Echo()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, echo.handle, 0, host="127.0.0.1")
        )
        echo.port = listeners[0].socket.getsockname()[1]
        proxy = await nursery.start(serve_proxy, 0, ("127.0.0.1", echo.port))
        assert proxy.port != echo.port
        yield echo, proxy
        nursery.cancel_scope.cancel()


async def connect(proxy: Proxy) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", proxy.port)


async def read_exactly(stream: trio.SocketStream, n: int) -> bytes:
    out = bytearray()
    with trio.fail_after(10):
        while len(out) < n:
            data = await stream.receive_some(n - len(out))
            assert data, f"EOF after {len(out)} of {n} bytes"
            out += data
    return bytes(out)


async def is_dead(stream: trio.SocketStream) -> bool:
    """True if the connection is reset or closed (EOF) when read."""
    with trio.fail_after(10):
        try:
            return await stream.receive_some(1) == b""
        except trio.BrokenResourceError:
            return True


async def test_pass_through_bytes_are_equal_both_ways_with_half_close() -> None:
    async with echo_and_proxy() as (echo, proxy):
        payload = os.urandom(1 << 20)
        stream = await connect(proxy)
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                await stream.send_all(payload)
                await stream.send_eof()

            nursery.start_soon(send)
            back = await read_exactly(stream, len(payload))
        assert back == payload
        assert bytes(echo.received) == payload
        assert await is_dead(stream)  # the echo's EOF came through the proxy
        await stream.aclose()
        assert proxy.stats.bytes_forwarded >= 2 * len(payload)
        assert proxy.mode is ProxyMode.PASS


async def test_refusing_partition_resets_open_and_new_connections_then_heals() -> None:
    async with echo_and_proxy() as (echo, proxy):
        before = await connect(proxy)
        await before.send_all(b"hello")
        assert await read_exactly(before, 5) == b"hello"
        proxy.partition()
        assert await is_dead(before)
        during = await connect(proxy)  # accepted, then reset: never reaches the node
        assert await is_dead(during)
        assert echo.connections == 1
        assert proxy.stats.reset >= 2
        proxy.heal()
        after = await connect(proxy)
        await after.send_all(b"again")
        assert await read_exactly(after, 5) == b"again"
        assert echo.connections == 2
        for s in (before, during, after):
            await s.aclose()


async def test_blackhole_drops_bytes_both_ways_and_heal_resets_the_damaged() -> None:
    async with echo_and_proxy() as (echo, proxy):
        old = await connect(proxy)
        await old.send_all(b"ping")
        assert await read_exactly(old, 4) == b"ping"
        proxy.partition(blackhole=True)
        assert proxy.mode is ProxyMode.BLACKHOLE
        await old.send_all(b"lost")
        new = await connect(proxy)
        await new.send_all(b"void")
        with trio.move_on_after(0.5):  # silence for at least this long
            await old.receive_some(1)
            pytest.fail("a blackholed connection delivered bytes")
        with trio.move_on_after(0.1):
            await new.receive_some(1)
            pytest.fail("a connection made during a blackhole delivered bytes")
        assert bytes(echo.received) == b"ping"
        assert echo.connections == 1  # the new connection never got an upstream
        assert proxy.stats.bytes_dropped >= 8
        proxy.heal()
        assert await is_dead(old)  # its stream lost bytes: reset, the peer redials
        assert await is_dead(new)
        fresh = await connect(proxy)
        await fresh.send_all(b"back")
        assert await read_exactly(fresh, 4) == b"back"
        for s in (old, new, fresh):
            await s.aclose()


async def test_delay_adds_at_least_the_latency_each_way_and_keeps_order() -> None:
    async with echo_and_proxy() as (_echo, proxy):
        stream = await connect(proxy)
        await stream.send_all(b"warm")
        assert await read_exactly(stream, 4) == b"warm"
        delay = 0.2
        proxy.delay(delay)
        start = trio.current_time()
        chunks = [bytes([i]) * 1000 for i in range(20)]
        for chunk in chunks:
            await stream.send_all(chunk)
            await trio.sleep(0.005)
        back = await read_exactly(stream, 20_000)
        elapsed = trio.current_time() - start
        assert back == b"".join(chunks)  # order kept across the delayed queue
        assert elapsed >= 2 * delay  # there and back, each delayed
        proxy.heal()
        assert proxy.mode is ProxyMode.PASS
        await stream.send_all(b"healed")  # a delayed connection survives the heal
        assert await read_exactly(stream, 6) == b"healed"
        await stream.aclose()


async def test_a_dead_target_resets_the_client() -> None:
    async with trio.open_nursery() as nursery:
        s = trio.socket.socket()
        await s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
        s.close()  # nothing listens there now
        proxy = await nursery.start(serve_proxy, 0, ("127.0.0.1", dead_port))
        stream = await connect(proxy)
        assert await is_dead(stream)
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_the_proxy_only_forwards_to_loopback() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        await serve_proxy(0, ("10.0.0.1", 80))
    with pytest.raises(ValueError, match="positive"):
        Proxy(1, ("127.0.0.1", 2), ProxyConfig()).delay(0)


async def test_heal_sends_what_a_delay_holds_back_at_once() -> None:
    async with echo_and_proxy() as (echo, proxy):
        stream = await connect(proxy)
        proxy.delay(600.0)  # far longer than the test may take
        await stream.send_all(b"held")
        await trio.sleep(0.2)
        assert bytes(echo.received) == b""  # still held back
        proxy.heal()
        assert await read_exactly(stream, 4) == b"held"  # read_exactly allows 10 s
        assert bytes(echo.received) == b"held"
        await stream.aclose()

"""A loopback TCP proxy per node, with faults: pass, partition, delay, heal.

``serve_proxy(listen_port, target, *, task_status)`` listens on 127.0.0.1 and forwards
every connection to ``target`` (a node's real listening address); ``nursery.start``
returns its ``Proxy`` handle, whose methods switch the fault at once for new and
existing connections:

``heal()``                      forward bytes unchanged (the initial state);
``partition(blackhole=False)``  refuse: every open connection is reset and new ones
                                are accepted and reset at once (the peer sees
                                ``ECONNRESET``, as with a crashed host);
``partition(blackhole=True)``   blackhole: bytes in either direction are dropped and
                                new connections are accepted and held without an
                                upstream (the peer sees silence, as with a cut cable);
``delay(seconds)``              each chunk is delivered ``seconds`` after it arrived,
                                in both directions, order kept (latency, not a
                                throughput cap); ``heal()`` sends what is held back
                                at once.

A connection that lost bytes to a blackhole can never carry a valid stream again
(Noise would reject it), so ``heal()`` resets those; connections that were only
delayed keep going. Only 127.0.0.1: the proxy never listens or dials anywhere else.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import struct
from dataclasses import dataclass, field

import trio

RECV_SIZE = 64 * 1024
QUEUE_CHUNKS = 256  # chunks in flight per direction before the reader waits
LOOPBACK = "127.0.0.1"


class ProxyMode(enum.Enum):
    PASS = "pass"
    REFUSE = "refuse"
    BLACKHOLE = "blackhole"
    DELAY = "delay"


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """Timeouts of one proxy (seconds)."""

    connect_timeout_s: float = 5.0  # dialing the target
    idle_timeout_s: float = 900.0  # a connection with no bytes either way is closed
    close_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("connect_timeout_s", "idle_timeout_s", "close_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")


@dataclass(slots=True)
class ProxyStats:
    accepted: int = 0
    reset: int = 0  # connections this proxy reset (partition, heal after blackhole)
    bytes_forwarded: int = 0
    bytes_dropped: int = 0


def _reset(stream: trio.SocketStream) -> None:
    """Make the next close send RST instead of FIN (SO_LINGER 0)."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@dataclass(eq=False)
class _Conn:
    client: trio.SocketStream
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    upstream: trio.SocketStream | None = None
    lost_bytes: bool = False
    last_activity: float = 0.0

    def abort(self) -> None:
        """Reset both sides and stop forwarding."""
        _reset(self.client)
        if self.upstream is not None:
            _reset(self.upstream)
        self.scope.cancel()


class Proxy:
    """The control handle of one running proxy (see the module header)."""

    def __init__(self, port: int, target: tuple[str, int], config: ProxyConfig) -> None:
        self.port = port
        self.target = target
        self.config = config
        self.mode = ProxyMode.PASS
        self.delay_s = 0.0
        self.stats = ProxyStats()
        self._conns: set[_Conn] = set()
        self._undelayed = trio.Event()  # set while no delay is in force
        self._undelayed.set()

    def __repr__(self) -> str:
        return f"Proxy({LOOPBACK}:{self.port} -> {self.target[0]}:{self.target[1]}, {self.mode})"

    @property
    def connections(self) -> int:
        return len(self._conns)

    def heal(self) -> None:
        """Forward unchanged again; reset connections that lost bytes to a blackhole."""
        self.mode = ProxyMode.PASS
        self.delay_s = 0.0
        self._undelayed.set()  # chunks still held back by a delay go out now
        for conn in list(self._conns):
            if conn.lost_bytes or conn.upstream is None:
                self.stats.reset += 1
                conn.abort()

    def partition(self, *, blackhole: bool = False) -> None:
        self.mode = ProxyMode.BLACKHOLE if blackhole else ProxyMode.REFUSE
        self.delay_s = 0.0
        self._undelayed.set()
        if not blackhole:
            for conn in list(self._conns):
                self.stats.reset += 1
                conn.abort()

    def delay(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError("delay must be positive")
        self.mode = ProxyMode.DELAY
        self.delay_s = seconds
        if self._undelayed.is_set():
            self._undelayed = trio.Event()

    async def _hold_back(self, deliver_at: float) -> None:
        """Wait until ``deliver_at``, or less if the delay is healed meanwhile."""
        with trio.move_on_at(deliver_at):
            await self._undelayed.wait()

    # -- forwarding -----------------------------------------------------------------

    async def _pump(self, conn: _Conn, src: trio.SocketStream, dst: trio.SocketStream) -> None:
        """Forward src -> dst until EOF; the writer waits out each chunk's delay.

        A broken socket on either side resets the whole connection (never an error
        out of the proxy)."""
        send, recv = trio.open_memory_channel[tuple[float, bytes]](QUEUE_CHUNKS)

        async def reader() -> None:
            try:
                await read_loop()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                conn.abort()

        async def writer() -> None:
            try:
                await write_loop()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                conn.abort()

        async def read_loop() -> None:
            async with send:
                while True:
                    with trio.move_on_after(self.config.idle_timeout_s) as idle:
                        data = await src.receive_some(RECV_SIZE)
                    if idle.cancelled_caught:
                        conn.abort()
                        return
                    conn.last_activity = trio.current_time()
                    if not data:
                        return
                    if self.mode is ProxyMode.BLACKHOLE:
                        conn.lost_bytes = True
                        self.stats.bytes_dropped += len(data)
                        continue
                    await send.send((trio.current_time() + self.delay_s, bytes(data)))

        async def write_loop() -> None:
            async with recv:
                async for deliver_at, data in recv:
                    await self._hold_back(deliver_at)
                    if self.mode is ProxyMode.BLACKHOLE:
                        conn.lost_bytes = True
                        self.stats.bytes_dropped += len(data)
                        continue
                    await dst.send_all(data)
                    self.stats.bytes_forwarded += len(data)
            with trio.move_on_after(self.config.close_timeout_s):
                await dst.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            nursery.start_soon(writer)

    async def _handle(self, client: trio.SocketStream) -> None:
        conn = _Conn(client, last_activity=trio.current_time())
        self.stats.accepted += 1
        if self.mode is ProxyMode.REFUSE:
            self.stats.reset += 1
            _reset(client)
            await _close(client, self.config.close_timeout_s)
            return
        self._conns.add(conn)
        try:
            with conn.scope:
                if self.mode is ProxyMode.BLACKHOLE:
                    await self._hold(conn)
                    return
                with trio.move_on_after(self.config.connect_timeout_s):
                    conn.upstream = await trio.open_tcp_stream(*self.target)
                if conn.upstream is None:
                    _reset(client)
                    return
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, conn, client, conn.upstream)
                    nursery.start_soon(self._pump, conn, conn.upstream, client)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            conn.abort()  # e.g. the target refused the connection: reset the client too
        finally:
            self._conns.discard(conn)
            with trio.CancelScope(shield=True):
                await _close(client, self.config.close_timeout_s)
                if conn.upstream is not None:
                    await _close(conn.upstream, self.config.close_timeout_s)

    async def _hold(self, conn: _Conn) -> None:
        """A connection made during a blackhole: read and drop until healed (reset)."""
        while True:
            with trio.move_on_after(self.config.idle_timeout_s) as idle:
                data = await conn.client.receive_some(RECV_SIZE)
            if idle.cancelled_caught or not data:
                return
            conn.lost_bytes = True
            self.stats.bytes_dropped += len(data)


async def _close(stream: trio.SocketStream, within_s: float) -> None:
    with (
        trio.move_on_after(within_s),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
    ):
        await stream.aclose()


async def serve_proxy(
    listen_port: int,
    target: tuple[str, int],
    *,
    config: ProxyConfig | None = None,
    task_status: trio.TaskStatus[Proxy] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on 127.0.0.1:``listen_port`` (0 = any free port) and forward to ``target``.

    ``task_status.started`` hands back the ``Proxy`` (with the bound ``port``); runs
    until cancelled, then resets every open connection.
    """
    if target[0] not in (LOOPBACK, "localhost"):
        raise ValueError("the chaos proxy only forwards to 127.0.0.1")
    cfg = config or ProxyConfig()
    listeners = await trio.open_tcp_listeners(listen_port, host=LOOPBACK)
    listener = listeners[0]
    port = int(listener.socket.getsockname()[1])
    proxy = Proxy(port, target, cfg)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started(proxy)
            while True:
                stream = await listener.accept()  # no timeout: a server waits for clients
                nursery.start_soon(proxy._handle, stream)
    finally:
        for lst in listeners:
            with trio.CancelScope(shield=True), trio.move_on_after(cfg.close_timeout_s):
                await lst.aclose()

"""The node's RPC listener: Noise-encrypted, coordinator-pinned RPC over TCP (trio shell).

All protocol logic lives in ``protocol.rpc.Connection`` (sans-IO); this module only
moves bytes, keeps time and logs (DESIGN.md §Transport, docs/threat-model.md
§Transport). ``serve_rpc`` binds, reports the port through ``task_status`` and
serves forever; each connection runs in its own task with its own nursery, and each
request in its own task inside it.

Per connection:
* the Noise handshake must finish within ``handshake_timeout_s``; the peer's static
  key must be one of ``allowed_peers`` (the manifest's coordinators), else the
  connection closes before any request is read;
* no bytes for ``idle_timeout_s`` closes it (the coordinator pings well within it);
* each handler runs under ``request_timeout_s`` (then ``DEADLINE_EXCEEDED``);
* frames above ``limits.max_frame_bytes`` and more than ``limits.max_in_flight``
  concurrent requests are refused (the limits are advertised in the handshake).

Error handling: a handler's exception becomes an error response (``RpcError`` →
its code; a ``TkmsError`` of CLIENT/PEER fault → ``BAD_REQUEST`` with its message;
anything else → ``INTERNAL``, logged here with its traceback, never sent). Bad bytes
from the peer (any ``TkmsError`` out of the connection), a broken stream or a timeout
close that one connection with a logged reason; the listener keeps serving. Logs name
the peer's address, its public key and the reason, never key material or payloads.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NoReturn

import trio

from protocol.errors import Fault, TkmsError
from protocol.noise import KeyPair
from protocol.rpc import (
    NEED_DATA,
    PING,
    Connection,
    ConnectionClosed,
    ErrorCode,
    HandshakeComplete,
    Limits,
    LocalSchemaError,
    Method,
    OutgoingTooLarge,
    Phase,
    RequestReceived,
    RequestRejected,
    Role,
    RpcError,
)
from shell.rpc_stream import RECEIVE_BYTES, ConnectionWriter

log = logging.getLogger("tkms.transport")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Route:
    """A method and the handler serving it: ``async def handler(params) -> result``.
    ``params`` already passed ``method.params``; the result must pass ``method.result``."""

    method: Method
    handler: Handler


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """Timeouts and limits of the node's listener (all seconds)."""

    handshake_timeout_s: float = 5.0  # accept → session open; a handshake is ~1 ms
    idle_timeout_s: float = 60.0  # > request_timeout_s; the coordinator pings every 10 s
    request_timeout_s: float = 30.0  # per-request deadline of a handler
    send_timeout_s: float = 10.0  # a peer that stops reading is dropped
    max_connections: int = 64  # coordinators are few; more is an attack
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.idle_timeout_s <= self.request_timeout_s:
            raise ValueError("idle_timeout_s must exceed request_timeout_s")
        if min(self.handshake_timeout_s, self.request_timeout_s, self.send_timeout_s) <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")


async def _ping(params: dict[str, Any]) -> None:
    return None


async def serve_rpc(
    routes: Iterable[Route],
    *,
    identity: KeyPair,
    cluster_id: bytes,
    allowed_peers: Collection[bytes],
    host: str = "127.0.0.1",
    port: int = 0,
    config: ListenerConfig | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve RPC on ``host:port`` forever; ``task_status.started(bound_port)``.

    Args:
        routes: the methods served (``rpc.ping`` is always served).
        identity: the node's Noise static key pair.
        cluster_id: the 16-byte cluster id (bound into the Noise prologue).
        allowed_peers: static public keys allowed to connect (the coordinators).
        host, port: where to listen; port 0 picks a free port.
        config: timeouts and limits.

    Raises:
        ValueError: two routes for one method name.
        OSError: the address cannot be bound.
    """
    table: dict[str, Route] = {PING.name: Route(PING, _ping)}
    for route in routes:
        if route.method.name in table:
            raise ValueError(f"two routes for {route.method.name}")
        table[route.method.name] = route
    listener = _Listener(
        table, identity, bytes(cluster_id), frozenset(allowed_peers), config or ListenerConfig()
    )
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    log.info("listening on %s:%d", host, bound)
    task_status.started(bound)
    await trio.serve_listeners(partial(_serve_connection, listener), listeners)


@dataclass(slots=True)
class _Listener:
    routes: dict[str, Route]
    identity: KeyPair
    cluster_id: bytes
    allowed_peers: frozenset[bytes]
    config: ListenerConfig
    active: int = 0


async def _serve_connection(listener: _Listener, stream: trio.SocketStream) -> None:
    try:
        host, port = stream.socket.getpeername()[:2]
        peer = f"{host}:{port}"
    except OSError:  # already reset by the peer
        peer = "<gone>"
    try:
        if listener.active >= listener.config.max_connections:
            log.warning("refusing %s: %d connections already open", peer, listener.active)
            return
        listener.active += 1
        try:
            await _ServerSession(listener, stream, peer).run()
        except Exception:  # a bug; contained to this connection, never the listener
            log.exception("internal error serving %s", peer)
        finally:
            listener.active -= 1
    finally:
        await trio.aclose_forcefully(stream)


class _ServerSession:
    """One accepted connection: a read loop plus one task per request."""

    def __init__(self, listener: _Listener, stream: trio.SocketStream, peer: str) -> None:
        self.listener = listener
        self.config = listener.config
        self.stream = stream
        self.peer = peer
        self.conn = Connection(
            Role.RESPONDER,
            static=listener.identity,
            cluster_id=listener.cluster_id,
            allowed_peers=listener.allowed_peers,
            methods=[r.method for r in listener.routes.values()],
            limits=listener.config.limits,
        )
        self.writer = ConnectionWriter(self.conn, stream, send_timeout_s=self.config.send_timeout_s)
        self.close_reason: str | None = None
        self.nursery: trio.Nursery | None = None

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            reason = await self._read_loop(nursery)
            self.close_reason = self.close_reason or reason
            nursery.cancel_scope.cancel()
        await self._last_words()
        if self.close_reason is None:
            log.info("connection from %s closed by the peer", self.peer)
        else:
            log.warning("closing connection from %s: %s", self.peer, self.close_reason)

    async def _push(self) -> None:
        """Send what is queued (see ``shell.rpc_stream.ConnectionWriter``); a failed
        write closes the connection."""
        failed = await self.writer.flush()
        if failed is not None:
            self.close_reason = self.close_reason or failed
            if self.nursery is not None:
                self.nursery.cancel_scope.cancel()

    async def _last_words(self) -> None:
        """Best effort: send what is still queued (e.g. our hello, which tells a peer of
        another version why it is refused), unless a send failed halfway."""
        data = self.conn.data_to_send()
        if data and self.writer.failed is None:
            with trio.move_on_after(min(1.0, self.config.send_timeout_s)):
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self.stream.send_all(data)

    async def _read_loop(self, nursery: trio.Nursery) -> str | None:
        """Returns the reason the connection must close (None: the peer closed it)."""
        try:
            with trio.fail_after(self.config.handshake_timeout_s):
                while self.conn.phase is not Phase.OPEN:
                    if not await self._receive(nursery):
                        return "peer closed the connection during the handshake"
            while True:
                with trio.move_on_after(self.config.idle_timeout_s) as idle:
                    if not await self._receive(nursery):
                        return None
                if idle.cancelled_caught:
                    return f"idle for {self.config.idle_timeout_s} s"
        except trio.TooSlowError:
            return f"handshake not finished within {self.config.handshake_timeout_s} s"
        except TkmsError as exc:
            phase = self.conn.phase.value
            return f"{type(exc).__name__} ({exc.fault.value} fault) in phase {phase}: {exc}"
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            return f"stream broken: {exc or type(exc).__name__}"
        except Exception:  # a bug: contained to this connection, but loud
            log.exception("internal error serving %s", self.peer)
            return "internal error (see the traceback above)"

    async def _receive(self, nursery: trio.Nursery) -> bool:
        """Read once and dispatch the events; False once the peer has closed."""
        data = await self.stream.receive_some(RECEIVE_BYTES)
        self.conn.receive_data(data)
        while (event := self.conn.next_event()) is not NEED_DATA:
            if isinstance(event, RequestReceived):
                nursery.start_soon(self._serve_request, event)
            elif isinstance(event, RequestRejected):
                log.info(
                    "rejected %r request %d from %s: %s",
                    event.method[:64],
                    event.request_id,
                    self.peer,
                    event.reason,
                )
            elif isinstance(event, HandshakeComplete):
                log.info("session open with %s (key %s)", self.peer, event.remote_static.hex())
            elif isinstance(event, ConnectionClosed):
                return False
        await self._push()
        return True

    async def _serve_request(self, event: RequestReceived) -> None:
        method = event.method.name
        route = self.listener.routes[method]
        timeout = self.config.request_timeout_s
        rid = event.request_id
        try:
            with trio.move_on_after(timeout) as deadline:
                result = await route.handler(event.params)
            if deadline.cancelled_caught:
                self._send_error(rid, ErrorCode.DEADLINE_EXCEEDED, f"no result within {timeout} s")
            else:
                self._respond(rid, method, result)
        except RpcError as exc:
            self._send_error(rid, exc.code, exc.message)
        except TkmsError as exc:
            if exc.fault in (Fault.CLIENT, Fault.PEER):
                self._send_error(rid, ErrorCode.BAD_REQUEST, str(exc))
            else:
                log.exception("handler of %s failed", method)
                self._send_error(rid, ErrorCode.INTERNAL, "internal error")
        except Exception:
            log.exception("handler of %s failed", method)
            self._send_error(rid, ErrorCode.INTERNAL, "internal error")
        await self._push()

    def _respond(self, request_id: int, method: str, result: Any) -> None:
        if self.conn.phase is not Phase.OPEN:
            return  # the peer has gone; the session is ending
        try:
            self.conn.send_response(request_id, result)
        except LocalSchemaError as exc:
            log.error("handler of %s returned an invalid result: %s", method, exc)
            self._send_error(request_id, ErrorCode.INTERNAL, "handler returned an invalid result")
        except OutgoingTooLarge as exc:
            self._send_error(request_id, ErrorCode.TOO_LARGE, str(exc))

    def _send_error(self, request_id: int, code: int, message: str) -> None:
        if self.conn.phase is Phase.OPEN:
            self.conn.send_error(request_id, code, message)

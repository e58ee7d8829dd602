"""A small unary gRPC server on trio streams and the sans-IO ``h2`` package.

No grpcio server, no asyncio, no threads: each TCP (or TLS) connection is one trio
task with its own nursery, holding an ``h2.H2Connection``; every call on it is a task
in that nursery with its own cancel scope and deadline; one writer task per
connection owns the socket's send side (so cancelling a call never cuts a write in
half). h2c with prior knowledge serves loopback; given an ``ssl.SSLContext`` the
server speaks TLS with ALPN ``h2``.

Every wait is bounded: the TLS handshake plus the HTTP/2 preface
(``handshake_timeout``), a connection with no call in flight (``idle_timeout``, then
GOAWAY), each call (``request_timeout``, or the client's shorter ``grpc-timeout``),
each socket write and each wait for flow-control credit (``send_timeout``). Sizes are
capped: header lists, request messages (checked from the length prefix), concurrent
streams per connection, connections per server. A connection that breaks the
protocol, stalls or sends garbage is closed alone; the listener and other
connections carry on.

The server is generic over a :class:`UnaryRouter` (``coordinator/grpc/service.py``
is the cerberus one); ``serve_grpc`` in ``coordinator/grpc/__init__.py`` wires it up.
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio

from coordinator.grpc.metrics import GrpcMetrics
from protocol.grpcwire import (
    GrpcError,
    HttpError,
    RequestHead,
    StatusCode,
    UnaryBody,
    frame_message,
    http_error_headers,
    parse_request_head,
    response_headers,
    trailers,
    trailers_only,
    unknown_method_error,
)

log = logging.getLogger("tkms.grpc")

RECEIVE_SIZE = 65536
_NO_ERROR = 0
_CANCEL = 8


@dataclass(frozen=True, slots=True)
class GrpcConfig:
    """Limits and timeouts of the gRPC front end (seconds, bytes)."""

    handshake_timeout: float = 10.0
    idle_timeout: float = 300.0
    request_timeout: float = 30.0
    send_timeout: float = 10.0
    max_connections: int = 256
    max_concurrent_streams: int = 32
    max_message_size: int = 16 * 1024
    max_header_list_size: int = 16 * 1024


class UnaryRouter(Protocol):
    """What the server calls for each well-framed request."""

    @property
    def services(self) -> tuple[str, ...]: ...

    def serves(self, path: str) -> bool: ...

    async def handle(
        self, path: str, message: bytes, metadata: Mapping[str, tuple[bytes, ...]]
    ) -> bytes:
        """The response message, or raise GrpcError."""
        ...


@dataclass(slots=True)
class _Call:
    stream_id: int
    head: RequestHead
    body: UnaryBody
    started: float
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    body_done: trio.Event = field(default_factory=trio.Event)
    error: GrpcError | None = None
    remote_ended: bool = False


class _Connection:
    """One HTTP/2 connection: reader loop, writer task, one task per call."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        router: UnaryRouter,
        config: GrpcConfig,
        metrics: GrpcMetrics,
        handshake_deadline: float,
    ) -> None:
        self.stream = stream
        self.router = router
        self.config = config
        self.metrics = metrics
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: config.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: config.max_header_list_size,
            },
        )
        self.h2.decoder.max_header_list_size = config.max_header_list_size
        self.calls: dict[int, _Call] = {}
        self.handshake_deadline = handshake_deadline
        self.got_preface = False
        self.read_scope = trio.CancelScope()
        self.dirty = trio.Event()
        self.window_event = trio.Event()
        self.nursery: trio.Nursery | None = None

    # --- the connection -------------------------------------------------------

    async def run(self) -> None:
        self.h2.initiate_connection()
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._writer)
                self._kick()
                await self._read_loop()
                nursery.cancel_scope.cancel()
        finally:
            await self._final_flush()

    def _read_deadline(self) -> float:
        if not self.got_preface:
            return self.handshake_deadline
        if self.calls:
            return math.inf
        return trio.current_time() + self.config.idle_timeout

    async def _read_loop(self) -> None:
        while True:
            self.read_scope = trio.CancelScope(deadline=self._read_deadline())
            with self.read_scope:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            if self.read_scope.cancelled_caught:
                if self.got_preface:
                    self.h2.close_connection(error_code=_NO_ERROR)
                return
            if not data:
                return
            try:
                events = self.h2.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                log.info("grpc: closing a connection after an HTTP/2 protocol error: %s", exc)
                return  # h2 has queued a GOAWAY
            for event in events:
                self.got_preface = True
                self._dispatch(event)
            self._kick()

    async def _writer(self) -> None:
        while True:
            await self.dirty.wait()
            self.dirty = trio.Event()
            data = self.h2.data_to_send()
            if data:
                with trio.fail_after(self.config.send_timeout):
                    await self.stream.send_all(data)

    async def _final_flush(self) -> None:
        data = self.h2.data_to_send()
        if not data:
            return
        gone = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError)
        with trio.move_on_after(min(1.0, self.config.send_timeout)), contextlib.suppress(*gone):
            await self.stream.send_all(data)

    def _kick(self) -> None:
        self.dirty.set()

    # --- events ---------------------------------------------------------------

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request_received(event.stream_id, event.headers or [])
        elif isinstance(event, h2.events.DataReceived):
            if event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            call = self.calls.get(event.stream_id)
            if call is not None and call.error is None and not call.body_done.is_set():
                try:
                    call.body.feed(event.data or b"")
                except GrpcError as exc:
                    call.error = exc
                    call.body_done.set()
        elif isinstance(event, h2.events.StreamEnded):
            call = self.calls.get(event.stream_id)
            if call is not None:
                call.remote_ended = True
                call.body_done.set()
        elif isinstance(event, h2.events.StreamReset):
            call = self.calls.get(event.stream_id)
            if call is not None:
                call.remote_ended = True
                call.scope.cancel()
        elif isinstance(event, h2.events.WindowUpdated):
            self.window_event.set()
            self.window_event = trio.Event()

    def _request_received(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        try:
            head = parse_request_head(headers)
        except HttpError as exc:
            self._send_headers(stream_id, http_error_headers(exc), end_stream=True)
            return
        except GrpcError as exc:
            self._send_headers(stream_id, trailers_only(exc.status, exc.message), end_stream=True)
            return
        if not self.router.serves(head.path):
            err = unknown_method_error(head.path, self.router.services)
            self._send_headers(stream_id, trailers_only(err.status, err.message), end_stream=True)
            self._reset_quietly(stream_id, _NO_ERROR)
            return
        call = _Call(
            stream_id=stream_id,
            head=head,
            body=UnaryBody(max_message_size=self.config.max_message_size, encoding=head.encoding),
            started=trio.current_time(),
        )
        self.calls[stream_id] = call
        self.read_scope.deadline = math.inf
        if self.nursery is None:  # pragma: no cover - run() sets it before reading
            raise RuntimeError("connection not running")
        self.nursery.start_soon(self._run_call, call)

    # --- one call -------------------------------------------------------------

    async def _run_call(self, call: _Call) -> None:
        status = StatusCode.CANCELLED
        try:
            with call.scope:
                status = await self._serve_call(call)
        finally:
            self.calls.pop(call.stream_id, None)
            if not self.calls:
                self.read_scope.deadline = trio.current_time() + self.config.idle_timeout
            self.metrics.observe(call.head.path, status, trio.current_time() - call.started)

    async def _serve_call(self, call: _Call) -> StatusCode:
        budget = self.config.request_timeout
        if call.head.timeout is not None:
            budget = min(budget, call.head.timeout)
        payload: bytes | None = None
        status, message = StatusCode.OK, ""
        with trio.move_on_after(budget) as deadline:
            try:
                await call.body_done.wait()
                if call.error is not None:
                    raise call.error
                request = call.body.finish()
                payload = await self.router.handle(call.head.path, request, call.head.metadata)
            except GrpcError as exc:
                status, message = exc.status, exc.message
            except Exception:
                log.exception("grpc: %s failed", call.head.path)
                status, message = StatusCode.INTERNAL, "internal error"
        if deadline.cancelled_caught:
            status, message, payload = StatusCode.DEADLINE_EXCEEDED, "deadline exceeded", None
        if payload is None:
            if status is StatusCode.OK:
                status, message = StatusCode.INTERNAL, "no response"
            self._send_headers(call.stream_id, trailers_only(status, message), end_stream=True)
        else:
            await self._send_response(call, payload)
        if not call.remote_ended:
            self._reset_quietly(call.stream_id, _NO_ERROR)
        return status

    async def _send_response(self, call: _Call, payload: bytes) -> None:
        sid = call.stream_id
        if not self._send_headers(sid, response_headers(), end_stream=False):
            return
        data = memoryview(frame_message(payload))
        while data:
            try:
                window = self.h2.local_flow_control_window(sid)
                size = min(window, self.h2.max_outbound_frame_size, len(data))
                if size > 0:
                    self.h2.send_data(sid, data[:size].tobytes())
                    data = data[size:]
                    self._kick()
                    continue
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                return
            waiter = self.window_event
            with trio.move_on_after(self.config.send_timeout) as waited:
                await waiter.wait()
            if waited.cancelled_caught:
                self._reset_quietly(sid, _CANCEL)
                return
        self._send_headers(sid, trailers(StatusCode.OK), end_stream=True)

    def _send_headers(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], *, end_stream: bool
    ) -> bool:
        try:
            self.h2.send_headers(stream_id, headers, end_stream=end_stream)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return False
        self._kick()
        return True

    def _reset_quietly(self, stream_id: int, code: int) -> None:
        try:
            self.h2.reset_stream(stream_id, error_code=code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self._kick()


# --- the listener ----------------------------------------------------------------

_BENIGN = (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, ssl.SSLError)


def _is_benign(exc: BaseException) -> bool:
    """A peer that went away or stalled (possibly inside an exception group)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_benign(e) for e in exc.exceptions)
    return isinstance(exc, _BENIGN)


async def _open_tls(
    stream: trio.SocketStream, ssl_context: ssl.SSLContext, deadline: float
) -> trio.SSLStream[trio.SocketStream] | None:
    tls = trio.SSLStream(stream, ssl_context, server_side=True)
    with trio.move_on_at(deadline):
        try:
            await tls.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError) as exc:
            log.info("grpc: TLS handshake failed: %s", exc)
            return None
        if tls.selected_alpn_protocol() not in (None, "h2"):
            log.info("grpc: client negotiated ALPN %r, not h2", tls.selected_alpn_protocol())
            return None
        return tls
    log.info("grpc: TLS handshake timed out")
    return None


def make_connection_handler(
    router: UnaryRouter,
    config: GrpcConfig,
    metrics: GrpcMetrics,
    ssl_context: ssl.SSLContext | None,
) -> Callable[[trio.SocketStream], Awaitable[None]]:
    """The per-connection task for ``trio.serve_listeners``; it never raises."""
    limiter = trio.CapacityLimiter(config.max_connections)
    if ssl_context is not None:
        ssl_context.set_alpn_protocols(["h2"])

    async def handle(sock: trio.SocketStream) -> None:
        try:
            limiter.acquire_nowait()
        except trio.WouldBlock:
            log.warning("grpc: connection limit (%d) reached", config.max_connections)
            await trio.aclose_forcefully(sock)
            return
        stream: trio.abc.Stream = sock
        try:
            deadline = trio.current_time() + config.handshake_timeout
            if ssl_context is not None:
                tls = await _open_tls(sock, ssl_context, deadline)
                if tls is None:
                    return
                stream = tls
            await _Connection(stream, router, config, metrics, deadline).run()
        except Exception as exc:
            if _is_benign(exc):
                log.info("grpc: connection dropped: %r", exc)
            else:
                log.exception("grpc: connection failed")
        finally:
            limiter.release()
            await trio.aclose_forcefully(stream)

    return handle

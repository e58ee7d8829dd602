"""The HTTP/1.1 server shell: h11 (sans-IO) driven over trio sockets, optional TLS.

``serve_http`` binds, reports the bound port through ``task_status``, and serves each
connection in its own task: read a request head (``header_timeout_s``; also the
keep-alive idle limit), read the body while counting bytes (``body_timeout_s``;
refused with 413 as soon as it exceeds ``max_body_bytes``, from Content-Length
before a byte of body is read), hand a ``Request`` to ``HttpApp.handle`` and write
its ``Response`` (each write within ``send_timeout_s``: a client that stops reading
is dropped). Keep-alive follows h11; a protocol error answers 400/431 and
closes. With TLS, a verified client certificate's SHA-256 travels in the request.
Over ``max_connections`` a new connection gets 503 and is closed.
"""

from __future__ import annotations

import http
import logging
import ssl
import time

import h11
import trio

from coordinator.auth import ApiKeyStore, cert_fingerprint
from coordinator.backend import Backend
from coordinator.http.app import HttpApp
from coordinator.http.config import HttpConfig
from coordinator.http.core import ApiError, Request, Response
from coordinator.metrics import Registry

log = logging.getLogger("tkms.coordinator.http")

RECV_SIZE = 64 * 1024
CLOSE_TIMEOUT_S = 2.0


class _Refused(Exception):
    """Raised inside a connection to answer with an error and close."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


def _peer(stream: trio.abc.Stream) -> str:
    s: object = stream
    if isinstance(s, trio.SSLStream):
        s = s.transport_stream
    if isinstance(s, trio.SocketStream):
        try:
            addr = s.socket.getpeername()
        except OSError:
            return "unknown"
        return str(addr[0]) if isinstance(addr, tuple) else str(addr)
    return "unknown"


class _Connection:
    """One client connection: the h11 state machine plus its stream."""

    def __init__(self, stream: trio.abc.Stream, config: HttpConfig) -> None:
        self.stream = stream
        self.config = config
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_header_bytes)

    async def next_event(self) -> object:
        """The next h11 event (an ``h11.Event`` or the ``PAUSED`` sentinel)."""
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                if self.h11.they_are_waiting_for_100_continue:
                    await self.send(h11.InformationalResponse(status_code=100, headers=[]))
                self.h11.receive_data(bytes(await self.stream.receive_some(RECV_SIZE)))
                continue
            return event

    async def send(self, event: h11.Event) -> None:
        """Send one event; ``trio.TooSlowError`` after ``send_timeout_s`` (the client
        stopped reading: the connection is dropped)."""
        data = self.h11.send(event)
        if data:
            with trio.fail_after(self.config.send_timeout_s):
                await self.stream.send_all(data)

    async def read_body(self, declared: int | None) -> bytes:
        limit = self.config.max_body_bytes
        if declared is not None and declared > limit:
            raise _Refused(_too_large(declared, limit))
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise _Refused(_too_large(size, limit))
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                raise trio.BrokenResourceError("connection closed during the body")

    async def respond(self, resp: Response, *, close: bool = False) -> None:
        headers = [
            ("Content-Type", resp.content_type),
            ("Content-Length", str(len(resp.body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Server", "tkms"),
            *resp.headers,
        ]
        if close:
            headers.append(("Connection", "close"))
        try:
            reason = http.HTTPStatus(resp.status).phrase.encode()
        except ValueError:
            reason = b""
        await self.send(h11.Response(status_code=resp.status, headers=headers, reason=reason))
        await self.send(h11.Data(data=resp.body))
        await self.send(h11.EndOfMessage())

    def can_respond(self) -> bool:
        return self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413, "body_too_large", f"body of {size} bytes exceeds the limit of {limit} bytes"
    )


def _headers(event: h11.Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw_name, raw_value in event.headers:
        name = raw_name.decode("ascii").lower()
        value = raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


class HttpServer:
    """Accepts connections and runs the request loop of each."""

    def __init__(self, app: HttpApp, config: HttpConfig) -> None:
        self.app = app
        self.config = config
        self.active = 0

    async def handle_connection(self, stream: trio.abc.Stream) -> None:
        self.active += 1
        try:
            await self._serve(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            pass
        except Exception:  # a bug of ours must end this connection, never the server
            log.exception("HTTP connection from %s failed", _peer(stream))
        finally:
            self.active -= 1
            with trio.move_on_after(CLOSE_TIMEOUT_S) as cs:
                cs.shield = True
                await stream.aclose()

    async def _serve(self, stream: trio.abc.Stream) -> None:
        cert: bytes | None = None
        if isinstance(stream, trio.SSLStream):
            with trio.fail_after(self.config.header_timeout_s):
                await stream.do_handshake()
            der = stream.getpeercert(binary_form=True)
            cert = cert_fingerprint(der) if der else None
        peer = _peer(stream)
        conn = _Connection(stream, self.config)
        overloaded = self.active > self.config.max_connections
        while True:
            start = time.perf_counter()
            try:
                with trio.move_on_after(self.config.header_timeout_s) as idle:
                    event = await conn.next_event()
                if idle.cancelled_caught:
                    return  # idle keep-alive, or a head that never completed
                if not isinstance(event, h11.Request):
                    return  # ConnectionClosed (or a client speaking out of turn)
                if overloaded:
                    raise _Refused(ApiError(503, "overloaded", "too many connections"))
                head_size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
                if head_size > self.config.max_header_bytes:  # h11 only bounds partial heads
                    raise _Refused(
                        ApiError(431, "headers_too_large", f"request head over {head_size} bytes")
                    )
                headers = _headers(event)
                declared = headers.get("content-length")  # h11 validated it
                size = int(declared.rpartition(",")[2]) if declared else None
                with trio.fail_after(self.config.body_timeout_s):
                    body = await conn.read_body(size)
                target = event.target.decode("ascii")
                path, _, query = target.partition("?")
                request = Request(
                    method=event.method.decode("ascii"),
                    path=path,
                    query=query,
                    headers=headers,
                    body=body,
                    peer=peer,
                    cert_sha256=cert,
                )
            except _Refused as refused:
                await self._refuse(conn, refused.error, start)
                return
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                code = "headers_too_large" if status == 431 else "bad_request"
                await self._refuse(conn, ApiError(status, code, f"malformed HTTP: {exc}"), start)
                return
            except UnicodeDecodeError:
                err = ApiError(400, "bad_request", "request target is not ASCII")
                await self._refuse(conn, err, start)
                return
            response = await self.app.handle(request)
            await conn.respond(response)
            if conn.h11.our_state is h11.MUST_CLOSE or conn.h11.their_state is h11.MUST_CLOSE:
                return
            conn.h11.start_next_cycle()

    async def _refuse(self, conn: _Connection, error: ApiError, start: float) -> None:
        self.app.record("unmatched", "-", error.status, time.perf_counter() - start)
        if conn.can_respond():
            await conn.respond(error.response(), close=True)


async def serve_http(
    backend: Backend,
    auth: ApiKeyStore,
    *,
    config: HttpConfig,
    metrics: Registry | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the client HTTP API until cancelled; ``task_status.started(port)``
    reports the bound TCP port once the socket listens."""
    config.validate()
    app = HttpApp(backend, auth, config, metrics if metrics is not None else Registry())
    ssl_ctx: ssl.SSLContext | None = config.tls.ssl_context() if config.tls else None
    sockets = await trio.open_tcp_listeners(config.port, host=config.host)
    if config.port == 0:  # each address family would get its own random port
        for extra in sockets[1:]:
            await extra.aclose()
        sockets = sockets[:1]
    port: int = sockets[0].socket.getsockname()[1]
    listeners: list[trio.abc.Listener[trio.abc.Stream]] = (
        [trio.SSLListener(s, ssl_ctx, https_compatible=True) for s in sockets]
        if ssl_ctx is not None
        else list(sockets)
    )
    server = HttpServer(app, config)
    scheme = "https" if ssl_ctx else "http"
    log.info("HTTP API on %s://%s:%d", scheme, config.host, port)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, server.handle_connection, listeners)
        task_status.started(port)

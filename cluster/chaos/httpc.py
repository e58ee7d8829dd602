"""A small HTTP/1.1 client on trio and h11 for the chaos load (loopback only).

One connection per request (``Connection: close``): a coordinator restart can never
leave a stale keep-alive connection behind, and a refused or reset connection is an
``HttpUnavailable`` the load may retry. Every request runs under one deadline that
covers connecting, sending and reading (``HttpTimeout`` when it passes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import h11
import trio

RECV_SIZE = 64 * 1024
MAX_BODY = 4 * 1024 * 1024


class HttpUnavailable(Exception):
    """No HTTP response: the connection was refused, reset or closed early."""


class HttpRefused(HttpUnavailable):
    """The connection could not be made: the request never reached the server."""


class HttpTimeout(HttpUnavailable):
    """The request's deadline passed before a whole response arrived."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON (None if it is not JSON)."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        raise ValueError(f"not a loopback host:port: {address!r}")
    return host, int(port)


async def _exchange(
    host: str, port: int, method: str, path: str, headers: list[tuple[str, str]], body: bytes
) -> HttpResponse:
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise HttpRefused(f"connect {host}:{port}: {exc.strerror or exc}") from None
    conn = h11.Connection(h11.CLIENT)
    try:
        request = h11.Request(method=method, target=path, headers=headers)
        data = conn.send(request) + (conn.send(h11.Data(data=body)) if body else b"")
        await stream.send_all(data + conn.send(h11.EndOfMessage()))
        status = 0
        chunks: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(RECV_SIZE)))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    raise HttpUnavailable("response body too large")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return HttpResponse(status, b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise HttpUnavailable("connection closed before the response ended")
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise HttpUnavailable(f"connection broken: {exc}") from None
    except h11.RemoteProtocolError as exc:
        raise HttpUnavailable(f"malformed response: {exc}") from None
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            await stream.aclose()


async def request(
    address: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    api_key: str | None = None,
    deadline_s: float,
) -> HttpResponse:
    """One request to ``address`` (``127.0.0.1:port``); ``body`` is sent as JSON."""
    host, port = split_address(address)
    payload = b"" if body is None else json.dumps(body).encode()
    headers = [("Host", address), ("Connection", "close"), ("Accept", "application/json")]
    if api_key is not None:
        headers.append(("Authorization", f"Bearer {api_key}"))
    if body is not None:
        headers += [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    with trio.move_on_after(deadline_s):
        return await _exchange(host, port, method, path, headers, payload)
    raise HttpTimeout(f"{method} {path}: no response within {deadline_s:g} s")

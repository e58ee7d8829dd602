"""Transport-independent HTTP types: ``Request``, ``Response``, ``ApiError``, routing.

The server shell (``server.py``, h11 over trio) turns bytes into a ``Request`` and a
``Response`` back into bytes; everything in between (``app.py``) only sees these
types. A route is a method, a path template with ``{param}`` segments, who may call
it and which timeout applies; ``Router.match`` answers a route, 404 or 405.

Every refusal is an ``ApiError`` rendered as
``{"error": {"code": "...", "message": "...", ...details}}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from coordinator.backend import Client

# Who may call a route: nobody needs credentials / any authenticated client /
# a role. Signer routes check the key id in the path against the client's keys.
Access = Literal["public", "health", "metrics", "authenticated", "operator", "signer"]
TimeoutKind = Literal["request", "sign", "ceremony"]

JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # lower-case names; repeated headers joined by ", "
    body: bytes
    peer: str  # source IP address
    cert_sha256: bytes | None = None  # verified TLS client certificate, if any

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = JSON_CONTENT_TYPE
    headers: tuple[tuple[str, str], ...] = ()


def json_response(status: int, obj: Any, headers: Sequence[tuple[str, str]] = ()) -> Response:
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"
    return Response(status, body, JSON_CONTENT_TYPE, tuple(headers))


class ApiError(Exception):
    """A refusal with an HTTP status, a stable machine code and a reason."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = tuple(headers)
        self.details = details

    def response(self) -> Response:
        err: dict[str, Any] = {"code": self.code, "message": self.message, **self.details}
        return json_response(self.status, {"error": err}, self.headers)


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler gets besides the request: path parameters and the caller."""

    params: Mapping[str, str]
    client: Client | None  # None on public routes


Handler = Callable[[Request, Context], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    template: str  # e.g. "/v1/keys/{key_id}/sign"
    handler: Handler
    access: Access
    json_body: bool = False  # expects an application/json body
    timeout: TimeoutKind = "request"
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = []
        for seg in self.template.strip("/").split("/"):
            m = re.fullmatch(r"\{([a-z_]+)\}", seg)
            parts.append(f"(?P<{m.group(1)}>[^/]+)" if m else re.escape(seg))
        object.__setattr__(self, "regex", re.compile("^/" + "/".join(parts) + "$"))

    @property
    def is_literal(self) -> bool:
        return "{" not in self.template


class Router:
    """Route lookup. A path matching a literal template (``/v1/keys/import``) belongs
    to that template only, so it never falls through to ``/v1/keys/{key_id}``."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)
        seen = set()
        for r in self.routes:
            if (r.method, r.template) in seen:
                raise ValueError(f"duplicate route {r.method} {r.template}")
            seen.add((r.method, r.template))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route and its path parameters; ``ApiError`` 404 or 405 otherwise."""
        literal = [r for r in self.routes if r.is_literal and r.regex.match(path)]
        candidates = literal or [r for r in self.routes if r.regex.match(path)]
        if not candidates:
            raise ApiError(404, "not_found", f"no route for {path}")
        by_template = [r for r in candidates if r.template == candidates[0].template]
        for r in by_template:
            if r.method == method:
                m = r.regex.match(path)
                return r, dict(m.groupdict()) if m else {}
        allowed = ", ".join(sorted({r.method for r in by_template}))
        raise ApiError(
            405,
            "method_not_allowed",
            f"{method} is not allowed on {candidates[0].template}; use {allowed}",
            headers=[("Allow", allowed)],
        )

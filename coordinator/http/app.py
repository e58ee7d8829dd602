"""The client HTTP API of the coordinator: routes, access control, handlers, metrics.

``HttpApp.handle(Request) -> Response`` is the whole API; the server shell in
``server.py`` only moves bytes. Each request goes through, in order: source address
allowlist (403) -> route (404/405) -> no query string (400) -> path key id (400) ->
credentials (401) -> per-client rate limit (429) -> role (403) -> content type (415)
-> strict body validation (400) -> backend, under a deadline (504). Nothing reaches
the backend before every check has passed, so a bad request signs nothing.

To add an endpoint: write ``async def handler(self, req, ctx) -> Response``, add one
``Route`` to ``routes()`` and document it in ``docs/openapi.yaml`` (a test checks
the two agree) and ``docs/api.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from coordinator.auth import ApiKeyStore, IpAllowlist, RateLimiter, parse_bearer
from coordinator.backend import (
    Backend,
    CeremonyAborted,
    CeremonyInProgress,
    Client,
    Forbidden,
    InvalidRequest,
    KeyExists,
    KeyNotActive,
    NotEnoughSigners,
    NotImplementedYet,
    SignResult,
    UnknownKey,
    UsageLimitExceeded,
)
from coordinator.http import validation as v
from coordinator.http.config import HttpConfig
from coordinator.http.core import (
    JSON_CONTENT_TYPE,
    ApiError,
    Context,
    Request,
    Response,
    Route,
    Router,
    json_response,
)
from coordinator.http.eigen import EigenRoutes
from coordinator.http.views import (
    health_view,
    hex32,
    key_view,
    progress_view,
    signature_view,
    transcript_view,
)
from coordinator.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from coordinator.metrics import Registry
from protocol.errors import DecodeError, Fault, TkmsError

log = logging.getLogger("tkms.coordinator.http")

HEALTH_ROLES = frozenset({"auditor", "operator"})


def error_from_backend(exc: TkmsError) -> ApiError:
    """The HTTP refusal for a typed backend error."""
    if isinstance(exc, UnknownKey):
        return ApiError(404, "unknown_key", str(exc), keyId=exc.key_id)
    if isinstance(exc, KeyExists):
        return ApiError(409, "key_exists", str(exc), keyId=exc.key_id)
    if isinstance(exc, KeyNotActive):
        return ApiError(409, "key_not_active", str(exc), keyId=exc.key_id, keyStatus=exc.status)
    if isinstance(exc, Forbidden):
        return ApiError(403, "forbidden", str(exc) or "forbidden")
    if isinstance(exc, NotEnoughSigners):
        return ApiError(
            503,
            "not_enough_signers",
            str(exc),
            headers=[("Retry-After", "1")],
            keyId=exc.key_id,
            needed=exc.needed,
            got=exc.got,
            missing=list(exc.missing),
        )
    if isinstance(exc, UsageLimitExceeded):
        return ApiError(429, "usage_limit", str(exc), keyId=exc.key_id, nodes=list(exc.nodes))
    if isinstance(exc, InvalidRequest):
        return ApiError(400, "invalid_field", str(exc), field=exc.field)
    if isinstance(exc, CeremonyInProgress):
        return ApiError(409, "ceremony_in_progress", str(exc), keyId=exc.key_id)
    if isinstance(exc, CeremonyAborted):
        return ApiError(
            502, "ceremony_aborted", str(exc), keyId=exc.key_id, missed=list(exc.missed)
        )
    if isinstance(exc, NotImplementedYet):
        return ApiError(501, "not_implemented", str(exc))
    if exc.fault is Fault.CLIENT:
        return ApiError(400, "bad_request", str(exc))
    if exc.fault is Fault.PEER:
        return ApiError(502, "upstream_error", str(exc))
    log.error("backend error (%s): %s", type(exc).__name__, exc)
    return ApiError(500, "internal_error", "internal error")


class HttpApp:
    """Routes and handlers over a ``Backend``; see the module header for the order
    of checks."""

    def __init__(
        self,
        backend: Backend,
        auth: ApiKeyStore,
        config: HttpConfig,
        metrics: Registry,
        *,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.backend = backend
        self.auth = auth
        self.config = config
        self.allowlist = IpAllowlist(config.allow_networks)
        self.limiter = RateLimiter(config.rate_limit, clock)
        self.router = Router(self.routes())
        self.registry = metrics
        self.m_requests = metrics.counter(
            "tkms_http_requests_total",
            "HTTP requests by route template, method and status.",
            ("route", "method", "status"),
        )
        self.m_latency = metrics.histogram(
            "tkms_http_request_duration_seconds",
            "HTTP request latency (head received to response ready).",
            ("route", "method"),
        )
        self.m_nodes_up = metrics.gauge("tkms_nodes_up", "Nodes with a live session.")
        self.m_node_up = metrics.gauge("tkms_node_up", "1 if the node is up.", ("node",))
        self.m_partial_failures = metrics.counter(
            "tkms_node_partial_failures_total",
            "Partial signatures from the node that failed or did not verify.",
            ("node",),
        )
        self.m_key_can_sign = metrics.gauge(
            "tkms_key_can_sign", "1 if the key is active with t holders up.", ("key_id",)
        )

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/healthz", self.healthz, "health"),
            Route("GET", "/metrics", self.metrics, "metrics"),
            Route("GET", "/v1/keys", self.list_keys, "authenticated"),
            Route("GET", "/v1/keys/{key_id}", self.get_key, "authenticated"),
            Route("DELETE", "/v1/keys/{key_id}", self.destroy_key, "operator"),
            Route("POST", "/v1/keys/{key_id}/sign", self.sign, "signer", True, "sign"),
            Route("POST", "/v1/keys/{key_id}/sign-batch", self.sign_batch, "signer", True, "sign"),
            Route("POST", "/v1/dkg", self.dkg, "operator", True, "ceremony"),
            Route("GET", "/v1/dkg/{key_id}", self.dkg_progress, "operator"),
            Route("GET", "/v1/keys/{key_id}/transcript", self.get_transcript, "authenticated"),
            *EigenRoutes(self.backend).routes(),  # key import, registration signature
        ]

    # -- pipeline -----------------------------------------------------------------

    async def handle(self, req: Request) -> Response:
        start = time.perf_counter()
        label = "unmatched"
        client_id = "-"
        try:
            if not self.allowlist.allows(req.peer):
                raise ApiError(403, "address_not_allowed", f"source address {req.peer} refused")
            route, params = self.router.match(req.method, req.path)
            label = route.template
            if req.query:
                raise ApiError(400, "invalid_field", "no query parameters expected", field="query")
            if "key_id" in params:
                v.key_id(params["key_id"], "key_id")
            client = self._authorize(req, route, params)
            client_id = client.client_id if client else "-"
            self._check_body(req, route)
            timeout = {
                "request": self.config.request_timeout_s,
                "sign": self.config.sign_timeout_s,
                "ceremony": self.config.ceremony_timeout_s,
            }[route.timeout]
            with trio.fail_after(timeout):
                resp = await route.handler(req, Context(params, client))
        except ApiError as exc:
            resp = exc.response()
        except TkmsError as exc:
            resp = error_from_backend(exc).response()
        except trio.TooSlowError:
            resp = ApiError(504, "timeout", "the request did not complete in time").response()
        except Exception as exc:
            log.exception("unhandled %s in %s %s", type(exc).__name__, req.method, label)
            resp = ApiError(500, "internal_error", "internal error").response()
        elapsed = time.perf_counter() - start
        self.record(label, req.method, resp.status, elapsed)
        log.info(
            "%s %s %s client=%s %.1fms", req.method, label, resp.status, client_id, elapsed * 1e3
        )
        return resp

    def record(self, route: str, method: str, status: int, elapsed: float) -> None:
        """Count one request (also used by the server shell for transport refusals)."""
        self.m_requests.inc(route=route, method=method, status=str(status))
        self.m_latency.observe(elapsed, route=route, method=method)

    def _credentials(self, req: Request) -> Client | None:
        cert_client = (
            self.auth.authenticate_cert(req.cert_sha256) if req.cert_sha256 is not None else None
        )
        try:
            token = parse_bearer(req.header("authorization"), req.header("x-api-key"))
        except DecodeError as exc:
            raise ApiError(401, "invalid_api_key", str(exc), headers=[_BEARER]) from None
        if token is None:
            return cert_client
        client = self.auth.authenticate(token)
        if client is None:
            raise ApiError(401, "invalid_api_key", "API key not recognised", headers=[_BEARER])
        if cert_client is not None and cert_client.client_id != client.client_id:
            raise ApiError(
                401, "invalid_api_key", "API key and client certificate name different clients"
            )
        return client

    def _authorize(self, req: Request, route: Route, params: dict[str, str]) -> Client | None:
        if route.access == "public" or (
            (route.access == "health" and self.config.public_health)
            or (route.access == "metrics" and self.config.public_metrics)
        ):
            return None
        client = self._credentials(req)
        if client is None:
            raise ApiError(
                401,
                "unauthenticated",
                "an API key is required (Authorization: Bearer)",
                headers=[_BEARER],
            )
        wait = self.limiter.check(client.client_id, self.auth.rate_limit_for(client.client_id))
        if wait > 0:
            retry = RateLimiter.retry_after_header(wait)
            raise ApiError(
                429,
                "rate_limited",
                f"rate limit exceeded for client {client.client_id!r}; retry in {retry} s",
                headers=[("Retry-After", retry)],
                retryAfter=int(retry),
            )
        if route.access == "operator" and not client.is_operator:
            raise ApiError(403, "forbidden", "this call needs the operator role")
        if route.access == "signer" and not client.may_sign(params["key_id"]):
            raise ApiError(403, "forbidden", f"client may not sign with key {params['key_id']!r}")
        if route.access in ("health", "metrics") and not client.roles & HEALTH_ROLES:
            raise ApiError(403, "forbidden", "this call needs the auditor or operator role")
        if route.access == "authenticated" and not client.roles:
            raise ApiError(403, "forbidden", "this client has no role")
        return client

    @staticmethod
    def _check_body(req: Request, route: Route) -> None:
        if not route.json_body:
            if req.body:
                raise ApiError(
                    400, "unexpected_body", f"{req.method} {route.template} takes no body"
                )
            return
        ctype = (req.header("content-type") or "").split(";", 1)[0].strip().lower()
        if ctype != JSON_CONTENT_TYPE:
            raise ApiError(
                415,
                "unsupported_media_type",
                f"expected Content-Type {JSON_CONTENT_TYPE}, got {ctype or 'none'}",
            )

    # -- handlers -----------------------------------------------------------------

    async def healthz(self, req: Request, ctx: Context) -> Response:
        status, body = health_view(await self.backend.health())
        return json_response(503 if status == "unavailable" else 200, body)

    async def metrics(self, req: Request, ctx: Context) -> Response:
        try:
            h = await self.backend.health()
        except TkmsError as exc:
            log.warning("health for /metrics failed: %s", exc)
        else:
            self.m_nodes_up.set(sum(1 for n in h.nodes if n.up))
            self.m_node_up.clear()
            for n in h.nodes:
                self.m_node_up.set(1 if n.up else 0, node=n.name)
                self.m_partial_failures.set_total(n.partial_failures, node=n.name)
            self.m_key_can_sign.clear()
            for k in h.keys:
                self.m_key_can_sign.set(1 if k.can_sign else 0, key_id=k.key_id)
        return Response(200, self.registry.render().encode(), METRICS_CONTENT_TYPE)

    async def list_keys(self, req: Request, ctx: Context) -> Response:
        keys = await self.backend.list_keys()
        return json_response(200, {"keys": [key_view(k) for k in keys]})

    async def get_key(self, req: Request, ctx: Context) -> Response:
        return json_response(200, key_view(await self.backend.get_key(ctx.params["key_id"])))

    async def destroy_key(self, req: Request, ctx: Context) -> Response:
        kid = ctx.params["key_id"]
        await self.backend.destroy_key(kid, client=_client(ctx))
        return json_response(200, {"destroyed": kid})

    async def _active_key(self, kid: str) -> None:
        info = await self.backend.get_key(kid)
        if info.status != "active":
            raise KeyNotActive(kid, info.status)

    async def sign(self, req: Request, ctx: Context) -> Response:
        kid = ctx.params["key_id"]
        msg = v.sign_body(req.body)
        await self._active_key(kid)
        result = await self.backend.sign(kid, msg, client=_client(ctx))
        return json_response(200, signature_view(result))

    async def sign_batch(self, req: Request, ctx: Context) -> Response:
        kid = ctx.params["key_id"]
        hashes = v.sign_batch_body(req.body, self.config.max_batch)
        await self._active_key(kid)
        results = await self.backend.sign_batch(kid, hashes, client=_client(ctx))
        if len(results) != len(hashes):
            log.error("sign_batch returned %d results for %d hashes", len(results), len(hashes))
            raise ApiError(500, "internal_error", "internal error")
        items: list[dict[str, Any]] = []
        for h, r in zip(hashes, results, strict=True):
            if isinstance(r, SignResult):
                items.append(signature_view(r))
            else:
                err = error_from_backend(r)
                items.append(
                    {"msgHash": hex32(h), "error": {"code": err.code, "message": err.message}}
                )
        return json_response(200, {"keyId": kid, "results": items})

    async def dkg(self, req: Request, ctx: Context) -> Response:
        kid, threshold, min_holders = v.dkg_body(req.body)
        info = await self.backend.run_dkg(
            kid, threshold, min_holders=min_holders, client=_client(ctx)
        )
        return json_response(201, key_view(info), [("Location", f"/v1/keys/{kid}")])

    async def dkg_progress(self, req: Request, ctx: Context) -> Response:
        progress = await self.backend.dkg_progress(ctx.params["key_id"])
        return json_response(200, progress_view(progress))

    async def get_transcript(self, req: Request, ctx: Context) -> Response:
        data = await self.backend.get_transcript(ctx.params["key_id"])
        return json_response(200, transcript_view(data))


_BEARER = ("WWW-Authenticate", 'Bearer realm="tkms"')


def _client(ctx: Context) -> Client:
    if ctx.client is None:  # only public routes run without a client
        raise ApiError(500, "internal_error", "internal error")
    return ctx.client

"""The cerberus-compatible gRPC front end inside the coordinator process.

``start_grpc(nursery, backend, auth, config, metrics)`` serves ``coordinator.grpc``
on the config's ``grpc_listen`` next to the HTTP API: same ``Backend`` (the registry
rebuilt from the nodes, signatures from the threshold path), same API keys and roles
(``ApiKeyStore.authenticate``), same metrics registry (cerberus' metric names show up
in ``GET /metrics``). Plaintext h2c on loopback; with ``tls_cert`` / ``tls_key`` it
speaks TLS 1.2+ with ALPN ``h2`` (the same certificate as the HTTP API; eigensdk-go
sends no client certificate, so the API key is the client credential). A
non-loopback ``grpc_listen`` without TLS is refused by the config unless
``insecure = true``. Returns the bound port (``grpc_listen`` may say port 0).
"""

from __future__ import annotations

import ssl
from functools import partial

import trio

from coordinator.auth import ApiKeyStore
from coordinator.backend import Backend
from coordinator.config import CoordinatorConfig
from coordinator.grpc import GrpcConfig, GrpcMetrics, serve_grpc
from coordinator.metrics import Registry
from protocol.errors import Fault, TkmsError


class GrpcStartupError(TkmsError):
    """The gRPC endpoint cannot start (certificate files, address in use)."""

    fault = Fault.CONFIG


def grpc_ssl_context(config: CoordinatorConfig) -> ssl.SSLContext | None:
    """A server TLS context from ``tls_cert`` / ``tls_key``, or None (plaintext)."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise GrpcStartupError(f"gRPC TLS: cannot load certificate files: {exc}") from None
    return ctx


async def start_grpc(
    nursery: trio.Nursery,
    backend: Backend,
    auth: ApiKeyStore,
    config: CoordinatorConfig,
    metrics: Registry,
    *,
    grpc_config: GrpcConfig | None = None,
) -> int:
    """Start serving in ``nursery``; the bound port."""
    host, port = config.grpc_listen
    try:
        listeners: list[trio.SocketListener] = await nursery.start(
            partial(
                serve_grpc,
                backend,
                auth.authenticate,
                host=host,
                port=port,
                ssl_context=grpc_ssl_context(config),
                config=grpc_config or GrpcConfig(),
                metrics=GrpcMetrics(metrics),
            )
        )
    except OSError as exc:
        raise GrpcStartupError(f"cannot listen on {host}:{port} (gRPC): {exc}") from None
    bound: int = listeners[0].socket.getsockname()[1]
    return bound

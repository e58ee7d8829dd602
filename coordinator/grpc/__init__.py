"""The cerberus-compatible gRPC front end of the coordinator (trio + h2, no grpcio).

``serve_grpc`` listens on ``host:port`` and serves the cerberus remote-signer API
(``coordinator/grpc/service.py``) through the unary gRPC server in
``coordinator/grpc/server.py``; ``GrpcMetrics`` counts requests under cerberus'
metric names. See docs/grpc.md.
"""

from __future__ import annotations

import ssl

import trio

from coordinator.backend import Backend
from coordinator.grpc.metrics import GrpcMetrics
from coordinator.grpc.server import GrpcConfig, UnaryRouter, make_connection_handler
from coordinator.grpc.service import Authenticate, CerberusService

__all__ = [
    "Authenticate",
    "CerberusService",
    "GrpcConfig",
    "GrpcMetrics",
    "UnaryRouter",
    "serve_grpc",
    "serve_router",
]


async def serve_router(
    router: UnaryRouter,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    config: GrpcConfig,
    metrics: GrpcMetrics | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve any unary router until cancelled; ``task_status.started(listeners)``."""
    handler = make_connection_handler(router, config, metrics or GrpcMetrics(), ssl_context)
    listeners = await trio.open_tcp_listeners(port, host=host)
    await trio.serve_listeners(handler, listeners, task_status=task_status)


async def serve_grpc(
    backend: Backend,
    authenticate: Authenticate,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    config: GrpcConfig,
    metrics: GrpcMetrics | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the cerberus API for ``backend`` until cancelled.

    Plaintext HTTP/2 (h2c, prior knowledge) without ``ssl_context``; TLS with ALPN
    ``h2`` with one (its ALPN protocols are set to ``["h2"]``). Started value: the
    bound listeners (port 0 picks a free port: read it from
    ``listeners[0].socket.getsockname()``).
    """
    await serve_router(
        CerberusService(backend, authenticate),
        host=host,
        port=port,
        ssl_context=ssl_context,
        config=config,
        metrics=metrics,
        task_status=task_status,
    )

"""The node's RPC handler registry: one module per area registers its methods.

A handler module exposes ``register(registry: HandlerRegistry, ctx: NodeContext)``
and is listed in ``HANDLER_MODULES``; ``build_registry`` imports each and lets it
add its handlers. A handler is ``async def handler(params: dict) -> result``:
``params`` already passed the method's params schema (``protocol.node_api``), and
the result is checked against the method's result schema before it is sent.
Handlers raise ``protocol.rpc.RpcError`` for a specific error code, or a
``TkmsError`` (CLIENT/PEER fault → ``BAD_REQUEST`` with its message; anything else
→ ``INTERNAL``, logged by the transport, never sent). Example::

    # node/handlers/signing.py
    from protocol import node_api

    def register(registry: HandlerRegistry, ctx: NodeContext) -> None:
        @registry.handles(node_api.SIGN)
        async def sign(params: dict[str, Any]) -> dict[str, Any]:
            share = await ctx.store.get_share(params["key_id"])
            ...

The registry refuses two handlers for one method and a method that is not declared
in ``protocol.node_api.METHODS`` (so the coordinator can always call it). A module
that needs a task of its own for the node's lifetime (timers, recovery at start)
registers it with ``registry.background(fn)``; the server runs it in its nursery
from before the first request until shutdown.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from node.audit_log import AuditLog
from node.config import NodeConfig
from node.entropy import EntropyService
from node.hsm import HsmSession
from node.identity import NodeIdentity
from node.store import ShareStore
from node.transport import Handler, Route
from protocol import node_api
from protocol.manifest import Manifest, NodeEntry
from protocol.rpc import Method

# Areas served by every node; later modules (dkg, signing) append themselves here.
HANDLER_MODULES: tuple[str, ...] = (
    "node.handlers.status",
    "node.handlers.dkg",
    "node.handlers.signing",
    "node.handlers.audit",
    "node.handlers.key_import",
)


@dataclass(frozen=True, slots=True)
class NodeContext:
    """Everything a handler may use: the node's open resources (no secret in repr:
    the identity and the store hide theirs)."""

    config: NodeConfig
    manifest: Manifest
    entry: NodeEntry  # this node in the manifest
    identity: NodeIdentity
    hsm: HsmSession
    entropy: EntropyService
    store: ShareStore
    audit: AuditLog

    @property
    def cluster_id(self) -> bytes:
        return self.manifest.cluster_id


class HandlerRegistry:
    """Method name → (method, handler). Build it with ``build_registry``."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._tasks: list[Callable[[], Awaitable[None]]] = []

    def add(self, method: Method, handler: Handler) -> None:
        """Serve ``method`` with ``handler``.

        Raises:
            ValueError: the method is not in ``protocol.node_api.METHODS`` (or is a
                different object of the same name), or it already has a handler.
        """
        if node_api.METHODS.get(method.name) is not method:
            raise ValueError(f"{method.name} is not declared in protocol.node_api")
        if method.name in self._routes:
            raise ValueError(f"two handlers for {method.name}")
        self._routes[method.name] = Route(method, handler)

    def handles(self, method: Method) -> Callable[[Handler], Handler]:
        """Decorator form of ``add``."""

        def decorate(handler: Handler) -> Handler:
            self.add(method, handler)
            return handler

        return decorate

    def background(self, task: Callable[[], Awaitable[None]]) -> None:
        """Run ``task`` for the node's lifetime (cancelled at shutdown)."""
        self._tasks.append(task)

    @property
    def tasks(self) -> tuple[Callable[[], Awaitable[None]], ...]:
        return tuple(self._tasks)

    @property
    def methods(self) -> frozenset[str]:
        return frozenset(self._routes)

    def routes(self, wrap: Callable[[Handler], Handler] | None = None) -> list[Route]:
        """The routes for ``serve_rpc``; ``wrap`` decorates every handler (the
        server's shutdown gate)."""
        if wrap is None:
            return list(self._routes.values())
        return [Route(r.method, wrap(r.handler)) for r in self._routes.values()]


def build_registry(ctx: NodeContext, modules: Iterable[str] = HANDLER_MODULES) -> HandlerRegistry:
    """Import each handler module and let it register its methods."""
    registry = HandlerRegistry()
    for name in modules:
        importlib.import_module(name).register(registry, ctx)
    return registry

"""The node process: start-up checks, the RPC server, graceful shutdown.

``open_node(config)`` brings a node up in a fixed order and refuses to start (a
typed error, nothing left open) when anything is off:

0. no other process runs on this data dir (an exclusive ``flock`` on
   ``<data_dir>/node.lock``, held until exit and released by the kernel even after a
   SIGKILL): two writers would fork the audit log's hash chain;
1. the manifest (``config.manifest``) lists this node by name and at least one
   coordinator;
2. the HSM opens: module present, token found by label, user PIN accepted;
3. the entropy start-up tests pass;
4. the identity unseals (tamper or a copy from another node fails here) and its
   Noise and Ed25519 public keys are exactly the manifest's for this node;
5. the share store opens (interrupted writes cleaned, histories checked);
6. the audit log (``<data_dir>/audit.log``, log id ``<cluster id hex>/<name>``)
   verifies and records ``node.start``.

``serve_node(config, shutdown=...)`` then serves ``serve_rpc`` on ``config.listen``
to the manifest's coordinators only, with the handlers of ``node.handlers``. When
``shutdown`` is set it stops taking requests (new ones get ``UNAVAILABLE``), waits
for the ones in flight up to ``drain_timeout_s``, closes the listener and every
connection, records ``node.stop`` and closes the audit log, the store and the HSM.
``run_node_process`` is the ``tkms node run`` entry: SIGTERM or SIGINT set ``shutdown``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from node.audit_log import AuditLogConfig, open_audit_log
from node.config import NodeConfig, parse_listen
from node.entropy import open_entropy
from node.handlers import HANDLER_MODULES, NodeContext, build_registry
from node.hsm import open_hsm
from node.identity import NodeIdentity, unseal_identity
from node.store import open_store
from node.transport import Handler, ListenerConfig, Route, serve_rpc
from protocol.errors import Fault, TkmsError
from protocol.manifest import Manifest, ManifestError, NodeEntry, parse_manifest
from protocol.noise import KeyPair
from protocol.rpc import ErrorCode, RpcError

log = logging.getLogger("tkms.node")

AUDIT_LOG_FILE = "audit.log"
LOCK_FILE = "node.lock"


class NodeStartupError(TkmsError):
    """The node refuses to start: its config, manifest and identity disagree."""

    fault = Fault.CONFIG


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How the node serves (seconds). The listener's own timeouts are in ``listener``."""

    listener: ListenerConfig = field(default_factory=ListenerConfig)
    drain_timeout_s: float = 5.0  # in-flight requests get this long at shutdown
    handler_modules: tuple[str, ...] = HANDLER_MODULES

    def __post_init__(self) -> None:
        if not 0 < self.drain_timeout_s <= 60:
            raise ValueError("drain_timeout_s must be in (0, 60]")


def load_manifest_entry(config: NodeConfig) -> tuple[Manifest, NodeEntry]:
    """The manifest and this node's entry in it (``NodeStartupError`` otherwise)."""
    if config.manifest is None:
        raise NodeStartupError(f"node {config.name}: the config names no manifest")
    try:
        text = config.manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise NodeStartupError(f"cannot read the manifest {config.manifest}: {reason}") from None
    try:
        manifest = parse_manifest(text)
    except ManifestError as exc:
        raise NodeStartupError(f"manifest {config.manifest}: {exc}") from None
    try:
        entry = manifest.node(config.name)
    except KeyError:
        raise NodeStartupError(
            f"manifest {config.manifest} does not list a node named {config.name!r}"
        ) from None
    if not manifest.coordinators:
        raise NodeStartupError(
            f"manifest {config.manifest} lists no coordinator: nobody could connect"
        )
    return manifest, entry


def check_identity(identity: NodeIdentity, entry: NodeEntry, config: NodeConfig) -> None:
    """The unsealed identity must be the one the manifest pins for this node."""
    public = identity.public
    for what, mine, listed in (
        ("Noise", public.noise_public_key, entry.noise_public_key),
        ("Ed25519", public.ed25519_public_key, entry.ed25519_public_key),
    ):
        if mine != listed:
            raise NodeStartupError(
                f"manifest {config.manifest} lists node {entry.name} with {what} key "
                f"{listed.hex()}, but this node's identity has {mine.hex()} "
                "(wrong data dir, or the manifest is out of date)"
            )


@contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the data dir (``NodeStartupError`` if another process
    has it). The lock file holds the owner's pid, for the error message."""
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise NodeStartupError(f"cannot open {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise NodeStartupError(
                f"another node process (pid {owner}) is running on data dir {data_dir}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)  # releases the lock


@asynccontextmanager
async def open_node(config: NodeConfig) -> AsyncIterator[NodeContext]:
    """Bring up every resource of the node in order (see the module header)."""
    with data_dir_lock(config.data_dir):
        async with _open_node(config) as ctx:
            yield ctx


@asynccontextmanager
async def _open_node(config: NodeConfig) -> AsyncIterator[NodeContext]:
    manifest, entry = load_manifest_entry(config)
    if parse_listen(config.listen, "listen")[1] != entry.port:
        log.warning(
            "listen %s and the manifest's address %s differ in port", config.listen, entry.address
        )
    async with open_hsm(config) as hsm, open_entropy(hsm) as entropy:
        log.info("token %s open; entropy start-up tests passed", config.token_label)
        identity = await unseal_identity(hsm, name=config.name, data_dir=config.data_dir)
        check_identity(identity, entry, config)
        log.info("identity unsealed; Noise key %s", identity.public.noise_public_key.hex())
        audit_config = AuditLogConfig(
            path=config.data_dir / AUDIT_LOG_FILE,
            log_id=f"{manifest.cluster_id.hex()}/{config.name}",
            actor=config.name,
        )
        async with (
            open_store(
                config.data_dir, hsm, cluster_id=manifest.cluster_id, node_index=entry.index
            ) as store,
            open_audit_log(audit_config, signing_key=identity.signing_key) as audit,
        ):
            yield NodeContext(
                config=config,
                manifest=manifest,
                entry=entry,
                identity=identity,
                hsm=hsm,
                entropy=entropy,
                store=store,
                audit=audit,
            )


class RequestGate:
    """Counts requests in flight; once closed, refuses new ones with ``UNAVAILABLE``."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.closed = False
        self._idle = trio.Event()
        self._idle.set()

    def wrap(self, handler: Handler) -> Handler:
        async def gated(params: dict[str, object]) -> object:
            if self.closed:
                raise RpcError(ErrorCode.UNAVAILABLE, "node is shutting down")
            if self.in_flight == 0:
                self._idle = trio.Event()
            self.in_flight += 1
            try:
                return await handler(params)
            finally:
                self.in_flight -= 1
                if self.in_flight == 0:
                    self._idle.set()

        return gated

    async def close(self, timeout: float) -> int:  # noqa: ASYNC109
        """Refuse new requests; wait up to ``timeout`` for the rest. Returns how many
        were still running when the time ran out."""
        self.closed = True
        with trio.move_on_after(timeout):
            await self._idle.wait()
        return self.in_flight


async def serve_node(
    config: NodeConfig,
    *,
    shutdown: trio.Event,
    server_config: ServerConfig | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Start the node, ``task_status.started(bound port)``, serve until ``shutdown``
    is set, then shut down gracefully (see the module header)."""
    server_config = server_config or ServerConfig()
    async with open_node(config) as ctx:
        registry = build_registry(ctx, server_config.handler_modules)
        gate = RequestGate()
        host, port = parse_listen(config.listen, "listen")
        coordinators = {c.noise_public_key for c in ctx.manifest.coordinators}
        identity = KeyPair.from_private(ctx.identity.noise_private_key)
        async with trio.open_nursery() as nursery:
            for task in registry.tasks:
                nursery.start_soon(task)
            try:
                bound = await nursery.start(
                    _serve,
                    registry.routes(gate.wrap),
                    identity,
                    ctx.cluster_id,
                    coordinators,
                    host,
                    port,
                    server_config.listener,
                )
            except OSError as exc:
                raise NodeStartupError(f"cannot listen on {config.listen}: {exc}") from None
            await ctx.audit.append(
                event="node.start",
                outcome="ok",
                extra={"index": ctx.entry.index, "listen": f"{host}:{bound}"},
            )
            log.info(
                "node %s (index %d) serving %s on %s:%d for %d coordinator(s)",
                config.name,
                ctx.entry.index,
                ", ".join(sorted(registry.methods)),
                host,
                bound,
                len(coordinators),
            )
            task_status.started(bound)
            await shutdown.wait()
            log.info("shutting down: draining requests in flight")
            left = await gate.close(server_config.drain_timeout_s)
            nursery.cancel_scope.cancel()
        outcome = "ok" if left == 0 else "drain_timeout"
        if left:
            log.warning(
                "%d request(s) still running after %.1f s: cancelled",
                left,
                server_config.drain_timeout_s,
            )
        with trio.CancelScope(shield=True), trio.move_on_after(server_config.drain_timeout_s):
            await ctx.audit.append(event="node.stop", outcome=outcome, extra={"cancelled": left})
    log.info("node %s stopped", config.name)


async def _serve(
    routes: list[Route],
    identity: KeyPair,
    cluster_id: bytes,
    coordinators: set[bytes],
    host: str,
    port: int,
    listener: ListenerConfig,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve_rpc(
        routes,
        identity=identity,
        cluster_id=cluster_id,
        allowed_peers=coordinators,
        host=host,
        port=port,
        config=listener,
        task_status=task_status,
    )


def unwrap_error(exc: BaseException) -> BaseException:
    """The single leaf of nested exception groups (a start-up error raised inside a
    nursery), else ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _watch_signals(signals: AsyncIterator[int], shutdown: trio.Event) -> None:
    async for signum in signals:
        log.info("received %s", signal.Signals(signum).name)
        shutdown.set()
        return


async def _main(config: NodeConfig, server_config: ServerConfig | None) -> None:
    shutdown = trio.Event()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, signals, shutdown)
            await serve_node(config, shutdown=shutdown, server_config=server_config)
            nursery.cancel_scope.cancel()


def run_node_process(config: NodeConfig, server_config: ServerConfig | None = None) -> None:
    """Run the node in this process until SIGTERM/SIGINT (``tkms node run``).

    Raises the start-up error itself (a ``TkmsError``), not an exception group."""
    try:
        trio.run(_main, config, server_config)
    except BaseExceptionGroup as group:
        raise unwrap_error(group) from None

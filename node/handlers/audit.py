"""Handlers for ``audit.checkpoint`` and ``audit.anchor``: the checkpoint exchange that
makes a cut or rewritten audit log show (``protocol.audit``, DESIGN.md "Signing").

Nodes accept connections only from coordinators, so the coordinator relays: it asks
each node for a signed checkpoint of its log (``audit.checkpoint``) and hands it to
every other node (``audit.anchor``). The coordinator cannot forge one: a node stores
a peer's checkpoint only if its log id is ``<cluster id hex>/<peer name>`` and its
Ed25519 signature verifies under the peer's key in the manifest. It keeps them in
``<data_dir>/checkpoints.log`` (one line each, the format ``tkms audit verify
--checkpoints`` reads), appended and fsynced, and only when the seq moved forward.
Two validly signed checkpoints with the same seq and different heads prove that the
peer rewrote its log: the node records ``audit.equivocation`` in its own log and
refuses the second one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import trio

from node.files import fsync_dir
from node.handlers import HandlerRegistry, NodeContext
from protocol.audit import Checkpoint, parse_checkpoints, split_lines
from protocol.errors import DecodeError
from protocol.rpc import RpcError
from protocol.sign_api import (
    AUDIT_ANCHOR,
    AUDIT_CHECKPOINT,
    Refusal,
    checkpoint_from_wire,
    checkpoint_to_wire,
)

log = logging.getLogger("tkms.node.audit")

CHECKPOINTS_FILE = "checkpoints.log"


def node_log_id(cluster_id: bytes, name: str) -> str:
    """The audit log id of a node (``node.server`` opens its log with this id)."""
    return f"{cluster_id.hex()}/{name}"


def _load(path: Path) -> list[Checkpoint]:
    """The stored checkpoints; a torn last line (a crash mid-append) is cut off."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    _lines, torn = split_lines(data)
    if torn:
        with open(path, "r+b") as f:
            f.truncate(len(data) - len(torn))
            os.fsync(f.fileno())
    return parse_checkpoints(data[: len(data) - len(torn)], source=str(path))


def _append(path: Path, line: bytes) -> None:
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


class AnchorBook:
    """The peers' checkpoints this node keeps (latest per log in memory)."""

    def __init__(self, ctx: NodeContext, path: Path) -> None:
        self.ctx = ctx
        self.path = path
        self.latest: dict[str, Checkpoint] = {}
        for cp in _load(path):
            old = self.latest.get(cp.log_id)
            if old is None or cp.seq > old.seq:
                self.latest[cp.log_id] = cp
        self._lock = trio.Lock()

    def _refuse(self, message: str) -> RpcError:
        log.warning("refused a relayed checkpoint: %s", message)
        return RpcError(int(Refusal.BAD_CHECKPOINT), message)

    async def checkpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        return checkpoint_to_wire(self.ctx.audit.checkpoint())

    async def anchor(self, params: dict[str, Any]) -> dict[str, Any]:
        name: str = params["node"]
        if name == self.ctx.entry.name:
            raise self._refuse("a node does not anchor its own log")
        try:
            entry = self.ctx.manifest.node(name)
        except KeyError:
            raise self._refuse(f"{name!r} is not a node of the manifest") from None
        try:
            cp = checkpoint_from_wire(params["checkpoint"])
        except DecodeError as exc:
            raise self._refuse(f"malformed checkpoint: {exc}") from None
        if cp.log_id != node_log_id(self.ctx.cluster_id, name):
            raise self._refuse(f"checkpoint of log {cp.log_id!r} relayed as node {name}'s")
        if not cp.verify(entry.ed25519_public_key):
            raise self._refuse(f"checkpoint signature does not verify under {name}'s key")
        async with self._lock:
            old = self.latest.get(cp.log_id)
            if old is not None and cp.seq == old.seq and cp.head != old.head:
                await self.ctx.audit.append(
                    event="audit.equivocation",
                    outcome="detected",
                    extra={"node": name, "seq": cp.seq},
                )
                log.error(
                    "node %s signed two heads for seq %d: its log was rewritten", name, cp.seq
                )
                raise self._refuse(f"node {name} signed another head for seq {cp.seq}")
            if old is not None and cp.seq <= old.seq:
                return {"stored": False}
            await trio.to_thread.run_sync(_append, self.path, cp.to_line())
            self.latest[cp.log_id] = cp
        return {"stored": True}


def register(registry: HandlerRegistry, ctx: NodeContext) -> None:
    book = AnchorBook(ctx, ctx.config.data_dir / CHECKPOINTS_FILE)
    registry.add(AUDIT_CHECKPOINT, book.checkpoint)
    registry.add(AUDIT_ANCHOR, book.anchor)

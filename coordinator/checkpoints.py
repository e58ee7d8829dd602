"""The coordinator as the relay of the nodes' audit checkpoints (``protocol.audit``).

Nodes accept connections only from coordinators, so they cannot send their signed
checkpoints to each other themselves. Every ``interval_s`` the ``CheckpointRelay``
asks each node that is up for its checkpoint (``audit.checkpoint``), checks that the
log id is the node's (``<cluster id hex>/<name>``) and that the Ed25519 signature
verifies under the node's key in the manifest, keeps it in the coordinator's
checkpoint store, and hands it to every other node (``audit.anchor``), which checks
it again on its own and keeps it. The coordinator cannot forge a checkpoint; the most
it can do is not relay, which leaves the tail of a log unanchored (``tkms audit
verify`` reports such a tail).

A node whose new checkpoint has the same seq with another head, or a lower seq than
one it signed before, rewrote or cut its log: that is logged and recorded in the
coordinator's audit log (``audit.equivocation`` / ``audit.rollback``) and the
checkpoint is not relayed. Each (target, source) pair is relayed a given seq once.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from coordinator.audit_log import AuditLog, CheckpointStore
from coordinator.sessions import SessionError, SessionManager
from protocol.audit import Checkpoint
from protocol.errors import DecodeError, TkmsError
from protocol.manifest import Manifest
from protocol.rpc import RpcError
from protocol.sign_api import AUDIT_ANCHOR, AUDIT_CHECKPOINT, checkpoint_from_wire

log = logging.getLogger("tkms.coordinator.checkpoints")

_CALL_ERRORS = (SessionError, RpcError, DecodeError)


class CheckpointRelay:
    """Collects each node's signed checkpoint and relays it to the others."""

    def __init__(
        self,
        manifest: Manifest,
        sessions: SessionManager,
        *,
        store: CheckpointStore | None = None,
        audit: AuditLog | None = None,
        interval_s: float = 2.0,
        call_timeout_s: float = 5.0,
    ) -> None:
        if interval_s <= 0 or call_timeout_s <= 0:
            raise ValueError("interval_s and call_timeout_s must be positive")
        self.manifest = manifest
        self.sessions = sessions
        self.store = store
        self.audit = audit
        self.interval_s = interval_s
        self.call_timeout_s = call_timeout_s
        self.latest: dict[str, Checkpoint] = {}  # node -> its latest verified checkpoint
        self._relayed: dict[tuple[str, str], int] = {}  # (target, source) -> seq relayed
        self.relayed = 0  # anchors delivered (for tests and logs)

    def log_id(self, name: str) -> str:
        return f"{self.manifest.cluster_id.hex()}/{name}"

    async def _record(self, event: str, name: str, seq: int) -> None:
        if self.audit is not None:
            try:
                await self.audit.append(
                    event=event, outcome="detected", extra={"node": name, "seq": seq}
                )
            except TkmsError as exc:
                log.error("cannot record %s of %s: %s", event, name, exc)

    async def collect(self, name: str) -> None:
        """Fetch, check and keep one node's checkpoint."""
        try:
            raw = await self.sessions.call(name, AUDIT_CHECKPOINT, {}, timeout=self.call_timeout_s)
            cp = checkpoint_from_wire(raw)
        except _CALL_ERRORS as exc:
            log.info("no checkpoint from %s: %s", name, exc)
            return
        key = self.manifest.node(name).ed25519_public_key
        if cp.log_id != self.log_id(name) or not cp.verify(key):
            log.error("node %s sent a checkpoint that is not its own or not signed by it", name)
            return
        old = self.latest.get(name)
        if old is not None and (cp.seq, cp.head) == (old.seq, old.head):
            return
        if old is not None and cp.seq < old.seq:
            log.error("node %s: audit log went back from seq %d to %d", name, old.seq, cp.seq)
            await self._record("audit.rollback", name, cp.seq)
            return
        if old is not None and cp.seq == old.seq:
            log.error("node %s signed two heads for seq %d: its log was rewritten", name, cp.seq)
            await self._record("audit.equivocation", name, cp.seq)
            return
        if self.store is not None:
            try:
                await self.store.add(cp, key)
            except TkmsError as exc:
                log.error("cannot keep the checkpoint of %s: %s", name, exc)
                return
        self.latest[name] = cp

    async def _anchor(self, target: str, source: str, cp: Checkpoint) -> None:
        params: dict[str, Any] = {"node": source, "checkpoint": cp.to_fields()}
        try:
            await self.sessions.call(target, AUDIT_ANCHOR, params, timeout=self.call_timeout_s)
        except _CALL_ERRORS as exc:
            log.warning("node %s did not take %s's checkpoint: %s", target, source, exc)
            return
        self._relayed[(target, source)] = cp.seq
        self.relayed += 1

    async def round(self) -> None:
        """One exchange: collect from every node that is up, relay what is new."""
        up = sorted(self.sessions.up_nodes())
        async with trio.open_nursery() as nursery:
            for name in up:
                nursery.start_soon(self.collect, name)
        async with trio.open_nursery() as nursery:
            for source, cp in sorted(self.latest.items()):
                for target in up:
                    if target != source and self._relayed.get((target, source), -1) < cp.seq:
                        nursery.start_soon(self._anchor, target, source, cp)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.interval_s)
            await self.round()

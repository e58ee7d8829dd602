"""Roll-forward of key imports the coordinator is not driving (DESIGN.md §DKG
step 4; the import counterpart of ``coordinator.dkg_recovery``, same rule).

An import leaves each holder's share sealed *pending* until ``keys.commit`` delivers
the ``CommitCertificate`` (every holder's signature). A coordinator that dies while
sending the commits leaves some holders active and the rest pending; nodes never
expire a pending share (``node.handlers.key_import``), so the decision is taken here.

``ImportRecovery.recover_node`` runs each time a node's session comes up (so at
coordinator start for every node, and on every periodic refresh, through
``ImportingService.recover_node``): the node lists its pending imports
(``keys.import_state``). One is *orphaned* when this coordinator (by name) relayed it
and is not driving it now, or when another coordinator did and it has been idle for
``DkgConfig.stale_after_s``. For an orphaned import every node is asked about that
key id:

* if any node holds a commit certificate for that import (it activated), the import
  rolls forward: every holder still pending gets ``keys.commit`` with the same
  certificate (it verifies the certificate against the manifest's Ed25519 keys before
  activating; ``node.commit``);
* otherwise it aborts (``keys.import_abort`` with the import id: pending share and its
  token key destroyed), but only once *every* holder has answered without a
  certificate: an unreachable one might hold it. Until then the pending shares wait,
  and the next session-up or refresh tries again.

Key ids are claimed in the DKG coordinator's ``busy`` set, which ``import_key`` also
claims, so a live import is never "recovered" under its driver.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import trio

from coordinator.dkg import DkgCoordinator
from coordinator.sessions import SessionError
from protocol.errors import TkmsError
from protocol.import_api import IMPORT_ABORT, IMPORT_STATE, KEYS_COMMIT, ImportState
from protocol.rpc import Method

log = logging.getLogger("tkms.coordinator.import")

CALL_TIMEOUT_S = 10.0


class ImportRecovery:
    """Roll-forward or abort of orphaned imports (module header)."""

    def __init__(self, dkg: DkgCoordinator) -> None:
        self.dkg = dkg
        self.manifest = dkg.manifest
        self.sessions = dkg.sessions
        self.names = {n.index: n.name for n in dkg.manifest.nodes}
        self.deferred: dict[str, str] = {}  # key id -> why it is not resolved yet

    def _orphaned(self, st: ImportState) -> bool:
        if st.status != "pending":
            return False
        if st.coordinator == self.dkg.name:
            return True  # ours, and (the key is not claimed) nobody here drives it
        return st.idle_ms / 1000 >= self.dkg.config.stale_after_s

    async def recover_node(self, name: str) -> list[str]:
        """Resolve every orphaned import ``name`` reports and retry the deferred ones
        (the node that is back may be the one they waited for); the key ids resolved."""
        try:
            raw = await self.sessions.call(name, IMPORT_STATE, {}, timeout=CALL_TIMEOUT_S)
            states = [ImportState.from_wire(s) for s in raw["imports"]]
        except (SessionError, TkmsError) as exc:
            log.warning("keys.import_state of %s failed: %s", name, exc)
            return []
        done = []
        orphaned = {st.key_id for st in states if self._orphaned(st)}
        for key_id in sorted(orphaned | set(self.deferred)):
            if not self.dkg.claim(key_id):
                continue
            try:
                if await self.resolve(key_id):
                    done.append(key_id)
            finally:
                self.dkg.release(key_id)
        return done

    async def _states(self, key_id: str) -> tuple[dict[str, list[ImportState]], set[str]]:
        reports: dict[str, list[ImportState]] = {}
        unreachable: set[str] = set()

        async def ask(name: str) -> None:
            try:
                raw = await self.sessions.call(
                    name, IMPORT_STATE, {"key_id": key_id}, timeout=CALL_TIMEOUT_S
                )
                reports[name] = [ImportState.from_wire(s) for s in raw["imports"]]
            except (SessionError, TkmsError):
                unreachable.add(name)

        async with trio.open_nursery() as nursery:
            for entry in self.manifest.nodes:
                nursery.start_soon(ask, entry.name)
        return reports, unreachable

    async def resolve(self, key_id: str) -> bool:
        """Roll ``key_id``'s pending imports forward or abort them; False if one had
        to be deferred (a holder that might hold the certificate is down)."""
        reports, unreachable = await self._states(key_id)
        by_import: dict[bytes, list[tuple[str, ImportState]]] = {}
        for name, states in reports.items():
            for st in states:
                by_import.setdefault(st.ceremony, []).append((name, st))
        resolved = True
        for import_id, entries in sorted(by_import.items()):
            if all(st.status == "active" for _, st in entries):
                continue
            resolved &= await self._resolve_one(key_id, import_id, entries, unreachable)
        if resolved:
            self.deferred.pop(key_id, None)
        return resolved

    async def _resolve_one(
        self,
        key_id: str,
        import_id: bytes,
        entries: Sequence[tuple[str, ImportState]],
        unreachable: set[str],
    ) -> bool:
        certs = [st.certificate for _, st in entries if st.certificate is not None]
        pending = [name for name, st in entries if st.status == "pending"]
        tag = import_id.hex()[:16]
        if certs:
            log.warning("import %s (%s): commit certificate found: roll forward", key_id, tag)
            params = {"key_id": key_id, "certificate": certs[0]}
            missed = [n for n in pending if not await self._send(n, KEYS_COMMIT, params)]
            if missed:  # retried at the next session-up or refresh
                self.deferred[key_id] = f"commit not delivered to {', '.join(missed)}"
            return not missed
        holders = {self.names.get(j) for _, st in entries for j in st.holders}
        waiting = sorted(n for n in holders if n is not None and n in unreachable)
        if waiting:
            why = f"{', '.join(waiting)} unreachable and might hold the commit certificate"
            if self.deferred.get(key_id) != why:
                log.warning("import %s (%s): not aborting yet: %s", key_id, tag, why)
            self.deferred[key_id] = why
            return False
        for name in pending:
            await self._send(name, IMPORT_ABORT, {"key_id": key_id, "ceremony": import_id})
        log.warning("import %s (%s): no commit certificate anywhere: aborted", key_id, tag)
        return True

    async def _send(self, name: str, method: Method, params: dict[str, Any]) -> bool:
        key_id = params["key_id"]
        try:
            raw = await self.sessions.call(name, method, params, timeout=CALL_TIMEOUT_S)
        except (SessionError, TkmsError) as exc:
            log.warning("import %s: %s on %s failed: %s", key_id, method.name, name, exc)
            return False
        log.info("import %s: %s on %s -> %s", key_id, method.name, name, raw["status"])
        return True

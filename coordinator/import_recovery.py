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

from coordinator.recovery import CALL_TIMEOUT_S, RollForward
from coordinator.sessions import SessionError
from protocol.errors import TkmsError
from protocol.import_api import IMPORT_ABORT, IMPORT_STATE, KEYS_COMMIT, ImportState
from protocol.rpc import Method

log = logging.getLogger("tkms.coordinator.import")


class ImportRecovery(RollForward[ImportState]):
    """Roll-forward or abort of orphaned imports (module header; the skeleton is
    ``coordinator.recovery.RollForward``)."""

    state_method = IMPORT_STATE
    state_field = "imports"

    def decode_state(self, raw: dict[str, Any]) -> ImportState:
        return ImportState.from_wire(raw)

    def orphaned(self, st: ImportState) -> bool:
        if st.status != "pending":
            return False
        if st.coordinator == self.dkg.name:
            return True  # ours, and (the key is not claimed) nobody here drives it
        return st.idle_ms / 1000 >= self.dkg.config.stale_after_s

    def finished(self, st: ImportState) -> bool:
        return st.status == "active"

    async def resolve_one(
        self,
        key_id: str,
        ceremony: bytes,
        entries: Sequence[tuple[str, ImportState]],
        unreachable: set[str],
    ) -> bool:
        certs = [st.certificate for _, st in entries if st.certificate is not None]
        pending = [name for name, st in entries if st.status == "pending"]
        import_id, tag = ceremony, ceremony.hex()[:16]
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

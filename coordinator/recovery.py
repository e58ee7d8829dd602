"""The roll-forward skeleton shared by DKG and key-import recovery.

Both leave each holder's share sealed *pending* until a commit certificate arrives,
and both are resolved the same way when the coordinator driving them is gone: a node
whose session comes up lists its unfinished ceremonies; for each orphaned key id
every node is asked what it holds, the answers are grouped by ceremony id, and each
unfinished ceremony is rolled forward (someone holds the certificate) or aborted
(nobody can). Key ids whose decision had to wait are kept in ``deferred`` and retried
whenever a node comes back.

This module holds that skeleton once; ``coordinator.dkg_recovery.DkgRecovery`` and
``coordinator.import_recovery.ImportRecovery`` supply the RPC method that lists the
states, how to decode one, when one is orphaned or finished, and the per-ceremony
decision.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

import trio

from coordinator.dkg import DkgCoordinator
from coordinator.sessions import SessionError
from protocol.errors import TkmsError
from protocol.rpc import Method

log = logging.getLogger("tkms.coordinator.recovery")

CALL_TIMEOUT_S = 10.0


class CeremonyReport(Protocol):
    """What a node reports about one unfinished ceremony (or import)."""

    @property
    def key_id(self) -> str: ...

    @property
    def ceremony(self) -> bytes: ...


S = TypeVar("S", bound=CeremonyReport)


class RollForward(Generic[S]):
    """Find orphaned ceremonies of one kind and resolve them (module header)."""

    state_method: Method  # lists a node's states; params {} or {"key_id": ...}
    state_field: str  # the list in that method's result

    def __init__(self, dkg: DkgCoordinator) -> None:
        self.dkg = dkg
        self.manifest = dkg.manifest
        self.sessions = dkg.sessions
        self.names = {n.index: n.name for n in dkg.manifest.nodes}
        self.deferred: dict[str, str] = {}  # key id -> why it is not resolved yet

    # -- what each kind supplies ----------------------------------------------------

    def decode_state(self, raw: dict[str, Any]) -> S:
        raise NotImplementedError

    def orphaned(self, st: S) -> bool:
        """Unfinished, and nobody (alive) is driving it."""
        raise NotImplementedError

    def finished(self, st: S) -> bool:
        """This node is done with the ceremony (nothing to resolve there)."""
        raise NotImplementedError

    async def resolve_one(
        self,
        key_id: str,
        ceremony: bytes,
        entries: Sequence[tuple[str, S]],
        unreachable: set[str],
    ) -> bool:
        """Roll one ceremony forward or abort it; False if it had to be deferred."""
        raise NotImplementedError

    # -- the shared skeleton --------------------------------------------------------

    async def recover_node(self, name: str) -> list[str]:
        """Resolve every orphaned ceremony ``name`` reports, and retry the deferred
        ones (the node that is back may be the one they waited for); the key ids
        resolved."""
        try:
            raw = await self.sessions.call(name, self.state_method, {}, timeout=CALL_TIMEOUT_S)
            states = [self.decode_state(s) for s in raw[self.state_field]]
        except (SessionError, TkmsError) as exc:
            log.warning("%s of %s failed: %s", self.state_method.name, name, exc)
            return []
        done = []
        orphaned = {st.key_id for st in states if self.orphaned(st)}
        for key_id in sorted(orphaned | set(self.deferred)):
            if not self.dkg.claim(key_id):
                continue
            try:
                if await self.resolve(key_id):
                    done.append(key_id)
            finally:
                self.dkg.release(key_id)
        return done

    async def states(self, key_id: str) -> tuple[dict[str, list[S]], set[str]]:
        """Every node's states for ``key_id``, and the nodes that did not answer."""
        reports: dict[str, list[S]] = {}
        unreachable: set[str] = set()

        async def ask(name: str) -> None:
            try:
                raw = await self.sessions.call(
                    name, self.state_method, {"key_id": key_id}, timeout=CALL_TIMEOUT_S
                )
                reports[name] = [self.decode_state(s) for s in raw[self.state_field]]
            except (SessionError, TkmsError):
                unreachable.add(name)

        async with trio.open_nursery() as nursery:
            for entry in self.manifest.nodes:
                nursery.start_soon(ask, entry.name)
        return reports, unreachable

    async def resolve(self, key_id: str) -> bool:
        """Roll ``key_id``'s unfinished ceremonies forward or abort them; False if
        some had to be deferred (a node that might hold the certificate is down)."""
        reports, unreachable = await self.states(key_id)
        by_ceremony: dict[bytes, list[tuple[str, S]]] = {}
        for name, states in reports.items():
            for st in states:
                by_ceremony.setdefault(st.ceremony, []).append((name, st))
        resolved = True
        for ceremony, entries in sorted(by_ceremony.items()):
            if all(self.finished(st) for _, st in entries):
                continue
            resolved &= await self.resolve_one(key_id, ceremony, entries, unreachable)
        if resolved:
            self.deferred.pop(key_id, None)
        return resolved

"""The coordinator's real ``Backend``: node sessions plus a key registry rebuilt from
the nodes (DESIGN.md "Where state lives": the coordinator persists nothing).

``open_service(manifest, sessions)`` runs a watcher next to the session manager:
whenever a node's session comes up (first dial, redial after a crash, coordinator
restart) it asks that node ``node.status`` (checking the node is who the manifest
says, at the index it says) and ``keys.list``, and every ``refresh_interval_s`` it
asks every node again. ``KeyRegistry`` merges the nodes' reports into one ``KeyInfo``
per key id:

* only the highest epoch any node reports counts;
* every reporting holder must agree on the public part (t, n, holders, PK G1/G2,
  public shares, transcript hash); a disagreement keeps the key out of the registry
  and is logged (a node that lies or a ceremony that went wrong: never guess);
* every point is validated, then ``verify_key`` runs: by default
  ``coordinator.dkg_recovery.DkgRecovery.verify_key``, which fetches the key's
  transcript from a holder and re-verifies it against the manifest; a key that fails
  is reported (``conflicts``) and not served. Pending keys (a ceremony in its commit
  phase) and destroyed ones (e.g. an aborted ceremony's) can never sign: they are
  listed without that check and never cached as verified;
* the status is the one most reporting holders give (ties: the later status).

Before a node's keys are read, its unfinished ceremonies are resolved
(``DkgRecovery.recover_node``: roll forward if a commit certificate exists, else
abort), so a restarted coordinator finishes what its predecessor left. ``run_dkg``
runs a ceremony (``coordinator.dkg``), one per key id at a time.

``health()`` is cheap: session state and the registry, no fan-out. A node is "up"
once its current session exists AND it passed ``node.status`` and ``keys.list`` on
that session, so "every node up" also means the registry is rebuilt. Signing raises
``NotImplementedYet`` (HTTP 501) until the signing work replaces it.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from coordinator.backend import (
    BackendError,
    CeremonyInProgress,
    Client,
    DkgProgress,
    Health,
    ImportOpening,
    ImportResult,
    KeyHealth,
    KeyInfo,
    NodeHealth,
    NotImplementedYet,
    RegistryLoading,
    SignResult,
    UnknownKey,
)
from coordinator.backend import KeyExists as KeyIdTaken
from coordinator.dkg import DkgConfig, DkgCoordinator
from coordinator.dkg_recovery import DkgRecovery
from coordinator.sessions import SessionError, SessionManager
from protocol import node_api
from protocol.bn254 import G1, G2
from protocol.eigenlayer import operator_id
from protocol.errors import TkmsError
from protocol.key_import import ImportBundle
from protocol.manifest import Manifest, NodeEntry
from protocol.rng import os_rng
from protocol.rpc import PROTOCOL_VERSION

log = logging.getLogger("tkms.coordinator.service")

STATUS_ORDER = {s: i for i, s in enumerate(node_api.KEY_STATUSES)}
UNVERIFIED = ("pending", "destroyed")  # statuses listed without a transcript check
MAX_PAGES = 1024  # keys.list pages per node per refresh (64 keys each)

KeyVerifier = Callable[[node_api.PublicKeyMetadata], Awaitable[None]]
"""Raises a ``TkmsError`` if the key must not be trusted (the transcript hook)."""


async def accept_structurally_valid(meta: node_api.PublicKeyMetadata) -> None:
    """A ``KeyVerifier`` for tests: accept any key whose points are valid (the
    default re-verifies the transcript, ``DkgRecovery.verify_key``)."""
    return None


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Timing of the registry refresh (seconds)."""

    refresh_interval_s: float = 30.0  # full refresh of every node's keys
    watch_interval_s: float = 0.25  # how often newly-up sessions are looked for
    retry_interval_s: float = 1.0  # a failed first refresh of a session is retried
    call_timeout_s: float = 5.0  # per node.status / keys.list call
    # after start, an unknown key id is "not loaded yet" (503) rather than "unknown"
    # (404) while some node has not reported its keys, for at most this long
    startup_grace_s: float = 15.0

    def __post_init__(self) -> None:
        times = (
            self.refresh_interval_s,
            self.watch_interval_s,
            self.retry_interval_s,
            self.call_timeout_s,
            self.startup_grace_s,
        )
        if min(times) <= 0:
            raise ValueError("ServiceConfig times must be positive")


class KeyRegistry:
    """Public key metadata as the nodes report it, merged and validated."""

    def __init__(self, manifest: Manifest, verify_key: KeyVerifier) -> None:
        self._names = {n.index: n.name for n in manifest.nodes}
        self._verify_key = verify_key
        self._reports: dict[str, dict[str, node_api.PublicKeyMetadata]] = {}  # node -> key id
        self._keys: dict[str, KeyInfo] = {}
        self._verified: dict[tuple[Any, ...], KeyInfo] = {}  # public part -> checked info
        self.conflicts: dict[str, str] = {}  # key id -> why it is not in the registry
        self._lock = trio.Lock()

    def key_infos(self) -> list[KeyInfo]:
        return [self._keys[k] for k in sorted(self._keys)]

    def get(self, key_id: str) -> KeyInfo:
        try:
            return self._keys[key_id]
        except KeyError:
            raise UnknownKey(key_id) from None

    async def update(self, node: str, reports: Sequence[node_api.PublicKeyMetadata]) -> None:
        """Replace what ``node`` reports and rebuild every key it concerns."""
        async with self._lock:
            old = self._reports.get(node, {})
            self._reports[node] = {r.key_id: r for r in reports}
            for key_id in sorted(set(old) | set(self._reports[node])):
                await self._rebuild(key_id)

    async def _rebuild(self, key_id: str) -> None:
        reports = {
            node: by_key[key_id] for node, by_key in self._reports.items() if key_id in by_key
        }
        self._keys.pop(key_id, None)
        self.conflicts.pop(key_id, None)
        if not reports:
            return
        epoch = max(r.epoch for r in reports.values())
        current = {n: r for n, r in reports.items() if r.epoch == epoch}
        parts = {r.public_part() for r in current.values()}
        if len(parts) != 1:
            self._conflict(key_id, f"nodes {sorted(current)} disagree on epoch {epoch}")
            return
        sample = next(iter(current.values()))
        unknown = [i for i in sample.holders if i not in self._names]
        if unknown:
            self._conflict(key_id, f"holder indices {unknown} are not in the manifest")
            return
        strangers = [n for n in current if n not in {self._names[i] for i in sample.holders}]
        if strangers:
            self._conflict(key_id, f"nodes {strangers} report it but are not holders")
            return
        votes = Counter(r.status for r in current.values())
        status = max(votes, key=lambda s: (votes[s], STATUS_ORDER[s]))
        info = self._verified.get(sample.public_part())
        if info is None and status in UNVERIFIED:  # never served: listed, not cached
            try:
                pk_g1, pk_g2, _shares = sample.points()
            except TkmsError as exc:
                self._conflict(key_id, f"rejected: {exc}")
                return
            self._keys[key_id] = _key_info(sample, self._names, pk_g1, pk_g2)
            return
        if info is None:
            try:
                pk_g1, pk_g2, _shares = sample.points()
                await self._verify_key(sample)
            except TkmsError as exc:
                self._conflict(key_id, f"rejected: {exc}")
                return
            info = _key_info(sample, self._names, pk_g1, pk_g2)
            self._verified[sample.public_part()] = info
        self._keys[key_id] = _with_status(info, status)

    def _conflict(self, key_id: str, reason: str) -> None:
        if self.conflicts.get(key_id) != reason:
            log.error("key %s left out of the registry: %s", key_id, reason)
        self.conflicts[key_id] = reason


def _key_info(
    meta: node_api.PublicKeyMetadata, names: Mapping[int, str], pk_g1: G1, pk_g2: G2
) -> KeyInfo:
    return KeyInfo(
        key_id=meta.key_id,
        threshold=meta.t,
        n=meta.n,
        epoch=meta.epoch,
        holders=tuple(names[i] for i in meta.holders),
        pk_g1=pk_g1,
        pk_g2=pk_g2,
        operator_id=operator_id(pk_g1),
        status=meta.status,
        transcript_hash=meta.transcript_hash,
    )


def _with_status(info: KeyInfo, status: str) -> KeyInfo:
    if info.status == status:
        return info
    return KeyInfo(
        info.key_id,
        info.threshold,
        info.n,
        info.epoch,
        info.holders,
        info.pk_g1,
        info.pk_g2,
        info.operator_id,
        status,
        info.transcript_hash,
    )


class CoordinatorService:
    """The ``Backend`` of a running coordinator (create it with ``open_service``)."""

    def __init__(
        self,
        manifest: Manifest,
        sessions: SessionManager,
        *,
        config: ServiceConfig | None = None,
        verify_key: KeyVerifier | None = None,
        name: str = "coordinator",
        dkg_config: DkgConfig | None = None,
    ) -> None:
        self.manifest = manifest
        self.sessions = sessions
        self.config = config or ServiceConfig()
        self.dkg = DkgCoordinator(
            manifest, sessions, name=name, instance=os_rng(16), config=dkg_config
        )
        self.recovery = DkgRecovery(self.dkg)
        self.registry = KeyRegistry(manifest, verify_key or self.recovery.verify_key)
        self._node_errors: dict[str, str] = {}  # node -> why it is not usable
        self._ready: dict[str, int] = {}  # node -> session number last refreshed in full
        self._last_try: dict[str, float] = {}  # node -> when its last refresh started
        self._refresh_lock = trio.Lock()
        self._stale = False  # a full refresh is due (a recovery changed keys)
        self._loading_until = trio.current_time() + self.config.startup_grace_s

    # -- keeping the registry current ------------------------------------------------

    async def refresh_node(self, name: str) -> None:
        """Ask one node who it is and which keys it holds; record any refusal. The
        node counts as up (``health``) once this succeeded on its current session."""
        entry = self.manifest.node(name)
        timeout = self.config.call_timeout_s
        session_no = self.sessions.statistics()[name].sessions
        self._last_try[name] = trio.current_time()
        try:
            raw = await self.sessions.call(name, node_api.NODE_STATUS, {}, timeout=timeout)
            status = node_api.NodeStatus.from_wire(raw)
            problem = _identity_problem(status, entry, self.manifest.cluster_id)
            if problem:
                self._node_errors[name] = problem
                log.error("node %s: %s; not using it", name, problem)
                await self.registry.update(name, [])
                return
            if await self.recover_node(name):
                self._stale = True  # ceremonies were resolved: other nodes' keys changed
            reports = await self._fetch_keys(name)
        except (SessionError, TkmsError) as exc:
            log.warning("refresh of node %s failed: %s", name, exc)
            return
        self._node_errors.pop(name, None)
        await self.registry.update(name, reports)
        self._ready[name] = session_no
        log.info("node %s: %d key(s)", name, len(reports))

    async def recover_node(self, name: str) -> bool:
        """Resolve the ceremonies ``name`` reports as orphaned; True if any was."""
        return bool(await self.recovery.recover_node(name))

    async def _fetch_keys(self, name: str) -> list[node_api.PublicKeyMetadata]:
        out: list[node_api.PublicKeyMetadata] = []
        params: dict[str, Any] = {}
        for _ in range(MAX_PAGES):
            page = await self.sessions.call(
                name, node_api.KEYS_LIST, params, timeout=self.config.call_timeout_s
            )
            out += [node_api.PublicKeyMetadata.from_wire(k) for k in page["keys"]]
            if not page["more"] or not page["keys"]:
                return out
            params = {"after": page["keys"][-1]["key_id"]}
        raise node_api.NodeApiError("keys.list", f"more than {MAX_PAGES} pages")

    async def refresh(self) -> None:
        """Refresh every node that is up now, concurrently."""
        async with self._refresh_lock, trio.open_nursery() as nursery:
            for name in sorted(self.sessions.up_nodes()):
                nursery.start_soon(self.refresh_node, name)

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Refresh a node each time its session comes up (retrying every
        ``retry_interval_s`` until it succeeds), and all of them periodically."""
        task_status.started()
        next_full = trio.current_time() + self.config.refresh_interval_s
        while True:
            now = trio.current_time()
            fresh = [
                name
                for name, st in self.sessions.statistics().items()
                if st.up
                and self._ready.get(name) != st.sessions
                and now - self._last_try.get(name, -math.inf) >= self.config.retry_interval_s
            ]
            if fresh:
                async with trio.open_nursery() as nursery:
                    for name in sorted(fresh):
                        nursery.start_soon(self.refresh_node, name)
            if trio.current_time() >= next_full or self._stale:
                self._stale = False
                await self.refresh()
                next_full = trio.current_time() + self.config.refresh_interval_s
            await trio.sleep(self.config.watch_interval_s)

    # -- Backend ---------------------------------------------------------------------

    async def health(self) -> Health:
        stats = self.sessions.statistics()
        nodes = []
        for entry in self.manifest.nodes:
            st = stats[entry.name]
            problem = self._node_errors.get(entry.name)
            ready = self._ready.get(entry.name) == st.sessions
            up = st.up and ready and problem is None
            if problem:
                detail = problem
            elif not st.up:
                detail = st.last_error or "no session yet"
            else:
                detail = "" if ready else "session up; identity and keys not checked yet"
            nodes.append(NodeHealth(name=entry.name, up=up, detail=detail))
        up_names = {n.name for n in nodes if n.up}
        keys = []
        for info in self.registry.key_infos():
            holders_up = sum(1 for h in info.holders if h in up_names)
            can_sign = info.status == "active" and holders_up >= info.threshold
            keys.append(KeyHealth(info.key_id, info.status, info.threshold, holders_up, can_sign))
        return Health(nodes=tuple(nodes), keys=tuple(keys))

    async def list_keys(self) -> Sequence[KeyInfo]:
        return self.registry.key_infos()

    async def get_key(self, key_id: str) -> KeyInfo:
        try:
            return self.registry.get(key_id)
        except UnknownKey:
            unheard = [n.name for n in self.manifest.nodes if n.name not in self._ready]
            if unheard and trio.current_time() < self._loading_until:
                raise RegistryLoading(key_id, unheard) from None
            raise

    # Until the signing work lands: a known key answers 501, an unknown one 404.

    async def sign(self, key_id: str, msg_hash: bytes, *, client: Client) -> SignResult:
        self.registry.get(key_id)
        raise NotImplementedYet("threshold signing")

    async def sign_batch(
        self, key_id: str, msg_hashes: Sequence[bytes], *, client: Client
    ) -> list[SignResult | BackendError]:
        self.registry.get(key_id)
        raise NotImplementedYet("threshold signing")

    async def sign_point(self, key_id: str, point: G1, *, client: Client) -> G1:
        self.registry.get(key_id)
        raise NotImplementedYet("threshold signing")

    async def destroy_key(self, key_id: str, *, client: Client) -> None:
        self.registry.get(key_id)
        raise NotImplementedYet("key destruction")

    async def run_dkg(
        self, key_id: str, threshold: int, *, min_holders: int | None, client: Client
    ) -> KeyInfo:
        """Run a ceremony (``coordinator.dkg``); the key as the holders now report it."""
        known = [k for k in self.registry.key_infos() if k.key_id == key_id]
        if known and known[0].status in ("active", "retiring"):  # else the nodes decide
            raise KeyIdTaken(key_id)
        if not self.dkg.claim(key_id):
            raise CeremonyInProgress(key_id)
        try:
            log.info("client %s runs a DKG for %s (t = %d)", client.client_id, key_id, threshold)
            result = await self.dkg.run(key_id, threshold, min_holders)
        finally:
            self.dkg.release(key_id)
            self._stale = True  # committed or aborted: the nodes' keys changed
        await self.refresh()
        try:
            return self.registry.get(key_id)
        except UnknownKey:
            info = result.info
            return KeyInfo(
                key_id=key_id,
                threshold=info.threshold,
                n=len(result.holders),
                epoch=info.epoch,
                holders=tuple(self.manifest.node_by_index(j).name for j in result.holders),
                pk_g1=info.pubkey_g1,
                pk_g2=info.pubkey_g2,
                operator_id=operator_id(info.pubkey_g1),
                status="active",
                transcript_hash=info.transcript_hash,
            )

    async def dkg_progress(self, key_id: str) -> DkgProgress:
        progress = self.dkg.progress.get(key_id)
        if progress is None:
            raise UnknownKey(key_id)
        return progress.snapshot()

    async def get_transcript(self, key_id: str) -> bytes:
        info = self.registry.get(key_id)
        return await self.recovery.transcript(key_id, info.epoch, info.holders)

    async def open_import(
        self, key_id: str, *, min_holders: int | None, client: Client
    ) -> ImportOpening:
        raise NotImplementedYet("key import")

    async def import_key(
        self, key_id: str, bundle: ImportBundle, *, min_holders: int | None, client: Client
    ) -> ImportResult:
        raise NotImplementedYet("key import")


def _identity_problem(
    status: node_api.NodeStatus, entry: NodeEntry, cluster_id: bytes
) -> str | None:
    """Why a node's own account of itself disagrees with the manifest (None: it agrees)."""
    if status.cluster_id != cluster_id:
        return f"reports cluster {status.cluster_id.hex()}, not {cluster_id.hex()}"
    if (status.name, status.index) != (entry.name, entry.index):
        return (
            f"reports itself as {status.name} (index {status.index}), "
            f"the manifest says {entry.name} (index {entry.index})"
        )
    if (status.noise_public_key, status.ed25519_public_key) != (
        entry.noise_public_key,
        entry.ed25519_public_key,
    ):
        return "reports identity keys other than the manifest's"
    if status.protocol_version != PROTOCOL_VERSION:
        return f"speaks protocol version {status.protocol_version}, we speak {PROTOCOL_VERSION}"
    return None


@asynccontextmanager
async def open_service(
    manifest: Manifest,
    sessions: SessionManager,
    *,
    config: ServiceConfig | None = None,
    verify_key: KeyVerifier | None = None,
    name: str = "coordinator",
    dkg_config: DkgConfig | None = None,
) -> AsyncIterator[CoordinatorService]:
    """A ``CoordinatorService`` whose registry follows the nodes while the block runs
    (``verify_key`` None: transcripts are re-verified; ``name``: this coordinator in
    the manifest)."""
    service = CoordinatorService(
        manifest,
        sessions,
        config=config,
        verify_key=verify_key,
        name=name,
        dkg_config=dkg_config,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(service.watch)
        try:
            yield service
        finally:
            nursery.cancel_scope.cancel()

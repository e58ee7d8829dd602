"""In-process nodes for the DKG driver tests: the real ``node.handlers.dkg.DkgNode``
(participant, two-phase commit, restart recovery) over an in-memory store, reached
through ``FakeCluster.call`` (the ``NodeCaller`` the coordinator's driver uses).

``FakeCluster`` checks params and results against the methods' schemas, turns handler
errors into ``RemoteError`` as the transport does, and lets a test kill a node
(``kill``: calls fail with ``NodeUnavailable``, its memory is lost), restart it
(``restart``: a new ``DkgNode`` over the same store and disk runs its recovery), or
intercept every call (``before`` / ``after`` hooks: a node or the coordinator dies
at a chosen point). ``FakeStore`` follows ``node.store.ShareStore``'s rules (a key id
is re-creatable only if it was never more than pending; destroy shreds its "token
key") and keeps the shares so tests can check that t of them rebuild the key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio

from coordinator.sessions import NodeUnavailable, RemoteError, Timeout
from node.handlers import HandlerRegistry
from node.handlers.dkg import DkgNode, add_handlers
from node.store import KeyExists, KeyMetadata, KeyStatus, UnknownKey
from protocol.dkg import ParticipantConfig
from protocol.errors import Fault, TkmsError
from protocol.manifest import Manifest
from protocol.rng import os_rng
from protocol.rpc import ErrorCode, Method, RpcError
from tests.protocol.dkg.harness import Behaviour, HarnessParticipant, make_manifest

Hook = Callable[[str, Method, dict[str, Any]], Awaitable[None]]


@dataclass
class Version:
    metadata: KeyMetadata


@dataclass
class FakeStore:
    """The subset of ``ShareStore`` that ``DkgNode`` uses, in memory."""

    index: int
    versions: dict[str, list[KeyMetadata]] = field(default_factory=dict)
    shares: dict[str, int] = field(default_factory=dict)
    token_keys: set[str] = field(default_factory=set)
    transcripts: dict[tuple[str, int], bytes] = field(default_factory=dict)
    fail_activate: bool = False  # the next activate raises (a crash mid-commit)

    async def list_keys(self) -> list[KeyMetadata]:
        return [v[-1] for _, v in sorted(self.versions.items())]

    async def history(self, key_id: str) -> list[Version]:
        if key_id not in self.versions:
            raise UnknownKey(f"unknown key id {key_id!r}")
        return [Version(m) for m in self.versions[key_id]]

    async def get_metadata(self, key_id: str) -> KeyMetadata:
        return (await self.history(key_id))[-1].metadata

    def status(self, key_id: str) -> KeyStatus | None:
        v = self.versions.get(key_id)
        return v[-1].status if v else None

    async def put_share(self, meta: KeyMetadata, share: int) -> None:
        old = self.versions.get(meta.key_id, [])
        if old and (
            old[-1].status is not KeyStatus.DESTROYED
            or any(m.status is not KeyStatus.PENDING for m in old[:-1])
        ):
            raise KeyExists(meta.key_id)
        self.versions.setdefault(meta.key_id, []).append(meta)
        self.shares[meta.key_id] = share
        self.token_keys.add(f"{meta.key_id}/{meta.epoch}")

    async def activate(self, key_id: str, *, holders: Any = None) -> None:
        if self.fail_activate:
            self.fail_activate = False
            raise OSError("simulated crash while activating")
        cur = self.versions[key_id][-1]
        assert cur.status is KeyStatus.PENDING
        kept = tuple(sorted(holders)) if holders is not None else cur.holders
        new = dataclasses.replace(
            cur,
            n=len(kept),
            holders=kept,
            public_shares={i: cur.public_shares[i] for i in kept},
            status=KeyStatus.ACTIVE,
        )
        self.versions[key_id].append(new)

    async def destroy(self, key_id: str) -> None:
        cur = self.versions[key_id][-1]
        self.versions[key_id].append(dataclasses.replace(cur, status=KeyStatus.DESTROYED))
        self.shares.pop(key_id, None)
        self.token_keys.discard(f"{key_id}/{cur.epoch}")

    async def save_transcript(self, key_id: str, epoch: int, data: bytes) -> None:
        if (key_id, epoch) in self.transcripts:
            raise FileExistsError(key_id)
        self.transcripts[(key_id, epoch)] = data

    async def load_transcript(self, key_id: str, epoch: int) -> bytes:
        try:
            return self.transcripts[(key_id, epoch)]
        except KeyError:
            raise UnknownKey(f"no transcript for {key_id}") from None


class FakeAudit:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def append(self, **record: Any) -> None:
        self.records.append(record)


class FakeEntropy:
    def __call__(self, n: int) -> bytes:
        return os_rng(n)

    async def reserve(self, draws: int) -> None:
        return None


class CheatingNode(DkgNode):
    """A node whose participant deviates as ``behaviour`` says."""

    behaviour: Behaviour | None = None

    def make_participant(self, config: ParticipantConfig) -> HarnessParticipant:
        return HarnessParticipant(config, rng=os_rng, behaviour=self.behaviour, polynomials={})


@dataclass
class FakeNode:
    name: str
    index: int
    ctx: Any
    dkg: DkgNode
    routes: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]


async def handle(
    handler: Callable[[dict[str, Any]], Awaitable[Any]],
    node_name: str,
    method: Method,
    params: dict[str, Any],
) -> Any:
    """Run one handler as ``node.transport`` serves it: params and result checked
    against the method's schemas, errors turned into the ``RemoteError`` a caller sees."""
    method.params.check(params, "params")
    try:
        result = await handler(params)
    except RpcError as exc:
        raise RemoteError(node_name, exc.code, exc.message) from None
    except TkmsError as exc:
        if exc.fault in (Fault.CLIENT, Fault.PEER):
            raise RemoteError(node_name, ErrorCode.BAD_REQUEST, str(exc)) from None
        raise RemoteError(node_name, ErrorCode.INTERNAL, "internal error") from None
    except Exception:  # a crash inside the handler: the transport says INTERNAL
        raise RemoteError(node_name, ErrorCode.INTERNAL, "internal error") from None
    method.result.check(result, "result")
    return result


def _routes(dkg: DkgNode) -> dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]:
    registry = HandlerRegistry()
    add_handlers(registry, dkg)
    return {r.method.name: r.handler for r in registry.routes()}


class FakeCluster:
    """n in-process nodes behind one ``NodeCaller``."""

    def __init__(
        self,
        tmp_path: Path,
        n: int,
        *,
        behaviours: Mapping[int, Behaviour] | None = None,
        seed: bytes = b"driver",
    ) -> None:
        self.manifest: Manifest
        self.manifest, self.keys = make_manifest(n, seed)
        self.tmp = tmp_path
        self.behaviours = dict(behaviours or {})
        self.stores = {j: FakeStore(j) for j in self.keys}
        self.audits = {j: FakeAudit() for j in self.keys}
        self.nodes: dict[str, FakeNode] = {}
        self.up: set[str] = set()
        self.before: Hook | None = None
        self.after: Hook | None = None
        self.calls: list[tuple[str, str]] = []
        for entry in self.manifest.nodes:
            self._boot(entry.index)

    def _boot(self, j: int) -> FakeNode:
        entry = self.manifest.node_by_index(j)
        data = self.tmp / entry.name
        data.mkdir(exist_ok=True)
        ctx = SimpleNamespace(
            config=SimpleNamespace(data_dir=data),
            manifest=self.manifest,
            entry=entry,
            identity=SimpleNamespace(signing_key=self.keys[j]),
            entropy=FakeEntropy(),
            store=self.stores[j],
            audit=self.audits[j],
        )
        cls = CheatingNode if j in self.behaviours else DkgNode
        dkg = cls(ctx)  # type: ignore[arg-type]
        if isinstance(dkg, CheatingNode):
            dkg.behaviour = self.behaviours[j]
        node = FakeNode(entry.name, j, ctx, dkg, _routes(dkg))
        self.nodes[entry.name] = node
        return node

    async def start(self) -> None:
        for node in self.nodes.values():
            await node.dkg.recover()
            self.up.add(node.name)

    def name(self, j: int) -> str:
        return self.manifest.node_by_index(j).name

    def kill(self, name: str) -> None:
        self.up.discard(name)

    async def restart(self, name: str) -> FakeNode:
        node = self._boot(self.nodes[name].index)
        await node.dkg.recover()
        self.up.add(name)
        return node

    def up_nodes(self) -> frozenset[str]:
        return frozenset(self.up)

    async def call(
        self,
        node_name: str,
        method: Method,
        params: dict[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any:
        limit = 30.0 if timeout is None else timeout
        with trio.move_on_after(limit):
            if node_name not in self.up:
                raise NodeUnavailable(node_name, "down")
            self.calls.append((node_name, method.name))
            if self.before is not None:
                await self.before(node_name, method, params)
            if node_name not in self.up:
                raise NodeUnavailable(node_name, "died")
            handler = self.nodes[node_name].routes[method.name]
            with trio.CancelScope(shield=True):  # a node finishes what it started
                result = await handle(handler, node_name, method, params)
            if self.after is not None:
                await self.after(node_name, method, params)
            if node_name not in self.up:
                raise NodeUnavailable(node_name, "died before answering")
            return result
        raise Timeout(node_name, method.name, limit)

    # -- what the nodes hold ----------------------------------------------------------

    def statuses(self, key_id: str) -> dict[int, KeyStatus | None]:
        return {j: s.status(key_id) for j, s in self.stores.items()}

    def pending_records(self) -> dict[int, list[str]]:
        return {
            j: sorted(p.name for p in (self.tmp / self.name(j) / "dkg" / "pending").glob("*"))
            for j in self.stores
        }

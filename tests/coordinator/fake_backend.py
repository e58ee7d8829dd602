"""An in-process ``Backend`` that signs for real with whole BN254 keys (no nodes).

Front-end tests run against it: it records every call so a test can prove that a
refused request never reached ``sign``; nodes can be marked down to produce
``NotEnoughSigners``; chosen message hashes fail inside a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from coordinator.backend import (
    BackendError,
    Client,
    DkgEvent,
    DkgProgress,
    Forbidden,
    Health,
    ImportOpening,
    ImportResult,
    KeyExists,
    KeyHealth,
    KeyInfo,
    KeyNotActive,
    NodeHealth,
    NotEnoughSigners,
    SignResult,
    UnknownKey,
    UsageLimitExceeded,
)
from protocol.bn254 import G1, G1_GENERATOR, G2_GENERATOR
from protocol.eigenlayer import hash_to_g1, operator_id
from protocol.key_import import ImportBundle
from tests.coordinator.fake_import import FakeImportNodes


@dataclass
class FakeKey:
    info: KeyInfo
    sk: int


@dataclass
class FakeBackend:
    nodes: tuple[str, ...] = ("node-1", "node-2", "node-3", "node-4", "node-5")
    threshold: int = 3
    keys: dict[str, FakeKey] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    failing_hashes: set[bytes] = field(default_factory=set)  # fail inside sign_batch
    exhausted: set[str] = field(default_factory=set)  # key ids over the nodes' usage limits
    partial_failures: dict[str, int] = field(default_factory=dict)
    progress: dict[str, DkgProgress] = field(default_factory=dict)
    transcripts: dict[str, bytes] = field(default_factory=dict)  # canonical bytes
    _import_nodes: FakeImportNodes | None = None

    def add_key(self, key_id: str, sk: int, status: str = "active") -> KeyInfo:
        pk_g1 = G1_GENERATOR * sk
        info = KeyInfo(
            key_id=key_id,
            threshold=self.threshold,
            n=len(self.nodes),
            epoch=1,
            holders=self.nodes,
            pk_g1=pk_g1,
            pk_g2=G2_GENERATOR * sk,
            operator_id=operator_id(pk_g1),
            status=status,
            transcript_hash=bytes(range(32)),
        )
        self.keys[key_id] = FakeKey(info, sk)
        return info

    def signed(self) -> list[Any]:
        return [c for c in self.calls if c[0] in ("sign", "sign_batch")]

    # -- Backend ------------------------------------------------------------------

    async def list_keys(self) -> Sequence[KeyInfo]:
        self.calls.append(("list_keys", None))
        return [k.info for k in self.keys.values()]

    async def get_key(self, key_id: str) -> KeyInfo:
        self.calls.append(("get_key", key_id))
        if key_id not in self.keys:
            raise UnknownKey(key_id)
        return self.keys[key_id].info

    def _signable(self, key_id: str, client: Client) -> FakeKey:
        if key_id not in self.keys:
            raise UnknownKey(key_id)
        if not client.may_sign(key_id):
            raise Forbidden(f"client {client.client_id!r} may not sign with {key_id!r}")
        key = self.keys[key_id]
        if key.info.status != "active":
            raise KeyNotActive(key_id, key.info.status)
        if key_id in self.exhausted:
            raise UsageLimitExceeded(key_id, self.nodes)
        up = [n for n in self.nodes if n not in self.down]
        if len(up) < self.threshold:
            missing = [n for n in self.nodes if n in self.down]
            raise NotEnoughSigners(key_id, self.threshold, len(up), missing)
        return key

    def _sign_one(self, key: FakeKey, msg_hash: bytes) -> SignResult:
        signers = tuple(n for n in self.nodes if n not in self.down)[: self.threshold]
        return SignResult(
            key_id=key.info.key_id,
            msg_hash=msg_hash,
            sigma=hash_to_g1(msg_hash) * key.sk,
            apk_g1=key.info.pk_g1,
            apk_g2=key.info.pk_g2,
            signers=signers,
        )

    async def sign(self, key_id: str, msg_hash: bytes, *, client: Client) -> SignResult:
        self.calls.append(("sign", (key_id, msg_hash, client.client_id)))
        return self._sign_one(self._signable(key_id, client), msg_hash)

    async def sign_batch(
        self, key_id: str, msg_hashes: Sequence[bytes], *, client: Client
    ) -> list[SignResult | BackendError]:
        self.calls.append(("sign_batch", (key_id, tuple(msg_hashes), client.client_id)))
        key = self._signable(key_id, client)
        out: list[SignResult | BackendError] = []
        for h in msg_hashes:
            if h in self.failing_hashes:
                out.append(NotEnoughSigners(key_id, self.threshold, 1, self.nodes[1:]))
            else:
                out.append(self._sign_one(key, h))
        return out

    async def sign_point(self, key_id: str, point: G1, *, client: Client) -> G1:
        self.calls.append(("sign_point", key_id))
        return point * self._signable(key_id, client).sk

    async def destroy_key(self, key_id: str, *, client: Client) -> None:
        self.calls.append(("destroy_key", key_id))
        if key_id not in self.keys:
            raise UnknownKey(key_id)
        if not client.is_operator:
            raise Forbidden("operator role required")
        old = self.keys[key_id].info
        self.keys[key_id].info = KeyInfo(
            old.key_id, old.threshold, old.n, old.epoch, old.holders, old.pk_g1,
            old.pk_g2, old.operator_id, "destroyed", old.transcript_hash,
        )  # fmt: skip

    async def health(self) -> Health:
        self.calls.append(("health", None))
        nodes = tuple(
            NodeHealth(n, n not in self.down, self.partial_failures.get(n, 0),
                       "connection refused" if n in self.down else "")
            for n in self.nodes
        )  # fmt: skip
        up = sum(1 for n in nodes if n.up)
        keys = tuple(
            KeyHealth(k.info.key_id, k.info.status, k.info.threshold, up,
                      k.info.status == "active" and up >= k.info.threshold)
            for k in self.keys.values()
        )  # fmt: skip
        return Health(nodes, keys)

    async def run_dkg(
        self, key_id: str, threshold: int, *, min_holders: int | None, client: Client
    ) -> KeyInfo:
        self.calls.append(("run_dkg", (key_id, threshold, min_holders, client.client_id)))
        if key_id in self.keys:
            raise KeyExists(key_id)
        info = self.add_key(key_id, 1000 + len(self.keys))
        self.progress[key_id] = DkgProgress(
            key_id=key_id,
            state="committed",
            phase="committed",
            reason="",
            holders=info.holders,
            events=(DkgEvent(0.0, "open", "proposal sent"), DkgEvent(0.5, "committed", "done")),
        )
        return info

    async def dkg_progress(self, key_id: str) -> DkgProgress:
        self.calls.append(("dkg_progress", key_id))
        if key_id not in self.progress:
            raise UnknownKey(key_id)
        return self.progress[key_id]

    async def get_transcript(self, key_id: str) -> bytes:
        self.calls.append(("get_transcript", key_id))
        if key_id not in self.transcripts:
            raise UnknownKey(key_id)
        return self.transcripts[key_id]

    # -- key import: real opens, checks and shares (tests/coordinator/fake_import.py)

    @property
    def import_nodes(self) -> FakeImportNodes:
        if self._import_nodes is None:
            self._import_nodes = FakeImportNodes(self.nodes)
        return self._import_nodes

    async def open_import(
        self, key_id: str, *, min_holders: int | None, client: Client
    ) -> ImportOpening:
        self.calls.append(("open_import", (key_id, min_holders, client.client_id)))
        if key_id in self.keys:
            raise KeyExists(key_id)
        opens = self.import_nodes.open(key_id, self.down)
        wanted = len(self.nodes) if min_holders is None else min_holders
        if len(opens) < wanted:
            missing = [n for n in self.nodes if n in self.down]
            raise NotEnoughSigners(key_id, wanted, len(opens), missing)
        missing_nodes = tuple((n, "connection refused") for n in self.nodes if n in self.down)
        return ImportOpening(key_id, 0, tuple(opens), missing_nodes)

    async def import_key(
        self, key_id: str, bundle: ImportBundle, *, min_holders: int | None, client: Client
    ) -> ImportResult:
        self.calls.append(("import_key", (key_id, bundle, min_holders, client.client_id)))
        if key_id in self.keys:
            raise KeyExists(key_id)
        transcript, sk = self.import_nodes.accept(bundle)
        info = self.add_key(key_id, sk)
        self.transcripts[key_id] = transcript
        return ImportResult(info, transcript)

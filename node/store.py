"""The share store: one directory per key id, sealed shares, versioned public metadata.

    <data_dir>/keys/<key_id>/
        meta-000001.json ...       public metadata, one file per version (append-only,
                                   hash-chained: each names the SHA-256 of the previous)
        share-<epoch>.sealed       the node's share, sealed under its own token key
                                   "tkms/share/<key_id>/<epoch>" (see node.sealing)
        transcript-<epoch>.bin     the DKG transcript (public), for offline re-checks

Every file is written atomically (node.files). Metadata fields follow DESIGN.md
"Key metadata": key id, t, n, epoch, holders, PK G1 (64 bytes X||Y) and G2 (128
bytes, EIP-197 order), public shares (G1), transcript hash, status
(pending -> active -> retiring -> destroyed; pending -> destroyed on abort).

Destroy = destroy the token key (crypto-shredding: the blob, and any backup copy
of it, is noise from then on), record a ``destroyed`` version, remove the blob,
drop the cached share. An unsealed share is cached in memory only while its key
is active (``ShareCache``; Python cannot promise zeroisation, but the cache drops
and overwrites its buffer on destroy).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from node.files import atomic_write, clean_temp_files, make_private_dir, remove_durably
from node.hsm import HsmCore, HsmSession, TokenKeyExists, TokenKeyMissing
from node.sealing import ShareContext, seal, share_key_label, unseal
from protocol.bn254 import R
from protocol.encoding import g1_from_bytes, g2_from_bytes
from protocol.errors import Fault, TkmsError

KEY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
META_RE = re.compile(r"^meta-(\d{6})\.json$")
MAX_NODES = 255


class StoreError(TkmsError):
    """The share store refused an operation or found its files inconsistent."""


class KeyExists(StoreError):
    """A key id that exists (or was ever active) is never overwritten."""

    fault = Fault.CLIENT


class UnknownKey(StoreError):
    fault = Fault.CLIENT


class KeyNotActive(StoreError):
    """The share of a key that is not active is never handed out."""

    fault = Fault.CLIENT


class IllegalTransition(StoreError):
    fault = Fault.CLIENT


class StoreCorrupt(StoreError):
    """A metadata file is malformed or its hash chain is broken."""


class KeyStatus(enum.Enum):
    PENDING = "pending"
    ACTIVE = "active"
    RETIRING = "retiring"
    DESTROYED = "destroyed"


# The one transition table of a key's life.
TRANSITIONS: dict[KeyStatus, frozenset[KeyStatus]] = {
    KeyStatus.PENDING: frozenset({KeyStatus.ACTIVE, KeyStatus.DESTROYED}),
    KeyStatus.ACTIVE: frozenset({KeyStatus.RETIRING, KeyStatus.DESTROYED}),
    KeyStatus.RETIRING: frozenset({KeyStatus.DESTROYED}),
    KeyStatus.DESTROYED: frozenset(),
}


def check_key_id(key_id: str) -> str:
    if not isinstance(key_id, str) or not KEY_ID_RE.match(key_id):
        raise StoreError(f"key id {key_id!r}: 1..64 of [A-Za-z0-9._-], not starting with . - _")
    return key_id


@dataclass(frozen=True, slots=True)
class KeyMetadata:
    """Public data of one key as this node holds it."""

    key_id: str
    t: int
    n: int
    epoch: int
    holders: tuple[int, ...]
    pk_g1: bytes
    pk_g2: bytes
    public_shares: dict[int, bytes]
    transcript_hash: bytes
    status: KeyStatus

    def __post_init__(self) -> None:
        check_key_id(self.key_id)
        if not 2 <= self.t <= self.n <= MAX_NODES:
            raise StoreError(f"key {self.key_id}: need 2 <= t <= n <= {MAX_NODES}")
        if self.epoch < 0:
            raise StoreError(f"key {self.key_id}: epoch must be >= 0")
        if len(self.holders) != self.n or len(set(self.holders)) != self.n:
            raise StoreError(f"key {self.key_id}: holders must be n distinct indices")
        if any(not 1 <= h <= MAX_NODES for h in self.holders):
            raise StoreError(f"key {self.key_id}: holder index out of 1..{MAX_NODES}")
        if set(self.public_shares) != set(self.holders):
            raise StoreError(f"key {self.key_id}: one public share per holder")
        if len(self.pk_g1) != 64 or len(self.pk_g2) != 128 or len(self.transcript_hash) != 32:
            raise StoreError(f"key {self.key_id}: PK G1 64, G2 128, transcript hash 32 bytes")
        if any(len(v) != 64 for v in self.public_shares.values()):
            raise StoreError(f"key {self.key_id}: public shares are 64-byte G1 points")

    def validate_points(self) -> None:
        """Full point validation (on curve, G2 subgroup, not infinity); slow-ish."""
        g1_from_bytes(self.pk_g1, field="pkG1")
        g2_from_bytes(self.pk_g2, field="pkG2")
        for i, b in self.public_shares.items():
            g1_from_bytes(b, field=f"publicShares.{i}")

    def to_json(self) -> dict[str, Any]:
        return {
            "keyId": self.key_id,
            "t": self.t,
            "n": self.n,
            "epoch": self.epoch,
            "holders": list(self.holders),
            "pkG1": self.pk_g1.hex(),
            "pkG2": self.pk_g2.hex(),
            "publicShares": {str(i): v.hex() for i, v in sorted(self.public_shares.items())},
            "transcriptHash": self.transcript_hash.hex(),
            "status": self.status.value,
        }

    @classmethod
    def from_json(cls, obj: Any) -> KeyMetadata:
        try:
            return cls(
                key_id=obj["keyId"],
                t=int(obj["t"]),
                n=int(obj["n"]),
                epoch=int(obj["epoch"]),
                holders=tuple(int(h) for h in obj["holders"]),
                pk_g1=bytes.fromhex(obj["pkG1"]),
                pk_g2=bytes.fromhex(obj["pkG2"]),
                public_shares={int(k): bytes.fromhex(v) for k, v in obj["publicShares"].items()},
                transcript_hash=bytes.fromhex(obj["transcriptHash"]),
                status=KeyStatus(obj["status"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoreCorrupt(f"key metadata malformed ({type(exc).__name__})") from None


@dataclass(frozen=True, slots=True)
class MetadataVersion:
    """One entry of a key's metadata history."""

    version: int
    event: str
    at: int  # unix seconds
    previous: str  # SHA-256 hex of the previous version file ("" for version 1)
    metadata: KeyMetadata
    sha256: str = field(default="", compare=False)


class MetadataLog:
    """The append-only, hash-chained metadata history of one key (sync, no HSM)."""

    def __init__(self, key_dir: Path) -> None:
        self.key_dir = key_dir

    def _files(self) -> list[tuple[int, Path]]:
        if not self.key_dir.is_dir():
            return []
        out = []
        for p in self.key_dir.iterdir():
            m = META_RE.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
        return sorted(out)

    def versions(self) -> list[MetadataVersion]:
        """The whole history, checked: numbered 1..N, each chained to the previous."""
        out: list[MetadataVersion] = []
        prev_hash = ""
        for expected, (num, path) in enumerate(self._files(), start=1):
            if num != expected:
                raise StoreCorrupt(f"{self.key_dir.name}: metadata version {expected} missing")
            raw = path.read_bytes()
            try:
                obj = json.loads(raw)
                entry = MetadataVersion(
                    version=int(obj["version"]),
                    event=str(obj["event"]),
                    at=int(obj["at"]),
                    previous=str(obj["previous"]),
                    metadata=KeyMetadata.from_json(obj["metadata"]),
                    sha256=hashlib.sha256(raw).hexdigest(),
                )
            except (ValueError, KeyError, TypeError):
                raise StoreCorrupt(f"{path.name}: malformed metadata version") from None
            if entry.version != num or entry.previous != prev_hash:
                raise StoreCorrupt(f"{path.name}: version number or hash chain broken")
            out.append(entry)
            prev_hash = entry.sha256
        return out

    def latest(self) -> MetadataVersion | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def append(self, metadata: KeyMetadata, event: str) -> MetadataVersion:
        """Write the next version (atomic; never overwrites an existing version)."""
        make_private_dir(self.key_dir)
        versions = self.versions()
        num = len(versions) + 1
        previous = versions[-1].sha256 if versions else ""
        at = int(time.time())
        obj = {
            "version": num,
            "event": event,
            "at": at,
            "previous": previous,
            "metadata": metadata.to_json(),
        }
        raw = (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode()
        atomic_write(self.key_dir / f"meta-{num:06d}.json", raw, overwrite=False, mode=0o644)
        digest = hashlib.sha256(raw).hexdigest()
        return MetadataVersion(num, event, at, previous, metadata, digest)


class ShareCache:
    """Unsealed shares of active keys, in memory only; ``drop`` overwrites the buffer."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, bytearray]] = {}

    def __repr__(self) -> str:
        return f"ShareCache(keys={sorted(self._entries)})"

    def __contains__(self, key_id: str) -> bool:
        return key_id in self._entries

    def get(self, key_id: str, epoch: int) -> int | None:
        entry = self._entries.get(key_id)
        if entry is None or entry[0] != epoch:
            return None
        return int.from_bytes(entry[1], "big")

    def put(self, key_id: str, epoch: int, share: bytes) -> None:
        self.drop(key_id)
        self._entries[key_id] = (epoch, bytearray(share))

    def drop(self, key_id: str) -> None:
        entry = self._entries.pop(key_id, None)
        if entry is not None:
            entry[1][:] = bytes(len(entry[1]))

    def clear(self) -> None:
        for key_id in list(self._entries):
            self.drop(key_id)


def _share_bytes(share: int) -> bytes:
    if not 0 < share < R:
        raise StoreError("share must be a scalar in [1, r-1]")
    return share.to_bytes(32, "big")


class ShareStore:
    """The node's key store. Async; file I/O and HSM calls run off the trio thread."""

    def __init__(
        self, data_dir: Path, hsm: HsmSession, *, cluster_id: bytes, node_index: int
    ) -> None:
        self.keys_dir = data_dir / "keys"
        self._hsm = hsm
        self.cluster_id = cluster_id
        self.node_index = node_index
        self.cache = ShareCache()
        self._lock = trio.Lock()

    def __repr__(self) -> str:
        return f"ShareStore({str(self.keys_dir)!r}, node_index={self.node_index})"

    def _dir(self, key_id: str) -> Path:
        return self.keys_dir / check_key_id(key_id)

    def _ctx(self, key_id: str, epoch: int) -> ShareContext:
        return ShareContext(self.cluster_id, key_id, self.node_index, epoch)

    def share_path(self, key_id: str, epoch: int) -> Path:
        return self._dir(key_id) / f"share-{epoch}.sealed"

    async def _log(self, key_id: str) -> list[MetadataVersion]:
        return await trio.to_thread.run_sync(MetadataLog(self._dir(key_id)).versions)

    async def history(self, key_id: str) -> list[MetadataVersion]:
        versions = await self._log(key_id)
        if not versions:
            raise UnknownKey(f"unknown key id {key_id!r}")
        return versions

    async def get_metadata(self, key_id: str) -> KeyMetadata:
        return (await self.history(key_id))[-1].metadata

    async def list_keys(self) -> list[KeyMetadata]:
        def scan() -> list[KeyMetadata]:
            if not self.keys_dir.is_dir():
                return []
            out = []
            for d in sorted(self.keys_dir.iterdir()):
                latest = MetadataLog(d).latest() if KEY_ID_RE.match(d.name) else None
                if latest is not None:
                    out.append(latest.metadata)
            return out

        return await trio.to_thread.run_sync(scan)

    async def put_share(self, metadata: KeyMetadata, share: int) -> MetadataVersion:
        """Seal a new share (status pending) under a new token key for (key id, epoch)."""
        if metadata.status is not KeyStatus.PENDING:
            raise IllegalTransition("a new share is stored as pending")
        if self.node_index not in metadata.holders:
            raise StoreError(f"node index {self.node_index} is not a holder of {metadata.key_id}")
        plaintext = _share_bytes(share)
        metadata.validate_points()
        async with self._lock:
            versions = await self._log(metadata.key_id)
            if versions and (
                versions[-1].metadata.status is not KeyStatus.DESTROYED
                or any(v.metadata.status is not KeyStatus.PENDING for v in versions[:-1])
            ):
                raise KeyExists(f"key id {metadata.key_id!r} exists; it is never overwritten")
            ctx = self._ctx(metadata.key_id, metadata.epoch)
            path = self.share_path(metadata.key_id, metadata.epoch)
            blob = await self._hsm.run(_new_sealed_share, ctx, plaintext)
            await trio.to_thread.run_sync(_write_new, path, blob)
            log = MetadataLog(self._dir(metadata.key_id))
            return await trio.to_thread.run_sync(log.append, metadata, "stored")

    async def set_status(self, key_id: str, status: KeyStatus) -> MetadataVersion:
        """Move a key along the transition table (destroy: use ``destroy``)."""
        if status is KeyStatus.DESTROYED:
            return await self.destroy(key_id)
        async with self._lock:
            current = (await self.history(key_id))[-1].metadata
            if status not in TRANSITIONS[current.status]:
                raise IllegalTransition(
                    f"key {key_id}: {current.status.value} -> {status.value} is not allowed"
                )
            if status is not KeyStatus.ACTIVE:
                self.cache.drop(key_id)
            log = MetadataLog(self._dir(key_id))
            return await trio.to_thread.run_sync(
                log.append, replace(current, status=status), status.value
            )

    async def activate(
        self, key_id: str, *, holders: Sequence[int] | None = None
    ) -> MetadataVersion:
        """PENDING -> ACTIVE. ``holders`` (a DKG's commit: the nodes that signed the
        transcript) narrows the holders and public shares recorded while pending."""
        if holders is None:
            return await self.set_status(key_id, KeyStatus.ACTIVE)
        async with self._lock:
            current = (await self.history(key_id))[-1].metadata
            if current.status is not KeyStatus.PENDING:
                raise IllegalTransition(f"key {key_id}: {current.status.value} -> active")
            kept = tuple(sorted(set(holders)))
            if not set(kept) <= set(current.holders) or self.node_index not in kept:
                raise StoreError(f"key {key_id}: holders must be pending holders incl. this node")
            narrowed = replace(
                current,
                n=len(kept),
                holders=kept,
                public_shares={i: current.public_shares[i] for i in kept},
                status=KeyStatus.ACTIVE,
            )
            log = MetadataLog(self._dir(key_id))
            return await trio.to_thread.run_sync(log.append, narrowed, "active")

    async def get_share(self, key_id: str) -> int:
        """The unsealed share of an ACTIVE key (cached while active)."""
        meta = await self.get_metadata(key_id)
        if meta.status is not KeyStatus.ACTIVE:
            self.cache.drop(key_id)
            raise KeyNotActive(f"key {key_id} is {meta.status.value}")
        cached = self.cache.get(key_id, meta.epoch)
        if cached is not None:
            return cached
        path = self.share_path(key_id, meta.epoch)
        try:
            blob = await trio.to_thread.run_sync(path.read_bytes)
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None
        plaintext = await self._hsm.run(unseal, self._ctx(key_id, meta.epoch), blob)
        value = int.from_bytes(plaintext, "big")
        if len(plaintext) != 32 or not 0 < value < R:
            raise StoreCorrupt(f"key {key_id}: unsealed share is not a scalar")
        if (await self.get_metadata(key_id)).status is KeyStatus.ACTIVE:
            self.cache.put(key_id, meta.epoch, plaintext)
        return value

    async def destroy(self, key_id: str) -> MetadataVersion:
        """Crypto-shred: destroy the token key(s), record it, remove the sealed file(s)."""
        async with self._lock:
            current = (await self.history(key_id))[-1].metadata
            if KeyStatus.DESTROYED not in TRANSITIONS[current.status]:
                raise IllegalTransition(f"key {key_id} is already {current.status.value}")
            self.cache.drop(key_id)
            key_dir = self._dir(key_id)
            blobs = await trio.to_thread.run_sync(lambda: sorted(key_dir.glob("share-*.sealed")))
            epochs = {current.epoch} | {int(p.stem.split("-", 1)[1]) for p in blobs}
            for epoch in sorted(epochs):
                await self._hsm.run(_destroy_token_key, share_key_label(key_id, epoch))
            log = MetadataLog(key_dir)
            entry = await trio.to_thread.run_sync(
                log.append, replace(current, status=KeyStatus.DESTROYED), "destroyed"
            )
            for p in blobs:
                await trio.to_thread.run_sync(remove_durably, p)
            return entry

    async def save_transcript(self, key_id: str, epoch: int, data: bytes) -> Path:
        path = self._dir(key_id) / f"transcript-{epoch}.bin"

        def write() -> None:
            make_private_dir(path.parent)
            atomic_write(path, data, overwrite=False, mode=0o644)

        await trio.to_thread.run_sync(write)
        return path

    async def load_transcript(self, key_id: str, epoch: int) -> bytes:
        path = self._dir(key_id) / f"transcript-{epoch}.bin"
        try:
            return await trio.to_thread.run_sync(path.read_bytes)
        except OSError:
            raise UnknownKey(f"no transcript for {key_id} epoch {epoch}") from None


def _new_sealed_share(core: HsmCore, ctx: ShareContext, plaintext: bytes) -> bytes:
    """In the HSM worker: a fresh token key for (key id, epoch), then seal."""
    label = ctx.seal_key_label
    try:
        core.create_aes_key(label)
    except TokenKeyExists:
        # No metadata records this (key id, epoch) as live (checked by the caller), so the
        # key is an orphan of a crash between key creation and the metadata write.
        core.destroy_key(label)
        core.create_aes_key(label)
    return seal(core, ctx, plaintext)


def _destroy_token_key(core: HsmCore, label: str) -> None:
    # already shredded (e.g. a destroy interrupted after this step): nothing to do
    with contextlib.suppress(TokenKeyMissing):
        core.destroy_key(label)


def _write_new(path: Path, blob: bytes) -> None:
    make_private_dir(path.parent)
    remove_durably(path)  # a blob left by an aborted earlier attempt (its key is gone)
    atomic_write(path, blob, overwrite=False)


@asynccontextmanager
async def open_store(
    data_dir: Path, hsm: HsmSession, *, cluster_id: bytes, node_index: int
) -> AsyncIterator[ShareStore]:
    """Open the store: clean interrupted writes, check every history; drop the cache at exit."""

    def prepare() -> None:
        keys = data_dir / "keys"
        make_private_dir(keys)
        for d in keys.iterdir():
            if d.is_dir():
                clean_temp_files(d)
                MetadataLog(d).versions()  # raises StoreCorrupt on a broken history

    await trio.to_thread.run_sync(prepare)
    store = ShareStore(data_dir, hsm, cluster_id=cluster_id, node_index=node_index)
    try:
        yield store
    finally:
        store.cache.clear()

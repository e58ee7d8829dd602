"""The node's side of key import (``protocol.key_import``, methods in
``protocol.import_api``): open, seal pending, commit, abort, expire.

* ``keys.import_open``: refuse a key id this node holds or ever held (only an aborted
  import or ceremony may be retried) and one with an import already open or pending;
  else draw a nonce and an X25519 key from the node's entropy, keep the secret in
  memory only (``OPEN_TTL_S``; a newer open of the same key id replaces it) and answer
  the signed ``ImportOpen``.
* ``keys.import_share``: the bundle must contain this node's own open unchanged and
  pass ``check_bundle`` (in a worker thread: a pairing) and ``open_share`` (decrypt,
  Feldman check). The X25519 secret is dropped, a *pending record*
  (``<data_dir>/imports/<key_id>.json``: import id, transcript hash, bundle, deadline)
  is written, the share is sealed PENDING under a new token key (``ShareStore.put_share``,
  which itself never overwrites a key id) and the signed ``ImportSignature`` answered.
* ``keys.commit``: ``node.commit.activate_with_certificate`` (every holder must have
  signed), which stores the ``ImportTranscript`` and activates; the record is removed.
* ``keys.import_abort``: drop the open, or destroy the pending share and its token key
  (crypto-shredding) and remove the record.
* ``keys.import_state``: the pending imports (import id, holders, the coordinator that
  relayed the bundle, idle time) and, asked about one key id, the commit certificate
  of its import once active: what ``coordinator.import_recovery`` needs to roll an
  interrupted commit forward or abort it.

Expiry rule: a background task expires opens after ``OPEN_TTL_S`` (no share, no
signature: no certificate can exist). A pending share is *not* expired: this node has
signed, so once every holder has, a certificate may exist and other holders may have
activated; destroying the share here could leave the key active on some nodes only.
Only a coordinator ends a pending import: ``keys.commit`` with a valid certificate, or
``keys.import_abort`` once it found that no holder holds one (all reachable). The one
exception is a pending record that cannot be read back: its share can never be
committed here (the bundle is gone), so it is destroyed as before.

Every step that changes state is recorded in the node's audit log (event
``key.import.*``: import id, holders, outcome, reason; never a secret).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from node.audit_log import AuditLogUnavailable
from node.commit import CommitRefused, activate_with_certificate
from node.files import atomic_write, make_private_dir, remove_durably
from node.handlers import HandlerRegistry, NodeContext
from node.store import KeyExists, KeyMetadata, KeyStatus, MetadataVersion, StoreError
from node.store import UnknownKey as StoreUnknownKey
from protocol.commit import IMPORT_PURPOSE
from protocol.dkg.crypto import x25519_keypair
from protocol.dkg.relayed import CommitCertificate
from protocol.encoding import g1_to_bytes
from protocol.errors import DecodeError, TkmsError
from protocol.import_api import (
    IMPORT_ABORT,
    IMPORT_OPEN,
    IMPORT_SHARE,
    IMPORT_STATE,
    KEYS_COMMIT,
    OPEN_TTL_S,
    ImportRefusal,
    ImportState,
)
from protocol.key_import import (
    ImportBundle,
    ImportOpen,
    ImportRejected,
    ImportSignature,
    ImportTranscript,
    VerifiedImport,
    check_bundle,
    is_import_transcript,
    open_share,
)
from protocol.rpc import RpcError

log = logging.getLogger("tkms.node.import")

IMPORTS_DIR = "imports"
EXPIRY_INTERVAL_S = 2.0
NONCE_LEN = 32


class ImportRefused(RpcError):
    def __init__(self, refusal: ImportRefusal, message: str) -> None:
        super().__init__(int(refusal), message)
        self.refusal = refusal


class _Open:
    """An open import: the signed open and its X25519 secret (repr hides it)."""

    __slots__ = ("_secret", "expires", "message")

    def __init__(self, message: ImportOpen, secret: bytes, expires: float) -> None:
        self.message = message
        self._secret = bytearray(secret)
        self.expires = expires

    def secret(self) -> bytes:
        return bytes(self._secret)

    def drop(self) -> None:
        self._secret[:] = bytes(len(self._secret))

    def __repr__(self) -> str:
        return f"_Open(sender={self.message.sender}, secret=<hidden>)"


@dataclass(frozen=True, slots=True)
class _Pending:
    """A pending import (also on disk as its record)."""

    import_id: bytes
    transcript_hash: bytes
    bundle: bytes
    created: float  # unix time
    coordinator: str | None = None  # the coordinator that relayed the bundle

    @property
    def readable(self) -> bool:
        return bool(self.import_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "importId": self.import_id.hex(),
            "transcriptHash": self.transcript_hash.hex(),
            "bundle": self.bundle.hex(),
            "createdAt": self.created,
            "coordinator": self.coordinator,
        }

    @classmethod
    def from_json(cls, obj: Any) -> _Pending:
        coordinator = obj.get("coordinator")
        return cls(
            bytes.fromhex(obj["importId"]),
            bytes.fromhex(obj["transcriptHash"]),
            bytes.fromhex(obj["bundle"]),
            float(obj["createdAt"]),
            coordinator if isinstance(coordinator, str) else None,
        )


def _taken(versions: list[MetadataVersion]) -> ImportRefusal | None:
    """Whether a key id's history forbids a new import (only an aborted one allows it)."""
    if not versions:
        return None
    if versions[-1].metadata.status is KeyStatus.PENDING:
        return ImportRefusal.BUSY
    if versions[-1].metadata.status is not KeyStatus.DESTROYED or any(
        v.metadata.status is not KeyStatus.PENDING for v in versions[:-1]
    ):
        return ImportRefusal.KEY_EXISTS
    return None


class NodeImporter:
    """The import handlers of one node process (see the module header)."""

    def __init__(
        self,
        ctx: NodeContext,
        *,
        clock: Callable[[], float] = time.time,
        open_ttl_s: float = OPEN_TTL_S,
    ) -> None:
        self.ctx = ctx
        self.index = ctx.entry.index
        self.dir: Path = ctx.config.data_dir / IMPORTS_DIR
        self._clock = clock
        self._open_ttl = open_ttl_s
        self._opens: dict[str, _Open] = {}
        self._pending: dict[str, _Pending] = {}
        self._lock = trio.Lock()

    # -- records ---------------------------------------------------------------------

    def _record_path(self, key_id: str) -> Path:
        return self.dir / f"{key_id}.json"

    async def _write_record(self, key_id: str, pending: _Pending) -> None:
        path = self._record_path(key_id)
        data = json.dumps(pending.to_json(), sort_keys=True).encode()

        def write() -> None:
            make_private_dir(path.parent)
            atomic_write(path, data)

        await trio.to_thread.run_sync(write)

    async def _remove_record(self, key_id: str) -> None:
        self._pending.pop(key_id, None)
        await trio.to_thread.run_sync(remove_durably, self._record_path(key_id))

    async def load_records(self) -> None:
        """At start: pending imports left on disk come back (unreadable ones expire)."""

        def scan() -> dict[str, _Pending]:
            out: dict[str, _Pending] = {}
            if not self.dir.is_dir():
                return out
            for path in sorted(self.dir.glob("*.json")):
                try:
                    out[path.stem] = _Pending.from_json(json.loads(path.read_bytes()))
                except (OSError, ValueError, KeyError, TypeError):
                    log.error("import record %s is unreadable; destroying its key", path.name)
                    out[path.stem] = _Pending(b"", b"", b"", 0.0)
            return out

        for key_id, pending in (await trio.to_thread.run_sync(scan)).items():
            self._pending[key_id] = pending

    async def _audit(self, event: str, key_id: str, outcome: str, **extra: Any) -> None:
        try:
            await self.ctx.audit.append(
                event=event, outcome=outcome, key_id=key_id, extra=extra or None
            )
        except AuditLogUnavailable as exc:
            log.error("audit log unavailable: %s", exc)
            raise RpcError(ImportRefusal.REJECTED, "the node cannot record the decision") from None

    # -- keys.import_open ------------------------------------------------------------

    async def open(self, params: dict[str, Any]) -> dict[str, Any]:
        key_id, epoch = params["key_id"], params["epoch"]
        async with self._lock:
            self._expire_opens()
            if key_id in self._pending:
                raise ImportRefused(ImportRefusal.BUSY, f"an import of {key_id!r} is pending")
            stale = self._opens.pop(key_id, None)
            if stale is not None:  # a newer open replaces it (a retried or second import)
                stale.drop()
                log.info("import of %s: a new open replaces the previous one", key_id)
            refusal = _taken(await self._history(key_id))
            if refusal is not None:
                await self._audit("key.import.open", key_id, "refused", reason=refusal.label)
                raise ImportRefused(refusal, f"key id {key_id!r} exists on this node")
            rng = self.ctx.entropy
            if rng.pool.pooled < 4 * NONCE_LEN:
                await rng.reserve(4)
            secret, public = x25519_keypair(rng)
            message = ImportOpen(
                cluster=self.ctx.cluster_id,
                key_id=key_id,
                epoch=epoch,
                sender=self.index,
                nonce=rng(NONCE_LEN),
                enc_key=public,
            ).signed_by(self.ctx.identity.signing_key)
            await self._audit("key.import.open", key_id, "opened", epoch=epoch)
            self._opens[key_id] = _Open(message, secret, self._clock() + self._open_ttl)
            del secret
        return {"message": message.encode()}

    async def _history(self, key_id: str) -> list[MetadataVersion]:
        try:
            return await self.ctx.store.history(key_id)
        except StoreUnknownKey:
            return []

    def _expire_opens(self) -> None:
        now = self._clock()
        for key_id in [k for k, o in self._opens.items() if o.expires <= now]:
            self._opens.pop(key_id).drop()
            log.info("import of %s: open expired", key_id)

    # -- keys.import_share -----------------------------------------------------------

    async def _reject(self, key_id: str, opened: _Open, reason: str) -> ImportRefused:
        opened.drop()
        self._opens.pop(key_id, None)
        await self._audit("key.import.share", key_id, "rejected", reason=reason[:256])
        log.warning("import of %s rejected: %s", key_id, reason)
        return ImportRefused(ImportRefusal.REJECTED, reason)

    async def share(self, params: dict[str, Any]) -> dict[str, Any]:
        key_id = params["key_id"]
        async with self._lock:
            self._expire_opens()
            opened = self._opens.get(key_id)
            if opened is None:
                raise ImportRefused(ImportRefusal.UNKNOWN, f"no open import of {key_id!r} here")
            try:
                bundle = ImportBundle.decode(params["message"])
                if bundle.key_id != key_id:
                    raise ImportRejected("bundle.key_id", "is another key id")
                if opened.message not in bundle.opens:
                    raise ImportRejected("bundle.opens", "this node's open is not in it")
                verified = await trio.to_thread.run_sync(check_bundle, bundle, self.ctx.manifest)
                share = await trio.to_thread.run_sync(self._open_share, verified, opened)
            except DecodeError as exc:
                raise await self._reject(key_id, opened, str(exc)) from None
            opened.drop()
            del self._opens[key_id]
            pending = _Pending(
                verified.import_id,
                verified.transcript_hash,
                params["message"],
                self._clock(),
                params.get("coordinator"),
            )
            await self._seal(key_id, verified, pending, share)
            del share
            signature = ImportSignature(
                ceremony=verified.import_id,
                sender=self.index,
                transcript_hash=verified.transcript_hash,
            ).signed_by(self.ctx.identity.signing_key)
        return {"message": signature.encode()}

    def _open_share(self, verified: VerifiedImport, opened: _Open) -> int:
        return open_share(
            verified, index=self.index, enc_secret=opened.secret(), enc_key=opened.message.enc_key
        )

    async def _seal(self, key_id: str, v: VerifiedImport, pending: _Pending, share: int) -> None:
        b = v.bundle
        meta = KeyMetadata(
            key_id=key_id,
            t=b.threshold,
            n=len(b.holders),
            epoch=b.epoch,
            holders=b.holders,
            pk_g1=g1_to_bytes(v.pubkey_g1),
            pk_g2=b.pubkey_g2,
            public_shares={j: g1_to_bytes(p) for j, p in v.public_shares.items()},
            transcript_hash=v.transcript_hash,
            status=KeyStatus.PENDING,
        )
        extra = {"import_id": v.import_id.hex(), "holders": list(b.holders), "t": b.threshold}
        await self._write_record(key_id, pending)
        self._pending[key_id] = pending
        try:
            await self.ctx.store.put_share(meta, share)
        except KeyExists as exc:
            await self._remove_record(key_id)
            await self._audit("key.import.share", key_id, "refused", reason="key_exists")
            raise ImportRefused(ImportRefusal.KEY_EXISTS, str(exc)) from None
        except BaseException:
            await self._destroy_pending(key_id, "seal failed")
            raise
        try:
            await self._audit("key.import.share", key_id, "pending", **extra)
        except RpcError:
            await self._destroy_pending(key_id, "audit unavailable")
            raise
        log.info("import of %s: share sealed pending (holders %s)", key_id, list(b.holders))

    # -- keys.commit -----------------------------------------------------------------

    async def commit(self, params: dict[str, Any]) -> dict[str, Any]:
        key_id = params["key_id"]
        async with self._lock:
            pending = self._pending.get(key_id)
            if pending is None:
                meta = await self._metadata(key_id)
                if meta is not None and meta.status is KeyStatus.ACTIVE:
                    return {"key_id": key_id, "status": "active"}  # delivered twice
                raise ImportRefused(ImportRefusal.UNKNOWN, f"no pending import of {key_id!r}")
            try:
                cert = CommitCertificate.decode(params["certificate"])
                bundle = ImportBundle.decode(pending.bundle)
                transcript = ImportTranscript(bundle, cert).encode()
                await activate_with_certificate(
                    self.ctx.store,
                    self.ctx.manifest,
                    key_id,
                    cert,
                    purpose=IMPORT_PURPOSE,
                    ceremony=pending.import_id,
                    transcript=transcript,
                )
            except (DecodeError, CommitRefused) as exc:
                await self._audit("key.import.commit", key_id, "refused", reason=str(exc)[:256])
                raise ImportRefused(ImportRefusal.BAD_COMMIT, str(exc)) from None
            await self._remove_record(key_id)
            holders = [j for j, _ in cert.signatures]
            await self._audit(
                "key.import.commit",
                key_id,
                "active",
                import_id=cert.ceremony.hex(),
                holders=holders,
            )
        log.info("import of %s committed: key active", key_id)
        return {"key_id": key_id, "status": "active"}

    async def _metadata(self, key_id: str) -> KeyMetadata | None:
        versions = await self._history(key_id)
        return versions[-1].metadata if versions else None

    # -- keys.import_abort and expiry ------------------------------------------------

    async def abort(self, params: dict[str, Any]) -> dict[str, Any]:
        key_id = params["key_id"]
        async with self._lock:
            opened = self._opens.pop(key_id, None)
            if opened is not None:
                opened.drop()
                await self._audit("key.import.abort", key_id, "aborted", stage="open")
            pending = self._pending.get(key_id)
            if pending is not None:
                if "ceremony" in params and params["ceremony"] != pending.import_id:
                    raise ImportRefused(ImportRefusal.UNKNOWN, "another import is pending")
                await self._destroy_pending(key_id, "aborted by the coordinator")
            elif opened is None:
                meta = await self._metadata(key_id)
                if meta is not None and meta.status is KeyStatus.ACTIVE:
                    raise ImportRefused(ImportRefusal.COMMITTED, f"key {key_id!r} is active")
        return {"key_id": key_id, "status": "aborted"}

    async def _destroy_pending(self, key_id: str, reason: str) -> None:
        """Crypto-shred a pending share (if still pending) and drop its record."""
        meta = await self._metadata(key_id)
        if meta is not None and meta.status is KeyStatus.PENDING:
            try:
                await self.ctx.store.destroy(key_id)
            except StoreError as exc:
                log.error("import of %s: destroying the pending share failed: %s", key_id, exc)
                raise
        await self._remove_record(key_id)
        with contextlib.suppress(RpcError):  # the share is gone either way (logged)
            await self._audit("key.import.abort", key_id, "destroyed", reason=reason)
        log.warning("import of %s: pending share destroyed (%s)", key_id, reason)

    async def expire(self) -> None:
        """One pass: drop expired opens, destroy pending shares whose record is
        unreadable (never committable here); readable pending imports wait for a
        coordinator (module header)."""
        async with self._lock:
            self._expire_opens()
            for key_id in [k for k, p in self._pending.items() if not p.readable]:
                try:
                    meta = await self._metadata(key_id)
                    if meta is not None and meta.status is KeyStatus.ACTIVE:
                        await self._remove_record(key_id)  # committed before a crash
                    else:
                        await self._destroy_pending(key_id, "pending record unreadable")
                except (TkmsError, OSError) as exc:  # retried at the next pass
                    log.error("import of %s: expiry failed (%s); retrying", key_id, exc)

    # -- keys.import_state -----------------------------------------------------------

    async def state(self, params: dict[str, Any]) -> dict[str, Any]:
        key_id = params.get("key_id")
        now = self._clock()
        out: list[ImportState] = []
        async with self._lock:
            for k, p in sorted(self._pending.items()):
                if not p.readable or (key_id is not None and k != key_id):
                    continue
                holders = ImportBundle.decode(p.bundle).holders
                idle = max(0, int((now - p.created) * 1000))
                st = ImportState(k, p.import_id, "pending", holders, p.coordinator, idle, None)
                out.append(st)
            if key_id is not None and not out:
                committed = await self._committed(key_id)
                if committed is not None:
                    out.append(committed)
        return {"imports": [st.to_wire() for st in out]}

    async def _committed(self, key_id: str) -> ImportState | None:
        """The active import of ``key_id`` with its certificate (None: not one)."""
        meta = await self._metadata(key_id)
        if meta is None or meta.status is not KeyStatus.ACTIVE:
            return None
        try:
            data = await self.ctx.store.load_transcript(key_id, meta.epoch)
        except (StoreError, OSError):
            return None
        if not is_import_transcript(data):
            return None
        try:
            cert = ImportTranscript.decode(data).commit
        except DecodeError:
            return None
        holders = tuple(j for j, _ in cert.signatures)
        return ImportState(key_id, cert.ceremony, "active", holders, None, 0, cert.encode())

    async def run_expiry(self) -> None:
        await self.load_records()
        while True:
            await self.expire()
            await trio.sleep(EXPIRY_INTERVAL_S)


def register(registry: HandlerRegistry, ctx: NodeContext) -> None:
    importer = NodeImporter(ctx)
    registry.add(IMPORT_OPEN, importer.open)
    registry.add(IMPORT_SHARE, importer.share)
    registry.add(KEYS_COMMIT, importer.commit)
    registry.add(IMPORT_ABORT, importer.abort)
    registry.add(IMPORT_STATE, importer.state)
    registry.background(importer.run_expiry)

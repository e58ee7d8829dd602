"""Key import on the coordinator: relay, collect, commit or abort
(``protocol.key_import``; node methods in ``protocol.import_api``).

The coordinator is untrusted and never sees the key: the operator's CLI decrypts the
keystore, splits it and encrypts each share to a holder's per-import key. What passes
through here is public data and ciphertexts. ``ImportingService`` adds the two
``Backend`` calls to the ``SigningService``:

* ``open_import``: refuse a key id the registry knows (unless it is destroyed: then
  the nodes decide, and they refuse any key id that was ever active), then
  ``keys.import_open`` on every node at once. Nodes that refuse because the key id
  exists make the whole call ``KeyExists``; fewer than ``min_holders`` opens (default:
  every node) is ``NotEnoughSigners``. Either way the opens that were made are
  aborted again. The opens are returned as the nodes signed them; the CLI checks them
  against the manifest, not against anything said here.
* ``import_key``: ``keys.import_share`` to every holder the bundle names, at once. Each
  answer must be a valid ``ImportSignature`` of that holder over the bundle's import id
  and transcript hash (checked against the manifest). Any refusal, timeout or bad
  answer aborts the import on every holder (``keys.import_abort``: each pending share
  and its token key destroyed) and raises ``CeremonyAborted`` naming the nodes
  (``KeyExists`` when a node holds the key id). Otherwise every signature goes into a
  ``CommitCertificate`` and ``keys.commit`` to every holder (retried until
  ``commit_timeout_s``); the registry is refreshed from the holders and the key
  returned with its ``ImportTranscript``. The key id is claimed (the DKG's ``busy``
  set) for the whole call, and ``keys.import_share`` names this coordinator.

Interrupted imports (this coordinator died mid-commit, or a holder missed it) are
resolved by ``coordinator.import_recovery`` whenever a node's session comes up:
rolled forward if any holder holds the certificate, else aborted once every holder
has answered.

Every outcome is appended to the coordinator's audit log (``key.import``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import trio

from coordinator.backend import (
    CeremonyAborted,
    CeremonyInProgress,
    Client,
    Forbidden,
    ImportOpening,
    ImportResult,
    InvalidRequest,
    KeyExists,
    KeyInfo,
    NotEnoughSigners,
    UnknownKey,
)
from coordinator.import_recovery import ImportRecovery
from coordinator.sessions import SessionError
from coordinator.signer import SigningService
from protocol.commit import make_certificate
from protocol.errors import DecodeError, TkmsError
from protocol.import_api import (
    IMPORT_ABORT,
    IMPORT_OPEN,
    IMPORT_SHARE,
    KEYS_COMMIT,
    ImportRefusal,
    import_refusal_of,
)
from protocol.key_import import ImportBundle, ImportOpen, ImportSignature, ImportTranscript
from protocol.rpc import Method, RpcError

log = logging.getLogger("tkms.coordinator.import")

IMPORT_EPOCH = 0  # an imported key starts at epoch 0, like a DKG


@dataclass(frozen=True, slots=True)
class ImportConfig:
    """Deadlines of the import steps (seconds)."""

    open_timeout_s: float = 10.0
    share_timeout_s: float = 120.0  # each node runs a pairing check and seals via its HSM
    commit_timeout_s: float = 60.0
    abort_timeout_s: float = 10.0


@dataclass(slots=True)
class _Answers:
    ok: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    refused: dict[str, ImportRefusal] = field(default_factory=dict)


def _describe(exc: BaseException) -> tuple[str, ImportRefusal | None]:
    if isinstance(exc, RpcError):
        refusal = import_refusal_of(exc.code)
        return (f"{refusal.label}: {exc.message}" if refusal else str(exc)), refusal
    return (str(exc) or type(exc).__name__), None


class ImportingService(SigningService):
    """The coordinator's ``Backend`` with key import (see the module header)."""

    import_config: ImportConfig = ImportConfig()

    @cached_property
    def import_recovery(self) -> ImportRecovery:
        return ImportRecovery(self.dkg)

    async def recover_node(self, name: str) -> bool:
        changed = await super().recover_node(name)
        return bool(await self.import_recovery.recover_node(name)) or changed

    async def _all(
        self,
        names: Sequence[str],
        method: Method,
        params: Callable[[str], dict[str, Any]],
        timeout: float,  # noqa: ASYNC109 - handed to SessionManager.call
        check: Callable[[str, Any], Awaitable[Any]] | None = None,
    ) -> _Answers:
        """Call every node at once; ``check`` turns an answer into a value (or raises
        a ``TkmsError`` that counts as that node's failure)."""
        out = _Answers()

        async def one(name: str) -> None:
            try:
                result = await self.sessions.call(name, method, params(name), timeout=timeout)
                out.ok[name] = await check(name, result) if check else result
            except (SessionError, TkmsError) as exc:
                reason, refusal = _describe(exc)
                out.failed[name] = reason
                if refusal is not None:
                    out.refused[name] = refusal

        with trio.move_on_after(timeout + 1.0):
            async with trio.open_nursery() as nursery:
                for name in names:
                    nursery.start_soon(one, name)
        for name in names:
            if name not in out.ok and name not in out.failed:
                out.failed[name] = f"no answer within {timeout} s"
        return out

    def _check_new(self, key_id: str, client: Client) -> None:
        if not client.is_operator:
            raise Forbidden("importing a key needs the operator role")
        try:
            info = self.registry.get(key_id)
        except UnknownKey:
            return
        if info.status != "destroyed":
            raise KeyExists(key_id)

    async def _abort(self, key_id: str, names: Sequence[str], ceremony: bytes | None) -> None:
        """``keys.import_abort`` to ``names`` (best effort; nodes also expire on their own)."""

        def params(name: str) -> dict[str, Any]:
            return {"key_id": key_id} | ({"ceremony": ceremony} if ceremony else {})

        answers = await self._all(names, IMPORT_ABORT, params, self.import_config.abort_timeout_s)
        for name, reason in answers.failed.items():
            log.error(
                "import of %s: abort on %s failed (%s); it expires there", key_id, name, reason
            )

    async def _audit_import(
        self, client: Client, key_id: str, outcome: str, signers: Sequence[str], **extra: Any
    ) -> None:
        await self._record(
            [
                {
                    "event": "key.import",
                    "client": client.client_id,
                    "key_id": key_id,
                    "outcome": outcome,
                    "signers": list(signers),
                    "extra": extra,
                }
            ]
        )

    # -- open ------------------------------------------------------------------------

    async def open_import(
        self, key_id: str, *, min_holders: int | None, client: Client
    ) -> ImportOpening:
        self._check_new(key_id, client)
        names = [n.name for n in self.manifest.nodes]
        wanted = len(names) if min_holders is None else min_holders
        index = {n.name: n.index for n in self.manifest.nodes}

        async def check(name: str, result: Mapping[str, Any]) -> ImportOpen:
            message = ImportOpen.decode(result["message"])
            if message.sender != index[name] or message.key_id != key_id:
                raise DecodeError(f"{name}.open", "is for another node or key id")
            if not message.signature_valid(self.manifest.node(name).ed25519_public_key):
                raise DecodeError(f"{name}.open", "signature does not verify")
            return message

        answers = await self._all(
            names,
            IMPORT_OPEN,
            lambda _name: {"key_id": key_id, "epoch": IMPORT_EPOCH},
            self.import_config.open_timeout_s,
            check,
        )
        taken = [n for n, r in answers.refused.items() if r is ImportRefusal.KEY_EXISTS]
        if taken or len(answers.ok) < wanted:
            await self._abort(key_id, sorted(answers.ok), None)
            missing = sorted(answers.failed)
            for name in missing:
                log.warning(
                    "import of %s: node %s did not open: %s", key_id, name, answers.failed[name]
                )
            await self._audit_import(client, key_id, "refused", [], missing=missing)
            if taken:
                raise KeyExists(key_id)
            raise NotEnoughSigners(key_id, wanted, len(answers.ok), missing)
        return ImportOpening(
            key_id=key_id,
            epoch=IMPORT_EPOCH,
            opens=tuple((n, answers.ok[n]) for n in names if n in answers.ok),
            missing=tuple((n, answers.failed[n]) for n in names if n in answers.failed),
        )

    # -- share, commit ---------------------------------------------------------------

    async def import_key(
        self, key_id: str, bundle: ImportBundle, *, min_holders: int | None, client: Client
    ) -> ImportResult:
        self._check_new(key_id, client)
        if not self.dkg.claim(key_id):
            raise CeremonyInProgress(key_id)
        try:
            return await self._import_key(key_id, bundle, min_holders=min_holders, client=client)
        finally:
            self.dkg.release(key_id)

    async def _import_key(
        self, key_id: str, bundle: ImportBundle, *, min_holders: int | None, client: Client
    ) -> ImportResult:
        if bundle.key_id != key_id:
            raise InvalidRequest("keyId", "the bundle is for another key id")
        if bundle.cluster != self.manifest.cluster_id:
            raise InvalidRequest("opens", "the opens are for another cluster")
        names_by_index = {n.index: n.name for n in self.manifest.nodes}
        unknown = [j for j in bundle.holders if j not in names_by_index]
        if unknown:
            raise InvalidRequest("opens", f"nodes {unknown} are not in the manifest")
        holders = [names_by_index[j] for j in bundle.holders]
        wanted = len(self.manifest.nodes) if min_holders is None else min_holders
        if len(holders) < wanted:
            raise InvalidRequest("opens", f"{len(holders)} holders, minHolders is {wanted}")
        import_id, transcript_hash = bundle.import_id(), bundle.transcript_hash()
        message = bundle.encode()

        async def check(name: str, result: Mapping[str, Any]) -> ImportSignature:
            sig = ImportSignature.decode(result["message"])
            node = self.manifest.node(name)
            if (sig.sender, sig.ceremony, sig.transcript_hash) != (
                node.index,
                import_id,
                transcript_hash,
            ):
                raise DecodeError(f"{name}.signature", "is for another node or import")
            if not sig.signature_valid(node.ed25519_public_key):
                raise DecodeError(f"{name}.signature", "does not verify")
            return sig

        log.info("import of %s: relaying the bundle to %s", key_id, ", ".join(holders))
        answers = await self._all(
            holders,
            IMPORT_SHARE,
            lambda _name: {"key_id": key_id, "message": message, "coordinator": self.dkg.name},
            self.import_config.share_timeout_s,
            check,
        )
        if answers.failed:
            await self._abort(key_id, holders, import_id)
            failed = sorted(answers.failed)
            reasons = "; ".join(f"{n}: {answers.failed[n]}" for n in failed)
            log.error("import of %s aborted: %s", key_id, reasons)
            await self._audit_import(client, key_id, "aborted", [], failed=failed)
            if any(r is ImportRefusal.KEY_EXISTS for r in answers.refused.values()):
                raise KeyExists(key_id)
            raise CeremonyAborted(key_id, reasons, failed)
        signatures = {answers.ok[n].sender: answers.ok[n].sig for n in holders}
        cert = make_certificate(import_id, transcript_hash, signatures)
        await self._commit(key_id, holders, cert.encode(), client)
        transcript = ImportTranscript(bundle, cert).encode()
        info = await self._refreshed(key_id, holders)
        await self._audit_import(
            client, key_id, "active", holders, import_id=import_id.hex(), t=bundle.threshold
        )
        log.warning(
            "key %s imported: %d-of-%d on %s",
            key_id,
            bundle.threshold,
            len(holders),
            ", ".join(holders),
        )
        return ImportResult(info, transcript)

    async def _commit(self, key_id: str, holders: list[str], cert: bytes, client: Client) -> None:
        """``keys.commit`` to every holder, retrying the ones that did not confirm."""
        deadline = trio.current_time() + self.import_config.commit_timeout_s
        todo = list(holders)
        while True:
            left = max(1.0, deadline - trio.current_time())
            answers = await self._all(
                todo, KEYS_COMMIT, lambda _n: {"key_id": key_id, "certificate": cert}, left
            )
            todo = [n for n in todo if n not in answers.ok]
            bad = [n for n, r in answers.refused.items() if r is ImportRefusal.BAD_COMMIT]
            if not todo or bad or trio.current_time() >= deadline:
                break
            await trio.sleep(0.5)
        if todo:
            done = [n for n in holders if n not in todo]
            await self._audit_import(client, key_id, "incomplete", done, unconfirmed=todo)
            raise CeremonyAborted(
                key_id,
                f"commit confirmed by {done or 'no node'}, not by {todo}: the coordinator "
                "rolls it forward there when they are back",
                todo,
            )

    async def _refreshed(self, key_id: str, holders: Sequence[str]) -> KeyInfo:
        async with trio.open_nursery() as nursery:
            for name in holders:
                nursery.start_soon(self.refresh_node, name)
        try:
            return self.registry.get(key_id)
        except UnknownKey:
            reason = self.registry.conflicts.get(key_id, "not reported by the holders")
            raise CeremonyAborted(key_id, f"committed, but not in the registry: {reason}") from None

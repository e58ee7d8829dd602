"""What a coordinator does about ceremonies it is not driving, and about the keys it
did not see being made (DESIGN.md §DKG and "Where state lives").

Roll-forward (``DkgRecovery.recover_node``, run each time a node's session comes up,
so at coordinator start for every node, and on every periodic refresh): the node
lists its unfinished ceremonies (``dkg.state``). One is *orphaned* when this
coordinator (by name) opened it and is not driving it now (it restarted, or the
node missed the end), or when another coordinator opened it and it has been idle
for ``stale_after_s``. For an orphaned ceremony every node is asked about that key:

* if any node holds a commit certificate for it, the ceremony rolls forward: every
  node in FINISH named by the certificate gets ``dkg.commit`` (it verifies the
  certificate itself), every other node still in it gets ``dkg.abort``;
* otherwise it aborts: nodes before FINISH at once (they hold nothing), nodes in
  FINISH only once *every* participant has answered without a certificate (an
  unreachable one might hold it; aborting then could leave the key active there
  and destroyed elsewhere). Until then the pending shares wait, and the next
  session-up or refresh tries again.

Transcripts (``DkgRecovery.verify_key``, the registry's ``KeyVerifier``): before the
coordinator serves a key it fetches the transcript from the holders, one after the
other, re-checks each copy with ``protocol.dkg.verify_transcript`` against the
manifest, and checks that it commits exactly the key the nodes report (t, epoch,
holders, both public keys, every public share, the transcript hash). The first copy
that passes is kept (one good copy proves the key the holders agree on); every copy
that fails is logged with the node holding it. A key with no good copy is reported
and not served.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import trio

from coordinator.backend import BackendError, UnknownKey
from coordinator.dkg import DkgCoordinator
from coordinator.recovery import CALL_TIMEOUT_S, RollForward
from coordinator.sessions import SessionError
from protocol import node_api
from protocol.dkg import Transcript, load_transcript, verify_transcript
from protocol.dkg.relayed import Abort, CommitCertificate
from protocol.errors import Fault, TkmsError
from protocol.key_import import check_import_key, is_import_transcript, verify_import_transcript

log = logging.getLogger("tkms.coordinator.dkg")

TRANSCRIPT_CACHE = 256


class TranscriptRejected(BackendError):
    """A key's transcript is missing, does not verify, or commits another key."""

    fault: ClassVar[Fault] = Fault.PEER

    def __init__(self, key_id: str, reason: str) -> None:
        super().__init__(f"transcript of key {key_id!r} rejected: {reason}")
        self.key_id = key_id
        self.reason = reason


def transcript_mismatch(meta: node_api.PublicKeyMetadata, transcript: Transcript) -> str | None:
    """Why ``transcript`` does not commit the key ``meta`` describes, or None."""
    body, cert = transcript.body, transcript.commit
    p, o = body.proposal, body.outcome
    shares = dict(o.public_shares)
    checks = (
        (p.key_id == meta.key_id, "key id"),
        (p.epoch == meta.epoch, "epoch"),
        (p.threshold == meta.t, "threshold"),
        (cert.transcript_hash == meta.transcript_hash, "transcript hash"),
        (set(cert.holders) == set(meta.holders), "holders"),
        (o.pubkey_g1 == meta.pk_g1, "public key (G1)"),
        (o.pubkey_g2 == meta.pk_g2, "public key (G2)"),
        (all(shares.get(i) == pt for i, pt in meta.public_shares), "public shares"),
    )
    bad = [what for ok, what in checks if not ok]
    return f"differs from the nodes' key in: {', '.join(bad)}" if bad else None


class DkgRecovery(RollForward[node_api.CeremonyState]):
    """Roll-forward and transcript checks for one coordinator (module header)."""

    state_method = node_api.DKG_STATE
    state_field = "ceremonies"

    def __init__(self, dkg: DkgCoordinator) -> None:
        super().__init__(dkg)
        self._transcripts: dict[tuple[str, int], bytes] = {}

    # -- roll-forward (the skeleton is coordinator.recovery.RollForward) ------------

    def decode_state(self, raw: dict[str, Any]) -> node_api.CeremonyState:
        return node_api.CeremonyState.from_wire(raw)

    def orphaned(self, st: node_api.CeremonyState) -> bool:
        if st.phase in ("done", "aborted"):
            return False
        if st.coordinator == self.dkg.name:
            return True  # ours, and (the key is not claimed) nobody here drives it
        return st.idle_ms / 1000 >= self.dkg.config.stale_after_s

    def finished(self, st: node_api.CeremonyState) -> bool:
        return st.phase == "done"

    async def resolve_one(
        self,
        key_id: str,
        ceremony: bytes,
        entries: Sequence[tuple[str, node_api.CeremonyState]],
        unreachable: set[str],
    ) -> bool:
        certs = [st.commit for _, st in entries if st.commit is not None]
        finishing = [name for name, st in entries if st.phase == "finish"]
        early = [name for name, st in entries if st.phase not in ("finish", "done")]
        tag = ceremony.hex()[:16] or "(not opened)"
        if certs:
            cert = CommitCertificate.decode(certs[0])
            holders = {self.names.get(j) for j in cert.holders}
            log.warning("dkg %s ceremony %s: commit certificate found: roll forward", key_id, tag)
            for name in finishing:
                if name in holders:
                    await self._send(name, key_id, node_api.DKG_COMMIT, cert.encode(), None)
                else:
                    await self._abort(name, key_id, ceremony, "not a holder of the committed key")
            for name in early:
                await self._abort(name, key_id, ceremony, "not a holder of the committed key")
            return True
        for name in early:
            await self._abort(name, key_id, ceremony, "the coordinator driving it is gone")
        participants = {self.names.get(j) for _, st in entries for j in st.participants}
        waiting = sorted(n for n in participants if n is not None and n in unreachable)
        if finishing and waiting:
            why = f"{', '.join(waiting)} unreachable and might hold the commit certificate"
            if self.deferred.get(key_id) != why:
                log.warning("dkg %s ceremony %s: not aborting yet: %s", key_id, tag, why)
            self.deferred[key_id] = why
            return False
        for name in finishing:
            await self._abort(name, key_id, ceremony, "no commit certificate exists: aborted")
        if finishing:
            log.warning("dkg %s ceremony %s: no commit certificate anywhere: aborted", key_id, tag)
        return True

    async def _abort(self, name: str, key_id: str, ceremony: bytes, reason: str) -> None:
        await self._send(
            name, key_id, node_api.DKG_ABORT, Abort(reason=reason).encode(), ceremony or None
        )

    async def _send(
        self, name: str, key_id: str, method: Any, message: bytes, ceremony: bytes | None
    ) -> None:
        params: dict[str, Any] = {"key_id": key_id, "message": message}
        if ceremony is not None:
            params["ceremony"] = ceremony
        try:
            raw = await self.sessions.call(name, method, params, timeout=CALL_TIMEOUT_S)
            log.info("dkg %s: %s on %s -> %s", key_id, method.name, name, raw["phase"])
        except (SessionError, TkmsError) as exc:
            log.warning("dkg %s: %s on %s failed: %s", key_id, method.name, name, exc)

    # -- transcripts ----------------------------------------------------------------

    async def _fetch(self, name: str, key_id: str, epoch: int) -> bytes:
        raw = await self.sessions.call(
            name,
            node_api.DKG_TRANSCRIPT,
            {"key_id": key_id, "epoch": epoch},
            timeout=CALL_TIMEOUT_S,
        )
        data: bytes = raw["transcript"]
        return data

    async def _check(self, data: bytes, meta: node_api.PublicKeyMetadata | None) -> str | None:
        """Why ``data`` is not a valid transcript (of ``meta``), or None."""
        if is_import_transcript(data):  # an imported key (coordinator.key_import)
            if meta is None:
                imported = await trio.to_thread.run_sync(
                    verify_import_transcript, data, self.manifest
                )
                return None if imported.valid else imported.reason
            return await trio.to_thread.run_sync(check_import_key, meta, data, self.manifest)
        check = await trio.to_thread.run_sync(verify_transcript, data, self.manifest)
        if not check.valid:
            return check.reason
        return transcript_mismatch(meta, load_transcript(data)) if meta is not None else None

    async def transcript(
        self,
        key_id: str,
        epoch: int,
        holders: Sequence[str],
        meta: node_api.PublicKeyMetadata | None = None,
    ) -> bytes:
        """A verified transcript of (key, epoch): the first holder's copy that passes
        ``verify_transcript`` (and commits ``meta``, when given). Holders whose copy
        fails are logged; ``TranscriptRejected`` if none passes."""
        cached = self._transcripts.get((key_id, epoch))
        if cached is not None and meta is None:
            return cached
        problems = []
        for name in holders:
            try:
                data = await self._fetch(name, key_id, epoch)
            except (SessionError, TkmsError) as exc:
                problems.append(f"{name}: {exc}")
                continue
            problem = await self._check(data, meta)
            if problem is not None:
                log.error(
                    "key %s: the transcript held by %s is rejected: %s", key_id, name, problem
                )
                problems.append(f"{name}: {problem}")
                continue
            if len(self._transcripts) >= TRANSCRIPT_CACHE:
                self._transcripts.pop(next(iter(self._transcripts)))
            self._transcripts[(key_id, epoch)] = data
            return data
        if not holders:
            raise UnknownKey(key_id)
        raise TranscriptRejected(key_id, "; ".join(problems)[:600] or "no holder answered")

    async def verify_key(self, meta: node_api.PublicKeyMetadata) -> None:
        """The registry's ``KeyVerifier``: raise ``TranscriptRejected`` unless some
        holder's transcript verifies and commits exactly this key."""
        holders = [self.names[i] for i in meta.holders if i in self.names]
        await self.transcript(meta.key_id, meta.epoch, holders, meta)

"""The node's DKG handlers (``dkg.*`` in ``protocol.node_api``): one participant
state machine per ceremony, the two-phase commit, and recovery after a restart
(DESIGN.md §DKG; the coordinator is untrusted and only relays).

One ceremony per key id at a time. Before FINISH the ceremony is a
``protocol.dkg.Participant`` in memory (its polynomial and decryption key never
touch the disk); the node persists only the ceremony id, before it answers with its
bundle, so that id is never accepted again. Its phase deadline is enforced here by
a timer task: a ceremony nobody drives aborts by itself (nothing was sealed).

FINISH is the node's vote: the share is sealed as PENDING (its own token key) and a
``PendingRecord`` with the transcript body is written, *then* the transcript
signature is returned. From then on only the coordinator ends it:

* ``dkg.commit``: the certificate must carry at least ``min_holders`` valid holder
  signatures over the hash of the body this node signed, and name this node
  (``protocol.dkg.commit_problem``). The certificate is persisted first, then the
  key is activated (holders narrowed to the certificate's), then the transcript is
  stored; the record goes. A restart in between finishes the activation.
* ``dkg.abort``: the pending share is destroyed with its token key (crypto-shred).
  Refused once a certificate is held: then the only way is forward.

At start (background task, before any request is served) the node finishes what a
crash interrupted: ``committing`` records are activated, ``aborting`` ones
destroyed, ``pending`` ones wait again for the coordinator, and a pending key in the
store that has no record (a crash between sealing and writing the record, so no vote
was ever sent) is destroyed.

Every call that changes a ceremony runs to its end even if the request is cancelled
(the coordinator died and its connection closed): otherwise a participant could move
to FINISH without its share being sealed, or a share be sealed without its record.

Errors: a malformed message is ``BAD_REQUEST`` and changes nothing; refusals carry
the ``DKG_*`` codes of ``protocol.node_api``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import trio

from node.dkg_state import DkgDisk, PendingRecord
from node.handlers import HandlerRegistry, NodeContext
from node.store import KeyMetadata, KeyStatus, UnknownKey
from protocol import node_api
from protocol.canonical import decode_canonical
from protocol.dkg import (
    Aborted,
    NeedMore,
    Participant,
    ParticipantConfig,
    Phase,
    RelayFault,
    SealPending,
    Send,
    Transcript,
    TranscriptBody,
    commit_problem,
)
from protocol.dkg.relayed import (
    Abort,
    BundleSet,
    CommitCertificate,
    ComplaintSet,
    EchoSet,
    JustificationSet,
    OpenSet,
    Proposal,
)
from protocol.dkg.results import ParticipantResult
from protocol.encoding import g1_to_bytes, g2_to_bytes
from protocol.errors import DecodeError
from protocol.rpc import ErrorCode, Method, RpcError

log = logging.getLogger("tkms.node.dkg")

TICK_S = 0.5  # how often phase deadlines are checked
READY_TIMEOUT_S = 30.0  # a request waits at most this long for start-up recovery
MIN_NODE_PHASE_S = 60.0  # the node waits at least this long per phase ...
PHASE_FACTOR = 2.0  # ... and at least twice the coordinator's phase deadline
ENTROPY_DRAWS = 256  # Rng calls reserved before a step (a bundle needs ~t + n + 4)

_STEPS: dict[str, type[OpenSet | BundleSet | EchoSet | ComplaintSet | JustificationSet]] = {
    node_api.DKG_DEAL.name: OpenSet,
    node_api.DKG_ECHO.name: BundleSet,
    node_api.DKG_COMPLAIN.name: EchoSet,
    node_api.DKG_JUSTIFY.name: ComplaintSet,
    node_api.DKG_FINISH.name: JustificationSet,
}


@dataclass
class Live:
    """A ceremony before FINISH (memory only)."""

    participant: Participant
    proposal: Proposal
    coordinator: str
    instance: bytes
    changed: float  # wall clock of the last step


def _refuse(code: int, message: str) -> RpcError:
    return RpcError(code, message[:400])


def _decode_body(data: bytes) -> TranscriptBody:
    return TranscriptBody.from_wire(
        decode_canonical(data, field="transcript_body", max_len=node_api.MAX_DKG_MESSAGE),
        "transcript_body",
    )


class DkgNode:
    """Every ceremony of one node (see the module header)."""

    def __init__(self, ctx: NodeContext, *, clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.disk = DkgDisk(ctx.config.data_dir)
        self.live: dict[str, Live] = {}
        self.pending: dict[str, PendingRecord] = {}
        self.used: set[bytes] = set()
        self.ready = trio.Event()
        self._locks: dict[str, trio.Lock] = {}
        self._clock = clock

    def __repr__(self) -> str:
        return f"DkgNode(live={sorted(self.live)}, pending={sorted(self.pending)})"

    @property
    def index(self) -> int:
        return self.ctx.entry.index

    def _lock(self, key_id: str) -> trio.Lock:
        return self._locks.setdefault(key_id, trio.Lock())

    @contextlib.asynccontextmanager
    async def _exclusive(self, key_id: str) -> AsyncIterator[None]:
        """One call at a time per ceremony, shielded: a call that started changing a
        ceremony finishes (seals, records, activates, destroys) even when the
        coordinator's connection, and with it the request, goes away. The work is
        bounded (HSM calls have their own timeouts)."""
        with trio.CancelScope(shield=True):
            async with self._lock(key_id):
                yield

    async def _wait_ready(self) -> None:
        with trio.move_on_after(READY_TIMEOUT_S):
            await self.ready.wait()
            return
        raise RpcError(ErrorCode.UNAVAILABLE, "DKG state is still being recovered")

    async def _audit(self, event: str, key_id: str, outcome: str, **extra: Any) -> None:
        await self.ctx.audit.append(event=event, outcome=outcome, key_id=key_id, extra=extra)

    # ------------------------------------------------------------------ start-up

    async def recover(self) -> None:
        """Finish what a crash interrupted (see the module header), then serve."""
        await trio.to_thread.run_sync(self.disk.prepare)
        self.used = await trio.to_thread.run_sync(self.disk.used_ceremonies)
        records = await trio.to_thread.run_sync(self.disk.records)
        for record in records:
            if record.state == "committing" and record.commit is not None:
                cert = CommitCertificate.decode(record.commit)
                await self._activate(record, cert)
            elif record.state == "aborting":
                await self._destroy(record, "an abort interrupted by a restart")
            else:
                self.pending[record.key_id] = record
                log.info("ceremony for %s waits for its commit or abort", record.key_id)
        for meta in await self.ctx.store.list_keys():
            if meta.status is KeyStatus.PENDING and meta.key_id not in self.pending:
                log.warning("pending key %s has no ceremony record: destroying it", meta.key_id)
                await self.ctx.store.destroy(meta.key_id)
                await self._audit("dkg.abort", meta.key_id, "destroyed", reason="orphan pending")
        self.ready.set()

    async def run(self) -> None:
        """Background task: recovery, then the phase deadlines of live ceremonies."""
        await self.recover()
        while True:
            await trio.sleep(TICK_S)
            now = trio.current_time()
            for key_id in sorted(self.live):
                live = self.live.get(key_id)
                if live is None or self._lock(key_id).locked():
                    continue
                deadline = live.participant.deadline
                if deadline is not None and now >= deadline:
                    async with self._exclusive(key_id):
                        if self.live.get(key_id) is not live:
                            continue
                        result = live.participant.tick(now=now)
                        if isinstance(result, Aborted):
                            await self._drop(key_id, result.reason)

    # ------------------------------------------------------------------ helpers

    def make_participant(self, config: ParticipantConfig) -> Participant:
        """A new participant (tests override this to play a byzantine node)."""
        return Participant(config, rng=self.ctx.entropy)

    async def _blocked_key_ids(self) -> frozenset[str]:
        """Key ids a new ceremony may not use: any key the store would refuse to
        overwrite (all but those whose every earlier version was pending)."""
        out = set()
        for meta in await self.ctx.store.list_keys():
            if meta.status is not KeyStatus.DESTROYED:
                out.add(meta.key_id)
                continue
            history = await self.ctx.store.history(meta.key_id)
            if any(v.metadata.status is not KeyStatus.PENDING for v in history[:-1]):
                out.add(meta.key_id)
        return frozenset(out)

    async def _drop(self, key_id: str, reason: str) -> None:
        live = self.live.pop(key_id, None)
        if live is not None:
            log.info("ceremony for %s aborted: %s", key_id, reason)
            await self._audit("dkg.abort", key_id, "aborted", reason=reason[:200])

    def _live(self, key_id: str) -> Live:
        live = self.live.get(key_id)
        if live is not None:
            return live
        if key_id in self.pending:
            raise _refuse(node_api.DKG_BUSY, f"the ceremony for {key_id} is in FINISH")
        raise _refuse(node_api.DKG_UNKNOWN, f"no ceremony for key {key_id} on this node")

    async def _answer(self, key_id: str, live: Live, result: ParticipantResult) -> dict[str, Any]:
        phase = live.participant.phase
        if isinstance(result, Send):
            return node_api.DkgStep(phase.value, result.encode()).to_wire()
        if isinstance(result, NeedMore):
            return node_api.DkgStep(phase.value, None).to_wire()
        if isinstance(result, SealPending):
            return await self._seal(key_id, live, result)
        if isinstance(result, Aborted):
            await self._drop(key_id, result.reason)
            raise _refuse(node_api.DKG_ABORTED, f"ceremony aborted: {result.reason}")
        raise _refuse(node_api.DKG_ABORTED, f"unexpected step result {type(result).__name__}")

    async def _seal(self, key_id: str, live: Live, result: SealPending) -> dict[str, Any]:
        """Seal the share as pending and record the ceremony, then cast the vote."""
        info, p = result.pending.info, live.proposal
        holders = tuple(sorted(info.public_shares))
        meta = KeyMetadata(
            key_id=key_id,
            t=info.threshold,
            n=len(holders),
            epoch=info.epoch,
            holders=holders,
            pk_g1=g1_to_bytes(info.pubkey_g1),
            pk_g2=g2_to_bytes(info.pubkey_g2),
            public_shares={j: g1_to_bytes(pt) for j, pt in info.public_shares.items()},
            transcript_hash=info.transcript_hash,
            status=KeyStatus.PENDING,
        )
        record = PendingRecord(
            key_id=key_id,
            epoch=info.epoch,
            ceremony=info.ceremony,
            participants=p.participants,
            coordinator=live.coordinator,
            instance=live.instance,
            transcript_body=result.pending.transcript_body,
            since=self._clock(),
        )
        self.live.pop(key_id, None)  # FINISH: the participant has nothing left to do
        try:
            await self.ctx.store.put_share(meta, result.pending.share)
        except Exception as exc:
            log.error("sealing the share of %s failed: %s", key_id, exc)
            await self._audit("dkg.abort", key_id, "failed", reason="sealing failed")
            raise _refuse(node_api.DKG_ABORTED, "the share could not be sealed") from None
        try:
            await trio.to_thread.run_sync(self.disk.write, record)
        except Exception as exc:  # no record, no vote: shred the share at once
            log.error("recording the ceremony of %s failed: %s", key_id, exc)
            await self.ctx.store.destroy(key_id)
            await self._audit("dkg.abort", key_id, "failed", reason="sealing failed")
            raise _refuse(node_api.DKG_ABORTED, "the share could not be sealed") from None
        self.pending[key_id] = record
        await self._audit(
            "dkg.pending", key_id, "ok", epoch=info.epoch, ceremony=info.ceremony.hex()
        )
        return node_api.DkgStep(Phase.FINISH.value, result.encode()).to_wire()

    async def _activate(self, record: PendingRecord, cert: CommitCertificate) -> None:
        """Commit: persist the certificate, activate, store the transcript."""
        record = record.with_state("committing", commit=cert.encode(), at=self._clock())
        await trio.to_thread.run_sync(self.disk.write, record)
        self.pending[record.key_id] = record
        store, key_id = self.ctx.store, record.key_id
        if (await store.get_metadata(key_id)).status is KeyStatus.PENDING:
            await store.activate(key_id, holders=cert.holders)
        transcript = Transcript(body=_decode_body(record.transcript_body), commit=cert).encode()
        try:
            await store.save_transcript(key_id, record.epoch, transcript)
        except FileExistsError:
            if await store.load_transcript(key_id, record.epoch) != transcript:
                log.error("a different transcript of %s is already stored", key_id)
        await trio.to_thread.run_sync(self.disk.remove, record)
        self.pending.pop(key_id, None)
        await self._audit(
            "dkg.commit", key_id, "ok", epoch=record.epoch, holders=list(cert.holders)
        )
        log.info("key %s epoch %d active (holders %s)", key_id, record.epoch, cert.holders)

    async def _destroy(self, record: PendingRecord, reason: str) -> None:
        """Abort in FINISH: destroy the pending share and its token key."""
        record = record.with_state("aborting", at=self._clock())
        await trio.to_thread.run_sync(self.disk.write, record)
        self.pending[record.key_id] = record
        try:
            meta = await self.ctx.store.get_metadata(record.key_id)
        except UnknownKey:
            meta = None
        if meta is not None and meta.status is KeyStatus.PENDING:
            await self.ctx.store.destroy(record.key_id)
        await trio.to_thread.run_sync(self.disk.remove, record)
        self.pending.pop(record.key_id, None)
        await self._audit("dkg.abort", record.key_id, "destroyed", reason=reason[:200])
        log.info("ceremony for %s aborted, pending share destroyed: %s", record.key_id, reason)

    # ------------------------------------------------------------------ handlers

    async def open(self, params: dict[str, Any]) -> dict[str, Any]:
        await self._wait_ready()
        key_id = params["key_id"]
        proposal = Proposal.decode(params["message"])
        if proposal.key_id != key_id:
            raise DecodeError("message.key_id", "differs from the call's key_id")
        async with self._exclusive(key_id):
            if key_id in self.live or key_id in self.pending:
                raise _refuse(node_api.DKG_BUSY, f"a ceremony for {key_id} is in progress")
            blocked = await self._blocked_key_ids()
            if key_id in blocked:
                status = (await self.ctx.store.get_metadata(key_id)).status
                if status is KeyStatus.PENDING:  # an earlier ceremony awaits its end
                    raise _refuse(node_api.DKG_BUSY, f"key {key_id} is pending on this node")
                raise _refuse(node_api.DKG_KEY_EXISTS, f"key {key_id} exists on this node")
            coordinator_s = params["phase_timeout_ms"] / 1000
            config = ParticipantConfig(
                index=self.index,
                signing_key=self.ctx.identity.signing_key,
                manifest=self.ctx.manifest,
                active_key_ids=blocked,
                used_ceremony_ids=frozenset(self.used),
                phase_timeout_s=max(MIN_NODE_PHASE_S, PHASE_FACTOR * coordinator_s),
            )
            participant = self.make_participant(config)
            await self.ctx.entropy.reserve(ENTROPY_DRAWS)
            result = participant.start(proposal, now=trio.current_time())
            live = Live(
                participant, proposal, params["coordinator"], params["instance"], self._clock()
            )
            self.live[key_id] = live
            await self._audit(
                "dkg.open",
                key_id,
                "ok",
                threshold=proposal.threshold,
                participants=list(proposal.participants),
                coordinator=params["coordinator"],
            )
            return await self._answer(key_id, live, result)

    async def step(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """deal / echo / complain / justify / finish: one relayed set in, one answer out."""
        await self._wait_ready()
        key_id = params["key_id"]
        message = _STEPS[method].decode(params["message"])
        async with self._exclusive(key_id):
            live = self._live(key_id)
            await self.ctx.entropy.reserve(ENTROPY_DRAWS)
            handle = functools.partial(live.participant.handle, message, now=trio.current_time())
            try:
                result = await trio.to_thread.run_sync(handle)
            except RelayFault as exc:
                live.participant.abort(str(exc))
                await self._drop(key_id, f"relay fault: {exc}")
                raise _refuse(node_api.DKG_RELAY_FAULT, f"aborted: {exc}") from None
            live.changed = self._clock()
            ceremony = live.participant.state.ceremony
            if ceremony and ceremony not in self.used:
                await trio.to_thread.run_sync(self.disk.add_used, ceremony)
                self.used.add(ceremony)
            return await self._answer(key_id, live, result)

    async def commit(self, params: dict[str, Any]) -> dict[str, Any]:
        await self._wait_ready()
        key_id = params["key_id"]
        cert = CommitCertificate.decode(params["message"])
        async with self._exclusive(key_id):
            record = self.pending.get(key_id)
            if record is None:
                if await self._committed_with(key_id, cert):
                    return node_api.DkgStep(Phase.DONE.value, None).to_wire()
                if key_id in self.live:
                    raise _refuse(node_api.DKG_BAD_COMMIT, "this node has not signed yet")
                raise _refuse(node_api.DKG_UNKNOWN, f"no pending ceremony for key {key_id}")
            if record.state == "committing" and record.commit != cert.encode():
                raise _refuse(node_api.DKG_BAD_COMMIT, "another certificate is being applied")
            problem = commit_problem(cert, _decode_body(record.transcript_body), self.ctx.manifest)
            if problem is None and self.index not in cert.holders:
                problem = "the commit certificate does not name this node"
            if problem is not None:
                await self._audit("dkg.commit", key_id, "refused", reason=problem[:200])
                raise _refuse(node_api.DKG_BAD_COMMIT, problem)
            await self._activate(record, cert)
            return node_api.DkgStep(Phase.DONE.value, None).to_wire()

    async def _committed_with(self, key_id: str, cert: CommitCertificate) -> bool:
        """True if ``key_id`` was already committed with exactly ``cert`` (a repeat)."""
        try:
            meta = await self.ctx.store.get_metadata(key_id)
            data = await self.ctx.store.load_transcript(key_id, meta.epoch)
        except UnknownKey:
            return False
        return Transcript.decode(data).commit == cert

    async def abort(self, params: dict[str, Any]) -> dict[str, Any]:
        await self._wait_ready()
        key_id = params["key_id"]
        reason = Abort.decode(params["message"]).reason
        only: bytes | None = params.get("ceremony")
        async with self._exclusive(key_id):
            live = self.live.get(key_id)
            if live is not None:
                if only is not None and live.participant.state.ceremony != only:
                    raise _refuse(node_api.DKG_UNKNOWN, "no ceremony with that id here")
                live.participant.handle(Abort(reason=reason), now=trio.current_time())
                await self._drop(key_id, f"the coordinator aborted: {reason}")
                return node_api.DkgStep(Phase.ABORTED.value, None).to_wire()
            record = self.pending.get(key_id)
            if record is None:
                return node_api.DkgStep(Phase.ABORTED.value, None).to_wire()
            if only is not None and record.ceremony != only:
                raise _refuse(node_api.DKG_UNKNOWN, "no ceremony with that id here")
            if record.commit is not None:
                raise _refuse(node_api.DKG_COMMITTED, "a commit certificate is held: no abort")
            await self._destroy(record, f"the coordinator aborted: {reason}")
            return node_api.DkgStep(Phase.ABORTED.value, None).to_wire()

    async def state(self, params: dict[str, Any]) -> dict[str, Any]:
        await self._wait_ready()
        only: str | None = params.get("key_id")
        now_wall = self._clock()
        out: list[node_api.CeremonyState] = []
        for key_id, live in sorted(self.live.items()):
            if only is None or only == key_id:
                state = live.participant.state
                out.append(
                    node_api.CeremonyState(
                        key_id=key_id,
                        epoch=live.proposal.epoch,
                        ceremony=state.ceremony,
                        phase=state.phase.value,
                        participants=live.proposal.participants,
                        coordinator=live.coordinator,
                        instance=live.instance,
                        idle_ms=_ms(now_wall - live.changed),
                        commit=None,
                    )
                )
        for key_id, record in sorted(self.pending.items()):
            if only is None or only == key_id:
                out.append(
                    node_api.CeremonyState(
                        key_id=key_id,
                        epoch=record.epoch,
                        ceremony=record.ceremony,
                        phase=Phase.FINISH.value,
                        participants=record.participants,
                        coordinator=record.coordinator,
                        instance=record.instance,
                        idle_ms=_ms(now_wall - record.since),
                        commit=record.commit,
                    )
                )
        if only is not None and only not in self.live and only not in self.pending:
            done = await self._done_state(only)
            if done is not None:
                out.append(done)
        return {"ceremonies": [c.to_wire() for c in out]}

    async def _done_state(self, key_id: str) -> node_api.CeremonyState | None:
        """The committed ceremony of ``key_id`` (from its stored transcript), if any."""
        try:
            meta = await self.ctx.store.get_metadata(key_id)
            data = await self.ctx.store.load_transcript(key_id, meta.epoch)
        except UnknownKey:
            return None
        transcript = Transcript.decode(data)
        body = transcript.body
        return node_api.CeremonyState(
            key_id=key_id,
            epoch=body.proposal.epoch,
            ceremony=body.ceremony,
            phase=Phase.DONE.value,
            participants=body.proposal.participants,
            coordinator=None,
            instance=None,
            idle_ms=0,
            commit=transcript.commit.encode(),
        )

    async def transcript(self, params: dict[str, Any]) -> dict[str, Any]:
        data = await self.ctx.store.load_transcript(params["key_id"], params["epoch"])
        return {"transcript": data}


def _ms(seconds: float) -> int:
    return max(0, int(seconds * 1000))


def add_handlers(registry: HandlerRegistry, node: DkgNode) -> None:
    """Serve ``node``'s ``dkg.*`` methods and run its timer (also used by tests)."""
    registry.background(node.run)
    registry.add(node_api.DKG_OPEN, node.open)
    for name in _STEPS:
        method: Method = node_api.METHODS[name]
        registry.add(method, functools.partial(node.step, name))
    registry.add(node_api.DKG_COMMIT, node.commit)
    registry.add(node_api.DKG_ABORT, node.abort)
    registry.add(node_api.DKG_STATE, node.state)
    registry.add(node_api.DKG_TRANSCRIPT, node.transcript)


def register(registry: HandlerRegistry, ctx: NodeContext) -> None:
    add_handlers(registry, DkgNode(ctx))

"""The coordinator's DKG driver: runs ``protocol.dkg.Driver`` over the node sessions
(DESIGN.md §DKG; the coordinator relays and holds no secret).

``DkgCoordinator.run(key_id, threshold, min_holders)``:

1. Participants are the manifest's nodes that are up; ``min_holders`` (default:
   every node of the manifest) must be up, else the ceremony does not start and the
   error names the nodes that are down.
2. The driver's phases (open, deal, echo, complain, [justify,] sign) each have a
   deadline (``DkgConfig.phase_timeout_s``, the coordinator's
   ``dkg_phase_timeout_s``). Each node gets the relayed messages in order, one call
   at a time, through its own worker; a node that fails a call (down, timeout, an
   error, an invalid message) or misses the deadline is dropped and named with the
   phase. Fewer than ``min_holders`` left: abort, saying exactly who missed what.
3. Two-phase commit: in SIGN every node seals its share as pending and signs the
   transcript hash; holders are the nodes whose signature verifies. The commit
   certificate (every holder's signature over the same hash) goes to each holder,
   which verifies it before activating; every other participant gets an abort
   (its pending share is destroyed). A holder that misses the commit activates when
   it reconnects (``DkgRecovery`` rolls forward).

Progress (``CeremonyProgress``: phase changes, answers, dropped nodes, the end) is
kept per key id for ``GET /v1/dkg/{key_id}`` and the CLI. Roll-forward after a
restart and the transcript re-verification live in ``coordinator.dkg_recovery``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from coordinator.backend import (
    CeremonyAborted,
    CeremonyInProgress,
    DkgEvent,
    DkgProgress,
    InvalidRequest,
    KeyExists,
    is_valid_key_id,
)
from coordinator.sessions import SessionError
from protocol import node_api
from protocol.dkg import (
    Committed,
    Deliver,
    DkgResult,
    DkgStateError,
    Driver,
    DriverAborted,
    DriverConfig,
    DriverPhase,
    NodeDropped,
    PhaseStarted,
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
    Relayed,
)
from protocol.errors import TkmsError
from protocol.manifest import Manifest
from protocol.rpc import Method, RpcError

log = logging.getLogger("tkms.coordinator.dkg")

EPOCH = 1  # a new key's first epoch (resharing would bump it)
MAX_EVENTS = 500  # progress events kept per ceremony

METHOD_FOR: dict[type, Method] = {
    Proposal: node_api.DKG_OPEN,
    OpenSet: node_api.DKG_DEAL,
    BundleSet: node_api.DKG_ECHO,
    EchoSet: node_api.DKG_COMPLAIN,
    ComplaintSet: node_api.DKG_JUSTIFY,
    JustificationSet: node_api.DKG_FINISH,
    CommitCertificate: node_api.DKG_COMMIT,
    Abort: node_api.DKG_ABORT,
}


class NodeCaller(Protocol):
    """What the driver needs of ``coordinator.sessions.SessionManager``."""

    async def call(
        self,
        node_name: str,
        method: Method,
        params: dict[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any: ...

    def up_nodes(self) -> frozenset[str]: ...


@dataclass(frozen=True, slots=True)
class DkgConfig:
    """Timing of the coordinator's ceremonies (seconds)."""

    phase_timeout_s: float = 30.0  # per phase (config ``dkg_phase_timeout_s``)
    commit_timeout_s: float = 15.0  # per commit / abort call at the end
    stale_after_s: float = 120.0  # another coordinator's ceremony idle this long is orphaned
    epoch: int = EPOCH
    keep: int = 64  # ceremonies whose progress is kept

    def __post_init__(self) -> None:
        if min(self.phase_timeout_s, self.commit_timeout_s, self.stale_after_s) <= 0:
            raise ValueError("DkgConfig times must be positive")
        if not 0 < self.phase_timeout_s <= node_api.MAX_PHASE_TIMEOUT_MS / 1000:
            raise ValueError("phase_timeout_s must be at most 600 s")


@dataclass
class CeremonyProgress:
    """What an operator watching a ceremony sees (``GET /v1/dkg/{key_id}``)."""

    key_id: str
    started: float = field(default_factory=time.monotonic)
    state: str = "running"  # running | committed | aborted
    phase: str = "open"
    events: list[DkgEvent] = field(default_factory=list)
    reason: str = ""
    holders: tuple[str, ...] = ()

    def add(self, message: str, phase: str | None = None) -> None:
        if phase is not None:
            self.phase = phase
        if len(self.events) < MAX_EVENTS:
            event = DkgEvent(time.monotonic() - self.started, self.phase, message)
            self.events.append(event)
        log.info("dkg %s [%s] %s", self.key_id, self.phase, message)

    def snapshot(self) -> DkgProgress:
        return DkgProgress(
            key_id=self.key_id,
            state=self.state,
            phase=self.phase,
            reason=self.reason,
            holders=self.holders,
            events=tuple(self.events),
        )


@dataclass(frozen=True, slots=True)
class _Answer:
    node: int
    phase: DriverPhase  # the driver phase the message was sent in
    step: node_api.DkgStep | None
    error: str = ""
    code: int | None = None


class CeremonyRun:
    """One ceremony: the driver, one worker per node, the event loop."""

    def __init__(
        self,
        manifest: Manifest,
        sessions: NodeCaller,
        driver: Driver,
        progress: CeremonyProgress,
        *,
        config: DkgConfig,
        coordinator: str,
        instance: bytes,
    ) -> None:
        self.manifest = manifest
        self.sessions = sessions
        self.driver = driver
        self.progress = progress
        self.config = config
        self.coordinator = coordinator
        self.instance = instance
        self.key_id = driver.proposal.key_id
        self.names = {n.index: n.name for n in manifest.nodes}
        self.refusals: dict[int, int] = {}  # node -> application error code in OPEN
        self.acks: dict[int, str] = {}  # node -> phase after commit / abort
        self._answers, self._inbox = trio.open_memory_channel[_Answer](math.inf)
        self._queues: dict[int, trio.MemorySendChannel[tuple[Relayed, float, DriverPhase]]] = {}
        self._answered = 0

    def _name(self, j: int) -> str:
        return self.names.get(j, f"#{j}")

    async def run(self) -> DkgResult:
        """Drive to the end; ``CeremonyAborted`` (or ``KeyExists``) if it aborts."""
        final: Committed | DriverAborted | None = None
        async with trio.open_nursery() as nursery:
            for j in self.driver.proposal.participants:
                send, receive = trio.open_memory_channel[tuple[Relayed, float, DriverPhase]](
                    math.inf
                )
                self._queues[j] = send
                nursery.start_soon(self._worker, j, receive)
            final = self._handle(self.driver.start())
            while final is None:
                answer: _Answer | None = None
                with trio.move_on_at(self.driver.deadline):
                    answer = await self._inbox.receive()
                now = trio.current_time()
                if answer is None:
                    final = self._handle(self.driver.tick(now=now))
                else:
                    final = self._handle(self._feed(answer, now))
            for queue in self._queues.values():
                queue.close()  # workers deliver what is queued (commit / abort), then end
        return self._conclude(final)

    # -- events -------------------------------------------------------------------------

    def _handle(self, outputs: Sequence[object]) -> Committed | DriverAborted | None:
        final: Committed | DriverAborted | None = None
        for out in outputs:
            if isinstance(out, Deliver):
                terminal = isinstance(out.message, CommitCertificate | Abort)
                deadline = (
                    trio.current_time() + self.config.commit_timeout_s
                    if terminal
                    else self.driver.deadline
                )
                self._queues[out.to].send_nowait((out.message, deadline, self.driver.phase))
            elif isinstance(out, PhaseStarted):
                self._answered = 0
                seconds = max(0.0, out.deadline - trio.current_time())
                self.progress.add(
                    f"collecting from {len(self.driver.live)} nodes (deadline {seconds:.0f} s)",
                    out.phase.value,
                )
            elif isinstance(out, NodeDropped):
                self.progress.add(
                    f"{self._name(out.node)} dropped in {out.phase.value}: {out.reason}"
                )
            elif isinstance(out, Committed | DriverAborted):
                final = out
        return final

    def _feed(self, answer: _Answer, now: float) -> Sequence[object]:
        phase, j = self.driver.phase, answer.node
        if phase in (DriverPhase.COMMITTED, DriverPhase.ABORTED):
            return []
        if answer.step is None:
            if answer.code is not None and answer.phase is DriverPhase.OPEN:
                self.refusals[j] = answer.code
            if j not in self.driver.live:
                return []
            return self.driver.node_failed(j, answer.error, now=now)
        if answer.step.message is None:
            return []  # e.g. a node with nothing to justify
        live = len(self.driver.live)
        try:
            outputs = self.driver.receive(j, answer.step.message, now=now)
        except DkgStateError as exc:
            log.info("dkg %s: late or out-of-phase answer from node %d: %s", self.key_id, j, exc)
            return []
        except TkmsError as exc:  # DecodeError, NodeMessageRejected
            if j not in self.driver.live:
                return []
            return self.driver.node_failed(j, f"invalid message: {exc}", now=now)
        self._answered += 1
        if phase is DriverPhase.JUSTIFY:
            self.progress.add(f"{self._name(j)} answered the complaints against it")
        else:
            self.progress.add(f"{self._name(j)} answered ({self._answered}/{live})")
        return outputs

    async def _worker(
        self, j: int, queue: trio.MemoryReceiveChannel[tuple[Relayed, float, DriverPhase]]
    ) -> None:
        """Deliver node ``j``'s messages in order, one call at a time."""
        name = self._name(j)
        async for message, deadline, phase in queue:
            method = METHOD_FOR[type(message)]
            params: dict[str, Any] = {"key_id": self.key_id, "message": message.encode()}
            if isinstance(message, Proposal):
                params.update(
                    coordinator=self.coordinator,
                    instance=self.instance,
                    phase_timeout_ms=int(self.config.phase_timeout_s * 1000),
                )
            if isinstance(message, Abort) and self.driver.ceremony:
                params["ceremony"] = self.driver.ceremony
            timeout = max(0.05, deadline - trio.current_time())
            try:
                raw = await self.sessions.call(name, method, params, timeout=timeout)
                step = node_api.DkgStep.from_wire(raw)
            except RpcError as exc:
                code = exc.code if exc.code >= 100 else None
                answer = _Answer(j, phase, None, f"{method.name}: {exc.message}", code)
            except (SessionError, TkmsError) as exc:
                answer = _Answer(j, phase, None, f"{method.name}: {exc}")
            else:
                answer = _Answer(j, phase, step)
            if isinstance(message, CommitCertificate | Abort):
                self.acks[j] = answer.step.phase if answer.step else f"failed: {answer.error}"
            else:
                self._answers.send_nowait(answer)

    # -- the end ------------------------------------------------------------------------

    def _conclude(self, final: Committed | DriverAborted | None) -> DkgResult:
        if isinstance(final, Committed):
            result = final.result
            holders = [self._name(j) for j in result.holders]
            self.progress.holders = tuple(holders)
            missing = [self._name(j) for j in result.holders if self.acks.get(j) != "done"]
            if missing:
                self.progress.add(
                    f"commit not acknowledged by {', '.join(missing)}: "
                    "they activate when they reconnect (roll-forward)"
                )
            self.progress.state = "committed"
            self.progress.add(f"committed: holders {', '.join(holders)}", "committed")
            return result
        reason = final.reason if final is not None else "the driver stopped"
        missed = final.missed if final is not None else {}
        self.progress.state = "aborted"
        self.progress.reason = reason
        self.progress.add(f"aborted: {reason}", "aborted")
        names = [self._name(j) for j in sorted(missed)]
        if node_api.DKG_KEY_EXISTS in self.refusals.values():
            raise KeyExists(self.key_id)
        if node_api.DKG_BUSY in self.refusals.values():
            raise CeremonyInProgress(self.key_id)  # an earlier ceremony is not over there
        raise CeremonyAborted(self.key_id, reason, names)


def plan_participants(
    manifest: Manifest,
    up: frozenset[str],
    key_id: str,
    threshold: int,
    min_holders: int | None,
) -> tuple[tuple[int, ...], int]:
    """(participants, min holders) for a new ceremony, or the typed refusal."""
    if not is_valid_key_id(key_id):
        raise InvalidRequest("keyId", "1-64 of [A-Za-z0-9._-], not starting with . - _")
    n = len(manifest.nodes)
    if not 2 <= threshold <= n:
        raise InvalidRequest("threshold", f"must be in [2, {n}] (n = {n} nodes)")
    holders = n if min_holders is None else min_holders
    if not threshold <= holders <= n:
        raise InvalidRequest("minHolders", f"must be in [threshold = {threshold}, n = {n}]")
    participants = tuple(sorted(e.index for e in manifest.nodes if e.name in up))
    down = sorted(e.name for e in manifest.nodes if e.name not in up)
    if len(participants) < holders:
        raise CeremonyAborted(
            key_id,
            f"only {len(participants)} of {n} nodes are up, {holders} holders are required; "
            f"down: {', '.join(down)}",
            down,
        )
    return participants, holders


class DkgCoordinator:
    """Every ceremony this coordinator runs (one per key id at a time)."""

    def __init__(
        self,
        manifest: Manifest,
        sessions: NodeCaller,
        *,
        name: str,
        instance: bytes,
        config: DkgConfig | None = None,
    ) -> None:
        self.manifest = manifest
        self.sessions = sessions
        self.name = name
        self.instance = instance
        self.config = config or DkgConfig()
        self.progress: dict[str, CeremonyProgress] = {}
        self.busy: set[str] = set()  # key ids being run or resolved here

    def claim(self, key_id: str) -> bool:
        """Reserve ``key_id`` for a ceremony or a recovery (False: already taken)."""
        if key_id in self.busy:
            return False
        self.busy.add(key_id)
        return True

    def release(self, key_id: str) -> None:
        self.busy.discard(key_id)

    def _new_progress(self, key_id: str) -> CeremonyProgress:
        self.progress.pop(key_id, None)
        while len(self.progress) >= self.config.keep:
            del self.progress[next(iter(self.progress))]
        progress = CeremonyProgress(key_id)
        self.progress[key_id] = progress
        return progress

    async def run(self, key_id: str, threshold: int, min_holders: int | None) -> DkgResult:
        """Run one ceremony; the caller has ``claim``-ed ``key_id``.

        Raises:
            InvalidRequest: bad parameters; CeremonyAborted: it aborted (reason and
            the nodes that missed a phase); KeyExists: a node holds the key id.
        """
        participants, holders = plan_participants(
            self.manifest, self.sessions.up_nodes(), key_id, threshold, min_holders
        )
        progress = self._new_progress(key_id)
        driver = Driver(
            DriverConfig(
                manifest=self.manifest,
                key_id=key_id,
                threshold=threshold,
                participants=participants,
                epoch=self.config.epoch,
                min_holders=holders,
                phase_timeout_s=self.config.phase_timeout_s,
            ),
            now=trio.current_time(),
        )
        progress.add(
            f"proposal: t = {threshold}, {len(participants)} participants, "
            f"{holders} holders needed to commit"
        )
        run = CeremonyRun(
            self.manifest,
            self.sessions,
            driver,
            progress,
            config=self.config,
            coordinator=self.name,
            instance=self.instance,
        )
        try:
            return await run.run()
        except BaseException as exc:
            if progress.state == "running":  # cancelled or a bug: tell the watcher
                progress.state = "aborted"
                progress.reason = f"the coordinator stopped driving it ({type(exc).__name__})"
            raise

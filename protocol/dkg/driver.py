"""The coordinator side of the DKG: a relay that collects, checks and forwards
(DESIGN.md §DKG, "the coordinator is untrusted: it relays, and the most it can do is
make a ceremony abort").

The driver holds no secret and decides nothing about keys. Per phase it collects one
message type from the nodes still taking part (``receive(sender, bytes, now=...)``),
checking only what is cheap and public: the framing, that the sender is the
authenticated peer, the Ed25519 signature, the ceremony id, and for an echo that it
names exactly the bundles this driver delivered to that node. When every expected
node has answered, or at the phase deadline (``tick(now=...)``), it forwards the set
to every node and starts the next phase. Nodes that missed a phase, or that the shell
reports as failed (``node_failed``), are dropped and named with the phase; the
ceremony aborts as soon as fewer than ``min_holders`` nodes remain (or, in OPEN, as
soon as any is missing: the ceremony id needs every nonce).

A justification round happens iff some dealer with a bundle has between 1 and t-1
complaints; only those dealers are waited for. At the end, holders are the nodes
whose transcript signature verifies over the hash of the body the driver relayed
plus the outcome they claim. If holders disagree on the outcome, the driver computes
it from the public data (the pairing checks are paid only in that case) and keeps
the holders that got it right. It commits when at least ``min_holders`` remain:
``Committed``, the ``CommitCertificate`` delivered to the holders, and an ``Abort``
to every other participant (which destroys its pending share, if it has one).

``_route`` is the one place a relayed message leaves the driver; tests override it
to play a malicious coordinator. Out-of-phase input raises ``DkgStateError``, invalid
input ``DecodeError``/``NodeMessageRejected``; in both cases nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from protocol.dkg.crypto import tagged_hash
from protocol.dkg.dealing import check_bundles
from protocol.dkg.errors import (
    Culprit,
    DkgConfigError,
    DkgInternalError,
    DkgStateError,
    NodeMessageRejected,
)
from protocol.dkg.messages import (
    Complaints,
    DealBundle,
    Echo,
    Justification,
    NodeMessage,
    Open,
    Outcome,
    TranscriptSignature,
    decode_node_message,
)
from protocol.dkg.outcome import compute_outcome, judge_justifications, tally_complaints
from protocol.dkg.phases import DEADLINE, DRIVER_TRANSITIONS, NODE_FAILED, DriverPhase
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
from protocol.dkg.results import (
    Committed,
    Deliver,
    DkgResult,
    DriverAborted,
    DriverOutput,
    NodeDropped,
    PhaseStarted,
    PublicKeyInfo,
)
from protocol.dkg.transcript import (
    Transcript,
    TranscriptBody,
    ceremony_id,
    distinct,
    echo_of,
    message_problem,
    open_problem,
    proposal_problem,
)
from protocol.encoding import g1_from_bytes, g2_from_bytes
from protocol.errors import DecodeError
from protocol.manifest import Manifest

M = TypeVar("M", Open, Echo, Complaints, TranscriptSignature)
N = TypeVar("N", DealBundle, Justification)

DEFAULT_DRIVER_PHASE_TIMEOUT_S = 30.0  # per phase; below the nodes' own 60 s

_COLLECTS: dict[DriverPhase, str] = {
    DriverPhase.OPEN: Open.KIND,
    DriverPhase.DEAL: DealBundle.KIND,
    DriverPhase.ECHO: Echo.KIND,
    DriverPhase.COMPLAIN: Complaints.KIND,
    DriverPhase.JUSTIFY: Justification.KIND,
    DriverPhase.SIGN: TranscriptSignature.KIND,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverConfig:
    """One ceremony as the operator asked for it (``POST /v1/dkg``).

    ``min_holders`` defaults to every participant: the safest choice, since it also
    means the coordinator cannot pick which dealers end up in QUAL by dropping nodes
    (see docs/threat-model.md §DKG).
    """

    manifest: Manifest
    key_id: str
    threshold: int
    participants: tuple[int, ...]
    epoch: int = 0
    min_holders: int | None = None
    phase_timeout_s: float = DEFAULT_DRIVER_PHASE_TIMEOUT_S

    def proposal(self) -> Proposal:
        """The proposal sent to every node.

        Raises:
            DkgConfigError: out of range, or not valid for this manifest.
        """
        n = len(self.participants)
        try:
            proposal = Proposal(
                cluster=self.manifest.cluster_id,
                key_id=self.key_id,
                epoch=self.epoch,
                threshold=self.threshold,
                min_holders=n if self.min_holders is None else self.min_holders,
                participants=tuple(self.participants),
            ).validate()
        except DecodeError as exc:
            raise DkgConfigError(str(exc)) from None
        problem = proposal_problem(proposal, self.manifest)
        if problem is not None:
            raise DkgConfigError(problem)
        if not self.phase_timeout_s > 0:
            raise DkgConfigError("phase_timeout_s must be positive")
        return proposal


class Driver:
    """The coordinator's relay state machine for one ceremony."""

    def __init__(self, config: DriverConfig, *, now: float) -> None:
        self._config = config
        self._proposal = config.proposal()
        self._phase = DriverPhase.OPEN
        self._deadline = now + config.phase_timeout_s
        self._live: set[int] = set(self._proposal.participants)
        self._missed: dict[int, DriverPhase] = {}
        self._ceremony = b""
        self._opens: dict[int, Open] = {}
        self._bundles: dict[int, dict[bytes, DealBundle]] = {}
        self._delivered: dict[int, tuple[tuple[int, bytes], ...]] = {}
        self._echoes: dict[int, Echo] = {}
        self._complaints: dict[int, Complaints] = {}
        self._justifiers: set[int] = set()
        self._justifications: dict[int, dict[bytes, Justification]] = {}
        self._votes: dict[int, TranscriptSignature] = {}
        self._relayed: dict[DriverPhase, tuple[NodeMessage, ...]] = {}
        self._bodies: dict[Outcome, TranscriptBody] = {}
        self._result: DkgResult | None = None

    @property
    def phase(self) -> DriverPhase:
        return self._phase

    @property
    def deadline(self) -> float:
        """When ``tick`` ends the current phase (absolute, in the ``now`` timebase)."""
        return self._deadline

    @property
    def proposal(self) -> Proposal:
        return self._proposal

    @property
    def ceremony(self) -> bytes:
        return self._ceremony

    @property
    def live(self) -> frozenset[int]:
        """Nodes still taking part."""
        return frozenset(self._live)

    @property
    def missed(self) -> dict[int, DriverPhase]:
        """Node → the phase it missed or failed in."""
        return dict(self._missed)

    @property
    def result(self) -> DkgResult | None:
        return self._result

    def start(self) -> list[DriverOutput]:
        """The proposal for every participant, and the OPEN phase's deadline."""
        out: list[DriverOutput] = [PhaseStarted(DriverPhase.OPEN, self._deadline)]
        for j in self._proposal.participants:
            out += self._send(j, self._proposal)
        return out

    # ------------------------------------------------------------------ inputs

    def receive(self, sender: int, data: bytes, *, now: float) -> list[DriverOutput]:
        """A message from node ``sender`` (the authenticated peer).

        An exact copy of a message already recorded is ignored in any phase.

        Raises:
            DecodeError: malformed bytes.
            DkgStateError: not the message this phase collects.
            NodeMessageRejected: invalid for this ceremony (the shell may then call
                ``node_failed``). In every case nothing changes.
        """
        message = decode_node_message(data)
        if message.sender != sender:
            raise NodeMessageRejected(sender, f"message claims to be from node {message.sender}")
        kind = message.KIND
        if self._already_have(message):
            return []  # a retransmission: harmless in any phase
        if _COLLECTS.get(self._phase) != kind:
            raise DkgStateError(self._phase.value, kind, Culprit.nodes(sender))
        if sender not in self._expected():
            raise NodeMessageRejected(sender, f"no {kind} is expected from it now")
        record = self._checker(message)
        return self._step(kind, lambda: record(now))

    def node_failed(self, node: int, reason: str, *, now: float) -> list[DriverOutput]:
        """The shell lost ``node`` (no answer, an error, a ``RelayFault`` it reported)."""

        def drop() -> list[DriverOutput]:
            out = self._drop(node, reason)
            return out + self._maybe_advance(now)

        return self._step(NODE_FAILED, drop)

    def tick(self, *, now: float) -> list[DriverOutput]:
        """End the phase if its deadline has passed: missing nodes are dropped."""

        def on_deadline() -> list[DriverOutput]:
            if now < self._deadline:
                return []
            out: list[DriverOutput] = []
            for j in sorted(self._expected() - self._answered()):
                out += self._drop(j, "missed the deadline")
            return out + self._advance(now)

        return self._step(DEADLINE, on_deadline)

    # ------------------------------------------------------------------ machinery

    def _already_have(self, m: NodeMessage) -> bool:
        one: dict[type, dict[int, NodeMessage]] = {
            Open: self._opens,  # type: ignore[dict-item]
            Echo: self._echoes,  # type: ignore[dict-item]
            Complaints: self._complaints,  # type: ignore[dict-item]
            TranscriptSignature: self._votes,  # type: ignore[dict-item]
        }
        if type(m) in one:
            return one[type(m)].get(m.sender) == m
        two = self._bundles if isinstance(m, DealBundle) else self._justifications
        return m.digest() in two.get(m.sender, {})

    def _step(self, trigger: str, fn: Callable[[], list[DriverOutput]]) -> list[DriverOutput]:
        before = self._phase
        allowed = DRIVER_TRANSITIONS.get((before, trigger))
        if allowed is None:
            raise DkgStateError(before.value, trigger, Culprit.nodes())
        out = fn()
        if self._phase not in allowed:
            raise DkgInternalError(f"driver {before} -> {self._phase} on {trigger}")
        return out

    def _route(self, to: int, message: Relayed) -> Relayed | None:
        """The single exit of relayed messages (tests override it)."""
        return message

    def _send(self, to: int, message: Relayed) -> list[DriverOutput]:
        routed = self._route(to, message)
        if routed is None:
            return []
        if isinstance(routed, BundleSet):
            self._delivered[to] = echo_of(distinct(routed.bundles))
        return [Deliver(to, routed)]

    def _broadcast(self, message: Relayed, to: Sequence[int] | None = None) -> list[DriverOutput]:
        out: list[DriverOutput] = []
        for j in sorted(self._live) if to is None else to:
            out += self._send(j, message)
        return out

    def _expected(self) -> set[int]:
        if self._phase is DriverPhase.OPEN:
            return set(self._proposal.participants)
        if self._phase is DriverPhase.JUSTIFY:
            return self._justifiers & self._live
        return set(self._live)

    def _answered(self) -> set[int]:
        phase = self._phase
        if phase is DriverPhase.OPEN:
            return set(self._opens)
        if phase is DriverPhase.DEAL:
            return set(self._bundles)
        if phase is DriverPhase.ECHO:
            return set(self._echoes)
        if phase is DriverPhase.COMPLAIN:
            return set(self._complaints)
        if phase is DriverPhase.JUSTIFY:
            return set(self._justifications)
        return set(self._votes)

    def _drop(self, node: int, reason: str) -> list[DriverOutput]:
        if node not in self._live:
            return []
        self._live.discard(node)
        self._missed[node] = self._phase
        return [NodeDropped(node, self._phase, reason)]

    def _maybe_advance(self, now: float) -> list[DriverOutput]:
        if self._phase in (DriverPhase.COMMITTED, DriverPhase.ABORTED):
            return []
        if self._phase is DriverPhase.OPEN and self._missed:
            return self._advance(now)  # aborts: every nonce is needed
        if len(self._live) < self._proposal.min_holders:
            return self._advance(now)  # aborts
        if self._expected() <= self._answered():
            return self._advance(now)
        return []

    def _start_phase(self, phase: DriverPhase, now: float) -> list[DriverOutput]:
        self._phase = phase
        self._deadline = now + self._config.phase_timeout_s
        return [PhaseStarted(phase, self._deadline)]

    def _abort(self, reason: str, culprit: Culprit) -> list[DriverOutput]:
        self._phase = DriverPhase.ABORTED
        out = self._broadcast(Abort(reason=reason), to=self._proposal.participants)
        return [*out, DriverAborted(reason, culprit, dict(self._missed))]

    def _too_few(self) -> list[DriverOutput] | None:
        if len(self._live) >= self._proposal.min_holders:
            return None
        missing = sorted(self._missed)
        reason = (
            f"only {len(self._live)} nodes remain, {self._proposal.min_holders} holders needed; "
            + ", ".join(f"node {j} missed {self._missed[j]}" for j in missing)
        )
        return self._abort(reason, Culprit.nodes(*missing))

    # ------------------------------------------------------------------ checks

    def _checker(self, m: NodeMessage) -> Callable[[float], list[DriverOutput]]:
        """Validate ``m`` (raising, changing nothing) and return how to record it."""
        manifest, sender = self._config.manifest, m.sender
        if isinstance(m, Open):
            self._reject_if(sender, open_problem(m, proposal=self._proposal, manifest=manifest))
            return self._keep_one(self._opens, m)
        problem = message_problem(
            m, manifest=manifest, participants=self._proposal.participants, ceremony=self._ceremony
        )
        self._reject_if(sender, problem)
        if isinstance(m, DealBundle):
            return self._keep_two(self._bundles, m)
        if isinstance(m, Justification):
            return self._keep_two(self._justifications, m)
        if isinstance(m, Echo):
            if m.bundles != self._delivered.get(sender):
                self._reject_if(sender, "echoed a set of bundles it was not sent")
            return self._keep_one(self._echoes, m)
        if isinstance(m, Complaints):
            return self._keep_one(self._complaints, m)
        if self._body(m.outcome).hash() != m.transcript_hash:
            self._reject_if(sender, "signed a transcript other than the one relayed")
        return self._keep_one(self._votes, m)

    @staticmethod
    def _reject_if(sender: int, problem: str | None) -> None:
        if problem is not None:
            raise NodeMessageRejected(sender, problem)

    def _keep_one(self, store: dict[int, M], m: M) -> Callable[[float], list[DriverOutput]]:
        previous = store.get(m.sender)
        if previous is not None and previous != m:
            self._reject_if(m.sender, f"sent two different {m.KIND} messages")

        def record(now: float) -> list[DriverOutput]:
            store[m.sender] = m
            return self._maybe_advance(now)

        return record

    def _keep_two(
        self, store: dict[int, dict[bytes, N]], m: N
    ) -> Callable[[float], list[DriverOutput]]:
        """Bundles and justifications: a second, different one is relayed on purpose
        (together they prove that the dealer equivocated); a third is refused."""
        mine = store.get(m.sender, {})
        if m.digest() not in mine and len(mine) >= 2:
            self._reject_if(m.sender, f"sent more than two different {m.KIND} messages")

        def record(now: float) -> list[DriverOutput]:
            store.setdefault(m.sender, {})[m.digest()] = m
            return self._maybe_advance(now)

        return record

    # ------------------------------------------------------------------ phases

    def _body(self, outcome: Outcome) -> TranscriptBody:
        """The body the driver relayed, with a claimed outcome (one per outcome: holders
        normally all claim the same, and the body's hash is computed once)."""
        cached = self._bodies.get(outcome)
        if cached is not None:
            return cached
        r = self._relayed
        body = TranscriptBody(
            proposal=self._proposal,
            opens=r.get(DriverPhase.OPEN, ()),  # type: ignore[arg-type]
            bundles=r.get(DriverPhase.DEAL, ()),  # type: ignore[arg-type]
            echoes=r.get(DriverPhase.ECHO, ()),  # type: ignore[arg-type]
            complaints=r.get(DriverPhase.COMPLAIN, ()),  # type: ignore[arg-type]
            justifications=r.get(DriverPhase.JUSTIFY, ()),  # type: ignore[arg-type]
            outcome=outcome,
        )
        if len(self._bodies) < 2 * len(self._proposal.participants):  # bounded
            self._bodies[outcome] = body
        return body

    def _advance(self, now: float) -> list[DriverOutput]:
        phase = self._phase
        if phase is DriverPhase.OPEN:
            return self._after_open(now)
        too_few = self._too_few()
        if too_few is not None:
            return too_few
        if phase is DriverPhase.DEAL:
            return self._after_deal(now)
        if phase is DriverPhase.ECHO:
            echoes = tuple(self._echoes[j] for j in sorted(self._echoes) if j in self._live)
            self._relayed[DriverPhase.ECHO] = echoes
            return self._start_phase(DriverPhase.COMPLAIN, now) + self._broadcast(
                EchoSet(echoes=echoes)
            )
        if phase is DriverPhase.COMPLAIN:
            return self._after_complain(now)
        if phase is DriverPhase.JUSTIFY:
            justifications = distinct(
                j for per in self._justifications.values() for j in per.values()
            )
            self._relayed[DriverPhase.JUSTIFY] = justifications
            return self._start_phase(DriverPhase.SIGN, now) + self._broadcast(
                JustificationSet(justifications=justifications)
            )
        if phase is DriverPhase.SIGN:
            return self._after_sign()
        return []

    def _after_open(self, now: float) -> list[DriverOutput]:
        missing = sorted(self._missed) or sorted(
            set(self._proposal.participants) - set(self._opens)
        )
        if missing:
            reason = "every participant must open the ceremony; missing: " + ", ".join(
                f"node {j}" for j in missing
            )
            return self._abort(reason, Culprit.nodes(*missing))
        opens = tuple(self._opens[j] for j in self._proposal.participants)
        self._ceremony = ceremony_id(self._proposal, opens)
        self._relayed[DriverPhase.OPEN] = opens
        return self._start_phase(DriverPhase.DEAL, now) + self._broadcast(OpenSet(opens=opens))

    def _after_deal(self, now: float) -> list[DriverOutput]:
        bundles = distinct(b for per in self._bundles.values() for b in per.values())
        dealers = {b.sender for b in bundles}
        if len(dealers) < self._proposal.threshold:
            absent = sorted(set(self._proposal.participants) - dealers)
            reason = f"only {len(dealers)} dealers sent a bundle, t = {self._proposal.threshold}"
            return self._abort(reason, Culprit.nodes(*absent))
        self._relayed[DriverPhase.DEAL] = bundles
        return self._start_phase(DriverPhase.ECHO, now) + self._broadcast(
            BundleSet(bundles=bundles)
        )

    def _after_complain(self, now: float) -> list[DriverOutput]:
        complaints = tuple(self._complaints[j] for j in sorted(self._complaints) if j in self._live)
        self._relayed[DriverPhase.COMPLAIN] = complaints
        dealers = {b.sender for b in self._relayed[DriverPhase.DEAL]}
        tally = tally_complaints(complaints, dealers, self._proposal.threshold)
        message = ComplaintSet(complaints=complaints)
        if not tally.must_justify:
            return self._start_phase(DriverPhase.SIGN, now) + self._broadcast(message)
        self._justifiers = set(tally.must_justify)
        out = self._start_phase(DriverPhase.JUSTIFY, now) + self._broadcast(message)
        return out + self._maybe_advance(now)  # nobody left to wait for: go on at once

    def _computed_outcome(self) -> Outcome | None:
        """The outcome from public data (only when holders disagree)."""
        p, r = self._proposal, self._relayed
        bundles: tuple[DealBundle, ...] = r[DriverPhase.DEAL]  # type: ignore[assignment]
        seed = tagged_hash("dkg-verify-weights", [b.to_wire() for b in bundles])
        verdict = check_bundles(
            bundles, threshold=p.threshold, participants=p.participants, weight_seed=seed
        )
        complaints: tuple[Complaints, ...] = r[DriverPhase.COMPLAIN]  # type: ignore[assignment]
        tally = tally_complaints(complaints, {b.sender for b in bundles}, p.threshold)
        justifications: tuple[Justification, ...] = r.get(DriverPhase.JUSTIFY, ())  # type: ignore[assignment]
        judgement = judge_justifications(justifications, tally, verdict.candidates)
        return compute_outcome(p.participants, verdict, tally, judgement)

    def _after_sign(self) -> list[DriverOutput]:
        votes = [self._votes[j] for j in sorted(self._votes) if j in self._live]
        by_hash: dict[bytes, list[TranscriptSignature]] = {}
        for v in votes:
            by_hash.setdefault(v.transcript_hash, []).append(v)
        out: list[DriverOutput] = []
        if len(by_hash) > 1:
            outcome = self._computed_outcome()
            want = self._body(outcome).hash() if outcome is not None else b""
            for h, group in by_hash.items():
                if h != want:
                    for v in group:
                        out += self._drop(v.sender, "signed a wrong outcome")
            by_hash = {want: by_hash.get(want, [])}
        chosen = next(iter(by_hash.values()), [])
        too_few = self._too_few() if chosen else None
        if not chosen or too_few is not None or len(chosen) < self._proposal.min_holders:
            return out + (too_few or self._abort("no transcript was signed", Culprit.nodes()))
        return out + self._commit(chosen)

    def _commit(self, votes: list[TranscriptSignature]) -> list[DriverOutput]:
        p, outcome = self._proposal, votes[0].outcome
        try:
            pubkey_g1 = g1_from_bytes(outcome.pubkey_g1, field="pubkey_g1")
            pubkey_g2 = g2_from_bytes(outcome.pubkey_g2, field="pubkey_g2")
            public_shares = {
                j: g1_from_bytes(raw, field="public_share", allow_infinity=True)
                for j, raw in outcome.public_shares
            }
        except DecodeError as exc:  # only if min_holders nodes collude (beyond t - 1)
            holders = tuple(v.sender for v in votes)
            return self._abort(
                f"the holders signed an invalid outcome: {exc}", Culprit.nodes(*holders)
            )
        body = self._body(outcome)
        cert = CommitCertificate(
            ceremony=self._ceremony,
            transcript_hash=votes[0].transcript_hash,
            signatures=tuple((v.sender, v.sig) for v in votes),
        )
        info = PublicKeyInfo(
            key_id=p.key_id,
            epoch=p.epoch,
            ceremony=self._ceremony,
            threshold=p.threshold,
            participants=p.participants,
            min_holders=p.min_holders,
            qual=outcome.qual,
            pubkey_g1=pubkey_g1,
            pubkey_g2=pubkey_g2,
            public_shares=public_shares,
            transcript_hash=cert.transcript_hash,
        )
        self._result = DkgResult(
            info=info,
            holders=cert.holders,
            excluded=dict(outcome.excluded),
            missed=dict(self._missed),
            transcript=Transcript(body=body, commit=cert).encode(),
        )
        self._phase = DriverPhase.COMMITTED
        out = self._broadcast(cert, to=cert.holders)
        others = [j for j in p.participants if j not in cert.holders]
        out += self._broadcast(Abort(reason="this node is not a holder of the key"), to=others)
        return [*out, Committed(self._result)]

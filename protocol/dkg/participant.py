"""The node side of the DKG: one sans-IO state machine per node and ceremony
(DESIGN.md §DKG steps 0–4, "the coordinator is untrusted").

The node shell feeds it what the coordinator relays (``receive(bytes, now=...)``
or ``handle(message, now=...)``), calls ``tick(now=...)`` when a timer fires, and
acts on the typed result (``protocol.dkg.results``). It never does I/O, reads a
clock or logs. Randomness comes from the ``rng`` passed in.

Theory of operation. All state lives in one frozen ``ParticipantState``. A handler
computes a *new* state and a result from the old state and the input; only when it
returns does the participant store the new state, after checking that the phase
change is in ``phases.TRANSITIONS``. So an input that raises (``DecodeError``,
``DkgStateError``, ``RelayFault``, ``ProposalRejected``) changes nothing, and
``ABORTED``/``DONE`` are sticky.

What the node checks, and whom it blames:

* Everything relayed must be signed by the node that sent it, for this ceremony; the
  node's own message must be in every set, unaltered (otherwise the relay dropped or
  replaced it: ``RelayFault``, nothing changes; the shell should then call
  ``abort``). Opens must come from every participant (the ceremony id needs every
  nonce). A reused ceremony id or a key id already active ends the ceremony.
* Bundles: public checks exclude a dealer deterministically (``dealing``); two
  different signed bundles from one dealer exclude it (equivocation); a bad share to
  this node becomes a complaint. The node then echoes the digests of all bundles.
* Echoes that differ prove that the relay showed nodes different bundles: ABORTED as
  a relay fault, before any complaint is sent, so nothing is ever revealed.
* Complaints are tallied; a dealer with fewer than t must justify, with t or more it
  is disqualified without reveal (``outcome``).
* Finish: QUAL ≥ t; the node's share is the sum of its shares from QUAL (revealed
  ones where it complained), checked against its public share; it outputs
  ``SealPending`` with its transcript signature and then waits, without a deadline,
  for the commit (its vote is cast) or an abort.
* Commit: the certificate must carry ≥ min_holders valid holder signatures over the
  same transcript hash and name this node; only then ``Activate``.

Tests override ``_make_bundle``, ``_make_complaints`` and ``_make_justification`` to
play a byzantine node (``tests/protocol/dkg/harness.py``); nothing else is meant
to be overridden.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from protocol.bn254 import R, g1_mul_generator
from protocol.canonical import encode_canonical
from protocol.dkg.crypto import x25519_keypair, x25519_public_ok
from protocol.dkg.dealing import check_bundles, deal, open_share
from protocol.dkg.errors import (
    Culprit,
    CulpritKind,
    DkgInternalError,
    DkgStateError,
    ProposalRejected,
    RelayFault,
)
from protocol.dkg.messages import (
    Complaints,
    DealBundle,
    Echo,
    Justification,
    Open,
    SignedMessage,
    TranscriptSignature,
)
from protocol.dkg.outcome import (
    Judgement,
    compute_outcome,
    judge_justifications,
    tally_complaints,
)
from protocol.dkg.phases import DEADLINE, LOCAL_ABORT, TRANSITIONS, Phase
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
    decode_relayed,
)
from protocol.dkg.results import (
    Aborted,
    Activate,
    ActiveKey,
    NeedMore,
    ParticipantResult,
    PendingKey,
    PublicKeyInfo,
    SealPending,
    Send,
)
from protocol.dkg.state import ParticipantConfig, ParticipantState, require
from protocol.dkg.transcript import (
    Transcript,
    TranscriptBody,
    ceremony_id,
    commit_problem,
    distinct,
    echo_of,
    message_problem,
    one_per_sender,
    proposal_problem,
)
from protocol.encoding import g1_from_bytes, g2_from_bytes, scalar_to_bytes
from protocol.rng import Rng, os_rng
from protocol.threshold import Polynomial, random_polynomial

S = TypeVar("S", bound=SignedMessage)
Transition = tuple[ParticipantState, ParticipantResult]
Handler = Callable[[ParticipantState], Transition]


class Participant:
    """One node's DKG state machine (see the module header)."""

    def __init__(self, config: ParticipantConfig, *, rng: Rng = os_rng) -> None:
        self._config = config
        self._rng = rng
        self._state = ParticipantState()

    def __repr__(self) -> str:
        return f"Participant(index={self._config.index}, phase={self._state.phase})"

    @property
    def index(self) -> int:
        return self._config.index

    @property
    def state(self) -> ParticipantState:
        """The current state (immutable; compare snapshots with ==)."""
        return self._state

    @property
    def phase(self) -> Phase:
        return self._state.phase

    @property
    def ceremony(self) -> bytes | None:
        """The ceremony id once known (from DEAL on): the shell records it as used
        before it sends the bundle, so the node never takes part in it twice."""
        return self._state.ceremony or None

    @property
    def deadline(self) -> float | None:
        """When ``tick`` will abort the current phase (None: no local deadline)."""
        return self._state.deadline

    # ------------------------------------------------------------------ entry points

    def start(self, proposal: Proposal, *, now: float) -> ParticipantResult:
        """Accept a proposal: ``Send(Open)``, or ``Aborted`` if the key id is active.

        Raises:
            ProposalRejected: not for this cluster or node, or out of range.
            DkgStateError: the participant has already started.
        """
        return self.handle(proposal, now=now)

    def receive(self, data: bytes, *, now: float) -> ParticipantResult:
        """Decode a relayed message and handle it.

        Raises:
            DecodeError: malformed bytes (nothing changes).
            DkgStateError, RelayFault, ProposalRejected: see ``handle``.
        """
        return self.handle(decode_relayed(data), now=now)

    def handle(self, message: Relayed, *, now: float) -> ParticipantResult:
        """Advance on one relayed message.

        Raises:
            DkgStateError: the message is not accepted in this phase.
            RelayFault: the relay sent something an honest relay never sends.
            ProposalRejected: (INIT) the proposal cannot run on this node.
        """
        on = self._handlers()[type(message)]
        return self._step(message.KIND, lambda s: on(s, message, now), Culprit.relay())

    def tick(self, *, now: float) -> ParticipantResult:
        """Abort if the current phase's deadline has passed, else ``NeedMore``.

        Raises:
            DkgStateError: the ceremony is over (DONE/ABORTED), or in FINISH.
        """

        def on_deadline(s: ParticipantState) -> Transition:
            if s.deadline is None or now < s.deadline:
                return s, NeedMore(s.phase)
            return self._aborted(
                s, f"nothing relayed before the {s.phase} deadline", Culprit.relay()
            )

        return self._step(DEADLINE, on_deadline, Culprit(CulpritKind.LOCAL))

    def abort(self, reason: str) -> Aborted:
        """The shell gives up (e.g. after a ``RelayFault``). Not allowed in FINISH.

        Raises:
            DkgStateError: in FINISH, DONE or ABORTED.
        """
        result = self._step(
            LOCAL_ABORT,
            lambda s: self._aborted(s, reason, Culprit.relay()),
            Culprit(CulpritKind.LOCAL),
        )
        if not isinstance(result, Aborted):
            raise DkgInternalError("a local abort did not abort")
        return result

    # ------------------------------------------------------------------ machinery

    def _step(self, trigger: str, handler: Handler, culprit: Culprit) -> ParticipantResult:
        state = self._state
        allowed = TRANSITIONS.get((state.phase, trigger))
        if allowed is None:
            raise DkgStateError(state.phase.value, trigger, culprit)
        new, result = handler(state)
        if new.phase not in allowed:
            raise DkgInternalError(f"{state.phase} -> {new.phase} on {trigger} is not in the table")
        self._state = new
        return result

    def _handlers(self) -> dict[type, Callable[[ParticipantState, Any, float], Transition]]:
        return {
            Proposal: self._on_proposal,
            OpenSet: self._on_open_set,
            BundleSet: self._on_bundle_set,
            EchoSet: self._on_echo_set,
            ComplaintSet: self._on_complaint_set,
            JustificationSet: self._on_justification_set,
            CommitCertificate: self._on_commit,
            Abort: self._on_abort,
        }

    def _aborted(self, s: ParticipantState, reason: str, culprit: Culprit) -> Transition:
        new = dataclasses.replace(
            s,
            phase=Phase.ABORTED,
            deadline=None,
            enc_secret=b"",
            polynomial=None,
            my_shares={},
            abort_reason=reason,
        )
        return new, Aborted(reason, culprit)

    def _deadline(self, now: float) -> float:
        return now + self._config.phase_timeout_s

    def _check_all(self, s: ParticipantState, messages: Sequence[SignedMessage]) -> None:
        participants = s.proposal.participants if s.proposal else ()
        ceremony = s.ceremony or None  # opens come before the ceremony id exists
        for m in messages:
            problem = message_problem(
                m, manifest=self._config.manifest, participants=participants, ceremony=ceremony
            )
            if problem is not None:
                raise RelayFault(problem)

    @staticmethod
    def _one_per_sender(messages: tuple[S, ...]) -> tuple[S, ...]:
        try:
            return one_per_sender(messages)
        except ValueError as exc:
            raise RelayFault(str(exc)) from None

    @staticmethod
    def _require_own(
        own: SignedMessage | None, messages: tuple[SignedMessage, ...], what: str
    ) -> None:
        if own is not None and own not in messages:
            raise RelayFault(f"this node's own {what} is missing from the set or was altered")

    # ------------------------------------------------------------------ byzantine seams

    def _make_bundle(
        self, *, ceremony: bytes, polynomial: Polynomial, recipient_keys: Mapping[int, bytes]
    ) -> DealBundle:
        bundle = deal(
            polynomial,
            ceremony=ceremony,
            dealer=self.index,
            recipient_keys=recipient_keys,
            rng=self._rng,
        )
        return bundle.signed_by(self._config.signing_key)

    def _make_complaints(self, *, ceremony: bytes, against: tuple[int, ...]) -> Complaints:
        message = Complaints(ceremony=ceremony, sender=self.index, against=against)
        return message.signed_by(self._config.signing_key)

    def _make_justification(
        self, *, ceremony: bytes, polynomial: Polynomial, recipients: tuple[int, ...]
    ) -> Justification:
        shares = tuple((j, scalar_to_bytes(polynomial.evaluate(j))) for j in recipients)
        message = Justification(ceremony=ceremony, sender=self.index, shares=shares)
        return message.signed_by(self._config.signing_key)

    # ------------------------------------------------------------------ handlers

    def _on_proposal(self, s: ParticipantState, p: Proposal, now: float) -> Transition:
        p.validate()
        problem = proposal_problem(p, self._config.manifest)
        if problem is not None:
            raise ProposalRejected(problem)
        if self.index not in p.participants:
            raise ProposalRejected(f"node {self.index} is not a participant")
        if p.key_id in self._config.active_key_ids:
            culprit = Culprit(CulpritKind.CLIENT)
            return self._aborted(s, f"key {p.key_id!r} is already active on this node", culprit)
        enc_secret, enc_key = x25519_keypair(self._rng)
        own = Open(
            cluster=p.cluster,
            key_id=p.key_id,
            epoch=p.epoch,
            threshold=p.threshold,
            min_holders=p.min_holders,
            participants=p.participants,
            sender=self.index,
            nonce=self._rng(32),
            enc_key=enc_key,
        ).signed_by(self._config.signing_key)
        new = dataclasses.replace(
            s,
            phase=Phase.OPEN,
            deadline=self._deadline(now),
            proposal=p,
            own_open=own,
            enc_secret=enc_secret,
        )
        return new, Send(own)

    def _on_open_set(self, s: ParticipantState, m: OpenSet, now: float) -> Transition:
        p = require(s.proposal, "proposal")
        for o in m.opens:
            if o.parameters() != p.parameters():
                raise RelayFault(f"open from node {o.sender} answers another proposal")
        self._check_all(s, m.opens)
        opens = self._one_per_sender(m.opens)
        missing = sorted(set(p.participants) - {o.sender for o in opens})
        if missing:
            raise RelayFault(f"the opens of nodes {missing} are missing")
        self._require_own(s.own_open, opens, "open")
        bad_keys = [o.sender for o in opens if not x25519_public_ok(o.enc_key)]
        if bad_keys:
            return self._aborted(s, "small-order encryption keys", Culprit.nodes(*bad_keys))
        ceremony = ceremony_id(p, opens)
        if ceremony in self._config.used_ceremony_ids:
            return self._aborted(s, "the ceremony id was already used", Culprit.relay())
        polynomial = random_polynomial(p.threshold - 1, self._rng)
        keys = {o.sender: o.enc_key for o in opens}
        bundle = self._make_bundle(ceremony=ceremony, polynomial=polynomial, recipient_keys=keys)
        new = dataclasses.replace(
            s,
            phase=Phase.DEAL,
            deadline=self._deadline(now),
            opens=opens,
            ceremony=ceremony,
            polynomial=polynomial,
            own_bundle=bundle,
        )
        return new, Send(bundle)

    def _on_bundle_set(self, s: ParticipantState, m: BundleSet, now: float) -> Transition:
        p = require(s.proposal, "proposal")
        self._check_all(s, m.bundles)
        bundles = distinct(m.bundles)
        self._require_own(s.own_bundle, bundles, "bundle")
        verdict = check_bundles(
            bundles,
            threshold=p.threshold,
            participants=p.participants,
            weight_seed=self._rng(32),
        )
        enc_key = require(s.own_open, "own open").enc_key
        shares: dict[int, int] = {}
        complain: list[int] = []
        for dealer, verified in verdict.candidates.items():
            share = open_share(
                verified, recipient=self.index, recipient_secret=s.enc_secret, recipient_key=enc_key
            )
            if share is None:
                complain.append(dealer)
            else:
                shares[dealer] = share
        if len(verdict.candidates) < p.threshold:
            culprit = Culprit.dealers(*verdict.excluded)
            return self._aborted(s, f"only {len(verdict.candidates)} valid bundles", culprit)
        echo = Echo(ceremony=s.ceremony, sender=self.index, bundles=echo_of(bundles))
        new = dataclasses.replace(
            s,
            phase=Phase.ECHO,
            deadline=self._deadline(now),
            enc_secret=b"",  # shares are opened: drop the decryption key (forward secrecy)
            bundles=bundles,
            verdict=verdict,
            my_shares=shares,
            complain_against=tuple(sorted(complain)),
            own_echo=echo.signed_by(self._config.signing_key),
        )
        return new, Send(require(new.own_echo, "echo"))

    def _on_echo_set(self, s: ParticipantState, m: EchoSet, now: float) -> Transition:
        p = require(s.proposal, "proposal")
        own = require(s.own_echo, "own echo")
        self._check_all(s, m.echoes)
        echoes = self._one_per_sender(m.echoes)
        self._require_own(own, echoes, "echo")
        differing = [e.sender for e in echoes if e.bundles != own.bundles]
        if differing:
            reason = f"the relay showed nodes {differing} a different set of bundles"
            return self._aborted(s, reason, Culprit.relay())
        if len(echoes) < p.min_holders:
            missing = sorted(set(p.participants) - {e.sender for e in echoes})
            reason = f"only {len(echoes)} nodes echoed; {p.min_holders} holders are required"
            return self._aborted(s, reason, Culprit.nodes(*missing))
        complaints = self._make_complaints(ceremony=s.ceremony, against=s.complain_against)
        new = dataclasses.replace(
            s,
            phase=Phase.COMPLAIN,
            deadline=self._deadline(now),
            echoes=echoes,
            own_complaints=complaints,
        )
        return new, Send(complaints)

    def _on_complaint_set(self, s: ParticipantState, m: ComplaintSet, now: float) -> Transition:
        p = require(s.proposal, "proposal")
        self._check_all(s, m.complaints)
        complaints = self._one_per_sender(m.complaints)
        self._require_own(s.own_complaints, complaints, "complaints")
        tally = tally_complaints(complaints, {b.sender for b in s.bundles}, p.threshold)
        s = dataclasses.replace(s, complaints=complaints, tally=tally)
        if not tally.must_justify:
            return self._finish(s, Judgement(failed=frozenset(), revealed={}))
        if self.index not in tally.must_justify:
            new = dataclasses.replace(s, phase=Phase.JUSTIFY, deadline=self._deadline(now))
            return new, NeedMore(Phase.JUSTIFY)
        justification = self._make_justification(
            ceremony=s.ceremony,
            polynomial=require(s.polynomial, "polynomial"),
            recipients=tuple(sorted(tally.against[self.index])),
        )
        new = dataclasses.replace(
            s, phase=Phase.JUSTIFY, deadline=self._deadline(now), own_justification=justification
        )
        return new, Send(justification)

    def _on_justification_set(
        self, s: ParticipantState, m: JustificationSet, now: float
    ) -> Transition:
        self._check_all(s, m.justifications)
        justifications = distinct(m.justifications)
        self._require_own(s.own_justification, justifications, "justification")
        verdict = require(s.verdict, "verdict")
        judgement = judge_justifications(
            justifications, require(s.tally, "tally"), verdict.candidates
        )
        return self._finish(dataclasses.replace(s, justifications=justifications), judgement)

    def _finish(self, s: ParticipantState, judgement: Judgement) -> Transition:
        p = require(s.proposal, "proposal")
        verdict = require(s.verdict, "verdict")
        tally = require(s.tally, "tally")
        outcome = compute_outcome(p.participants, verdict, tally, judgement)
        if outcome is None:
            culprit = Culprit.dealers(*(set(p.participants) - set(verdict.candidates)))
            reason = f"no key: fewer than t = {p.threshold} dealers qualify, or their sum is zero"
            return self._aborted(s, reason, culprit)
        share = 0
        for dealer in outcome.qual:
            value = s.my_shares.get(dealer)
            if value is None:
                value = judgement.revealed.get(dealer, {}).get(self.index)
            if value is None:
                return self._aborted(
                    s, f"no valid share from dealer {dealer}", Culprit.dealers(dealer)
                )
            share = (share + value) % R
        public = {
            j: g1_from_bytes(raw, field="public_share", allow_infinity=True)
            for j, raw in outcome.public_shares
        }
        if g1_mul_generator(share) != public[self.index]:
            culprit = Culprit(CulpritKind.LOCAL)
            return self._aborted(s, "the share does not match its public share", culprit)
        body = TranscriptBody(
            proposal=p,
            opens=s.opens,
            bundles=s.bundles,
            echoes=s.echoes,
            complaints=s.complaints,
            justifications=s.justifications,
            outcome=outcome,
        )
        transcript_hash = body.hash()
        info = PublicKeyInfo(
            key_id=p.key_id,
            epoch=p.epoch,
            ceremony=s.ceremony,
            threshold=p.threshold,
            participants=p.participants,
            min_holders=p.min_holders,
            qual=outcome.qual,
            pubkey_g1=g1_from_bytes(outcome.pubkey_g1, field="pubkey_g1"),
            pubkey_g2=g2_from_bytes(outcome.pubkey_g2, field="pubkey_g2"),
            public_shares=public,
            transcript_hash=transcript_hash,
        )
        vote = TranscriptSignature(
            ceremony=s.ceremony, sender=self.index, transcript_hash=transcript_hash, outcome=outcome
        ).signed_by(self._config.signing_key)
        pending = PendingKey(
            index=self.index,
            share=share,
            info=info,
            transcript_body=encode_canonical(body.to_wire()),
        )
        new = dataclasses.replace(
            s,
            phase=Phase.FINISH,
            deadline=None,
            polynomial=None,
            my_shares={},
            body=body,
            info=info,
        )
        return new, SealPending(pending, vote)

    def _on_commit(self, s: ParticipantState, cert: CommitCertificate, now: float) -> Transition:
        body = require(s.body, "transcript body")
        info = require(s.info, "key info")
        problem = commit_problem(cert, body, self._config.manifest)
        if problem is not None:
            raise RelayFault(problem)
        if self.index not in cert.holders:
            reason = "the commit does not list this node: it is not a holder"
            return self._aborted(s, reason, Culprit.relay())
        key = ActiveKey(index=self.index, info=info, holders=cert.holders)
        new = dataclasses.replace(s, phase=Phase.DONE, holders=cert.holders)
        return new, Activate(key, Transcript(body=body, commit=cert).encode())

    def _on_abort(self, s: ParticipantState, m: Abort, now: float) -> Transition:
        culprit = Culprit(CulpritKind.COORDINATOR)
        return self._aborted(s, f"the coordinator aborted: {m.reason}", culprit)

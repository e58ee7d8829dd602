"""What the DKG state machines hand back to their shells (DESIGN.md §DKG, two-phase
commit). Small frozen values, one per kind of result, instead of tuples of optionals.

Participant (node shell):

* ``Send(message)``: send this signed message to the coordinator.
* ``NeedMore(phase)``: nothing to send; wait for the next relayed message.
* ``SealPending(pending, message)``: *first* seal ``pending.share`` as a pending key
  (durably), *then* send ``message`` (the transcript signature is the node's vote).
* ``Activate(key, transcript)``: the commit certificate verified; flip the pending
  key to active and store ``transcript`` (canonical bytes).
* ``Aborted(reason, culprit)``: the ceremony is over on this node; destroy the
  pending share if one was sealed. Terminal.

Driver (coordinator shell): a list of ``Deliver(to, message)`` plus at most one
``PhaseStarted``, any number of ``NodeDropped``, and at the end ``Committed`` or
``DriverAborted``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from protocol.bn254 import G1, G2
from protocol.dkg.errors import Culprit
from protocol.dkg.messages import NodeMessage, TranscriptSignature
from protocol.dkg.phases import DriverPhase, Phase
from protocol.dkg.relayed import Relayed


@dataclass(frozen=True, slots=True)
class Send:
    message: NodeMessage

    def encode(self) -> bytes:
        return self.message.encode()


@dataclass(frozen=True, slots=True)
class NeedMore:
    phase: Phase


@dataclass(frozen=True, slots=True, kw_only=True)
class PublicKeyInfo:
    """The public result of a ceremony, as every holder computed it."""

    key_id: str
    epoch: int
    ceremony: bytes
    threshold: int
    participants: tuple[int, ...]
    min_holders: int
    qual: tuple[int, ...]
    pubkey_g1: G1
    pubkey_g2: G2
    public_shares: Mapping[int, G1]
    transcript_hash: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingKey:
    """A share to seal as *pending*, with what is needed to verify the commit later
    (also after a restart: ``protocol.dkg.transcript.commit_problem`` takes these
    fields). ``transcript_body`` is the canonical body whose hash was signed."""

    index: int
    share: int = field(repr=False)
    info: PublicKeyInfo
    transcript_body: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"PendingKey(key_id={self.info.key_id!r}, index={self.index}, share=<hidden>)"


@dataclass(frozen=True, slots=True)
class SealPending:
    pending: PendingKey
    message: TranscriptSignature

    def encode(self) -> bytes:
        return self.message.encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class ActiveKey:
    """A committed key as one holder sees it."""

    index: int
    info: PublicKeyInfo
    holders: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Activate:
    key: ActiveKey
    transcript: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Aborted:
    reason: str
    culprit: Culprit


ParticipantResult = Send | NeedMore | SealPending | Activate | Aborted


# --------------------------------------------------------------------------- driver


@dataclass(frozen=True, slots=True)
class Deliver:
    """Send ``message`` to node ``to``."""

    to: int
    message: Relayed

    def encode(self) -> bytes:
        return self.message.encode()


@dataclass(frozen=True, slots=True)
class PhaseStarted:
    """The driver started collecting ``phase``; it ends at ``deadline`` at the latest."""

    phase: DriverPhase
    deadline: float


@dataclass(frozen=True, slots=True)
class NodeDropped:
    """Node ``node`` takes no further part: it missed ``phase`` or failed in it."""

    node: int
    phase: DriverPhase
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DkgResult:
    """A committed ceremony (what ``POST /v1/dkg`` answers)."""

    info: PublicKeyInfo
    holders: tuple[int, ...]
    excluded: Mapping[int, str]  # dealer -> exclusion code
    missed: Mapping[int, DriverPhase]  # node -> phase it missed or failed in
    transcript: bytes = field(repr=False)  # canonical Transcript bytes


@dataclass(frozen=True, slots=True)
class Committed:
    result: DkgResult


@dataclass(frozen=True, slots=True)
class DriverAborted:
    reason: str
    culprit: Culprit
    missed: Mapping[int, DriverPhase]


DriverOutput = Deliver | PhaseStarted | NodeDropped | Committed | DriverAborted

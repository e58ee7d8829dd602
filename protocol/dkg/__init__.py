"""Distributed key generation (DESIGN.md §DKG): Joint-Feldman with proofs of
possession, signed echoes and public complaints, as sans-IO state machines.

Modules, one job each:

* ``phases``: the phase enums and the ONE transition table per role.
* ``messages`` / ``relayed``: one frozen message type per phase (node→coordinator,
  signed; coordinator→node, sets of signed messages), strict decoding (``codec``).
* ``crypto``: tagged hashes, per-recipient share encryption (X25519, HKDF, AEAD).
* ``dealing``: dealing (also of a known secret, for key import) and the public
  checks of a bundle; ``outcome``: complaints, justifications, QUAL, the group key.
* ``participant`` (its config and state in ``state``): the node's state machine;
  ``driver``: the coordinator's relay.
* ``transcript``: the signed transcript, its hash, ``verify_transcript``.
* ``results`` / ``errors``: what the machines return and raise (whose fault it was).

The shells: a node creates ``Participant(ParticipantConfig(...), rng=...)`` per
ceremony and feeds it ``receive(bytes, now=...)`` / ``tick(now=...)``; the coordinator
runs ``Driver(DriverConfig(...), now=...)``, ``start()``, ``receive(sender, bytes,
now=...)``, ``node_failed(...)`` and ``tick(now=...)`` and delivers what it returns.
"""

from protocol.dkg.dealing import Exclusion, deal, deal_known_secret
from protocol.dkg.driver import Driver, DriverConfig
from protocol.dkg.errors import (
    Culprit,
    CulpritKind,
    DkgConfigError,
    DkgError,
    DkgStateError,
    NodeMessageRejected,
    ProposalRejected,
    RelayFault,
)
from protocol.dkg.participant import Participant
from protocol.dkg.phases import DriverPhase, Phase
from protocol.dkg.relayed import Proposal, decode_relayed
from protocol.dkg.results import (
    Aborted,
    Activate,
    ActiveKey,
    Committed,
    Deliver,
    DkgResult,
    DriverAborted,
    NeedMore,
    NodeDropped,
    PendingKey,
    PhaseStarted,
    PublicKeyInfo,
    SealPending,
    Send,
)
from protocol.dkg.state import ParticipantConfig, ParticipantState
from protocol.dkg.transcript import (
    Transcript,
    TranscriptBody,
    TranscriptCheck,
    commit_problem,
    committed_transcript,
    load_transcript,
    verify_transcript,
)

__all__ = [
    "Aborted",
    "Activate",
    "ActiveKey",
    "Committed",
    "Culprit",
    "CulpritKind",
    "Deliver",
    "DkgConfigError",
    "DkgError",
    "DkgResult",
    "DkgStateError",
    "Driver",
    "DriverAborted",
    "DriverConfig",
    "DriverPhase",
    "Exclusion",
    "NeedMore",
    "NodeDropped",
    "NodeMessageRejected",
    "Participant",
    "ParticipantConfig",
    "ParticipantState",
    "PendingKey",
    "Phase",
    "PhaseStarted",
    "Proposal",
    "ProposalRejected",
    "PublicKeyInfo",
    "RelayFault",
    "SealPending",
    "Send",
    "Transcript",
    "TranscriptBody",
    "TranscriptCheck",
    "commit_problem",
    "committed_transcript",
    "deal",
    "deal_known_secret",
    "decode_relayed",
    "load_transcript",
    "verify_transcript",
]

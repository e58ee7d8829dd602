"""A participant's configuration and its one immutable state record (DESIGN.md
§DKG). ``protocol.dkg.participant`` replaces the state as a whole on every
transition, so a rejected input provably changes nothing (compare snapshots with
``is``), and secrets are dropped from it as soon as they are no longer needed: the
ceremony's decryption key after the shares are opened, the polynomial and the
received shares at FINISH, everything on abort.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from nacl.signing import SigningKey

from protocol.dkg.dealing import BundleVerdict
from protocol.dkg.errors import DkgConfigError, DkgInternalError
from protocol.dkg.messages import Complaints, DealBundle, Echo, Justification, Open
from protocol.dkg.outcome import ComplaintTally
from protocol.dkg.phases import Phase
from protocol.dkg.relayed import Proposal
from protocol.dkg.results import PublicKeyInfo
from protocol.dkg.transcript import TranscriptBody
from protocol.manifest import Manifest
from protocol.threshold import Polynomial

DEFAULT_PHASE_TIMEOUT_S = 60.0  # per phase; a node that waits longer gives up (not in FINISH)


@dataclass(frozen=True, slots=True, kw_only=True)
class ParticipantConfig:
    """What the node shell knows before a ceremony starts.

    ``active_key_ids`` and ``used_ceremony_ids`` come from the node's store: the node
    refuses a ceremony for a key it holds as active, and a ceremony id it has seen.
    """

    index: int
    signing_key: SigningKey = field(repr=False)
    manifest: Manifest
    active_key_ids: frozenset[str] = frozenset()
    used_ceremony_ids: frozenset[bytes] = frozenset()
    phase_timeout_s: float = DEFAULT_PHASE_TIMEOUT_S

    def __post_init__(self) -> None:
        try:
            entry = self.manifest.node_by_index(self.index)
        except KeyError:
            raise DkgConfigError(f"node index {self.index} is not in the manifest") from None
        if bytes(self.signing_key.verify_key) != entry.ed25519_public_key:
            raise DkgConfigError("the signing key is not this node's key in the manifest")
        if not self.phase_timeout_s > 0:
            raise DkgConfigError("phase_timeout_s must be positive")


@dataclass(frozen=True, kw_only=True)
class ParticipantState:
    """Everything a participant knows, immutable (replaced on each transition)."""

    phase: Phase = Phase.INIT
    deadline: float | None = None
    proposal: Proposal | None = None
    own_open: Open | None = None
    enc_secret: bytes = field(default=b"", repr=False)  # dropped once shares are opened
    opens: tuple[Open, ...] = ()
    ceremony: bytes = b""
    polynomial: Polynomial | None = field(default=None, repr=False)  # dropped at FINISH
    own_bundle: DealBundle | None = None
    bundles: tuple[DealBundle, ...] = ()
    verdict: BundleVerdict | None = None
    my_shares: Mapping[int, int] = field(default_factory=dict, repr=False)
    complain_against: tuple[int, ...] = ()
    own_echo: Echo | None = None
    echoes: tuple[Echo, ...] = ()
    own_complaints: Complaints | None = None
    complaints: tuple[Complaints, ...] = ()
    tally: ComplaintTally | None = None
    own_justification: Justification | None = None
    justifications: tuple[Justification, ...] = ()
    body: TranscriptBody | None = None
    info: PublicKeyInfo | None = None
    holders: tuple[int, ...] = ()
    abort_reason: str = ""


T = TypeVar("T")


def require(value: T | None, what: str) -> T:
    """A state field that the current phase guarantees (its absence is a bug)."""
    if value is None:
        raise DkgInternalError(f"{what} missing in a phase that requires it")
    return value

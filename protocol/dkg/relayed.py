"""The messages the coordinator relays to nodes (DESIGN.md §DKG), one frozen type
per phase. The coordinator has no signing key and is untrusted: what it relays is
either a proposal and an abort (which it may always send), or *sets of node-signed
messages* that each node re-verifies. ``CommitCertificate`` is the holders'
signatures over one transcript hash.

=========================  ==============================================
type                       phase it is accepted in (``phases.TRANSITIONS``)
=========================  ==============================================
``Proposal``               INIT
``OpenSet``                OPEN
``BundleSet``              DEAL
``EchoSet``                ECHO
``ComplaintSet``           COMPLAIN
``JustificationSet``       JUSTIFY
``CommitCertificate``      FINISH
``Abort``                  any phase before DONE / ABORTED
=========================  ==============================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from protocol.canonical import encode_canonical
from protocol.dkg import codec as c
from protocol.dkg.messages import Complaints, DealBundle, Echo, Justification, Open


class RelayedMessage:
    """Behaviour shared by the coordinator→node messages."""

    __slots__ = ()
    KIND: ClassVar[str]
    KEYS: ClassVar[tuple[str, ...]]

    def body(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.KIND, **self.body()}

    def encode(self) -> bytes:
        return encode_canonical(self.to_wire())

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        raise NotImplementedError

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises: DecodeError naming the first malformed field."""
        return cls.from_wire(c.load(data, cls.KIND), cls.KIND)


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposal(RelayedMessage):
    """Start a ceremony: which key, which nodes (manifest indices), t, and how many
    holders a commit needs (hashed into the ceremony id, so nodes enforce it)."""

    KIND: ClassVar[str] = "dkg/proposal"
    KEYS: ClassVar[tuple[str, ...]] = (
        "cluster", "key_id", "epoch", "threshold", "min_holders", "participants",
    )  # fmt: skip
    cluster: bytes
    key_id: str
    epoch: int
    threshold: int
    min_holders: int
    participants: tuple[int, ...]

    def body(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "key_id": self.key_id,
            "epoch": self.epoch,
            "threshold": self.threshold,
            "min_holders": self.min_holders,
            "participants": list(self.participants),
        }

    def parameters(self) -> tuple[bytes, str, int, int, int, tuple[int, ...]]:
        return (
            self.cluster,
            self.key_id,
            self.epoch,
            self.threshold,
            self.min_holders,
            self.participants,
        )

    @property
    def n(self) -> int:
        return len(self.participants)

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        m = c.as_map(value, field, cls.KIND, cls.KEYS)
        participants = c.as_indices(m["participants"], f"{field}.participants", min_items=2)
        n = len(participants)
        threshold = c.as_int(m["threshold"], f"{field}.threshold", 2, n)
        return cls(
            cluster=c.as_bytes(m["cluster"], f"{field}.cluster", c.CLUSTER_ID_LEN),
            key_id=c.as_key_id(m["key_id"], f"{field}.key_id"),
            epoch=c.as_int(m["epoch"], f"{field}.epoch", 0, 2**32 - 1),
            threshold=threshold,
            min_holders=c.as_int(m["min_holders"], f"{field}.min_holders", threshold, n),
            participants=participants,
        )

    def validate(self) -> Self:
        """Re-run the decoder's checks on a locally built proposal.

        Raises:
            DecodeError: the proposal would not decode.
        """
        return type(self).from_wire(self.to_wire(), self.KIND)


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenSet(RelayedMessage):
    """Every participant's ``Open`` (the ceremony id needs every nonce)."""

    KIND: ClassVar[str] = "dkg/open-set"
    KEYS: ClassVar[tuple[str, ...]] = ("opens",)
    opens: tuple[Open, ...]

    def body(self) -> dict[str, Any]:
        return {"opens": [m.to_wire() for m in self.opens]}

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        m = c.as_map(value, field, cls.KIND, cls.KEYS)
        return cls(
            opens=c.as_items(m["opens"], f"{field}.opens", c.MAX_PARTICIPANTS, Open.from_wire)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BundleSet(RelayedMessage):
    """Every bundle the coordinator received, in any order (two different bundles
    from one dealer are relayed on purpose: together they prove equivocation)."""

    KIND: ClassVar[str] = "dkg/bundle-set"
    KEYS: ClassVar[tuple[str, ...]] = ("bundles",)
    bundles: tuple[DealBundle, ...]

    def body(self) -> dict[str, Any]:
        return {"bundles": [m.to_wire() for m in self.bundles]}

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        m = c.as_map(value, field, cls.KIND, cls.KEYS)
        limit = 2 * c.MAX_PARTICIPANTS
        return cls(
            bundles=c.as_items(m["bundles"], f"{field}.bundles", limit, DealBundle.from_wire)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EchoSet(RelayedMessage):
    """The echoes of the nodes still taking part."""

    KIND: ClassVar[str] = "dkg/echo-set"
    KEYS: ClassVar[tuple[str, ...]] = ("echoes",)
    echoes: tuple[Echo, ...]

    def body(self) -> dict[str, Any]:
        return {"echoes": [m.to_wire() for m in self.echoes]}

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        m = c.as_map(value, field, cls.KIND, cls.KEYS)
        limit = c.MAX_PARTICIPANTS
        return cls(echoes=c.as_items(m["echoes"], f"{field}.echoes", limit, Echo.from_wire))


@dataclass(frozen=True, slots=True, kw_only=True)
class ComplaintSet(RelayedMessage):
    """The ``Complaints`` of the nodes still taking part (empty ones included)."""

    KIND: ClassVar[str] = "dkg/complaint-set"
    KEYS: ClassVar[tuple[str, ...]] = ("complaints",)
    complaints: tuple[Complaints, ...]

    def body(self) -> dict[str, Any]:
        return {"complaints": [m.to_wire() for m in self.complaints]}

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        m = c.as_map(value, field, cls.KIND, cls.KEYS)
        limit = c.MAX_PARTICIPANTS
        items = c.as_items(m["complaints"], f"{field}.complaints", limit, Complaints.from_wire)
        return cls(complaints=items)


@dataclass(frozen=True, slots=True, kw_only=True)
class JustificationSet(RelayedMessage):
    """The justifications of the dealers that had to answer complaints."""

    KIND: ClassVar[str] = "dkg/justification-set"
    KEYS: ClassVar[tuple[str, ...]] = ("justifications",)
    justifications: tuple[Justification, ...]

    def body(self) -> dict[str, Any]:
        return {"justifications": [m.to_wire() for m in self.justifications]}

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        m = c.as_map(value, field, cls.KIND, cls.KEYS)
        limit = 2 * c.MAX_PARTICIPANTS
        items = c.as_items(
            m["justifications"], f"{field}.justifications", limit, Justification.from_wire
        )
        return cls(justifications=items)


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitCertificate(RelayedMessage):
    """Step 4's commit: every holder's ``dkg-transcript`` signature over the same
    transcript hash. A node activates only if it verifies (and names it)."""

    KIND: ClassVar[str] = "dkg/commit"
    KEYS: ClassVar[tuple[str, ...]] = ("ceremony", "transcript_hash", "signatures")
    ceremony: bytes
    transcript_hash: bytes
    signatures: tuple[tuple[int, bytes], ...]

    @property
    def holders(self) -> tuple[int, ...]:
        return tuple(j for j, _ in self.signatures)

    def body(self) -> dict[str, Any]:
        return {
            "ceremony": self.ceremony,
            "transcript_hash": self.transcript_hash,
            "signatures": [[j, s] for j, s in self.signatures],
        }

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        m = c.as_map(value, field, cls.KIND, cls.KEYS)
        return cls(
            ceremony=c.as_bytes(m["ceremony"], f"{field}.ceremony", c.HASH_LEN),
            transcript_hash=c.as_bytes(m["transcript_hash"], f"{field}.transcript_hash", 32),
            signatures=c.as_indexed(m["signatures"], f"{field}.signatures", c.fixed(c.SIG_LEN)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Abort(RelayedMessage):
    """The coordinator ends the ceremony (it always may: the most it can do)."""

    KIND: ClassVar[str] = "dkg/abort"
    KEYS: ClassVar[tuple[str, ...]] = ("reason",)
    reason: str

    def body(self) -> dict[str, Any]:
        return {"reason": self.reason}

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        m = c.as_map(value, field, cls.KIND, cls.KEYS)
        return cls(reason=c.as_str(m["reason"], f"{field}.reason", c.MAX_REASON_CHARS))


RELAYED_MESSAGES: tuple[type[RelayedMessage], ...] = (
    Proposal,
    OpenSet,
    BundleSet,
    EchoSet,
    ComplaintSet,
    JustificationSet,
    CommitCertificate,
    Abort,
)
Relayed = (
    Proposal
    | OpenSet
    | BundleSet
    | EchoSet
    | ComplaintSet
    | JustificationSet
    | CommitCertificate
    | Abort
)
_BY_KIND: dict[str, Callable[[Any, str], RelayedMessage]] = {
    m.KIND: m.from_wire for m in RELAYED_MESSAGES
}


def decode_relayed(data: bytes) -> Relayed:
    """Decode any coordinator→node message by its ``kind``.

    Raises:
        DecodeError: unknown kind or malformed message.
    """
    msg: Relayed = c.decode_by_kind(data, _BY_KIND)  # type: ignore[assignment]
    return msg

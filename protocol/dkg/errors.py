"""Typed errors of the DKG (DESIGN.md §DKG), each saying whose fault it was.

Every error subclasses the one hierarchy in ``protocol.errors`` and carries a
``culprit``: the coordinator acting as relay, a dealer, a node, the caller, or the
operator's configuration. Raising one of these from a state machine never changes
its state (see ``protocol.dkg.phases``); messages name the field or the rule and
never carry a share, a polynomial coefficient or a key.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from protocol.errors import Fault, TkmsError, VerificationError


class CulpritKind(enum.Enum):
    """Who is to blame for a rejected message or an aborted ceremony."""

    RELAY = "relay"  # the coordinator relayed something an honest relay never would
    DEALER = "dealer"  # a dealer's own signed bundle or justification is at fault
    NODE = "node"  # a node missed a phase, refused, or sent something invalid
    COORDINATOR = "coordinator"  # the coordinator announced an abort (reason is its claim)
    CLIENT = "client"  # the request itself (e.g. a key id that is already active)
    LOCAL = "local"  # our own state or code: a bug


@dataclass(frozen=True, slots=True)
class Culprit:
    """A culprit kind plus the node indices it names (empty for the relay)."""

    kind: CulpritKind
    indices: tuple[int, ...] = ()

    @classmethod
    def relay(cls) -> Culprit:
        return cls(CulpritKind.RELAY)

    @classmethod
    def dealers(cls, *indices: int) -> Culprit:
        return cls(CulpritKind.DEALER, tuple(sorted(indices)))

    @classmethod
    def nodes(cls, *indices: int) -> Culprit:
        return cls(CulpritKind.NODE, tuple(sorted(indices)))

    def __str__(self) -> str:
        if not self.indices:
            return self.kind.value
        return f"{self.kind.value} {','.join(str(i) for i in self.indices)}"


class DkgError(TkmsError):
    """Base of the DKG's errors."""

    culprit: Culprit

    def __init__(self, message: str, culprit: Culprit) -> None:
        super().__init__(f"{message} (culprit: {culprit})")
        self.culprit = culprit


class DkgStateError(DkgError):
    """A message that is not allowed in the current phase (out of order, or after the
    ceremony ended). The sender broke the protocol; the state machine did not move."""

    fault: ClassVar[Fault] = Fault.PEER

    def __init__(self, phase: str, kind: str, culprit: Culprit) -> None:
        super().__init__(f"message {kind!r} is not accepted in phase {phase!r}", culprit)
        self.phase = phase
        self.kind = kind


class RelayFault(DkgError, VerificationError):
    """The relay delivered something an honest relay never would: a bad signature, a
    message for another ceremony, a set without this node's own message, a forged
    commit. Nothing changes; the node shell should abort the ceremony (``abort``)."""

    fault: ClassVar[Fault] = Fault.PEER

    def __init__(self, message: str) -> None:
        super().__init__(message, Culprit.relay())


class NodeMessageRejected(DkgError, VerificationError):
    """(Driver side) a node sent a message that is invalid for this ceremony. The
    driver did not record it; the shell may drop the node (``Driver.node_failed``)."""

    fault: ClassVar[Fault] = Fault.PEER

    def __init__(self, node: int, message: str) -> None:
        super().__init__(f"node {node}: {message}", Culprit.nodes(node))
        self.node = node


class ProposalRejected(DkgError):
    """A proposal that cannot start a ceremony on this node (another cluster, this
    node not a participant, a threshold out of range)."""

    fault: ClassVar[Fault] = Fault.CLIENT

    def __init__(self, message: str) -> None:
        super().__init__(message, Culprit(CulpritKind.CLIENT))


class DkgConfigError(DkgError):
    """A participant or driver configuration that is invalid (the operator's input)."""

    fault: ClassVar[Fault] = Fault.CONFIG

    def __init__(self, message: str) -> None:
        super().__init__(message, Culprit(CulpritKind.LOCAL))


class DkgInternalError(DkgError):
    """A transition the table does not allow was computed: a bug in this package."""

    fault: ClassVar[Fault] = Fault.LOCAL

    def __init__(self, message: str) -> None:
        super().__init__(message, Culprit(CulpritKind.LOCAL))

"""The DKG's phases and its ONE transition table per role (DESIGN.md §DKG).

Rule 1 (after h11 ``_state.py``): every phase change of a participant or a driver is
listed here; the state machines look the pair ``(phase, input)`` up in these tables
and raise ``DkgStateError`` (changing nothing) when it is missing, and a handler
whose computed next phase is not in the table's set is a bug (``DkgInternalError``).

Rule 2: terminal phases are sticky. ``DONE`` and ``ABORTED`` accept nothing.

Participant (node side)::

    INIT --Proposal--> OPEN --OpenSet--> DEAL --BundleSet--> ECHO --EchoSet--> COMPLAIN
    COMPLAIN --ComplaintSet--> JUSTIFY (some dealer must answer complaints)
                           \\-> FINISH  (no complaint to answer: share sealed as pending)
    JUSTIFY --JustificationSet--> FINISH --CommitCertificate--> DONE (key activated)
    any phase before DONE --Abort--> ABORTED
    INIT..JUSTIFY --deadline or local abort--> ABORTED
    (FINISH has neither: once a node has voted in the two-phase commit, only the
    coordinator's commit or abort may end it, or the key could end up active on some
    holders and destroyed on others.)

Driver (coordinator side) collects one message type per phase from the nodes still
taking part and advances when all are in or the phase deadline passes::

    OPEN -> DEAL -> ECHO -> COMPLAIN -> [JUSTIFY ->] SIGN -> COMMITTED
    any phase before COMMITTED -> ABORTED
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class Phase(enum.Enum):
    """A participant's phase: what it has done and what it waits for."""

    INIT = "init"  # created; waits for the Proposal
    OPEN = "open"  # sent Open; waits for the OpenSet
    DEAL = "deal"  # sent its DealBundle; waits for the BundleSet
    ECHO = "echo"  # sent its Echo; waits for the EchoSet
    COMPLAIN = "complain"  # sent its Complaints; waits for the ComplaintSet
    JUSTIFY = "justify"  # (maybe sent a Justification); waits for the JustificationSet
    FINISH = "finish"  # share sealed as pending, transcript signed; waits for the commit
    DONE = "done"  # key activated (terminal)
    ABORTED = "aborted"  # ceremony over, nothing active (terminal, sticky)

    def __str__(self) -> str:
        return self.value


# Inputs that are not messages: the phase deadline passed (``tick``), or the node
# shell gives up after a ``RelayFault`` (``abort``).
DEADLINE = "deadline"
LOCAL_ABORT = "local-abort"

_BEFORE_DONE = (
    Phase.INIT,
    Phase.OPEN,
    Phase.DEAL,
    Phase.ECHO,
    Phase.COMPLAIN,
    Phase.JUSTIFY,
    Phase.FINISH,
)
_HAS_DEADLINE = _BEFORE_DONE[:-1]


def _participant_table() -> Mapping[tuple[Phase, str], frozenset[Phase]]:
    p = Phase
    table: dict[tuple[Phase, str], frozenset[Phase]] = {
        (p.INIT, "dkg/proposal"): frozenset({p.OPEN, p.ABORTED}),
        (p.OPEN, "dkg/open-set"): frozenset({p.DEAL, p.ABORTED}),
        (p.DEAL, "dkg/bundle-set"): frozenset({p.ECHO, p.ABORTED}),
        (p.ECHO, "dkg/echo-set"): frozenset({p.COMPLAIN, p.ABORTED}),
        (p.COMPLAIN, "dkg/complaint-set"): frozenset({p.JUSTIFY, p.FINISH, p.ABORTED}),
        (p.JUSTIFY, "dkg/justification-set"): frozenset({p.FINISH, p.ABORTED}),
        (p.FINISH, "dkg/commit"): frozenset({p.DONE, p.ABORTED}),
    }
    for phase in _BEFORE_DONE:
        table[(phase, "dkg/abort")] = frozenset({p.ABORTED})
    for phase in _HAS_DEADLINE:
        table[(phase, DEADLINE)] = frozenset({phase, p.ABORTED})
        table[(phase, LOCAL_ABORT)] = frozenset({p.ABORTED})
    return MappingProxyType(table)


TRANSITIONS: Mapping[tuple[Phase, str], frozenset[Phase]] = _participant_table()


class DriverPhase(enum.Enum):
    """The coordinator's phase: which node message it is collecting."""

    OPEN = "open"  # collecting Open from every participant
    DEAL = "deal"  # collecting DealBundle
    ECHO = "echo"  # collecting Echo
    COMPLAIN = "complain"  # collecting Complaints
    JUSTIFY = "justify"  # collecting Justification from the dealers that must answer
    SIGN = "sign"  # collecting TranscriptSignature
    COMMITTED = "committed"  # commit certificate sent (terminal)
    ABORTED = "aborted"  # abort sent (terminal)

    def __str__(self) -> str:
        return self.value


# Inputs of the driver besides node messages.
NODE_FAILED = "node-failed"


def _driver_table() -> Mapping[tuple[DriverPhase, str], frozenset[DriverPhase]]:
    d = DriverPhase
    collecting = {
        d.OPEN: ("dkg/open", {d.DEAL}),
        d.DEAL: ("dkg/bundle", {d.ECHO}),
        d.ECHO: ("dkg/echo", {d.COMPLAIN}),
        d.COMPLAIN: ("dkg/complaints", {d.JUSTIFY, d.SIGN}),
        d.JUSTIFY: ("dkg/justification", {d.SIGN}),
        d.SIGN: ("dkg/transcript-signature", {d.COMMITTED}),
    }
    table: dict[tuple[DriverPhase, str], frozenset[DriverPhase]] = {}
    for phase, (kind, nexts) in collecting.items():
        # a message, a deadline or a failed node either keeps collecting, advances,
        # or (too few nodes left) aborts
        allowed = frozenset({phase, d.ABORTED, *nexts})
        for trigger in (kind, DEADLINE, NODE_FAILED):
            table[(phase, trigger)] = allowed
    return MappingProxyType(table)


DRIVER_TRANSITIONS: Mapping[tuple[DriverPhase, str], frozenset[DriverPhase]] = _driver_table()

"""The fault planner of ``tkms chaos`` (pure logic: no clock, no IO, seeded randomness).

The runner calls ``plan(now)`` for the faults to start now, ``lift_due(now)`` for the
faults whose hold time has passed, and ``recovered(name, now)`` /
``coordinator_recovered(now)`` when the coordinator's /healthz shows a node (or every
node) up again. It executes what they return; the planner only decides and keeps
the books: each node's phase, the events with their times, and a timeline of
change points that ``report`` classifies requests against.

Node phases: ``UP``; ``FAULTED`` (the fault is active: killed, stopped, partitioned,
delayed, or shut down for a restart); ``RECOVERING`` (the fault is lifted — process
restarted, continued, healed — but /healthz has not shown the node up since).

The down-budget rule: a node counts as *down* while it is FAULTED by a fault that
takes it out (everything but a delay short enough for its round trip to stay within
``node_deadline_s``) or RECOVERING. A fault that would take a node out is only
started while fewer than ``n - t`` nodes are down, so at most ``n - t`` are ever down
at a time. With ``overload``, every ``overload_every_s`` the planner lets the cluster
drain (no new faults) until every node is up and then takes ``n - t + 1`` nodes out
at once for ``overload_hold_s`` (stop, partition or a long delay: faults that lift at
once, so "enough nodes back" is a sharp instant). The hold must outlast
``node_deadline_s``: a request the coordinator is still waiting for when the nodes
come back simply succeeds. The coordinator is restarted at
``coordinator_first_s`` and then ``coordinator_every_s`` after it was last back, each
time from a whole cluster (the planner drains first, as for an overload episode);
nothing new starts until it is back.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace


class FaultKind(enum.Enum):
    KILL = "kill"  # SIGKILL; restarted when the hold ends
    STOP = "stop"  # SIGSTOP; SIGCONT when the hold ends
    PARTITION = "partition"  # proxy refuses or blackholes; healed when the hold ends
    DELAY = "delay"  # proxy adds latency per chunk; healed when the hold ends
    RESTART = "restart"  # SIGTERM (graceful); started again when the hold ends
    COORDINATOR_RESTART = "coordinator_restart"  # SIGTERM or SIGKILL, then started


EVENT_KINDS: tuple[str, ...] = tuple(k.value for k in FaultKind)
OVERLOAD_KINDS = (FaultKind.STOP, FaultKind.PARTITION, FaultKind.DELAY)


class Phase(enum.Enum):
    UP = "up"
    FAULTED = "faulted"
    RECOVERING = "recovering"


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    node: str | None  # None for the coordinator
    started_at: float
    hold_s: float
    takes_down: bool = True  # False only for a delay within the node deadline
    blackhole: bool = False  # partition: drop bytes instead of resetting
    delay_s: float = 0.0  # delay: added per chunk, each direction
    hard: bool = False  # coordinator restart: SIGKILL instead of SIGTERM
    overload: bool = False  # part of an overload episode

    @property
    def lift_at(self) -> float:
        return self.started_at + self.hold_s

    def describe(self) -> str:
        what = self.kind.value
        if self.kind is FaultKind.PARTITION:
            what += " (blackhole)" if self.blackhole else " (refuse)"
        elif self.kind is FaultKind.DELAY:
            what += f" {self.delay_s * 1000:.0f} ms"
        elif self.kind is FaultKind.COORDINATOR_RESTART:
            what += " (SIGKILL)" if self.hard else " (SIGTERM)"
        return what


DEFAULT_WEIGHTS: Mapping[FaultKind, int] = {
    FaultKind.KILL: 3,
    FaultKind.STOP: 3,
    FaultKind.PARTITION: 3,
    FaultKind.DELAY: 3,
    FaultKind.RESTART: 2,
}


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    """Timing of the faults (seconds)."""

    first_fault_s: float = 1.0
    gap_s: tuple[float, float] = (0.4, 1.5)  # between two fault starts
    hold_s: tuple[float, float] = (1.0, 3.5)  # how long a node fault lasts
    coordinator_hold_s: tuple[float, float] = (0.2, 1.0)
    coordinator_first_s: float | None = 5.0  # first coordinator restart (None: never)
    coordinator_every_s: float = 20.0  # from the coordinator back to its next restart
    delays_s: tuple[float, ...] = (0.02, 0.1, 0.3, 3.0)
    node_deadline_s: float = 2.0  # a node slower than this per round trip is down
    settle_s: float = 0.5  # /healthz must be this much younger than the lift
    overload_first_s: float = 8.0  # the first overload episode, at the earliest
    overload_every_s: float = 12.0  # from the end of one episode to the next
    overload_hold_s: tuple[float, float] = (3.5, 5.0)  # past node_deadline_s: 503s show
    weights: Mapping[FaultKind, int] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    def __post_init__(self) -> None:
        for name in ("gap_s", "hold_s", "coordinator_hold_s", "overload_hold_s"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be an interval (lo <= hi, lo >= 0)")
        if self.overload_hold_s[0] <= self.node_deadline_s:
            raise ValueError("overload_hold_s must outlast node_deadline_s")
        if not self.delays_s or min(self.delays_s) <= 0:
            raise ValueError("delays_s must be positive")
        if not self.node_deadline_s > 0 or self.settle_s < 0:
            raise ValueError("node_deadline_s must be positive and settle_s >= 0")
        if any(w < 0 for w in self.weights.values()) or not any(self.weights.values()):
            raise ValueError("weights must be >= 0 and not all zero")
        if FaultKind.COORDINATOR_RESTART in self.weights:
            raise ValueError("coordinator restarts are timed by coordinator_first/every_s")


@dataclass(frozen=True, slots=True)
class Event:
    """One step of a fault: ``start``, ``lift`` (restarted/continued/healed) or
    ``up`` (/healthz shows it back)."""

    time: float
    kind: FaultKind
    node: str | None
    action: str
    detail: str = ""

    def to_json(self, origin: float) -> dict[str, object]:
        return {
            "t": round(self.time - origin, 3),
            "kind": self.kind.value,
            "node": self.node or "coordinator",
            "action": self.action,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state from ``time`` until the next snapshot."""

    time: float
    faulted: frozenset[str]  # nodes whose fault is active and takes them out
    down: frozenset[str]  # faulted, plus recovering
    coordinator_down: bool
    overload: bool  # an overload episode's faults are active


@dataclass(slots=True)
class _Node:
    phase: Phase = Phase.UP
    fault: Fault | None = None
    lifted_at: float = 0.0


class Planner:
    """Decides the faults of one chaos run and keeps its books (module header)."""

    def __init__(
        self,
        nodes: Sequence[str],
        threshold: int,
        *,
        overload: bool = False,
        seed: int | None = None,
        config: ScheduleConfig | None = None,
        start: float = 0.0,
    ) -> None:
        if not 1 <= threshold <= len(nodes) or len(set(nodes)) != len(nodes):
            raise ValueError("need distinct node names and 1 <= threshold <= n")
        self.names = tuple(nodes)
        self.threshold = threshold
        self.budget = len(nodes) - threshold
        self.overload = overload
        self.config = config or ScheduleConfig()
        self.rng = random.Random(seed)
        self.start = start
        self._nodes = {name: _Node() for name in self.names}
        self._coordinator: Fault | None = None
        self._coordinator_phase = Phase.UP
        self._next_fault = start + self.config.first_fault_s
        self._next_overload = start + self.config.overload_first_s
        first = self.config.coordinator_first_s
        self._next_coordinator = math.inf if first is None else start + first
        self._bag: list[FaultKind] = []
        self.events: list[Event] = []
        self.timeline: list[Snapshot] = []
        self.counts: dict[str, int] = dict.fromkeys(EVENT_KINDS, 0)
        self.overload_episodes = 0
        self._snapshot(start)

    # -- state -------------------------------------------------------------------------

    def phase(self, name: str) -> Phase:
        return self._nodes[name].phase

    def fault_of(self, name: str) -> Fault | None:
        return self._nodes[name].fault

    def faulted(self) -> frozenset[str]:
        return frozenset(
            n
            for n, s in self._nodes.items()
            if s.phase is Phase.FAULTED and s.fault is not None and s.fault.takes_down
        )

    def down(self) -> frozenset[str]:
        recovering = {n for n, s in self._nodes.items() if s.phase is Phase.RECOVERING}
        return self.faulted() | recovering

    def all_up(self) -> bool:
        return all(s.phase is Phase.UP for s in self._nodes.values())

    @property
    def coordinator_down(self) -> bool:
        return self._coordinator_phase is not Phase.UP

    def coordinator_waiting(self, polled_at: float) -> bool:
        """Whether a /healthz poll begun at ``polled_at`` may confirm the coordinator
        back (it is recovering, and the poll is ``settle_s`` younger than the lift)."""
        lifted = [e.time for e in self.events if e.node is None and e.action == "lift"]
        return (
            self._coordinator_phase is Phase.RECOVERING
            and bool(lifted)
            and polled_at >= lifted[-1] + self.config.settle_s
        )

    def active_faults(self) -> list[Fault]:
        faults = [s.fault for s in self._nodes.values() if s.fault and s.phase is Phase.FAULTED]
        if self._coordinator is not None and self._coordinator_phase is Phase.FAULTED:
            faults.append(self._coordinator)
        return faults

    def _snapshot(self, now: float) -> None:
        overload = any(f.overload for f in self.active_faults())
        snap = Snapshot(now, self.faulted(), self.down(), self.coordinator_down, overload)
        if self.timeline and self.timeline[-1].time == now:
            self.timeline[-1] = snap
        else:
            self.timeline.append(snap)

    def _event(self, now: float, fault: Fault, action: str, detail: str = "") -> None:
        self.events.append(Event(now, fault.kind, fault.node, action, detail))

    # -- decisions ---------------------------------------------------------------------

    def _uniform(self, bounds: tuple[float, float]) -> float:
        return self.rng.uniform(*bounds)

    def _draw_order(self) -> list[FaultKind]:
        """Kinds in the order to try: the bag (each kind ``weight`` times, shuffled,
        refilled when empty) so every kind with a weight comes up in each round."""
        if not self._bag:
            for kind, weight in self.config.weights.items():
                self._bag.extend([kind] * weight)
            self.rng.shuffle(self._bag)
        return list(self._bag)

    def _node_fault(self, kind: FaultKind, node: str, now: float, *, overload: bool) -> Fault:
        cfg = self.config
        hold = self._uniform(cfg.overload_hold_s if overload else cfg.hold_s)
        if kind is FaultKind.PARTITION:
            blackhole = self.rng.random() < 0.5
            return Fault(kind, node, now, hold, blackhole=blackhole, overload=overload)
        if kind is FaultKind.DELAY:
            choices = [d for d in cfg.delays_s if 2 * d >= cfg.node_deadline_s] if overload else []
            delay = self.rng.choice(choices or list(cfg.delays_s))
            slow = 2 * delay >= cfg.node_deadline_s
            return Fault(kind, node, now, hold, takes_down=slow, delay_s=delay, overload=overload)
        return Fault(kind, node, now, hold, overload=overload)

    def _place(self, kind: FaultKind, now: float) -> Fault | None:
        """A node fault of ``kind`` that may start now under the budget, or None."""
        candidates = [n for n in self.names if self._nodes[n].phase is Phase.UP]
        if not candidates:
            return None
        fault = self._node_fault(kind, self.rng.choice(candidates), now, overload=False)
        if fault.takes_down and len(self.down()) + 1 > self.budget:
            return None
        return fault

    def _begin(self, fault: Fault, now: float) -> None:
        self.counts[fault.kind.value] += 1
        if fault.node is None:
            self._coordinator = fault
            self._coordinator_phase = Phase.FAULTED
            self._next_coordinator = math.inf  # set again when it is back
        else:
            self._nodes[fault.node] = _Node(Phase.FAULTED, fault)
        self._event(now, fault, "start", fault.describe())

    def plan(self, now: float) -> list[Fault]:
        """The faults to start now (already booked as started)."""
        if self.coordinator_down:
            return []
        if now >= self._next_coordinator:
            if not self.all_up():
                return []  # drain: a coordinator restart starts from a whole cluster
            hold = self._uniform(self.config.coordinator_hold_s)
            restart = Fault(
                FaultKind.COORDINATOR_RESTART, None, now, hold, hard=self.rng.random() < 0.5
            )
            self._begin(restart, now)
            self._snapshot(now)
            return [restart]
        if self.overload and now >= self._next_overload:
            if not self.all_up():
                return []  # drain: the episode starts from a whole cluster
            k = min(self.budget + 1, len(self.names))
            victims = self.rng.sample(self.names, k)
            faults = [
                self._node_fault(self.rng.choice(OVERLOAD_KINDS), v, now, overload=True)
                for v in victims
            ]
            hold = faults[0].hold_s  # one instant for the whole episode's lift
            faults = [replace(f, hold_s=hold) for f in faults]
            for f in faults:
                self._begin(f, now)
            self.overload_episodes += 1
            self._next_overload = now + hold + self.config.overload_every_s
            self._next_fault = now + hold + self._uniform(self.config.gap_s)
            self._snapshot(now)
            return faults
        if now < self._next_fault:
            return []
        for kind in self._draw_order():
            fault = self._place(kind, now)
            if fault is not None:
                self._bag.remove(kind)
                self._begin(fault, now)
                self._next_fault = now + self._uniform(self.config.gap_s)
                self._snapshot(now)
                return [fault]
        return []

    def lift_due(self, now: float) -> list[Fault]:
        """The faults whose hold has passed, booked as lifted (now RECOVERING)."""
        lifted = []
        for name in self.names:
            state = self._nodes[name]
            if state.phase is Phase.FAULTED and state.fault and state.fault.lift_at <= now:
                # a node that was never out (a short delay) is up as soon as it is healed
                phase = Phase.RECOVERING if state.fault.takes_down else Phase.UP
                self._nodes[name] = _Node(phase, state.fault, now)
                self._event(now, state.fault, "lift")
                lifted.append(state.fault)
        coord = self._coordinator
        if coord and self._coordinator_phase is Phase.FAULTED and coord.lift_at <= now:
            self._coordinator_phase = Phase.RECOVERING
            self._event(now, coord, "lift")
            lifted.append(coord)
        if lifted:
            self._snapshot(now)
        return lifted

    def waiting_for_health(self, polled_at: float) -> list[str]:
        """Recovering nodes a /healthz poll begun at ``polled_at`` may confirm."""
        return [
            n
            for n, s in self._nodes.items()
            if s.phase is Phase.RECOVERING and polled_at >= s.lifted_at + self.config.settle_s
        ]

    def recovered(self, name: str, now: float) -> None:
        state = self._nodes[name]
        if state.phase is not Phase.RECOVERING or state.fault is None:
            raise ValueError(f"{name} is not recovering")
        self._event(now, state.fault, "up")
        self._nodes[name] = _Node()
        self._snapshot(now)

    def coordinator_recovered(self, now: float) -> None:
        if self._coordinator_phase is not Phase.RECOVERING or self._coordinator is None:
            raise ValueError("the coordinator is not recovering")
        self._event(now, self._coordinator, "up")
        self._coordinator_phase = Phase.UP
        self._coordinator = None
        self._next_coordinator = now + self.config.coordinator_every_s
        self._snapshot(now)

    def lift_all(self, now: float) -> list[Fault]:
        """End of the run: lift every active fault at once."""
        for state in self._nodes.values():
            if state.phase is Phase.FAULTED and state.fault is not None:
                state.fault = replace(state.fault, hold_s=max(0.0, now - state.fault.started_at))
        c = self._coordinator
        if c is not None and self._coordinator_phase is Phase.FAULTED:
            self._coordinator = replace(c, hold_s=max(0.0, now - c.started_at))
        return self.lift_due(now)

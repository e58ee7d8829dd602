"""The numbers of a chaos run and its promise (pure: samples and timeline in, JSON out).

Each request is classified by the planner's timeline over its lifetime [sent, done]:

``budget``       at most n - t nodes down the whole time and the coordinator up;
``overload``     more than n - t down at some point (an overload episode or its
                 recovery), coordinator up;
``coordinator``  the coordinator was restarting at some point.

The promise (``promise_failures``): in ``budget``, at least ``min_availability``
(99.5 %) succeed; no returned signature is invalid or left unchecked; in
``overload`` every failure is a 503 that names missing nodes and comes back within
``fast_503_s``; after each overload episode's nodes are back (the instant its faults
are lifted) requests succeed again within ``max_recovery_s`` (5 s).

Recovery after an instant L is the time from L to the end of the first successful
request that ends after L. ``max_recovery_s`` covers the overload episodes;
``coordinator_recovery_s`` the coordinator restarts (from its new process starting).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cluster.chaos.load import OK, UNAVAILABLE, Sample
from cluster.chaos.schedule import Event, FaultKind, Snapshot

BUDGET, OVERLOAD, COORDINATOR = "budget", "overload", "coordinator"
MAX_FAILED_LISTED = 50
CLASSES = (BUDGET, OVERLOAD, COORDINATOR)


@dataclass(frozen=True, slots=True)
class Promise:
    min_availability: float = 0.995
    fast_503_s: float = 5.0
    max_recovery_s: float = 5.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class Timeline:
    """The planner's snapshots, searchable by time."""

    def __init__(self, snapshots: Sequence[Snapshot], budget: int) -> None:
        if not snapshots:
            raise ValueError("an empty timeline")
        self.snapshots = list(snapshots)
        self.times = [s.time for s in self.snapshots]
        self.budget = budget

    def during(self, start: float, end: float) -> list[Snapshot]:
        first = max(0, bisect.bisect_right(self.times, start) - 1)
        last = bisect.bisect_right(self.times, end)
        return self.snapshots[first:last] or [self.snapshots[first]]

    def classify(self, sample: Sample) -> str:
        spans = self.during(sample.sent, sample.done)
        if any(s.coordinator_down for s in spans):
            return COORDINATOR
        if max(len(s.down) for s in spans) > self.budget:
            return OVERLOAD
        return BUDGET

    def back_instants(self) -> list[float]:
        """Instants when the faults in force drop from over the budget to within it."""
        out = []
        for prev, cur in zip(self.snapshots, self.snapshots[1:], strict=False):
            if len(prev.faulted) > self.budget >= len(cur.faulted):
                out.append(cur.time)
        return out


def recovery_after(instant: float, samples: Sequence[Sample]) -> float | None:
    """Seconds from ``instant`` to the end of the first success ending after it."""
    ends = [s.done for s in samples if s.outcome == OK and s.done >= instant]
    return min(ends) - instant if ends else None


def coordinator_back_instants(events: Sequence[Event]) -> list[float]:
    return [
        e.time for e in events if e.kind is FaultKind.COORDINATOR_RESTART and e.action == "lift"
    ]


@dataclass(frozen=True, slots=True)
class Analysis:
    result: dict[str, Any]
    failures: list[str]


def analyse(
    *,
    samples: Sequence[Sample],
    sent: int,
    unverified: int,
    timeline: Sequence[Snapshot],
    events: Sequence[Event],
    counts: dict[str, int],
    n: int,
    threshold: int,
    names: Sequence[str],
    load_end: float,
    origin: float,
    signatures: list[dict[str, Any]],
    promise: Promise | None = None,
) -> Analysis:
    """The contract's JSON object (plus added fields) and the promise's failures."""
    rule = promise or Promise()
    tl = Timeline(timeline, n - threshold)
    by_class: dict[str, list[Sample]] = {c: [] for c in CLASSES}
    for s in samples:
        by_class[tl.classify(s)].append(s)
    ok_latencies = [s.latency_s * 1000 for s in samples if s.outcome == OK]
    unavailable = [s for s in samples if s.outcome == UNAVAILABLE]
    known = set(names)
    failures: list[str] = []

    budget = by_class[BUDGET]
    budget_ok = sum(1 for s in budget if s.outcome == OK)
    availability = budget_ok / len(budget) if budget else 0.0
    if not budget:
        failures.append("no request ran with at most n-t nodes down")
    elif availability < rule.min_availability:
        worst = sorted({s.outcome for s in budget if s.outcome != OK})
        failures.append(
            f"availability with <= n-t down {availability:.4f} < {rule.min_availability} "
            f"({len(budget) - budget_ok} of {len(budget)} failed: {', '.join(worst)})"
        )
    invalid = [s for s in samples if s.outcome == "invalid"]
    if invalid:
        failures.append(f"{len(invalid)} invalid signatures (first: {invalid[0].detail})")
    if unverified:
        failures.append(f"{unverified} returned signatures were never checked")

    overload_failed = [s for s in by_class[OVERLOAD] if s.outcome != OK]
    not_503 = [s for s in overload_failed if s.outcome != UNAVAILABLE]
    unnamed = [s for s in overload_failed if s.outcome == UNAVAILABLE and not _named(s, known)]
    slow = [s for s in overload_failed if s.latency_s > rule.fast_503_s]
    if not_503:
        kinds = sorted({s.outcome for s in not_503})
        failures.append(f"{len(not_503)} overload failures were not 503 ({', '.join(kinds)})")
    if unnamed:
        failures.append(f"{len(unnamed)} 503s did not name missing nodes of the cluster")
    if slow:
        failures.append(f"{len(slow)} overload failures took over {rule.fast_503_s:g} s")

    recoveries: list[dict[str, Any]] = []
    for cause, instants in (
        (OVERLOAD, tl.back_instants()),
        (COORDINATOR, coordinator_back_instants(events)),
    ):
        for at in instants:
            if at >= load_end:
                continue  # lifted after the load stopped: nothing to measure
            rec = recovery_after(at, samples)
            recoveries.append({"cause": cause, "t": round(at - origin, 3), "seconds": _round(rec)})
            if rec is None:
                failures.append(f"no request succeeded after the {cause} at t={at - origin:.1f}s")
            elif cause == OVERLOAD and rec > rule.max_recovery_s:
                failures.append(
                    f"recovery after the overload at t={at - origin:.1f}s took {rec:.2f} s "
                    f"> {rule.max_recovery_s:g} s"
                )
    node_rec = [
        r["seconds"] for r in recoveries if r["cause"] == OVERLOAD and r["seconds"] is not None
    ]
    coord_rec = [
        r["seconds"] for r in recoveries if r["cause"] == COORDINATOR and r["seconds"] is not None
    ]

    result: dict[str, Any] = {
        "sent": sent,
        "succeeded": sum(1 for s in samples if s.outcome == OK),
        "failed_503": len(unavailable),
        "invalid": len(invalid),
        "p50_ms": round(percentile(ok_latencies, 50), 2),
        "p99_ms": round(percentile(ok_latencies, 99), 2),
        "max_recovery_s": round(max(node_rec, default=0.0), 3),
        "events": {k: int(counts.get(k, 0)) for k in counts},
        "samples": signatures,
        "nodes": n,
        "threshold": threshold,
        "availability": round(availability, 6),
        "unverified": unverified,
        "failed_other": sum(1 for s in samples if s.outcome not in (OK, UNAVAILABLE, "invalid")),
        "max_503_ms": round(max((s.latency_s * 1000 for s in unavailable), default=0.0), 2),
        "coordinator_recovery_s": round(max(coord_rec, default=0.0), 3),
        "classes": {c: _class_summary(by_class[c]) for c in CLASSES},
        "recoveries": recoveries,
        "failedRequests": [
            _failed(s, tl.classify(s), origin)
            for s in sorted(samples, key=lambda s: s.sent)
            if s.outcome != OK
        ][:MAX_FAILED_LISTED],
    }
    return Analysis(result, failures)


def _failed(sample: Sample, cls: str, origin: float) -> dict[str, Any]:
    return {
        "t": round(sample.sent - origin, 3),
        "class": cls,
        "outcome": sample.outcome,
        "status": sample.status,
        "latency_ms": round(sample.latency_s * 1000, 1),
        "missing": list(sample.missing),
        "detail": sample.detail[:200],
    }


def _named(sample: Sample, known: set[str]) -> bool:
    return bool(sample.missing) and set(sample.missing) <= known


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _class_summary(samples: Sequence[Sample]) -> dict[str, Any]:
    outcomes: dict[str, int] = {}
    for s in samples:
        outcomes[s.outcome] = outcomes.get(s.outcome, 0) + 1
    return {
        "sent": len(samples),
        "succeeded": outcomes.get(OK, 0),
        "outcomes": dict(sorted(outcomes.items())),
    }

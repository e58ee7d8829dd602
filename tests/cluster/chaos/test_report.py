"""The chaos report (pure): requests are classified by the timeline over their whole
lifetime, recoveries are measured from the instant enough nodes are back, and each
clause of the promise fails on its own when broken."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.chaos.load import HTTP_ERROR, INVALID, OK, TIMEOUT, UNAVAILABLE, Sample
from cluster.chaos.report import (
    BUDGET,
    COORDINATOR,
    OVERLOAD,
    Promise,
    Timeline,
    analyse,
    percentile,
    recovery_after,
)
from cluster.chaos.schedule import EVENT_KINDS, Event, FaultKind, Snapshot

NAMES = ["node1", "node2", "node3", "node4", "node5"]
E: frozenset[str] = frozenset()
ABC = frozenset({"node1", "node2", "node3"})

# 0-10 s: two down (the budget); 10-13 s: overload; 13-14 s: recovering; 20-22 s:
# the coordinator restarting (lifted at 20.5 s)
TIMELINE = [
    Snapshot(0.0, frozenset({"node4", "node5"}), frozenset({"node4", "node5"}), False, False),
    Snapshot(10.0, ABC, ABC, False, True),
    Snapshot(13.0, E, ABC, False, False),
    Snapshot(14.0, E, E, False, False),
    Snapshot(20.0, E, E, True, False),
    Snapshot(22.0, E, E, False, False),
]
EVENTS = [
    Event(20.0, FaultKind.COORDINATOR_RESTART, None, "start"),
    Event(20.5, FaultKind.COORDINATOR_RESTART, None, "lift"),
    Event(22.0, FaultKind.COORDINATOR_RESTART, None, "up"),
]


def ok(sent: float, done: float) -> Sample:
    return Sample(sent, done, OK, 200)


def unavailable(sent: float, done: float, missing: tuple[str, ...] = ("node1",)) -> Sample:
    return Sample(sent, done, UNAVAILABLE, 503, missing)


def run(samples: list[Sample], **kw: Any) -> tuple[dict[str, Any], list[str]]:
    a = analyse(
        samples=samples,
        sent=len(samples),
        unverified=kw.pop("unverified", 0),
        timeline=TIMELINE,
        events=EVENTS,
        counts=dict.fromkeys(EVENT_KINDS, 1),
        n=5,
        threshold=3,
        names=NAMES,
        load_end=30.0,
        origin=0.0,
        signatures=[],
        **kw,
    )
    return a.result, a.failures


def healthy_background() -> list[Sample]:
    """200 budget-class successes, a recovery 0.4 s after the overload ends and 0.9 s
    after the coordinator restarted."""
    budget = [ok(i * 0.04, i * 0.04 + 0.03) for i in range(200)]
    return [*budget, ok(13.2, 13.4), ok(20.6, 21.4), ok(25.0, 25.1)]


def test_classification_spans_the_whole_request() -> None:
    tl = Timeline(TIMELINE, budget=2)
    assert tl.classify(ok(1.0, 1.1)) == BUDGET
    assert tl.classify(ok(9.9, 10.1)) == OVERLOAD  # ended inside the episode
    assert tl.classify(ok(13.5, 13.6)) == OVERLOAD  # still recovering: down
    assert tl.classify(ok(14.5, 14.6)) == BUDGET
    assert tl.classify(ok(19.0, 21.0)) == COORDINATOR
    assert tl.back_instants() == [13.0]


def test_recovery_is_to_the_first_success_ending_after_the_instant() -> None:
    samples = [ok(12.0, 12.5), unavailable(13.0, 13.1), ok(13.1, 13.9), ok(13.5, 13.6)]
    assert recovery_after(13.0, samples) == pytest.approx(0.6)
    assert recovery_after(14.0, samples) is None


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0


def test_a_healthy_run_keeps_the_promise_and_has_the_contract_shape() -> None:
    result, failures = run(healthy_background())
    assert failures == []
    contract = {"sent", "succeeded", "failed_503", "invalid", "p50_ms", "p99_ms"}
    assert contract | {"max_recovery_s", "events", "samples"} <= set(result)
    assert set(result["events"]) == set(EVENT_KINDS)
    assert result["max_recovery_s"] == pytest.approx(0.4)
    assert result["coordinator_recovery_s"] == pytest.approx(0.9)
    assert result["availability"] == 1.0
    assert result["classes"][BUDGET]["sent"] == 201  # the 25 s one is in budget too


def test_availability_below_99_5_percent_fails() -> None:
    samples = healthy_background()
    samples[0] = Sample(0.0, 0.1, TIMEOUT)  # 1 of 201 failed: 99.50 % - holds
    _, failures = run(samples)
    assert failures == []
    samples[1] = unavailable(0.04, 0.05)  # 2 of 201: 99.0 %
    result, failures = run(samples)
    assert len(failures) == 1 and "availability" in failures[0]
    listed = result["failedRequests"]
    assert [(f["t"], f["class"], f["outcome"]) for f in listed] == [
        (0.0, BUDGET, TIMEOUT),
        (0.04, BUDGET, UNAVAILABLE),
    ]
    assert listed[1]["missing"] == ["node1"]


def test_one_invalid_or_unchecked_signature_fails() -> None:
    _, failures = run([*healthy_background(), Sample(5.0, 5.1, INVALID, 200, (), 1, "bad")])
    assert any("invalid" in f for f in failures)
    _, failures = run(healthy_background(), unverified=1)
    assert any("never checked" in f for f in failures)


def test_overload_failures_must_be_fast_named_503s() -> None:
    base = healthy_background()
    _, failures = run([*base, unavailable(11.0, 11.2, ("node1", "node2", "node3"))])
    assert failures == []
    _, failures = run([*base, unavailable(11.0, 11.2, ())])
    assert any("did not name" in f for f in failures)
    _, failures = run([*base, unavailable(11.0, 11.2, ("node9",))])
    assert any("did not name" in f for f in failures)
    _, failures = run([*base, Sample(11.0, 11.2, HTTP_ERROR, 500)])
    assert any("not 503" in f for f in failures)
    _, failures = run([*base, unavailable(10.0, 12.9)], promise=Promise(fast_503_s=2.0))
    assert any("took over" in f for f in failures)


def test_slow_recovery_after_overload_fails() -> None:
    samples = [s for s in healthy_background() if s.sent != 13.2]
    _, failures = run(samples)  # next success after 13.0 ends at 21.4: 8.4 s
    assert any("recovery after the overload" in f for f in failures)
    samples = [s for s in samples if s.done < 13.0]  # nothing succeeds after 13 s
    _, failures = run(samples)
    assert any("no request succeeded after the overload" in f for f in failures)

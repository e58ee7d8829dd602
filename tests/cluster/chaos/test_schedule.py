"""The fault planner's down-budget rule, simulated with seeded randomness (pure logic):
never more than n-t nodes down without --overload; with it, more only during an
overload episode; faults only on nodes that are up; coordinator restarts only on a
whole cluster; every kind comes up; the same seed plans the same run."""

from __future__ import annotations

import random

import pytest

from cluster.chaos.schedule import (
    EVENT_KINDS,
    FaultKind,
    Phase,
    Planner,
    ScheduleConfig,
)

NAMES = [f"node{i}" for i in range(1, 6)]
TICK = 0.05


def names_of(n: int) -> list[str]:
    return [f"node{i}" for i in range(1, n + 1)]


def simulate(planner: Planner, seconds: float, seed: int) -> list[frozenset[str]]:
    """Drive a planner like the runner does; /healthz confirms a recovering node (or
    the coordinator) after a random extra lag. Checks the per-tick invariants and
    returns the down set at every tick."""
    health = random.Random(seed)
    seen: list[frozenset[str]] = []
    coordinator_back_at: float | None = None
    now = planner.start
    while now < planner.start + seconds:
        for fault in planner.lift_due(now):
            if fault.node is None:
                coordinator_back_at = now + health.uniform(0.2, 2.0)
        if coordinator_back_at is not None and now >= coordinator_back_at:
            planner.coordinator_recovered(now)
            coordinator_back_at = None
        if not planner.coordinator_down:
            for name in planner.waiting_for_health(now):
                if health.random() < 0.3:
                    planner.recovered(name, now)
        up_before = {n for n in planner.names if planner.phase(n) is Phase.UP}
        coordinator_was_down = planner.coordinator_down
        all_up_before = planner.all_up()
        for fault in planner.plan(now):
            assert not coordinator_was_down, "a fault started while the coordinator was down"
            if fault.node is None:
                assert all_up_before, "coordinator restart while a node was not up"
            else:
                assert fault.node in up_before, f"{fault.node} faulted twice"
        down = planner.down()
        if len(down) > planner.budget:
            # past the budget only with an overload episode's nodes, and only those
            assert planner.overload
            for name in down:
                fault = planner.fault_of(name)
                assert fault is not None and fault.overload, (now, name, fault)
        seen.append(down)
        now = round(now + TICK, 6)
    return seen


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize(("n", "t"), [(5, 3), (4, 2), (7, 5), (3, 2)])
def test_never_more_than_n_minus_t_down_without_overload(seed: int, n: int, t: int) -> None:
    planner = Planner(names_of(n), t, seed=seed)
    downs = simulate(planner, 40.0, seed)
    assert max(len(d) for d in downs) <= n - t
    assert all(len(s.down) <= n - t for s in planner.timeline)
    # the budget is used, not just respected: some moment has n-t down
    assert max(len(s.down) for s in planner.timeline) == n - t


@pytest.mark.parametrize("seed", range(10))
def test_overload_goes_past_the_budget_only_in_episodes(seed: int) -> None:
    planner = Planner(NAMES, 3, overload=True, seed=seed)
    downs = simulate(planner, 50.0, seed)
    assert planner.overload_episodes >= 2
    assert max(len(d) for d in downs) == planner.budget + 1
    episodes = [s for s in planner.timeline if s.overload]
    assert episodes and all(len(s.faulted) == planner.budget + 1 for s in episodes)


@pytest.mark.parametrize("seed", range(10))
def test_every_kind_comes_up_in_a_short_run(seed: int) -> None:
    planner = Planner(NAMES, 3, seed=seed)
    simulate(planner, 24.0, seed)
    assert all(planner.counts[k] > 0 for k in EVENT_KINDS), planner.counts


def test_coordinator_restarts_are_spaced() -> None:
    planner = Planner(NAMES, 3, seed=7)
    simulate(planner, 60.0, 7)
    assert set(planner.counts) == set(EVENT_KINDS)
    assert all(planner.counts[k] > 0 for k in EVENT_KINDS), planner.counts
    coord = [
        e.time
        for e in planner.events
        if e.kind is FaultKind.COORDINATOR_RESTART and e.action == "start"
    ]
    back = [
        e.time
        for e in planner.events
        if e.kind is FaultKind.COORDINATOR_RESTART and e.action == "up"
    ]
    assert len(coord) >= 2
    assert coord[0] >= planner.start + (planner.config.coordinator_first_s or 0)
    gaps = [start - up for up, start in zip(back, coord[1:], strict=False)]
    assert all(g >= planner.config.coordinator_every_s for g in gaps)


def test_the_same_seed_plans_the_same_run_and_another_seed_does_not() -> None:
    runs = []
    for seed in (3, 3, 4):
        planner = Planner(NAMES, 3, seed=seed)
        simulate(planner, 20.0, 99)
        runs.append([(e.time, e.kind, e.node, e.action, e.detail) for e in planner.events])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_no_budget_means_only_harmless_delays_and_coordinator_restarts() -> None:
    planner = Planner(names_of(3), 3, seed=1)
    simulate(planner, 60.0, 1)
    assert all(len(s.down) == 0 for s in planner.timeline)
    for kind in ("kill", "stop", "partition", "restart"):
        assert planner.counts[kind] == 0
    assert planner.counts["delay"] > 0
    delays = [e for e in planner.events if e.kind is FaultKind.DELAY and e.action == "start"]
    limit = planner.config.node_deadline_s
    assert all(float(e.detail.split()[1]) * 2 / 1000 < limit for e in delays)


def test_a_slow_delay_counts_as_down_and_a_fast_one_does_not() -> None:
    cfg = ScheduleConfig(
        weights={FaultKind.DELAY: 1}, delays_s=(0.05, 5.0), coordinator_first_s=None
    )
    planner = Planner(NAMES, 3, seed=5, config=cfg)
    simulate(planner, 30.0, 5)
    for ev in planner.events:
        assert ev.kind is FaultKind.DELAY
    snaps_with_slow = [s for s in planner.timeline if s.faulted]
    assert snaps_with_slow  # 5 s delays were placed and counted
    assert all(len(s.down) <= 2 for s in planner.timeline)


def test_recovered_refuses_a_node_that_is_not_recovering() -> None:
    planner = Planner(NAMES, 3, seed=0)
    with pytest.raises(ValueError, match="not recovering"):
        planner.recovered("node1", 0.0)
    with pytest.raises(ValueError, match="not recovering"):
        planner.coordinator_recovered(0.0)


def test_lift_all_ends_every_fault_and_nothing_is_left_faulted() -> None:
    planner = Planner(NAMES, 3, seed=2, config=ScheduleConfig(hold_s=(30.0, 40.0)))
    simulate(planner, 10.0, 2)
    assert planner.faulted()
    lifted = planner.lift_all(10.0)
    assert lifted
    assert not planner.faulted()
    assert all(planner.phase(n) is not Phase.FAULTED for n in NAMES)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gap_s": (2.0, 1.0)},
        {"delays_s": ()},
        {"delays_s": (0.0,)},
        {"node_deadline_s": 0.0},
        {"weights": {FaultKind.KILL: 0}},
        {"weights": {FaultKind.KILL: 1, FaultKind.COORDINATOR_RESTART: 1}},
        {"overload_hold_s": (1.5, 3.0), "node_deadline_s": 2.0},
    ],
)
def test_config_refuses_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ScheduleConfig(**kwargs)  # type: ignore[arg-type]

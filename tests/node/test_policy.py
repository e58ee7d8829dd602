"""The node's policy file and its usage counters: strict parsing, and limits that are
never exceeded whatever the sequence of signatures, restarts and clock steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.policy import (
    KeyRule,
    NodePolicy,
    PolicyError,
    UsageLedger,
    UsageStateError,
    load_policy,
    parse_policy,
    policy_path,
)


def test_policy_rules_inherit_the_default() -> None:
    p = parse_policy(
        """
version = 1
allow_destroy = false
[default]
per_minute = 10
[keys."op-key"]
clients = ["a", "b"]
total = 7
[keys.open]
clients = ["*"]
"""
    )
    assert p.allow_destroy is False
    assert p.rule("op-key") == KeyRule(frozenset({"a", "b"}), 10, 7)
    assert p.rule("open") == KeyRule(None, 10, None)
    assert p.rule("other") == KeyRule(None, 10, None)
    assert p.rule("op-key").allows("a") and not p.rule("op-key").allows("c")
    assert p.rule("other").allows("anyone")


def test_no_file_is_the_permissive_default(tmp_path: Path) -> None:
    assert load_policy(tmp_path / "absent.toml") == NodePolicy()
    assert policy_path(None, tmp_path) == tmp_path / "policy.toml"
    assert policy_path(tmp_path / "x.toml", tmp_path) == tmp_path / "x.toml"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("version = 2", "version"),
        ("", "version"),
        ("version = 1\nextra = 1", "file"),
        ("version = 1\nallow_destroy = 1", "allow_destroy"),
        ("version = 1\n[default]\ntotal = -1", "default.total"),
        ("version = 1\n[default]\ntotal = true", "default.total"),
        ("version = 1\n[default]\nper_minute = 1.5", "default.per_minute"),
        ("version = 1\n[default]\nlimit = 3", "default"),
        ('version = 1\n[keys."../x"]\ntotal = 1', "keys"),
        ('version = 1\n[keys.k]\nclients = ["*", "a"]', "keys.k.clients"),
        ('version = 1\n[keys.k]\nclients = ["bad id"]', "keys.k.clients"),
        ("version = 1\n[keys.k]\nclients = 3", "keys.k.clients"),
        ("version = 1\nkeys = 3", "keys"),
        ("version = [", "file"),
    ],
)
def test_malformed_policies_are_refused(text: str, key: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse_policy(text)
    assert exc.value.key == key


def test_a_malformed_usage_file_refuses_the_key(tmp_path: Path) -> None:
    (tmp_path / "k.json").write_text(json.dumps({"keyId": "other", "totalReserved": 1}))

    async def main() -> None:
        with pytest.raises(UsageStateError):
            await UsageLedger(tmp_path).consume("k", KeyRule(), 1)

    trio.run(main)


Op = tuple[str, int]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("sign"), st.integers(1, 40)),
        st.tuples(st.just("restart"), st.just(0)),
        st.tuples(st.just("tick"), st.integers(0, 90)),
    ),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=ops,
    total=st.one_of(st.none(), st.integers(0, 200)),
    per_minute=st.one_of(st.none(), st.integers(0, 60)),
)
def test_limits_hold_across_restarts(
    tmp_path_factory: pytest.TempPathFactory,
    ops: list[Op],
    total: int | None,
    per_minute: int | None,
) -> None:
    directory = tmp_path_factory.mktemp("usage")
    rule = KeyRule(total=total, per_minute=per_minute)
    now = [1_000_000.0]
    granted_total = 0
    per_window: dict[int, int] = {}
    restarted = False

    async def main() -> None:
        nonlocal granted_total, restarted
        ledger = UsageLedger(directory, clock=lambda: now[0])
        for op, arg in ops:
            if op == "restart":
                ledger = UsageLedger(directory, clock=lambda: now[0])
                restarted = True
            elif op == "tick":
                now[0] += arg
            else:
                before = granted_total
                got = await ledger.consume("k", rule, arg)
                assert 0 <= got <= arg
                granted_total += got
                window = int(now[0] // 60)
                per_window[window] = per_window.get(window, 0) + got
                if not restarted:  # without a crash no capacity is lost
                    room = [arg]
                    if total is not None:
                        room.append(total - before)
                    if per_minute is not None:
                        room.append(per_minute - (per_window[window] - got))
                    assert got == max(0, min(room))

    trio.run(main)
    if total is not None:
        assert granted_total <= total
    if per_minute is not None:
        assert all(v <= per_minute for v in per_window.values())

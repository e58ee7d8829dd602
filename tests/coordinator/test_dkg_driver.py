"""The coordinator's DKG driver (coordinator/dkg.py) and roll-forward
(coordinator/dkg_recovery.py) against in-process nodes running the real node
handlers (tests/coordinator/fake_nodes.py): honest ceremonies, a node dying in every
phase, the coordinator dying in every phase and a new one finishing the job, and
the refusals. Every ceremony ends in ``assert_consistent``: the key is active exactly
on the certificate's holders or nowhere, nothing is left pending, destroyed shares
lost their token keys, and t active shares rebuild the public key (py_ecc) while
t - 1 do not."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import pytest
import trio
from py_ecc.optimized_bn128 import G1 as PY_G1
from py_ecc.optimized_bn128 import add, multiply, normalize

from coordinator.backend import CeremonyAborted, InvalidRequest, KeyExists
from coordinator.dkg import DkgConfig, DkgCoordinator, plan_participants
from coordinator.dkg_recovery import DkgRecovery
from node.store import KeyStatus
from protocol import node_api
from protocol.bn254 import R
from protocol.dkg import DkgResult, Transcript, verify_transcript
from protocol.dkg.messages import DealBundle
from protocol.dkg.relayed import Abort
from protocol.rpc import Method
from tests.coordinator.fake_nodes import FakeCluster
from tests.protocol.dkg.harness import Behaviour

KEY = "operator-key"
FAST = DkgConfig(phase_timeout_s=5.0, commit_timeout_s=5.0)


def py_g1(k: int) -> bytes:
    x, y = normalize(multiply(PY_G1, k))
    return int(x).to_bytes(32, "big") + int(y).to_bytes(32, "big")


def rebuild(shares: dict[int, int]) -> bytes:
    """sk·G1 from shares by Lagrange at 0 (computed here, checked with py_ecc)."""
    acc = None
    for i, s in shares.items():
        lam = 1
        for j in shares:
            if j != i:
                lam = lam * j * pow(j - i, -1, R) % R
        term = multiply(PY_G1, lam * s % R)
        acc = term if acc is None else add(acc, term)
    x, y = normalize(acc)
    return int(x).to_bytes(32, "big") + int(y).to_bytes(32, "big")


def assert_consistent(cluster: FakeCluster, key_id: str = KEY) -> tuple[int, ...]:
    """The invariant every test ends with; returns the nodes holding the key."""
    statuses = cluster.statuses(key_id)
    assert KeyStatus.PENDING not in statuses.values(), statuses
    assert all(not files for files in cluster.pending_records().values())
    up = [n for n in cluster.nodes.values() if n.name in cluster.up]  # the dead forgot
    assert all(not n.dkg.live and not n.dkg.pending for n in up)
    active = tuple(j for j, s in statuses.items() if s is KeyStatus.ACTIVE)
    for j, store in cluster.stores.items():
        if statuses[j] is KeyStatus.DESTROYED:
            assert key_id not in store.shares and not store.token_keys
    if not active:
        return ()
    metas = [cluster.stores[j].versions[key_id][-1] for j in active]
    assert len({(m.pk_g1, m.pk_g2, m.transcript_hash, m.holders) for m in metas}) == 1
    assert metas[0].holders == active  # the certificate's holders, and only they
    t = metas[0].t
    shares = {j: cluster.stores[j].shares[key_id] for j in active}
    for j in active:  # each share matches its public share (py_ecc)
        assert py_g1(shares[j]) == metas[0].public_shares[j]
    for subset in itertools.combinations(sorted(shares), t):
        assert rebuild({j: shares[j] for j in subset}) == metas[0].pk_g1
    assert rebuild({j: shares[j] for j in sorted(shares)[: t - 1]}) != metas[0].pk_g1
    transcripts = {cluster.stores[j].transcripts[(key_id, metas[0].epoch)] for j in active}
    assert len(transcripts) == 1
    check = verify_transcript(transcripts.pop(), cluster.manifest)
    assert check.valid and check.key_id == key_id, check.reason
    return active


async def new_cluster(tmp_path: Path, n: int, **kw: Any) -> FakeCluster:
    cluster = FakeCluster(tmp_path, n, **kw)
    await cluster.start()
    return cluster


def coordinator(cluster: FakeCluster, instance: bytes = b"\x01" * 16) -> DkgCoordinator:
    return DkgCoordinator(
        cluster.manifest, cluster, name="coordinator", instance=instance, config=FAST
    )


def bad_share_to(victim: int) -> Behaviour:
    """A dealer that sends ``victim`` a ciphertext that does not decrypt."""

    def bundle(b: DealBundle, poly: Any, keys: Any) -> DealBundle:
        shares = tuple((j, bytes(len(ct)) if j == victim else ct) for j, ct in b.shares)
        return dataclasses.replace(b, shares=shares)

    return Behaviour(bundle=bundle)


# -- honest ceremonies -------------------------------------------------------------------


async def test_honest_ceremony_commits_on_every_node(tmp_path: Path) -> None:
    cluster = await new_cluster(tmp_path, 4)
    dkg = coordinator(cluster)
    result = await dkg.run(KEY, 3, None)
    assert isinstance(result, DkgResult)
    assert result.holders == (1, 2, 3, 4) and result.info.qual == (1, 2, 3, 4)
    assert assert_consistent(cluster) == (1, 2, 3, 4)
    assert result.info.pubkey_g1 is not None
    stored = Transcript.decode(result.transcript)
    assert cluster.stores[1].transcripts[(KEY, 1)] == stored.encode()
    progress = dkg.progress[KEY].snapshot()
    assert progress.state == "committed" and progress.holders == (
        "node1",
        "node2",
        "node3",
        "node4",
    )
    phases = [e.phase for e in progress.events]
    assert phases.index("open") < phases.index("deal") < phases.index("echo")
    assert phases.index("complain") < phases.index("sign") < phases.index("committed")
    events = [r["event"] for r in cluster.audits[2].records]
    assert events == ["dkg.open", "dkg.pending", "dkg.commit"]
    # the same key id again: every node refuses, nothing changes
    with pytest.raises(KeyExists):
        await dkg.run(KEY, 3, None)
    assert assert_consistent(cluster) == (1, 2, 3, 4)


async def test_a_complained_dealer_justifies_and_stays_in_qual(tmp_path: Path) -> None:
    cluster = await new_cluster(tmp_path, 3, behaviours={1: bad_share_to(2)})
    dkg = coordinator(cluster)
    result = await dkg.run(KEY, 2, None)
    assert result.info.qual == (1, 2, 3)
    assert "justify" in [e.phase for e in dkg.progress[KEY].events]
    assert assert_consistent(cluster) == (1, 2, 3)


# -- refusals ------------------------------------------------------------------------------


async def test_bad_parameters_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    cluster = await new_cluster(tmp_path, 4)
    up = cluster.up_nodes()
    for key_id, t, m, field in (
        ("../x", 3, None, "keyId"),
        (KEY, 1, None, "threshold"),
        (KEY, 5, None, "threshold"),
        (KEY, 3, 2, "minHolders"),
        (KEY, 3, 5, "minHolders"),
    ):
        with pytest.raises(InvalidRequest) as info:
            plan_participants(cluster.manifest, up, key_id, t, m)
        assert info.value.field == field
    cluster.kill("node3")
    with pytest.raises(CeremonyAborted, match=r"only 3 of 4 nodes are up.*down: node3") as aborted:
        await coordinator(cluster).run(KEY, 3, None)
    assert aborted.value.missed == ("node3",)
    assert cluster.calls == []
    # with min holders 3 it runs among the three that are up
    result = await coordinator(cluster).run(KEY, 3, 3)
    assert result.holders == (1, 2, 4)
    assert assert_consistent(cluster) == (1, 2, 4)


# -- a node dies ---------------------------------------------------------------------------


def kill_at(cluster: FakeCluster, victim: str, method: Method, *, after: bool = False) -> None:
    async def hook(name: str, m: Method, params: dict[str, Any]) -> None:
        if name == victim and m is method:
            cluster.kill(victim)

    if after:
        cluster.after = hook
    else:
        cluster.before = hook


NODE_KILLS = [
    (node_api.DKG_OPEN, False, False),
    (node_api.DKG_DEAL, False, True),
    (node_api.DKG_ECHO, False, True),
    (node_api.DKG_COMPLAIN, False, True),
    (node_api.DKG_JUSTIFY, False, True),  # no complaints: justify is the vote
    (node_api.DKG_JUSTIFY, True, True),  # voted (pending), the answer never arrived
    (node_api.DKG_COMMIT, False, True),  # a holder misses the commit
]


@pytest.mark.parametrize(("method", "after", "commits"), NODE_KILLS)
async def test_a_node_killed_in_any_phase(
    tmp_path: Path, method: Method, after: bool, commits: bool
) -> None:
    cluster = await new_cluster(tmp_path, 4)
    dkg = coordinator(cluster)
    recovery = DkgRecovery(dkg)
    kill_at(cluster, "node4", method, after=after)
    if commits:
        result = await dkg.run(KEY, 3, 3)
        dropped = method is not node_api.DKG_COMMIT
        assert result.holders == ((1, 2, 3) if dropped else (1, 2, 3, 4))
        messages = " ".join(e.message for e in dkg.progress[KEY].events)
        assert ("node4 dropped" in messages) == dropped
    else:
        with pytest.raises(CeremonyAborted, match="node 4") as info:
            await dkg.run(KEY, 3, 3)
        assert info.value.missed == ("node4",)
    # the node comes back; the coordinator resolves whatever it still holds
    cluster.before = cluster.after = None
    await cluster.restart("node4")
    await recovery.recover_node("node4")
    active = assert_consistent(cluster)
    if not commits:
        assert active == ()
    elif method is node_api.DKG_COMMIT:
        assert active == (1, 2, 3, 4)  # rolled forward on node4
    else:
        assert active == (1, 2, 3)
        assert cluster.statuses(KEY)[4] in (None, KeyStatus.DESTROYED)


async def test_too_few_holders_left_aborts_and_says_who_missed_what(tmp_path: Path) -> None:
    cluster = await new_cluster(tmp_path, 4)
    kill_at(cluster, "node3", node_api.DKG_ECHO)
    dkg = coordinator(cluster)
    with pytest.raises(CeremonyAborted) as info:
        await dkg.run(KEY, 3, None)
    assert "4 holders needed" in info.value.reason and "node 3 missed echo" in info.value.reason
    assert info.value.missed == ("node3",)
    progress = dkg.progress[KEY].snapshot()
    assert progress.state == "aborted" and progress.reason == info.value.reason
    assert assert_consistent(cluster) == ()


# -- the coordinator dies ------------------------------------------------------------------


COORDINATOR_KILLS = [
    ("honest", node_api.DKG_OPEN, False),
    ("honest", node_api.DKG_DEAL, False),
    ("honest", node_api.DKG_ECHO, False),
    ("honest", node_api.DKG_COMPLAIN, False),
    ("honest", node_api.DKG_JUSTIFY, False),  # some nodes voted (pending), no certificate
    ("complaint", node_api.DKG_JUSTIFY, False),  # the justification round
    ("complaint", node_api.DKG_FINISH, False),  # some voted after the justification
    ("honest", node_api.DKG_COMMIT, True),  # one holder got the certificate
]


def die_after_first(cluster: FakeCluster, method: Method, scope: trio.CancelScope) -> None:
    """The first node gets ``method`` and handles it; then the coordinator is gone."""
    state = {"first": ""}

    async def before(name: str, m: Method, params: dict[str, Any]) -> None:
        if m is method and state["first"] and name != state["first"]:
            await trio.sleep_forever()  # never delivered: the coordinator is dead
        if m is method:
            state["first"] = state["first"] or name

    async def after(name: str, m: Method, params: dict[str, Any]) -> None:
        if m is method and name == state["first"]:
            scope.cancel()
            await trio.sleep_forever()

    cluster.before, cluster.after = before, after


@pytest.mark.parametrize(("kind", "method", "rolls_forward"), COORDINATOR_KILLS)
async def test_coordinator_killed_in_any_phase_then_restarted(
    tmp_path: Path, kind: str, method: Method, rolls_forward: bool
) -> None:
    behaviours = {1: bad_share_to(2)} if kind == "complaint" else {}
    cluster = await new_cluster(tmp_path, 3, behaviours=behaviours)
    with trio.CancelScope() as scope:
        die_after_first(cluster, method, scope)
        await coordinator(cluster).run(KEY, 2, None)
    assert scope.cancelled_caught
    cluster.before = cluster.after = None
    statuses = cluster.statuses(KEY)
    assert (KeyStatus.ACTIVE in statuses.values()) == rolls_forward
    # a new coordinator process (same name, new instance) looks at every node
    restarted = coordinator(cluster, instance=b"\x02" * 16)
    recovery = DkgRecovery(restarted)
    for name in sorted(cluster.nodes):
        await recovery.recover_node(name)
    active = assert_consistent(cluster)
    assert active == ((1, 2, 3) if rolls_forward else ())
    # after an abort the key id is free again; after a commit it is taken
    if rolls_forward:
        with pytest.raises(KeyExists):
            await restarted.run(KEY, 2, None)
    else:
        result = await restarted.run(KEY, 2, None)
        assert assert_consistent(cluster) == result.holders == (1, 2, 3)


async def test_no_abort_while_a_node_that_may_hold_the_certificate_is_down(
    tmp_path: Path,
) -> None:
    cluster = await new_cluster(tmp_path, 3)
    with trio.CancelScope() as scope:
        die_after_first(cluster, node_api.DKG_COMMIT, scope)
        await coordinator(cluster).run(KEY, 2, None)
    cluster.before = cluster.after = None
    holder = next(j for j, s in cluster.statuses(KEY).items() if s is KeyStatus.ACTIVE)
    others = [cluster.name(j) for j in (1, 2, 3) if j != holder]
    cluster.kill(cluster.name(holder))  # the only node with the certificate is down
    recovery = DkgRecovery(coordinator(cluster, instance=b"\x03" * 16))
    for name in others:
        assert await recovery.recover_node(name) == []
    assert [cluster.statuses(KEY)[cluster.nodes[n].index] for n in others] == [
        KeyStatus.PENDING,
        KeyStatus.PENDING,
    ]
    assert "might hold the commit certificate" in recovery.deferred[KEY]
    await cluster.restart(cluster.name(holder))
    await recovery.recover_node(cluster.name(holder))
    assert assert_consistent(cluster) == (1, 2, 3)
    assert KEY not in recovery.deferred


async def test_another_coordinators_ceremony_is_left_alone_until_stale(tmp_path: Path) -> None:
    cluster = await new_cluster(tmp_path, 3)
    with trio.CancelScope() as scope:
        die_after_first(cluster, node_api.DKG_JUSTIFY, scope)
        await coordinator(cluster).run(KEY, 2, None)
    cluster.before = cluster.after = None
    other = DkgCoordinator(
        cluster.manifest, cluster, name="other", instance=b"\x09" * 16, config=FAST
    )
    recovery = DkgRecovery(other)
    for name in sorted(cluster.nodes):
        assert await recovery.recover_node(name) == []
    assert KeyStatus.PENDING in cluster.statuses(KEY).values()
    stale = DkgCoordinator(
        cluster.manifest,
        cluster,
        name="other",
        instance=b"\x09" * 16,
        config=DkgConfig(stale_after_s=0.001),
    )
    await trio.sleep(0.01)
    for name in sorted(cluster.nodes):
        await DkgRecovery(stale).recover_node(name)
    assert assert_consistent(cluster) == ()


async def test_a_node_that_crashed_while_activating_finishes_at_restart(tmp_path: Path) -> None:
    cluster = await new_cluster(tmp_path, 3)
    cluster.stores[2].fail_activate = True
    result = await coordinator(cluster).run(KEY, 2, None)
    assert result.holders == (1, 2, 3)
    assert cluster.statuses(KEY)[2] is KeyStatus.PENDING  # the certificate is on disk
    assert cluster.nodes["node2"].dkg.pending[KEY].state == "committing"
    cluster.kill("node2")
    await cluster.restart("node2")  # recovery activates from the stored certificate
    assert assert_consistent(cluster) == (1, 2, 3)


async def test_abort_is_refused_once_a_certificate_is_held(tmp_path: Path) -> None:
    cluster = await new_cluster(tmp_path, 3)
    cluster.stores[3].fail_activate = True
    await coordinator(cluster).run(KEY, 2, None)
    node3 = cluster.nodes["node3"]
    with pytest.raises(Exception, match="commit certificate is held") as info:
        await cluster.call(
            "node3",
            node_api.DKG_ABORT,
            {"key_id": KEY, "message": Abort(reason="x").encode()},
        )
    assert getattr(info.value, "code", None) == node_api.DKG_COMMITTED
    assert node3.dkg.pending[KEY].state == "committing"

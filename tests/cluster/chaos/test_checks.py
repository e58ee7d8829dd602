"""After-run checks of chaos (no cluster): covering sets reach every node, a key's
state is read from each node's latest metadata version, and a ceremony counts as
clean only when it is active on all its holders (completed) or on none (aborted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from cluster.chaos.checks import (
    DkgOutcome,
    covering_sets,
    dkg_consistent,
    key_states,
    node_data_dir,
    verify_audit_logs,
)
from cluster.launcher import ClusterLayout, NodeLayout
from protocol.audit import AuditChain, Checkpoint
from protocol.manifest import CoordinatorEntry, Manifest, NodeEntry

NAMES = ["node1", "node2", "node3", "node4", "node5"]


@pytest.mark.parametrize(("n", "t"), [(5, 3), (4, 2), (7, 5), (3, 3), (6, 4)])
def test_covering_sets_have_t_distinct_nodes_and_cover_all(n: int, t: int) -> None:
    names = [f"node{i}" for i in range(1, n + 1)]
    sets = covering_sets(names, t)
    assert all(len(set(s)) == t for s in sets)
    assert set().union(*sets) == set(names)
    assert len(sets) == -(-n // t)  # as few rounds as possible


def _layout(root: Path) -> ClusterLayout:
    nodes = []
    for i, name in enumerate(NAMES, start=1):
        cfg_dir = root / "nodes" / name
        cfg_dir.mkdir(parents=True)
        data = "." if i % 2 else str(cfg_dir)  # relative and absolute data_dir
        (cfg_dir / "node.toml").write_text(f'version = 1\nname = "{name}"\ndata_dir = "{data}"\n')
        nodes.append(NodeLayout(name, i, f"127.0.0.1:{7000 + i}", cfg_dir / "node.toml"))
    (root / "coordinator").mkdir()
    return ClusterLayout(
        root, "00" * 16, 3, tuple(nodes), root / "coordinator" / "c.toml", "127.0.0.1:1",
        "127.0.0.1:2", root / "k",
    )  # fmt: skip


def _write_meta(layout: ClusterLayout, name: str, key_id: str, statuses: list[str]) -> None:
    node = next(n for n in layout.nodes if n.name == name)
    key_dir = node_data_dir(node) / "keys" / key_id
    key_dir.mkdir(parents=True)
    for v, status in enumerate(statuses, start=1):
        doc = {"version": v, "event": "x", "metadata": {"keyId": key_id, "status": status}}
        (key_dir / f"meta-{v:06d}.json").write_text(json.dumps(doc))
    (key_dir / "meta-notes.json").write_text("{}")  # not a version file: ignored


def test_key_states_take_the_latest_version_of_each_node(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    assert node_data_dir(layout.nodes[0]) == (tmp_path / "nodes" / "node1").resolve()
    _write_meta(layout, "node1", "k", ["pending", "active"])
    _write_meta(layout, "node2", "k", ["pending"])
    _write_meta(layout, "node3", "k", ["pending", "destroyed"])
    states = key_states(layout, "k")
    assert states == {
        "node1": "active",
        "node2": "pending",
        "node3": "destroyed",
        "node4": None,
        "node5": None,
    }


def test_a_completed_ceremony_must_be_active_on_exactly_its_holders() -> None:
    done = DkgOutcome("k", "completed", 201, ("node1", "node2", "node3"))
    on_holders = {"node1": "active", "node2": "active", "node3": "active", "node4": None}
    assert dkg_consistent(done, on_holders, 3)[0]
    missing_one = {**on_holders, "node3": "pending"}
    ok, why = dkg_consistent(done, missing_one, 3)
    assert not ok and "node3" in why
    extra = {**on_holders, "node4": "active"}
    assert not dkg_consistent(done, extra, 3)[0]


def test_an_aborted_ceremony_must_be_active_nowhere() -> None:
    aborted = DkgOutcome("k", "aborted", 502, detail="ceremony_aborted")
    states = {"node1": "pending", "node2": None, "node3": "destroyed"}
    assert dkg_consistent(aborted, states, 3)[0]
    ok, why = dkg_consistent(aborted, {"node1": "active", "node2": "pending"}, 3)
    assert not ok and "node1" in why
    refused = DkgOutcome("k", "unavailable", 503)
    assert not dkg_consistent(refused, dict.fromkeys(NAMES, "active"), 3)[0]


def test_without_an_answer_either_clean_end_counts() -> None:
    lost = DkgOutcome("k", "unavailable", None)  # the coordinator restarted mid-ceremony
    assert dkg_consistent(lost, dict.fromkeys(NAMES), 3)[0]
    assert dkg_consistent(lost, {**dict.fromkeys(NAMES), "node2": "destroyed"}, 3)[0]
    three = {"node1": "active", "node2": "active", "node3": "active", "node4": None}
    assert dkg_consistent(lost, three, 3)[0]
    assert not dkg_consistent(lost, {**three, "node4": "pending"}, 3)[0]
    assert not dkg_consistent(lost, {"node1": "active", "node2": "active"}, 3)[0]


def _keys() -> dict[str, SigningKey]:
    return {name: SigningKey(bytes([i]) * 32) for i, name in enumerate(NAMES, start=1)}


def _write_logs(layout: ClusterLayout, keys: dict[str, SigningKey]) -> dict[str, list[bytes]]:
    """Three chained records per node; every node's head checkpoint is kept by the
    coordinator's checkpoint store. Returns each node's lines."""
    manifest = Manifest(
        bytes(16),
        tuple(
            NodeEntry(
                i, name, f"127.0.0.1:{7000 + i}", bytes([i]) * 32, keys[name].verify_key.encode()
            )
            for i, name in enumerate(NAMES, start=1)
        ),
        (CoordinatorEntry("coordinator", bytes([99]) * 32),),
    )
    layout.manifest.write_text(manifest.to_toml())
    lines: dict[str, list[bytes]] = {}
    store = []
    for node in layout.nodes:
        chain = AuditChain(f"c/{node.name}")
        lines[node.name] = []
        for seq in range(3):
            pending = chain.prepare(time=1000 + seq, actor=node.name, event="sign", outcome="ok")
            chain.commit(pending)
            lines[node.name].append(pending.line)
        (node_data_dir(node) / "audit.log").write_bytes(b"".join(lines[node.name]))
        cp = Checkpoint.sign(keys[node.name], chain.log_id, chain.next_seq - 1, chain.head)
        store.append(cp.to_line())
    (layout.root / "coordinator" / "checkpoints.log").write_bytes(b"".join(store))
    return lines


def test_audit_logs_verify_anchored_by_the_checkpoints(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    _write_logs(layout, _keys())
    reports = verify_audit_logs(layout)
    assert set(reports) == set(NAMES)  # no coordinator log in this dir
    for report in reports.values():
        assert report["valid"] and report["records"] == 3
        assert report["anchoredSeq"] == 2 and report["unanchoredTail"] == 0


def test_an_edited_or_cut_log_fails(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    lines = _write_logs(layout, _keys())
    node2 = node_data_dir(layout.nodes[1]) / "audit.log"
    node2.write_bytes(lines["node2"][0] + lines["node2"][2])  # record 1 removed
    node4 = node_data_dir(layout.nodes[3]) / "audit.log"
    node4.write_bytes(b"".join(lines["node4"][:2]))  # the tail cut: the checkpoint shows it
    (node_data_dir(layout.nodes[4]) / "audit.log").unlink()
    reports = verify_audit_logs(layout)
    assert [n for n, r in reports.items() if not r["valid"]] == ["node2", "node4", "node5"]
    assert "truncated" in reports["node4"]["reason"]
    assert "cannot read" in reports["node5"]["reason"]

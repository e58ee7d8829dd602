"""cluster.json round trips: a proxied cluster records both the manifest's (proxy)
address and the node's real listening address; an older file without ``listen``
means the node listens where the manifest says."""

from __future__ import annotations

import json
from pathlib import Path

from cluster.launcher import CLUSTER_FILE, ClusterLayout, NodeLayout


def _layout(root: Path, *, proxied: bool) -> ClusterLayout:
    return ClusterLayout(
        root=root,
        cluster_id="ab" * 16,
        threshold=2,
        nodes=(
            NodeLayout("node1", 1, "127.0.0.1:7001", root / "n1.toml", "127.0.0.1:8001"),
            NodeLayout("node2", 2, "127.0.0.1:7002", root / "n2.toml", "127.0.0.1:8002"),
        ),
        coordinator_config=root / "coordinator.toml",
        http="127.0.0.1:7100",
        grpc="127.0.0.1:7101",
        api_key_file=root / "demo-client.key",
        proxied=proxied,
    )


def test_proxied_layout_round_trips(tmp_path: Path) -> None:
    layout = _layout(tmp_path, proxied=True)
    doc = layout.to_json()
    assert doc["proxied"] is True
    assert [n["address"] for n in doc["nodes"]] == ["127.0.0.1:7001", "127.0.0.1:7002"]
    assert [n["listen"] for n in doc["nodes"]] == ["127.0.0.1:8001", "127.0.0.1:8002"]
    (tmp_path / CLUSTER_FILE).write_text(json.dumps(doc))
    loaded = ClusterLayout.load(tmp_path)
    assert loaded == layout
    assert loaded.nodes[1].listen_address == "127.0.0.1:8002"


def test_a_file_without_listen_means_the_manifest_address(tmp_path: Path) -> None:
    doc = _layout(tmp_path, proxied=False).to_json()
    del doc["proxied"]
    for n in doc["nodes"]:
        del n["listen"]
    (tmp_path / CLUSTER_FILE).write_text(json.dumps(doc))
    loaded = ClusterLayout.load(tmp_path)
    assert loaded.proxied is False
    assert [n.listen_address for n in loaded.nodes] == ["127.0.0.1:7001", "127.0.0.1:7002"]

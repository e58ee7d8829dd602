"""A real local cluster as processes: ``tkms cluster init / up / status / down`` with
5 SoftHSM2-backed nodes and a coordinator over Noise, a node SIGKILLed and restarted,
the coordinator restarted, /healthz and /metrics over real HTTP, and nothing left
running afterwards."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol.manifest import parse_manifest
from tests.cluster.processes import processes_mentioning

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
N, T = 5, 3


def tkms(*args: str, timeout: float = 120) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TKMS_", "SOFTHSM2_"))}
    r = subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args, "--json"],
        env={**env, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, f"tkms {' '.join(args)}: {r.stderr}"
    assert r.stdout.count("\n") <= 1  # exactly one JSON object on stdout
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    cluster = tmp_path / "cluster"
    root = str(cluster)
    try:
        yield cluster
    finally:  # whatever happened: stop it, and kill what still runs
        if (cluster / "cluster.json").exists():
            subprocess.run(
                [sys.executable, "-m", "cluster.cli", "cluster", "down", "--cluster-dir", root],
                env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, capture_output=True,
                timeout=60, check=False,
            )  # fmt: skip
        for pid in processes_mentioning(root):
            os.kill(pid, signal.SIGKILL)


def test_cluster_init_up_kill_restart_down(cluster_dir: Path) -> None:
    root = str(cluster_dir)
    init = tkms("cluster", "init", "--nodes", str(N), "--threshold", str(T), "--cluster-dir", root)
    assert init["n"] == N and init["threshold"] == T and len(init["nodes"]) == N
    manifest = parse_manifest(Path(init["manifest"]).read_text())
    assert [n.name for n in manifest.nodes] == [f"node{i}" for i in range(1, N + 1)]
    assert manifest.cluster_id.hex() == init["clusterId"] and len(manifest.coordinators) == 1
    assert all(n.host == "127.0.0.1" for n in manifest.nodes)
    pins = sorted(cluster_dir.glob("nodes/*/hsm-*.pin"))
    assert len(pins) == 2 * N
    secrets = [p.read_text().strip() for p in pins]
    for path in [*pins, cluster_dir / "demo-client.key", cluster_dir / "coordinator/noise.key"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    api_key = (cluster_dir / "demo-client.key").read_text().strip()
    secrets.append(api_key)

    up = tkms("cluster", "up", "--cluster-dir", root)
    assert [n["name"] for n in up["nodes"]] == [f"node{i}" for i in range(1, N + 1)]
    assert all(n["up"] and isinstance(n["pid"], int) for n in up["nodes"])
    status = tkms("cluster", "status", "--cluster-dir", root)
    assert all(n["up"] for n in status["nodes"]) and status["coordinator"]["up"]
    assert status["apiKeyFile"] == str(cluster_dir / "demo-client.key")
    http = status["endpoints"]["http"]
    assert set(status["endpoints"]) == {"http", "grpc"} and http == init["coordinator"]["http"]
    pids = {n["name"]: n["pid"] for n in status["nodes"]}
    coordinator_pid = status["coordinator"]["pid"]

    code, body = get(f"http://{http}/healthz")
    health = json.loads(body)
    assert code == 200 and health["status"] == "ok" and health["nodesUp"] == N
    code, body = get(f"http://{http}/metrics")
    assert code == 200 and f"tkms_nodes_up {N}" in body.decode()
    code, body = get(f"http://{http}/v1/keys", {"Authorization": f"Bearer {api_key}"})
    assert code == 200 and json.loads(body) == {"keys": []}
    assert get(f"http://{http}/v1/keys")[0] == 401

    # SIGKILL node2: the coordinator sees it down, the others stay up
    os.kill(pids["node2"], signal.SIGKILL)

    def node2_down() -> bool:
        nodes = {n["name"]: n for n in tkms("cluster", "status", "--cluster-dir", root)["nodes"]}
        return nodes["node2"]["pid"] is None and not nodes["node2"]["up"]

    wait_for("node2 down", node2_down)
    health = json.loads(get(f"http://{http}/healthz")[1])
    assert health["status"] == "degraded" and health["nodesUp"] == N - 1
    (node2,) = [n for n in health["nodes"] if n["name"] == "node2"]
    assert node2["up"] is False and node2["detail"]

    # `cluster up` again restarts only what is missing; the coordinator redials it
    again = tkms("cluster", "up", "--cluster-dir", root)
    assert all(n["up"] for n in again["nodes"])
    now = {n["name"]: n["pid"] for n in again["nodes"]}
    assert now["node2"] != pids["node2"]
    assert {k: v for k, v in now.items() if k != "node2"} == {
        k: v for k, v in pids.items() if k != "node2"
    }
    assert again["coordinator"]["pid"] == coordinator_pid

    # the coordinator stopped and restarted rebuilds its view from the nodes
    os.kill(coordinator_pid, signal.SIGTERM)
    wait_for("coordinator gone", lambda: not processes_mentioning(f"{root}/coordinator/"))
    restarted = tkms("cluster", "up", "--cluster-dir", root)
    assert restarted["coordinator"]["pid"] not in (None, coordinator_pid)
    assert {n["name"]: n["pid"] for n in restarted["nodes"]} == now
    code, body = get(f"http://{http}/healthz")
    assert code == 200 and [n["up"] for n in json.loads(body)["nodes"]] == [True] * N

    down = tkms("cluster", "down", "--cluster-dir", root)
    assert sorted(down["stopped"]) == sorted(["coordinator", *pids])
    assert processes_mentioning(root) == []
    final = tkms("cluster", "status", "--cluster-dir", root)
    assert not any(n["up"] or n["pid"] for n in final["nodes"]) and not final["coordinator"]["up"]
    logs = {p.name: p.read_text() for p in (cluster_dir / "run").glob("*.log")}
    for i in range(1, N + 1):  # every node ended by SIGTERM, gracefully
        assert f"node node{i} stopped" in logs[f"node{i}.log"]
    assert logs["coordinator.log"].count("coordinator coordinator stopped") == 2
    for text in logs.values():
        assert not any(secret in text for secret in secrets)

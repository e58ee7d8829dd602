"""The local cluster launcher: generate a cluster under a directory, start it, stop it,
show it.

A cluster dir holds everything of one local cluster::

    cluster.json            public layout: ids, n, t, addresses, endpoints, file paths
    manifest.toml           the cluster manifest (public keys of every node and coordinator)
    api-keys.json           the coordinator's client credentials (salted hashes)
    demo-client.key         the demo client's raw API key (0600)
    nodes/<name>/           each node's data dir: config, softhsm2.conf, token, PIN files, store
    coordinator/            the coordinator's config, Noise key (0600), audit log
    transcripts/            DKG transcripts fetched by `tkms dkg`
    run/                    pid files and process logs

Every process is started through the ``tkms`` CLI of this same interpreter, in its own
session (so a signal to the launcher does not reach it), and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.errors import Fault, TkmsError
from protocol.manifest import CoordinatorEntry, Manifest, NodeEntry

CLUSTER_FILE = "cluster.json"
REPO_ROOT = Path(__file__).resolve().parent.parent
Progress = Callable[[str], None]


class ClusterError(TkmsError):
    """The local cluster could not be created, started or stopped (says why)."""

    fault = Fault.CONFIG


@dataclass(frozen=True, slots=True)
class NodeLayout:
    name: str
    index: int
    address: str
    config: Path


@dataclass(frozen=True, slots=True)
class ClusterLayout:
    """The public layout of a local cluster, as stored in cluster.json."""

    root: Path
    cluster_id: str
    threshold: int
    nodes: tuple[NodeLayout, ...]
    coordinator_config: Path
    http: str
    grpc: str
    api_key_file: Path

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.toml"

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "clusterId": self.cluster_id,
            "threshold": self.threshold,
            "n": len(self.nodes),
            "nodes": [
                {"name": n.name, "index": n.index, "address": n.address, "config": str(n.config)}
                for n in self.nodes
            ],
            "coordinator": {
                "config": str(self.coordinator_config),
                "http": self.http,
                "grpc": self.grpc,
            },
            "apiKeyFile": str(self.api_key_file),
        }

    @staticmethod
    def load(root: Path) -> ClusterLayout:
        path = root / CLUSTER_FILE
        if not path.exists():
            raise ClusterError(f"no cluster in {root} (run `tkms cluster init` first)")
        doc = json.loads(path.read_text())
        return ClusterLayout(
            root=root,
            cluster_id=doc["clusterId"],
            threshold=int(doc["threshold"]),
            nodes=tuple(
                NodeLayout(n["name"], int(n["index"]), n["address"], Path(n["config"]))
                for n in doc["nodes"]
            ),
            coordinator_config=Path(doc["coordinator"]["config"]),
            http=doc["coordinator"]["http"],
            grpc=doc["coordinator"]["grpc"],
            api_key_file=Path(doc["apiKeyFile"]),
        )


def default_cluster_dir(arg: str | None) -> Path:
    """--cluster-dir, else $TKMS_CLUSTER_DIR, else ./tkms-cluster."""
    return Path(arg or os.environ.get("TKMS_CLUSTER_DIR") or "tkms-cluster").resolve()


def tkms_command(*args: str) -> list[str]:
    """The argv that runs ``tkms ARGS`` with this interpreter and this source tree."""
    return [sys.executable, "-m", "cluster.cli", *args]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    return env


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together while chosen)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _run_json(args: list[str], *, timeout: float, what: str) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            tkms_command(*args, "--json"),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=child_env(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ClusterError(f"{what} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise ClusterError(f"{what} failed (exit {proc.returncode}): {tail}")
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise ClusterError(f"{what} printed no JSON object") from None
    return result


def init_cluster(
    root: Path, *, nodes: int, threshold: int, progress: Progress, timeout: float = 120.0
) -> ClusterLayout:
    """Generate a fresh local cluster in ``root`` (which must not hold one already)."""
    if not 2 <= threshold <= nodes:
        raise ClusterError(f"--threshold must be in [2, {nodes}], got {threshold}")
    if nodes > 64:
        raise ClusterError("a local cluster has at most 64 nodes")
    if (root / CLUSTER_FILE).exists():
        raise ClusterError(f"{root} already holds a cluster; pick another --cluster-dir")
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("nodes", "coordinator", "transcripts", "run"):
        (root / sub).mkdir(exist_ok=True)
    ports = free_ports(nodes + 2)
    manifest_path = root / "manifest.toml"
    names = [f"node{i}" for i in range(1, nodes + 1)]
    addresses = [f"127.0.0.1:{ports[i]}" for i in range(nodes)]

    def init_node(i: int) -> dict[str, Any]:
        return _run_json(
            [
                "node", "init",
                "--name", names[i],
                "--data-dir", str(root / "nodes" / names[i]),
                "--listen", addresses[i],
                "--manifest", str(manifest_path),
            ],
            timeout=timeout,
            what=f"node init {names[i]}",
        )  # fmt: skip

    progress(f"initialising {nodes} nodes (token, PINs, sealed identity keys)...")
    with ThreadPoolExecutor(max_workers=min(4, nodes)) as pool:
        node_infos = list(pool.map(init_node, range(nodes)))
    http = f"127.0.0.1:{ports[nodes]}"
    grpc = f"127.0.0.1:{ports[nodes + 1]}"
    api_key_file = root / "demo-client.key"
    progress("initialising the coordinator (Noise key, client credentials)...")
    coord = _run_json(
        [
            "coordinator", "init",
            "--dir", str(root / "coordinator"),
            "--manifest", str(manifest_path),
            "--http", http,
            "--grpc", grpc,
            "--api-keys-file", str(root / "api-keys.json"),
            "--demo-client-key", str(api_key_file),
        ],
        timeout=timeout,
        what="coordinator init",
    )  # fmt: skip
    manifest = Manifest(
        cluster_id=os.urandom(16),
        nodes=tuple(
            NodeEntry(
                index=i + 1,
                name=names[i],
                address=addresses[i],
                noise_public_key=bytes.fromhex(info["noisePublicKey"]),
                ed25519_public_key=bytes.fromhex(info["ed25519PublicKey"]),
            )
            for i, info in enumerate(node_infos)
        ),
        coordinators=(CoordinatorEntry(coord["name"], bytes.fromhex(coord["noisePublicKey"])),),
    )
    manifest_path.write_text(manifest.to_toml())
    layout = ClusterLayout(
        root=root,
        cluster_id=manifest.cluster_id.hex(),
        threshold=threshold,
        nodes=tuple(
            NodeLayout(names[i], i + 1, addresses[i], Path(node_infos[i]["config"]))
            for i in range(nodes)
        ),
        coordinator_config=Path(coord["config"]),
        http=http,
        grpc=grpc,
        api_key_file=api_key_file,
    )
    tmp = root / (CLUSTER_FILE + ".tmp")
    tmp.write_text(json.dumps(layout.to_json(), indent=2) + "\n")
    os.replace(tmp, root / CLUSTER_FILE)
    return layout


# -- processes ----------------------------------------------------------------------------


def _pid_file(layout: ClusterLayout, name: str) -> Path:
    return layout.run_dir / f"{name}.pid"


def read_pid(layout: ClusterLayout, name: str) -> int | None:
    """The pid of a running process of this cluster, or None (stale pid files ignored)."""
    path = _pid_file(layout, name)
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    cmdline = b""
    for _ in range(50):  # a process in the middle of execve shows an empty cmdline
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        if cmdline or state == "Z":
            break
        time.sleep(0.02)
    if b"cluster.cli" not in cmdline or str(layout.root).encode() not in cmdline:
        return None  # the pid was reused by an unrelated process
    if state == "Z":
        return None  # a zombie: dead, not yet reaped
    return pid


def _spawn(layout: ClusterLayout, name: str, args: list[str]) -> int:
    log = open(layout.run_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            tkms_command(*args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(),
            start_new_session=True,
            cwd=layout.root,
        )
    finally:
        log.close()
    _pid_file(layout, name).write_text(f"{proc.pid}\n")
    return proc.pid


def start_node(layout: ClusterLayout, node: NodeLayout) -> int:
    existing = read_pid(layout, node.name)
    if existing is not None:
        return existing
    return _spawn(layout, node.name, ["node", "run", "--config", str(node.config)])


def start_coordinator(layout: ClusterLayout) -> int:
    existing = read_pid(layout, "coordinator")
    if existing is not None:
        return existing
    return _spawn(
        layout, "coordinator", ["coordinator", "run", "--config", str(layout.coordinator_config)]
    )


def health(layout: ClusterLayout, *, timeout: float = 2.0) -> dict[str, Any] | None:
    """The coordinator's /healthz document, or None if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{layout.http}/healthz", timeout=timeout) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
            return doc
    except urllib.error.HTTPError as exc:  # 503 still carries the document
        try:
            doc = json.loads(exc.read())
            return doc
        except (json.JSONDecodeError, OSError):
            return None
    except (OSError, json.JSONDecodeError):
        return None


def nodes_up(doc: dict[str, Any] | None) -> dict[str, bool]:
    """Node name -> whether the coordinator holds a live Noise session to it."""
    if not doc:
        return {}
    nodes = doc.get("nodes", {})
    if isinstance(nodes, dict):
        return {k: bool(v.get("up")) if isinstance(v, dict) else bool(v) for k, v in nodes.items()}
    return {n["name"]: bool(n.get("up")) for n in nodes if isinstance(n, dict) and "name" in n}


def log_tail(layout: ClusterLayout, name: str, lines: int = 2) -> str:
    """The last lines of a process's log (where its start-up error is)."""
    try:
        text = (layout.run_dir / f"{name}.log").read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def wait_until_up(
    layout: ClusterLayout,
    *,
    timeout: float,
    progress: Progress,
    names: set[str] | None = None,
) -> dict[str, bool]:
    """Wait until the coordinator has a session to every node in ``names`` (default all).

    A process among them (or the coordinator) that is not running fails the wait at
    once, quoting the end of its log."""
    want = names if names is not None else {n.name for n in layout.nodes}
    deadline = time.monotonic() + timeout
    last = ""
    up: dict[str, bool] = {}
    while True:
        dead = sorted(n for n in (*want, "coordinator") if read_pid(layout, n) is None)
        if dead:
            raise ClusterError(
                "not running: "
                + "; ".join(f"{n} ({log_tail(layout, n) or 'no log'})" for n in dead)
                + f" (logs in {layout.run_dir})"
            )
        up = nodes_up(health(layout))
        ready = sorted(n for n in want if up.get(n))
        line = f"nodes up over Noise: {len(ready)}/{len(want)}"
        if line != last:
            progress(line)
            last = line
        if len(ready) == len(want):
            return up
        if time.monotonic() >= deadline:
            missing = sorted(want - set(ready))
            raise ClusterError(
                f"cluster not up within {timeout:.0f} s; missing: {', '.join(missing)} "
                f"(logs in {layout.run_dir})"
            )
        time.sleep(0.2)


def up(layout: ClusterLayout, *, progress: Progress, timeout: float = 90.0) -> None:
    """Start every node and the coordinator, and wait until all sessions are up.

    On failure everything this call started is stopped again: no half-up cluster.
    """
    started: list[str] = []
    try:
        for node in layout.nodes:
            if read_pid(layout, node.name) is None:
                start_node(layout, node)
                started.append(node.name)
        if read_pid(layout, "coordinator") is None:
            start_coordinator(layout)
            started.append("coordinator")
        progress(f"started {len(started)} processes; waiting for sessions...")
        wait_until_up(layout, timeout=timeout, progress=progress)
    except BaseException:
        for name in started:
            stop_process(layout, name)
        raise


def stop_process(layout: ClusterLayout, name: str, *, grace: float = 10.0) -> bool:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. True if it was running."""
    return name in stop_processes(layout, [name], grace=grace)


def stop_processes(layout: ClusterLayout, names: list[str], *, grace: float = 10.0) -> list[str]:
    """SIGTERM every named process at once, wait up to ``grace`` seconds for all of
    them, SIGKILL what is left (and wait up to 5 s more). Returns those that ran."""
    pids = {name: pid for name in names if (pid := read_pid(layout, name)) is not None}
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            os.kill(pid, signal.SIGTERM)
    for sig, wait in ((None, grace), (signal.SIGKILL, 5.0)):
        alive = [n for n in pids if read_pid(layout, n) is not None]
        if sig is not None:
            for name in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pids[name], sig)
        deadline = time.monotonic() + wait
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = [n for n in alive if read_pid(layout, n) is not None]
        if not alive:
            break
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            _pid_file(layout, name).unlink()
    return [n for n in names if n in pids]


def down(layout: ClusterLayout, *, progress: Progress) -> list[str]:
    """Stop the coordinator, then every node (together). Returns the names that ran."""
    stopped = stop_processes(layout, ["coordinator"])
    stopped += stop_processes(layout, [n.name for n in layout.nodes])
    progress(f"stopped {len(stopped)} processes")
    return stopped


def status(layout: ClusterLayout) -> dict[str, Any]:
    """The `tkms cluster status --json` object."""
    doc = health(layout) if read_pid(layout, "coordinator") is not None else None
    sessions = nodes_up(doc)
    nodes = []
    for node in layout.nodes:
        pid = read_pid(layout, node.name)
        nodes.append(
            {
                "name": node.name,
                "index": node.index,
                "address": node.address,
                "pid": pid,
                "up": pid is not None and sessions.get(node.name, False),
            }
        )
    coord_pid = read_pid(layout, "coordinator")
    return {
        "clusterDir": str(layout.root),
        "clusterId": layout.cluster_id,
        "threshold": layout.threshold,
        "nodes": nodes,
        "coordinator": {"pid": coord_pid, "up": doc is not None},
        "endpoints": {"http": layout.http, "grpc": layout.grpc},
        "apiKeyFile": str(layout.api_key_file),
    }

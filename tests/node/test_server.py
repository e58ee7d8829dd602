"""``tkms node run`` as a real process: a real SoftHSM2 token, a real socket, real
signals. A pinned coordinator gets ``node.status`` and ``keys.list``; any other key
is refused; every start-up error exits non-zero with its message and serves nothing;
SIGTERM stops the node cleanly and the audit log records it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from cluster.launcher import free_ports
from coordinator.sessions import (
    NodeEndpoint,
    NodeUnavailable,
    SessionConfig,
    Timeout,
    open_session_manager,
)
from node.config import NodeConfig, load_config
from node.server import RequestGate
from protocol import node_api
from protocol.audit import decode_line
from protocol.bn254 import g1_mul_generator, g2_mul_generator
from protocol.encoding import g1_to_bytes, g2_to_bytes
from protocol.manifest import CoordinatorEntry, Manifest, NodeEntry
from protocol.noise import KeyPair
from protocol.rng import seeded_rng
from protocol.rpc import PROTOCOL_VERSION, ErrorCode, RpcError
from protocol.threshold import split
from tests.node.hsm_helpers import REPO

pytestmark = pytest.mark.cluster
FAST = SessionConfig(
    connect_timeout_s=1.0, handshake_timeout_s=2.0, call_timeout_s=5.0, backoff_max_s=0.2
)
KEY_ID = "operator-key"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TKMS_", "SOFTHSM2_"))}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        env=env or _env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@dataclass
class NodeDir:
    data: Path
    config: NodeConfig
    port: int
    manifest: Manifest
    coordinator: KeyPair
    shares: dict[int, int]
    stored: dict[str, Any]  # the key metadata we stored, in the store's JSON form

    def write_config(self, path: Path, **changes: Any) -> Path:
        path.write_text(replace(self.config, **changes).to_toml())
        return path

    def write_manifest(self, path: Path, manifest: Manifest) -> Path:
        path.write_text(manifest.to_toml())
        return path


def _store_key(config_path: Path, cluster_id: bytes, meta: dict[str, Any], share: int) -> None:
    """Seal a share and activate it, in a process of its own (one SoftHSM per process)."""
    code = """
import json, sys, trio
from pathlib import Path
from node.config import load_config
from node.hsm import open_hsm
from node.store import KeyMetadata, open_store
doc = json.loads(sys.stdin.read())
async def main():
    config = load_config(Path(doc["config"]))
    async with open_hsm(config) as hsm, open_store(
        config.data_dir, hsm, cluster_id=bytes.fromhex(doc["cid"]), node_index=1
    ) as store:
        await store.put_share(KeyMetadata.from_json(doc["meta"]), int(doc["share"], 16))
        await store.activate(doc["meta"]["keyId"])
trio.run(main)
"""
    doc = {"config": str(config_path), "cid": cluster_id.hex(), "meta": meta, "share": hex(share)}
    r = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(doc),
        env=_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory: pytest.TempPathFactory) -> NodeDir:
    """One initialised node (token, identity), index 1 of 3 in a manifest with one
    coordinator, holding one active 2-of-3 key."""
    base = tmp_path_factory.mktemp("node")
    (port,) = free_ports(1)
    manifest_path = base / "manifest.toml"
    r = _cli("node", "init", "--name", "node1", "--data-dir", str(base / "node1"), "--json",
             "--listen", f"127.0.0.1:{port}", "--manifest", str(manifest_path))  # fmt: skip
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    coordinator = KeyPair.generate()
    others = [KeyPair.generate().public for _ in range(4)]
    manifest = Manifest(
        cluster_id=os.urandom(16),
        nodes=(
            NodeEntry(
                1,
                "node1",
                f"127.0.0.1:{port}",
                bytes.fromhex(info["noisePublicKey"]),
                bytes.fromhex(info["ed25519PublicKey"]),
            ),
            NodeEntry(2, "node2", "127.0.0.1:9", others[0], others[1]),
            NodeEntry(3, "node3", "127.0.0.1:10", others[2], others[3]),
        ),
        coordinators=(CoordinatorEntry("coordinator", coordinator.public),),
    )
    manifest_path.write_text(manifest.to_toml())
    rng = seeded_rng(b"test_server")
    secret = int.from_bytes(rng(32), "big") % (2**250)
    shares = split(secret, 2, 3, rng)
    meta = {
        "keyId": KEY_ID,
        "t": 2,
        "n": 3,
        "epoch": 0,
        "holders": [1, 2, 3],
        "pkG1": g1_to_bytes(g1_mul_generator(secret)).hex(),
        "pkG2": g2_to_bytes(g2_mul_generator(secret)).hex(),
        "publicShares": {str(i): g1_to_bytes(g1_mul_generator(s)).hex() for i, s in shares.items()},
        "transcriptHash": rng(32).hex(),
        "status": "pending",
    }
    _store_key(Path(info["config"]), manifest.cluster_id, meta, shares[1])
    return NodeDir(
        data=base / "node1",
        config=load_config(Path(info["config"])),
        port=port,
        manifest=manifest,
        coordinator=coordinator,
        shares=shares,
        stored=meta,
    )


@pytest.fixture
def running(node_dir: NodeDir, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The node process, serving (its stderr goes to a log file); killed at teardown."""
    log = tmp_path / "node1.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cluster.cli", "node", "run",
             "--config", str(node_dir.data / "node.toml")],
            stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=REPO,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "serving" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "node not serving within 30 s"
            time.sleep(0.05)
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _endpoint(node_dir: NodeDir) -> NodeEndpoint:
    return NodeEndpoint.from_manifest(node_dir.manifest.node("node1"))


async def test_node_serves_the_pinned_coordinator_and_stops_on_sigterm(
    node_dir: NodeDir, running: tuple[subprocess.Popen[bytes], Path]
) -> None:
    proc, log = running
    manifest = node_dir.manifest
    async with open_session_manager(
        [_endpoint(node_dir)],
        identity=node_dir.coordinator,
        cluster_id=manifest.cluster_id,
        config=FAST,
    ) as sessions:
        await sessions.wait_up("node1", timeout=10)
        status = node_api.NodeStatus.from_wire(
            await sessions.call("node1", node_api.NODE_STATUS, {}, timeout=5)
        )
        page = await sessions.call("node1", node_api.KEYS_LIST, {}, timeout=5)
        empty = await sessions.call("node1", node_api.KEYS_LIST, {"after": KEY_ID}, timeout=5)
    entry = manifest.node("node1")
    assert (status.name, status.index, status.cluster_id) == ("node1", 1, manifest.cluster_id)
    assert status.protocol_version == PROTOCOL_VERSION
    assert status.noise_public_key == entry.noise_public_key
    assert status.ed25519_public_key == entry.ed25519_public_key
    assert status.keys == (node_api.KeySummary(KEY_ID, 0, "active"),)
    assert page["more"] is False and empty == {"keys": [], "more": False}
    (meta,) = [node_api.PublicKeyMetadata.from_wire(k) for k in page["keys"]]
    stored = node_dir.stored
    assert (meta.key_id, meta.t, meta.n, meta.epoch) == (KEY_ID, 2, 3, 0)
    assert meta.status == "active" and meta.holders == (1, 2, 3)
    assert meta.pk_g1.hex() == stored["pkG1"] and meta.pk_g2.hex() == stored["pkG2"]
    assert {str(i): p.hex() for i, p in meta.public_shares} == stored["publicShares"]
    assert meta.transcript_hash.hex() == stored["transcriptHash"]
    meta.points()  # every point the node serves is a valid one
    share = node_dir.shares[1].to_bytes(32, "big")
    assert share not in json.dumps(page, default=bytes.hex).encode()  # public data only

    proc.send_signal(signal.SIGTERM)
    rc = await trio.to_thread.run_sync(proc.wait, 15)
    text = log.read_text()
    assert rc == 0, text
    assert "received SIGTERM" in text and "node node1 stopped" in text
    assert node_dir.config.read_pin() not in text
    events = [
        decode_line(line)
        for line in (node_dir.data / "audit.log").read_bytes().splitlines()
        if line
    ]
    assert events[0].log == f"{manifest.cluster_id.hex()}/node1"
    assert [e.event for e in events[-3:]] == ["audit.open", "node.start", "node.stop"]
    assert events[-1].outcome == "ok"
    with pytest.raises(OSError):  # the listener is gone with the process
        socket.create_connection(("127.0.0.1", node_dir.port), timeout=1).close()


async def test_node_refuses_a_coordinator_key_it_does_not_pin(
    node_dir: NodeDir, running: tuple[subprocess.Popen[bytes], Path]
) -> None:
    _proc, log = running
    stranger = KeyPair.generate()
    async with open_session_manager(
        [_endpoint(node_dir)],
        identity=stranger,
        cluster_id=node_dir.manifest.cluster_id,
        config=FAST,
    ) as sessions:
        refused = 0
        with trio.fail_after(15):
            while refused < 3 or stranger.public.hex() not in log.read_text():
                with pytest.raises((NodeUnavailable, Timeout)):
                    await sessions.call("node1", node_api.NODE_STATUS, {}, timeout=1)
                refused += 1
                await trio.sleep(0.1)
    assert f"peer static key {stranger.public.hex()} is not allowed" in log.read_text()


def test_a_second_process_on_the_same_data_dir_is_refused(
    node_dir: NodeDir, running: tuple[subprocess.Popen[bytes], Path]
) -> None:
    proc, _log = running
    audit = (node_dir.data / "audit.log").read_bytes()
    r = _cli("node", "run", "--config", str(node_dir.data / "node.toml"))
    assert r.returncode == 2
    assert f"another node process (pid {proc.pid}) is running on data dir" in r.stderr
    assert (node_dir.data / "audit.log").read_bytes() == audit  # its chain stays intact
    assert proc.poll() is None


@pytest.mark.parametrize(
    "case",
    ["no node in manifest", "identity not the manifest's", "wrong PIN", "module missing",
     "PIN variable unset", "no manifest"],
)  # fmt: skip
def test_node_startup_errors_exit_non_zero_with_the_message(
    node_dir: NodeDir, tmp_path: Path, case: str
) -> None:
    m = node_dir.manifest
    conf = tmp_path / "node.toml"
    env = _env()
    if case == "no node in manifest":
        other = replace(m, nodes=tuple(replace(n, name=f"x{n.name}") for n in m.nodes))
        path = node_dir.write_manifest(tmp_path / "m.toml", other)
        node_dir.write_config(conf, manifest=path)
        expected = f"manifest {path} does not list a node named 'node1'"
    elif case == "identity not the manifest's":
        fake = KeyPair.generate().public
        other = replace(m, nodes=(replace(m.nodes[0], noise_public_key=fake), *m.nodes[1:]))
        path = node_dir.write_manifest(tmp_path / "m.toml", other)
        node_dir.write_config(conf, manifest=path)
        expected = f"lists node node1 with Noise key {fake.hex()}, but this node's identity"
    elif case == "wrong PIN":
        pin = tmp_path / "pin"
        pin.write_text("not-the-pin\n")
        pin.chmod(0o600)
        node_dir.write_config(conf, pin_file=pin)
        expected = f"wrong user PIN for token '{node_dir.config.token_label}'"
    elif case == "module missing":
        node_dir.write_config(conf, pkcs11_module=Path("/nonexistent/libpkcs11.so"))
        expected = "PKCS#11 module not found: /nonexistent/libpkcs11.so"
    elif case == "PIN variable unset":
        node_dir.write_config(conf, pin_file=None, pin_env="TKMS_TEST_NODE_PIN")
        expected = "environment variable TKMS_TEST_NODE_PIN is not set"
    else:
        node_dir.write_config(conf, manifest=None)
        expected = "the config names no manifest"
    r = _cli("node", "run", "--config", str(conf), env=env)
    assert r.returncode == 2, r.stderr
    assert expected in r.stderr
    assert r.stderr.rstrip().splitlines()[-1].startswith("tkms: error (config):")
    assert "serving" not in r.stderr and "listening" not in r.stderr


async def test_request_gate_drains_then_refuses() -> None:
    gate = RequestGate()
    release = trio.Event()

    async def slow(params: dict[str, Any]) -> Any:
        await release.wait()
        return "done"

    handler = gate.wrap(slow)
    results: list[Any] = []

    async def call() -> None:
        results.append(await handler({}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        assert gate.in_flight == 1
        assert await gate.close(0.05) == 1  # still running when the time ran out
        with pytest.raises(RpcError) as refused:
            await handler({})
        assert refused.value.code == ErrorCode.UNAVAILABLE
        release.set()
        with trio.fail_after(5):
            assert await gate.close(5) == 0
    assert results == ["done"]

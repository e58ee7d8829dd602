"""The coordinator's real backend: the key registry merged from the nodes' reports,
the service over live Noise listeners on 127.0.0.1 (rebuilt when a node comes back),
its HTTP API over a real socket, and ``tkms coordinator init`` / start-up refusals."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from Crypto.Hash import keccak
from py_ecc.optimized_bn128 import G1 as PY_G1
from py_ecc.optimized_bn128 import G2 as PY_G2
from py_ecc.optimized_bn128 import multiply, normalize

from coordinator.auth import ApiKeyStore
from coordinator.backend import Client, NotImplementedYet, RegistryLoading, UnknownKey
from coordinator.config import load_config
from coordinator.http import HttpConfig, serve_http
from coordinator.metrics import Registry
from coordinator.server import CoordinatorStartupError, serve_coordinator
from coordinator.service import KeyRegistry, ServiceConfig, accept_structurally_valid, open_service
from coordinator.sessions import NodeEndpoint, SessionConfig, open_session_manager
from node.transport import Route, serve_rpc
from protocol import node_api
from protocol.bn254 import g1_mul_generator, g2_mul_generator
from protocol.encoding import g1_to_bytes, g2_to_bytes
from protocol.errors import VerificationError
from protocol.manifest import CoordinatorEntry, Manifest, NodeEntry
from protocol.noise import KeyPair
from protocol.rng import seeded_rng
from protocol.rpc import PROTOCOL_VERSION
from protocol.threshold import split

REPO = Path(__file__).resolve().parents[2]
CID = bytes(range(16))
SK = 0x1234_5678_9ABC_DEF0_1122_3344_5566_7788
FAST = SessionConfig(
    connect_timeout_s=1.0, handshake_timeout_s=2.0, call_timeout_s=3.0, backoff_max_s=0.1
)
WATCH = ServiceConfig(refresh_interval_s=60.0, watch_interval_s=0.02, call_timeout_s=3.0)
CLIENT = Client("demo", frozenset({"operator", "signer"}), frozenset({"*"}))


def make_key(
    key_id: str = "k1",
    *,
    sk: int = SK,
    epoch: int = 0,
    status: str = "active",
    t: int = 2,
    holders: tuple[int, ...] = (1, 2, 3),
) -> node_api.PublicKeyMetadata:
    shares = split(sk, t, len(holders), seeded_rng(key_id.encode()))
    return node_api.PublicKeyMetadata(
        key_id=key_id,
        epoch=epoch,
        t=t,
        n=len(holders),
        holders=holders,
        status=status,
        pk_g1=g1_to_bytes(g1_mul_generator(sk)),
        pk_g2=g2_to_bytes(g2_mul_generator(sk)),
        public_shares=tuple(
            (h, g1_to_bytes(g1_mul_generator(shares[j]))) for j, h in enumerate(holders, 1)
        ),
        transcript_hash=bytes([epoch]) * 32,
    )


def manifest_of(keys: list[KeyPair], ports: list[int], coordinator: KeyPair) -> Manifest:
    return Manifest(
        cluster_id=CID,
        nodes=tuple(
            NodeEntry(i + 1, f"node{i + 1}", f"127.0.0.1:{ports[i]}", k.public, bytes([i + 1]) * 32)
            for i, k in enumerate(keys)
        ),
        coordinators=(CoordinatorEntry("coordinator", coordinator.public),),
    )


MANIFEST = manifest_of([KeyPair.generate() for _ in range(3)], [9, 10, 11], KeyPair.generate())


# -- the registry -----------------------------------------------------------------------


async def test_registry_merges_the_holders_reports_and_matches_py_ecc() -> None:
    registry = KeyRegistry(MANIFEST, accept_structurally_valid)
    key = make_key()
    for name in ("node1", "node2", "node3"):
        await registry.update(name, [key])
    (info,) = registry.key_infos()
    assert (info.key_id, info.threshold, info.n, info.epoch) == ("k1", 2, 3, 0)
    assert info.holders == ("node1", "node2", "node3") and info.status == "active"
    x, y = normalize(multiply(PY_G1, SK))
    assert (info.pk_g1.x, info.pk_g1.y) == (int(x), int(y))
    qx, qy = normalize(multiply(PY_G2, SK))
    assert info.pk_g2.x == tuple(int(c) for c in qx.coeffs)
    assert info.pk_g2.y == tuple(int(c) for c in qy.coeffs)
    digest = keccak.new(
        digest_bits=256, data=int(x).to_bytes(32, "big") + int(y).to_bytes(32, "big")
    )
    assert info.operator_id == digest.digest()
    assert registry.get("k1") is info
    with pytest.raises(UnknownKey):
        registry.get("k2")


async def test_registry_takes_the_latest_epoch_and_the_majority_status() -> None:
    registry = KeyRegistry(MANIFEST, accept_structurally_valid)
    await registry.update("node1", [make_key(epoch=0, status="active")])
    await registry.update("node2", [make_key(epoch=1, status="pending", sk=SK + 1)])
    await registry.update("node3", [make_key(epoch=1, status="active", sk=SK + 1)])
    info = registry.get("k1")
    assert info.epoch == 1 and info.transcript_hash == b"\x01" * 32
    assert info.status == "active"  # a 1:1 tie goes to the later status
    x, _ = normalize(multiply(PY_G1, SK + 1))
    assert info.pk_g1.x == int(x)
    await registry.update("node1", [make_key(epoch=1, status="pending", sk=SK + 1)])
    assert registry.get("k1").status == "pending"  # 2:1


async def test_registry_leaves_out_keys_the_nodes_disagree_on() -> None:
    registry = KeyRegistry(MANIFEST, accept_structurally_valid)
    await registry.update("node1", [make_key(), make_key("k2")])
    await registry.update("node2", [make_key(sk=SK + 7), make_key("k2")])
    assert [k.key_id for k in registry.key_infos()] == ["k2"]
    assert "disagree on epoch 0" in registry.conflicts["k1"]
    await registry.update("node2", [make_key("k2")])  # node2 no longer reports k1
    assert [k.key_id for k in registry.key_infos()] == ["k1", "k2"]
    assert "k1" not in registry.conflicts
    await registry.update("node1", [])
    await registry.update("node2", [])
    assert registry.key_infos() == []


async def test_registry_refuses_strangers_unknown_holders_and_bad_points() -> None:
    registry = KeyRegistry(MANIFEST, accept_structurally_valid)
    await registry.update("node3", [make_key(holders=(1, 2))])  # node3 is not a holder
    assert "['node3'] report it but are not holders" in registry.conflicts["k1"]
    await registry.update("node3", [make_key("k9", holders=(1, 9))])
    assert "holder indices [9] are not in the manifest" in registry.conflicts["k9"]
    bad = replace(make_key("k3"), pk_g1=(1).to_bytes(32, "big") + (3).to_bytes(32, "big"))
    await registry.update("node1", [bad])
    assert "rejected" in registry.conflicts["k3"] and "pk_g1" in registry.conflicts["k3"]
    assert registry.key_infos() == []


async def test_registry_runs_the_verification_hook_once_per_public_key() -> None:
    seen: list[str] = []

    async def verify(meta: node_api.PublicKeyMetadata) -> None:
        seen.append(meta.key_id)
        if meta.key_id == "forged":
            raise VerificationError("transcript does not verify")

    registry = KeyRegistry(MANIFEST, verify)
    for name in ("node1", "node2"):
        await registry.update(name, [make_key(), make_key("forged")])
    assert [k.key_id for k in registry.key_infos()] == ["k1"]
    assert registry.conflicts["forged"] == "rejected: transcript does not verify"
    assert seen.count("k1") == 1  # cached by its public part


@pytest.mark.parametrize(
    ("change", "field_name"),
    [({"t": 4}, "t"), ({"holders": [1, 1, 2]}, "holders"), ({"n": 2}, "holders"),
     ({"public_shares": [{"index": 1, "point": b"\0" * 64}]}, "public_shares")],
)  # fmt: skip
def test_key_metadata_from_wire_refuses_inconsistent_keys(
    change: dict[str, Any], field_name: str
) -> None:
    wire = {**make_key().to_wire(), **change}
    node_api.KEY_METADATA.check(wire, "key")
    with pytest.raises(node_api.NodeApiError) as err:
        node_api.PublicKeyMetadata.from_wire(wire)
    assert err.value.field == f"keys.k1.{field_name}"
    assert node_api.PublicKeyMetadata.from_wire(make_key().to_wire()) == make_key()


# -- the service over live listeners ----------------------------------------------------


@dataclass
class FakeNode:
    """A live listener answering node.status / keys.list like a node (pages of 2)."""

    index: int
    key: KeyPair
    keys: list[node_api.PublicKeyMetadata]
    coordinator: bytes
    claimed_index: int | None = None
    hold: trio.Event | None = None  # keys.list waits for it
    port: int = 0
    scope: trio.CancelScope | None = None
    calls: list[str] = field(default_factory=list)

    async def status(self, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("node.status")
        return node_api.NodeStatus(
            name=f"node{self.index}",
            index=self.claimed_index or self.index,
            protocol_version=PROTOCOL_VERSION,
            cluster_id=CID,
            noise_public_key=self.key.public,
            ed25519_public_key=bytes([self.index]) * 32,
            keys=tuple(node_api.KeySummary(k.key_id, k.epoch, k.status) for k in self.keys),
        ).to_wire()

    async def keys_list(self, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("keys.list")
        if self.hold is not None:
            await self.hold.wait()
        rest = [k for k in self.keys if k.key_id > params.get("after", "")]
        return {"keys": [k.to_wire() for k in rest[:2]], "more": len(rest) > 2}

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as self.scope:
            routes = [
                Route(node_api.NODE_STATUS, self.status),
                Route(node_api.KEYS_LIST, self.keys_list),
            ]
            await serve_rpc(
                routes, identity=self.key, cluster_id=CID, allowed_peers=[self.coordinator],
                port=self.port, task_status=task_status,
            )  # fmt: skip


async def _until(predicate: Any, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Poll ``predicate`` (the service has no change events to wait on) under a deadline."""
    with trio.fail_after(timeout):
        while not await predicate():  # noqa: ASYNC110
            await trio.sleep(0.02)


async def test_service_rebuilds_the_registry_from_live_nodes(nursery: trio.Nursery) -> None:
    coordinator = KeyPair.generate()
    keys = [make_key(f"k{i}") for i in range(5)]
    nodes = [FakeNode(i, KeyPair.generate(), keys, coordinator.public) for i in (1, 2, 3)]
    nodes[2].claimed_index = 7  # node3 says it is someone else
    for node in nodes:
        node.port = await nursery.start(node.serve)
    manifest = manifest_of([n.key for n in nodes], [n.port for n in nodes], coordinator)
    endpoints = [NodeEndpoint.from_manifest(e) for e in manifest.nodes]
    async with (
        open_session_manager(endpoints, identity=coordinator, cluster_id=CID, config=FAST) as s,
        open_service(manifest, s, config=WATCH, verify_key=accept_structurally_valid) as service,
    ):

        async def settled() -> bool:
            h = await service.health()
            return [n.up for n in h.nodes] == [True, True, False] and len(h.keys) == 5

        await _until(settled)
        health = await service.health()
        assert "reports itself as node3 (index 7)" in health.nodes[2].detail
        assert [k.key_id for k in await service.list_keys()] == [f"k{i}" for i in range(5)]
        assert all(k.holders_up == 2 and k.can_sign for k in health.keys)  # t = 2
        assert nodes[0].calls.count("keys.list") == 3  # 5 keys in pages of 2
        assert (await service.get_key("k3")).holders == ("node1", "node2", "node3")
        with pytest.raises(NotImplementedYet):
            await service.sign("k3", b"\x11" * 32, client=CLIENT)
        with pytest.raises(UnknownKey):
            await service.sign("nope", b"\x11" * 32, client=CLIENT)

        # node1 goes away: down, its keys still known, k* now has 1 holder up < t
        assert nodes[0].scope is not None
        nodes[0].scope.cancel()

        async def node1_down() -> bool:
            h = await service.health()
            return not h.nodes[0].up and not any(k.can_sign for k in h.keys)

        await _until(node1_down)
        # it comes back with a new key on the same port: redialled and asked again
        nodes[0].keys = [*keys, make_key("k9")]
        await nursery.start(nodes[0].serve)

        async def k9_known() -> bool:
            return "k9" in [k.key_id for k in await service.list_keys()]

        await _until(k9_known)
        # only node1 reports k9 and it is a holder: the registry accepts its public data
        assert (await service.health()).nodes[0].up
    for node in nodes:
        assert node.scope is not None
        node.scope.cancel()


async def test_a_node_is_up_only_once_its_keys_are_known(nursery: trio.Nursery) -> None:
    coordinator = KeyPair.generate()
    node = FakeNode(1, KeyPair.generate(), [make_key(holders=(1,), t=1)], coordinator.public)
    node.hold = trio.Event()
    node.port = await nursery.start(node.serve)
    manifest = manifest_of([node.key], [node.port], coordinator)
    endpoints = [NodeEndpoint.from_manifest(e) for e in manifest.nodes]
    async with (
        open_session_manager(endpoints, identity=coordinator, cluster_id=CID, config=FAST) as s,
        open_service(manifest, s, config=WATCH, verify_key=accept_structurally_valid) as service,
    ):
        await s.wait_up("node1", timeout=10)

        async def asked() -> bool:
            return "keys.list" in node.calls

        await _until(asked)
        (pending,) = (await service.health()).nodes
        assert not pending.up and "not checked yet" in pending.detail
        assert await service.list_keys() == []
        # just started and node1 has not reported: "not loaded yet" (503), not unknown
        with pytest.raises(RegistryLoading, match="node1"):
            await service.get_key("k1")
        node.hold.set()

        async def up() -> bool:
            return (await service.health()).nodes[0].up

        await _until(up)
        assert [k.key_id for k in await service.list_keys()] == ["k1"]
        assert (await service.get_key("k1")).key_id == "k1"
        with pytest.raises(UnknownKey):  # every node has reported: really unknown
            await service.get_key("nope")
    assert node.scope is not None
    node.scope.cancel()


async def test_http_api_over_the_service(nursery: trio.Nursery) -> None:
    coordinator = KeyPair.generate()
    nodes = [FakeNode(i, KeyPair.generate(), [make_key()], coordinator.public) for i in (1, 2, 3)]
    for node in nodes:
        node.port = await nursery.start(node.serve)
    manifest = manifest_of([n.key for n in nodes], [n.port for n in nodes], coordinator)
    store = ApiKeyStore()
    token = store.add_client("demo", ["operator", "signer"], ["*"])
    endpoints = [NodeEndpoint.from_manifest(e) for e in manifest.nodes]
    async with (
        open_session_manager(endpoints, identity=coordinator, cluster_id=CID, config=FAST) as s,
        open_service(manifest, s, config=WATCH, verify_key=accept_structurally_valid) as service,
        trio.open_nursery() as http_nursery,
    ):
        port = await http_nursery.start(
            lambda task_status: serve_http(
                service, store, config=HttpConfig(port=0), metrics=Registry(),
                task_status=task_status,
            )
        )  # fmt: skip
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:

            async def ready() -> bool:
                r = await http.get("/healthz")
                return r.status_code == 200 and r.json()["status"] == "ok" and r.json()["keys"]

            await _until(ready)
            doc = (await http.get("/healthz")).json()
            assert doc["nodes"] == [{"name": f"node{i}", "up": True} for i in (1, 2, 3)]
            assert doc["keys"][0]["keyId"] == "k1" and doc["keys"][0]["canSign"] is True
            metrics = (await http.get("/metrics")).text
            assert "tkms_nodes_up 3" in metrics
            assert 'tkms_node_up{node="node2"} 1' in metrics
            keys = (await http.get("/v1/keys", headers=auth)).json()["keys"]
            assert [k["keyId"] for k in keys] == ["k1"]
            body = {"msgHash": "0x" + "11" * 32}
            r = await http.post("/v1/keys/k1/sign", json=body, headers=auth)
            assert r.status_code == 501 and r.json()["error"]["code"] == "not_implemented"
            r = await http.post("/v1/keys/zz/sign", json=body, headers=auth)
            assert r.status_code == 404
        http_nursery.cancel_scope.cancel()
    for node in nodes:
        assert node.scope is not None
        node.scope.cancel()


# -- tkms coordinator init, and what run refuses ------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TKMS_")}
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        env={**env, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _init_args(tmp: Path) -> list[str]:
    return ["coordinator", "init", "--dir", str(tmp / "coordinator"),
            "--manifest", str(tmp / "manifest.toml"), "--http", "127.0.0.1:7000",
            "--grpc", "127.0.0.1:7001", "--api-keys-file", str(tmp / "api-keys.json"),
            "--demo-client-key", str(tmp / "demo.key"), "--json"]  # fmt: skip


def _init(tmp_path: Path) -> dict[str, Any]:
    """``coordinator init`` checked: files, modes, the demo client; returns its JSON."""
    r = _cli(*_init_args(tmp_path))
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    assert {"name", "noisePublicKey", "config"} <= set(out) and out["name"] == "coordinator"
    config = load_config(Path(out["config"]))
    assert config.manifest == tmp_path / "manifest.toml"
    assert config.http_listen == ("127.0.0.1", 7000) and config.grpc_listen == ("127.0.0.1", 7001)
    for path in (config.noise_key_file, tmp_path / "demo.key", tmp_path / "api-keys.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "coordinator").stat().st_mode) == 0o700
    private = bytes.fromhex(config.noise_key_file.read_text().strip())
    assert KeyPair.from_private(private).public.hex() == out["noisePublicKey"]
    token = (tmp_path / "demo.key").read_text().strip()
    client = ApiKeyStore.load(tmp_path / "api-keys.json").authenticate(token)
    assert client is not None and client.is_operator and client.may_sign("any-key")
    assert token.encode() not in (tmp_path / "api-keys.json").read_bytes()
    for secret in (token, private.hex()):
        assert secret not in r.stdout + r.stderr + Path(out["config"]).read_text()

    again = _cli(*_init_args(tmp_path))
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    assert (tmp_path / "demo.key").read_text().strip() == token
    return out


async def test_coordinator_init_files_and_run_refusals(tmp_path: Path) -> None:
    out = await trio.to_thread.run_sync(_init, tmp_path)
    config = load_config(Path(out["config"]))

    async def refused(match: str) -> None:
        with pytest.raises(CoordinatorStartupError, match=match):
            await serve_coordinator(config, shutdown=trio.Event())

    # run refuses: no manifest, manifest without us, another key, key file readable
    await refused("cannot read manifest")
    node = NodeEntry(1, "node1", "127.0.0.1:9", b"\1" * 32, b"\2" * 32)
    ours = bytes.fromhex(out["noisePublicKey"])
    manifest_path = tmp_path / "manifest.toml"
    manifest = Manifest(CID, (node,), (CoordinatorEntry("other", ours),))
    manifest_path.write_text(manifest.to_toml())
    await refused("does not list a coordinator named 'coordinator'")
    manifest = Manifest(CID, (node,), (CoordinatorEntry("coordinator", b"\3" * 32),))
    manifest_path.write_text(manifest.to_toml())
    await refused(f"but {config.noise_key_file} holds the key of {ours.hex()}")
    config.noise_key_file.chmod(0o644)
    await refused("accessible by group/others")


async def test_after_the_startup_grace_an_unknown_key_is_unknown(nursery: trio.Nursery) -> None:
    coordinator = KeyPair.generate()
    node = FakeNode(1, KeyPair.generate(), [make_key(holders=(1,), t=1)], coordinator.public)
    node.hold = trio.Event()  # node1 never finishes reporting
    node.port = await nursery.start(node.serve)
    manifest = manifest_of([node.key], [node.port], coordinator)
    endpoints = [NodeEndpoint.from_manifest(e) for e in manifest.nodes]
    short = ServiceConfig(
        refresh_interval_s=60.0, watch_interval_s=0.02, call_timeout_s=3.0, startup_grace_s=0.05
    )
    async with (
        open_session_manager(endpoints, identity=coordinator, cluster_id=CID, config=FAST) as s,
        open_service(manifest, s, config=short, verify_key=accept_structurally_valid) as service,
    ):
        await trio.sleep(0.1)
        with pytest.raises(UnknownKey):
            await service.get_key("k1")
        node.hold.set()
    assert node.scope is not None
    node.scope.cancel()

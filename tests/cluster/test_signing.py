"""Threshold signing on a real local cluster: 5 node processes with SoftHSM2 tokens
and a coordinator process, over Noise and HTTP on 127.0.0.1 (t = 3).

Keys are dealt into the node stores before the nodes start (tests/cluster/provision.py,
a test-only dealer); one key gives node2 a wrong share. Subsets of signers are chosen
by SIGSTOPping the other nodes. Expected signatures come from the vector file or from
py_ecc, never from the code under test."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from py_ecc.fields import optimized_bn128_FQ as FQ
from py_ecc.optimized_bn128 import multiply, normalize

from cluster import launcher
from coordinator.auth import add_client_to_file
from protocol.audit import AuditRecord, decode_line, split_lines
from protocol.eigenlayer import AvsSignature, hash_to_g1
from protocol.hashing import keccak256
from protocol.manifest import parse_manifest
from tests.cluster.provision import DealtKey, deal, provision_nodes
from tests.protocol.vector_helpers import by_id, load, num

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
N, T = 5, 3
NAMES = [f"node{i}" for i in range(1, N + 1)]
VEC = by_id(load(), "signatureVectors", "sk69-hello-world")
VEC_MSG = VEC["msgHash"]
POLICY = "version = 1\n[keys.limited]\ntotal = 3\n"
UNSEAL_PROBE = """
import sys
from pathlib import Path
from node.config import load_config
from node.hsm import HsmCore
from node.sealing import SealKeyUnavailable, ShareContext, unseal
c = load_config(Path(sys.argv[1]))
core = HsmCore.open(c.pkcs11_module, c.token_label, c.read_pin(), softhsm2_conf=c.softhsm2_conf)
try:
    unseal(core, ShareContext(bytes.fromhex(sys.argv[2]), "doomed", 1, 0),
           Path(sys.argv[3]).read_bytes())
    print("UNSEALED")
except SealKeyUnavailable:
    print("useless")
"""  # node 1 opens its own token in a process of its own and tries the restored blob


@dataclass
class Cluster:
    layout: launcher.ClusterLayout
    url: str
    token: str  # the demo client: operator + signer on every key
    auditor: str  # an auditor-only client
    keys: dict[str, DealtKey]

    def pid(self, name: str) -> int:
        pid = launcher.read_pid(self.layout, name)
        assert pid is not None, f"{name} is not running"
        return pid

    def post(self, path: str, body: Any, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.post(self.url + path, json=body, headers=headers, timeout=30)

    def sign(self, key_id: str, msg: str) -> httpx.Response:
        return self.post(f"/v1/keys/{key_id}/sign", {"msgHash": msg})

    def node_records(self, name: str) -> list[AuditRecord]:
        lines, _ = split_lines((self.layout.root / "nodes" / name / "audit.log").read_bytes())
        return [decode_line(x) for x in lines]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TKMS_", "SOFTHSM2_"))}
    return {**env, "PYTHONPATH": str(REPO)}


def tkms(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        input=stdin, env=env or _env(), cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@contextlib.contextmanager
def stopped(c: Cluster, names: list[str]) -> Iterator[None]:
    pids = [c.pid(n) for n in names]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("signing") / "cluster"
    layout = launcher.init_cluster(root, nodes=N, threshold=T, progress=lambda _m: None)
    try:
        auditor = add_client_to_file(root / "api-keys.json", "watcher", ["auditor"])
        manifest = parse_manifest(layout.manifest.read_text())
        keys = {
            "k69": deal("k69", t=T, n=N, secret=num(VEC["privateKey"])),
            "k1": deal("k1", t=T, n=N),
            "faulty": deal("faulty", t=T, n=N, wrong_share_for=[2]),
            "limited": deal("limited", t=T, n=N),
            "doomed": deal("doomed", t=T, n=N),
        }
        provision_nodes([n.config for n in layout.nodes], manifest.cluster_id, list(keys.values()))
        for name in NAMES:
            (root / "nodes" / name / "policy.toml").write_text(POLICY)
        with layout.coordinator_config.open("a") as f:  # dealt keys have no transcript
            f.write("require_transcripts = false\n")
        launcher.up(layout, progress=lambda _m: None, timeout=90)
        token = layout.api_key_file.read_text().strip()
        yield Cluster(layout, f"http://{layout.http}", token, auditor, keys)
    finally:
        for name in ["coordinator", *NAMES]:  # a stopped process cannot act on SIGTERM
            pid = launcher.read_pid(layout, name)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        launcher.down(layout, progress=lambda _m: None)


def oracle(secret: int, msg: bytes) -> dict[str, str]:
    h = hash_to_g1(msg)
    x, y = normalize(multiply((FQ(h.x), FQ(h.y), FQ(1)), secret))
    return {"X": str(int(x.n)), "Y": str(int(y.n))}


def test_every_t_subset_signs_and_matches_the_single_key_signature(cluster: Cluster) -> None:
    expected = VEC["avsSignature"]
    for subset in itertools.combinations(NAMES, T):
        with stopped(cluster, [n for n in NAMES if n not in subset]):
            r = cluster.sign("k69", VEC_MSG)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert set(doc) == {"msgHash", "sigma", "apkG1", "apkG2", "keyId", "signers"}
        assert sorted(doc["signers"]) == list(subset)
        assert {k: doc[k] for k in expected} == expected  # identical, and the vector's
    msg = keccak256(b"another message")
    r = cluster.sign("k1", "0x" + msg.hex())
    assert r.status_code == 200 and r.json()["sigma"] == oracle(cluster.keys["k1"].secret, msg)
    assert AvsSignature.from_json(r.json(), allow_extra=True).verify()


def test_t_minus_1_nodes_up_gives_503_naming_the_missing_within_the_deadline(
    cluster: Cluster,
) -> None:
    with stopped(cluster, ["node3", "node4", "node5"]):
        start = time.monotonic()
        r = cluster.sign("k1", "0x" + keccak256(b"503").hex())
        elapsed = time.monotonic() - start
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "not_enough_signers" and err["needed"] == T
    assert err["missing"] == ["node3", "node4", "node5"]
    assert elapsed < 2.0 + 1.5  # the coordinator's sign deadline (2 s) and some slack
    assert r.headers["retry-after"] == "1"


def test_malformed_requests_are_refused_and_nothing_is_signed(cluster: Cluster) -> None:
    marks = {i: keccak256(b"malformed %d" % i) for i in range(4)}
    sign = "/v1/keys/k1/sign"
    forged = "tkms_" + "0" * 16 + "_" + "A" * 43  # well formed, unknown
    cases = [
        (cluster.post(sign, {"msgHash": "0x" + "zz" * 32}), 400),
        (cluster.post(sign, {"msgHash": "0x" + "ab" * 31}), 400),
        (cluster.sign("nope", "0x" + marks[0].hex()), 404),
        (cluster.post(sign, {"msgHash": "0x" + marks[1].hex()}, cluster.auditor), 403),
        (cluster.post(sign, {"msgHash": "0x" + marks[2].hex(), "pad": "x" * 70_000}), 413),
        (cluster.post(sign, {"msgHash": "0x" + marks[3].hex()}, forged), 401),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert "error" in response.json()
    for name in NAMES:
        records = cluster.node_records(name)
        assert not any(r.msg_hash in marks.values() for r in records)
        assert not any(r.key_id == "nope" for r in records)


def test_cli_sign_verify_and_keys(cluster: Cluster, tmp_path: Path) -> None:
    d = str(cluster.layout.root)
    r = tkms("sign", "--key-id", "k69", "--msg-hash", VEC_MSG, "--json", "--cluster-dir", d)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc) == {"msgHash", "sigma", "apkG1", "apkG2", "keyId", "signers"}
    assert doc["sigma"] == VEC["avsSignature"]["sigma"] and doc["keyId"] == "k69"
    ok = tkms("verify", "-", "--json", stdin=r.stdout)
    assert (ok.returncode, json.loads(ok.stdout)) == (0, {"valid": True})
    (tmp_path / "sig.json").write_text(json.dumps({**doc, "sigma": doc["apkG1"]}))
    bad = tkms("verify", str(tmp_path / "sig.json"), "--json")
    assert (bad.returncode, json.loads(bad.stdout)) == (1, {"valid": False})
    zero = {"X": "0", "Y": "0"}
    infinity = {"msgHash": VEC_MSG, "sigma": zero, "apkG1": zero,
                "apkG2": {"X": ["0", "0"], "Y": ["0", "0"]}}  # fmt: skip
    inf = tkms("verify", "--json", stdin=json.dumps(infinity))
    assert (inf.returncode, json.loads(inf.stdout)) == (1, {"valid": False})
    assert tkms("verify", "--json", stdin="[1, 2]").returncode == 2

    listed = tkms("keys", "list", "--json", "--cluster-dir", d)
    keys = {k["keyId"]: k for k in json.loads(listed.stdout)["keys"]}
    assert {"k69", "k1", "faulty", "limited", "doomed"} <= set(keys)
    assert (keys["k69"]["threshold"], keys["k69"]["n"], keys["k69"]["status"]) == (T, N, "active")
    shown = json.loads(tkms("keys", "show", "k69", "--json", "--cluster-dir", d).stdout)
    vec_pk = {k: str(num(v)) for k, v in VEC["pubkeyG1"].items()}
    assert shown["pubkeyG1"] == vec_pk and shown["holders"] == NAMES

    # TKMS_API_KEY comes first: a wrong key there is refused even with a good cluster key
    env = {**_env(), "TKMS_API_KEY": cluster.auditor}
    denied = tkms(
        "sign", "--key-id", "k69", "--msg-hash", VEC_MSG, "--json", "--cluster-dir", d, env=env
    )
    assert denied.returncode == 2 and "403" in denied.stderr and denied.stdout == ""
    no = tkms("keys", "destroy", "k69", "--cluster-dir", d, stdin="k69\n")
    assert no.returncode == 2 and "--yes" in no.stderr  # no terminal: no confirmation


def test_a_node_with_a_wrong_share_is_named_and_excluded(cluster: Cluster) -> None:
    secret = cluster.keys["faulty"].secret
    blamed = False
    for i in range(20):
        msg = keccak256(b"faulty %d" % i)
        r = cluster.sign("faulty", "0x" + msg.hex())
        assert r.status_code == 200, r.text  # the request succeeds either way
        assert r.json()["sigma"] == oracle(secret, msg) and "node2" not in r.json()["signers"]
        metrics = httpx.get(
            cluster.url + "/metrics", headers={"Authorization": f"Bearer {cluster.token}"}
        ).text
        if 'tkms_node_partial_failures_total{node="node2"} 1' in metrics:
            blamed = True
            break
    assert blamed, "node2's bad partial was never among the first t (20 tries)"
    before = len(cluster.node_records("node2"))
    for i in range(3):  # cooling down: node2 is not even asked
        assert cluster.sign("k1", "0x" + keccak256(b"after %d" % i).hex()).status_code == 200
    assert len(cluster.node_records("node2")) == before
    health = httpx.get(
        cluster.url + "/healthz", headers={"Authorization": f"Bearer {cluster.token}"}
    ).json()
    (node2,) = [n for n in health["nodes"] if n["name"] == "node2"]
    assert "bad partial" in node2["detail"]
    lines, _ = split_lines((cluster.layout.root / "coordinator" / "audit.log").read_bytes())
    assert any(
        r.extra.get("blamed") == ["node2"] and r.key_id == "faulty" for r in map(decode_line, lines)
    )


def test_usage_limits_hold_across_a_node_restart(cluster: Cluster) -> None:
    def attempt(i: int) -> httpx.Response:
        return cluster.sign("limited", "0x" + keccak256(b"limited %d" % i).hex())

    assert [attempt(0).status_code, attempt(1).status_code] == [200, 200]
    for name in NAMES:
        os.kill(cluster.pid(name), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(launcher.read_pid(cluster.layout, n) for n in NAMES):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for node in cluster.layout.nodes:
        launcher.start_node(cluster.layout, node)
    launcher.wait_until_up(cluster.layout, timeout=60, progress=lambda _m: None)
    # Each node signs at most 3 times in all; a node may have missed a request the
    # coordinator no longer needed, so 3 to 5 requests succeed, then every one is
    # refused for the usage limit.
    codes = [attempt(i).status_code for i in range(2, 8)]
    successes = 2 + codes.index(429)
    assert 3 <= successes <= 5 and set(codes[codes.index(429) :]) == {429}, codes
    assert attempt(9).json()["error"]["code"] == "usage_limit"
    for name in NAMES:
        records = [x for x in cluster.node_records(name) if x.key_id == "limited"]
        assert sum(x.outcome == "signed" for x in records) <= 3  # across the SIGKILL
        assert any(x.outcome == "refused" and x.extra["reason"] == "usage_limit" for x in records)


def test_a_destroyed_key_cannot_sign_and_its_sealed_files_are_useless(
    cluster: Cluster, tmp_path: Path
) -> None:
    d = str(cluster.layout.root)
    blob = cluster.layout.root / "nodes" / "node1" / "keys" / "doomed" / "share-0.sealed"
    shutil.copy(blob, tmp_path / "backup.sealed")
    assert cluster.sign("doomed", VEC_MSG).status_code == 200
    r = tkms("keys", "destroy", "doomed", "--yes", "--json", "--cluster-dir", d)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"destroyed": "doomed"}
    after = cluster.sign("doomed", VEC_MSG)
    assert after.status_code == 409 and after.json()["error"]["code"] == "key_not_active"
    shown = json.loads(tkms("keys", "show", "doomed", "--json", "--cluster-dir", d).stdout)
    assert shown["status"] == "destroyed"
    assert not blob.exists()
    shutil.copy(tmp_path / "backup.sealed", blob)  # an old copy of the file comes back
    config = cluster.layout.nodes[0].config
    p = subprocess.run(
        [sys.executable, "-c", UNSEAL_PROBE, str(config), cluster.layout.cluster_id, str(blob)],
        env=_env(), cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.stdout.strip() == "useless", p.stderr


def test_a_restarted_coordinator_rebuilds_its_registry_from_the_nodes(cluster: Cluster) -> None:
    launcher.stop_process(cluster.layout, "coordinator")
    launcher.start_coordinator(cluster.layout)
    launcher.wait_until_up(cluster.layout, timeout=60, progress=lambda _m: None)
    r = cluster.sign("k69", VEC_MSG)
    assert r.status_code == 200 and r.json()["sigma"] == VEC["avsSignature"]["sigma"]
    keys = httpx.get(cluster.url + "/v1/keys", headers={"Authorization": f"Bearer {cluster.token}"})
    status = {k["keyId"]: k["status"] for k in keys.json()["keys"]}
    assert status == {"k69": "active", "k1": "active", "faulty": "active",
                      "limited": "active", "doomed": "destroyed"}  # fmt: skip


def test_audit_logs_verify_and_checkpoints_were_exchanged(cluster: Cluster) -> None:
    time.sleep(4.5)  # two checkpoint rounds (every 2 s)
    root = cluster.layout.root
    for name in NAMES:
        others = [str(root / "nodes" / o / "checkpoints.log") for o in NAMES if o != name]
        r = tkms("audit", "verify", str(root / "nodes" / name / "audit.log"), "--manifest",
                 str(cluster.layout.manifest), "--node", name, "--checkpoints", *others,
                 str(root / "coordinator" / "checkpoints.log"), "--json")  # fmt: skip
        report = json.loads(r.stdout)
        assert r.returncode == 0 and report["valid"], report
        assert report["anchoredSeq"] is not None and report["checkpoints"]["used"] >= 2, report
        assert report["checkpoints"]["rejected"] == 0
    r = tkms("audit", "verify", str(root / "coordinator" / "audit.log"), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["valid"]

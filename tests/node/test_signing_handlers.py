"""The node's signing handlers on a real node (``tkms node init``: real SoftHSM2 token,
sealed identity, share store and audit log), opened in-process with ``open_node``:
partials verify and equal s_j·H(m) computed by py_ecc, every decision is in the audit
log before the answer (a refusal as refused, never as signed), the node's own policy
and usage limits (which survive a restart) hold, destroy crypto-shreds, and relayed
checkpoints are kept only when they are the peer's own and validly signed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from nacl.signing import SigningKey
from py_ecc.fields import optimized_bn128_FQ as FQ
from py_ecc.optimized_bn128 import multiply, normalize

from cluster.launcher import free_ports
from node.config import NodeConfig, load_config
from node.handlers.audit import CHECKPOINTS_FILE, AnchorBook
from node.handlers.signing import NodeSigner
from node.hsm import HsmCore
from node.policy import USAGE_DIR, NodePolicy, UsageLedger, load_policy
from node.sealing import SealKeyUnavailable, ShareContext, unseal
from node.server import open_node
from protocol.aggregation import dleq_context
from protocol.audit import AuditRecord, Checkpoint, decode_line, split_lines
from protocol.bn254 import G1
from protocol.eigenlayer import hash_to_g1
from protocol.encoding import g1_from_bytes, g1_to_bytes
from protocol.hashing import keccak256
from protocol.manifest import CoordinatorEntry, Manifest, NodeEntry
from protocol.noise import KeyPair
from protocol.proofs import DleqProof, verify_dleq
from protocol.rpc import RpcError
from protocol.sign_api import Refusal
from tests.cluster.provision import DealtKey, deal, provision_nodes
from tests.node.hsm_helpers import REPO

pytestmark = pytest.mark.cluster

POLICY = """
version = 1

[keys.restricted]
clients = ["alice"]

[keys.limited]
per_minute = 3
total = 5

[keys.small]
total = 3
"""


@dataclass
class Node:
    config: NodeConfig
    manifest: Manifest
    keys: dict[str, DealtKey]
    peer_key: SigningKey  # node2's Ed25519 key (the test plays node2)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Node:
    base = tmp_path_factory.mktemp("signing-node")
    (port,) = free_ports(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TKMS_", "SOFTHSM2_"))}
    r = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "node", "init", "--name", "node1", "--json",
         "--data-dir", str(base / "node1"), "--listen", f"127.0.0.1:{port}",
         "--manifest", str(base / "manifest.toml")],
        env={**env, "PYTHONPATH": str(REPO)}, cwd=REPO, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    peer_key = SigningKey.generate()
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
            NodeEntry(
                2, "node2", "127.0.0.1:9", KeyPair.generate().public, bytes(peer_key.verify_key)
            ),
            NodeEntry(
                3, "node3", "127.0.0.1:10", KeyPair.generate().public, KeyPair.generate().public
            ),
        ),
        coordinators=(CoordinatorEntry("coordinator", KeyPair.generate().public),),
    )
    (base / "manifest.toml").write_text(manifest.to_toml())
    config_path = Path(info["config"])
    keys = {k: deal(k, t=2, n=3) for k in ("k1", "restricted", "limited", "small", "gone")}
    provision_nodes([config_path], manifest.cluster_id, list(keys.values()))
    config = load_config(config_path)
    (config.data_dir / "policy.toml").write_text(POLICY)
    return Node(config, manifest, keys, peer_key)


def with_node(
    node: Node, body: Callable[[NodeSigner, AnchorBook], Awaitable[None]], clock: float = 0.0
) -> None:
    """Open the node in-process, run ``body`` with its handlers, close it again."""

    async def main() -> None:
        async with open_node(node.config) as ctx:
            policy = load_policy(node.config.data_dir / "policy.toml")
            ledger = UsageLedger(node.config.data_dir / USAGE_DIR, clock=lambda: clock)
            signer = NodeSigner(ctx, policy, ledger)
            await body(signer, AnchorBook(ctx, node.config.data_dir / CHECKPOINTS_FILE))

    trio.run(main)


def records(node: Node) -> list[AuditRecord]:
    lines, _torn = split_lines((node.config.data_dir / "audit.log").read_bytes())
    return [decode_line(line) for line in lines]


def params(key: DealtKey, msg: bytes, client: str = "demo") -> dict[str, Any]:
    return {"key_id": key.key_id, "epoch": 0, "client": client, "msg_hash": msg}


def py_ecc_mul_bytes(point: G1, k: int) -> bytes:
    """k·point with py_ecc (the oracle), as 64 bytes X || Y."""
    x, y = normalize(multiply((FQ(point.x), FQ(point.y), FQ(1)), k))
    return int(x.n).to_bytes(32, "big") + int(y.n).to_bytes(32, "big")


def py_ecc_sign(secret: int, msg: bytes) -> bytes:
    """secret·H(m) with py_ecc; H from the vector-tested hash_to_g1."""
    return py_ecc_mul_bytes(hash_to_g1(msg), secret)


POINT = hash_to_g1(keccak256(b"an already hashed point"))


def refusal(exc: pytest.ExceptionInfo[RpcError]) -> Refusal:
    return Refusal(exc.value.code)


def test_partial_verifies_equals_the_oracle_and_is_audited(node: Node) -> None:
    key = node.keys["k1"]
    msg = keccak256(b"partial")
    out: dict[str, Any] = {}

    async def body(signer: NodeSigner, _book: AnchorBook) -> None:
        out["partial"] = await signer.sign_partial(params(key, msg))
        out["seq_after"] = signer.ctx.audit.next_seq
        point = {"key_id": "k1", "epoch": 0, "client": "demo", "point": g1_to_bytes(POINT)}
        out["point"] = await signer.sign_partial(point)
        out["batch"] = await signer.sign_batch(
            {"key_id": "k1", "epoch": 0, "client": "demo", "msg_hashes": [msg, b"\x01" * 32]}
        )

    with_node(node, body)
    p = out["partial"]
    assert p["index"] == 1
    assert out["point"]["sigma"] == py_ecc_mul_bytes(POINT, key.shares[1])
    assert p["sigma"] == py_ecc_sign(key.shares[1], msg)
    pub = g1_from_bytes(bytes.fromhex(key.metadata["publicShares"]["1"]), field="pub")
    proof = DleqProof.from_bytes(p["proof"])
    context = dleq_context("k1", 0, 1, msg)
    sigma = g1_from_bytes(p["sigma"], field="sigma")
    assert verify_dleq(pub, hash_to_g1(msg), sigma, proof, context=context)
    assert not verify_dleq(
        pub, hash_to_g1(msg), sigma, proof, context=dleq_context("k1", 1, 1, msg)
    )
    items = out["batch"]["items"]
    assert out["batch"]["index"] == 1 and len(items) == 2
    assert items[0]["sigma"] == p["sigma"] and items[1]["sigma"] == py_ecc_sign(
        key.shares[1], b"\x01" * 32
    )
    assert items[0]["proof"] != p["proof"]  # hedged nonce: fresh randomness each time
    recs = records(node)
    signed = [r for r in recs if r.outcome == "signed" and r.key_id == "k1"]
    assert [(r.event, r.msg_hash, r.client) for r in signed[-4:]] == [
        ("sign.partial", msg, "demo"),
        ("sign.partial", None, "demo"),  # the point: in extra.point
        ("sign.batch", msg, "demo"),
        ("sign.batch", b"\x01" * 32, "demo"),
    ]
    assert signed[-3].extra["point"] == g1_to_bytes(POINT).hex()
    # the record was durable when the handler returned: it is in the file at that seq
    assert recs[out["seq_after"] - 1].event == "sign.partial"


def test_refusals_are_audited_as_refused_never_signed(node: Node) -> None:
    k1, restricted = node.keys["k1"], node.keys["restricted"]
    msgs = [keccak256(bytes([i])) for i in range(6)]
    errors: list[Refusal] = []

    async def body(signer: NodeSigner, _book: AnchorBook) -> None:
        bad: list[dict[str, Any]] = [
            {**params(k1, msgs[0]), "key_id": "nope"},
            {**params(k1, msgs[1]), "epoch": 7},
            params(restricted, msgs[2], client="mallory"),
            {**params(k1, msgs[3]), "point": g1_to_bytes(hash_to_g1(msgs[3]))},
            {"key_id": "k1", "epoch": 0, "client": "demo", "point": b"\x01" * 64},
        ]
        for p in bad:
            with pytest.raises(RpcError) as exc:
                await signer.sign_partial(p)
            errors.append(refusal(exc))
        ok = await signer.sign_partial(params(restricted, msgs[4], client="alice"))
        assert ok["index"] == 1
        await signer.ctx.audit.aclose()  # the log is gone: nothing may be signed
        with pytest.raises(RpcError) as exc:
            await signer.sign_partial(params(k1, msgs[5]))
        errors.append(refusal(exc))

    before = len(records(node))
    with_node(node, body)
    assert errors == [
        Refusal.UNKNOWN_KEY,
        Refusal.EPOCH_MISMATCH,
        Refusal.CLIENT_NOT_ALLOWED,
        Refusal.BAD_INPUT,
        Refusal.BAD_INPUT,
        Refusal.AUDIT_UNAVAILABLE,
    ]
    new = records(node)[before:]
    refused = [r for r in new if r.outcome == "refused"]
    assert [r.extra["reason"] for r in refused] == [
        "unknown_key", "epoch_mismatch", "client_not_allowed", "bad_input", "bad_input"
    ]  # fmt: skip
    assert refused[2].client == "mallory" and refused[0].msg_hash == msgs[0]
    assert "point" in refused[4].extra and refused[4].msg_hash is None
    signed = [r for r in new if r.outcome == "signed"]
    assert [(r.key_id, r.client, r.msg_hash) for r in signed] == [("restricted", "alice", msgs[4])]
    assert not any(r.msg_hash == msgs[5] for r in new)


def test_usage_limits_per_minute_total_and_batches(node: Node) -> None:
    limited = node.keys["limited"]
    outcomes: list[str] = []

    async def sign(signer: NodeSigner, i: int) -> None:
        try:
            await signer.sign_partial(params(limited, keccak256(b"lim%d" % i)))
            outcomes.append("ok")
        except RpcError as exc:
            outcomes.append(Refusal(exc.code).label)

    async def minute0(signer: NodeSigner, _book: AnchorBook) -> None:
        for i in range(4):
            await sign(signer, i)

    async def minute1(signer: NodeSigner, _book: AnchorBook) -> None:
        out = await signer.sign_batch(
            {"key_id": "limited", "epoch": 0, "client": "demo",
             "msg_hashes": [keccak256(b"b%d" % i) for i in range(3)]}
        )  # fmt: skip
        outcomes.extend("ok" if "sigma" in it else Refusal(it["error"]["code"]).label
                        for it in out["items"])  # fmt: skip
        await sign(signer, 9)

    with_node(node, minute0, clock=600.0)
    with_node(node, minute1, clock=660.0)  # a later minute, after a restart
    # minute 10: 3 of 4; minute 11: 2 more reach the total of 5, the 3rd item and the
    # next request are refused
    assert outcomes == ["ok", "ok", "ok", "usage_limit", "ok", "ok", "usage_limit", "usage_limit"]
    recs = [r for r in records(node) if r.key_id == "limited"]
    assert sum(r.outcome == "signed" for r in recs) == 5
    assert [r.extra["reason"] for r in recs if r.outcome == "refused"] == ["usage_limit"] * 3


def test_reserved_signatures_count_as_used_after_a_restart(node: Node) -> None:
    small = node.keys["small"]
    outcomes: list[str] = []

    async def one(signer: NodeSigner, _book: AnchorBook) -> None:
        for i in range(2):
            try:
                await signer.sign_partial(params(small, keccak256(b"s%d" % i)))
                outcomes.append("ok")
            except RpcError as exc:
                outcomes.append(Refusal(exc.code).label)

    with_node(node, one, clock=6000.0)
    usage = json.loads((node.config.data_dir / USAGE_DIR / "small.json").read_text())
    assert usage["totalReserved"] == 2  # this close to the limit, each one is persisted
    with_node(node, one, clock=6000.0)  # after the restart: 1 left, then none
    assert outcomes == ["ok", "ok", "ok", "usage_limit"]


def test_destroy_shreds_the_share_and_a_restored_blob_is_useless(node: Node) -> None:
    gone = node.keys["gone"]
    blob_path = node.config.data_dir / "keys" / "gone" / "share-0.sealed"
    copy = node.config.data_dir.parent / "share-copy.sealed"
    shutil.copy(blob_path, copy)
    out: dict[str, Any] = {}

    async def body(signer: NodeSigner, _book: AnchorBook) -> None:
        forbid = NodeSigner(signer.ctx, NodePolicy(allow_destroy=False), signer.ledger)
        with pytest.raises(RpcError) as exc:
            await forbid.destroy({"key_id": "gone", "epoch": 0})
        out["forbidden"] = refusal(exc)
        out["first"] = await signer.destroy({"key_id": "gone", "epoch": 0, "client": "demo"})
        out["again"] = await signer.destroy({"key_id": "gone", "epoch": 0})
        with pytest.raises(RpcError) as exc:
            await signer.sign_partial(params(gone, keccak256(b"after")))
        out["sign"] = refusal(exc)

    with_node(node, body)
    assert out["forbidden"] is Refusal.NOT_ALLOWED
    assert out["first"] == out["again"] == {"key_id": "gone", "status": "destroyed"}
    assert out["sign"] is Refusal.KEY_NOT_ACTIVE
    assert not blob_path.exists()
    shutil.copy(copy, blob_path)  # an old backup of the sealed file comes back
    pin = node.config.read_pin()
    core = HsmCore.open(node.config.pkcs11_module, node.config.token_label, pin,
                        softhsm2_conf=node.config.softhsm2_conf)  # fmt: skip
    try:
        ctx = ShareContext(node.manifest.cluster_id, "gone", 1, 0)
        with pytest.raises(SealKeyUnavailable):
            unseal(core, ctx, blob_path.read_bytes())
    finally:
        core.close()
    destroy = [r for r in records(node) if r.event == "key.destroy"]
    assert [r.outcome for r in destroy] == ["refused", "accepted", "destroyed"]


def test_relayed_checkpoints_are_checked_and_kept(node: Node) -> None:
    log_id = f"{node.manifest.cluster_id.hex()}/node2"
    cp5 = Checkpoint.sign(node.peer_key, log_id, 5, b"\x05" * 32)
    cp6 = Checkpoint.sign(node.peer_key, log_id, 6, b"\x06" * 32)
    forged = Checkpoint.sign(SigningKey.generate(), log_id, 7, b"\x07" * 32)
    other_log = Checkpoint.sign(
        node.peer_key, f"{node.manifest.cluster_id.hex()}/node3", 8, b"\x08" * 32
    )
    twin = Checkpoint.sign(node.peer_key, log_id, 6, b"\x66" * 32)
    answers: list[Any] = []

    async def body(signer: NodeSigner, book: AnchorBook) -> None:
        own = Checkpoint.from_fields(await book.checkpoint({}))
        answers.append(own.verify(node.manifest.node("node1").ed25519_public_key))
        for node_name, cp in [("node2", cp5), ("node2", cp6), ("node2", cp5), ("node2", forged),
                              ("node3", other_log), ("node1", cp6), ("node9", cp6),
                              ("node2", twin)]:  # fmt: skip
            try:
                answers.append(
                    (await book.anchor({"node": node_name, "checkpoint": cp.to_fields()}))["stored"]
                )
            except RpcError as exc:
                answers.append(Refusal(exc.code).label)

    with_node(node, body)
    bad = "bad_checkpoint"
    assert answers == [True, True, True, False, bad, bad, bad, bad, bad]
    path = node.config.data_dir / CHECKPOINTS_FILE
    lines, _ = split_lines(path.read_bytes())
    assert [Checkpoint.from_line(x) for x in lines] == [cp5, cp6]
    assert any(
        r.event == "audit.equivocation" and r.extra["node"] == "node2" for r in records(node)
    )
    with path.open("ab") as f:
        f.write(b"torn-tail-without-newline")

    async def reopen(signer: NodeSigner, book: AnchorBook) -> None:
        assert book.latest[log_id] == cp6

    with_node(node, reopen)
    assert path.read_bytes().endswith(b"\n")

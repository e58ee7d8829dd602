"""``tkms audit verify`` as a real subprocess: JSON shape, exit codes, key sources."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from protocol.audit import AuditChain, Checkpoint
from protocol.manifest import Manifest, NodeEntry

ROOT = Path(__file__).resolve().parents[2]
KEY = SigningKey(hashlib.sha256(b"cli node1").digest())
OTHER = SigningKey(hashlib.sha256(b"cli node2").digest())
JSON_KEYS = {
    "valid",
    "records",
    "head",
    "reason",
    "unanchoredTail",
    "firstBadSeq",
    "logId",
    "anchoredSeq",
    "tornTail",
    "tornTailBytes",
    "checkpoints",
}


def tkms(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def tkms_json(*args: str | Path) -> tuple[int, dict[str, Any]]:
    proc = tkms(*args, "--json")
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr)  # exactly one JSON object
    return proc.returncode, json.loads(lines[0])


@pytest.fixture
def cluster_files(tmp_path: Path) -> dict[str, Any]:
    chain = AuditChain("c0ffee/node1")
    data = b""
    for i in range(5):
        p = chain.prepare(
            time=1000 + i,
            actor="node1",
            event="sign",
            outcome="ok",
            client="avs",
            key_id="k1",
            msg_hash=bytes([i]) * 32,
            signers=["node1", "node2"],
        )
        data += p.line
        chain.commit(p)
        if i == 2:
            mid = chain.checkpoint(KEY)
    log = tmp_path / "node1-audit.log"
    log.write_bytes(data)
    cps = tmp_path / "coordinator.checkpoints"
    cps.write_bytes(mid.to_line())
    head_cps = tmp_path / "node2.checkpoints"
    head_cps.write_bytes(chain.checkpoint(KEY).to_line())
    nodes = tuple(
        NodeEntry(
            index=i,
            name=f"node{i}",
            address=f"127.0.0.1:{7100 + i}",
            noise_public_key=bytes([i]) * 32,
            ed25519_public_key=(KEY if i == 1 else OTHER).verify_key.encode(),
        )
        for i in (1, 2)
    )
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(Manifest(b"\x01" * 16, nodes, ()).to_toml())
    return {
        "log": log,
        "data": data,
        "cps": cps,
        "head_cps": head_cps,
        "manifest": manifest,
        "head": chain.head.hex(),
        "pub": KEY.verify_key.encode().hex(),
    }


def test_valid_log_json_shape_and_exit_code(cluster_files: dict[str, Any]) -> None:
    f = cluster_files
    code, out = tkms_json(
        "audit", "verify", f["log"], "--public-key", f["pub"], "--checkpoints", f["cps"]
    )
    assert code == 0
    assert set(out) == JSON_KEYS
    assert out["valid"] is True and out["records"] == 5 and out["head"] == f["head"]
    assert out["reason"] is None and out["firstBadSeq"] is None
    assert out["unanchoredTail"] == 2 and out["anchoredSeq"] == 2
    assert out["logId"] == "c0ffee/node1" and out["tornTail"] is False
    assert out["checkpoints"] == {"used": 1, "rejected": 0, "otherLogs": 0, "malformed": 0}


def test_manifest_key_and_several_checkpoint_files(cluster_files: dict[str, Any]) -> None:
    f = cluster_files
    args = ["audit", "verify", f["log"], "--manifest", f["manifest"], "--node", "node1"]
    code, out = tkms_json(*args, "--checkpoints", f["cps"], f["head_cps"])
    assert code == 0 and out["unanchoredTail"] == 0 and out["checkpoints"]["used"] == 2
    # node2's key did not sign node1's checkpoints: they are rejected, nothing anchored.
    args[-1] = "node2"
    code, out = tkms_json(*args, "--checkpoints", f["cps"], f["head_cps"])
    assert code == 0 and out["checkpoints"]["rejected"] == 2 and out["unanchoredTail"] == 5


def test_truncated_log_exits_1_with_reason(cluster_files: dict[str, Any]) -> None:
    f = cluster_files
    f["log"].write_bytes(b"".join(ln + b"\n" for ln in f["data"].split(b"\n")[:3]))
    code, out = tkms_json(
        "audit", "verify", f["log"], "--public-key", f["pub"], "--checkpoints", f["head_cps"]
    )
    assert code == 1
    assert out["valid"] is False and out["firstBadSeq"] == 3 and out["records"] == 3
    assert out["reason"].startswith("truncated")
    human = tkms(
        "audit", "verify", f["log"], "--public-key", f["pub"], "--checkpoints", f["head_cps"]
    )
    assert human.returncode == 1 and "INVALID" in human.stdout and "truncated" in human.stdout


def test_edited_record_and_torn_tail(cluster_files: dict[str, Any]) -> None:
    f = cluster_files
    lines = f["data"].split(b"\n")
    f["log"].write_bytes(f["data"] + lines[0][:10])
    code, out = tkms_json("audit", "verify", f["log"])
    assert code == 0 and out["tornTail"] is True and out["tornTailBytes"] == 10
    assert out["unanchoredTail"] == 5
    lines[1], lines[2] = lines[2], lines[1]
    f["log"].write_bytes(b"\n".join(lines))
    code, out = tkms_json("audit", "verify", f["log"])
    assert code == 1 and out["firstBadSeq"] == 1


def test_malformed_checkpoint_lines_are_counted(cluster_files: dict[str, Any]) -> None:
    f = cluster_files
    bad = f["cps"].parent / "bad.checkpoints"
    forged = Checkpoint("c0ffee/node1", 9, b"\x00" * 32, b"\x01" * 64)
    bad.write_bytes(b"garbage\n" + forged.to_line())
    code, out = tkms_json(
        "audit", "verify", f["log"], "--public-key", f["pub"], "--checkpoints", bad
    )
    assert code == 0
    assert out["checkpoints"] == {"used": 0, "rejected": 1, "otherLogs": 0, "malformed": 1}


def test_unusable_inputs_exit_2(cluster_files: dict[str, Any], tmp_path: Path) -> None:
    f = cluster_files
    assert tkms("audit", "verify", tmp_path / "missing.log").returncode == 2
    assert tkms("audit", "verify", f["log"], "--public-key", "zz").returncode == 2
    assert tkms("audit", "verify", f["log"], "--public-key", "00" * 31).returncode == 2
    proc = tkms("audit", "verify", f["log"], "--manifest", f["manifest"], "--node", "node9")
    assert proc.returncode == 2 and "node9" in proc.stderr

"""``tkms demo`` (in-process interim demo) run as a real subprocess: one JSON object on
stdout that passes the gamma check, progress on stderr, strict --msg-hash."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from protocol.eigenlayer import AvsSignature, operator_id
from protocol.hashing import keccak256

ROOT = Path(__file__).resolve().parents[2]


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", "demo", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_demo_json_is_one_verified_signature_object() -> None:
    proc = _demo("--json", "--message", "tkms test message")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert set(obj) == {"msgHash", "sigma", "apkG1", "apkG2", "keyId", "signers"}
    assert obj["msgHash"] == "0x" + keccak256(b"tkms test message").hex()
    assert obj["signers"] == [1, 2, 3]
    sig = AvsSignature.from_json(obj, allow_extra=True)
    assert sig.verify()
    assert obj["keyId"] == "demo-" + operator_id(sig.apk_g1).hex()[:8]
    assert "in-process" in proc.stderr and "gamma check passed" in proc.stderr


def test_demo_signs_the_given_hash_and_keys_are_fresh() -> None:
    msg = "0x" + "ab" * 32
    first = json.loads(_demo("--json", "--msg-hash", msg).stdout)
    second = json.loads(_demo("--json", "--msg-hash", msg).stdout)
    assert first["msgHash"] == second["msgHash"] == msg
    assert first["apkG1"] != second["apkG1"]  # a fresh key every run
    assert AvsSignature.from_json(first, allow_extra=True).verify()


def test_demo_rejects_a_malformed_hash_without_output() -> None:
    proc = _demo("--json", "--msg-hash", "0x1234")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "msgHash" in proc.stderr


def test_demo_help_says_in_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "demo", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "IN-PROCESS DEMO" in proc.stdout

"""``tkms demo`` run as a real subprocess: a fresh 3-of-5 cluster of real processes
and SoftHSM2 tokens, a DKG, a signature through the HTTP API; stdout holds exactly
one JSON object that passes EigenLayer's gamma check, and nothing is left behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.eigenlayer import AvsSignature
from protocol.hashing import keccak256

ROOT = Path(__file__).resolve().parents[2]


def _demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", "demo", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.cluster
def test_demo_runs_the_main_job_and_leaves_nothing_behind(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = _demo("--json", "--message", "tkms test message", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    obj = json.loads(lines[0])
    assert set(obj) == {"msgHash", "sigma", "apkG1", "apkG2", "keyId", "signers"}
    assert obj["msgHash"] == "0x" + keccak256(b"tkms test message").hex()
    assert obj["keyId"] == "demo"
    assert len(obj["signers"]) == 3
    assert set(obj["signers"]) <= {f"node{i}" for i in range(1, 6)}
    sig = AvsSignature.from_json(obj, allow_extra=True)
    assert sig.verify()
    # the progress display went to stderr, through every step
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert step in proc.stderr
    cluster_dir = re.search(r"cluster in (\S+)", proc.stderr)
    assert cluster_dir is not None
    assert not Path(cluster_dir.group(1)).exists()  # the temporary cluster is gone
    assert _processes_mentioning(cluster_dir.group(1)) == []


def test_demo_refuses_a_malformed_msg_hash_before_doing_anything() -> None:
    proc = _demo("--json", "--msg-hash", "0x1234")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "msg-hash" in proc.stderr and "[1/5]" not in proc.stderr

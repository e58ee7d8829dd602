"""``tkms bench dkg --json`` runs end to end (a small real cluster, and the protocol
in-process) and prints exactly the contract's object. No timing is asserted here:
performance is read from the bench itself, never from tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]


def test_bench_dkg_json_contract() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TKMS_", "SOFTHSM2_"))}
    out = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "bench", "dkg", "--json",
         "--sizes", "3:2", "--in-process", "4", "--repeat", "1"],
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=180, check=True,
    )  # fmt: skip
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1  # exactly one JSON object on stdout; progress went to stderr
    runs = json.loads(lines[0])["runs"]
    assert [(r["n"], r["t"], r["mode"]) for r in runs] == [
        (3, 2, "processes"),
        (4, 3, "in-process"),
    ]
    for r in runs:
        assert {"n", "t", "mode", "seconds"} <= set(r) and r["seconds"] > 0
    assert runs[0]["samples"] and runs[0]["committed_seconds"] <= runs[0]["seconds"] + 1
    assert "creating a local cluster" in out.stderr

"""``tkms bench sign --json`` runs end to end (a fresh 3-of-5 cluster of real processes)
and prints exactly the contract's object. No timing is asserted: performance is read
from the bench itself, never from tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]


def test_bench_sign_json_contract() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TKMS_", "SOFTHSM2_"))}
    out = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "bench", "sign", "--json", "--signs", "5",
         "--warmup", "2", "--batches", "1", "--batch-size", "8", "--baseline-runs", "1"],
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=240, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1  # exactly one JSON object on stdout; progress went to stderr
    result = json.loads(lines[0])
    assert set(result) == {
        "nodes", "threshold", "p50_ms", "p99_ms", "batch_sigs_per_s",
        "baseline_py_ecc_sign_verify_ms", "ratio",
    }  # fmt: skip
    assert (result["nodes"], result["threshold"]) == (5, 3)
    assert all(v > 0 for v in result.values())
    assert result["p99_ms"] >= result["p50_ms"]
    assert "warm-up" in out.stderr

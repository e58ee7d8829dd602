"""``tkms bench transport --json`` runs end to end (two real processes on loopback)
and prints exactly the contract's object. No timing is asserted here: performance is
read from the bench itself, never from tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_transport_json_contract() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cluster.cli",
            "bench",
            "transport",
            "--json",
            "--handshakes",
            "5",
            "--calls",
            "50",
            "--bulk-mb",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1  # exactly one JSON object on stdout; progress went to stderr
    result = json.loads(lines[0])
    assert set(result) == {"handshake_ms", "rpc_p50_ms", "rpc_p99_ms", "throughput_mb_s"}
    assert all(isinstance(v, float) and v > 0 for v in result.values())
    assert result["rpc_p99_ms"] >= result["rpc_p50_ms"]
    assert "throughput" in out.stderr


def test_bench_transport_human_output_shows_the_baseline() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cluster.cli",
            "bench",
            "transport",
            "--handshakes",
            "5",
            "--calls",
            "50",
            "--bulk-mb",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "raw TCP" in out.stdout and "ratio" in out.stdout
    assert len(out.stdout.strip().splitlines()) == 5

"""``tkms bench sign``: threshold signing end to end on a fresh local 3-of-5 cluster.

The benchmark creates a cluster in a temporary directory (5 node processes with their
own SoftHSM2 tokens, a coordinator process; ``cluster.launcher``), provisions one key
and then, over HTTP on 127.0.0.1 with one keep-alive connection:

* single signs: ``--signs`` sequential ``POST /v1/keys/K/sign`` (distinct random
  hashes) after ``--warmup`` untimed ones; p50 and p99 of the wall-clock latency;
* batches: ``--batches`` sequential ``sign-batch`` requests of ``--batch-size`` hashes;
  throughput = signatures / total time;
* baseline, in the same process: one single-key sign and verify with py_ecc
  (``py_ecc.optimized_bn128``: σ = sk·H(m), then e(σ, G2) = e(H(m), PK)), median of
  ``--baseline-runs``; ``ratio`` = baseline / p50.

Every returned signature is checked with the gamma check before it counts. The key
comes from ``POST /v1/dkg`` when the coordinator offers it; until the DKG is wired in
(501) the nodes are stopped and the test dealer (``tests/cluster/provision.py``, run
as a subprocess from this source tree) deals a random key into their stores.

``--json`` prints ``{"nodes", "threshold", "p50_ms", "p99_ms", "batch_sigs_per_s",
"baseline_py_ecc_sign_verify_ms", "ratio"}``; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import http.client
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cluster import launcher
from cluster.output import emit, progress
from coordinator.auth import ApiKeyStore, RateLimit
from protocol.eigenlayer import AvsSignature, hash_to_g1
from protocol.errors import Fault, TkmsError

NODES, THRESHOLD = 5, 3
KEY_ID = "bench"
PROVISION_MODULE = "tests.cluster.provision"


class BenchError(TkmsError):
    fault = Fault.LOCAL


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "sign", help="threshold signing latency and batch throughput on a fresh 3-of-5 cluster"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--signs", type=int, default=300, help="timed single signs")
    p.add_argument("--warmup", type=int, default=20, help="untimed single signs first")
    p.add_argument("--batches", type=int, default=6, help="timed sign-batch requests")
    p.add_argument("--batch-size", type=int, default=256, help="hashes per batch (<= 256)")
    p.add_argument("--baseline-runs", type=int, default=3, help="py_ecc sign+verify runs")
    p.set_defaults(handler=run)


class Http:
    """One keep-alive connection to the coordinator with the bench client's key."""

    def __init__(self, endpoint: str, token: str) -> None:
        host, _, port = endpoint.rpartition(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        self.conn.request("POST", path, json.dumps(body), self.headers)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else None

    def close(self) -> None:
        self.conn.close()


def _bench_client(layout: launcher.ClusterLayout) -> str:
    """A signer client without a practical rate limit (the bench is the load)."""
    path = layout.root / "api-keys.json"
    store = ApiKeyStore.load(path)
    token = store.add_client("bench", ["signer", "operator"], ["*"], rate_limit=RateLimit(1e6, 1e6))
    store.save(path)
    return token


def _provision(layout: launcher.ClusterLayout, token: str) -> str:
    """A key: through the DKG if the coordinator runs one, else the test dealer."""
    client = Http(layout.http, token)
    try:
        status, _doc = client.post("/v1/dkg", {"keyId": KEY_ID, "threshold": THRESHOLD})
    finally:
        client.close()
    if status == 201:
        progress("key provisioned by a DKG ceremony")
        return "dkg"
    progress(f"POST /v1/dkg answered {status}: dealing a test key into the stopped nodes")
    launcher.down(layout, progress=lambda _m: None)
    if not (launcher.REPO_ROOT / "tests" / "cluster" / "provision.py").exists():
        raise BenchError("no DKG on this coordinator and no test dealer in this source tree")
    proc = subprocess.run(
        [sys.executable, "-m", PROVISION_MODULE, "--cluster-dir", str(layout.root),
         "--key-id", KEY_ID],
        cwd=launcher.REPO_ROOT, env=launcher.child_env(), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    if proc.returncode != 0:
        raise BenchError(f"test dealer failed: {proc.stderr.strip()[-300:]}")
    with layout.coordinator_config.open("a") as f:  # a dealt key has no DKG transcript
        f.write("require_transcripts = false\n")
    launcher.up(layout, progress=lambda _m: None, timeout=120)
    return "test dealer"


def _check(doc: Any, msg: bytes) -> None:
    sig = AvsSignature.from_json(doc, allow_extra=True)
    if sig.msg_hash != msg or not sig.verify():
        raise BenchError("the coordinator returned a signature that does not verify")


def _singles(client: Http, count: int, *, check: bool) -> list[float]:
    times = []
    for _ in range(count):
        msg = os.urandom(32)
        start = time.perf_counter()
        status, doc = client.post(f"/v1/keys/{KEY_ID}/sign", {"msgHash": "0x" + msg.hex()})
        times.append(time.perf_counter() - start)
        if status != 200:
            raise BenchError(f"sign answered {status}: {doc}")
        if check:
            _check(doc, msg)
    return times


def _batches(client: Http, batches: int, size: int) -> float:
    total, signed = 0.0, 0
    for _ in range(batches):
        msgs = [os.urandom(32) for _ in range(size)]
        body = {"msgHashes": ["0x" + m.hex() for m in msgs]}
        start = time.perf_counter()
        status, doc = client.post(f"/v1/keys/{KEY_ID}/sign-batch", body)
        total += time.perf_counter() - start
        if status != 200:
            raise BenchError(f"sign-batch answered {status}: {doc}")
        for m, item in zip(msgs, doc["results"], strict=True):
            if "error" in item:
                raise BenchError(f"a batch item failed: {item['error']}")
            _check(item, m)
        signed += size
    return signed / total


def baseline_ms(runs: int) -> float:
    """Median ms of one py_ecc single-key sign + verify (pairing equation)."""
    ob: Any = importlib.import_module("py_ecc.optimized_bn128")
    fq: Any = importlib.import_module("py_ecc.fields").optimized_bn128_FQ
    samples = []
    for _ in range(runs):
        sk = int.from_bytes(os.urandom(32), "big") % (2**254) + 1
        h = hash_to_g1(os.urandom(32))
        hp = (fq(h.x), fq(h.y), fq(1))
        pk = ob.multiply(ob.G2, sk)
        start = time.perf_counter()
        sigma = ob.multiply(hp, sk)
        ok = ob.pairing(ob.G2, sigma) == ob.pairing(pk, hp)
        samples.append((time.perf_counter() - start) * 1e3)
        if not ok:
            raise BenchError("py_ecc baseline failed its own check")
    return statistics.median(samples)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(args: argparse.Namespace) -> int:
    if not (1 <= args.batch_size <= 256 and args.signs >= 1 and args.batches >= 1):
        raise BenchError("--signs and --batches >= 1, --batch-size in 1..256")
    base = Path(tempfile.mkdtemp(prefix="tkms-bench-sign-"))
    layout: launcher.ClusterLayout | None = None
    try:
        progress(f"creating a {THRESHOLD}-of-{NODES} cluster in {base}")
        layout = launcher.init_cluster(
            base / "cluster", nodes=NODES, threshold=THRESHOLD, progress=progress
        )
        token = _bench_client(layout)
        launcher.up(layout, progress=progress, timeout=120)
        how = _provision(layout, token)
        client = Http(layout.http, token)
        try:
            progress(f"key {KEY_ID!r} ({how}); {args.warmup} warm-up signs")
            _singles(client, args.warmup, check=True)
            progress(f"{args.signs} single signs")
            times = _singles(client, args.signs, check=False)
            progress(f"{args.batches} batches of {args.batch_size}")
            throughput = _batches(client, args.batches, args.batch_size)
        finally:
            client.close()
    finally:
        if layout is not None:
            launcher.down(layout, progress=lambda _m: None)
        shutil.rmtree(base, ignore_errors=True)
    progress(f"py_ecc baseline ({args.baseline_runs} runs)")
    baseline = baseline_ms(args.baseline_runs)
    p50 = _percentile(times, 0.5) * 1e3
    result = {
        "nodes": NODES,
        "threshold": THRESHOLD,
        "p50_ms": round(p50, 3),
        "p99_ms": round(_percentile(times, 0.99) * 1e3, 3),
        "batch_sigs_per_s": round(throughput, 1),
        "baseline_py_ecc_sign_verify_ms": round(baseline, 1),
        "ratio": round(baseline / p50, 1),
    }
    human = "\n".join(
        [
            f"threshold signing, {THRESHOLD}-of-{NODES} processes over HTTP:",
            f"  single sign p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms",
            f"  sign-batch      {result['batch_sigs_per_s']} signatures/s",
            f"  py_ecc single-key sign+verify {result['baseline_py_ecc_sign_verify_ms']} ms "
            f"(ratio {result['ratio']}x)",
        ]
    )
    emit(result, as_json=args.json, human=human)
    return 0

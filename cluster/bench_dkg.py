"""``tkms bench dkg``: what a DKG ceremony costs, and how it grows with n.

Two kinds of runs (``--json`` prints ``{"runs": [{"n", "t", "mode", "seconds", ...}]}``,
DESIGN.md's CLI contract):

* ``processes`` (default (n, t) = (5, 3), (7, 5), (16, 11)): a fresh local cluster
  (``tkms cluster init`` / ``up``: one process per node with its own SoftHSM2 token,
  the coordinator, Noise over loopback) in a temporary directory. Timed from all
  nodes ready (every session up) to key active: ``POST /v1/dkg`` until its 201, which
  the coordinator sends once every holder acknowledged the commit and it re-read and
  re-verified the key (``seconds``); ``committed_seconds`` is the coordinator's own
  time from the proposal to the last commit acknowledgement. ``--repeat`` ceremonies
  per cluster (new key ids); the median is reported, every sample too.
* ``in-process`` (default n = 32, 64; t = ceil(2n/3)): the protocol alone, no I/O,
  every participant and the relay in this process on one core (``seconds``: all n
  nodes' work added up; ``per_node_seconds``: that divided by n, roughly what one
  node spends when the nodes run in parallel).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from cluster import launcher
from cluster.client import CoordinatorClient, api_key
from cluster.output import emit, progress
from protocol.dkg import (
    Activate,
    Deliver,
    Driver,
    DriverConfig,
    Participant,
    ParticipantConfig,
    SealPending,
    Send,
)
from protocol.dkg.results import DriverAborted
from protocol.errors import Fault, TkmsError
from protocol.manifest import Manifest, NodeEntry
from protocol.rng import os_rng

PROCESS_SIZES = ((5, 3), (7, 5), (16, 11))
IN_PROCESS_SIZES = (32, 64)
TARGETS_S = {(5, 3): 3.0, (16, 11): 20.0}


class BenchError(TkmsError):
    fault = Fault.LOCAL


def register(kinds: Any) -> None:
    parser: argparse.ArgumentParser = kinds.add_parser(
        "dkg", help="DKG ceremonies: real processes on loopback, and the protocol in-process"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--sizes",
        default=",".join(f"{n}:{t}" for n, t in PROCESS_SIZES),
        help="n:t of the process runs, comma separated ('' for none)",
    )
    parser.add_argument(
        "--in-process",
        default=",".join(str(n) for n in IN_PROCESS_SIZES),
        help="n of the in-process runs, comma separated ('' for none)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="ceremonies per process cluster")
    parser.set_defaults(handler=run)


def _sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        n, _, t = item.partition(":")
        out.append((int(n), int(t)))
    return out


# -- in-process ---------------------------------------------------------------------------


def _manifest(n: int) -> tuple[Manifest, dict[int, SigningKey]]:
    keys = {j: SigningKey(os_rng(32)) for j in range(1, n + 1)}
    nodes = tuple(
        NodeEntry(
            index=j,
            name=f"node{j}",
            address=f"127.0.0.1:{20000 + j}",
            noise_public_key=hashlib.sha256(b"bench" + bytes([j])).digest(),
            ed25519_public_key=bytes(keys[j].verify_key),
        )
        for j in keys
    )
    return Manifest(cluster_id=os_rng(16), nodes=nodes, coordinators=()), keys


def in_process_ceremony(n: int, t: int) -> float:
    """Seconds for one honest ceremony of n participants, all in this process."""
    manifest, keys = _manifest(n)
    participants = {
        j: Participant(ParticipantConfig(index=j, signing_key=k, manifest=manifest), rng=os_rng)
        for j, k in keys.items()
    }
    start = time.perf_counter()
    driver = Driver(
        DriverConfig(
            manifest=manifest, key_id="bench", threshold=t, participants=tuple(sorted(keys))
        ),
        now=0.0,
    )
    queue: list[Any] = list(driver.start())
    active = 0
    while queue:
        out = queue.pop(0)
        if isinstance(out, DriverAborted):
            raise BenchError(f"in-process ceremony n={n} aborted: {out.reason}")
        if not isinstance(out, Deliver):
            continue
        result = participants[out.to].receive(out.encode(), now=0.0)
        if isinstance(result, Send | SealPending):
            queue += driver.receive(out.to, result.encode(), now=0.0)
        elif isinstance(result, Activate):
            active += 1
    elapsed = time.perf_counter() - start
    if active != n or driver.result is None:
        raise BenchError(f"in-process ceremony n={n}: {active} of {n} activated")
    return elapsed


# -- processes ----------------------------------------------------------------------------


def process_runs(n: int, t: int, repeat: int) -> dict[str, Any]:
    """A fresh cluster of n nodes; ``repeat`` ceremonies timed; the cluster removed."""
    root = Path(tempfile.mkdtemp(prefix=f"tkms-bench-dkg-{n}-")) / "cluster"
    try:
        progress(f"processes n={n} t={t}: creating a local cluster in {root.parent} ...")
        layout = launcher.init_cluster(root, nodes=n, threshold=t, progress=lambda _: None)
        launcher.up(layout, progress=lambda _: None, timeout=180)
        client = CoordinatorClient.for_cluster(layout, api_key(None, layout), timeout_s=600)
        samples, committed = [], []
        for i in range(repeat):
            key_id = f"bench-{n}-{i}"
            started = time.perf_counter()
            key = client.call("POST", "/v1/dkg", {"keyId": key_id, "threshold": t})
            samples.append(time.perf_counter() - started)
            if key.get("status") != "active" or len(key.get("holders", [])) != n:
                raise BenchError(f"ceremony {key_id} did not end with {n} active holders")
            doc = client.call("GET", f"/v1/dkg/{key_id}")
            committed.append(float(doc["events"][-1]["at"]))
            progress(f"  ceremony {i + 1}/{repeat}: {samples[-1]:.2f} s to key active")
        return {
            "n": n,
            "t": t,
            "mode": "processes",
            "seconds": round(statistics.median(samples), 3),
            "committed_seconds": round(statistics.median(committed), 3),
            "samples": [round(s, 3) for s in samples],
        }
    finally:
        if (root / launcher.CLUSTER_FILE).exists():
            launcher.down(launcher.ClusterLayout.load(root), progress=lambda _: None)
        shutil.rmtree(root.parent, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    runs: list[dict[str, Any]] = []
    for n, t in _sizes(args.sizes):
        runs.append(process_runs(n, t, max(1, args.repeat)))
    for n in [int(x) for x in args.in_process.split(",") if x.strip()]:
        t = -(-2 * n // 3)
        progress(f"in-process n={n} t={t} ...")
        seconds = in_process_ceremony(n, t)
        runs.append(
            {
                "n": n,
                "t": t,
                "mode": "in-process",
                "seconds": round(seconds, 3),
                "per_node_seconds": round(seconds / n, 3),
            }
        )
    lines = []
    for r in runs:
        line = f"{r['mode']:<10} n={r['n']:<3} t={r['t']:<3} {r['seconds']:8.2f} s"
        target = TARGETS_S.get((r["n"], r["t"])) if r["mode"] == "processes" else None
        if target is not None:
            line += f"  (target <= {target:.0f} s: {'met' if r['seconds'] <= target else 'MISSED'})"
        lines.append(line)
    emit({"runs": runs}, as_json=args.json, human="\n".join(lines))
    return 0

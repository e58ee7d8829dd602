"""Test-only key provisioning: a trusted dealer writes Shamir shares straight into the
nodes' stores before the node processes start (the DKG and key import are the real
ways in; this helper exists so signing can be tested on its own).

``deal(key_id, secret, t, n)`` splits ``secret`` (protocol.threshold) and builds the
public metadata every holder stores; ``wrong_share_for`` gives the listed node indices
a WRONG share (share + 1) while their public share stays the correct one — a
genuinely faulty node, with no test hook in production code. ``provision_nodes``
seals the shares (``ShareStore.put_share`` as pending, then ``activate``) in one
subprocess per node, concurrently: SoftHSM2 is one configuration per process.

Run as ``python -m tests.cluster.provision`` it reads one JSON document on stdin:
``{"config": path, "clusterId": hex, "index": n, "keys": [{"meta": ..., "share": hex}]}``.
With ``--cluster-dir D --key-id K`` it deals a fresh random key into every node of the
(stopped) local cluster in D instead and prints ``{"keyId"}`` (``tkms bench sign``
uses this until ``POST /v1/dkg`` works).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.bn254 import R, g1_mul_generator, g2_mul_generator
from protocol.encoding import g1_to_bytes, g2_to_bytes
from protocol.rng import Rng, os_rng, random_scalar
from protocol.threshold import split

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DealtKey:
    key_id: str
    secret: int
    t: int
    n: int
    shares: dict[int, int]  # what each node stores (wrong for ``wrong``)
    metadata: dict[str, Any]  # KeyMetadata.to_json() form, status pending
    wrong: frozenset[int] = field(default_factory=frozenset)


def deal(
    key_id: str,
    *,
    t: int,
    n: int,
    secret: int | None = None,
    wrong_share_for: Iterable[int] = (),
    rng: Rng = os_rng,
) -> DealtKey:
    sk = secret if secret is not None else random_scalar(rng)
    shares = split(sk, t, n, rng)
    public = {i: g1_to_bytes(g1_mul_generator(s)).hex() for i, s in shares.items()}
    wrong = frozenset(wrong_share_for)
    stored = {i: ((s + 1) % R or 1) if i in wrong else s for i, s in shares.items()}
    metadata = {
        "keyId": key_id,
        "t": t,
        "n": n,
        "epoch": 0,
        "holders": list(range(1, n + 1)),
        "pkG1": g1_to_bytes(g1_mul_generator(sk)).hex(),
        "pkG2": g2_to_bytes(g2_mul_generator(sk)).hex(),
        "publicShares": {str(i): p for i, p in public.items()},
        "transcriptHash": hashlib.sha256(b"tkms-test-dealer/" + key_id.encode()).hexdigest(),
        "status": "pending",
    }
    return DealtKey(key_id, sk, t, n, stored, metadata, wrong)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TKMS_", "SOFTHSM2_"))}
    return {**env, "PYTHONPATH": str(REPO)}


def provision_nodes(
    configs: Sequence[Path], cluster_id: bytes, keys: Sequence[DealtKey], *, timeout: float = 90
) -> None:
    """Seal and activate every key's share on every node (node i+1 = ``configs[i]``);
    the nodes must not be running."""
    procs = []
    for i, config in enumerate(configs, start=1):
        doc = {
            "config": str(config),
            "clusterId": cluster_id.hex(),
            "index": i,
            "keys": [{"meta": k.metadata, "share": hex(k.shares[i])} for k in keys],
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.cluster.provision"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=_env(),
        )
        procs.append((config, proc, json.dumps(doc)))
    errors = []
    for config, proc, doc in procs:
        _out, err = proc.communicate(doc, timeout=timeout)
        if proc.returncode != 0:
            errors.append(f"{config}: {err.strip()[-500:]}")
    if errors:
        raise RuntimeError("provisioning failed: " + "; ".join(errors))


async def _store(doc: dict[str, Any]) -> None:
    from node.config import load_config
    from node.hsm import open_hsm
    from node.store import KeyMetadata, open_store

    config = load_config(Path(doc["config"]))
    async with (
        open_hsm(config) as hsm,
        open_store(
            config.data_dir,
            hsm,
            cluster_id=bytes.fromhex(doc["clusterId"]),
            node_index=doc["index"],
        ) as store,
    ):
        for key in doc["keys"]:
            await store.put_share(KeyMetadata.from_json(key["meta"]), int(key["share"], 16))
            await store.activate(key["meta"]["keyId"])


def _provision_cluster(root: Path, key_id: str) -> None:
    from cluster.launcher import ClusterLayout
    from protocol.manifest import parse_manifest

    layout = ClusterLayout.load(root)
    manifest = parse_manifest(layout.manifest.read_text())
    key = deal(key_id, t=layout.threshold, n=len(layout.nodes))
    provision_nodes([n.config for n in layout.nodes], manifest.cluster_id, [key])
    sys.stdout.write(json.dumps({"keyId": key_id}) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    import trio

    parser = argparse.ArgumentParser(prog="python -m tests.cluster.provision")
    parser.add_argument("--cluster-dir", type=Path)
    parser.add_argument("--key-id")
    args = parser.parse_args(argv)
    if args.cluster_dir is not None:
        _provision_cluster(args.cluster_dir, args.key_id or "bench")
        return
    trio.run(_store, json.loads(sys.stdin.read()))


if __name__ == "__main__":
    main()

"""``tkms chaos``: a signing load under node kills, stops, partitions, delays and
coordinator restarts, with every returned signature checked.

    tkms chaos --nodes 5 --threshold 3 --duration S [--cluster-dir D] [--overload]
               [--seed N] [--concurrency C] [--rps R] [--keep] [--json]

Exit code 0 when the promise held (see ``cluster.chaos.report``), 1 when it did not
(the result lists why under ``promise.failures``), 2 when the run could not be
carried out. Progress goes to stderr; ``--json`` prints one object on stdout.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import trio

from cluster.chaos.load import LoadConfig
from cluster.chaos.runner import ChaosConfig, run_chaos
from cluster.output import emit, progress


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "chaos",
        help="signing load under node kills, stops and partitions",
        description=(
            "Bring up a proxied local cluster (fresh in a temporary dir unless "
            "--cluster-dir is given), run a DKG, then sign steadily for --duration seconds "
            "while nodes are SIGKILLed and restarted, SIGSTOPped and continued, restarted "
            "gracefully, cut off or delayed by a loopback proxy, and the coordinator is "
            "restarted. Never more than n-t nodes are down at a time unless --overload. "
            "Every returned signature is checked; audit logs are verified at the end."
        ),
    )
    parser.add_argument("--nodes", type=int, default=5, help="number of nodes n (default 5)")
    parser.add_argument("--threshold", type=int, default=3, help="signers needed t (default 3)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of chaos")
    parser.add_argument(
        "--cluster-dir",
        type=Path,
        help="a new dir for the cluster, or one an earlier `tkms chaos --keep` made",
    )
    parser.add_argument(
        "--overload",
        action="store_true",
        help="also take more than n-t nodes down at times (503s and recovery are checked)",
    )
    parser.add_argument("--seed", type=int, help="seed of the fault schedule (default random)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (4)")
    parser.add_argument("--rps", type=float, default=20.0, help="requests per second at most")
    parser.add_argument("--keep", action="store_true", help="keep the temporary cluster dir")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=run)


def _human(result: dict[str, Any]) -> str:
    ev = result["events"]
    lines = [
        f"sent {result['sent']}, succeeded {result['succeeded']}, 503 {result['failed_503']}, "
        f"invalid {result['invalid']}, availability (<= n-t down) {result['availability']:.4%}",
        f"latency p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms; max recovery "
        f"{result['max_recovery_s']} s; coordinator recovery {result['coordinator_recovery_s']} s",
        "events: " + ", ".join(f"{k} {v}" for k, v in ev.items()),
        f"audit logs valid: {result['auditLogsValid']}; nodes rejoined: "
        + ", ".join(n for n, ok in result.get("rejoined", {}).items() if ok),
    ]
    mid = result.get("dkgDuringChaos")
    if mid:
        lines.append(f"DKG during chaos: {mid['outcome']} ({mid['reason']})")
    promise = result["promise"]
    lines.append("promise held" if promise["held"] else "PROMISE FAILED:")
    lines += [f"  - {f}" for f in promise["failures"]]
    if "clusterDir" in result:
        lines.append(f"cluster dir: {result['clusterDir']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    cfg = ChaosConfig(
        nodes=args.nodes,
        threshold=args.threshold,
        duration_s=args.duration,
        cluster_dir=args.cluster_dir.resolve() if args.cluster_dir else None,
        overload=args.overload,
        seed=args.seed,
        keep=args.keep,
        load=LoadConfig(concurrency=args.concurrency, max_rps=args.rps),
    )
    outcome = trio.run(lambda: run_chaos(cfg, progress=progress))
    emit(outcome.result, as_json=args.json, human=_human(outcome.result))
    return 0 if outcome.held else 1

"""``tkms cluster init | up | down | status``: a local cluster on loopback."""

from __future__ import annotations

import argparse
from typing import Any

from cluster import launcher
from cluster.output import emit, progress


def add_cluster_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster-dir",
        help="the cluster directory (default: $TKMS_CLUSTER_DIR, else ./tkms-cluster)",
    )


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("cluster", help="a local cluster")
    actions = parser.add_subparsers(dest="cluster_action", metavar="ACTION", required=True)

    p = actions.add_parser("init", help="generate a local cluster in the cluster dir")
    add_cluster_dir(p)
    p.add_argument("--nodes", type=int, required=True, help="number of nodes n")
    p.add_argument("--threshold", type=int, required=True, help="signers needed t (2..n)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=cmd_init)

    for name, handler, text in (
        ("up", cmd_up, "start every node and the coordinator, wait until all are up"),
        ("down", cmd_down, "stop the coordinator and every node"),
        ("status", cmd_status, "show processes, sessions and endpoints"),
    ):
        p = actions.add_parser(name, help=text)
        add_cluster_dir(p)
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        if name == "up":
            p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait")
        p.set_defaults(handler=handler)


def cmd_init(args: argparse.Namespace) -> int:
    root = launcher.default_cluster_dir(args.cluster_dir)
    layout = launcher.init_cluster(
        root, nodes=args.nodes, threshold=args.threshold, progress=progress
    )
    summary = layout.to_json()
    summary["clusterDir"] = str(root)
    summary["manifest"] = str(layout.manifest)
    emit(
        summary,
        as_json=args.json,
        human=f"cluster {layout.cluster_id} ({args.threshold}-of-{args.nodes}) in {root}",
    )
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    layout = launcher.ClusterLayout.load(launcher.default_cluster_dir(args.cluster_dir))
    launcher.up(layout, progress=progress, timeout=args.timeout)
    doc = launcher.status(layout)
    emit(doc, as_json=args.json, human=f"cluster up: http {layout.http}, grpc {layout.grpc}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    layout = launcher.ClusterLayout.load(launcher.default_cluster_dir(args.cluster_dir))
    stopped = launcher.down(layout, progress=progress)
    emit({"stopped": stopped}, as_json=args.json, human=f"stopped: {', '.join(stopped) or '-'}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    layout = launcher.ClusterLayout.load(launcher.default_cluster_dir(args.cluster_dir))
    doc = launcher.status(layout)
    lines = [f"cluster {doc['clusterId']} in {doc['clusterDir']}"]
    for n in doc["nodes"]:
        state = "up" if n["up"] else ("running" if n["pid"] else "down")
        lines.append(f"  {n['name']:<10} {n['address']:<22} pid {n['pid'] or '-':<8} {state}")
    lines.append(f"  coordinator http {doc['endpoints']['http']} grpc {doc['endpoints']['grpc']}")
    emit(doc, as_json=args.json, human="\n".join(lines))
    return 0

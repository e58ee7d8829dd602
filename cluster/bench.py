"""``tkms bench ...``: benchmarks that print ratios against a baseline run in the same process.

Each benchmark kind lives in its own module exposing ``register(bench_subparsers)``;
list it in ``BENCH_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

BENCH_MODULES: tuple[str, ...] = (
    "cluster.bench_crypto",
    "cluster.bench_transport",
    "cluster.bench_dkg",
    "cluster.bench_sign",
)


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "bench", help="benchmarks (ratios against a baseline run in the same process)"
    )
    kinds = parser.add_subparsers(dest="bench_kind", metavar="KIND", required=True)
    for name in BENCH_MODULES:
        importlib.import_module(name).register(kinds)

"""The ``tkms`` command line: one argparse tree, each command contributed by a module.

A command module exposes ``register(subparsers) -> None``; it adds its parser(s) and
sets ``handler`` (a callable taking the parsed namespace and returning an exit code)
with ``parser.set_defaults(handler=...)``. Add new command modules to
``COMMAND_MODULES``; they are imported lazily so that ``tkms --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from protocol.errors import TkmsError

# Modules that contribute subcommands (each has ``register(subparsers)``).
COMMAND_MODULES: tuple[str, ...] = (
    "cluster.audit_cmd",
    "cluster.avs_cmd",
    "cluster.bench",
    "cluster.chaos.command",
    "cluster.cluster_cmd",
    "cluster.demo",
    "cluster.dkg_cmd",
    "cluster.key_import_cmd",
    "cluster.sign_cmd",
    "coordinator.commands",
    "node.commands",
)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tkms",
        description="Threshold key management for EigenLayer AVS operators.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except TkmsError as exc:
        sys.stderr.write(f"tkms: error ({exc.fault.value}): {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("tkms: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())

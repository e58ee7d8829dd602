"""How every ``tkms`` command prints: one JSON object on stdout with ``--json``,
human text otherwise; progress and logs always go to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any


def emit(result: Mapping[str, Any], *, as_json: bool, human: str | None = None) -> None:
    """Print a command's result: exactly one JSON object with --json, else ``human``."""
    if as_json:
        sys.stdout.write(json.dumps(result, separators=(", ", ": ")) + "\n")
    else:
        sys.stdout.write((human if human is not None else json.dumps(result, indent=2)) + "\n")
    sys.stdout.flush()


def progress(message: str) -> None:
    """A progress line for the operator, on stderr (never on stdout)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()

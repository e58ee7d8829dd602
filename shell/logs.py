"""How a tkms process (a node, the coordinator) logs: one line per event on stderr,
with a timestamp, the level and the component (``tkms.node``, ``tkms.transport``, ...)."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_process_logging() -> None:
    """Send INFO and above to stderr in the tkms line format (once per process)."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=LOG_FORMAT)

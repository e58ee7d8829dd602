"""The ``SessionManager`` surface shared by the scripted in-memory node fakes of
``tests/coordinator/test_signer.py`` and ``test_key_import_service.py``: their nodes
have a ``mode`` (``"down"`` = unreachable) and record the ``calls`` they get.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coordinator.sessions import NodeStatistics, NodeUnavailable
from protocol.rpc import Method


class ScriptedSessions:
    """``is_up``/``up_nodes``/``statistics`` from ``nodes``; ``arrive`` is the start
    of every ``call``: the params checked against the schema, the call recorded, a
    down node unreachable."""

    nodes: Mapping[str, Any]

    def is_up(self, name: str) -> bool:
        return self.nodes[name].mode != "down"

    def up_nodes(self) -> frozenset[str]:
        return frozenset(n for n in self.nodes if self.is_up(n))

    def statistics(self) -> dict[str, NodeStatistics]:
        return {n: NodeStatistics(self.is_up(n), 1, 0, None) for n in self.nodes}

    def arrive(self, name: str, method: Method, params: dict[str, Any]) -> Any:
        """The node ``name`` a call reaches. Raises: NodeUnavailable (it is down)."""
        node = self.nodes[name]
        method.params.check(params, "params")
        node.calls.append(method.name)
        if node.mode == "down":
            raise NodeUnavailable(name, "connect failed")
        return node

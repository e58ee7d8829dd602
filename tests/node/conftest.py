"""Fixtures for node tests (helpers live in tests/node/hsm_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.node.hsm_helpers import SoftHsm, provision


@pytest.fixture
def softhsm(tmp_path: Path) -> Iterator[SoftHsm]:
    """Two tokens, node0 and node1, in one fresh config."""
    hsm = provision(tmp_path / "hsm", ["node0", "node1"])
    try:
        yield hsm
    finally:
        hsm.close_all()

"""Suite-wide rules: no test is ever skipped (a missing part fails, loudly), and
the shared vectors are loaded from tests/vectors so a bare clone runs everything."""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

VECTORS = Path(__file__).parent / "vectors"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped:
        report.outcome = "failed"
        report.longrepr = f"tests are never skipped in tkms (was: {report.longrepr!r})"


@pytest.fixture(scope="session")
def eigen_vectors() -> dict[str, Any]:
    """The EigenLayer BN254 vectors, exactly as shipped in ../shared/vectors."""
    data: dict[str, Any] = json.loads((VECTORS / "eigenlayer_bn254.json").read_text())
    return data

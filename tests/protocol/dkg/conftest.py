"""Ceremonies shared by several DKG test modules (each costs seconds on the
reference curve, so they run once per session)."""

from __future__ import annotations

import pytest

from protocol.dkg.messages import Complaints
from tests.protocol.dkg.harness import Behaviour, Run, run_ceremony


def false_complaint_against_1(honest: Complaints) -> Complaints:
    """Node 3 complains about dealer 1 although dealer 1's share was fine."""
    return Complaints(ceremony=honest.ceremony, sender=honest.sender, against=(1,))


@pytest.fixture(scope="session")
def honest_run() -> Run:
    """An honest 3-of-4 ceremony; node 1's state is captured before each phase."""
    return run_ceremony(4, 3, capture=1)


@pytest.fixture(scope="session")
def complaint_run() -> Run:
    """Node 3 makes a false complaint against dealer 1, so the ceremony goes through
    the justification round; node 1 (which justifies) is captured."""
    return run_ceremony(
        4, 3, behaviours={3: Behaviour(complaints=false_complaint_against_1)}, capture=1
    )

"""Randomness, passed in: every protocol function that needs random bytes takes an
``Rng`` (a callable returning n bytes). The OS generator is the default and this is
the only module that touches ``secrets``; tests pass a seeded generator instead."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable

from protocol.bn254.fields import R

Rng = Callable[[int], bytes]


def os_rng(n: int) -> bytes:
    """n bytes from the operating system's CSPRNG."""
    return secrets.token_bytes(n)


def random_scalar(rng: Rng = os_rng) -> int:
    """A uniform scalar in [1, r-1]: 64 bytes reduced mod r-1, plus 1 (bias < 2^-250)."""
    return int.from_bytes(rng(64), "big") % (R - 1) + 1


def seeded_rng(seed: bytes) -> Rng:
    """A deterministic generator for tests (SHAKE-256 stream). Never for secrets."""
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        counter += 1
        return hashlib.shake_256(seed + counter.to_bytes(8, "big")).digest(n)

    return rng

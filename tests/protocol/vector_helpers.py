"""Readers for tests/vectors/eigenlayer_bn254.json: numbers come from the file, never retyped.

Numbers in the file are ``{"dec", "hex"}`` pairs; ``num`` checks that both agree.
G2 points are in Solidity order (X = [imag, real]); ``g2`` maps them to the
(real, imag) pairs of our API, the mapping the spec (section 3) prescribes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from protocol.bn254 import G1, G2

VECTOR_FILE = Path(__file__).resolve().parents[1] / "vectors" / "eigenlayer_bn254.json"


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTOR_FILE.read_text())
    return data


def ids(section: str) -> list[str]:
    return [v["id"] for v in load()[section]]


def by_id(vectors: dict[str, Any], section: str, vector_id: str) -> dict[str, Any]:
    (vec,) = [v for v in vectors[section] if v["id"] == vector_id]
    return vec


def num(o: dict[str, str]) -> int:
    value = int(o["dec"])
    assert value == int(o["hex"], 16)
    assert o["hex"] == f"0x{value:064x}"
    return value


def g1(o: dict[str, Any]) -> G1:
    return G1(num(o["X"]), num(o["Y"]))


def g2(o: dict[str, Any]) -> G2:
    x_imag, x_real = (num(c) for c in o["X"])
    y_imag, y_real = (num(c) for c in o["Y"])
    return G2((x_real, x_imag), (y_real, y_imag))


def hexbytes(s: str) -> bytes:
    assert s.startswith("0x")
    return bytes.fromhex(s[2:])

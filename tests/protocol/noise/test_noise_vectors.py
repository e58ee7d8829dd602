"""Every public Noise vector (cacophony and snow, tests/vectors/noise) byte for byte:
handshake messages, transport ciphertexts, the handshake hash where given, and the
remote static key each side learned."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol.noise import CipherState, HandshakeState, KeyPair

VECTOR_DIR = Path(__file__).resolve().parents[2] / "vectors" / "noise"


def _load() -> Iterator[Any]:
    for source in ("cacophony", "snow"):
        data = json.loads((VECTOR_DIR / f"{source}.json").read_text())
        for vector in data["vectors"]:
            yield pytest.param(vector, id=f"{source}:{vector['protocol_name']}")


VECTORS = list(_load())


def test_vector_count_matches_readme() -> None:
    # 16 cacophony + 17 snow, per tests/vectors/noise/README.md.
    assert len(VECTORS) == 33


def _fixed_rng(key_hex: str | None) -> Any:
    keys = [bytes.fromhex(key_hex)] if key_hex else []

    def rng(n: int) -> bytes:
        assert n == 32 and keys, "the vector has exactly one ephemeral key per side"
        return keys.pop()

    return rng


def _side(v: dict[str, Any], role: str, initiator: bool) -> HandshakeState:
    static = v.get(f"{role}_static")
    remote = v.get(f"{role}_remote_static")
    return HandshakeState(
        v["protocol_name"],
        initiator=initiator,
        prologue=bytes.fromhex(v[f"{role}_prologue"]),
        s=KeyPair.from_private(bytes.fromhex(static)) if static else None,
        rs=bytes.fromhex(remote) if remote else None,
        psks=[bytes.fromhex(p) for p in v.get(f"{role}_psks", [])],
        rng=_fixed_rng(v.get(f"{role}_ephemeral")),
    )


@pytest.mark.parametrize("v", VECTORS)
def test_vector(v: dict[str, Any]) -> None:
    init, resp = _side(v, "init", True), _side(v, "resp", False)
    messages = v["messages"]
    n_handshake = 3 if v["protocol_name"].startswith("Noise_XX") else 2
    sender, receiver = init, resp
    for msg in messages[:n_handshake]:
        payload, ciphertext = bytes.fromhex(msg["payload"]), bytes.fromhex(msg["ciphertext"])
        assert sender.write_message(payload) == ciphertext
        assert receiver.read_message(ciphertext) == payload
        sender, receiver = receiver, sender
    ti, tr = init.split(), resp.split()
    assert ti.handshake_hash == tr.handshake_hash
    if "handshake_hash" in v:
        assert ti.handshake_hash == bytes.fromhex(v["handshake_hash"])
    # Each side learned the other's real static key.
    if v.get("resp_static"):
        assert ti.remote_static == KeyPair.from_private(bytes.fromhex(v["resp_static"])).public
    if v.get("init_static"):
        assert tr.remote_static == KeyPair.from_private(bytes.fromhex(v["init_static"])).public
    # Transport messages keep alternating direction, with empty associated data.
    send: dict[int, CipherState] = {0: ti.send, 1: tr.send}
    recv: dict[int, CipherState] = {0: tr.receive, 1: ti.receive}
    for i, msg in enumerate(messages[n_handshake:], start=n_handshake):
        payload, ciphertext = bytes.fromhex(msg["payload"]), bytes.fromhex(msg["ciphertext"])
        direction = i % 2
        assert send[direction].encrypt_with_ad(b"", payload) == ciphertext
        assert recv[direction].decrypt_with_ad(b"", ciphertext) == payload

"""keccak256 is Ethereum's Keccak-256 (not FIPS SHA3-256); checked against the vectors."""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from protocol.hashing import keccak256, sha512
from tests.protocol.vector_helpers import by_id, hexbytes


def test_keccak_reproduces_vector_constants(eigen_vectors: dict[str, Any]) -> None:
    c = eigen_vectors["constants"]
    assert keccak256(b"BN254PubkeyRegistration(address operator)") == hexbytes(
        c["PUBKEY_REGISTRATION_TYPEHASH"]
    )
    assert keccak256(bytes(64)) == hexbytes(c["ZERO_PK_HASH"])
    hello = by_id(eigen_vectors, "signatureVectors", "sk69-hello-world")
    assert keccak256(b"hello world") == hexbytes(hello["msgHash"])


@given(st.binary(max_size=300))
def test_keccak_differs_from_sha3_and_accepts_bytearray(data: bytes) -> None:
    digest = keccak256(data)
    assert len(digest) == 32 and digest != hashlib.sha3_256(data).digest()
    assert keccak256(bytearray(data)) == digest
    assert sha512(data) == hashlib.sha512(data).digest()

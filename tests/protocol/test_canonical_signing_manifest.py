"""Canonical msgpack, domain-separated Ed25519 and the manifest parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from protocol.canonical import decode_canonical, encode_canonical
from protocol.errors import DecodeError
from protocol.manifest import ManifestError, parse_manifest
from protocol.signing import sign_fields, signed_bytes, verify_fields

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(values)
def test_canonical_round_trip(value: object) -> None:
    data = encode_canonical(value)
    assert encode_canonical(decode_canonical(data)) == data


def test_canonical_sorts_keys_regardless_of_insertion_order() -> None:
    assert encode_canonical({"b": 1, "a": 2}) == encode_canonical({"a": 2, "b": 1})


def test_canonical_rejects_non_minimal_and_unsorted() -> None:
    with pytest.raises(DecodeError):
        decode_canonical(b"\xcc\x05")  # 5 as uint8: not minimal
    with pytest.raises(DecodeError):
        decode_canonical(b"\x82\xa1b\x01\xa1a\x02")  # keys out of order
    with pytest.raises(DecodeError):
        decode_canonical(b"\x01\x02")  # trailing byte


@given(st.binary(max_size=64))
def test_canonical_decoder_raises_only_decode_error(data: bytes) -> None:
    try:
        value = decode_canonical(data)
    except DecodeError:
        return
    assert encode_canonical(value) == data  # accepted input is exactly canonical


def test_signatures_are_bound_to_purpose_and_fields() -> None:
    key = SigningKey(b"\x01" * 32)
    pub = bytes(key.verify_key)
    sig = sign_fields(key, "dkg-echo", {"ceremony": b"c", "i": 1})
    assert verify_fields(pub, "dkg-echo", {"i": 1, "ceremony": b"c"}, sig)
    assert not verify_fields(pub, "dkg-commit", {"ceremony": b"c", "i": 1}, sig)
    assert not verify_fields(pub, "dkg-echo", {"ceremony": b"c", "i": 2}, sig)
    assert not verify_fields(
        pub, "dkg-echo", {"ceremony": b"c", "i": 1}, bytes([sig[0] ^ 1]) + sig[1:]
    )
    assert signed_bytes("x", {}).startswith(b"tkms/v1/x\0")


GOOD = """
version = 1
cluster_id = "00112233445566778899aabbccddeeff"
[[nodes]]
index = 1
name = "node1"
address = "127.0.0.1:7101"
noise_public_key = "{k1}"
ed25519_public_key = "{k2}"
[[coordinators]]
name = "coordinator"
noise_public_key = "{k3}"
"""


def test_manifest_round_trip_and_strictness() -> None:
    text = GOOD.format(k1="11" * 32, k2="22" * 32, k3="33" * 32)
    m = parse_manifest(text)
    assert m.node("node1").port == 7101
    assert parse_manifest(m.to_toml()) == m
    with pytest.raises(ManifestError, match="noise_public_key"):
        parse_manifest(GOOD.format(k1="11" * 31, k2="22" * 32, k3="33" * 32))
    with pytest.raises(ManifestError, match="unknown keys"):
        parse_manifest(text + "\nextra = 1\n")

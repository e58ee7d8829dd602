"""DKG message framing: round trips, strict decoding that names the field, and the
share encryption (X25519 + HKDF-SHA256 + ChaCha20-Poly1305 with a bound AAD)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.bn254 import R
from protocol.canonical import encode_canonical
from protocol.dkg.crypto import (
    ShareDecryptionError,
    _hkdf_sha256,
    batch_weights,
    decrypt_share,
    encrypt_share,
    x25519_keypair,
    x25519_public_ok,
)
from protocol.dkg.messages import (
    NODE_MESSAGES,
    Complaints,
    Echo,
    Justification,
    decode_node_message,
)
from protocol.dkg.relayed import RELAYED_MESSAGES, decode_relayed
from protocol.errors import DecodeError, InvalidLength
from protocol.rng import seeded_rng
from tests.protocol.dkg.harness import Run, node_key


def all_messages(run: Run) -> list[Any]:
    sent = [m for node in run.nodes.values() for m in node.sent]
    relayed = [decode_relayed(data) for _, data in run.snapshots.values()]
    return sent + relayed


def test_every_message_of_a_ceremony_round_trips(honest_run: Run, complaint_run: Run) -> None:
    messages = all_messages(honest_run) + all_messages(complaint_run)
    kinds = {m.KIND for m in messages}
    assert kinds == {m.KIND for m in NODE_MESSAGES} | {
        m.KIND for m in RELAYED_MESSAGES if m.KIND != "dkg/abort"
    }
    for m in messages:
        data = m.encode()
        assert type(m).decode(data) == m
        decoder = (
            decode_node_message if m.KIND in {k.KIND for k in NODE_MESSAGES} else decode_relayed
        )
        assert decoder(data) == m


indices = st.integers(min_value=1, max_value=1024)
hashes = st.binary(min_size=32, max_size=32)


@settings(max_examples=60, deadline=None)
@given(
    ceremony=hashes,
    sender=indices,
    against=st.sets(indices, max_size=20),
    bundles=st.sets(st.tuples(indices, hashes), max_size=20),
    shares=st.dictionaries(indices, hashes, max_size=20),
)
def test_signed_messages_round_trip_and_verify(
    ceremony: bytes,
    sender: int,
    against: set[int],
    bundles: set[tuple[int, bytes]],
    shares: dict[int, bytes],
) -> None:
    key = node_key(b"x", 1)
    for m in (
        Complaints(ceremony=ceremony, sender=sender, against=tuple(sorted(against))),
        Echo(ceremony=ceremony, sender=sender, bundles=tuple(sorted(bundles))),
        Justification(ceremony=ceremony, sender=sender, shares=tuple(sorted(shares.items()))),
    ):
        signed = m.signed_by(key)
        again = type(m).decode(signed.encode())
        assert again == signed
        assert again.signature_valid(bytes(key.verify_key))
        assert not dataclasses.replace(again, sender=sender % 1024 + 1).signature_valid(
            bytes(key.verify_key)
        )


def _wire(honest_run: Run, kind: str) -> dict[str, Any]:
    for m in all_messages(honest_run):
        if kind == m.KIND:
            wire: dict[str, Any] = m.to_wire()
            return wire
    raise AssertionError(kind)


def _set(key: str, value: Any) -> Any:
    return lambda w: w.update({key: value})


def _item(key: str, index: int, value: Any) -> Any:
    return lambda w: w[key].__setitem__(index, value)


BAD = [
    ("dkg/bundle", _set("extra", 1), "", DecodeError),
    ("dkg/bundle", lambda w: w.pop("proof"), "", DecodeError),
    ("dkg/bundle", _set("sender", True), ".sender", DecodeError),
    ("dkg/bundle", _set("sender", 0), ".sender", DecodeError),
    ("dkg/bundle", _item("commitments", 1, b"x" * 63), ".commitments[1]", InvalidLength),
    ("dkg/bundle", _set("commitment_g2", b"x" * 129), ".commitment_g2", InvalidLength),
    ("dkg/bundle", lambda w: w["shares"].reverse(), ".shares", DecodeError),
    ("dkg/bundle", lambda w: w["shares"][0].__setitem__(1, b"c"), ".shares[0][1]", InvalidLength),
    ("dkg/open", _set("key_id", "no/slash"), ".key_id", DecodeError),
    ("dkg/open", _set("nonce", "text"), ".nonce", DecodeError),
    ("dkg/echo", lambda w: w["bundles"].reverse(), ".bundles", DecodeError),
    ("dkg/echo", _set("sig", b"s" * 65), ".sig", InvalidLength),
    ("dkg/complaints", _set("against", [2, 2]), ".against", DecodeError),
    (
        "dkg/transcript-signature",
        lambda w: w["outcome"].update(qual=[]),
        ".outcome.qual",
        DecodeError,
    ),
    ("dkg/proposal", _set("threshold", 1), ".threshold", DecodeError),
    ("dkg/proposal", _set("min_holders", 2), ".min_holders", DecodeError),
    ("dkg/proposal", _set("participants", [1]), ".participants", DecodeError),
    ("dkg/commit", lambda w: w["signatures"].reverse(), ".signatures", DecodeError),
    ("dkg/bundle-set", _set("bundles", {}), ".bundles", DecodeError),
    (
        "dkg/open-set",
        lambda w: w["opens"][0].update(kind="dkg/echo"),
        ".opens[0].kind",
        DecodeError,
    ),
]


@pytest.mark.parametrize(("kind", "change", "suffix", "error"), BAD)
def test_strict_decoding_names_the_field(
    honest_run: Run, kind: str, change: Any, suffix: str, error: type[Exception]
) -> None:
    wire = _wire(honest_run, kind)
    change(wire)
    data = encode_canonical(wire)
    decoder = (
        decode_relayed if kind.endswith(("-set", "proposal", "commit")) else decode_node_message
    )
    with pytest.raises(error) as info:
        decoder(data)
    assert isinstance(info.value, DecodeError) and info.value.field == kind + suffix


def test_unknown_kinds_and_non_maps_are_decode_errors() -> None:
    for decoder in (decode_node_message, decode_relayed):
        for data in (encode_canonical({"kind": "dkg/nope"}), encode_canonical([1]), b"\xc1"):
            with pytest.raises(DecodeError):
                decoder(data)


# --------------------------------------------------------------------------- crypto


def test_hkdf_matches_rfc_5869_test_case_1() -> None:
    okm = _hkdf_sha256(
        bytes.fromhex("0b" * 22),
        bytes.fromhex("000102030405060708090a0b0c"),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def _box(share: int = 12345) -> tuple[bytes, dict[str, Any]]:
    rng = seeded_rng(b"box")
    eph_secret, eph_public = x25519_keypair(rng)
    rec_secret, rec_public = x25519_keypair(rng)
    ct = encrypt_share(
        share,
        ceremony=b"c" * 32,
        dealer=2,
        recipient=3,
        ephemeral_secret=eph_secret,
        ephemeral_public=eph_public,
        recipient_key=rec_public,
    )
    opened = dict(
        ceremony=b"c" * 32,
        dealer=2,
        recipient=3,
        recipient_secret=rec_secret,
        recipient_key=rec_public,
        ephemeral_public=eph_public,
    )
    return ct, opened


def test_a_share_decrypts_only_for_its_ceremony_dealer_and_recipient() -> None:
    ct, opened = _box()
    assert len(ct) == 48
    assert decrypt_share(ct, **opened) == 12345
    for change in ({"ceremony": b"d" * 32}, {"dealer": 1}, {"recipient": 4}):
        with pytest.raises(ShareDecryptionError):
            decrypt_share(ct, **{**opened, **change})
    with pytest.raises(ShareDecryptionError):
        decrypt_share(ct[:-1] + bytes([ct[-1] ^ 1]), **opened)


def test_a_decrypted_value_not_below_r_is_refused() -> None:
    ct, opened = _box(share=R)  # a cheating dealer may encrypt anything
    with pytest.raises(ShareDecryptionError, match="< r"):
        decrypt_share(ct, **opened)


def test_small_order_x25519_keys_are_refused() -> None:
    assert not x25519_public_ok(bytes(32))
    assert not x25519_public_ok(b"\x01" + bytes(31))
    assert not x25519_public_ok(bytes(31))
    assert x25519_public_ok(x25519_keypair(seeded_rng(b"k"))[1])


def test_batch_weights_are_nonzero_128_bit_and_depend_on_the_seed() -> None:
    a, b = batch_weights(b"seed-a", 50), batch_weights(b"seed-b", 50)
    assert all(0 < w < 2**128 for w in a + b)
    assert len(set(a)) == 50 and not set(a) & set(b)
    assert batch_weights(b"seed-a", 3) == a[:3]

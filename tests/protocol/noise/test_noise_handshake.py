"""Noise negative paths and properties: tampering, wrong prologue or PSK, low-order
keys, nonce exhaustion, length limits, wrong state; each raises its typed error and
leaves the state as it was."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import Fault, TkmsError
from protocol.noise import (
    CLUSTER_PROTOCOL,
    MAX_NONCE,
    CipherState,
    DecryptError,
    HandshakeState,
    InvalidPublicKey,
    KeyPair,
    MalformedMessage,
    MessageTooLong,
    NoiseConfigError,
    NoiseError,
    NoiseStateError,
    NonceExhausted,
    Phase,
    cluster_prologue,
)
from protocol.rng import seeded_rng

# Low-order points of Curve25519 (the well-known list, e.g. from libsodium's
# blacklist in crypto_scalarmult/curve25519/ref10): 0, 1 and a point of order 8.
LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
]


def _pair(
    prologue_i: bytes = b"p", prologue_r: bytes = b"p", seed: bytes = b"x"
) -> tuple[HandshakeState, HandshakeState]:
    rng = seeded_rng(seed)
    si, sr = KeyPair.generate(rng), KeyPair.generate(rng)
    init = HandshakeState(CLUSTER_PROTOCOL, initiator=True, prologue=prologue_i, s=si, rng=rng)
    resp = HandshakeState(CLUSTER_PROTOCOL, initiator=False, prologue=prologue_r, s=sr, rng=rng)
    return init, resp


def _snapshot(hs: HandshakeState) -> tuple[object, ...]:
    return (hs.phase, hs.handshake_hash, hs.remote_static, repr(hs))


def test_full_xx_handshake_authenticates_both_static_keys() -> None:
    init, resp = _pair()
    resp.read_message(init.write_message())
    init.read_message(resp.write_message(b"hello"))
    resp.read_message(init.write_message(b"world"))
    ti, tr = init.split(), resp.split()
    assert ti.handshake_hash == tr.handshake_hash
    assert ti.remote_static is not None and tr.remote_static is not None
    assert tr.receive.decrypt_with_ad(b"", ti.send.encrypt_with_ad(b"", b"ping")) == b"ping"


@pytest.mark.parametrize("index", [1, 2])
@pytest.mark.parametrize("position", [0, 40, -1])
def test_tampered_handshake_message_is_refused_and_state_unchanged(
    index: int, position: int
) -> None:
    init, resp = _pair()
    sides = [(init, resp), (resp, init), (init, resp)]
    for i, (writer, reader) in enumerate(sides):
        msg = writer.write_message(b"payload")
        if i == index:
            bad = bytearray(msg)
            bad[position] ^= 0x01
            before = _snapshot(reader)
            with pytest.raises(DecryptError) as info:
                reader.read_message(bytes(bad))
            assert info.value.fault is Fault.PEER
            assert _snapshot(reader) == before
        assert reader.read_message(msg) == b"payload"  # the genuine one still works
    assert init.phase is Phase.DONE and resp.phase is Phase.DONE


def test_wrong_prologue_fails_at_the_first_encrypted_field() -> None:
    init, resp = _pair(
        prologue_i=cluster_prologue(1, bytes(16)), prologue_r=cluster_prologue(1, b"\x01" * 16)
    )
    resp.read_message(init.write_message())
    with pytest.raises(DecryptError):
        init.read_message(resp.write_message())


def test_wrong_psk_fails() -> None:
    name = "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b"
    rng = seeded_rng(b"psk")
    init = HandshakeState(name, initiator=True, s=KeyPair.generate(rng), psks=[b"a" * 32], rng=rng)
    resp = HandshakeState(name, initiator=False, s=KeyPair.generate(rng), psks=[b"b" * 32], rng=rng)
    resp.read_message(init.write_message())
    init.read_message(resp.write_message())
    with pytest.raises(DecryptError):
        resp.read_message(init.write_message())


@pytest.mark.parametrize("point", LOW_ORDER)
def test_low_order_ephemeral_from_initiator_is_refused(point: bytes) -> None:
    init, resp = _pair()
    msg1 = init.write_message()
    resp.read_message(point + msg1[32:])  # XX message 1 is unauthenticated
    before = _snapshot(resp)
    with pytest.raises(InvalidPublicKey) as info:
        resp.write_message()  # "ee" with a low-order key
    assert info.value.fault is Fault.PEER
    assert _snapshot(resp) == before


@pytest.mark.parametrize("point", LOW_ORDER)
def test_low_order_ephemeral_from_responder_is_refused(point: bytes) -> None:
    init, resp = _pair()
    resp.read_message(init.write_message())
    msg2 = resp.write_message()
    before = _snapshot(init)
    with pytest.raises(InvalidPublicKey):
        init.read_message(point + msg2[32:])
    assert _snapshot(init) == before
    init.read_message(msg2)  # unchanged: the real message still goes through


def test_nonce_exhaustion_on_both_directions() -> None:
    key = b"k" * 32
    sender, receiver = CipherState(key, n=MAX_NONCE - 1), CipherState(key, n=MAX_NONCE - 1)
    ct = sender.encrypt_with_ad(b"", b"last")
    assert receiver.decrypt_with_ad(b"", ct) == b"last"
    assert sender.n == receiver.n == MAX_NONCE
    with pytest.raises(NonceExhausted):
        sender.encrypt_with_ad(b"", b"one more")
    with pytest.raises(NonceExhausted):
        receiver.decrypt_with_ad(b"", ct)
    assert sender.n == receiver.n == MAX_NONCE


def test_transport_replay_and_reorder_fail_without_advancing() -> None:
    key = b"k" * 32
    sender, receiver = CipherState(key), CipherState(key)
    c0, c1 = sender.encrypt_with_ad(b"", b"zero"), sender.encrypt_with_ad(b"", b"one")
    with pytest.raises(DecryptError):
        receiver.decrypt_with_ad(b"", c1)  # reordered
    assert receiver.n == 0
    assert receiver.decrypt_with_ad(b"", c0) == b"zero"
    with pytest.raises(DecryptError):
        receiver.decrypt_with_ad(b"", c0)  # replayed
    assert receiver.decrypt_with_ad(b"", c1) == b"one"


def test_length_limits() -> None:
    cs = CipherState(b"k" * 32)
    assert len(cs.encrypt_with_ad(b"", bytes(65519))) == 65535
    with pytest.raises(MessageTooLong):
        cs.encrypt_with_ad(b"", bytes(65520))
    with pytest.raises(MalformedMessage):
        CipherState(b"k" * 32).decrypt_with_ad(b"", bytes(65536))
    init, resp = _pair()
    with pytest.raises(MessageTooLong):
        init.write_message(bytes(65535 - 31))  # 32-byte e + payload > 65,535
    assert init.phase is Phase.WRITE
    with pytest.raises(MalformedMessage):
        resp.read_message(bytes(65536))
    with pytest.raises(MalformedMessage):
        resp.read_message(bytes(31))  # shorter than an ephemeral key


def test_wrong_state_is_a_local_error_and_changes_nothing() -> None:
    init, resp = _pair()
    with pytest.raises(NoiseStateError) as info:
        init.read_message(bytes(64))
    assert info.value.fault is Fault.LOCAL
    with pytest.raises(NoiseStateError):
        resp.write_message()
    with pytest.raises(NoiseStateError):
        init.split()
    assert init.phase is Phase.WRITE and resp.phase is Phase.READ
    resp.read_message(init.write_message())
    init.read_message(resp.write_message())
    resp.read_message(init.write_message())
    with pytest.raises(NoiseStateError):
        init.write_message()


def test_configuration_errors() -> None:
    with pytest.raises(NoiseConfigError):
        HandshakeState("Noise_XX_448_ChaChaPoly_BLAKE2b", initiator=True)
    with pytest.raises(NoiseConfigError):
        HandshakeState("Noise_XXpsk9_25519_ChaChaPoly_BLAKE2b", initiator=True)
    with pytest.raises(NoiseConfigError):
        HandshakeState(CLUSTER_PROTOCOL, initiator=True)  # XX needs our static key
    with pytest.raises(NoiseConfigError):
        HandshakeState("Noise_NK_25519_ChaChaPoly_BLAKE2b", initiator=True)  # needs rs
    with pytest.raises(NoiseConfigError):
        HandshakeState("Noise_NKpsk0_25519_ChaChaPoly_BLAKE2b", initiator=True, rs=bytes(32))
    with pytest.raises(NoiseConfigError):
        cluster_prologue(1, b"short")
    with pytest.raises(NoiseConfigError):
        KeyPair.from_private(b"short")
    assert cluster_prologue(1, bytes(16)) == b"tkms\x00\x01" + bytes(16)


def test_reprs_hide_keys() -> None:
    kp = KeyPair.from_private(b"\x42" * 32)
    assert "42" * 8 not in repr(kp) and kp.public.hex() in repr(kp)
    assert ("6b" * 8) not in repr(CipherState(b"k" * 32)) and "hidden" in repr(
        CipherState(b"k" * 32)
    )


@settings(max_examples=30, deadline=None)
@given(
    seed=st.binary(min_size=1, max_size=8),
    payloads=st.lists(st.binary(max_size=300), min_size=3, max_size=6),
)
def test_handshake_and_transport_round_trip(seed: bytes, payloads: list[bytes]) -> None:
    init, resp = _pair(seed=seed)
    assert resp.read_message(init.write_message(payloads[0])) == payloads[0]
    assert init.read_message(resp.write_message(payloads[1])) == payloads[1]
    assert resp.read_message(init.write_message(payloads[2])) == payloads[2]
    ti, tr = init.split(), resp.split()
    for i, p in enumerate(payloads):
        a, b = (ti.send, tr.receive) if i % 2 == 0 else (tr.send, ti.receive)
        assert b.decrypt_with_ad(b"", a.encrypt_with_ad(b"", p)) == p


@settings(max_examples=60, deadline=None)
@given(step=st.integers(0, 2), garbage=st.binary(max_size=200))
def test_garbage_in_any_handshake_state_is_a_typed_error(step: int, garbage: bytes) -> None:
    init, resp = _pair()
    writers = [(init, resp), (resp, init), (init, resp)]
    for writer, reader in writers[:step]:
        reader.read_message(writer.write_message())
    reader = writers[step][1]
    before = _snapshot(reader)
    try:
        reader.read_message(garbage)
    except NoiseError as exc:
        assert isinstance(exc, TkmsError) and exc.fault is Fault.PEER
        assert _snapshot(reader) == before
    else:
        # Only XX message 1 (unauthenticated "e") can accept arbitrary bytes.
        assert step == 0 and len(garbage) >= 32

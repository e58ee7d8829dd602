"""node/hsm.py against real SoftHSM2 tokens: key protection, typed errors that leave
the token and files unchanged, the leaked-session trap, and the one-worker facade."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pkcs11
import pytest
import trio
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e

from node.config import NodeConfig
from node.hsm import (
    SOFTHSM_MODULE,
    GcmAuthFailed,
    HsmCore,
    ModuleMissing,
    SoftHsmConfInvalid,
    TokenKeyExists,
    TokenKeyMissing,
    TokenNotFound,
    WrongPin,
    _close_all_sessions,
    open_hsm,
)
from node.sealing import IDENTITY_KEY_LABEL, share_key_label
from protocol.errors import Fault
from tests.node.hsm_helpers import (
    SoftHsm,
    live_session_handles,
    snapshot,
    token_objects,
    user_pin,
)


def test_every_secret_key_is_sensitive_and_unextractable(softhsm: SoftHsm) -> None:
    core = softhsm.open("node0")
    core.create_aes_key(IDENTITY_KEY_LABEL)
    core.create_aes_key(share_key_label("k1", 1))
    core.create_aes_key(share_key_label("k2", 3))
    with softhsm.raw_session("node0") as s:
        keys = list(s.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY}))
        assert len(keys) == 3
        wrapper = s.generate_key(
            KeyType.AES,
            256,
            store=False,
            template={Attribute.WRAP: True, Attribute.UNWRAP: True, Attribute.TOKEN: False},
        )
        for key in keys:
            assert key[Attribute.EXTRACTABLE] is False
            assert key[Attribute.SENSITIVE] is True
            assert key[Attribute.NEVER_EXTRACTABLE] is True
            assert key[Attribute.ALWAYS_SENSITIVE] is True
            assert key[Attribute.TOKEN] is True and key[Attribute.PRIVATE] is True
            assert key[Attribute.MODIFIABLE] is False
            assert key[Attribute.VALUE_LEN] == 32
            for capability in (Attribute.WRAP, Attribute.UNWRAP, Attribute.SIGN, Attribute.DERIVE):
                assert key[capability] is False
            with pytest.raises(p11e.AttributeSensitive):
                key[Attribute.VALUE]
            with pytest.raises(p11e.KeyUnextractable):
                wrapper.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)
            with pytest.raises(p11e.AttributeReadOnly):
                key.copy({Attribute.EXTRACTABLE: True})
            with pytest.raises(p11e.PKCS11Error):
                key[Attribute.EXTRACTABLE] = True
        wrapper.destroy()
    # our own listing agrees with what python-pkcs11 read
    listed = core.list_keys()
    assert [k.label for k in listed] == sorted(
        [IDENTITY_KEY_LABEL, share_key_label("k1", 1), share_key_label("k2", 3)]
    )
    assert all(k.sensitive and not k.extractable and k.never_extractable for k in listed)


def test_module_missing_is_a_config_error_and_changes_nothing(softhsm: SoftHsm) -> None:
    before = snapshot(softhsm.base)
    with pytest.raises(ModuleMissing, match=r"PKCS#11 module not found: /nonexistent/libx\.so"):
        HsmCore.open(
            Path("/nonexistent/libx.so"), "node0", user_pin("node0"), softhsm2_conf=softhsm.conf
        )
    assert ModuleMissing.fault is Fault.CONFIG
    assert snapshot(softhsm.base) == before


def test_softhsm_conf_without_tokendir_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "softhsm2.conf"
    conf.write_text("objectstore.backend = file\nlog.level = ERROR\n")
    with pytest.raises(SoftHsmConfInvalid, match=r"no directories\.tokendir"):
        HsmCore.open(SOFTHSM_MODULE, "node0", "1234", softhsm2_conf=conf)
    with pytest.raises(SoftHsmConfInvalid, match="cannot read SoftHSM config"):
        HsmCore.open(SOFTHSM_MODULE, "node0", "1234", softhsm2_conf=tmp_path / "missing.conf")


def test_token_not_found_lists_the_labels_seen(softhsm: SoftHsm) -> None:
    before = snapshot(softhsm.base)
    with pytest.raises(TokenNotFound) as info:
        softhsm.open("node7")
    assert "no token labelled 'node7'" in str(info.value)
    assert "'node0'" in str(info.value) and "'node1'" in str(info.value)
    assert info.value.seen == ["node0", "node1"]
    assert info.value.fault is Fault.CONFIG
    assert snapshot(softhsm.base) == before


def test_wrong_pin_closes_the_leaked_session_and_changes_nothing(softhsm: SoftHsm) -> None:
    core = softhsm.open("node0")
    core.create_aes_key(IDENTITY_KEY_LABEL)
    objects = token_objects(softhsm, "node0")
    core.close()
    before = snapshot(softhsm.base)
    # python-pkcs11 alone leaks the session of a failed login (the trap in hsm.md)
    token = pkcs11.lib(str(SOFTHSM_MODULE)).get_token(token_label="node1")
    with pytest.raises(p11e.PinIncorrect):
        token.open(rw=True, user_pin="wrong-pin")
    leaked = live_session_handles()
    assert len(leaked) == 1
    _close_all_sessions(SOFTHSM_MODULE, token.slot.slot_id)
    assert live_session_handles() == []
    # ours does not
    with pytest.raises(WrongPin, match="wrong user PIN for token 'node0'"):
        softhsm.open("node0", pin="wrong-pin")
    assert live_session_handles() == []
    assert snapshot(softhsm.base) == before
    core = softhsm.open("node0")
    assert sorted(k.label for k in core.list_keys()) == [IDENTITY_KEY_LABEL]
    assert token_objects(softhsm, "node0") == objects


def test_gcm_round_trip_and_tamper(softhsm: SoftHsm) -> None:
    core = softhsm.open("node0")
    core.create_aes_key("k")
    with pytest.raises(TokenKeyExists):
        core.create_aes_key("k")
    iv, ct = core.aes_gcm_encrypt("k", b"secret bytes", b"aad")
    assert len(iv) == 12 and len(ct) == 12 + 16
    assert core.aes_gcm_decrypt("k", iv, ct, b"aad") == b"secret bytes"
    for bad_iv, bad_ct, bad_aad in (
        (iv, ct[:-1] + bytes([ct[-1] ^ 1]), b"aad"),
        (bytes([iv[0] ^ 1]) + iv[1:], ct, b"aad"),
        (iv, ct, b"aae"),
    ):
        with pytest.raises(GcmAuthFailed):
            core.aes_gcm_decrypt("k", bad_iv, bad_ct, bad_aad)
    # two encryptions of the same plaintext use different IVs
    assert core.aes_gcm_encrypt("k", b"x", b"")[0] != core.aes_gcm_encrypt("k", b"x", b"")[0]
    core.destroy_key("k")
    with pytest.raises(TokenKeyMissing):
        core.aes_gcm_decrypt("k", iv, ct, b"aad")


def test_tokens_in_one_config_are_separate(softhsm: SoftHsm) -> None:
    a, b = softhsm.open("node0"), softhsm.open("node1")
    a.create_aes_key("same-label")
    b.create_aes_key("same-label")
    iv, ct = a.aes_gcm_encrypt("same-label", b"for node0", b"")
    with pytest.raises(GcmAuthFailed):
        b.aes_gcm_decrypt("same-label", iv, ct, b"")


def _config(softhsm: SoftHsm, label: str, pin_file: Path) -> NodeConfig:
    pin_file.write_text(user_pin(label) + "\n")
    pin_file.chmod(0o600)
    return NodeConfig(
        name=label,
        data_dir=softhsm.base,
        pkcs11_module=SOFTHSM_MODULE,
        token_label=label,
        listen="127.0.0.1:0",
        pin_file=pin_file,
        softhsm2_conf=softhsm.conf,
    )


async def test_async_facade_serialises_every_call(softhsm: SoftHsm, tmp_path: Path) -> None:
    config = _config(softhsm, "node0", tmp_path / "pin")
    active = 0
    overlap = 0
    threads: set[int] = set()
    lock = threading.Lock()

    def probe(core: HsmCore, i: int) -> bytes:
        nonlocal active, overlap
        with lock:
            active += 1
            overlap = max(overlap, active)
            threads.add(threading.get_ident())
        time.sleep(0.002)
        data = core.generate_random(16)
        with lock:
            active -= 1
        return data

    async with open_hsm(config) as hsm:
        await hsm.create_aes_key("k")
        results: list[bytes] = []

        async def worker(i: int) -> None:
            results.append(await hsm.run(probe, i))
            iv, ct = await hsm.aes_gcm_encrypt("k", bytes([i]), b"")
            assert await hsm.aes_gcm_decrypt("k", iv, ct, b"") == bytes([i])

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(worker, i)
        assert len(results) == 30 and len(set(results)) == 30
        assert overlap == 1  # never two HSM calls at once
        assert threading.get_ident() not in threads  # never on the trio thread
        assert [k.label for k in await hsm.list_keys()] == ["k"]

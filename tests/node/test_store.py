"""node/store.py with a real token: lifecycle and its transition table, versioned
hash-chained metadata, crypto-shredding on destroy (even against a backup copy),
copied share files, and no secret in the clear anywhere under the data dir."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11e
from py_ecc.optimized_bn128 import G1 as PY_G1
from py_ecc.optimized_bn128 import G2 as PY_G2
from py_ecc.optimized_bn128 import multiply, normalize

from node.config import NodeConfig
from node.entropy import open_entropy
from node.hsm import SOFTHSM_MODULE, open_hsm
from node.identity import create_identity, unseal_identity
from node.sealing import SealedBlobMisplaced, SealKeyUnavailable, ShareContext, unseal
from node.store import (
    IllegalTransition,
    KeyExists,
    KeyMetadata,
    KeyNotActive,
    KeyStatus,
    MetadataLog,
    ShareCache,
    StoreCorrupt,
    open_store,
)
from protocol.bn254 import R
from protocol.errors import InvalidPoint
from protocol.rng import random_scalar
from tests.node.hsm_helpers import SoftHsm, snapshot, token_objects, user_pin

CLUSTER = bytes(range(16))


def _metadata(key_id: str, shares: dict[int, int], secret: int, epoch: int = 1) -> KeyMetadata:
    """Public key data computed with py_ecc (the oracle), not with our own code."""

    def g1(k: int) -> bytes:
        x, y = normalize(multiply(PY_G1, k))
        return int(x).to_bytes(32, "big") + int(y).to_bytes(32, "big")

    x, y = normalize(multiply(PY_G2, secret))
    pk_g2 = b"".join(
        int(c).to_bytes(32, "big") for c in (x.coeffs[1], x.coeffs[0], y.coeffs[1], y.coeffs[0])
    )
    return KeyMetadata(
        key_id=key_id,
        t=2,
        n=len(shares),
        epoch=epoch,
        holders=tuple(sorted(shares)),
        pk_g1=g1(secret),
        pk_g2=pk_g2,
        public_shares={i: g1(s) for i, s in shares.items()},
        transcript_hash=bytes(range(32)),
        status=KeyStatus.PENDING,
    )


def _shares(secret: int, a1: int) -> dict[int, int]:
    return {i: (secret + a1 * i) % R for i in (1, 2, 3)}


def _config(softhsm: SoftHsm, tmp_path: Path, label: str = "node0") -> NodeConfig:
    pin_file = tmp_path / f"{label}.pin"
    pin_file.write_text(user_pin(label))
    pin_file.chmod(0o600)
    data = tmp_path / f"data-{label}"
    data.mkdir(mode=0o700)
    return NodeConfig(
        name=label,
        data_dir=data,
        pkcs11_module=SOFTHSM_MODULE,
        token_label=label,
        listen="127.0.0.1:0",
        pin_file=pin_file,
        softhsm2_conf=softhsm.conf,
    )


async def test_lifecycle_history_and_transition_table(softhsm: SoftHsm, tmp_path: Path) -> None:
    config = _config(softhsm, tmp_path)
    secret, a1 = random_scalar(), random_scalar()
    shares = _shares(secret, a1)
    meta = _metadata("key-1", shares, secret)
    async with (
        open_hsm(config) as hsm,
        open_store(config.data_dir, hsm, cluster_id=CLUSTER, node_index=2) as store,
    ):
        await store.put_share(meta, shares[2])
        with pytest.raises(KeyExists):
            await store.put_share(meta, shares[2])
        with pytest.raises(KeyNotActive, match="key-1 is pending"):
            await store.get_share("key-1")
        assert "key-1" not in store.cache
        await store.activate("key-1")
        assert await store.get_share("key-1") == shares[2]
        assert "key-1" in store.cache
        assert await store.get_share("key-1") == shares[2]  # from the cache
        await store.set_status("key-1", KeyStatus.RETIRING)
        assert "key-1" not in store.cache
        with pytest.raises(KeyNotActive):
            await store.get_share("key-1")
        before = snapshot(config.data_dir)
        for illegal in (KeyStatus.ACTIVE, KeyStatus.PENDING, KeyStatus.RETIRING):
            with pytest.raises(IllegalTransition):
                await store.set_status("key-1", illegal)
        assert snapshot(config.data_dir) == before
        await store.destroy("key-1")
        with pytest.raises(IllegalTransition):
            await store.destroy("key-1")
        history = await store.history("key-1")
        assert [(v.version, v.event, v.metadata.status) for v in history] == [
            (1, "stored", KeyStatus.PENDING),
            (2, "active", KeyStatus.ACTIVE),
            (3, "retiring", KeyStatus.RETIRING),
            (4, "destroyed", KeyStatus.DESTROYED),
        ]
        assert history[0].previous == "" and all(
            history[i].previous == history[i - 1].sha256 for i in range(1, 4)
        )
        assert [m.key_id for m in await store.list_keys()] == ["key-1"]
        assert (await store.get_metadata("key-1")).pk_g1 == meta.pk_g1
    # the public metadata file carries DESIGN's fields, hex-encoded
    first = json.loads((config.data_dir / "keys/key-1/meta-000001.json").read_text())
    assert set(first["metadata"]) == {
        "keyId", "t", "n", "epoch", "holders", "pkG1", "pkG2", "publicShares",
        "transcriptHash", "status",
    }  # fmt: skip
    assert first["metadata"]["pkG1"] == meta.pk_g1.hex()


async def test_destroy_shreds_even_a_restored_backup(softhsm: SoftHsm, tmp_path: Path) -> None:
    config = _config(softhsm, tmp_path)
    secret = random_scalar()
    shares = _shares(secret, random_scalar())
    async with (
        open_hsm(config) as hsm,
        open_store(config.data_dir, hsm, cluster_id=CLUSTER, node_index=1) as store,
    ):
        await store.put_share(_metadata("k", shares, secret), shares[1])
        await store.activate("k")
        assert await store.get_share("k") == shares[1]
        blob_path = store.share_path("k", 1)
        backup = tmp_path / "backup.sealed"
        shutil.copy(blob_path, backup)
        assert "tkms/share/k/1" in token_objects(softhsm, "node0")
        await store.destroy("k")
        assert not blob_path.exists()
        assert "tkms/share/k/1" not in token_objects(softhsm, "node0")
        assert "k" not in store.cache
        shutil.copy(backup, blob_path)  # restore from the backup
        with pytest.raises(KeyNotActive, match="k is destroyed"):
            await store.get_share("k")
        with pytest.raises(SealKeyUnavailable):  # even bypassing the metadata
            await hsm.run(unseal, ShareContext(CLUSTER, "k", 1, 1), backup.read_bytes())


async def test_share_file_copied_from_another_key(softhsm: SoftHsm, tmp_path: Path) -> None:
    config = _config(softhsm, tmp_path)
    async with (
        open_hsm(config) as hsm,
        open_store(config.data_dir, hsm, cluster_id=CLUSTER, node_index=1) as store,
    ):
        for key_id in ("a", "b"):
            secret = random_scalar()
            shares = _shares(secret, random_scalar())
            await store.put_share(_metadata(key_id, shares, secret), shares[1])
            await store.activate(key_id)
        store.share_path("b", 1).write_bytes(store.share_path("a", 1).read_bytes())
        before = snapshot(config.data_dir, softhsm.base), token_objects(softhsm, "node0")
        with pytest.raises(SealedBlobMisplaced) as info:
            await store.get_share("b")
        assert info.value.field == "keyId" and "another key id" in str(info.value)
        assert "b" not in store.cache
        assert (snapshot(config.data_dir, softhsm.base), token_objects(softhsm, "node0")) == before


async def test_aborted_key_id_can_be_reused_but_an_active_one_never(
    softhsm: SoftHsm, tmp_path: Path
) -> None:
    config = _config(softhsm, tmp_path)
    secret = random_scalar()
    shares = _shares(secret, random_scalar())
    async with (
        open_hsm(config) as hsm,
        open_store(config.data_dir, hsm, cluster_id=CLUSTER, node_index=3) as store,
    ):
        await store.put_share(_metadata("x", shares, secret), shares[3])
        await store.destroy("x")  # ceremony aborted while pending
        await store.put_share(_metadata("x", shares, secret), shares[3])
        await store.activate("x")
        assert await store.get_share("x") == shares[3]
        await store.destroy("x")
        with pytest.raises(KeyExists):
            await store.put_share(_metadata("x", shares, secret), shares[3])
        assert len(await store.history("x")) == 5


async def test_invalid_public_points_are_refused_before_anything_is_written(
    softhsm: SoftHsm, tmp_path: Path
) -> None:
    config = _config(softhsm, tmp_path)
    secret = random_scalar()
    shares = _shares(secret, random_scalar())
    good = _metadata("p", shares, secret)
    off_curve = good.pk_g1[:63] + bytes([good.pk_g1[63] ^ 1])
    swapped_g2 = good.pk_g2[32:64] + good.pk_g2[:32] + good.pk_g2[64:]  # real/imag swapped
    async with (
        open_hsm(config) as hsm,
        open_store(config.data_dir, hsm, cluster_id=CLUSTER, node_index=1) as store,
    ):
        before = snapshot(config.data_dir), token_objects(softhsm, "node0")
        for bad, field in ((replace(good, pk_g1=off_curve), "pkG1"),
                           (replace(good, pk_g2=swapped_g2), "pkG2")):  # fmt: skip
            with pytest.raises(InvalidPoint) as info:
                await store.put_share(bad, shares[1])
            assert info.value.field == field
        assert (snapshot(config.data_dir), token_objects(softhsm, "node0")) == before


async def test_broken_history_is_refused_at_open(softhsm: SoftHsm, tmp_path: Path) -> None:
    config = _config(softhsm, tmp_path)
    secret = random_scalar()
    shares = _shares(secret, random_scalar())
    async with open_hsm(config) as hsm:
        async with open_store(config.data_dir, hsm, cluster_id=CLUSTER, node_index=1) as store:
            await store.put_share(_metadata("h", shares, secret), shares[1])
            await store.activate("h")
        first = config.data_dir / "keys/h/meta-000001.json"
        first.write_text(first.read_text().replace('"pending"', '"active" '))
        with pytest.raises(StoreCorrupt, match="hash chain broken"):
            async with open_store(config.data_dir, hsm, cluster_id=CLUSTER, node_index=1):
                pass
    assert len(MetadataLog(config.data_dir / "keys/h")._files()) == 2


def _needles(secret: bytes) -> list[bytes]:
    h = secret.hex()
    return [secret, h.encode(), h.upper().encode(), str(int.from_bytes(secret, "big")).encode()]


async def test_no_secret_in_the_clear_under_the_data_dir(softhsm: SoftHsm, tmp_path: Path) -> None:
    config = _config(softhsm, tmp_path)
    secret = random_scalar()
    shares = _shares(secret, random_scalar())
    async with open_hsm(config) as hsm:
        async with open_entropy(hsm) as entropy:
            await create_identity(hsm, entropy, name="node0", data_dir=config.data_dir)
        identity = await unseal_identity(hsm, name="node0", data_dir=config.data_dir)
        async with open_store(config.data_dir, hsm, cluster_id=CLUSTER, node_index=1) as store:
            await store.put_share(_metadata("s", shares, secret), shares[1])
            await store.activate("s")
            assert await store.get_share("s") == shares[1]
        with softhsm.raw_session("node0") as session:  # every key node code made
            keys = list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY}))
            assert sorted(str(k[Attribute.LABEL]) for k in keys) == [
                "tkms/identity/v1",
                "tkms/share/s/1",
            ]
            for key in keys:
                assert key[Attribute.EXTRACTABLE] is False and key[Attribute.SENSITIVE] is True
                with pytest.raises(p11e.AttributeSensitive):
                    key[Attribute.VALUE]
    secrets = [identity.noise_private_key, identity.ed25519_seed, shares[1].to_bytes(32, "big")]
    files = snapshot(config.data_dir, softhsm.base, skip_token_meta=False)
    assert any("share-1.sealed" in f for f in files) and any("ed25519.sealed" in f for f in files)
    assert any(f.endswith(".object") for f in files)  # the token's own files are searched too
    for name, data in files.items():
        for s in secrets:
            for needle in _needles(s):
                assert needle not in data, f"{name} holds a secret in the clear"


def test_share_cache_overwrites_on_drop() -> None:
    cache = ShareCache()
    cache.put("k", 1, (12345).to_bytes(32, "big"))
    buffer = cache._entries["k"][1]
    assert cache.get("k", 1) == 12345 and cache.get("k", 2) is None
    cache.drop("k")
    assert "k" not in cache and buffer == bytearray(32)
    assert "12345" not in repr(cache)

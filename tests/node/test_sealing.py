"""node/sealing.py and node/identity.py with real tokens: round trip across a process
restart, and every refusal (tampered, copied from another node / key, unknown
version or mechanism) typed, with files and token objects unchanged."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.hsm import HsmCore
from node.identity import (
    IdentityError,
    generate_identity,
    load_identity,
    seal_identity,
    sealed_paths,
)
from node.sealing import (
    BLOB_VERSION,
    IDENTITY_KEY_LABEL,
    MECH_AES256_GCM,
    IdentityContext,
    MalformedBlob,
    SealedBlobMisplaced,
    SealedBlobTampered,
    SealError,
    SealKeyUnavailable,
    ShareContext,
    UnknownBlobVersion,
    UnknownMechanism,
    build_aad,
    parse_blob,
    seal,
    unseal,
)
from protocol.canonical import decode_canonical, encode_canonical
from protocol.rng import os_rng
from tests.node.hsm_helpers import SoftHsm, run_py, snapshot, token_objects, user_pin

CLUSTER = bytes(range(16))


def _node(softhsm: SoftHsm, label: str, data_dir: Path) -> HsmCore:
    core = softhsm.open(label)
    core.create_aes_key(IDENTITY_KEY_LABEL)
    seal_identity(core, generate_identity(label, os_rng), label, data_dir)
    return core


def test_round_trip_across_a_process_restart(softhsm: SoftHsm, tmp_path: Path) -> None:
    core = softhsm.open("node0")
    core.create_aes_key(IDENTITY_KEY_LABEL)
    identity = generate_identity("node0", os_rng)
    public = seal_identity(core, identity, "node0", tmp_path)
    share_ctx = ShareContext(CLUSTER, "key-1", 3, 2)
    core.create_aes_key(share_ctx.seal_key_label)
    share = os_rng(32)
    (tmp_path / "share.sealed").write_bytes(seal(core, share_ctx, share))
    softhsm.close_all()  # this process lets go of the token; a new process opens it
    code = f"""
import json
from pathlib import Path
from node.hsm import HsmCore, SOFTHSM_MODULE
from node.identity import load_identity
from node.sealing import ShareContext, unseal
core = HsmCore.open(SOFTHSM_MODULE, "node0", {user_pin("node0")!r},
                    softhsm2_conf=Path({str(softhsm.conf)!r}))
ident = load_identity(core, "node0", "node0", Path({str(tmp_path)!r}))
blob = Path({str(tmp_path / "share.sealed")!r}).read_bytes()
share = unseal(core, ShareContext(bytes(range(16)), "key-1", 3, 2), blob)
print(json.dumps({{"noise": ident.noise_private_key.hex(), "ed": ident.ed25519_seed.hex(),
                  "share": share.hex()}}))
"""
    result = run_py(code, softhsm.env())
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["noise"] == identity.noise_private_key.hex()
    assert out["ed"] == identity.ed25519_seed.hex()
    assert out["share"] == share.hex()
    assert public == identity.public


def test_blob_layout_is_as_documented(softhsm: SoftHsm) -> None:
    core = softhsm.open("node0")
    ctx = ShareContext(CLUSTER, "k", 1, 0)
    core.create_aes_key(ctx.seal_key_label)
    blob = seal(core, ctx, bytes(32))
    version, mech, hlen = struct.unpack(">BBH", blob[:4])
    assert (version, mech) == (1, 1)
    header = decode_canonical(blob[4 : 4 + hlen])
    assert header == {
        "kind": "share",
        "context": {"cluster": CLUSTER, "keyId": "k", "nodeIndex": 1, "epoch": 0},
    }
    assert blob[4 + hlen] == 12  # IV length
    assert len(blob) == 4 + hlen + 1 + 12 + 32 + 16
    # the AAD binds exactly DESIGN's fields plus blob version and mechanism
    iv = blob[5 + hlen : 17 + hlen]
    aad = encode_canonical(
        [
            "tkms/v1/sealed-blob",
            1,
            1,
            "share",
            {"cluster": CLUSTER, "keyId": "k", "nodeIndex": 1, "epoch": 0},
        ]
    )
    assert build_aad(BLOB_VERSION, MECH_AES256_GCM, ctx) == aad
    assert core.aes_gcm_decrypt(ctx.seal_key_label, iv, blob[17 + hlen :], aad) == bytes(32)


def _state(softhsm: SoftHsm, *dirs: Path) -> tuple[dict[str, bytes], list[list[str]]]:
    return snapshot(softhsm.base, *dirs), [token_objects(softhsm, lb) for lb in softhsm.labels]


def test_identity_copied_from_another_node_is_named(softhsm: SoftHsm, tmp_path: Path) -> None:
    d0, d1 = tmp_path / "n0", tmp_path / "n1"
    core0, core1 = _node(softhsm, "node0", d0), _node(softhsm, "node1", d1)
    for src, dst in zip(sealed_paths(d0), sealed_paths(d1), strict=True):
        dst.write_bytes(src.read_bytes())
    before = _state(softhsm, d0, d1)
    with pytest.raises(SealedBlobMisplaced) as info:
        load_identity(core1, "node1", "node1", d1)
    assert info.value.field == "node"
    assert "belongs to another node" in str(info.value) and "'node0'" in str(info.value)
    # node0's token cannot open it under node1's name either (AAD binds the name)
    with pytest.raises(SealedBlobMisplaced):
        load_identity(core0, "node1", "node0", d1)
    assert _state(softhsm, d0, d1) == before


def test_header_edited_to_match_is_still_refused(softhsm: SoftHsm, tmp_path: Path) -> None:
    d0 = tmp_path / "n0"
    core0 = _node(softhsm, "node0", d0)
    noise_path, _ = sealed_paths(d0)
    blob = noise_path.read_bytes()
    hdr = parse_blob(blob)
    forged_ctx = IdentityContext(node="node9", token_label="node0", purpose="noise-x25519")
    header = encode_canonical({"kind": "identity", "context": forged_ctx.fields()})
    forged = struct.pack(">BBH", 1, 1, len(header)) + header + bytes([12]) + hdr.iv + hdr.body
    before = _state(softhsm, d0)
    with pytest.raises(SealedBlobTampered, match="failed authentication"):
        unseal(core0, forged_ctx, forged)
    assert _state(softhsm, d0) == before


def test_tampered_files_are_refused(softhsm: SoftHsm, tmp_path: Path) -> None:
    d0 = tmp_path / "n0"
    core0 = _node(softhsm, "node0", d0)
    _, ed_path = sealed_paths(d0)
    good = ed_path.read_bytes()
    for pos in (len(good) - 1, len(good) - 20, len(good) - 40):
        ed_path.write_bytes(good[:pos] + bytes([good[pos] ^ 0x01]) + good[pos + 1 :])
        before = _state(softhsm, d0)
        with pytest.raises(SealedBlobTampered):
            load_identity(core0, "node0", "node0", d0)
        assert _state(softhsm, d0) == before
    ed_path.write_bytes(good[:-5])  # truncated: still a tag mismatch
    with pytest.raises(SealedBlobTampered):
        load_identity(core0, "node0", "node0", d0)
    ed_path.write_bytes(good)
    identity = load_identity(core0, "node0", "node0", d0)
    # identity.json swapped for another node's public keys
    (d0 / "identity.json").write_text(
        json.dumps(generate_identity("node0", os_rng).public.to_json())
    )
    with pytest.raises(IdentityError, match="does not match the sealed identity"):
        load_identity(core0, "node0", "node0", d0)
    assert "hidden" in repr(identity)
    assert identity.noise_private_key.hex() not in repr(identity)
    assert identity.ed25519_seed.hex() not in repr(identity)


def test_share_copied_from_another_key_node_or_epoch(softhsm: SoftHsm) -> None:
    core = softhsm.open("node0")
    a = ShareContext(CLUSTER, "key-a", 1, 1)
    core.create_aes_key(a.seal_key_label)
    blob = seal(core, a, os_rng(32))
    cases = {
        "keyId": (ShareContext(CLUSTER, "key-b", 1, 1), "another key id"),
        "nodeIndex": (ShareContext(CLUSTER, "key-a", 2, 1), "another node"),
        "epoch": (ShareContext(CLUSTER, "key-a", 1, 2), "another epoch"),
        "cluster": (ShareContext(bytes(16), "key-a", 1, 1), "another cluster"),
    }
    for name, (ctx, words) in cases.items():
        with pytest.raises(SealedBlobMisplaced) as info:
            unseal(core, ctx, blob)
        assert info.value.field == name
        assert words in str(info.value)
    with pytest.raises(SealedBlobMisplaced, match="holds a 'share' secret"):
        unseal(core, IdentityContext("node0", "node0", "ed25519"), blob)


def test_unknown_version_and_mechanism(softhsm: SoftHsm) -> None:
    core = softhsm.open("node0")
    ctx = ShareContext(CLUSTER, "k", 1, 1)
    core.create_aes_key(ctx.seal_key_label)
    blob = seal(core, ctx, os_rng(32))
    before = _state(softhsm)
    for version in (0, 2, 255):
        with pytest.raises(UnknownBlobVersion, match=f"version {version} is not supported"):
            unseal(core, ctx, bytes([version]) + blob[1:])
    with pytest.raises(UnknownMechanism, match="unknown mechanism id 7"):
        unseal(core, ctx, blob[:1] + bytes([7]) + blob[2:])
    with pytest.raises(UnknownMechanism):
        seal(core, ctx, b"x", mechanism=9)
    assert _state(softhsm) == before
    core.destroy_key(ctx.seal_key_label)
    with pytest.raises(SealKeyUnavailable, match="not in this token"):
        unseal(core, ctx, blob)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_blobs_raise_only_typed_errors(data: bytes) -> None:
    try:
        header = parse_blob(data)
    except SealError:
        return
    assert header.version == BLOB_VERSION and header.mechanism == MECH_AES256_GCM


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=80))
def test_framing_errors_are_typed(tail: bytes) -> None:
    header = encode_canonical({"kind": "share", "context": {}})
    blob = struct.pack(">BBH", 1, 1, len(header)) + header + tail
    try:
        parsed = parse_blob(blob)
    except MalformedBlob:
        assert tail[0] > len(tail) - 1
    else:
        assert parsed.iv == tail[1 : 1 + tail[0]]
        assert parsed.body == tail[1 + tail[0] :]

"""Key import, sans-IO: the importer's split and bundle, every public check a node
makes, its share check, the commit certificate and the offline transcript check.
Public keys are cross-checked against py_ecc (the oracle) and the vectors; t shares
interpolate to the secret, t-1 do not; every tampering is named."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from py_ecc import optimized_bn128 as ob

from protocol.bn254 import R, g1_mul_generator
from protocol.commit import (
    DKG_PURPOSE,
    IMPORT_PURPOSE,
    certificate_problem,
    make_certificate,
    sign_commitment,
)
from protocol.dkg.crypto import x25519_keypair
from protocol.encoding import g1_to_bytes, g2_to_bytes
from protocol.errors import DecodeError, InvalidScalar
from protocol.import_json import bundle_from_json, bundle_to_json
from protocol.import_split import check_opens, seal_bundle, split_key
from protocol.key_import import (
    ImportBundle,
    ImportOpen,
    ImportRejected,
    ImportSignature,
    ImportTranscript,
    VerifiedImport,
    check_bundle,
    is_import_transcript,
    open_share,
    verify_import_transcript,
)
from protocol.manifest import Manifest, NodeEntry
from protocol.rng import seeded_rng
from protocol.threshold import interpolate_at_zero

N = 4
T = 3


class Nodes:
    """N nodes' Ed25519 keys (in a manifest) and their per-import X25519 keys."""

    def __init__(self, seed: bytes = b"import-nodes") -> None:
        self.rng = seeded_rng(seed)
        self.signing = {i: SigningKey(self.rng(32)) for i in range(1, N + 1)}
        self.manifest = Manifest(
            cluster_id=self.rng(16),
            nodes=tuple(
                NodeEntry(i, f"n{i}", f"127.0.0.1:{9000 + i}", self.rng(32), bytes(k.verify_key))
                for i, k in self.signing.items()
            ),
            coordinators=(),
        )
        self.enc: dict[int, tuple[bytes, bytes]] = {}

    def opens(self, key_id: str = "k") -> list[ImportOpen]:
        out = []
        for i, key in self.signing.items():
            self.enc[i] = x25519_keypair(self.rng)
            out.append(
                ImportOpen(
                    cluster=self.manifest.cluster_id,
                    key_id=key_id,
                    epoch=0,
                    sender=i,
                    nonce=self.rng(32),
                    enc_key=self.enc[i][1],
                ).signed_by(key)
            )
        return out

    def bundle(self, sk: int, key_id: str = "k", t: int = T) -> ImportBundle:
        opens = check_opens(
            self.opens(key_id), manifest=self.manifest, key_id=key_id, epoch=0, min_holders=N
        )
        split = split_key(
            sk, g1_mul_generator(sk), threshold=t, indices=range(1, N + 1), rng=self.rng
        )
        try:
            return seal_bundle(
                split, opens, manifest=self.manifest, key_id=key_id, epoch=0, rng=self.rng
            )
        finally:
            split.forget()
            assert "shares=<hidden>" in repr(split) and split.indices == ()

    def share(self, verified: VerifiedImport, j: int) -> int:
        secret, public = self.enc[j]
        return open_share(verified, index=j, enc_secret=secret, enc_key=public)

    def certificate(self, verified: VerifiedImport, purpose: str = IMPORT_PURPOSE) -> Any:
        return make_certificate(
            verified.import_id,
            verified.transcript_hash,
            {
                j: sign_commitment(k, purpose, verified.import_id, j, verified.transcript_hash)
                for j, k in self.signing.items()
            },
        )


@pytest.fixture
def nodes() -> Nodes:
    return Nodes()


def _oracle_g1(sk: int) -> bytes:
    x, y = ob.normalize(ob.multiply(ob.G1, sk))
    return int(x).to_bytes(32, "big") + int(y).to_bytes(32, "big")


def test_every_vector_key_splits_into_shares_that_rebuild_it(
    nodes: Nodes, eigen_vectors: dict[str, Any]
) -> None:
    for v in eigen_vectors["signatureVectors"][:3]:
        sk = int(v["privateKey"]["dec"])
        bundle = ImportBundle.decode(nodes.bundle(sk).encode())
        verified = check_bundle(bundle, nodes.manifest)
        assert g1_to_bytes(verified.pubkey_g1) == _oracle_g1(sk)
        assert "0x" + g2_to_bytes(verified.pubkey_g2).hex() == v["encodings"]["pubkeyG2Eip197"]
        shares = {j: nodes.share(verified, j) for j in bundle.holders}
        for j, s in shares.items():
            assert g1_mul_generator(s) == verified.public_shares[j]
        assert interpolate_at_zero({j: shares[j] for j in (1, 3, 4)}) == sk
        assert interpolate_at_zero({j: shares[j] for j in (2, 4)}) != sk


def test_split_refuses_a_public_key_that_is_not_the_secrets(nodes: Nodes) -> None:
    with pytest.raises(ImportRejected, match="pubkeyG1"):
        split_key(5, g1_mul_generator(6), threshold=2, indices=[1, 2], rng=nodes.rng)
    for bad in (0, R, R + 1):
        with pytest.raises(InvalidScalar):
            split_key(bad, g1_mul_generator(1), threshold=2, indices=[1, 2], rng=nodes.rng)
    with pytest.raises(ImportRejected, match="threshold"):
        split_key(5, g1_mul_generator(5), threshold=3, indices=[1, 2], rng=nodes.rng)


def test_two_imports_of_one_key_use_fresh_polynomials(nodes: Nodes) -> None:
    a, b = nodes.bundle(77), nodes.bundle(77)
    assert a.commitments[0] == b.commitments[0]
    assert a.commitments[1:] != b.commitments[1:] and a.shares != b.shares


def _tampered(bundle: ImportBundle, what: str, other: ImportBundle) -> ImportBundle:
    if what == "cluster":
        opens = tuple(dataclasses.replace(o, cluster=bytes(16)) for o in bundle.opens)
        return dataclasses.replace(bundle, cluster=bytes(16), opens=opens)
    if what == "open-signature":
        first = dataclasses.replace(bundle.opens[0], nonce=bytes(32))
        return dataclasses.replace(bundle, opens=(first, *bundle.opens[1:]))
    if what == "commitment":
        return dataclasses.replace(
            bundle, commitments=(other.commitments[0], *bundle.commitments[1:])
        )
    if what == "g2":
        return dataclasses.replace(bundle, pubkey_g2=other.pubkey_g2)
    if what == "off-curve":
        return dataclasses.replace(
            bundle, commitments=(bytes(63) + b"\x05", *bundle.commitments[1:])
        )
    raise AssertionError(what)


@pytest.mark.parametrize(
    ("what", "field"),
    [
        ("cluster", "bundle.cluster"),
        ("open-signature", "bundle.opens[0]"),
        ("commitment", "bundle.pubkey_g2"),
        ("g2", "bundle.pubkey_g2"),
        ("off-curve", "bundle.commitments[0]"),
    ],
)
def test_public_checks_name_the_tampered_field(nodes: Nodes, what: str, field: str) -> None:
    bundle, other = nodes.bundle(1234), nodes.bundle(999)
    with pytest.raises(ImportRejected) as err:
        check_bundle(_tampered(bundle, what, other), nodes.manifest)
    assert err.value.field == field


def test_a_share_for_another_node_or_another_import_is_refused(nodes: Nodes) -> None:
    bundle = nodes.bundle(4321)
    shares = dict(bundle.shares)
    swapped = dataclasses.replace(bundle, shares=tuple((j, shares[1]) for j in bundle.holders))
    verified = check_bundle(swapped, nodes.manifest)
    assert nodes.share(verified, 1) > 0
    with pytest.raises(ImportRejected, match="does not authenticate"):
        nodes.share(verified, 2)  # AAD binds the recipient
    # A share consistent in decryption but not with the commitments: another polynomial.
    other = nodes.bundle(4321)
    mixed = dataclasses.replace(other, commitments=(other.commitments[0], *bundle.commitments[1:]))
    with pytest.raises(ImportRejected, match="commitments"):
        nodes.share(check_bundle(mixed, nodes.manifest), 2)


def test_opens_are_checked_against_the_manifest(nodes: Nodes) -> None:
    opens = nodes.opens()
    forged = dataclasses.replace(opens[1], enc_key=opens[0].enc_key)  # relay swaps a key
    for bad, says in (
        ([opens[0], forged, *opens[2:]], "invalid signature"),
        ([*opens, opens[0]], "two opens"),
        (opens[:2], "need 4"),
    ):
        with pytest.raises(ImportRejected, match=says):
            check_opens(bad, manifest=nodes.manifest, key_id="k", epoch=0, min_holders=N)
    with pytest.raises(ImportRejected, match="another key"):
        check_opens(opens, manifest=nodes.manifest, key_id="other", epoch=0, min_holders=N)


def test_the_commit_needs_every_holders_import_signature(nodes: Nodes) -> None:
    bundle = nodes.bundle(55)
    verified = check_bundle(bundle, nodes.manifest)
    cert = nodes.certificate(verified)

    def problem(c: Any, **kw: Any) -> str | None:
        args = {
            "purpose": IMPORT_PURPOSE,
            "ceremony": verified.import_id,
            "transcript_hash": verified.transcript_hash,
            "holders": bundle.holders,
            "manifest": nodes.manifest,
        }
        return certificate_problem(c, **{**args, **kw})

    assert problem(cert) is None
    short = dataclasses.replace(cert, signatures=cert.signatures[:-1])
    assert "lacks" in (problem(short) or "")
    assert problem(short, required=False, min_holders=3) is None  # the DKG's rule
    assert "another transcript" in (problem(cert, transcript_hash=bytes(32)) or "")
    assert "another ceremony" in (problem(cert, ceremony=bytes(32)) or "")
    assert "invalid signature" in (problem(nodes.certificate(verified, DKG_PURPOSE)) or "")
    swapped = dataclasses.replace(
        cert, signatures=((1, cert.signatures[1][1]), *cert.signatures[1:])
    )
    assert "node 1" in (problem(swapped) or "")
    sig = ImportSignature(
        ceremony=verified.import_id, sender=2, transcript_hash=verified.transcript_hash
    ).signed_by(nodes.signing[2])
    assert sig.sig == dict(cert.signatures)[2]  # the node's message carries the same signature


def test_transcript_round_trips_and_verifies_offline(nodes: Nodes) -> None:
    bundle = nodes.bundle(31337)
    verified = check_bundle(bundle, nodes.manifest)
    transcript = ImportTranscript(bundle, nodes.certificate(verified))
    text = json.dumps(transcript.to_json()).encode()
    for data in (transcript.encode(), text):
        assert is_import_transcript(data)
        check = verify_import_transcript(data, nodes.manifest)
        assert check.valid and check.holders == (1, 2, 3, 4), check.reason
        assert g1_to_bytes(check.pubkey_g1) == _oracle_g1(31337)  # type: ignore[arg-type]
    doc = transcript.to_json()
    doc["threshold"] = 2
    assert not verify_import_transcript(json.dumps(doc).encode(), nodes.manifest).valid
    short = ImportTranscript(bundle, dataclasses.replace(transcript.commit, signatures=()))
    assert "lacks" in verify_import_transcript(short.encode(), nodes.manifest).reason
    stranger = Nodes(b"another cluster")
    assert not verify_import_transcript(transcript.encode(), stranger.manifest).valid
    assert not is_import_transcript(b"{}") and not is_import_transcript(b"\x81\xa1a\x01")


def test_json_body_round_trips_exactly(nodes: Nodes) -> None:
    bundle = nodes.bundle(808)
    body = bundle_to_json(bundle, min_holders=4)
    assert body["minHolders"] == 4
    again = bundle_from_json(json.loads(json.dumps(body)))
    assert again == bundle and again.transcript_hash() == bundle.transcript_hash()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_malformed_bundle_bytes_raise_decode_errors_only(nodes: Nodes, data: st.DataObject) -> None:
    raw = bytearray(BUNDLE.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(raw)))
    try:
        decoded = ImportBundle.decode(bytes(raw[:cut]))
    except DecodeError:
        return
    assert decoded.encode() == bytes(raw[:cut])  # anything accepted is canonical


BUNDLE = Nodes(b"hypothesis").bundle(99)

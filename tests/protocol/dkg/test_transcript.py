"""``verify_transcript``: an honest transcript verifies offline against the
manifest, with no secret; one changed byte anywhere makes it invalid."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.dkg import (
    RelayFault,
    Transcript,
    committed_transcript,
    load_transcript,
    verify_transcript,
)
from tests.protocol.dkg.harness import KEY_ID, Run, make_manifest


def transcript_of(run: Run) -> bytes:
    assert run.committed is not None
    return run.committed.result.transcript


def test_an_honest_transcript_verifies(honest_run: Run) -> None:
    data = transcript_of(honest_run)
    check = verify_transcript(data, honest_run.manifest)
    assert check.valid, check.reason
    assert check.key_id == KEY_ID and check.qual == (1, 2, 3, 4)
    assert check.pubkey_g1 == honest_run.committed.result.info.pubkey_g1  # type: ignore[union-attr]
    assert check.reason == ""


def test_a_transcript_with_a_justification_verifies(complaint_run: Run) -> None:
    data = transcript_of(complaint_run)
    body = Transcript.decode(data).body
    assert [j.sender for j in body.justifications] == [1]
    assert [c.against for c in body.complaints if c.against] == [(1,)]
    assert verify_transcript(data, complaint_run.manifest).valid


def test_the_json_file_round_trips_and_its_summary_is_checked(honest_run: Run) -> None:
    transcript = Transcript.decode(transcript_of(honest_run))
    text = json.dumps(transcript.to_json())
    assert load_transcript(text.encode()) == transcript
    assert verify_transcript(text.encode(), honest_run.manifest).valid
    doc = transcript.to_json()
    doc["qual"] = [1, 2, 3]
    check = verify_transcript(json.dumps(doc).encode(), honest_run.manifest)
    assert not check.valid and "summary" in check.reason


def _flip(data: bytes, needle: bytes, offset: int = 0) -> bytes:
    i = data.index(needle) + offset
    return data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :]


def test_one_changed_byte_in_a_signature_a_commitment_or_qual_is_rejected(honest_run: Run) -> None:
    data = transcript_of(honest_run)
    transcript = Transcript.decode(data)
    bundle = transcript.body.bundles[2]
    qual = b"\xa4qual\x94\x01\x02\x03\x04"
    cases = {
        "bundle signature": _flip(data, bundle.sig, 5),
        "commitment": _flip(data, bundle.commitments[1], 40),
        "qual": _flip(data, qual, len(qual) - 1),  # QUAL [1, 2, 3, 5]
        "echo signature": _flip(data, transcript.body.echoes[0].sig, 0),
        "holder signature": _flip(data, transcript.commit.signatures[3][1], 63),
        "transcript hash": _flip(data, b"\xaftranscript_hash\xc4\x20", 20),
    }
    for name, changed in cases.items():
        assert changed != data
        check = verify_transcript(changed, honest_run.manifest)
        assert not check.valid, name
        assert check.reason, name


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(position=st.floats(min_value=0, max_value=1, exclude_max=True), bit=st.integers(0, 7))
def test_any_single_bit_flip_is_rejected(honest_run: Run, position: float, bit: int) -> None:
    data = transcript_of(honest_run)
    i = int(position * len(data))
    changed = data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :]
    assert not verify_transcript(changed, honest_run.manifest).valid


def test_a_transcript_checked_against_another_manifest_is_rejected(honest_run: Run) -> None:
    data = transcript_of(honest_run)
    other, _ = make_manifest(4, seed=b"another cluster")
    check = verify_transcript(data, other)
    assert not check.valid and "another cluster" in check.reason
    same_cluster = type(other)(
        cluster_id=honest_run.manifest.cluster_id, nodes=other.nodes, coordinators=()
    )
    check = verify_transcript(data, same_cluster)
    assert not check.valid and "signature" in check.reason


@pytest.mark.parametrize(
    "garbage", [b"", b"\x00" * 40, b"{", b'{"format": 1}', b"\x81\xa4kind\xa1x"]
)
def test_garbage_is_an_invalid_check_not_an_exception(honest_run: Run, garbage: bytes) -> None:
    check = verify_transcript(garbage, honest_run.manifest)
    assert not check.valid and check.key_id is None and check.reason.startswith("malformed")


def test_only_the_disputed_share_is_ever_revealed(complaint_run: Run) -> None:
    # Node 3 complained (falsely) about dealer 1, so f_1(3) is public from then on;
    # no other s_ij = f_i(j), no coefficient and no final share is in the transcript.
    data = transcript_of(complaint_run)
    revealed = [
        (m.sender, j) for m in Transcript.decode(data).body.justifications for j, _ in m.shares
    ]
    assert revealed == [(1, 3)]
    for i, f in complaint_run.polynomials.items():
        for j in complaint_run.nodes:
            present = f.evaluate(j).to_bytes(32, "big") in data
            assert present == ((i, j) in revealed), (i, j)
        assert not any(a.to_bytes(32, "big") in data for a in f.coeffs)
    for node in complaint_run.nodes.values():
        assert node.pending is not None
        assert node.pending.share.to_bytes(32, "big") not in data


def test_a_restarted_node_can_check_the_commit_from_the_body_it_kept(honest_run: Run) -> None:
    node = honest_run.nodes[2]
    assert node.pending is not None and node.active is not None
    cert = Transcript.decode(node.active.transcript).commit
    restored = committed_transcript(node.pending.transcript_body, cert, honest_run.manifest)
    assert restored.encode() == node.active.transcript and 2 in restored.commit.holders
    with pytest.raises(RelayFault, match="another transcript"):
        committed_transcript(
            node.pending.transcript_body,
            dataclasses.replace(cert, transcript_hash=bytes(32)),
            honest_run.manifest,
        )

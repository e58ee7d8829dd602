"""The hash-chained audit log: tamper detection, checkpoints, torn tails, the allowlist."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from protocol.audit import (
    AuditChain,
    AuditLogCorrupt,
    AuditRecordError,
    Checkpoint,
    decode_line,
    parse_checkpoints,
    resume_chain,
    verify_log,
)
from protocol.canonical import encode_canonical
from protocol.errors import DecodeError, Fault

KEY = SigningKey(hashlib.sha256(b"audit test key").digest())
PUB = KEY.verify_key.encode()
OTHER_KEY = SigningKey(hashlib.sha256(b"another node").digest())


def build(n: int, log_id: str = "node1") -> tuple[bytes, AuditChain, list[bytes]]:
    """A log of n records; returns its bytes, the writer state and each record's hash."""
    chain = AuditChain(log_id)
    data = b""
    hashes = []
    for i in range(n):
        pending = chain.prepare(
            time=1_700_000_000_000 + i,
            actor=log_id,
            event="sign",
            outcome="ok" if i % 3 else "refused",
            client=f"client{i % 2}",
            key_id="operator-key",
            msg_hash=hashlib.sha256(i.to_bytes(4, "big")).digest(),
            signers=["node1", "node2", "node3"],
            extra={"batch_size": i, "reason": "usage limit" if i % 3 == 0 else ""},
        )
        data += pending.line
        chain.commit(pending)
        hashes.append(pending.hash)
    return data, chain, hashes


def lines_of(data: bytes) -> list[bytes]:
    return data.split(b"\n")[:-1]


def join(lines: list[bytes]) -> bytes:
    return b"".join(ln + b"\n" for ln in lines)


def cp(seq: int, head: bytes, key: SigningKey = KEY, log_id: str = "node1") -> Checkpoint:
    return Checkpoint.sign(key, log_id, seq, head)


def reencode(line: bytes, **changes: object) -> bytes:
    """The same record with some fields changed, validly encoded (prev untouched)."""
    rec = decode_line(line)
    fields = rec.to_fields()
    fields.update(changes)
    return base64.b64encode(encode_canonical(fields))


def test_valid_log_with_head_checkpoint_is_fully_anchored() -> None:
    data, chain, hashes = build(6)
    report = verify_log(data, public_key=PUB, checkpoints=[chain.checkpoint(KEY)])
    assert report.valid and report.reason is None and report.first_bad_seq is None
    assert report.records == 6
    assert report.head == hashes[-1] == chain.head
    assert report.unanchored_tail == 0 and report.anchored_seq == 5
    assert report.log_id == "node1" and report.torn_tail_bytes == 0
    assert report.checkpoints_used == 1


def test_without_checkpoints_every_record_is_unanchored() -> None:
    data, _, _ = build(4)
    report = verify_log(data, public_key=PUB)
    assert report.valid and report.unanchored_tail == 4 and report.anchored_seq is None


def test_a_checkpoint_in_the_middle_leaves_the_tail_unanchored() -> None:
    data, _, hashes = build(7)
    report = verify_log(data, public_key=PUB, checkpoints=[cp(1, hashes[1]), cp(3, hashes[3])])
    assert report.valid and report.anchored_seq == 3 and report.unanchored_tail == 3


def test_empty_log() -> None:
    report = verify_log(b"", public_key=PUB)
    assert report.valid and report.records == 0 and report.head is None
    assert report.unanchored_tail == 0


@pytest.mark.parametrize("k", [0, 2, 5])
def test_edited_record_is_reported_at_its_seq(k: int) -> None:
    data, _, _ = build(7)
    lines = lines_of(data)
    lines[k] = reencode(lines[k], outcome="ok" if b"refused" in base64.b64decode(lines[k]) else "x")
    report = verify_log(join(lines), public_key=PUB)
    assert not report.valid
    assert report.first_bad_seq == k
    assert report.reason is not None and "chain broken" in report.reason


def test_byte_flip_in_a_record_is_reported_at_its_seq() -> None:
    data, _, _ = build(5)
    lines = lines_of(data)
    raw = bytearray(base64.b64decode(lines[3]))
    raw[-1] ^= 1  # the time field's last byte
    lines[3] = base64.b64encode(bytes(raw))
    report = verify_log(join(lines), public_key=PUB)
    assert not report.valid and report.first_bad_seq == 3


def test_edited_last_record_is_caught_only_by_a_checkpoint() -> None:
    data, _, hashes = build(5)
    lines = lines_of(data)
    lines[4] = reencode(lines[4], outcome="forged")
    tampered = join(lines)
    # Without a checkpoint covering it, the last record is the unanchored tail.
    loose = verify_log(tampered, public_key=PUB, checkpoints=[cp(3, hashes[3])])
    assert loose.valid and loose.unanchored_tail == 1
    every = [cp(i, h) for i, h in enumerate(hashes)]
    report = verify_log(tampered, public_key=PUB, checkpoints=every)
    assert not report.valid and report.first_bad_seq == 4
    assert report.reason is not None and "another head" in report.reason


@pytest.mark.parametrize("k", [0, 3, 5])
def test_removed_record_is_reported_at_its_seq(k: int) -> None:
    data, _, _ = build(7)
    lines = lines_of(data)
    del lines[k]
    report = verify_log(join(lines), public_key=PUB)
    assert not report.valid and report.first_bad_seq == k
    assert report.reason is not None and f"expected seq {k}" in report.reason


def test_removed_last_record_is_truncation_when_checkpointed() -> None:
    data, chain, _ = build(5)
    lines = lines_of(data)
    report = verify_log(join(lines[:-1]), public_key=PUB, checkpoints=[chain.checkpoint(KEY)])
    assert not report.valid and report.first_bad_seq == 4
    assert report.reason is not None and report.reason.startswith("truncated")


@pytest.mark.parametrize("k", [0, 2, 5])
def test_reordered_records_are_reported_at_the_first_swapped_seq(k: int) -> None:
    data, _, _ = build(7)
    lines = lines_of(data)
    lines[k], lines[k + 1] = lines[k + 1], lines[k]
    report = verify_log(join(lines), public_key=PUB)
    assert not report.valid and report.first_bad_seq == k


@pytest.mark.parametrize("k", [0, 3, 6])
def test_duplicated_record_is_reported_where_it_stands(k: int) -> None:
    data, _, _ = build(7)
    lines = lines_of(data)
    lines.insert(k + 1, lines[k])
    report = verify_log(join(lines), public_key=PUB)
    assert not report.valid and report.first_bad_seq == k + 1
    assert report.reason is not None and f"seq {k} appears again" in report.reason


def test_truncated_log_is_detected_by_a_peer_checkpoint() -> None:
    data, _, hashes = build(8)
    cut = join(lines_of(data)[:4])
    report = verify_log(cut, public_key=PUB, checkpoints=[cp(7, hashes[7])])
    assert not report.valid and report.first_bad_seq == 4
    assert report.reason == "truncated: a checkpoint anchors seq 7 but the log ends at seq 3"
    emptied = verify_log(b"", public_key=PUB, checkpoints=[cp(7, hashes[7])])
    assert not emptied.valid and emptied.first_bad_seq == 0
    # With no checkpoint beyond the cut, truncation cannot be seen: that is the tail.
    assert verify_log(cut, public_key=PUB, checkpoints=[cp(2, hashes[2])]).valid


def test_rewritten_chain_contradicts_an_older_checkpoint() -> None:
    data, _, hashes = build(6)
    # Someone with write access rebuilds a consistent chain with other content.
    forged = AuditChain("node1")
    out = b""
    for i in range(6):
        p = forged.prepare(time=i, actor="node1", event="sign", outcome="ok")
        out += p.line
        forged.commit(p)
    report = verify_log(out, public_key=PUB, checkpoints=[cp(4, hashes[4])])
    assert not report.valid and report.first_bad_seq == 0
    # A matching older checkpoint narrows where the rewrite starts.
    lines = lines_of(data)[:3]
    chain = AuditChain("node1", next_seq=3, head=hashes[2])
    tail = b""
    for i in range(3):
        p = chain.prepare(time=99 + i, actor="node1", event="sign", outcome="ok")
        tail += p.line
        chain.commit(p)
    report = verify_log(
        join(lines) + tail, public_key=PUB, checkpoints=[cp(1, hashes[1]), cp(4, hashes[4])]
    )
    assert not report.valid and report.first_bad_seq == 2


def test_torn_final_line_is_not_tampering() -> None:
    data, _, hashes = build(5)
    torn = data + lines_of(data)[0][:17]  # a crash in the middle of the next write
    report = verify_log(torn, public_key=PUB, checkpoints=[cp(4, hashes[4])])
    assert report.valid and report.records == 5 and report.torn_tail_bytes == 17
    assert report.unanchored_tail == 0
    # A torn last record that a checkpoint covered cannot come from a crash.
    lost = data[:-1]
    report = verify_log(lost, public_key=PUB, checkpoints=[cp(4, hashes[4])])
    assert not report.valid and report.torn_tail_bytes > 0 and report.first_bad_seq == 4
    # A broken line in the middle is tampering, never a torn tail.
    lines = lines_of(data)
    lines[2] = lines[2][:17]
    report = verify_log(join(lines), public_key=PUB)
    assert not report.valid and report.first_bad_seq == 2 and report.torn_tail_bytes == 0


def test_forged_or_foreign_checkpoints_are_rejected_and_anchor_nothing() -> None:
    data, _, hashes = build(5)
    good = cp(4, hashes[4])
    forged = Checkpoint(good.log_id, good.seq, good.head, bytes(64))
    bitflip = Checkpoint(good.log_id, good.seq, good.head, good.signature[:-1] + b"\x00")
    by_other_key = cp(4, hashes[4], key=OTHER_KEY)
    lie_other_key = cp(9, b"\x11" * 32, key=OTHER_KEY)  # would claim truncation
    report = verify_log(
        data, public_key=PUB, checkpoints=[forged, bitflip, by_other_key, lie_other_key]
    )
    assert report.valid and report.checkpoints_rejected == 4 and report.checkpoints_used == 0
    assert report.unanchored_tail == 5
    other_log = cp(9, b"\x11" * 32, log_id="node2")
    report = verify_log(data, public_key=PUB, checkpoints=[other_log, good])
    assert report.valid and report.checkpoints_other_logs == 1 and report.unanchored_tail == 0
    # Without the writer's key no checkpoint can be trusted.
    report = verify_log(data, public_key=None, checkpoints=[good])
    assert report.valid and report.checkpoints_rejected == 1 and report.unanchored_tail == 5


def test_record_spliced_from_another_log_is_detected() -> None:
    data, _, _ = build(4)
    other, _, _ = build(4, log_id="node2")
    lines = lines_of(data)
    lines[2] = lines_of(other)[2]
    report = verify_log(join(lines), public_key=PUB)
    assert not report.valid and report.first_bad_seq == 2


def test_non_canonical_base64_is_refused() -> None:
    data, _, _ = build(6)
    lines = lines_of(data)
    k = next(i for i, ln in enumerate(lines) if ln.endswith(b"="))
    line = lines[k]
    idx = line.index(b"=") - 1  # its low bits are padding: flipping one keeps the bytes
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    sibling = alphabet[alphabet.index(line[idx]) ^ 1]
    lines[k] = line[:idx] + bytes([sibling]) + line[idx + 1 :]
    assert base64.b64decode(lines[k]) == base64.b64decode(line)  # same bytes, other text
    report = verify_log(join(lines), public_key=PUB)
    assert not report.valid and report.first_bad_seq == k


# ------------------------------------------------------------------ the allowlist


def test_fields_outside_the_allowlist_are_refused() -> None:
    chain = AuditChain("node1")
    base = {"time": 1, "actor": "node1", "event": "sign", "outcome": "ok"}
    for extra in (
        {"share_value": 5},
        {"sk": 1},
        {"password": "hunter2"},
        {"client_secret": "x"},
        {"blob": b"\x00" * 32},
        {"nested": {"a": 1}},
        {"Bad-Key": 1},
        {"long": "x" * 1000},
    ):
        with pytest.raises(AuditRecordError) as exc:
            chain.prepare(**base, extra=extra)  # type: ignore[arg-type]
        assert exc.value.fault is Fault.LOCAL
    with pytest.raises(AuditRecordError):
        chain.prepare(**base, msg_hash=b"\x00" * 31)  # type: ignore[arg-type]
    with pytest.raises(AuditRecordError):
        chain.prepare(**base, signers=["node1", b"node2"])  # type: ignore[arg-type, list-item]
    with pytest.raises(AuditRecordError):
        chain.prepare(**base, signers="node1")  # type: ignore[arg-type]
    with pytest.raises(AuditRecordError):
        chain.prepare(time=-1, actor="node1", event="sign", outcome="ok")
    with pytest.raises(AuditRecordError):
        chain.prepare(time=1, actor="node1", event="Sign Now", outcome="ok")
    assert chain.next_seq == 0  # a refused record changes nothing
    # Reading side: a record map carrying an extra field is not a record.
    good = lines_of(build(1)[0])[0]
    fields = decode_line(good).to_fields()
    fields["share"] = 42
    with pytest.raises(DecodeError, match="outside the allowlist"):
        decode_line(base64.b64encode(encode_canonical(fields)))


def test_commit_refuses_a_stale_pending_record() -> None:
    chain = AuditChain("node1")
    first = chain.prepare(time=1, actor="node1", event="sign", outcome="ok")
    second = chain.prepare(time=2, actor="node1", event="sign", outcome="ok")
    chain.commit(first)
    with pytest.raises(AuditRecordError):
        chain.commit(second)
    assert chain.next_seq == 1


def test_resume_chain_continues_the_log_and_cuts_a_torn_tail() -> None:
    data, chain, _ = build(3)
    resumed, torn = resume_chain(data + b"abc", log_id="node1")
    assert torn == 3 and resumed.next_seq == 3 and resumed.head == chain.head
    p = resumed.prepare(time=5, actor="node1", event="sign", outcome="ok")
    assert verify_log(data + p.line, public_key=PUB).records == 4
    with pytest.raises(AuditLogCorrupt):
        resume_chain(data, log_id="node2")
    lines = lines_of(data)
    del lines[1]
    with pytest.raises(AuditLogCorrupt):
        resume_chain(join(lines), log_id="node1")
    empty, torn = resume_chain(b"", log_id="node7")
    assert empty.next_seq == 0 and torn == 0


def test_checkpoint_lines_round_trip_and_malformed_lines_are_typed_errors() -> None:
    _, chain, _ = build(2)
    c = chain.checkpoint(KEY)
    parsed = parse_checkpoints(c.to_line() + c.to_line() + b"tor")
    assert (
        parsed == [c, c]
        and parsed[0].verify(PUB)
        and not parsed[0].verify(OTHER_KEY.verify_key.encode())
    )
    with pytest.raises(DecodeError):
        parse_checkpoints(b"not base64!\n")
    with pytest.raises(DecodeError):
        parse_checkpoints(base64.b64encode(encode_canonical({"log": "x", "seq": 1})) + b"\n")
    with pytest.raises(AuditRecordError):
        AuditChain("node1").checkpoint(KEY)


# ------------------------------------------------------------------- hypothesis

BASE_DATA, BASE_CHAIN, _ = build(6)
BASE_CPS = [BASE_CHAIN.checkpoint(KEY)]


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    data = BASE_DATA
    kind = draw(st.sampled_from(["flip", "delete", "insert", "dup", "swap", "truncate", "line"]))
    if kind == "flip":
        i = draw(st.integers(0, len(data) - 1))
        bit = draw(st.integers(0, 7))
        return data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :]
    if kind == "delete":
        i = draw(st.integers(0, len(data) - 1))
        j = draw(st.integers(i + 1, min(len(data), i + 200)))
        return data[:i] + data[j:]
    if kind == "insert":
        i = draw(st.integers(0, len(data)))
        return data[:i] + draw(st.binary(min_size=1, max_size=40)) + data[i:]
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    lines = lines_of(data)
    i = draw(st.integers(0, len(lines) - 1))
    if kind == "dup":
        lines.insert(draw(st.integers(0, len(lines))), lines[i])
    elif kind == "swap":
        j = draw(st.integers(0, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
    else:
        lines[i] = base64.b64encode(draw(st.binary(min_size=1, max_size=300)))
    return join(lines)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations())
def test_random_mutations_are_never_valid_unless_unchanged_or_a_torn_tail(mutated: bytes) -> None:
    report = verify_log(mutated, public_key=PUB, checkpoints=BASE_CPS)
    if report.valid:
        assert mutated.startswith(BASE_DATA)
        assert b"\n" not in mutated[len(BASE_DATA) :]  # only a torn tail was added
        assert report.records == 6 and report.head == BASE_CHAIN.head

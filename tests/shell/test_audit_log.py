"""The audit-log shell the node and the coordinator share: durable appends, crash
recovery, refusal when unwritable."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trio
from nacl.signing import SigningKey

from protocol.audit import (
    AuditLogCorrupt,
    AuditLogUnavailable,
    AuditRecordError,
    decode_line,
    parse_checkpoints,
    verify_log,
)
from protocol.errors import VerificationError
from shell import audit_log
from shell.audit_log import AuditLogConfig, open_audit_log, open_checkpoint_store

ROOT = Path(__file__).resolve().parents[2]
KEY = SigningKey(hashlib.sha256(b"node1 identity").digest())
PUB = KEY.verify_key.encode()
PEER_KEY = SigningKey(hashlib.sha256(b"node2 identity").digest())


def config(path: Path, **kw: float) -> AuditLogConfig:
    return AuditLogConfig(path=path, log_id="cluster/node1", actor="node1", **kw)


def events(path: Path) -> list[str]:
    return [decode_line(ln).event for ln in path.read_bytes().split(b"\n")[:-1]]


async def test_appends_are_durable_chained_and_checkpointed(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    async with open_audit_log(config(path), signing_key=KEY) as log:
        rec = await log.append(
            event="sign",
            outcome="ok",
            client="avs-1",
            key_id="k1",
            msg_hash=b"\x01" * 32,
            signers=["node1", "node2"],
        )
        assert rec.seq == 1  # seq 0 is audit.open
        await log.append(event="sign", outcome="refused", client="avs-2", key_id="k1")
        cp = log.checkpoint()
        # Every append is on disk before it returns.
        on_disk = verify_log(path.read_bytes(), public_key=PUB, checkpoints=[cp])
        assert on_disk.valid and on_disk.records == 3 and on_disk.head == log.head
        assert on_disk.unanchored_tail == 0
    async with open_audit_log(config(path), signing_key=KEY) as log:
        assert log.next_seq == 4  # resumed after the three records and a new audit.open
    report = verify_log(path.read_bytes(), public_key=PUB, checkpoints=[cp])
    assert report.valid and report.records == 4 and report.unanchored_tail == 1
    assert events(path) == ["audit.open", "sign", "sign", "audit.open"]


async def test_concurrent_appends_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    async with open_audit_log(config(path)) as log, trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(lambda i=i: log.append(event="sign", outcome="ok", extra={"i": i}))
    report = verify_log(path.read_bytes(), public_key=None)
    assert report.valid and report.records == 21


async def test_torn_tail_after_a_crash_is_cut_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    async with open_audit_log(config(path)) as log:
        await log.append(event="sign", outcome="ok")
    intact = path.read_bytes()
    path.write_bytes(intact + intact[:33])  # a write cut short by a crash
    assert verify_log(path.read_bytes(), public_key=None).torn_tail_bytes == 33
    async with open_audit_log(config(path)) as log:
        pass
    assert path.read_bytes().startswith(intact)
    report = verify_log(path.read_bytes(), public_key=None)
    assert report.valid and report.torn_tail_bytes == 0
    assert events(path) == ["audit.open", "sign", "audit.torn_tail", "audit.open"]
    torn_rec = decode_line(path.read_bytes().split(b"\n")[2])
    assert torn_rec.extra == {"bytes": 33}


async def test_a_tampered_log_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    async with open_audit_log(config(path)) as log:
        for _ in range(3):
            await log.append(event="sign", outcome="ok")
    lines = path.read_bytes().split(b"\n")
    del lines[1]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(AuditLogCorrupt):
        async with open_audit_log(config(path)):
            pass
    other = AuditLogConfig(path=tmp_path / "x.log", log_id="cluster/node2", actor="node2")
    async with open_audit_log(other):
        pass
    with pytest.raises(AuditLogCorrupt):  # someone else's log
        async with open_audit_log(config(tmp_path / "x.log")):
            pass


async def test_a_device_that_cannot_be_written_refuses_the_open() -> None:
    with pytest.raises(AuditLogUnavailable):
        async with open_audit_log(config(Path("/dev/full"))):
            pass


async def test_records_outside_the_allowlist_write_nothing(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    async with open_audit_log(config(path)) as log:
        size = path.stat().st_size
        with pytest.raises(AuditRecordError):
            await log.append(event="sign", outcome="ok", extra={"share": 7})
        assert path.stat().st_size == size and log.next_seq == 1


async def test_failed_write_is_undone_and_a_stuck_one_poisons_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.log"
    real_append = audit_log._AppendFile.append

    def half_then_fail(self: audit_log._AppendFile, data: bytes) -> None:
        real_append(self, data[: len(data) // 2])  # partly written, then the disk fills
        raise OSError(28, "No space left on device")

    def stuck(self: audit_log._AppendFile, data: bytes) -> None:
        time.sleep(1.0)

    async with open_audit_log(config(path, write_timeout_s=0.3), signing_key=KEY) as log:
        monkeypatch.setattr(audit_log._AppendFile, "append", half_then_fail)
        with pytest.raises(AuditLogUnavailable, match="No space"):
            await log.append(event="sign", outcome="ok")
        assert verify_log(path.read_bytes(), public_key=None).torn_tail_bytes == 0
        monkeypatch.setattr(audit_log._AppendFile, "append", real_append)
        await log.append(event="sign", outcome="ok")  # usable again: the half line was cut
        monkeypatch.setattr(audit_log._AppendFile, "append", stuck)
        with pytest.raises(AuditLogUnavailable, match="timed out"):
            await log.append(event="sign", outcome="ok")
        monkeypatch.setattr(audit_log._AppendFile, "append", real_append)
        with pytest.raises(AuditLogUnavailable):  # refused from now on
            await log.append(event="sign", outcome="ok")
    report = verify_log(path.read_bytes(), public_key=None)
    assert report.valid and report.records == 2


async def test_a_caller_cancelled_mid_write_leaves_one_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by ``tkms chaos``: the coordinator cancels a slow node's partial signature
    while its audit record is being written; the record still lands in the file, so
    the chain must advance with it (else the next record repeats its seq and the
    node refuses to start again)."""
    path = tmp_path / "audit.log"
    real_append = audit_log._AppendFile.append

    def slow(self: audit_log._AppendFile, data: bytes) -> None:
        time.sleep(0.3)
        real_append(self, data)

    async with open_audit_log(config(path), signing_key=KEY) as log:
        monkeypatch.setattr(audit_log._AppendFile, "append", slow)
        with trio.move_on_after(0.05) as scope:
            await log.append(event="sign.partial", outcome="signed")
        assert scope.cancel_called  # the deadline passed while the record was written
        monkeypatch.setattr(audit_log._AppendFile, "append", real_append)
        await log.append(event="sign.partial", outcome="signed")
        assert log.next_seq == 3
    report = verify_log(path.read_bytes(), public_key=PUB)
    assert report.valid, report.reason
    assert report.records == 3
    async with open_audit_log(config(path), signing_key=KEY) as log:  # it reopens
        assert log.next_seq == 4  # audit.open recorded after the three


def test_real_write_failure_beyond_the_file_size_limit_refuses(tmp_path: Path) -> None:
    """A real EFBIG (RLIMIT_FSIZE) in a child process: partial write, undone, refused."""
    script = textwrap.dedent(
        """
        import resource, signal, sys, trio
        from pathlib import Path
        from shell.audit_log import AuditLogConfig, open_audit_log
        from protocol.audit import AuditLogUnavailable

        async def main(path):
            cfg = AuditLogConfig(path=path, log_id="cluster/node1", actor="node1")
            async with open_audit_log(cfg) as log:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                size = path.stat().st_size
                soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
                resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, hard))
                try:
                    await log.append(event="sign", outcome="ok", extra={"pad": "x" * 200})
                except AuditLogUnavailable as exc:
                    print("refused:", exc)
                resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
                await log.append(event="sign", outcome="ok")

        trio.run(main, Path(sys.argv[1]))
        """
    )
    path = tmp_path / "audit.log"
    proc = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "refused: audit log write failed" in proc.stdout
    report = verify_log(path.read_bytes(), public_key=None)
    assert report.valid and report.records == 2 and report.torn_tail_bytes == 0


async def test_checkpoint_store_keeps_only_verified_peer_checkpoints(tmp_path: Path) -> None:
    log_path = tmp_path / "node2-audit.log"
    store_path = tmp_path / "checkpoints"
    peer_cfg = AuditLogConfig(path=log_path, log_id="cluster/node2", actor="node2")
    async with open_audit_log(peer_cfg, signing_key=PEER_KEY) as peer:
        await peer.append(event="sign", outcome="ok")
        async with open_checkpoint_store(store_path) as store:
            await store.add(peer.checkpoint(), PEER_KEY.verify_key.encode())
            with pytest.raises(VerificationError):
                await store.add(peer.checkpoint(), PUB)  # signed by node2, not node1
            await peer.append(event="sign", outcome="ok")
            later = peer.checkpoint()
            await store.add(later, PEER_KEY.verify_key.encode())
            assert store.latest("cluster/node2") == later and store.latest("nope") is None
    store_path.write_bytes(store_path.read_bytes() + b"AAAA")  # torn by a crash
    async with open_checkpoint_store(store_path) as store:
        assert store.latest("cluster/node2") == later
    stored = parse_checkpoints(store_path.read_bytes())
    assert len(stored) == 2
    report = verify_log(
        log_path.read_bytes(), public_key=PEER_KEY.verify_key.encode(), checkpoints=stored
    )
    assert report.valid and report.unanchored_tail == 0
    # Cutting node2's last record now shows, because node1 holds its checkpoint.
    cut = b"".join(ln + b"\n" for ln in log_path.read_bytes().split(b"\n")[:-2])
    report = verify_log(cut, public_key=PEER_KEY.verify_key.encode(), checkpoints=stored)
    assert not report.valid and report.first_bad_seq == 2

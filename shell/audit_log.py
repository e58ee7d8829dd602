"""The audit-log appender both the nodes and the coordinator use: a thin trio shell
around ``protocol.audit``.

``open_audit_log(config, signing_key=...)`` opens (or creates) the log file, checks its
whole chain (a log that does not verify is refused: ``AuditLogCorrupt``), cuts off a
torn last line left by a crash and records that it did, then records ``audit.open``.
``AuditLog.append(...)`` writes one record with one ``write`` and an ``fsync`` before it
returns; if that fails or takes longer than ``write_timeout_s`` it raises
``AuditLogUnavailable`` and the caller must refuse the operation it was recording;
``append_many`` writes several records (a signing batch) with one write and one fsync.
``AuditLog.checkpoint()`` signs the current head for the coordinator and the peers.

``open_checkpoint_store(path)`` keeps the checkpoints received from peers (each
verified against the sender's Ed25519 key before it is stored), one line each, in the
format ``tkms audit verify --checkpoints`` reads.

File I/O runs in worker threads through ``trio.to_thread``; one lock serialises writers.
``node.audit_log`` and ``coordinator.audit_log`` re-export this module and say what
each side records.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from nacl.signing import SigningKey

from protocol.audit import (
    AuditChain,
    AuditLogUnavailable,
    AuditRecord,
    Checkpoint,
    parse_checkpoints,
    resume_chain,
)
from protocol.errors import VerificationError

__all__ = [
    "AuditLog",
    "AuditLogConfig",
    "AuditLogUnavailable",
    "CheckpointStore",
    "open_audit_log",
    "open_checkpoint_store",
]


@dataclass(frozen=True, slots=True)
class AuditLogConfig:
    """Where the log lives and who writes it (``log_id`` is unique in the cluster, e.g.
    ``"<cluster id hex>/node1"`` or ``"<cluster id hex>/coordinator"``; ``actor`` is the
    writer's name)."""

    path: Path
    log_id: str
    actor: str
    write_timeout_s: float = 10.0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _AppendFile:
    """Blocking append-only file with fsync; every method runs in a worker thread."""

    def __init__(self, path: Path) -> None:
        created = not path.exists()
        self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if created:
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self.size = os.fstat(self.fd).st_size

    def read_all(self) -> bytes:
        return os.pread(self.fd, self.size, 0)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        os.fsync(self.fd)
        self.size = size

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        os.fsync(self.fd)
        self.size += len(data)

    def close(self) -> None:
        os.close(self.fd)


class AuditLog:
    """An open audit log. Use ``open_audit_log``; never construct directly."""

    def __init__(
        self, config: AuditLogConfig, file: _AppendFile, chain: AuditChain, key: SigningKey | None
    ) -> None:
        self._config = config
        self._file = file
        self._chain = chain
        self._key = key
        self._lock = trio.Lock()
        self._broken: str | None = None
        self._abandoned = False  # a worker thread may still hold the file descriptor
        self._closed = False

    @property
    def next_seq(self) -> int:
        return self._chain.next_seq

    @property
    def head(self) -> bytes:
        return self._chain.head

    async def append(
        self,
        *,
        event: str,
        outcome: str,
        client: str | None = None,
        key_id: str | None = None,
        msg_hash: bytes | None = None,
        signers: Sequence[str] = (),
        extra: Mapping[str, Any] | None = None,
        time_ms: int | None = None,
    ) -> AuditRecord:
        """Write one record durably, or raise ``AuditLogUnavailable`` (refuse the operation).
        A record outside the allowlist raises ``AuditRecordError`` and writes nothing."""
        entry = {
            "event": event,
            "outcome": outcome,
            "client": client,
            "key_id": key_id,
            "msg_hash": msg_hash,
            "signers": signers,
            "extra": extra,
        }
        return (await self.append_many([entry], time_ms=time_ms))[0]

    async def append_many(
        self, entries: Sequence[Mapping[str, Any]], *, time_ms: int | None = None
    ) -> list[AuditRecord]:
        """Write several records (each a map of ``append``'s keyword arguments) with one
        write and one fsync: all of them durably, or none and ``AuditLogUnavailable``.
        One bad record (``AuditRecordError``) writes nothing."""
        timeout = self._config.write_timeout_s
        try:
            with trio.fail_after(timeout):
                await self._lock.acquire()
        except trio.TooSlowError:
            raise AuditLogUnavailable("audit log busy: no write slot within the timeout") from None
        try:
            if self._closed or self._broken is not None:
                raise AuditLogUnavailable(f"audit log unavailable: {self._broken or 'closed'}")
            now = _now_ms() if time_ms is None else time_ms
            scratch = AuditChain(self._chain.log_id, next_seq=self.next_seq, head=self.head)
            pendings = []
            for entry in entries:
                pending = scratch.prepare(time=now, actor=self._config.actor, **entry)
                scratch.commit(pending)
                pendings.append(pending)
            good_size = self._file.size
            try:
                # Shielded: a caller cancelled from outside (an RPC the coordinator
                # cancelled) must not abandon a write that still lands in the file with
                # the chain not advanced (the next record would reuse its seq). The
                # write stays bounded by its own timeout.
                with trio.CancelScope(shield=True), trio.fail_after(timeout):
                    await trio.to_thread.run_sync(
                        self._file.append,
                        b"".join(p.line for p in pendings),
                        abandon_on_cancel=True,
                    )
            except trio.TooSlowError:
                # The abandoned thread may still write: never touch this file again.
                self._broken = "a write did not finish in time"
                self._abandoned = True
                raise AuditLogUnavailable("audit log write timed out") from None
            except OSError as exc:
                await self._restore(good_size, exc)
                raise AuditLogUnavailable(f"audit log write failed: {exc.strerror}") from None
            return [self._chain.commit(p) for p in pendings]
        finally:
            self._lock.release()

    async def _restore(self, size: int, exc: OSError) -> None:
        """Cut a partly written line so the file stays a valid log, or give up on it."""
        try:
            with trio.fail_after(self._config.write_timeout_s):
                await trio.to_thread.run_sync(self._file.truncate, size, abandon_on_cancel=True)
        except trio.TooSlowError:
            self._broken = f"a failed write could not be undone ({exc.strerror})"
            self._abandoned = True
        except OSError:
            self._broken = f"a failed write could not be undone ({exc.strerror})"

    def checkpoint(self) -> Checkpoint:
        """A signed checkpoint of the current head, to send to the coordinator and peers."""
        if self._key is None:
            raise AuditLogUnavailable("this audit log has no signing key for checkpoints")
        return self._chain.checkpoint(self._key)

    async def aclose(self) -> None:
        async with self._lock:
            if not self._closed:
                self._closed = True
                if not self._abandoned:
                    self._file.close()


@asynccontextmanager
async def open_audit_log(
    config: AuditLogConfig, *, signing_key: SigningKey | None = None
) -> AsyncIterator[AuditLog]:
    """Open or create the log, verify it, cut a torn tail, and record ``audit.open``."""
    try:
        with trio.fail_after(config.write_timeout_s):
            file = await trio.to_thread.run_sync(_AppendFile, config.path)
            data = await trio.to_thread.run_sync(file.read_all)
    except (OSError, trio.TooSlowError) as exc:
        raise AuditLogUnavailable(f"cannot open the audit log: {exc}") from None
    try:
        chain, torn = resume_chain(data, log_id=config.log_id)
        log = AuditLog(config, file, chain, signing_key)
        if torn:
            try:
                with trio.fail_after(config.write_timeout_s):
                    await trio.to_thread.run_sync(file.truncate, file.size - torn)
            except (OSError, trio.TooSlowError) as exc:
                raise AuditLogUnavailable(f"cannot cut the torn tail: {exc}") from None
            await log.append(event="audit.torn_tail", outcome="recovered", extra={"bytes": torn})
        await log.append(event="audit.open", outcome="ok")
    except BaseException:
        file.close()
        raise
    try:
        yield log
    finally:
        with trio.CancelScope(shield=True):
            await log.aclose()


class CheckpointStore:
    """Checkpoints received from peers, verified and appended durably."""

    def __init__(self, file: _AppendFile, checkpoints: list[Checkpoint], timeout: float) -> None:
        self._file = file
        self._checkpoints = checkpoints
        self._timeout = timeout
        self._lock = trio.Lock()

    def latest(self, log_id: str) -> Checkpoint | None:
        """The stored checkpoint with the highest seq for ``log_id``."""
        mine = [c for c in self._checkpoints if c.log_id == log_id]
        return max(mine, key=lambda c: c.seq) if mine else None

    async def add(self, checkpoint: Checkpoint, sender_public_key: bytes) -> None:
        """Store a peer's checkpoint after checking its signature (else VerificationError)."""
        if not checkpoint.verify(sender_public_key):
            raise VerificationError("audit checkpoint signature does not verify")
        with trio.fail_after(self._timeout):
            async with self._lock:
                try:
                    await trio.to_thread.run_sync(self._file.append, checkpoint.to_line())
                except OSError as exc:
                    raise AuditLogUnavailable(f"cannot store checkpoint: {exc.strerror}") from None
                self._checkpoints.append(checkpoint)


@asynccontextmanager
async def open_checkpoint_store(
    path: Path, *, timeout_s: float = 10.0
) -> AsyncIterator[CheckpointStore]:
    """Open (or create) a checkpoint file; a torn last line from a crash is cut off."""
    with trio.fail_after(timeout_s):
        file = await trio.to_thread.run_sync(_AppendFile, path)
        try:
            data = await trio.to_thread.run_sync(file.read_all)
            keep = data.rfind(b"\n") + 1
            if keep != len(data):
                await trio.to_thread.run_sync(file.truncate, keep)
            checkpoints = parse_checkpoints(data[:keep], source=str(path))
        except BaseException:
            file.close()
            raise
    try:
        yield CheckpointStore(file, checkpoints, timeout_s)
    finally:
        file.close()

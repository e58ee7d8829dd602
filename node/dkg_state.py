"""What a node keeps on disk about DKG ceremonies, so that a restart mid-ceremony
either resumes or aborts cleanly (DESIGN.md §DKG, two-phase commit).

    <data_dir>/dkg/used-ceremonies        one hex ceremony id per line, append-only
    <data_dir>/dkg/pending/<key>-<epoch>.json
                                          a ceremony whose share is sealed as pending

Before FINISH nothing is persisted but the ceremony id (so it is never accepted
twice): a node restarted then has forgotten the ceremony and the coordinator drops
it. From FINISH on, a ``PendingRecord`` holds what the node needs to verify the
commit certificate after a restart (the canonical transcript body whose hash it
signed) and where the two-phase commit stands:

* ``pending``    share sealed as pending, vote cast; waits for commit or abort;
* ``committing`` the commit certificate verified and is stored here *before* the key
                 is activated; a restart finishes the activation (roll forward);
* ``aborting``   an abort was accepted; a restart finishes destroying the share.

Once a commit is done the certificate lives on in the key's transcript file and the
record is removed; once an abort is done the record is removed. Every write is
atomic and durable (``node.files``). Records hold public data only.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from node.files import atomic_write, clean_temp_files, make_private_dir, remove_durably
from protocol.errors import Fault, TkmsError

USED_FILE = "used-ceremonies"
PENDING_DIR = "pending"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
RecordState = Literal["pending", "committing", "aborting"]
_STATES = ("pending", "committing", "aborting")


class DkgStateCorrupt(TkmsError):
    """A pending-ceremony record is malformed (the node refuses to guess)."""

    fault = Fault.LOCAL


@dataclass(frozen=True, slots=True)
class PendingRecord:
    """A ceremony in FINISH on this node (see the module header)."""

    key_id: str
    epoch: int
    ceremony: bytes
    participants: tuple[int, ...]
    coordinator: str
    instance: bytes
    transcript_body: bytes  # canonical TranscriptBody bytes (public)
    state: RecordState = "pending"
    commit: bytes | None = None  # canonical CommitCertificate bytes
    since: float = 0.0  # wall-clock time of the last change

    def with_state(
        self, state: RecordState, *, commit: bytes | None = None, at: float
    ) -> PendingRecord:
        return replace(
            self, state=state, commit=commit if commit is not None else self.commit, since=at
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "keyId": self.key_id,
            "epoch": self.epoch,
            "ceremony": self.ceremony.hex(),
            "participants": list(self.participants),
            "coordinator": self.coordinator,
            "instance": self.instance.hex(),
            "transcriptBody": self.transcript_body.hex(),
            "state": self.state,
            "commit": self.commit.hex() if self.commit is not None else None,
            "since": self.since,
        }

    @classmethod
    def from_json(cls, obj: Any) -> PendingRecord:
        try:
            state = obj["state"]
            if state not in _STATES:
                raise ValueError(state)
            commit = obj["commit"]
            return cls(
                key_id=str(obj["keyId"]),
                epoch=int(obj["epoch"]),
                ceremony=bytes.fromhex(obj["ceremony"]),
                participants=tuple(int(i) for i in obj["participants"]),
                coordinator=str(obj["coordinator"]),
                instance=bytes.fromhex(obj["instance"]),
                transcript_body=bytes.fromhex(obj["transcriptBody"]),
                state=state,
                commit=bytes.fromhex(commit) if commit is not None else None,
                since=float(obj["since"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise DkgStateCorrupt("a pending DKG record is malformed") from None


class DkgDisk:
    """The files of ``<data_dir>/dkg`` (sync; call through ``trio.to_thread``)."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "dkg"
        self.pending_dir = self.root / PENDING_DIR

    def __repr__(self) -> str:
        return f"DkgDisk({str(self.root)!r})"

    def prepare(self) -> None:
        make_private_dir(self.pending_dir)
        clean_temp_files(self.pending_dir)

    def used_ceremonies(self) -> set[bytes]:
        """Every ceremony id this node has taken part in (a torn last line is ignored)."""
        try:
            text = (self.root / USED_FILE).read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            return set()
        return {bytes.fromhex(line) for line in text.splitlines() if _HEX64.match(line)}

    def add_used(self, ceremony: bytes) -> None:
        """Append one ceremony id durably (before the node answers with its bundle)."""
        make_private_dir(self.root)
        fd = os.open(self.root / USED_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, ceremony.hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _path(self, key_id: str, epoch: int) -> Path:
        return self.pending_dir / f"{key_id}-{epoch}.json"

    def write(self, record: PendingRecord) -> None:
        make_private_dir(self.pending_dir)
        data = (json.dumps(record.to_json(), sort_keys=True) + "\n").encode()
        atomic_write(self._path(record.key_id, record.epoch), data, mode=0o644)

    def remove(self, record: PendingRecord) -> None:
        remove_durably(self._path(record.key_id, record.epoch))

    def records(self) -> list[PendingRecord]:
        if not self.pending_dir.is_dir():
            return []
        out = []
        for path in sorted(self.pending_dir.glob("*.json")):
            try:
                obj = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise DkgStateCorrupt(f"{path.name}: unreadable pending DKG record") from None
            out.append(PendingRecord.from_json(obj))
        return out

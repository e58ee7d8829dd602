"""The tamper-evident audit log (sans-IO): hash-chained records and signed checkpoints.

Record. A canonical-msgpack map with exactly the fields of ``RECORD_FIELDS`` (an
allowlist of names and types; anything else is refused, so no secret can ride along):
``v`` (format version 1), ``log`` (the log id), ``seq`` (0, 1, 2, ...), ``prev`` (the
hash of the previous record; for seq 0 the genesis hash of the log id), ``time``
(milliseconds since the Unix epoch, passed in), ``actor``, ``event``, ``client``,
``key_id``, ``msg_hash`` (32 bytes), ``outcome``, ``signers`` and ``extra`` (a small map
of public context: ints, bools, short strings; no bytes; names that look like secrets
are refused). ``hash = SHA-256(RECORD_DOMAIN || prev || canonical(record))``.

File. One record per line: strict standard base64 of the canonical bytes, then
``\\n``. The writer appends a whole line with one write and fsyncs it, so after a crash
only the bytes after the last ``\\n`` can be incomplete: that is a *torn tail*,
reported apart from tampering (and cut off by the writer when it reopens the log).

Checkpoint. ``(log, seq, head)`` signed with Ed25519 through ``protocol.signing``
(purpose ``audit-checkpoint``). Nodes send their checkpoints to the coordinator and
to each other; a peer's checkpoint anchors every record up to its seq, so a cut,
rewritten or edited prefix shows. Records after the last anchored seq are the
*unanchored tail*: a hash chain alone cannot prove that nobody cut or rewrote it.

``verify_log`` reports the first record that can no longer be trusted: a record is
confirmed by its successor's ``prev`` or by a checkpoint, so an edited record k breaks
the link k -> k+1 and is reported as k; a removed, reordered or duplicated record is
reported at the first position whose seq is not the expected one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey

from protocol.canonical import decode_canonical, encode_canonical
from protocol.errors import DecodeError, Fault, InvalidLength, TkmsError
from protocol.signing import sign_fields, verify_fields

FORMAT_VERSION = 1
HASH_LEN = 32
RECORD_DOMAIN = b"tkms/v1/audit-record\0"
GENESIS_DOMAIN = b"tkms/v1/audit-genesis\0"
CHECKPOINT_PURPOSE = "audit-checkpoint"
MAX_LINE = 64 * 1024  # bytes of one base64 line, newline excluded
MAX_CHECKPOINT_LINE = 1024  # a checkpoint line is ~300 bytes
MAX_U63 = 2**63 - 1

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}")
_EVENT = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_OUTCOME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_EXTRA_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
# Defence in depth on top of the typed allowlist: extra names that smell of secrets.
_SECRET_WORDS = frozenset(
    {
        "secret", "secrets", "share", "shares", "password", "passphrase", "passwd", "pin",
        "private", "privkey", "seed", "mnemonic", "sk", "nonce", "apikey", "credential",
        "credentials", "token", "plaintext",
    }
)  # fmt: skip
MAX_EXTRA_KEYS = 32
MAX_EXTRA_STR = 256
MAX_LIST = 256


class AuditRecordError(DecodeError):
    """A record that the audit log refuses to write (a field outside the allowlist,
    a wrong type, a value that may be a secret). Our own code asked for it."""

    fault = Fault.LOCAL


class AuditLogCorrupt(TkmsError):
    """An existing log file whose chain does not verify: the writer refuses to append
    to it (the operator moves it aside and investigates)."""

    fault = Fault.CONFIG


class AuditLogUnavailable(TkmsError):
    """The audit log cannot be written: the operation that needed a record is refused."""

    fault = Fault.LOCAL


def genesis_hash(log_id: str) -> bytes:
    """The ``prev`` of record 0: binds the chain to its log id."""
    return hashlib.sha256(GENESIS_DOMAIN + log_id.encode()).digest()


def record_hash(prev: bytes, canonical_record: bytes) -> bytes:
    """``SHA-256(RECORD_DOMAIN || prev || canonical record)``."""
    return hashlib.sha256(RECORD_DOMAIN + prev + canonical_record).digest()


# --------------------------------------------------------------------------- fields


def _bad(fld: str, reason: str, err: type[DecodeError]) -> DecodeError:
    return err(fld, reason)


def _check_int(value: Any, fld: str, err: type[DecodeError]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(fld, "must be an integer", err)
    if not 0 <= value <= MAX_U63:
        raise _bad(fld, "out of range [0, 2^63)", err)
    return value


def _check_str(value: Any, fld: str, pattern: re.Pattern[str], err: type[DecodeError]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _bad(fld, f"must match {pattern.pattern}", err)
    return value


def _check_opt_name(value: Any, fld: str, err: type[DecodeError]) -> str | None:
    return None if value is None else _check_str(value, fld, _NAME, err)


def _check_hash(value: Any, fld: str, err: type[DecodeError]) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_LEN:
        raise _bad(fld, "must be 32 bytes", err)
    return value


def _check_opt_hash(value: Any, fld: str, err: type[DecodeError]) -> bytes | None:
    return None if value is None else _check_hash(value, fld, err)


def _check_signers(value: Any, fld: str, err: type[DecodeError]) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or len(value) > MAX_LIST:
        raise _bad(fld, f"must be a list of at most {MAX_LIST} names", err)
    return tuple(_check_str(v, f"{fld}[{i}]", _NAME, err) for i, v in enumerate(value))


def _extra_value(value: Any, fld: str, err: type[DecodeError]) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value <= MAX_U63:
            raise _bad(fld, "integer out of range", err)
        return value
    if isinstance(value, str):
        if len(value) > MAX_EXTRA_STR or not value.isprintable():
            raise _bad(fld, f"must be printable and at most {MAX_EXTRA_STR} characters", err)
        return value
    raise _bad(fld, "must be None, bool, int, str or a list of int/str (no bytes)", err)


def _check_extra(value: Any, fld: str, err: type[DecodeError]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > MAX_EXTRA_KEYS:
        raise _bad(fld, f"must be a map of at most {MAX_EXTRA_KEYS} entries", err)
    out: dict[str, Any] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not _EXTRA_KEY.fullmatch(k):
            raise _bad(fld, f"key must match {_EXTRA_KEY.pattern}", err)
        if _SECRET_WORDS & set(k.split("_")) or any(
            w in k for w in ("secret", "passw", "priv", "api_key")
        ):
            raise _bad(f"{fld}.{k}", "name looks like a secret; audit records hold none", err)
        if isinstance(v, list | tuple):
            if len(v) > MAX_LIST:
                raise _bad(f"{fld}.{k}", f"list longer than {MAX_LIST}", err)
            items = []
            for i, item in enumerate(v):
                if isinstance(item, list | tuple):
                    raise _bad(f"{fld}.{k}[{i}]", "nested lists are not allowed", err)
                items.append(_extra_value(item, f"{fld}.{k}[{i}]", err))
            out[k] = items
        else:
            out[k] = _extra_value(v, f"{fld}.{k}", err)
    return out


# The allowlist: every field of a record and nothing else.
RECORD_FIELDS: tuple[str, ...] = (
    "v", "log", "seq", "prev", "time", "actor", "event", "client", "key_id", "msg_hash",
    "outcome", "signers", "extra",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One validated record; ``hash`` is its chain hash, ``canonical`` its bytes."""

    log: str
    seq: int
    prev: bytes
    time: int
    actor: str
    event: str
    outcome: str
    client: str | None = None
    key_id: str | None = None
    msg_hash: bytes | None = None
    signers: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_fields(self) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION,
            "log": self.log,
            "seq": self.seq,
            "prev": self.prev,
            "time": self.time,
            "actor": self.actor,
            "event": self.event,
            "client": self.client,
            "key_id": self.key_id,
            "msg_hash": self.msg_hash,
            "outcome": self.outcome,
            "signers": list(self.signers),
            "extra": dict(self.extra),
        }

    @property
    def canonical(self) -> bytes:
        return encode_canonical(self.to_fields())

    @property
    def hash(self) -> bytes:
        return record_hash(self.prev, self.canonical)

    def to_line(self) -> bytes:
        """The record as one line of the log file (base64, newline-terminated)."""
        return base64.b64encode(self.canonical) + b"\n"


def validate_record(
    fields: Mapping[str, Any], *, err: type[DecodeError] = DecodeError
) -> AuditRecord:
    """Check a record map against the allowlist; raise ``err`` naming the bad field."""
    if not isinstance(fields, Mapping):
        raise err("record", "must be a map")
    unknown = set(fields) - set(RECORD_FIELDS)
    if unknown:
        raise err("record", f"fields outside the allowlist: {sorted(unknown)}")
    missing = set(RECORD_FIELDS) - set(fields)
    if missing:
        raise err("record", f"missing fields {sorted(missing)}")
    if fields["v"] != FORMAT_VERSION or isinstance(fields["v"], bool):
        raise err("record.v", f"unsupported format version (expected {FORMAT_VERSION})")
    return AuditRecord(
        log=_check_str(fields["log"], "record.log", _NAME, err),
        seq=_check_int(fields["seq"], "record.seq", err),
        prev=_check_hash(fields["prev"], "record.prev", err),
        time=_check_int(fields["time"], "record.time", err),
        actor=_check_str(fields["actor"], "record.actor", _NAME, err),
        event=_check_str(fields["event"], "record.event", _EVENT, err),
        outcome=_check_str(fields["outcome"], "record.outcome", _OUTCOME, err),
        client=_check_opt_name(fields["client"], "record.client", err),
        key_id=_check_opt_name(fields["key_id"], "record.key_id", err),
        msg_hash=_check_opt_hash(fields["msg_hash"], "record.msg_hash", err),
        signers=_check_signers(fields["signers"], "record.signers", err),
        extra=_check_extra(fields["extra"], "record.extra", err),
    )


def decode_line(line: bytes, *, field_name: str = "line") -> AuditRecord:
    """Parse one line (without its newline): strict base64, canonical msgpack, allowlist."""
    return validate_record(_decode_b64_line(line, field_name, MAX_LINE))


def _decode_b64_line(line: bytes, field_name: str, max_len: int) -> Any:
    """Strict base64 (canonical form only) around strict canonical msgpack."""
    if len(line) > max_len:
        raise InvalidLength(field_name, f"longer than {max_len} bytes")
    try:
        raw = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(field_name, "not strict base64") from None
    if base64.b64encode(raw) != line:
        raise DecodeError(field_name, "base64 is not in canonical form")
    return decode_canonical(raw, field=field_name, max_len=max_len)


def split_lines(data: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines (without newlines) and the torn tail (bytes after the last newline)."""
    cut = data.rfind(b"\n") + 1
    body, tail = data[:cut], data[cut:]
    lines = body.split(b"\n")[:-1] if body else []
    return lines, tail


# ----------------------------------------------------------------------- the writer


@dataclass(frozen=True, slots=True)
class PendingRecord:
    """A record prepared by ``AuditChain.prepare``: write ``line``, then ``commit`` it."""

    record: AuditRecord
    line: bytes
    hash: bytes


class AuditChain:
    """The writer's state: the log id, the next seq and the head hash. ``prepare``
    validates and encodes a record without changing state; ``commit`` advances once the
    shell has written and synced the line."""

    __slots__ = ("_head", "_log_id", "_next_seq")

    def __init__(self, log_id: str, *, next_seq: int = 0, head: bytes | None = None) -> None:
        _check_str(log_id, "log_id", _NAME, AuditRecordError)
        self._log_id = log_id
        self._next_seq = next_seq
        self._head = head if head is not None else genesis_hash(log_id)

    @property
    def log_id(self) -> str:
        return self._log_id

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def head(self) -> bytes:
        """Hash of the last record (the genesis hash while the log is empty)."""
        return self._head

    def prepare(
        self,
        *,
        time: int,
        actor: str,
        event: str,
        outcome: str,
        client: str | None = None,
        key_id: str | None = None,
        msg_hash: bytes | None = None,
        signers: Sequence[str] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> PendingRecord:
        if isinstance(signers, str):  # a str is a Sequence[str] of its letters
            raise AuditRecordError("record.signers", "must be a list of names, not a string")
        fields = {
            "v": FORMAT_VERSION,
            "log": self._log_id,
            "seq": self._next_seq,
            "prev": self._head,
            "time": time,
            "actor": actor,
            "event": event,
            "client": client,
            "key_id": key_id,
            "msg_hash": msg_hash,
            "outcome": outcome,
            "signers": list(signers),
            "extra": dict(extra) if extra is not None else {},
        }
        record = validate_record(fields, err=AuditRecordError)
        line = record.to_line()
        if len(line) - 1 > MAX_LINE:
            raise AuditRecordError("record", f"encodes to more than {MAX_LINE} bytes")
        return PendingRecord(record=record, line=line, hash=record.hash)

    def commit(self, pending: PendingRecord) -> AuditRecord:
        if pending.record.seq != self._next_seq or pending.record.prev != self._head:
            raise AuditRecordError("record.seq", "pending record is not the next one")
        self._next_seq += 1
        self._head = pending.hash
        return pending.record

    def checkpoint(self, signing_key: SigningKey) -> Checkpoint:
        """A signed checkpoint of the current head (the log must not be empty)."""
        if self._next_seq == 0:
            raise AuditRecordError("checkpoint", "an empty log has nothing to anchor")
        return Checkpoint.sign(signing_key, self._log_id, self._next_seq - 1, self._head)


def resume_chain(data: bytes, *, log_id: str) -> tuple[AuditChain, int]:
    """The writer's state after the records in ``data`` and the torn tail's length (the
    shell cuts it off). Refuses a log whose chain does not verify or has another id."""
    report = verify_log(data, public_key=None)
    if not report.valid:
        raise AuditLogCorrupt(f"existing audit log does not verify: {report.reason}")
    if report.log_id is not None and report.log_id != log_id:
        raise AuditLogCorrupt(f"existing audit log belongs to {report.log_id!r}, not {log_id!r}")
    chain = AuditChain(log_id, next_seq=report.records, head=report.head)
    return chain, report.torn_tail_bytes


# ------------------------------------------------------------------- checkpoints


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement "log ``log_id`` had head ``head`` at ``seq``"."""

    log_id: str
    seq: int
    head: bytes
    signature: bytes

    def signed_fields(self) -> dict[str, Any]:
        return {"log": self.log_id, "seq": self.seq, "head": self.head}

    @classmethod
    def sign(cls, key: SigningKey, log_id: str, seq: int, head: bytes) -> Checkpoint:
        unsigned = cls(log_id, seq, head, b"")
        return cls(
            log_id, seq, head, sign_fields(key, CHECKPOINT_PURPOSE, unsigned.signed_fields())
        )

    def verify(self, public_key: bytes) -> bool:
        return verify_fields(public_key, CHECKPOINT_PURPOSE, self.signed_fields(), self.signature)

    def to_fields(self) -> dict[str, Any]:
        return {**self.signed_fields(), "sig": self.signature}

    def to_line(self) -> bytes:
        return base64.b64encode(encode_canonical(self.to_fields())) + b"\n"

    @classmethod
    def from_fields(cls, value: Any, *, field_name: str = "checkpoint") -> Checkpoint:
        if not isinstance(value, Mapping) or set(value) != {"log", "seq", "head", "sig"}:
            raise DecodeError(field_name, "must be a map of exactly log, seq, head, sig")
        sig = value["sig"]
        if not isinstance(sig, bytes) or len(sig) != 64:
            raise InvalidLength(f"{field_name}.sig", "must be 64 bytes")
        return cls(
            log_id=_check_str(value["log"], f"{field_name}.log", _NAME, DecodeError),
            seq=_check_int(value["seq"], f"{field_name}.seq", DecodeError),
            head=_check_hash(value["head"], f"{field_name}.head", DecodeError),
            signature=sig,
        )

    @classmethod
    def from_line(cls, line: bytes, *, field_name: str = "checkpoint") -> Checkpoint:
        return cls.from_fields(_decode_b64_line(line, field_name, MAX_CHECKPOINT_LINE))


def parse_checkpoints(data: bytes, *, source: str = "checkpoints") -> list[Checkpoint]:
    """Every checkpoint line of a checkpoint file; a torn last line is ignored."""
    lines, _torn = split_lines(data)
    return [Checkpoint.from_line(ln, field_name=f"{source}:{i + 1}") for i, ln in enumerate(lines)]


# ---------------------------------------------------------------------- verifier


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What ``verify_log`` found. ``records`` counts the complete lines that parsed
    and chained; ``head`` is the hash of the last of them (None for an empty log)."""

    valid: bool
    records: int
    head: bytes | None
    reason: str | None
    first_bad_seq: int | None
    unanchored_tail: int
    log_id: str | None = None
    anchored_seq: int | None = None
    torn_tail_bytes: int = 0
    checkpoints_used: int = 0
    checkpoints_rejected: int = 0
    checkpoints_other_logs: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "records": self.records,
            "head": self.head.hex() if self.head is not None else None,
            "reason": self.reason,
            "unanchoredTail": self.unanchored_tail,
            "firstBadSeq": self.first_bad_seq,
            "logId": self.log_id,
            "anchoredSeq": self.anchored_seq,
            "tornTail": self.torn_tail_bytes > 0,
            "tornTailBytes": self.torn_tail_bytes,
            "checkpoints": {
                "used": self.checkpoints_used,
                "rejected": self.checkpoints_rejected,
                "otherLogs": self.checkpoints_other_logs,
            },
        }


def _scan(lines: list[bytes]) -> tuple[list[bytes], str | None, int | None, str | None]:
    """Walk the chain: (hashes of the records that chain, reason, first bad seq, log id)."""
    hashes: list[bytes] = []
    log_id: str | None = None
    head = b""
    for pos, line in enumerate(lines):
        try:
            rec = decode_line(line, field_name=f"line {pos + 1}")
        except DecodeError as exc:
            return hashes, f"record at seq {pos} is malformed ({exc})", pos, log_id
        if log_id is None:
            log_id = rec.log
            head = genesis_hash(log_id)
        if rec.log != log_id:
            return hashes, f"record at seq {pos} belongs to log {rec.log!r}", pos, log_id
        if rec.seq != pos:
            if rec.seq < pos:
                what = f"seq {rec.seq} appears again (duplicated or reordered record)"
            else:
                what = f"found seq {rec.seq} (record {pos} removed or reordered)"
            return hashes, f"expected seq {pos}, {what}", pos, log_id
        if rec.prev != head:
            bad = max(pos - 1, 0)
            return hashes, f"chain broken between seq {bad} and seq {pos}", bad, log_id
        head = rec.hash
        hashes.append(head)
    return hashes, None, None, log_id


def verify_log(
    data: bytes,
    *,
    public_key: bytes | None,
    checkpoints: Iterable[Checkpoint] = (),
) -> AuditReport:
    """Verify a log file's bytes against its chain and the peers' checkpoints.

    ``public_key`` is the writer's Ed25519 key: checkpoints for this log whose
    signature does not verify under it are rejected (counted, never trusted). Without
    a key, checkpoints cannot be used and the whole log is unanchored.
    """
    lines, torn = split_lines(data)
    hashes, reason, first_bad, log_id = _scan(lines)
    n = len(hashes)
    candidates: list[tuple[int, str]] = []
    if reason is not None and first_bad is not None:
        candidates.append((first_bad, reason))

    used = rejected = other = 0
    anchored = -1
    matched: list[int] = []
    mismatched: list[tuple[int, str]] = []
    for cp in checkpoints:
        if log_id is not None and cp.log_id != log_id:
            other += 1
            continue
        if public_key is None or not cp.verify(public_key):
            rejected += 1
            continue
        used += 1
        if reason is None and cp.seq >= n:
            last = f"ends at seq {n - 1}" if n else "is empty"
            why = f"truncated: a checkpoint anchors seq {cp.seq} but the log {last}"
            mismatched.append((n, why))
        elif cp.seq < n and cp.head != hashes[cp.seq]:
            mismatched.append((cp.seq, f"checkpoint at seq {cp.seq} names another head hash"))
        elif cp.seq < n:
            matched.append(cp.seq)
            anchored = max(anchored, cp.seq)
    for seq, why in mismatched:
        if seq >= n:  # truncation: the first missing record is the first bad one
            candidates.append((n, why))
            continue
        # A consistent chain with another head: some record after the last matching
        # checkpoint below it was rewritten; no earlier record is known to be bad.
        below = [m for m in matched if m < seq]
        candidates.append(((max(below) + 1) if below else 0, why))

    if candidates:
        first_bad, reason = min(candidates, key=lambda c: c[0])
    valid = not candidates
    return AuditReport(
        valid=valid,
        records=n,
        head=hashes[-1] if hashes else None,
        reason=reason if not valid else None,
        first_bad_seq=first_bad if not valid else None,
        unanchored_tail=n - (anchored + 1),
        log_id=log_id,
        anchored_seq=anchored if anchored >= 0 else None,
        torn_tail_bytes=len(torn),
        checkpoints_used=used,
        checkpoints_rejected=rejected,
        checkpoints_other_logs=other,
    )

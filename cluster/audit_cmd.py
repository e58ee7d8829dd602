"""``tkms audit verify LOG``: check a hash-chained audit log offline.

    tkms audit verify LOG [--public-key HEX | --manifest M --node NAME]
                          [--checkpoints FILE ...] [--json]

The writer's Ed25519 key (given in hex, or looked up in the cluster manifest by node
name) verifies the checkpoints read from the ``--checkpoints`` files (the checkpoint
stores of the coordinator and the other nodes). The chain itself needs no key. Exit
code 0 when the log is valid, 1 when it is not, 2 when it cannot be checked at all
(unreadable file, bad key, unknown node). ``--json`` prints one object:
``{"valid", "records", "head", "reason", "unanchoredTail", "firstBadSeq", "logId",
"anchoredSeq", "tornTail", "tornTailBytes", "checkpoints": {"used", "rejected",
"otherLogs", "malformed"}}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cluster.output import emit
from protocol.audit import AuditReport, Checkpoint, split_lines, verify_log
from protocol.errors import DecodeError, Fault, TkmsError
from protocol.manifest import parse_manifest

MAX_LOG_BYTES = 1 << 32  # refuse to slurp more than 4 GiB


class AuditCommandError(TkmsError):
    """The log cannot be checked: a file, key or node the operator named is unusable."""

    fault = Fault.CONFIG


def register(sub: Any) -> None:
    audit: argparse.ArgumentParser = sub.add_parser("audit", help="audit log tools")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = audit_sub.add_parser(
        "verify",
        help="check a hash-chained audit log",
        description="Check an audit log's hash chain and the peers' signed checkpoints.",
    )
    verify.add_argument("log", metavar="LOG", type=Path, help="the audit log file")
    key = verify.add_mutually_exclusive_group()
    key.add_argument("--public-key", metavar="HEX", help="the writer's Ed25519 public key")
    key.add_argument("--manifest", metavar="M", type=Path, help="cluster manifest (TOML)")
    verify.add_argument("--node", metavar="NAME", help="the node that wrote LOG (with --manifest)")
    verify.add_argument(
        "--checkpoints",
        metavar="FILE",
        type=Path,
        nargs="+",
        default=[],
        help="checkpoint files kept by the coordinator and the peers",
    )
    verify.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    verify.set_defaults(handler=run_verify)


def _read(path: Path, what: str) -> bytes:
    try:
        if path.stat().st_size > MAX_LOG_BYTES:
            raise AuditCommandError(f"{what} {path} is larger than {MAX_LOG_BYTES} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise AuditCommandError(f"cannot read {what} {path}: {exc.strerror}") from None


def _public_key(args: argparse.Namespace) -> bytes | None:
    if args.manifest is not None:
        if not args.node:
            raise AuditCommandError("--manifest needs --node NAME (the node that wrote LOG)")
        manifest = parse_manifest(_read(args.manifest, "manifest").decode(errors="replace"))
        try:
            return manifest.node(args.node).ed25519_public_key
        except KeyError:
            raise AuditCommandError(f"node {args.node!r} is not in the manifest") from None
    if args.node:
        raise AuditCommandError("--node is only meaningful with --manifest")
    if args.public_key is None:
        return None
    text = args.public_key.removeprefix("0x")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise AuditCommandError("--public-key is not hex") from None
    if len(raw) != 32:
        raise AuditCommandError(f"--public-key must be 32 bytes, got {len(raw)}")
    return raw


def _checkpoints(paths: list[Path]) -> tuple[list[Checkpoint], int]:
    """Every well-formed checkpoint line of the files, and how many lines were not."""
    found: list[Checkpoint] = []
    malformed = 0
    for path in paths:
        lines, _torn = split_lines(_read(path, "checkpoint file"))
        for i, line in enumerate(lines):
            try:
                found.append(Checkpoint.from_line(line, field_name=f"{path}:{i + 1}"))
            except DecodeError:
                malformed += 1
    return found, malformed


def _human(path: Path, report: AuditReport, malformed: int, keyed: bool) -> str:
    head = report.head.hex() if report.head is not None else "none"
    lines = [
        f"audit log {path}: {'VALID' if report.valid else 'INVALID'}",
        f"  log id: {report.log_id or '(empty log)'}; records: {report.records}; head: {head}",
    ]
    if not report.valid:
        lines.append(f"  reason: {report.reason}")
        lines.append(f"  first record not to trust: seq {report.first_bad_seq}")
    if report.anchored_seq is not None:
        lines.append(
            f"  anchored by peer checkpoints through seq {report.anchored_seq}; "
            f"unanchored tail: {report.unanchored_tail} record(s)"
        )
    else:
        lines.append(
            f"  no peer checkpoint anchors this log: all {report.unanchored_tail} "
            "record(s) are unanchored (a cut or rewritten log would not show)"
        )
    if report.torn_tail_bytes:
        lines.append(
            f"  torn tail: {report.torn_tail_bytes} byte(s) after the last complete record "
            "(an interrupted write, e.g. a crash; not counted as tampering)"
        )
    if report.checkpoints_rejected:
        why = "bad signature or another key" if keyed else "no --public-key/--manifest given"
        lines.append(f"  warning: {report.checkpoints_rejected} checkpoint(s) rejected ({why})")
    if malformed:
        lines.append(f"  warning: {malformed} malformed line(s) in the checkpoint files")
    if report.checkpoints_other_logs:
        lines.append(f"  {report.checkpoints_other_logs} checkpoint(s) belong to other logs")
    return "\n".join(lines)


def run_verify(args: argparse.Namespace) -> int:
    public_key = _public_key(args)
    data = _read(args.log, "audit log")
    checkpoints, malformed = _checkpoints(args.checkpoints)
    report = verify_log(data, public_key=public_key, checkpoints=checkpoints)
    result = report.to_json()
    result["checkpoints"]["malformed"] = malformed
    emit(
        result,
        as_json=args.json,
        human=_human(args.log, report, malformed, public_key is not None),
    )
    return 0 if report.valid else 1

"""The coordinator's audit log: the shared appender in ``shell.audit_log``, re-exported.

The coordinator appends each decision it makes for a client (who asked, which key,
which message hash, the outcome, the signers) and keeps the checkpoints the nodes send
it in a ``CheckpointStore``, so a node's log that is later cut or rewritten shows up in
``tkms audit verify --checkpoints``. DESIGN.md: the nodes' logs are the record, the
coordinator's log is a convenience; its checkpoints are signed only if it is given a key.
"""

from __future__ import annotations

from shell.audit_log import (
    AuditLog,
    AuditLogConfig,
    AuditLogUnavailable,
    CheckpointStore,
    open_audit_log,
    open_checkpoint_store,
)

__all__ = [
    "AuditLog",
    "AuditLogConfig",
    "AuditLogUnavailable",
    "CheckpointStore",
    "open_audit_log",
    "open_checkpoint_store",
]

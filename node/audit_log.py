"""The node's audit log: the shared appender in ``shell.audit_log``, re-exported.

A node keeps its log at ``<data_dir>/audit.log`` with log id ``"<cluster id hex>/<name>"``
(see ``node/server.py``) and signs checkpoints of it with its Ed25519 identity key. The
code lives in ``shell.audit_log`` because the coordinator runs the same appender.
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

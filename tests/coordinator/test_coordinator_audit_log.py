"""The coordinator's audit log (a re-export of ``shell.audit_log``) records decisions and
stores node checkpoints; the shell itself is tested in ``tests/shell/test_audit_log.py``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from coordinator.audit_log import AuditLogConfig, open_audit_log, open_checkpoint_store
from protocol.audit import AuditLogUnavailable, AuditRecordError, parse_checkpoints, verify_log
from protocol.errors import VerificationError

NODE_KEY = SigningKey(hashlib.sha256(b"node3 identity").digest())


async def test_coordinator_log_records_decisions_and_stores_node_checkpoints(
    tmp_path: Path,
) -> None:
    path = tmp_path / "coordinator-audit.log"
    cfg = AuditLogConfig(path=path, log_id="cluster/coordinator", actor="coordinator")
    async with open_audit_log(cfg) as log:
        await log.append(
            event="sign",
            outcome="ok",
            client="avs-1",
            key_id="k1",
            msg_hash=b"\x02" * 32,
            signers=["node1", "node3"],
        )
        with pytest.raises(AuditRecordError):
            await log.append(event="sign", outcome="ok", extra={"api_key": "x"})
        with pytest.raises(AuditLogUnavailable):  # no key given: no checkpoints
            log.checkpoint()
    report = verify_log(path.read_bytes(), public_key=None)
    assert report.valid and report.records == 2

    node_cfg = AuditLogConfig(path=tmp_path / "n3.log", log_id="cluster/node3", actor="node3")
    async with (
        open_audit_log(node_cfg, signing_key=NODE_KEY) as node_log,
        open_checkpoint_store(tmp_path / "cps") as store,
    ):
        await store.add(node_log.checkpoint(), NODE_KEY.verify_key.encode())
        with pytest.raises(VerificationError):
            await store.add(node_log.checkpoint(), b"\x00" * 32)
    (cp,) = parse_checkpoints((tmp_path / "cps").read_bytes())
    assert cp.log_id == "cluster/node3" and cp.verify(NODE_KEY.verify_key.encode())

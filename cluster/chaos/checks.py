"""The checks of a chaos run besides the load: the DKG calls, each node rejoining with
its share, the state of a key on every node, and the audit logs.

* ``run_dkg``: ``POST /v1/dkg`` with the demo client (operator role); a 201 gives the
  key's public key, anything else is an outcome (``aborted``, ``unavailable``, ...).
  A refused connection (coordinator restarting) is retried; a request that was sent
  and got no answer is not (its outcome is unknown: ``status`` None).
* ``rejoin_check``: for covering sets S of t nodes (every node in at least one), the
  proxies cut off every node outside S, one message is signed, and the signature must
  pass the gamma check with ``signers`` = S: each node, restarted or not, unsealed its
  share and made a partial signature that verified.
* ``key_states``: the latest status each node's share store records for a key,
  read from its public metadata files (``<data_dir>/keys/<key>/meta-NNNNNN.json``).
  ``dkg_consistent`` says whether a ceremony ended cleanly: active on exactly its
  holders if it completed; active nowhere if it aborted or was refused.
* ``verify_audit_logs``: every node's ``<data_dir>/audit.log`` through
  ``protocol.audit.verify_log`` with the node's Ed25519 key from the manifest and the
  checkpoints kept by its peers and the coordinator (``checkpoints.log``), and the
  coordinator's own ``audit.log`` (its chain).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from cluster import launcher
from cluster.chaos.httpc import HttpRefused, HttpTimeout, HttpUnavailable, request
from cluster.chaos.load import SignatureCheck
from cluster.chaos.proxy import Proxy
from protocol.audit import Checkpoint, parse_checkpoints, verify_log
from protocol.bn254 import G1, G2
from protocol.encoding import g1_from_json, g2_from_json, msg_hash_to_hex
from protocol.errors import TkmsError
from protocol.manifest import parse_manifest

META_RE = re.compile(r"^meta-(\d{6})\.json$")
AUDIT_LOG_FILE = "audit.log"
CHECKPOINTS_FILE = "checkpoints.log"


class ChaosError(TkmsError):
    """A chaos run could not be carried out (says which step and why)."""


@dataclass(frozen=True, slots=True)
class DkgOutcome:
    key_id: str
    outcome: str  # "completed", "aborted", "refused", "unavailable", "timeout"
    status: int | None
    holders: tuple[str, ...] = ()
    pubkey: tuple[G1, G2] | None = None
    detail: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "keyId": self.key_id,
            "outcome": self.outcome,
            "status": self.status,
            "holders": list(self.holders),
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
        }


def parse_key(doc: Any) -> tuple[G1, G2]:
    """The public key of a ``Key`` JSON object (every point validated)."""
    if not isinstance(doc, dict):
        raise ChaosError("the DKG answer is not a JSON object")
    return (
        g1_from_json(doc.get("pubkeyG1"), field="pubkeyG1"),
        g2_from_json(doc.get("pubkeyG2"), field="pubkeyG2"),
    )


async def run_dkg(
    address: str,
    api_key: str,
    key_id: str,
    threshold: int,
    *,
    min_holders: int | None = None,
    deadline_s: float = 330.0,
) -> DkgOutcome:
    body: dict[str, Any] = {"keyId": key_id, "threshold": threshold}
    if min_holders is not None:
        body["minHolders"] = min_holders
    start = trio.current_time()
    while True:  # a request that never reached the coordinator (restarting) is retried
        left = start + deadline_s - trio.current_time()
        try:
            resp = await request(
                address, "POST", "/v1/dkg", body=body, api_key=api_key, deadline_s=max(left, 0.01)
            )
            break
        except HttpRefused as exc:
            if left > 1.0:
                await trio.sleep(0.2)
                continue
            return DkgOutcome(key_id, "unavailable", None, detail=str(exc))
        except HttpUnavailable as exc:  # sent, and then no answer: the outcome is unknown
            outcome = "timeout" if isinstance(exc, HttpTimeout) else "unavailable"
            took = trio.current_time() - start
            return DkgOutcome(key_id, outcome, None, detail=str(exc), seconds=took)
    took = trio.current_time() - start
    doc = resp.json()
    if resp.status == 201:
        holders = tuple(str(h) for h in doc.get("holders", [])) if isinstance(doc, dict) else ()
        return DkgOutcome(key_id, "completed", 201, holders, parse_key(doc), seconds=took)
    err = doc.get("error", {}) if isinstance(doc, dict) else {}
    code = str(err.get("code", "")) if isinstance(err, dict) else ""
    message = str(err.get("message", "")) if isinstance(err, dict) else ""
    outcome = {502: "aborted", 503: "unavailable", 504: "timeout"}.get(resp.status, "refused")
    return DkgOutcome(key_id, outcome, resp.status, detail=f"{code}: {message}", seconds=took)


def covering_sets(names: Sequence[str], t: int) -> list[tuple[str, ...]]:
    """Sets of ``t`` names, consecutive with wrap-around, covering every name."""
    n = len(names)
    out = []
    start = 0
    while start < n:
        out.append(tuple(names[(start + i) % n] for i in range(t)))
        start += t
    return out


async def rejoin_check(
    address: str,
    api_key: str,
    key_id: str,
    check: SignatureCheck,
    proxies: Mapping[str, Proxy],
    t: int,
    *,
    attempts_s: float = 20.0,
) -> dict[str, Any]:
    """Sign with each covering set alone (see the module header)."""
    names = list(proxies)
    rounds: list[dict[str, Any]] = []
    ok_nodes: set[str] = set()
    for group in covering_sets(names, t):
        for name, proxy in proxies.items():
            if name not in group:
                proxy.partition()
        result: dict[str, Any] = {"signers": list(group), "ok": False, "detail": ""}
        msg = bytes([len(rounds) + 1]) * 32
        with trio.move_on_after(attempts_s):
            while True:
                try:
                    resp = await request(
                        address,
                        "POST",
                        f"/v1/keys/{key_id}/sign",
                        body={"msgHash": msg_hash_to_hex(msg)},
                        api_key=api_key,
                        deadline_s=15.0,
                    )
                except HttpUnavailable as exc:
                    result["detail"] = str(exc)
                    await trio.sleep(0.2)
                    continue
                doc = resp.json()
                if resp.status != 200:
                    result["detail"] = f"HTTP {resp.status}: {str(doc)[:200]}"
                    await trio.sleep(0.2)  # sessions to the cut-off nodes may lag
                    continue
                why = await trio.to_thread.run_sync(check.check, msg, doc)
                signers = sorted(doc.get("signers", [])) if isinstance(doc, dict) else []
                if why is not None:
                    result["detail"] = why
                elif signers != sorted(group):
                    result["detail"] = f"signed by {signers}, expected {sorted(group)}"
                else:
                    result.update(ok=True, detail="")
                    ok_nodes.update(group)
                break
        for proxy in proxies.values():
            proxy.heal()
        rounds.append(result)
    return {
        "rounds": rounds,
        "nodes": {name: name in ok_nodes for name in names},
        "ok": all(r["ok"] for r in rounds),
    }


def node_data_dir(node: launcher.NodeLayout) -> Path:
    """The data dir a node config names (relative paths: relative to the config)."""
    doc = tomllib.loads(node.config.read_text())
    path = Path(str(doc["data_dir"]))
    return path if path.is_absolute() else (node.config.parent / path).resolve()


def key_states(layout: launcher.ClusterLayout, key_id: str) -> dict[str, str | None]:
    """Node name -> the latest status of ``key_id`` in its store (None: not there)."""
    out: dict[str, str | None] = {}
    for node in layout.nodes:
        key_dir = node_data_dir(node) / "keys" / key_id
        files = sorted(p for p in key_dir.glob("meta-*.json") if META_RE.match(p.name))
        if not files:
            out[node.name] = None
            continue
        try:
            status = json.loads(files[-1].read_text())["metadata"]["status"]
            out[node.name] = str(status)
        except (OSError, ValueError, KeyError, TypeError):
            out[node.name] = "unreadable"
    return out


def dkg_consistent(
    outcome: DkgOutcome, states: Mapping[str, str | None], threshold: int
) -> tuple[bool, str]:
    """Whether a ceremony ended cleanly on every node (module header). Without an
    answer (the coordinator restarted mid-ceremony) either end is clean: active
    nowhere, or active on at least t nodes with none left pending."""
    active = sorted(n for n, s in states.items() if s == "active")
    if outcome.outcome == "completed":
        holders = sorted(outcome.holders) if outcome.holders else sorted(states)
        if active != holders:
            return False, f"completed, but active on {active} and holders are {holders}"
        return True, "completed: active on every holder"
    left = sorted({s for s in states.values() if s is not None})
    if outcome.status is None and active:
        pending = sorted(n for n, s in states.items() if s == "pending")
        if len(active) >= threshold and not pending:
            return True, f"no answer, but it completed: active on {active}"
        return False, f"no answer; active on {active}, pending on {pending}"
    if active:
        return False, f"{outcome.outcome}, but active on {active}"
    return True, f"{outcome.outcome}: active nowhere (states: {left or ['absent']})"


def _checkpoints(paths: Sequence[Path]) -> list[Checkpoint]:
    """Every checkpoint in these checkpoint stores (unreadable or malformed: skipped;
    a bad checkpoint can only make the verification fail, never pass)."""
    out: list[Checkpoint] = []
    for path in paths:
        try:
            out += parse_checkpoints(path.read_bytes(), source=str(path))
        except (OSError, TkmsError):
            continue
    return out


def verify_audit_logs(layout: launcher.ClusterLayout) -> dict[str, dict[str, Any]]:
    """Name -> ``AuditReport.to_json()`` of every node's audit log, checked with the
    node's Ed25519 key and the checkpoints its peers and the coordinator keep, and of
    the coordinator's log (``coordinator``: its chain; its key is not in the manifest)."""
    manifest = parse_manifest(layout.manifest.read_text())
    coordinator_dir = layout.coordinator_config.parent
    stores = [coordinator_dir / CHECKPOINTS_FILE] + [
        node_data_dir(n) / CHECKPOINTS_FILE for n in layout.nodes
    ]
    checkpoints = _checkpoints([p for p in stores if p.exists()])
    logs = [(n.name, node_data_dir(n) / AUDIT_LOG_FILE) for n in layout.nodes]
    coordinator_log = coordinator_dir / AUDIT_LOG_FILE
    if coordinator_log.exists():
        logs.append(("coordinator", coordinator_log))
    out: dict[str, dict[str, Any]] = {}
    for name, path in logs:
        try:
            data = path.read_bytes()
        except OSError as exc:
            out[name] = {"valid": False, "reason": f"cannot read {path}: {exc.strerror}"}
            continue
        if name == "coordinator":
            out[name] = verify_log(data, public_key=None).to_json()
        else:
            key = manifest.node(name).ed25519_public_key
            out[name] = verify_log(data, public_key=key, checkpoints=checkpoints).to_json()
    return out

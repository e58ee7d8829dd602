"""JSON views of backend results for the HTTP API (spec section 7 point forms).

G1 points are ``{"X", "Y"}`` and G2 points ``{"X": [imag, real], "Y": [imag, real]}``
(Solidity / EIP-197 order), every number a decimal string; ``msgHash``,
``operatorId`` and ``transcriptHash`` are ``0x`` + 64 lowercase hex digits.
"""

from __future__ import annotations

from typing import Any

from coordinator.backend import DkgProgress, Health, KeyInfo, SignResult
from protocol.dkg import load_transcript
from protocol.encoding import g1_to_json, g2_to_json
from protocol.key_import import ImportTranscript, is_import_transcript


def hex32(b: bytes) -> str:
    return "0x" + b.hex()


def key_view(k: KeyInfo) -> dict[str, Any]:
    return {
        "keyId": k.key_id,
        "threshold": k.threshold,
        "n": k.n,
        "epoch": k.epoch,
        "status": k.status,
        "holders": list(k.holders),
        "pubkeyG1": g1_to_json(k.pk_g1),
        "pubkeyG2": g2_to_json(k.pk_g2),
        "operatorId": hex32(k.operator_id),
        "transcriptHash": hex32(k.transcript_hash),
    }


def signature_view(r: SignResult) -> dict[str, Any]:
    """The spec section 7 object plus ``keyId`` and ``signers``."""
    return {
        "msgHash": hex32(r.msg_hash),
        "sigma": g1_to_json(r.sigma),
        "apkG1": g1_to_json(r.apk_g1),
        "apkG2": g2_to_json(r.apk_g2),
        "keyId": r.key_id,
        "signers": list(r.signers),
    }


def health_view(h: Health) -> tuple[str, dict[str, Any]]:
    """(status, body): ``ok`` every node up and every active key can sign;
    ``degraded`` some node down or some active key cannot sign; ``unavailable`` no
    node up, or there are active keys and none of them can sign."""
    up = sum(1 for n in h.nodes if n.up)
    active = [k for k in h.keys if k.status == "active"]
    if up == 0 or (active and not any(k.can_sign for k in active)):
        status = "unavailable"
    elif up < len(h.nodes) or not all(k.can_sign for k in active):
        status = "degraded"
    else:
        status = "ok"
    body = {
        "status": status,
        "nodesUp": up,
        "nodesTotal": len(h.nodes),
        "nodes": [
            {"name": n.name, "up": n.up, **({"detail": n.detail} if n.detail else {})}
            for n in h.nodes
        ],
        "keys": [
            {
                "keyId": k.key_id,
                "status": k.status,
                "threshold": k.threshold,
                "holdersUp": k.holders_up,
                "canSign": k.can_sign,
            }
            for k in h.keys
        ],
    }
    return status, body


def progress_view(p: DkgProgress) -> dict[str, Any]:
    """A ceremony's progress: state, current phase, and every event so far."""
    return {
        "keyId": p.key_id,
        "state": p.state,
        "phase": p.phase,
        "reason": p.reason,
        "holders": list(p.holders),
        "events": [
            {"at": round(e.at, 3), "phase": e.phase, "message": e.message} for e in p.events
        ],
    }


def transcript_view(data: bytes) -> dict[str, Any]:
    """The transcript file format (``protocol.dkg.Transcript.to_json``): a readable
    summary plus the canonical bytes in hex, every field re-checked on load."""
    if is_import_transcript(data):  # an imported key: protocol.key_import's file format
        return ImportTranscript.decode(data).to_json()
    return load_transcript(data).to_json()

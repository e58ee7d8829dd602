"""JSON views of backend results for the HTTP API (spec section 7 point forms).

G1 points are ``{"X", "Y"}`` and G2 points ``{"X": [imag, real], "Y": [imag, real]}``
(Solidity / EIP-197 order), every number a decimal string; ``msgHash``,
``operatorId`` and ``transcriptHash`` are ``0x`` + 64 lowercase hex digits.
"""

from __future__ import annotations

import re
from typing import Any

from coordinator.backend import Health, KeyInfo, SignResult
from protocol.bn254 import G1, G2
from protocol.errors import DecodeError, InvalidLength

# TODO(bls): switch to protocol.encoding.{g1_to_json, g2_to_json, msg_hash_from_hex}.
_HEX_RE = re.compile(r"^0x[0-9a-fA-F]*$")


def g1_json(p: G1) -> dict[str, str]:
    return {"X": str(p.x), "Y": str(p.y)}


def g2_json(q: G2) -> dict[str, list[str]]:
    return {"X": [str(q.x[1]), str(q.x[0])], "Y": [str(q.y[1]), str(q.y[0])]}


def parse_msg_hash(s: str, field: str) -> bytes:
    if not _HEX_RE.match(s):
        raise DecodeError(field, "expected '0x' followed by hex digits")
    if len(s) != 66:
        raise InvalidLength(field, f"expected 32 bytes (64 hex digits), got {len(s) - 2} digits")
    return bytes.fromhex(s[2:])


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
        "pubkeyG1": g1_json(k.pk_g1),
        "pubkeyG2": g2_json(k.pk_g2),
        "operatorId": hex32(k.operator_id),
        "transcriptHash": hex32(k.transcript_hash),
    }


def signature_view(r: SignResult) -> dict[str, Any]:
    """The spec section 7 object plus ``keyId`` and ``signers``."""
    return {
        "msgHash": hex32(r.msg_hash),
        "sigma": g1_json(r.sigma),
        "apkG1": g1_json(r.apk_g1),
        "apkG2": g2_json(r.apk_g2),
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

"""The node RPC methods of threshold signing, key destruction and audit checkpoints.

Declared with ``protocol.node_api.define`` (so they live in the same method table and
the node's handler registry accepts them); importing this module registers them. Both
the node (``node/handlers/signing.py``, ``node/handlers/audit.py``) and the coordinator
(``coordinator/signer.py``) import these declarations.

* ``sign.partial`` ``{key_id, epoch, client, msg_hash (32 B) | point (64 B)}`` ->
  ``{index, sigma, proof}``: σ_j = s_j·H(m) (or s_j·P for an already hashed point,
  cerberus SignG1) with its DLEQ proof (``protocol.aggregation.sign_partial``).
* ``sign.batch`` ``{key_id, epoch, client, msg_hashes (1..256)}`` -> ``{index, items}``,
  one item per hash in request order: ``{sigma, proof}`` or ``{error: {code, message}}``.
* ``keys.destroy`` ``{key_id, epoch[, client]}`` -> ``{key_id, status}``: crypto-shred the
  share (idempotent: a destroyed key answers ``destroyed``).
* ``audit.checkpoint`` ``{}`` -> the node's signed audit checkpoint ``{log, seq, head, sig}``.
* ``audit.anchor`` ``{node, checkpoint}`` -> ``{stored}``: a peer's checkpoint relayed by
  the coordinator; the node checks it against the manifest's Ed25519 key of ``node``.

``client`` is the client id the coordinator authenticated; the node applies its own
policy to it. A node refuses with an ``RpcError`` whose code is a ``Refusal`` (>= 100);
the coordinator maps the codes back (``Refusal.name`` is what the audit logs record).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from protocol.aggregation import PartialSignature
from protocol.audit import Checkpoint
from protocol.encoding import g1_from_bytes, g1_to_bytes
from protocol.errors import TkmsError
from protocol.node_api import (
    EPOCH,
    G1_BYTES,
    HASH32,
    KEY_ID,
    KEY_STATUS,
    NODE_INDEX,
    NODE_NAME,
    NodeApiError,
    define,
)
from protocol.proofs import PROOF_LEN, DleqProof
from protocol.rpc import Bool, Bytes, Int, ListOf, Str, Struct

MAX_BATCH = 256
# The coordinator's client ids (coordinator.auth) and the audit record's name rule.
CLIENT_ID = Str(max_len=64, min_len=1, pattern=r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PROOF = Bytes(PROOF_LEN)
LOG_ID = Str(max_len=128, min_len=1, pattern=r"[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}")


class Refusal(enum.IntEnum):
    """Why a node refused (RPC error codes of the signing methods)."""

    UNKNOWN_KEY = 100
    KEY_NOT_ACTIVE = 101
    EPOCH_MISMATCH = 102
    CLIENT_NOT_ALLOWED = 103
    USAGE_LIMIT = 104
    AUDIT_UNAVAILABLE = 105  # the node cannot record the decision: it signs nothing
    BAD_INPUT = 106
    NOT_ALLOWED = 107  # the node's policy forbids the operation (e.g. destroy)
    BAD_CHECKPOINT = 108
    USAGE_UNAVAILABLE = 109  # the usage counters cannot be read or persisted

    @property
    def label(self) -> str:
        """The lower-case name audit records and logs use (``usage_limit``)."""
        return self.name.lower()


def refusal_of(code: int) -> Refusal | None:
    try:
        return Refusal(code)
    except ValueError:
        return None


ITEM_ERROR = Struct({"code": Int(100, 999), "message": Str(max_len=256)})
PARTIAL = Struct({"index": NODE_INDEX, "sigma": G1_BYTES, "proof": PROOF})
BATCH_ITEM = Struct({}, optional={"sigma": G1_BYTES, "proof": PROOF, "error": ITEM_ERROR})
CHECKPOINT = Struct({"log": LOG_ID, "seq": Int(0, 2**63 - 1), "head": HASH32, "sig": Bytes(64)})

SIGN_PARTIAL = define(
    "sign.partial",
    params=Struct(
        {"key_id": KEY_ID, "epoch": EPOCH, "client": CLIENT_ID},
        optional={"msg_hash": HASH32, "point": G1_BYTES},
    ),
    result=PARTIAL,
)

SIGN_BATCH = define(
    "sign.batch",
    params=Struct(
        {
            "key_id": KEY_ID,
            "epoch": EPOCH,
            "client": CLIENT_ID,
            "msg_hashes": ListOf(HASH32, min_len=1, max_len=MAX_BATCH),
        }
    ),
    result=Struct({"index": NODE_INDEX, "items": ListOf(BATCH_ITEM, max_len=MAX_BATCH)}),
)

KEYS_DESTROY = define(
    "keys.destroy",
    params=Struct({"key_id": KEY_ID, "epoch": EPOCH}, optional={"client": CLIENT_ID}),
    result=Struct({"key_id": KEY_ID, "status": KEY_STATUS}),
)

AUDIT_CHECKPOINT = define("audit.checkpoint", params=Struct({}), result=CHECKPOINT)

AUDIT_ANCHOR = define(
    "audit.anchor",
    params=Struct({"node": NODE_NAME, "checkpoint": CHECKPOINT}),
    result=Struct({"stored": Bool()}),
)


class SignInputError(TkmsError):
    """A signing request names neither or both of ``msg_hash`` and ``point``."""


def signing_input(params: Mapping[str, Any]) -> tuple[bytes, bool]:
    """(what the proof is bound to, whether it is a point) of ``sign.partial`` params."""
    has_hash, has_point = "msg_hash" in params, "point" in params
    if has_hash == has_point:
        raise SignInputError("give exactly one of msg_hash and point")
    return (params["point"], True) if has_point else (params["msg_hash"], False)


def partial_to_wire(p: PartialSignature) -> dict[str, Any]:
    return {"index": p.index, "sigma": g1_to_bytes(p.sigma), "proof": p.proof.to_bytes()}


def partial_from_wire(value: Mapping[str, Any], *, index: int, field: str) -> PartialSignature:
    """A schema-checked partial from the node with ``index``: the point is validated
    (on the curve, not infinity: an honest σ_j never is) and the proof decoded."""
    if value["index"] != index:
        raise NodeApiError(f"{field}.index", f"is {value['index']}, the node's index is {index}")
    sigma = g1_from_bytes(value["sigma"], field=f"{field}.sigma")
    proof = DleqProof.from_bytes(value["proof"])
    return PartialSignature(index=index, sigma=sigma, proof=proof)


def checkpoint_to_wire(cp: Checkpoint) -> dict[str, Any]:
    return cp.to_fields()


def checkpoint_from_wire(value: Mapping[str, Any]) -> Checkpoint:
    return Checkpoint.from_fields(dict(value))

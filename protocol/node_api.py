"""The node's RPC methods: names and schemas shared by the node (server) and the
coordinator (client), which never import each other (DESIGN.md §Transport).

A method is a ``protocol.rpc.Method`` declared once here with ``define``; the node
serves it through a handler registered in ``node/handlers/`` and the coordinator
calls it with ``SessionManager.call(node, METHOD, params)``. Both ends check the
schemas, so a handler that returns a malformed result fails on the node, and a
result that fails the schema never reaches coordinator code.

Adding a method end to end (e.g. signing)::

    # 1. here
    SIGN = define(
        "sign.partial",
        params=Struct({"key_id": KEY_ID, "msg_hash": Bytes(32)}),
        result=Struct({"sigma": Bytes(64), "proof": Bytes(64)}),
    )
    # 2. node/handlers/signing.py: def register(registry, ctx): registry.add(SIGN, handler)
    #    and list the module in node.handlers.HANDLER_MODULES
    # 3. coordinator: await sessions.call(name, node_api.SIGN, {...}, timeout=...)

Results that carry structure get a frozen dataclass with ``to_wire`` /
``from_wire`` (``NodeStatus``, ``PublicKeyMetadata``); ``from_wire`` assumes the
schema already passed and checks what a schema cannot (t <= n, one public share per
holder). Points travel uncompressed (G1 64 bytes X‖Y, G2 128 bytes EIP-197 order)
and are validated by ``PublicKeyMetadata.points()`` before anyone uses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol.bn254 import G1, G2
from protocol.encoding import g1_from_bytes, g2_from_bytes
from protocol.errors import DecodeError, Fault
from protocol.rpc import Bool, Bytes, Choice, Int, ListOf, Method, Nullable, Schema, Str, Struct

MAX_NODES = 1024  # the manifest's bound on node indices
MAX_EPOCH = 2**32 - 1
KEYS_PAGE = 64  # keys per keys.list page (a 5-node key is ~1 KiB on the wire)
KEY_STATUSES = ("pending", "active", "retiring", "destroyed")

# -- shared field schemas ---------------------------------------------------------------

KEY_ID = Str(max_len=64, min_len=1, pattern=r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NODE_NAME = Str(max_len=63, min_len=1, pattern=r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
NODE_INDEX = Int(1, MAX_NODES)
EPOCH = Int(0, MAX_EPOCH)
KEY_STATUS = Choice(KEY_STATUSES)
G1_BYTES = Bytes(64)
G2_BYTES = Bytes(128)
HASH32 = Bytes(32)


class NodeApiError(DecodeError):
    """A node's answer passed its schema but is inconsistent (e.g. t > n)."""

    fault = Fault.PEER


# -- the method table -------------------------------------------------------------------

METHODS: dict[str, Method] = {}


def define(name: str, *, params: Struct, result: Schema) -> Method:
    """Declare a node RPC method (once per name) and return it."""
    if name in METHODS:
        raise ValueError(f"node method {name} is defined twice")
    method = Method(name, params=params, result=result)
    METHODS[name] = method
    return method


# -- node.status ------------------------------------------------------------------------

KEY_SUMMARY = Struct({"key_id": KEY_ID, "epoch": EPOCH, "status": KEY_STATUS})

NODE_STATUS = define(
    "node.status",
    params=Struct({}),
    result=Struct(
        {
            "name": NODE_NAME,
            "index": NODE_INDEX,
            "protocol_version": Int(0, 65535),
            "cluster_id": Bytes(16),
            "noise_public_key": Bytes(32),
            "ed25519_public_key": Bytes(32),
            "keys": ListOf(KEY_SUMMARY, max_len=4096),
        }
    ),
)


@dataclass(frozen=True, slots=True)
class KeySummary:
    key_id: str
    epoch: int
    status: str


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """Who a node says it is, and the keys it holds (ids, epochs and statuses only)."""

    name: str
    index: int
    protocol_version: int
    cluster_id: bytes
    noise_public_key: bytes
    ed25519_public_key: bytes
    keys: tuple[KeySummary, ...]

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.index,
            "protocol_version": self.protocol_version,
            "cluster_id": self.cluster_id,
            "noise_public_key": self.noise_public_key,
            "ed25519_public_key": self.ed25519_public_key,
            "keys": [{"key_id": k.key_id, "epoch": k.epoch, "status": k.status} for k in self.keys],
        }

    @classmethod
    def from_wire(cls, value: Mapping[str, Any]) -> NodeStatus:
        return cls(
            name=value["name"],
            index=value["index"],
            protocol_version=value["protocol_version"],
            cluster_id=value["cluster_id"],
            noise_public_key=value["noise_public_key"],
            ed25519_public_key=value["ed25519_public_key"],
            keys=tuple(KeySummary(k["key_id"], k["epoch"], k["status"]) for k in value["keys"]),
        )


# -- keys.list --------------------------------------------------------------------------

KEY_METADATA = Struct(
    {
        "key_id": KEY_ID,
        "epoch": EPOCH,
        "t": Int(1, MAX_NODES),
        "n": Int(1, MAX_NODES),
        "holders": ListOf(NODE_INDEX, min_len=1, max_len=MAX_NODES),
        "status": KEY_STATUS,
        "pk_g1": G1_BYTES,
        "pk_g2": G2_BYTES,
        "public_shares": ListOf(
            Struct({"index": NODE_INDEX, "point": G1_BYTES}), min_len=1, max_len=MAX_NODES
        ),
        "transcript_hash": HASH32,
    }
)

KEYS_LIST = define(
    "keys.list",
    params=Struct({}, optional={"after": KEY_ID, "limit": Int(1, KEYS_PAGE)}),
    result=Struct({"keys": ListOf(KEY_METADATA, max_len=KEYS_PAGE), "more": Bool()}),
)
"""Public metadata of every key the node holds, sorted by key id, a page at a time:
``{"after": last key id of the previous page}``; ``more`` says another page follows."""


@dataclass(frozen=True, slots=True)
class PublicKeyMetadata:
    """One key's public data as one node holds it (DESIGN.md "Key metadata")."""

    key_id: str
    epoch: int
    t: int
    n: int
    holders: tuple[int, ...]  # node indices
    status: str
    pk_g1: bytes
    pk_g2: bytes
    public_shares: tuple[tuple[int, bytes], ...]  # (index, G1 bytes), sorted by index
    transcript_hash: bytes

    def to_wire(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "epoch": self.epoch,
            "t": self.t,
            "n": self.n,
            "holders": list(self.holders),
            "status": self.status,
            "pk_g1": self.pk_g1,
            "pk_g2": self.pk_g2,
            "public_shares": [{"index": i, "point": p} for i, p in self.public_shares],
            "transcript_hash": self.transcript_hash,
        }

    @classmethod
    def from_wire(cls, value: Mapping[str, Any]) -> PublicKeyMetadata:
        """From a schema-checked ``KEY_METADATA`` value; ``NodeApiError`` if inconsistent."""
        key_id = value["key_id"]
        holders = tuple(value["holders"])
        shares = tuple(sorted((s["index"], s["point"]) for s in value["public_shares"]))
        if not 1 <= value["t"] <= value["n"]:
            raise NodeApiError(f"keys.{key_id}.t", "must be in [1, n]")
        if len(holders) != value["n"] or len(set(holders)) != len(holders):
            raise NodeApiError(f"keys.{key_id}.holders", "must be n distinct indices")
        if [i for i, _ in shares] != sorted(holders):
            raise NodeApiError(f"keys.{key_id}.public_shares", "one share per holder")
        return cls(
            key_id=key_id,
            epoch=value["epoch"],
            t=value["t"],
            n=value["n"],
            holders=holders,
            status=value["status"],
            pk_g1=value["pk_g1"],
            pk_g2=value["pk_g2"],
            public_shares=shares,
            transcript_hash=value["transcript_hash"],
        )

    def public_part(self) -> tuple[Any, ...]:
        """Everything but the status: what every holder must agree on."""
        return (
            self.key_id,
            self.epoch,
            self.t,
            self.n,
            self.holders,
            self.pk_g1,
            self.pk_g2,
            self.public_shares,
            self.transcript_hash,
        )

    def points(self) -> tuple[G1, G2, dict[int, G1]]:
        """(PK in G1, PK in G2, public shares), each validated (on curve, G2 subgroup,
        not infinity); ``InvalidPoint`` / ``InvalidLength`` name the field."""
        where = f"keys.{self.key_id}"
        pk_g1 = g1_from_bytes(self.pk_g1, field=f"{where}.pk_g1")
        pk_g2 = g2_from_bytes(self.pk_g2, field=f"{where}.pk_g2")
        shares = {
            i: g1_from_bytes(p, field=f"{where}.public_shares[{i}]") for i, p in self.public_shares
        }
        return pk_g1, pk_g2, shares


# -- dkg.* : one DKG ceremony, driven by the coordinator (DESIGN.md §DKG) ----------------
#
# The coordinator relays; each call carries one relayed message (the canonical bytes
# of a ``protocol.dkg.relayed`` type) for the node's ceremony of ``key_id`` and gets
# the node's answer: the phase the node is in now and the signed message it sends
# (or nil). Method → relayed message → the node's answer:
#
#   dkg.open      Proposal          Open (fresh nonce and encryption key)
#   dkg.deal      OpenSet           DealBundle
#   dkg.echo      BundleSet         Echo (after checking every bundle)
#   dkg.complain  EchoSet           Complaints (possibly empty)
#   dkg.justify   ComplaintSet      Justification, nil, or (no complaint to answer)
#                                   TranscriptSignature with the share sealed pending
#   dkg.finish    JustificationSet  TranscriptSignature (share sealed pending)
#   dkg.commit    CommitCertificate nil, phase "done" (verified, key activated)
#   dkg.abort     Abort             nil, phase "aborted" (pending share destroyed)
#
# ``dkg.state`` lists the node's unfinished ceremonies (or, with ``key_id``, also the
# committed one) for the coordinator's roll-forward; ``dkg.transcript`` returns a
# committed key's transcript. Refusals use the codes below.

DKG_PHASES = (
    "init", "open", "deal", "echo", "complain", "justify", "finish", "done", "aborted",
)  # fmt: skip
DKG_PHASE = Choice(DKG_PHASES)
MAX_DKG_MESSAGE = 8 * 1024 * 1024  # a BundleSet of 2 x 1024 dealers is far below this
DKG_BYTES = Bytes(max_len=MAX_DKG_MESSAGE)
COORDINATOR_NAME = NODE_NAME
INSTANCE_ID = Bytes(16)
MAX_PHASE_TIMEOUT_MS = 600_000

# Application error codes of the dkg.* methods.
DKG_KEY_EXISTS = 110  # the key id exists on this node (active, or not re-creatable)
DKG_BUSY = 111  # another ceremony for this key id is in progress on this node
DKG_UNKNOWN = 112  # no ceremony for this key id here (e.g. restarted before sealing)
DKG_RELAY_FAULT = 113  # the relay sent what an honest relay never sends: node aborted
DKG_ABORTED = 114  # the node's own checks ended the ceremony (reason in the message)
DKG_COMMITTED = 115  # abort refused: this node holds a commit certificate
DKG_BAD_COMMIT = 116  # the commit certificate does not verify (nothing changed)

DKG_STEP_RESULT = Struct({"phase": DKG_PHASE, "message": Nullable(DKG_BYTES)})
_STEP_PARAMS = Struct({"key_id": KEY_ID, "message": DKG_BYTES})


@dataclass(frozen=True, slots=True)
class DkgStep:
    """A node's answer to one relayed message."""

    phase: str
    message: bytes | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"phase": self.phase, "message": self.message}

    @classmethod
    def from_wire(cls, value: Mapping[str, Any]) -> DkgStep:
        return cls(phase=value["phase"], message=value["message"])


DKG_OPEN = define(
    "dkg.open",
    params=Struct(
        {
            "key_id": KEY_ID,
            "message": DKG_BYTES,
            "coordinator": COORDINATOR_NAME,
            "instance": INSTANCE_ID,
            "phase_timeout_ms": Int(1, MAX_PHASE_TIMEOUT_MS),
        }
    ),
    result=DKG_STEP_RESULT,
)
"""Start a ceremony from a ``Proposal``; ``coordinator`` / ``instance`` name the
coordinator process driving it (a restarted coordinator has a new instance id) and
``phase_timeout_ms`` its phase deadline (the node waits longer than that before it
gives up on a phase by itself)."""

DKG_DEAL = define("dkg.deal", params=_STEP_PARAMS, result=DKG_STEP_RESULT)
DKG_ECHO = define("dkg.echo", params=_STEP_PARAMS, result=DKG_STEP_RESULT)
DKG_COMPLAIN = define("dkg.complain", params=_STEP_PARAMS, result=DKG_STEP_RESULT)
DKG_JUSTIFY = define("dkg.justify", params=_STEP_PARAMS, result=DKG_STEP_RESULT)
DKG_FINISH = define("dkg.finish", params=_STEP_PARAMS, result=DKG_STEP_RESULT)
DKG_COMMIT = define("dkg.commit", params=_STEP_PARAMS, result=DKG_STEP_RESULT)
DKG_ABORT = define(
    "dkg.abort",
    params=Struct({"key_id": KEY_ID, "message": DKG_BYTES}, optional={"ceremony": HASH32}),
    result=DKG_STEP_RESULT,
)
"""Abort the node's ceremony for ``key_id`` (only the one with id ``ceremony`` when
given). Idempotent: no ceremony there answers phase "aborted". Refused with
``DKG_COMMITTED`` when the node already holds a commit certificate for it."""

CEREMONY_STATE = Struct(
    {
        "key_id": KEY_ID,
        "epoch": EPOCH,
        "ceremony": Bytes(max_len=32),  # empty until every Open is in
        "phase": DKG_PHASE,
        "participants": ListOf(NODE_INDEX, max_len=MAX_NODES),
        "coordinator": Nullable(COORDINATOR_NAME),  # nil once committed
        "instance": Nullable(INSTANCE_ID),
        "idle_ms": Int(0, 2**62),
        "commit": Nullable(DKG_BYTES),
    }
)

DKG_STATE = define(
    "dkg.state",
    params=Struct({}, optional={"key_id": KEY_ID}),
    result=Struct({"ceremonies": ListOf(CEREMONY_STATE, max_len=4096)}),
)
"""The node's ceremonies that are not over (and with ``key_id``, also the committed
ceremony of that key): phase, how long it has waited, and the commit certificate if
the node holds one."""


@dataclass(frozen=True, slots=True)
class CeremonyState:
    """One ceremony as one node sees it (``dkg.state``)."""

    key_id: str
    epoch: int
    ceremony: bytes  # b"" before the ceremony id exists
    phase: str
    participants: tuple[int, ...]
    coordinator: str | None
    instance: bytes | None
    idle_ms: int
    commit: bytes | None  # canonical CommitCertificate bytes, if held

    def to_wire(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "epoch": self.epoch,
            "ceremony": self.ceremony,
            "phase": self.phase,
            "participants": list(self.participants),
            "coordinator": self.coordinator,
            "instance": self.instance,
            "idle_ms": self.idle_ms,
            "commit": self.commit,
        }

    @classmethod
    def from_wire(cls, value: Mapping[str, Any]) -> CeremonyState:
        ceremony = value["ceremony"]
        if len(ceremony) not in (0, 32):
            raise NodeApiError("ceremonies.ceremony", "must be empty or 32 bytes")
        return cls(
            key_id=value["key_id"],
            epoch=value["epoch"],
            ceremony=ceremony,
            phase=value["phase"],
            participants=tuple(value["participants"]),
            coordinator=value["coordinator"],
            instance=value["instance"],
            idle_ms=value["idle_ms"],
            commit=value["commit"],
        )


DKG_TRANSCRIPT = define(
    "dkg.transcript",
    params=Struct({"key_id": KEY_ID, "epoch": EPOCH}),
    result=Struct({"transcript": DKG_BYTES}),
)
"""The stored transcript of a committed ceremony (canonical ``Transcript`` bytes)."""

"""The node RPC methods of key import (``protocol.key_import``), declared in the node
method table (``protocol.node_api.define``; importing this module registers them).
The node serves them in ``node/handlers/key_import.py``; the coordinator calls them
from ``coordinator/key_import.py``. Messages travel as their canonical bytes.

* ``keys.import_open`` ``{key_id, epoch}`` -> ``{message}``: a signed ``ImportOpen``
  with a fresh X25519 key the node keeps in memory only, for ``OPEN_TTL_S``. Refused
  (``KEY_EXISTS``) for a key id this node holds or ever held, other than an aborted
  import or DKG; ``BUSY`` while an import of that key id is pending. A newer open of
  the same key id replaces an older one (its X25519 key is dropped).
* ``keys.import_share`` ``{key_id, message}`` -> ``{message}``: the ``ImportBundle``;
  the node checks it, decrypts and checks its share, seals it PENDING, drops the
  X25519 key and answers its signed ``ImportSignature``. A bundle that fails a check
  is ``REJECTED`` (nothing sealed, the open is dropped).
* ``keys.commit`` ``{key_id, certificate}`` -> ``{key_id, status}``: the
  ``CommitCertificate`` of the node's pending import of ``key_id``; verified against
  the manifest (every holder signed), then the key is activated and the transcript
  stored. ``BAD_COMMIT`` changes nothing. Idempotent once active.
* ``keys.import_abort`` ``{key_id}`` (optional ``ceremony``: only that import) ->
  ``{key_id, status}``: drop the open, or destroy the pending share and its token key.
  Idempotent (``status`` is ``"aborted"`` either way); ``COMMITTED`` once active.

* ``keys.import_state`` (optional ``key_id``) -> ``{imports}``: the node's pending
  imports (with ``key_id``: also that key once an import activated it, with the commit
  certificate the node holds), for the coordinator's roll-forward
  (``coordinator.import_recovery``).

A pending share is never expired by the node: once it signed, a certificate may exist
(every holder signed and the coordinator has it), so only a coordinator ends it, by
``keys.commit`` or (after finding no certificate on any holder) ``keys.import_abort``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol.node_api import (
    COORDINATOR_NAME,
    EPOCH,
    HASH32,
    KEY_ID,
    KEY_STATUS,
    MAX_NODES,
    NODE_INDEX,
    define,
)
from protocol.rpc import Bytes, Choice, Int, ListOf, Nullable, Str, Struct

MAX_IMPORT_MESSAGE = 1 << 20  # a bundle for 256 holders is ~70 KiB
MESSAGE = Bytes(max_len=MAX_IMPORT_MESSAGE)
OPEN_TTL_S = 300.0  # an open X25519 key lives this long without a bundle


class ImportRefusal(enum.IntEnum):
    """Application error codes of the ``keys.import_*`` / ``keys.commit`` methods."""

    KEY_EXISTS = 120  # the key id exists on this node: never overwritten
    BUSY = 121  # another import (or ceremony) of this key id is in progress here
    UNKNOWN = 122  # no open (or no pending import) of this key id here
    REJECTED = 123  # the bundle fails a check (named in the message); nothing sealed
    BAD_COMMIT = 124  # the certificate does not verify; nothing changed
    COMMITTED = 125  # abort refused: the import is committed (the key is active)

    @property
    def label(self) -> str:
        return self.name.lower()


def import_refusal_of(code: int) -> ImportRefusal | None:
    try:
        return ImportRefusal(code)
    except ValueError:
        return None


KEY_RESULT = Struct({"key_id": KEY_ID, "status": KEY_STATUS})

IMPORT_OPEN = define(
    "keys.import_open",
    params=Struct({"key_id": KEY_ID, "epoch": EPOCH}),
    result=Struct({"message": MESSAGE}),
)
IMPORT_SHARE = define(
    "keys.import_share",
    params=Struct(
        {"key_id": KEY_ID, "message": MESSAGE}, optional={"coordinator": COORDINATOR_NAME}
    ),
    result=Struct({"message": MESSAGE}),
)
KEYS_COMMIT = define(
    "keys.commit",
    params=Struct({"key_id": KEY_ID, "certificate": MESSAGE}),
    result=KEY_RESULT,
)
IMPORT_ABORT = define(
    "keys.import_abort",
    params=Struct({"key_id": KEY_ID}, optional={"ceremony": HASH32}),
    result=Struct({"key_id": KEY_ID, "status": Str(max_len=16)}),
)

IMPORT_STATE_ENTRY = Struct(
    {
        "key_id": KEY_ID,
        "ceremony": HASH32,  # the import id
        "status": Choice(("pending", "active")),
        "holders": ListOf(NODE_INDEX, max_len=MAX_NODES),
        "coordinator": Nullable(COORDINATOR_NAME),  # who relayed the bundle, if known
        "idle_ms": Int(0, 2**62),
        "certificate": Nullable(MESSAGE),  # held once active
    }
)

IMPORT_STATE = define(
    "keys.import_state",
    params=Struct({}, optional={"key_id": KEY_ID}),
    result=Struct({"imports": ListOf(IMPORT_STATE_ENTRY, max_len=4096)}),
)


@dataclass(frozen=True, slots=True)
class ImportState:
    """One import as one node sees it (``keys.import_state``)."""

    key_id: str
    ceremony: bytes
    status: str
    holders: tuple[int, ...]
    coordinator: str | None
    idle_ms: int
    certificate: bytes | None

    def to_wire(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "ceremony": self.ceremony,
            "status": self.status,
            "holders": list(self.holders),
            "coordinator": self.coordinator,
            "idle_ms": self.idle_ms,
            "certificate": self.certificate,
        }

    @classmethod
    def from_wire(cls, value: Mapping[str, Any]) -> ImportState:
        return cls(
            key_id=value["key_id"],
            ceremony=value["ceremony"],
            status=value["status"],
            holders=tuple(value["holders"]),
            coordinator=value["coordinator"],
            idle_ms=value["idle_ms"],
            certificate=value["certificate"],
        )

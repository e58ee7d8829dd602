"""JSON forms of key import messages for the HTTP API (docs/api.md, "Key import").

Points follow spec section 7 (G1 ``{"X", "Y"}``, G2 ``{"X": [imag, real], "Y": [imag,
real]}``, decimal strings); byte strings are ``0x`` + lowercase hex (either case on
input). Signed node messages (``ImportOpen``) travel as the hex of their canonical
bytes, so the CLI checks exactly the bytes the node signed.

* ``POST /v1/keys/import/open`` answer: ``{"keyId", "epoch", "opens": [{"node",
  "index", "open"}], "missing": [{"node", "reason"}]}`` (``opening_to_json`` /
  ``opens_from_json``).
* ``POST /v1/keys/import`` body: ``{"keyId", "threshold", "minHolders"?,
  "commitments": [G1, ...], "pubkeyG2": G2, "ephemeralKey": "0x…", "opens": ["0x…"],
  "shares": [{"index", "ciphertext"}]}`` (``bundle_to_json`` / ``bundle_from_json``).
  The cluster id and epoch come from the opens (the nodes signed them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from protocol.dkg import codec as c
from protocol.encoding import (
    g1_from_bytes,
    g1_from_json,
    g1_to_bytes,
    g1_to_json,
    g2_from_bytes,
    g2_from_json,
    g2_to_bytes,
    g2_to_json,
)
from protocol.errors import DecodeError, InvalidLength
from protocol.key_import import ImportBundle, ImportOpen

BUNDLE_FIELDS = frozenset(
    {"keyId", "threshold", "commitments", "pubkeyG2", "ephemeralKey", "opens", "shares"}
)
MAX_ITEMS = c.MAX_PARTICIPANTS


def hex_bytes(
    value: Any, field: str, *, length: int | None = None, max_len: int = 1 << 16
) -> bytes:
    """``0x`` + hex digits -> bytes (exactly ``length`` of them when given)."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise DecodeError(field, "must be a 0x-prefixed hex string")
    if len(value) > 2 + 2 * max_len:
        raise InvalidLength(field, f"at most {max_len} bytes")
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        raise DecodeError(field, "is not hex") from None
    if length is not None and len(raw) != length:
        raise InvalidLength(field, f"expected {length} bytes, got {len(raw)}")
    return raw


def to_hex(raw: bytes) -> str:
    return "0x" + raw.hex()


def _list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise DecodeError(field, "must be a list")
    if not 1 <= len(value) <= MAX_ITEMS:
        raise DecodeError(field, f"must hold 1 to {MAX_ITEMS} items")
    return value


def opening_to_json(
    key_id: str,
    epoch: int,
    opens: Sequence[tuple[str, ImportOpen]],
    missing: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    return {
        "keyId": key_id,
        "epoch": epoch,
        "opens": [
            {"node": name, "index": o.sender, "open": to_hex(o.encode())} for name, o in opens
        ],
        "missing": [{"node": name, "reason": reason} for name, reason in missing],
    }


def decode_open(value: Any, field: str) -> ImportOpen:
    raw = hex_bytes(value, field, max_len=1024)
    try:
        return ImportOpen.decode(raw)
    except DecodeError as exc:
        raise DecodeError(field, f"not a node's signed open ({exc})") from None


def opens_from_json(obj: Mapping[str, Any]) -> list[ImportOpen]:
    """The opens of an ``opening_to_json`` object (signatures NOT checked here)."""
    items = obj.get("opens")
    if not isinstance(items, list):
        raise DecodeError("opens", "must be a list")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "open" not in item:
            raise DecodeError(f"opens[{i}]", "must be an object with an 'open' field")
        out.append(decode_open(item["open"], f"opens[{i}].open"))
    return out


def bundle_to_json(bundle: ImportBundle, *, min_holders: int | None = None) -> dict[str, Any]:
    """The ``POST /v1/keys/import`` body for ``bundle``."""
    body: dict[str, Any] = {
        "keyId": bundle.key_id,
        "threshold": bundle.threshold,
        "commitments": [
            g1_to_json(g1_from_bytes(b, field="commitments")) for b in bundle.commitments
        ],
        "pubkeyG2": g2_to_json(g2_from_bytes(bundle.pubkey_g2, field="pubkeyG2")),
        "ephemeralKey": to_hex(bundle.ephemeral),
        "opens": [to_hex(o.encode()) for o in bundle.opens],
        "shares": [{"index": j, "ciphertext": to_hex(ct)} for j, ct in bundle.shares],
    }
    if min_holders is not None:
        body["minHolders"] = min_holders
    return body


def _share(value: Any, field: str) -> list[Any]:
    if not isinstance(value, dict) or set(value) != {"index", "ciphertext"}:
        raise DecodeError(field, "must be {index, ciphertext}")
    index = value["index"]
    if isinstance(index, bool) or not isinstance(index, int):
        raise DecodeError(f"{field}.index", "must be an integer")
    return [index, hex_bytes(value["ciphertext"], f"{field}.ciphertext", length=c.CIPHERTEXT_LEN)]


def bundle_from_json(obj: Mapping[str, Any]) -> ImportBundle:
    """An ``ImportBundle`` from the request body (every point validated; the strict
    bundle decoder then checks the structure). Raises ``DecodeError`` naming the field."""
    opens = [decode_open(v, f"opens[{i}]") for i, v in enumerate(_list(obj["opens"], "opens"))]
    commitments = [
        g1_to_bytes(g1_from_json(v, field=f"commitments[{i}]"))
        for i, v in enumerate(_list(obj["commitments"], "commitments"))
    ]
    pubkey_g2 = g2_to_bytes(g2_from_json(obj["pubkeyG2"], field="pubkeyG2"))
    shares = [_share(v, f"shares[{i}]") for i, v in enumerate(_list(obj["shares"], "shares"))]
    threshold = obj["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise DecodeError("threshold", "must be an integer")
    if not isinstance(obj["keyId"], str):
        raise DecodeError("keyId", "must be a string")
    wire = {
        "kind": ImportBundle.KIND,
        "cluster": opens[0].cluster,
        "key_id": obj["keyId"],
        "epoch": opens[0].epoch,
        "threshold": threshold,
        "opens": [o.to_wire() for o in opens],
        "commitments": commitments,
        "pubkey_g2": pubkey_g2,
        "ephemeral": hex_bytes(obj["ephemeralKey"], "ephemeralKey", length=c.X25519_LEN),
        "shares": shares,
    }
    try:
        return ImportBundle.from_wire(wire, "bundle")
    except DecodeError as exc:
        raise DecodeError(_json_field(exc.field), exc.reason) from None


_WIRE_TO_JSON = {
    "bundle.key_id": "keyId",
    "bundle.threshold": "threshold",
    "bundle.commitments": "commitments",
    "bundle.shares": "shares",
    "bundle.opens": "opens",
}


def _json_field(wire_field: str) -> str:
    for prefix, name in _WIRE_TO_JSON.items():
        if wire_field.startswith(prefix):
            return name + wire_field[len(prefix) :]
    return wire_field

"""Strict request validation for the HTTP API, done before any backend call.

JSON bodies: UTF-8, one object, no duplicate names, no NaN/Infinity, no unknown
fields, every required field present with the exact type. Hex values: ``0x`` and
exactly the expected number of hex digits. Key ids: ``backend.KEY_ID_PATTERN``.
Every failure is an ``ApiError`` 400 naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from coordinator.backend import is_valid_key_id
from coordinator.http.core import ApiError
from protocol.encoding import msg_hash_from_hex
from protocol.errors import DecodeError

RESERVED_KEY_IDS = frozenset({"import"})  # literal path segments under /v1/keys
MAX_THRESHOLD = 1024


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ApiError(400, "malformed_json", f"duplicate field {k!r}", field=k)
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ApiError(400, "malformed_json", f"{name} is not valid JSON")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, strictly."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "malformed_json", "body is not UTF-8") from None
    try:
        obj = json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except ValueError as exc:
        raise ApiError(400, "malformed_json", f"body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "malformed_json", "body must be a JSON object")
    return obj


def check_fields(
    obj: Mapping[str, Any], required: frozenset[str], optional: frozenset[str] = frozenset()
) -> None:
    for name in sorted(set(obj) - required - optional):
        raise ApiError(400, "unknown_field", f"unknown field {name!r}", field=name)
    for name in sorted(required - set(obj)):
        raise ApiError(400, "missing_field", f"missing field {name!r}", field=name)


def invalid(field: str, reason: str) -> ApiError:
    return ApiError(400, "invalid_field", f"{field}: {reason}", field=field)


def key_id(value: Any, field: str = "keyId", *, new: bool = False) -> str:
    if not isinstance(value, str) or not is_valid_key_id(value):
        raise invalid(field, "expected 1-64 characters [A-Za-z0-9._-], not starting with . _ -")
    if new and value in RESERVED_KEY_IDS:
        raise invalid(field, f"{value!r} is reserved")
    return value


def msg_hash(value: Any, field: str) -> bytes:
    try:
        return msg_hash_from_hex(value, field=field)
    except DecodeError as exc:
        raise invalid(field, exc.reason) from None


def integer(value: Any, field: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid(field, "expected an integer")
    if not lo <= value <= hi:
        raise invalid(field, f"must be between {lo} and {hi}")
    return value


# -- request bodies ---------------------------------------------------------------


def sign_body(body: bytes) -> bytes:
    obj = parse_json_object(body)
    check_fields(obj, frozenset({"msgHash"}))
    return msg_hash(obj["msgHash"], "msgHash")


def sign_batch_body(body: bytes, max_batch: int) -> list[bytes]:
    obj = parse_json_object(body)
    check_fields(obj, frozenset({"msgHashes"}))
    items = obj["msgHashes"]
    if not isinstance(items, list):
        raise invalid("msgHashes", "expected a list")
    if not 1 <= len(items) <= max_batch:
        raise invalid("msgHashes", f"expected 1 to {max_batch} hashes, got {len(items)}")
    return [msg_hash(h, f"msgHashes[{i}]") for i, h in enumerate(items)]


def _ceremony_params(obj: Mapping[str, Any]) -> tuple[str, int, int | None]:
    kid = key_id(obj["keyId"], new=True)
    threshold = integer(obj["threshold"], "threshold", 2, MAX_THRESHOLD)
    mh = obj.get("minHolders")
    min_holders = None if mh is None else integer(mh, "minHolders", threshold, MAX_THRESHOLD)
    return kid, threshold, min_holders


def dkg_body(body: bytes) -> tuple[str, int, int | None]:
    """``{"keyId", "threshold", "minHolders"?}`` -> (key id, t, min holders or None)."""
    obj = parse_json_object(body)
    check_fields(obj, frozenset({"keyId", "threshold"}), frozenset({"minHolders"}))
    return _ceremony_params(obj)

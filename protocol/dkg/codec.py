"""Strict field decoders shared by the DKG's message types (DESIGN.md §DKG, "Files
and formats": points uncompressed, scalars 32 bytes big-endian, canonical msgpack).

Every message is a canonical msgpack map with a ``kind`` and an exact set of keys.
A decoder either returns a fully valid value or raises ``DecodeError`` naming the
field (``bundles[2].shares[0][1]``): unknown or missing keys, wrong types (a bool is
not an int), integers out of range, byte strings of the wrong length, lists that are
too long or not strictly increasing where order is part of the format. Curve points
stay as bytes here; whether they are on the curve is a question about the *dealer*
(``protocol.dkg.dealing``), not about the framing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from itertools import pairwise
from typing import Any, Protocol, TypeVar

from protocol.canonical import decode_canonical
from protocol.errors import DecodeError, InvalidLength

T = TypeVar("T")


class _Summarised(Protocol):
    def to_json(self) -> dict[str, Any]: ...


S = TypeVar("S", bound=_Summarised)

MAX_PARTICIPANTS = 256  # a ceremony with more nodes is refused (bounds every list)
MAX_INDEX = 1024  # node indices, as in the manifest
MAX_MESSAGE_BYTES = 1 << 24  # a BundleSet for 256 nodes is ~6 MB
MAX_REASON_CHARS = 512
MAX_PROOF_BYTES = 256
KEY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

HASH_LEN = 32
SIG_LEN = 64
X25519_LEN = 32
NONCE_LEN = 32
CLUSTER_ID_LEN = 16
G1_LEN = 64
G2_LEN = 128
SCALAR_LEN = 32
CIPHERTEXT_LEN = SCALAR_LEN + 16  # ChaCha20-Poly1305 tag


def load(data: bytes, field: str) -> Any:
    """Canonical msgpack bytes to a value (strict; bounded)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(field, "must be bytes")
    return decode_canonical(bytes(data), field=field, max_len=MAX_MESSAGE_BYTES)


def as_map(value: Any, field: str, kind: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """A map whose keys are exactly ``kind`` plus ``keys``, with the given kind."""
    if not isinstance(value, dict):
        raise DecodeError(field, "must be a map")
    expected = {"kind", *keys}
    extra = sorted(set(value) - expected)
    if extra:
        raise DecodeError(field, f"unknown fields {extra}")
    missing = sorted(expected - set(value))
    if missing:
        raise DecodeError(field, f"missing fields {missing}")
    if value["kind"] != kind:
        raise DecodeError(f"{field}.kind", f"expected {kind!r}")
    return value


def as_int(value: Any, field: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise DecodeError(field, "must be an integer")
    if not lo <= value <= hi:
        raise DecodeError(field, f"must be in [{lo}, {hi}]")
    return value


def as_index(value: Any, field: str) -> int:
    return as_int(value, field, 1, MAX_INDEX)


def as_bytes(value: Any, field: str, length: int) -> bytes:
    if not isinstance(value, bytes):
        raise DecodeError(field, "must be a byte string")
    if len(value) != length:
        raise InvalidLength(field, f"expected {length} bytes, got {len(value)}")
    return value


def as_var_bytes(value: Any, field: str, max_len: int) -> bytes:
    if not isinstance(value, bytes):
        raise DecodeError(field, "must be a byte string")
    if len(value) > max_len:
        raise InvalidLength(field, f"at most {max_len} bytes, got {len(value)}")
    return value


def as_str(value: Any, field: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise DecodeError(field, "must be a string")
    if len(value) > max_chars:
        raise DecodeError(field, f"at most {max_chars} characters")
    return value


def as_key_id(value: Any, field: str) -> str:
    text = as_str(value, field, 64)
    if not KEY_ID_RE.fullmatch(text):
        raise DecodeError(field, "must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}")
    return text


def as_list(value: Any, field: str, max_items: int) -> list[Any]:
    if not isinstance(value, list):
        raise DecodeError(field, "must be a list")
    if len(value) > max_items:
        raise DecodeError(field, f"at most {max_items} items")
    return value


def as_items(
    value: Any, field: str, max_items: int, item: Callable[[Any, str], T]
) -> tuple[T, ...]:
    """A list decoded item by item (any order, duplicates allowed)."""
    return tuple(item(v, f"{field}[{i}]") for i, v in enumerate(as_list(value, field, max_items)))


def as_indices(value: Any, field: str, *, min_items: int = 0) -> tuple[int, ...]:
    """A strictly increasing list of node indices."""
    items = as_items(value, field, MAX_PARTICIPANTS, as_index)
    if len(items) < min_items:
        raise DecodeError(field, f"at least {min_items} items")
    if any(a >= b for a, b in pairwise(items)):
        raise DecodeError(field, "must be strictly increasing (sorted, no duplicates)")
    return items


def as_indexed(
    value: Any, field: str, second: Callable[[Any, str], T]
) -> tuple[tuple[int, T], ...]:
    """A list of ``[index, value]`` pairs, strictly increasing by index."""

    def pair(v: Any, f: str) -> tuple[int, T]:
        if not isinstance(v, list) or len(v) != 2:
            raise DecodeError(f, "must be a pair [index, value]")
        return as_index(v[0], f"{f}[0]"), second(v[1], f"{f}[1]")

    items = as_items(value, field, MAX_PARTICIPANTS, pair)
    if any(a[0] >= b[0] for a, b in pairwise(items)):
        raise DecodeError(field, "must be strictly increasing by index")
    return items


def fixed(length: int) -> Callable[[Any, str], bytes]:
    """An item decoder for byte strings of one length."""

    def decode(v: Any, f: str) -> bytes:
        return as_bytes(v, f, length)

    return decode


def decode_by_kind(data: bytes, decoders: Mapping[str, Callable[[Any, str], T]]) -> T:
    """Decode a message whose type its ``kind`` names (``decoders``: kind → from_wire).

    Raises:
        DecodeError: unknown kind or malformed message.
    """
    value = load(data, "message")
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        raise DecodeError("message.kind", "missing or not a string")
    kind = value["kind"]
    decoder = decoders.get(kind)
    if decoder is None:
        raise DecodeError("message.kind", f"unknown kind {kind[:40]!r}")
    return decoder(value, kind)


# ------------------------------------------------------- transcript files (DKG, import)


def transcript_from_json(obj: Any, fmt: str, decode: Callable[[bytes], S]) -> S:
    """A transcript from its JSON file of format ``fmt``: the hex ``transcript`` bytes
    decoded by ``decode``, whose ``to_json()`` must equal ``obj`` (the summary).

    Raises:
        DecodeError: malformed, or the summary does not match.
    """
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise DecodeError("transcript.format", f"expected {fmt!r}")
    raw = obj.get("transcript")
    if not isinstance(raw, str):
        raise DecodeError("transcript.transcript", "must be a hex string")
    try:
        data = bytes.fromhex(raw)
    except ValueError:
        raise DecodeError("transcript.transcript", "is not valid hex") from None
    transcript = decode(data)
    if transcript.to_json() != obj:
        raise DecodeError("transcript", "summary fields do not match the transcript")
    return transcript


def transcript_json(data: bytes) -> Any | None:
    """The parsed JSON if ``data`` is a transcript's JSON file (starts with ``{``),
    None if it is canonical bytes.

    Raises:
        DecodeError: it starts like JSON but is not valid JSON.
    """
    stripped = bytes(data).lstrip()
    if not stripped.startswith(b"{"):
        return None
    try:
        return json.loads(stripped.decode())
    except (UnicodeDecodeError, ValueError):
        raise DecodeError("transcript", "not valid JSON") from None

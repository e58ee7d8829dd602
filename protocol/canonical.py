"""Canonical msgpack: one byte string for one value, so that hashes and signatures
over structured data are well defined.

Allowed values: None, bool, int (signed 64-bit or unsigned up to 2^64-1), bytes, str,
lists/tuples of allowed values, and dicts with str keys (encoded with keys sorted by
their UTF-8 bytes). Floats and other types are refused: they have no canonical form
we need. ``decode_canonical`` is strict: it re-encodes and refuses any input whose
encoding differs (non-minimal integers, unsorted or duplicate keys, trailing bytes).
"""

from __future__ import annotations

from typing import Any

import msgpack

from protocol.errors import DecodeError

# Everything msgpack.unpackb raises on bad input (the caller turns it into a DecodeError).
MSGPACK_DECODE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    msgpack.ExtraData,
    msgpack.FormatError,
    msgpack.StackError,
    msgpack.OutOfData,
)


def _normalise(value: Any, path: str) -> Any:
    if value is None or isinstance(value, bool | bytes | str):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise TypeError(f"{path}: integer out of msgpack range")
        return value
    if isinstance(value, list | tuple):
        return [_normalise(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{path}: dict keys must be str")
            items.append((k, _normalise(v, f"{path}.{k}")))
        items.sort(key=lambda kv: kv[0].encode())
        return dict(items)
    raise TypeError(f"{path}: {type(value).__name__} has no canonical encoding")


def encode_canonical(value: Any) -> bytes:
    """The canonical msgpack encoding of ``value``."""
    packed: bytes = msgpack.packb(_normalise(value, "value"), use_bin_type=True)
    return packed


def decode_canonical(data: bytes, *, field: str = "message", max_len: int = 1 << 24) -> Any:
    """Decode canonical msgpack, refusing anything that is not in canonical form."""
    if len(data) > max_len:
        raise DecodeError(field, f"{len(data)} bytes exceeds the limit of {max_len}")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
        )
    except MSGPACK_DECODE_ERRORS as exc:
        raise DecodeError(field, f"not valid msgpack ({type(exc).__name__})") from None
    try:
        again = encode_canonical(value)
    except TypeError as exc:
        raise DecodeError(field, str(exc)) from None
    if again != data:
        raise DecodeError(field, "not in canonical form")
    return value

"""Schemas for RPC params and results: declared once per method, checked before any
handler runs (server) and on every result (client).

A schema is a small frozen value; ``check(value, path)`` returns the value or raises
``SchemaError`` naming the path of the first offending field (``params.items[3]``).
Values are what msgpack decodes to: None, bool, int, bytes, str, lists and
str-keyed dicts (tuples are accepted where lists are, for the sending side).

    SIGN = Method(
        "node.sign",
        params=Struct({"key_id": Str(max_len=64), "msg_hash": Bytes(32)}),
        result=Struct({"sigma": Bytes(64), "proof": Bytes(max_len=256)}),
    )

Every container and string has an upper bound: a schema cannot accept unbounded
input. ``Struct`` rejects unknown and missing fields; optional fields are listed
separately and may be absent (never None, unless their schema is ``Nullable``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from protocol.rpc.errors import SchemaError


class Schema:
    """Base of every schema node."""

    __slots__ = ()

    def check(self, value: Any, path: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


def _fail(path: str, reason: str) -> SchemaError:
    return SchemaError(path, reason)


def _key(name: Any) -> str:
    """A map key as it may appear in a path: peer-controlled, so short and escaped."""
    text = str(name)
    return text if text.isidentifier() and len(text) <= 64 else repr(text[:64])


@dataclass(frozen=True, slots=True)
class Nil(Schema):
    """Exactly None."""

    def check(self, value: Any, path: str) -> Any:
        if value is not None:
            raise _fail(path, "must be nil")
        return value


@dataclass(frozen=True, slots=True)
class Bool(Schema):
    """True or False."""

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, bool):
            raise _fail(path, "must be a boolean")
        return value


@dataclass(frozen=True, slots=True)
class Int(Schema):
    """An integer in [min, max] (both inclusive; bool is not an integer here)."""

    min: int
    max: int

    def __post_init__(self) -> None:
        if self.min > self.max:
            raise ValueError("Int: min > max")

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _fail(path, "must be an integer")
        if not self.min <= value <= self.max:
            raise _fail(path, f"must be in [{self.min}, {self.max}]")
        return value


@dataclass(frozen=True, slots=True)
class Bytes(Schema):
    """A byte string of exactly ``size`` bytes, or between ``min_len`` and ``max_len``."""

    size: int | None = None
    min_len: int = 0
    max_len: int | None = None

    def __post_init__(self) -> None:
        if (self.size is None) == (self.max_len is None):
            raise ValueError("Bytes: give exactly one of size or max_len")

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, bytes):
            raise _fail(path, "must be bytes")
        if self.size is not None and len(value) != self.size:
            raise _fail(path, f"must be {self.size} bytes, got {len(value)}")
        if self.max_len is not None and not self.min_len <= len(value) <= self.max_len:
            raise _fail(path, f"must be {self.min_len}..{self.max_len} bytes, got {len(value)}")
        return value


@dataclass(frozen=True, slots=True)
class Str(Schema):
    """A string of ``min_len``..``max_len`` characters, optionally matching ``pattern``
    (a regular expression that must match the whole string)."""

    max_len: int
    min_len: int = 0
    pattern: str | None = None

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise _fail(path, "must be a string")
        if not self.min_len <= len(value) <= self.max_len:
            raise _fail(path, f"must be {self.min_len}..{self.max_len} characters")
        if self.pattern is not None and re.fullmatch(self.pattern, value) is None:
            raise _fail(path, f"must match {self.pattern}")
        return value


@dataclass(frozen=True, slots=True)
class Choice(Schema):
    """One of a fixed set of str or int values."""

    values: tuple[str | int, ...]

    def check(self, value: Any, path: str) -> Any:
        if isinstance(value, bool) or value not in self.values:
            raise _fail(path, f"must be one of {list(self.values)}")
        return value


@dataclass(frozen=True, slots=True)
class Nullable(Schema):
    """None, or a value of ``inner``."""

    inner: Schema

    def check(self, value: Any, path: str) -> Any:
        return None if value is None else self.inner.check(value, path)


@dataclass(frozen=True, slots=True)
class ListOf(Schema):
    """A list of ``min_len``..``max_len`` items, each of schema ``item``."""

    item: Schema
    max_len: int
    min_len: int = 0

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, list | tuple):
            raise _fail(path, "must be a list")
        if not self.min_len <= len(value) <= self.max_len:
            raise _fail(path, f"must have {self.min_len}..{self.max_len} items")
        for i, item in enumerate(value):
            self.item.check(item, f"{path}[{i}]")
        return value


@dataclass(frozen=True, slots=True)
class MapOf(Schema):
    """A map with string keys of schema ``key`` and values of schema ``value``."""

    key: Str
    value: Schema
    max_len: int
    min_len: int = 0

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise _fail(path, "must be a map")
        if not self.min_len <= len(value) <= self.max_len:
            raise _fail(path, f"must have {self.min_len}..{self.max_len} entries")
        for k, v in value.items():
            self.key.check(k, f"{path}.<key>")
            self.value.check(v, f"{path}.{_key(k)}")
        return value


@dataclass(frozen=True, slots=True)
class Struct(Schema):
    """A map with exactly the ``fields`` (all required) plus any of ``optional``;
    any other key is rejected."""

    fields: Mapping[str, Schema]
    optional: Mapping[str, Schema] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.fields) & set(self.optional):
            raise ValueError("Struct: a field is both required and optional")
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))
        object.__setattr__(self, "optional", MappingProxyType(dict(self.optional)))

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise _fail(path, "must be a map")
        for name in value:
            if name not in self.fields and name not in self.optional:
                raise _fail(f"{path}.{_key(name)}", "unknown field")
        for name, schema in self.fields.items():
            if name not in value:
                raise _fail(f"{path}.{name}", "missing field")
            schema.check(value[name], f"{path}.{name}")
        for name, schema in self.optional.items():
            if name in value:
                schema.check(value[name], f"{path}.{name}")
        return value


_METHOD_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
MAX_METHOD_NAME = 64


@dataclass(frozen=True, slots=True)
class Method:
    """An RPC method: its name (``area.verb``, lowercase), the schema of its params
    (always a ``Struct``) and of its result."""

    name: str
    params: Struct
    result: Schema

    def __post_init__(self) -> None:
        if len(self.name) > MAX_METHOD_NAME or _METHOD_NAME.fullmatch(self.name) is None:
            raise ValueError(f"invalid method name {self.name!r}")


# Built in: every listener answers it; the session manager uses it as a keepalive.
PING = Method("rpc.ping", params=Struct({}), result=Nil())

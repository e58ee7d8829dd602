"""Schemas: each node accepts what it declares and rejects everything else with a
SchemaError naming the path; arbitrary values never raise anything else."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import Fault
from protocol.rpc import (
    PING,
    Bool,
    Bytes,
    Choice,
    Int,
    ListOf,
    MapOf,
    Method,
    Nil,
    Nullable,
    SchemaError,
    Str,
    Struct,
)

SIGN_LIKE = Struct(
    {
        "key_id": Str(max_len=16, min_len=1, pattern=r"[a-z0-9-]+"),
        "msg_hash": Bytes(32),
        "epoch": Int(0, 2**32 - 1),
        "signers": ListOf(Int(1, 1024), max_len=8, min_len=1),
        "labels": MapOf(Str(max_len=8), Bool(), max_len=2),
        "mode": Choice(("fast", "safe")),
        "note": Nullable(Str(max_len=4)),
    },
    optional={"extra": Bytes(max_len=4)},
)
GOOD = {
    "key_id": "k-1",
    "msg_hash": bytes(32),
    "epoch": 7,
    "signers": [1, 2, 3],
    "labels": {"a": True},
    "mode": "safe",
    "note": None,
}


def test_valid_value_passes_unchanged() -> None:
    assert SIGN_LIKE.check(dict(GOOD), "params") == GOOD
    assert SIGN_LIKE.check({**GOOD, "extra": b"ab", "note": "hi"}, "params")["extra"] == b"ab"


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"surprise": 1}, "params.surprise"),  # unknown field
        ({"key_id": ""}, "params.key_id"),  # too short
        ({"key_id": "UPPER"}, "params.key_id"),  # pattern
        ({"msg_hash": bytes(31)}, "params.msg_hash"),  # exact length
        ({"msg_hash": "00" * 32}, "params.msg_hash"),  # type
        ({"epoch": -1}, "params.epoch"),  # range
        ({"epoch": 2**32}, "params.epoch"),
        ({"epoch": True}, "params.epoch"),  # bool is not an int
        ({"signers": []}, "params.signers"),  # min_len
        ({"signers": [1, 0]}, "params.signers[1]"),  # nested range
        ({"signers": list(range(1, 10))}, "params.signers"),  # max_len
        ({"labels": {"a": 1}}, "params.labels.a"),
        ({"labels": {"toolongkey": True}}, "params.labels.<key>"),
        ({"mode": "other"}, "params.mode"),
        ({"note": "too long"}, "params.note"),
        ({"extra": b"12345"}, "params.extra"),
    ],
)
def test_each_violation_names_its_field(change: dict[str, Any], path: str) -> None:
    with pytest.raises(SchemaError) as info:
        SIGN_LIKE.check({**GOOD, **change}, "params")
    assert info.value.field == path
    assert info.value.fault is Fault.PEER


def test_missing_field_and_non_map() -> None:
    value = dict(GOOD)
    del value["epoch"]
    with pytest.raises(SchemaError, match=r"params\.epoch: missing"):
        SIGN_LIKE.check(value, "params")
    with pytest.raises(SchemaError):
        SIGN_LIKE.check([1, 2], "params")
    with pytest.raises(SchemaError):
        Nil().check(0, "r")


def test_schema_declarations_are_validated() -> None:
    with pytest.raises(ValueError):
        Int(5, 1)
    with pytest.raises(ValueError):
        Bytes()  # unbounded bytes are not allowed
    with pytest.raises(ValueError):
        Struct({"a": Nil()}, optional={"a": Nil()})
    with pytest.raises(ValueError):
        Method("Bad Name", Struct({}), Nil())
    assert PING.name == "rpc.ping"


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=200)
@given(values)
def test_arbitrary_values_pass_or_raise_schema_error(value: Any) -> None:
    try:
        SIGN_LIKE.check(value, "params")
    except SchemaError as exc:
        assert exc.field.startswith("params")


def test_peer_controlled_names_in_error_paths_are_short_and_escaped() -> None:
    with pytest.raises(SchemaError) as info:
        SIGN_LIKE.check({**GOOD, "x\n" * 10_000: 1}, "params")
    assert len(info.value.field) < 300 and "\n" not in info.value.field

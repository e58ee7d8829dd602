"""``protocol.node_api``: the method table, and what a node's answer may look like
(malformed answers end in a typed error, never anything else)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import node_api
from protocol.errors import DecodeError
from protocol.rpc import SchemaError, Struct


def test_methods_are_declared_once_and_named_by_area() -> None:
    assert node_api.METHODS["node.status"] is node_api.NODE_STATUS
    assert node_api.METHODS["keys.list"] is node_api.KEYS_LIST
    with pytest.raises(ValueError, match="defined twice"):
        node_api.define("keys.list", params=Struct({}), result=Struct({}))


GOOD: dict[str, Any] = {
    "key_id": "k1",
    "epoch": 0,
    "t": 2,
    "n": 2,
    "holders": [1, 2],
    "status": "active",
    "pk_g1": b"\1" * 64,
    "pk_g2": b"\2" * 128,
    "public_shares": [{"index": 2, "point": b"\3" * 64}, {"index": 1, "point": b"\4" * 64}],
    "transcript_hash": b"\5" * 32,
}

scalars = st.none() | st.booleans() | st.integers(-5, 2**33) | st.binary(max_size=130)
values = st.recursive(
    scalars | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(sorted(GOOD)), value=values)
def test_a_malformed_key_answer_is_a_typed_error(field: str, value: Any) -> None:
    wire = {**GOOD, field: value}
    try:
        node_api.KEY_METADATA.check(wire, "key")
        meta = node_api.PublicKeyMetadata.from_wire(wire)
    except (SchemaError, node_api.NodeApiError) as exc:
        assert isinstance(exc, DecodeError) and exc.field.startswith(("key", "keys.k1"))
        return
    assert meta.to_wire()["public_shares"][0]["index"] == 1  # sorted by index
    assert node_api.PublicKeyMetadata.from_wire(meta.to_wire()) == meta


def test_points_are_validated_before_use() -> None:
    meta = node_api.PublicKeyMetadata.from_wire(GOOD)
    with pytest.raises(DecodeError) as err:
        meta.points()  # (1..1, 1..1) is not on the curve
    assert err.value.field == "keys.k1.pk_g1"

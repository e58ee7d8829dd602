"""Codecs: every encoding in the vectors bit for bit, round trips, and strictness
(random and mutated input into every decoder gives only DecodeError subclasses)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from py_ecc import bn128

from protocol.bn254 import (
    G1,
    G1_GENERATOR,
    G1_INFINITY,
    G2_GENERATOR,
    G2_INFINITY,
    P,
    R,
    g1_mul_generator,
    g2_mul_generator,
)
from protocol.eigenlayer import AvsSignature, address_from_hex, operator_id
from protocol.encoding import (
    B2,
    InvalidFormat,
    _g2_largest,
    field_element_from_json,
    field_element_to_json,
    fp2_sqrt,
    fp_sqrt,
    g1_from_bytes,
    g1_from_compressed,
    g1_from_gnark_string,
    g1_from_json,
    g1_to_bytes,
    g1_to_compressed,
    g1_to_gnark_string,
    g1_to_json,
    g2_from_bytes,
    g2_from_compressed,
    g2_from_eigensdk_bytes,
    g2_from_json,
    g2_on_curve,
    g2_to_bytes,
    g2_to_compressed,
    g2_to_eigensdk_bytes,
    g2_to_json,
    msg_hash_from_hex,
    msg_hash_to_hex,
    scalar_from_bytes,
    scalar_from_json,
    scalar_to_bytes,
    scalar_to_json,
)
from protocol.errors import DecodeError, InvalidLength, InvalidPoint, InvalidScalar
from tests.protocol.vector_helpers import by_id, g1, g2, hexbytes, ids

SIG_IDS = ids("signatureVectors")
scalars = st.integers(min_value=1, max_value=R - 1)


# --------------------------------------------------------------------------- vectors


@pytest.mark.parametrize("vid", SIG_IDS)
def test_vector_encodings(eigen_vectors: dict[str, Any], vid: str) -> None:
    v = by_id(eigen_vectors, "signatureVectors", vid)
    e = v["encodings"]
    pk1, pk2, sigma = g1(v["pubkeyG1"]), g2(v["pubkeyG2"]), g1(v["sigma"])

    assert g1_to_bytes(pk1) == hexbytes(e["pubkeyG1Raw64"])
    assert g1_from_bytes(hexbytes(e["pubkeyG1Raw64"]), field="pk") == pk1
    assert g1_to_compressed(pk1) == hexbytes(e["pubkeyG1GnarkCompressed32"])
    assert g1_from_compressed(hexbytes(e["pubkeyG1GnarkCompressed32"]), field="pk") == pk1
    assert g2_to_bytes(pk2) == hexbytes(e["pubkeyG2Eip197"])
    assert g2_from_bytes(hexbytes(e["pubkeyG2Eip197"]), field="pk") == pk2
    assert g2_to_eigensdk_bytes(pk2) == hexbytes(e["pubkeyG2EigensdkGoSerializeG2"])
    assert g2_from_eigensdk_bytes(hexbytes(e["pubkeyG2EigensdkGoSerializeG2"]), field="pk") == pk2
    assert g2_to_compressed(pk2) == hexbytes(e["pubkeyG2GnarkCompressed64"])
    assert g2_from_compressed(hexbytes(e["pubkeyG2GnarkCompressed64"]), field="pk") == pk2
    assert g1_to_bytes(sigma) == hexbytes(e["sigmaRaw64"])
    assert g1_from_bytes(hexbytes(e["sigmaRaw64"]), field="sigma") == sigma
    assert operator_id(pk1) == hexbytes(e["operatorId"])
    if "eigensdkGoKeystorePubKey" in e:
        assert g1_to_gnark_string(pk1) == e["eigensdkGoKeystorePubKey"]
        assert g1_from_gnark_string(e["eigensdkGoKeystorePubKey"], field="pubKey") == pk1
    cg = e["cerberusSignGeneric"]
    assert cg["request"]["public_key_g1"] == g1_to_compressed(pk1).hex()
    assert bytes.fromhex(cg["response"]["signature"]) == g1_to_bytes(sigma)
    # the two G2 byte orders really differ (spec 10.2) unless x and y are "symmetric"
    assert g2_to_bytes(pk2) != g2_to_eigensdk_bytes(pk2)


@pytest.mark.parametrize("vid", SIG_IDS)
def test_vector_json_points(eigen_vectors: dict[str, Any], vid: str) -> None:
    v = by_id(eigen_vectors, "signatureVectors", vid)
    for hex_ in (False, True):
        obj = v["avsSignatureHex" if hex_ else "avsSignature"]
        assert g1_from_json(obj["sigma"], field="sigma") == g1(v["sigma"])
        assert g2_from_json(obj["apkG2"], field="apkG2") == g2(v["pubkeyG2"])
        assert g1_to_json(g1(v["pubkeyG1"]), hex=hex_) == obj["apkG1"]
        assert g2_to_json(g2(v["pubkeyG2"]), hex=hex_) == obj["apkG2"]
    assert msg_hash_to_hex(msg_hash_from_hex(v["msgHash"])) == v["msgHash"]
    assert scalar_from_json(v["privateKey"]["dec"], field="sk") == scalar_from_json(
        v["privateKey"]["hex"], field="sk"
    )


# --------------------------------------------------------------------------- round trips


@settings(max_examples=40, deadline=None)
@given(scalars)
def test_g1_round_trips(k: int) -> None:
    p = g1_mul_generator(k)
    assert g1_from_bytes(g1_to_bytes(p), field="p") == p
    assert g1_from_compressed(g1_to_compressed(p), field="p") == p
    assert g1_from_compressed(g1_to_compressed(-p), field="p") == -p
    for hex_ in (False, True):
        assert g1_from_json(json.loads(json.dumps(g1_to_json(p, hex=hex_))), field="p") == p
    assert g1_from_gnark_string(g1_to_gnark_string(p), field="p") == p
    flag = g1_to_compressed(p)[0] >> 6
    assert flag == (0b11 if p.y > (P - 1) // 2 else 0b10)


@settings(max_examples=12, deadline=None)
@given(scalars)
def test_g2_round_trips(k: int) -> None:
    q = g2_mul_generator(k)
    assert g2_from_bytes(g2_to_bytes(q), field="q") == q
    assert g2_from_eigensdk_bytes(g2_to_eigensdk_bytes(q), field="q") == q
    assert g2_from_compressed(g2_to_compressed(q), field="q") == q
    assert g2_from_compressed(g2_to_compressed(-q), field="q") == -q
    assert g2_from_json(g2_to_json(q, hex=True), field="q") == q
    raw = g2_to_bytes(q)
    assert raw[:32] == q.x[1].to_bytes(32, "big")  # imaginary part first


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=R - 1))
def test_scalar_round_trips(k: int) -> None:
    assert scalar_from_bytes(scalar_to_bytes(k), field="k", allow_zero=True) == k
    assert scalar_from_json(scalar_to_json(k, hex=True), field="k", allow_zero=True) == k
    assert scalar_from_json(scalar_to_json(k), field="k", allow_zero=True) == k


def test_infinity_encodings() -> None:
    assert g1_to_bytes(G1_INFINITY) == bytes(64)
    assert g2_to_bytes(G2_INFINITY) == bytes(128)
    assert g1_to_compressed(G1_INFINITY) == b"\x40" + bytes(31)
    assert g2_to_compressed(G2_INFINITY) == b"\x40" + bytes(63)
    assert g1_from_bytes(bytes(64), field="p", allow_infinity=True) == G1_INFINITY
    assert g2_from_bytes(bytes(128), field="q", allow_infinity=True) == G2_INFINITY
    assert g1_from_compressed(b"\x40" + bytes(31), field="p", allow_infinity=True) == G1_INFINITY
    assert g2_from_compressed(b"\x40" + bytes(63), field="q", allow_infinity=True) == G2_INFINITY
    for call in (
        lambda: g1_from_bytes(bytes(64), field="p"),
        lambda: g2_from_bytes(bytes(128), field="p"),
        lambda: g1_from_compressed(b"\x40" + bytes(31), field="p"),
        lambda: g2_from_compressed(b"\x40" + bytes(63), field="p"),
        lambda: g1_from_compressed(b"\x40" + bytes(30) + b"\x01", field="p", allow_infinity=True),
        lambda: g1_from_compressed(b"\x41" + bytes(31), field="p", allow_infinity=True),
        lambda: g1_from_json({"X": "0", "Y": "0"}, field="p"),
        lambda: g1_from_gnark_string("E([0,0])", field="p"),
    ):
        with pytest.raises(InvalidPoint, match=r"^p: "):
            call()


# --------------------------------------------------------------------------- field math


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=P - 1), st.integers(min_value=0, max_value=P - 1))
def test_fp2_sqrt_against_py_ecc(a0: int, a1: int) -> None:
    a = bn128.FQ2([a0, a1])
    root = fp2_sqrt((a0, a1))
    if root is None:
        assert a ** ((P * P - 1) // 2) != bn128.FQ2.one()  # not a square
    else:
        assert bn128.FQ2(list(root)) ** 2 == a


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=P - 1))
def test_fp_sqrt_is_the_unnormalised_root(a: int) -> None:
    root = fp_sqrt(a)
    if root is None:
        assert pow(a, (P - 1) // 2, P) == P - 1
    else:
        assert root == pow(a, (P + 1) // 4, P) and root * root % P == a


def test_twist_coefficient_matches_py_ecc() -> None:
    assert bn128.FQ2(list(B2)) == bn128.b2
    assert g2_on_curve(G2_GENERATOR.x, G2_GENERATOR.y)


def test_g2_largest_uses_real_part_when_imag_is_zero() -> None:
    half = (P - 1) // 2
    assert _g2_largest((half + 1, 0)) and not _g2_largest((half, 0))
    assert _g2_largest((0, half + 1)) and not _g2_largest((P - 1, half))


# --------------------------------------------------------------------------- strictness


def _twist_point_outside_subgroup() -> tuple[tuple[int, int], tuple[int, int]]:
    x0 = 1
    while True:
        x = (x0, 1)
        rhs = bn128.FQ2(list(x)) ** 3 + bn128.b2
        y = fp2_sqrt((int(rhs.coeffs[0]), int(rhs.coeffs[1])))
        if y is not None:
            return x, y
        x0 += 1


def test_g2_outside_subgroup_rejected_everywhere() -> None:
    (xr, xi), (yr, yi) = _twist_point_outside_subgroup()
    assert g2_on_curve((xr, xi), (yr, yi))
    pt = bn128.FQ2([xr, xi]), bn128.FQ2([yr, yi])
    assert bn128.multiply(pt, R) is not None  # really outside the order-r subgroup
    raw = b"".join(c.to_bytes(32, "big") for c in (xi, xr, yi, yr))
    sdk = b"".join(c.to_bytes(32, "big") for c in (xr, xi, yr, yi))
    with pytest.raises(InvalidPoint, match="subgroup"):
        g2_from_bytes(raw, field="apkG2")
    with pytest.raises(InvalidPoint, match="subgroup"):
        g2_from_eigensdk_bytes(sdk, field="apkG2")
    comp = bytearray(raw[:64])
    comp[0] |= 0x80
    with pytest.raises(InvalidPoint, match="subgroup"):
        g2_from_compressed(bytes(comp), field="apkG2")
    obj = {"X": [str(xi), str(xr)], "Y": [str(yi), str(yr)]}
    with pytest.raises(InvalidPoint, match="subgroup"):
        g2_from_json(obj, field="apkG2")


def test_errors_name_the_field() -> None:
    with pytest.raises(InvalidPoint) as exc:
        g1_from_bytes(P.to_bytes(32, "big") + (2).to_bytes(32, "big"), field="sigma")
    assert exc.value.field == "sigma.X"
    with pytest.raises(InvalidPoint) as exc:
        g1_from_bytes((1).to_bytes(32, "big") + (3).to_bytes(32, "big"), field="sigma")
    assert exc.value.field == "sigma" and "curve" in exc.value.reason
    with pytest.raises(InvalidPoint) as exc:
        g2_from_json({"X": [str(P), "0"], "Y": ["0", "0"]}, field="apkG2")
    assert exc.value.field == "apkG2.X[0]"
    with pytest.raises(InvalidScalar) as sexc:
        scalar_from_bytes(R.to_bytes(32, "big"), field="sk")
    assert sexc.value.field == "sk"
    with pytest.raises(InvalidScalar, match="zero"):
        scalar_from_bytes(bytes(32), field="sk")
    with pytest.raises(InvalidLength) as lexc:
        g2_from_compressed(bytes(63), field="public_key_g2")
    assert lexc.value.field == "public_key_g2"
    with pytest.raises(InvalidPoint, match="uncompressed"):
        g1_from_compressed(g1_to_bytes(G1_GENERATOR)[:32], field="pk")


@pytest.mark.parametrize(
    "text",
    [
        "01",
        "-1",
        "+1",
        " 1",
        "1 ",
        "1.0",
        "1e3",
        "0X" + "0" * 64,
        "0x" + "A" * 64,
        "0x" + "0" * 63 + "g",
        "\u0661",
        "",
        "0x",
        "0x" + "0" * 63,
        "0x" + "0" * 65,
        "1" * 79,
    ],
)
def test_field_element_syntax_is_strict(text: str) -> None:
    with pytest.raises(DecodeError) as exc:
        field_element_from_json(text, field="sigma.X")
    assert exc.value.field == "sigma.X"


@pytest.mark.parametrize("value", [1, 1.0, True, None, [], {}, b"1"])
def test_json_numbers_are_refused(value: object) -> None:
    with pytest.raises(InvalidFormat):
        field_element_from_json(value, field="X")


@pytest.mark.parametrize(
    "text", ["", "0x", "0x" + "0" * 63, "0x" + "0" * 65, "00" * 32, "0x" + "zz" * 32, 5]
)
def test_msg_hash_is_strict(text: Any) -> None:
    with pytest.raises(DecodeError) as exc:
        msg_hash_from_hex(text)
    assert exc.value.field == "msgHash"


def test_msg_hash_length_errors_are_invalid_length() -> None:
    with pytest.raises(InvalidLength):
        msg_hash_from_hex("0x" + "ab" * 31)
    assert msg_hash_from_hex("0x" + "AB" * 32) == bytes([0xAB] * 32)
    assert field_element_to_json(5, hex=True) == "0x" + "0" * 63 + "5"


BYTE_DECODERS: list[tuple[str, int, Callable[..., object]]] = [
    ("scalar", 32, lambda b: scalar_from_bytes(b, field="k")),
    ("g1_raw", 64, lambda b: g1_from_bytes(b, field="p", allow_infinity=True)),
    ("g2_raw", 128, lambda b: g2_from_bytes(b, field="q", allow_infinity=True)),
    ("g2_sdk", 128, lambda b: g2_from_eigensdk_bytes(b, field="q", allow_infinity=True)),
    ("g1_comp", 32, lambda b: g1_from_compressed(b, field="p", allow_infinity=True)),
    ("g2_comp", 64, lambda b: g2_from_compressed(b, field="q", allow_infinity=True)),
]


@pytest.mark.parametrize(
    ("name", "size", "decode"), BYTE_DECODERS, ids=[d[0] for d in BYTE_DECODERS]
)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_random_bytes_only_raise_decode_errors(
    name: str, size: int, decode: Callable[..., object], data: st.DataObject
) -> None:
    raw = data.draw(
        st.one_of(
            st.binary(max_size=2 * size),
            st.binary(min_size=size, max_size=size),
            st.integers(min_value=0, max_value=3).flatmap(
                lambda top: st.binary(min_size=size - 1, max_size=size - 1).map(
                    lambda rest: bytes([top << 6]) + rest
                )
            ),
        )
    )
    with contextlib.suppress(DecodeError):
        decode(raw)


@pytest.mark.parametrize("bad", [None, "00" * 32, 5, [0] * 32])
def test_byte_decoders_refuse_non_bytes(bad: object) -> None:
    for _, _, decode in BYTE_DECODERS:
        with pytest.raises(InvalidFormat):
            decode(bad)


@settings(max_examples=25, deadline=None)
@given(scalars, st.data())
def test_mutated_encodings_decode_to_the_same_bytes_or_fail(k: int, data: st.DataObject) -> None:
    p = g1_mul_generator(k)
    for encode, decode in (
        (g1_to_bytes, lambda b: g1_from_bytes(b, field="p")),
        (g1_to_compressed, lambda b: g1_from_compressed(b, field="p")),
    ):
        raw = bytearray(encode(p))
        i = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        raw[i] ^= data.draw(st.integers(min_value=1, max_value=255))
        try:
            out = decode(bytes(raw))
        except DecodeError:
            continue
        assert isinstance(out, G1) and encode(out) == bytes(raw)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=80)
    | st.sampled_from(["0", "1", "2", "0x" + "0" * 64, str(P), str(P - 1), "E([1,2])"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["X", "Y", "msgHash", "sigma", "apkG1", "apkG2"]), inner)
    ),
    max_leaves=12,
)

JSON_DECODERS: list[tuple[str, Callable[[object], object]]] = [
    ("g1", lambda o: g1_from_json(o, field="p")),
    ("g2", lambda o: g2_from_json(o, field="q")),
    ("avs", lambda o: AvsSignature.from_json(o)),
    ("msg", lambda o: msg_hash_from_hex(o)),
    ("fe", lambda o: field_element_from_json(o, field="x")),
    ("scalar", lambda o: scalar_from_json(o, field="k")),
    ("gnark", lambda o: g1_from_gnark_string(o, field="pubKey")),
    ("address", lambda o: address_from_hex(o, field="operator")),
]


@pytest.mark.parametrize(("name", "decode"), JSON_DECODERS, ids=[d[0] for d in JSON_DECODERS])
@settings(max_examples=60, deadline=None)
@given(value=json_values)
def test_random_json_only_raises_decode_errors(
    name: str, decode: Callable[[object], object], value: object
) -> None:
    with contextlib.suppress(DecodeError):
        decode(value)


def _mutations(s: str) -> list[str]:
    out = ["0" + s, "-" + s, s + " ", s.upper(), s[:-1], s + "0", "+" + s]
    if s.startswith("0x"):
        out += [s[2:], "0X" + s[2:]]
    return [m for m in out if m != s]


@pytest.mark.parametrize("vid", SIG_IDS)
def test_mutated_avs_json_is_refused(eigen_vectors: dict[str, Any], vid: str) -> None:
    """Every single-string syntax mutation of a valid object is rejected, never accepted
    as a different value (trailing-digit mutations may still be a valid coordinate:
    then the point check must catch it)."""
    v = by_id(eigen_vectors, "signatureVectors", vid)
    for key in ("avsSignature", "avsSignatureHex"):
        base = v[key]
        for path in (("sigma", "X"), ("apkG1", "Y")):
            for mutant in _mutations(base[path[0]][path[1]]):
                obj = json.loads(json.dumps(base))
                obj[path[0]][path[1]] = mutant
                with pytest.raises(DecodeError) as exc:
                    AvsSignature.from_json(obj)
                assert exc.value.field.startswith(path[0])
        for mutant in _mutations(base["msgHash"]):
            obj = {**base, "msgHash": mutant}
            with pytest.raises(DecodeError):
                AvsSignature.from_json(obj)


def test_gnark_string_is_strict() -> None:
    for bad in ["E([1, 2])", "E([01,2])", "E(1,2)", "e([1,2])", "E([1,2]) ", "E([-1,2])"]:
        with pytest.raises(InvalidFormat):
            g1_from_gnark_string(bad, field="pubKey")
    with pytest.raises(InvalidPoint):
        g1_from_gnark_string("E([1,3])", field="pubKey")
    assert g1_from_gnark_string("E([1,2])", field="pubKey") == G1(1, 2)

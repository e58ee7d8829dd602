"""serve_grpc end to end: the real grpcio client, with request/response classes that
protoc compiled from our .proto files, over 127.0.0.1, against an in-process Backend
that really signs with one BN254 key per vector (protocol.bls). Every expected byte
string comes from tests/vectors/eigenlayer_bn254.json."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import grpc
import pytest
import trio

from coordinator.backend import Client
from coordinator.grpc import GrpcConfig, GrpcMetrics, serve_grpc
from protocol.encoding import g1_to_compressed
from protocol.grpcwire import StatusCode
from tests.coordinator.fake_backend import FakeBackend
from tests.coordinator.grpc.grpc_clients import Reply, acall, insecure_channel
from tests.protocol.official_protobuf import official_modules

SIGN_GENERIC = "/signer.v1.Signer/SignGeneric"
SIGN_G1 = "/signer.v1.Signer/SignG1"
LIST_KEYS = "/keymanager.v1.KeyManager/ListKeys"
GET_KEY_METADATA = "/keymanager.v1.KeyManager/GetKeyMetadata"
CERBERUS = "cerberus-key-somedata"

SIGNER_ALL = "key-signer-all"
SIGNER_ONE = "key-signer-cerberus-only"
OPERATOR = "key-operator"
CLIENTS = {
    SIGNER_ALL: Client("all", frozenset({"signer"}), frozenset({"*"})),
    SIGNER_ONE: Client("one", frozenset({"signer"}), frozenset({CERBERUS})),
    OPERATOR: Client("op", frozenset({"operator"}), frozenset()),
}


def authenticate(raw: str) -> Client | None:
    return CLIENTS.get(raw)


@pytest.fixture(scope="module")
def backend_keys(eigen_vectors: dict[str, Any]) -> list[tuple[str, int, str]]:
    """Every vector's key, plus keys that are pending and destroyed."""
    keys = [
        (v["id"], int(v["privateKey"]["dec"]), "active") for v in eigen_vectors["signatureVectors"]
    ]
    return [*keys, ("pending", 7, "pending"), ("gone", 11, "destroyed")]


@asynccontextmanager
async def cerberus(
    keys: list[tuple[str, int, str]], metrics: GrpcMetrics | None = None
) -> AsyncIterator[tuple[grpc.Channel, FakeBackend, int]]:
    backend = FakeBackend()
    for key_id, sk, status in keys:
        backend.add_key(key_id, sk, status)
    config = GrpcConfig(handshake_timeout=2.0, idle_timeout=10.0, request_timeout=20.0)
    serve = partial(
        serve_grpc, backend, authenticate, host="127.0.0.1", port=0, config=config, metrics=metrics
    )
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve)
        port = listeners[0].socket.getsockname()[1]
        async with insecure_channel(port) as channel:
            yield channel, backend, port
        nursery.cancel_scope.cancel()


def signing_calls(backend: FakeBackend) -> list[Any]:
    return [c for c in backend.calls if c[0] in ("sign", "sign_batch", "sign_point")]


def pb(name: str) -> Any:
    module = official_modules()["signer" if name.startswith("Sign") else "keymanager"]
    return getattr(module, name)


async def rpc(
    channel: grpc.Channel, path: str, request: Any, api_key: str | None = SIGNER_ALL
) -> tuple[Reply, Any]:
    metadata = [("authorization", api_key)] if api_key is not None else []
    reply = await acall(channel, path, request.SerializeToString(), metadata=metadata)
    response_type = pb(type(request).__name__.replace("Request", "Response"))
    return reply, None if reply.body is None else response_type.FromString(reply.body)


def compressed_g1(v: dict[str, Any]) -> str:
    return str(v["encodings"]["pubkeyG1GnarkCompressed32"]).removeprefix("0x")


async def test_sign_generic_reproduces_every_vector(
    eigen_vectors: dict[str, Any], backend_keys: list[Any]
) -> None:
    metrics = GrpcMetrics()
    async with cerberus(backend_keys, metrics) as (channel, backend, _):
        for v in eigen_vectors["signatureVectors"]:
            msg_hash = bytes.fromhex(v["msgHash"].removeprefix("0x"))
            request = pb("SignGenericRequest")(
                public_key_g1=compressed_g1(v), data=msg_hash, password="ignored"
            )
            reply, response = await rpc(channel, SIGN_GENERIC, request)
            assert reply.code == grpc.StatusCode.OK, (v["id"], reply.details)
            expected = bytes.fromhex(v["encodings"]["sigmaRaw64"].removeprefix("0x"))
            assert response.signature == expected, v["id"]
        assert [c[1][0] for c in backend.signed()] == [
            v["id"] for v in eigen_vectors["signatureVectors"]
        ]
    assert metrics.request_total(SIGN_GENERIC, StatusCode.OK) == len(
        eigen_vectors["signatureVectors"]
    )


async def test_cerberus_vector_short_data_is_zero_padded_on_the_right(
    eigen_vectors: dict[str, Any], backend_keys: list[Any]
) -> None:
    v = next(x for x in eigen_vectors["signatureVectors"] if x["id"] == CERBERUS)
    cerb = v["encodings"]["cerberusSignGeneric"]
    expected = bytes.fromhex(cerb["response"]["signature"])
    key = cerb["request"]["public_key_g1"]
    async with cerberus(backend_keys) as (channel, backend, _):
        for spelled in (key, "0x" + key, "0X" + key.upper()):
            request = pb("SignGenericRequest")(public_key_g1=spelled, data=b"somedata")
            reply, response = await rpc(channel, SIGN_GENERIC, request, SIGNER_ONE)
            assert reply.code == grpc.StatusCode.OK, reply.details
            assert response.signature == expected
        padded = bytes.fromhex(cerb["request"]["data"])
        assert backend.signed()[-1][1] == (CERBERUS, padded, "one")


async def test_sign_g1_multiplies_the_hashed_point(
    eigen_vectors: dict[str, Any], backend_keys: list[Any]
) -> None:
    async with cerberus(backend_keys) as (channel, _, _):
        for v in eigen_vectors["signatureVectors"][:3]:
            h = v["hashToG1"]
            point = bytes.fromhex(h["X"]["hex"][2:]) + bytes.fromhex(h["Y"]["hex"][2:])
            request = pb("SignG1Request")(public_key_g1=compressed_g1(v), data=point)
            reply, response = await rpc(channel, SIGN_G1, request)
            assert reply.code == grpc.StatusCode.OK, reply.details
            assert response.signature == bytes.fromhex(v["encodings"]["sigmaRaw64"][2:])


async def test_sign_g1_rejects_bad_points(
    eigen_vectors: dict[str, Any], backend_keys: list[Any]
) -> None:
    v = eigen_vectors["signatureVectors"][0]
    p = int(eigen_vectors["constants"]["p"]["dec"])
    h = v["hashToG1"]
    x, y = int(h["X"]["dec"]), int(h["Y"]["dec"])
    bad = {
        "off curve": x.to_bytes(32, "big") + ((y + 1) % p).to_bytes(32, "big"),
        "infinity": bytes(64),
        "x >= p": (x + p).to_bytes(32, "big") + y.to_bytes(32, "big"),
        "63 bytes": (x.to_bytes(32, "big") + y.to_bytes(32, "big"))[:63],
        "65 bytes": x.to_bytes(32, "big") + y.to_bytes(32, "big") + b"\x00",
    }
    async with cerberus(backend_keys) as (channel, backend, _):
        for what, data in bad.items():
            request = pb("SignG1Request")(public_key_g1=compressed_g1(v), data=data)
            reply, _ = await rpc(channel, SIGN_G1, request)
            assert reply.code == grpc.StatusCode.INVALID_ARGUMENT, what
        assert signing_calls(backend) == []


async def test_key_metadata_needs_no_api_key_and_list_keys_needs_one(
    eigen_vectors: dict[str, Any], backend_keys: list[Any]
) -> None:
    async with cerberus(backend_keys) as (channel, _, _):
        for v in eigen_vectors["signatureVectors"]:
            request = pb("GetKeyMetadataRequest")(public_key_g1="0x" + compressed_g1(v))
            reply, response = await rpc(channel, GET_KEY_METADATA, request, api_key=None)
            assert reply.code == grpc.StatusCode.OK, reply.details
            assert response.public_key_g1 == compressed_g1(v)
            g2 = v["encodings"]["pubkeyG2GnarkCompressed64"].removeprefix("0x")
            assert response.public_key_g2 == g2
        denied, _ = await rpc(channel, LIST_KEYS, pb("ListKeysRequest")(), api_key=None)
        assert denied.code == grpc.StatusCode.UNAUTHENTICATED
        reply, listing = await rpc(channel, LIST_KEYS, pb("ListKeysRequest")(), OPERATOR)
        assert reply.code == grpc.StatusCode.OK
        listed = {k.public_key_g1: k.public_key_g2 for k in listing.public_keys}
        for v in eigen_vectors["signatureVectors"]:
            g2 = v["encodings"]["pubkeyG2GnarkCompressed64"].removeprefix("0x")
            assert listed[compressed_g1(v)] == g2
        assert len(listed) == len(eigen_vectors["signatureVectors"]) + 1  # "pending", not "gone"


async def test_error_codes(eigen_vectors: dict[str, Any], backend_keys: list[Any]) -> None:
    cerb = next(x for x in eigen_vectors["signatureVectors"] if x["id"] == CERBERUS)
    other = eigen_vectors["signatureVectors"][0]
    async with cerberus(backend_keys) as (channel, backend, _):
        infos = {i.key_id: i for i in await backend.list_keys()}
        pending = g1_to_compressed(infos["pending"].pk_g1).hex()
        gone = g1_to_compressed(infos["gone"].pk_g1).hex()
        known = compressed_g1(cerb)
        unknown = known[:-1] + ("0" if known[-1] != "0" else "1")

        def sign(key: str, data: bytes = b"\x01" * 32) -> Any:
            return pb("SignGenericRequest")(public_key_g1=key, data=data)

        cases = [
            (sign(compressed_g1(cerb)), None, grpc.StatusCode.UNAUTHENTICATED, "missing"),
            (sign(compressed_g1(cerb)), "wrong", grpc.StatusCode.UNAUTHENTICATED, "invalid"),
            (sign(compressed_g1(cerb)), OPERATOR, grpc.StatusCode.PERMISSION_DENIED, ""),
            (sign(compressed_g1(other)), SIGNER_ONE, grpc.StatusCode.PERMISSION_DENIED, ""),
            (sign(unknown), SIGNER_ALL, grpc.StatusCode.NOT_FOUND, "not found"),
            (sign(gone), SIGNER_ALL, grpc.StatusCode.NOT_FOUND, "not found"),
            (sign("zz" * 32), SIGNER_ALL, grpc.StatusCode.INVALID_ARGUMENT, "public_key_g1"),
            (sign(compressed_g1(cerb)[:-2]), SIGNER_ALL, grpc.StatusCode.INVALID_ARGUMENT, ""),
            (
                sign(compressed_g1(cerb), b"\x01" * 33),
                SIGNER_ALL,
                grpc.StatusCode.INVALID_ARGUMENT,
                "data is too long, must be 32 bytes",
            ),
            (sign(pending), SIGNER_ALL, grpc.StatusCode.FAILED_PRECONDITION, "pending"),
        ]
        for request, api_key, code, text in cases:
            reply, _ = await rpc(channel, SIGN_GENERIC, request, api_key)
            assert reply.code == code, (request.public_key_g1, api_key, reply.details)
            assert text in reply.details
            assert "wrong" not in reply.details and "ignored" not in reply.details
        meta = pb("GetKeyMetadataRequest")(public_key_g1=unknown)
        reply, _ = await rpc(channel, GET_KEY_METADATA, meta, api_key=None)
        assert reply.code == grpc.StatusCode.NOT_FOUND
        gen = await acall(channel, "/keymanager.v1.KeyManager/GenerateKeyPair", b"")
        assert gen.code == grpc.StatusCode.UNIMPLEMENTED
        auth = [("authorization", SIGNER_ALL)]
        junk = await acall(channel, SIGN_GENERIC, b"\x12\x05ab", metadata=auth)
        assert junk.code == grpc.StatusCode.INVALID_ARGUMENT
        # only the pending key reached the backend (which refused it)
        assert [c[1][0] for c in signing_calls(backend)] == ["pending"]
        backend.down = {"node-2", "node-4", "node-5"}  # 2 of 5 up, threshold 3
        reply, _ = await rpc(channel, SIGN_GENERIC, sign(known), SIGNER_ALL)
        assert reply.code == grpc.StatusCode.UNAVAILABLE
        assert "node-2, node-4, node-5" in reply.details
        backend.down = set()
        backend.exhausted = {CERBERUS}  # the nodes' usage limits refuse this key
        reply, _ = await rpc(channel, SIGN_GENERIC, sign(known), SIGNER_ALL)
        assert reply.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "usage limit" in reply.details


async def test_garbage_connection_leaves_signing_working(
    eigen_vectors: dict[str, Any], backend_keys: list[Any]
) -> None:
    v = next(x for x in eigen_vectors["signatureVectors"] if x["id"] == CERBERUS)
    request = pb("SignGenericRequest")(
        public_key_g1=compressed_g1(v), data=bytes.fromhex(v["msgHash"][2:])
    )
    async with cerberus(backend_keys) as (channel, _, port):
        reply, response = await rpc(channel, SIGN_GENERIC, request)
        target = bytes.fromhex(v["encodings"]["sigmaRaw64"][2:])
        assert response.signature == target
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"\x16garbage that is not HTTP/2 at all" * 10)
        with trio.fail_after(10):
            while await stream.receive_some(4096):
                pass
        await stream.aclose()
        reply, response = await rpc(channel, SIGN_GENERIC, request)
        assert reply.code == grpc.StatusCode.OK and response.signature == target

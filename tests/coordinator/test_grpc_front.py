"""coordinator/grpc_front.py: the coordinator's gRPC endpoint as ``serve_coordinator``
starts it, called with the real grpcio client over 127.0.0.1, in plaintext and with
the coordinator's TLS certificate; API keys from the same ``ApiKeyStore`` as the HTTP
API; cerberus' metrics land in the shared registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
import trio

from coordinator.auth import ApiKeyStore
from coordinator.config import CoordinatorConfig
from coordinator.grpc_front import GrpcStartupError, grpc_ssl_context, start_grpc
from coordinator.metrics import Registry
from protocol.encoding import g1_to_compressed
from tests.coordinator.fake_backend import FakeBackend
from tests.coordinator.grpc.grpc_clients import NO_PROXY, self_signed
from tests.protocol.official_protobuf import official_modules

SIGN_GENERIC = "/signer.v1.Signer/SignGeneric"


def config(tmp_path: Path, *, tls: bool) -> CoordinatorConfig:
    return CoordinatorConfig(
        name="coordinator",
        manifest=tmp_path / "manifest.toml",
        data_dir=tmp_path,
        noise_key_file=tmp_path / "noise.key",
        api_keys_file=tmp_path / "api-keys.json",
        http_listen=("127.0.0.1", 0),
        grpc_listen=("127.0.0.1", 0),
        tls_cert=tmp_path / "cert.pem" if tls else None,
        tls_key=tmp_path / "key.pem" if tls else None,
    )


def sign(channel: grpc.Channel, key_hex: str, data: bytes, api_key: str) -> Any:
    pb = official_modules()["signer"]
    method = channel.unary_unary(
        SIGN_GENERIC,
        request_serializer=pb.SignGenericRequest.SerializeToString,
        response_deserializer=pb.SignGenericResponse.FromString,
    )
    request = pb.SignGenericRequest(public_key_g1=key_hex, data=data)
    try:
        return method(request, metadata=(("authorization", api_key),), timeout=20)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[attr-defined]


@pytest.mark.parametrize("tls", [False, True])
async def test_the_coordinators_grpc_endpoint_signs_with_the_http_api_keys(
    tmp_path: Path, eigen_vectors: dict[str, Any], tls: bool
) -> None:
    vec = next(v for v in eigen_vectors["signatureVectors"] if v["id"] == "sk69-hello-world")
    backend = FakeBackend()
    info = backend.add_key("sk69", int(vec["privateKey"]["dec"]))
    store = ApiKeyStore()
    token = store.add_client("avs", ["signer"], ["sk69"])
    auditor = store.add_client("watcher", ["auditor"], [])
    cert_pem = self_signed(tmp_path)[1] if tls else b""
    metrics = Registry()
    key_hex = g1_to_compressed(info.pk_g1).hex()
    async with trio.open_nursery() as nursery:
        port = await start_grpc(nursery, backend, store, config(tmp_path, tls=tls), metrics)
        target = f"{'localhost' if tls else '127.0.0.1'}:{port}"
        if tls:
            creds = grpc.ssl_channel_credentials(root_certificates=cert_pem)
            channel = grpc.secure_channel(target, creds, options=NO_PROXY)
        else:
            channel = grpc.insecure_channel(target, options=NO_PROXY)
        data = bytes.fromhex(vec["msgHash"].removeprefix("0x"))
        try:
            reply = await trio.to_thread.run_sync(sign, channel, key_hex, data, token)
            refused = await trio.to_thread.run_sync(sign, channel, key_hex, data, auditor)
        finally:
            await trio.to_thread.run_sync(channel.close)
        nursery.cancel_scope.cancel()
    assert "0x" + reply.signature.hex() == vec["encodings"]["sigmaRaw64"]
    assert refused == grpc.StatusCode.PERMISSION_DENIED
    text = metrics.render()
    assert (
        'cerberus_rpc_server_request_total{method="/signer.v1.Signer/SignGeneric",code="OK"} 1'
        in text
    )
    assert [c[0] for c in backend.calls].count("sign") == 1


def test_tls_needs_readable_certificate_files(tmp_path: Path) -> None:
    assert grpc_ssl_context(config(tmp_path, tls=False)) is None
    with pytest.raises(GrpcStartupError, match="certificate"):
        grpc_ssl_context(config(tmp_path, tls=True))  # the files do not exist

"""Transport rules: plaintext only on loopback unless --insecure; TLS with optional
client certificates that authenticate a client by fingerprint."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from coordinator.auth import ApiKeyStore, cert_fingerprint
from coordinator.config import parse_config
from coordinator.http import HttpConfig, HttpConfigError, TlsConfig, http_config_for, serve_http
from tests.coordinator.fake_backend import FakeBackend
from tests.coordinator.http.conftest import make_backend


def test_non_loopback_plaintext_needs_insecure() -> None:
    for host in ("0.0.0.0", "192.0.2.10", "::", "example.org"):
        with pytest.raises(HttpConfigError, match="insecure"):
            HttpConfig(host=host).validate()
        HttpConfig(host=host, insecure=True).validate()
    for host in ("127.0.0.1", "127.9.9.9", "::1", "localhost"):
        HttpConfig(host=host).validate()


@pytest.mark.parametrize(
    "bad",
    [
        {"max_body_bytes": 0},
        {"port": 70000},
        {"sign_timeout_s": -1},
        {"allow_networks": ("not-a-net",)},
        {"tls": TlsConfig(Path("/nonexistent.pem"), Path("/nonexistent.key"))},
    ],
)
def test_bad_configs_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(HttpConfigError):
        HttpConfig(**bad).validate()


async def test_serve_http_refuses_before_binding() -> None:
    with pytest.raises(HttpConfigError):
        await serve_http(FakeBackend(), ApiKeyStore(), config=HttpConfig(host="0.0.0.0"))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str, public_key: ec.EllipticCurvePublicKey, signer: ec.EllipticCurvePrivateKey,
    *, ca: bool = False, ip: str | None = None,
) -> x509.Certificate:  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name("tkms-test-ca"))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip is not None:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))])
        b = b.add_extension(san, critical=False)
    return b.sign(signer, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


async def test_tls_with_client_certificate(
    nursery: trio.Nursery, tmp_path: Path, eigen_vectors: dict[str, Any]
) -> None:
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in "abc")
    ca = _cert("tkms-test-ca", ca_key.public_key(), ca_key, ca=True)
    server = _cert("127.0.0.1", server_key.public_key(), ca_key, ip="127.0.0.1")
    client = _cert("auditor", client_key.public_key(), ca_key)
    _write(tmp_path / "ca", ca, ca_key)
    _write(tmp_path / "server", server, server_key)
    _write(tmp_path / "client", client, client_key)

    store = ApiKeyStore()
    token = store.add_client("signer", ["signer"], ["*"])
    fp = cert_fingerprint(client.public_bytes(serialization.Encoding.DER))
    store.add_client("auditor", ["auditor"], cert_sha256=[fp])
    tls = TlsConfig(tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem")
    config = HttpConfig(tls=tls)
    backend = make_backend(eigen_vectors)
    port = await nursery.start(
        lambda task_status: serve_http(backend, store, config=config, task_status=task_status)
    )
    url = f"https://127.0.0.1:{port}"

    with_cert = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    with_cert.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
    async with httpx.AsyncClient(base_url=url, verify=with_cert) as http:
        r = await http.get("/v1/keys")  # the certificate alone authenticates "auditor"
        assert r.status_code == 200, r.text
        r = await http.post("/v1/keys/sk69/sign", json={"msgHash": "0x" + "00" * 32})
        assert r.status_code == 403  # auditor may not sign
        r = await http.get("/v1/keys", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401  # key and certificate name different clients

    no_cert = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    async with httpx.AsyncClient(base_url=url, verify=no_cert) as http:
        assert (await http.get("/v1/keys")).status_code == 401
        r = await http.get("/v1/keys", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        with pytest.raises(httpx.HTTPError):  # plaintext to a TLS port fails
            await http.get("/healthz")
    assert backend.signed() == []


def test_http_config_from_the_coordinator_config(tmp_path: Path) -> None:
    text = (
        'name = "c"\nmanifest = "m.toml"\nnoise_key_file = "n.key"\n'
        'api_keys_file = "api-keys.json"\nhttp_listen = "127.0.0.1:7000"\n'
        'grpc_listen = "127.0.0.1:7001"\nsign_timeout_s = 5.0\n'
    )
    cfg = http_config_for(parse_config(text, base_dir=tmp_path))
    assert (cfg.host, cfg.port, cfg.tls, cfg.insecure) == ("127.0.0.1", 7000, None, False)
    assert cfg.sign_timeout_s == 20.0 and cfg.ceremony_timeout_s == 300.0
    cfg.validate()

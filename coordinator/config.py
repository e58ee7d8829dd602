"""The coordinator's one frozen configuration object, loaded from TOML.

    name = "coordinator"
    manifest = "../manifest.toml"          # relative paths are relative to this file
    data_dir = "."
    noise_key_file = "noise.key"           # 0600, hex of the X25519 static private key
    api_keys_file = "../api-keys.json"
    http_listen = "127.0.0.1:7000"
    grpc_listen = "127.0.0.1:7001"
    insecure = false                       # allow plaintext on a non-loopback address
    tls_cert = ""                          # optional PEM paths for HTTP/gRPC TLS
    tls_key = ""
    sign_timeout_s = 2.0
    dkg_phase_timeout_s = 30.0
    require_transcripts = true             # serve only keys whose DKG transcript a holder
                                           # proves (false: public-data checks only,
                                           # for keys dealt by a test dealer)

The coordinator holds no key share: its only secret is its Noise static key.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.errors import DecodeError, Fault


class ConfigError(DecodeError):
    """The coordinator configuration is malformed (the operator's file)."""

    fault = Fault.CONFIG


def split_host_port(value: str, field: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port), validated."""
    if ":" not in value:
        raise ConfigError(field, "must be host:port")
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(field, "must be host:port with a port in [0, 65535]")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback literals (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    name: str
    manifest: Path
    data_dir: Path
    noise_key_file: Path
    api_keys_file: Path
    http_listen: tuple[str, int]
    grpc_listen: tuple[str, int]
    insecure: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    sign_timeout_s: float = 2.0
    dkg_phase_timeout_s: float = 30.0
    require_transcripts: bool = True

    def __post_init__(self) -> None:
        for field, (host, _) in (
            ("http_listen", self.http_listen),
            ("grpc_listen", self.grpc_listen),
        ):
            if not is_loopback(host) and self.tls_cert is None and not self.insecure:
                raise ConfigError(
                    field, f"binding {host} (not loopback) requires tls_cert/tls_key or insecure"
                )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert", "tls_cert and tls_key go together")
        if not 0 < self.sign_timeout_s <= 60:
            raise ConfigError("sign_timeout_s", "must be in (0, 60]")
        if not 0 < self.dkg_phase_timeout_s <= 600:
            raise ConfigError("dkg_phase_timeout_s", "must be in (0, 600]")


_KEYS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "manifest": str,
    "data_dir": str,
    "noise_key_file": str,
    "api_keys_file": str,
    "http_listen": str,
    "grpc_listen": str,
    "insecure": bool,
    "tls_cert": str,
    "tls_key": str,
    "sign_timeout_s": (int, float),
    "dkg_phase_timeout_s": (int, float),
    "require_transcripts": bool,
}
_REQUIRED = {"name", "manifest", "noise_key_file", "api_keys_file", "http_listen", "grpc_listen"}


def parse_config(text: str, *, base_dir: Path) -> CoordinatorConfig:
    """Parse a coordinator config; relative paths are taken from ``base_dir``."""
    try:
        doc: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("coordinator config", f"not valid TOML: {exc}") from None
    unknown = set(doc) - set(_KEYS)
    if unknown:
        raise ConfigError("coordinator config", f"unknown keys {sorted(unknown)}")
    missing = _REQUIRED - set(doc)
    if missing:
        raise ConfigError("coordinator config", f"missing keys {sorted(missing)}")
    for key, value in doc.items():
        expected = _KEYS[key]
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise ConfigError(key, "has the wrong type")

    def path(key: str) -> Path | None:
        value = doc.get(key, "")
        return (base_dir / value).resolve() if value else None

    return CoordinatorConfig(
        name=doc["name"],
        manifest=(base_dir / doc["manifest"]).resolve(),
        data_dir=(base_dir / doc.get("data_dir", ".")).resolve(),
        noise_key_file=(base_dir / doc["noise_key_file"]).resolve(),
        api_keys_file=(base_dir / doc["api_keys_file"]).resolve(),
        http_listen=split_host_port(doc["http_listen"], "http_listen"),
        grpc_listen=split_host_port(doc["grpc_listen"], "grpc_listen"),
        insecure=doc.get("insecure", False),
        tls_cert=path("tls_cert"),
        tls_key=path("tls_key"),
        sign_timeout_s=float(doc.get("sign_timeout_s", 2.0)),
        dkg_phase_timeout_s=float(doc.get("dkg_phase_timeout_s", 30.0)),
        require_transcripts=doc.get("require_transcripts", True),
    )


def load_config(path: Path) -> CoordinatorConfig:
    return parse_config(path.read_text(), base_dir=path.parent)

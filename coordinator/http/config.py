"""Configuration of the client HTTP front end: one frozen dataclass, validated once.

``HttpConfig.validate()`` enforces the CLI contract's transport rule: plaintext is
served on loopback only; binding any other address needs ``tls`` or an explicit
``insecure=True`` (the ``--insecure`` flag). It also checks every limit is positive
and every TLS file exists, so a bad config fails at start, not at first request.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from coordinator.auth import AuthConfigError, IpAllowlist, RateLimit
from coordinator.config import CoordinatorConfig, is_loopback
from protocol.errors import Fault, TkmsError

DEFAULT_RATE_LIMIT = RateLimit(per_second=100.0, burst=200.0)


class HttpConfigError(TkmsError):
    """An HTTP front-end setting that cannot work (refused before binding)."""

    fault: ClassVar[Fault] = Fault.CONFIG


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Server certificate and key (PEM); with ``client_ca`` the server asks for a
    client certificate signed by that CA (``require_client_cert`` makes it mandatory),
    and a verified certificate whose SHA-256 is in the keys file's ``certSha256``
    authenticates its client without an API key."""

    certfile: Path
    keyfile: Path
    client_ca: Path | None = None
    require_client_cert: bool = False

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.certfile, self.keyfile)
            if self.client_ca is not None:
                ctx.load_verify_locations(cafile=self.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise HttpConfigError(f"tls: cannot load certificate files: {exc}") from None
        if self.client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """Everything the HTTP front end needs to know; times in seconds, sizes in bytes."""

    host: str = "127.0.0.1"
    port: int = 0  # 0 = any free port (reported through task_status)
    tls: TlsConfig | None = None
    insecure: bool = False  # allow plaintext on a non-loopback address
    max_body_bytes: int = 64 * 1024  # sign-batch of 256 hashes is ~18 KiB
    max_header_bytes: int = 16 * 1024
    max_connections: int = 256
    max_batch: int = 256
    header_timeout_s: float = 10.0  # request head (also the keep-alive idle limit)
    body_timeout_s: float = 10.0
    send_timeout_s: float = 10.0  # each response write; a client that stops reading is dropped
    request_timeout_s: float = 10.0  # reads and destroy
    sign_timeout_s: float = 10.0  # sign, sign-batch (the backend bounds its own fan-out)
    ceremony_timeout_s: float = 300.0  # DKG and import
    rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT  # per client; None = unlimited
    allow_networks: tuple[str, ...] | None = None  # None = any source address
    public_health: bool = True  # /healthz without credentials
    public_metrics: bool = True  # /metrics without credentials

    def validate(self) -> None:
        if not (0 <= self.port <= 65535):
            raise HttpConfigError(f"port {self.port} out of range")
        if not is_loopback(self.host) and self.tls is None and not self.insecure:
            raise HttpConfigError(
                f"refusing plaintext HTTP on non-loopback address {self.host!r}: "
                "configure TLS or pass --insecure"
            )
        for name in (
            "max_body_bytes",
            "max_header_bytes",
            "max_connections",
            "max_batch",
            "header_timeout_s",
            "body_timeout_s",
            "send_timeout_s",
            "request_timeout_s",
            "sign_timeout_s",
            "ceremony_timeout_s",
        ):
            if not getattr(self, name) > 0:
                raise HttpConfigError(f"{name} must be positive")
        if self.tls is not None:
            for f in (self.tls.certfile, self.tls.keyfile, self.tls.client_ca):
                if f is not None and not f.is_file():
                    raise HttpConfigError(f"tls: {f} is not a file")
            if self.tls.require_client_cert and self.tls.client_ca is None:
                raise HttpConfigError("tls: require_client_cert needs client_ca")
        try:
            IpAllowlist(self.allow_networks)
        except AuthConfigError as exc:
            raise HttpConfigError(str(exc)) from None


DKG_PHASES = 6  # upper bound on sequential DKG phases, for the request deadline


def http_config_for(cfg: CoordinatorConfig) -> HttpConfig:
    """The HTTP front end's config from the coordinator's TOML config: listen address,
    TLS, ``insecure``; request deadlines leave room above the backend's own bounds
    (a sign fans out within ``sign_timeout_s``; a DKG has up to ``DKG_PHASES``
    phases of ``dkg_phase_timeout_s``)."""
    host, port = cfg.http_listen
    tls = (
        TlsConfig(cfg.tls_cert, cfg.tls_key)
        if cfg.tls_cert is not None and cfg.tls_key is not None
        else None
    )
    return HttpConfig(
        host=host,
        port=port,
        tls=tls,
        insecure=cfg.insecure,
        sign_timeout_s=max(10.0, 4 * cfg.sign_timeout_s),
        ceremony_timeout_s=max(300.0, DKG_PHASES * cfg.dkg_phase_timeout_s + 60.0),
    )

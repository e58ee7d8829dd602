"""The coordinator process: Noise sessions to every node, the service, HTTP and gRPC.

``serve_coordinator(config, shutdown=...)`` refuses to start (a typed error, nothing
left open) unless its Noise key file is private (0600) and well formed, the manifest
lists this coordinator by name with exactly that key (the nodes would refuse it
otherwise), and the API keys file loads. It then dials every node of the manifest
(each pinned to its own Noise key; redial with backoff), runs the
``SigningService`` (``coordinator.signer``: the registry rebuilt from the nodes,
threshold signing, the audit log and the checkpoint relay; ``coordinator.key_import``
adds key import) and serves the HTTP API on ``http_listen`` and the cerberus-compatible
gRPC API on ``grpc_listen`` (``coordinator.grpc_front``), one metrics registry for
both. Setting ``shutdown`` stops both servers and closes every session.
``run_coordinator_process`` is the ``tkms coordinator run`` entry (SIGTERM/SIGINT).

The Noise key file holds the 32-byte X25519 private key as 64 hex digits and a
newline; it is the coordinator's only secret.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import tempfile
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import trio

from coordinator.auth import ApiKeyStore
from coordinator.config import CoordinatorConfig
from coordinator.dkg import DkgConfig
from coordinator.grpc_front import start_grpc
from coordinator.http import http_config_for, serve_http
from coordinator.key_import import ImportingService
from coordinator.metrics import Registry
from coordinator.service import ServiceConfig, accept_structurally_valid
from coordinator.sessions import NodeEndpoint, SessionConfig, open_session_manager
from coordinator.signer import SignerConfig, open_signing_service
from protocol.errors import Fault, TkmsError
from protocol.manifest import Manifest, ManifestError, parse_manifest
from protocol.noise import KeyPair, NoiseConfigError

log = logging.getLogger("tkms.coordinator")

# Redial a lost node within 2 s at most: a restarted node is back in the pool quickly.
SESSION_CONFIG = SessionConfig(backoff_max_s=2.0)


class CoordinatorStartupError(TkmsError):
    """The coordinator refuses to start: its files and the manifest disagree."""

    fault = Fault.CONFIG


def write_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 atomically (temp, fsync, rename); never overwrite."""
    if path.exists():
        raise CoordinatorStartupError(f"{path} exists: refusing to overwrite it")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.link(tmp, path)  # fails if path appeared meanwhile: never overwrite
    os.unlink(tmp)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_noise_key(path: Path, key: KeyPair) -> None:
    write_private_file(path, key.private.hex().encode() + b"\n")


def read_noise_key(path: Path) -> KeyPair:
    """The coordinator's Noise key pair from its 0600 key file."""
    try:
        st = path.stat()
    except OSError as exc:
        reason = exc.strerror
        raise CoordinatorStartupError(f"cannot read Noise key file {path}: {reason}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CoordinatorStartupError(f"Noise key file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise CoordinatorStartupError(
            f"Noise key file {path} is accessible by group/others (chmod 600)"
        )
    try:
        text = path.read_text(encoding="ascii").strip()
        return KeyPair.from_private(bytes.fromhex(text))
    except (OSError, UnicodeDecodeError, ValueError, NoiseConfigError):
        raise CoordinatorStartupError(
            f"Noise key file {path} must hold 64 hex digits (an X25519 private key)"
        ) from None


def load_manifest(config: CoordinatorConfig, public_key: bytes) -> Manifest:
    """The manifest, which must list this coordinator with ``public_key``."""
    try:
        manifest = parse_manifest(config.manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise CoordinatorStartupError(f"cannot read manifest {config.manifest}: {reason}") from None
    except ManifestError as exc:
        raise CoordinatorStartupError(f"manifest {config.manifest}: {exc}") from None
    listed = [c for c in manifest.coordinators if c.name == config.name]
    if not listed:
        raise CoordinatorStartupError(
            f"manifest {config.manifest} does not list a coordinator named {config.name!r}"
        )
    if listed[0].noise_public_key != public_key:
        raise CoordinatorStartupError(
            f"manifest {config.manifest} lists coordinator {config.name} with Noise key "
            f"{listed[0].noise_public_key.hex()}, but {config.noise_key_file} holds the key of "
            f"{public_key.hex()}: the nodes would refuse it"
        )
    return manifest


async def serve_coordinator(
    config: CoordinatorConfig,
    *,
    shutdown: trio.Event,
    session_config: SessionConfig = SESSION_CONFIG,
    service_config: ServiceConfig | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the coordinator until ``shutdown`` is set; ``task_status.started(http port)``."""
    identity = read_noise_key(config.noise_key_file)
    manifest = load_manifest(config, identity.public)
    auth = ApiKeyStore.load(config.api_keys_file)
    http_config = http_config_for(config)
    http_config.validate()
    endpoints = [NodeEndpoint.from_manifest(n) for n in manifest.nodes]
    async with (
        open_session_manager(
            endpoints, identity=identity, cluster_id=manifest.cluster_id, config=session_config
        ) as sessions,
        open_signing_service(
            manifest,
            sessions,
            name=config.name,
            data_dir=config.data_dir,
            config=service_config,
            signer_config=SignerConfig(sign_timeout_s=config.sign_timeout_s),
            dkg_config=DkgConfig(phase_timeout_s=config.dkg_phase_timeout_s),
            verify_transcript=None if config.require_transcripts else accept_structurally_valid,
            service_class=ImportingService,
        ) as service,
        trio.open_nursery() as nursery,
    ):
        metrics = Registry()  # shared by the HTTP and gRPC front ends
        try:
            port = await nursery.start(
                partial(serve_http, service, auth, config=http_config, metrics=metrics)
            )
        except OSError as exc:
            host, wanted = config.http_listen
            raise CoordinatorStartupError(f"cannot listen on {host}:{wanted}: {exc}") from None
        grpc_port = await start_grpc(nursery, service, auth, config, metrics)
        log.info(
            "coordinator %s: cluster %s, %d node(s), HTTP on %s:%d, gRPC on %s:%d",
            config.name,
            manifest.cluster_id.hex(),
            len(endpoints),
            http_config.host,
            port,
            config.grpc_listen[0],
            grpc_port,
        )
        task_status.started(port)
        await shutdown.wait()
        log.info("shutting down: closing the HTTP API and every node session")
        nursery.cancel_scope.cancel()
    log.info("coordinator %s stopped", config.name)


def unwrap_error(exc: BaseException) -> BaseException:
    """The single leaf of nested exception groups, else ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _watch_signals(signals: AsyncIterator[int], shutdown: trio.Event) -> None:
    async for signum in signals:
        log.info("received %s", signal.Signals(signum).name)
        shutdown.set()
        return


async def _main(config: CoordinatorConfig) -> None:
    shutdown = trio.Event()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, signals, shutdown)
            await serve_coordinator(config, shutdown=shutdown)
            nursery.cancel_scope.cancel()


def run_coordinator_process(config: CoordinatorConfig) -> None:
    """Run until SIGTERM/SIGINT; a start-up error is raised as itself (a ``TkmsError``)."""
    try:
        trio.run(_main, config)
    except BaseExceptionGroup as group:
        raise unwrap_error(group) from None

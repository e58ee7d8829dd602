"""``tkms coordinator init`` and ``tkms coordinator run``.

``coordinator init --dir D --manifest M --http H:P --grpc H:P --api-keys-file F
[--demo-client-key K] [--name N] [--insecure] [--json]`` creates D (0700) holding
the coordinator's Noise X25519 static key (``noise.key``, 0600) and its config
(``coordinator.toml``, the format of ``coordinator.config``; paths relative to D).
The manifest need not exist yet: ``cluster init`` writes it once it knows every
public key. With ``--demo-client-key`` it adds the client ``demo`` (roles operator
and signer on every key) to the API keys file (created 0600 if missing) and writes
the demo client's raw API key to K (0600); otherwise it only makes sure the keys
file exists. Nothing is overwritten; on failure nothing it created is left behind.
``--json`` prints ``name``, ``noisePublicKey`` (hex), ``config``, ``apiKeysFile``,
``demoClientKey`` (path or null), ``http``, ``grpc``.

``coordinator run --config F`` runs ``coordinator.server.run_coordinator_process``
(logs on stderr, SIGTERM/SIGINT for a graceful stop).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from cluster.output import emit
from coordinator.auth import ApiKeyStore, add_client_to_file
from coordinator.config import ConfigError, load_config, parse_config, split_host_port
from coordinator.server import (
    CoordinatorStartupError,
    run_coordinator_process,
    write_noise_key,
    write_private_file,
)
from protocol.noise import KeyPair
from shell.logs import configure_process_logging

CONFIG_FILE = "coordinator.toml"
NOISE_KEY_FILE = "noise.key"
DEMO_CLIENT = "demo"

log = logging.getLogger("tkms.coordinator")


def register(sub: Any) -> None:
    parser = sub.add_parser("coordinator", help="the coordinator: create its config, run it")
    csub = parser.add_subparsers(dest="coordinator_command", metavar="SUBCOMMAND", required=True)

    init = csub.add_parser("init", help="create the coordinator's Noise key and config")
    init.add_argument("--dir", required=True, type=Path, help="the coordinator's directory")
    init.add_argument("--manifest", required=True, type=Path, help="cluster manifest path")
    init.add_argument("--http", required=True, help="HOST:PORT of the HTTP API")
    init.add_argument("--grpc", required=True, help="HOST:PORT of the gRPC API")
    init.add_argument("--api-keys-file", required=True, type=Path, help="client credentials")
    init.add_argument("--demo-client-key", type=Path, help="write a demo client's API key here")
    init.add_argument("--name", default="coordinator", help="name in the manifest")
    init.add_argument(
        "--insecure", action="store_true", help="allow plaintext HTTP/gRPC off loopback"
    )
    init.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    init.set_defaults(handler=run_init)

    run = csub.add_parser("run", help="run the coordinator from its config")
    run.add_argument("--config", required=True, type=Path, help="the coordinator.toml")
    run.set_defaults(handler=run_run)


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _relative(path: Path, base: Path) -> str:
    return os.path.relpath(path, base)


def config_text(args: argparse.Namespace, directory: Path) -> str:
    lines = [
        f"name = {_toml_str(args.name)}",
        f"manifest = {_toml_str(_relative(args.manifest.resolve(), directory))}",
        'data_dir = "."',
        f"noise_key_file = {_toml_str(NOISE_KEY_FILE)}",
        f"api_keys_file = {_toml_str(_relative(args.api_keys_file.resolve(), directory))}",
        f"http_listen = {_toml_str(args.http)}",
        f"grpc_listen = {_toml_str(args.grpc)}",
    ]
    if args.insecure:
        lines.append("insecure = true")
    return "\n".join(lines) + "\n"


def init_coordinator(args: argparse.Namespace) -> dict[str, Any]:
    """Do ``coordinator init``; returns the ``--json`` object."""
    directory: Path = args.dir.resolve()
    config_path = directory / CONFIG_FILE
    key_path = directory / NOISE_KEY_FILE
    api_keys: Path = args.api_keys_file.resolve()
    demo: Path | None = args.demo_client_key.resolve() if args.demo_client_key else None
    for taken in (config_path, key_path, demo):
        if taken is not None and taken.exists():
            raise CoordinatorStartupError(f"{taken} exists: refusing to overwrite it")
    split_host_port(args.http, "--http")
    split_host_port(args.grpc, "--grpc")
    text = config_text(args, directory)
    parse_config(text, base_dir=directory)  # the rules of `run` (loopback or TLS/insecure)

    created: list[Path] = []
    created_dir = not directory.exists()
    keys_existed = api_keys.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = KeyPair.generate()
        write_noise_key(key_path, key)
        created.append(key_path)
        if demo is not None:
            token = add_client_to_file(api_keys, DEMO_CLIENT, ["operator", "signer"], ["*"])
            write_private_file(demo, token.encode() + b"\n")
            created.append(demo)
            del token
        elif not keys_existed:
            ApiKeyStore().save(api_keys)
        write_private_file(config_path, text.encode())
        created.append(config_path)
    except BaseException:
        for p in reversed(created):
            p.unlink(missing_ok=True)
        if not keys_existed:
            api_keys.unlink(missing_ok=True)
        if created_dir:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    return {
        "name": args.name,
        "noisePublicKey": key.public.hex(),
        "config": str(config_path),
        "apiKeysFile": str(api_keys),
        "demoClientKey": str(demo) if demo is not None else None,
        "http": args.http,
        "grpc": args.grpc,
    }


def run_init(args: argparse.Namespace) -> int:
    result = init_coordinator(args)
    human = "\n".join(
        [
            f"coordinator {result['name']} initialised",
            f"  config:           {result['config']}",
            f"  noise public key: {result['noisePublicKey']}",
            f"  API keys file:    {result['apiKeysFile']}",
        ]
    )
    emit(result, as_json=args.json, human=human)
    return 0


def run_run(args: argparse.Namespace) -> int:
    configure_process_logging()
    try:
        config = load_config(args.config)
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {args.config}: {exc.strerror}") from None
    try:
        run_coordinator_process(config)
    except Exception as exc:
        log.error("coordinator refuses to start or failed: %s", exc)
        raise
    return 0

"""``tkms node init`` and ``tkms node run``: one node's token, identity and config.

``node init --name N --data-dir D`` (SoftHSM2, the default) creates D (0700) with
its own ``softhsm2.conf`` and ``tokens/``, initialises a token labelled
``tkms-<N>`` (or ``--token-label``) with a user PIN and an SO PIN, generates the
identity sealing key inside the token, the node's Noise X25519 and Ed25519 keys
from the mixed entropy, seals both, and writes ``identity.json`` and
``node.toml``. PINs: ``--pin-file``/``--so-pin-file``, else ``TKMS_HSM_PIN`` /
``TKMS_HSM_SO_PIN`` (then nothing of them is written and the config names the
variable), else random PINs in 0600 files ``hsm-user.pin`` / ``hsm-so.pin``.

With ``--pkcs11-module PATH --token-label L`` (a real HSM) the token must already
exist, provisioned with the vendor's tools; init only logs in (user PIN from
``--pin-file`` or ``TKMS_HSM_PIN``) and creates the identity key in it.

``node run --config F`` runs ``node.server.run_node_process``: manifest check, HSM,
entropy start-up tests, identity (must match the manifest), store, audit log, then
the RPC server until SIGTERM/SIGINT (graceful shutdown). Logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import trio

from cluster.output import emit, progress
from node.config import (
    NodeConfig,
    check_name,
    check_pin,
    check_token_label,
    load_config,
    parse_listen,
    read_pin_file,
)
from node.entropy import open_entropy
from node.files import atomic_write
from node.hsm import SOFTHSM_MODULE, open_hsm
from node.identity import PUBLIC_FILE, SEALED_DIR, PublicIdentity, create_identity
from node.server import run_node_process
from node.softhsm import init_softhsm_token, write_softhsm_conf
from protocol.errors import Fault, TkmsError
from protocol.rng import os_rng
from shell.logs import configure_process_logging

CONFIG_FILE = "node.toml"
USER_PIN_FILE = "hsm-user.pin"
SO_PIN_FILE = "hsm-so.pin"
PIN_ENV = "TKMS_HSM_PIN"
SO_PIN_ENV = "TKMS_HSM_SO_PIN"
DEFAULT_LISTEN = "127.0.0.1:7100"

log = logging.getLogger("tkms.node")


class NodeInitError(TkmsError):
    """``node init`` refused (fault CONFIG: the operator's arguments or data dir)."""

    fault = Fault.CONFIG


def register(sub: Any) -> None:
    node = sub.add_parser("node", help="one node: provision its token and identity, run it")
    nsub = node.add_subparsers(dest="node_command", metavar="SUBCOMMAND", required=True)

    init = nsub.add_parser("init", help="create a node's token, identity keys and config")
    init.add_argument("--name", required=True, help="node name (as in the manifest)")
    init.add_argument("--data-dir", required=True, type=Path, help="the node's own directory")
    init.add_argument("--pkcs11-module", type=Path, help="PKCS#11 module of an existing token")
    init.add_argument("--token-label", help="token label (default tkms-<name>)")
    init.add_argument("--listen", default=DEFAULT_LISTEN, help="HOST:PORT the node will serve on")
    init.add_argument("--manifest", type=Path, help="cluster manifest path")
    init.add_argument("--metrics-port", type=int, help="Prometheus metrics port")
    init.add_argument("--pin-file", type=Path, help="existing 0600 file with the user PIN")
    init.add_argument("--so-pin-file", type=Path, help="existing 0600 file with the SO PIN")
    init.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    init.set_defaults(handler=run_init)

    run = nsub.add_parser("run", help="run a node from its config")
    run.add_argument("--config", required=True, type=Path, help="the node's node.toml")
    run.set_defaults(handler=run_run)


def _is_initialised(data_dir: Path) -> list[str]:
    markers = [CONFIG_FILE, PUBLIC_FILE, SEALED_DIR, "tokens", "softhsm2.conf", "keys"]
    return [m for m in markers if (data_dir / m).exists()]


def _random_pin() -> str:
    return os_rng(16).hex()


def init_node(args: argparse.Namespace) -> dict[str, Any]:
    """Do ``node init``; returns the --json object. Cleans up after itself on failure."""
    data_dir: Path = args.data_dir.resolve()
    if data_dir.exists() and not data_dir.is_dir():
        raise NodeInitError(f"{data_dir} exists and is not a directory")
    found = _is_initialised(data_dir) if data_dir.exists() else []
    if found:
        raise NodeInitError(
            f"{data_dir} is already initialised ({', '.join(found)}): refusing to overwrite"
        )
    parse_listen(args.listen, "--listen")
    check_name(args.name)
    generic = args.pkcs11_module is not None
    if generic and not args.token_label:
        raise NodeInitError("--pkcs11-module needs --token-label (the existing token's label)")
    module = args.pkcs11_module.resolve() if generic else SOFTHSM_MODULE
    label = args.token_label or f"tkms-{args.name}"
    check_token_label(label, "--token-label")

    created_dir = not data_dir.exists()
    created: list[Path] = []
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        pin_env: str | None = None
        pin_file: Path | None = None
        if args.pin_file is not None:
            pin_file = args.pin_file.resolve()
            user_pin = read_pin_file(pin_file, "--pin-file")
        elif os.environ.get(PIN_ENV) is not None:
            pin_env = PIN_ENV
            user_pin = check_pin(os.environ[PIN_ENV], PIN_ENV)
        elif not generic:
            user_pin = _random_pin()
            pin_file = data_dir / USER_PIN_FILE
            atomic_write(pin_file, user_pin.encode() + b"\n", overwrite=False, mode=0o600)
            created.append(pin_file)
        else:
            raise NodeInitError(f"an existing token needs its user PIN: --pin-file or {PIN_ENV}")

        softhsm2_conf: Path | None = None
        if not generic:
            if args.so_pin_file is not None:
                so_pin = read_pin_file(args.so_pin_file.resolve(), "--so-pin-file")
            elif os.environ.get(SO_PIN_ENV) is not None:
                so_pin = check_pin(os.environ[SO_PIN_ENV], SO_PIN_ENV)
            else:
                so_pin = _random_pin()
                so_path = data_dir / SO_PIN_FILE
                atomic_write(so_path, so_pin.encode() + b"\n", overwrite=False, mode=0o600)
                created.append(so_path)
            created += [data_dir / "tokens", data_dir / "softhsm2.conf"]
            softhsm2_conf = write_softhsm_conf(data_dir)
            progress(f"initialising SoftHSM2 token {label!r} in {data_dir / 'tokens'}")
            init_softhsm_token(module, softhsm2_conf, label, so_pin=so_pin, user_pin=user_pin)
            del so_pin
        elif "softhsm" in module.name.lower() and os.environ.get("SOFTHSM2_CONF"):
            softhsm2_conf = Path(os.environ["SOFTHSM2_CONF"]).resolve()
        del user_pin

        config = NodeConfig(
            name=args.name,
            data_dir=data_dir,
            manifest=args.manifest.resolve() if args.manifest is not None else None,
            listen=args.listen,
            metrics_port=args.metrics_port,
            pkcs11_module=module,
            token_label=label,
            pin_env=pin_env,
            pin_file=pin_file,
            softhsm2_conf=softhsm2_conf,
        )
        created += [data_dir / SEALED_DIR, data_dir / PUBLIC_FILE]
        public = trio.run(_create_identity, config)
        config_path = data_dir / CONFIG_FILE
        atomic_write(config_path, config.to_toml().encode(), overwrite=False, mode=0o644)
    except BaseException:
        if created_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            for p in reversed(created):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        raise
    return {
        "name": public.name,
        "noisePublicKey": public.noise_public_key.hex(),
        "ed25519PublicKey": public.ed25519_public_key.hex(),
        "pkcs11Module": str(module),
        "tokenLabel": label,
        "softhsm2Conf": str(softhsm2_conf) if softhsm2_conf is not None else None,
        "config": str(config_path),
    }


async def _create_identity(config: NodeConfig) -> PublicIdentity:
    async with open_hsm(config) as hsm, open_entropy(hsm) as entropy:
        progress("entropy start-up tests passed; generating the node identity")
        return await create_identity(hsm, entropy, name=config.name, data_dir=config.data_dir)


def run_init(args: argparse.Namespace) -> int:
    result = init_node(args)
    human = "\n".join(
        [
            f"node {result['name']} initialised",
            f"  config:             {result['config']}",
            f"  token:              {result['tokenLabel']} ({result['pkcs11Module']})",
            f"  noise public key:   {result['noisePublicKey']}",
            f"  ed25519 public key: {result['ed25519PublicKey']}",
        ]
    )
    emit(result, as_json=args.json, human=human)
    return 0


def run_run(args: argparse.Namespace) -> int:
    configure_process_logging()
    config = load_config(args.config)
    try:
        run_node_process(config)
    except TkmsError as exc:
        log.error("node refuses to start: %s", exc)
        raise
    return 0

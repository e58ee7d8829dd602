"""Helpers for in-process node tests: provision real SoftHSM2 tokens and node
identities for a few nodes under tmp_path, write their manifest, and run them in a
nursery for the length of a test (``tests/node/test_dkg_handlers.py``,
``tests/node/test_key_import_handlers.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio

from node.config import NodeConfig
from node.entropy import open_entropy
from node.hsm import SOFTHSM_MODULE, open_hsm
from node.identity import create_identity
from protocol.manifest import CoordinatorEntry, Manifest, NodeEntry
from protocol.noise import KeyPair
from tests.node.hsm_helpers import SoftHsm, provision, user_pin

N = TypeVar("N")


async def provision_nodes(
    tmp_path: Path, names: Sequence[str], *, port_base: int
) -> tuple[SoftHsm, dict[str, NodeConfig], Manifest]:
    """One token, config and identity per node (indices 1..n, listen on
    ``port_base + index``) and the manifest naming them, written to
    ``tmp_path/manifest.toml``."""
    hsm = provision(tmp_path / "hsm", list(names))
    manifest_path = tmp_path / "manifest.toml"
    configs, entries = {}, []
    for index, name in enumerate(names, start=1):
        pin = tmp_path / f"{name}.pin"
        pin.write_text(user_pin(name))
        pin.chmod(0o600)
        data = tmp_path / name
        data.mkdir(mode=0o700)
        config = NodeConfig(
            name=name,
            data_dir=data,
            pkcs11_module=SOFTHSM_MODULE,
            token_label=name,
            listen=f"127.0.0.1:{port_base + index}",
            manifest=manifest_path,
            pin_file=pin,
            softhsm2_conf=hsm.conf,
        )
        async with open_hsm(config) as session, open_entropy(session) as entropy:
            public = await create_identity(session, entropy, name=name, data_dir=data)
        configs[name] = config
        entries.append(
            NodeEntry(
                index=index,
                name=name,
                address=config.listen,
                noise_public_key=public.noise_public_key,
                ed25519_public_key=public.ed25519_public_key,
            )
        )
    manifest = Manifest(
        cluster_id=bytes(range(16)),
        nodes=tuple(entries),
        coordinators=(CoordinatorEntry("coordinator", KeyPair.generate().public),),
    )
    manifest_path.write_text(manifest.to_toml())
    return hsm, configs, manifest


@contextlib.asynccontextmanager
async def running_nodes(
    tmp_path: Path,
    names: Sequence[str],
    *,
    port_base: int,
    make: Callable[[SoftHsm, dict[str, NodeConfig], Manifest, trio.Nursery], N],
) -> AsyncIterator[N]:
    """``make(hsm, configs, manifest, nursery)`` with every node started (its
    ``start(name)``); at the end every node still in its ``running`` is stopped
    (``stop(name)``) and the HSM closed."""
    hsm, configs, manifest = await provision_nodes(tmp_path, names, port_base=port_base)
    try:
        async with trio.open_nursery() as nursery:
            nodes: Any = make(hsm, configs, manifest, nursery)
            for name in names:
                await nodes.start(name)
            try:
                yield nodes
            finally:
                for name in list(nodes.running):
                    await nodes.stop(name)
    finally:
        hsm.close_all()

"""node/handlers/key_import.py on real SoftHSM2 tokens: three nodes in this process
(one token each, real identities, stores and audit logs), the importer's side built
with protocol.import_split exactly as ``tkms key import`` does, the handlers called
as the transport serves them (schemas checked, errors as the coordinator sees them).
A share is sealed pending under its own token key, activated only with every
holder's signature, and an abort or expiry (also across a restart) shreds it."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from py_ecc.optimized_bn128 import G1 as PY_G1
from py_ecc.optimized_bn128 import multiply, normalize

from coordinator.sessions import RemoteError
from node.config import NodeConfig
from node.handlers import NodeContext
from node.handlers.key_import import NodeImporter
from node.sealing import share_key_label
from node.server import open_node
from protocol.audit import decode_line
from protocol.bn254 import g1_mul_generator
from protocol.commit import make_certificate
from protocol.import_api import (
    IMPORT_ABORT,
    IMPORT_OPEN,
    IMPORT_SHARE,
    IMPORT_STATE,
    KEYS_COMMIT,
    ImportRefusal,
    ImportState,
)
from protocol.import_split import check_opens, seal_bundle, split_key
from protocol.key_import import ImportBundle, ImportOpen, ImportSignature, verify_import_transcript
from protocol.manifest import Manifest
from protocol.rng import os_rng
from protocol.rpc import Method
from protocol.threshold import interpolate_at_zero
from tests.coordinator.fake_nodes import handle
from tests.node.hsm_helpers import SoftHsm, token_objects
from tests.node.node_helpers import running_nodes

NAMES = ("node1", "node2", "node3")
ROUTES = {
    IMPORT_OPEN.name: "open",
    IMPORT_SHARE.name: "share",
    KEYS_COMMIT.name: "commit",
    IMPORT_STATE.name: "state",
    IMPORT_ABORT.name: "abort",
}


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Node:
    ctx: NodeContext
    importer: NodeImporter
    stop: trio.Event = field(default_factory=trio.Event)
    stopped: trio.Event = field(default_factory=trio.Event)


@dataclass
class Nodes:
    hsm: SoftHsm
    configs: dict[str, NodeConfig]
    manifest: Manifest
    nursery: trio.Nursery
    clock: Clock = field(default_factory=Clock)
    running: dict[str, Node] = field(default_factory=dict)

    async def _serve(self, name: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with open_node(self.configs[name]) as ctx:
            importer = NodeImporter(ctx, clock=self.clock)
            await importer.load_records()
            node = Node(ctx, importer)
            self.running[name] = node
            task_status.started()
            await node.stop.wait()
        node.stopped.set()

    async def start(self, name: str) -> Node:
        await self.nursery.start(self._serve, name)
        return self.running[name]

    async def stop(self, name: str) -> None:
        node = self.running.pop(name)
        node.stop.set()
        with trio.fail_after(30):
            await node.stopped.wait()

    async def call(self, name: str, method: Method, **params: Any) -> Any:
        node = self.running[name]
        return await handle(getattr(node.importer, ROUTES[method.name]), name, method, params)

    def index(self, name: str) -> int:
        return self.manifest.node(name).index


def three_nodes(tmp_path: Path) -> contextlib.AbstractAsyncContextManager[Nodes]:
    return running_nodes(tmp_path, NAMES, port_base=7200, make=Nodes)


async def open_all(nodes: Nodes, key_id: str, names: tuple[str, ...] = NAMES) -> list[ImportOpen]:
    opens = []
    for name in names:
        result = await nodes.call(name, IMPORT_OPEN, key_id=key_id, epoch=0)
        opens.append(ImportOpen.decode(result["message"]))
    return opens


async def bundle_for(nodes: Nodes, key_id: str, sk: int, t: int = 2) -> ImportBundle:
    opens = check_opens(
        await open_all(nodes, key_id),
        manifest=nodes.manifest,
        key_id=key_id,
        epoch=0,
        min_holders=len(NAMES),
    )
    split = split_key(sk, g1_mul_generator(sk), threshold=t, indices=[1, 2, 3], rng=os_rng)
    try:
        return seal_bundle(
            split, opens, manifest=nodes.manifest, key_id=key_id, epoch=0, rng=os_rng
        )
    finally:
        split.forget()


async def seal_all(nodes: Nodes, bundle: ImportBundle) -> dict[int, bytes]:
    sigs = {}
    for name in NAMES:
        result = await nodes.call(name, IMPORT_SHARE, key_id=bundle.key_id, message=bundle.encode())
        sig = ImportSignature.decode(result["message"])
        assert sig.signature_valid(nodes.manifest.node(name).ed25519_public_key)
        assert (sig.ceremony, sig.transcript_hash) == (bundle.import_id(), bundle.transcript_hash())
        sigs[sig.sender] = sig.sig
    return sigs


async def status(nodes: Nodes, name: str, key_id: str) -> str | None:
    keys = {m.key_id: m.status.value for m in await nodes.running[name].ctx.store.list_keys()}
    return keys.get(key_id)


def events(nodes: Nodes, name: str, key_id: str) -> list[tuple[str, str]]:
    lines = (nodes.configs[name].data_dir / "audit.log").read_bytes().splitlines()
    records = [decode_line(line) for line in lines]
    return [(r.event, r.outcome) for r in records if r.key_id == key_id]


def py_g1(k: int) -> tuple[int, int]:
    x, y = normalize(multiply(PY_G1, k))
    return int(x), int(y)


async def test_sealed_pending_then_activated_by_every_holders_signature(tmp_path: Path) -> None:
    async with three_nodes(tmp_path) as nodes:
        sk = 0x1B14A60376201E4C95
        bundle = await bundle_for(nodes, "imp", sk)
        sigs = await seal_all(nodes, bundle)
        label = share_key_label("imp", 0)
        for name in NAMES:
            assert await status(nodes, name, "imp") == "pending"
            assert label in token_objects(nodes.hsm, name)
            assert (nodes.configs[name].data_dir / "imports" / "imp.json").exists()
        cert = make_certificate(bundle.import_id(), bundle.transcript_hash(), sigs)
        short = make_certificate(
            bundle.import_id(), bundle.transcript_hash(), dict(list(sigs.items())[:2])
        )
        with pytest.raises(RemoteError) as err:
            await nodes.call("node1", KEYS_COMMIT, key_id="imp", certificate=short.encode())
        assert err.value.code == ImportRefusal.BAD_COMMIT and "lacks" in err.value.message
        assert await status(nodes, "node1", "imp") == "pending"
        for name in NAMES:
            result = await nodes.call(name, KEYS_COMMIT, key_id="imp", certificate=cert.encode())
            assert result == {"key_id": "imp", "status": "active"}
        again = await nodes.call("node2", KEYS_COMMIT, key_id="imp", certificate=cert.encode())
        assert again["status"] == "active"  # a repeated commit is harmless
        shares = {}
        for name in NAMES:
            store = nodes.running[name].ctx.store
            meta = await store.get_metadata("imp")
            assert (meta.status.value, meta.t, meta.holders) == ("active", 2, (1, 2, 3))
            shares[nodes.index(name)] = await store.get_share("imp")
            data = await store.load_transcript("imp", 0)
            assert verify_import_transcript(data, nodes.manifest).valid
            assert not (nodes.configs[name].data_dir / "imports" / "imp.json").exists()
            refused = ["refused"] if name == "node1" else []  # the short certificate
            outcomes = [e[1] for e in events(nodes, name, "imp")]
            assert outcomes == ["opened", "pending", *refused, "active"]
        assert interpolate_at_zero({1: shares[1], 3: shares[3]}) == sk
        pk = g1_mul_generator(interpolate_at_zero({2: shares[2], 3: shares[3]}))
        assert (pk.x, pk.y) == py_g1(sk)
        with pytest.raises(RemoteError) as err:
            await nodes.call("node3", IMPORT_OPEN, key_id="imp", epoch=0)
        assert err.value.code == ImportRefusal.KEY_EXISTS  # never overwritten
        with pytest.raises(RemoteError) as err:
            await nodes.call("node3", IMPORT_ABORT, key_id="imp")
        assert err.value.code == ImportRefusal.COMMITTED
        assert await status(nodes, "node3", "imp") == "active"


async def test_abort_shreds_the_pending_share_and_the_id_can_be_retried(tmp_path: Path) -> None:
    async with three_nodes(tmp_path) as nodes:
        bundle = await bundle_for(nodes, "ab", 777)
        await seal_all(nodes, bundle)
        for name in NAMES:
            result = await nodes.call(name, IMPORT_ABORT, key_id="ab", ceremony=bundle.import_id())
            assert result == {"key_id": "ab", "status": "aborted"}
            assert await status(nodes, name, "ab") == "destroyed"
            assert share_key_label("ab", 0) not in token_objects(nodes.hsm, name)
            assert not list((nodes.configs[name].data_dir / "keys" / "ab").glob("share-*"))
            assert list((nodes.configs[name].data_dir / "imports").glob("*")) == []
        again = await nodes.call("node1", IMPORT_ABORT, key_id="ab")
        assert again["status"] == "aborted"  # idempotent
        retry = await bundle_for(nodes, "ab", 778)  # an aborted import may be retried
        await seal_all(nodes, retry)
        assert await status(nodes, "node2", "ab") == "pending"


async def test_rejected_bundles_seal_nothing(tmp_path: Path) -> None:
    async with three_nodes(tmp_path) as nodes:
        bundle = await bundle_for(nodes, "rj", 4242)
        shares = dict(bundle.shares)
        swapped = dataclasses.replace(
            bundle, shares=((1, shares[2]), (2, shares[1]), (3, shares[3]))
        )
        with pytest.raises(RemoteError) as err:
            await nodes.call("node1", IMPORT_SHARE, key_id="rj", message=swapped.encode())
        assert err.value.code == ImportRefusal.REJECTED
        with pytest.raises(RemoteError) as err:  # its open is gone: nothing can follow
            await nodes.call("node1", IMPORT_SHARE, key_id="rj", message=bundle.encode())
        assert err.value.code == ImportRefusal.UNKNOWN
        fresh = await nodes.call("node2", IMPORT_OPEN, key_id="rj", epoch=0)  # replaces its open
        assert ImportOpen.decode(fresh["message"]) not in bundle.opens
        with pytest.raises(RemoteError) as err:
            await nodes.call("node2", IMPORT_SHARE, key_id="rj", message=bundle.encode())
        assert err.value.code == ImportRefusal.REJECTED and "open" in err.value.message
        with pytest.raises(RemoteError) as err:
            await nodes.call("node3", IMPORT_SHARE, key_id="rj", message=b"\x81\xa1a\x01")
        assert err.value.code == ImportRefusal.REJECTED
        for name in NAMES:
            assert await status(nodes, name, "rj") is None
            assert not (nodes.configs[name].data_dir / "keys" / "rj").exists()
            assert share_key_label("rj", 0) not in token_objects(nodes.hsm, name)


async def test_pending_shares_never_expire_only_opens_do(tmp_path: Path) -> None:
    """A signed pending share may be committed elsewhere: it survives any time and a
    restart, is reported by ``keys.import_state``, and only a coordinator ends it."""
    async with three_nodes(tmp_path) as nodes:
        bundle = await bundle_for(nodes, "ex", 31337)
        sigs = await seal_all(nodes, bundle)
        await nodes.stop("node1")
        nodes.clock.now += 1_000_000
        node1 = await nodes.start("node1")  # reloads its pending record
        await node1.importer.expire()
        for name in NAMES:
            assert await status(nodes, name, "ex") == "pending"
            assert share_key_label("ex", 0) in token_objects(nodes.hsm, name)
        listed = await nodes.call("node1", IMPORT_STATE)
        (st,) = [ImportState.from_wire(s) for s in listed["imports"]]
        assert (st.key_id, st.status, st.ceremony) == ("ex", "pending", bundle.import_id())
        assert st.holders == bundle.holders and st.certificate is None
        assert st.idle_ms >= 1_000_000_000  # the idle time spans the restart
        cert = make_certificate(bundle.import_id(), bundle.transcript_hash(), sigs)
        await nodes.call("node2", KEYS_COMMIT, key_id="ex", certificate=cert.encode())
        (done,) = [
            ImportState.from_wire(s)
            for s in (await nodes.call("node2", IMPORT_STATE, key_id="ex"))["imports"]
        ]
        assert (done.status, done.certificate) == ("active", cert.encode())
        assert (await nodes.call("node2", IMPORT_STATE))["imports"] == []
        with pytest.raises(RemoteError) as err:  # the committed node refuses an abort
            await nodes.call("node2", IMPORT_ABORT, key_id="ex", ceremony=bundle.import_id())
        assert err.value.code == ImportRefusal.COMMITTED
        # the certificate node2 holds rolls node1 forward after its restart
        await nodes.call("node1", KEYS_COMMIT, key_id="ex", certificate=done.certificate)
        assert await status(nodes, "node1", "ex") == "active"
        await open_all(nodes, "op", ("node3",))
        nodes.clock.now += 10_000
        await nodes.running["node3"].importer.expire()
        with pytest.raises(RemoteError) as err:
            await nodes.call("node3", IMPORT_SHARE, key_id="op", message=bundle.encode())
        assert err.value.code == ImportRefusal.UNKNOWN  # the open expired with its key

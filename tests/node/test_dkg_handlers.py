"""node/handlers/dkg.py on real SoftHSM2 tokens: three nodes in this process (one
SoftHSM config, one token each, real identities, stores and audit logs), driven by
the coordinator's real driver through the handlers (no sockets; the transport is
tested elsewhere). Shares are sealed pending under their own token key, activated
only with a valid commit certificate, and an abort destroys the share and its token
key; a node restarted in FINISH reloads its ceremony and finishes it either way;
refusals and malformed input change nothing."""

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

from coordinator.dkg import DkgConfig, DkgCoordinator
from coordinator.dkg_recovery import DkgRecovery
from coordinator.sessions import NodeUnavailable, RemoteError
from node.config import NodeConfig
from node.handlers import HandlerRegistry, NodeContext
from node.handlers.dkg import DkgNode, add_handlers
from node.sealing import share_key_label
from node.server import open_node
from protocol import node_api
from protocol.audit import decode_line
from protocol.dkg import verify_transcript
from protocol.dkg.relayed import Abort, BundleSet, CommitCertificate, OpenSet, Proposal
from protocol.manifest import Manifest
from protocol.rpc import ErrorCode, Method
from tests.coordinator.fake_nodes import handle
from tests.node.hsm_helpers import SoftHsm, token_objects
from tests.node.node_helpers import running_nodes

CONFIG = DkgConfig(phase_timeout_s=20.0, commit_timeout_s=10.0)
NAMES = ("node1", "node2", "node3")


@dataclass
class Running:
    ctx: NodeContext
    dkg: DkgNode
    routes: dict[str, Any]
    stop: trio.Event = field(default_factory=trio.Event)
    stopped: trio.Event = field(default_factory=trio.Event)


@dataclass
class Nodes:
    """Three real nodes, each in its own task; ``call`` is the coordinator's
    ``NodeCaller``."""

    hsm: SoftHsm
    configs: dict[str, NodeConfig]
    manifest: Manifest
    nursery: trio.Nursery
    running: dict[str, Running] = field(default_factory=dict)
    lock: trio.Lock = field(default_factory=trio.Lock)  # one HSM call path at a time
    before: Any = None

    async def _serve(self, name: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with open_node(self.configs[name]) as ctx:
            dkg = DkgNode(ctx)
            registry = HandlerRegistry()
            add_handlers(registry, dkg)
            await dkg.recover()
            routes = {r.method.name: r.handler for r in registry.routes()}
            running = Running(ctx, dkg, routes)
            self.running[name] = running
            task_status.started()
            await running.stop.wait()
        running.stopped.set()

    async def start(self, name: str) -> Running:
        await self.nursery.start(self._serve, name)
        return self.running[name]

    async def stop(self, name: str) -> None:
        """The node process ends (its memory is gone; disk and token stay)."""
        running = self.running.pop(name)
        running.stop.set()
        with trio.fail_after(30):
            await running.stopped.wait()

    def up_nodes(self) -> frozenset[str]:
        return frozenset(self.running)

    async def call(
        self,
        node_name: str,
        method: Method,
        params: dict[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any:
        if self.before is not None:
            await self.before(node_name, method)
        running = self.running.get(node_name)
        if running is None:
            raise NodeUnavailable(node_name, "down")
        with trio.CancelScope(shield=True):  # a node finishes what it started
            async with self.lock:
                return await handle(running.routes[method.name], node_name, method, params)

    async def step(self, name: str, method: Method, **params: Any) -> Any:
        return await self.call(name, method, params)


def three_nodes(tmp_path: Path) -> contextlib.AbstractAsyncContextManager[Nodes]:
    return running_nodes(tmp_path, NAMES, port_base=7100, make=Nodes)


def die_at_commit(scope: trio.CancelScope, *, delivered: int) -> Any:
    """A ``before`` hook: the coordinator dies after ``delivered`` commit calls went
    out (the node handling one finishes it: handlers are shielded)."""
    sent: list[str] = []

    async def before(name: str, method: Method) -> None:
        if method is node_api.DKG_COMMIT:
            if len(sent) >= delivered:
                scope.cancel()
                await trio.sleep_forever()
            sent.append(name)

    return before


def coordinator(nodes: Nodes, instance: bytes) -> DkgCoordinator:
    return DkgCoordinator(
        nodes.manifest, nodes, name="coordinator", instance=instance, config=CONFIG
    )


def token_labels(nodes: Nodes, name: str) -> list[str]:
    return token_objects(nodes.hsm, name)


def py_g1(k: int) -> bytes:
    x, y = normalize(multiply(PY_G1, k))
    return int(x).to_bytes(32, "big") + int(y).to_bytes(32, "big")


async def statuses(nodes: Nodes, key_id: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name, running in nodes.running.items():
        keys = {m.key_id: m.status.value for m in await running.ctx.store.list_keys()}
        out[name] = keys.get(key_id)
    return out


def audit_events(config: NodeConfig) -> list[tuple[str, str, str | None]]:
    lines = (config.data_dir / "audit.log").read_bytes().splitlines()
    records = [decode_line(line) for line in lines]
    return [(r.event, r.outcome, r.key_id) for r in records if r.event.startswith("dkg.")]


async def test_ceremony_seals_under_token_keys_and_abort_shreds_them(tmp_path: Path) -> None:
    async with three_nodes(tmp_path) as nodes:
        result = await coordinator(nodes, b"\x01" * 16).run("k1", 2, None)
        assert result.holders == (1, 2, 3)
        assert set((await statuses(nodes, "k1")).values()) == {"active"}
        for name, running in nodes.running.items():
            assert share_key_label("k1", 1) in token_labels(nodes, name)
            share = await running.ctx.store.get_share("k1")  # unseals through the token
            meta = await running.ctx.store.get_metadata("k1")
            assert py_g1(share) == meta.public_shares[running.ctx.entry.index]
            stored = await running.ctx.store.load_transcript("k1", 1)
            assert stored == result.transcript
            assert (running.ctx.config.data_dir / "keys/k1/transcript-1.bin").exists()
        assert verify_transcript(result.transcript, nodes.manifest).valid
        assert audit_events(nodes.configs["node2"]) == [
            ("dkg.open", "ok", "k1"),
            ("dkg.pending", "ok", "k1"),
            ("dkg.commit", "ok", "k1"),
        ]

        # k2: every node votes, then the coordinator dies before any commit
        with trio.CancelScope() as scope:
            nodes.before = die_at_commit(scope, delivered=0)
            await coordinator(nodes, b"\x02" * 16).run("k2", 2, None)
        assert scope.cancelled_caught
        nodes.before = None
        assert set((await statuses(nodes, "k2")).values()) == {"pending"}
        for name in NAMES:
            assert share_key_label("k2", 1) in token_labels(nodes, name)
            assert (nodes.configs[name].data_dir / "dkg/pending/k2-1.json").exists()
        # node1 crashes and comes back: it reloads its pending ceremony from disk
        await nodes.stop("node1")
        node1 = await nodes.start("node1")
        assert node1.dkg.pending["k2"].state == "pending"
        # a restarted coordinator finds no certificate anywhere: abort everywhere
        recovery = DkgRecovery(coordinator(nodes, b"\x03" * 16))
        for name in NAMES:
            await recovery.recover_node(name)
        assert set((await statuses(nodes, "k2")).values()) == {"destroyed"}
        for name in NAMES:
            data = nodes.configs[name].data_dir
            assert share_key_label("k2", 1) not in token_labels(nodes, name)
            assert share_key_label("k1", 1) in token_labels(nodes, name)
            assert not (data / "keys/k2/share-1.sealed").exists()
            assert not list((data / "dkg/pending").iterdir())
        assert set((await statuses(nodes, "k1")).values()) == {"active"}
        # an aborted key id can be used again
        again = await coordinator(nodes, b"\x04" * 16).run("k2", 2, None)
        assert again.holders == (1, 2, 3)
        assert set((await statuses(nodes, "k2")).values()) == {"active"}


async def test_a_node_restarted_in_finish_rolls_forward(tmp_path: Path) -> None:
    async with three_nodes(tmp_path) as nodes:
        with trio.CancelScope() as scope:
            nodes.before = die_at_commit(scope, delivered=1)
            await coordinator(nodes, b"\x01" * 16).run("k1", 2, None)
        nodes.before = None
        states = await statuses(nodes, "k1")
        assert sorted(states.values()) == ["active", "pending", "pending"]
        waiting = sorted(n for n, s in states.items() if s == "pending")
        await nodes.stop(waiting[0])
        await nodes.start(waiting[0])
        recovery = DkgRecovery(coordinator(nodes, b"\x02" * 16))
        for name in waiting:
            await recovery.recover_node(name)
        assert set((await statuses(nodes, "k1")).values()) == {"active"}
        transcripts = {await r.ctx.store.load_transcript("k1", 1) for r in nodes.running.values()}
        assert len(transcripts) == 1
        assert verify_transcript(transcripts.pop(), nodes.manifest).valid


async def test_refusals_and_malformed_input_change_nothing(tmp_path: Path) -> None:
    async with three_nodes(tmp_path) as nodes:
        await coordinator(nodes, b"\x01" * 16).run("k1", 2, None)
        proposal = Proposal(
            cluster=nodes.manifest.cluster_id,
            key_id="k9",
            epoch=1,
            threshold=2,
            min_holders=3,
            participants=(1, 2, 3),
        )
        opening = {
            "coordinator": "coordinator",
            "instance": b"\x05" * 16,
            "phase_timeout_ms": 20_000,
        }

        async def refused(code: int, name: str, method: Method, **params: Any) -> None:
            with pytest.raises(RemoteError) as info:
                await nodes.step(name, method, **params)
            assert info.value.code == code, info.value

        # a key id that is active here
        taken = dataclasses.replace(proposal, key_id="k1").encode()
        await refused(node_api.DKG_KEY_EXISTS, "node1", node_api.DKG_OPEN, key_id="k1",
                      message=taken, **opening)  # fmt: skip
        # a step for a ceremony the node does not have
        await refused(node_api.DKG_UNKNOWN, "node1", node_api.DKG_DEAL, key_id="k9",
                      message=OpenSet(opens=()).encode())  # fmt: skip
        answer = await nodes.step("node1", node_api.DKG_OPEN, key_id="k9",
                                  message=proposal.encode(), **opening)  # fmt: skip
        assert answer["phase"] == "open" and answer["message"]
        dkg = nodes.running["node1"].dkg
        before = dkg.live["k9"].participant.state
        # a second ceremony for the same key id
        await refused(node_api.DKG_BUSY, "node1", node_api.DKG_OPEN, key_id="k9",
                      message=proposal.encode(), **opening)  # fmt: skip
        # malformed bytes, the wrong message type, a message out of phase
        await refused(ErrorCode.BAD_REQUEST, "node1", node_api.DKG_DEAL, key_id="k9",
                      message=b"\x93\x01\x02")  # fmt: skip
        await refused(ErrorCode.BAD_REQUEST, "node1", node_api.DKG_DEAL, key_id="k9",
                      message=proposal.encode())  # fmt: skip
        await refused(ErrorCode.BAD_REQUEST, "node1", node_api.DKG_ECHO, key_id="k9",
                      message=BundleSet(bundles=()).encode())  # fmt: skip
        assert dkg.live["k9"].participant.state == before
        # an abort for another ceremony id is refused; the right one ends it
        await refused(node_api.DKG_UNKNOWN, "node1", node_api.DKG_ABORT, key_id="k9",
                      message=Abort(reason="x").encode(), ceremony=b"\x07" * 32)  # fmt: skip
        gone = await nodes.step("node1", node_api.DKG_ABORT, key_id="k9",
                                message=Abort(reason="operator").encode())  # fmt: skip
        assert gone == {"phase": "aborted", "message": None} and "k9" not in dkg.live


async def test_a_forged_commit_is_refused_and_used_ids_survive_restarts(tmp_path: Path) -> None:
    async with three_nodes(tmp_path) as nodes:
        with trio.CancelScope() as scope:
            nodes.before = die_at_commit(scope, delivered=0)
            await coordinator(nodes, b"\x01" * 16).run("k1", 2, None)
        nodes.before = None
        state = await nodes.step("node2", node_api.DKG_STATE, key_id="k1")
        (entry,) = state["ceremonies"]
        assert entry["phase"] == "finish" and entry["commit"] is None
        ceremony = entry["ceremony"]
        assert ceremony in nodes.running["node2"].dkg.used
        # every node kept the same transcript body; a certificate with forged
        # signatures over another hash is refused and nothing changes
        record = nodes.running["node2"].dkg.pending["k1"]
        bodies = {nodes.running[n].dkg.pending["k1"].transcript_body for n in NAMES}
        assert len(bodies) == 1
        with pytest.raises(RemoteError) as info:
            forged = CommitCertificate(
                ceremony=ceremony,
                transcript_hash=b"\x00" * 32,
                signatures=((1, b"\x00" * 64), (2, b"\x00" * 64), (3, b"\x00" * 64)),
            )
            await nodes.step("node2", node_api.DKG_COMMIT, key_id="k1", message=forged.encode())
        assert info.value.code == node_api.DKG_BAD_COMMIT
        assert nodes.running["node2"].dkg.pending["k1"] == record
        assert (await statuses(nodes, "k1"))["node2"] == "pending"
        # the ceremony id is on disk and reloaded after a restart
        await nodes.stop("node2")
        node2 = await nodes.start("node2")
        assert ceremony in node2.dkg.used
        assert (nodes.configs["node2"].data_dir / "dkg/used-ceremonies").read_text().strip()

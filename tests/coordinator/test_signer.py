"""The coordinator's signing backend against in-process fake nodes (an in-process
fake in addition to the multi-process tests in tests/cluster/test_signing.py).

Each fake node holds a real Shamir share and answers like ``node/handlers``: partials
from ``protocol.aggregation.sign_partial``, schema-checked both ways like a real
session. Time is trio's MockClock (autojump), so deadlines are exact and cheap."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from nacl.signing import SigningKey
from py_ecc.fields import optimized_bn128_FQ as FQ
from py_ecc.optimized_bn128 import multiply, normalize

from coordinator.audit_log import AuditLogConfig, open_audit_log, open_checkpoint_store
from coordinator.backend import (
    Client,
    Forbidden,
    KeyNotActive,
    NotEnoughSigners,
    SignResult,
    UsageLimitExceeded,
)
from coordinator.checkpoints import CheckpointRelay
from coordinator.service import accept_structurally_valid
from coordinator.sessions import RemoteError, Timeout
from coordinator.signer import SignerConfig, SigningService
from protocol import node_api
from protocol.aggregation import sign_partial
from protocol.audit import Checkpoint, decode_line, split_lines
from protocol.bn254 import G1, R, g1_mul_generator, g2_mul_generator
from protocol.eigenlayer import hash_to_g1, verify_signature
from protocol.encoding import g1_from_bytes, g1_to_bytes, g2_to_bytes
from protocol.hashing import keccak256
from protocol.manifest import CoordinatorEntry, Manifest, NodeEntry
from protocol.noise import KeyPair
from protocol.rng import seeded_rng
from protocol.rpc import PROTOCOL_VERSION, Method
from protocol.sign_api import (
    AUDIT_ANCHOR,
    AUDIT_CHECKPOINT,
    KEYS_DESTROY,
    SIGN_BATCH,
    SIGN_PARTIAL,
    Refusal,
    partial_to_wire,
)
from protocol.threshold import split
from tests.coordinator.fake_sessions import ScriptedSessions

N, T = 5, 3
CID = bytes(range(16))
SECRET = 0x2A2A_1234_5678_9ABC_DEF0_1122_3344_5566_7788_99AA_BBCC
CLIENT = Client("demo", frozenset({"operator", "signer"}), frozenset({"*"}))
NAMES = [f"node{i}" for i in range(1, N + 1)]
COOLDOWN = 0.5


def py_ecc_mul(point: G1, k: int) -> G1:
    """k·point with py_ecc (the oracle)."""
    x, y = normalize(multiply((FQ(point.x), FQ(point.y), FQ(1)), k))
    return G1(int(x.n), int(y.n))


@dataclass
class FakeNode:
    """One node's behaviour: its share and how it answers."""

    name: str
    index: int
    share: int
    status: str = "active"
    mode: str = "ok"  # ok | down | slow | refuse
    refuse: Refusal = Refusal.USAGE_LIMIT
    grant: int | None = None  # batch: sign only the first ``grant`` items
    delay: float = 0.0
    ed25519: SigningKey = field(default_factory=SigningKey.generate)
    noise: bytes = field(default_factory=lambda: KeyPair.generate().public)
    calls: list[str] = field(default_factory=list)
    cancelled: int = 0
    anchors: list[tuple[str, Checkpoint]] = field(default_factory=list)
    log_seq: int = 3
    log_head: bytes = b"\x01" * 32


class FakeSessions(ScriptedSessions):
    """Stands in for ``SessionManager``: answers from ``FakeNode``s, schemas checked."""

    def __init__(self, nodes: dict[str, FakeNode], meta: node_api.PublicKeyMetadata) -> None:
        self.nodes = nodes
        self.meta = meta

    async def call(
        self,
        name: str,
        method: Method,
        params: dict[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - SessionManager.call's signature
    ) -> Any:
        node = self.arrive(name, method, params)
        with trio.move_on_after(timeout or 30.0):
            try:
                if node.mode == "slow":
                    await trio.sleep_forever()
                await trio.sleep(node.delay)
            except trio.Cancelled:
                node.cancelled += 1
                raise
            result = self._answer(node, method, params)
            method.result.check(result, "result")
            return result
        raise Timeout(name, method.name, timeout or 30.0)

    def _answer(self, node: FakeNode, method: Method, params: dict[str, Any]) -> Any:
        if method is node_api.NODE_STATUS:
            return node_api.NodeStatus(
                node.name,
                node.index,
                PROTOCOL_VERSION,
                CID,
                node.noise,
                bytes(node.ed25519.verify_key),
                (),
            ).to_wire()
        if method is node_api.DKG_STATE:  # no ceremony to roll forward here
            return {"ceremonies": []}
        if method is node_api.KEYS_LIST:
            meta = replace(self.meta, status=node.status)
            return {"keys": [meta.to_wire()], "more": False}
        if method in (SIGN_PARTIAL, SIGN_BATCH) and node.mode == "refuse":
            raise RemoteError(node.name, int(node.refuse), node.refuse.label)
        if method is SIGN_PARTIAL:
            point = g1_from_bytes(params["point"], field="p") if "point" in params else None
            msg = params.get("msg_hash", params.get("point"))
            p = sign_partial(node.share, key_id=params["key_id"], epoch=params["epoch"],
                             index=node.index, msg_hash=msg, point=point)  # fmt: skip
            return partial_to_wire(p)
        if method is SIGN_BATCH:
            items: list[dict[str, Any]] = []
            for i, h in enumerate(params["msg_hashes"]):
                if node.grant is not None and i >= node.grant:
                    items.append({"error": {"code": int(Refusal.USAGE_LIMIT), "message": "limit"}})
                    continue
                p = sign_partial(node.share, key_id=params["key_id"], epoch=params["epoch"],
                                 index=node.index, msg_hash=h)  # fmt: skip
                wire = partial_to_wire(p)
                items.append({"sigma": wire["sigma"], "proof": wire["proof"]})
            return {"index": node.index, "items": items}
        if method is KEYS_DESTROY:
            node.status = "destroyed"
            return {"key_id": params["key_id"], "status": "destroyed"}
        if method is AUDIT_CHECKPOINT:
            log_id = f"{CID.hex()}/{node.name}"
            return Checkpoint.sign(node.ed25519, log_id, node.log_seq, node.log_head).to_fields()
        if method is AUDIT_ANCHOR:
            node.anchors.append((params["node"], Checkpoint.from_fields(params["checkpoint"])))
            return {"stored": True}
        raise AssertionError(f"unexpected {method.name}")


@dataclass
class Setup:
    service: SigningService
    nodes: dict[str, FakeNode]
    sessions: FakeSessions
    shares: dict[int, int]


def metadata(
    shares: dict[int, int], *, secret: int = SECRET, key_id: str = "k1"
) -> node_api.PublicKeyMetadata:
    return node_api.PublicKeyMetadata(
        key_id=key_id,
        epoch=0,
        t=T,
        n=N,
        holders=tuple(range(1, N + 1)),
        status="active",
        pk_g1=g1_to_bytes(g1_mul_generator(secret)),
        pk_g2=g2_to_bytes(g2_mul_generator(secret)),
        public_shares=tuple(
            (i, g1_to_bytes(g1_mul_generator(s))) for i, s in sorted(shares.items())
        ),
        transcript_hash=b"\x07" * 32,
    )


def manifest(nodes: dict[str, FakeNode]) -> Manifest:
    return Manifest(
        cluster_id=CID,
        nodes=tuple(
            NodeEntry(
                n.index,
                n.name,
                f"127.0.0.1:{7000 + n.index}",
                n.noise,
                bytes(n.ed25519.verify_key),
            )
            for n in nodes.values()
        ),
        coordinators=(CoordinatorEntry("coordinator", KeyPair.generate().public),),
    )


def run(
    body: Callable[[Setup], Awaitable[None]],
    *,
    tmp_path: Path | None = None,
    meta_override: node_api.PublicKeyMetadata | None = None,
    wrong: tuple[int, ...] = (),
    mock_clock: bool = False,
) -> None:
    """Run ``body`` against fake nodes. ``mock_clock``: trio's autojumping MockClock
    (only without worker threads: the audit log and batches use them)."""
    shares = split(SECRET, T, N, seeded_rng(b"signer-test"))
    nodes = {
        f"node{i}": FakeNode(f"node{i}", i, (s + 1) % R if i in wrong else s, delay=0.01 * i)
        for i, s in shares.items()
    }
    sessions = FakeSessions(nodes, meta_override or metadata(shares))

    async def main() -> None:
        async def go(audit: Any) -> None:
            service = SigningService(
                manifest(nodes),
                sessions,  # type: ignore[arg-type]
                verify_transcript=accept_structurally_valid,  # no transcripts in these fakes
                audit=audit,
                signer_config=SignerConfig(sign_timeout_s=2.0, blame_cooldown_s=COOLDOWN),
                rng=seeded_rng(b"batch"),
            )
            for name in NAMES:
                await service.refresh_node(name)
            await body(Setup(service, nodes, sessions, shares))

        if tmp_path is None:
            await go(None)
        else:
            config = AuditLogConfig(
                tmp_path / "audit.log", f"{CID.hex()}/coordinator", "coordinator"
            )
            async with open_audit_log(config) as audit:
                await go(audit)

    clock = trio.testing.MockClock(autojump_threshold=0) if mock_clock else None
    trio.run(main, clock=clock)


MSG = keccak256(b"coordinator signer test")
EXPECTED = py_ecc_mul(hash_to_g1(MSG), SECRET)


def check(result: SignResult) -> None:
    assert result.sigma == EXPECTED
    assert verify_signature(MSG, result.apk_g1, result.apk_g2, result.sigma)


def test_every_t_subset_signs_the_same_and_slow_nodes_are_not_waited_for() -> None:
    async def body(s: Setup) -> None:
        for subset in itertools.combinations(NAMES, T):
            for n in s.nodes.values():
                n.mode = "ok" if n.name in subset else "slow"
                n.cancelled = 0
            start = trio.current_time()
            result = await s.service.sign("k1", MSG, client=CLIENT)
            assert trio.current_time() - start < 0.1  # the two slow ones: never waited for
            check(result)
            assert sorted(result.signers) == list(subset)
            assert sum(n.cancelled for n in s.nodes.values()) == N - T  # their calls cancelled

    run(body, mock_clock=True)


def test_a_wrong_share_is_blamed_named_and_cooled_down(tmp_path: Path) -> None:
    async def body(s: Setup) -> None:
        result = await s.service.sign("k1", MSG, client=CLIENT)  # node1 answers first
        check(result)
        assert "node1" not in result.signers and len(result.signers) == T
        assert s.service.partial_failures["node1"] == 1
        health = {n.name: n for n in (await s.service.health()).nodes}
        assert health["node1"].partial_failures == 1 and "bad partial" in health["node1"].detail
        calls = len(s.nodes["node1"].calls)
        check(await s.service.sign("k1", MSG, client=CLIENT))
        assert len(s.nodes["node1"].calls) == calls  # left out while cooling down
        await trio.sleep(COOLDOWN + 0.1)
        check(await s.service.sign("k1", MSG, client=CLIENT))
        assert len(s.nodes["node1"].calls) == calls + 1  # asked again afterwards

    run(body, tmp_path=tmp_path, wrong=(1,))
    lines, _ = split_lines((tmp_path / "audit.log").read_bytes())
    signs = [r for r in map(decode_line, lines) if r.event == "sign"]
    assert [r.extra["blamed"] for r in signs] == [["node1"], [], ["node1"]]
    assert all(r.outcome == "signed" and r.msg_hash == MSG and r.client == "demo" for r in signs)


def test_fewer_than_t_fail_fast_or_at_the_deadline_naming_the_missing() -> None:
    async def body(s: Setup) -> None:
        for name in ("node1", "node2", "node3"):
            s.nodes[name].mode = "down"
        start = trio.current_time()
        with pytest.raises(NotEnoughSigners) as exc:
            await s.service.sign("k1", MSG, client=CLIENT)
        assert trio.current_time() - start < 0.1  # hopeless at once: no waiting
        assert exc.value.missing == ("node1", "node2", "node3") and exc.value.got == 2
        s.nodes["node3"].mode = "slow"
        start = trio.current_time()
        with pytest.raises(NotEnoughSigners) as exc:
            await s.service.sign("k1", MSG, client=CLIENT)
        assert trio.current_time() - start == pytest.approx(2.0)  # the sign deadline
        assert exc.value.missing == ("node1", "node2", "node3")

    run(body, mock_clock=True)


@pytest.mark.parametrize(
    ("refusal", "error"),
    [
        (Refusal.CLIENT_NOT_ALLOWED, Forbidden),
        (Refusal.USAGE_LIMIT, UsageLimitExceeded),
        (Refusal.KEY_NOT_ACTIVE, KeyNotActive),
    ],
)
def test_the_nodes_policy_refusals_map_to_client_errors(refusal: Refusal, error: type) -> None:
    async def body(s: Setup) -> None:
        for n in s.nodes.values():
            n.mode, n.refuse = "refuse", refusal
        with pytest.raises(error):
            await s.service.sign("k1", MSG, client=CLIENT)
        s.nodes["node4"].mode = s.nodes["node5"].mode = "ok"
        s.nodes["node3"].mode = "ok"  # two refusing nodes do not stop three willing ones
        check(await s.service.sign("k1", MSG, client=CLIENT))
        assert sum(s.service.partial_failures.values()) == 0  # policy is not a fault

    run(body)


def test_batch_blames_a_bad_node_and_reports_per_item_errors(tmp_path: Path) -> None:
    msgs = [keccak256(b"batch %d" % i) for i in range(8)]

    async def body(s: Setup) -> None:
        results = await s.service.sign_batch("k1", msgs, client=CLIENT)
        for m, r in zip(msgs, results, strict=True):
            assert isinstance(r, SignResult) and r.msg_hash == m and "node1" not in r.signers
            assert r.sigma == py_ecc_mul(hash_to_g1(m), SECRET)
        assert s.service.partial_failures["node1"] == 1
        await trio.sleep(COOLDOWN + 0.1)
        for name in ("node2", "node3", "node4", "node5"):
            s.nodes[name].grant = 5  # the usage limit stops them after 5 items
        s.nodes["node1"].share = s.shares[1]  # repaired
        results = await s.service.sign_batch("k1", msgs, client=CLIENT)
        assert [type(r).__name__ for r in results] == ["SignResult"] * 5 + [
            "UsageLimitExceeded"
        ] * 3
        for m, r in zip(msgs, results, strict=True):
            if isinstance(r, SignResult):
                assert r.sigma == py_ecc_mul(hash_to_g1(m), SECRET)

    run(body, tmp_path=tmp_path, wrong=(1,))
    lines, _ = split_lines((tmp_path / "audit.log").read_bytes())
    batch = [r for r in map(decode_line, lines) if r.event == "sign.batch"]
    assert [r.outcome for r in batch] == ["signed"] * 13 + ["failed"] * 3
    assert [r.extra["item"] for r in batch[:8]] == list(range(8))


def test_sign_point_and_destroy() -> None:
    point = hash_to_g1(keccak256(b"already hashed"))

    async def body(s: Setup) -> None:
        assert await s.service.sign_point("k1", point, client=CLIENT) == py_ecc_mul(point, SECRET)
        signer_only = Client("app", frozenset({"signer"}), frozenset({"*"}))
        with pytest.raises(Forbidden):
            await s.service.destroy_key("k1", client=signer_only)
        s.nodes["node5"].mode = "down"
        with pytest.raises(NotEnoughSigners) as exc:
            await s.service.destroy_key("k1", client=CLIENT)
        assert exc.value.missing == ("node5",)
        s.nodes["node5"].mode = "ok"
        await s.service.destroy_key("k1", client=CLIENT)
        assert (await s.service.get_key("k1")).status == "destroyed"
        with pytest.raises(KeyNotActive):
            await s.service.sign("k1", MSG, client=CLIENT)

    run(body)


def test_keys_whose_public_data_do_not_fit_stay_out_of_the_registry() -> None:
    shares = split(SECRET, T, N, seeded_rng(b"signer-test"))
    good = metadata(shares)
    bad_share = dict(good.public_shares)
    bad_share[4] = g1_to_bytes(g1_mul_generator(shares[4] + 1))
    wrong_g2 = replace(good, pk_g2=g2_to_bytes(g2_mul_generator(SECRET + 1)))
    wrong_share = replace(good, public_shares=tuple(sorted(bad_share.items())))
    for meta, reason in ((wrong_g2, "different secrets"), (wrong_share, "interpolate")):

        async def body(s: Setup, reason: str = reason) -> None:
            assert await s.service.list_keys() == []
            assert reason in s.service.registry.conflicts["k1"]

        run(body, meta_override=meta)


def test_checkpoints_are_relayed_only_when_genuine(tmp_path: Path) -> None:
    async def body(s: Setup) -> None:
        config = AuditLogConfig(tmp_path / "audit.log", f"{CID.hex()}/coordinator", "coordinator")
        async with (
            open_audit_log(config) as audit,
            open_checkpoint_store(tmp_path / "cp.log") as store,
        ):
            relay = CheckpointRelay(s.service.manifest, s.sessions, store=store, audit=audit)  # type: ignore[arg-type]
            s.nodes["node5"].ed25519 = SigningKey.generate()  # not the manifest's key
            await relay.round()
            got = {n: sorted(src for src, _ in node.anchors) for n, node in s.nodes.items()}
            assert got["node1"] == ["node2", "node3", "node4"]
            assert got["node5"] == ["node1", "node2", "node3", "node4"]
            await relay.round()  # nothing new: nothing relayed again
            assert sum(len(n.anchors) for n in s.nodes.values()) == 4 * 3 + 4
            s.nodes["node2"].log_seq = 1  # its log went back
            await relay.round()
            assert store.latest(f"{CID.hex()}/node2").seq == 3  # type: ignore[union-attr]
        lines, _ = split_lines((tmp_path / "audit.log").read_bytes())
        assert [
            r.extra["node"] for r in map(decode_line, lines) if r.event == "audit.rollback"
        ] == ["node2"]

    run(body)


def test_a_batch_asks_t_holders_and_hedges_around_a_slow_one() -> None:
    msgs = [keccak256(b"hedge %d" % i) for i in range(4)]

    async def body(s: Setup) -> None:
        s.nodes["node2"].mode = "slow"
        start = trio.current_time()
        results = await s.service.sign_batch("k1", msgs, client=CLIENT)
        elapsed = trio.current_time() - start
        hedge = s.service.signer_config.batch_hedge(len(msgs))
        assert hedge <= elapsed < hedge + 1.0  # the others were asked after the hedge delay
        for m, r in zip(msgs, results, strict=True):
            assert isinstance(r, SignResult) and "node2" not in r.signers
            assert r.sigma == py_ecc_mul(hash_to_g1(m), SECRET)
        assert s.nodes["node2"].cancelled == 1
        s.nodes["node2"].mode = "ok"
        calls = {n: len(node.calls) for n, node in s.nodes.items()}
        await s.service.sign_batch("k1", msgs, client=CLIENT)  # the next one starts further on
        asked = sorted(n for n, node in s.nodes.items() if len(node.calls) > calls[n])
        assert asked == ["node2", "node3", "node4"]

    run(body)

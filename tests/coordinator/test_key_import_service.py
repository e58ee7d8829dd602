"""coordinator/key_import.py: ``ImportingService`` over scripted in-memory nodes that
really open, check bundles, decrypt and sign (the node rules of
``node/handlers/key_import.py``, minus sealing), with faults injected per node: any
failure aborts the import on every holder, nothing is committed, the coordinator
checks every node signature itself, and commits are retried. Then roll-forward
(``coordinator/import_recovery.py``): a coordinator that "dies" mid-commit (its
``import_key`` cancelled) is replaced by a new service whose refresh rolls the import
forward (a holder holds the certificate) or aborts it (none does), never aborting
while a holder is unreachable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from nacl.signing import SigningKey

from coordinator.backend import (
    CeremonyAborted,
    CeremonyInProgress,
    Client,
    Forbidden,
    KeyExists,
    NotEnoughSigners,
    UnknownKey,
)
from coordinator.key_import import ImportingService
from coordinator.sessions import RemoteError, Timeout
from protocol import node_api
from protocol.bn254 import g1_mul_generator
from protocol.commit import IMPORT_PURPOSE, certificate_problem
from protocol.dkg.crypto import x25519_keypair
from protocol.dkg.relayed import CommitCertificate
from protocol.encoding import g1_from_bytes, g1_to_bytes
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
from protocol.key_import import (
    ImportBundle,
    ImportOpen,
    ImportSignature,
    ImportTranscript,
    check_bundle,
    open_share,
    verify_import_transcript,
)
from protocol.manifest import CoordinatorEntry, Manifest, NodeEntry
from protocol.rng import seeded_rng
from protocol.rpc import PROTOCOL_VERSION, Method
from protocol.threshold import public_share
from tests.coordinator.fake_sessions import ScriptedSessions

NAMES = ("n1", "n2", "n3")
OPERATOR = Client("op", frozenset({"operator"}), frozenset())
RNG = seeded_rng(b"import-service")


@dataclass
class Node:
    name: str
    index: int
    key: SigningKey
    mode: str = "ok"  # ok | down | reject | exists | wrong-key | commit-late | commit-hang
    calls: list[str] = field(default_factory=list)
    opened: dict[str, tuple[ImportOpen, bytes]] = field(default_factory=dict)
    pending: dict[str, ImportBundle] = field(default_factory=dict)
    relayed_by: dict[str, str] = field(default_factory=dict)
    destroyed: list[str] = field(default_factory=list)
    active: dict[str, ImportTranscript] = field(default_factory=dict)
    late: int = 1


class Sessions(ScriptedSessions):
    """``SessionManager`` stand-in: schemas checked, node rules applied."""

    def __init__(self) -> None:
        self.nodes = {
            name: Node(name, i, SigningKey(RNG(32))) for i, name in enumerate(NAMES, start=1)
        }
        self.manifest = Manifest(
            cluster_id=bytes(range(16)),
            nodes=tuple(
                NodeEntry(
                    n.index, n.name, f"127.0.0.1:{9100 + n.index}", RNG(32), bytes(n.key.verify_key)
                )
                for n in self.nodes.values()
            ),
            coordinators=(CoordinatorEntry("coordinator", RNG(32)),),
        )

    async def call(
        self,
        name: str,
        method: Method,
        params: dict[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - SessionManager.call's signature
    ) -> Any:
        node = self.arrive(name, method, params)
        await trio.sleep(0.001)
        if node.mode == "commit-hang" and method is KEYS_COMMIT:
            await trio.sleep_forever()  # the coordinator dies while waiting here
        result = self._answer(node, method, params)
        method.result.check(result, "result")
        return result

    def _refuse(self, node: Node, refusal: ImportRefusal) -> RemoteError:
        return RemoteError(node.name, int(refusal), refusal.label)

    def _answer(self, node: Node, method: Method, params: dict[str, Any]) -> Any:
        key_id = params.get("key_id", "")
        if method is IMPORT_OPEN:
            if node.mode == "exists":
                raise self._refuse(node, ImportRefusal.KEY_EXISTS)
            secret, public = x25519_keypair(RNG)
            message = ImportOpen(
                cluster=self.manifest.cluster_id, key_id=key_id, epoch=0, sender=node.index,
                nonce=RNG(32), enc_key=public,
            ).signed_by(node.key)  # fmt: skip
            node.opened[key_id] = (message, secret)
            return {"message": message.encode()}
        if method is IMPORT_SHARE:
            if node.mode == "reject":
                raise self._refuse(node, ImportRefusal.REJECTED)
            bundle = ImportBundle.decode(params["message"])
            verified = check_bundle(bundle, self.manifest)
            message, secret = node.opened.pop(key_id)
            assert message in bundle.opens
            open_share(verified, index=node.index, enc_secret=secret, enc_key=message.enc_key)
            node.pending[key_id] = bundle
            node.relayed_by[key_id] = params["coordinator"]
            signer = SigningKey(RNG(32)) if node.mode == "wrong-key" else node.key
            sig = ImportSignature(
                ceremony=verified.import_id, sender=node.index,
                transcript_hash=verified.transcript_hash,
            ).signed_by(signer)  # fmt: skip
            return {"message": sig.encode()}
        if method is KEYS_COMMIT:
            if node.mode == "commit-late" and node.late > 0:
                node.late -= 1
                raise Timeout(node.name, method.name, 1.0)
            cert = CommitCertificate.decode(params["certificate"])
            if key_id in node.active:
                return {"key_id": key_id, "status": "active"}
            bundle = node.pending[key_id]
            problem = certificate_problem(
                cert, purpose=IMPORT_PURPOSE, ceremony=bundle.import_id(),
                transcript_hash=bundle.transcript_hash(), holders=bundle.holders,
                manifest=self.manifest,
            )  # fmt: skip
            if problem:
                raise self._refuse(node, ImportRefusal.BAD_COMMIT)
            node.active[key_id] = ImportTranscript(node.pending.pop(key_id), cert)
            return {"key_id": key_id, "status": "active"}
        if method is IMPORT_ABORT:
            node.opened.pop(key_id, None)
            if key_id in node.active:
                raise self._refuse(node, ImportRefusal.COMMITTED)
            if node.pending.pop(key_id, None) is not None:
                node.destroyed.append(key_id)
            return {"key_id": key_id, "status": "aborted"}
        if method is IMPORT_STATE:
            return {"imports": [st.to_wire() for st in _import_states(node, params)]}
        if method is node_api.NODE_STATUS:
            return node_api.NodeStatus(
                node.name, node.index, PROTOCOL_VERSION, self.manifest.cluster_id,
                self.manifest.node(node.name).noise_public_key, bytes(node.key.verify_key), (),
            ).to_wire()  # fmt: skip
        if method is node_api.KEYS_LIST:
            return {"keys": [_meta(t).to_wire() for t in node.active.values()], "more": False}
        if method is node_api.DKG_STATE:
            return {"ceremonies": []}
        if method is node_api.DKG_TRANSCRIPT:
            return {"transcript": node.active[key_id].encode()}
        raise AssertionError(method.name)


def _import_states(node: Node, params: dict[str, Any]) -> list[ImportState]:
    wanted = params.get("key_id")
    out = [
        ImportState(k, b.import_id(), "pending", b.holders, node.relayed_by[k], 5, None)
        for k, b in node.pending.items()
        if wanted in (None, k)
    ]
    if wanted in node.active:
        cert = node.active[wanted].commit
        holders = tuple(j for j, _ in cert.signatures)
        out.append(ImportState(wanted, cert.ceremony, "active", holders, None, 0, cert.encode()))
    return out


def _meta(t: ImportTranscript) -> node_api.PublicKeyMetadata:
    verified = check_bundle_unchecked(t.bundle)
    b = t.bundle
    return node_api.PublicKeyMetadata(
        key_id=b.key_id, epoch=0, t=b.threshold, n=len(b.holders), holders=b.holders,
        status="active", pk_g1=b.commitments[0], pk_g2=b.pubkey_g2,
        public_shares=tuple((j, g1_to_bytes(p)) for j, p in sorted(verified.items())),
        transcript_hash=b.transcript_hash(),
    )  # fmt: skip


def check_bundle_unchecked(bundle: ImportBundle) -> dict[int, Any]:
    cms = [g1_from_bytes(c, field="c") for c in bundle.commitments]
    return {j: public_share(cms, j) for j in bundle.holders}


def service(sessions: Sessions) -> ImportingService:
    return ImportingService(sessions.manifest, sessions)  # type: ignore[arg-type]


async def bundle_for(svc: ImportingService, sessions: Sessions, key_id: str, sk: int,
                     min_holders: int | None = None) -> ImportBundle:  # fmt: skip
    opening = await svc.open_import(key_id, min_holders=min_holders, client=OPERATOR)
    opens = check_opens(
        [o for _, o in opening.opens], manifest=sessions.manifest, key_id=key_id, epoch=0,
        min_holders=min_holders or len(NAMES),
    )  # fmt: skip
    split = split_key(sk, g1_mul_generator(sk), threshold=2, indices=[o.sender for o in opens],
                      rng=RNG)  # fmt: skip
    try:
        return seal_bundle(split, opens, manifest=sessions.manifest, key_id=key_id, epoch=0,
                           rng=RNG)  # fmt: skip
    finally:
        split.forget()


def calls(sessions: Sessions, method: Method) -> list[str]:
    return [n.name for n in sessions.nodes.values() if method.name in n.calls]


async def test_import_commits_on_every_holder_and_registers_the_key() -> None:
    sessions = Sessions()
    svc = service(sessions)
    bundle = await bundle_for(svc, sessions, "k", 424242)
    result = await svc.import_key("k", bundle, min_holders=None, client=OPERATOR)
    assert result.key.pk_g1 == g1_mul_generator(424242) and result.key.status == "active"
    assert result.key.holders == NAMES
    assert verify_import_transcript(result.transcript, sessions.manifest).valid
    assert all("k" in n.active for n in sessions.nodes.values())
    assert calls(sessions, IMPORT_ABORT) == []
    assert (await svc.get_key("k")).transcript_hash == bundle.transcript_hash()
    with pytest.raises(KeyExists):  # the registry knows it now: no node is asked
        await svc.open_import("k", min_holders=None, client=OPERATOR)


@pytest.mark.parametrize("mode", ["reject", "wrong-key"])
async def test_any_failure_aborts_every_holder(mode: str) -> None:
    sessions = Sessions()
    svc = service(sessions)
    bundle = await bundle_for(svc, sessions, "k", 99)
    sessions.nodes["n2"].mode = mode
    with pytest.raises(CeremonyAborted) as err:
        await svc.import_key("k", bundle, min_holders=None, client=OPERATOR)
    assert err.value.missed == ("n2",)
    assert calls(sessions, IMPORT_ABORT) == list(NAMES)
    assert calls(sessions, KEYS_COMMIT) == []
    assert not any(n.pending or n.active for n in sessions.nodes.values())


async def test_a_node_holding_the_key_id_makes_it_key_exists_and_opens_are_aborted() -> None:
    sessions = Sessions()
    sessions.nodes["n3"].mode = "exists"
    svc = service(sessions)
    with pytest.raises(KeyExists):
        await svc.open_import("k", min_holders=None, client=OPERATOR)
    assert calls(sessions, IMPORT_ABORT) == ["n1", "n2"]
    assert not any(n.opened for n in sessions.nodes.values())


async def test_min_holders_and_a_down_node() -> None:
    sessions = Sessions()
    sessions.nodes["n3"].mode = "down"
    svc = service(sessions)
    with pytest.raises(NotEnoughSigners) as err:
        await svc.open_import("k", min_holders=None, client=OPERATOR)
    assert err.value.missing == ("n3",)
    bundle = await bundle_for(svc, sessions, "k", 7, min_holders=2)
    assert bundle.holders == (1, 2)
    result = await svc.import_key("k", bundle, min_holders=2, client=OPERATOR)
    assert result.key.holders == ("n1", "n2")


async def test_a_late_commit_is_retried() -> None:
    sessions = Sessions()
    sessions.nodes["n1"].mode = "commit-late"
    svc = service(sessions)
    bundle = await bundle_for(svc, sessions, "k", 5)
    result = await svc.import_key("k", bundle, min_holders=None, client=OPERATOR)
    assert result.key.status == "active"
    assert sessions.nodes["n1"].calls.count(KEYS_COMMIT.name) == 2


async def test_only_operators_import() -> None:
    sessions = Sessions()
    svc = service(sessions)
    signer = Client("s", frozenset({"signer"}), frozenset({"*"}))
    with pytest.raises(Forbidden):
        await svc.open_import("k", min_holders=None, client=signer)
    assert not any(n.calls for n in sessions.nodes.values())


# -- roll-forward after the coordinator died mid-import --------------------------------


async def die_mid_commit(sessions: Sessions, key_id: str, sk: int, hang: tuple[str, ...]) -> None:
    """Run an import whose coordinator dies once every holder got ``keys.commit``:
    the nodes in ``hang`` never see it; the others activate."""
    svc = service(sessions)
    bundle = await bundle_for(svc, sessions, key_id, sk)
    for name in hang:
        sessions.nodes[name].mode = "commit-hang"
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                await svc.import_key(key_id, bundle, min_holders=None, client=OPERATOR)

            nursery.start_soon(run)
            while len(calls(sessions, KEYS_COMMIT)) < len(NAMES):  # noqa: ASYNC110 - polls fake nodes
                await trio.sleep(0.001)
            await trio.sleep(0.01)
            scope.cancel()  # the coordinator process is gone
    assert scope.cancelled_caught
    for name in hang:
        sessions.nodes[name].mode = "ok"
        assert key_id in sessions.nodes[name].pending


async def test_a_new_coordinator_rolls_a_partial_commit_forward() -> None:
    sessions = Sessions()
    await die_mid_commit(sessions, "k", 1234, hang=("n2", "n3"))
    assert list(sessions.nodes["n1"].active) == ["k"]
    svc = service(sessions)  # the restarted coordinator
    await svc.refresh()
    transcripts = {n.active["k"].encode() for n in sessions.nodes.values()}
    assert len(transcripts) == 1  # the same certificate and key everywhere
    assert verify_import_transcript(transcripts.pop(), sessions.manifest).valid
    assert not any(n.pending or n.destroyed for n in sessions.nodes.values())
    assert calls(sessions, IMPORT_ABORT) == []
    info = await svc.get_key("k")
    assert info.status == "active" and info.pk_g1 == g1_mul_generator(1234)
    assert info.holders == NAMES


async def test_no_certificate_anywhere_aborts_every_pending_share() -> None:
    sessions = Sessions()
    await die_mid_commit(sessions, "k", 77, hang=NAMES)
    svc = service(sessions)
    await svc.refresh()
    assert all(n.destroyed == ["k"] for n in sessions.nodes.values())
    assert not any(n.pending or n.active for n in sessions.nodes.values())
    with pytest.raises(UnknownKey):
        await svc.get_key("k")


async def test_an_unreachable_holder_defers_the_decision_until_it_is_back() -> None:
    sessions = Sessions()
    await die_mid_commit(sessions, "k", 4321, hang=("n2", "n3"))
    sessions.nodes["n1"].mode = "down"  # the one holding the certificate
    svc = service(sessions)
    await svc.refresh()
    for name in ("n2", "n3"):  # not aborted: n1 might (and does) hold the certificate
        assert "k" in sessions.nodes[name].pending and not sessions.nodes[name].destroyed
    assert calls(sessions, IMPORT_ABORT) == []
    assert "n1" in svc.import_recovery.deferred["k"]
    sessions.nodes["n1"].mode = "ok"
    await svc.refresh_node("n1")  # its session is back
    assert all("k" in n.active for n in sessions.nodes.values())
    assert not svc.import_recovery.deferred


async def test_an_unreachable_holder_also_defers_an_abort() -> None:
    sessions = Sessions()
    await die_mid_commit(sessions, "k", 5, hang=NAMES)
    sessions.nodes["n3"].mode = "down"
    svc = service(sessions)
    await svc.refresh()
    assert all("k" in sessions.nodes[n].pending for n in ("n1", "n2"))
    assert calls(sessions, IMPORT_ABORT) == []
    sessions.nodes["n3"].mode = "ok"
    await svc.refresh_node("n3")
    assert all(n.destroyed == ["k"] for n in sessions.nodes.values())


async def test_a_live_import_is_not_recovered_under_its_driver() -> None:
    sessions = Sessions()
    svc = service(sessions)
    bundle = await bundle_for(svc, sessions, "k", 9)
    assert svc.dkg.claim("k")  # as import_key does while it runs
    for name in NAMES:
        sessions.nodes[name].pending["k"] = bundle
        sessions.nodes[name].relayed_by["k"] = "coordinator"
    await svc.refresh()
    assert calls(sessions, IMPORT_ABORT) == [] and calls(sessions, KEYS_COMMIT) == []
    with pytest.raises(CeremonyInProgress):
        await svc.import_key("k", bundle, min_holders=None, client=OPERATOR)

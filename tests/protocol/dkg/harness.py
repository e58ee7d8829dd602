"""The one in-memory DKG harness (after kyber's ``RunDKG`` and h11's ``ConnectionPair``).

``run_ceremony`` drives n real ``Participant`` state machines and one ``Driver``
with no I/O: every message travels as bytes (so every decoder is on the path), time
is a number that jumps to the driver's deadline when nothing else can happen, and
faults are injected only through hooks:

* ``behaviours[j]``: node j is byzantine; its ``Behaviour`` rewrites the bundle,
  complaints or justification it produces *before* it records them (re-signed with
  its own key, as a cheating node would), so it keeps running consistently;
* ``to_relay(sender, message) -> [messages]``: node→coordinator messages in flight
  (drop, duplicate, add a second signed bundle, ...);
* ``relay(to, message) -> message | None``: coordinator→node messages, applied in
  the driver's ``_route`` (a malicious coordinator);
* ``silent[j] = phase``: node j stops answering from that phase on.

Every fault test ends in ``assert_consistent`` or ``assert_relay_abort``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey
from py_ecc import optimized_bn128 as ob

from protocol.bn254 import G1, G2, R
from protocol.dkg import (
    Aborted,
    Activate,
    Committed,
    CulpritKind,
    Deliver,
    Driver,
    DriverAborted,
    DriverConfig,
    NodeMessageRejected,
    Participant,
    ParticipantConfig,
    PendingKey,
    Phase,
    RelayFault,
    SealPending,
    Send,
    verify_transcript,
)
from protocol.dkg.messages import Complaints, DealBundle, Justification, NodeMessage
from protocol.dkg.relayed import Abort, CommitCertificate, Relayed
from protocol.dkg.transcript import ceremony_id
from protocol.manifest import Manifest, NodeEntry
from protocol.rng import seeded_rng
from protocol.threshold import Polynomial, interpolate_at_zero

KEY_ID = "operator-key"


def node_key(seed: bytes, index: int) -> SigningKey:
    return SigningKey(hashlib.sha256(b"dkg-harness" + seed + bytes([index])).digest())


def make_manifest(n: int, seed: bytes = b"cluster") -> tuple[Manifest, dict[int, SigningKey]]:
    keys = {j: node_key(seed, j) for j in range(1, n + 1)}
    nodes = tuple(
        NodeEntry(
            index=j,
            name=f"node{j}",
            address=f"127.0.0.1:{7100 + j}",
            noise_public_key=hashlib.sha256(b"noise" + seed + bytes([j])).digest(),
            ed25519_public_key=bytes(keys[j].verify_key),
        )
        for j in keys
    )
    cluster_id = hashlib.sha256(b"cluster-id" + seed).digest()[:16]
    return Manifest(cluster_id=cluster_id, nodes=nodes, coordinators=()), keys


@dataclass(frozen=True)
class Behaviour:
    """How a byzantine node deviates (each hook gets the honest message, unsigned
    fields intact, and returns the one to sign and send)."""

    bundle: Callable[[DealBundle, Polynomial, Mapping[int, bytes]], DealBundle] | None = None
    complaints: Callable[[Complaints], Complaints] | None = None
    justification: Callable[[Justification], Justification] | None = None


class HarnessParticipant(Participant):
    """A participant that records its polynomial (for the final check) and, when
    given a ``Behaviour``, cheats through the byzantine seams."""

    def __init__(
        self,
        config: ParticipantConfig,
        *,
        rng: Callable[[int], bytes],
        behaviour: Behaviour | None,
        polynomials: dict[int, Polynomial],
    ) -> None:
        super().__init__(config, rng=rng)
        self._behaviour = behaviour or Behaviour()
        self._polynomials = polynomials

    def _resign(self, message: Any) -> Any:
        return dataclasses.replace(message, sig=b"").signed_by(self._config.signing_key)

    def _make_bundle(
        self, *, ceremony: bytes, polynomial: Polynomial, recipient_keys: Mapping[int, bytes]
    ) -> DealBundle:
        self._polynomials[self.index] = polynomial
        honest = super()._make_bundle(
            ceremony=ceremony, polynomial=polynomial, recipient_keys=recipient_keys
        )
        if self._behaviour.bundle is None:
            return honest
        return self._resign(self._behaviour.bundle(honest, polynomial, recipient_keys))  # type: ignore[no-any-return]

    def _make_complaints(self, *, ceremony: bytes, against: tuple[int, ...]) -> Complaints:
        honest = super()._make_complaints(ceremony=ceremony, against=against)
        if self._behaviour.complaints is None:
            return honest
        return self._resign(self._behaviour.complaints(honest))  # type: ignore[no-any-return]

    def _make_justification(
        self, *, ceremony: bytes, polynomial: Polynomial, recipients: tuple[int, ...]
    ) -> Justification:
        honest = super()._make_justification(
            ceremony=ceremony, polynomial=polynomial, recipients=recipients
        )
        if self._behaviour.justification is None:
            return honest
        return self._resign(self._behaviour.justification(honest))  # type: ignore[no-any-return]


class HookedDriver(Driver):
    def __init__(
        self,
        config: DriverConfig,
        *,
        now: float,
        route: Callable[[int, Relayed], Relayed | None] | None,
    ) -> None:
        super().__init__(config, now=now)
        self._hook = route

    def _route(self, to: int, message: Relayed) -> Relayed | None:
        return message if self._hook is None else self._hook(to, message)


@dataclass
class NodeRecord:
    index: int
    participant: HarnessParticipant
    sent: list[NodeMessage] = field(default_factory=list)
    relay_faults: list[RelayFault] = field(default_factory=list)
    pending: PendingKey | None = None
    active: Activate | None = None
    aborted: Aborted | None = None


@dataclass
class Run:
    n: int
    t: int
    manifest: Manifest
    keys: dict[int, SigningKey]
    nodes: dict[int, NodeRecord]
    driver: HookedDriver
    byzantine: frozenset[int]
    polynomials: dict[int, Polynomial]
    committed: Committed | None = None
    driver_aborted: DriverAborted | None = None
    rejected: list[NodeMessageRejected] = field(default_factory=list)
    snapshots: dict[Phase, tuple[Participant, bytes]] = field(default_factory=dict)

    @property
    def honest(self) -> list[int]:
        return [j for j in self.nodes if j not in self.byzantine]


def run_ceremony(
    n: int = 4,
    t: int = 3,
    *,
    min_holders: int | None = None,
    seed: bytes = b"run",
    behaviours: Mapping[int, Behaviour] | None = None,
    to_relay: Callable[[int, NodeMessage], list[NodeMessage]] | None = None,
    relay: Callable[[int, Relayed], Relayed | None] | None = None,
    silent: Mapping[int, Phase] | None = None,
    active_key_ids: Mapping[int, frozenset[str]] | None = None,
    used_ceremony_ids: Mapping[int, frozenset[bytes]] | None = None,
    capture: int | None = None,
) -> Run:
    """Run one ceremony to its end (see the module header)."""
    behaviours = dict(behaviours or {})
    silent = dict(silent or {})
    manifest, keys = make_manifest(n)
    polynomials: dict[int, Polynomial] = {}
    nodes = {
        j: NodeRecord(
            j,
            HarnessParticipant(
                ParticipantConfig(
                    index=j,
                    signing_key=keys[j],
                    manifest=manifest,
                    active_key_ids=(active_key_ids or {}).get(j, frozenset()),
                    used_ceremony_ids=(used_ceremony_ids or {}).get(j, frozenset()),
                ),
                rng=seeded_rng(seed + bytes([j])),
                behaviour=behaviours.get(j),
                polynomials=polynomials,
            ),
        )
        for j in range(1, n + 1)
    }
    config = DriverConfig(
        manifest=manifest,
        key_id=KEY_ID,
        threshold=t,
        participants=tuple(range(1, n + 1)),
        min_holders=min_holders,
    )
    driver = HookedDriver(config, now=0.0, route=relay)
    run = Run(
        n, t, manifest, keys, nodes, driver, frozenset(behaviours) | frozenset(silent), polynomials
    )
    now = 0.0
    queue: deque[Any] = deque(driver.start())

    def to_driver(j: int, message: NodeMessage) -> None:
        nodes[j].sent.append(message)
        if driver.phase.value in ("committed", "aborted"):
            return  # the coordinator shell has no ceremony left to feed
        for m in to_relay(j, message) if to_relay else [message]:
            try:
                queue.extend(driver.receive(j, m.encode(), now=now))
            except NodeMessageRejected as exc:
                run.rejected.append(exc)
                queue.extend(driver.node_failed(j, str(exc), now=now))

    def deliver(d: Deliver) -> None:
        node = nodes[d.to]
        p = node.participant
        if d.to in silent and _phase_order(p.phase) >= _phase_order(silent[d.to]):
            return
        if p.phase in (Phase.DONE, Phase.ABORTED) and isinstance(
            d.message, Abort | CommitCertificate
        ):
            return  # the node shell has no ceremony left to end
        data = d.message.encode()
        if capture == d.to:
            run.snapshots.setdefault(p.phase, (_clone(p), data))
        try:
            result = p.receive(data, now=now)
        except RelayFault as exc:
            node.relay_faults.append(exc)
            if p.phase is not Phase.FINISH:
                node.aborted = p.abort(str(exc))
            if driver.phase.value not in ("committed", "aborted"):
                queue.extend(driver.node_failed(d.to, str(exc), now=now))
            return
        if isinstance(result, Send):
            to_driver(d.to, result.message)
        elif isinstance(result, SealPending):
            node.pending = result.pending
            to_driver(d.to, result.message)
        elif isinstance(result, Activate):
            node.active = result
        elif isinstance(result, Aborted):
            node.aborted = result
            if driver.phase.value not in ("committed", "aborted"):
                queue.extend(driver.node_failed(d.to, result.reason, now=now))

    for _ in range(1000):
        while queue:
            item = queue.popleft()
            if isinstance(item, Deliver):
                deliver(item)
            elif isinstance(item, Committed):
                run.committed = item
            elif isinstance(item, DriverAborted):
                run.driver_aborted = item
        if driver.phase.value in ("committed", "aborted"):
            return run
        now = driver.deadline
        queue.extend(driver.tick(now=now))
    raise AssertionError("the ceremony did not end")


def predict_ceremony_id(
    n: int = 4, t: int = 3, *, min_holders: int | None = None, seed: bytes = b"run"
) -> bytes:
    """The ceremony id ``run_ceremony`` with these arguments will produce (its nodes'
    nonces come from seeded generators), computed from the opens alone."""
    manifest, keys = make_manifest(n)
    config = DriverConfig(
        manifest=manifest,
        key_id=KEY_ID,
        threshold=t,
        participants=tuple(range(1, n + 1)),
        min_holders=min_holders,
    )
    proposal = config.proposal()
    opens = []
    for j in range(1, n + 1):
        p = Participant(
            ParticipantConfig(index=j, signing_key=keys[j], manifest=manifest),
            rng=seeded_rng(seed + bytes([j])),
        )
        result = p.start(proposal, now=0.0)
        assert isinstance(result, Send)
        opens.append(result.message)
    return ceremony_id(proposal, opens)  # type: ignore[arg-type]


_ORDER = list(Phase)


def _phase_order(phase: Phase) -> int:
    return _ORDER.index(phase)


def _clone(p: HarnessParticipant) -> Participant:
    """An independent participant in the same state (states are immutable)."""
    clone = Participant(p._config, rng=seeded_rng(b"clone"))
    clone._state = p.state
    return clone


# --------------------------------------------------------------------------- checks


def _oracle_g1(k: int) -> tuple[int, int]:
    x, y = ob.normalize(ob.multiply(ob.G1, k))
    return int(x), int(y)


def _oracle_g2(k: int) -> tuple[tuple[int, int], tuple[int, int]]:
    x, y = ob.normalize(ob.multiply(ob.G2, k))
    return (int(x.coeffs[0]), int(x.coeffs[1])), (int(y.coeffs[0]), int(y.coeffs[1]))


def _as_g1(p: G1) -> tuple[int, int]:
    return p.x, p.y


def _as_g2(q: G2) -> tuple[tuple[int, int], tuple[int, int]]:
    return q.x, q.y


def assert_consistent(
    run: Run, *, qual: set[int], holders: set[int] | None = None, verify: bool = True
) -> None:
    """The one end-of-ceremony check: QUAL is exactly ``qual`` (the honest dealers),
    the holders (default: every honest node) agree on the key and public shares,
    each share matches its public share, any t shares give Σ a_i0 over QUAL (the
    polynomials the dealers really used), t-1 do not, and the transcript verifies.
    Points are cross-checked against py_ecc."""
    assert run.driver_aborted is None, run.driver_aborted
    assert run.committed is not None
    result = run.committed.result
    assert set(result.info.qual) == qual
    expected_holders = set(run.honest) if holders is None else holders
    assert expected_holders <= set(result.holders)
    infos = set()
    shares: dict[int, int] = {}
    for j in result.holders:
        node = run.nodes[j]
        assert node.active is not None and node.pending is not None, f"holder {j} not active"
        assert node.active.key.info == node.pending.info == result.info
        assert node.active.transcript == result.transcript
        infos.add(node.active.key.info.transcript_hash)
        shares[j] = node.pending.share
        assert _as_g1(result.info.public_shares[j]) == _oracle_g1(shares[j])
    assert len(infos) == 1
    for j, node in run.nodes.items():
        if j not in result.holders:
            assert node.active is None
            if node.pending is not None:
                assert node.aborted is not None, f"node {j} keeps a pending share"
    secret = sum(run.polynomials[i].coeffs[0] for i in qual) % R
    assert _as_g1(result.info.pubkey_g1) == _oracle_g1(secret)
    assert _as_g2(result.info.pubkey_g2) == _oracle_g2(secret)
    for subset in itertools.combinations(sorted(shares), run.t):
        assert interpolate_at_zero({j: shares[j] for j in subset}) == secret
    for subset in itertools.combinations(sorted(shares), run.t - 1):
        assert interpolate_at_zero({j: shares[j] for j in subset}) != secret
    if verify:
        check = verify_transcript(result.transcript, run.manifest)
        assert check.valid, check.reason
        assert set(check.qual) == qual and check.key_id == KEY_ID


def assert_relay_abort(run: Run) -> None:
    """The ceremony ended without a key because the relay cheated: every honest node
    aborted (or refused the relay's message) blaming the relay, no node activated or
    kept a pending share, and no dealer revealed a share."""
    for j in run.honest:
        node = run.nodes[j]
        assert node.active is None and node.pending is None
        assert node.aborted is not None or node.relay_faults, f"node {j} did not stop"
        if node.aborted is not None and not node.relay_faults:
            assert node.aborted.culprit.kind in (CulpritKind.RELAY, CulpritKind.COORDINATOR)
        assert not any(isinstance(m, Justification) for m in node.sent)
    assert run.committed is None

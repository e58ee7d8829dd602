"""The coordinator's relay: it names nodes that miss a phase, aborts when too few
remain, refuses what is out of phase or forged without changing, and a node that
lies in its echo only excludes itself."""

from __future__ import annotations

import dataclasses

import pytest

from protocol.dkg import (
    CulpritKind,
    Deliver,
    DkgConfigError,
    DkgStateError,
    Driver,
    DriverAborted,
    DriverConfig,
    DriverPhase,
    NodeMessageRejected,
    Participant,
    ParticipantConfig,
    Phase,
    PhaseStarted,
    Send,
)
from protocol.dkg.messages import Echo, NodeMessage
from protocol.dkg.relayed import Abort, Proposal
from protocol.errors import DecodeError
from protocol.rng import seeded_rng
from tests.protocol.dkg.harness import (
    Run,
    assert_consistent,
    make_manifest,
    node_key,
    run_ceremony,
)


def test_a_node_that_misses_the_open_is_named_and_the_ceremony_aborts() -> None:
    run = run_ceremony(silent={4: Phase.INIT})
    assert run.driver_aborted is not None
    assert run.driver_aborted.missed == {4: DriverPhase.OPEN}
    assert "node 4" in run.driver_aborted.reason
    assert run.driver_aborted.culprit.indices == (4,)
    for j in (1, 2, 3):
        aborted = run.nodes[j].aborted
        assert aborted is not None and aborted.culprit.kind is CulpritKind.COORDINATOR


def test_with_every_node_required_a_missing_dealer_aborts_the_ceremony() -> None:
    run = run_ceremony(silent={4: Phase.OPEN})  # min_holders defaults to n
    assert run.driver_aborted is not None and run.committed is None
    assert run.driver_aborted.missed == {4: DriverPhase.DEAL}
    assert "node 4 missed deal" in run.driver_aborted.reason
    assert all(run.nodes[j].pending is None for j in (1, 2, 3))


def test_a_node_that_lies_in_its_echo_only_excludes_itself() -> None:
    def lying_echo(sender: int, m: NodeMessage) -> list[NodeMessage]:
        if sender == 3 and isinstance(m, Echo):
            lie = dataclasses.replace(m, bundles=m.bundles[1:], sig=b"")
            return [lie.signed_by(node_key(b"cluster", 3))]
        return [m]

    run = run_ceremony(to_relay=lying_echo, min_holders=3)
    assert [e.node for e in run.rejected] == [3]
    assert "it was not sent" in str(run.rejected[0])
    assert_consistent(run, qual={1, 2, 3, 4}, holders={1, 2, 4})
    aborted = run.nodes[3].aborted
    assert aborted is not None and "not a holder" in aborted.reason


def _opens(proposal: Proposal, seed: bytes) -> dict[int, bytes]:
    manifest, keys = make_manifest(4)
    out = {}
    for j in proposal.participants:
        p = Participant(
            ParticipantConfig(index=j, signing_key=keys[j], manifest=manifest),
            rng=seeded_rng(seed + bytes([j])),
        )
        result = p.start(proposal, now=0.0)
        assert isinstance(result, Send)
        out[j] = result.message.encode()
    return out


def test_out_of_phase_forged_and_duplicate_messages_change_nothing(honest_run: Run) -> None:
    manifest, _ = make_manifest(4)
    driver = Driver(
        DriverConfig(manifest=manifest, key_id="k", threshold=3, participants=(1, 2, 3, 4)),
        now=10.0,
    )
    started = driver.start()
    assert started[0] == PhaseStarted(DriverPhase.OPEN, 40.0)
    opens = _opens(driver.proposal, b"a")
    assert driver.receive(1, opens[1], now=11.0) == []
    assert driver.receive(1, opens[1], now=11.0) == []  # a retransmission
    echo = next(m for m in honest_run.nodes[2].sent if isinstance(m, Echo))
    with pytest.raises(DkgStateError):
        driver.receive(2, echo.encode(), now=11.0)
    with pytest.raises(NodeMessageRejected, match="claims to be from node 2"):
        driver.receive(3, opens[2], now=11.0)
    with pytest.raises(NodeMessageRejected, match="two different"):
        driver.receive(1, _opens(driver.proposal, b"b")[1], now=11.0)
    with pytest.raises(DecodeError):
        driver.receive(2, b"\x00garbage", now=11.0)
    assert driver.tick(now=39.9) == []
    assert driver.phase is DriverPhase.OPEN and driver.live == {1, 2, 3, 4}
    for j in (2, 3, 4):
        out = driver.receive(j, opens[j], now=12.0)
    assert driver.phase is DriverPhase.DEAL
    assert [o.to for o in out if hasattr(o, "to")] == [1, 2, 3, 4]
    assert driver.receive(4, opens[4], now=12.0) == []  # late copy, already recorded


def test_driver_config_is_validated() -> None:
    manifest, _ = make_manifest(4)
    base = DriverConfig(manifest=manifest, key_id="k", threshold=3, participants=(1, 2, 3, 4))
    assert base.proposal().min_holders == 4
    for bad, match in [
        (dataclasses.replace(base, threshold=1), "threshold"),
        (dataclasses.replace(base, threshold=5), "threshold"),
        (dataclasses.replace(base, min_holders=2), "min_holders"),
        (dataclasses.replace(base, participants=(1, 2, 9)), "not in the manifest"),
        (dataclasses.replace(base, key_id="a b"), "key_id"),
        (dataclasses.replace(base, phase_timeout_s=0.0), "phase_timeout_s"),
    ]:
        with pytest.raises(DkgConfigError, match=match):
            Driver(bad, now=0.0)


def test_a_node_reported_failed_in_open_aborts_at_once() -> None:
    manifest, _ = make_manifest(4)
    driver = Driver(
        DriverConfig(manifest=manifest, key_id="k", threshold=3, participants=(1, 2, 3, 4)),
        now=0.0,
    )
    driver.start()
    out = driver.node_failed(2, "refused: key is active", now=1.0)
    assert driver.phase is DriverPhase.ABORTED
    aborts = [o for o in out if isinstance(o, Deliver)]
    assert [d.to for d in aborts] == [1, 2, 3, 4]
    assert all(isinstance(d.message, Abort) and "node 2" in d.message.reason for d in aborts)
    (event,) = [o for o in out if isinstance(o, DriverAborted)]
    assert event.missed == {2: DriverPhase.OPEN} and event.culprit.indices == (2,)
    with pytest.raises(DkgStateError):
        driver.tick(now=100.0)

"""The participant state machine: the transition table is the law (every message
outside it is a typed error that changes nothing), terminal phases are sticky,
malformed input only ever raises typed errors, and relay faults are refused."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.dkg import (
    Aborted,
    CulpritKind,
    DkgConfigError,
    DkgStateError,
    NeedMore,
    Participant,
    ParticipantConfig,
    Phase,
    ProposalRejected,
    RelayFault,
)
from protocol.dkg.phases import TRANSITIONS
from protocol.dkg.relayed import (
    BundleSet,
    CommitCertificate,
    Proposal,
    decode_relayed,
)
from protocol.errors import TkmsError
from protocol.rng import seeded_rng
from tests.protocol.dkg.harness import Run, make_manifest, node_key

KINDS = {
    Phase.INIT: "dkg/proposal",
    Phase.OPEN: "dkg/open-set",
    Phase.DEAL: "dkg/bundle-set",
    Phase.ECHO: "dkg/echo-set",
    Phase.COMPLAIN: "dkg/complaint-set",
    Phase.JUSTIFY: "dkg/justification-set",
    Phase.FINISH: "dkg/commit",
}
LIVE_PHASES = list(KINDS)


@pytest.fixture(scope="session")
def snapshots(honest_run: Run, complaint_run: Run) -> dict[Phase, tuple[Participant, bytes]]:
    """Node 1 just before it handled each phase's message, and that message."""
    shots = dict(honest_run.snapshots)
    shots[Phase.JUSTIFY] = complaint_run.snapshots[Phase.JUSTIFY]
    assert set(shots) == set(LIVE_PHASES)
    return shots


def fresh(p: Participant) -> Participant:
    clone = Participant(p._config, rng=seeded_rng(b"fresh"))
    clone._state = p.state
    return clone


def in_phase(
    snapshots: dict[Phase, tuple[Participant, bytes]], honest_run: Run, phase: Phase
) -> Participant:
    if phase is Phase.DONE:
        done = honest_run.nodes[1].participant
        assert done.phase is Phase.DONE
        return fresh(done)
    if phase is Phase.ABORTED:
        p = fresh(snapshots[Phase.DEAL][0])
        assert isinstance(p.abort("test"), Aborted)
        return p
    return fresh(snapshots[phase][0])


def test_the_phases_the_harness_captured_are_the_ones_the_table_expects(
    snapshots: dict[Phase, tuple[Participant, bytes]],
) -> None:
    for phase, (p, data) in snapshots.items():
        assert p.phase is phase
        assert KINDS[phase] == decode_relayed(data).KIND
        assert (phase, KINDS[phase]) in TRANSITIONS


OUT_OF_PHASE = [
    (phase, kind) for phase in Phase for kind in KINDS.values() if (phase, kind) not in TRANSITIONS
]


@pytest.mark.parametrize(("phase", "kind"), OUT_OF_PHASE, ids=lambda v: str(v))
def test_a_message_out_of_phase_is_a_typed_error_and_changes_nothing(
    snapshots: dict[Phase, tuple[Participant, bytes]], honest_run: Run, phase: Phase, kind: str
) -> None:
    p = in_phase(snapshots, honest_run, phase)
    message = next(data for ph, (_, data) in snapshots.items() if KINDS[ph] == kind)
    before = p.state
    with pytest.raises(DkgStateError) as info:
        p.receive(message, now=1.0)
    assert info.value.phase == phase.value and info.value.kind == kind
    assert p.state is before


@pytest.mark.parametrize("phase", [Phase.DONE, Phase.ABORTED])
def test_terminal_phases_are_sticky(
    snapshots: dict[Phase, tuple[Participant, bytes]], honest_run: Run, phase: Phase
) -> None:
    p = in_phase(snapshots, honest_run, phase)
    before = p.state
    with pytest.raises(DkgStateError):
        p.receive(b"\x82\xa4kind\xa9dkg/abort\xa6reason\xa1x", now=1.0)
    with pytest.raises(DkgStateError):
        p.tick(now=1e9)
    with pytest.raises(DkgStateError):
        p.abort("again")
    assert p.state is before


def test_every_phase_before_finish_has_a_deadline_and_finish_has_none(
    snapshots: dict[Phase, tuple[Participant, bytes]],
) -> None:
    for phase in (Phase.OPEN, Phase.DEAL, Phase.ECHO, Phase.COMPLAIN, Phase.JUSTIFY):
        p = fresh(snapshots[phase][0])
        deadline = p.deadline
        assert deadline is not None
        before = p.state
        assert p.tick(now=deadline - 0.001) == NeedMore(phase)
        assert p.state is before
        result = p.tick(now=deadline)
        assert isinstance(result, Aborted) and result.culprit.kind is CulpritKind.RELAY
        assert p.phase is Phase.ABORTED
    finish = fresh(snapshots[Phase.FINISH][0])
    assert finish.deadline is None
    before = finish.state
    with pytest.raises(DkgStateError):  # a node that voted waits for commit or abort
        finish.tick(now=1e12)
    with pytest.raises(DkgStateError):
        finish.abort("impatient")
    assert finish.state is before


def test_the_coordinator_may_abort_in_every_live_phase(
    snapshots: dict[Phase, tuple[Participant, bytes]],
) -> None:
    abort = b"\x82\xa4kind\xa9dkg/abort\xa6reason\xa7because"
    for phase in LIVE_PHASES:
        p = fresh(snapshots[phase][0])
        result = p.receive(abort, now=1.0)
        assert isinstance(result, Aborted) and result.culprit.kind is CulpritKind.COORDINATOR
        assert "because" in result.reason and p.phase is Phase.ABORTED
        assert p.state.enc_secret == b"" and p.state.polynomial is None and not p.state.my_shares


# --------------------------------------------------------------------------- malformed input


def _mutate(data: bytes, draw: st.DrawFn) -> bytes:
    op = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
    i = draw(st.integers(min_value=0, max_value=len(data) - 1))
    if op == "flip":
        return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
    if op == "truncate":
        return data[:i]
    if op == "insert":
        return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i:]
    return data[:i] + data[i + 1 :]


@pytest.mark.parametrize("phase", LIVE_PHASES, ids=str)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_malformed_messages_only_raise_typed_errors_and_change_nothing(
    snapshots: dict[Phase, tuple[Participant, bytes]], phase: Phase, data: st.DataObject
) -> None:
    template, valid = snapshots[phase]
    if data.draw(st.booleans()):
        blob = data.draw(st.binary(max_size=300))
    else:
        blob = data.draw(st.composite(lambda draw: _mutate(valid, draw))())
    p = fresh(template)
    before = p.state
    try:
        p.receive(blob, now=1.0)
    except TkmsError:
        assert p.state is before
        return
    # Only an unsigned proposal can be altered into another valid one (the node then
    # simply answers that proposal); every set is made of signed messages.
    assert phase is Phase.INIT and isinstance(decode_relayed(blob), Proposal)


# --------------------------------------------------------------------------- relay faults


def test_a_bundle_set_without_this_nodes_bundle_is_a_relay_fault(
    snapshots: dict[Phase, tuple[Participant, bytes]],
) -> None:
    p = fresh(snapshots[Phase.DEAL][0])
    full = BundleSet.decode(snapshots[Phase.DEAL][1])
    before = p.state
    with pytest.raises(RelayFault, match="own bundle is missing"):
        p.handle(BundleSet(bundles=tuple(b for b in full.bundles if b.sender != 1)), now=1.0)
    forged = dataclasses.replace(full.bundles[1], sig=bytes(64))
    with pytest.raises(RelayFault, match="invalid signature"):
        p.handle(BundleSet(bundles=(full.bundles[0], forged, *full.bundles[2:])), now=1.0)
    other = dataclasses.replace(full.bundles[1], ceremony=bytes(32), sig=b"").signed_by(
        node_key(b"cluster", full.bundles[1].sender)
    )
    with pytest.raises(RelayFault, match="another ceremony"):
        p.handle(BundleSet(bundles=(full.bundles[0], other, *full.bundles[2:])), now=1.0)
    assert p.state is before


def test_a_commit_with_too_few_holders_or_another_hash_is_refused(
    snapshots: dict[Phase, tuple[Participant, bytes]],
) -> None:
    p = fresh(snapshots[Phase.FINISH][0])
    cert = CommitCertificate.decode(snapshots[Phase.FINISH][1])
    before = p.state
    with pytest.raises(RelayFault, match="needs 4"):
        p.handle(dataclasses.replace(cert, signatures=cert.signatures[1:]), now=1.0)
    with pytest.raises(RelayFault, match="another transcript"):
        p.handle(dataclasses.replace(cert, transcript_hash=bytes(32)), now=1.0)
    (j, _), *rest = cert.signatures
    with pytest.raises(RelayFault, match="invalid signature"):
        p.handle(dataclasses.replace(cert, signatures=((j, bytes(64)), *rest)), now=1.0)
    assert p.state is before


def test_proposals_are_checked_against_this_node_and_its_keys() -> None:
    manifest, keys = make_manifest(4)
    config = ParticipantConfig(index=1, signing_key=keys[1], manifest=manifest)
    good = Proposal(
        cluster=manifest.cluster_id, key_id="k1", epoch=0, threshold=2, min_holders=3,
        participants=(1, 2, 3),
    )  # fmt: skip
    for bad, match in [
        (dataclasses.replace(good, cluster=bytes(16)), "another cluster"),
        (dataclasses.replace(good, participants=(2, 3, 4)), "not a participant"),
        (dataclasses.replace(good, participants=(1, 2, 9)), "not in the manifest"),
    ]:
        p = Participant(config, rng=seeded_rng(b"p"))
        with pytest.raises(ProposalRejected, match=match):
            p.start(bad, now=0.0)
        assert p.phase is Phase.INIT
    active = Participant(
        dataclasses.replace(config, active_key_ids=frozenset({"k1"})), rng=seeded_rng(b"p")
    )
    result = active.start(good, now=0.0)
    assert isinstance(result, Aborted) and result.culprit.kind is CulpritKind.CLIENT
    with pytest.raises(DkgConfigError, match="signing key"):
        ParticipantConfig(index=2, signing_key=keys[1], manifest=manifest)
    with pytest.raises(DkgConfigError, match="not in the manifest"):
        ParticipantConfig(index=9, signing_key=keys[1], manifest=manifest)


def test_state_and_results_never_show_secrets(honest_run: Run) -> None:
    node = honest_run.nodes[1]
    assert node.pending is not None
    share = node.pending.share
    for text in (repr(node.pending), repr(node.participant.state), repr(node.participant._config)):
        assert str(share) not in text and hex(share)[2:] not in text
    assert "share=<hidden>" in repr(node.pending)

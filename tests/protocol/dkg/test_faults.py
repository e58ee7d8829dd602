"""One named test per fault (issue 5), all through the one harness and all ending
in the same check (``assert_consistent``, or ``assert_relay_abort`` when the relay
cheats). n = 4, t = 3 unless a test says otherwise."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping

import pytest
from py_ecc import optimized_bn128 as ob

from protocol.bn254 import G2, P, R, g2_mul_generator
from protocol.dkg import DkgConfigError, DriverConfig, DriverPhase, Phase, Proposal
from protocol.dkg.crypto import encrypt_share, x25519_keypair
from protocol.dkg.dealing import deal, pok_context
from protocol.dkg.messages import DealBundle, Justification, NodeMessage
from protocol.dkg.relayed import BundleSet, Relayed
from protocol.encoding import B2, fp2_sqrt, g2_to_bytes, scalar_to_bytes
from protocol.errors import DecodeError
from protocol.proofs import prove_schnorr
from protocol.rng import seeded_rng
from protocol.threshold import Polynomial, random_polynomial
from tests.protocol.dkg.harness import (
    Behaviour,
    Run,
    assert_consistent,
    assert_relay_abort,
    make_manifest,
    node_key,
    predict_ceremony_id,
    run_ceremony,
)

ALL = {1, 2, 3, 4}


def reencrypt(
    bundle: DealBundle,
    polynomial: Polynomial,
    keys: Mapping[int, bytes],
    wrong_for: set[int],
) -> DealBundle:
    """The same bundle with f(j) + 1 encrypted to every j in ``wrong_for``."""
    secret, public = x25519_keypair(seeded_rng(b"byzantine-ephemeral"))
    shares = tuple(
        (
            j,
            encrypt_share(
                (polynomial.evaluate(j) + (1 if j in wrong_for else 0)) % R,
                ceremony=bundle.ceremony,
                dealer=bundle.sender,
                recipient=j,
                ephemeral_secret=secret,
                ephemeral_public=public,
                recipient_key=keys[j],
            ),
        )
        for j in sorted(keys)
    )
    return dataclasses.replace(bundle, ephemeral=public, shares=shares)


def bad_shares_to(victims: set[int]) -> Behaviour:
    return Behaviour(bundle=lambda b, f, keys: reencrypt(b, f, keys, victims))


def excluded(run: Run) -> dict[int, str]:
    assert run.committed is not None
    return dict(run.committed.result.excluded)


def test_honest_run(honest_run: Run) -> None:
    assert_consistent(honest_run, qual=ALL, holders=ALL)
    assert excluded(honest_run) == {}
    assert {n.participant.ceremony for n in honest_run.nodes.values()} == {
        honest_run.driver.ceremony
    }
    assert not any(isinstance(m, Justification) for n in honest_run.nodes.values() for m in n.sent)


def test_absent_dealer() -> None:
    run = run_ceremony(silent={4: Phase.OPEN}, min_holders=3)
    assert_consistent(run, qual={1, 2, 3}, holders={1, 2, 3})
    assert excluded(run) == {4: "absent"}
    assert run.driver.missed == {4: DriverPhase.DEAL}  # named with the phase it missed


def test_bad_share_to_fewer_than_t_holders() -> None:
    # Two complaints (< t): dealer 2 must reveal f_2(3) and f_2(4); they match its
    # commitments, so it answered the complaints and stays in QUAL, and nodes 3 and
    # 4 use the revealed values as their shares from dealer 2.
    run = run_ceremony(behaviours={2: bad_shares_to({3, 4})})
    justifications = [m for m in run.nodes[2].sent if isinstance(m, Justification)]
    assert [sorted(j for j, _ in m.shares) for m in justifications] == [[3, 4]]
    assert_consistent(run, qual=ALL, holders=ALL)


def test_bad_share_to_t_or_more_holders() -> None:
    run = run_ceremony(behaviours={2: bad_shares_to({1, 3, 4})})
    assert not any(isinstance(m, Justification) for m in run.nodes[2].sent)  # nothing revealed
    assert_consistent(run, qual={1, 3, 4})
    assert excluded(run) == {2: "complaints"}


def test_wrong_number_of_commitments() -> None:
    behaviour = Behaviour(
        bundle=lambda b, f, k: dataclasses.replace(b, commitments=b.commitments[:-1])
    )
    run = run_ceremony(behaviours={2: behaviour})
    assert_consistent(run, qual={1, 3, 4})
    assert excluded(run) == {2: "commitment-count"}


def test_invalid_proof_of_possession() -> None:
    def proof_for_dealer_1(b: DealBundle, f: Polynomial, k: Mapping[int, bytes]) -> DealBundle:
        proof = prove_schnorr(f.coeffs[0], context=pok_context(b.ceremony, 1), rng=seeded_rng(b"p"))
        return dataclasses.replace(b, proof=proof.to_bytes())

    run = run_ceremony(behaviours={2: Behaviour(bundle=proof_for_dealer_1)})
    assert_consistent(run, qual={1, 3, 4})
    assert excluded(run) == {2: "proof"}


def test_inconsistent_g1_g2_commitment() -> None:
    def other_g2(b: DealBundle, f: Polynomial, k: Mapping[int, bytes]) -> DealBundle:
        return dataclasses.replace(b, commitment_g2=g2_to_bytes(g2_mul_generator(f.coeffs[0] + 1)))

    run = run_ceremony(behaviours={2: Behaviour(bundle=other_g2)})
    assert_consistent(run, qual={1, 3, 4})
    assert excluded(run) == {2: "g1-g2-mismatch"}


def twist_point_outside_subgroup() -> G2:
    """A point on the twist curve whose order is not r (found by search; checked
    against py_ecc)."""
    for k in range(1, 1000):
        x = (k, 1)
        x2 = ((x[0] * x[0] - x[1] * x[1]) % P, 2 * x[0] * x[1] % P)
        x3 = ((x2[0] * x[0] - x2[1] * x[1]) % P, (x2[0] * x[1] + x2[1] * x[0]) % P)
        y = fp2_sqrt(((x3[0] + B2[0]) % P, (x3[1] + B2[1]) % P))
        if y is None:
            continue
        oracle = (ob.FQ2(list(x)), ob.FQ2(list(y)), ob.FQ2.one())
        assert ob.is_on_curve(oracle, ob.b2)
        if not ob.is_inf(ob.multiply(oracle, R)):
            return G2(x, y)
    raise AssertionError("no point found")


def test_point_not_in_the_subgroup() -> None:
    bad = g2_to_bytes(twist_point_outside_subgroup())
    behaviour = Behaviour(bundle=lambda b, f, k: dataclasses.replace(b, commitment_g2=bad))
    run = run_ceremony(behaviours={2: behaviour})
    assert_consistent(run, qual={1, 3, 4})
    assert excluded(run) == {2: "invalid-point"}


def test_wrong_ceremony_id() -> None:
    # The honest coordinator refuses a bundle signed for another ceremony (it may be
    # a replay, so it is no evidence against the dealer in *this* ceremony): dealer 2
    # is dropped and named, and the others go on without it.
    other = hashlib.sha256(b"another ceremony").digest()
    behaviour = Behaviour(bundle=lambda b, f, k: dataclasses.replace(b, ceremony=other))
    run = run_ceremony(behaviours={2: behaviour}, min_holders=3)
    assert [e.node for e in run.rejected] == [2]
    assert "another ceremony" in str(run.rejected[0])
    assert_consistent(run, qual={1, 3, 4}, holders={1, 3, 4})
    assert run.driver.missed == {2: DriverPhase.DEAL}


def test_reused_ceremony_id() -> None:
    # Same seeds as an earlier ceremony, so the nodes' nonces repeat and the ceremony
    # id with them; node 3 remembers it and refuses, the others (which do not) go on
    # without its dealing.
    used = predict_ceremony_id(min_holders=3)
    run = run_ceremony(used_ceremony_ids={3: frozenset({used})}, min_holders=3)
    assert run.driver.ceremony == used
    aborted = run.nodes[3].aborted
    assert aborted is not None and "already used" in aborted.reason
    assert not run.nodes[3].sent[1:]  # it never dealt
    assert_consistent(run, qual={1, 2, 4}, holders={1, 2, 4})


def test_duplicate_dealer() -> None:
    # Every bundle reaches the coordinator twice and every node twice more: identical
    # copies are one bundle, not an equivocation.
    def twice(sender: int, m: NodeMessage) -> list[NodeMessage]:
        return [m, m] if isinstance(m, DealBundle) else [m]

    def doubled(to: int, m: Relayed) -> Relayed | None:
        return BundleSet(bundles=m.bundles + m.bundles) if isinstance(m, BundleSet) else m

    run = run_ceremony(to_relay=twice, relay=doubled)
    assert_consistent(run, qual=ALL, holders=ALL)
    manifest, _ = make_manifest(4)
    with pytest.raises(DkgConfigError, match="participants"):
        DriverConfig(
            manifest=manifest, key_id="k", threshold=2, participants=(1, 2, 2, 3)
        ).proposal()
    wire = Proposal(
        cluster=manifest.cluster_id, key_id="k", epoch=0, threshold=2, min_holders=2,
        participants=(1, 1, 2),
    ).to_wire()  # fmt: skip
    with pytest.raises(DecodeError, match="participants"):
        Proposal.from_wire(wire, "proposal")


def test_false_complaint(complaint_run: Run) -> None:
    run = complaint_run
    justifications = [m for m in run.nodes[1].sent if isinstance(m, Justification)]
    assert [[j for j, _ in m.shares] for m in justifications] == [[3]]
    assert_consistent(run, qual=ALL, holders=ALL)


def test_bad_justification() -> None:
    def wrong_reveal(honest: Justification) -> Justification:
        (j, raw), *rest = honest.shares
        bad = scalar_to_bytes((int.from_bytes(raw, "big") + 1) % R)
        return Justification(
            ceremony=honest.ceremony, sender=honest.sender, shares=((j, bad), *rest)
        )

    behaviour = Behaviour(
        bundle=lambda b, f, k: reencrypt(b, f, k, {3}), justification=wrong_reveal
    )
    run = run_ceremony(behaviours={2: behaviour})
    assert any(isinstance(m, Justification) for m in run.nodes[2].sent)
    assert_consistent(run, qual={1, 3, 4})
    assert excluded(run) == {2: "justification"}


class Equivocator:
    """Dealer ``dealer`` signs a second, different bundle for the same ceremony and
    hands both to the coordinator."""

    def __init__(self, dealer: int) -> None:
        self.dealer = dealer
        self.keys: dict[int, bytes] = {}

    def behaviour(self) -> Behaviour:
        def remember(b: DealBundle, f: Polynomial, keys: Mapping[int, bytes]) -> DealBundle:
            self.keys = dict(keys)
            return b

        return Behaviour(bundle=remember)

    def to_relay(self, sender: int, m: NodeMessage) -> list[NodeMessage]:
        if sender != self.dealer or not isinstance(m, DealBundle):
            return [m]
        rng = seeded_rng(b"equivocation")
        other = deal(
            random_polynomial(len(m.commitments) - 1, rng),
            ceremony=m.ceremony,
            dealer=self.dealer,
            recipient_keys=self.keys,
            rng=rng,
        )
        return [m, other.signed_by(node_key(b"cluster", self.dealer))]


def test_dealer_equivocation() -> None:
    # The honest coordinator relays both signed bundles to everyone: together they
    # prove the equivocation, and every node excludes dealer 2.
    cheat = Equivocator(2)
    run = run_ceremony(behaviours={2: cheat.behaviour()}, to_relay=cheat.to_relay)
    assert_consistent(run, qual={1, 3, 4})
    assert excluded(run) == {2: "equivocation"}


def test_relay_equivocation() -> None:
    # Dealer 2 signs two bundles; a colluding coordinator shows nodes 1 and 3 only the
    # first and node 4 only the second. Their echoes differ: every honest node aborts
    # blaming the relay, before any complaint, so nothing is revealed.
    cheat = Equivocator(2)

    def split_view(to: int, m: Relayed) -> Relayed | None:
        if not isinstance(m, BundleSet):
            return m
        first, second = sorted(b.digest() for b in m.bundles if b.sender == 2)
        hidden = {1: second, 3: second, 4: first}.get(to)
        return BundleSet(bundles=tuple(b for b in m.bundles if b.digest() != hidden))

    run = run_ceremony(behaviours={2: cheat.behaviour()}, to_relay=cheat.to_relay, relay=split_view)
    assert_relay_abort(run)
    for j in (1, 3, 4):
        aborted = run.nodes[j].aborted
        assert aborted is not None and "different set of bundles" in aborted.reason


def test_relay_dropping_a_bundle() -> None:
    # The coordinator hides dealer 3's bundle from node 1 only: node 1's echo
    # differs from the others', and everyone aborts as a relay fault.
    def drop_for_node_1(to: int, m: Relayed) -> Relayed | None:
        if isinstance(m, BundleSet) and to == 1:
            return BundleSet(bundles=tuple(b for b in m.bundles if b.sender != 3))
        return m

    run = run_ceremony(relay=drop_for_node_1)
    assert_relay_abort(run)


def test_relay_dropping_a_bundle_for_everyone() -> None:
    # Hiding dealer 3's bundle from every node looks like an absent dealer to the
    # others, but not to dealer 3: it refuses the set, is not a holder, and with the
    # default min_holders = n the ceremony aborts. So the coordinator cannot choose
    # QUAL by dropping bundles.
    def drop_3(to: int, m: Relayed) -> Relayed | None:
        if isinstance(m, BundleSet):
            return BundleSet(bundles=tuple(b for b in m.bundles if b.sender != 3))
        return m

    run = run_ceremony(relay=drop_3)
    assert "bundle is missing" in str(run.nodes[3].relay_faults[0])
    assert run.driver_aborted is not None and run.driver_aborted.missed == {3: DriverPhase.ECHO}
    assert_relay_abort(run)

"""Complaints, justifications and the result of a ceremony (DESIGN.md §DKG steps 3–4).

These are pure functions of public, signed data, shared by the participant, the
coordinator's driver and the offline verifier, so all three reach the same verdict:

* ``tally_complaints``: for each dealer that has a signed bundle in the set, the set
  of nodes that complained (whether a justification round happens depends on this
  alone, so the coordinator can decide it without redoing the pairing checks).
  Fewer than t complaints: the dealer must justify. t or more: it is disqualified and
  reveals nothing (t revealed points of a degree t-1 polynomial would give f_i(0);
  and since at most t-1 nodes are corrupt, t complaints include an honest one).
* ``judge_justifications``: a candidate dealer that had to justify keeps its place in QUAL only
  if exactly one signed justification from it reveals, for exactly the complainers,
  shares that match its commitments. The revealed shares are public from then on;
  each complainer uses the revealed value as its share from that dealer.
* ``compute_outcome``: QUAL = candidates (valid bundles) minus the disqualified;
  PK = Σ C_i0 in G1 and Σ D_i in G2 over QUAL; public shares pk_j = Σ_k j^k·(Σ_i C_ik)
  for every participant j. ``None`` when |QUAL| < t.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from protocol.bn254 import G1, G1_INFINITY, G2, G2_INFINITY
from protocol.dkg.dealing import (
    BundleVerdict,
    Exclusion,
    VerifiedBundle,
    check_revealed_share,
    public_share_horner,
)
from protocol.dkg.messages import Complaints, Justification, Outcome
from protocol.encoding import g1_to_bytes, g2_to_bytes


@dataclass(frozen=True, slots=True)
class ComplaintTally:
    """Complainers per dealer (dealers without complaints are absent)."""

    against: Mapping[int, frozenset[int]]
    threshold: int

    @property
    def must_justify(self) -> frozenset[int]:
        return frozenset(d for d, js in self.against.items() if len(js) < self.threshold)

    @property
    def disqualified(self) -> frozenset[int]:
        return frozenset(d for d, js in self.against.items() if len(js) >= self.threshold)


@dataclass(frozen=True, slots=True)
class Judgement:
    """Dealers that failed to justify, and the shares the others revealed."""

    failed: frozenset[int]
    revealed: Mapping[int, Mapping[int, int]]  # dealer -> recipient -> share (public)

    def __repr__(self) -> str:
        return f"Judgement(failed={sorted(self.failed)}, revealed_by={sorted(self.revealed)})"


def tally_complaints(
    complaints: Iterable[Complaints], dealers: Iterable[int], threshold: int
) -> ComplaintTally:
    """Count complaints against ``dealers`` (those with a bundle in the set)."""
    eligible = set(dealers)
    against: dict[int, set[int]] = {}
    for message in complaints:
        for dealer in message.against:
            if dealer in eligible:
                against.setdefault(dealer, set()).add(message.sender)
    return ComplaintTally(
        against={d: frozenset(js) for d, js in sorted(against.items())}, threshold=threshold
    )


def judge_justifications(
    justifications: Iterable[Justification],
    tally: ComplaintTally,
    candidates: Mapping[int, VerifiedBundle],
) -> Judgement:
    """Check every required justification (see the module header)."""
    by_dealer: dict[int, dict[bytes, Justification]] = {}
    for j in justifications:
        by_dealer.setdefault(j.sender, {})[j.digest()] = j
    failed: set[int] = set()
    revealed: dict[int, dict[int, int]] = {}
    for dealer in sorted(tally.must_justify & set(candidates)):
        answers = list(by_dealer.get(dealer, {}).values())
        if len(answers) != 1:  # missing, or two different signed answers
            failed.add(dealer)
            continue
        (answer,) = answers
        if {j for j, _ in answer.shares} != set(tally.against[dealer]):
            failed.add(dealer)
            continue
        shares: dict[int, int] = {}
        for recipient, raw in answer.shares:
            value = check_revealed_share(candidates[dealer], recipient, raw)
            if value is None:
                failed.add(dealer)
                break
            shares[recipient] = value
        else:
            revealed[dealer] = shares
    return Judgement(failed=frozenset(failed), revealed=revealed)


def qualified(
    verdict: BundleVerdict, tally: ComplaintTally, judgement: Judgement
) -> tuple[int, ...]:
    """QUAL: candidates that were neither disqualified nor failed to justify."""
    out = set(verdict.candidates) - tally.disqualified - judgement.failed
    return tuple(sorted(out))


def exclusions(
    verdict: BundleVerdict, tally: ComplaintTally, judgement: Judgement
) -> dict[int, Exclusion]:
    """Every participant outside QUAL with its reason."""
    out = dict(verdict.excluded)
    for d in tally.disqualified & set(verdict.candidates):
        out[d] = Exclusion.COMPLAINTS
    for d in judgement.failed:
        out[d] = Exclusion.JUSTIFICATION
    return dict(sorted(out.items()))


def group_key(
    qual: Sequence[int], candidates: Mapping[int, VerifiedBundle]
) -> tuple[G1, G2, tuple[G1, ...]]:
    """(PK in G1, PK in G2, combined commitments Σ_i C_ik) over QUAL."""
    pk_g1, pk_g2 = G1_INFINITY, G2_INFINITY
    combined: list[G1] = []
    for dealer in qual:
        vb = candidates[dealer]
        pk_g1 = pk_g1 + vb.commitments[0]
        pk_g2 = pk_g2 + vb.commitment_g2
        if not combined:
            combined = list(vb.commitments)
        else:
            combined = [a + b for a, b in zip(combined, vb.commitments, strict=True)]
    return pk_g1, pk_g2, tuple(combined)


def compute_outcome(
    participants: Sequence[int],
    verdict: BundleVerdict,
    tally: ComplaintTally,
    judgement: Judgement,
) -> Outcome | None:
    """The ceremony's public result, or ``None`` if fewer than t dealers qualify (or,
    with probability 1/r, the key is zero)."""
    qual = qualified(verdict, tally, judgement)
    if len(qual) < tally.threshold:
        return None
    pk_g1, pk_g2, combined = group_key(qual, verdict.candidates)
    if pk_g1.is_infinity():  # Σ a_i0 = 0: chance 1/r, since each dealer proved its a_i0
        return None
    return Outcome(
        qual=qual,
        excluded=tuple((d, r.value) for d, r in exclusions(verdict, tally, judgement).items()),
        pubkey_g1=g1_to_bytes(pk_g1),
        pubkey_g2=g2_to_bytes(pk_g2),
        public_shares=tuple(
            (j, g1_to_bytes(public_share_horner(combined, j))) for j in participants
        ),
    )

"""Aggregating a batch of partial signatures under one key (sans-IO).

A ``sign-batch`` request fans out once; each node answers every hash (a partial with
its DLEQ proof, or a refusal for that item). Checking each combined signature on its
own would cost one pairing check per item, so the batch is verified together
(DESIGN.md "Cryptography": Σ ρ_i σ_i against Σ ρ_i H(m_i), two pairings per batch,
``protocol.bls.batch_verify``):

1. ``add(index, items)`` takes one node's answers, in arrival order;
2. every item that has t partials and is not settled yet is combined from the first
   t that arrived (one MSM, Lagrange coefficients cached per signer set) and the
   combined signatures of that round are batch-verified together;
3. an item whose combined signature fails goes to the slow path: a
   ``protocol.aggregation.Aggregation`` of its own, fed every partial of that item so
   far and every later one; it verifies aggregates one by one, checks DLEQ proofs
   only there, blames the bad nodes and recombines without them.

Nothing unverified is ever returned: ``sigmas[i]`` is set only after item i passed
the batch check (a wrong item escapes with probability <= 2^-128) or its own gamma
check.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.aggregation import Aggregation, AggregationError, Done, GroupKey, PartialSignature
from protocol.bls import batch_verify
from protocol.bn254 import G1, g1_msm
from protocol.rng import Rng, os_rng
from protocol.threshold import lagrange_at_zero


class BatchAggregation:
    """One batch request on the coordinator; see the module header."""

    def __init__(self, key: GroupKey, msg_hashes: Sequence[bytes], *, rng: Rng = os_rng) -> None:
        self.key = key
        self.msg_hashes = list(msg_hashes)
        n = len(self.msg_hashes)
        self._rng = rng
        self._partials: list[dict[int, PartialSignature]] = [{} for _ in range(n)]
        self._slow: dict[int, Aggregation] = {}
        self._slow_have: dict[int, int] = {}
        self._answered: list[int] = []
        self._blamed: list[int] = []
        self._lambdas: dict[tuple[int, ...], list[int]] = {}
        self.sigmas: list[G1 | None] = [None] * n
        self.signers: list[tuple[int, ...]] = [()] * n

    @property
    def answered(self) -> tuple[int, ...]:
        """Node indices whose answers were added, in arrival order."""
        return tuple(self._answered)

    @property
    def blamed(self) -> tuple[int, ...]:
        """Node indices with at least one partial that failed its DLEQ proof."""
        return tuple(self._blamed)

    def unsettled(self) -> list[int]:
        """Items without a verified signature yet."""
        return [i for i, s in enumerate(self.sigmas) if s is None]

    def have(self, item: int) -> int:
        """Usable partials of ``item`` so far (blamed ones excluded)."""
        if item in self._slow:
            return self._slow_have[item]
        return len(self._partials[item])

    def add(self, index: int, items: Sequence[PartialSignature | None]) -> None:
        """One node's answers (``None`` where it refused the item), in request order.

        Raises ``AggregationError`` for a node that is not a holder, answers twice,
        answers another number of items or sends another node's partial (nothing is
        changed then), or when valid partials do not combine (inconsistent key)."""
        if index not in self.key.public_shares:
            raise AggregationError(f"answers from index {index}, not a holder")
        if index in self._answered:
            raise AggregationError(f"second answer from index {index}")
        if len(items) != len(self.msg_hashes):
            raise AggregationError(
                f"index {index} answered {len(items)} items, the batch has {len(self.msg_hashes)}"
            )
        if any(p is not None and p.index != index for p in items):
            raise AggregationError(f"index {index} sent a partial labelled with another index")
        self._answered.append(index)
        for i, p in enumerate(items):
            if p is None or self.sigmas[i] is not None:
                continue
            if i in self._slow:
                self._feed_slow(i, p)
            else:
                self._partials[i][index] = p
        t = self.key.threshold
        ready = [i for i in self.unsettled() if i not in self._slow and len(self._partials[i]) >= t]
        if ready:
            self._optimistic(ready)

    def _coefficients(self, subset: tuple[int, ...]) -> list[int]:
        lam = self._lambdas.get(subset)
        if lam is None:
            by_index = lagrange_at_zero(subset)
            lam = self._lambdas[subset] = [by_index[j] for j in subset]
        return lam

    def _optimistic(self, ready: list[int]) -> None:
        t = self.key.threshold
        combined: list[tuple[int, tuple[int, ...], G1]] = []
        for i in ready:
            chosen = list(self._partials[i].values())[:t]
            subset = tuple(p.index for p in chosen)
            sigma = g1_msm([p.sigma for p in chosen], self._coefficients(subset))
            combined.append((i, subset, sigma))
        bad = set(
            batch_verify(
                self.key.pk_g2_prepared,
                [(self.msg_hashes[i], sigma) for i, _, sigma in combined],
                self._rng,
            )
        )
        for pos, (i, subset, sigma) in enumerate(combined):
            if pos not in bad:
                self.sigmas[i] = sigma
                self.signers[i] = subset
                continue
            self._slow[i] = Aggregation(self.key, self.msg_hashes[i])
            self._slow_have[i] = 0
            for p in list(self._partials[i].values()):
                if self.sigmas[i] is not None:
                    break
                self._feed_slow(i, p)

    def _feed_slow(self, item: int, p: PartialSignature) -> None:
        agg = self._slow[item]
        result = agg.add(p)
        for index in agg.blamed:
            if index not in self._blamed:
                self._blamed.append(index)
        if isinstance(result, Done):
            self.sigmas[item] = result.sigma
            self.signers[item] = result.signers
        else:
            self._slow_have[item] = result.have

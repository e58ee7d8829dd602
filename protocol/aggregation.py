"""Threshold signing, sans-IO: partial signatures on the node side, optimistic
aggregation with DLEQ blame on the coordinator side.

Node j holds s_j with public share pk_j = s_j·G1 and answers a request for msgHash m
with σ_j = s_j·H(m) and a Chaum–Pedersen proof that log_G1(pk_j) = log_H(m)(σ_j),
bound to (key id, epoch, node index, m).

The coordinator feeds partials in arrival order to an ``Aggregation``. As soon as t
partials are in, it combines them (σ = Σ λ_j σ_j, an MSM) and verifies σ once with
EigenLayer's gamma check against the group key (G2 lines precomputed). Only when that
fails does it check the DLEQ proofs of the partials it used, blame the bad nodes,
drop them and try again with the partials that remain. No invalid signature ever
comes out: ``Done`` is returned only after the gamma check passed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from protocol.bn254 import G1, G2, G2_GENERATOR, G2Prepared, pairing_check, prepare_g2
from protocol.canonical import encode_canonical
from protocol.eigenlayer import hash_to_g1, verify_signature
from protocol.errors import Fault, TkmsError
from protocol.proofs import DleqProof, prove_dleq, verify_dleq
from protocol.rng import Rng, os_rng
from protocol.threshold import combine_g1

DLEQ_TAG = b"tkms/v1/partial-signature"


class AggregationError(TkmsError):
    """A partial that cannot be used at all (unknown node, duplicate)."""

    fault = Fault.PEER


def dleq_context(key_id: str, epoch: int, index: int, msg_hash: bytes) -> bytes:
    """What every partial-signature proof is bound to."""
    return DLEQ_TAG + encode_canonical(
        {"key": key_id, "epoch": epoch, "index": index, "msg": msg_hash}
    )


@dataclass(frozen=True, slots=True)
class PartialSignature:
    index: int
    sigma: G1
    proof: DleqProof


def sign_partial(
    share: int,
    *,
    key_id: str,
    epoch: int,
    index: int,
    msg_hash: bytes,
    point: G1 | None = None,
    rng: Rng = os_rng,
) -> PartialSignature:
    """Node side: σ_j = s_j·H(m) and its proof. For an already hashed point (cerberus
    SignG1) pass ``point`` and its 64-byte raw encoding as ``msg_hash``."""
    h = point if point is not None else hash_to_g1(msg_hash)
    sigma = h * share
    proof = prove_dleq(
        share, h, context=dleq_context(key_id, epoch, index, msg_hash), rng=rng, y=sigma
    )
    return PartialSignature(index=index, sigma=sigma, proof=proof)


@dataclass(frozen=True, slots=True)
class GroupKey:
    """The public data the coordinator needs to aggregate for one key."""

    key_id: str
    epoch: int
    threshold: int
    pk_g1: G1
    pk_g2: G2
    public_shares: Mapping[int, G1]  # node index -> s_j·G1
    pk_g2_prepared: G2Prepared = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pk_g2_prepared", prepare_g2(self.pk_g2))


class Outcome(enum.Enum):
    NEED_MORE = "need-more"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Done:
    sigma: G1
    signers: tuple[int, ...]  # node indices whose partials were combined
    blamed: tuple[int, ...]  # node indices whose partials failed their proof
    outcome: Outcome = Outcome.DONE


@dataclass(frozen=True, slots=True)
class NeedMore:
    have: int
    blamed: tuple[int, ...]
    outcome: Outcome = Outcome.NEED_MORE


class Aggregation:
    """One signing request on the coordinator: feed partials, get ``Done`` or ``NeedMore``.

    ``msg_hash`` is the 32-byte digest; for an already hashed point (cerberus SignG1)
    pass ``point`` as well and its 64-byte raw encoding as ``msg_hash`` (what the
    proofs are bound to): the check then is e(σ, G2) = e(point, PK).
    """

    def __init__(self, key: GroupKey, msg_hash: bytes, *, point: G1 | None = None) -> None:
        self.key = key
        self.msg_hash = msg_hash
        self._point = point
        self._h = point if point is not None else hash_to_g1(msg_hash)
        self._pending: dict[int, PartialSignature] = {}  # arrival order (dicts keep it)
        self._verified: set[int] = set()
        self._blamed: list[int] = []
        self._done: Done | None = None

    @property
    def blamed(self) -> tuple[int, ...]:
        return tuple(self._blamed)

    def add(self, partial: PartialSignature) -> Done | NeedMore:
        if self._done is not None:
            return self._done
        if partial.index not in self.key.public_shares:
            raise AggregationError(f"partial from index {partial.index}, not a holder")
        if partial.index in self._pending or partial.index in self._blamed:
            raise AggregationError(f"second partial from index {partial.index}")
        self._pending[partial.index] = partial
        return self._attempt()

    def _check_aggregate(self, sigma: G1) -> bool:
        if self._point is None:
            return verify_signature(
                self.msg_hash,
                self.key.pk_g1,
                self.key.pk_g2,
                sigma,
                apk_g2_prepared=self.key.pk_g2_prepared,
            )
        return _verify_point_signature(self._point, sigma, self.key)

    def _attempt(self) -> Done | NeedMore:
        t = self.key.threshold
        while len(self._pending) >= t:
            chosen = list(self._pending.values())[:t]
            sigma = combine_g1({p.index: p.sigma for p in chosen})
            if self._check_aggregate(sigma):
                self._done = Done(
                    sigma=sigma,
                    signers=tuple(p.index for p in chosen),
                    blamed=tuple(self._blamed),
                )
                return self._done
            bad = [p.index for p in chosen if not self._proof_ok(p)]
            if not bad:
                # Every proof holds yet the aggregate fails: the public shares and the
                # group key disagree. Nothing can be signed for this key.
                raise AggregationError(
                    f"key {self.key.key_id!r}: valid partials do not combine to a valid "
                    "signature (public shares inconsistent with the group key)"
                )
            for index in bad:
                del self._pending[index]
                self._blamed.append(index)
        return NeedMore(have=len(self._pending), blamed=tuple(self._blamed))

    def _proof_ok(self, p: PartialSignature) -> bool:
        if p.index in self._verified:
            return True
        ok = verify_dleq(
            self.key.public_shares[p.index],
            self._h,
            p.sigma,
            p.proof,
            context=dleq_context(self.key.key_id, self.key.epoch, p.index, self.msg_hash),
        )
        if ok:
            self._verified.add(p.index)
        return ok


def _verify_point_signature(point: G1, sigma: G1, key: GroupKey) -> bool:
    """e(σ, −G2)·e(point, PK) = 1, for SignG1 (the point is the message)."""
    if sigma.is_infinity() or point.is_infinity():
        return False
    return pairing_check([(sigma, -G2_GENERATOR), (point, key.pk_g2_prepared)])

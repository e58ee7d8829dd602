"""Checking a threshold key's public data without its transcript (sans-IO).

A coordinator that restarts rebuilds its key registry from what the nodes report
(``protocol.node_api.PublicKeyMetadata``). Before it aggregates anything under a key
it checks what needs no transcript:

* the public shares lie on one polynomial of degree t-1 through the group key:
  the first t-1 shares together with any other one interpolate (Lagrange at 0, in
  G1) to pk_g1, so every t-subset of holders reconstructs the same key;
* pk_g1 and pk_g2 carry the same secret: e(pk_g1, G2) = e(G1, pk_g2);
* the points are valid (done by ``PublicKeyMetadata.points()``).

These catch a node that reports a wrong public share or a mismatched G2 key, but
not a key that was never generated honestly: that is what transcript re-verification
(the DKG's ``tkms dkg verify``) adds on top.
"""

from __future__ import annotations

from collections.abc import Mapping

from protocol.aggregation import GroupKey
from protocol.bn254 import G1, G1_GENERATOR, G2, G2_GENERATOR, pairing_check
from protocol.errors import VerificationError
from protocol.node_api import PublicKeyMetadata
from protocol.threshold import combine_g1


class GroupKeyMismatch(VerificationError):
    """A key's public shares, G1 key and G2 key do not fit together."""


def check_group_key(threshold: int, pk_g1: G1, pk_g2: G2, shares: Mapping[int, G1]) -> None:
    """Raise ``GroupKeyMismatch`` unless every t of ``shares`` interpolate to ``pk_g1``
    and ``e(pk_g1, G2) = e(G1, pk_g2)``."""
    if threshold < 1 or len(shares) < threshold:
        raise GroupKeyMismatch(f"{len(shares)} public shares cannot reach threshold {threshold}")
    indices = sorted(shares)
    base = indices[: threshold - 1]
    for extra in indices[threshold - 1 :]:
        subset = {i: shares[i] for i in (*base, extra)}
        if combine_g1(subset) != pk_g1:
            raise GroupKeyMismatch(
                f"public shares {sorted(subset)} do not interpolate to the group key"
            )
    if not pairing_check([(pk_g1, G2_GENERATOR), (-G1_GENERATOR, pk_g2)]):
        raise GroupKeyMismatch("the G1 and G2 group keys hold different secrets")


def group_key_from_metadata(meta: PublicKeyMetadata) -> GroupKey:
    """The aggregation key of ``meta``, after ``check_group_key`` (points validated)."""
    pk_g1, pk_g2, shares = meta.points()
    check_group_key(meta.t, pk_g1, pk_g2, shares)
    return GroupKey(
        key_id=meta.key_id,
        epoch=meta.epoch,
        threshold=meta.t,
        pk_g1=pk_g1,
        pk_g2=pk_g2,
        public_shares=shares,
    )

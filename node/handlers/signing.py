"""Handlers for ``sign.partial``, ``sign.batch`` and ``keys.destroy``: the node's side
of threshold signing, under the node's own policy (``node.policy``).

Only pinned coordinators reach these handlers (the transport refuses everyone else);
the coordinator forwards the client id it authenticated. For every request the node
decides on its own, in this order, and refuses with a ``protocol.sign_api.Refusal``:

1. the key exists here, is ACTIVE and has the requested epoch;
2. the client may use the key (policy ``clients``);
3. the usage limits allow it (``UsageLedger``: per calendar minute and in total,
   persisted before a signature of a new block is produced; a batch gets the first
   hashes that fit, the rest are refused item by item);
4. then σ_j = s_j·H(m) with a DLEQ proof whose hedged nonce comes from the node's
   entropy service (``protocol.aggregation.sign_partial``).

Every decision — client, key id, message hash, outcome (``signed`` / ``refused`` /
``failed``) and the reason — is appended to the node's audit log BEFORE the answer
is sent; a batch writes one record per hash with one fsync. If the audit log cannot
be written the node answers ``AUDIT_UNAVAILABLE`` and returns no partial. A refusal
is never recorded as a signature. For a point (cerberus SignG1) the record's
``msg_hash`` is empty and ``extra.point`` holds the point's hex.

``keys.destroy`` (allowed unless the policy says ``allow_destroy = false``) records
the decision, then crypto-shreds the share (``ShareStore.destroy``: the token key is
destroyed, so the sealed file and every copy of it are noise) and records the result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import trio

from node.audit_log import AuditLogUnavailable
from node.handlers import HandlerRegistry, NodeContext
from node.policy import (
    USAGE_DIR,
    KeyRule,
    NodePolicy,
    UsageLedger,
    UsageStateError,
    load_policy,
    policy_path,
)
from node.store import KeyMetadata, KeyStatus
from node.store import UnknownKey as StoreUnknownKey
from protocol.aggregation import PartialSignature, sign_partial
from protocol.bn254 import G1
from protocol.encoding import g1_from_bytes
from protocol.errors import DecodeError, TkmsError
from protocol.rng import Rng
from protocol.rpc import RpcError
from protocol.sign_api import (
    KEYS_DESTROY,
    SIGN_BATCH,
    SIGN_PARTIAL,
    Refusal,
    SignInputError,
    partial_to_wire,
    signing_input,
)

log = logging.getLogger("tkms.node.signing")

DRAW_BYTES = 32  # entropy bytes per proof nonce


class Refused(RpcError):
    """A request the node refuses for a ``Refusal`` reason (already audited)."""

    def __init__(self, refusal: Refusal, message: str) -> None:
        super().__init__(int(refusal), message)
        self.refusal = refusal


def _hex_point(point: bytes) -> dict[str, Any]:
    return {"point": point.hex()}


class NodeSigner:
    """The signing handlers of one node process (see the module header)."""

    def __init__(self, ctx: NodeContext, policy: NodePolicy, ledger: UsageLedger) -> None:
        self.ctx = ctx
        self.policy = policy
        self.ledger = ledger
        self.index = ctx.entry.index
        self._cpu = trio.CapacityLimiter(1)  # one worker thread computes partials at a time

    # -- decisions ---------------------------------------------------------------------

    async def _audit(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Record decisions durably; ``Refused(AUDIT_UNAVAILABLE)`` if that fails."""
        try:
            await self.ctx.audit.append_many(entries)
        except AuditLogUnavailable as exc:
            log.error("audit log unavailable, refusing: %s", exc)
            raise Refused(
                Refusal.AUDIT_UNAVAILABLE, "the node cannot record the decision"
            ) from None

    async def _refuse(
        self,
        refusal: Refusal,
        message: str,
        records: Sequence[Mapping[str, Any]],
    ) -> Refused:
        """Record every refused item, then return the error to raise."""
        extra = {"reason": refusal.label}
        await self._audit(
            [{**r, "outcome": "refused", "extra": {**r["extra"], **extra}} for r in records]
        )
        log.info("refused %s: %s", refusal.label, message)
        return Refused(refusal, message)

    async def _admit(
        self, key_id: str, epoch: int, client: str, records: Sequence[Mapping[str, Any]]
    ) -> tuple[KeyMetadata, KeyRule]:
        """Steps 1-2 of the module header; raises an audited ``Refused``."""
        try:
            meta = await self.ctx.store.get_metadata(key_id)
        except StoreUnknownKey:
            raise await self._refuse(
                Refusal.UNKNOWN_KEY, f"no key {key_id!r} here", records
            ) from None
        if meta.status is not KeyStatus.ACTIVE:
            raise await self._refuse(
                Refusal.KEY_NOT_ACTIVE, f"key {key_id!r} is {meta.status.value}", records
            )
        if meta.epoch != epoch:
            raise await self._refuse(
                Refusal.EPOCH_MISMATCH,
                f"key {key_id!r} is at epoch {meta.epoch}, not {epoch}",
                records,
            )
        rule = self.policy.rule(key_id)
        if not rule.allows(client):
            raise await self._refuse(
                Refusal.CLIENT_NOT_ALLOWED,
                f"client {client!r} may not use key {key_id!r} on this node",
                records,
            )
        return meta, rule

    async def _consume(
        self, key_id: str, rule: KeyRule, records: Sequence[Mapping[str, Any]]
    ) -> int:
        """Step 3: how many of ``records`` the limits allow (0 raises, audited)."""
        try:
            granted = await self.ledger.consume(key_id, rule, len(records))
        except UsageStateError as exc:
            log.error("%s", exc)
            raise await self._refuse(
                Refusal.USAGE_UNAVAILABLE, f"usage counters of {key_id!r} unavailable", records
            ) from None
        if granted == 0:
            raise await self._refuse(
                Refusal.USAGE_LIMIT, f"usage limit of key {key_id!r} reached on this node", records
            )
        return granted

    async def _share(self, key_id: str, epoch: int, records: Sequence[Mapping[str, Any]]) -> int:
        # ``_admit`` has just read the metadata: ACTIVE at this epoch. The store's cache
        # holds a share only while its key is active (any status change drops it), so
        # a hit needs no second metadata read; a miss unseals through ``get_share``.
        cached = self.ctx.store.cache.get(key_id, epoch)
        if cached is not None:
            return cached
        try:
            return await self.ctx.store.get_share(key_id)
        except TkmsError as exc:
            log.error("cannot unseal the share of %s: %s", key_id, exc)
            await self._audit(
                [
                    {**r, "outcome": "failed", "extra": {**r["extra"], "reason": "unseal"}}
                    for r in records
                ]
            )
            raise Refused(Refusal.KEY_NOT_ACTIVE, f"share of {key_id!r} unavailable") from None

    async def _ensure_entropy(self, draws: int) -> None:
        if self.ctx.entropy.pool.pooled < (draws + 1) * DRAW_BYTES:
            await self.ctx.entropy.reserve(draws + 1)

    # -- sign.partial ------------------------------------------------------------------

    async def sign_partial(self, params: dict[str, Any]) -> dict[str, Any]:
        key_id, epoch, client = params["key_id"], params["epoch"], params["client"]
        record: dict[str, Any] = {
            "event": "sign.partial",
            "client": client,
            "key_id": key_id,
            "msg_hash": params.get("msg_hash"),
            "extra": {"epoch": epoch, "index": self.index},
        }
        if "point" in params:
            record["extra"] = {**record["extra"], **_hex_point(params["point"])}
        point: G1 | None = None
        try:
            target, is_point = signing_input(params)
            if is_point:
                point = g1_from_bytes(target, field="point")
        except (SignInputError, DecodeError) as exc:
            raise await self._refuse(Refusal.BAD_INPUT, str(exc), [record]) from None
        _meta, rule = await self._admit(key_id, epoch, client, [record])
        await self._consume(key_id, rule, [record])
        share = await self._share(key_id, epoch, [record])
        await self._ensure_entropy(1)
        # The decision is recorded (fsync in a worker thread) while the partial is
        # computed (in another): both finish before anything is returned.
        refused: list[Refused] = []

        async def record_decision() -> None:
            try:
                await self._audit([{**record, "outcome": "signed"}])
            except Refused as exc:
                refused.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(record_decision)
            partial = await trio.to_thread.run_sync(
                _sign_one, share, key_id, epoch, self.index, target, point, self.ctx.entropy,
                limiter=self._cpu,
            )  # fmt: skip
        if refused:
            raise refused[0]
        return partial_to_wire(partial)

    # -- sign.batch --------------------------------------------------------------------

    async def sign_batch(self, params: dict[str, Any]) -> dict[str, Any]:
        key_id, epoch, client = params["key_id"], params["epoch"], params["client"]
        hashes: list[bytes] = params["msg_hashes"]
        records = [
            {
                "event": "sign.batch",
                "client": client,
                "key_id": key_id,
                "msg_hash": h,
                "extra": {"epoch": epoch, "index": self.index, "item": i},
            }
            for i, h in enumerate(hashes)
        ]
        _meta, rule = await self._admit(key_id, epoch, client, records)
        granted = await self._consume(key_id, rule, records)
        share = await self._share(key_id, epoch, records[:granted])
        await self._ensure_entropy(granted)
        rng = self.ctx.entropy
        partials = await trio.to_thread.run_sync(
            _sign_all, share, key_id, epoch, self.index, hashes[:granted], rng, limiter=self._cpu
        )
        refused = {"reason": Refusal.USAGE_LIMIT.label}
        await self._audit(
            [{**r, "outcome": "signed"} for r in records[:granted]]
            + [
                {**r, "outcome": "refused", "extra": {**r["extra"], **refused}}
                for r in records[granted:]
            ]
        )
        limit_error = {
            "code": int(Refusal.USAGE_LIMIT),
            "message": f"usage limit of key {key_id!r} reached on this node",
        }
        items: list[dict[str, Any]] = []
        for p in partials:
            wire = partial_to_wire(p)
            items.append({"sigma": wire["sigma"], "proof": wire["proof"]})
        items += [{"error": limit_error} for _ in hashes[granted:]]
        return {"index": self.index, "items": items}

    # -- keys.destroy ------------------------------------------------------------------

    async def destroy(self, params: dict[str, Any]) -> dict[str, Any]:
        key_id, epoch = params["key_id"], params["epoch"]
        record: dict[str, Any] = {
            "event": "key.destroy",
            "client": params.get("client"),
            "key_id": key_id,
            "extra": {"epoch": epoch},
        }
        if not self.policy.allow_destroy:
            raise await self._refuse(
                Refusal.NOT_ALLOWED, "this node's policy does not allow destroying keys", [record]
            )
        try:
            meta = await self.ctx.store.get_metadata(key_id)
        except StoreUnknownKey:
            raise await self._refuse(
                Refusal.UNKNOWN_KEY, f"no key {key_id!r} here", [record]
            ) from None
        if meta.epoch != epoch:
            raise await self._refuse(
                Refusal.EPOCH_MISMATCH,
                f"key {key_id!r} is at epoch {meta.epoch}, not {epoch}",
                [record],
            )
        if meta.status is KeyStatus.DESTROYED:
            return {"key_id": key_id, "status": KeyStatus.DESTROYED.value}
        await self._audit([{**record, "outcome": "accepted"}])
        try:
            await self.ctx.store.destroy(key_id)
        except TkmsError as exc:
            log.error("destroying %s failed: %s", key_id, exc)
            await self._audit([{**record, "outcome": "failed"}])
            raise
        await self._audit([{**record, "outcome": "destroyed"}])
        log.warning("key %s (epoch %d) destroyed: share and token key shredded", key_id, epoch)
        return {"key_id": key_id, "status": KeyStatus.DESTROYED.value}


def _sign_one(
    share: int, key_id: str, epoch: int, index: int, target: bytes, point: G1 | None, rng: Rng
) -> PartialSignature:
    """In a worker thread: one partial (``target`` is the hash, or the point's bytes)."""
    return sign_partial(
        share, key_id=key_id, epoch=epoch, index=index, msg_hash=target, point=point, rng=rng
    )


def _sign_all(
    share: int, key_id: str, epoch: int, index: int, hashes: Sequence[bytes], rng: Rng
) -> list[PartialSignature]:
    """In a worker thread: the partials of a batch, in order."""
    return [
        sign_partial(share, key_id=key_id, epoch=epoch, index=index, msg_hash=h, rng=rng)
        for h in hashes
    ]


def register(
    registry: HandlerRegistry, ctx: NodeContext, *, clock: Callable[[], float] = time.time
) -> None:
    policy = load_policy(policy_path(ctx.config.policy, ctx.config.data_dir))
    log.info("signing policy: %s", policy.source)
    signer = NodeSigner(ctx, policy, UsageLedger(ctx.config.data_dir / USAGE_DIR, clock=clock))
    registry.add(SIGN_PARTIAL, signer.sign_partial)
    registry.add(SIGN_BATCH, signer.sign_batch)
    registry.add(KEYS_DESTROY, signer.destroy)

"""Threshold signing on the coordinator: the real ``Backend.sign / sign_batch /
sign_point / destroy_key`` (DESIGN.md "Signing").

``SigningService`` extends ``CoordinatorService`` (the registry rebuilt from the nodes):

* Key check. Before a key enters the registry its public data must fit together
  (``protocol.group_key``: every t public shares interpolate to pk_g1 and
  e(pk_g1, G2) = e(G1, pk_g2)); then ``verify_transcript`` runs (by default the
  DKG's transcript re-verification, ``DkgRecovery.verify_key``). The aggregation
  key (``GroupKey``) is kept per (key id, epoch, transcript hash, public key).
* Sign. One ``sign.partial`` to every holder at once (``coordinator.fanout``; a node
  blamed within ``blame_cooldown_s`` is held in reserve: asked only once t is out of
  reach without it); partials go to an ``Aggregation`` in arrival order; as soon as
  it is ``Done`` the other calls are cancelled (slow nodes are never waited for). A
  node whose partial failed its DLEQ proof is named in the log, the audit record and
  the ``partial failures`` metric, and cooled down, while the request still succeeds.
  Fewer than t usable answers within ``sign_timeout_s`` (or as soon as t can no
  longer be reached) raise ``NotEnoughSigners`` naming the missing holders; when the
  nodes' own policy stopped it, ``Forbidden`` (client not allowed),
  ``UsageLimitExceeded`` or ``KeyNotActive``.
* Batch. One ``sign.batch`` fan-out; ``protocol.batch_aggregation`` combines each
  item from its first t partials, batch-verifies, and sends only failing items
  through a per-item ``Aggregation``. Results in request order, a per-item error
  where an item could not be signed. A batch asks t holders first (rotating, so the
  load spreads) and the others only when t is out of reach without them or after
  the hedge delay (``batch_hedge``): every holder computing every item of a large
  batch would spend (n-t)/n of the nodes' work on partials that are thrown away.
  The deadline grows with the batch size.
* Point (cerberus SignG1): ``sign.partial`` with the point; e(σ, G2) = e(P, PK).
* Destroy. ``keys.destroy`` to every holder at once; the registry is refreshed from
  the nodes. Anything short of every holder confirming raises ``NotEnoughSigners``
  naming the ones that did not (destroy is idempotent: run it again).

Every decision is appended to the coordinator's audit log (client, key id, message
hash, outcome, signers, blamed and missing nodes) before the answer goes out.

``open_signing_service(manifest, sessions, name=..., data_dir=...)`` is what the
coordinator process runs: the service with its audit log (``<data_dir>/audit.log``),
its checkpoint store (``<data_dir>/checkpoints.log``), the registry watcher and the
checkpoint relay (``coordinator.checkpoints``). ``verify_transcript`` None re-verifies
every key's DKG transcript (``coordinator.dkg_recovery``) after the public-data checks;
``accept_structurally_valid`` serves keys on those checks alone (``require_transcripts =
false`` in the coordinator config: keys dealt by the test dealer have no transcript).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import trio

from coordinator.audit_log import AuditLog, AuditLogConfig, open_audit_log, open_checkpoint_store
from coordinator.backend import (
    BackendError,
    Client,
    Forbidden,
    Health,
    KeyInfo,
    KeyNotActive,
    NotEnoughSigners,
    SignResult,
    UsageLimitExceeded,
)
from coordinator.checkpoints import CheckpointRelay
from coordinator.dkg import DkgConfig
from coordinator.fanout import Verdict, fan_out
from coordinator.service import (
    CoordinatorService,
    KeyVerifier,
    ServiceConfig,
)
from coordinator.sessions import SessionManager
from protocol import node_api
from protocol.aggregation import Aggregation, Done, GroupKey, PartialSignature
from protocol.batch_aggregation import BatchAggregation
from protocol.bn254 import G1
from protocol.encoding import g1_to_bytes, g2_to_bytes
from protocol.errors import DecodeError
from protocol.group_key import group_key_from_metadata
from protocol.manifest import Manifest
from protocol.rng import Rng, os_rng
from protocol.rpc import RpcError
from protocol.sign_api import (
    KEYS_DESTROY,
    SIGN_BATCH,
    SIGN_PARTIAL,
    Refusal,
    partial_from_wire,
    refusal_of,
)

log = logging.getLogger("tkms.coordinator.signer")

_POLICY_ERRORS = (Refusal.CLIENT_NOT_ALLOWED, Refusal.USAGE_LIMIT)
_STALE_KEY = (Refusal.UNKNOWN_KEY, Refusal.KEY_NOT_ACTIVE, Refusal.EPOCH_MISMATCH)


@dataclass(frozen=True, slots=True)
class SignerConfig:
    """Deadlines and the blame cooldown (seconds)."""

    sign_timeout_s: float = 2.0  # CoordinatorConfig.sign_timeout_s
    batch_item_s: float = 0.02  # a batch of k hashes gets sign_timeout_s + k * this
    batch_timeout_max_s: float = 30.0
    batch_extra: int = 0  # a batch asks t + this many holders first ...
    batch_hedge_s: float = 0.5  # ... and the others after this + k * batch_hedge_item_s
    batch_hedge_item_s: float = 0.004
    blame_cooldown_s: float = 60.0
    destroy_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if min(self.sign_timeout_s, self.batch_timeout_max_s, self.destroy_timeout_s) <= 0:
            raise ValueError("SignerConfig deadlines must be positive")
        if min(self.batch_item_s, self.blame_cooldown_s, self.batch_extra) < 0:
            raise ValueError("SignerConfig batch_item_s, blame_cooldown_s, batch_extra >= 0")
        if min(self.batch_hedge_s, self.batch_hedge_item_s) < 0:
            raise ValueError("SignerConfig batch hedge times must be >= 0")

    def batch_timeout(self, items: int) -> float:
        return min(self.batch_timeout_max_s, self.sign_timeout_s + items * self.batch_item_s)

    def batch_hedge(self, items: int) -> float:
        return self.batch_hedge_s + items * self.batch_hedge_item_s


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RpcError):
        refusal = refusal_of(exc.code)
        return f"refused ({refusal.label})" if refusal else f"error {exc.code}: {exc.message}"
    return str(exc) or type(exc).__name__


def _refusal(exc: BaseException | None) -> Refusal | None:
    return refusal_of(exc.code) if isinstance(exc, RpcError) else None


@dataclass(slots=True)
class _Tally:
    """Who did not give a usable partial, and why (one request or one batch item)."""

    failures: dict[str, str]
    refused: dict[str, Refusal]

    def refuse(self, name: str, refusal: Refusal) -> None:
        self.refused[name] = refusal
        self.failures[name] = f"refused ({refusal.label})"


class SigningService(CoordinatorService):
    """The coordinator's ``Backend`` with threshold signing (see the module header)."""

    def __init__(
        self,
        manifest: Manifest,
        sessions: SessionManager,
        *,
        audit: AuditLog | None = None,
        config: ServiceConfig | None = None,
        signer_config: SignerConfig | None = None,
        verify_transcript: KeyVerifier | None = None,
        rng: Rng = os_rng,
        name: str = "coordinator",
        dkg_config: DkgConfig | None = None,
    ) -> None:
        super().__init__(
            manifest,
            sessions,
            config=config,
            verify_key=self._verify_key,
            name=name,
            dkg_config=dkg_config,
        )
        self.signer_config = signer_config or SignerConfig()
        self.audit = audit
        # None: the DKG's transcript re-verification (coordinator.dkg_recovery)
        self._verify_transcript = verify_transcript or self.recovery.verify_key
        self._rng = rng
        self._index = {n.name: n.index for n in manifest.nodes}
        self._name = {n.index: n.name for n in manifest.nodes}
        self._group_keys: dict[tuple[Any, ...], GroupKey] = {}
        self._cooling: dict[str, float] = {}  # node -> trio time its cooldown ends
        self._rotation = 0  # where the next batch starts among the holders
        self.partial_failures: Counter[str] = Counter()

    # -- keys ------------------------------------------------------------------------

    async def _verify_key(self, meta: node_api.PublicKeyMetadata) -> None:
        """The registry's ``KeyVerifier``: the public data must fit together
        (``GroupKeyMismatch`` keeps the key out), then the transcript hook runs."""
        key = group_key_from_metadata(meta)
        await self._verify_transcript(meta)
        found = (meta.key_id, meta.epoch, meta.transcript_hash, meta.pk_g1, meta.pk_g2)
        self._group_keys[found] = key

    def _signing_key(self, key_id: str) -> tuple[KeyInfo, GroupKey]:
        info = self.registry.get(key_id)  # UnknownKey
        if info.status != "active":
            raise KeyNotActive(key_id, info.status)
        found = (
            info.key_id,
            info.epoch,
            info.transcript_hash,
            g1_to_bytes(info.pk_g1),
            g2_to_bytes(info.pk_g2),
        )
        key = self._group_keys.get(found)
        if key is None:  # unreachable: the registry admits only keys that passed the check
            raise KeyNotActive(key_id, "unverified")
        return info, key

    # -- fan-out ---------------------------------------------------------------------

    def _cooling_down(self, name: str) -> bool:
        until = self._cooling.get(name)
        return until is not None and trio.current_time() < until

    def _targets(self, info: KeyInfo) -> tuple[list[str], list[str], _Tally]:
        """(holders to ask first, holders kept in reserve, tally). Holders blamed
        recently are held in reserve: asked only if the others cannot reach t."""
        fresh = [h for h in info.holders if not self._cooling_down(h)]
        reserve = [h for h in info.holders if h not in fresh]
        skipped = {h: "excluded after a bad partial" for h in reserve}
        return fresh, reserve, _Tally(skipped, {})

    def _node_error(self, name: str, error: BaseException, tally: _Tally) -> None:
        """Tally a failed call; errors that are not the nodes' policy count as failures."""
        refusal = _refusal(error)
        if refusal is not None:
            tally.refuse(name, refusal)
        else:
            tally.failures[name] = _reason(error)
        if refusal not in (*_POLICY_ERRORS, *_STALE_KEY):
            self.partial_failures[name] += 1

    def _blame(self, indices: Sequence[int], key_id: str) -> list[str]:
        names = [self._name[i] for i in indices]
        cooldown = self.signer_config.blame_cooldown_s
        for name in names:
            self.partial_failures[name] += 1
            self._cooling[name] = trio.current_time() + cooldown
            log.warning(
                "node %s sent a partial for key %s that fails its DLEQ proof: "
                "left out of signing for %.0f s",
                name,
                key_id,
                cooldown,
            )
        return names

    def _failure(self, info: KeyInfo, tally: _Tally, got: int) -> BackendError:
        """The error for a request (or batch item) that got fewer than t partials."""
        t = info.threshold
        by_refusal = Counter(tally.refused.values())
        if info.n - by_refusal[Refusal.CLIENT_NOT_ALLOWED] < t:
            return Forbidden(f"the nodes' policy does not let this client use key {info.key_id!r}")
        if info.n - by_refusal[Refusal.USAGE_LIMIT] < t:
            limited = sorted(n for n, r in tally.refused.items() if r is Refusal.USAGE_LIMIT)
            return UsageLimitExceeded(info.key_id, limited)
        if info.n - sum(by_refusal[r] for r in _STALE_KEY) < t:
            return KeyNotActive(info.key_id, "not active on the nodes")
        missing = [h for h in info.holders if h in tally.failures]
        log.warning(
            "key %s: %d of %d partials; %s",
            info.key_id,
            got,
            t,
            "; ".join(f"{h}: {tally.failures[h]}" for h in missing),
        )
        return NotEnoughSigners(info.key_id, t, got, missing)

    async def _record(self, entries: Sequence[Mapping[str, Any]]) -> None:
        if self.audit is not None:
            await self.audit.append_many(entries)

    # -- one message -----------------------------------------------------------------

    async def _sign_one(
        self, info: KeyInfo, params: dict[str, Any], agg: Aggregation
    ) -> tuple[Done, list[str]]:
        asked, reserve, tally = self._targets(info)
        bad: set[str] = set()
        done: list[Done] = []

        async def on_answer(name: str, result: Any, error: BaseException | None) -> Verdict:
            tally.failures.pop(name, None)  # a reserve node that was asked after all
            if error is not None:
                self._node_error(name, error, tally)
                bad.add(name)
            else:
                try:
                    partial = partial_from_wire(result, index=self._index[name], field=name)
                except DecodeError as exc:
                    tally.failures[name] = f"malformed partial: {exc}"
                    self.partial_failures[name] += 1
                    bad.add(name)
                else:
                    outcome = agg.add(partial)
                    if isinstance(outcome, Done):
                        done.append(outcome)
                        return Verdict.DONE
            usable = len(asked) - len(bad) - len(agg.blamed)
            return Verdict.MORE if usable < info.threshold else Verdict.CONTINUE

        timeout = self.signer_config.sign_timeout_s
        unanswered = await fan_out(
            self.sessions, asked, SIGN_PARTIAL, params, timeout, on_answer, reserve=reserve
        )
        blamed = self._blame(agg.blamed, info.key_id)
        if done:
            return done[0], blamed
        for name in blamed:
            tally.failures[name] = "partial failed its DLEQ proof"
        for name in unanswered:
            tally.failures[name] = f"no answer within {timeout} s"
        got = sum(1 for n in asked if n not in tally.failures)
        raise self._failure(info, tally, got)

    async def _single(
        self,
        info: KeyInfo,
        client: Client,
        wire: dict[str, Any],
        agg: Aggregation,
        audit: dict[str, Any],
    ) -> tuple[Done, list[str]]:
        key_id = info.key_id
        params = {"key_id": key_id, "epoch": info.epoch, "client": client.client_id, **wire}
        base = {"event": audit.pop("event"), "client": client.client_id, "key_id": key_id}
        extra = {"epoch": info.epoch, **audit.pop("extra", {})}
        try:
            done, blamed = await self._sign_one(info, params, agg)
        except BackendError as exc:
            reason = {"reason": type(exc).__name__}
            await self._record(
                [{**base, **audit, "outcome": "failed", "extra": {**extra, **reason}}]
            )
            raise
        signers = [self._name[i] for i in done.signers]
        await self._record(
            [
                {
                    **base,
                    **audit,
                    "outcome": "signed",
                    "signers": signers,
                    "extra": {**extra, "blamed": blamed},
                }
            ]
        )
        return done, signers

    async def sign(self, key_id: str, msg_hash: bytes, *, client: Client) -> SignResult:
        info, key = self._signing_key(key_id)
        done, signers = await self._single(
            info,
            client,
            {"msg_hash": msg_hash},
            Aggregation(key, msg_hash),
            {"event": "sign", "msg_hash": msg_hash},
        )
        return SignResult(key_id, msg_hash, done.sigma, info.pk_g1, info.pk_g2, tuple(signers))

    async def sign_point(self, key_id: str, point: G1, *, client: Client) -> G1:
        info, key = self._signing_key(key_id)
        raw = g1_to_bytes(point)
        done, _signers = await self._single(
            info,
            client,
            {"point": raw},
            Aggregation(key, raw, point=point),
            {"event": "sign.point", "extra": {"point": raw.hex()}},
        )
        return done.sigma

    # -- batch -----------------------------------------------------------------------

    def _decode_batch(self, name: str, result: Any, count: int) -> list[PartialSignature | Refusal]:
        """One node's ``sign.batch`` answer: a partial or a refusal per item."""
        if len(result["items"]) != count:
            raise node_api.NodeApiError(
                f"{name}.items", f"{len(result['items'])} for {count} hashes"
            )
        index = self._index[name]
        out: list[PartialSignature | Refusal] = []
        for i, item in enumerate(result["items"]):
            where = f"{name}.items[{i}]"
            if "error" in item:
                refusal = refusal_of(item["error"]["code"])
                if refusal is None or set(item) != {"error"}:
                    raise node_api.NodeApiError(where, "an error item with an unknown code")
                out.append(refusal)
            elif set(item) == {"sigma", "proof"}:
                wire = {"index": result["index"], **item}
                out.append(partial_from_wire(wire, index=index, field=where))
            else:
                raise node_api.NodeApiError(where, "must be {sigma, proof} or {error}")
        return out

    async def sign_batch(
        self, key_id: str, msg_hashes: Sequence[bytes], *, client: Client
    ) -> list[SignResult | BackendError]:
        info, key = self._signing_key(key_id)
        hashes = list(msg_hashes)
        fresh, cooling, node_tally = self._targets(info)
        up = [h for h in fresh if self.sessions.is_up(h)]
        want = info.threshold + self.signer_config.batch_extra
        if len(up) >= want:  # t holders first, rotating so the work spreads
            start = self._rotation % len(up)
            self._rotation += 1
            asked = (up[start:] + up[:start])[:want]
        else:
            asked = list(fresh)
        reserve = [h for h in fresh if h not in asked] + cooling
        items = [_Tally(dict(node_tally.failures), {}) for _ in hashes]
        batch = BatchAggregation(key, hashes, rng=self._rng)
        answered: set[str] = set()

        async def on_answer(name: str, result: Any, error: BaseException | None) -> Verdict:
            answered.add(name)
            for tally in items:
                tally.failures.pop(name, None)  # a reserve node that was asked after all
            decoded: list[PartialSignature | Refusal] | None = None
            if error is None:
                try:
                    decoded = await trio.to_thread.run_sync(
                        self._decode_batch, name, result, len(hashes)
                    )
                except DecodeError as exc:
                    error = exc
            if error is not None or decoded is None:
                self._node_error(name, error or ValueError("no answer"), node_tally)
                for tally in items:
                    self._copy_node(name, node_tally, tally)
            else:
                for tally, d in zip(items, decoded, strict=True):
                    if isinstance(d, Refusal):
                        tally.refuse(name, d)
                partials = [d if isinstance(d, PartialSignature) else None for d in decoded]
                await trio.to_thread.run_sync(batch.add, self._index[name], partials)
            unsettled = batch.unsettled()
            if not unsettled:
                return Verdict.DONE
            pending = sum(1 for n in asked if n not in answered)
            hopeless = all(batch.have(i) + pending < info.threshold for i in unsettled)
            return Verdict.MORE if hopeless else Verdict.CONTINUE

        timeout = self.signer_config.batch_timeout(len(hashes))
        params = {
            "key_id": key_id,
            "epoch": info.epoch,
            "client": client.client_id,
            "msg_hashes": hashes,
        }
        hedge = self.signer_config.batch_hedge(len(hashes))
        unanswered = await fan_out(
            self.sessions,
            asked,
            SIGN_BATCH,
            params,
            timeout,
            on_answer,
            reserve=reserve,
            hedge_s=hedge,
        )
        blamed = self._blame(batch.blamed, key_id)
        results: list[SignResult | BackendError] = []
        records: list[dict[str, Any]] = []
        for i, (h, tally) in enumerate(zip(hashes, items, strict=True)):
            extra: dict[str, Any] = {"epoch": info.epoch, "item": i, "blamed": blamed}
            record: dict[str, Any] = {
                "event": "sign.batch",
                "client": client.client_id,
                "key_id": key_id,
                "msg_hash": h,
                "extra": extra,
            }
            sigma = batch.sigmas[i]
            if sigma is not None:
                signers = tuple(self._name[j] for j in batch.signers[i])
                results.append(SignResult(key_id, h, sigma, info.pk_g1, info.pk_g2, signers))
                records.append({**record, "outcome": "signed", "signers": list(signers)})
                continue
            for name in unanswered:
                tally.failures.setdefault(name, f"no answer within {timeout:.1f} s")
            for name in blamed:
                tally.failures.setdefault(name, "partial failed its DLEQ proof")
            error = self._failure(info, tally, batch.have(i))
            results.append(error)
            reason = {"reason": type(error).__name__}
            records.append({**record, "outcome": "failed", "extra": {**extra, **reason}})
        await self._record(records)
        return results

    @staticmethod
    def _copy_node(name: str, source: _Tally, target: _Tally) -> None:
        if name in source.refused:
            target.refuse(name, source.refused[name])
        elif name in source.failures:
            target.failures[name] = source.failures[name]

    # -- destroy, health -------------------------------------------------------------

    async def destroy_key(self, key_id: str, *, client: Client) -> None:
        info = self.registry.get(key_id)
        if not client.is_operator:
            raise Forbidden("destroying a key needs the operator role")
        confirmed: list[str] = []
        failures: dict[str, str] = {}

        async def on_answer(name: str, result: Any, error: BaseException | None) -> Verdict:
            if error is not None:
                failures[name] = _reason(error)
            elif result["status"] == "destroyed":
                confirmed.append(name)
            else:
                failures[name] = f"reports {result['status']}"
            return Verdict.CONTINUE

        params = {"key_id": key_id, "epoch": info.epoch, "client": client.client_id}
        timeout = self.signer_config.destroy_timeout_s
        holders = list(info.holders)
        unanswered = await fan_out(self.sessions, holders, KEYS_DESTROY, params, timeout, on_answer)
        for name in unanswered:
            failures[name] = f"no answer within {timeout} s"
        async with trio.open_nursery() as nursery:  # the registry follows the nodes
            for name in info.holders:
                if self.sessions.is_up(name):
                    nursery.start_soon(self.refresh_node, name)
        missing = [h for h in info.holders if h in failures]
        await self._record(
            [
                {
                    "event": "key.destroy",
                    "client": client.client_id,
                    "key_id": key_id,
                    "outcome": "destroyed" if not missing else "incomplete",
                    "signers": sorted(confirmed),
                    "extra": {"epoch": info.epoch, "missing": missing},
                }
            ]
        )
        if missing:
            for name in missing:
                log.error("destroy of %s: node %s: %s", key_id, name, failures[name])
            raise NotEnoughSigners(key_id, info.n, len(confirmed), missing)
        log.warning("key %s destroyed on every holder", key_id)

    async def health(self) -> Health:
        h = await super().health()
        nodes = tuple(
            replace(
                n,
                partial_failures=self.partial_failures[n.name],
                detail=n.detail
                or ("left out after a bad partial" if self._cooling_down(n.name) else ""),
            )
            for n in h.nodes
        )
        return Health(nodes=nodes, keys=h.keys)


AUDIT_LOG_FILE = "audit.log"
CHECKPOINTS_FILE = "checkpoints.log"


@asynccontextmanager
async def open_signing_service(
    manifest: Manifest,
    sessions: SessionManager,
    *,
    name: str,
    data_dir: Path,
    config: ServiceConfig | None = None,
    signer_config: SignerConfig | None = None,
    verify_transcript: KeyVerifier | None = None,
    checkpoint_interval_s: float = 2.0,
    dkg_config: DkgConfig | None = None,
    service_class: type[SigningService] = SigningService,
) -> AsyncIterator[SigningService]:
    """The coordinator's service (``service_class``: a ``SigningService`` subclass that
    adds more ``Backend`` calls) while the block runs: its audit log
    (``<data_dir>/audit.log``, log id ``<cluster id hex>/<name>``) and checkpoint store
    (``<data_dir>/checkpoints.log``) open, the registry following the nodes and the
    checkpoint relay running."""
    audit_config = AuditLogConfig(
        path=data_dir / AUDIT_LOG_FILE,
        log_id=f"{manifest.cluster_id.hex()}/{name}",
        actor=name,
    )
    async with (
        open_audit_log(audit_config) as audit,
        open_checkpoint_store(data_dir / CHECKPOINTS_FILE) as store,
    ):
        service = service_class(
            manifest,
            sessions,
            audit=audit,
            config=config,
            signer_config=signer_config,
            verify_transcript=verify_transcript,
            name=name,
            dkg_config=dkg_config,
        )
        relay = CheckpointRelay(
            manifest,
            sessions,
            store=store,
            audit=audit,
            interval_s=checkpoint_interval_s,
            call_timeout_s=service.config.call_timeout_s,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(service.watch)
            await nursery.start(relay.run)
            try:
                yield service
            finally:
                nursery.cancel_scope.cancel()

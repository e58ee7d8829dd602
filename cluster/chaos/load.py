"""The steady signing load of ``tkms chaos`` and the check of every returned signature.

``Load`` runs ``concurrency`` workers that together send at most ``max_rps`` requests
per second (``POST /v1/keys/{key_id}/sign`` with a fresh random ``msgHash``) until a
deadline or ``max_requests``. Each request becomes one ``Sample``: send and end time
(trio clock), outcome, HTTP status, and for a 503 the nodes it names as missing.

A refused or reset connection (the coordinator restarting) is retried after
``retry_pause_s`` until the request's deadline, as any client of a restarting
service would; a 503 is never retried (it is what the run measures).

Every 200 goes to the verifier: its ``msgHash`` must be the one sent, ``apkG1`` and
``apkG2`` must be the key's (from its DKG), and it must pass EigenLayer's gamma check
(``protocol.eigenlayer``). Checks run in one worker thread, off the event loop; the
outcome is ``ok`` or ``invalid``. A reservoir keeps up to ``keep_signatures`` checked
objects, spread over the run, for the report.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import trio

from cluster.chaos.httpc import HttpTimeout, HttpUnavailable, request
from protocol.bn254 import G1, G2, prepare_g2
from protocol.eigenlayer import AvsSignature
from protocol.encoding import msg_hash_to_hex
from protocol.errors import TkmsError

OK, INVALID, UNAVAILABLE, HTTP_ERROR, UNREACHABLE, TIMEOUT = (
    "ok",
    "invalid",
    "503",
    "http_error",
    "unreachable",
    "timeout",
)
OUTCOMES = (OK, INVALID, UNAVAILABLE, HTTP_ERROR, UNREACHABLE, TIMEOUT)


@dataclass(frozen=True, slots=True)
class Sample:
    """One signing request."""

    sent: float
    done: float
    outcome: str
    status: int | None = None
    missing: tuple[str, ...] = ()
    attempts: int = 1
    detail: str = ""

    @property
    def latency_s(self) -> float:
        return self.done - self.sent


_Checked = tuple[float, float, int, bytes, Any]  # sent, done, attempts, msgHash, body


@dataclass(frozen=True, slots=True)
class LoadConfig:
    concurrency: int = 4
    max_rps: float = 20.0
    request_deadline_s: float = 15.0  # per request, connection retries included
    retry_pause_s: float = 0.1
    max_requests: int | None = None
    keep_signatures: int = 20

    def __post_init__(self) -> None:
        if self.concurrency < 1 or not self.max_rps > 0 or not self.request_deadline_s > 0:
            raise ValueError("concurrency, max_rps and request_deadline_s must be positive")
        if self.max_requests is not None and self.max_requests < 0:
            raise ValueError("max_requests must be >= 0")


class SignatureCheck:
    """Checks a returned signature object against the key it must be made with."""

    def __init__(self, pubkey_g1: G1, pubkey_g2: G2) -> None:
        self.pubkey_g1 = pubkey_g1
        self.pubkey_g2 = pubkey_g2
        self._prepared = prepare_g2(pubkey_g2)

    def check(self, msg_hash: bytes, obj: Any) -> str | None:
        """None if ``obj`` is a valid signature of ``msg_hash`` by the key, else why not."""
        try:
            sig = AvsSignature.from_json(obj, allow_extra=True)
        except TkmsError as exc:
            return f"malformed signature object: {exc}"
        if sig.msg_hash != msg_hash:
            return "msgHash is not the one sent"
        if sig.apk_g1 != self.pubkey_g1 or sig.apk_g2 != self.pubkey_g2:
            return "apkG1/apkG2 is not the key's public key"
        try:
            valid = sig.verify(apk_g2_prepared=self._prepared)
        except TkmsError as exc:
            return f"gamma check refused the signature: {exc}"
        return None if valid else "gamma check failed"


def missing_nodes(body: Any) -> tuple[str, ...]:
    """The ``missing`` node names of a 503 ``not_enough_signers`` body (else empty)."""
    err = body.get("error") if isinstance(body, dict) else None
    names = err.get("missing") if isinstance(err, dict) else None
    if not isinstance(names, list):
        return ()
    return tuple(n for n in names if isinstance(n, str))


class Load:
    """The signing load of one run (see the module header)."""

    def __init__(
        self,
        address: str,
        api_key: str,
        key_id: str,
        check: SignatureCheck,
        *,
        config: LoadConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.address = address
        self.api_key = api_key
        self.key_id = key_id
        self.check = check
        self.config = config or LoadConfig()
        self.rng = rng or random.Random()
        self.samples: list[Sample] = []
        self.signatures: list[tuple[float, dict[str, Any]]] = []
        self.sent = 0
        self.in_flight = 0
        self.unverified = 0
        self._checked = 0
        self._next_slot = 0.0
        self._limiter = trio.CapacityLimiter(1)

    def count(self, outcome: str) -> int:
        return sum(1 for s in self.samples if s.outcome == outcome)

    async def run(self, until: float, *, verify_grace_s: float = 60.0) -> None:
        """Send until trio time ``until`` (or ``max_requests``), then finish checking
        the signatures still queued (at most ``verify_grace_s`` more; the rest stay
        counted in ``unverified``)."""
        send, recv = trio.open_memory_channel[_Checked](10_000)
        self._next_slot = trio.current_time()
        checked = trio.Event()
        async with trio.open_nursery() as verifiers:
            verifiers.start_soon(self._verifier, recv, checked)
            async with send, trio.open_nursery() as workers:
                for _ in range(self.config.concurrency):
                    workers.start_soon(self._worker, until, send.clone())
            with trio.move_on_after(verify_grace_s):
                await checked.wait()
            verifiers.cancel_scope.cancel()

    def _may_send(self, until: float) -> bool:
        cap = self.config.max_requests
        return trio.current_time() < until and (cap is None or self.sent < cap)

    async def _worker(self, until: float, send: trio.MemorySendChannel[_Checked]) -> None:
        async with send:
            while True:
                slot = max(trio.current_time(), self._next_slot)
                self._next_slot = slot + 1.0 / self.config.max_rps
                await trio.sleep_until(slot)
                if not self._may_send(until):
                    return
                self.sent += 1
                msg_hash = self.rng.randbytes(32)
                self.in_flight += 1
                try:
                    queued = await self._one(msg_hash, send)
                finally:
                    self.in_flight -= 1
                if queued is not None:
                    self.samples.append(queued)

    async def _one(self, msg_hash: bytes, send: trio.MemorySendChannel[_Checked]) -> Sample | None:
        """Send one request; None when a 200 went to the verifier."""
        cfg = self.config
        sent = trio.current_time()
        deadline = sent + cfg.request_deadline_s
        attempts = 0
        path = f"/v1/keys/{self.key_id}/sign"
        while True:
            attempts += 1
            left = deadline - trio.current_time()
            try:
                resp = await request(
                    self.address,
                    "POST",
                    path,
                    body={"msgHash": msg_hash_to_hex(msg_hash)},
                    api_key=self.api_key,
                    deadline_s=max(left, 0.001),
                )
            except HttpTimeout as exc:
                return Sample(sent, trio.current_time(), TIMEOUT, None, (), attempts, str(exc))
            except HttpUnavailable as exc:
                if trio.current_time() + cfg.retry_pause_s < deadline:
                    await trio.sleep(cfg.retry_pause_s)
                    continue
                return Sample(sent, trio.current_time(), UNREACHABLE, None, (), attempts, str(exc))
            break
        done = trio.current_time()
        body = resp.json()
        if resp.status == 200:
            self.unverified += 1
            await send.send((sent, done, attempts, msg_hash, body))
            return None
        if resp.status == 503:
            missing = missing_nodes(body)
            code = body.get("error", {}).get("code", "") if isinstance(body, dict) else ""
            return Sample(sent, done, UNAVAILABLE, 503, missing, attempts, str(code))
        detail = resp.body[:200].decode("utf-8", "replace")
        return Sample(sent, done, HTTP_ERROR, resp.status, (), attempts, detail)

    async def _verifier(
        self, recv: trio.MemoryReceiveChannel[_Checked], drained: trio.Event
    ) -> None:
        async with recv:
            async for sent, done, attempts, msg_hash, body in recv:
                why = await trio.to_thread.run_sync(
                    self.check.check, msg_hash, body, limiter=self._limiter
                )
                self.unverified -= 1
                if why is None:
                    self.samples.append(Sample(sent, done, OK, 200, (), attempts))
                    self._keep(sent, body)
                else:
                    self.samples.append(Sample(sent, done, INVALID, 200, (), attempts, why))
        drained.set()

    def _keep(self, sent: float, obj: dict[str, Any]) -> None:
        """Reservoir sampling: each checked signature is kept with equal chance."""
        self._checked += 1
        k = self.config.keep_signatures
        if len(self.signatures) < k:
            self.signatures.append((sent, obj))
        else:
            j = self.rng.randrange(self._checked)
            if j < k:
                self.signatures[j] = (sent, obj)

    def kept_signatures(self) -> list[dict[str, Any]]:
        return [obj for _, obj in sorted(self.signatures, key=lambda item: item[0])]

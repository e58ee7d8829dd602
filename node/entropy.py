"""The node's randomness: the token's C_GenerateRandom and the OS generator, each
health-tested, mixed through HKDF-SHA256.

Every secret a node creates (identity keys, DKG polynomials, proof nonces) comes
from ``EntropyPool.__call__`` (a ``protocol.rng.Rng``): 32 fresh bytes from the
token and 32 fresh bytes from the OS go into HKDF-SHA256 (salt
``tkms/v1/entropy-mix``, info = tag, call counter, output length). The output is
unpredictable as long as either source is.

Continuous health tests in the spirit of NIST SP 800-90B §4.4, run on every raw
byte of both sources (8-bit samples), with an assumed min-entropy of
``ASSUMED_MIN_ENTROPY`` = 7 bits per byte and a false-alarm probability of
alpha = 2^-40 per test decision:

* repetition count test (RCT, §4.4.1): cutoff C = 1 + ceil(40 / 7) = 7 identical
  consecutive bytes;
* adaptive proportion test (APT, §4.4.2): window W = 512 bytes, cutoff
  C = 1 + CRITBINOM(512, 2^-7, 1 - 2^-40) = 26 occurrences of the window's first
  byte (computed exactly at import, see ``apt_cutoff``);
* block repetition: a source output of 16 bytes or more equal to one of its last
  64 outputs (a "stuck" generator replaying a block passes RCT and APT).

Start-up (§4.3): 4096 bytes of each source are tested and discarded, and HKDF and
the mix function pass known-answer tests (RFC 5869 A.1/A.3, and a mix vector
computed with pycryptodome's HKDF) before the first secret. A failure is
permanent for the process: every later call raises ``EntropyFailure`` naming the
source and the test; the operator restarts the node after investigating. What the
tests can and cannot detect: docs/threat-model.md, "Entropy".

Token bytes are fetched through the HSM worker thread into a small pool
(``EntropyService`` refills it in the background); the ``Rng`` call itself never
touches the token, so protocol code can call it synchronously.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import math
import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from node.hsm import HsmSession
from protocol.errors import TkmsError

ASSUMED_MIN_ENTROPY = 7  # bits per byte (integer: the APT cutoff is computed exactly)
ALPHA_LOG2 = 40  # false-alarm probability 2^-40 per test decision
APT_WINDOW = 512
BLOCK_HISTORY = 64
BLOCK_MIN = 16
STARTUP_BYTES = 4096
DRAW_BYTES = 32  # bytes of each source per Rng call
POOL_TARGET = 65536  # token bytes kept ready (2048 draws)
POOL_LOW = 32768
REFILL_CHUNK = 4096  # token bytes per C_GenerateRandom
MAX_MIX_OUTPUT = 255 * 32
MIX_SALT = b"tkms/v1/entropy-mix"
MIX_INFO = b"tkms/v1/rng\x00"
REFILL_POLL_SECONDS = 1.0

log = logging.getLogger("tkms.node.entropy")


class EntropyError(TkmsError):
    """The node cannot produce secrets (fault LOCAL)."""


class EntropyFailure(EntropyError):
    """A raw source failed a health test, or a self-test failed: no more secrets."""

    def __init__(self, source: str, test: str, detail: str) -> None:
        super().__init__(f"entropy source {source!r} failed the {test}: {detail}")
        self.source = source
        self.test = test


class EntropyUnavailable(EntropyError):
    """Not started yet, or the token pool is empty (refill is behind)."""


def rct_cutoff(h: int = ASSUMED_MIN_ENTROPY, alpha_log2: int = ALPHA_LOG2) -> int:
    """SP 800-90B §4.4.1: C = 1 + ceil(-log2(alpha) / H)."""
    return 1 + math.ceil(alpha_log2 / h)


def apt_cutoff(
    h: int = ASSUMED_MIN_ENTROPY, window: int = APT_WINDOW, alpha_log2: int = ALPHA_LOG2
) -> int:
    """SP 800-90B §4.4.2: C = 1 + CRITBINOM(W, 2^-H, 1 - alpha), exactly (integers only):
    the smallest k with P[Binomial(W, 2^-H) <= k] >= 1 - 2^-alpha_log2."""
    q = 1 << h
    total = q**window
    acc = 0
    for k in range(window + 1):
        acc += math.comb(window, k) * (q - 1) ** (window - k)
        if acc << alpha_log2 >= ((1 << alpha_log2) - 1) * total:
            return 1 + k
    return window + 1


RCT_CUTOFF = rct_cutoff()
APT_CUTOFF = apt_cutoff()


class HealthMonitor:
    """Continuous RCT + APT + block repetition on one raw source (state persists)."""

    def __init__(
        self,
        source: str,
        *,
        rct_limit: int = RCT_CUTOFF,
        apt_limit: int = APT_CUTOFF,
        window: int = APT_WINDOW,
    ) -> None:
        self.source = source
        self._rct_limit = rct_limit
        self._apt_limit = apt_limit
        self._window = window
        self._rct_value = -1
        self._rct_count = 0
        self._apt_value = -1
        self._apt_count = 0
        self._apt_seen = 0
        self._blocks: deque[bytes] = deque(maxlen=BLOCK_HISTORY)
        self.failure: EntropyFailure | None = None
        self.samples = 0

    def __repr__(self) -> str:
        state = "failed" if self.failure else "ok"
        return f"HealthMonitor({self.source!r}, {state}, samples={self.samples})"

    def check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _fail(self, test: str, detail: str) -> None:
        self.failure = EntropyFailure(self.source, test, detail)
        raise self.failure

    def feed(self, data: bytes) -> None:
        """Test one source output; raises (and stays failed) on the first failure."""
        self.check()
        if len(data) >= BLOCK_MIN:
            fp = hashlib.sha256(b"tkms/v1/block-repetition\x00" + data).digest()[:16]
            if fp in self._blocks:
                self._fail(
                    "block repetition test",
                    f"a {len(data)}-byte output repeats one of the last {BLOCK_HISTORY}",
                )
            self._blocks.append(fp)
        for b in data:
            self.samples += 1
            if b == self._rct_value:
                self._rct_count += 1
                if self._rct_count >= self._rct_limit:
                    self._fail(
                        "repetition count test",
                        f"{self._rct_count} identical bytes in a row (cutoff {self._rct_limit})",
                    )
            else:
                self._rct_value, self._rct_count = b, 1
            if self._apt_seen == 0:
                self._apt_value, self._apt_count, self._apt_seen = b, 1, 1
                continue
            self._apt_seen += 1
            if b == self._apt_value:
                self._apt_count += 1
                if self._apt_count >= self._apt_limit:
                    self._fail(
                        "adaptive proportion test",
                        f"one value {self._apt_count} times in a {self._window}-byte window "
                        f"(cutoff {self._apt_limit})",
                    )
            if self._apt_seen >= self._window:
                self._apt_seen = 0


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF with SHA-256."""
    if not 0 < length <= MAX_MIX_OUTPUT:
        raise ValueError("HKDF output length out of range")
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    out = b""
    block = b""
    i = 0
    while len(out) < length:
        i += 1
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
    return out[:length]


def mix(token_bytes: bytes, os_bytes: bytes, length: int, counter: int) -> bytes:
    """The mixing function: HKDF-SHA256(token || os, salt, info = tag|counter|length)."""
    if len(token_bytes) != DRAW_BYTES or len(os_bytes) != DRAW_BYTES:
        raise ValueError("mix takes exactly 32 bytes of each source")
    info = MIX_INFO + counter.to_bytes(8, "big") + length.to_bytes(4, "big")
    return hkdf_sha256(token_bytes + os_bytes, salt=MIX_SALT, info=info, length=length)


# Known answers. RFC 5869 appendix A.1 and A.3; the mix vector was computed with
# pycryptodome's independent HKDF (tests/node/test_entropy.py recomputes it).
_KAT_RFC5869 = (
    (
        bytes([0x0B] * 22),
        bytes(range(13)),
        bytes(range(0xF0, 0xFA)),
        bytes.fromhex(
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        ),
    ),
    (
        bytes([0x0B] * 22),
        b"",
        b"",
        bytes.fromhex(
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
        ),
    ),
)
KAT_MIX_TOKEN = bytes(range(32))
KAT_MIX_OS = bytes(range(32, 64))
KAT_MIX_OUTPUT = bytes.fromhex(
    "1b276b0b717b67869e072f0c39e5512ce1239d2d6673459f8f8212db651df562"
    "667e5f23a47c7b6a10c4f0f9376874ee"
)


def known_answer_tests(
    kdf: Callable[..., bytes] = hkdf_sha256, mixer: Callable[[bytes, bytes, int, int], bytes] = mix
) -> None:
    """Raise ``EntropyFailure`` unless HKDF and the mix function give the known answers."""
    for i, (ikm, salt, info, okm) in enumerate(_KAT_RFC5869):
        if not hmac.compare_digest(kdf(ikm, salt=salt, info=info, length=len(okm)), okm):
            raise EntropyFailure("mixing function", "known-answer test", f"RFC 5869 vector {i}")
    if not hmac.compare_digest(mixer(KAT_MIX_TOKEN, KAT_MIX_OS, 48, 1), KAT_MIX_OUTPUT):
        raise EntropyFailure("mixing function", "known-answer test", "mix vector")


class EntropyPool:
    """The synchronous, ``Rng``-compatible core: call it with n, get n mixed bytes.

    Token bytes are pushed in with ``add_token_bytes`` (health-tested on arrival);
    OS bytes are drawn per call from ``os_source`` (health-tested per call)."""

    def __init__(
        self,
        *,
        os_source: Callable[[int], bytes] = os.urandom,
        on_low: Callable[[], None] | None = None,
    ) -> None:
        self.token_health = HealthMonitor("token C_GenerateRandom")
        self.os_health = HealthMonitor("OS generator")
        self._os_source = os_source
        self._pool = bytearray()
        self._counter = 0
        self._started = False
        self._self_test_failure: EntropyFailure | None = None
        self.on_low = on_low

    def __repr__(self) -> str:
        return (
            f"EntropyPool(started={self._started}, pooled={len(self._pool)}, "
            f"token={self.token_health!r}, os={self.os_health!r})"
        )

    @property
    def pooled(self) -> int:
        return len(self._pool)

    def needed(self) -> int:
        """How many token bytes would bring the pool to its target (0 if above low water)."""
        return 0 if len(self._pool) >= POOL_LOW else POOL_TARGET - len(self._pool)

    def startup(self, token_sample: bytes) -> None:
        """Start-up tests: KATs, and ``STARTUP_BYTES`` of each source tested and discarded."""
        try:
            known_answer_tests()
        except EntropyFailure as exc:
            self._self_test_failure = exc
            raise
        if len(token_sample) < STARTUP_BYTES:
            raise EntropyUnavailable(f"start-up needs {STARTUP_BYTES} token bytes")
        self.token_health.feed(token_sample)
        self.os_health.feed(self._os_source(STARTUP_BYTES))
        self._started = True

    def add_token_bytes(self, data: bytes) -> None:
        """Health-test fresh token output and add it to the pool."""
        self.token_health.feed(data)
        self._pool += data

    def check(self) -> None:
        """Raise if the node must not generate secrets."""
        if self._self_test_failure is not None:
            raise self._self_test_failure
        self.token_health.check()
        self.os_health.check()
        if not self._started:
            raise EntropyUnavailable("entropy start-up tests have not run")

    def __call__(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("n must be >= 0")
        self.check()
        out = bytearray()
        while len(out) < n:
            out += self._draw(min(n - len(out), MAX_MIX_OUTPUT))
        return bytes(out)

    def _draw(self, length: int) -> bytes:
        if len(self._pool) < DRAW_BYTES:
            if self.on_low is not None:
                self.on_low()
            raise EntropyUnavailable("token entropy pool is empty (refill behind or HSM down)")
        os_part = self._os_source(DRAW_BYTES)
        if len(os_part) != DRAW_BYTES:
            raise EntropyFailure(self.os_health.source, "length check", "short read")
        self.os_health.feed(os_part)
        token_part = bytes(self._pool[:DRAW_BYTES])
        del self._pool[:DRAW_BYTES]
        self._counter += 1
        if self.on_low is not None and len(self._pool) < POOL_LOW:
            self.on_low()
        return mix(token_part, os_part, length, self._counter)


class EntropyService:
    """The async side: refills the pool from the token through the HSM worker.

    Call it like an ``Rng``; ``await reserve(draws)`` before protocol code that
    needs more than the pool holds (the pool keeps >= 1024 draws ready)."""

    def __init__(self, hsm: HsmSession, pool: EntropyPool) -> None:
        self._hsm = hsm
        self.pool = pool
        self._low = trio.Event()
        self._lock = trio.Lock()

    def __repr__(self) -> str:
        return f"EntropyService({self.pool!r})"

    def __call__(self, n: int) -> bytes:
        return self.pool(n)

    async def refill(self, target: int = POOL_TARGET) -> None:
        async with self._lock:
            while self.pool.pooled < target:
                data = await self._hsm.generate_random(REFILL_CHUNK)
                self.pool.add_token_bytes(data)

    async def reserve(self, draws: int) -> None:
        """Make sure at least ``draws`` Rng calls can be served from the pool."""
        self.pool.check()
        await self.refill(max(POOL_TARGET, draws * DRAW_BYTES))

    def _signal_low(self) -> None:
        self._low.set()

    async def _refiller(self) -> None:
        """Background task: keep the pool filled. Never raises: a failed source stays
        failed (callers get its error), an HSM error is logged and retried."""
        while True:
            with trio.move_on_after(REFILL_POLL_SECONDS):
                await self._low.wait()
            self._low = trio.Event()
            if not self.pool.needed() or self.pool.token_health.failure is not None:
                continue
            try:
                await self.refill()
            except EntropyFailure as exc:
                log.error("entropy: %s; the node generates no more secrets", exc)
            except TkmsError as exc:
                log.warning("entropy: token refill failed (%s); retrying", exc)


@asynccontextmanager
async def open_entropy(
    hsm: HsmSession, *, os_source: Callable[[int], bytes] = os.urandom
) -> AsyncIterator[EntropyService]:
    """Run the start-up tests, fill the pool, keep it filled while the block runs."""
    trio_token = trio.lowlevel.current_trio_token()
    pool = EntropyPool(os_source=os_source)
    service = EntropyService(hsm, pool)

    def on_low() -> None:
        # may be called from any thread (protocol code in a worker): hand it to trio
        # after the run ended the node is shutting down: nothing left to refill for
        with contextlib.suppress(trio.RunFinishedError):
            trio_token.run_sync_soon(service._signal_low)

    pool.on_low = on_low
    pool.startup(await hsm.generate_random(STARTUP_BYTES))
    await service.refill()
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service._refiller)
        try:
            yield service
        except BaseException as exc:  # re-raised below, unwrapped by the nursery
            body_error = exc
        finally:
            nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error

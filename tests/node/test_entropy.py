"""node/entropy.py: cutoffs against scipy, HKDF and the mix against pycryptodome, health
tests that trip on stuck, replaying and biased sources and pass os.urandom, failures
that stop secret generation, and the async service on a real token."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import pytest
import trio
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from node.config import NodeConfig
from node.entropy import (
    APT_CUTOFF,
    KAT_MIX_OS,
    KAT_MIX_OUTPUT,
    KAT_MIX_TOKEN,
    MIX_INFO,
    MIX_SALT,
    RCT_CUTOFF,
    STARTUP_BYTES,
    EntropyFailure,
    EntropyPool,
    EntropyUnavailable,
    HealthMonitor,
    apt_cutoff,
    hkdf_sha256,
    known_answer_tests,
    mix,
    open_entropy,
)
from node.hsm import SOFTHSM_MODULE, open_hsm
from protocol.rng import random_scalar
from tests.node.hsm_helpers import SoftHsm, user_pin


def test_cutoffs_match_sp800_90b_formulas() -> None:
    # RCT: 1 + ceil(-log2(alpha)/H) with alpha = 2^-40, H = 7
    assert RCT_CUTOFF == 1 + math.ceil(40 / 7) == 7
    # APT: 1 + CRITBINOM(512, 2^-7, 1 - 2^-40), recomputed with scipy
    assert 1 + int(binom.ppf(1 - 2.0**-40, 512, 2.0**-7)) == APT_CUTOFF
    for h in (1, 4, 8):
        assert apt_cutoff(h, 512, 30) == 1 + int(binom.ppf(1 - 2.0**-30, 512, 2.0**-h))
    # binary-source sanity row of SP 800-90B Table 2 (W = 1024, H = 1, alpha = 2^-20)
    assert apt_cutoff(1, 1024, 20) == 589


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=80), st.binary(max_size=40), st.binary(max_size=40),
       st.integers(1, 600))  # fmt: skip
def test_hkdf_matches_pycryptodome(ikm: bytes, salt: bytes, info: bytes, length: int) -> None:
    expected = HKDF(ikm, length, salt, SHA256, 1, context=info)
    assert hkdf_sha256(ikm, salt=salt, info=info, length=length) == expected


def test_mix_vector_is_independently_computed() -> None:
    info = MIX_INFO + (1).to_bytes(8, "big") + (48).to_bytes(4, "big")
    expected = HKDF(KAT_MIX_TOKEN + KAT_MIX_OS, 48, MIX_SALT, SHA256, 1, context=info)
    assert KAT_MIX_OUTPUT == expected == mix(KAT_MIX_TOKEN, KAT_MIX_OS, 48, 1)
    known_answer_tests()  # passes with the real functions


def test_known_answer_test_catches_a_broken_mix() -> None:
    def bad_kdf(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
        return hkdf_sha256(ikm, salt=salt + b"x", info=info, length=length)

    with pytest.raises(EntropyFailure, match="known-answer test"):
        known_answer_tests(kdf=bad_kdf)
    with pytest.raises(EntropyFailure, match="mix vector"):
        known_answer_tests(mixer=lambda t, o, n, c: mix(t, o, n, c + 1))


def test_os_urandom_passes() -> None:
    monitor = HealthMonitor("os.urandom")
    for _ in range(64):
        monitor.feed(os.urandom(16384))
    assert monitor.failure is None and monitor.samples == 64 * 16384


def test_stuck_source_trips_the_repetition_count_test() -> None:
    monitor = HealthMonitor("stuck")
    with pytest.raises(EntropyFailure) as info:
        monitor.feed(bytes(64))
    assert info.value.test == "repetition count test"
    assert "7 identical bytes in a row" in str(info.value)
    with pytest.raises(EntropyFailure):  # failures are permanent
        monitor.feed(os.urandom(64))
    # a run just below the cutoff passes
    ok = HealthMonitor("ok")
    ok.feed(b"\x00" * (RCT_CUTOFF - 1) + b"\x01")


def test_biased_source_trips_the_adaptive_proportion_test() -> None:
    rnd = random.Random(1234)
    # 15% zeros, the rest uniform: no long runs, but far too many zeros per window
    data = bytes(0 if rnd.random() < 0.15 else rnd.randrange(256) for _ in range(65536))
    monitor = HealthMonitor("biased")
    with pytest.raises(EntropyFailure) as info:
        monitor.feed(data)
    assert info.value.test == "adaptive proportion test"
    assert monitor.samples < len(data)


def test_replayed_block_trips_the_block_repetition_test() -> None:
    block = os.urandom(32)  # random-looking: RCT and APT cannot see it
    monitor = HealthMonitor("replaying")
    monitor.feed(block)
    with pytest.raises(EntropyFailure) as info:
        monitor.feed(block)
    assert info.value.test == "block repetition test"


def test_a_failing_os_source_stops_secret_generation() -> None:
    pool = EntropyPool(os_source=lambda n: bytes(n))
    with pytest.raises(EntropyFailure) as info:
        pool.startup(os.urandom(STARTUP_BYTES))
    assert info.value.source == "OS generator"
    with pytest.raises(EntropyFailure):
        pool(32)


def test_a_failing_token_stops_secret_generation_mid_run() -> None:
    pool = EntropyPool()
    with pytest.raises(EntropyUnavailable):
        pool(32)  # not started
    pool.startup(os.urandom(STARTUP_BYTES))
    pool.add_token_bytes(os.urandom(1024))
    first = pool(32)
    assert len(first) == 32 and pool(32) != first
    assert 1 <= random_scalar(pool) < 2**254  # an Rng for protocol code
    with pytest.raises(EntropyFailure) as info:
        pool.add_token_bytes(b"\xff" * 1024)
    assert info.value.source == "token C_GenerateRandom"
    with pytest.raises(EntropyFailure, match="token C_GenerateRandom"):
        pool(32)  # the pool still holds good bytes, but the source is failed


def test_mixed_output_depends_on_both_sources() -> None:
    os_values = [os.urandom(32) for _ in range(2)]
    token = os.urandom(32)
    outs = {mix(token, o, 32, 1) for o in os_values} | {mix(os.urandom(32), os_values[0], 32, 1)}
    assert len(outs) == 3


def _config(softhsm: SoftHsm, tmp_path: Path) -> NodeConfig:
    pin = tmp_path / "pin"
    pin.write_text(user_pin("node0"))
    pin.chmod(0o600)
    return NodeConfig(
        name="node0", data_dir=tmp_path, pkcs11_module=SOFTHSM_MODULE, token_label="node0",
        listen="127.0.0.1:0", pin_file=pin, softhsm2_conf=softhsm.conf,
    )  # fmt: skip


async def test_service_on_a_real_token(softhsm: SoftHsm, tmp_path: Path) -> None:
    async with open_hsm(_config(softhsm, tmp_path)) as hsm, open_entropy(hsm) as entropy:
        seen = {entropy(32) for _ in range(300)}  # more than the pool target: refills
        assert len(seen) == 300
        big = entropy(10000)
        assert len(big) == 10000
        await entropy.reserve(1000)
        assert entropy.pool.pooled >= 1000 * 32
        drained = 0
        while entropy.pool.pooled >= 32:
            entropy(32)
            drained += 1
        with pytest.raises(EntropyUnavailable, match="pool is empty"):
            entropy(32)
        with trio.fail_after(10):  # the background refiller was woken and refills
            while entropy.pool.pooled < 32:  # noqa: ASYNC110 (refills happen in a thread)
                await trio.sleep(0.01)
        assert len(entropy(32)) == 32


async def test_service_refuses_to_start_on_a_stuck_os_source(
    softhsm: SoftHsm, tmp_path: Path
) -> None:
    async with open_hsm(_config(softhsm, tmp_path)) as hsm:
        with pytest.raises(EntropyFailure, match="OS generator"):
            async with open_entropy(hsm, os_source=lambda n: b"\x42" * n):
                pass

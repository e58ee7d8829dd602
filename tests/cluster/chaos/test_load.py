"""The chaos load against the real HTTP front end (127.0.0.1, port 0) over the
in-process fake backend: every 200 is checked (msgHash, key, gamma check), a bad
signature or a wrong key counts as invalid, 503s keep the nodes they name, and a
refused connection is retried until the coordinator answers or the deadline passes."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from cluster.chaos.load import (
    INVALID,
    OK,
    UNAVAILABLE,
    UNREACHABLE,
    Load,
    LoadConfig,
    SignatureCheck,
)
from coordinator.auth import ApiKeyStore
from coordinator.backend import SignResult
from coordinator.http import HttpConfig, serve_http
from protocol.bn254 import G1_GENERATOR, G2_GENERATOR
from protocol.eigenlayer import AvsSignature, hash_to_g1
from protocol.encoding import msg_hash_from_hex
from tests.coordinator.fake_backend import FakeBackend, FakeKey

SK = 0x2F1A_93C4_5D6E_7F80_1234_5678_9ABC_DEF0


@dataclass
class BadSigma(FakeBackend):
    """Signs with the wrong scalar: a well-formed object that fails the gamma check."""

    def _sign_one(self, key: FakeKey, msg_hash: bytes) -> SignResult:
        good = super()._sign_one(key, msg_hash)
        return SignResult(
            good.key_id, good.msg_hash, hash_to_g1(msg_hash) * (SK + 1), good.apk_g1,
            good.apk_g2, good.signers,
        )  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_store() -> tuple[ApiKeyStore, str]:
    store = ApiKeyStore()
    return store, store.add_client("demo", ["operator", "signer"], ["*"])


@asynccontextmanager
async def coordinator(
    backend: FakeBackend, port: int = 0, store: tuple[ApiKeyStore, str] | None = None
) -> AsyncIterator[tuple[str, str]]:
    keys, token = store or demo_store()
    config = HttpConfig(host="127.0.0.1", port=port)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(
            lambda task_status: serve_http(backend, keys, config=config, task_status=task_status)
        )
        yield f"127.0.0.1:{bound}", token
        nursery.cancel_scope.cancel()


def right_check() -> SignatureCheck:
    return SignatureCheck(G1_GENERATOR * SK, G2_GENERATOR * SK)


def new_backend(cls: type[FakeBackend] = FakeBackend) -> FakeBackend:
    backend = cls()
    backend.add_key("k", SK)
    return backend


async def run_load(address: str, token: str, check: SignatureCheck, **cfg: object) -> Load:
    config = LoadConfig(**{"concurrency": 2, "max_rps": 50.0, "max_requests": 4, **cfg})  # type: ignore[arg-type]
    load = Load(address, token, "k", check, config=config, rng=random.Random(1))
    with trio.fail_after(120):
        await load.run(trio.current_time() + 60)
    return load


async def test_every_200_is_checked_and_kept() -> None:
    backend = new_backend()
    async with coordinator(backend) as (address, token):
        load = await run_load(address, token, right_check(), max_requests=3)
    assert load.sent == 3 and load.unverified == 0
    assert [s.outcome for s in load.samples] == [OK] * 3
    assert all(s.done >= s.sent for s in load.samples)
    signed = [c[1][1] for c in backend.signed()]
    assert len(set(signed)) == 3  # a fresh msgHash per request
    kept = load.kept_signatures()
    assert len(kept) == 3
    for obj in kept:
        sig = AvsSignature.from_json(obj, allow_extra=True)
        assert sig.verify()
        assert msg_hash_from_hex(obj["msgHash"], field="msgHash") in signed


async def test_a_wrong_key_or_a_bad_sigma_is_invalid() -> None:
    async with coordinator(new_backend()) as (address, token):
        other = SignatureCheck(G1_GENERATOR * 5, G2_GENERATOR * 5)
        load = await run_load(address, token, other, max_requests=2)
    assert [s.outcome for s in load.samples] == [INVALID] * 2
    assert all("not the key" in s.detail for s in load.samples)
    assert load.kept_signatures() == []
    async with coordinator(new_backend(BadSigma)) as (address, token):
        load = await run_load(address, token, right_check(), max_requests=2)
    assert [s.outcome for s in load.samples] == [INVALID] * 2
    assert all(s.detail == "gamma check failed" for s in load.samples)


async def test_503_keeps_the_missing_nodes() -> None:
    backend = new_backend()
    backend.down = {"node-2", "node-4", "node-5"}
    async with coordinator(backend) as (address, token):
        load = await run_load(address, token, right_check(), max_requests=3)
    assert [s.outcome for s in load.samples] == [UNAVAILABLE] * 3
    assert all(s.status == 503 and s.detail == "not_enough_signers" for s in load.samples)
    assert all(set(s.missing) == {"node-2", "node-4", "node-5"} for s in load.samples)


async def test_refused_connections_are_retried_until_the_coordinator_answers() -> None:
    port = free_port()
    store = demo_store()
    results: list[Load] = []
    finished = trio.Event()

    async def client() -> None:
        load = await run_load(f"127.0.0.1:{port}", store[1], right_check(), max_requests=1)
        results.append(load)
        finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)  # nothing listens yet: the load retries
        await trio.sleep(0.5)
        assert not results
        async with coordinator(new_backend(), port, store):
            with trio.fail_after(60):
                await finished.wait()
    (load,) = results
    (sample,) = load.samples
    assert sample.outcome == OK
    assert sample.attempts > 1


async def test_unreachable_after_the_deadline() -> None:
    load = await run_load(
        f"127.0.0.1:{free_port()}", "t", right_check(), max_requests=1, request_deadline_s=0.5
    )
    (sample,) = load.samples
    assert sample.outcome == UNREACHABLE
    assert sample.attempts >= 2
    assert sample.latency_s >= 0.4


def test_check_refuses_a_malformed_object() -> None:
    check = right_check()
    msg = bytes(32)
    assert check.check(msg, {"msgHash": "0x" + "00" * 32}) is not None
    assert "malformed" in (check.check(msg, "not an object") or "")
    sigma = hash_to_g1(msg) * SK
    good = AvsSignature(msg, sigma, G1_GENERATOR * SK, G2_GENERATOR * SK).to_json()
    assert check.check(msg, good) is None
    assert check.check(b"\x01" * 32, good) == "msgHash is not the one sent"

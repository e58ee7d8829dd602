"""A real HTTP API server on 127.0.0.1 (port 0) over the in-process fake backend,
with one API client per role, for the front-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
import trio

from coordinator.auth import ApiKeyStore
from coordinator.http import HttpConfig, serve_http
from coordinator.metrics import Registry
from tests.coordinator.fake_backend import FakeBackend

CLIENTS: dict[str, tuple[list[str], list[str]]] = {
    "signer-all": (["signer"], ["*"]),
    "signer-k2": (["signer"], ["k2"]),
    "operator": (["operator"], []),
    "auditor": (["auditor"], []),
    "demo": (["operator", "signer"], ["*"]),
}


@dataclass
class Env:
    url: str
    backend: FakeBackend
    store: ApiKeyStore
    tokens: dict[str, str]
    registry: Registry
    http: httpx.AsyncClient

    def auth(self, client: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[client]}"}

    async def post(self, path: str, obj: Any, client: str = "signer-all") -> httpx.Response:
        return await self.http.post(path, json=obj, headers=self.auth(client))

    async def get(self, path: str, client: str | None = "signer-all") -> httpx.Response:
        return await self.http.get(path, headers=self.auth(client) if client else {})


def make_backend(eigen_vectors: dict[str, Any]) -> FakeBackend:
    vec = next(v for v in eigen_vectors["signatureVectors"] if v["id"] == "sk69-hello-world")
    backend = FakeBackend()
    backend.add_key("sk69", int(vec["privateKey"]["dec"]))
    backend.add_key("k2", 5)
    backend.add_key("retired", 7, status="retiring")
    return backend


def make_store() -> tuple[ApiKeyStore, dict[str, str]]:
    store = ApiKeyStore()
    tokens = {cid: store.add_client(cid, roles, keys) for cid, (roles, keys) in CLIENTS.items()}
    return store, tokens


async def start_env(
    nursery: trio.Nursery, backend: FakeBackend, **overrides: Any
) -> AsyncIterator[Env]:
    store, tokens = make_store()
    registry = Registry()
    config = replace(HttpConfig(host="127.0.0.1", port=0), **overrides)
    port = await nursery.start(
        lambda task_status: serve_http(
            backend, store, config=config, metrics=registry, task_status=task_status
        )
    )
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, timeout=20.0) as http:
        yield Env(url, backend, store, tokens, registry, http)


@pytest.fixture
async def env(nursery: trio.Nursery, eigen_vectors: dict[str, Any]) -> AsyncIterator[Env]:
    async for e in start_env(nursery, make_backend(eigen_vectors)):
        yield e
    nursery.cancel_scope.cancel()


@pytest.fixture
def sk69(eigen_vectors: dict[str, Any]) -> dict[str, Any]:
    vec: dict[str, Any] = next(
        v for v in eigen_vectors["signatureVectors"] if v["id"] == "sk69-hello-world"
    )
    return vec

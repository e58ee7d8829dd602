"""Every malformed or unauthorised request gets the right 4xx with a reason, and the
backend's sign is never called for it."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
import trio

from coordinator.auth import RateLimit
from tests.coordinator.http.conftest import Env, make_backend, start_env

GOOD = "0x47173285a8d7341e5e972fc677286384f802f8ef42a5ec5f03bbfa254cb01fad"
JSON = {"Content-Type": "application/json"}

SA = "signer-all"
OK = json.dumps({"msgHash": GOOD}).encode()
TEXT = {"Content-Type": "text/plain"}


def _mh(value: object) -> bytes:
    return json.dumps({"msgHash": value}).encode()


# (name, body bytes, headers beyond auth, client or None, path key, status, code)
CASES: list[tuple[str, bytes, dict[str, str], str | None, str, int, str]] = [
    ("bad hex", _mh("0x" + "zz" * 32), JSON, SA, "sk69", 400, "invalid_field"),
    ("31 bytes", _mh("0x" + "ab" * 31), JSON, SA, "sk69", 400, "invalid_field"),
    ("33 bytes", _mh("0x" + "ab" * 33), JSON, SA, "sk69", 400, "invalid_field"),
    ("no 0x", _mh(GOOD[2:]), JSON, SA, "sk69", 400, "invalid_field"),
    ("number", _mh(5), JSON, SA, "sk69", 400, "invalid_field"),
    ("missing field", b"{}", JSON, SA, "sk69", 400, "missing_field"),
    ("unknown field", json.dumps({"msgHash": GOOD, "x": 1}).encode(), JSON, SA, "sk69", 400,
     "unknown_field"),
    ("duplicate field", f'{{"msgHash": "{GOOD}", "msgHash": "{GOOD}"}}'.encode(), JSON, SA,
     "sk69", 400, "malformed_json"),
    ("non-JSON", b"msgHash=0x00", JSON, SA, "sk69", 400, "malformed_json"),
    ("JSON array", json.dumps([GOOD]).encode(), JSON, SA, "sk69", 400, "malformed_json"),
    ("NaN", b'{"msgHash": NaN}', JSON, SA, "sk69", 400, "malformed_json"),
    ("not UTF-8", b'{"msgHash": "\xff"}', JSON, SA, "sk69", 400, "malformed_json"),
    ("wrong content type", OK, TEXT, SA, "sk69", 415, "unsupported_media_type"),
    ("no content type", OK, {}, SA, "sk69", 415, "unsupported_media_type"),
    ("unknown key", OK, JSON, SA, "nope", 404, "unknown_key"),
    ("key not active", OK, JSON, SA, "retired", 409, "key_not_active"),
    ("bad key id", OK, JSON, SA, "-bad~id", 400, "invalid_field"),
    ("wrong role (operator)", OK, JSON, "operator", "sk69", 403, "forbidden"),
    ("wrong role (auditor)", OK, JSON, "auditor", "sk69", 403, "forbidden"),
    ("key not in signer list", OK, JSON, "signer-k2", "sk69", 403, "forbidden"),
    ("no API key", OK, JSON, None, "sk69", 401, "unauthenticated"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "headers", "client", "key", "status", "code"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_bad_sign_requests_are_refused(
    env: Env,
    body: bytes,
    headers: dict[str, str],
    client: str | None,
    key: str,
    status: int,
    code: str,
) -> None:
    hdrs = {**headers, **(env.auth(client) if client else {})}
    r = await env.http.post(f"/v1/keys/{key}/sign", content=body, headers=hdrs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert isinstance(err["message"], str) and err["message"]
    assert env.backend.signed() == []


@pytest.mark.parametrize(
    "auth",
    [
        "Bearer tkms_0000000000000000_" + "A" * 43,  # well-formed, unknown
        "Bearer not-a-token",
        "Basic dXNlcjpwYXNz",
        "Bearer",
    ],
)
async def test_bad_api_keys_are_401(env: Env, auth: str) -> None:
    r = await env.http.post(
        "/v1/keys/sk69/sign", json={"msgHash": GOOD}, headers={"Authorization": auth}
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert env.backend.signed() == []


async def test_a_tampered_real_key_is_401(env: Env) -> None:
    token = env.tokens["signer-all"]
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    r = await env.http.post(
        "/v1/keys/sk69/sign",
        json={"msgHash": GOOD},
        headers={"Authorization": f"Bearer {tampered}"},
    )
    assert r.status_code == 401
    assert env.backend.signed() == []


async def test_oversized_body_is_413(nursery: trio.Nursery, eigen_vectors: dict[str, Any]) -> None:
    backend = make_backend(eigen_vectors)
    async for env in start_env(nursery, backend, max_body_bytes=200):
        padding = "x" * 300
        r = await env.http.post(
            "/v1/keys/sk69/sign",
            content=json.dumps({"msgHash": GOOD, "p": padding}).encode(),
            headers={**JSON, **env.auth("signer-all")},
        )
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "body_too_large"

        async def chunks() -> Any:  # no Content-Length: counted while reading
            for _ in range(10):
                yield b"x" * 64

        r = await env.http.post(
            "/v1/keys/sk69/sign", content=chunks(), headers={**JSON, **env.auth("signer-all")}
        )
        assert r.status_code == 413
        assert backend.signed() == []
        r = await env.post("/v1/keys/sk69/sign", {"msgHash": GOOD})  # the server still serves
        assert r.status_code == 200


async def test_unknown_route_and_wrong_method(env: Env) -> None:
    r = await env.get("/v2/keys")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await env.http.put("/v1/keys/sk69/sign", headers=env.auth("demo"))
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "POST"
    r = await env.get("/v1/keys/import")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = await env.http.get("/v1/keys/sk69/sign?x=1", headers=env.auth("demo"))
    assert r.status_code == 405
    r = await env.get("/v1/keys?limit=3")
    assert r.status_code == 400 and r.json()["error"]["field"] == "query"
    r = await env.http.request("GET", "/v1/keys", content=b"{}", headers=env.auth("demo"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "unexpected_body"
    assert env.backend.signed() == []


async def test_rate_limit_gives_429_with_retry_after(
    nursery: trio.Nursery, eigen_vectors: dict[str, Any]
) -> None:
    backend = make_backend(eigen_vectors)
    async for env in start_env(nursery, backend, rate_limit=RateLimit(0.01, 2)):
        statuses = [(await env.get("/v1/keys")).status_code for _ in range(2)]
        assert statuses == [200, 200]
        r = await env.post("/v1/keys/sk69/sign", {"msgHash": GOOD})
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["retry-after"]) >= 1
        assert backend.signed() == []
        # buckets are per client: another client is unaffected
        assert (await env.get("/v1/keys", client="auditor")).status_code == 200


async def test_allowlist_refuses_other_sources(
    nursery: trio.Nursery, eigen_vectors: dict[str, Any]
) -> None:
    backend = make_backend(eigen_vectors)
    async for env in start_env(nursery, backend, allow_networks=("10.0.0.0/8", "::1/128")):
        for path in ("/healthz", "/v1/keys"):
            r = await env.get(path)
            assert r.status_code == 403
            assert r.json()["error"]["code"] == "address_not_allowed"
        r = await env.post("/v1/keys/sk69/sign", {"msgHash": GOOD})
        assert r.status_code == 403
        assert backend.calls == []
    async for env in start_env(nursery, backend, allow_networks=("127.0.0.0/8",)):
        assert (await env.get("/v1/keys")).status_code == 200


async def test_malformed_http_is_400_and_huge_headers_431(env: Env) -> None:
    host, port = env.url.removeprefix("http://").split(":")
    for raw, status in (
        (b"GARBAGE\r\n\r\n", 400),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: "
            + b"a" * 40000
            + b"\r\n\r\n",
            431,
        ),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200),
    ):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(raw)
            data = b""
            with trio.fail_after(10):
                while chunk := await stream.receive_some(65536):
                    data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert re.match(rb"HTTP/1.1 (\d+) ", head) is not None
        assert int(head.split()[1]) == status
        assert ("error" in json.loads(body)) == (status != 200)


async def test_refused_requests_are_counted(env: Env) -> None:
    await env.http.post("/v1/keys/sk69/sign", json={"msgHash": "0x00"}, headers=env.auth("demo"))
    counter = env.registry.counter("tkms_http_requests_total", "", ("route", "method", "status"))
    assert counter.get(route="/v1/keys/{key_id}/sign", method="POST", status="400") == 1


def test_httpx_is_the_client() -> None:
    assert httpx.__version__  # the test extra provides it


async def test_backend_bug_is_500_without_details_and_server_survives(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(env.backend, "sign", broken)
    r = await env.post("/v1/keys/sk69/sign", {"msgHash": GOOD})
    assert r.status_code == 500
    assert r.json() == {"error": {"code": "internal_error", "message": "internal error"}}
    assert (await env.get("/v1/keys")).status_code == 200


async def test_slow_backend_is_504(nursery: trio.Nursery, eigen_vectors: dict[str, Any]) -> None:
    backend = make_backend(eigen_vectors)

    async def slow(*args: Any, **kwargs: Any) -> Any:
        await trio.sleep(30)

    backend.sign = slow  # type: ignore[method-assign]
    async for env in start_env(nursery, backend, sign_timeout_s=0.2):
        r = await env.post("/v1/keys/sk69/sign", {"msgHash": GOOD})
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "timeout"

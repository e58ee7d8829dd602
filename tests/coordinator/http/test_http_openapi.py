"""docs/openapi.yaml is true to the code: the same routes, every $ref resolves, real
responses validate against the documented schemas, every error code is in api.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import yaml
from jsonschema import Draft202012Validator

from coordinator.auth import ApiKeyStore
from coordinator.http import HttpApp, HttpConfig
from coordinator.metrics import Registry
from tests.coordinator.fake_backend import FakeBackend
from tests.coordinator.http.conftest import Env
from tests.coordinator.http.test_http_key_import import REGISTRATION, import_body

ROOT = Path(__file__).resolve().parents[3]
SPEC: dict[str, Any] = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
METHODS = {"get", "post", "put", "delete", "patch", "head", "options"}


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return out + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _validate(instance: Any, path: str, method: str, status: int) -> None:
    resp = SPEC["paths"][path][method]["responses"][str(status)]
    if "$ref" in resp:
        resp = _resolve(resp["$ref"])
    schema = resp["content"]["application/json"]["schema"]
    Draft202012Validator({**SPEC, **schema}).validate(instance)


def _resolve(ref: str) -> Any:
    node: Any = SPEC
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_version_and_every_ref_resolves() -> None:
    assert SPEC["openapi"].startswith("3.1")
    for ref in _refs(SPEC):
        assert ref.startswith("#/"), ref
        _resolve(ref)


def test_documented_routes_are_exactly_the_app_routes() -> None:
    app = HttpApp(FakeBackend(), ApiKeyStore(), HttpConfig(), Registry())
    in_code = {(r.method.lower(), r.template) for r in app.router.routes}
    documented = {(m, p) for p, ops in SPEC["paths"].items() for m in ops if m in METHODS}
    assert in_code == documented
    for r in app.router.routes:
        op = SPEC["paths"][r.template][r.method.lower()]
        public = r.access in ("health", "metrics")
        assert (op.get("security") == [{}]) == public, r.template
        assert ("requestBody" in op) == r.json_body, r.template
        if r.access != "health":
            assert any(s.startswith("4") for s in op["responses"]), r.template


def test_every_error_code_is_documented() -> None:
    api_md = (ROOT / "docs" / "api.md").read_text()
    codes: set[str] = set()
    for py in (ROOT / "coordinator" / "http").glob("*.py"):
        codes |= set(re.findall(r'ApiError\(\s*\d{3},\s*"([a-z_]+)"', py.read_text()))
    assert len(codes) >= 20
    for code in sorted(codes):
        assert f"`{code}`" in api_md, code


async def test_real_responses_match_the_schemas(env: Env, sk69: dict[str, Any]) -> None:
    msg = sk69["msgHash"]
    statuses: set[int] = set()
    key, sign, batch = "/v1/keys/{key_id}", "/v1/keys/{key_id}/sign", "/v1/keys/{key_id}/sign-batch"

    def check(resp: httpx.Response, path: str, method: str) -> None:
        _validate(resp.json(), path, method, resp.status_code)
        statuses.add(resp.status_code)

    check(await env.get("/healthz", None), "/healthz", "get")
    check(await env.get("/v1/keys"), "/v1/keys", "get")
    check(await env.get("/v1/keys/sk69"), key, "get")
    check(await env.get("/v1/keys/nope"), key, "get")
    check(await env.post("/v1/keys/sk69/sign", {"msgHash": msg}), sign, "post")
    check(await env.post("/v1/keys/sk69/sign", {"msgHash": "0x1"}), sign, "post")
    for _ in range(2):  # created, then key_exists
        check(
            await env.post("/v1/dkg", {"keyId": "d", "threshold": 3}, "operator"), "/v1/dkg", "post"
        )
    for client in ("signer-all", "operator"):
        check(await env.http.delete("/v1/keys/d", headers=env.auth(client)), key, "delete")
    env.backend.failing_hashes.add(bytes(32))
    hashes = {"msgHashes": [msg, "0x" + "00" * 32]}
    check(await env.post("/v1/keys/sk69/sign-batch", hashes), batch, "post")
    opening = await env.post("/v1/keys/import/open", {"keyId": "i"}, "operator")
    check(opening, "/v1/keys/import/open", "post")
    body = import_body(env, opening.json(), key_id="i", sk=4242)
    for _ in range(2):  # created, then key_exists
        check(await env.post("/v1/keys/import", body, "operator"), "/v1/keys/import", "post")
    reg = "/v1/keys/{key_id}/registration"
    check(await env.post("/v1/keys/i/registration", REGISTRATION), reg, "post")
    check(await env.post("/v1/keys/i/registration", {**REGISTRATION, "chainId": -1}), reg, "post")
    env.backend.down = {"node-1", "node-2", "node-3"}
    check(await env.get("/healthz", None), "/healthz", "get")
    check(await env.post("/v1/keys/sk69/sign", {"msgHash": msg}), sign, "post")
    assert statuses == {200, 201, 400, 403, 404, 409, 503}


def test_the_fake_backend_has_every_backend_method_with_the_same_signature() -> None:
    import inspect

    from coordinator.backend import Backend

    methods = [m for m in vars(Backend) if not m.startswith("_")]
    assert {"sign", "sign_batch", "health", "run_dkg", "import_key"} <= set(methods)
    for name in methods:
        want = inspect.signature(getattr(Backend, name))
        got = inspect.signature(getattr(FakeBackend, name))
        assert list(want.parameters) == list(got.parameters), name
        assert [p.kind for p in want.parameters.values()] == [
            p.kind for p in got.parameters.values()
        ], name

"""Key listing, destroy, DKG and import requests, /healthz and /metrics over a real
socket."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.coordinator.http.conftest import Env

# One line of the Prometheus text format 0.0.4: comment, or sample with labels.
_SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})?'
    r" (-?[0-9.e+-]+|[+-]Inf|NaN)$"
)
_COMMENT = re.compile(r"^# (HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* "
                      r"(counter|gauge|histogram|summary|untyped))$")  # fmt: skip


def _dec(v: dict[str, str]) -> str:
    return v["dec"]


async def test_key_public_data_matches_the_vector(env: Env, sk69: dict[str, Any]) -> None:
    r = await env.get("/v1/keys/sk69", client="auditor")
    assert r.status_code == 200, r.text
    k = r.json()
    assert k["keyId"] == "sk69" and k["status"] == "active"
    assert (k["threshold"], k["n"], k["epoch"]) == (3, 5, 1)
    assert k["holders"] == ["node-1", "node-2", "node-3", "node-4", "node-5"]
    assert k["pubkeyG1"] == {"X": _dec(sk69["pubkeyG1"]["X"]), "Y": _dec(sk69["pubkeyG1"]["Y"])}
    assert k["pubkeyG2"] == {
        "X": [_dec(c) for c in sk69["pubkeyG2"]["X"]],
        "Y": [_dec(c) for c in sk69["pubkeyG2"]["Y"]],
    }
    assert k["operatorId"] == sk69["encodings"]["operatorId"]
    assert re.fullmatch(r"0x[0-9a-f]{64}", k["transcriptHash"])


async def test_list_keys(env: Env) -> None:
    r = await env.get("/v1/keys", client="signer-k2")
    assert r.status_code == 200
    assert [k["keyId"] for k in r.json()["keys"]] == ["sk69", "k2", "retired"]
    r = await env.get("/v1/keys", client=None)
    assert r.status_code == 401


async def test_destroy_needs_operator_then_the_key_cannot_sign(
    env: Env, sk69: dict[str, Any]
) -> None:
    r = await env.http.delete("/v1/keys/k2", headers=env.auth("signer-all"))
    assert r.status_code == 403
    assert ("destroy_key", "k2") not in env.backend.calls
    r = await env.http.delete("/v1/keys/k2", headers=env.auth("operator"))
    assert r.status_code == 200 and r.json() == {"destroyed": "k2"}
    r = await env.post("/v1/keys/k2/sign", {"msgHash": sk69["msgHash"]})
    assert r.status_code == 409
    assert r.json()["error"] == {
        "code": "key_not_active",
        "message": "key 'k2' is destroyed, not active",
        "keyId": "k2",
        "keyStatus": "destroyed",
    }
    r = await env.http.delete("/v1/keys/nope", headers=env.auth("operator"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_key"


async def test_dkg(env: Env) -> None:
    r = await env.post("/v1/dkg", {"keyId": "fresh", "threshold": 3}, client="operator")
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/v1/keys/fresh"
    assert r.json()["keyId"] == "fresh" and r.json()["status"] == "active"
    assert ("run_dkg", ("fresh", 3, None, "operator")) in env.backend.calls
    r = await env.post("/v1/dkg", {"keyId": "f2", "threshold": 3, "minHolders": 4}, "demo")
    assert r.status_code == 201
    assert ("run_dkg", ("f2", 3, 4, "demo")) in env.backend.calls
    r = await env.post("/v1/dkg", {"keyId": "fresh", "threshold": 3}, client="operator")
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_exists"


@pytest.mark.parametrize(
    ("body", "client", "status", "field"),
    [
        ({"keyId": "x", "threshold": 3}, "signer-all", 403, None),
        ({"keyId": "x", "threshold": 1}, "operator", 400, "threshold"),
        ({"keyId": "x", "threshold": True}, "operator", 400, "threshold"),
        ({"keyId": "x", "threshold": 3.0}, "operator", 400, "threshold"),
        ({"keyId": "x", "threshold": 3, "minHolders": 2}, "operator", 400, "minHolders"),
        ({"keyId": "import", "threshold": 3}, "operator", 400, "keyId"),
        ({"keyId": "a/b", "threshold": 3}, "operator", 400, "keyId"),
        ({"keyId": "x" * 65, "threshold": 3}, "operator", 400, "keyId"),
        ({"threshold": 3}, "operator", 400, "keyId"),
        ({"keyId": "x", "threshold": 3, "n": 5}, "operator", 400, "n"),
    ],
)
async def test_dkg_refusals(
    env: Env, body: dict[str, Any], client: str, status: int, field: str | None
) -> None:
    r = await env.post("/v1/dkg", body, client=client)
    assert r.status_code == status, r.text
    assert r.json()["error"].get("field") == field
    assert not [c for c in env.backend.calls if c[0] == "run_dkg"]


# Key import over HTTP: tests/coordinator/http/test_http_key_import.py.


async def test_healthz_shape_and_status(env: Env) -> None:
    r = await env.get("/healthz", client=None)
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "ok" and h["nodesUp"] == 5 and h["nodesTotal"] == 5
    assert h["nodes"][0] == {"name": "node-1", "up": True}
    assert {k["keyId"]: k["canSign"] for k in h["keys"]} == {
        "sk69": True,
        "k2": True,
        "retired": False,
    }
    assert set(h["keys"][0]) == {"keyId", "status", "threshold", "holdersUp", "canSign"}
    env.backend.down = {"node-5"}
    h = (await env.get("/healthz", client=None)).json()
    assert h["status"] == "degraded"
    assert h["nodes"][4] == {"name": "node-5", "up": False, "detail": "connection refused"}
    env.backend.down = {"node-1", "node-2", "node-3"}
    r = await env.get("/healthz", client=None)
    assert r.status_code == 503
    assert r.json()["status"] == "unavailable"
    assert all(not k["canSign"] for k in r.json()["keys"])


async def test_metrics_parse_and_count(env: Env, sk69: dict[str, Any]) -> None:
    for _ in range(3):
        await env.post("/v1/keys/sk69/sign", {"msgHash": sk69["msgHash"]})
    await env.post("/v1/keys/sk69/sign", {"msgHash": "0x12"})
    await env.get("/nowhere")
    env.backend.down = {"node-4"}
    env.backend.partial_failures = {"node-2": 7}
    r = await env.get("/metrics", client=None)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = r.text.splitlines()
    assert r.text.endswith("\n")
    for line in lines:
        assert _COMMENT.match(line) or _SAMPLE.match(line), line
    pairs = [line.rsplit(" ", 1) for line in lines if not line.startswith("#")]
    samples = {name: float(value) for name, value in pairs}
    sign = 'route="/v1/keys/{key_id}/sign",method="POST"'
    assert samples[f'tkms_http_requests_total{{{sign},status="200"}}'] == 3
    assert samples[f'tkms_http_requests_total{{{sign},status="400"}}'] == 1
    assert samples['tkms_http_requests_total{route="unmatched",method="GET",status="404"}'] == 1
    assert samples[f"tkms_http_request_duration_seconds_count{{{sign}}}"] == 4
    assert samples[f'tkms_http_request_duration_seconds_bucket{{{sign},le="+Inf"}}'] == 4
    assert samples["tkms_nodes_up"] == 4
    assert samples['tkms_node_up{node="node-4"}'] == 0
    assert samples['tkms_node_up{node="node-1"}'] == 1
    assert samples['tkms_node_partial_failures_total{node="node-2"}'] == 7
    assert samples['tkms_key_can_sign{key_id="retired"}'] == 0
    assert "# TYPE tkms_http_request_duration_seconds histogram" in lines


async def test_other_modules_counters_appear_in_metrics(env: Env) -> None:
    c = env.registry.counter("tkms_test_widgets_total", "Widgets.", ("kind",))
    c.inc(kind="blue")
    r = await env.get("/metrics", client=None)
    assert 'tkms_test_widgets_total{kind="blue"} 1' in r.text.splitlines()

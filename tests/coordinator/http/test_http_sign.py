"""Signing through the HTTP API: the spec section 7 object equals the vector,
sign-batch keeps request order with per-item errors, too few nodes give 503."""

from __future__ import annotations

from typing import Any

from protocol.eigenlayer import AvsSignature, verify_signature
from tests.coordinator.http.conftest import Env


async def test_sign_returns_the_vector_object(env: Env, sk69: dict[str, Any]) -> None:
    r = await env.post("/v1/keys/sk69/sign", {"msgHash": sk69["msgHash"]})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    expected = sk69["avsSignature"]
    for name in ("msgHash", "sigma", "apkG1", "apkG2"):
        assert body[name] == expected[name], name
    assert set(body) == {"msgHash", "sigma", "apkG1", "apkG2", "keyId", "signers"}
    assert body["keyId"] == "sk69"
    assert body["signers"] == ["node-1", "node-2", "node-3"]
    assert env.backend.signed() == [
        ("sign", ("sk69", bytes.fromhex(sk69["msgHash"][2:]), "signer-all"))
    ]


async def test_x_api_key_header_is_accepted(env: Env, sk69: dict[str, Any]) -> None:
    r = await env.http.post(
        "/v1/keys/sk69/sign",
        json={"msgHash": sk69["msgHash"]},
        headers={"X-Api-Key": env.tokens["demo"]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["sigma"] == sk69["avsSignature"]["sigma"]


async def test_sign_batch_keeps_order_and_reports_item_errors(
    env: Env, sk69: dict[str, Any], eigen_vectors: dict[str, Any]
) -> None:
    others = [v["msgHash"] for v in eigen_vectors["signatureVectors"] if v["id"] != sk69["id"]]
    hashes = [others[0], sk69["msgHash"], others[1], others[2], sk69["msgHash"]]
    env.backend.failing_hashes.add(bytes.fromhex(others[1][2:]))
    r = await env.post("/v1/keys/sk69/sign-batch", {"msgHashes": hashes})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["keyId"] == "sk69"
    results = body["results"]
    assert [item["msgHash"] for item in results] == hashes
    assert set(results[2]) == {"msgHash", "error"}
    assert results[2]["error"]["code"] == "not_enough_signers"
    for i in (1, 4):
        for name in ("msgHash", "sigma", "apkG1", "apkG2"):
            assert results[i][name] == sk69["avsSignature"][name]
    assert results[0]["sigma"] != results[3]["sigma"]
    for i in (0, 1, 3, 4):  # the on-chain gamma check accepts every returned object
        sig = AvsSignature.from_json(results[i], allow_extra=True)
        assert verify_signature(sig.msg_hash, sig.apk_g1, sig.apk_g2, sig.sigma)
    assert len(env.backend.signed()) == 1  # one fan-out for the whole batch


async def test_sign_batch_size_limits(env: Env, sk69: dict[str, Any]) -> None:
    r = await env.post("/v1/keys/sk69/sign-batch", {"msgHashes": []})
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "msgHashes"
    r = await env.post("/v1/keys/sk69/sign-batch", {"msgHashes": [sk69["msgHash"]] * 257})
    assert r.status_code == 400
    assert "256" in r.json()["error"]["message"]
    bad = [sk69["msgHash"], "0x" + "ab" * 31]
    r = await env.post("/v1/keys/sk69/sign-batch", {"msgHashes": bad})
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "msgHashes[1]"
    assert env.backend.signed() == []


async def test_not_enough_signers_is_503_naming_the_nodes(env: Env, sk69: dict[str, Any]) -> None:
    env.backend.down = {"node-2", "node-4", "node-5"}
    r = await env.post("/v1/keys/sk69/sign", {"msgHash": sk69["msgHash"]})
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "not_enough_signers"
    assert err["missing"] == ["node-2", "node-4", "node-5"]
    assert err["needed"] == 3 and err["got"] == 2
    assert "node-4" in err["message"]
    assert r.headers["retry-after"] == "1"


async def test_signer_with_a_key_list(env: Env, sk69: dict[str, Any]) -> None:
    r = await env.post("/v1/keys/k2/sign", {"msgHash": sk69["msgHash"]}, client="signer-k2")
    assert r.status_code == 200, r.text
    assert r.json()["keyId"] == "k2"
    r = await env.post("/v1/keys/sk69/sign", {"msgHash": sk69["msgHash"]}, client="signer-k2")
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"

"""Key import and the registration signature over the real HTTP API (fake backend
with fake nodes that really open, check, decrypt and sign; tests/coordinator/
fake_import.py). The request body holds public data and ciphertexts only: the old
keystore/password body is refused."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.bn254 import g1_mul_generator
from protocol.encoding import g1_to_json
from protocol.import_json import bundle_to_json, opens_from_json
from protocol.key_import import ImportTranscript, verify_import_transcript
from protocol.rng import seeded_rng
from tests.coordinator.fake_import import make_bundle
from tests.coordinator.http.conftest import Env

REGISTRATION = {
    "operator": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "registryCoordinator": "0xa82fF9aFd8f496c3d6ac40E2a0F282E47488CFc9",
    "chainId": 31337,
}


def import_body(
    env: Env,
    opening: dict[str, Any],
    *,
    key_id: str,
    sk: int,
    threshold: int = 3,
    min_holders: int | None = None,
) -> dict[str, Any]:
    """What ``tkms key import`` posts after checking the opens."""
    bundle = make_bundle(
        env.backend.import_nodes,
        opens_from_json(opening),
        key_id=key_id,
        sk=sk,
        threshold=threshold,
        rng=seeded_rng(key_id.encode()),
    )
    return bundle_to_json(bundle, min_holders=min_holders)


async def test_open_import_commit(env: Env) -> None:
    r = await env.post("/v1/keys/import/open", {"keyId": "imp"}, client="operator")
    assert r.status_code == 200, r.text
    opening = r.json()
    assert [o["node"] for o in opening["opens"]] == list(env.backend.nodes)
    assert opening["missing"] == [] and opening["epoch"] == 0
    body = import_body(env, opening, key_id="imp", sk=123456789)
    assert set(body) == {
        "keyId", "threshold", "commitments", "pubkeyG2", "ephemeralKey", "opens", "shares",
    }  # fmt: skip
    r = await env.post("/v1/keys/import", body, client="operator")
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/v1/keys/imp"
    key = r.json()
    assert key["pubkeyG1"] == g1_to_json(g1_mul_generator(123456789))
    transcript = ImportTranscript.from_json(key["transcript"])
    check = verify_import_transcript(transcript.encode(), env.backend.import_nodes.manifest)
    assert check.valid, check.reason
    assert transcript.bundle.holders == (1, 2, 3, 4, 5)
    (call,) = [c for c in env.backend.calls if c[0] == "import_key"]
    assert call[1][0] == "imp" and call[1][1] == transcript.bundle


async def test_existing_key_ids_are_refused(env: Env) -> None:
    r = await env.post("/v1/keys/import/open", {"keyId": "sk69"}, client="operator")
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_exists"
    r = await env.post("/v1/keys/import/open", {"keyId": "fresh"}, client="operator")
    body = import_body(env, r.json(), key_id="fresh", sk=77)
    env.backend.add_key("fresh", 5)  # someone took the id meanwhile
    r = await env.post("/v1/keys/import", body, client="operator")
    assert r.status_code == 409 and r.json()["error"]["keyId"] == "fresh"
    assert env.backend.keys["fresh"].sk == 5


async def test_down_nodes_and_min_holders(env: Env) -> None:
    env.backend.down = {"node-4", "node-5"}
    r = await env.post("/v1/keys/import/open", {"keyId": "mh"}, client="operator")
    assert r.status_code == 503 and r.json()["error"]["missing"] == ["node-4", "node-5"]
    r = await env.post("/v1/keys/import/open", {"keyId": "mh", "minHolders": 3}, "operator")
    assert r.status_code == 200
    assert [m["node"] for m in r.json()["missing"]] == ["node-4", "node-5"]
    body = import_body(env, r.json(), key_id="mh", sk=99, min_holders=3)
    r = await env.post("/v1/keys/import", body, client="operator")
    assert r.status_code == 201, r.text
    assert ImportTranscript.from_json(r.json()["transcript"]).bundle.holders == (1, 2, 3)


@pytest.mark.parametrize("client", ["signer-all", "auditor"])
async def test_import_needs_the_operator_role(env: Env, client: str) -> None:
    for path in ("/v1/keys/import/open", "/v1/keys/import"):
        r = await env.post(path, {"keyId": "x"}, client=client)
        assert r.status_code == 403, r.text
    assert not [c for c in env.backend.calls if "import" in c[0]]


def _tamper(body: dict[str, Any], what: str) -> dict[str, Any]:
    out = {**body}
    if what == "keystore":
        out["keystore"] = {"crypto": {}}
    elif what == "password":
        out["password"] = {"inline": "hunter2"}
    elif what == "off-curve":
        out["commitments"] = [{"X": "1", "Y": "3"}, *body["commitments"][1:]]
    elif what == "short-ciphertext":
        out["shares"] = [{"index": 1, "ciphertext": "0x00"}, *body["shares"][1:]]
    elif what == "threshold":
        out["threshold"] = 2
    elif what == "min-holders":
        out["minHolders"] = 2
    elif what == "opens":
        out["opens"] = ["0x" + "00" * 40, *body["opens"][1:]]
    elif what == "ephemeral":
        out["ephemeralKey"] = "0x1234"
    return out


@pytest.mark.parametrize(
    ("what", "code", "field"),
    [
        ("keystore", "unknown_field", "keystore"),
        ("password", "unknown_field", "password"),
        ("off-curve", "invalid_field", "commitments[0]"),
        ("short-ciphertext", "invalid_field", "shares[0].ciphertext"),
        ("threshold", "invalid_field", "commitments"),
        ("min-holders", "invalid_field", "minHolders"),
        ("opens", "invalid_field", "opens[0]"),
        ("ephemeral", "invalid_field", "ephemeralKey"),
    ],
)
async def test_malformed_bundles_never_reach_the_backend(
    env: Env, what: str, code: str, field: str
) -> None:
    r = await env.post("/v1/keys/import/open", {"keyId": "bad"}, client="operator")
    body = import_body(env, r.json(), key_id="bad", sk=31337)
    r = await env.post("/v1/keys/import", _tamper(body, what), client="operator")
    assert r.status_code == 400, r.text
    assert (r.json()["error"]["code"], r.json()["error"]["field"]) == (code, field)
    assert not [c for c in env.backend.calls if c[0] == "import_key"]
    assert "bad" not in env.backend.keys


async def test_a_bundle_for_other_opens_is_refused_by_the_nodes(env: Env) -> None:
    first = (await env.post("/v1/keys/import/open", {"keyId": "k1"}, "operator")).json()
    body = import_body(env, first, key_id="k1", sk=5)
    body["shares"] = [body["shares"][1], body["shares"][0], *body["shares"][2:]]
    r = await env.post("/v1/keys/import", body, client="operator")
    assert r.status_code == 400 and "k1" not in env.backend.keys


async def test_registration_reproduces_the_vector(env: Env, eigen_vectors: dict[str, Any]) -> None:
    vec = eigen_vectors["registrationVectors"][0]
    request = {
        "operator": vec["operator"],
        "registryCoordinator": vec["registryCoordinator"],
        "chainId": vec["chainId"],
    }
    assert request == REGISTRATION
    opening = (await env.post("/v1/keys/import/open", {"keyId": "reg"}, "operator")).json()
    body = import_body(env, opening, key_id="reg", sk=int(vec["privateKey"]["dec"]))
    assert (await env.post("/v1/keys/import", body, "operator")).status_code == 201
    r = await env.post("/v1/keys/reg/registration", request)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "pubkeyRegistrationParams": vec["pubkeyRegistrationParams"],
        "abi": vec["pubkeyRegistrationParamsAbiEncoded"],
        "messageHash": vec["calculatePubkeyRegistrationMessageHash"],
    }
    assert [c[0] for c in env.backend.calls][-1] == "sign_point"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"operator": "0xf39fd6e51aad88f6f4ce6ab8827279cfffb9226"}, "operator"),
        ({"operator": "0xF39fd6e51aad88F6F4ce6aB8827279cffFb92266"}, "operator"),  # checksum
        ({"registryCoordinator": 5}, "registryCoordinator"),
        ({"chainId": "31337"}, "chainId"),
        ({"chainId": -1}, "chainId"),
        ({"chainId": True}, "chainId"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_registration_refusals(env: Env, change: dict[str, Any], field: str) -> None:
    r = await env.post("/v1/keys/sk69/registration", {**REGISTRATION, **change})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == field
    assert not [c for c in env.backend.calls if c[0] == "sign_point"]


async def test_registration_needs_the_signer_role_for_the_key(env: Env) -> None:
    r = await env.post("/v1/keys/sk69/registration", REGISTRATION, client="signer-k2")
    assert r.status_code == 403
    r = await env.post("/v1/keys/retired/registration", REGISTRATION)
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_not_active"
    assert not [c for c in env.backend.calls if c[0] == "sign_point"]

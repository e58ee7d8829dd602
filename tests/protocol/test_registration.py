"""The registration answer's JSON (protocol/registration.py) against the registration
vector: the exact object ``tkms avs register-params`` prints, and strict parsing."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from protocol.eigenlayer import (
    RegistrationParams,
    registration_digest,
    registration_message_point,
)
from protocol.encoding import InvalidFormat, g1_from_json
from protocol.errors import DecodeError
from protocol.registration import (
    parse_registration_request,
    registration_from_json,
    registration_json,
    registration_request,
)


@pytest.fixture
def vec(eigen_vectors: dict[str, Any]) -> dict[str, Any]:
    v: dict[str, Any] = eigen_vectors["registrationVectors"][0]
    return v


def _expected(vec: dict[str, Any]) -> dict[str, Any]:
    return {
        "pubkeyRegistrationParams": vec["pubkeyRegistrationParams"],
        "abi": vec["pubkeyRegistrationParamsAbiEncoded"],
        "messageHash": vec["calculatePubkeyRegistrationMessageHash"],
    }


def test_the_answer_is_the_vector(vec: dict[str, Any]) -> None:
    request = {k: vec[k] for k in ("operator", "registryCoordinator", "chainId")}
    operator, coordinator, chain_id = parse_registration_request(request)
    assert registration_request(operator, coordinator, chain_id)["chainId"] == 31337
    point = registration_message_point(operator, coordinator, chain_id)
    sk = int(vec["privateKey"]["dec"])
    p = vec["pubkeyRegistrationParams"]
    params = RegistrationParams(
        signature=point * sk,
        pk_g1=g1_from_json(p["pubkeyG1"], field="pubkeyG1"),
        pk_g2=registration_from_json(_expected(vec))[0].pk_g2,
    )
    digest = registration_digest(operator, coordinator, chain_id)
    assert registration_json(params, digest) == _expected(vec)
    parsed, parsed_digest = registration_from_json(_expected(vec))
    assert parsed == params and parsed_digest == digest and parsed.verify(point)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("abi"), "registration"),
        (lambda d: d.update(extra=1), "registration"),
        (lambda d: d["pubkeyRegistrationParams"].pop("pubkeyG2"), "pubkeyRegistrationParams"),
        (lambda d: d.update(abi=d["abi"][:-2] + "00"), "abi"),
        (lambda d: d["pubkeyRegistrationParams"]["pubkeyG1"].update(X="1"), "pubkeyG1"),
        (lambda d: d.update(messageHash="0x12"), "messageHash"),
    ],
)
def test_strict_parsing(vec: dict[str, Any], mutate: Any, field: str) -> None:
    doc = copy.deepcopy(_expected(vec))
    mutate(doc)
    with pytest.raises(DecodeError) as err:
        registration_from_json(doc)
    assert err.value.field.startswith(field)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"operator": "0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266"}, "operator"),
        (
            {"registryCoordinator": "a82fF9aFd8f496c3d6ac40E2a0F282E47488CFc9"},
            "registryCoordinator",
        ),
        ({"chainId": 2**256}, "chainId"),
        ({"chainId": 1.0}, "chainId"),
    ],
)
def test_bad_requests_name_the_field(vec: dict[str, Any], change: Any, field: str) -> None:
    request = {**{k: vec[k] for k in ("operator", "registryCoordinator", "chainId")}, **change}
    with pytest.raises(InvalidFormat) as err:
        parse_registration_request(request)
    assert err.value.field == field

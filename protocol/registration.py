"""The operator registration signature's JSON forms (spec section 8; DESIGN.md CLI
contract ``tkms avs register-params``).

Request (``POST /v1/keys/{key_id}/registration``): ``{"operator": "0x…",
"registryCoordinator": "0x…", "chainId": N}`` (addresses as 0x + 40 hex digits;
mixed case must be a valid EIP-55 checksum; ``chainId`` a JSON integer in [0, 2^256)).

Answer, also what the CLI prints: ``{"pubkeyRegistrationParams":
{"pubkeyRegistrationSignature": {X, Y}, "pubkeyG1": {X, Y}, "pubkeyG2": {X: [imag,
real], Y: [imag, real]}}, "abi": "0x…", "messageHash": "0x…"}``: the Solidity
struct's field names and order, decimal strings, ``abi`` the static 8-word tuple
encoding, ``messageHash`` the EIP-712 digest
(``calculatePubkeyRegistrationMessageHash(operator)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocol.eigenlayer import RegistrationParams, address_from_hex
from protocol.encoding import InvalidFormat, g1_from_json, g2_from_json, msg_hash_from_hex

REQUEST_FIELDS = frozenset({"operator", "registryCoordinator", "chainId"})
ANSWER_FIELDS = frozenset({"pubkeyRegistrationParams", "abi", "messageHash"})
PARAMS_FIELDS = frozenset({"pubkeyRegistrationSignature", "pubkeyG1", "pubkeyG2"})


def registration_request(
    operator: bytes, registry_coordinator: bytes, chain_id: int
) -> dict[str, Any]:
    return {
        "operator": "0x" + operator.hex(),
        "registryCoordinator": "0x" + registry_coordinator.hex(),
        "chainId": chain_id,
    }


def chain_id_from(value: Any, field: str = "chainId") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 256:
        raise InvalidFormat(field, "must be an integer in [0, 2^256)")
    return value


def parse_registration_request(obj: Mapping[str, Any]) -> tuple[bytes, bytes, int]:
    """(operator, registry coordinator, chain id) of a request object whose field set
    was already checked. Raises ``InvalidFormat`` naming the field."""
    return (
        address_from_hex(obj["operator"], field="operator"),
        address_from_hex(obj["registryCoordinator"], field="registryCoordinator"),
        chain_id_from(obj["chainId"]),
    )


def registration_json(params: RegistrationParams, message_hash: bytes) -> dict[str, Any]:
    return {
        "pubkeyRegistrationParams": params.to_json(),
        "abi": "0x" + params.abi_encode().hex(),
        "messageHash": "0x" + message_hash.hex(),
    }


def registration_from_json(obj: Any) -> tuple[RegistrationParams, bytes]:
    """(params, message hash) of an answer; strict (exact fields, points validated, the
    ``abi`` field must be the encoding of the params)."""
    if not isinstance(obj, Mapping) or set(obj) != ANSWER_FIELDS:
        raise InvalidFormat("registration", f"must have exactly the fields {sorted(ANSWER_FIELDS)}")
    inner = obj["pubkeyRegistrationParams"]
    if not isinstance(inner, Mapping) or set(inner) != PARAMS_FIELDS:
        raise InvalidFormat(
            "pubkeyRegistrationParams", f"must have exactly the fields {sorted(PARAMS_FIELDS)}"
        )
    params = RegistrationParams(
        signature=g1_from_json(
            inner["pubkeyRegistrationSignature"], field="pubkeyRegistrationSignature"
        ),
        pk_g1=g1_from_json(inner["pubkeyG1"], field="pubkeyG1"),
        pk_g2=g2_from_json(inner["pubkeyG2"], field="pubkeyG2"),
    )
    if obj["abi"] != "0x" + params.abi_encode().hex():
        raise InvalidFormat("abi", "is not the ABI encoding of pubkeyRegistrationParams")
    return params, msg_hash_from_hex(obj["messageHash"], field="messageHash")

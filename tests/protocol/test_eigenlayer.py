"""EigenLayer conventions reproduced bit for bit from tests/vectors/eigenlayer_bn254.json,
plus hash-to-G1 against a plain re-statement of spec section 4 and the spec-12 traps."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from py_ecc import bn128

from protocol import bls
from protocol.bn254 import (
    G1,
    G1_GENERATOR,
    G1_INFINITY,
    G2,
    G2_GENERATOR,
    G2_INFINITY,
    P,
    R,
    prepare_g2,
)
from protocol.eigenlayer import (
    EIP712_DOMAIN_TYPEHASH,
    NEG_G2,
    PUBKEY_REGISTRATION_TYPEHASH,
    REGISTRY_COORDINATOR_NAME,
    REGISTRY_COORDINATOR_VERSION,
    ZERO_PK_HASH,
    AvsSignature,
    RegistrationParams,
    address_from_hex,
    checksum_address,
    hash_to_g1,
    hash_to_g1_with_increments,
    operator_id,
    pairing_check_points,
    pairing_precompile_input,
    registration_check_points,
    registration_digest,
    registration_domain_separator,
    registration_gamma,
    registration_message_point,
    registration_precompile_input,
    registration_struct_hash,
    signature_gamma,
    verify_registration,
    verify_signature,
)
from protocol.encoding import InvalidFormat, g1_to_json, g2_to_json, msg_hash_from_hex
from protocol.errors import DecodeError, InvalidLength
from protocol.hashing import keccak256
from tests.protocol.vector_helpers import by_id, g1, g2, hexbytes, ids, num

SIG_IDS = ids("signatureVectors")

# --------------------------------------------------------------------------- constants


def test_constants_match_the_vectors(eigen_vectors: dict[str, Any]) -> None:
    c = eigen_vectors["constants"]
    assert num(c["p"]) == P == bn128.field_modulus
    assert num(c["r"]) == R == bn128.curve_order
    assert num(c["sqrtExponent"]) == (P + 1) // 4
    assert g1(c["G1"]) == G1_GENERATOR
    assert g2(c["G2"]) == G2_GENERATOR
    assert g2(c["negG2"]) == NEG_G2
    assert hexbytes(c["PUBKEY_REGISTRATION_TYPEHASH"]) == PUBKEY_REGISTRATION_TYPEHASH
    assert hexbytes(c["EIP712_DOMAIN_TYPEHASH"]) == EIP712_DOMAIN_TYPEHASH
    assert c["registryCoordinatorEip712"] == {
        "name": REGISTRY_COORDINATOR_NAME,
        "version": REGISTRY_COORDINATOR_VERSION,
    }
    assert hexbytes(c["ZERO_PK_HASH"]) == ZERO_PK_HASH == operator_id(G1_INFINITY)


def test_generator_g2_matches_py_ecc_with_imag_first_solidity_order(
    eigen_vectors: dict[str, Any],
) -> None:
    """Top-level crossChecks 1 and 2: Solidity X = [imag, real] is py_ecc's G2."""
    sol = eigen_vectors["constants"]["G2"]
    x, y = bn128.G2
    assert [num(v) for v in sol["X"]] == [x.coeffs[1], x.coeffs[0]]
    assert [num(v) for v in sol["Y"]] == [y.coeffs[1], y.coeffs[0]]
    neg = bn128.neg(bn128.G2)
    assert [num(v) for v in eigen_vectors["constants"]["negG2"]["Y"]] == [
        neg[1].coeffs[1],
        neg[1].coeffs[0],
    ]
    assert all(check["match"] is True for check in eigen_vectors["crossChecks"])


# --------------------------------------------------------------------------- signature vectors


@pytest.mark.parametrize("vid", SIG_IDS)
def test_signature_vector(eigen_vectors: dict[str, Any], vid: str) -> None:
    v = by_id(eigen_vectors, "signatureVectors", vid)
    msg = msg_hash_from_hex(v["msgHash"])
    sk = num(v["privateKey"])

    h, increments = hash_to_g1_with_increments(msg)
    assert h == g1(v["hashToG1"])
    assert increments == v["hashToG1Increments"]

    kp = bls.keypair_from_secret(sk)
    assert kp.pk_g1 == g1(v["pubkeyG1"])
    assert kp.pk_g2 == g2(v["pubkeyG2"])
    gnark = v["pubkeyG2Gnark"]
    assert kp.pk_g2.x == (int(gnark["X"]["A0"]), int(gnark["X"]["A1"]))
    assert kp.pk_g2.y == (int(gnark["Y"]["A0"]), int(gnark["Y"]["A1"]))
    # independent oracle for the keys
    ox, oy = bn128.multiply(bn128.G2, sk)
    assert kp.pk_g2.x == tuple(ox.coeffs) and kp.pk_g2.y == tuple(oy.coeffs)

    sigma = bls.sign(sk, msg)
    assert sigma == g1(v["sigma"])
    assert signature_gamma(msg, kp.pk_g1, kp.pk_g2, sigma) == num(v["gamma"])

    pc = v["pairingCheck"]
    lhs, rhs = pairing_check_points(msg, kp.pk_g1, kp.pk_g2, sigma)
    assert lhs == g1(pc["lhsG1"]) and rhs == g1(pc["rhsG1"])
    pre = pairing_precompile_input(msg, kp.pk_g1, kp.pk_g2, sigma)
    assert len(pre) == 384 and pre == hexbytes(pc["precompileInput"])

    avs = AvsSignature(msg, sigma, kp.pk_g1, kp.pk_g2)
    assert avs.to_json() == v["avsSignature"]
    assert avs.to_json(hex=True) == v["avsSignatureHex"]
    assert AvsSignature.from_json(v["avsSignature"]) == avs
    assert AvsSignature.from_json(v["avsSignatureHex"]) == avs
    assert avs.precompile_input() == pre

    assert pc["gammaCheckPasses"] is True and bls.verify_gamma(kp.pk_g1, kp.pk_g2, msg, sigma)
    assert pc["plainCheckPasses"] is True and bls.verify(kp.pk_g2, msg, sigma)
    assert pc["tamperedSigmaRejected"] is True
    assert not verify_signature(msg, kp.pk_g1, kp.pk_g2, sigma + G1_GENERATOR)
    assert all(check["match"] is True for check in v["crossChecks"])


@pytest.mark.parametrize("vid", SIG_IDS)
def test_cerberus_sign_generic_vector(eigen_vectors: dict[str, Any], vid: str) -> None:
    """cerberus copies short ``data`` into a zeroed 32-byte buffer (right padding)."""
    v = by_id(eigen_vectors, "signatureVectors", vid)
    cg = v["encodings"]["cerberusSignGeneric"]
    data = bytes.fromhex(cg["request"]["data"])
    assert len(data) <= 32
    padded = data + bytes(32 - len(data))
    assert padded == msg_hash_from_hex(v["msgHash"])
    sk = num(v["privateKey"])
    sigma = bls.sign(sk, padded)
    assert sigma.x.to_bytes(32, "big") + sigma.y.to_bytes(32, "big") == bytes.fromhex(
        cg["response"]["signature"]
    )


# --------------------------------------------------------------------------- aggregate


@pytest.mark.parametrize("vid", ids("aggregateVectors"))
def test_aggregate_vector(eigen_vectors: dict[str, Any], vid: str) -> None:
    v = by_id(eigen_vectors, "aggregateVectors", vid)
    msg = msg_hash_from_hex(v["msgHash"])
    h, inc = hash_to_g1_with_increments(msg)
    assert h == g1(v["hashToG1"]) and inc == v["hashToG1Increments"]
    sigmas, pks1, pks2 = [], [], []
    for s in v["signers"]:
        kp = bls.keypair_from_secret(num(s["privateKey"]))
        assert kp.pk_g1 == g1(s["pubkeyG1"]) and kp.pk_g2 == g2(s["pubkeyG2"])
        sig = bls.sign(kp.sk, msg)
        assert sig == g1(s["sigma"])
        sigmas.append(sig)
        pks1.append(kp.pk_g1)
        pks2.append(kp.pk_g2)
    apk1, apk2, sigma = bls.aggregate_g1(pks1), bls.aggregate_g2(pks2), bls.aggregate_g1(sigmas)
    assert apk1 == g1(v["apkG1"]) and apk2 == g2(v["apkG2"]) and sigma == g1(v["sigma"])
    assert signature_gamma(msg, apk1, apk2, sigma) == num(v["gamma"])
    lhs, rhs = pairing_check_points(msg, apk1, apk2, sigma)
    assert lhs == g1(v["pairingCheck"]["lhsG1"]) and rhs == g1(v["pairingCheck"]["rhsG1"])
    assert pairing_precompile_input(msg, apk1, apk2, sigma) == hexbytes(
        v["pairingCheck"]["precompileInput"]
    )
    avs = AvsSignature(msg, sigma, apk1, apk2)
    assert avs.to_json() == v["avsSignature"] and avs.to_json(hex=True) == v["avsSignatureHex"]
    assert avs.verify(apk_g2_prepared=prepare_g2(apk2))
    assert not verify_signature(msg, apk1, apk2, sigma - sigmas[0])


# --------------------------------------------------------------------------- registration


@pytest.mark.parametrize("vid", ids("registrationVectors"))
def test_registration_vector(eigen_vectors: dict[str, Any], vid: str) -> None:
    v = by_id(eigen_vectors, "registrationVectors", vid)
    operator = address_from_hex(v["operator"], field="operator")
    coordinator = address_from_hex(v["registryCoordinator"], field="registryCoordinator")
    assert checksum_address(operator) == v["operator"]
    assert checksum_address(coordinator) == v["registryCoordinator"]
    chain_id = v["chainId"]
    e = v["eip712"]
    assert (e["name"], e["version"]) == (REGISTRY_COORDINATOR_NAME, REGISTRY_COORDINATOR_VERSION)
    assert hexbytes(e["domainTypehash"]) == EIP712_DOMAIN_TYPEHASH
    assert hexbytes(e["PUBKEY_REGISTRATION_TYPEHASH"]) == PUBKEY_REGISTRATION_TYPEHASH
    assert registration_domain_separator(coordinator, chain_id) == hexbytes(e["domainSeparator"])
    assert registration_struct_hash(operator) == hexbytes(e["structHash"])
    digest = registration_digest(operator, coordinator, chain_id)
    assert digest == hexbytes(v["calculatePubkeyRegistrationMessageHash"])
    point = registration_message_point(operator, coordinator, chain_id)
    assert point == g1(v["pubkeyRegistrationMessageHash"])
    assert hash_to_g1_with_increments(digest)[1] == v["hashToG1Increments"]

    kp = bls.keypair_from_secret(num(v["privateKey"]))
    assert kp.pk_g1 == g1(v["pubkeyG1"]) and kp.pk_g2 == g2(v["pubkeyG2"])
    sig = point * kp.sk
    assert sig == g1(v["pubkeyRegistrationSignature"])
    assert registration_gamma(sig, kp.pk_g1, kp.pk_g2, point) == num(v["registrationGamma"])
    lhs, rhs = registration_check_points(sig, kp.pk_g1, kp.pk_g2, point)
    pc = v["pairingCheck"]
    assert lhs == g1(pc["lhsG1"]) and rhs == g1(pc["rhsG1"])
    pre = registration_precompile_input(sig, kp.pk_g1, kp.pk_g2, point)
    assert pre == hexbytes(pc["precompileInput"])

    params = RegistrationParams(sig, kp.pk_g1, kp.pk_g2)
    assert params.to_json() == v["pubkeyRegistrationParams"]
    assert params.abi_encode() == hexbytes(v["pubkeyRegistrationParamsAbiEncoded"])
    assert operator_id(kp.pk_g1) == hexbytes(v["operatorId"])
    assert pc["passes"] is True and params.verify(point)
    assert pc["tamperedSignatureRejected"] is True
    assert not verify_registration(sig + G1_GENERATOR, kp.pk_g1, kp.pk_g2, point)
    assert all(check["match"] is True for check in v["crossChecks"])


def test_registration_rejects_zero_key_and_mismatched_g1() -> None:
    point = hash_to_g1(keccak256(b"registration"))
    assert not verify_registration(G1_INFINITY, G1_INFINITY, G2_INFINITY, point)
    kp = bls.keypair_from_secret(5)
    # a G1 key that does not match the G2 key fails even with a valid BLS signature
    assert not verify_registration(point * 5, G1_GENERATOR * 6, kp.pk_g2, point)


def test_address_parsing_is_strict() -> None:
    assert address_from_hex("0x" + "ab" * 20, field="a") == bytes([0xAB] * 20)
    assert address_from_hex("0x" + "AB" * 20, field="a") == bytes([0xAB] * 20)
    for bad in ["", "0x" + "ab" * 19, "ab" * 20, "0x" + "gg" * 20, 5, None, "0x" + "ab" * 21]:
        with pytest.raises(InvalidFormat):
            address_from_hex(bad, field="operator")
    with pytest.raises(InvalidFormat, match="checksum"):
        address_from_hex("0xF39fd6e51aad88F6F4ce6aB8827279cffFb92266", field="operator")
    with pytest.raises(InvalidLength):
        registration_struct_hash(bytes(19))


# --------------------------------------------------------------------------- hash to G1


def _reference_hash_to_g1(msg_hash: bytes) -> tuple[int, int]:
    """Spec section 4, written plainly with builtin pow."""
    p = bn128.field_modulus
    x = int.from_bytes(msg_hash, "big") % p
    while True:
        beta = (pow(x, 3, p) + 3) % p
        y = pow(beta, (p + 1) // 4, p)
        if pow(y, 2, p) == beta:
            return x, y
        x = (x + 1) % p


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_hash_to_g1_matches_plain_reference(msg: bytes) -> None:
    x, y = _reference_hash_to_g1(msg)
    h = hash_to_g1(msg)
    assert (h.x, h.y) == (x, y)
    assert bn128.is_on_curve((bn128.FQ(h.x), bn128.FQ(h.y)), bn128.b)


@pytest.mark.parametrize(
    "value", [0, 1, P - 1, P, P + 1, 2**256 - 1, 2**255, R, R - 1, 3, 4, 2**254]
)
def test_hash_to_g1_edge_inputs(value: int) -> None:
    msg = value.to_bytes(32, "big")
    assert (hash_to_g1(msg).x, hash_to_g1(msg).y) == _reference_hash_to_g1(msg)


def test_hash_to_g1_zero_and_p_give_the_generator() -> None:
    assert hash_to_g1(bytes(32)) == G1_GENERATOR
    assert hash_to_g1(P.to_bytes(32, "big")) == G1_GENERATOR


@pytest.mark.parametrize("bad", [b"", bytes(31), bytes(33), "00" * 32, None])
def test_hash_to_g1_wants_exactly_32_bytes(bad: Any) -> None:
    with pytest.raises(InvalidLength):
        hash_to_g1(bad)


# --------------------------------------------------------------------------- spec 12 traps


@pytest.fixture(scope="module")
def key7() -> bls.KeyPair:
    return bls.keypair_from_secret(7)


def test_all_infinity_triple_rejected() -> None:
    """e(O, -G2) e(H + g G1, O) = 1 for every message; we must refuse it explicitly."""
    msg = keccak256(b"anything")
    assert not verify_signature(msg, G1_INFINITY, G2_INFINITY, G1_INFINITY)
    assert not verify_signature(msg, G1_GENERATOR, G2_GENERATOR, G1_INFINITY)
    assert not verify_signature(msg, G1_INFINITY, G2_GENERATOR, hash_to_g1(msg))
    assert not verify_signature(msg, G1_GENERATOR, G2_INFINITY, hash_to_g1(msg))
    assert not bls.verify(G2_INFINITY, msg, G1_INFINITY)
    with pytest.raises(DecodeError):
        AvsSignature.from_json(
            {
                "msgHash": "0x" + msg.hex(),
                "sigma": g1_to_json(G1_INFINITY),
                "apkG1": g1_to_json(G1_INFINITY),
                "apkG2": g2_to_json(G2_INFINITY),
            }
        )


def test_neighbouring_hash_trap_is_real_and_wrong_message_uses_unrelated_hash(
    key7: bls.KeyPair,
) -> None:
    """msgHash = 0 and 1 map to the same point (spec 12.1): a low-bit flip is no test."""
    assert hash_to_g1(bytes(32)) == hash_to_g1((1).to_bytes(32, "big"))
    msg, other = keccak256(b"message one"), keccak256(b"an unrelated message")
    sigma = bls.sign(key7.sk, msg)
    assert not verify_signature(other, key7.pk_g1, key7.pk_g2, sigma)
    assert not bls.verify(key7.pk_g2, other, sigma)


@settings(
    max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(min_value=1, max_value=R - 1))
def test_tampered_sigma_rejected(key7: bls.KeyPair, delta: int) -> None:
    msg = keccak256(b"tamper")
    sigma = bls.sign(key7.sk, msg)
    assert not verify_signature(msg, key7.pk_g1, key7.pk_g2, sigma + G1_GENERATOR * delta)


def test_gamma_binds_g1_key_to_g2_key(key7: bls.KeyPair) -> None:
    """A valid plain BLS pair with a wrong apkG1 fails the on-chain check."""
    msg = keccak256(b"binding")
    sigma = bls.sign(key7.sk, msg)
    assert bls.verify(key7.pk_g2, msg, sigma)
    assert not verify_signature(msg, key7.pk_g1 + G1_GENERATOR, key7.pk_g2, sigma)


def test_swapped_g2_order_is_not_a_point(eigen_vectors: dict[str, Any]) -> None:
    """Spec 12.3: reading [imag, real] as [real, imag] gives a point off the twist."""
    v = by_id(eigen_vectors, "signatureVectors", "sk69-hello-world")
    obj = dict(v["avsSignature"])
    g2j = obj["apkG2"]
    obj["apkG2"] = {"X": list(reversed(g2j["X"])), "Y": list(reversed(g2j["Y"]))}
    with pytest.raises(DecodeError, match="apkG2"):
        AvsSignature.from_json(obj)


def test_avs_signature_from_json_is_strict(eigen_vectors: dict[str, Any]) -> None:
    good = by_id(eigen_vectors, "signatureVectors", "sk69-hello-world")["avsSignature"]
    extra = {**good, "keyId": "k", "signers": [1, 2]}
    with pytest.raises(InvalidFormat):
        AvsSignature.from_json(extra)
    assert AvsSignature.from_json(extra, allow_extra=True) == AvsSignature.from_json(good)
    missing = {k: val for k, val in good.items() if k != "apkG1"}
    with pytest.raises(InvalidFormat):
        AvsSignature.from_json(missing, allow_extra=True)
    for bad in [None, [], "x", 5]:
        with pytest.raises(InvalidFormat):
            AvsSignature.from_json(bad)
    numeric = {**good, "sigma": {"X": int(good["sigma"]["X"]), "Y": good["sigma"]["Y"]}}
    with pytest.raises(InvalidFormat, match=r"sigma\.X"):
        AvsSignature.from_json(numeric)


def test_verifiers_reject_unchecked_bad_points_without_raising(key7: bls.KeyPair) -> None:
    """Points built with the unchecked constructors (off curve, coordinate >= p, G2 in
    the wrong order) are refused before any pairing."""
    msg = keccak256(b"off curve")
    sigma = bls.sign(key7.sk, msg)
    pk2 = key7.pk_g2
    swapped = G2((pk2.x[1], pk2.x[0]), (pk2.y[1], pk2.y[0]))
    big = G2((pk2.x[0] + P, pk2.x[1]), pk2.y)
    assert not verify_signature(msg, key7.pk_g1, pk2, G1(sigma.x, sigma.y + 1))
    assert not verify_signature(msg, G1(1, 3), pk2, sigma)
    assert not verify_signature(msg, G1(1, 2 + P), pk2, sigma)
    assert not verify_signature(msg, key7.pk_g1, swapped, sigma)
    assert not verify_signature(msg, key7.pk_g1, big, sigma)
    assert not bls.verify(swapped, msg, sigma)
    assert not verify_registration(sigma, key7.pk_g1, swapped, hash_to_g1(msg))
    assert bls.batch_verify(swapped, [(msg, sigma)]) == [0]


@pytest.mark.parametrize("chain_id", [-1, 2**256, True, "1", 1.0])
def test_registration_rejects_bad_chain_ids(chain_id: Any) -> None:
    with pytest.raises(InvalidFormat):
        registration_digest(bytes(20), bytes(20), chain_id)

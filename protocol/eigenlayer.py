"""EigenLayer's BN254 BLS conventions, bit for bit (spec: shared/spec/eigenlayer-bn254.md).

* ``hash_to_g1``: ``BN254.hashToG1`` try-and-increment, un-normalised root
  beta^((p+1)/4) (spec section 4).
* ``signature_gamma`` / ``verify_signature``: ``BLSSignatureChecker``'s gamma check
  (section 6), with -G2 prepared once at import. Zero keys and an infinity sigma
  are rejected explicitly: the all-infinity triple satisfies the equation
  (section 12.2).
* ``operator_id``: keccak256(X || Y) of the G1 key (section 5).
* Key registration (section 8): EIP-712 digest, message point, the 10-word
  registration gamma (its own order) and its pairing check, ``RegistrationParams``.
* ``AvsSignature``: the standard AVS signature object of section 7 (strict JSON).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import gmpy2

from protocol.bn254 import (
    G1,
    G1_GENERATOR,
    G2,
    G2_GENERATOR,
    G2Prepared,
    P,
    R,
    g1_msm,
    pairing_check,
    prepare_g2,
)
from protocol.encoding import (
    WORD,
    InvalidFormat,
    g1_from_json,
    g1_to_bytes,
    g1_to_json,
    g1_usable,
    g2_from_json,
    g2_to_bytes,
    g2_to_json,
    g2_usable,
    int_to_word,
    msg_hash_from_hex,
    msg_hash_to_hex,
)
from protocol.errors import InvalidLength
from protocol.hashing import keccak256

_SQRT_EXP: Final = (P + 1) // 4

NEG_G2: Final = -G2_GENERATOR
NEG_G2_PREPARED: Final = prepare_g2(NEG_G2)

PUBKEY_REGISTRATION_TYPEHASH: Final = keccak256(b"BN254PubkeyRegistration(address operator)")
EIP712_DOMAIN_TYPEHASH: Final = keccak256(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
REGISTRY_COORDINATOR_NAME: Final = "AVSRegistryCoordinator"
REGISTRY_COORDINATOR_VERSION: Final = "v0.0.1"
ZERO_PK_HASH: Final = keccak256(bytes(64))

_ADDRESS_RE: Final = re.compile(r"0x[0-9a-fA-F]{40}")


def _msg_hash(msg_hash: bytes, field: str = "msgHash") -> bytes:
    if not isinstance(msg_hash, bytes | bytearray) or len(msg_hash) != WORD:
        raise InvalidLength(field, "must be exactly 32 bytes")
    return bytes(msg_hash)


# --------------------------------------------------------------------------- hash to G1


def hash_to_g1_with_increments(msg_hash: bytes) -> tuple[G1, int]:
    """``BN254.hashToG1(msgHash)`` and the number of increments it took."""
    x = int.from_bytes(_msg_hash(msg_hash), "big") % P
    increments = 0
    while True:
        beta = (x * x % P * x + 3) % P
        # Euler's criterion via the Jacobi symbol (fast) instead of squaring the root;
        # beta = 0 never occurs (G1 has no point of order 2).
        if gmpy2.jacobi(beta, P) != -1:
            y = int(gmpy2.powmod(beta, _SQRT_EXP, P))
            return G1(x, y), increments
        x = (x + 1) % P
        increments += 1


def hash_to_g1(msg_hash: bytes) -> G1:
    """``BN254.hashToG1(msgHash)``: try and increment from x = msgHash mod p; the root
    is exactly beta^((p+1)/4) (never negated). ``msg_hash`` is NOT hashed again."""
    return hash_to_g1_with_increments(msg_hash)[0]


# --------------------------------------------------------------------------- signatures


def signature_gamma(msg_hash: bytes, apk_g1: G1, apk_g2: G2, sigma: G1) -> int:
    """keccak256(msgHash || apk.X || apk.Y || apkG2.X[0] || apkG2.X[1] || apkG2.Y[0] ||
    apkG2.Y[1] || sigma.X || sigma.Y) mod r (nine words, G2 in Solidity order)."""
    data = _msg_hash(msg_hash) + g1_to_bytes(apk_g1) + g2_to_bytes(apk_g2) + g1_to_bytes(sigma)
    return int.from_bytes(keccak256(data), "big") % R


def pairing_check_points(msg_hash: bytes, apk_g1: G1, apk_g2: G2, sigma: G1) -> tuple[G1, G1]:
    """The two G1 inputs of the on-chain check: (sigma + gamma*apk, H(m) + gamma*G1)."""
    gamma = signature_gamma(msg_hash, apk_g1, apk_g2, sigma)
    lhs = g1_msm([sigma, apk_g1], [1, gamma])
    rhs = g1_msm([hash_to_g1(msg_hash), G1_GENERATOR], [1, gamma])
    return lhs, rhs


def verify_signature(
    msg_hash: bytes,
    apk_g1: G1,
    apk_g2: G2,
    sigma: G1,
    *,
    apk_g2_prepared: G2Prepared | None = None,
) -> bool:
    """The on-chain gamma check e(sigma + g*apk, -G2) * e(H(m) + g*G1, apkG2) = 1.

    Returns False for a zero key or an infinity sigma (which the contract would
    accept: spec 12.2). Points must come from the validating decoders (apkG2 in the
    subgroup); coordinates and curve membership are re-checked here (cheap).
    ``apk_g2_prepared`` must be ``prepare_g2(apk_g2)`` when given.
    """
    if not (g1_usable(apk_g1) and g1_usable(sigma) and g2_usable(apk_g2)):
        return False
    lhs, rhs = pairing_check_points(msg_hash, apk_g1, apk_g2, sigma)
    q = apk_g2_prepared if apk_g2_prepared is not None else apk_g2
    return pairing_check([(lhs, NEG_G2_PREPARED), (rhs, q)])


def encode_pairing_input(pairs: Sequence[tuple[G1, G2]]) -> bytes:
    """The ecPairing (0x08) precompile input: for each pair G1 X, Y then G2 in EIP-197 order."""
    return b"".join(g1_to_bytes(p) + g2_to_bytes(q) for p, q in pairs)


def pairing_precompile_input(msg_hash: bytes, apk_g1: G1, apk_g2: G2, sigma: G1) -> bytes:
    """The 384-byte input ``BLSSignatureChecker`` passes to the pairing precompile."""
    lhs, rhs = pairing_check_points(msg_hash, apk_g1, apk_g2, sigma)
    return encode_pairing_input([(lhs, NEG_G2), (rhs, apk_g2)])


def operator_id(pk_g1: G1) -> bytes:
    """``BN254.hashG1Point(pkG1)`` = keccak256(X || Y), 32-byte words (padded)."""
    return keccak256(g1_to_bytes(pk_g1))


# --------------------------------------------------------------------------- registration


def address_from_hex(s: object, *, field: str) -> bytes:
    """Parse an Ethereum address ``0x`` + 40 hex digits; mixed case must be a valid
    EIP-55 checksum."""
    if not isinstance(s, str) or not _ADDRESS_RE.fullmatch(s):
        raise InvalidFormat(field, "must be 0x followed by 40 hex digits")
    body = s[2:]
    if body != body.lower() and body != body.upper() and checksum_address(bytes.fromhex(body)) != s:
        raise InvalidFormat(field, "mixed-case address with a wrong EIP-55 checksum")
    return bytes.fromhex(body)


def checksum_address(address: bytes) -> str:
    """EIP-55 mixed-case form of a 20-byte address."""
    body = _address(address, "address").hex()
    digest = keccak256(body.encode()).hex()
    return "0x" + "".join(
        c.upper() if int(h, 16) >= 8 else c for c, h in zip(body, digest[:40], strict=True)
    )


def _address(address: bytes, field: str) -> bytes:
    if not isinstance(address, bytes | bytearray) or len(address) != 20:
        raise InvalidLength(field, "an address must be exactly 20 bytes")
    return bytes(address)


def registration_domain_separator(registry_coordinator: bytes, chain_id: int) -> bytes:
    """EIP-712 domain separator of the RegistryCoordinator ("AVSRegistryCoordinator", "v0.0.1")."""
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or not 0 <= chain_id < 1 << 256:
        raise InvalidFormat("chainId", "must be an integer in [0, 2^256)")
    return keccak256(
        EIP712_DOMAIN_TYPEHASH
        + keccak256(REGISTRY_COORDINATOR_NAME.encode())
        + keccak256(REGISTRY_COORDINATOR_VERSION.encode())
        + int_to_word(chain_id)
        + bytes(12)
        + _address(registry_coordinator, "registryCoordinator")
    )


def registration_struct_hash(operator: bytes) -> bytes:
    """keccak256(PUBKEY_REGISTRATION_TYPEHASH || operator as a left-padded word)."""
    return keccak256(PUBKEY_REGISTRATION_TYPEHASH + bytes(12) + _address(operator, "operator"))


def registration_digest(operator: bytes, registry_coordinator: bytes, chain_id: int) -> bytes:
    """``calculatePubkeyRegistrationMessageHash(operator)``: the EIP-712 digest."""
    return keccak256(
        b"\x19\x01"
        + registration_domain_separator(registry_coordinator, chain_id)
        + registration_struct_hash(operator)
    )


def registration_message_point(operator: bytes, registry_coordinator: bytes, chain_id: int) -> G1:
    """``pubkeyRegistrationMessageHash(operator)`` = hashToG1(digest)."""
    return hash_to_g1(registration_digest(operator, registry_coordinator, chain_id))


def registration_gamma(signature: G1, pk_g1: G1, pk_g2: G2, message_point: G1) -> int:
    """keccak256(sig.X || sig.Y || pkG1.X || pkG1.Y || pkG2.X[0] || pkG2.X[1] ||
    pkG2.Y[0] || pkG2.Y[1] || H.X || H.Y) mod r (ten words, signature first)."""
    data = g1_to_bytes(signature) + g1_to_bytes(pk_g1) + g2_to_bytes(pk_g2)
    return int.from_bytes(keccak256(data + g1_to_bytes(message_point)), "big") % R


def registration_check_points(
    signature: G1, pk_g1: G1, pk_g2: G2, message_point: G1
) -> tuple[G1, G1]:
    """(sig + gamma*pkG1, H + gamma*G1): the G1 inputs of ``registerBLSPublicKey``'s check."""
    gamma = registration_gamma(signature, pk_g1, pk_g2, message_point)
    return g1_msm([signature, pk_g1], [1, gamma]), g1_msm([message_point, G1_GENERATOR], [1, gamma])


def verify_registration(signature: G1, pk_g1: G1, pk_g2: G2, message_point: G1) -> bool:
    """``BLSApkRegistry.registerBLSPublicKey``'s check: e(sig + g*pkG1, -G2) *
    e(H + g*G1, pkG2) = 1; rejects the zero key and an infinity signature."""
    if not (g1_usable(pk_g1) and g1_usable(signature) and g1_usable(message_point)):
        return False
    if not g2_usable(pk_g2):
        return False
    lhs, rhs = registration_check_points(signature, pk_g1, pk_g2, message_point)
    return pairing_check([(lhs, NEG_G2_PREPARED), (rhs, pk_g2)])


def registration_precompile_input(signature: G1, pk_g1: G1, pk_g2: G2, message_point: G1) -> bytes:
    """The 384-byte pairing input of the registration check."""
    lhs, rhs = registration_check_points(signature, pk_g1, pk_g2, message_point)
    return encode_pairing_input([(lhs, NEG_G2), (rhs, pk_g2)])


@dataclass(frozen=True)
class RegistrationParams:
    """``IBLSApkRegistry.PubkeyRegistrationParams`` (signature, G1 key, G2 key)."""

    signature: G1
    pk_g1: G1
    pk_g2: G2

    def abi_encode(self) -> bytes:
        """The static tuple: sig.X, sig.Y, pkG1.X, pkG1.Y, pkG2.X[0..1], pkG2.Y[0..1]."""
        return g1_to_bytes(self.signature) + g1_to_bytes(self.pk_g1) + g2_to_bytes(self.pk_g2)

    def to_json(self, *, hex: bool = False) -> dict[str, Any]:
        """Field names as in the Solidity struct, G2 in [imag, real] order."""
        return {
            "pubkeyRegistrationSignature": g1_to_json(self.signature, hex=hex),
            "pubkeyG1": g1_to_json(self.pk_g1, hex=hex),
            "pubkeyG2": g2_to_json(self.pk_g2, hex=hex),
        }

    def verify(self, message_point: G1) -> bool:
        """The registry's pairing check for this message point."""
        return verify_registration(self.signature, self.pk_g1, self.pk_g2, message_point)


# --------------------------------------------------------------------------- AVS signature

_AVS_KEYS: Final = frozenset({"msgHash", "sigma", "apkG1", "apkG2"})


@dataclass(frozen=True)
class AvsSignature:
    """The standard AVS signature object (spec section 7)."""

    msg_hash: bytes
    sigma: G1
    apk_g1: G1
    apk_g2: G2

    def __post_init__(self) -> None:
        object.__setattr__(self, "msg_hash", _msg_hash(self.msg_hash))

    def to_json(self, hex: bool = False) -> dict[str, Any]:
        """``{"msgHash", "sigma", "apkG1", "apkG2"}``; numbers decimal or 0x-hex strings."""
        return {
            "msgHash": msg_hash_to_hex(self.msg_hash),
            "sigma": g1_to_json(self.sigma, hex=hex),
            "apkG1": g1_to_json(self.apk_g1, hex=hex),
            "apkG2": g2_to_json(self.apk_g2, hex=hex),
        }

    @classmethod
    def from_json(cls, obj: object, *, allow_extra: bool = False) -> AvsSignature:
        """Strict parse: exactly the four keys (or a superset if ``allow_extra``, e.g.
        the ``keyId``/``signers`` of a signing response); every point validated;
        infinity is rejected everywhere (it is never a meaningful value here)."""
        if not isinstance(obj, Mapping):
            raise InvalidFormat("signature", "must be a JSON object")
        keys = set(obj.keys())
        if not keys >= _AVS_KEYS or (keys != _AVS_KEYS and not allow_extra):
            raise InvalidFormat(
                "signature", 'must have exactly the keys "msgHash", "sigma", "apkG1", "apkG2"'
            )
        return cls(
            msg_hash=msg_hash_from_hex(obj["msgHash"], field="msgHash"),
            sigma=g1_from_json(obj["sigma"], field="sigma"),
            apk_g1=g1_from_json(obj["apkG1"], field="apkG1"),
            apk_g2=g2_from_json(obj["apkG2"], field="apkG2"),
        )

    def gamma(self) -> int:
        """The signature-check gamma of this object."""
        return signature_gamma(self.msg_hash, self.apk_g1, self.apk_g2, self.sigma)

    def verify(self, *, apk_g2_prepared: G2Prepared | None = None) -> bool:
        """The on-chain gamma check (``verify_signature``)."""
        return verify_signature(
            self.msg_hash, self.apk_g1, self.apk_g2, self.sigma, apk_g2_prepared=apk_g2_prepared
        )

    def precompile_input(self) -> bytes:
        """The 384-byte pairing precompile input of the on-chain check."""
        return pairing_precompile_input(self.msg_hash, self.apk_g1, self.apk_g2, self.sigma)

"""Zero-knowledge proofs in G1 with a Fiat-Shamir transcript and hedged nonces.

* ``Transcript``: SHA-512 over a domain tag and every public input, each
  length-prefixed (4-byte label length, label, 8-byte data length, data).
  Challenges are the 512-bit digest reduced mod r, so the bias is < 2^-250.
  We use SHA-512 rather than a 256-bit hash on purpose: a 256-bit value mod r is
  visibly biased (2^256 is about 5.3 r), which is harmless for a challenge but
  not for a nonce, and one wide hash serves both.
* Chaum-Pedersen DLEQ: knowledge of x with pub = x*G1 and y = x*h (a node proves
  that its partial signature y = s_j*H(m) matches its public share s_j*G1).
* Schnorr proof of knowledge of a with A = a*G1.
* Hedged nonces: k = H(tag, secret, statement, 32 fresh bytes from rng) mod r, so a
  broken rng still gives distinct nonces for distinct statements, and a good rng
  gives distinct nonces even for the same statement.

Proofs are (c, s) with s = k + c*x; encoded as c || s (64 bytes, each < r).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from protocol.bn254 import G1, G1_GENERATOR, G2, R, g1_msm, g1_mul_generator
from protocol.encoding import (
    InvalidFormat,
    check_scalar,
    g1_to_bytes,
    g2_to_bytes,
    scalar_from_bytes,
    scalar_to_bytes,
)
from protocol.errors import InvalidLength, InvalidPoint
from protocol.rng import Rng, os_rng

DLEQ_DOMAIN: Final = b"tkms/v1/proof/dleq-g1"
SCHNORR_DOMAIN: Final = b"tkms/v1/proof/schnorr-g1"
PROOF_LEN: Final = 64

Statement = list[tuple[bytes, bytes]]


class Transcript:
    """A Fiat-Shamir transcript: SHA-512 over length-prefixed (label, data) pairs."""

    __slots__ = ("_h",)

    def __init__(self, domain: bytes) -> None:
        self._h = hashlib.sha512()
        self.append(b"tkms-transcript-v1", domain)

    def append(self, label: bytes, data: bytes) -> None:
        """Absorb one labelled public input."""
        self._h.update(len(label).to_bytes(4, "big") + label)
        self._h.update(len(data).to_bytes(8, "big") + data)

    def append_g1(self, label: bytes, p: G1) -> None:
        """Absorb a G1 point (64-byte raw encoding)."""
        self.append(label, g1_to_bytes(p))

    def append_g2(self, label: bytes, q: G2) -> None:
        """Absorb a G2 point (128-byte EIP-197 encoding)."""
        self.append(label, g2_to_bytes(q))

    def append_scalar(self, label: bytes, k: int) -> None:
        """Absorb a scalar (32 bytes)."""
        self.append(label, scalar_to_bytes(k))

    def challenge_scalar(self, label: bytes) -> int:
        """A challenge in [0, r): SHA-512 of everything so far and ``label``, mod r.
        The challenge is absorbed, so the next one differs."""
        self.append(b"challenge", label)
        digest = self._h.copy().digest()
        self.append(b"challenge-output", digest)
        return int.from_bytes(digest, "big") % R


def _transcript(domain: bytes, statement: Statement) -> Transcript:
    t = Transcript(domain)
    for label, data in statement:
        t.append(label, data)
    return t


def _hedged_nonce(domain: bytes, secret: int, statement: Statement, rng: Rng) -> int:
    """k = H(domain/nonce, secret, statement, 32 fresh random bytes) mod r, nonzero."""
    while True:
        fresh = rng(32)
        if len(fresh) != 32:
            raise ValueError("rng returned the wrong number of bytes")
        t = _transcript(domain + b"/nonce", [(b"secret", scalar_to_bytes(secret)), *statement])
        t.append(b"random", fresh)
        k = t.challenge_scalar(b"nonce")
        if k != 0:
            return k


def _context(context: bytes) -> bytes:
    if not isinstance(context, bytes):
        raise InvalidFormat("context", "must be bytes")
    return context


def _encode(c: int, s: int) -> bytes:
    return scalar_to_bytes(c) + scalar_to_bytes(s)


def _decode(b: bytes, field: str) -> tuple[int, int]:
    if not isinstance(b, bytes | bytearray):
        raise InvalidFormat(field, "must be a byte string")
    if len(b) != PROOF_LEN:
        raise InvalidLength(field, f"must be {PROOF_LEN} bytes, got {len(b)}")
    c = scalar_from_bytes(bytes(b[:32]), field=f"{field}.c", allow_zero=True)
    s = scalar_from_bytes(bytes(b[32:]), field=f"{field}.s", allow_zero=True)
    return c, s


# --------------------------------------------------------------------------- DLEQ


@dataclass(frozen=True)
class DleqProof:
    """Chaum-Pedersen proof (c, s) that log_G1(pub) = log_h(y)."""

    c: int
    s: int

    def __post_init__(self) -> None:
        check_scalar(self.c, field="dleq.c", allow_zero=True)
        check_scalar(self.s, field="dleq.s", allow_zero=True)

    def to_bytes(self) -> bytes:
        """c || s, 64 bytes."""
        return _encode(self.c, self.s)

    @classmethod
    def from_bytes(cls, b: bytes) -> DleqProof:
        """Strict decode: exactly 64 bytes, c < r and s < r."""
        c, s = _decode(b, "dleq")
        return cls(c, s)


def _dleq_statement(context: bytes, pub: G1, h: G1, y: G1) -> Statement:
    return [
        (b"context", _context(context)),
        (b"g", g1_to_bytes(G1_GENERATOR)),
        (b"pub", g1_to_bytes(pub)),
        (b"h", g1_to_bytes(h)),
        (b"y", g1_to_bytes(y)),
    ]


def _dleq_challenge(statement: Statement, a1: G1, a2: G1) -> int:
    t = _transcript(DLEQ_DOMAIN, statement)
    t.append_g1(b"a1", a1)
    t.append_g1(b"a2", a2)
    return t.challenge_scalar(b"c")


def prove_dleq(
    x: int, h: G1, *, context: bytes, rng: Rng = os_rng, y: G1 | None = None
) -> DleqProof:
    """Prove log_G1(x*G1) = log_h(x*h) without revealing x (x in [1, r-1], h != O).

    ``y``: x*h when the caller has just computed it (a partial signature), saving one
    variable-base multiplication; a wrong ``y`` only yields a proof that fails to verify.
    """
    check_scalar(x, field="secret")
    if h.is_infinity():
        raise InvalidPoint("h", "point at infinity not allowed here")
    pub = g1_mul_generator(x)
    if y is None:
        y = h * x
    statement = _dleq_statement(context, pub, h, y)
    k = _hedged_nonce(DLEQ_DOMAIN, x, statement, rng)
    c = _dleq_challenge(statement, g1_mul_generator(k), h * k)
    return DleqProof(c, (k + c * x) % R)


def verify_dleq(pub: G1, h: G1, y: G1, proof: DleqProof, *, context: bytes) -> bool:
    """True iff ``proof`` shows log_G1(pub) = log_h(y) under ``context``."""
    if pub.is_infinity() or h.is_infinity() or y.is_infinity():
        return False
    neg_c = (-proof.c) % R
    a1 = g1_msm([G1_GENERATOR, pub], [proof.s, neg_c])
    a2 = g1_msm([h, y], [proof.s, neg_c])
    return _dleq_challenge(_dleq_statement(context, pub, h, y), a1, a2) == proof.c


# --------------------------------------------------------------------------- Schnorr


@dataclass(frozen=True)
class SchnorrProof:
    """Schnorr proof (c, s) of knowledge of a with A = a*G1."""

    c: int
    s: int

    def __post_init__(self) -> None:
        check_scalar(self.c, field="schnorr.c", allow_zero=True)
        check_scalar(self.s, field="schnorr.s", allow_zero=True)

    def to_bytes(self) -> bytes:
        """c || s, 64 bytes."""
        return _encode(self.c, self.s)

    @classmethod
    def from_bytes(cls, b: bytes) -> SchnorrProof:
        """Strict decode: exactly 64 bytes, c < r and s < r."""
        c, s = _decode(b, "schnorr")
        return cls(c, s)


def _schnorr_statement(context: bytes, a_pub: G1) -> Statement:
    return [
        (b"context", _context(context)),
        (b"g", g1_to_bytes(G1_GENERATOR)),
        (b"A", g1_to_bytes(a_pub)),
    ]


def _schnorr_challenge(statement: Statement, commitment: G1) -> int:
    t = _transcript(SCHNORR_DOMAIN, statement)
    t.append_g1(b"R", commitment)
    return t.challenge_scalar(b"c")


def prove_schnorr(a: int, *, context: bytes, rng: Rng = os_rng) -> SchnorrProof:
    """Prove knowledge of a (in [1, r-1]) for A = a*G1."""
    check_scalar(a, field="secret")
    statement = _schnorr_statement(context, g1_mul_generator(a))
    k = _hedged_nonce(SCHNORR_DOMAIN, a, statement, rng)
    c = _schnorr_challenge(statement, g1_mul_generator(k))
    return SchnorrProof(c, (k + c * a) % R)


def verify_schnorr(a_pub: G1, proof: SchnorrProof, *, context: bytes) -> bool:
    """True iff ``proof`` shows knowledge of log_G1(a_pub) under ``context``."""
    if a_pub.is_infinity():
        return False
    commitment = g1_msm([G1_GENERATOR, a_pub], [proof.s, (-proof.c) % R])
    return _schnorr_challenge(_schnorr_statement(context, a_pub), commitment) == proof.c


__all__ = [
    "DLEQ_DOMAIN",
    "PROOF_LEN",
    "SCHNORR_DOMAIN",
    "DleqProof",
    "SchnorrProof",
    "Transcript",
    "prove_dleq",
    "prove_schnorr",
    "verify_dleq",
    "verify_schnorr",
]

"""The messages a node sends in each DKG phase (DESIGN.md §DKG steps 0–4), one
frozen type per phase, each signed with the node's Ed25519 key through
``protocol.signing`` under its own purpose tag.

=========================  ======================  ========================================
type                       purpose tag             content
=========================  ======================  ========================================
``Open``                   ``dkg-open``            proposal fields, nonce, encryption key
``DealBundle``             ``dkg-bundle``          C_i0..C_i,t-1, D_i, PoK, shares
``Echo``                   ``dkg-echo``            (dealer, digest) of every bundle received
``Complaints``             ``dkg-complaint``       dealers whose share to me was bad
``Justification``          ``dkg-justification``   the disputed shares, revealed
``TranscriptSignature``    ``dkg-transcript``      the transcript hash (+ claimed outcome)
=========================  ======================  ========================================

What is signed is every field except ``sig`` (and, for ``TranscriptSignature``, the
``outcome`` it carries, which the transcript hash already binds). ``decode`` is
strict (``protocol.dkg.codec``) and never returns a half-valid object; signatures are
checked by the receiver against the manifest (``signature_valid``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, ClassVar, Self

from nacl.signing import SigningKey

from protocol.canonical import encode_canonical
from protocol.dkg import codec as c
from protocol.dkg.crypto import tagged_hash
from protocol.errors import DecodeError
from protocol.signing import sign_fields, verify_fields


class SignedMessage:
    """Behaviour shared by the node messages (each is a frozen dataclass)."""

    __slots__ = ()
    KIND: ClassVar[str]
    PURPOSE: ClassVar[str]
    KEYS: ClassVar[tuple[str, ...]]
    sender: int
    sig: bytes

    def body(self) -> dict[str, Any]:
        """Every field except ``sig``, in wire form."""
        raise NotImplementedError

    def signed_fields(self) -> dict[str, Any]:
        return self.body()

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.KIND, **self.body(), "sig": self.sig}

    def encode(self) -> bytes:
        return encode_canonical(self.to_wire())

    def digest(self) -> bytes:
        """A hash of the whole message, signature included (computed once: messages
        are immutable, and sets of them are hashed, sorted and compared often)."""
        memo: dict[str, bytes] = self._memo  # type: ignore[attr-defined]
        if "digest" not in memo:
            memo["digest"] = tagged_hash("dkg-message", self.to_wire())
        return memo["digest"]

    def signed_by(self, key: SigningKey) -> Self:
        """A copy carrying ``key``'s signature over ``signed_fields()``."""
        sig = sign_fields(key, self.PURPOSE, self.signed_fields())
        return dataclasses.replace(self, sig=sig)  # type: ignore[type-var]

    def signature_valid(self, public_key: bytes) -> bool:
        return verify_fields(public_key, self.PURPOSE, self.signed_fields(), self.sig)

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        raise NotImplementedError

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Strictly decode canonical msgpack bytes.

        Raises:
            DecodeError: naming the first field that is malformed.
        """
        return cls.from_wire(c.load(data, cls.KIND), cls.KIND)


@dataclass(frozen=True, slots=True, kw_only=True)
class Open(SignedMessage):
    """Step 0: a node accepts a proposal and contributes its nonce and its
    per-ceremony X25519 encryption key (see ``protocol.dkg.crypto``)."""

    KIND: ClassVar[str] = "dkg/open"
    PURPOSE: ClassVar[str] = "dkg-open"
    KEYS: ClassVar[tuple[str, ...]] = (
        "cluster", "key_id", "epoch", "threshold", "min_holders", "participants",
        "sender", "nonce", "enc_key", "sig",
    )  # fmt: skip
    cluster: bytes
    key_id: str
    epoch: int
    threshold: int
    min_holders: int
    participants: tuple[int, ...]
    sender: int
    nonce: bytes
    enc_key: bytes
    sig: bytes = b""
    _memo: dict[str, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)

    def body(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "key_id": self.key_id,
            "epoch": self.epoch,
            "threshold": self.threshold,
            "min_holders": self.min_holders,
            "participants": list(self.participants),
            "sender": self.sender,
            "nonce": self.nonce,
            "enc_key": self.enc_key,
        }

    def parameters(self) -> tuple[bytes, str, int, int, int, tuple[int, ...]]:
        return (
            self.cluster,
            self.key_id,
            self.epoch,
            self.threshold,
            self.min_holders,
            self.participants,
        )

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        m = c.as_map(value, field, cls.KIND, cls.KEYS)
        return cls(
            cluster=c.as_bytes(m["cluster"], f"{field}.cluster", c.CLUSTER_ID_LEN),
            key_id=c.as_key_id(m["key_id"], f"{field}.key_id"),
            epoch=c.as_int(m["epoch"], f"{field}.epoch", 0, 2**32 - 1),
            threshold=c.as_int(m["threshold"], f"{field}.threshold", 1, c.MAX_PARTICIPANTS),
            min_holders=c.as_int(m["min_holders"], f"{field}.min_holders", 1, c.MAX_PARTICIPANTS),
            participants=c.as_indices(m["participants"], f"{field}.participants", min_items=1),
            sender=c.as_index(m["sender"], f"{field}.sender"),
            nonce=c.as_bytes(m["nonce"], f"{field}.nonce", c.NONCE_LEN),
            enc_key=c.as_bytes(m["enc_key"], f"{field}.enc_key", c.X25519_LEN),
            sig=c.as_bytes(m["sig"], f"{field}.sig", c.SIG_LEN),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DealBundle(SignedMessage):
    """Step 1: dealer ``sender``'s public polynomial and encrypted shares.

    ``commitments`` are C_ik = a_ik·G1 (uncompressed, exactly t of them for a valid
    bundle), ``commitment_g2`` is D_i = a_i0·G2 (EIP-197 order), ``proof`` a Schnorr
    proof of knowledge of a_i0 bound to the ceremony and the dealer, ``ephemeral``
    the bundle's X25519 key and ``shares`` one ``(recipient, ciphertext)`` pair per
    participant. Whether the points and the proof are valid is checked by
    ``protocol.dkg.dealing`` (a dealer fault), not here (a framing fault).
    """

    KIND: ClassVar[str] = "dkg/bundle"
    PURPOSE: ClassVar[str] = "dkg-bundle"
    KEYS: ClassVar[tuple[str, ...]] = (
        "ceremony", "sender", "commitments", "commitment_g2", "proof", "ephemeral",
        "shares", "sig",
    )  # fmt: skip
    ceremony: bytes
    sender: int
    commitments: tuple[bytes, ...]
    commitment_g2: bytes
    proof: bytes
    ephemeral: bytes
    shares: tuple[tuple[int, bytes], ...]
    sig: bytes = b""
    _memo: dict[str, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)

    def body(self) -> dict[str, Any]:
        return {
            "ceremony": self.ceremony,
            "sender": self.sender,
            "commitments": list(self.commitments),
            "commitment_g2": self.commitment_g2,
            "proof": self.proof,
            "ephemeral": self.ephemeral,
            "shares": [[j, ct] for j, ct in self.shares],
        }

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        m = c.as_map(value, field, cls.KIND, cls.KEYS)
        return cls(
            ceremony=c.as_bytes(m["ceremony"], f"{field}.ceremony", c.HASH_LEN),
            sender=c.as_index(m["sender"], f"{field}.sender"),
            commitments=c.as_items(
                m["commitments"], f"{field}.commitments", c.MAX_PARTICIPANTS, c.fixed(c.G1_LEN)
            ),
            commitment_g2=c.as_bytes(m["commitment_g2"], f"{field}.commitment_g2", c.G2_LEN),
            proof=c.as_var_bytes(m["proof"], f"{field}.proof", c.MAX_PROOF_BYTES),
            ephemeral=c.as_bytes(m["ephemeral"], f"{field}.ephemeral", c.X25519_LEN),
            shares=c.as_indexed(m["shares"], f"{field}.shares", c.fixed(c.CIPHERTEXT_LEN)),
            sig=c.as_bytes(m["sig"], f"{field}.sig", c.SIG_LEN),
        )


def _hash_pair(v: Any, f: str) -> tuple[int, bytes]:
    if not isinstance(v, list) or len(v) != 2:
        raise DecodeError(f, "must be a pair [dealer, hash]")
    return c.as_index(v[0], f"{f}[0]"), c.as_bytes(v[1], f"{f}[1]", c.HASH_LEN)


@dataclass(frozen=True, slots=True, kw_only=True)
class Echo(SignedMessage):
    """Step 2: the (dealer, bundle digest) of every distinct bundle this node
    received, sorted. Two honest nodes that saw the same bundles echo equal lists."""

    KIND: ClassVar[str] = "dkg/echo"
    PURPOSE: ClassVar[str] = "dkg-echo"
    KEYS: ClassVar[tuple[str, ...]] = ("ceremony", "sender", "bundles", "sig")
    ceremony: bytes
    sender: int
    bundles: tuple[tuple[int, bytes], ...]
    sig: bytes = b""
    _memo: dict[str, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)

    def body(self) -> dict[str, Any]:
        return {
            "ceremony": self.ceremony,
            "sender": self.sender,
            "bundles": [[i, h] for i, h in self.bundles],
        }

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        m = c.as_map(value, field, cls.KIND, cls.KEYS)
        bundles = c.as_items(m["bundles"], f"{field}.bundles", 2 * c.MAX_PARTICIPANTS, _hash_pair)
        if any(a >= b for a, b in pairwise(bundles)):
            raise DecodeError(f"{field}.bundles", "must be strictly increasing")
        return cls(
            ceremony=c.as_bytes(m["ceremony"], f"{field}.ceremony", c.HASH_LEN),
            sender=c.as_index(m["sender"], f"{field}.sender"),
            bundles=bundles,
            sig=c.as_bytes(m["sig"], f"{field}.sig", c.SIG_LEN),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Complaints(SignedMessage):
    """Step 2 (after the echoes agree): the dealers whose share to ``sender`` did not
    decrypt or did not match their commitments. Sent even when empty."""

    KIND: ClassVar[str] = "dkg/complaints"
    PURPOSE: ClassVar[str] = "dkg-complaint"
    KEYS: ClassVar[tuple[str, ...]] = ("ceremony", "sender", "against", "sig")
    ceremony: bytes
    sender: int
    against: tuple[int, ...]
    sig: bytes = b""
    _memo: dict[str, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)

    def body(self) -> dict[str, Any]:
        return {"ceremony": self.ceremony, "sender": self.sender, "against": list(self.against)}

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        m = c.as_map(value, field, cls.KIND, cls.KEYS)
        return cls(
            ceremony=c.as_bytes(m["ceremony"], f"{field}.ceremony", c.HASH_LEN),
            sender=c.as_index(m["sender"], f"{field}.sender"),
            against=c.as_indices(m["against"], f"{field}.against"),
            sig=c.as_bytes(m["sig"], f"{field}.sig", c.SIG_LEN),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Justification(SignedMessage):
    """Step 3: dealer ``sender`` reveals s_ij for every j that complained about it
    (only when fewer than t did). ``shares`` are 32-byte big-endian scalars."""

    KIND: ClassVar[str] = "dkg/justification"
    PURPOSE: ClassVar[str] = "dkg-justification"
    KEYS: ClassVar[tuple[str, ...]] = ("ceremony", "sender", "shares", "sig")
    ceremony: bytes
    sender: int
    shares: tuple[tuple[int, bytes], ...]
    sig: bytes = b""
    _memo: dict[str, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)

    def body(self) -> dict[str, Any]:
        return {
            "ceremony": self.ceremony,
            "sender": self.sender,
            "shares": [[j, s] for j, s in self.shares],
        }

    def __repr__(self) -> str:  # the revealed shares are public, but keep logs short
        return f"Justification(sender={self.sender}, recipients={[j for j, _ in self.shares]})"

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        m = c.as_map(value, field, cls.KIND, cls.KEYS)
        return cls(
            ceremony=c.as_bytes(m["ceremony"], f"{field}.ceremony", c.HASH_LEN),
            sender=c.as_index(m["sender"], f"{field}.sender"),
            shares=c.as_indexed(m["shares"], f"{field}.shares", c.fixed(c.SCALAR_LEN)),
            sig=c.as_bytes(m["sig"], f"{field}.sig", c.SIG_LEN),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What a node computed at the end (step 4); part of the transcript body.

    ``excluded`` maps each participant that is not in QUAL to a stable reason code
    (``protocol.dkg.dealing.Exclusion``); codes, not prose, so that every honest
    node hashes the same bytes.
    """

    KIND: ClassVar[str] = "dkg/outcome"
    KEYS: ClassVar[tuple[str, ...]] = (
        "qual", "excluded", "pubkey_g1", "pubkey_g2", "public_shares",
    )  # fmt: skip
    qual: tuple[int, ...]
    excluded: tuple[tuple[int, str], ...]
    pubkey_g1: bytes
    pubkey_g2: bytes
    public_shares: tuple[tuple[int, bytes], ...]

    def to_wire(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "qual": list(self.qual),
            "excluded": [[i, r] for i, r in self.excluded],
            "pubkey_g1": self.pubkey_g1,
            "pubkey_g2": self.pubkey_g2,
            "public_shares": [[j, p] for j, p in self.public_shares],
        }

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        m = c.as_map(value, field, cls.KIND, cls.KEYS)

        def reason(v: Any, f: str) -> str:
            return c.as_str(v, f, 64)

        return cls(
            qual=c.as_indices(m["qual"], f"{field}.qual", min_items=1),
            excluded=c.as_indexed(m["excluded"], f"{field}.excluded", reason),
            pubkey_g1=c.as_bytes(m["pubkey_g1"], f"{field}.pubkey_g1", c.G1_LEN),
            pubkey_g2=c.as_bytes(m["pubkey_g2"], f"{field}.pubkey_g2", c.G2_LEN),
            public_shares=c.as_indexed(
                m["public_shares"], f"{field}.public_shares", c.fixed(c.G1_LEN)
            ),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscriptSignature(SignedMessage):
    """Step 4: the node sealed its share as pending and signs the transcript hash.

    ``outcome`` travels with the signature so that the coordinator can rebuild the
    transcript body from what it relayed and check the hash without redoing the
    pairing checks; it is not signed separately (the hash binds it)."""

    KIND: ClassVar[str] = "dkg/transcript-signature"
    PURPOSE: ClassVar[str] = "dkg-transcript"
    KEYS: ClassVar[tuple[str, ...]] = ("ceremony", "sender", "transcript_hash", "outcome", "sig")
    ceremony: bytes
    sender: int
    transcript_hash: bytes
    outcome: Outcome
    sig: bytes = b""
    _memo: dict[str, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)

    def body(self) -> dict[str, Any]:
        return {
            "ceremony": self.ceremony,
            "sender": self.sender,
            "transcript_hash": self.transcript_hash,
            "outcome": self.outcome.to_wire(),
        }

    def signed_fields(self) -> dict[str, Any]:
        return transcript_signature_fields(self.ceremony, self.sender, self.transcript_hash)

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        m = c.as_map(value, field, cls.KIND, cls.KEYS)
        return cls(
            ceremony=c.as_bytes(m["ceremony"], f"{field}.ceremony", c.HASH_LEN),
            sender=c.as_index(m["sender"], f"{field}.sender"),
            transcript_hash=c.as_bytes(m["transcript_hash"], f"{field}.transcript_hash", 32),
            outcome=Outcome.from_wire(m["outcome"], f"{field}.outcome"),
            sig=c.as_bytes(m["sig"], f"{field}.sig", c.SIG_LEN),
        )


def transcript_signature_fields(
    ceremony: bytes, sender: int, transcript_hash: bytes
) -> dict[str, Any]:
    """The fields a holder signs under ``dkg-transcript`` (also checked in commits)."""
    return {"ceremony": ceremony, "sender": sender, "transcript_hash": transcript_hash}


def verify_transcript_signature(
    public_key: bytes, ceremony: bytes, sender: int, transcript_hash: bytes, sig: bytes
) -> bool:
    return verify_fields(
        public_key,
        TranscriptSignature.PURPOSE,
        transcript_signature_fields(ceremony, sender, transcript_hash),
        sig,
    )


NODE_MESSAGES: tuple[type[SignedMessage], ...] = (
    Open,
    DealBundle,
    Echo,
    Complaints,
    Justification,
    TranscriptSignature,
)
NodeMessage = Open | DealBundle | Echo | Complaints | Justification | TranscriptSignature
_BY_KIND: dict[str, Callable[[Any, str], SignedMessage]] = {
    m.KIND: m.from_wire for m in NODE_MESSAGES
}


def decode_node_message(data: bytes) -> NodeMessage:
    """Decode any node→coordinator message by its ``kind``.

    Raises:
        DecodeError: unknown kind or malformed message.
    """
    msg: NodeMessage = c.decode_by_kind(data, _BY_KIND)  # type: ignore[assignment]
    return msg

"""Key import (issue 7): an existing BN254 key split into the nodes so that the
coordinator never sees it. Sans-IO: the messages, the public checks of a bundle, a
node's check of its own share, the import transcript and its offline verification.
The importer's side (split and encrypt) is ``protocol.import_split``; the node RPC
methods are declared in ``protocol.import_api``.

1. Open. Each node answers an ``ImportOpen``: a fresh nonce and a fresh X25519 key for
   this import only, signed (purpose ``import-open``) by its Ed25519 key. The importer
   checks every signature against the *manifest* (never against what the coordinator
   says), so a coordinator cannot slip in an encryption key of its own.
2. Deal. The importer (the operator's CLI) picks f of degree t-1 with f(0) = sk,
   publishes C_k = a_k·G1 (C_0 is the keystore's public key), PK_G2 = sk·G2 and, for
   each holder j, f(j) encrypted to j's open key with the DKG's share encryption under
   the purpose ``import`` (ceremony = the import id, dealer 0, recipient j): an
   ``ImportBundle`` holds public data and ciphertexts only.
3. Seal. Holder j checks the bundle publicly (``check_bundle``: the cluster, every
   open's signature, every point, e(C_0, G2) = e(G1, PK_G2), 2 <= t <= holders), checks
   that its own open is the one it issued, decrypts its share and checks it against the
   commitments (``open_share``), seals it pending and signs the transcript hash
   (``ImportSignature``, purpose ``import-transcript``, ``protocol.commit``).
4. Commit. Every holder's signature goes into a ``CommitCertificate``; a node activates
   only if the certificate verifies against the manifest (``protocol.commit``).

The import id hashes the cluster, key id, epoch and every open (so every nonce and
encryption key); the transcript hash hashes the whole bundle. An ``ImportTranscript``
(bundle plus commit) is kept by every node and re-verifies offline with no secret
(``verify_import_transcript``). Per-import encryption keys (not the Noise static keys)
mean that a recorded bundle is useless once the nodes dropped those keys: destroying
the key later cannot be undone from old traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any, ClassVar, Self

from protocol.bn254 import G1, G1_GENERATOR, G2, G2_GENERATOR, pairing_check
from protocol.canonical import encode_canonical
from protocol.commit import IMPORT_PURPOSE, certificate_problem, commitment_fields
from protocol.dkg import codec as c
from protocol.dkg.crypto import (
    ShareDecryptionError,
    decrypt_share,
    tagged_hash,
    x25519_public_ok,
)
from protocol.dkg.messages import SignedMessage
from protocol.dkg.relayed import CommitCertificate
from protocol.encoding import g1_from_bytes, g1_to_bytes, g1_to_json, g2_from_bytes
from protocol.errors import DecodeError, Fault, TkmsError
from protocol.manifest import Manifest
from protocol.node_api import PublicKeyMetadata
from protocol.threshold import feldman_verify, public_share

DEALER = 0  # the importer's "dealer index" in the share encryption (nodes are 1..n)
SHARE_PURPOSE = "import"  # protocol.dkg.crypto purpose
TRANSCRIPT_FORMAT = "tkms-import-transcript-v1"


class ImportRejected(DecodeError):
    """An import bundle (or opening) that fails a check; names the field."""

    fault = Fault.CLIENT


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportOpen(SignedMessage):
    """Step 1: node ``sender`` takes part in the import of ``key_id`` with a fresh
    nonce and a fresh X25519 key that decrypts its share (and nothing else)."""

    KIND: ClassVar[str] = "import/open"
    PURPOSE: ClassVar[str] = "import-open"
    KEYS: ClassVar[tuple[str, ...]] = (
        "cluster", "key_id", "epoch", "sender", "nonce", "enc_key", "sig",
    )  # fmt: skip
    cluster: bytes
    key_id: str
    epoch: int
    sender: int
    nonce: bytes
    enc_key: bytes
    sig: bytes = b""

    def body(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "key_id": self.key_id,
            "epoch": self.epoch,
            "sender": self.sender,
            "nonce": self.nonce,
            "enc_key": self.enc_key,
        }

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        m = c.as_map(value, field, cls.KIND, cls.KEYS)
        return cls(
            cluster=c.as_bytes(m["cluster"], f"{field}.cluster", c.CLUSTER_ID_LEN),
            key_id=c.as_key_id(m["key_id"], f"{field}.key_id"),
            epoch=c.as_int(m["epoch"], f"{field}.epoch", 0, 2**32 - 1),
            sender=c.as_index(m["sender"], f"{field}.sender"),
            nonce=c.as_bytes(m["nonce"], f"{field}.nonce", c.NONCE_LEN),
            enc_key=c.as_bytes(m["enc_key"], f"{field}.enc_key", c.X25519_LEN),
            sig=c.as_bytes(m["sig"], f"{field}.sig", c.SIG_LEN),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportSignature(SignedMessage):
    """Step 3: holder ``sender`` sealed its share pending and signs the transcript
    hash (the fields ``protocol.commit`` checks in a certificate)."""

    KIND: ClassVar[str] = "import/signature"
    PURPOSE: ClassVar[str] = IMPORT_PURPOSE
    KEYS: ClassVar[tuple[str, ...]] = ("ceremony", "sender", "transcript_hash", "sig")
    ceremony: bytes
    sender: int
    transcript_hash: bytes
    sig: bytes = b""

    def body(self) -> dict[str, Any]:
        return commitment_fields(self.ceremony, self.sender, self.transcript_hash)

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        m = c.as_map(value, field, cls.KIND, cls.KEYS)
        return cls(
            ceremony=c.as_bytes(m["ceremony"], f"{field}.ceremony", c.HASH_LEN),
            sender=c.as_index(m["sender"], f"{field}.sender"),
            transcript_hash=c.as_bytes(m["transcript_hash"], f"{field}.transcript_hash", 32),
            sig=c.as_bytes(m["sig"], f"{field}.sig", c.SIG_LEN),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportBundle:
    """Step 2: what the importer sends (through the coordinator) to every holder.

    ``opens`` are the holders' signed opens, sorted by sender (they define the
    holders); ``commitments`` C_0..C_{t-1} (64-byte G1), ``pubkey_g2`` (128 bytes,
    EIP-197 order); ``ephemeral`` the importer's X25519 key and ``shares`` one
    ``(holder, ciphertext)`` pair per holder. No field is secret."""

    KIND: ClassVar[str] = "import/bundle"
    KEYS: ClassVar[tuple[str, ...]] = (
        "cluster", "key_id", "epoch", "threshold", "opens", "commitments", "pubkey_g2",
        "ephemeral", "shares",
    )  # fmt: skip
    cluster: bytes
    key_id: str
    epoch: int
    threshold: int
    opens: tuple[ImportOpen, ...]
    commitments: tuple[bytes, ...]
    pubkey_g2: bytes
    ephemeral: bytes
    shares: tuple[tuple[int, bytes], ...]

    @property
    def holders(self) -> tuple[int, ...]:
        return tuple(o.sender for o in self.opens)

    def to_wire(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "cluster": self.cluster,
            "key_id": self.key_id,
            "epoch": self.epoch,
            "threshold": self.threshold,
            "opens": [o.to_wire() for o in self.opens],
            "commitments": list(self.commitments),
            "pubkey_g2": self.pubkey_g2,
            "ephemeral": self.ephemeral,
            "shares": [[j, ct] for j, ct in self.shares],
        }

    def encode(self) -> bytes:
        return encode_canonical(self.to_wire())

    def import_id(self) -> bytes:
        return import_id(self.cluster, self.key_id, self.epoch, self.opens)

    def transcript_hash(self) -> bytes:
        return tagged_hash("import-transcript", self.to_wire())

    def ciphertext_for(self, index: int) -> bytes | None:
        return next((ct for j, ct in self.shares if j == index), None)

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        m = c.as_map(value, field, cls.KIND, cls.KEYS)
        cluster = c.as_bytes(m["cluster"], f"{field}.cluster", c.CLUSTER_ID_LEN)
        key_id = c.as_key_id(m["key_id"], f"{field}.key_id")
        epoch = c.as_int(m["epoch"], f"{field}.epoch", 0, 2**32 - 1)
        opens = c.as_items(m["opens"], f"{field}.opens", c.MAX_PARTICIPANTS, ImportOpen.from_wire)
        holders = [o.sender for o in opens]
        if len(holders) < 2:
            raise DecodeError(f"{field}.opens", "at least 2 holders")
        if any(a >= b for a, b in pairwise(holders)):
            raise DecodeError(f"{field}.opens", "must be sorted by sender, one per node")
        for i, o in enumerate(opens):
            if (o.cluster, o.key_id, o.epoch) != (cluster, key_id, epoch):
                raise DecodeError(f"{field}.opens[{i}]", "is for another cluster, key or epoch")
        threshold = c.as_int(m["threshold"], f"{field}.threshold", 2, len(holders))
        commitments = c.as_items(
            m["commitments"], f"{field}.commitments", c.MAX_PARTICIPANTS, c.fixed(c.G1_LEN)
        )
        if len(commitments) != threshold:
            raise DecodeError(f"{field}.commitments", f"expected {threshold} (the threshold)")
        shares = c.as_indexed(m["shares"], f"{field}.shares", c.fixed(c.CIPHERTEXT_LEN))
        if [j for j, _ in shares] != holders:
            raise DecodeError(f"{field}.shares", "must be one per holder, in holder order")
        return cls(
            cluster=cluster,
            key_id=key_id,
            epoch=epoch,
            threshold=threshold,
            opens=opens,
            commitments=commitments,
            pubkey_g2=c.as_bytes(m["pubkey_g2"], f"{field}.pubkey_g2", c.G2_LEN),
            ephemeral=c.as_bytes(m["ephemeral"], f"{field}.ephemeral", c.X25519_LEN),
            shares=shares,
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises: DecodeError naming the first malformed field."""
        return cls.from_wire(c.load(data, cls.KIND), cls.KIND)


def import_id(cluster: bytes, key_id: str, epoch: int, opens: tuple[ImportOpen, ...]) -> bytes:
    """The import's ceremony id: every open (nonces, keys, signatures) and the key."""
    return tagged_hash(
        "import-id",
        {
            "cluster": cluster,
            "key_id": key_id,
            "epoch": epoch,
            "opens": [o.to_wire() for o in opens],
        },
    )


def open_problem(message: ImportOpen, *, manifest: Manifest, key_id: str, epoch: int) -> str | None:
    """Why an open must not be used (None: signed by its sender's manifest key, for
    this cluster, key id and epoch, with a usable X25519 key)."""
    try:
        key = manifest.node_by_index(message.sender).ed25519_public_key
    except KeyError:
        return f"node {message.sender} is not in the manifest"
    if message.cluster != manifest.cluster_id:
        return f"open of node {message.sender} is for another cluster"
    if (message.key_id, message.epoch) != (key_id, epoch):
        return f"open of node {message.sender} is for another key or epoch"
    if not message.signature_valid(key):
        return f"open of node {message.sender}: invalid signature"
    if not x25519_public_ok(message.enc_key):
        return f"open of node {message.sender}: unusable encryption key"
    return None


@dataclass(frozen=True, slots=True)
class VerifiedImport:
    """A bundle that passed every public check, with its points decoded."""

    bundle: ImportBundle
    commitments: tuple[G1, ...]
    pubkey_g2: G2
    public_shares: dict[int, G1]
    import_id: bytes
    transcript_hash: bytes

    @property
    def pubkey_g1(self) -> G1:
        return self.commitments[0]


def check_bundle(bundle: ImportBundle, manifest: Manifest) -> VerifiedImport:
    """Every check of a bundle that needs no secret (see the module header).

    Raises:
        ImportRejected: naming the first problem.
    """
    if bundle.cluster != manifest.cluster_id:
        raise ImportRejected("bundle.cluster", "is not this cluster")
    for i, message in enumerate(bundle.opens):
        problem = open_problem(message, manifest=manifest, key_id=bundle.key_id, epoch=bundle.epoch)
        if problem:
            raise ImportRejected(f"bundle.opens[{i}]", problem)
    if not x25519_public_ok(bundle.ephemeral):
        raise ImportRejected("bundle.ephemeral", "unusable X25519 key")
    try:
        commitments = tuple(
            g1_from_bytes(raw, field=f"bundle.commitments[{k}]")
            for k, raw in enumerate(bundle.commitments)
        )
        pubkey_g2 = g2_from_bytes(bundle.pubkey_g2, field="bundle.pubkey_g2")
    except DecodeError as exc:
        raise ImportRejected(exc.field, exc.reason) from None
    if not pairing_check([(commitments[0], G2_GENERATOR), (-G1_GENERATOR, pubkey_g2)]):
        raise ImportRejected("bundle.pubkey_g2", "is not the G2 key of commitments[0]")
    shares = {j: public_share(commitments, j) for j in bundle.holders}
    if any(p.is_infinity() for p in shares.values()):
        raise ImportRejected("bundle.commitments", "give a holder the zero public share")
    return VerifiedImport(
        bundle=bundle,
        commitments=commitments,
        pubkey_g2=pubkey_g2,
        public_shares=shares,
        import_id=bundle.import_id(),
        transcript_hash=bundle.transcript_hash(),
    )


def open_share(verified: VerifiedImport, *, index: int, enc_secret: bytes, enc_key: bytes) -> int:
    """Holder ``index``'s share: decrypted and checked against the commitments.

    Raises:
        ImportRejected: no ciphertext for ``index``, it does not decrypt, or the
            share does not match the commitments.
    """
    ciphertext = verified.bundle.ciphertext_for(index)
    if ciphertext is None:
        raise ImportRejected("bundle.shares", f"no share for node {index}")
    try:
        share = decrypt_share(
            ciphertext,
            ceremony=verified.import_id,
            dealer=DEALER,
            recipient=index,
            recipient_secret=enc_secret,
            recipient_key=enc_key,
            ephemeral_public=verified.bundle.ephemeral,
            purpose=SHARE_PURPOSE,
        )
    except ShareDecryptionError as exc:
        raise ImportRejected(f"bundle.shares[{index}]", str(exc)) from None
    if share == 0 or not feldman_verify(index, share, verified.commitments):
        raise ImportRejected(f"bundle.shares[{index}]", "does not match the commitments")
    return share


# --------------------------------------------------------------------------- transcript


@dataclass(frozen=True, slots=True)
class ImportTranscript:
    """The committed import: the bundle and every holder's signature over its hash."""

    KIND: ClassVar[str] = "import/transcript"
    bundle: ImportBundle
    commit: CommitCertificate

    def encode(self) -> bytes:
        return encode_canonical(
            {"kind": self.KIND, "bundle": self.bundle.to_wire(), "commit": self.commit.to_wire()}
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        m = c.as_map(c.load(data, "transcript"), "transcript", cls.KIND, ("bundle", "commit"))
        return cls(
            bundle=ImportBundle.from_wire(m["bundle"], "transcript.bundle"),
            commit=CommitCertificate.from_wire(m["commit"], "transcript.commit"),
        )

    def to_json(self) -> dict[str, Any]:
        """The file format of ``<cluster-dir>/transcripts/<key>-<epoch>.json`` (the
        DKG transcript's layout: a summary, then ``transcript``, the canonical bytes in
        hex; ``from_json`` re-derives the summary and compares)."""
        b = self.bundle
        return {
            "format": TRANSCRIPT_FORMAT,
            "keyId": b.key_id,
            "epoch": b.epoch,
            "threshold": b.threshold,
            "importId": b.import_id().hex(),
            "transcriptHash": b.transcript_hash().hex(),
            "holders": list(b.holders),
            "pubkeyG1": b.commitments[0].hex(),
            "pubkeyG2": b.pubkey_g2.hex(),
            "transcript": self.encode().hex(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        """Raises: DecodeError if malformed or if the summary does not match."""
        return c.transcript_from_json(obj, TRANSCRIPT_FORMAT, cls.decode)


def is_import_transcript(data: bytes) -> bool:
    """True if ``data`` (canonical bytes or the JSON file) is an import transcript
    rather than a DKG one (the two share the nodes' transcript store)."""
    try:
        obj = c.transcript_json(data)
        if obj is not None:
            return isinstance(obj, dict) and obj.get("format") == TRANSCRIPT_FORMAT
        value = c.load(bytes(data), "transcript")
    except DecodeError:
        return False
    return isinstance(value, dict) and value.get("kind") == ImportTranscript.KIND


def load_import_transcript(data: bytes) -> ImportTranscript:
    """From canonical bytes or the JSON file. Raises: DecodeError."""
    obj = c.transcript_json(data)
    return ImportTranscript.decode(bytes(data)) if obj is None else ImportTranscript.from_json(obj)


@dataclass(frozen=True, slots=True)
class ImportCheck:
    """The answer of ``verify_import_transcript``."""

    valid: bool
    key_id: str
    holders: tuple[int, ...]
    pubkey_g1: G1 | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "keyId": self.key_id,
            "holders": list(self.holders),
            "pubkeyG1": g1_to_json(self.pubkey_g1) if self.pubkey_g1 is not None else None,
            "reason": self.reason,
        }


def verify_import_transcript(data: bytes, manifest: Manifest) -> ImportCheck:
    """Re-check a committed import offline: every open's signature, the public checks
    of the bundle, and a certificate signed by every holder (manifest keys)."""
    try:
        transcript = load_import_transcript(data)
    except TkmsError as exc:
        return ImportCheck(False, "", (), None, f"malformed: {exc}")
    b = transcript.bundle
    try:
        verified = check_bundle(b, manifest)
    except ImportRejected as exc:
        return ImportCheck(False, b.key_id, b.holders, None, str(exc))
    problem = certificate_problem(
        transcript.commit,
        purpose=IMPORT_PURPOSE,
        ceremony=verified.import_id,
        transcript_hash=verified.transcript_hash,
        holders=b.holders,
        manifest=manifest,
    )
    if problem:
        return ImportCheck(False, b.key_id, b.holders, verified.pubkey_g1, problem)
    return ImportCheck(True, b.key_id, b.holders, verified.pubkey_g1, "")


def metadata_problem(meta: PublicKeyMetadata, transcript: ImportTranscript) -> str | None:
    """Why ``transcript`` does not commit the key a node reports (``keys.list``), or
    None: key id, epoch, t, holders, both public keys, every public share and the
    transcript hash must all be the transcript's."""
    b = transcript.bundle
    try:
        commitments = [g1_from_bytes(raw, field="commitments") for raw in b.commitments]
    except DecodeError as exc:
        return f"transcript: {exc}"
    shares = {j: g1_to_bytes(public_share(commitments, j)) for j in b.holders}
    checks = (
        (b.key_id == meta.key_id, "key id"),
        (b.epoch == meta.epoch, "epoch"),
        (b.threshold == meta.t, "threshold"),
        (b.transcript_hash() == meta.transcript_hash, "transcript hash"),
        (set(b.holders) == set(meta.holders), "holders"),
        (b.commitments[0] == meta.pk_g1, "public key (G1)"),
        (b.pubkey_g2 == meta.pk_g2, "public key (G2)"),
        (all(shares.get(i) == pt for i, pt in meta.public_shares), "public shares"),
    )
    bad = [what for ok, what in checks if not ok]
    return f"differs from the nodes' key in: {', '.join(bad)}" if bad else None


def check_import_key(meta: PublicKeyMetadata, data: bytes, manifest: Manifest) -> str | None:
    """Why an imported key the nodes report must not be served (its transcript does
    not verify, or commits another key), or None. The coordinator's transcript check."""
    check = verify_import_transcript(data, manifest)
    if not check.valid:
        return check.reason
    return metadata_problem(meta, load_import_transcript(data))

"""The ceremony transcript, its hash, and offline verification (DESIGN.md §DKG,
"The transcript ... re-verifies offline with no secret (`tkms dkg verify`)").

A transcript *body* holds the proposal and every signed message of the ceremony in a
normal form (opens and per-node messages sorted by sender; bundles and
justifications deduplicated and sorted by (sender, digest)) plus the outcome each
holder computed. Every holder signs ``tagged_hash("dkg-transcript", body)``; the
stored ``Transcript`` is the body plus the ``CommitCertificate`` carrying those
signatures. Its canonical bytes are the msgpack of ``{"kind", "body", "commit"}``;
``to_json`` wraps them (hex) with a readable summary that ``from_json`` re-derives and
compares, so the JSON file has no field that is not checked.

``verify_transcript`` re-runs everything that does not need a secret: every
signature against the manifest, the ceremony id, each bundle's public checks (the
batch weights derived from the hash of the bundles), that every echo names exactly
the recorded bundles, the complaint tally, every justification, the outcome (QUAL,
both public keys, every public share), the transcript hash and the commit
certificate (at least ``min_holders`` distinct holders, each of which echoed and
complained, i.e. took part to the end). Whether a *complaint* was honest cannot be
checked offline (the disputed share was encrypted); what is checked is that it was
answered as the protocol requires.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from protocol.bn254 import G1
from protocol.canonical import encode_canonical
from protocol.dkg import codec as c
from protocol.dkg.crypto import tagged_hash, x25519_public_ok
from protocol.dkg.dealing import check_bundles
from protocol.dkg.errors import RelayFault
from protocol.dkg.messages import (
    Complaints,
    DealBundle,
    Echo,
    Justification,
    Open,
    Outcome,
    SignedMessage,
    verify_transcript_signature,
)
from protocol.dkg.outcome import compute_outcome, judge_justifications, tally_complaints
from protocol.dkg.relayed import CommitCertificate, Proposal
from protocol.encoding import g1_from_bytes
from protocol.errors import DecodeError, TkmsError
from protocol.manifest import Manifest

M = TypeVar("M", bound=SignedMessage)
FORMAT = "tkms-dkg-transcript-v1"


# --------------------------------------------------------------------------- ids


def ceremony_id(proposal: Proposal, opens: Iterable[Open]) -> bytes:
    """hash(cluster, key id, epoch, t, min holders, participants, every node's nonce
    and per-ceremony encryption key)."""
    contributions = sorted([o.sender, o.nonce, o.enc_key] for o in opens)
    return tagged_hash(
        "dkg-ceremony-id", {"proposal": proposal.to_wire(), "contributions": contributions}
    )


# --------------------------------------------------------------------------- checks


def message_problem(
    message: SignedMessage,
    *,
    manifest: Manifest,
    participants: Sequence[int],
    ceremony: bytes | None,
) -> str | None:
    """Why a signed node message does not belong to this ceremony, or ``None``."""
    if message.sender not in participants:
        return f"{message.KIND} from node {message.sender}, not a participant"
    if ceremony is not None and getattr(message, "ceremony", None) != ceremony:
        return f"{message.KIND} from node {message.sender} is for another ceremony"
    key = manifest.node_by_index(message.sender).ed25519_public_key
    if not message.signature_valid(key):
        return f"{message.KIND} from node {message.sender} has an invalid signature"
    return None


def open_problem(message: Open, *, proposal: Proposal, manifest: Manifest) -> str | None:
    """Why an ``Open`` does not answer ``proposal``, or ``None``."""
    if message.parameters() != proposal.parameters():
        return f"open from node {message.sender} answers another proposal"
    if not x25519_public_ok(message.enc_key):
        return f"open from node {message.sender} has a small-order encryption key"
    return message_problem(
        message, manifest=manifest, participants=proposal.participants, ceremony=None
    )


def proposal_problem(proposal: Proposal, manifest: Manifest) -> str | None:
    """Why a proposal cannot run on this cluster, or ``None``."""
    if proposal.cluster != manifest.cluster_id:
        return "proposal is for another cluster"
    known = {n.index for n in manifest.nodes}
    unknown = [j for j in proposal.participants if j not in known]
    if unknown:
        return f"participants {unknown} are not in the manifest"
    return None


def distinct(messages: Iterable[M]) -> tuple[M, ...]:
    """Deduplicated by digest, sorted by (sender, digest): the normal form of bundles
    and justifications (where two different ones from one sender are evidence)."""
    keyed = {m.digest(): m for m in messages}
    return tuple(keyed[d] for d in sorted(keyed, key=lambda d: (keyed[d].sender, d)))


def one_per_sender(messages: Iterable[M]) -> tuple[M, ...]:
    """Deduplicated and sorted by sender.

    Raises:
        ValueError: two different messages from one sender.
    """
    out: dict[int, M] = {}
    for m in distinct(messages):
        if m.sender in out:
            raise ValueError(f"two different {m.KIND} messages from node {m.sender}")
        out[m.sender] = m
    return tuple(out[s] for s in sorted(out))


def echo_of(bundles: Sequence[DealBundle]) -> tuple[tuple[int, bytes], ...]:
    """What a node that received ``bundles`` echoes."""
    return tuple(sorted({(b.sender, b.digest()) for b in bundles}))


# --------------------------------------------------------------------------- body


def _list(value: Any, field: str, cls: type[M], limit: int) -> tuple[M, ...]:
    return c.as_items(value, field, limit, cls.from_wire)


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscriptBody:
    """Everything a holder signs the hash of (see the module header)."""

    KIND = "dkg/transcript-body"
    KEYS = (
        "proposal", "opens", "bundles", "echoes", "complaints", "justifications", "outcome",
    )  # fmt: skip
    proposal: Proposal
    opens: tuple[Open, ...]
    bundles: tuple[DealBundle, ...]
    echoes: tuple[Echo, ...]
    complaints: tuple[Complaints, ...]
    justifications: tuple[Justification, ...]
    outcome: Outcome
    _memo: dict[str, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def ceremony(self) -> bytes:
        return ceremony_id(self.proposal, self.opens)

    def to_wire(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "proposal": self.proposal.to_wire(),
            "opens": [m.to_wire() for m in self.opens],
            "bundles": [m.to_wire() for m in self.bundles],
            "echoes": [m.to_wire() for m in self.echoes],
            "complaints": [m.to_wire() for m in self.complaints],
            "justifications": [m.to_wire() for m in self.justifications],
            "outcome": self.outcome.to_wire(),
        }

    def hash(self) -> bytes:
        """What every holder signs (computed once: the body is immutable)."""
        if "hash" not in self._memo:
            self._memo["hash"] = tagged_hash("dkg-transcript", self.to_wire())
        return self._memo["hash"]

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises: DecodeError naming the first malformed field."""
        return cls.from_wire(c.load(data, "transcript.body"), "transcript.body")

    @classmethod
    def from_wire(cls, value: Any, field: str) -> Self:
        m = c.as_map(value, field, cls.KIND, cls.KEYS)
        n = c.MAX_PARTICIPANTS
        return cls(
            proposal=Proposal.from_wire(m["proposal"], f"{field}.proposal"),
            opens=_list(m["opens"], f"{field}.opens", Open, n),
            bundles=_list(m["bundles"], f"{field}.bundles", DealBundle, 2 * n),
            echoes=_list(m["echoes"], f"{field}.echoes", Echo, n),
            complaints=_list(m["complaints"], f"{field}.complaints", Complaints, n),
            justifications=_list(
                m["justifications"], f"{field}.justifications", Justification, 2 * n
            ),
            outcome=Outcome.from_wire(m["outcome"], f"{field}.outcome"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Transcript:
    """A committed ceremony: the body and the holders' commit certificate."""

    KIND = "dkg/transcript"
    body: TranscriptBody
    commit: CommitCertificate

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.KIND, "body": self.body.to_wire(), "commit": self.commit.to_wire()}

    def encode(self) -> bytes:
        return encode_canonical(self.to_wire())

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Raises: DecodeError naming the first malformed field."""
        m = c.as_map(c.load(data, "transcript"), "transcript", cls.KIND, ("body", "commit"))
        return cls(
            body=TranscriptBody.from_wire(m["body"], "transcript.body"),
            commit=CommitCertificate.from_wire(m["commit"], "transcript.commit"),
        )

    def to_json(self) -> dict[str, Any]:
        """The file format of ``<cluster-dir>/transcripts/<key>-<epoch>.json``."""
        p, o = self.body.proposal, self.body.outcome
        return {
            "format": FORMAT,
            "keyId": p.key_id,
            "epoch": p.epoch,
            "threshold": p.threshold,
            "participants": list(p.participants),
            "ceremonyId": self.body.ceremony.hex(),
            "transcriptHash": self.commit.transcript_hash.hex(),
            "qual": list(o.qual),
            "holders": list(self.commit.holders),
            "pubkeyG1": o.pubkey_g1.hex(),
            "pubkeyG2": o.pubkey_g2.hex(),
            "transcript": self.encode().hex(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        """Raises: DecodeError if malformed or if the summary does not match."""
        return c.transcript_from_json(obj, FORMAT, cls.decode)


def commit_problem(cert: CommitCertificate, body: TranscriptBody, manifest: Manifest) -> str | None:
    """Why ``cert`` does not commit ``body``, or ``None``: same ceremony and hash, at
    least ``min_holders`` distinct participants, each with a valid ``dkg-transcript``
    signature, and each of which echoed and complained in ``body`` (took part to the
    end). A node runs this before it activates, also after a restart (from the body
    it kept with its pending share)."""
    p = body.proposal
    ceremony, transcript_hash = body.ceremony, body.hash()
    if cert.ceremony != ceremony:
        return "commit certificate is for another ceremony"
    if cert.transcript_hash != transcript_hash:
        return "commit certificate is for another transcript"
    if len(cert.signatures) < p.min_holders:
        return f"commit certificate has {len(cert.signatures)} holders, needs {p.min_holders}"
    took_part = {e.sender for e in body.echoes} & {m.sender for m in body.complaints}
    for j, sig in cert.signatures:
        if j not in took_part:
            return f"commit certificate names node {j}, which did not echo and complain"
        key = manifest.node_by_index(j).ed25519_public_key
        if not verify_transcript_signature(key, ceremony, j, transcript_hash, sig):
            return f"commit certificate: invalid signature of node {j}"
    return None


def committed_transcript(body: bytes, cert: CommitCertificate, manifest: Manifest) -> Transcript:
    """For a node shell after a restart in FINISH: it kept ``PendingKey.transcript_body``
    with its sealed pending share; given the commit certificate (from a coordinator
    rolling the ceremony forward) this is the transcript to store if the certificate
    commits that body. The node activates iff its index is in
    ``result.commit.holders``, and destroys its pending share otherwise.

    Raises:
        DecodeError: ``body`` is not a transcript body.
        RelayFault: the certificate does not commit this body.
    """
    decoded = TranscriptBody.decode(body)
    problem = commit_problem(cert, decoded, manifest)
    if problem is not None:
        raise RelayFault(problem)
    return Transcript(body=decoded, commit=cert)


def load_transcript(data: bytes) -> Transcript:
    """A transcript from its canonical bytes or its JSON file.

    Raises:
        DecodeError: malformed.
    """
    obj = c.transcript_json(data)
    return Transcript.decode(bytes(data)) if obj is None else Transcript.from_json(obj)


# --------------------------------------------------------------------------- verify


@dataclass(frozen=True, slots=True)
class TranscriptCheck:
    """The answer of ``verify_transcript`` (the ``tkms dkg verify`` JSON)."""

    valid: bool
    key_id: str | None
    qual: tuple[int, ...]
    pubkey_g1: G1 | None
    reason: str


class _Invalid(Exception):
    pass


def _require(problem: str | None) -> None:
    if problem is not None:
        raise _Invalid(problem)


def _normal(messages: Sequence[M], normal: Sequence[M], what: str) -> None:
    if tuple(messages) != tuple(normal):
        raise _Invalid(f"{what} are not in normal form (sorted, deduplicated)")


def _verify_body(b: TranscriptBody, manifest: Manifest) -> None:
    """All checks of the body (``_Invalid`` on the first failure)."""
    p = b.proposal
    _require(proposal_problem(p, manifest))
    for o in b.opens:
        _require(open_problem(o, proposal=p, manifest=manifest))
    try:
        opens = one_per_sender(b.opens)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    _normal(b.opens, opens, "opens")
    if tuple(o.sender for o in opens) != p.participants:
        raise _Invalid("the opens are not exactly one per participant")
    ceremony = ceremony_id(p, opens)
    parts = p.participants
    for group in (b.bundles, b.echoes, b.complaints, b.justifications):
        for m in group:
            _require(message_problem(m, manifest=manifest, participants=parts, ceremony=ceremony))
    _normal(b.bundles, distinct(b.bundles), "bundles")
    _normal(b.justifications, distinct(b.justifications), "justifications")
    try:
        _normal(b.echoes, one_per_sender(b.echoes), "echoes")
        _normal(b.complaints, one_per_sender(b.complaints), "complaints")
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    expected_echo = echo_of(b.bundles)
    for e in b.echoes:
        if e.bundles != expected_echo:
            raise _Invalid(f"the echo of node {e.sender} does not name exactly the bundles")
    seed = tagged_hash("dkg-verify-weights", [m.to_wire() for m in b.bundles])
    verdict = check_bundles(b.bundles, threshold=p.threshold, participants=parts, weight_seed=seed)
    tally = tally_complaints(b.complaints, {m.sender for m in b.bundles}, p.threshold)
    judgement = judge_justifications(b.justifications, tally, verdict.candidates)
    outcome = compute_outcome(parts, verdict, tally, judgement)
    if outcome is None:
        raise _Invalid("fewer than t dealers qualify")
    if outcome != b.outcome:
        raise _Invalid("the recorded outcome (QUAL, keys, public shares) is not the computed one")


def verify_transcript(transcript_bytes: bytes, manifest: Manifest) -> TranscriptCheck:
    """Re-verify a stored transcript offline against the manifest's public keys.

    Never raises for bad input: every problem is a ``TranscriptCheck`` with
    ``valid=False`` and a ``reason``.
    """
    try:
        transcript = load_transcript(transcript_bytes)
    except DecodeError as exc:
        return TranscriptCheck(False, None, (), None, f"malformed: {exc}")
    b = transcript.body
    key_id = b.proposal.key_id
    try:
        _require(proposal_problem(b.proposal, manifest))
        # the commit first: it is cheap, and any changed byte of the body changes the
        # hash it signs, so tampering is found before the pairing checks run
        _require(commit_problem(transcript.commit, b, manifest))
        _verify_body(b, manifest)
        pubkey = g1_from_bytes(b.outcome.pubkey_g1, field="outcome.pubkey_g1")
    except (_Invalid, TkmsError, KeyError) as exc:
        return TranscriptCheck(False, key_id, (), None, str(exc) or type(exc).__name__)
    return TranscriptCheck(True, key_id, b.outcome.qual, pubkey, "")

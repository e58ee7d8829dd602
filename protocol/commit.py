"""Commit certificates: the holders' signatures that turn a pending key active
(DESIGN.md §DKG step 4; shared by the DKG and key import).

A ceremony that leaves shares sealed *pending* on the nodes ends with every holder
signing ``{ceremony, sender, transcript_hash}`` under the ceremony kind's purpose tag
(``protocol.signing``): ``dkg-transcript`` for a DKG, ``import-transcript`` for a key
import. The coordinator collects those signatures into a
``protocol.dkg.relayed.CommitCertificate`` (ceremony id, transcript hash, ``[index,
signature]`` pairs) and relays it; a node activates its pending share only if
``certificate_problem`` finds nothing wrong: same ceremony and transcript hash as the
share it sealed, signers drawn from the holders (all of them when ``required`` says
so, else at least ``min_holders``), each signature valid under the manifest's Ed25519
key of that node. The transcript hashes of the two kinds carry different tags, so a
signature made for one kind never fits the other; the purpose tags separate them too.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from nacl.signing import SigningKey

from protocol.dkg.relayed import CommitCertificate
from protocol.manifest import Manifest
from protocol.signing import sign_fields, verify_fields

DKG_PURPOSE = "dkg-transcript"
IMPORT_PURPOSE = "import-transcript"
PURPOSES = (DKG_PURPOSE, IMPORT_PURPOSE)


def commitment_fields(ceremony: bytes, sender: int, transcript_hash: bytes) -> dict[str, Any]:
    """What a holder signs (the same three fields for every purpose)."""
    return {"ceremony": ceremony, "sender": sender, "transcript_hash": transcript_hash}


def _check_purpose(purpose: str) -> str:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown commit purpose {purpose!r}")
    return purpose


def sign_commitment(
    key: SigningKey, purpose: str, ceremony: bytes, sender: int, transcript_hash: bytes
) -> bytes:
    """Holder ``sender``'s 64-byte signature over the transcript hash."""
    fields = commitment_fields(ceremony, sender, transcript_hash)
    return sign_fields(key, _check_purpose(purpose), fields)


def verify_commitment(
    public_key: bytes,
    purpose: str,
    ceremony: bytes,
    sender: int,
    transcript_hash: bytes,
    sig: bytes,
) -> bool:
    fields = commitment_fields(ceremony, sender, transcript_hash)
    return verify_fields(public_key, _check_purpose(purpose), fields, sig)


def make_certificate(
    ceremony: bytes, transcript_hash: bytes, signatures: Mapping[int, bytes]
) -> CommitCertificate:
    """The certificate carrying ``signatures`` (index -> signature), sorted by index."""
    return CommitCertificate(
        ceremony=ceremony,
        transcript_hash=transcript_hash,
        signatures=tuple(sorted(signatures.items())),
    )


def certificate_problem(
    cert: CommitCertificate,
    *,
    purpose: str,
    ceremony: bytes,
    transcript_hash: bytes,
    holders: Collection[int],
    manifest: Manifest,
    required: bool = True,
    min_holders: int = 1,
) -> str | None:
    """Why ``cert`` does not commit this (ceremony, transcript hash), or ``None``.

    ``holders`` are the nodes that may sign; with ``required`` every one of them must
    (key import), else at least ``min_holders`` of them (DKG: the committed holders
    are then the signers)."""
    if cert.ceremony != ceremony:
        return "commit certificate is for another ceremony"
    if cert.transcript_hash != transcript_hash:
        return "commit certificate is for another transcript"
    signers = [j for j, _ in cert.signatures]
    if len(set(signers)) != len(signers):
        return "commit certificate names a node twice"
    strangers = sorted(set(signers) - set(holders))
    if strangers:
        return f"commit certificate names nodes {strangers}, which are not holders"
    if required and set(signers) != set(holders):
        missing = sorted(set(holders) - set(signers))
        return f"commit certificate lacks the signatures of holders {missing}"
    if len(signers) < min_holders:
        return f"commit certificate has {len(signers)} holders, needs {min_holders}"
    for j, sig in cert.signatures:
        try:
            key = manifest.node_by_index(j).ed25519_public_key
        except KeyError:
            return f"commit certificate names node {j}, which is not in the manifest"
        if not verify_commitment(key, purpose, ceremony, j, transcript_hash, sig):
            return f"commit certificate: invalid signature of node {j}"
    return None

"""Pending -> active on a node: the commit step every ceremony that seals shares
*pending* ends with (DESIGN.md §DKG step 4; used by key import, written to be shared
with the DKG's node handlers).

``activate_with_certificate`` activates the node's pending share of ``key_id`` only if
the ``CommitCertificate`` commits exactly what the node sealed: the same ceremony id,
the transcript hash recorded in the pending metadata, signers drawn from the recorded
holders (all of them with ``required``, else at least ``min_holders``, and then the
holders narrow to the signers), each signature valid under the manifest's Ed25519 key
(``protocol.commit.certificate_problem``). The transcript (public) is stored first, so
an active key always has one; a crash between the two steps leaves a pending key whose
commit can simply be delivered again (same transcript bytes: accepted).
"""

from __future__ import annotations

from node.store import KeyStatus, MetadataVersion, ShareStore, StoreError
from protocol.commit import certificate_problem
from protocol.dkg.relayed import CommitCertificate
from protocol.errors import Fault
from protocol.manifest import Manifest


class CommitRefused(StoreError):
    """The certificate does not commit the pending share (nothing changed)."""

    fault = Fault.PEER


async def activate_with_certificate(
    store: ShareStore,
    manifest: Manifest,
    key_id: str,
    cert: CommitCertificate,
    *,
    purpose: str,
    ceremony: bytes,
    transcript: bytes,
    required: bool = True,
    min_holders: int = 1,
) -> MetadataVersion:
    """Verify ``cert`` against the pending metadata of ``key_id``, store
    ``transcript``, activate. Raises ``CommitRefused`` (nothing changed) or a
    ``StoreError`` (unknown key, not pending)."""
    meta = await store.get_metadata(key_id)
    if meta.status is not KeyStatus.PENDING:
        raise CommitRefused(f"key {key_id} is {meta.status.value}, not pending")
    problem = certificate_problem(
        cert,
        purpose=purpose,
        ceremony=ceremony,
        transcript_hash=meta.transcript_hash,
        holders=meta.holders,
        manifest=manifest,
        required=required,
        min_holders=min_holders,
    )
    if problem:
        raise CommitRefused(problem)
    try:
        await store.save_transcript(key_id, meta.epoch, transcript)
    except FileExistsError:
        if await store.load_transcript(key_id, meta.epoch) != transcript:
            raise CommitRefused(f"key {key_id}: another transcript is stored") from None
    signers = [j for j, _ in cert.signatures]
    if set(signers) == set(meta.holders):
        return await store.activate(key_id)
    return await store.activate(key_id, holders=signers)

"""In-process stand-ins for key import: fake nodes with real Ed25519 and X25519 keys
(they open, check bundles, decrypt and Feldman-check their shares and sign the
transcript, exactly as ``node/handlers/key_import.py`` does, minus sealing) and an
importer that builds a bundle the way the CLI does (``protocol.import_split``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from nacl.signing import SigningKey

from protocol.bn254 import g1_mul_generator
from protocol.commit import IMPORT_PURPOSE, make_certificate, sign_commitment
from protocol.dkg.crypto import x25519_keypair
from protocol.import_split import check_opens, seal_bundle, split_key
from protocol.key_import import ImportBundle, ImportOpen, ImportTranscript, check_bundle, open_share
from protocol.manifest import Manifest, NodeEntry
from protocol.rng import Rng, seeded_rng
from protocol.threshold import interpolate_at_zero


@dataclass
class FakeImportNodes:
    """``n`` nodes that take part in imports (their keys are in ``manifest``)."""

    names: Sequence[str]
    rng: Rng = field(default_factory=lambda: seeded_rng(b"fake-import-nodes"))
    manifest: Manifest = field(init=False)
    signing: dict[int, SigningKey] = field(init=False)
    opened: dict[tuple[str, int], tuple[ImportOpen, bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.signing = {i: SigningKey(self.rng(32)) for i in range(1, len(self.names) + 1)}
        self.manifest = Manifest(
            cluster_id=self.rng(16),
            nodes=tuple(
                NodeEntry(
                    index=i,
                    name=name,
                    address=f"127.0.0.1:{9000 + i}",
                    noise_public_key=self.rng(32),
                    ed25519_public_key=bytes(self.signing[i].verify_key),
                )
                for i, name in enumerate(self.names, start=1)
            ),
            coordinators=(),
        )

    def open(self, key_id: str, down: set[str]) -> list[tuple[str, ImportOpen]]:
        out = []
        for entry in self.manifest.nodes:
            if entry.name in down:
                continue
            secret, public = x25519_keypair(self.rng)
            message = ImportOpen(
                cluster=self.manifest.cluster_id,
                key_id=key_id,
                epoch=0,
                sender=entry.index,
                nonce=self.rng(32),
                enc_key=public,
            ).signed_by(self.signing[entry.index])
            self.opened[(key_id, entry.index)] = (message, secret)
            out.append((entry.name, message))
        return out

    def accept(self, bundle: ImportBundle) -> tuple[bytes, int]:
        """What the holders would do: every check, every share; returns the committed
        transcript and (for the fake backend, which signs with whole keys) the key."""
        verified = check_bundle(bundle, self.manifest)
        shares = {}
        for j in bundle.holders:
            message, secret = self.opened.pop((bundle.key_id, j))
            assert message in bundle.opens
            shares[j] = open_share(verified, index=j, enc_secret=secret, enc_key=message.enc_key)
        signatures = {
            j: sign_commitment(
                self.signing[j], IMPORT_PURPOSE, verified.import_id, j, verified.transcript_hash
            )
            for j in bundle.holders
        }
        cert = make_certificate(verified.import_id, verified.transcript_hash, signatures)
        sk = interpolate_at_zero(dict(list(shares.items())[: bundle.threshold]))
        assert g1_mul_generator(sk) == verified.pubkey_g1
        return ImportTranscript(bundle, cert).encode(), sk


def make_bundle(
    nodes: FakeImportNodes,
    opens: Sequence[ImportOpen],
    *,
    key_id: str,
    sk: int,
    threshold: int,
    rng: Rng,
) -> ImportBundle:
    """The bundle the CLI would post for ``sk``."""
    checked = check_opens(
        opens, manifest=nodes.manifest, key_id=key_id, epoch=0, min_holders=threshold
    )
    split = split_key(
        sk, g1_mul_generator(sk), threshold=threshold, indices=[o.sender for o in checked], rng=rng
    )
    try:
        return seal_bundle(split, checked, manifest=nodes.manifest, key_id=key_id, epoch=0, rng=rng)
    finally:
        split.forget()

"""``tkms key import``: split an existing BN254 BLS key into the nodes, with the
coordinator untrusted (docs/ceremony.md "Importing an existing key").

``tkms key import --key-id K --keystore FILE [--threshold T] [--min-holders M]
[--json]`` (cluster dir, ``--api-key-file``: as every operator command):

1. reads FILE (an eigensdk-go or EIP-2335 keystore; malformed or truncated JSON is
   refused before a password is asked for) and the password from
   ``TKMS_KEYSTORE_PASSWORD`` or, on a terminal, a prompt (no terminal and no
   variable: a clear error, never a hang);
2. decrypts it locally (``protocol.keystore``: MAC or checksum, KDF bounds, secret in
   [1, r-1], the stated public key) and warns on a small secret — nothing has been
   sent anywhere yet, so a bad keystore leaves no trace on any node;
3. splits the secret at once (``protocol.import_split``: fresh random polynomial,
   Feldman commitments whose C_0 must be the keystore's public key, the G2 key, one
   share per node) and drops the secret and the polynomial;
4. ``POST /v1/keys/import/open``; checks every node's signed open against the
   manifest (not against the coordinator), encrypts each share to its node, drops
   the shares, ``POST /v1/keys/import`` with public data and ciphertexts only;
5. checks the answer: the transcript must be the bundle it sent, committed by every
   holder (``verify_import_transcript`` against the manifest), and the key the
   coordinator reports must have the keystore's public key; writes the transcript to
   ``<cluster-dir>/transcripts/<key>-<epoch>.json``.

``--json`` prints what ``tkms dkg`` prints: ``keyId``, ``pubkeyG1``, ``pubkeyG2``,
``operatorId``, ``holders``, ``transcript`` (the path), plus ``threshold``, ``n``,
``epoch``, ``transcriptHash``. The source keystore is not touched: destroy it
afterwards (docs/ceremony.md says how).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from cluster import launcher
from cluster.client import CoordinatorClient, api_key
from cluster.dkg_cmd import key_result, write_transcript
from cluster.output import emit, progress
from protocol.bn254 import G1
from protocol.encoding import g1_to_json, g2_from_bytes, g2_to_json
from protocol.errors import DecodeError, Fault, TkmsError
from protocol.import_json import bundle_to_json, opens_from_json
from protocol.import_split import check_opens, seal_bundle, split_key
from protocol.key_import import ImportTranscript, verify_import_transcript
from protocol.keystore import (
    MAX_KEYSTORE_BYTES,
    decrypt_keystore,
    keystore_format,
    parse_keystore_json,
)
from protocol.manifest import Manifest, ManifestError, parse_manifest
from protocol.rng import os_rng

PASSWORD_ENV = "TKMS_KEYSTORE_PASSWORD"
IMPORT_TIMEOUT_S = 900.0  # the coordinator bounds the import itself (ceremony timeout)


class ImportCommandError(TkmsError):
    """The import cannot go on (input, password source, an answer that does not check)."""

    fault = Fault.CONFIG


def register(sub: Any) -> None:
    key = sub.add_parser("key", help="operator key material: import an existing key")
    actions = key.add_subparsers(dest="key_action", metavar="ACTION", required=True)
    p = actions.add_parser(
        "import",
        help="split an eigensdk-go or EIP-2335 keystore into the nodes (the key never "
        "leaves this machine whole)",
    )
    p.add_argument("--key-id", required=True, help="the new key id (never overwritten)")
    p.add_argument("--keystore", required=True, type=Path, help="the keystore file")
    p.add_argument("--threshold", type=int, help="signers needed (default: the cluster's)")
    p.add_argument("--min-holders", type=int, help="nodes that must hold a share (default: all)")
    p.add_argument(
        "--cluster-dir",
        help="the cluster directory (default: $TKMS_CLUSTER_DIR, else ./tkms-cluster)",
    )
    p.add_argument("--api-key-file", type=Path, help="file holding the operator's API key")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=cmd_import)


def read_keystore(path: Path) -> dict[str, Any]:
    """The keystore's JSON object (size-bounded; truncated JSON is a clear error)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_KEYSTORE_BYTES + 1)
    except OSError as exc:
        raise ImportCommandError(f"cannot read keystore {path}: {exc.strerror}") from None
    obj = dict(parse_keystore_json(data))
    keystore_format(obj)  # an eigensdk-go or EIP-2335 keystore, or a clear error
    return obj


def read_password() -> str:
    """``TKMS_KEYSTORE_PASSWORD``, else a prompt on the terminal (never a flag)."""
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env is not None:
        return from_env
    if not sys.stdin.isatty():
        raise ImportCommandError(
            f"no keystore password: set {PASSWORD_ENV} or run on a terminal to be prompted"
        )
    return getpass.getpass("keystore password: ")


def load_manifest(layout: launcher.ClusterLayout) -> Manifest:
    try:
        return parse_manifest(layout.manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportCommandError(f"cannot read the manifest {layout.manifest}: {exc}") from None
    except ManifestError as exc:
        raise ImportCommandError(f"manifest {layout.manifest}: {exc}") from None


def cmd_import(args: argparse.Namespace) -> int:
    layout = launcher.ClusterLayout.load(launcher.default_cluster_dir(args.cluster_dir))
    manifest = load_manifest(layout)
    n = len(manifest.nodes)
    threshold = args.threshold if args.threshold is not None else layout.threshold
    min_holders = args.min_holders if args.min_holders is not None else n
    if not 2 <= threshold <= min_holders <= n:
        raise ImportCommandError(
            f"need 2 <= threshold ({threshold}) <= min holders ({min_holders}) <= nodes ({n})"
        )
    client = CoordinatorClient.for_cluster(
        layout, api_key(args.api_key_file, layout), timeout_s=IMPORT_TIMEOUT_S
    )
    obj = read_keystore(args.keystore)
    password = read_password()
    imported = decrypt_keystore(obj, password)
    del password
    pubkey_g1 = imported.pubkey_g1
    progress(f"keystore decrypted ({imported.format}); its public key checks out")
    if imported.small_secret:
        progress("WARNING: the secret key is smaller than 2^128: it may be guessable")
    split = split_key(
        imported.secret_scalar(),
        pubkey_g1,
        threshold=threshold,
        indices=[e.index for e in manifest.nodes],
        rng=os_rng,
    )
    del imported  # from here on only shares exist, and only until they are encrypted
    try:
        progress(f"key split {threshold}-of-{n}; asking the nodes for their import keys")
        body: dict[str, Any] = {"keyId": args.key_id}
        if args.min_holders is not None:
            body["minHolders"] = min_holders
        opening = client.call("POST", "/v1/keys/import/open", body)
        opens = check_opens(
            opens_from_json(opening),
            manifest=manifest,
            key_id=args.key_id,
            epoch=int(opening.get("epoch", 0)),
            min_holders=min_holders,
        )
        bundle = seal_bundle(
            split, opens, manifest=manifest, key_id=args.key_id, epoch=opens[0].epoch, rng=os_rng
        )
    finally:
        split.forget()
    holders = [manifest.node_by_index(o.sender).name for o in opens]
    progress(f"shares encrypted to {', '.join(holders)}; relaying through the coordinator")
    post = bundle_to_json(bundle, min_holders=args.min_holders)
    key = client.call("POST", "/v1/keys/import", post)
    transcript = _check_answer(key, bundle.transcript_hash(), manifest, pubkey_g1)
    path = write_transcript(layout, transcript.to_json(), error=ImportCommandError)
    result = key_result(key, path)
    human = "\n".join(
        [
            f"key {key['keyId']} imported and active: {key['threshold']}-of-{key['n']}",
            f"  operator id  {key['operatorId']} (unchanged: nothing changes on chain)",
            f"  holders      {', '.join(key['holders'])}",
            f"  transcript   {path}",
            "  now destroy the source keystore (docs/ceremony.md)",
        ]
    )
    emit(result, as_json=args.json, human=human)
    return 0


def _check_answer(
    key: dict[str, Any], transcript_hash: bytes, manifest: Manifest, pubkey_g1: G1
) -> ImportTranscript:
    """The committed transcript, if it is the bundle we sent, signed by every holder,
    for the keystore's key; else ``ImportCommandError``."""
    try:
        transcript = ImportTranscript.from_json(key.get("transcript"))
    except DecodeError as exc:
        raise ImportCommandError(
            f"the coordinator returned a malformed transcript: {exc}"
        ) from None
    if transcript.bundle.transcript_hash() != transcript_hash:
        raise ImportCommandError("the coordinator returned the transcript of another import")
    check = verify_import_transcript(transcript.encode(), manifest)
    if not check.valid:
        raise ImportCommandError(f"the import transcript does not verify: {check.reason}")
    pk_g2 = g2_to_json(g2_from_bytes(transcript.bundle.pubkey_g2, field="pubkeyG2"))
    if key.get("pubkeyG1") != g1_to_json(pubkey_g1) or key.get("pubkeyG2") != pk_g2:
        raise ImportCommandError("the coordinator reports another public key for the new key")
    if key.get("transcriptHash") != "0x" + transcript_hash.hex():
        raise ImportCommandError("the coordinator reports another transcript hash")
    return transcript

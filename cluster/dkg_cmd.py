"""``tkms dkg``: run a DKG ceremony through the coordinator, and ``tkms dkg verify``:
re-check a stored transcript offline (docs/ceremony.md).

``tkms dkg --key-id K [--threshold T] [--min-holders M] [--json]`` sends
``POST /v1/dkg`` with the operator's API key (``cluster.client.api_key``) and, while
it runs, polls ``GET /v1/dkg/K`` and prints each new progress event on stderr. Once
the key is committed it fetches the transcript (``GET /v1/keys/K/transcript``),
checks that it commits the key the coordinator answered, writes it to
``<cluster-dir>/transcripts/<key>-<epoch>.json`` and prints ``keyId``, ``pubkeyG1``,
``pubkeyG2`` (spec §7 point JSON), ``operatorId``, ``holders``, ``transcript`` (the
path), plus ``threshold``, ``n``, ``epoch`` and ``transcriptHash``. ``--threshold``
defaults to the cluster's (cluster.json). An aborted ceremony exits 2 with the
coordinator's reason.

``tkms dkg verify PATH [--manifest M] [--json]`` runs
``protocol.dkg.verify_transcript`` against the manifest's public keys (default: the
cluster dir's ``manifest.toml``), with no secret and no network, and prints
``{"valid", "keyId", "qual", "pubkeyG1", "reason"}``; exit 1 when invalid. A
``tkms key import`` transcript is checked with ``protocol.key_import``'s
``verify_import_transcript`` (``qual`` then lists its holders: an import has no
dealers to qualify).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cluster import launcher
from cluster.client import ApiFailure, CoordinatorClient, api_key
from cluster.output import emit, progress
from protocol.dkg import TranscriptCheck, load_transcript, verify_transcript
from protocol.encoding import g1_to_json
from protocol.errors import DecodeError, Fault, TkmsError
from protocol.key_import import is_import_transcript, verify_import_transcript
from protocol.manifest import ManifestError, parse_manifest

POLL_S = 0.3
CEREMONY_TIMEOUT_S = 3600.0  # the coordinator bounds the ceremony itself


class DkgCommandError(TkmsError):
    fault = Fault.CONFIG


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "dkg", help="run a DKG ceremony for a new key (or: dkg verify PATH)"
    )
    parser.add_argument("--key-id", help="the new key's id")
    parser.add_argument("--threshold", type=int, help="signers needed t (default: the cluster's)")
    parser.add_argument(
        "--min-holders", type=int, help="holders needed to commit (default: every node)"
    )
    parser.add_argument("--api-key-file", type=Path, help="file with the operator's API key")
    _common(parser)
    parser.set_defaults(handler=cmd_dkg)
    actions = parser.add_subparsers(dest="dkg_action", metavar="ACTION")
    verify = actions.add_parser("verify", help="re-check a transcript offline")
    verify.add_argument("path", type=Path, help="a transcript file (.json or canonical bytes)")
    verify.add_argument("--manifest", type=Path, help="default: <cluster-dir>/manifest.toml")
    _common(verify)
    verify.set_defaults(handler=cmd_verify)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster-dir",
        help="the cluster directory (default: $TKMS_CLUSTER_DIR, else ./tkms-cluster)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


# -- tkms dkg -------------------------------------------------------------------------


def _watch(client: CoordinatorClient, key_id: str, done: threading.Event) -> None:
    """Print every new progress event until ``done`` (then once more)."""
    shown = 0
    started: float | None = None
    while True:
        finished = done.wait(POLL_S)
        try:
            status, doc = client.request("GET", f"/v1/dkg/{key_id}", timeout_s=5.0)
        except ApiFailure:
            status, doc = 0, None
        if status == 200 and isinstance(doc, dict):
            events = doc.get("events", [])
            if shown > len(events):  # a new ceremony for this key id
                shown = 0
            for event in events[shown:]:
                started = started or time.monotonic()
                phase = str(event.get("phase", ""))
                progress(f"[{float(event.get('at', 0)):6.2f}s] {phase:<9} {event.get('message')}")
            shown = len(events)
        if finished:
            return


def run_ceremony(
    client: CoordinatorClient, key_id: str, threshold: int, min_holders: int | None
) -> dict[str, Any]:
    """POST /v1/dkg with progress on stderr; the Key document (``ApiFailure`` if not)."""
    body: dict[str, Any] = {"keyId": key_id, "threshold": threshold}
    if min_holders is not None:
        body["minHolders"] = min_holders
    done = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        watcher = pool.submit(_watch, client, key_id, done)
        try:
            key: dict[str, Any] = client.call("POST", "/v1/dkg", body, timeout_s=CEREMONY_TIMEOUT_S)
        finally:
            done.set()
            watcher.result(timeout=30)
    return key


def save_transcript(
    layout: launcher.ClusterLayout, doc: dict[str, Any], key: dict[str, Any]
) -> Path:
    """Check that the fetched transcript commits ``key``; write it under transcripts/."""
    try:
        transcript = load_transcript(json.dumps(doc).encode())
    except DecodeError as exc:
        raise DkgCommandError(f"the coordinator returned a malformed transcript: {exc}") from None
    summary = transcript.to_json()
    want_hash = str(key["transcriptHash"]).removeprefix("0x")
    if summary["keyId"] != key["keyId"] or summary["transcriptHash"] != want_hash:
        raise DkgCommandError("the transcript returned is not the one of the new key")
    return write_transcript(layout, summary, error=DkgCommandError)


def write_transcript(
    layout: launcher.ClusterLayout, summary: dict[str, Any], *, error: type[TkmsError]
) -> Path:
    """Write a transcript's JSON file to ``transcripts/<key>-<epoch>.json`` (atomically;
    the same file again is fine, another one there raises ``error``). Also used by
    ``tkms key import``."""
    directory = layout.root / "transcripts"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{summary['keyId']}-{summary['epoch']}.json"
    text = json.dumps(summary, indent=1) + "\n"
    if path.exists() and path.read_text() != text:
        raise error(f"{path} exists with another transcript: not overwriting it")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def key_result(key: dict[str, Any], path: Path) -> dict[str, Any]:
    """The ``--json`` answer of ``tkms dkg`` and ``tkms key import``: the coordinator's
    key (``key``) and the transcript file written (``path``)."""
    return {
        "keyId": key["keyId"],
        "pubkeyG1": key["pubkeyG1"],
        "pubkeyG2": key["pubkeyG2"],
        "operatorId": key["operatorId"],
        "holders": key["holders"],
        "transcript": str(path),
        "threshold": key["threshold"],
        "n": key["n"],
        "epoch": key["epoch"],
        "transcriptHash": key["transcriptHash"],
    }


def cmd_dkg(args: argparse.Namespace) -> int:
    if args.key_id is None:
        raise DkgCommandError("--key-id is required (or: tkms dkg verify PATH)")
    layout = launcher.ClusterLayout.load(launcher.default_cluster_dir(args.cluster_dir))
    client = CoordinatorClient.for_cluster(layout, api_key(args.api_key_file, layout))
    threshold = args.threshold if args.threshold is not None else layout.threshold
    progress(
        f"DKG for key {args.key_id}: t = {threshold}, "
        f"min holders {args.min_holders or 'all nodes'}, coordinator {layout.http}"
    )
    key = run_ceremony(client, args.key_id, threshold, args.min_holders)
    doc = client.call("GET", f"/v1/keys/{args.key_id}/transcript")
    path = save_transcript(layout, doc, key)
    result = key_result(key, path)
    human = "\n".join(
        [
            f"key {key['keyId']} active: {key['threshold']}-of-{key['n']}, epoch {key['epoch']}",
            f"  operator id  {key['operatorId']}",
            f"  pubkey G1    X {key['pubkeyG1']['X']}",
            f"               Y {key['pubkeyG1']['Y']}",
            f"  holders      {', '.join(key['holders'])}",
            f"  transcript   {path}  (check it: tkms dkg verify {path})",
        ]
    )
    emit(result, as_json=args.json, human=human)
    return 0


# -- tkms dkg verify --------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    manifest_path: Path = args.manifest or (
        launcher.default_cluster_dir(args.cluster_dir) / "manifest.toml"
    )
    try:
        manifest = parse_manifest(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DkgCommandError(f"cannot read the manifest {manifest_path}: {exc}") from None
    except ManifestError as exc:
        raise DkgCommandError(f"manifest {manifest_path}: {exc}") from None
    try:
        data = args.path.read_bytes()
    except OSError as exc:
        raise DkgCommandError(f"cannot read {args.path}: {exc.strerror}") from None
    if is_import_transcript(data):  # a `tkms key import` transcript: no QUAL, its holders
        imported = verify_import_transcript(data, manifest)
        check = TranscriptCheck(
            imported.valid, imported.key_id, imported.holders, imported.pubkey_g1, imported.reason
        )
    else:
        check = verify_transcript(data, manifest)
    result = {
        "valid": check.valid,
        "keyId": check.key_id,
        "qual": list(check.qual),
        "pubkeyG1": g1_to_json(check.pubkey_g1) if check.pubkey_g1 is not None else None,
        "reason": check.reason,
    }
    if check.valid:
        human = f"valid: key {check.key_id}, QUAL {list(check.qual)}"
    else:
        human = f"INVALID: {check.reason}"
    emit(result, as_json=args.json, human=human)
    return 0 if check.valid else 1

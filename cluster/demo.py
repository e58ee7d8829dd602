"""``tkms demo``: the main job end to end on a real local cluster.

1. generate a fresh 3-of-5 cluster in a temporary directory (each node its own
   SoftHSM2 token, PINs, sealed identity keys; a manifest; a coordinator; a demo
   client API key),
2. start the five nodes and the coordinator as processes and wait until every Noise
   session is up,
3. run a DKG ceremony through ``POST /v1/dkg`` (the key never exists in one place),
4. sign a message hash through ``POST /v1/keys/{key}/sign`` (t partial signatures
   with DLEQ proofs, combined and gamma-checked by the coordinator),
5. verify the returned object here again with EigenLayer's on-chain check, against
   the public key the DKG produced,
6. stop the cluster (unless ``--keep``) and print the standard AVS signature object
   (spec section 7) plus ``keyId`` and ``signers``.

Progress goes to stderr; with ``--json`` stdout holds exactly one JSON object.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from cluster import launcher
from cluster.client import CoordinatorClient, api_key
from cluster.dkg_cmd import run_ceremony, save_transcript
from cluster.output import emit, progress
from protocol.eigenlayer import AvsSignature
from protocol.encoding import g1_from_json, msg_hash_from_hex, msg_hash_to_hex
from protocol.errors import Fault, TkmsError
from protocol.hashing import keccak256

NODES = 5
THRESHOLD = 3
KEY_ID = "demo"
DEFAULT_MESSAGE = "hello from tkms"


class DemoFailed(TkmsError):
    """The demo's own end-to-end check failed (never expected: it would be a bug)."""

    fault = Fault.LOCAL


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="fresh local 3-of-5 cluster: DKG, sign, verify, stop",
        description=(
            "Brings up a fresh 3-of-5 cluster in a temporary directory (five node "
            "processes with their own SoftHSM2 tokens and a coordinator), runs a DKG, "
            "signs a message hash through the HTTP API, verifies the signature with "
            "EigenLayer's gamma check and stops the cluster. Prints the standard AVS "
            "signature object plus keyId and signers."
        ),
    )
    parser.add_argument(
        "--cluster-dir",
        help="use (or create) this cluster dir instead of a fresh temporary one",
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave the cluster running and its directory in place"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--msg-hash", help="the 32-byte hash to sign: 0x + 64 hex digits")
    group.add_argument(
        "--message",
        default=DEFAULT_MESSAGE,
        help=f"a text whose keccak256 is signed (default: {DEFAULT_MESSAGE!r})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=run)


def _layout(args: argparse.Namespace) -> tuple[launcher.ClusterLayout, bool]:
    """The cluster to use, and whether this run created its directory."""
    if args.cluster_dir:
        root = Path(args.cluster_dir).resolve()
        if (root / launcher.CLUSTER_FILE).exists():
            progress(f"using the cluster in {root}")
            return launcher.ClusterLayout.load(root), False
    else:
        root = Path(tempfile.mkdtemp(prefix="tkms-demo-"))
    progress(f"[1/5] generating a {THRESHOLD}-of-{NODES} cluster in {root}")
    layout = launcher.init_cluster(root, nodes=NODES, threshold=THRESHOLD, progress=progress)
    return layout, not args.cluster_dir


def _key_id(client: CoordinatorClient) -> str:
    """``demo``, or ``demo-2``, ... when a kept cluster already has that key."""
    taken = {str(k.get("keyId")) for k in client.call("GET", "/v1/keys").get("keys", [])}
    n, key_id = 1, KEY_ID
    while key_id in taken:
        n += 1
        key_id = f"{KEY_ID}-{n}"
    return key_id


def run(args: argparse.Namespace) -> int:
    msg_hash = (
        msg_hash_from_hex(args.msg_hash, field="--msg-hash")
        if args.msg_hash is not None
        else keccak256(args.message.encode())
    )
    started = time.monotonic()
    layout, created = _layout(args)
    ok = False
    try:
        progress("[2/5] starting 5 nodes and the coordinator")
        launcher.up(layout, progress=progress)
        client = CoordinatorClient.for_cluster(layout, api_key(None, layout))
        key_id = _key_id(client)
        progress(f"[3/5] DKG ceremony for key {key_id!r} (t = {layout.threshold})")
        key = run_ceremony(client, key_id, layout.threshold, None)
        transcript = save_transcript(
            layout, client.call("GET", f"/v1/keys/{key_id}/transcript"), key
        )
        progress(f"      key active on {', '.join(key['holders'])}; transcript {transcript}")
        progress(f"[4/5] signing msgHash {msg_hash_to_hex(msg_hash)} through the HTTP API")
        doc = client.call("POST", f"/v1/keys/{key_id}/sign", {"msgHash": msg_hash_to_hex(msg_hash)})
        progress("[5/5] verifying with EigenLayer's gamma check")
        signature = AvsSignature.from_json(doc, allow_extra=True)
        if signature.msg_hash != msg_hash:
            raise DemoFailed("the coordinator signed another message hash")
        if signature.apk_g1 != g1_from_json(key["pubkeyG1"], field="pubkeyG1"):
            raise DemoFailed("the signature's apkG1 is not the key the DKG produced")
        if not signature.verify():
            raise DemoFailed("the returned signature fails the gamma check")
        ok = True
    finally:
        if args.keep:
            progress(
                f"cluster kept running in {layout.root} (stop: tkms cluster down "
                f"--cluster-dir {layout.root})"
            )
        else:
            launcher.down(layout, progress=progress)
            if created and ok:
                shutil.rmtree(layout.root, ignore_errors=True)
            elif created:
                progress(f"logs kept in {layout.run_dir}")
    result = {**signature.to_json(), "keyId": key_id, "signers": doc.get("signers", [])}
    progress(f"done in {time.monotonic() - started:.1f} s: the signature verifies")
    emit(result, as_json=args.json)
    return 0

"""``tkms sign``, ``tkms verify`` and ``tkms keys list | show | destroy``: the operator's
signing commands over the coordinator's HTTP API (docs/api.md).

``tkms sign --key-id K --msg-hash 0x.. [--json]`` sends ``POST /v1/keys/K/sign`` and
prints the standard AVS signature object (spec §7) plus ``keyId`` and ``signers``,
after checking it locally with the gamma check (a coordinator that returned anything
invalid is an error, exit 2). The coordinator is the cluster dir's (``cluster.json``
endpoints, ``--cluster-dir`` / ``TKMS_CLUSTER_DIR``) unless ``--endpoint HOST:PORT``
names one; the API key comes from ``TKMS_API_KEY``, then ``--api-key-file``, then the
cluster's ``apiKeyFile`` (``cluster.client.api_key``).

``tkms verify [FILE|-] [--json]`` reads one signature object (the four spec §7 keys;
extra keys such as ``keyId`` are ignored) from FILE or stdin and runs EigenLayer's
gamma check offline: ``{"valid": bool}``, exit 0 when valid, 1 when not. A point that
is not on the curve or is infinity (e.g. the all-infinity triple, which the on-chain
check would accept) makes the object invalid; a file that is not a JSON object
with those keys is an error (exit 2).

``tkms keys list`` prints ``{"keys": [...]}``, ``tkms keys show K`` one key's public
data (``GET /v1/keys/K``), ``tkms keys destroy K`` asks for confirmation (type the
key id; ``--yes`` for scripts), needs the operator role, and prints ``{"destroyed": K}``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from cluster import launcher
from cluster.client import CoordinatorClient, api_key
from cluster.output import emit
from protocol.eigenlayer import AvsSignature
from protocol.encoding import msg_hash_from_hex
from protocol.errors import DecodeError, Fault, TkmsError

MAX_INPUT = 1 << 20  # a signature object is < 1 KiB
KEY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # as coordinator.backend


class SignCommandError(TkmsError):
    """The command cannot run as asked (input, confirmation, a bad answer)."""

    fault = Fault.CONFIG


def _endpoint_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster-dir",
        help="the cluster directory (default: $TKMS_CLUSTER_DIR, else ./tkms-cluster)",
    )
    parser.add_argument("--endpoint", help="the coordinator's HTTP HOST:PORT (default: cluster's)")
    parser.add_argument("--api-key-file", type=Path, help="file holding the client API key")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def register(sub: Any) -> None:
    sign = sub.add_parser("sign", help="threshold-sign a 32-byte message hash")
    sign.add_argument("--key-id", required=True, help="the key to sign with")
    sign.add_argument("--msg-hash", required=True, help="0x + 64 hex digits (signed as is)")
    _endpoint_args(sign)
    sign.set_defaults(handler=cmd_sign)

    verify = sub.add_parser("verify", help="gamma-check a signature object offline")
    verify.add_argument("file", nargs="?", default="-", help="signature JSON file, - = stdin")
    verify.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    verify.set_defaults(handler=cmd_verify)

    keys = sub.add_parser("keys", help="list, show or destroy keys")
    actions = keys.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    p = actions.add_parser("list", help="every key's public data")
    _endpoint_args(p)
    p.set_defaults(handler=cmd_keys_list)
    p = actions.add_parser("show", help="one key's public data")
    p.add_argument("key_id", metavar="K")
    _endpoint_args(p)
    p.set_defaults(handler=cmd_keys_show)
    p = actions.add_parser("destroy", help="destroy a key on every node (irreversible)")
    p.add_argument("key_id", metavar="K")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _endpoint_args(p)
    p.set_defaults(handler=cmd_keys_destroy)


def client_for(args: argparse.Namespace) -> CoordinatorClient:
    """The coordinator of ``--endpoint`` or of the cluster dir, with the API key."""
    layout: launcher.ClusterLayout | None = None
    root = launcher.default_cluster_dir(args.cluster_dir)
    if args.endpoint is None or args.api_key_file is None:
        try:
            layout = launcher.ClusterLayout.load(root)
        except (launcher.ClusterError, OSError, ValueError, KeyError):
            if args.endpoint is None:
                raise
    endpoint = args.endpoint or (layout.http if layout is not None else "")
    return CoordinatorClient(f"http://{endpoint}", api_key(args.api_key_file, layout))


def _key_id(value: str) -> str:
    if not KEY_ID_RE.fullmatch(value):
        raise SignCommandError(f"--key-id {value[:80]!r}: 1..64 of [A-Za-z0-9._-]")
    return value


def cmd_sign(args: argparse.Namespace) -> int:
    key_id = _key_id(args.key_id)
    msg_hash = msg_hash_from_hex(args.msg_hash, field="--msg-hash")
    doc = client_for(args).call(
        "POST", f"/v1/keys/{key_id}/sign", {"msgHash": "0x" + msg_hash.hex()}
    )
    try:
        sig = AvsSignature.from_json(doc, allow_extra=True)
    except DecodeError as exc:
        raise SignCommandError(f"the coordinator answered a malformed signature: {exc}") from None
    if sig.msg_hash != msg_hash or not sig.verify():
        raise SignCommandError("the coordinator answered a signature that does not verify")
    signers = ", ".join(doc.get("signers", []))
    emit(doc, as_json=args.json, human=json.dumps(doc, indent=2) + f"\nsigned by {signers}")
    return 0


def _read_input(name: str) -> str:
    try:
        if name == "-":
            return sys.stdin.read(MAX_INPUT + 1)
        with open(name, encoding="utf-8") as f:
            return f.read(MAX_INPUT + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise SignCommandError(f"cannot read {name}: {exc}") from None


def cmd_verify(args: argparse.Namespace) -> int:
    text = _read_input(args.file)
    if len(text) > MAX_INPUT:
        raise SignCommandError(f"{args.file}: more than {MAX_INPUT} bytes")
    try:
        obj = json.loads(text)
    except ValueError:
        raise SignCommandError(f"{args.file}: not JSON") from None
    keys = {"msgHash", "sigma", "apkG1", "apkG2"}
    if not isinstance(obj, dict) or not keys <= set(obj):
        raise SignCommandError(f"{args.file}: a signature object needs the keys {sorted(keys)}")
    try:
        valid = AvsSignature.from_json(obj, allow_extra=True).verify()
        reason = "" if valid else "the gamma check fails"
    except DecodeError as exc:
        valid, reason = False, str(exc)
    if reason:
        sys.stderr.write(f"tkms verify: invalid: {reason}\n")
    emit({"valid": valid}, as_json=args.json, human="valid" if valid else "INVALID")
    return 0 if valid else 1


def _key_line(k: dict[str, Any]) -> str:
    holders = ",".join(k.get("holders", []))
    size = f"{k['threshold']}-of-{k['n']}"
    return f"{k['keyId']:<24} {k['status']:<9} {size:<8} epoch {k['epoch']:<4} {holders}"


def cmd_keys_list(args: argparse.Namespace) -> int:
    doc = client_for(args).call("GET", "/v1/keys")
    human = "\n".join(_key_line(k) for k in doc["keys"]) or "no keys"
    emit(doc, as_json=args.json, human=human)
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    key_id = _key_id(args.key_id)
    doc = client_for(args).call("GET", f"/v1/keys/{key_id}")
    emit(doc, as_json=args.json, human=json.dumps(doc, indent=2))
    return 0


def cmd_keys_destroy(args: argparse.Namespace) -> int:
    key_id = _key_id(args.key_id)
    client = client_for(args)
    if not args.yes:
        if not sys.stdin.isatty():
            raise SignCommandError("destroy asks for confirmation on a terminal; pass --yes")
        sys.stderr.write(
            f"Destroying {key_id} shreds every node's share: the key can never sign again.\n"
            f"Type the key id to confirm: "
        )
        sys.stderr.flush()
        if sys.stdin.readline().strip() != key_id:
            raise SignCommandError("not confirmed; nothing destroyed")
    doc = client.call("DELETE", f"/v1/keys/{key_id}")
    emit(doc, as_json=args.json, human=f"destroyed {doc.get('destroyed', key_id)}")
    return 0

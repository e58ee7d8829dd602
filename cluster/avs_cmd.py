"""``tkms avs register-params``: the BLS key registration parameters of an operator
(spec section 8; DESIGN.md CLI contract).

``tkms avs register-params --key-id K --operator 0x.. --registry-coordinator 0x..
--chain-id N [--json]`` asks the coordinator (``POST /v1/keys/K/registration``) to
threshold-sign the registration message point of ``operator`` for that
RegistryCoordinator and chain, then checks the answer itself, trusting nothing the
coordinator says: the digest and message point are recomputed here
(``protocol.eigenlayer``), the ``BLSApkRegistry`` equation (its own ten-word gamma,
signature first) must hold, the ABI must encode the parameters, and the public key
must be the one in the key's transcript under ``<cluster-dir>/transcripts/`` (written
and verified against the manifest by ``tkms dkg`` / ``tkms key import``; without one
a warning says the key was only checked against the coordinator's own report).

``--json`` prints exactly ``{"pubkeyRegistrationParams": {"pubkeyRegistrationSignature":
{X, Y}, "pubkeyG1": {X, Y}, "pubkeyG2": {X: [imag, real], Y: [imag, real]}}, "abi":
"0x…", "messageHash": "0x…"}`` (decimal strings), ready for a runbook or ``cast``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cluster import launcher
from cluster.client import CoordinatorClient, api_key
from cluster.output import emit, progress
from protocol.dkg import load_transcript
from protocol.eigenlayer import (
    RegistrationParams,
    address_from_hex,
    checksum_address,
    registration_digest,
    registration_message_point,
)
from protocol.encoding import g1_to_bytes, g1_to_json
from protocol.errors import DecodeError, Fault, TkmsError
from protocol.key_import import is_import_transcript, load_import_transcript
from protocol.registration import chain_id_from, registration_from_json, registration_json


class AvsCommandError(TkmsError):
    """The answer does not check, or the arguments are unusable."""

    fault = Fault.CONFIG


def register(sub: Any) -> None:
    avs = sub.add_parser("avs", help="EigenLayer AVS operator tooling")
    actions = avs.add_subparsers(dest="avs_action", metavar="ACTION", required=True)
    p = actions.add_parser(
        "register-params", help="PubkeyRegistrationParams (threshold-signed) for registration"
    )
    p.add_argument("--key-id", required=True, help="the operator's BLS key in tkms")
    p.add_argument("--operator", required=True, help="the operator's address, 0x + 40 hex")
    p.add_argument("--registry-coordinator", required=True, help="RegistryCoordinator (proxy)")
    p.add_argument("--chain-id", required=True, type=int, help="the chain's id")
    p.add_argument(
        "--cluster-dir",
        help="the cluster directory (default: $TKMS_CLUSTER_DIR, else ./tkms-cluster)",
    )
    p.add_argument("--api-key-file", type=Path, help="file holding the client API key")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=cmd_register_params)


def transcript_pubkey(layout: launcher.ClusterLayout, key_id: str) -> bytes | None:
    """The G1 public key (64 bytes) in the key's newest stored transcript, if any."""
    directory = layout.root / "transcripts"
    found = sorted(
        directory.glob(f"{key_id}-*.json"),
        key=lambda p: int(p.stem.rsplit("-", 1)[1]) if p.stem.rsplit("-", 1)[1].isdigit() else -1,
    )
    if not found:
        return None
    data = found[-1].read_bytes()
    try:
        if is_import_transcript(data):
            return load_import_transcript(data).bundle.commitments[0]
        return load_transcript(data).body.outcome.pubkey_g1
    except DecodeError as exc:
        raise AvsCommandError(f"{found[-1]}: {exc}") from None


def cmd_register_params(args: argparse.Namespace) -> int:
    operator = address_from_hex(args.operator, field="--operator")
    coordinator = address_from_hex(args.registry_coordinator, field="--registry-coordinator")
    chain_id = chain_id_from(args.chain_id, "--chain-id")
    layout = launcher.ClusterLayout.load(launcher.default_cluster_dir(args.cluster_dir))
    client = CoordinatorClient.for_cluster(layout, api_key(args.api_key_file, layout))
    body = {
        "operator": checksum_address(operator),
        "registryCoordinator": checksum_address(coordinator),
        "chainId": chain_id,
    }
    doc = client.call("POST", f"/v1/keys/{args.key_id}/registration", body)
    try:
        params, digest = registration_from_json(doc)
    except DecodeError as exc:
        raise AvsCommandError(f"the coordinator answered malformed parameters: {exc}") from None
    expected = registration_digest(operator, coordinator, chain_id)
    if digest != expected:
        raise AvsCommandError("the coordinator answered another message hash")
    point = registration_message_point(operator, coordinator, chain_id)
    if not params.verify(point):
        raise AvsCommandError("the registration signature fails the BLSApkRegistry check")
    _check_key(layout, args.key_id, params)
    result = registration_json(params, digest)
    human = "\n".join(
        [
            json.dumps(result["pubkeyRegistrationParams"], indent=2),
            f"abi          {result['abi']}",
            f"messageHash  {result['messageHash']}",
        ]
    )
    emit(result, as_json=args.json, human=human)
    return 0


def _check_key(layout: launcher.ClusterLayout, key_id: str, params: RegistrationParams) -> None:
    known = transcript_pubkey(layout, key_id)
    if known is None:
        progress(
            f"warning: no transcript of {key_id} under {layout.root / 'transcripts'}: the public "
            "key was checked against the coordinator's own report only"
        )
        return
    if known != g1_to_bytes(params.pk_g1):
        raise AvsCommandError(
            f"the coordinator signed with another key than {key_id}'s transcript names "
            f"(got {g1_to_json(params.pk_g1)})"
        )

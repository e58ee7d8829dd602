"""``tkms demo``: the IN-PROCESS demo of threshold BLS signing (interim).

Everything runs in this one process: a dealer splits a fresh key 3-of-5, each of the
five simulated "nodes" makes a partial signature s_j*H(m) with a DLEQ proof, a
simulated coordinator checks the proofs of the first three, combines them with
Lagrange coefficients and runs EigenLayer's on-chain gamma check before printing
the standard AVS signature object (spec section 7) plus ``keyId`` and ``signers``.
No processes, sockets, HSMs or DKG yet: the real cluster demo replaces this.
"""

from __future__ import annotations

import argparse
from typing import Any

from cluster.output import emit, progress
from protocol.bn254 import g2_mul_generator
from protocol.eigenlayer import AvsSignature, hash_to_g1, operator_id
from protocol.encoding import msg_hash_from_hex, msg_hash_to_hex
from protocol.errors import VerificationError
from protocol.hashing import keccak256
from protocol.proofs import prove_dleq, verify_dleq
from protocol.rng import os_rng
from protocol.threshold import combine_g1, public_share, random_polynomial

THRESHOLD = 3
NODES = 5
DEFAULT_MESSAGE = "hello from tkms"


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="in-process demo: split a fresh key 3-of-5, sign with 3 simulated nodes, verify",
        description=(
            "IN-PROCESS DEMO (interim): a dealer splits a fresh BN254 key 3-of-5 in this "
            "process, five simulated nodes each make a partial signature with a DLEQ "
            "proof, the first three are checked and combined, and the result passes "
            "EigenLayer's gamma check. No nodes, sockets, HSMs or DKG are involved yet. "
            "Prints the standard AVS signature object plus keyId and signers."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--msg-hash", help="the 32-byte message hash to sign, 0x + 64 hex digits (not hashed again)"
    )
    group.add_argument(
        "--message",
        default=DEFAULT_MESSAGE,
        help=f"a text whose keccak256 is signed (default: {DEFAULT_MESSAGE!r})",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.msg_hash is not None:
        msg_hash = msg_hash_from_hex(args.msg_hash, field="msgHash")
    else:
        msg_hash = keccak256(args.message.encode())
    progress(f"tkms demo (in-process): dealer splits a fresh key {THRESHOLD}-of-{NODES}")
    poly = random_polynomial(THRESHOLD - 1, os_rng)
    commitments = poly.commitments()
    apk_g1 = commitments[0]
    apk_g2 = g2_mul_generator(poly.coeffs[0])
    shares = {j: poly.evaluate(j) for j in range(1, NODES + 1)}
    del poly  # the dealer forgets the polynomial; only shares and commitments remain
    key_id = "demo-" + operator_id(apk_g1).hex()[:8]
    progress(f"key {key_id}: operatorId 0x{operator_id(apk_g1).hex()}")

    h = hash_to_g1(msg_hash)
    context = b"tkms/v1/partial-signature\0" + key_id.encode() + b"\0" + msg_hash
    partials = {}
    for j, share in shares.items():
        partials[j] = (h * share, prove_dleq(share, h, context=context, rng=os_rng))
        progress(f"node {j}: partial signature with DLEQ proof")

    signers = sorted(partials)[:THRESHOLD]
    for j in signers:
        sigma_j, proof = partials[j]
        if not verify_dleq(public_share(commitments, j), h, sigma_j, proof, context=context):
            raise VerificationError(f"partial signature of node {j}: DLEQ proof does not verify")
    progress(f"coordinator: DLEQ proofs of nodes {signers} verify; combining")
    sigma = combine_g1({j: partials[j][0] for j in signers})
    signature = AvsSignature(msg_hash, sigma, apk_g1, apk_g2)
    if not signature.verify():
        raise VerificationError("combined signature fails the gamma check")
    progress(f"gamma check passed for msgHash {msg_hash_to_hex(msg_hash)}")
    result = {**signature.to_json(), "keyId": key_id, "signers": signers}
    emit(result, as_json=args.json)
    return 0

"""Hash functions used by the EigenLayer conventions and by our own transcripts.

* ``keccak256``: Ethereum's Keccak-256 (the original Keccak padding, NOT FIPS-202
  SHA3-256; ``hashlib.sha3_256`` gives different digests). Used for gamma,
  operatorId, EIP-712 and everything else the contracts hash.
* ``sha512``: used where we need a wide (512-bit) output to reduce mod r without
  bias (Fiat-Shamir challenges and hedged nonces, see ``protocol.proofs``).
"""

from __future__ import annotations

import hashlib

from Crypto.Hash import keccak


def keccak256(data: bytes) -> bytes:
    """Keccak-256 of ``data`` (32 bytes), as Solidity's ``keccak256``."""
    digest: bytes = keccak.new(digest_bits=256, data=bytes(data)).digest()
    return digest


def sha512(data: bytes) -> bytes:
    """SHA-512 of ``data`` (64 bytes)."""
    return hashlib.sha512(data).digest()

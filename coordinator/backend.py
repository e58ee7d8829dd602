"""The coordinator's service interface, as its client front ends (HTTP, gRPC, CLI) see it.

The front ends authenticate and validate requests, then call a ``Backend``. The real
backend fans requests out to the nodes; tests use an in-process one that passes the
same conformance tests. Errors are typed so each front end maps them to its own
status codes (HTTP 4xx/503, gRPC status).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from protocol.bn254 import G1, G2
from protocol.errors import Fault, TkmsError


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """Public data of one threshold key (no secret)."""

    key_id: str
    threshold: int
    n: int
    epoch: int
    holders: tuple[str, ...]  # node names holding a share
    pk_g1: G1
    pk_g2: G2
    operator_id: bytes  # keccak256(X || Y) of pk_g1
    status: str  # "pending" | "active" | "retiring" | "destroyed"
    transcript_hash: bytes


@dataclass(frozen=True, slots=True)
class SignResult:
    """A verified threshold signature (spec section 7 fields plus signers)."""

    key_id: str
    msg_hash: bytes
    sigma: G1
    apk_g1: G1
    apk_g2: G2
    signers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Client:
    """An authenticated API client."""

    client_id: str
    roles: frozenset[str] = field(default_factory=frozenset)
    signer_keys: frozenset[str] = field(default_factory=frozenset)  # "*" = every key

    def may_sign(self, key_id: str) -> bool:
        return "signer" in self.roles and ("*" in self.signer_keys or key_id in self.signer_keys)

    @property
    def is_operator(self) -> bool:
        return "operator" in self.roles


class BackendError(TkmsError):
    """Base of the errors a backend reports to a front end."""


class UnknownKey(BackendError):
    fault: ClassVar[Fault] = Fault.CLIENT

    def __init__(self, key_id: str) -> None:
        super().__init__(f"unknown key id {key_id!r}")
        self.key_id = key_id


class KeyExists(BackendError):
    fault: ClassVar[Fault] = Fault.CLIENT

    def __init__(self, key_id: str) -> None:
        super().__init__(f"key id {key_id!r} already exists")
        self.key_id = key_id


class KeyNotActive(BackendError):
    fault: ClassVar[Fault] = Fault.CLIENT

    def __init__(self, key_id: str, status: str) -> None:
        super().__init__(f"key {key_id!r} is {status}, not active")
        self.key_id = key_id
        self.status = status


class Forbidden(BackendError):
    fault: ClassVar[Fault] = Fault.CLIENT


class NotEnoughSigners(BackendError):
    """Fewer than t nodes answered in time: the request fails (HTTP 503)."""

    fault: ClassVar[Fault] = Fault.PEER

    def __init__(self, key_id: str, needed: int, got: int, missing: Sequence[str]) -> None:
        names = ", ".join(missing) or "none"
        super().__init__(
            f"key {key_id!r} needs {needed} signers, only {got} answered; missing: {names}"
        )
        self.key_id = key_id
        self.needed = needed
        self.got = got
        self.missing = tuple(missing)


class Backend(Protocol):
    """What the coordinator's front ends call."""

    async def list_keys(self) -> Sequence[KeyInfo]: ...

    async def get_key(self, key_id: str) -> KeyInfo: ...

    async def sign(self, key_id: str, msg_hash: bytes, *, client: Client) -> SignResult: ...

    async def sign_batch(
        self, key_id: str, msg_hashes: Sequence[bytes], *, client: Client
    ) -> list[SignResult | BackendError]: ...

    async def sign_point(self, key_id: str, point: G1, *, client: Client) -> G1:
        """sk * point for an already hashed point (cerberus SignG1), verified."""
        ...

    async def destroy_key(self, key_id: str, *, client: Client) -> None: ...

"""The coordinator's service interface, as its client front ends (HTTP, gRPC, CLI) see it.

The front ends authenticate and validate requests, then call a ``Backend``. The real
backend fans requests out to the nodes; tests use an in-process one that passes the
same conformance tests. Errors are typed so each front end maps them to its own
status codes (HTTP 4xx/503, gRPC status).

Added for the HTTP API (add, never rename): ``health()`` with ``Health`` /
``NodeHealth`` / ``KeyHealth``; ``run_dkg`` (operator call); errors ``InvalidRequest``
(400) and ``CeremonyAborted`` (502); ``KEY_ID_PATTERN`` / ``is_valid_key_id`` shared by
every front end.

Key import (issue 7; the coordinator is untrusted, so it never sees a keystore, a
password or the key): ``open_import`` returns the nodes' signed per-import encryption
keys (``ImportOpening``), ``import_key`` relays an ``ImportBundle`` the operator's CLI
built (public data and per-node ciphertexts only) and commits it (``ImportResult``).
The earlier ``import_key(keystore, PasswordRef)`` is gone on purpose.

Added for the coordinator process: ``NotImplementedYet`` (501), raised by a backend
for an operation it does not offer yet.

Added for the DKG: ``get_transcript`` and ``dkg_progress`` with ``DkgProgress`` /
``DkgEvent``; error ``CeremonyInProgress`` (409).

Added for threshold signing: ``UsageLimitExceeded`` (429): the nodes' own usage limits
for the key refuse the request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from protocol.bn254 import G1, G2
from protocol.errors import Fault, TkmsError
from protocol.key_import import ImportBundle, ImportOpen

# Key ids name directories on the nodes and appear in URLs: a conservative charset.
KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_KEY_ID_RE = re.compile(KEY_ID_PATTERN)


def is_valid_key_id(key_id: str) -> bool:
    """True if ``key_id`` matches ``KEY_ID_PATTERN`` (1-64 chars, no path separators)."""
    return _KEY_ID_RE.fullmatch(key_id) is not None


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


class UsageLimitExceeded(BackendError):
    """Enough nodes refused because the key reached their usage limit (HTTP 429)."""

    fault: ClassVar[Fault] = Fault.CLIENT

    def __init__(self, key_id: str, nodes: Sequence[str]) -> None:
        super().__init__(
            f"key {key_id!r} reached the usage limit of nodes {', '.join(nodes) or 'none'}"
        )
        self.key_id = key_id
        self.nodes = tuple(nodes)


class InvalidRequest(BackendError):
    """A request the backend refuses on its own grounds (e.g. threshold > n, a
    keystore that does not decrypt): HTTP 400."""

    fault: ClassVar[Fault] = Fault.CLIENT

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


class CeremonyAborted(BackendError):
    """A DKG (or import) ceremony aborted; ``reason`` says exactly why and
    ``missed`` names the nodes that missed a phase deadline (HTTP 502)."""

    fault: ClassVar[Fault] = Fault.PEER

    def __init__(self, key_id: str, reason: str, missed: Sequence[str] = ()) -> None:
        super().__init__(f"ceremony for key {key_id!r} aborted: {reason}")
        self.key_id = key_id
        self.reason = reason
        self.missed = tuple(missed)


class CeremonyInProgress(BackendError):
    """A ceremony (or its recovery) for this key id is already running: HTTP 409."""

    fault: ClassVar[Fault] = Fault.CLIENT

    def __init__(self, key_id: str) -> None:
        super().__init__(f"a ceremony for key {key_id!r} is already in progress")
        self.key_id = key_id


class NotImplementedYet(BackendError):
    """The backend does not offer this operation yet (HTTP 501)."""

    fault: ClassVar[Fault] = Fault.LOCAL

    def __init__(self, operation: str) -> None:
        super().__init__(f"{operation} is not implemented yet")
        self.operation = operation


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """One node as the coordinator sees it now."""

    name: str
    up: bool  # a Noise session is established and answering
    partial_failures: int = 0  # cumulative: partials that failed or did not verify
    detail: str = ""  # why it is down, when known (no secret)


@dataclass(frozen=True, slots=True)
class KeyHealth:
    """Whether one key can sign now: ``holders_up >= threshold`` and active."""

    key_id: str
    status: str
    threshold: int
    holders_up: int
    can_sign: bool


@dataclass(frozen=True, slots=True)
class Health:
    """The coordinator's view of the cluster, for ``GET /healthz`` and metrics."""

    nodes: tuple[NodeHealth, ...]
    keys: tuple[KeyHealth, ...]


@dataclass(frozen=True, slots=True)
class DkgEvent:
    """One line of a ceremony's progress."""

    at: float  # seconds since the ceremony started
    phase: str
    message: str


@dataclass(frozen=True, slots=True)
class DkgProgress:
    """A ceremony as an operator follows it (``GET /v1/dkg/{key_id}``)."""

    key_id: str
    state: str  # "running" | "committed" | "aborted"
    phase: str  # the driver's phase (open, deal, echo, complain, justify, sign, ...)
    reason: str  # why it aborted ("" otherwise)
    holders: tuple[str, ...]  # node names, once committed
    events: tuple[DkgEvent, ...]


@dataclass(frozen=True, slots=True)
class ImportOpening:
    """The nodes' answers to an import's open: ``opens`` maps node names to their
    signed ``ImportOpen`` (checked by the caller against the manifest), ``missing``
    names the nodes that did not open, with the reason."""

    key_id: str
    epoch: int
    opens: tuple[tuple[str, ImportOpen], ...]
    missing: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ImportResult:
    """A committed import: the key's public data and its ``ImportTranscript`` bytes."""

    key: KeyInfo
    transcript: bytes


class RegistryLoading(NotEnoughSigners):
    """The coordinator has just started and some node has not reported its keys yet, so
    a key id it does not know may still exist: HTTP 503 (retry), not 404."""

    def __init__(self, key_id: str, unheard: Sequence[str]) -> None:
        BackendError.__init__(
            self,
            f"key {key_id!r} is not loaded yet: the coordinator is still reading keys from "
            + ", ".join(unheard),
        )
        self.key_id = key_id
        self.needed = 0
        self.got = 0
        self.missing = tuple(unheard)


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

    async def health(self) -> Health:
        """Nodes up and, per key, whether it can sign now (cheap: no fan-out)."""
        ...

    async def run_dkg(
        self, key_id: str, threshold: int, *, min_holders: int | None, client: Client
    ) -> KeyInfo:
        """Run a DKG ceremony; ``min_holders`` None = every node. Raises ``KeyExists``,
        ``InvalidRequest``, ``CeremonyAborted``."""
        ...

    async def open_import(
        self, key_id: str, *, min_holders: int | None, client: Client
    ) -> ImportOpening:
        """Ask every node to open an import of ``key_id`` (fresh per-import encryption
        keys). Raises ``KeyExists``, ``Forbidden``, ``NotEnoughSigners`` (fewer than
        ``min_holders`` nodes opened; None = every node)."""
        ...

    async def import_key(
        self, key_id: str, bundle: ImportBundle, *, min_holders: int | None, client: Client
    ) -> ImportResult:
        """Relay ``bundle`` to its holders, collect their signatures, commit. Any failure
        aborts the import on every holder (nothing pending, nothing active). Raises
        ``KeyExists``, ``InvalidRequest``, ``CeremonyAborted``."""
        ...

    async def dkg_progress(self, key_id: str) -> DkgProgress:
        """The progress of the latest ceremony for ``key_id`` run by this coordinator
        (running or ended). Raises ``UnknownKey`` if there is none."""
        ...

    async def get_transcript(self, key_id: str) -> bytes:
        """The canonical transcript bytes of ``key_id``'s current epoch (public data,
        ``protocol.dkg.Transcript``). Raises ``UnknownKey``."""
        ...

"""Who may call the coordinator: API keys, client certificates, IP allowlist, rate limits.

API keys
    A key is a random token ``tkms_<lookup>_<secret>``: ``lookup`` is 8 random bytes in
    hex (public; it selects the file entry without scanning), ``secret`` is 32 random
    bytes in unpadded base64url. The file stores, per key, a 16-byte random salt and
    ``HMAC-SHA256(salt, "tkms/api-key/v1" || 0x00 || token)``; comparison uses
    ``hmac.compare_digest``. A fast salted hash is enough here because the token has
    256 bits of entropy: nobody can brute-force it offline whatever the hash speed,
    while a slow KDF (scrypt, argon2) would cost every request tens of ms and hand
    attackers a cheap CPU denial of service. The salt makes two hashes of the same
    token differ and rules out precomputation. An unknown lookup id still costs one
    HMAC and one compare (against a dummy), so timing does not tell which ids exist.

File (JSON, beside the manifest, ``api-keys.json``; mode 0600; hashes only)::

    {"version": 1, "clients": [
      {"clientId": "demo", "roles": ["operator", "signer"], "signerKeys": ["*"],
       "apiKeys": [{"id": "<16 hex>", "salt": "<32 hex>", "hash": "<64 hex>"}],
       "certSha256": ["<64 hex>"],
       "rateLimit": {"perSecond": 50, "burst": 100}}]}

    ``certSha256`` (optional) maps client certificates (SHA-256 of the DER) to the
    client when the front end runs with mutual TLS; ``rateLimit`` (optional) overrides
    the front end's default bucket. Several ``apiKeys`` per client allow rotation.

Roles: ``signer`` (on the key ids in ``signerKeys``, ``"*"`` = all), ``operator``
(DKG, import, destroy), ``auditor`` (read-only: keys, health, metrics).

Also here, shared by the HTTP and gRPC front ends: ``parse_bearer`` (the
``Authorization`` header), ``IpAllowlist`` and a per-client token-bucket
``RateLimiter``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from coordinator.backend import Client
from protocol.errors import DecodeError, Fault, TkmsError
from protocol.rng import Rng, os_rng

API_KEYS_FILENAME = "api-keys.json"
FILE_VERSION = 1
ROLES = frozenset({"signer", "operator", "auditor"})
TOKEN_PREFIX = "tkms"
_HASH_DOMAIN = b"tkms/api-key/v1\x00"
_TOKEN_RE = re.compile(r"^tkms_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_DUMMY_SALT = b"\x00" * 16
_DUMMY_HASH = b"\x00" * 32


class AuthConfigError(TkmsError):
    """The API keys file is missing, malformed or inconsistent."""

    fault: ClassVar[Fault] = Fault.CONFIG


def api_keys_path(manifest_path: Path) -> Path:
    """Where the API keys file of a cluster lives: beside its manifest."""
    return manifest_path.parent / API_KEYS_FILENAME


def _hash_token(salt: bytes, token: str) -> bytes:
    data = _HASH_DOMAIN + token.encode("utf-8", "replace")
    return hmac.new(salt, data, hashlib.sha256).digest()


def new_api_key(rng: Rng = os_rng) -> str:
    """A fresh random token ``tkms_<16 hex>_<43 base64url>`` (256-bit secret)."""
    lookup = rng(8).hex()
    secret = base64.urlsafe_b64encode(rng(32)).rstrip(b"=").decode("ascii")
    return f"{TOKEN_PREFIX}_{lookup}_{secret}"


def cert_fingerprint(der: bytes) -> bytes:
    """The SHA-256 of a DER certificate, as stored in ``certSha256``."""
    return hashlib.sha256(der).digest()


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: ``per_second`` refill rate, ``burst`` capacity."""

    per_second: float
    burst: float

    def __post_init__(self) -> None:
        if not (self.per_second > 0 and self.burst >= 1):
            raise AuthConfigError("rate limit needs perSecond > 0 and burst >= 1")


@dataclass(frozen=True, slots=True)
class StoredKey:
    """One API key as stored: lookup id, salt and salted hash (never the token)."""

    lookup: str
    salt: bytes
    digest: bytes

    @classmethod
    def create(cls, token: str, rng: Rng = os_rng) -> StoredKey:
        m = _TOKEN_RE.match(token)
        if m is None:
            raise AuthConfigError("not a tkms API key token")
        salt = rng(16)
        return cls(m.group(1), salt, _hash_token(salt, token))

    def __repr__(self) -> str:
        return f"StoredKey(lookup={self.lookup!r})"


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """One client of the keys file."""

    client_id: str
    roles: frozenset[str]
    signer_keys: frozenset[str] = frozenset()
    keys: tuple[StoredKey, ...] = ()
    cert_sha256: frozenset[bytes] = frozenset()
    rate_limit: RateLimit | None = None

    def __post_init__(self) -> None:
        if not _CLIENT_ID_RE.match(self.client_id):
            raise AuthConfigError(f"clientId {self.client_id!r}: invalid")
        bad = self.roles - ROLES
        if bad:
            raise AuthConfigError(f"client {self.client_id!r}: unknown roles {sorted(bad)}")
        for k in self.signer_keys:
            if k != "*" and not _KEY_ID_RE.match(k):
                raise AuthConfigError(f"client {self.client_id!r}: invalid signer key {k!r}")

    @property
    def client(self) -> Client:
        return Client(self.client_id, self.roles, self.signer_keys)


def _hex(obj: Any, field_name: str, nbytes: int) -> bytes:
    if not isinstance(obj, str) or not re.fullmatch(f"[0-9a-f]{{{2 * nbytes}}}", obj):
        raise AuthConfigError(f"{field_name}: expected {2 * nbytes} lowercase hex digits")
    return bytes.fromhex(obj)


def _strings(obj: Any, field_name: str) -> list[str]:
    if not isinstance(obj, list) or not all(isinstance(x, str) for x in obj):
        raise AuthConfigError(f"{field_name}: expected a list of strings")
    return list(obj)


def _only(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = set(obj) - allowed
    if extra:
        raise AuthConfigError(f"{where}: unknown fields {sorted(extra)}")


def _record_from_json(obj: Any, i: int) -> ClientRecord:
    where = f"clients[{i}]"
    if not isinstance(obj, dict):
        raise AuthConfigError(f"{where}: expected an object")
    _only(obj, {"clientId", "roles", "signerKeys", "apiKeys", "certSha256", "rateLimit"}, where)
    cid = obj.get("clientId")
    if not isinstance(cid, str):
        raise AuthConfigError(f"{where}.clientId: missing")
    keys: list[StoredKey] = []
    for j, k in enumerate(obj.get("apiKeys", [])):
        kw = f"{where}.apiKeys[{j}]"
        if not isinstance(k, dict):
            raise AuthConfigError(f"{kw}: expected an object")
        _only(k, {"id", "salt", "hash", "created"}, kw)
        lookup = k.get("id")
        if not isinstance(lookup, str) or not re.fullmatch(r"[0-9a-f]{16}", lookup):
            raise AuthConfigError(f"{kw}.id: expected 16 lowercase hex digits")
        keys.append(
            StoredKey(
                lookup, _hex(k.get("salt"), f"{kw}.salt", 16), _hex(k.get("hash"), f"{kw}.hash", 32)
            )
        )
    certs = frozenset(
        _hex(c, f"{where}.certSha256", 32) for c in _strings(obj.get("certSha256", []), where)
    )
    rl = obj.get("rateLimit")
    rate: RateLimit | None = None
    if rl is not None:
        if not isinstance(rl, dict) or set(rl) != {"perSecond", "burst"}:
            raise AuthConfigError(f"{where}.rateLimit: expected {{perSecond, burst}}")
        ps, burst = rl["perSecond"], rl["burst"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (ps, burst)):
            raise AuthConfigError(f"{where}.rateLimit: numbers expected")
        rate = RateLimit(float(ps), float(burst))
    return ClientRecord(
        client_id=cid,
        roles=frozenset(_strings(obj.get("roles", []), f"{where}.roles")),
        signer_keys=frozenset(_strings(obj.get("signerKeys", []), f"{where}.signerKeys")),
        keys=tuple(keys),
        cert_sha256=certs,
        rate_limit=rate,
    )


def _record_to_json(r: ClientRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "clientId": r.client_id,
        "roles": sorted(r.roles),
        "signerKeys": sorted(r.signer_keys),
        "apiKeys": [{"id": k.lookup, "salt": k.salt.hex(), "hash": k.digest.hex()} for k in r.keys],
    }
    if r.cert_sha256:
        out["certSha256"] = sorted(c.hex() for c in r.cert_sha256)
    if r.rate_limit is not None:
        out["rateLimit"] = {"perSecond": r.rate_limit.per_second, "burst": r.rate_limit.burst}
    return out


@dataclass
class ApiKeyStore:
    """The clients and their hashed credentials (loaded from / saved to the keys file)."""

    records: dict[str, ClientRecord] = field(default_factory=dict)
    _by_lookup: dict[str, tuple[str, StoredKey]] = field(default_factory=dict, repr=False)
    _by_cert: dict[bytes, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._reindex()

    def _reindex(self) -> None:
        self._by_lookup.clear()
        self._by_cert.clear()
        for r in self.records.values():
            for k in r.keys:
                if k.lookup in self._by_lookup:
                    raise AuthConfigError(f"API key id {k.lookup} appears twice")
                self._by_lookup[k.lookup] = (r.client_id, k)
            for c in r.cert_sha256:
                if c in self._by_cert:
                    raise AuthConfigError(f"certificate {c.hex()} mapped to two clients")
                self._by_cert[c] = r.client_id

    # -- authentication ---------------------------------------------------------

    def authenticate(self, raw: str) -> Client | None:
        """The client whose API key is ``raw``, or None (constant-time comparison)."""
        m = _TOKEN_RE.match(raw)
        entry = self._by_lookup.get(m.group(1)) if m else None
        if entry is None:
            hmac.compare_digest(_hash_token(_DUMMY_SALT, raw[:128]), _DUMMY_HASH)
            return None
        client_id, stored = entry
        if not hmac.compare_digest(_hash_token(stored.salt, raw), stored.digest):
            return None
        return self.records[client_id].client

    def authenticate_cert(self, fingerprint: bytes) -> Client | None:
        """The client mapped to a verified TLS client certificate (SHA-256 of DER)."""
        cid = self._by_cert.get(fingerprint)
        return self.records[cid].client if cid is not None else None

    def rate_limit_for(self, client_id: str) -> RateLimit | None:
        r = self.records.get(client_id)
        return r.rate_limit if r is not None else None

    # -- administration ---------------------------------------------------------

    def add_client(
        self,
        client_id: str,
        roles: Iterable[str],
        signer_keys: Iterable[str] = (),
        *,
        cert_sha256: Iterable[bytes] = (),
        rate_limit: RateLimit | None = None,
        rng: Rng = os_rng,
    ) -> str:
        """Add a client with one fresh API key; returns the key (shown once, never stored)."""
        if client_id in self.records:
            raise AuthConfigError(f"client {client_id!r} already exists")
        token = new_api_key(rng)
        self.records[client_id] = ClientRecord(
            client_id,
            frozenset(roles),
            frozenset(signer_keys),
            (StoredKey.create(token, rng),),
            frozenset(cert_sha256),
            rate_limit,
        )
        self._reindex()
        return token

    def issue_key(self, client_id: str, rng: Rng = os_rng) -> str:
        """Another API key for an existing client (rotation); returns the new token."""
        r = self.records.get(client_id)
        if r is None:
            raise AuthConfigError(f"no client {client_id!r}")
        token = new_api_key(rng)
        self.records[client_id] = ClientRecord(
            r.client_id,
            r.roles,
            r.signer_keys,
            (*r.keys, StoredKey.create(token, rng)),
            r.cert_sha256,
            r.rate_limit,
        )
        self._reindex()
        return token

    def revoke_key(self, lookup: str) -> None:
        """Remove the API key with this lookup id (the middle part of the token)."""
        entry = self._by_lookup.get(lookup)
        if entry is None:
            raise AuthConfigError(f"no API key {lookup!r}")
        r = self.records[entry[0]]
        kept = tuple(k for k in r.keys if k.lookup != lookup)
        self.records[r.client_id] = ClientRecord(
            r.client_id, r.roles, r.signer_keys, kept, r.cert_sha256, r.rate_limit
        )
        self._reindex()

    # -- file I/O ---------------------------------------------------------------

    def to_json(self) -> str:
        doc = {
            "version": FILE_VERSION,
            "clients": [_record_to_json(self.records[c]) for c in sorted(self.records)],
        }
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ApiKeyStore:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise AuthConfigError(f"API keys file is not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("version") != FILE_VERSION:
            raise AuthConfigError(f"API keys file: expected version {FILE_VERSION}")
        _only(doc, {"version", "clients"}, "API keys file")
        clients = doc.get("clients", [])
        if not isinstance(clients, list):
            raise AuthConfigError("clients: expected a list")
        records: dict[str, ClientRecord] = {}
        for i, c in enumerate(clients):
            r = _record_from_json(c, i)
            if r.client_id in records:
                raise AuthConfigError(f"clientId {r.client_id!r} appears twice")
            records[r.client_id] = r
        return cls(records)

    @classmethod
    def load(cls, path: Path) -> ApiKeyStore:
        try:
            text = path.read_text()
        except OSError as exc:
            raise AuthConfigError(f"cannot read API keys file {path}: {exc.strerror}") from None
        return cls.from_json(text)

    def save(self, path: Path) -> None:
        """Write atomically with mode 0600 (temp file, fsync, rename)."""
        data = self.to_json().encode()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)


def add_client_to_file(
    path: Path,
    client_id: str,
    roles: Iterable[str],
    signer_keys: Iterable[str] = (),
    *,
    rng: Rng = os_rng,
) -> str:
    """Add a client with a fresh API key to the keys file at ``path`` (created if
    missing, mode 0600) and return the key; the caller shows or stores it once
    (e.g. ``cluster init`` writes the demo client's key to its own 0600 file)."""
    store = ApiKeyStore.load(path) if path.exists() else ApiKeyStore()
    token = store.add_client(client_id, roles, signer_keys, rng=rng)
    store.save(path)
    return token


def parse_bearer(authorization: str | None, x_api_key: str | None = None) -> str | None:
    """The API key from ``Authorization: Bearer <key>`` or ``X-Api-Key: <key>``.

    Returns None when neither header is present; raises ``DecodeError`` (a client
    fault) for a malformed Authorization header or two different keys.
    """
    bearer: str | None = None
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise DecodeError("Authorization", "expected 'Bearer <api key>'")
        bearer = value.strip()
    if x_api_key is not None:
        if bearer is not None and not hmac.compare_digest(bearer, x_api_key.strip()):
            raise DecodeError("X-Api-Key", "differs from the Authorization header")
        bearer = x_api_key.strip()
    return bearer


class IpAllowlist:
    """Source addresses allowed to connect; ``None`` networks = everyone."""

    def __init__(self, networks: Sequence[str] | None) -> None:
        try:
            self._nets = (
                None if networks is None else tuple(ipaddress.ip_network(n) for n in networks)
            )
        except ValueError as exc:
            raise AuthConfigError(f"allowlist: {exc}") from None

    def allows(self, ip: str) -> bool:
        if self._nets is None:
            return True
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in n for n in self._nets)


class RateLimiter:
    """Per-client token buckets. ``check`` returns 0.0 when the request may go on,
    else the seconds until a token is available (for ``Retry-After``)."""

    def __init__(self, default: RateLimit | None, clock: Callable[[], float]) -> None:
        self._default = default
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, stamp)

    def check(self, client_id: str, override: RateLimit | None = None) -> float:
        limit = override or self._default
        if limit is None:
            return 0.0
        now = self._clock()
        tokens, stamp = self._buckets.get(client_id, (limit.burst, now))
        tokens = min(limit.burst, tokens + (now - stamp) * limit.per_second)
        if tokens >= 1.0:
            self._buckets[client_id] = (tokens - 1.0, now)
            return 0.0
        self._buckets[client_id] = (tokens, now)
        return (1.0 - tokens) / limit.per_second

    @staticmethod
    def retry_after_header(wait: float) -> str:
        return str(max(1, math.ceil(wait)))

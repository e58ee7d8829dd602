"""The node's own signing policy and its usage counters (DESIGN.md "Signing": nodes
enforce their own copy of the policy; the coordinator is not trusted to).

Policy file (TOML, ``policy.toml`` beside the node config unless the config's
``policy`` key names another file; no file = the permissive default)::

    version = 1
    allow_destroy = true          # may the coordinator destroy this node's shares?

    [default]                     # every key without a table of its own
    clients = ["*"]               # "*" (or no entry) = any client the coordinator
                                  #   authenticated; else exactly these client ids
    per_minute = 600              # signatures per calendar minute (UTC); absent = no limit
    total = 1000000               # signatures over the key's life; absent = no limit

    [keys."operator-key"]         # per key id; missing entries inherit [default]
    clients = ["avs-a", "avs-b"]
    total = 100000

A batch of k hashes counts k signatures. Limits count what THIS node signs: with
``per_minute = 60`` the cluster signs at most 60 messages a minute with that key as
long as fewer than t nodes are compromised.

Usage counters (``UsageLedger``) survive restarts and crashes without an fsync per
signature: per key, ``<data_dir>/usage/<key_id>.json`` records how many signatures
are *reserved* (in total and in the current minute), written atomically
(``node.files.atomic_write``) before any signature of a new block is produced.
Blocks are ``RESERVE_BLOCK`` signatures, but never more than 1/16 of what is left
under a limit (so close to a limit every signature is persisted). After a restart
every reserved signature counts as used (the node cannot know how many of the last
block it produced), so a crash can only lose capacity (at most 1/16 of the rest),
never exceed a limit.
"""

from __future__ import annotations

import json
import math
import re
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from node.files import atomic_write, make_private_dir
from protocol.errors import Fault, TkmsError

POLICY_VERSION = 1
POLICY_FILE = "policy.toml"
USAGE_DIR = "usage"
RESERVE_BLOCK = 32
MAX_LIMIT = 2**53
ANY_CLIENT = "*"
_CLIENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_RULE_KEYS = {"clients", "per_minute", "total"}
_TOP_KEYS = {"version", "allow_destroy", "default", "keys"}


class PolicyError(TkmsError):
    """The policy file is malformed (the node refuses to start with it)."""

    fault = Fault.CONFIG

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"node policy {key}: {reason}")
        self.key = key
        self.reason = reason


class UsageStateError(TkmsError):
    """A usage counter file cannot be read or written: the key signs nothing."""

    fault = Fault.LOCAL


@dataclass(frozen=True, slots=True)
class KeyRule:
    """What the node allows for one key. ``clients`` None = any authenticated client."""

    clients: frozenset[str] | None = None
    per_minute: int | None = None
    total: int | None = None

    def allows(self, client: str) -> bool:
        return self.clients is None or client in self.clients


@dataclass(frozen=True, slots=True)
class NodePolicy:
    """The node's policy: a default rule, per-key rules, whether destroy is allowed."""

    default: KeyRule = field(default_factory=KeyRule)
    keys: Mapping[str, KeyRule] = field(default_factory=dict)
    allow_destroy: bool = True
    source: str = "built-in default"

    def rule(self, key_id: str) -> KeyRule:
        return self.keys.get(key_id, self.default)


def _limit(table: Mapping[str, Any], name: str, where: str) -> int | None:
    if name not in table:
        return None
    value = table[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT:
        raise PolicyError(f"{where}.{name}", f"must be an integer in [0, {MAX_LIMIT}]")
    return value


def _clients(table: Mapping[str, Any], where: str) -> frozenset[str] | None:
    if "clients" not in table:
        return None
    value = table["clients"]
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise PolicyError(f"{where}.clients", "must be a list of client ids")
    if ANY_CLIENT in value:
        if len(value) != 1:
            raise PolicyError(f"{where}.clients", '"*" stands alone')
        return None
    for c in value:
        if not _CLIENT_RE.match(c):
            raise PolicyError(f"{where}.clients", f"{c[:64]!r} is not a client id")
    return frozenset(value)


def _rule(table: Any, where: str, base: KeyRule) -> KeyRule:
    if not isinstance(table, dict):
        raise PolicyError(where, "must be a table")
    unknown = set(table) - _RULE_KEYS
    if unknown:
        raise PolicyError(where, f"unknown keys {sorted(unknown)}")
    return KeyRule(
        clients=_clients(table, where) if "clients" in table else base.clients,
        per_minute=_limit(table, "per_minute", where) if "per_minute" in table else base.per_minute,
        total=_limit(table, "total", where) if "total" in table else base.total,
    )


def parse_policy(text: str, *, source: str = "policy") -> NodePolicy:
    """Parse a policy file strictly (unknown keys, wrong types: ``PolicyError``)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError("file", f"not valid TOML ({exc})") from None
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise PolicyError("file", f"unknown keys {sorted(unknown)}")
    if doc.get("version") != POLICY_VERSION or isinstance(doc.get("version"), bool):
        raise PolicyError("version", f"must be {POLICY_VERSION}")
    allow_destroy = doc.get("allow_destroy", True)
    if not isinstance(allow_destroy, bool):
        raise PolicyError("allow_destroy", "must be true or false")
    default = _rule(doc.get("default", {}), "default", KeyRule())
    keys_table = doc.get("keys", {})
    if not isinstance(keys_table, dict):
        raise PolicyError("keys", "must be a table of key ids")
    keys: dict[str, KeyRule] = {}
    for key_id, table in keys_table.items():
        if not _KEY_ID_RE.match(key_id):
            raise PolicyError("keys", f"{key_id[:64]!r} is not a key id")
        keys[key_id] = _rule(table, f"keys.{key_id}", default)
    return NodePolicy(default=default, keys=keys, allow_destroy=allow_destroy, source=source)


def load_policy(path: Path) -> NodePolicy:
    """The policy in ``path``; the permissive default if there is no such file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return NodePolicy()
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError("file", f"cannot read {path}: {exc}") from None
    return parse_policy(text, source=str(path))


# -- usage counters ---------------------------------------------------------------------


@dataclass(slots=True)
class _Counter:
    """One key's counters: ``used`` in memory, ``reserved`` on disk (>= used)."""

    total_used: int
    total_reserved: int
    minute: int
    minute_used: int
    minute_reserved: int


class UsageLedger:
    """Per-key signature counters that survive restarts (see the module header).

    ``consume(key_id, rule, count)`` grants up to ``count`` signatures (fewer when a
    limit is near: the first ones of a batch are granted, the rest refused) and
    returns how many. Reservations are written before they are handed out."""

    def __init__(
        self,
        directory: Path,
        *,
        clock: Callable[[], float] = time.time,
        block: int = RESERVE_BLOCK,
    ) -> None:
        if block < 1:
            raise ValueError("block must be at least 1")
        self.directory = directory
        self._clock = clock
        self._block = block
        self._counters: dict[str, _Counter] = {}
        self._lock = trio.Lock()

    def _path(self, key_id: str) -> Path:
        if not _KEY_ID_RE.match(key_id):
            raise UsageStateError(f"key id {key_id[:64]!r} is not valid")
        return self.directory / f"{key_id}.json"

    def _minute(self) -> int:
        return math.floor(self._clock() / 60)

    def _load(self, key_id: str) -> _Counter:
        path = self._path(key_id)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return _Counter(0, 0, self._minute(), 0, 0)
        except OSError as exc:
            raise UsageStateError(f"cannot read usage of {key_id}: {exc.strerror}") from None
        try:
            doc = json.loads(raw)
            total = doc["totalReserved"]
            minute = doc["minute"]
            minute_reserved = doc["minuteReserved"]
            if doc["keyId"] != key_id or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for v in (total, minute, minute_reserved)
            ):
                raise ValueError("bad values")
        except (ValueError, KeyError, TypeError):
            raise UsageStateError(f"usage file of {key_id} is malformed") from None
        # Every reservation counts as used: the node may have produced all of them.
        return _Counter(total, total, minute, minute_reserved, minute_reserved)

    def _write(self, key_id: str, c: _Counter, total: int, minute_reserved: int) -> None:
        doc = {
            "version": 1,
            "keyId": key_id,
            "totalReserved": total,
            "minute": c.minute,
            "minuteReserved": minute_reserved,
        }
        make_private_dir(self.directory)
        atomic_write(self._path(key_id), (json.dumps(doc, sort_keys=True) + "\n").encode())

    async def used(self, key_id: str) -> tuple[int, int]:
        """(signatures counted in total, in the current minute), reservations included
        after a restart."""
        async with self._lock:
            c = await self._counter(key_id)
            self._roll(c)
            return c.total_used, c.minute_used

    async def _counter(self, key_id: str) -> _Counter:
        c = self._counters.get(key_id)
        if c is None:
            c = await trio.to_thread.run_sync(self._load, key_id)
            self._counters[key_id] = c
        return c

    def _roll(self, c: _Counter) -> None:
        now = self._minute()
        if now > c.minute:  # a clock that goes back keeps the later window (stricter)
            c.minute, c.minute_used, c.minute_reserved = now, 0, 0

    async def consume(self, key_id: str, rule: KeyRule, count: int) -> int:
        """Grant up to ``count`` signatures of ``key_id`` under ``rule``; returns how
        many (0 = refused). ``UsageStateError`` if the counters cannot be persisted."""
        if count < 1:
            return 0
        async with self._lock:
            c = await self._counter(key_id)
            self._roll(c)
            grant = count
            if rule.total is not None:
                grant = min(grant, max(0, rule.total - c.total_used))
            if rule.per_minute is not None:
                grant = min(grant, max(0, rule.per_minute - c.minute_used))
            if grant == 0:
                return 0
            need_total = c.total_used + grant > c.total_reserved
            need_minute = c.minute_used + grant > c.minute_reserved
            if need_total or need_minute:
                total = _reserve(c.total_used + grant, self._block, rule.total, c.total_reserved)
                minute = _reserve(
                    c.minute_used + grant, self._block, rule.per_minute, c.minute_reserved
                )
                try:
                    await trio.to_thread.run_sync(self._write, key_id, c, total, minute)
                except OSError as exc:
                    raise UsageStateError(
                        f"cannot persist usage of {key_id}: {exc.strerror}"
                    ) from None
                c.total_reserved, c.minute_reserved = total, minute
            c.total_used += grant
            c.minute_used += grant
            return grant


def _reserve(needed: int, block: int, limit: int | None, current: int) -> int:
    """The new reservation: ``needed`` plus a block ahead, never beyond ``limit``. Near
    a limit the block shrinks to 1/16 of what is left (down to nothing), so a crash
    loses at most 1/16 of the remaining signatures."""
    ahead = block if limit is None else min(block, (limit - needed) // 16)
    return max(current, needed + max(0, ahead))


def policy_path(config_policy: Path | None, data_dir: Path) -> Path:
    """The policy file a node reads: its config's ``policy``, else ``<data_dir>/policy.toml``
    (for ``tkms node init`` layouts, beside the config)."""
    return config_policy if config_policy is not None else data_dir / POLICY_FILE

"""The cluster manifest: the public description of a cluster (TOML, parsed from text).

    version = 1
    cluster_id = "<32 hex digits>"
    [[nodes]]
    index = 1                         # 1..n, Shamir evaluation point
    name = "node1"
    address = "127.0.0.1:7101"
    noise_public_key = "<64 hex>"     # X25519 static key
    ed25519_public_key = "<64 hex>"
    [[coordinators]]
    name = "coordinator"
    noise_public_key = "<64 hex>"

Parsing is strict: unknown keys, duplicate names/indices/keys and malformed hex are
typed errors naming the field.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Any

from protocol.errors import DecodeError, Fault


class ManifestError(DecodeError):
    """The manifest is malformed (the operator's file)."""

    fault = Fault.CONFIG


@dataclass(frozen=True, slots=True)
class NodeEntry:
    index: int
    name: str
    address: str  # "host:port"
    noise_public_key: bytes
    ed25519_public_key: bytes

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])


@dataclass(frozen=True, slots=True)
class CoordinatorEntry:
    name: str
    noise_public_key: bytes


@dataclass(frozen=True, slots=True)
class Manifest:
    cluster_id: bytes
    nodes: tuple[NodeEntry, ...]
    coordinators: tuple[CoordinatorEntry, ...]

    def node(self, name: str) -> NodeEntry:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def node_by_index(self, index: int) -> NodeEntry:
        for n in self.nodes:
            if n.index == index:
                return n
        raise KeyError(index)

    def to_toml(self) -> str:
        lines = ["version = 1", f'cluster_id = "{self.cluster_id.hex()}"', ""]
        for n in self.nodes:
            lines += [
                "[[nodes]]",
                f"index = {n.index}",
                f'name = "{n.name}"',
                f'address = "{n.address}"',
                f'noise_public_key = "{n.noise_public_key.hex()}"',
                f'ed25519_public_key = "{n.ed25519_public_key.hex()}"',
                "",
            ]
        for c in self.coordinators:
            lines += [
                "[[coordinators]]",
                f'name = "{c.name}"',
                f'noise_public_key = "{c.noise_public_key.hex()}"',
                "",
            ]
        return "\n".join(lines)


def _hex(value: Any, field: str, length: int) -> bytes:
    if not isinstance(value, str):
        raise ManifestError(field, "must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ManifestError(field, "is not valid hex") from None
    if len(raw) != length:
        raise ManifestError(field, f"must be {length} bytes, got {len(raw)}")
    return raw


def _keys(table: dict[str, Any], allowed: set[str], field: str) -> None:
    extra = set(table) - allowed
    if extra:
        raise ManifestError(field, f"unknown keys {sorted(extra)}")
    missing = allowed - set(table)
    if missing:
        raise ManifestError(field, f"missing keys {sorted(missing)}")


def parse_manifest(text: str) -> Manifest:
    """Parse and validate a manifest's TOML text."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError("manifest", f"not valid TOML: {exc}") from None
    doc.setdefault("coordinators", [])
    _keys(doc, {"version", "cluster_id", "nodes", "coordinators"}, "manifest")
    if doc["version"] != 1:
        raise ManifestError("manifest.version", f"unsupported version {doc['version']!r}")
    cluster_id = _hex(doc["cluster_id"], "manifest.cluster_id", 16)
    nodes: list[NodeEntry] = []
    for i, raw in enumerate(doc["nodes"]):
        f = f"manifest.nodes[{i}]"
        if not isinstance(raw, dict):
            raise ManifestError(f, "must be a table")
        _keys(raw, {"index", "name", "address", "noise_public_key", "ed25519_public_key"}, f)
        index, name, address = raw["index"], raw["name"], raw["address"]
        if not isinstance(index, int) or isinstance(index, bool) or not 1 <= index <= 1024:
            raise ManifestError(f"{f}.index", "must be an integer in [1, 1024]")
        if not isinstance(name, str) or not name or not name.replace("-", "").isalnum():
            raise ManifestError(f"{f}.name", "must be a non-empty alphanumeric name")
        if not isinstance(address, str) or ":" not in address:
            raise ManifestError(f"{f}.address", "must be host:port")
        port = address.rsplit(":", 1)[1]
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ManifestError(f"{f}.address", "port must be in [1, 65535]")
        nodes.append(
            NodeEntry(
                index=index,
                name=name,
                address=address,
                noise_public_key=_hex(raw["noise_public_key"], f"{f}.noise_public_key", 32),
                ed25519_public_key=_hex(raw["ed25519_public_key"], f"{f}.ed25519_public_key", 32),
            )
        )
    if not nodes:
        raise ManifestError("manifest.nodes", "at least one node is required")
    coords: list[CoordinatorEntry] = []
    for i, raw in enumerate(doc["coordinators"]):
        f = f"manifest.coordinators[{i}]"
        if not isinstance(raw, dict):
            raise ManifestError(f, "must be a table")
        _keys(raw, {"name", "noise_public_key"}, f)
        if not isinstance(raw["name"], str) or not raw["name"]:
            raise ManifestError(f"{f}.name", "must be a non-empty string")
        coords.append(
            CoordinatorEntry(
                raw["name"], _hex(raw["noise_public_key"], f"{f}.noise_public_key", 32)
            )
        )
    for attr in ("index", "name", "address", "noise_public_key", "ed25519_public_key"):
        values = [getattr(n, attr) for n in nodes]
        if len(set(values)) != len(values):
            raise ManifestError("manifest.nodes", f"duplicate {attr}")
    if len({c.name for c in coords}) != len(coords):
        raise ManifestError("manifest.coordinators", "duplicate name")
    return Manifest(cluster_id=cluster_id, nodes=tuple(nodes), coordinators=tuple(coords))

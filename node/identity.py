"""The node's identity: a Noise X25519 static key and an Ed25519 signing key.

Both are generated from the node's mixed entropy (``node.entropy``), sealed under
the token's identity key (AAD: node name, token label, purpose) into

    <data_dir>/identity/noise-x25519.sealed
    <data_dir>/identity/ed25519.sealed

and their public halves are written to ``<data_dir>/identity.json`` for the
cluster manifest. Loading unseals both and checks that they still match the
public file. Reprs never show a secret.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.public
import nacl.signing

from node.files import atomic_write, make_private_dir
from node.hsm import HsmCore, HsmSession, TokenKeyExists
from node.sealing import IDENTITY_KEY_LABEL, IdentityContext, TokenCrypto, seal, unseal
from protocol.errors import TkmsError
from protocol.rng import Rng

NOISE_PURPOSE = "noise-x25519"
ED25519_PURPOSE = "ed25519"
PUBLIC_FILE = "identity.json"
SEALED_DIR = "identity"
SECRET_LEN = 32


class IdentityError(TkmsError):
    """The node's identity files are missing, inconsistent or unreadable (fault LOCAL)."""


@dataclass(frozen=True, slots=True)
class PublicIdentity:
    """What the manifest needs to know about a node."""

    name: str
    noise_public_key: bytes
    ed25519_public_key: bytes

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "noisePublicKey": self.noise_public_key.hex(),
            "ed25519PublicKey": self.ed25519_public_key.hex(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> PublicIdentity:
        if not isinstance(obj, dict) or set(obj) != {"name", "noisePublicKey", "ed25519PublicKey"}:
            raise IdentityError("identity.json must hold name, noisePublicKey, ed25519PublicKey")
        try:
            noise = bytes.fromhex(obj["noisePublicKey"])
            ed = bytes.fromhex(obj["ed25519PublicKey"])
        except (TypeError, ValueError):
            raise IdentityError("identity.json: public keys must be hex") from None
        if len(noise) != 32 or len(ed) != 32 or not isinstance(obj["name"], str):
            raise IdentityError("identity.json: public keys must be 32 bytes")
        return cls(obj["name"], noise, ed)


class NodeIdentity:
    """The node's two secret keys (in memory only after unsealing)."""

    __slots__ = ("_ed25519_seed", "_noise_secret", "name")

    def __init__(self, name: str, noise_secret: bytes, ed25519_seed: bytes) -> None:
        if len(noise_secret) != SECRET_LEN or len(ed25519_seed) != SECRET_LEN:
            raise IdentityError("identity secrets must be 32 bytes each")
        self.name = name
        self._noise_secret = bytes(noise_secret)
        self._ed25519_seed = bytes(ed25519_seed)

    def __repr__(self) -> str:
        pub = self.public
        return (
            f"NodeIdentity(name={self.name!r}, noise_public={pub.noise_public_key.hex()}, "
            f"ed25519_public={pub.ed25519_public_key.hex()}, secrets=<hidden>)"
        )

    @property
    def noise_private_key(self) -> bytes:
        """The raw X25519 static private key (for the Noise handshake)."""
        return self._noise_secret

    @property
    def ed25519_seed(self) -> bytes:
        """The raw 32-byte Ed25519 seed (to seal it; prefer ``signing_key``)."""
        return self._ed25519_seed

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        """The Ed25519 key for ``protocol.signing.sign_fields``."""
        return nacl.signing.SigningKey(self._ed25519_seed)

    @property
    def public(self) -> PublicIdentity:
        noise_pub = nacl.public.PrivateKey(self._noise_secret).public_key.encode()
        ed_pub = nacl.signing.SigningKey(self._ed25519_seed).verify_key.encode()
        return PublicIdentity(self.name, bytes(noise_pub), bytes(ed_pub))


def generate_identity(name: str, rng: Rng) -> NodeIdentity:
    """Fresh X25519 and Ed25519 secrets from ``rng`` (the node's mixed entropy)."""
    return NodeIdentity(name, rng(SECRET_LEN), rng(SECRET_LEN))


def _contexts(name: str, token_label: str) -> tuple[IdentityContext, IdentityContext]:
    return (
        IdentityContext(node=name, token_label=token_label, purpose=NOISE_PURPOSE),
        IdentityContext(node=name, token_label=token_label, purpose=ED25519_PURPOSE),
    )


def sealed_paths(data_dir: Path) -> tuple[Path, Path]:
    d = data_dir / SEALED_DIR
    return d / f"{NOISE_PURPOSE}.sealed", d / f"{ED25519_PURPOSE}.sealed"


def seal_identity(
    token: TokenCrypto, identity: NodeIdentity, token_label: str, data_dir: Path
) -> PublicIdentity:
    """Seal both secrets and write them plus ``identity.json`` (never overwriting)."""
    noise_ctx, ed_ctx = _contexts(identity.name, token_label)
    noise_blob = seal(token, noise_ctx, identity.noise_private_key)
    ed_blob = seal(token, ed_ctx, identity.ed25519_seed)
    noise_path, ed_path = sealed_paths(data_dir)
    make_private_dir(noise_path.parent)
    atomic_write(noise_path, noise_blob, overwrite=False)
    atomic_write(ed_path, ed_blob, overwrite=False)
    public = identity.public
    text = json.dumps(public.to_json(), indent=2) + "\n"
    atomic_write(data_dir / PUBLIC_FILE, text.encode(), overwrite=False, mode=0o644)
    return public


def load_public_identity(data_dir: Path) -> PublicIdentity:
    path = data_dir / PUBLIC_FILE
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise IdentityError(f"cannot read {path}") from None
    return PublicIdentity.from_json(obj)


def load_identity(token: TokenCrypto, name: str, token_label: str, data_dir: Path) -> NodeIdentity:
    """Unseal both secrets (typed sealing errors propagate) and check them against
    ``identity.json``."""
    noise_ctx, ed_ctx = _contexts(name, token_label)
    noise_path, ed_path = sealed_paths(data_dir)
    blobs = []
    for path in (noise_path, ed_path):
        try:
            blobs.append(path.read_bytes())
        except OSError as exc:
            raise IdentityError(f"cannot read sealed identity {path}: {exc.strerror}") from None
    identity = NodeIdentity(
        name, unseal(token, noise_ctx, blobs[0]), unseal(token, ed_ctx, blobs[1])
    )
    public = load_public_identity(data_dir)
    if public != identity.public:
        raise IdentityError(
            f"{data_dir / PUBLIC_FILE} does not match the sealed identity (edited or swapped)"
        )
    return identity


def _create_sync(core: HsmCore, identity: NodeIdentity, data_dir: Path) -> PublicIdentity:
    try:
        core.create_aes_key(IDENTITY_KEY_LABEL)
    except TokenKeyExists:
        raise IdentityError(
            f"token {core.token_label!r} already has an identity key: refusing to replace it"
        ) from None
    return seal_identity(core, identity, core.token_label, data_dir)


async def create_identity(
    hsm: HsmSession, rng: Rng, *, name: str, data_dir: Path
) -> PublicIdentity:
    """At ``node init``: a new identity key in the token, new secrets, sealed to disk."""
    identity = generate_identity(name, rng)
    return await hsm.run(_create_sync, identity, data_dir)


def _load_sync(core: HsmCore, name: str, data_dir: Path) -> NodeIdentity:
    return load_identity(core, name, core.token_label, data_dir)


async def unseal_identity(hsm: HsmSession, *, name: str, data_dir: Path) -> NodeIdentity:
    """At node start: the unsealed identity (typed error if anything is off)."""
    return await hsm.run(_load_sync, name, data_dir)

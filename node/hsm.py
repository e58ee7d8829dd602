"""The node's PKCS#11 backend: one token, found by label, logged in once.

Two layers:

* ``HsmCore`` — synchronous, wraps python-pkcs11: load the module (for SoftHSM2,
  with the node's own ``SOFTHSM2_CONF``, checked to name ``directories.tokendir``),
  find the token by label, log in, generate non-extractable sensitive AES-256
  keys, AES-GCM encrypt/decrypt with an IV from the token's RNG, C_GenerateRandom,
  destroy and list keys. Every method holds one re-entrant lock.
* ``HsmSession`` — the async facade the node uses: every call runs the core in a
  worker thread via ``trio.to_thread.run_sync`` with a dedicated
  ``CapacityLimiter(1)``, so python-pkcs11 (not thread-safe; SoftHSM runs without
  mutexes under python-pkcs11's ``C_Initialize(NULL)``) never sees two threads at
  once. Open it with ``open_hsm(config)``.

Token provisioning for SoftHSM2 is in ``node.softhsm``. A real HSM is
provisioned with its vendor tools (or ``pkcs11-tool --init-token`` /
``--init-pin``); the node then only needs the module path, the token label and
the user PIN (see docs/threat-model.md, "Sealing and node storage").

A PKCS#11 module is one instance per process. One process = one SoftHSM config:
switching configs is allowed only while no token of that module is open here
(``C_Finalize`` + ``C_Initialize``); several tokens under one config are fine.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import pkcs11
import trio
from pkcs11 import Attribute, GCMParams, KeyType, Mechanism, ObjectClass, TokenFlag
from pkcs11 import exceptions as p11e

from node.config import NodeConfig
from protocol.errors import Fault, TkmsError

SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
GCM_IV_BYTES = 12
GCM_TAG_BITS = 128
AES_KEY_BITS = 256
DEFAULT_CALL_TIMEOUT = 30.0

P = ParamSpec("P")
T = TypeVar("T")


class HsmError(TkmsError):
    """A PKCS#11 operation failed (fault LOCAL unless a subclass says otherwise)."""


class HsmConfigError(HsmError):
    """The module, token, PIN or SoftHSM config the operator pointed us at is wrong."""

    fault = Fault.CONFIG


class ModuleMissing(HsmConfigError):
    """The PKCS#11 module file does not exist or does not load."""


class SoftHsmConfInvalid(HsmConfigError):
    """softhsm2.conf is missing, or lacks a usable ``directories.tokendir``."""


class TokenNotFound(HsmConfigError):
    """No initialised token carries the configured label."""

    def __init__(self, label: str, seen: list[str]) -> None:
        shown = ", ".join(repr(s) for s in seen) if seen else "none"
        super().__init__(f"no token labelled {label!r} (initialised tokens seen: {shown})")
        self.label = label
        self.seen = seen


class WrongPin(HsmConfigError):
    """C_Login refused the user PIN (or the PIN is locked / not initialised)."""


class TokenInUse(HsmError):
    """The token is already open (logged in) elsewhere in this process."""


class TokenKeyExists(HsmError):
    """A key with this label already exists in the token."""


class TokenKeyMissing(HsmError):
    """No key with this label in the token (destroyed, or another token)."""


class GcmAuthFailed(HsmError):
    """AES-GCM decryption failed: tag mismatch (ciphertext, IV or AAD differ)."""


class HsmTimeout(HsmError):
    """An HSM call did not return in time; the session is unusable afterwards."""


class HsmOperationError(HsmError):
    """Any other PKCS#11 failure, with the operation and the PKCS#11 error name."""


SEAL_KEY_TEMPLATE: dict[Any, Any] = {
    Attribute.TOKEN: True,  # persistent in the token
    Attribute.PRIVATE: True,  # only visible after login
    Attribute.SENSITIVE: True,  # CKA_VALUE never readable
    Attribute.EXTRACTABLE: False,  # never wrappable out
    Attribute.MODIFIABLE: False,  # flags cannot be relaxed later
    Attribute.ENCRYPT: True,
    Attribute.DECRYPT: True,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
    Attribute.SIGN: False,
    Attribute.VERIFY: False,
    Attribute.DERIVE: False,
}


@dataclass(frozen=True, slots=True)
class TokenKeyInfo:
    """Public attributes of one secret key in the token."""

    label: str
    key_type: str
    token: bool
    private: bool
    sensitive: bool
    extractable: bool
    always_sensitive: bool
    never_extractable: bool
    modifiable: bool


# ---------------------------------------------------------------- SoftHSM config check


def check_softhsm_conf(conf: Path) -> Path:
    """The tokendir a softhsm2.conf names; typed error if absent or unusable.

    Without ``directories.tokendir`` SoftHSM silently uses the system store
    (/var/lib/softhsm/tokens), which a node must never share."""
    try:
        text = conf.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise SoftHsmConfInvalid(f"cannot read SoftHSM config {conf}") from None
    tokendir: str | None = None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "directories.tokendir":
            tokendir = value.strip()
    if not tokendir:
        raise SoftHsmConfInvalid(
            f"{conf} has no directories.tokendir (SoftHSM would fall back to the system store)"
        )
    path = Path(tokendir)
    if not path.is_absolute() or not path.is_dir():
        raise SoftHsmConfInvalid(f"{conf}: tokendir {tokendir} is not an existing absolute dir")
    return path


# ---------------------------------------------------------------- module registry


@dataclass
class _Loaded:
    lib: Any
    conf: str | None
    open_tokens: set[str] = field(default_factory=set)


_LOADED: dict[str, _Loaded] = {}
REGISTRY_LOCK = threading.Lock()


def load_module(module_path: Path, conf: Path | None) -> _Loaded:
    """Load (once per process) and initialise the module with the right config."""
    if not module_path.is_file():
        raise ModuleMissing(f"PKCS#11 module not found: {module_path}")
    conf_str = str(conf.resolve()) if conf is not None else None
    if conf is not None:
        check_softhsm_conf(conf)
    key = str(module_path)
    with REGISTRY_LOCK:
        entry = _LOADED.get(key)
        if entry is not None and entry.conf == conf_str:
            if not entry.lib.initialized:
                entry.lib.initialize()
            return entry
        if entry is not None and entry.open_tokens:
            raise HsmConfigError(
                f"{module_path} is already in use in this process with another config "
                f"({entry.conf}); one SoftHSM config per process"
            )
        if conf_str is not None:
            os.environ["SOFTHSM2_CONF"] = conf_str  # read by SoftHSM at C_Initialize
        try:
            if entry is not None:
                entry.lib.reinitialize()
                entry.conf = conf_str
                return entry
            lib = pkcs11.lib(key)
        except p11e.GeneralError:
            raise SoftHsmConfInvalid(
                f"C_Initialize failed for {module_path} (config {conf_str})"
            ) from None
        except p11e.PKCS11Error as exc:
            raise ModuleMissing(f"cannot load PKCS#11 module {module_path}: {exc}") from None
        entry = _Loaded(lib=lib, conf=conf_str)
        _LOADED[key] = entry
        return entry


def _close_all_sessions(module_path: Path, slot_id: int) -> None:
    """C_CloseAllSessions on one slot: python-pkcs11 leaks the session of a failed
    C_Login (Token.open opens it, then raises); this closes it."""
    lib = ctypes.CDLL(str(module_path))  # same dlopen handle as python-pkcs11's
    lib.C_CloseAllSessions.argtypes = [ctypes.c_ulong]
    lib.C_CloseAllSessions.restype = ctypes.c_ulong
    lib.C_CloseAllSessions(slot_id)


def initialised_labels(lib: Any) -> list[str]:
    return sorted(t.label for t in lib.get_tokens() if t.flags & TokenFlag.TOKEN_INITIALIZED)


# ---------------------------------------------------------------- sync core


class HsmCore:
    """One logged-in R/W session on one token. Synchronous; every method locks."""

    def __init__(self, module_path: Path, token_label: str, entry: _Loaded, session: Any) -> None:
        self.module_path = module_path
        self.token_label = token_label
        self._entry = entry
        self._session = session
        self._lock = threading.RLock()
        self._keys: dict[str, Any] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"HsmCore(module={str(self.module_path)!r}, token={self.token_label!r})"

    @classmethod
    def open(
        cls,
        module_path: Path,
        token_label: str,
        pin: str,
        *,
        softhsm2_conf: Path | None = None,
    ) -> HsmCore:
        """Load the module, find the token by label and log in with ``pin``."""
        entry = load_module(module_path, softhsm2_conf)
        lib = entry.lib
        with REGISTRY_LOCK:
            if token_label in entry.open_tokens:
                raise TokenInUse(f"token {token_label!r} is already open in this process")
            try:
                token = lib.get_token(token_label=token_label)
            except p11e.NoSuchToken:
                if entry.open_tokens:
                    raise TokenNotFound(token_label, initialised_labels(lib)) from None
                lib.reinitialize()  # rescan: the token may have been created by another process
                try:
                    token = lib.get_token(token_label=token_label)
                except p11e.NoSuchToken:
                    raise TokenNotFound(token_label, initialised_labels(lib)) from None
            except p11e.MultipleTokensReturned:
                raise HsmConfigError(f"several tokens are labelled {token_label!r}") from None
            if not token.flags & TokenFlag.TOKEN_INITIALIZED:
                raise TokenNotFound(token_label, initialised_labels(lib))
            slot_id = token.slot.slot_id
            try:
                session = token.open(rw=True, user_pin=pin)
            except p11e.UserAlreadyLoggedIn:
                raise TokenInUse(
                    f"token {token_label!r} is already logged in by other code in this process"
                ) from None
            except (p11e.PinIncorrect, p11e.PinLenRange, p11e.PinInvalid):
                _close_all_sessions(module_path, slot_id)
                raise WrongPin(f"wrong user PIN for token {token_label!r}") from None
            except p11e.PinLocked:
                _close_all_sessions(module_path, slot_id)
                raise WrongPin(f"the user PIN of token {token_label!r} is locked") from None
            except p11e.UserPinNotInitialized:
                _close_all_sessions(module_path, slot_id)
                raise WrongPin(f"token {token_label!r} has no user PIN (C_InitPIN)") from None
            except p11e.PKCS11Error as exc:
                _close_all_sessions(module_path, slot_id)
                raise HsmOperationError(
                    f"cannot log in to token {token_label!r}: {type(exc).__name__}"
                ) from None
            entry.open_tokens.add(token_label)
        return cls(module_path, token_label, entry, session)

    def close(self) -> None:
        """Close the session (logs out when it is the last one). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._keys.clear()
            with REGISTRY_LOCK:
                self._entry.open_tokens.discard(self.token_label)
                # a session already gone (e.g. module finalised) has nothing to release
                with contextlib.suppress(p11e.PKCS11Error):
                    self._session.close()

    def _check_open(self) -> None:
        if self._closed:
            raise HsmError(f"HSM session on token {self.token_label!r} is closed")

    def generate_random(self, n: int) -> bytes:
        """``n`` bytes from the token's C_GenerateRandom."""
        if n <= 0:
            raise ValueError("n must be positive")
        with self._lock, _op("C_GenerateRandom"):
            self._check_open()
            data = bytes(self._session.generate_random(n * 8))
        if len(data) != n:
            raise HsmOperationError(f"C_GenerateRandom returned {len(data)} of {n} bytes")
        return data

    def has_key(self, label: str) -> bool:
        with self._lock, _op("C_FindObjects"):
            self._check_open()
            return bool(list(self._session.get_objects({Attribute.LABEL: label})))

    def create_aes_key(self, label: str) -> None:
        """Generate a token AES-256 key: sensitive, never extractable, encrypt/decrypt only."""
        with self._lock:
            if self.has_key(label):
                raise TokenKeyExists(f"token key {label!r} already exists")
            with _op("C_GenerateKey"):
                key = self._session.generate_key(
                    KeyType.AES,
                    AES_KEY_BITS,
                    label=label,
                    id=label.encode(),
                    store=True,
                    template=SEAL_KEY_TEMPLATE,
                )
            self._keys[label] = key

    def _key(self, label: str) -> Any:
        self._check_open()
        key = self._keys.get(label)
        if key is None:
            try:
                key = self._session.get_key(
                    object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=label
                )
            except p11e.NoSuchKey:
                raise TokenKeyMissing(
                    f"token key {label!r} is not in token {self.token_label!r}"
                ) from None
            except p11e.MultipleObjectsReturned:
                raise HsmError(f"several token keys are labelled {label!r}") from None
            self._keys[label] = key
        return key

    def destroy_key(self, label: str) -> None:
        """C_DestroyObject: every blob sealed under this key becomes noise."""
        with self._lock:
            key = self._key(label)
            with _op("C_DestroyObject"):
                key.destroy()
            self._keys.pop(label, None)

    def list_keys(self) -> list[TokenKeyInfo]:
        """Every secret key object in the token, with its protection attributes."""
        with self._lock, _op("C_FindObjects/C_GetAttributeValue"):
            self._check_open()
            out = []
            for obj in self._session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY}):
                out.append(
                    TokenKeyInfo(
                        label=str(obj[Attribute.LABEL]),
                        key_type=str(KeyType(obj[Attribute.KEY_TYPE]).name),
                        token=bool(obj[Attribute.TOKEN]),
                        private=bool(obj[Attribute.PRIVATE]),
                        sensitive=bool(obj[Attribute.SENSITIVE]),
                        extractable=bool(obj[Attribute.EXTRACTABLE]),
                        always_sensitive=bool(obj[Attribute.ALWAYS_SENSITIVE]),
                        never_extractable=bool(obj[Attribute.NEVER_EXTRACTABLE]),
                        modifiable=bool(obj[Attribute.MODIFIABLE]),
                    )
                )
            return sorted(out, key=lambda k: k.label)

    def supports_aes_gcm(self) -> bool:
        with self._lock, _op("C_GetMechanismList"):
            self._check_open()
            return Mechanism.AES_GCM in self._session.token.slot.get_mechanisms()

    def aes_gcm_encrypt(self, label: str, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """Encrypt under token key ``label``; returns (IV from the token RNG, ciphertext||tag)."""
        with self._lock:
            key = self._key(label)
            iv = self.generate_random(GCM_IV_BYTES)
            with _op("C_Encrypt(AES_GCM)"):
                ct = key.encrypt(
                    plaintext,
                    mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(iv, aad, GCM_TAG_BITS),
                )
            return iv, bytes(ct)

    def aes_gcm_decrypt(self, label: str, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Decrypt and authenticate; ``GcmAuthFailed`` on any tag mismatch."""
        with self._lock:
            key = self._key(label)
            try:
                pt = key.decrypt(
                    ciphertext,
                    mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(iv, aad, GCM_TAG_BITS),
                )
            except (
                p11e.GeneralError,  # SoftHSM 2.6 reports a tag mismatch this way
                p11e.EncryptedDataInvalid,
                p11e.EncryptedDataLenRange,
            ):
                raise GcmAuthFailed(
                    f"AES-GCM authentication failed under token key {label!r}"
                ) from None
            except p11e.PKCS11Error as exc:
                raise HsmOperationError(f"C_Decrypt(AES_GCM): {type(exc).__name__}") from None
            return bytes(pt)


class _op:
    """Map an unexpected PKCS#11 exception to ``HsmOperationError(operation)``."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and isinstance(exc, p11e.PKCS11Error):
            raise HsmOperationError(f"{self.what} failed: {type(exc).__name__}") from None


# ---------------------------------------------------------------- async facade


class HsmSession:
    """Async facade: every core call runs in one worker thread at a time."""

    def __init__(self, core: HsmCore, *, timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        self._core = core
        self._limiter = trio.CapacityLimiter(1)
        self._timeout = timeout
        self._broken = False

    def __repr__(self) -> str:
        return f"HsmSession({self._core!r})"

    @property
    def token_label(self) -> str:
        return self._core.token_label

    async def run(
        self, fn: Callable[Concatenate[HsmCore, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """Run ``fn(core, *args)`` in the HSM worker thread (serialised, with a timeout)."""
        if self._broken:
            raise HsmTimeout("an earlier HSM call timed out; restart the node")
        call = functools.partial(fn, self._core, *args, **kw)
        try:
            with trio.fail_after(self._timeout):
                return await trio.to_thread.run_sync(
                    call, limiter=self._limiter, abandon_on_cancel=True
                )
        except trio.TooSlowError:
            self._broken = True
            raise HsmTimeout(f"HSM call did not return within {self._timeout} s") from None

    async def generate_random(self, n: int) -> bytes:
        return await self.run(HsmCore.generate_random, n)

    async def has_key(self, label: str) -> bool:
        return await self.run(HsmCore.has_key, label)

    async def create_aes_key(self, label: str) -> None:
        await self.run(HsmCore.create_aes_key, label)

    async def destroy_key(self, label: str) -> None:
        await self.run(HsmCore.destroy_key, label)

    async def list_keys(self) -> list[TokenKeyInfo]:
        return await self.run(HsmCore.list_keys)

    async def aes_gcm_encrypt(
        self, label: str, plaintext: bytes, aad: bytes
    ) -> tuple[bytes, bytes]:
        return await self.run(HsmCore.aes_gcm_encrypt, label, plaintext, aad)

    async def aes_gcm_decrypt(self, label: str, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        return await self.run(HsmCore.aes_gcm_decrypt, label, iv, ciphertext, aad)

    async def aclose(self) -> None:
        """Close the token session (in the worker thread). Idempotent."""
        with trio.move_on_after(self._timeout):
            await trio.to_thread.run_sync(
                self._core.close, limiter=self._limiter, abandon_on_cancel=True
            )


@asynccontextmanager
async def open_hsm(
    config: NodeConfig, *, call_timeout: float = DEFAULT_CALL_TIMEOUT
) -> AsyncIterator[HsmSession]:
    """Open the node's token as configured (PIN read from its configured source).

    Raises:
        HsmTimeout: module load and login did not finish within ``call_timeout`` + 10 s.
            The worker thread is abandoned and may still open the token, which then
            stays open (``TokenInUse``) until the process exits; the node exits anyway.
    """
    opener = functools.partial(
        HsmCore.open,
        config.pkcs11_module,
        config.token_label,
        config.read_pin(),
        softhsm2_conf=config.softhsm2_conf,
    )
    open_timeout = call_timeout + 10.0  # module load + login; import already done
    try:
        with trio.fail_after(open_timeout):
            # abandon_on_cancel: without it the timeout could not interrupt the wait
            core = await trio.to_thread.run_sync(opener, abandon_on_cancel=True)
    except trio.TooSlowError:
        raise HsmTimeout(
            f"opening token {config.token_label!r} took longer than {open_timeout} s"
        ) from None
    session = HsmSession(core, timeout=call_timeout)
    try:
        yield session
    finally:
        with trio.CancelScope(shield=True):
            await session.aclose()

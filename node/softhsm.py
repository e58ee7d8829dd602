"""SoftHSM2 provisioning for ``tkms node init`` and tests: the node's own
``softhsm2.conf`` + token directory, and token initialisation with both PINs.

``init_softhsm_token`` does C_InitToken through ctypes (python-pkcs11 0.10 has no
wrapper; ``ctypes.CDLL`` returns the same dlopen handle, i.e. the same initialised
SoftHSM instance) and C_InitPIN in an SO session, so no PIN ever appears on a
command line. Real HSMs are provisioned with their vendor tools instead.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from pkcs11 import TokenFlag
from pkcs11 import exceptions as p11e

from node.hsm import (
    REGISTRY_LOCK,
    HsmConfigError,
    HsmOperationError,
    initialised_labels,
    load_module,
)


def write_softhsm_conf(base_dir: Path) -> Path:
    """Create ``<base>/tokens`` (0700) and ``<base>/softhsm2.conf`` naming it."""
    tokendir = base_dir.resolve() / "tokens"
    tokendir.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = base_dir.resolve() / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokendir}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
        "slots.mechanisms = ALL\n"
        "library.reset_on_fork = false\n"
    )
    conf.chmod(0o600)
    return conf


def init_softhsm_token(
    module_path: Path, conf: Path, label: str, *, so_pin: str, user_pin: str
) -> None:
    """Initialise a free SoftHSM slot as token ``label`` with both PINs (C_InitToken via
    ctypes, then C_InitPIN in an SO session). Refuses an existing label."""
    if not 1 <= len(label.encode()) <= 32:
        raise HsmConfigError("a token label is 1..32 bytes (UTF-8)")
    entry = load_module(module_path, conf)
    lib = entry.lib
    with REGISTRY_LOCK:
        if label in initialised_labels(lib):
            raise HsmConfigError(f"a token labelled {label!r} already exists")
        free = [
            s
            for s in lib.get_slots(token_present=True)
            if not (s.get_token().flags & TokenFlag.TOKEN_INITIALIZED)
        ]
        if not free:
            raise HsmConfigError(f"no free slot in {conf} to initialise a token")
        raw = ctypes.CDLL(str(module_path))
        raw.C_InitToken.argtypes = [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong]
        raw.C_InitToken.argtypes += [ctypes.c_char_p]
        raw.C_InitToken.restype = ctypes.c_ulong
        so = so_pin.encode()
        rv = raw.C_InitToken(free[0].slot_id, so, len(so), label.encode().ljust(32, b" "))
        if rv:
            raise HsmOperationError(f"C_InitToken failed: CKR 0x{rv:x}")
        try:
            with lib.get_token(token_label=label).open(rw=True, so_pin=so_pin) as so_session:
                so_session.init_pin(user_pin)
        except p11e.PKCS11Error as exc:
            raise HsmOperationError(f"C_InitPIN failed: {type(exc).__name__}") from None

"""Helpers for node tests: real SoftHSM2 tokens, one config per test under tmp_path.

Tokens are provisioned with ``softhsm2-util`` (independent of our init code). In
this process SoftHSM is one configuration at a time: every core a test opens is
closed at teardown so the next test can switch to its own tmp_path config.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pkcs11

from node.hsm import SOFTHSM_MODULE, HsmCore

REPO = Path(__file__).resolve().parents[2]
SO_PIN = "so-pin-1234"


def user_pin(label: str) -> str:
    return f"user-pin-{label}"


@dataclass
class SoftHsm:
    """One SoftHSM config (tmp dir) holding one token per label."""

    base: Path
    conf: Path
    labels: list[str]
    opened: list[HsmCore] = field(default_factory=list)

    @property
    def tokendir(self) -> Path:
        return self.base / "tokens"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf), "PYTHONPATH": str(REPO)}

    def open(self, label: str, pin: str | None = None) -> HsmCore:
        core = HsmCore.open(SOFTHSM_MODULE, label, pin or user_pin(label), softhsm2_conf=self.conf)
        self.opened.append(core)
        return core

    def close_all(self) -> None:
        for core in self.opened:
            core.close()
        self.opened.clear()

    def raw_session(self, label: str) -> Any:
        """A python-pkcs11 session on a token our core has logged in to (login is per
        process, so this session is logged in too)."""
        return pkcs11.lib(str(SOFTHSM_MODULE)).get_token(token_label=label).open(rw=True)


def provision(base: Path, labels: list[str]) -> SoftHsm:
    tokendir = base / "tokens"
    tokendir.mkdir(parents=True, mode=0o700)
    conf = base / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokendir}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    for label in labels:
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                SO_PIN,
                "--pin",
                user_pin(label),
            ],
            env={**os.environ, "SOFTHSM2_CONF": str(conf)},
            check=True,
            capture_output=True,
            timeout=30,
        )
    return SoftHsm(base=base, conf=conf, labels=labels)


def snapshot(*roots: Path, skip_token_meta: bool = True) -> dict[str, bytes]:
    """Every file under ``roots`` with its bytes. SoftHSM's token.object (login
    counters) and lock files are left out: they change on every login attempt."""
    out: dict[str, bytes] = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if not p.is_file():
                continue
            if skip_token_meta and (p.name == "token.object" or p.suffix == ".lock"):
                continue
            out[str(p)] = p.read_bytes()
    return out


def token_objects(hsm: SoftHsm, label: str) -> list[str]:
    """Labels of all objects in a token, read with python-pkcs11 directly."""
    with hsm.raw_session(label) as s:
        return sorted(str(o[pkcs11.Attribute.LABEL]) for o in s.get_objects())


def live_session_handles() -> list[int]:
    """Session handles SoftHSM knows in this process (it numbers them 1, 2, ...)."""
    lib = ctypes.CDLL(str(SOFTHSM_MODULE))
    buf = ctypes.create_string_buffer(64)
    return [h for h in range(1, 256) if lib.C_GetSessionInfo(ctypes.c_ulong(h), buf) == 0]


def run_py(code: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run tkms code in a fresh interpreter (its own SoftHSM instance)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        env=env or {**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )

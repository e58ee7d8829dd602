"""The node's configuration: one frozen ``NodeConfig`` loaded from TOML, strictly.

    version = 1
    name = "node1"
    data_dir = "/var/lib/tkms/node1"          # relative paths: relative to this file
    manifest = "/etc/tkms/manifest.toml"      # optional until the cluster exists
    listen = "127.0.0.1:7101"
    metrics_port = 9101                       # optional; absent = no metrics listener
    policy = "policy.toml"                    # signing policy (node.policy); optional,
                                              # default <data_dir>/policy.toml

    [hsm]
    pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so"
    token_label = "tkms-node1"
    pin_env = "TKMS_HSM_PIN"                  # exactly one of pin_env / pin_file
    # pin_file = "/var/lib/tkms/node1/hsm-user.pin"
    softhsm2_conf = "/var/lib/tkms/node1/softhsm2.conf"   # SoftHSM only

The config names where the user PIN comes from (an environment variable or a 0600
file), never the PIN itself. Unknown keys, wrong types and malformed values are
``ConfigError``s (fault CONFIG) naming the key.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.errors import Fault, TkmsError

CONFIG_VERSION = 1
NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MIN_PIN_LEN = 4
MAX_PIN_LEN = 255

_TOP_KEYS = {"version", "name", "data_dir", "manifest", "listen", "metrics_port", "hsm", "policy"}
_HSM_KEYS = {"pkcs11_module", "token_label", "pin_env", "pin_file", "softhsm2_conf"}


class ConfigError(TkmsError):
    """The node configuration (or the environment it points at) is wrong."""

    fault = Fault.CONFIG

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"node config {key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a node needs to start. Paths are absolute after loading."""

    name: str
    data_dir: Path
    pkcs11_module: Path
    token_label: str
    listen: str
    manifest: Path | None = None
    pin_env: str | None = None
    pin_file: Path | None = None
    metrics_port: int | None = None
    softhsm2_conf: Path | None = None
    policy: Path | None = None  # the signing policy file (node.policy)

    def __post_init__(self) -> None:
        check_name(self.name)
        check_token_label(self.token_label, "hsm.token_label")
        parse_listen(self.listen, "listen")
        if (self.pin_env is None) == (self.pin_file is None):
            raise ConfigError("hsm.pin_env", "exactly one of hsm.pin_env and hsm.pin_file")
        if self.pin_env is not None and not ENV_NAME_RE.match(self.pin_env):
            raise ConfigError("hsm.pin_env", "not a valid environment variable name")
        if self.metrics_port is not None and not 0 < self.metrics_port < 65536:
            raise ConfigError("metrics_port", "must be in 1..65535")
        for key, path in (
            ("data_dir", self.data_dir),
            ("hsm.pkcs11_module", self.pkcs11_module),
            ("manifest", self.manifest),
            ("hsm.pin_file", self.pin_file),
            ("hsm.softhsm2_conf", self.softhsm2_conf),
            ("policy", self.policy),
        ):
            if path is not None and not path.is_absolute():
                raise ConfigError(key, "must be an absolute path")

    @property
    def is_softhsm(self) -> bool:
        """True when the token is a SoftHSM2 token this node provisioned itself."""
        return self.softhsm2_conf is not None

    @property
    def pin_source(self) -> str:
        """Where the user PIN comes from, for messages (never the PIN)."""
        if self.pin_env is not None:
            return f"environment variable {self.pin_env}"
        return f"file {self.pin_file}"

    def read_pin(self) -> str:
        """The token's user PIN from its configured source (typed error if absent)."""
        if self.pin_env is not None:
            value = os.environ.get(self.pin_env)
            if value is None:
                raise ConfigError("hsm.pin_env", f"environment variable {self.pin_env} is not set")
            return check_pin(value, "hsm.pin_env")
        if self.pin_file is None:  # unreachable: __post_init__ requires one source
            raise ConfigError("hsm.pin_file", "no PIN source configured")
        return read_pin_file(self.pin_file, "hsm.pin_file")

    def to_toml(self) -> str:
        """This config as TOML text (round-trips through ``parse_config``)."""
        lines = [
            f"version = {CONFIG_VERSION}",
            f"name = {_toml_str(self.name)}",
            f"data_dir = {_toml_str(str(self.data_dir))}",
        ]
        if self.manifest is not None:
            lines.append(f"manifest = {_toml_str(str(self.manifest))}")
        lines.append(f"listen = {_toml_str(self.listen)}")
        if self.metrics_port is not None:
            lines.append(f"metrics_port = {self.metrics_port}")
        if self.policy is not None:
            lines.append(f"policy = {_toml_str(str(self.policy))}")
        lines += [
            "",
            "[hsm]",
            f"pkcs11_module = {_toml_str(str(self.pkcs11_module))}",
            f"token_label = {_toml_str(self.token_label)}",
        ]
        if self.pin_env is not None:
            lines.append(f"pin_env = {_toml_str(self.pin_env)}")
        if self.pin_file is not None:
            lines.append(f"pin_file = {_toml_str(str(self.pin_file))}")
        if self.softhsm2_conf is not None:
            lines.append(f"softhsm2_conf = {_toml_str(str(self.softhsm2_conf))}")
        return "\n".join(lines) + "\n"


def load_config(path: Path) -> NodeConfig:
    """Read and validate a node config file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("file", f"cannot read {path}: {exc.strerror}") from None
    return parse_config(text, base_dir=path.resolve().parent)


def parse_config(text: str, *, base_dir: Path) -> NodeConfig:
    """Parse config TOML; relative paths are taken relative to ``base_dir``."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("file", f"not valid TOML ({exc})") from None
    _no_unknown(raw, _TOP_KEYS, "")
    version = _get(raw, "version", int, "")
    if version != CONFIG_VERSION:
        raise ConfigError("version", f"unsupported version {version} (expected {CONFIG_VERSION})")
    hsm = _get(raw, "hsm", dict, "")
    _no_unknown(hsm, _HSM_KEYS, "hsm.")

    def path_of(table: dict[str, Any], key: str, prefix: str, required: bool) -> Path | None:
        value = _get(table, key, str, prefix, required=required)
        if value is None:
            return None
        if not value:
            raise ConfigError(prefix + key, "must not be empty")
        p = Path(value)
        return p if p.is_absolute() else (base_dir / p).resolve()

    metrics = _get(raw, "metrics_port", int, "", required=False)
    data_dir = path_of(raw, "data_dir", "", True)
    module = path_of(hsm, "pkcs11_module", "hsm.", True)
    if data_dir is None or module is None:  # unreachable: required=True raised already
        raise ConfigError("data_dir", "missing")
    return NodeConfig(
        name=_get(raw, "name", str, ""),
        data_dir=data_dir,
        manifest=path_of(raw, "manifest", "", False),
        listen=_get(raw, "listen", str, ""),
        metrics_port=metrics,
        pkcs11_module=module,
        token_label=_get(hsm, "token_label", str, "hsm."),
        pin_env=_get(hsm, "pin_env", str, "hsm.", required=False),
        pin_file=path_of(hsm, "pin_file", "hsm.", False),
        softhsm2_conf=path_of(hsm, "softhsm2_conf", "hsm.", False),
        policy=path_of(raw, "policy", "", False),
    )


def parse_listen(value: str, key: str) -> tuple[str, int]:
    """Split ``host:port`` (port 0..65535; IPv6 hosts in brackets)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(key, f"{value!r} is not host:port")
    if not 0 <= int(port) <= 65535:
        raise ConfigError(key, f"port {port} out of range")
    return host.strip("[]"), int(port)


def check_pin(value: str, key: str) -> str:
    """A PIN is 4..255 printable characters (SoftHSM's limits), no surrounding space."""
    if not MIN_PIN_LEN <= len(value) <= MAX_PIN_LEN:
        raise ConfigError(key, f"PIN length must be {MIN_PIN_LEN}..{MAX_PIN_LEN} characters")
    if value != value.strip() or not value.isprintable():
        raise ConfigError(key, "PIN has whitespace at its ends or unprintable characters")
    return value


def read_pin_file(path: Path, key: str) -> str:
    """Read a PIN file; it must be a regular file not readable by group or others."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(key, f"cannot read PIN file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(key, f"PIN file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(key, f"PIN file {path} is accessible by group/others (chmod 600)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise ConfigError(key, f"cannot read PIN file {path}") from None
    return check_pin(text.rstrip("\n"), key)


def check_name(name: str) -> None:
    if not NODE_NAME_RE.match(name):
        raise ConfigError("name", "1..63 of [A-Za-z0-9._-], starting with a letter or digit")


def check_token_label(label: str, key: str) -> None:
    if not 1 <= len(label.encode("utf-8")) <= 32 or label != label.strip():
        raise ConfigError(key, "1..32 bytes (UTF-8), no leading/trailing space")


def _no_unknown(table: dict[str, Any], allowed: set[str], prefix: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(prefix + key, "unknown key")


def _get(
    table: dict[str, Any], key: str, typ: type[Any], prefix: str, *, required: bool = True
) -> Any:
    if key not in table:
        if required:
            raise ConfigError(prefix + key, "missing")
        return None
    value = table[key]
    if typ is int and isinstance(value, bool):
        raise ConfigError(prefix + key, "must be an integer")
    if not isinstance(value, typ):
        raise ConfigError(prefix + key, f"must be a {typ.__name__}")
    return value


def _toml_str(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)

"""node/config.py: strict TOML, typed errors naming the key, PIN sources."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.config import ConfigError, NodeConfig, load_config, parse_config
from protocol.errors import Fault

GOOD = """
version = 1
name = "node1"
data_dir = "data"
manifest = "/etc/tkms/manifest.toml"
listen = "127.0.0.1:7101"
metrics_port = 9101

[hsm]
pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "tkms-node1"
pin_file = "user.pin"
softhsm2_conf = "softhsm2.conf"
"""


def test_parse_resolves_relative_paths_and_round_trips(tmp_path: Path) -> None:
    config = parse_config(GOOD, base_dir=tmp_path)
    assert config.data_dir == tmp_path / "data"
    assert config.pin_file == tmp_path / "user.pin"
    assert config.manifest == Path("/etc/tkms/manifest.toml")
    assert config.metrics_port == 9101 and config.is_softhsm
    assert parse_config(config.to_toml(), base_dir=Path("/elsewhere")) == config
    (tmp_path / "node.toml").write_text(config.to_toml())
    assert load_config(tmp_path / "node.toml") == config


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda s: s.replace("version = 1", "version = 2"), "version"),
        (lambda s: s.replace('name = "node1"', 'name = "no de"'), "name"),
        (lambda s: s.replace('name = "node1"\n', ""), "name"),
        (lambda s: s.replace('listen = "127.0.0.1:7101"', 'listen = "localhost"'), "listen"),
        (lambda s: s.replace("metrics_port = 9101", "metrics_port = 70000"), "metrics_port"),
        (lambda s: s.replace("metrics_port = 9101", 'metrics_port = "9101"'), "metrics_port"),
        (lambda s: s + "\nextra = 1\n", "hsm.extra"),
        (lambda s: s.replace("version = 1", "version = 1\ncolour = 1"), "colour"),
        (
            lambda s: s.replace('pin_file = "user.pin"', 'pin_env = "X"\npin_file = "p"'),
            "hsm.pin_env",
        ),
        (lambda s: s.replace('pin_file = "user.pin"', ""), "hsm.pin_env"),
        (lambda s: s.replace('pin_file = "user.pin"', 'pin_env = "1BAD"'), "hsm.pin_env"),
        (lambda s: s.replace('"tkms-node1"', '"' + "x" * 33 + '"'), "hsm.token_label"),
        (
            lambda s: s.replace('pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so"\n', ""),
            "hsm.pkcs11_module",
        ),
        (lambda s: s.replace("[hsm]", "[hsm2]"), "hsm2"),
        (lambda s: s.replace('data_dir = "data"', 'data_dir = ""'), "data_dir"),
        (lambda s: s + "[[", "file"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, edit: object, key: str) -> None:
    text = edit(GOOD)  # type: ignore[operator]
    with pytest.raises(ConfigError) as info:
        parse_config(text, base_dir=tmp_path)
    assert info.value.key == key
    assert info.value.fault is Fault.CONFIG
    assert str(info.value).startswith(f"node config {key}:")


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_config_errors(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(text, base_dir=Path("/tmp"))


def _with_pin_file(tmp_path: Path, content: str, mode: int) -> NodeConfig:
    pin = tmp_path / "user.pin"
    pin.write_text(content)
    pin.chmod(mode)
    return parse_config(GOOD, base_dir=tmp_path)


def test_pin_file_rules(tmp_path: Path) -> None:
    assert _with_pin_file(tmp_path, "1234-abcd\n", 0o600).read_pin() == "1234-abcd"
    with pytest.raises(ConfigError, match="accessible by group/others"):
        _with_pin_file(tmp_path, "1234-abcd\n", 0o644).read_pin()
    with pytest.raises(ConfigError, match="PIN length"):
        _with_pin_file(tmp_path, "12\n", 0o600).read_pin()
    config = _with_pin_file(tmp_path, "1234-abcd", 0o600)
    (tmp_path / "user.pin").unlink()
    with pytest.raises(ConfigError) as info:
        config.read_pin()
    assert info.value.key == "hsm.pin_file" and "1234" not in str(info.value)


def test_pin_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = GOOD.replace('pin_file = "user.pin"', 'pin_env = "NODE1_PIN"')
    config = parse_config(text, base_dir=tmp_path)
    monkeypatch.delenv("NODE1_PIN", raising=False)
    with pytest.raises(ConfigError, match="NODE1_PIN is not set"):
        config.read_pin()
    monkeypatch.setenv("NODE1_PIN", "s3cret-pin")
    assert config.read_pin() == "s3cret-pin"
    assert "s3cret" not in repr(config) and "s3cret" not in config.to_toml()

"""``tkms node init`` / ``node run`` as real processes with real SoftHSM2 tokens."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import nacl.public
import nacl.signing

from node.config import load_config
from tests.node.hsm_helpers import REPO, run_cli, run_py, snapshot

INIT_KEYS = {
    "name", "noisePublicKey", "ed25519PublicKey", "pkcs11Module", "tokenLabel", "softhsm2Conf",
    "config",
}  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TKMS_", "SOFTHSM2_"))}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def test_node_init_json_shape_files_and_run(tmp_path: Path) -> None:
    data = tmp_path / "node1"
    r = run_cli(["node", "init", "--name", "node1", "--data-dir", str(data), "--json",
                 "--listen", "127.0.0.1:7301"], _env())  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1  # exactly one JSON object on stdout
    out = json.loads(r.stdout)
    assert set(out) == INIT_KEYS
    assert out["name"] == "node1" and out["tokenLabel"] == "tkms-node1"
    assert out["pkcs11Module"] == "/usr/lib/softhsm/libsofthsm2.so"
    assert out["softhsm2Conf"] == str(data / "softhsm2.conf")
    assert out["config"] == str(data / "node.toml")
    assert len(bytes.fromhex(out["noisePublicKey"])) == 32
    assert len(bytes.fromhex(out["ed25519PublicKey"])) == 32
    assert out["noisePublicKey"] != out["ed25519PublicKey"]
    # PIN files: generated, 0600; the config points at the user PIN file, never holds a PIN
    for name in ("hsm-user.pin", "hsm-so.pin"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
    user_pin = (data / "hsm-user.pin").read_text().strip()
    so_pin = (data / "hsm-so.pin").read_text().strip()
    assert len(user_pin) >= 16 and user_pin != so_pin
    config_text = (data / "node.toml").read_text()
    assert user_pin not in config_text and so_pin not in config_text
    config = load_config(data / "node.toml")
    assert config.pin_file == data / "hsm-user.pin" and config.listen == "127.0.0.1:7301"
    assert "directories.tokendir = " + str(data / "tokens") in (data / "softhsm2.conf").read_text()
    assert json.loads((data / "identity.json").read_text()) == {
        "name": "node1",
        "noisePublicKey": out["noisePublicKey"],
        "ed25519PublicKey": out["ed25519PublicKey"],
    }
    # the sealed identity opens in a new process and matches the published keys
    code = f"""
import trio
from pathlib import Path
from node.config import load_config
from node.hsm import open_hsm
from node.identity import unseal_identity
async def main():
    config = load_config(Path({str(data / "node.toml")!r}))
    async with open_hsm(config) as hsm:
        ident = await unseal_identity(hsm, name=config.name, data_dir=config.data_dir)
    print(ident.noise_private_key.hex(), ident.ed25519_seed.hex())
trio.run(main)
"""
    r2 = run_py(code, _env())
    assert r2.returncode == 0, r2.stderr
    noise_sk, ed_seed = (bytes.fromhex(x) for x in r2.stdout.split())
    assert nacl.public.PrivateKey(noise_sk).public_key.encode().hex() == out["noisePublicKey"]
    assert nacl.signing.SigningKey(ed_seed).verify_key.encode().hex() == out["ed25519PublicKey"]
    for path, content in snapshot(data, skip_token_meta=False).items():
        for secret in (noise_sk, ed_seed):
            assert secret not in content and secret.hex().encode() not in content, path
    # without a manifest the node refuses to run (start-up: tests/node/test_server.py)
    r3 = run_cli(["node", "run", "--config", str(data / "node.toml")], _env())
    assert r3.returncode == 2
    assert "the config names no manifest" in r3.stderr


def test_node_init_refuses_an_initialised_dir(tmp_path: Path) -> None:
    data = tmp_path / "n"
    assert run_cli(["node", "init", "--name", "n", "--data-dir", str(data)], _env()).returncode == 0
    before = snapshot(data, skip_token_meta=False)
    r = run_cli(["node", "init", "--name", "n", "--data-dir", str(data), "--json"], _env())
    assert r.returncode == 2 and r.stdout == ""
    assert "already initialised" in r.stderr and "refusing to overwrite" in r.stderr
    assert snapshot(data, skip_token_meta=False) == before


def test_node_init_with_pins_from_the_environment(tmp_path: Path) -> None:
    data = tmp_path / "n"
    data.mkdir()
    env = _env(TKMS_HSM_PIN="env-user-pin-42", TKMS_HSM_SO_PIN="env-so-pin-42")
    r = run_cli(["node", "init", "--name", "n2", "--data-dir", str(data), "--json",
                 "--token-label", "custom-label"], env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tokenLabel"] == "custom-label"
    assert not (data / "hsm-user.pin").exists() and not (data / "hsm-so.pin").exists()
    config = load_config(data / "node.toml")
    assert config.pin_env == "TKMS_HSM_PIN" and config.pin_file is None
    for content in snapshot(data).values():
        assert b"env-user-pin-42" not in content and b"env-so-pin-42" not in content
    # `node run` with the PIN variable unset or wrong: tests/node/test_server.py


def test_node_init_with_an_existing_token_needs_its_label_and_pin(tmp_path: Path) -> None:
    r = run_cli(["node", "init", "--name", "x", "--data-dir", str(tmp_path / "x"),
                 "--pkcs11-module", "/usr/lib/softhsm/libsofthsm2.so"], _env())  # fmt: skip
    assert r.returncode == 2 and "needs --token-label" in r.stderr
    assert not (tmp_path / "x").exists()
    r = run_cli(["node", "init", "--name", "x", "--data-dir", str(tmp_path / "x"),
                 "--pkcs11-module", "/nonexistent/module.so", "--token-label", "t"],
                _env(TKMS_HSM_PIN="1234-pin"))  # fmt: skip
    assert r.returncode == 2 and "PKCS#11 module not found: /nonexistent/module.so" in r.stderr
    assert not (tmp_path / "x").exists()  # a failed init leaves nothing behind

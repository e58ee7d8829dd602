"""A real SIGKILL in the middle of store writes leaves the previous version intact.

A child process appends metadata versions and overwrites a 1 MB sealed-size file
in a loop; the parent kills it with SIGKILL right after it announces a write, a
few times over the same directory. Every time, the history verifies (numbered,
hash-chained), the last complete version reads back, the big file holds exactly
one complete version, and ``open_store`` sweeps the leftover temp files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from node.config import NodeConfig
from node.hsm import SOFTHSM_MODULE, open_hsm
from node.store import MetadataLog, open_store
from tests.node.hsm_helpers import REPO, SoftHsm, user_pin

CHILD = r"""
import sys
from dataclasses import replace
from pathlib import Path
from node.files import atomic_write
from node.store import KeyMetadata, KeyStatus, MetadataLog

key_dir = Path(sys.argv[1])
holders = tuple(range(1, 201))
meta = KeyMetadata(
    key_id=key_dir.name, t=2, n=200, epoch=0, holders=holders, pk_g1=bytes(64),
    pk_g2=bytes(128), public_shares={i: bytes([i % 256]) * 64 for i in holders},
    transcript_hash=bytes(32), status=KeyStatus.PENDING,
)
log = MetadataLog(key_dir)
blob = key_dir / "share-0.sealed"
i = len(log.versions())
while True:
    i += 1
    print(f"begin {i}", flush=True)
    log.append(replace(meta, epoch=i), f"write {i}")
    atomic_write(blob, (b"%08d" % i) * 131072)
    print(f"done {i}", flush=True)
"""


def _kill_during_write(key_dir: Path, at: int, delay: float) -> int:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(key_dir)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    done = 0
    try:
        for line in child.stdout:
            word, num = line.split()
            if word == "done":
                done = int(num)
            if word == "begin" and int(num) >= at:
                time.sleep(delay)
                child.send_signal(signal.SIGKILL)
                break
    finally:
        child.kill()
        assert child.wait(timeout=30) == -signal.SIGKILL
    return done


async def test_sigkill_mid_write_keeps_the_last_complete_version(
    softhsm: SoftHsm, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    key_dir = data / "keys" / "crash-key"
    key_dir.mkdir(parents=True)
    interrupted = 0
    delays = (0.0, 0.001, 0.003, 0.006, 0.01)
    for trial in range(16):  # at least 5 kills; more until one provably hit a write
        if trial >= len(delays) and interrupted:
            break
        delay = delays[trial % len(delays)]
        start = len(MetadataLog(key_dir).versions())
        done = _kill_during_write(key_dir, start + 2 + trial % 2, delay)
        leftovers = list(key_dir.glob(".tmp-*"))
        interrupted += bool(leftovers)
        versions = MetadataLog(key_dir).versions()  # verifies numbering and hash chain
        last = versions[-1]
        assert last.version >= done  # the child may have run ahead of what we read
        assert last.metadata.epoch == last.version and last.event == f"write {last.version}"
        assert len(last.metadata.public_shares) == 200
        blob = (key_dir / "share-0.sealed").read_bytes()
        assert len(blob) == 8 * 131072
        assert blob == blob[:8] * 131072  # one complete version, never a mix
        # each iteration appends version i, then rewrites the file with i
        assert int(blob[:8]) in (last.version - 1, last.version)
        # opening the store sweeps temp files and keeps every complete version
        pin = tmp_path / "pin"
        pin.write_text(user_pin("node0"))
        pin.chmod(0o600)
        config = NodeConfig(
            name="node0", data_dir=data, pkcs11_module=SOFTHSM_MODULE, token_label="node0",
            listen="127.0.0.1:0", pin_file=pin, softhsm2_conf=softhsm.conf,
        )  # fmt: skip
        async with (
            open_hsm(config) as hsm,
            open_store(data, hsm, cluster_id=bytes(16), node_index=1) as store,
        ):
            assert not list(key_dir.glob(".tmp-*"))
            assert (await store.get_metadata("crash-key")).epoch == last.version
            assert len(await store.history("crash-key")) == last.version
    # the kills did land inside writes (a temp file was left behind) at least once
    assert interrupted >= 1

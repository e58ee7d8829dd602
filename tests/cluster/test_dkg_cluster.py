"""DKG ceremonies on real local clusters: node and coordinator processes, SoftHSM2
tokens, Noise over loopback TCP, the HTTP API and the ``tkms dkg`` CLI.

One 5-node cluster (t = 3) serves most tests in order; a 7-node one the 5-of-7 run.
After every ceremony ``assert_consistent`` reads every node's store from disk: the
key is active exactly on the certificate's holders (all agreeing on it) or on none,
nothing is left pending, and t public shares interpolate to the key (py_ecc). Kills
are real signals: SIGKILL of a node or of the coordinator as soon as the ceremony's
progress (``GET /v1/dkg/{key}``) shows the chosen phase."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from py_ecc.optimized_bn128 import FQ, add, multiply, normalize

from cluster import launcher
from protocol.bn254 import R

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TKMS_", "SOFTHSM2_"))}
    return {**clean, "PYTHONPATH": str(REPO)}


def tkms(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        env=env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@dataclass
class Cluster:
    root: Path
    layout: launcher.ClusterLayout
    api_key: str

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.layout.nodes]

    def http(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://{self.layout.http}{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.api_key}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def dkg(self, *args: str) -> subprocess.CompletedProcess[str]:
        return tkms("dkg", "--cluster-dir", str(self.root), *args)

    def pid(self, name: str) -> int:
        pid = launcher.read_pid(self.layout, name)
        assert pid is not None, f"{name} is not running"
        return pid

    def up(self) -> None:
        launcher.up(self.layout, progress=lambda _: None, timeout=90)

    # -- what every node holds, read from its files ---------------------------------

    def status(self, name: str, key_id: str) -> dict[str, Any] | None:
        metas = sorted((self.root / "nodes" / name / "keys" / key_id).glob("meta-*.json"))
        if not metas:
            return None
        meta: dict[str, Any] = json.loads(metas[-1].read_text())["metadata"]
        return meta

    def pending_records(self, name: str) -> list[str]:
        return [p.name for p in (self.root / "nodes" / name / "dkg" / "pending").glob("*")]

    def token_labels(self, name: str) -> list[str]:
        """The labels of every object in the node's token (a process of its own)."""
        node = self.root / "nodes" / name
        code = (
            "import json, sys, pkcs11\n"
            "lib = pkcs11.lib('/usr/lib/softhsm/libsofthsm2.so')\n"
            "tok = lib.get_token(token_label=sys.argv[1])\n"
            "with tok.open(user_pin=sys.argv[2]) as s:\n"
            "    labels = [str(o[pkcs11.Attribute.LABEL]) for o in s.get_objects()]\n"
            "print(json.dumps(sorted(labels)))\n"
        )
        pin = (node / "hsm-user.pin").read_text().strip()
        r = subprocess.run(
            [sys.executable, "-c", code, f"tkms-{name}", pin],
            env={**env(), "SOFTHSM2_CONF": str(node / "softhsm2.conf")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        labels: list[str] = json.loads(r.stdout)
        return labels


def py_point(hex64: str) -> tuple[FQ, FQ, FQ]:
    raw = bytes.fromhex(hex64)
    return (FQ(int.from_bytes(raw[:32], "big")), FQ(int.from_bytes(raw[32:], "big")), FQ(1))


def interpolate(points: dict[int, str]) -> tuple[int, int]:
    """Σ λ_i·P_i at 0 with py_ecc (λ computed here)."""
    acc = None
    for i, p in points.items():
        lam = 1
        for j in points:
            if j != i:
                lam = lam * j * pow(j - i, -1, R) % R
        term = multiply(py_point(p), lam)
        acc = term if acc is None else add(acc, term)
    x, y = normalize(acc)
    return int(x), int(y)


def assert_consistent(c: Cluster, key_id: str) -> list[str]:
    """Every node's store agrees (module header); returns the names holding the key."""
    metas = {name: c.status(name, key_id) for name in c.names}
    assert all(not c.pending_records(name) for name in c.names)
    assert all(m is None or m["status"] in ("active", "destroyed") for m in metas.values()), {
        n: m and m["status"] for n, m in metas.items()
    }
    active = sorted(n for n, m in metas.items() if m is not None and m["status"] == "active")
    if not active:
        return []
    first = metas[active[0]]
    assert first is not None
    public = ("pkG1", "pkG2", "holders", "publicShares", "transcriptHash", "t")
    for name in active:
        meta = metas[name]
        assert meta is not None and all(meta[f] == first[f] for f in public)
    holders = [c.layout.nodes[i - 1].name for i in first["holders"]]
    assert holders == active  # active exactly on the certificate's holders
    shares = {int(i): p for i, p in first["publicShares"].items()}
    pk = bytes.fromhex(first["pkG1"])
    want = (int.from_bytes(pk[:32], "big"), int.from_bytes(pk[32:], "big"))
    chosen = dict(sorted(shares.items())[: first["t"]])
    assert interpolate(chosen) == want
    assert interpolate(dict(list(chosen.items())[:-1])) != want
    return active


def make_cluster(root: Path, nodes: int, threshold: int) -> Cluster:
    r = tkms("cluster", "init", "--cluster-dir", str(root), "--nodes", str(nodes),
             "--threshold", str(threshold), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    layout = launcher.ClusterLayout.load(root)
    c = Cluster(root, layout, layout.api_key_file.read_text().strip())
    c.up()
    return c


def tear_down(root: Path) -> None:
    tkms("cluster", "down", "--cluster-dir", str(root), timeout=120)
    for proc in Path("/proc").iterdir():  # whatever survived
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(root).encode() in cmdline and int(proc.name) != os.getpid():
                os.kill(int(proc.name), signal.SIGKILL)


@pytest.fixture(scope="module")
def five(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("dkg5") / "cluster"
    try:
        yield make_cluster(root, 5, 3)
    finally:
        tear_down(root)


class Ceremony:
    """``POST /v1/dkg`` in a thread, while the test watches the progress."""

    def __init__(self, c: Cluster, body: dict[str, Any]) -> None:
        self.c, self.body = c, body
        self.result: tuple[int, Any] | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.c.http("POST", "/v1/dkg", self.body)
        except OSError as exc:  # the coordinator was killed under the request
            self.result = (0, {"error": str(exc)})

    def wait_phase(self, phase: str, answers: int = 0, timeout: float = 60) -> None:
        """Return once the ceremony is in ``phase`` and ``answers`` nodes answered in it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code, doc = self.c.http("GET", f"/v1/dkg/{self.body['keyId']}")
            if code == 200 and doc["phase"] == phase:
                got = [
                    e for e in doc["events"] if e["phase"] == phase and "answered" in e["message"]
                ]
                if len(got) >= answers:
                    return
            assert code in (200, 404), doc
            time.sleep(0.005)
        raise AssertionError(f"phase {phase} never seen")

    def join(self) -> tuple[int, Any]:
        self.thread.join(timeout=180)
        assert self.result is not None
        return self.result


# -- honest ceremonies ---------------------------------------------------------------------


def test_honest_3_of_5_through_the_cli(five: Cluster) -> None:
    r = five.dkg("--key-id", "k35", "--json")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1
    out = json.loads(r.stdout)
    assert out["holders"] == five.names and out["threshold"] == 3
    assert {"keyId", "pubkeyG1", "pubkeyG2", "operatorId", "holders", "transcript"} <= set(out)
    for phase in ("open", "deal", "echo", "complain", "sign", "committed"):
        assert f" {phase} " in r.stderr or f"] {phase}" in r.stderr, phase
    assert assert_consistent(five, "k35") == five.names
    path = Path(out["transcript"])
    assert path == five.root / "transcripts" / "k35-1.json"
    verify = tkms("dkg", "verify", str(path), "--cluster-dir", str(five.root), "--json")
    assert verify.returncode == 0, verify.stderr
    check = json.loads(verify.stdout)
    assert check["valid"] and check["keyId"] == "k35" and check["qual"] == [1, 2, 3, 4, 5]
    assert check["pubkeyG1"] == out["pubkeyG1"]
    # every node stored the same transcript, the coordinator serves it
    stored = {
        (five.root / "nodes" / n / "keys/k35/transcript-1.bin").read_bytes() for n in five.names
    }
    assert len(stored) == 1
    assert json.loads(path.read_text())["transcript"] == stored.pop().hex()


def test_one_changed_byte_fails_verify(five: Cluster) -> None:
    path = five.root / "transcripts" / "k35-1.json"
    raw = (five.root / "nodes/node2/keys/k35/transcript-1.bin").read_bytes()
    doc = json.loads(path.read_text())
    cases: list[bytes] = []
    for offset in (40, len(raw) // 3, len(raw) // 2, len(raw) - 70, len(raw) - 1):
        tampered = bytearray(raw)
        tampered[offset] ^= 0x01
        cases.append(bytes(tampered))
    hexed = doc["transcript"]
    i = len(hexed) // 2
    flipped = hexed[:i] + ("1" if hexed[i] != "1" else "2") + hexed[i + 1 :]
    cases.append(json.dumps({**doc, "transcript": flipped}).encode())
    cases.append(path.read_bytes().replace(b'"epoch": 1', b'"epoch": 2'))
    for n, data in enumerate(cases):
        bad = path.with_name(f"tampered-{n}.json")
        bad.write_bytes(data)
        r = tkms("dkg", "verify", str(bad), "--cluster-dir", str(five.root), "--json")
        check = json.loads(r.stdout)
        assert r.returncode == 1 and check["valid"] is False and check["reason"], (n, check)


def test_refusals_over_http_and_cli(five: Cluster) -> None:
    code, doc = five.http("POST", "/v1/dkg", {"keyId": "k35", "threshold": 3})
    assert code == 409 and doc["error"]["code"] == "key_exists"
    for body, field in (
        ({"keyId": "kx", "threshold": 1}, "threshold"),
        ({"keyId": "kx", "threshold": 3, "minHolders": 2}, "minHolders"),
        ({"keyId": "kx", "threshold": 6}, "threshold"),
        ({"keyId": "kx"}, None),
        ({"keyId": "kx", "threshold": 3, "extra": 1}, None),
    ):
        code, doc = five.http("POST", "/v1/dkg", body)
        assert code == 400, (body, doc)
        assert field is None or doc["error"].get("field") == field, doc
    r = five.dkg("--key-id", "k35", "--json")
    assert r.returncode == 2 and r.stdout == "" and "key_exists" in r.stderr
    assert five.status("node1", "kx") is None


# -- a node dies --------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["deal", "sign"])
def test_a_node_sigkilled_mid_ceremony(five: Cluster, phase: str) -> None:
    key_id = f"nk-{phase}"
    victim = "node5"
    ceremony = Ceremony(five, {"keyId": key_id, "threshold": 3, "minHolders": 4})
    ceremony.wait_phase(phase)
    os.kill(five.pid(victim), signal.SIGKILL)
    code, doc = ceremony.join()
    assert code in (201, 502), doc
    if code == 201:
        assert victim not in doc["holders"] or phase == "sign"
    else:
        assert doc["error"]["code"] == "ceremony_aborted"
    # the node comes back; the coordinator resolves whatever it still holds
    five.up()
    wait_for("no pending share", lambda: not five.pending_records(victim), 30)
    wait_for("settled", lambda: (five.status(victim, key_id) or {}).get("status") != "pending")
    active = assert_consistent(five, key_id)
    assert active == (doc["holders"] if code == 201 else [])
    _, progress = five.http("GET", f"/v1/dkg/{key_id}")
    if victim not in active:
        assert any("node5 dropped" in e["message"] for e in progress["events"]), progress


# -- the coordinator dies -------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["echo", "sign"])
def test_coordinator_sigkilled_mid_ceremony_then_restarted(five: Cluster, phase: str) -> None:
    key_id = f"ck-{phase}"
    ceremony = Ceremony(five, {"keyId": key_id, "threshold": 3})
    ceremony.wait_phase(phase)
    stopped = five.pid("node5")
    if phase == "sign":  # node5 cannot vote: the others seal pending shares, no commit
        os.kill(stopped, signal.SIGSTOP)
        ceremony.wait_phase(phase, answers=2)
    os.kill(five.pid("coordinator"), signal.SIGKILL)
    os.kill(stopped, signal.SIGCONT)
    code, _ = ceremony.join()
    assert code == 0  # the connection died with the coordinator
    time.sleep(1.0)  # nodes finish the calls they had started; nobody drives them now
    before = {n: (five.status(n, key_id) or {}).get("status") for n in five.names}
    certificate = "active" in before.values() or any(
        '"committing"' in (five.root / "nodes" / n / "dkg/pending" / r).read_text()
        for n in five.names
        for r in five.pending_records(n)
    )
    if phase == "sign":
        assert "pending" in before.values(), before  # votes cast: shares sealed
    five.up()  # a new coordinator process: it resolves the ceremony as sessions come up
    wait_for(
        "resolved",
        lambda: all(
            not five.pending_records(n)
            and (five.status(n, key_id) or {}).get("status") != "pending"
            for n in five.names
        ),
    )
    active = assert_consistent(five, key_id)
    assert bool(active) == certificate  # roll forward iff a certificate existed
    if not active:
        for name in five.names:  # pending shares were destroyed with their token keys
            if five.status(name, key_id) is not None:
                assert f"tkms/share/{key_id}/1" not in five.token_labels(name)
        # and the key id can be used again
        r = five.dkg("--key-id", key_id, "--json")
        assert r.returncode == 0, r.stderr
        assert assert_consistent(five, key_id) == five.names
    code, doc = five.http("GET", f"/v1/keys/{key_id}")
    assert code == 200 and doc["status"] == "active"


def test_restarted_coordinator_reverifies_transcripts(five: Cluster) -> None:
    copies = {n: five.root / "nodes" / n / "keys/k35/transcript-1.bin" for n in five.names}
    original = copies["node1"].read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0x01
    log = five.root / "run/coordinator.log"

    def restart_coordinator() -> str:
        launcher.stop_process(five.layout, "coordinator")
        offset = log.stat().st_size
        five.up()
        return log.read_bytes()[offset:].decode(errors="replace")

    try:
        copies["node1"].write_bytes(bytes(tampered))  # one holder's copy is bad
        text = restart_coordinator()
        code, doc = five.http("GET", "/v1/keys/k35")
        assert code == 200 and doc["status"] == "active"  # a good copy proves the key
        assert "the transcript held by node1 is rejected" in text
        for path in copies.values():  # every copy is bad: the key is not served
            path.write_bytes(bytes(tampered))
        text = restart_coordinator()
        code, doc = five.http("GET", "/v1/keys/k35")
        assert code == 404, doc
        assert "key k35 left out of the registry: rejected: transcript" in text
    finally:
        for path in copies.values():
            path.write_bytes(original)
    restart_coordinator()
    code, doc = five.http("GET", "/v1/keys/k35")
    assert code == 200 and doc["status"] == "active" and doc["holders"] == five.names


# -- 5 of 7 ----------------------------------------------------------------------------------


def test_honest_5_of_7(tmp_path: Path) -> None:
    root = tmp_path / "cluster7"
    try:
        seven = make_cluster(root, 7, 5)
        r = seven.dkg("--key-id", "k57", "--json")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["threshold"] == 5 and out["n"] == 7 and out["holders"] == seven.names
        assert assert_consistent(seven, "k57") == seven.names
        code, doc = seven.http("GET", "/v1/keys/k57/transcript")
        assert code == 200 and doc["qual"] == [1, 2, 3, 4, 5, 6, 7]
    finally:
        tear_down(root)

"""EigenLayer integration on a real local cluster (5 SoftHSM2-backed node processes
and a coordinator, 3-of-5): every vector of tests/vectors/eigenlayer_bn254.json is
imported from keystores of both formats with ``tkms key import`` (and the real
cerberus test keystore), signed through the HTTP API, ``tkms sign`` and the
cerberus gRPC API (a real grpcio client), and compared bit for bit; the registration
vector through ``tkms avs register-params``; bad keystores leave no trace on any
node; an import a node rejects is aborted everywhere; an existing key id is refused.
One cluster for the whole module."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from Crypto.Hash import keccak

from protocol.audit import decode_line, split_lines
from protocol.bn254 import R, g1_mul_generator
from protocol.encoding import g1_from_json, g1_to_compressed
from protocol.import_json import bundle_to_json, opens_from_json
from protocol.import_split import check_opens, seal_bundle, split_key
from protocol.key_import import verify_import_transcript
from protocol.keystore import encrypt_eigensdk_keystore, encrypt_eip2335_keystore
from protocol.manifest import Manifest, parse_manifest
from protocol.rng import os_rng
from tests.cluster.processes import processes_mentioning
from tests.protocol.official_protobuf import official_modules

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "tests" / "vectors"
N, T = 5, 3
PASSWORD = "correct horse battery staple"
FORMATS = ("eigensdk", "eip2335")
NO_PROXY = [("grpc.enable_http_proxy", 0)]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TKMS_", "SOFTHSM2_"))}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def tkms(
    *args: str, password: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    extra = {"TKMS_KEYSTORE_PASSWORD": password} if password is not None else {}
    r = subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        env=_env(**extra),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert r.returncode == 0, f"tkms {' '.join(args)}: {r.stderr}"
    return r


def tkms_json(*args: str, password: str | None = None) -> dict[str, Any]:
    r = tkms(*args, "--json", password=password)
    assert r.stdout.count("\n") == 1, r.stdout  # exactly one JSON object on stdout
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


@dataclass
class Cluster:
    root: Path
    http: str
    grpc: str
    api_key: str
    manifest: Manifest

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://{self.http}{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.api_key}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def node_dir(self, name: str) -> Path:
        return self.root / "nodes" / name

    def audit_records(self, name: str) -> list[Any]:
        lines, _tail = split_lines((self.node_dir(name) / "audit.log").read_bytes())
        return [decode_line(line) for line in lines]

    def cli(self, *args: str) -> tuple[str, ...]:
        return (*args, "--cluster-dir", str(self.root))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("eigen") / "cluster"
    try:
        tkms_json(
            "cluster", "init", "--nodes", str(N), "--threshold", str(T), "--cluster-dir", str(root)
        )
        status = tkms_json("cluster", "up", "--cluster-dir", str(root))
        yield Cluster(
            root=root,
            http=status["endpoints"]["http"],
            grpc=status["endpoints"]["grpc"],
            api_key=Path(status["apiKeyFile"]).read_text().strip(),
            manifest=parse_manifest((root / "manifest.toml").read_text()),
        )
    finally:
        tkms("cluster", "down", "--cluster-dir", str(root), check=False)
        for pid in processes_mentioning(str(root)):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / "eigenlayer_bn254.json").read_text())
    return data


def write_keystore(directory: Path, sk: int, fmt: str, name: str) -> Path:
    if fmt == "eigensdk":
        doc = encrypt_eigensdk_keystore(sk, PASSWORD, scrypt_n=16)
    else:
        doc = encrypt_eip2335_keystore(sk, PASSWORD, scrypt_n=16)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path


def dec(point: dict[str, Any]) -> dict[str, Any]:
    """A vector point ({"dec", "hex"} numbers) in the API's decimal-string form."""
    if isinstance(point["X"], list):
        return {c: [v["dec"] for v in point[c]] for c in ("X", "Y")}
    return {c: point[c]["dec"] for c in ("X", "Y")}


@pytest.fixture(scope="module")
def imported(cluster: Cluster, vectors: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every signature vector's key imported from a keystore of each format, and the
    real cerberus test keystore; key id -> (vector, tkms key import --json)."""
    keystores = cluster.root / "keystores"
    keystores.mkdir()
    jobs: list[tuple[str, Path, str, dict[str, Any]]] = []
    for v in vectors["signatureVectors"]:
        for fmt in FORMATS:
            key_id = f"{v['id']}-{fmt}"
            sk = int(v["privateKey"]["dec"])
            jobs.append((key_id, write_keystore(keystores, sk, fmt, key_id), PASSWORD, v))
    third = json.loads((VECTORS / "keystores" / "third_party.json").read_text())
    real = next(k for k in third["keystores"] if k.get("secretVector") == "cerberus-key-somedata")
    vec = next(v for v in vectors["signatureVectors"] if v["id"] == real["secretVector"])
    jobs.append(
        ("cerberus-real-keystore", VECTORS / "keystores" / real["file"], real["password"], vec)
    )

    def run(job: tuple[str, Path, str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        key_id, path, password, v = job
        out = tkms_json(
            *cluster.cli("key", "import", "--key-id", key_id, "--keystore", str(path)),
            password=password,
        )
        return key_id, {"vector": v, "out": out}

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(run, jobs))


def test_imports_keep_the_public_keys_and_operator_ids(
    cluster: Cluster, imported: dict[str, dict[str, Any]]
) -> None:
    assert len(imported) == 13
    names = [n.name for n in cluster.manifest.nodes]
    for key_id, item in imported.items():
        v, out = item["vector"], item["out"]
        assert out["keyId"] == key_id
        assert out["pubkeyG1"] == dec(v["pubkeyG1"])
        assert out["pubkeyG2"] == dec(v["pubkeyG2"])
        assert out["operatorId"] == v["encodings"]["operatorId"]
        assert out["holders"] == names and (out["threshold"], out["n"]) == (T, N)
        transcript = Path(out["transcript"])
        assert transcript == cluster.root / "transcripts" / f"{key_id}-0.json"
        check = verify_import_transcript(transcript.read_bytes(), cluster.manifest)
        assert check.valid and check.key_id == key_id, check.reason
    offline = tkms_json(*cluster.cli("dkg", "verify", out["transcript"]))
    assert (
        offline["valid"] and offline["keyId"] == out["keyId"] and offline["qual"] == [1, 2, 3, 4, 5]
    )
    status, doc = cluster.request("GET", "/v1/keys")
    assert status == 200
    states = {k["keyId"]: k["status"] for k in doc["keys"]}
    assert all(states[k] == "active" for k in imported)
    for name in names:  # nothing pending, no import record left behind
        assert list((cluster.node_dir(name) / "imports").glob("*")) == []


def test_sign_every_vector_over_http_cli_and_grpc(
    cluster: Cluster, imported: dict[str, dict[str, Any]]
) -> None:
    def http_sign(key_id: str) -> dict[str, Any]:
        v = imported[key_id]["vector"]
        status, doc = cluster.request("POST", f"/v1/keys/{key_id}/sign", {"msgHash": v["msgHash"]})
        assert status == 200, doc
        return dict(doc)

    def cli_sign(key_id: str) -> dict[str, Any]:
        v = imported[key_id]["vector"]
        return tkms_json(*cluster.cli("sign", "--key-id", key_id, "--msg-hash", v["msgHash"]))

    with ThreadPoolExecutor(max_workers=4) as pool:
        over_http = dict(zip(imported, pool.map(http_sign, imported), strict=True))
        over_cli = dict(zip(imported, pool.map(cli_sign, imported), strict=True))
    for key_id, item in imported.items():
        want = item["vector"]["avsSignature"]
        for doc in (over_http[key_id], over_cli[key_id]):
            assert {k: doc[k] for k in want} == want, key_id
            assert doc["keyId"] == key_id and len(doc["signers"]) == T

    pb = official_modules()
    channel = grpc.insecure_channel(cluster.grpc, options=NO_PROXY)
    try:
        sign = channel.unary_unary(
            "/signer.v1.Signer/SignGeneric",
            request_serializer=pb["signer"].SignGenericRequest.SerializeToString,
            response_deserializer=pb["signer"].SignGenericResponse.FromString,
        )
        meta = channel.unary_unary(
            "/keymanager.v1.KeyManager/GetKeyMetadata",
            request_serializer=pb["keymanager"].GetKeyMetadataRequest.SerializeToString,
            response_deserializer=pb["keymanager"].GetKeyMetadataResponse.FromString,
        )
        listing = channel.unary_unary(
            "/keymanager.v1.KeyManager/ListKeys",
            request_serializer=pb["keymanager"].ListKeysRequest.SerializeToString,
            response_deserializer=pb["keymanager"].ListKeysResponse.FromString,
        )
        auth = (("authorization", cluster.api_key),)
        listed = listing(pb["keymanager"].ListKeysRequest(), metadata=auth, timeout=30)
        listed_g1 = {k.public_key_g1 for k in listed.public_keys}
        for v in {item["vector"]["id"]: item["vector"] for item in imported.values()}.values():
            enc = v["encodings"]
            g1_hex = enc["pubkeyG1GnarkCompressed32"].removeprefix("0x")
            assert enc["cerberusSignGeneric"]["request"]["public_key_g1"] == g1_hex
            assert g1_hex in listed_g1
            got = meta(pb["keymanager"].GetKeyMetadataRequest(public_key_g1=g1_hex), timeout=30)
            assert got.public_key_g1 == g1_hex
            assert got.public_key_g2 == enc["pubkeyG2GnarkCompressed64"].removeprefix("0x")
            data = bytes.fromhex(v["msgHash"].removeprefix("0x"))
            if v["id"] == "cerberus-key-somedata":  # the short data cerberus' own test sends
                data = data.rstrip(b"\0")
                assert data == b"somedata"
            request = pb["signer"].SignGenericRequest(
                public_key_g1=g1_hex, data=data, password="ignored"
            )
            reply = sign(request, metadata=auth, timeout=30)
            assert reply.signature.hex() == enc["cerberusSignGeneric"]["response"]["signature"]
            assert "0x" + reply.signature.hex() == enc["sigmaRaw64"]
    finally:
        channel.close()


def test_registration_params_reproduce_the_vector(
    cluster: Cluster, vectors: dict[str, Any]
) -> None:
    v = vectors["registrationVectors"][0]
    path = write_keystore(cluster.root, int(v["privateKey"]["dec"]), "eigensdk", "registration")
    out = tkms_json(
        *cluster.cli("key", "import", "--key-id", v["id"], "--keystore", str(path)),
        password=PASSWORD,
    )
    assert out["operatorId"] == v["operatorId"]
    doc = tkms_json(
        *cluster.cli(
            "avs", "register-params", "--key-id", v["id"], "--operator", v["operator"],
            "--registry-coordinator", v["registryCoordinator"], "--chain-id", str(v["chainId"]),
        )
    )  # fmt: skip
    assert doc == {
        "pubkeyRegistrationParams": v["pubkeyRegistrationParams"],
        "abi": v["pubkeyRegistrationParamsAbiEncoded"],
        "messageHash": v["calculatePubkeyRegistrationMessageHash"],
    }
    sig = v["pubkeyRegistrationSignature"]
    assert doc["pubkeyRegistrationParams"]["pubkeyRegistrationSignature"] == dec(sig)
    # cerberus' SignG1 on the already hashed message point: the same threshold signature
    point, pb = v["pubkeyRegistrationMessageHash"], official_modules()["signer"]
    raw = bytes.fromhex(point["X"]["hex"][2:] + point["Y"]["hex"][2:])
    g1_hex = g1_to_compressed(g1_from_json(dec(v["pubkeyG1"]), field="pk")).hex()
    channel = grpc.insecure_channel(cluster.grpc, options=NO_PROXY)
    try:
        sign_g1 = channel.unary_unary(
            "/signer.v1.Signer/SignG1",
            request_serializer=pb.SignG1Request.SerializeToString,
            response_deserializer=pb.SignG1Response.FromString,
        )
        request = pb.SignG1Request(public_key_g1=g1_hex, data=raw)
        reply = sign_g1(request, metadata=(("authorization", cluster.api_key),), timeout=30)
    finally:
        channel.close()
    assert reply.signature.hex() == sig["X"]["hex"][2:] + sig["Y"]["hex"][2:]


# -- bad keystores ------------------------------------------------------------------


def _keccak(data: bytes) -> bytes:
    h = keccak.new(digest_bits=256)
    h.update(data)
    return h.digest()


def _with_secret(doc: dict[str, Any], fmt: str, secret: int, old: int) -> dict[str, Any]:
    """``doc`` re-encrypted (same KDF, IV) to hold ``secret`` (0 or >= r) with a valid
    MAC/checksum: the KDF output is derived here, as any tool would."""
    crypto = doc["crypto"]
    if fmt == "eigensdk":
        params, ct_hex = crypto["kdfparams"], crypto["ciphertext"]
        password = PASSWORD.encode()
    else:
        params, ct_hex = crypto["kdf"]["params"], crypto["cipher"]["message"]
        password = PASSWORD.encode()  # ASCII: NFKD and control stripping change nothing
    dk = hashlib.scrypt(
        password, salt=bytes.fromhex(params["salt"]), n=params["n"], r=params["r"],
        p=params["p"], dklen=32,
    )  # fmt: skip
    ct = bytes.fromhex(ct_hex)
    flip = (old ^ secret).to_bytes(32, "big")
    new_ct = bytes(a ^ b for a, b in zip(ct, flip, strict=True))
    if fmt == "eigensdk":
        crypto["ciphertext"] = new_ct.hex()
        crypto["mac"] = _keccak(dk[16:32] + new_ct).hex()
    else:
        crypto["cipher"]["message"] = new_ct.hex()
        crypto["checksum"]["message"] = hashlib.sha256(dk[16:32] + new_ct).hexdigest()
    return doc


def bad_keystores(directory: Path) -> dict[str, tuple[Path, str, str]]:
    """name -> (file, password, what the error must say)."""
    out: dict[str, tuple[Path, str, str]] = {}

    def put(name: str, doc: Any, password: str, says: str) -> None:
        path = directory / f"{name}.json"
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        out[name] = (path, password, says)

    eig = encrypt_eigensdk_keystore(7, PASSWORD, scrypt_n=16)
    eip = encrypt_eip2335_keystore(7, PASSWORD, scrypt_n=16)
    put("bad-password", eig, "not the password", "wrong password")
    put(
        "bad-mac",
        {**eig, "crypto": {**eig["crypto"], "mac": "00" * 32}},
        PASSWORD,
        "wrong password",
    )
    bad_sum = json.loads(json.dumps(eip))
    bad_sum["crypto"]["checksum"]["message"] = "11" * 32
    put("bad-checksum", bad_sum, PASSWORD, "wrong password")
    other = encrypt_eigensdk_keystore(8, PASSWORD, scrypt_n=16)["pubKey"]
    put("bad-pubkey", {**eig, "pubKey": other}, PASSWORD, "does not match")
    put("bad-truncated", json.dumps(eip)[: len(json.dumps(eip)) // 2], PASSWORD, "truncated")
    for fmt, base in (("eigensdk", eig), ("eip2335", eip)):
        zero = _with_secret(json.loads(json.dumps(base)), fmt, 0, 7)
        put(f"bad-zero-{fmt}", zero, PASSWORD, "is zero")
        big = _with_secret(json.loads(json.dumps(base)), fmt, R + 7, 7)
        put(f"bad-r-{fmt}", big, PASSWORD, "group order")
    return out


def test_bad_keystores_leave_no_trace(cluster: Cluster, imported: dict[str, Any]) -> None:
    directory = cluster.root / "bad-keystores"
    directory.mkdir()
    names = [n.name for n in cluster.manifest.nodes]
    before = {n: len(cluster.audit_records(n)) for n in names}
    cases = bad_keystores(directory)
    for name, (path, password, says) in cases.items():
        r = tkms(*cluster.cli("key", "import", "--key-id", name, "--keystore", str(path), "--json"),
                 password=password, check=False)  # fmt: skip
        assert r.returncode == 2, (name, r.stderr)
        assert r.stdout == "" and says in r.stderr, (name, r.stderr)
        assert PASSWORD not in r.stderr
    good = write_keystore(directory, 11, "eip2335", "no-tty")
    r = tkms(*cluster.cli("key", "import", "--key-id", "no-tty", "--keystore", str(good)),
             check=False)  # fmt: skip
    assert r.returncode == 2 and "TKMS_KEYSTORE_PASSWORD" in r.stderr
    status, doc = cluster.request("GET", "/v1/keys")
    assert status == 200
    listed = {k["keyId"] for k in doc["keys"]}
    assert not listed & {*cases, "no-tty"}
    for name in names:  # no share delivered: no record, no key directory, no pending
        records = cluster.audit_records(name)[before[name] :]
        assert not [r for r in records if r.event.startswith("key.import")], name
        for kid in (*cases, "no-tty"):
            assert not (cluster.node_dir(name) / "keys" / kid).exists()
        assert list((cluster.node_dir(name) / "imports").glob("*")) == []


def test_existing_key_ids_are_never_overwritten(
    cluster: Cluster, imported: dict[str, dict[str, Any]]
) -> None:
    key_id = "sk1-zero-msg-eigensdk"
    path = write_keystore(cluster.root, 12345, "eigensdk", "overwrite")
    r = tkms(*cluster.cli("key", "import", "--key-id", key_id, "--keystore", str(path), "--json"),
             password=PASSWORD, check=False)  # fmt: skip
    assert r.returncode == 2 and "key_exists" in r.stderr
    status, key = cluster.request("GET", f"/v1/keys/{key_id}")
    assert status == 200 and key["status"] == "active"
    assert key["pubkeyG1"] == imported[key_id]["out"]["pubkeyG1"]


def test_an_import_a_node_rejects_is_aborted_everywhere(cluster: Cluster) -> None:
    key_id = "rejected-import"
    status, opening = cluster.request("POST", "/v1/keys/import/open", {"keyId": key_id})
    assert status == 200, opening
    opens = check_opens(
        opens_from_json(opening), manifest=cluster.manifest, key_id=key_id, epoch=0, min_holders=N
    )
    split = split_key(
        4242, g1_mul_generator(4242), threshold=T, indices=range(1, N + 1), rng=os_rng
    )
    bundle = seal_bundle(
        split, opens, manifest=cluster.manifest, key_id=key_id, epoch=0, rng=os_rng
    )
    split.forget()
    body = bundle_to_json(bundle)
    shares = body["shares"]
    body["shares"] = [*shares[:-1], {**shares[-1], "ciphertext": shares[0]["ciphertext"]}]
    status, doc = cluster.request("POST", "/v1/keys/import", body)
    assert status == 502 and doc["error"]["code"] == "ceremony_aborted", doc
    last = cluster.manifest.nodes[-1].name
    assert doc["error"]["missed"] == [last]
    for entry in cluster.manifest.nodes:  # nothing active, nothing pending, no share file
        key_dir = cluster.node_dir(entry.name) / "keys" / key_id
        assert not list(key_dir.glob("share-*.sealed")), entry.name
        if key_dir.exists():
            latest = sorted(key_dir.glob("meta-*.json"))[-1]
            assert json.loads(latest.read_text())["metadata"]["status"] == "destroyed"
        assert list((cluster.node_dir(entry.name) / "imports").glob("*")) == []
    outcomes = {r.outcome for r in cluster.audit_records(last) if r.key_id == key_id}
    assert "rejected" in outcomes and "active" not in outcomes
    status, key = cluster.request("GET", f"/v1/keys/{key_id}")
    assert status == 404 or key["status"] == "destroyed"

"""Keystore import: both formats against the EigenLayer vectors and third-party files."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from Crypto.Cipher import AES
from Crypto.Hash import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.bn254 import G1, R
from protocol.errors import Fault, InvalidScalar
from protocol.keystore import (
    ImportedKey,
    KdfLimits,
    KdfParamsOutOfBounds,
    KeystoreError,
    KeystoreSecretOutOfRange,
    MalformedKeystore,
    PubkeyMismatch,
    SecretBytes,
    UnsupportedKeystore,
    WrongPassword,
    decrypt_eigensdk_keystore,
    decrypt_eip2335_keystore,
    decrypt_eip2335_secret,
    decrypt_keystore,
    eip2335_password,
    encrypt_eigensdk_keystore,
    encrypt_eip2335_keystore,
    g1_from_compressed,
    parse_eigensdk_pubkey,
)
from protocol.rng import seeded_rng

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
EIGEN = json.loads((VECTORS / "eigenlayer_bn254.json").read_text())
SIG_VECTORS = EIGEN["signatureVectors"]
THIRD_PARTY = json.loads((VECTORS / "keystores" / "third_party.json").read_text())
FAST_N = 1024  # scrypt cost for the many round trips (the formats allow any power of two)
PASSWORD = "correct horse battery staple"


def vec_sk(v: dict[str, Any]) -> int:
    return int(v["privateKey"]["dec"])


def vec_pk(v: dict[str, Any]) -> G1:
    return G1(int(v["pubkeyG1"]["X"]["dec"]), int(v["pubkeyG1"]["Y"]["dec"]))


def vector(vid: str) -> dict[str, Any]:
    (v,) = [v for v in SIG_VECTORS if v["id"] == vid]
    return v


# ----------------------------------------------------- vectors, both formats


@pytest.mark.parametrize("v", SIG_VECTORS, ids=[v["id"] for v in SIG_VECTORS])
def test_every_vector_key_round_trips_through_both_formats(v: dict[str, Any]) -> None:
    sk, enc = vec_sk(v), v["encodings"]
    rng = seeded_rng(v["id"].encode())

    eig = encrypt_eigensdk_keystore(sk, PASSWORD, rng, scrypt_n=FAST_N)
    assert eig["pubKey"] == enc["eigensdkGoKeystorePubKey"]  # the vector, not our output
    got = decrypt_keystore(json.dumps(eig).encode(), PASSWORD)
    assert got.format == "eigensdk" and got.secret_scalar() == sk and got.pubkey_g1 == vec_pk(v)
    assert got.small_secret == (sk < 2**128)

    for kdf in ("scrypt", "pbkdf2"):
        ks = encrypt_eip2335_keystore(sk, PASSWORD, rng, kdf=kdf, scrypt_n=FAST_N, pbkdf2_c=2048)
        assert ks["pubkey"] == enc["pubkeyG1GnarkCompressed32"].removeprefix("0x")
        assert ks["curve"] == "bn254" and ks["crypto"]["kdf"]["function"] == kdf
        got = decrypt_keystore(json.dumps(ks), PASSWORD)
        assert got.format == "eip2335" and got.secret_scalar() == sk
        assert got.pubkey_g1 == vec_pk(v)

    # The decoders read the vectors' own encodings.
    assert parse_eigensdk_pubkey(enc["eigensdkGoKeystorePubKey"]) == vec_pk(v)
    compressed = bytes.fromhex(enc["pubkeyG1GnarkCompressed32"].removeprefix("0x"))
    assert g1_from_compressed(compressed) == vec_pk(v)


def test_one_keystore_at_the_real_scrypt_cost() -> None:
    v = vector("large-key-msg-all-ff")
    ks = encrypt_eigensdk_keystore(vec_sk(v), PASSWORD, seeded_rng(b"real n"))
    assert ks["crypto"]["kdfparams"] == {**ks["crypto"]["kdfparams"], "n": 262144, "r": 8, "p": 1}
    assert decrypt_keystore(json.dumps(ks), PASSWORD).secret_scalar() == vec_sk(v)


# ------------------------------------------------------- third-party files


def third_party(fmt: str) -> list[dict[str, Any]]:
    return [e for e in THIRD_PARTY["keystores"] if e["format"] == fmt]


def test_eigensdk_go_own_test_keystore_decrypts() -> None:
    (entry,) = third_party("eigensdk")
    data = (VECTORS / "keystores" / entry["file"]).read_bytes()
    key = decrypt_keystore(data, entry["password"])
    assert key.format == "eigensdk"
    assert key.secret_scalar() == int(entry["secretDec"])
    with pytest.raises(WrongPassword):
        decrypt_keystore(data, entry["password"] + "x")


def test_cerberus_test_keystore_decrypts_to_the_vector_key() -> None:
    (entry,) = third_party("eip2335")
    data = (VECTORS / "keystores" / entry["file"]).read_bytes()
    v = vector(entry["secretVector"])
    key = decrypt_keystore(data, entry["password"])
    assert key.format == "eip2335" and key.secret_scalar() == vec_sk(v)
    assert key.pubkey_g1 == vec_pk(v)
    assert json.loads(data)["pubkey"] == v["encodings"]["pubkeyG1GnarkCompressed32"][2:]


@pytest.mark.parametrize("entry", third_party("eip2335-bls12-381"), ids=lambda e: e["file"])
def test_eip2335_official_vectors_decrypt_but_are_not_bn254(entry: dict[str, Any]) -> None:
    data = (VECTORS / "keystores" / entry["file"]).read_bytes()
    secret = decrypt_eip2335_secret(data, entry["password"])
    assert secret.reveal() == bytes.fromhex(entry["secretHex"])
    with pytest.raises(UnsupportedKeystore) as exc:
        decrypt_keystore(data, entry["password"])
    assert exc.value.field == "curve"


# ---------------------------------------------------------- bad keystores

V69 = vector("sk69-hello-world")
EIG = encrypt_eigensdk_keystore(vec_sk(V69), PASSWORD, seeded_rng(b"eig"), scrypt_n=16)
E2335 = encrypt_eip2335_keystore(vec_sk(V69), PASSWORD, seeded_rng(b"e2335"), scrypt_n=16)
E2335_PBKDF2 = encrypt_eip2335_keystore(
    vec_sk(V69), PASSWORD, seeded_rng(b"p"), kdf="pbkdf2", pbkdf2_c=16
)
BASES = {"eigensdk": EIG, "eip2335": E2335, "eip2335-pbkdf2": E2335_PBKDF2}


def edit(base: dict[str, Any], path: str, value: object = KeyError) -> dict[str, Any]:
    """A deep copy of ``base`` with ``path`` (dotted) set to ``value`` (KeyError: deleted)."""
    out = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return out


def raises(err: type[KeystoreError], ks: Any, password: str = PASSWORD) -> KeystoreError:
    with pytest.raises(err) as exc:
        decrypt_keystore(ks if isinstance(ks, bytes | str) else json.dumps(ks), password)
    assert exc.value.fault is Fault.CLIENT
    return exc.value


def test_wrong_password_is_one_message_without_detail() -> None:
    messages = set()
    for base in BASES.values():
        messages.add(str(raises(WrongPassword, base, "not the password")))
    messages.add(str(raises(WrongPassword, edit(EIG, "crypto.mac", "00" * 32))))
    messages.add(str(raises(WrongPassword, edit(EIG, "crypto.ciphertext", "11" * 32))))
    messages.add(str(raises(WrongPassword, edit(E2335, "crypto.checksum.message", "00" * 32))))
    messages.add(str(raises(WrongPassword, edit(EIG, "crypto.kdfparams.salt", "33" * 32))))
    assert messages == {"keystore: wrong password or altered keystore"}


def test_altered_iv_is_caught_by_the_public_key_check() -> None:
    # Neither format's MAC covers the IV: a changed IV decrypts to another secret,
    # which the range check (most such values are >= r) or the check against the
    # stated public key refuses.
    for ks in (
        edit(E2335, "crypto.cipher.params.iv", "22" * 16),
        edit(EIG, "crypto.cipherparams.iv", "22" * 16),
    ):
        err = raises(KeystoreError, ks)
        assert isinstance(err, PubkeyMismatch | KeystoreSecretOutOfRange)


def test_mismatched_public_key() -> None:
    other = vector("eigensdk-rs-key-bytes-1-to-32")["encodings"]
    err = raises(PubkeyMismatch, edit(EIG, "pubKey", other["eigensdkGoKeystorePubKey"]))
    assert err.field == "pubKey"
    err = raises(
        PubkeyMismatch, edit(E2335, "pubkey", other["pubkeyG1GnarkCompressed32"].removeprefix("0x"))
    )
    assert err.field == "pubkey"
    # The negated key (same X, other Y flag) is another key too.
    neg = bytearray.fromhex(E2335["pubkey"])
    neg[0] ^= 0x40
    raises(PubkeyMismatch, edit(E2335, "pubkey", neg.hex()))


def test_truncated_or_not_json() -> None:
    text = json.dumps(EIG)
    for cut in (0, 1, len(text) // 2, len(text) - 1):
        assert raises(MalformedKeystore, text[:cut]).field == "keystore"
    raises(MalformedKeystore, "[1, 2]")
    raises(MalformedKeystore, b"\xff\xfe{}")
    raises(MalformedKeystore, "[" * 100_000 + "]" * 100_000)  # too large
    deep = raises(MalformedKeystore, '{"a":' * 5_000 + "1" + "}" * 5_000)
    assert "nested" in deep.reason  # refused before the C decoder recurses
    # Brackets inside strings are not nesting.
    ok = edit(EIG, "description", "[{" * 100 + '\\"[')
    assert decrypt_keystore(json.dumps(ok), PASSWORD).secret_scalar() == 69
    raises(MalformedKeystore, {"crypto": {"something": 1}})
    assert raises(MalformedKeystore, {"description": "x"}).field == "crypto"


@pytest.mark.parametrize(
    ("base", "path"),
    [
        ("eigensdk", "pubKey"),
        ("eigensdk", "crypto.cipherparams.iv"),
        ("eigensdk", "crypto.kdfparams.salt"),
        ("eigensdk", "crypto.kdfparams.n"),
        ("eigensdk", "crypto.mac"),
        ("eigensdk", "crypto.kdf"),
        ("eip2335", "pubkey"),
        ("eip2335", "crypto.kdf.params.salt"),
        ("eip2335", "crypto.kdf.params.dklen"),
        ("eip2335", "crypto.checksum.message"),
        ("eip2335", "crypto.cipher.message"),
        ("eip2335", "crypto.cipher.params"),
        ("eip2335-pbkdf2", "crypto.kdf.params.prf"),
        ("eip2335-pbkdf2", "crypto.kdf.params.c"),
    ],
)
def test_missing_field_is_named(base: str, path: str) -> None:
    err = raises(MalformedKeystore, edit(BASES[base], path))
    assert err.field == path and err.reason == "missing"


def test_wrong_types_and_lengths_are_malformed() -> None:
    assert raises(MalformedKeystore, edit(EIG, "crypto.kdfparams.n", "16")).field.endswith(".n")
    raises(MalformedKeystore, edit(EIG, "crypto.kdfparams.n", 16.0))
    raises(MalformedKeystore, edit(EIG, "crypto.kdfparams.n", True))
    raises(MalformedKeystore, edit(EIG, "crypto.cipherparams.iv", "00" * 15))
    raises(MalformedKeystore, edit(EIG, "crypto.ciphertext", "00" * 33))
    raises(MalformedKeystore, edit(EIG, "crypto.mac", "zz" * 32))
    raises(MalformedKeystore, edit(EIG, "pubKey", ""))
    raises(MalformedKeystore, edit(EIG, "pubKey", "E([0,0])"))  # infinity
    raises(MalformedKeystore, edit(EIG, "pubKey", "E([1,3])"))  # off the curve
    raises(MalformedKeystore, edit(EIG, "pubKey", f"E([1,{2 + 2**254}])"))  # y >= p
    raises(MalformedKeystore, edit(EIG, "pubKey", "E([1, 2])"))
    raises(MalformedKeystore, edit(E2335, "pubkey", "40" + "00" * 31))  # infinity flag
    raises(MalformedKeystore, edit(E2335, "pubkey", "00" * 31 + "01"))  # no flag bits
    raises(MalformedKeystore, edit(E2335, "pubkey", "80" + "00" * 31))  # x = 0: not on curve
    raises(MalformedKeystore, edit(E2335, "pubkey", "bf" + "ff" * 31))  # x >= p
    raises(MalformedKeystore, edit(E2335, "pubkey", E2335["pubkey"][:-2]))
    raises(MalformedKeystore, edit(E2335, "crypto.kdf", "scrypt"))


def test_unsupported_algorithms() -> None:
    raises(UnsupportedKeystore, edit(EIG, "crypto.kdf", "argon2id"))
    raises(UnsupportedKeystore, edit(EIG, "crypto.cipher", "aes-128-cbc"))
    raises(UnsupportedKeystore, edit(E2335, "crypto.kdf.function", "argon2id"))
    raises(UnsupportedKeystore, edit(E2335, "crypto.cipher.function", "aes-256-gcm"))
    raises(UnsupportedKeystore, edit(E2335, "crypto.checksum.function", "sha512"))
    raises(UnsupportedKeystore, edit(E2335_PBKDF2, "crypto.kdf.params.prf", "hmac-sha512"))
    raises(UnsupportedKeystore, edit(E2335, "crypto.kdf.params.dklen", 64))
    raises(UnsupportedKeystore, edit(E2335, "curve", "bls12-381"))


def test_absurd_kdf_parameters_are_refused_before_running() -> None:
    # Each of these would take minutes or tens of GiB if attempted.
    for n in (2**30, 2**21, 3, 1, 0, -16):
        raises(KdfParamsOutOfBounds, edit(EIG, "crypto.kdfparams.n", n))
    raises(KdfParamsOutOfBounds, edit(EIG, "crypto.kdfparams.r", 10**6))
    raises(KdfParamsOutOfBounds, edit(EIG, "crypto.kdfparams.p", 2**40))
    raises(KdfParamsOutOfBounds, edit(EIG, "crypto.kdfparams.r", 0))
    big = edit(edit(EIG, "crypto.kdfparams.n", 2**20), "crypto.kdfparams.r", 16)
    raises(KdfParamsOutOfBounds, big)  # each bound alone is fine, the product is not
    raises(KdfParamsOutOfBounds, edit(E2335, "crypto.kdf.params.n", 2**40))
    raises(KdfParamsOutOfBounds, edit(E2335_PBKDF2, "crypto.kdf.params.c", 10**12))
    raises(KdfParamsOutOfBounds, edit(E2335_PBKDF2, "crypto.kdf.params.c", 0))


def _hand_made(plaintext: bytes, fmt: str) -> dict[str, Any]:
    """A keystore built with the primitives directly (not our encoder) around any bytes."""
    salt, iv = b"\x05" * 32, b"\x06" * 16
    if fmt == "eigensdk":
        dk = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=16, r=8, p=1, dklen=32)
        ct = AES.new(dk[:16], AES.MODE_CTR, nonce=b"", initial_value=iv).encrypt(plaintext)
        mac = keccak.new(digest_bits=256, data=dk[16:32] + ct).hexdigest()
        ks = edit(EIG, "crypto.ciphertext", ct.hex())
        ks = edit(ks, "crypto.mac", mac)
        ks = edit(ks, "crypto.cipherparams.iv", iv.hex())
        return edit(ks, "crypto.kdfparams.salt", salt.hex())
    dk = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=16, r=8, p=1, dklen=32)
    ct = AES.new(dk[:16], AES.MODE_CTR, nonce=b"", initial_value=iv).encrypt(plaintext)
    ks = edit(E2335, "crypto.cipher.message", ct.hex())
    ks = edit(ks, "crypto.checksum.message", hashlib.sha256(dk[16:32] + ct).hexdigest())
    ks = edit(ks, "crypto.cipher.params.iv", iv.hex())
    return edit(ks, "crypto.kdf.params.salt", salt.hex())


@pytest.mark.parametrize("fmt", ["eigensdk", "eip2335"])
def test_secret_zero_or_not_below_r_is_refused(fmt: str) -> None:
    for bad in (0, R, R + 1, 2**256 - 1):
        err = raises(KeystoreSecretOutOfRange, _hand_made(bad.to_bytes(32, "big"), fmt))
        assert isinstance(err, InvalidScalar) and err.field == "secret"
    # The hand-made construction itself is sound: the right secret imports.
    ok = decrypt_keystore(json.dumps(_hand_made((69).to_bytes(32, "big"), fmt)), PASSWORD)
    assert ok.secret_scalar() == 69 and ok.small_secret


def test_encoders_refuse_out_of_range_secrets() -> None:
    for bad in (0, R, -1):
        with pytest.raises(KeystoreSecretOutOfRange):
            encrypt_eigensdk_keystore(bad, PASSWORD, seeded_rng(b"x"), scrypt_n=16)
        with pytest.raises(KeystoreSecretOutOfRange):
            encrypt_eip2335_keystore(bad, PASSWORD, seeded_rng(b"x"), scrypt_n=16)


def test_format_specific_decoders_refuse_the_other_format() -> None:
    with pytest.raises(MalformedKeystore):
        decrypt_eigensdk_keystore(E2335, PASSWORD)
    with pytest.raises(MalformedKeystore):
        decrypt_eip2335_keystore(EIG, PASSWORD)


# ---------------------------------------------------------- secrets stay hidden


def test_reprs_hide_the_secret() -> None:
    v = vector("large-key-msg-all-ff")
    key = decrypt_keystore(
        json.dumps(encrypt_eip2335_keystore(vec_sk(v), "pw", seeded_rng(b"r"), scrypt_n=16)), "pw"
    )
    assert isinstance(key, ImportedKey)
    sk = vec_sk(v)
    for text in (repr(key), str(key), f"{key}"):
        assert str(sk) not in text and hex(sk)[2:] not in text and "hidden" in text
    secret = SecretBytes(sk.to_bytes(32, "big"))
    assert sk.to_bytes(32, "big").hex() not in repr(secret) and "hidden" in str(secret)
    with pytest.raises(TypeError):
        hash(secret)


# -------------------------------------------------------------- passwords


def test_eip2335_password_processing_matches_bn254_keystore_go() -> None:
    # Cases from bn254-keystore-go keystore_test.go TestProcessPassword.
    for given_pw, processed in (
        ("\a", b""),
        ("\b", b""),
        ("\t", b""),
        ("a", b"a"),
        ("abc", b"abc"),
    ):
        assert eip2335_password(given_pw) == processed
    assert eip2335_password("a\bc") == b"ac"
    assert eip2335_password("x\x7fy\x85z\x9f") == b"xyz"  # DEL and C1 go too
    assert eip2335_password("\ufb01") == b"fi"  # NFKD compatibility decomposition


def test_password_rules_differ_between_formats() -> None:
    e2335 = encrypt_eip2335_keystore(69, "pass\x07word\u00e9", seeded_rng(b"a"), scrypt_n=16)
    assert decrypt_keystore(json.dumps(e2335), "password" + "e\u0301").secret_scalar() == 69
    eig = encrypt_eigensdk_keystore(69, "pass\x07word", seeded_rng(b"b"), scrypt_n=16)
    raises(WrongPassword, eig, "password")  # go-ethereum uses the bytes as they are
    assert decrypt_keystore(json.dumps(eig), "pass\x07word").secret_scalar() == 69


# ---------------------------------------------------------------- hypothesis

SMALL = KdfLimits(max_scrypt_n=1024, max_scrypt_work=1 << 16, max_pbkdf2_c=4096)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=80)
    | st.sampled_from(["", "0x", "00" * 16, "00" * 32, "scrypt", "pbkdf2", "aes-128-ctr"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(obj: Any, prefix: str = "") -> list[str]:
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append(prefix + k)
            out += _paths(v, prefix + k + ".")
    return out


@st.composite
def mutated_keystores(draw: st.DrawFn) -> str | bytes:
    base = BASES[draw(st.sampled_from(sorted(BASES)))]
    kind = draw(st.sampled_from(["replace", "delete", "bytes", "truncate"]))
    if kind in ("replace", "delete"):
        path = draw(st.sampled_from(_paths(base)))
        value = KeyError if kind == "delete" else draw(json_values)
        return json.dumps(edit(base, path, value))
    text = json.dumps(base).encode()
    if kind == "truncate":
        return text[: draw(st.integers(0, len(text) - 1))]
    i = draw(st.integers(0, len(text) - 1))
    return text[:i] + bytes([draw(st.integers(0, 255))]) + text[i + 1 :]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_keystores())
def test_mutated_keystores_raise_only_typed_errors(data: str | bytes) -> None:
    try:
        key = decrypt_keystore(data, PASSWORD, limits=SMALL)
    except KeystoreError as exc:
        assert exc.fault is Fault.CLIENT
        assert PASSWORD not in str(exc)
        return
    # Whatever still decrypts is the right key (e.g. an edited description).
    assert key.secret_scalar() == vec_sk(V69) and key.pubkey_g1 == vec_pk(V69)

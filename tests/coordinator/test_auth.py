"""API key store: salted hashes, constant-time comparison, roles, file round trip;
Authorization parsing; IP allowlist; token-bucket rate limiter."""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.auth import (
    ApiKeyStore,
    AuthConfigError,
    IpAllowlist,
    RateLimit,
    RateLimiter,
    StoredKey,
    add_client_to_file,
    api_keys_path,
    new_api_key,
    parse_bearer,
)
from protocol.errors import DecodeError
from protocol.rng import seeded_rng


def test_same_key_hashes_differently_under_two_salts() -> None:
    token = new_api_key()
    a, b = StoredKey.create(token), StoredKey.create(token)
    assert a.lookup == b.lookup
    assert a.salt != b.salt and a.digest != b.digest
    # the stored value is HMAC-SHA256(salt, domain || token), recomputed independently
    expected = hmac.new(a.salt, b"tkms/api-key/v1\x00" + token.encode(), hashlib.sha256).digest()
    assert a.digest == expected
    assert token not in repr(a) and a.digest.hex() not in repr(a)


def test_token_format_and_entropy() -> None:
    tokens = {new_api_key() for _ in range(50)}
    assert len(tokens) == 50
    for t in tokens:
        prefix, lookup, secret = t.split("_", 2)
        assert prefix == "tkms" and len(lookup) == 16 and len(secret) == 43


def test_authenticate_right_and_wrong_keys() -> None:
    store = ApiKeyStore()
    t1 = store.add_client("alice", ["signer"], ["k1"])
    t2 = store.add_client("bob", ["operator", "auditor"])
    alice = store.authenticate(t1)
    assert alice is not None and alice.client_id == "alice"
    assert alice.may_sign("k1") and not alice.may_sign("k2") and not alice.is_operator
    bob = store.authenticate(t2)
    assert bob is not None and bob.is_operator and not bob.may_sign("k1")
    wrong_secret = t1[:-2] + ("AA" if not t1.endswith("AA") else "BB")
    other_lookup = t2.split("_")[0] + "_" + t1.split("_")[1] + "_" + t2.split("_", 2)[2]
    for bad in (wrong_secret, other_lookup, "", "tkms", t1 + "x", t1.upper(), "tkms_é_x"):
        assert store.authenticate(bad) is None


def test_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    store = ApiKeyStore()
    token = store.add_client("alice", ["signer"], ["*"])
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert store.authenticate(token) is not None
    assert store.authenticate(token[:-1] + "Z" if token[-1] != "Z" else token[:-1] + "Y") is None
    assert store.authenticate("tkms_0123456789abcdef_" + "A" * 43) is None  # unknown id
    assert store.authenticate("garbage") is None
    assert len(calls) == 4  # every path, known id or not, ends in one compare_digest
    assert all(len(a) == 32 and len(b) == 32 for a, b in calls)


def test_file_round_trip_and_permissions(tmp_path: Path) -> None:
    store = ApiKeyStore()
    t1 = store.add_client("demo", ["operator", "signer"], ["*"], rate_limit=RateLimit(5, 10))
    t2 = store.issue_key("demo")
    store.add_client("aud", ["auditor"], cert_sha256=[b"\x01" * 32])
    path = api_keys_path(tmp_path / "manifest.toml")
    assert path.name == "api-keys.json"
    store.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert t1 not in text and t2 not in text
    assert t1.split("_", 2)[2] not in text
    loaded = ApiKeyStore.load(path)
    for t in (t1, t2):
        c = loaded.authenticate(t)
        assert c is not None and c.client_id == "demo" and c.may_sign("anything")
    assert loaded.rate_limit_for("demo") == RateLimit(5, 10)
    aud = loaded.authenticate_cert(b"\x01" * 32)
    assert aud is not None and aud.client_id == "aud"
    assert loaded.authenticate_cert(b"\x02" * 32) is None
    loaded.revoke_key(t1.split("_")[1])
    assert loaded.authenticate(t1) is None and loaded.authenticate(t2) is not None


@pytest.mark.parametrize(
    "doc",
    [
        {"version": 2, "clients": []},
        {"version": 1, "clients": [{"clientId": "a", "roles": ["root"]}]},
        {"version": 1, "clients": [{"clientId": "a/b", "roles": ["signer"]}]},
        {"version": 1, "clients": [{"clientId": "a", "roles": ["signer"], "extra": 1}]},
        {"version": 1, "clients": [{"clientId": "a", "apiKeys": [{"id": "zz", "salt": ""}]}]},
        {"version": 1, "clients": [{"clientId": "a"}, {"clientId": "a"}]},
        {"version": 1, "clients": [{"clientId": "a", "rateLimit": {"perSecond": 0, "burst": 1}}]},
        {"version": 1, "clients": [{"clientId": "a", "signerKeys": ["../etc"]}]},
    ],
)  # fmt: skip
def test_malformed_files_are_refused(doc: object) -> None:
    with pytest.raises(AuthConfigError):
        ApiKeyStore.from_json(json.dumps(doc))
    with pytest.raises(AuthConfigError):
        ApiKeyStore.from_json("{not json")


def test_seeded_rng_gives_reproducible_tokens() -> None:
    assert new_api_key(seeded_rng(b"x")) == new_api_key(seeded_rng(b"x"))
    assert new_api_key(seeded_rng(b"x")) != new_api_key(seeded_rng(b"y"))


def test_parse_bearer() -> None:
    assert parse_bearer(None) is None
    assert parse_bearer("Bearer abc") == "abc"
    assert parse_bearer("bearer  abc ") == "abc"
    assert parse_bearer(None, "abc") == "abc"
    assert parse_bearer("Bearer abc", "abc") == "abc"
    for bad in ("Basic abc", "Bearer", "abc"):
        with pytest.raises(DecodeError):
            parse_bearer(bad)
    with pytest.raises(DecodeError):
        parse_bearer("Bearer abc", "def")


def test_allowlist() -> None:
    assert IpAllowlist(None).allows("203.0.113.9")
    al = IpAllowlist(["127.0.0.0/8", "::1/128"])
    assert al.allows("127.0.0.1") and al.allows("::1") and al.allows("::ffff:127.0.0.1")
    assert not al.allows("10.0.0.1") and not al.allows("not-an-ip")
    assert not IpAllowlist([]).allows("127.0.0.1")
    with pytest.raises(AuthConfigError):
        IpAllowlist(["300.0.0.0/8"])


def test_rate_limiter_token_bucket() -> None:
    now = [100.0]
    rl = RateLimiter(RateLimit(per_second=2.0, burst=3.0), clock=lambda: now[0])
    assert [rl.check("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = rl.check("a")
    assert wait == pytest.approx(0.5)
    assert RateLimiter.retry_after_header(wait) == "1"
    assert rl.check("b") == 0.0  # per client
    now[0] += 0.5
    assert rl.check("a") == 0.0
    assert rl.check("a") > 0
    now[0] += 100  # refills only up to burst
    assert [rl.check("a") for _ in range(4)][3] > 0
    assert rl.check("c", RateLimit(per_second=1.0, burst=1.0)) == 0.0
    assert rl.check("c", RateLimit(per_second=1.0, burst=1.0)) == pytest.approx(1.0)
    assert RateLimiter(None, clock=lambda: 0.0).check("a") == 0.0


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_random_strings_never_authenticate(raw: str) -> None:
    store = ApiKeyStore()
    store.add_client("alice", ["signer"], ["*"], rng=seeded_rng(b"fixed"))
    assert store.authenticate(raw) is None


def test_add_client_to_file_creates_then_appends(tmp_path: Path) -> None:
    path = tmp_path / "api-keys.json"
    demo = add_client_to_file(path, "demo", ["operator", "signer"], ["*"])
    other = add_client_to_file(path, "ci", ["auditor"])
    store = ApiKeyStore.load(path)
    c = store.authenticate(demo)
    assert c is not None and c.is_operator and c.may_sign("any-key")
    c = store.authenticate(other)
    assert c is not None and c.roles == frozenset({"auditor"})
    with pytest.raises(AuthConfigError):
        add_client_to_file(path, "demo", ["signer"])

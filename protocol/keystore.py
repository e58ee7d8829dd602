"""Decrypting (and writing) the two BN254 BLS keystore formats operators already have.

eigensdk-go (``crypto/bls/attestation.go``; spec section 9): ``{"pubKey": "E([X,Y])",
"crypto": <go-ethereum keystore v3>}`` with ``cipher`` aes-128-ctr, ``kdf`` scrypt
(go-ethereum also reads pbkdf2/hmac-sha256), ``mac = keccak256(dk[16:32] || ciphertext)``;
the password is used as its UTF-8 bytes; the plaintext is the big-endian secret.

cerberus / bn254-keystore-go (EIP-2335 style): ``{"crypto": {"kdf": {"function":
"scrypt" | "pbkdf2", "params", "message"}, "checksum": {"function": "sha256", "message":
sha256(dk[16:32] || ciphertext)}, "cipher": {"function": "aes-128-ctr", "params": {"iv"},
"message"}}, "pubkey": <gnark-compressed G1 hex>, "curve": "bn254", ...}``; the password
is NFKD-normalised and stripped of the C0, DEL and C1 control characters (EIP-2335).

``decrypt_keystore(data, password)`` detects the format, bounds the KDF cost before
running it (absurd scrypt or pbkdf2 parameters are refused, not attempted), checks the
MAC in constant time (a wrong password gives one message and no detail), refuses a
secret outside [1, r-1] (never reduces it mod r as the Go readers do), and checks
``sk*G1`` against the stated public key. It returns an ``ImportedKey`` whose repr hides
the secret. Every failure is a ``KeystoreError`` (fault CLIENT) naming the field.

The encoders (``encrypt_eigensdk_keystore``, ``encrypt_eip2335_keystore``) write the
same formats, for tests and for operators who want to rehearse an import.

Local stand-ins, to be replaced when the ``bls`` helper's modules land on main:
``_keccak256`` (-> ``protocol.hashing.keccak256``) and the gnark-compressed G1 codec
``g1_to_compressed`` / ``g1_from_compressed`` (-> ``protocol.encoding``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from Crypto.Cipher import AES
from Crypto.Hash import keccak

from protocol.bn254 import G1, P, R, g1_mul_generator
from protocol.errors import DecodeError, Fault, InvalidPoint, InvalidScalar
from protocol.rng import Rng, os_rng

MAX_KEYSTORE_BYTES = 1 << 16  # real keystores are under 2 KiB
MAX_JSON_DEPTH = 16
SMALL_SECRET_BOUND = 1 << 128
DKLEN = 32


# ----------------------------------------------------------------------- errors


class KeystoreError(DecodeError):
    """A keystore that cannot be imported; the operator supplied it."""

    fault = Fault.CLIENT


class MalformedKeystore(KeystoreError):
    """Not JSON, a missing field, a field of the wrong type or length."""


class UnsupportedKeystore(KeystoreError):
    """A KDF, PRF, cipher, checksum or curve tkms does not implement."""


class KdfParamsOutOfBounds(KeystoreError):
    """KDF parameters too costly (or nonsensical) to run: refused, not attempted."""


class WrongPassword(KeystoreError):
    """MAC or checksum mismatch: the password is wrong or the file was altered."""

    def __init__(self) -> None:
        super().__init__("keystore", "wrong password or altered keystore")


class PubkeyMismatch(KeystoreError):
    """The decrypted secret does not belong to the public key the keystore states."""


class KeystoreSecretOutOfRange(KeystoreError, InvalidScalar):
    """The decrypted secret is 0 or >= r."""


# ---------------------------------------------------------------- secret holders


class SecretBytes:
    """Decrypted bytes; ``reveal()`` returns them, repr and str never do."""

    __slots__ = ("_value",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, value: bytes) -> None:
        self._value = bytes(value)

    def reveal(self) -> bytes:
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretBytes):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __repr__(self) -> str:
        return f"SecretBytes(<{len(self._value)} bytes hidden>)"

    __str__ = __repr__


class ImportedKey:
    """A secret key read from a keystore, checked against its stated public key."""

    __slots__ = ("_sk", "format", "pubkey_g1", "small_secret")
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, sk: int, pubkey_g1: G1, fmt: str) -> None:
        self._sk = sk
        self.pubkey_g1 = pubkey_g1
        self.format = fmt  # "eigensdk" or "eip2335"
        self.small_secret = sk < SMALL_SECRET_BOUND  # a warning for the operator

    def secret_scalar(self) -> int:
        """The secret in [1, r-1]: split it and drop the reference at once."""
        return self._sk

    def __repr__(self) -> str:
        return (
            f"ImportedKey(format={self.format!r}, pubkey_g1=({self.pubkey_g1.x}, "
            f"{self.pubkey_g1.y}), small_secret={self.small_secret}, sk=<hidden>)"
        )

    __str__ = __repr__


# --------------------------------------------------------------------- G1 text


_EIGENSDK_PUBKEY = re.compile(r"E\(\[([0-9]{1,78}),([0-9]{1,78})\]\)")


def eigensdk_pubkey_string(pk: G1) -> str:
    """gnark's text form of a G1 point, as eigensdk-go writes ``pubKey``: ``E([X,Y])``."""
    return f"E([{pk.x},{pk.y}])"


def parse_eigensdk_pubkey(text: Any, *, field: str = "pubKey") -> G1:
    """A validated, finite G1 point from ``E([X,Y])`` (decimal coordinates)."""
    if not isinstance(text, str):
        raise MalformedKeystore(field, "must be a string")
    if not text:
        raise MalformedKeystore(field, "is empty")
    m = _EIGENSDK_PUBKEY.fullmatch(text)
    if m is None:
        raise MalformedKeystore(field, "must look like E([X,Y]) with decimal coordinates")
    return _g1(int(m.group(1)), int(m.group(2)), field)


def _g1(x: int, y: int, field: str) -> G1:
    try:
        return G1.from_affine(x, y, field=field)
    except InvalidPoint as exc:
        raise MalformedKeystore(field, exc.reason) from None


_FLAG_MASK = 0xC0
_FLAG_SMALLEST = 0x80
_FLAG_LARGEST = 0xC0
_FLAG_INFINITY = 0x40
_HALF_P = (P - 1) // 2


def g1_to_compressed(pk: G1) -> bytes:
    """gnark ``G1Affine.Bytes()``: X with flag 0b10 (Y <= (p-1)/2) or 0b11 (larger)."""
    if pk.is_infinity():
        return bytes([_FLAG_INFINITY]) + bytes(31)
    out = bytearray(pk.x.to_bytes(32, "big"))
    out[0] |= _FLAG_LARGEST if pk.y > _HALF_P else _FLAG_SMALLEST
    return bytes(out)


def g1_from_compressed(data: bytes, *, field: str = "pubkey") -> G1:
    """A finite G1 point from gnark's 32-byte compressed form (validated)."""
    if len(data) != 32:
        raise MalformedKeystore(field, f"must be 32 bytes, got {len(data)}")
    flag = data[0] & _FLAG_MASK
    if flag == _FLAG_INFINITY:
        raise MalformedKeystore(field, "is the point at infinity")
    if flag not in (_FLAG_SMALLEST, _FLAG_LARGEST):
        raise MalformedKeystore(field, "is not a compressed point (bad flag bits)")
    x = int.from_bytes(bytes([data[0] & ~_FLAG_MASK & 0xFF]) + data[1:], "big")
    if x >= P:
        raise MalformedKeystore(field, "x coordinate is not below p")
    rhs = (x * x * x + 3) % P
    y = pow(rhs, (P + 1) // 4, P)
    if y * y % P != rhs:
        raise MalformedKeystore(field, "x is not on the curve")
    if (flag == _FLAG_LARGEST) != (y > _HALF_P):
        y = P - y
    return _g1(x, y, field)


# --------------------------------------------------------------------- helpers


def _keccak256(data: bytes) -> bytes:
    h = keccak.new(digest_bits=256)
    h.update(data)
    return h.digest()


def eip2335_password(password: str) -> bytes:
    """EIP-2335: NFKD, then drop C0 (0x00-0x1F), DEL (0x7F) and C1 (0x80-0x9F)."""
    norm = unicodedata.normalize("NFKD", password)
    return "".join(c for c in norm if not (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F)).encode()


def _get(obj: Mapping[str, Any], key: str, path: str, kind: type | tuple[type, ...]) -> Any:
    if key not in obj:
        raise MalformedKeystore(f"{path}{key}", "missing")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise MalformedKeystore(f"{path}{key}", f"must be {names}")
    return value


def _int(obj: Mapping[str, Any], key: str, path: str) -> int:
    value: int = _get(obj, key, path, int)
    return value


def _hex(obj: Mapping[str, Any], key: str, path: str, *, lo: int, hi: int) -> bytes:
    text: str = _get(obj, key, path, str)
    if len(text) > 2 * hi + 2:
        raise MalformedKeystore(f"{path}{key}", f"longer than {hi} bytes")
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise MalformedKeystore(f"{path}{key}", "is not hex") from None
    if not lo <= len(raw) <= hi:
        want = f"{lo} bytes" if lo == hi else f"{lo} to {hi} bytes"
        raise MalformedKeystore(f"{path}{key}", f"must be {want}, got {len(raw)}")
    return raw


@dataclass(frozen=True, slots=True)
class KdfLimits:
    """The most work and memory a keystore may ask of us (defaults: 4x the usual cost)."""

    max_scrypt_n: int = 1 << 20
    max_scrypt_r: int = 32
    max_scrypt_p: int = 16
    max_scrypt_memory: int = 1 << 30  # 128 * r * n bytes
    max_scrypt_work: int = 1 << 24  # n * r * p
    max_pbkdf2_c: int = 1 << 23


DEFAULT_LIMITS = KdfLimits()


@dataclass(frozen=True, slots=True)
class _Kdf:
    name: str
    salt: bytes
    n: int = 0
    r: int = 0
    p: int = 0
    c: int = 0

    def derive(self, password: bytes) -> bytes:
        if self.name == "scrypt":
            mem = 128 * self.r * (self.n + self.p + 2) + (1 << 20)
            return hashlib.scrypt(
                password, salt=self.salt, n=self.n, r=self.r, p=self.p, dklen=DKLEN, maxmem=mem
            )
        return hashlib.pbkdf2_hmac("sha256", password, self.salt, self.c, DKLEN)


def _parse_kdf(name: Any, params: Mapping[str, Any], path: str, limits: KdfLimits) -> _Kdf:
    if name not in ("scrypt", "pbkdf2"):
        raise UnsupportedKeystore(path.rstrip("."), "kdf must be scrypt or pbkdf2")
    dklen = _int(params, "dklen", path)
    if dklen != DKLEN:
        raise UnsupportedKeystore(f"{path}dklen", f"must be {DKLEN}")
    salt = _hex(params, "salt", path, lo=1, hi=1024)
    if name == "pbkdf2":
        prf = _get(params, "prf", path, str)
        if prf != "hmac-sha256":
            raise UnsupportedKeystore(f"{path}prf", "must be hmac-sha256")
        c = _int(params, "c", path)
        if not 1 <= c <= limits.max_pbkdf2_c:
            raise KdfParamsOutOfBounds(f"{path}c", f"must be in [1, {limits.max_pbkdf2_c}]")
        return _Kdf("pbkdf2", salt, c=c)
    n, r, p = _int(params, "n", path), _int(params, "r", path), _int(params, "p", path)
    if n < 2 or n & (n - 1) or n > limits.max_scrypt_n:
        raise KdfParamsOutOfBounds(
            f"{path}n", f"must be a power of two in [2, {limits.max_scrypt_n}]"
        )
    if not 1 <= r <= limits.max_scrypt_r:
        raise KdfParamsOutOfBounds(f"{path}r", f"must be in [1, {limits.max_scrypt_r}]")
    if not 1 <= p <= limits.max_scrypt_p:
        raise KdfParamsOutOfBounds(f"{path}p", f"must be in [1, {limits.max_scrypt_p}]")
    if 128 * r * n > limits.max_scrypt_memory or n * r * p > limits.max_scrypt_work:
        raise KdfParamsOutOfBounds(path.rstrip("."), "scrypt n, r, p ask for too much work")
    return _Kdf("scrypt", salt, n=n, r=r, p=p)


def _aes_ctr(key16: bytes, iv: bytes, data: bytes) -> bytes:
    out: bytes = AES.new(key16, AES.MODE_CTR, nonce=b"", initial_value=iv).encrypt(data)
    return out


def _secret_from_plaintext(plaintext: bytes) -> int:
    sk = int.from_bytes(plaintext, "big")
    if sk == 0:
        raise KeystoreSecretOutOfRange("secret", "is zero")
    if sk >= R:
        raise KeystoreSecretOutOfRange("secret", "is not below the group order r")
    return sk


def _nesting_depth(text: str) -> int:
    """The deepest ``[``/``{`` nesting outside strings (checked before ``json.loads``:
    deep nesting makes the C decoder recurse, and with a raised recursion limit it
    overflows the C stack and kills the process)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_keystore_json(data: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    """The keystore's top-level JSON object (bounded size and depth, typed errors)."""
    if isinstance(data, Mapping):
        return data
    if len(data) > MAX_KEYSTORE_BYTES:
        raise MalformedKeystore("keystore", f"larger than {MAX_KEYSTORE_BYTES} bytes")
    try:
        text = data.decode() if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise MalformedKeystore("keystore", "is not UTF-8") from None
    if _nesting_depth(text) > MAX_JSON_DEPTH:
        raise MalformedKeystore("keystore", f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MalformedKeystore("keystore", "is not valid JSON (truncated?)") from None
    if not isinstance(obj, dict):
        raise MalformedKeystore("keystore", "must be a JSON object")
    return obj


def keystore_format(obj: Mapping[str, Any]) -> str:
    """``"eigensdk"`` or ``"eip2335"``, from the keystore's shape."""
    crypto = obj.get("crypto")
    if "pubKey" in obj or (isinstance(crypto, Mapping) and "ciphertext" in crypto):
        return "eigensdk"
    if isinstance(crypto, Mapping) and ("checksum" in crypto or "kdf" in crypto):
        return "eip2335"
    if crypto is None:
        raise MalformedKeystore("crypto", "missing")
    raise MalformedKeystore("keystore", "neither an eigensdk-go nor an EIP-2335 keystore")


# ---------------------------------------------------------------------- decoders


def _finish(sk: int, stated: G1, fmt: str, field: str) -> ImportedKey:
    if g1_mul_generator(sk) != stated:
        raise PubkeyMismatch(field, "the decrypted secret does not match this public key")
    return ImportedKey(sk, stated, fmt)


def decrypt_eigensdk_keystore(
    data: bytes | str | Mapping[str, Any], password: str, *, limits: KdfLimits = DEFAULT_LIMITS
) -> ImportedKey:
    """Decrypt an eigensdk-go BLS keystore and check it against its ``pubKey``."""
    obj = parse_keystore_json(data)
    if "pubKey" not in obj:
        raise MalformedKeystore("pubKey", "missing")
    stated = parse_eigensdk_pubkey(obj["pubKey"])
    crypto = _get(obj, "crypto", "", dict)
    cipher = _get(crypto, "cipher", "crypto.", str)
    if cipher != "aes-128-ctr":
        raise UnsupportedKeystore("crypto.cipher", "must be aes-128-ctr")
    ciphertext = _hex(crypto, "ciphertext", "crypto.", lo=1, hi=32)
    iv = _hex(
        _get(crypto, "cipherparams", "crypto.", dict), "iv", "crypto.cipherparams.", lo=16, hi=16
    )
    mac = _hex(crypto, "mac", "crypto.", lo=32, hi=32)
    kdf_name = _get(crypto, "kdf", "crypto.", str)
    params = _get(crypto, "kdfparams", "crypto.", dict)
    kdf = _parse_kdf(kdf_name, params, "crypto.kdfparams.", limits)
    dk = kdf.derive(password.encode())
    if not hmac.compare_digest(_keccak256(dk[16:32] + ciphertext), mac):
        raise WrongPassword()
    sk = _secret_from_plaintext(_aes_ctr(dk[:16], iv, ciphertext))
    return _finish(sk, stated, "eigensdk", "pubKey")


def _eip2335_parts(obj: Mapping[str, Any], limits: KdfLimits) -> tuple[_Kdf, bytes, bytes, bytes]:
    """(kdf, checksum, iv, ciphertext) of an EIP-2335 ``crypto`` section."""
    crypto = _get(obj, "crypto", "", dict)
    kdf_mod = _get(crypto, "kdf", "crypto.", dict)
    kdf = _parse_kdf(
        _get(kdf_mod, "function", "crypto.kdf.", str),
        _get(kdf_mod, "params", "crypto.kdf.", dict),
        "crypto.kdf.params.",
        limits,
    )
    checksum_mod = _get(crypto, "checksum", "crypto.", dict)
    if _get(checksum_mod, "function", "crypto.checksum.", str) != "sha256":
        raise UnsupportedKeystore("crypto.checksum.function", "must be sha256")
    checksum = _hex(checksum_mod, "message", "crypto.checksum.", lo=32, hi=32)
    cipher_mod = _get(crypto, "cipher", "crypto.", dict)
    if _get(cipher_mod, "function", "crypto.cipher.", str) != "aes-128-ctr":
        raise UnsupportedKeystore("crypto.cipher.function", "must be aes-128-ctr")
    params = _get(cipher_mod, "params", "crypto.cipher.", dict)
    iv = _hex(params, "iv", "crypto.cipher.params.", lo=16, hi=16)
    ciphertext = _hex(cipher_mod, "message", "crypto.cipher.", lo=1, hi=32)
    return kdf, checksum, iv, ciphertext


def decrypt_eip2335_secret(
    data: bytes | str | Mapping[str, Any], password: str, *, limits: KdfLimits = DEFAULT_LIMITS
) -> SecretBytes:
    """The raw decrypted bytes of any EIP-2335-style keystore (any curve; no key check)."""
    obj = parse_keystore_json(data)
    kdf, checksum, iv, ciphertext = _eip2335_parts(obj, limits)
    dk = kdf.derive(eip2335_password(password))
    if not hmac.compare_digest(hashlib.sha256(dk[16:32] + ciphertext).digest(), checksum):
        raise WrongPassword()
    return SecretBytes(_aes_ctr(dk[:16], iv, ciphertext))


def decrypt_eip2335_keystore(
    data: bytes | str | Mapping[str, Any], password: str, *, limits: KdfLimits = DEFAULT_LIMITS
) -> ImportedKey:
    """Decrypt a cerberus / bn254-keystore-go keystore and check it against ``pubkey``."""
    obj = parse_keystore_json(data)
    curve = obj.get("curve")
    if curve is not None and curve != "bn254":
        raise UnsupportedKeystore("curve", "must be bn254")
    pub_hex: str = _get(obj, "pubkey", "", str)
    try:
        pub_raw = bytes.fromhex(pub_hex.removeprefix("0x"))
    except ValueError:
        raise MalformedKeystore("pubkey", "is not hex") from None
    stated = g1_from_compressed(pub_raw, field="pubkey")
    _eip2335_parts(obj, limits)  # every field checked before the costly KDF runs
    secret = decrypt_eip2335_secret(obj, password, limits=limits)
    sk = _secret_from_plaintext(secret.reveal())
    return _finish(sk, stated, "eip2335", "pubkey")


def decrypt_keystore(
    data: bytes | str | Mapping[str, Any], password: str, *, limits: KdfLimits = DEFAULT_LIMITS
) -> ImportedKey:
    """Decrypt either format (detected from its shape)."""
    obj = parse_keystore_json(data)
    if keystore_format(obj) == "eigensdk":
        return decrypt_eigensdk_keystore(obj, password, limits=limits)
    return decrypt_eip2335_keystore(obj, password, limits=limits)


# ---------------------------------------------------------------------- encoders


def _check_sk(sk: int) -> None:
    if isinstance(sk, bool) or not isinstance(sk, int) or not 1 <= sk < R:
        raise KeystoreSecretOutOfRange("sk", "must be an integer in [1, r-1]")


def _scrypt_params(n: int, salt: bytes) -> dict[str, Any]:
    return {"dklen": DKLEN, "n": n, "p": 1, "r": 8, "salt": salt.hex()}


def encrypt_eigensdk_keystore(
    sk: int, password: str, rng: Rng = os_rng, *, scrypt_n: int = 262144
) -> dict[str, Any]:
    """An eigensdk-go BLS keystore (scrypt r=8 p=1, aes-128-ctr, keccak MAC) for ``sk``."""
    _check_sk(sk)
    salt, iv = rng(32), rng(16)
    kdf = _parse_kdf("scrypt", _scrypt_params(scrypt_n, salt), "scrypt_n.", DEFAULT_LIMITS)
    dk = kdf.derive(password.encode())
    ciphertext = _aes_ctr(dk[:16], iv, sk.to_bytes(32, "big"))
    return {
        "pubKey": eigensdk_pubkey_string(g1_mul_generator(sk)),
        "crypto": {
            "cipher": "aes-128-ctr",
            "ciphertext": ciphertext.hex(),
            "cipherparams": {"iv": iv.hex()},
            "kdf": "scrypt",
            "kdfparams": _scrypt_params(scrypt_n, salt),
            "mac": _keccak256(dk[16:32] + ciphertext).hex(),
        },
    }


def _uuid4(rng: Rng) -> str:
    b = bytearray(rng(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def encrypt_eip2335_keystore(
    sk: int,
    password: str,
    rng: Rng = os_rng,
    *,
    kdf: str = "scrypt",
    scrypt_n: int = 262144,
    pbkdf2_c: int = 262144,
    path: str = "m/254/60/0/0",
    description: str = "",
) -> dict[str, Any]:
    """A cerberus / bn254-keystore-go (EIP-2335 style) keystore for ``sk``."""
    _check_sk(sk)
    salt, iv = rng(32), rng(16)
    if kdf == "scrypt":
        params = _scrypt_params(scrypt_n, salt)
    elif kdf == "pbkdf2":
        params = {"dklen": DKLEN, "c": pbkdf2_c, "prf": "hmac-sha256", "salt": salt.hex()}
    else:
        raise UnsupportedKeystore("kdf", "must be scrypt or pbkdf2")
    dk = _parse_kdf(kdf, params, "kdf.", DEFAULT_LIMITS).derive(eip2335_password(password))
    ciphertext = _aes_ctr(dk[:16], iv, sk.to_bytes(32, "big"))
    return {
        "crypto": {
            "kdf": {"function": kdf, "params": params, "message": ""},
            "checksum": {
                "function": "sha256",
                "params": {},
                "message": hashlib.sha256(dk[16:32] + ciphertext).hexdigest(),
            },
            "cipher": {
                "function": "aes-128-ctr",
                "params": {"iv": iv.hex()},
                "message": ciphertext.hex(),
            },
        },
        "description": description,
        "pubkey": g1_to_compressed(g1_mul_generator(sk)).hex(),
        "path": path,
        "uuid": _uuid4(rng),
        "version": 4,
        "curve": "bn254",
    }

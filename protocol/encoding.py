"""Strict codecs for BN254 scalars and points in every format EigenLayer tooling uses.

Byte formats (spec section 9), all big-endian 32-byte words:

* scalar: 32 bytes, < r.
* G1 raw (64 B): X || Y; infinity is 64 zero bytes (Solidity / precompile form).
* G2 raw (128 B), EIP-197 / Solidity / gnark ``RawBytes`` order:
  x_imag || x_real || y_imag || y_real; infinity is 128 zero bytes.
* G2 eigensdk-go ``SerializeG2`` (128 B): x_real || x_imag || y_real || y_imag.
* gnark compressed G1 (32 B): X with the top two bits of byte 0 set to 0b10 if
  Y <= (p-1)/2 ("smallest") or 0b11 if Y > (p-1)/2 ("largest"); infinity is 0x40
  followed by zeros.
* gnark compressed G2 (64 B): x_imag || x_real with the same flag bits; "largest"
  compares y_imag with (p-1)/2, or y_real when y_imag = 0; infinity 0x40 + zeros.

Text formats (spec section 7): a field element is a JSON string, plain decimal (no
sign, no leading zeros) or ``0x`` + exactly 64 lowercase hex digits; never a JSON
number. G1 is ``{"X", "Y"}``; G2 is ``{"X": [imag, real], "Y": [imag, real]}``.
``msgHash`` is ``0x`` + 64 hex digits. gnark's text form of a G1 point is
``E([X,Y])`` with decimal coordinates (eigensdk-go keystore ``pubKey``).

Every decoder validates: wrong length -> ``InvalidLength``; coordinate >= p, off the
curve, outside the subgroup, or infinity where not allowed -> ``InvalidPoint``;
scalar >= r or zero where not allowed -> ``InvalidScalar``; wrong type or syntax ->
``InvalidFormat``. Each error names the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import gmpy2

from protocol.bn254 import G1, G1_INFINITY, G2, G2_INFINITY, P, R
from protocol.errors import DecodeError, InvalidLength, InvalidPoint, InvalidScalar

WORD: Final = 32
G1_RAW_LEN: Final = 64
G2_RAW_LEN: Final = 128
G1_COMPRESSED_LEN: Final = 32
G2_COMPRESSED_LEN: Final = 64

# gnark-crypto bn254 flag bits (top two bits of byte 0).
_MASK: Final = 0b11 << 6
_UNCOMPRESSED: Final = 0b00 << 6
_INFINITY: Final = 0b01 << 6
_SMALLEST: Final = 0b10 << 6
_LARGEST: Final = 0b11 << 6

_HALF_P: Final = (P - 1) // 2
_SQRT_EXP: Final = (P + 1) // 4
_INV2: Final = (P + 1) // 2
# The twist coefficient b' = 3 / (9 + i) = 3 (9 - i) / 82, as (real, imag).
_INV82: Final = pow(82, -1, P)
B2: Final = (27 * _INV82 % P, (-3 * _INV82) % P)

_DEC_RE: Final = re.compile(r"0|[1-9][0-9]{0,77}")
_HEX_RE: Final = re.compile(r"0x[0-9a-f]*")
_MSG_HEX_RE: Final = re.compile(r"0x[0-9a-fA-F]*")
_GNARK_G1_RE: Final = re.compile(r"E\(\[(0|[1-9][0-9]{0,77}),(0|[1-9][0-9]{0,77})\]\)")

Fp2 = tuple[int, int]


class InvalidFormat(DecodeError):
    """Input of the wrong type or syntax (not a byte string, not a decimal/hex string,
    a JSON object with missing or extra keys, ...)."""


# --------------------------------------------------------------------------- helpers


def _as_bytes(data: object, field: str, length: int) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidFormat(field, "must be a byte string")
    raw = bytes(data)
    if len(raw) != length:
        raise InvalidLength(field, f"must be {length} bytes, got {len(raw)}")
    return raw


def int_to_word(value: int) -> bytes:
    """A non-negative integer < 2^256 as a 32-byte big-endian word (an ABI uint256)."""
    if not 0 <= value < 1 << 256:
        raise ValueError("uint256 out of range")
    return value.to_bytes(WORD, "big")


def _words(raw: bytes) -> list[int]:
    return [int.from_bytes(raw[i : i + WORD], "big") for i in range(0, len(raw), WORD)]


def _coordinate(value: int, field: str) -> int:
    if value >= P:
        raise InvalidPoint(field, "coordinate not in [0, p)")
    return value


def _f2_mul(a: Fp2, b: Fp2) -> Fp2:
    return ((a[0] * b[0] - a[1] * b[1]) % P, (a[0] * b[1] + a[1] * b[0]) % P)


def _f2_neg(a: Fp2) -> Fp2:
    return ((-a[0]) % P, (-a[1]) % P)


def _g2_rhs(x: Fp2) -> Fp2:
    x3 = _f2_mul(_f2_mul(x, x), x)
    return ((x3[0] + B2[0]) % P, (x3[1] + B2[1]) % P)


def g2_on_curve(x: Fp2, y: Fp2) -> bool:
    """True iff (x, y) (each (real, imag)) is on the twist y^2 = x^3 + 3/(9+i)."""
    return _f2_mul(y, y) == _g2_rhs(x)


def g1_usable(p: G1) -> bool:
    """Cheap sanity check for a G1 point about to be used in a check: not infinity,
    coordinates < p, on the curve. (Decoders already guarantee this; verifiers re-check
    because it costs a few multiplications.)"""
    x, y = p.x, p.y
    return (x, y) != (0, 0) and 0 <= x < P and 0 <= y < P and (y * y - x * x * x - 3) % P == 0


def g2_usable(q: G2) -> bool:
    """Not infinity, coordinates < p, on the twist. Subgroup membership is NOT
    re-checked here (it is the decoders' job; it costs a scalar multiplication)."""
    coords = (*q.x, *q.y)
    return any(coords) and all(0 <= c < P for c in coords) and g2_on_curve(q.x, q.y)


def fp_sqrt(a: int) -> int | None:
    """a^((p+1)/4) if a is a square mod p (the root that is itself a square), else None."""
    a %= P
    if gmpy2.jacobi(a, P) == -1:
        return None
    return int(gmpy2.powmod(a, _SQRT_EXP, P))


def fp2_sqrt(a: Fp2) -> Fp2 | None:
    """Some square root of a in Fp2 (either sign), or None if a is not a square."""
    a0, a1 = a[0] % P, a[1] % P
    if a1 == 0:
        root = fp_sqrt(a0)
        if root is not None:
            return (root, 0)
        # -1 is a non-square (p = 3 mod 4), so -a0 is a square: (i t)^2 = -t^2 = a0.
        t = fp_sqrt(-a0)
        return None if t is None else (0, t)
    n = fp_sqrt(a0 * a0 + a1 * a1)  # sqrt of the norm
    if n is None:
        return None
    d = (a0 + n) * _INV2 % P
    x0 = fp_sqrt(d)
    if x0 is None:
        x0 = fp_sqrt((a0 - n) * _INV2)
    if not x0:  # None, or 0 (impossible when a1 != 0)
        return None
    x1 = a1 * int(gmpy2.invert(2 * x0, P)) % P
    root2 = (x0, x1)
    return root2 if _f2_mul(root2, root2) == (a0, a1) else None


def _g2_largest(y: Fp2) -> bool:
    """gnark ``E2.LexicographicallyLargest``: compare the imaginary part, or the real
    part when the imaginary part is zero."""
    return y[1] > _HALF_P if y[1] != 0 else y[0] > _HALF_P


# --------------------------------------------------------------------------- scalars


def scalar_to_bytes(k: int) -> bytes:
    """A scalar in [0, r) as 32 big-endian bytes."""
    if not 0 <= k < R:
        raise InvalidScalar("scalar", "not in [0, r)")
    return k.to_bytes(WORD, "big")


def scalar_from_bytes(b: bytes, *, field: str, allow_zero: bool = False) -> int:
    """32 big-endian bytes -> scalar; rejects >= r and (unless allowed) zero."""
    k = int.from_bytes(_as_bytes(b, field, WORD), "big")
    return check_scalar(k, field=field, allow_zero=allow_zero)


def check_scalar(k: int, *, field: str, allow_zero: bool = False) -> int:
    """Return k if it is a valid scalar (0 < k < r, or 0 <= k < r when allowed)."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise InvalidFormat(field, "scalar must be an integer")
    if not 0 <= k < R:
        raise InvalidScalar(field, "not in [0, r)")
    if k == 0 and not allow_zero:
        raise InvalidScalar(field, "zero is not allowed here")
    return k


# --------------------------------------------------------------------------- raw points


def g1_to_bytes(p: G1) -> bytes:
    """X || Y (64 bytes); infinity is 64 zero bytes."""
    return p.x.to_bytes(WORD, "big") + p.y.to_bytes(WORD, "big")


def g1_from_bytes(b: bytes, *, field: str, allow_infinity: bool = False) -> G1:
    """Decode and validate X || Y (coordinates < p, on the curve, infinity if allowed)."""
    x, y = _words(_as_bytes(b, field, G1_RAW_LEN))
    return _g1_from_ints(x, y, field, allow_infinity)


def _g1_from_ints(x: int, y: int, field: str, allow_infinity: bool) -> G1:
    _coordinate(x, f"{field}.X")
    _coordinate(y, f"{field}.Y")
    return G1.from_affine(x, y, field=field, allow_infinity=allow_infinity)


def _g2_from_parts(x: Fp2, y: Fp2, field: str, allow_infinity: bool) -> G2:
    """x, y as (real, imag); field names use Solidity indices (X[0] = imaginary)."""
    _coordinate(x[1], f"{field}.X[0]")
    _coordinate(x[0], f"{field}.X[1]")
    _coordinate(y[1], f"{field}.Y[0]")
    _coordinate(y[0], f"{field}.Y[1]")
    is_zero = x == (0, 0) and y == (0, 0)
    if not is_zero and not g2_on_curve(x, y):
        raise InvalidPoint(field, "not on the twist curve (is the G2 order [imag, real]?)")
    return G2.from_affine(x, y, field=field, allow_infinity=allow_infinity)


def g2_to_bytes(q: G2) -> bytes:
    """EIP-197 order: x_imag || x_real || y_imag || y_real (128 bytes)."""
    return b"".join(int_to_word(c) for c in (q.x[1], q.x[0], q.y[1], q.y[0]))


def g2_from_bytes(b: bytes, *, field: str, allow_infinity: bool = False) -> G2:
    """Decode EIP-197 order and validate (coordinates, curve, subgroup)."""
    xi, xr, yi, yr = _words(_as_bytes(b, field, G2_RAW_LEN))
    return _g2_from_parts((xr, xi), (yr, yi), field, allow_infinity)


def g2_to_eigensdk_bytes(q: G2) -> bytes:
    """eigensdk-go ``SerializeG2`` order (real first): x_real || x_imag || y_real || y_imag."""
    return b"".join(int_to_word(c) for c in (q.x[0], q.x[1], q.y[0], q.y[1]))


def g2_from_eigensdk_bytes(b: bytes, *, field: str, allow_infinity: bool = False) -> G2:
    """Decode eigensdk-go's real-first order and validate."""
    xr, xi, yr, yi = _words(_as_bytes(b, field, G2_RAW_LEN))
    return _g2_from_parts((xr, xi), (yr, yi), field, allow_infinity)


# --------------------------------------------------------------------------- compressed


def g1_to_compressed(p: G1) -> bytes:
    """gnark ``G1Affine.Bytes()``: 32 bytes, X with the flag bits."""
    if p.is_infinity():
        return bytes([_INFINITY]) + bytes(WORD - 1)
    out = bytearray(p.x.to_bytes(WORD, "big"))
    out[0] |= _LARGEST if p.y > _HALF_P else _SMALLEST
    return bytes(out)


def _flags(raw: bytes, field: str, allow_infinity: bool) -> int | None:
    """The compression flag of ``raw``; None for a (valid) infinity encoding."""
    flag = raw[0] & _MASK
    if flag == _UNCOMPRESSED:
        raise InvalidPoint(field, "flag bits 0b00 (uncompressed) in a compressed encoding")
    if flag == _INFINITY:
        if raw[0] != _INFINITY or any(raw[1:]):
            raise InvalidPoint(field, "invalid infinity encoding")
        if not allow_infinity:
            raise InvalidPoint(field, "point at infinity not allowed here")
        return None
    return flag


def g1_from_compressed(b: bytes, *, field: str, allow_infinity: bool = False) -> G1:
    """Decode gnark's 32-byte compressed G1 and validate."""
    raw = _as_bytes(b, field, G1_COMPRESSED_LEN)
    flag = _flags(raw, field, allow_infinity)
    if flag is None:
        return G1_INFINITY
    x = _coordinate(int.from_bytes(raw, "big") & ((1 << 254) - 1), f"{field}.X")
    y = fp_sqrt(x * x * x + 3)
    if y is None:
        raise InvalidPoint(field, "X is not the x-coordinate of a curve point")
    if (y > _HALF_P) != (flag == _LARGEST):
        y = P - y
    return G1.from_affine(x, y, field=field)


def g2_to_compressed(q: G2) -> bytes:
    """gnark ``G2Affine.Bytes()``: 64 bytes, x_imag || x_real with the flag bits."""
    if q.is_infinity():
        return bytes([_INFINITY]) + bytes(G2_COMPRESSED_LEN - 1)
    out = bytearray(int_to_word(q.x[1]) + int_to_word(q.x[0]))
    out[0] |= _LARGEST if _g2_largest(q.y) else _SMALLEST
    return bytes(out)


def g2_from_compressed(b: bytes, *, field: str, allow_infinity: bool = False) -> G2:
    """Decode gnark's 64-byte compressed G2 and validate (curve and subgroup)."""
    raw = _as_bytes(b, field, G2_COMPRESSED_LEN)
    flag = _flags(raw, field, allow_infinity)
    if flag is None:
        return G2_INFINITY
    xi = _coordinate(int.from_bytes(raw[:WORD], "big") & ((1 << 254) - 1), f"{field}.X[0]")
    xr = _coordinate(int.from_bytes(raw[WORD:], "big"), f"{field}.X[1]")
    y = fp2_sqrt(_g2_rhs((xr, xi)))
    if y is None:
        raise InvalidPoint(field, "X is not the x-coordinate of a twist point")
    if _g2_largest(y) != (flag == _LARGEST):
        y = _f2_neg(y)
    return G2.from_affine((xr, xi), y, field=field)


# --------------------------------------------------------------------------- JSON / text


def field_element_to_json(value: int, *, hex: bool = False) -> str:
    """A field element or scalar as a JSON string: decimal, or 0x + 64 lowercase hex."""
    return f"0x{value:064x}" if hex else str(value)


def _parse_number(value: object, field: str) -> int:
    if not isinstance(value, str):
        raise InvalidFormat(field, "must be a string (decimal, or 0x + 64 hex digits)")
    if value.startswith("0x"):
        if not _HEX_RE.fullmatch(value):
            raise InvalidFormat(field, "hex must be 0x followed by lowercase hex digits")
        if len(value) != 66:
            raise InvalidLength(field, "hex must have exactly 64 digits")
        return int(value[2:], 16)
    if not _DEC_RE.fullmatch(value):
        raise InvalidFormat(field, "decimal must be digits only, no sign or leading zeros")
    return int(value)


def field_element_from_json(value: object, *, field: str) -> int:
    """Parse a JSON field element (a string) and check it is < p."""
    return _coordinate(_parse_number(value, field), field)


def scalar_to_json(k: int, *, hex: bool = False) -> str:
    """A scalar as a JSON string (same syntax as a field element)."""
    check_scalar(k, field="scalar", allow_zero=True)
    return field_element_to_json(k, hex=hex)


def scalar_from_json(value: object, *, field: str, allow_zero: bool = False) -> int:
    """Parse a JSON scalar string and check it is < r (and nonzero unless allowed)."""
    return check_scalar(_parse_number(value, field), field=field, allow_zero=allow_zero)


def _object(obj: object, field: str, keys: set[str]) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping) or set(obj.keys()) != keys:
        names = ", ".join(f'"{k}"' for k in sorted(keys))
        raise InvalidFormat(field, f"must be an object with exactly the keys {names}")
    return obj


def g1_to_json(p: G1, *, hex: bool = False) -> dict[str, str]:
    """``{"X": ..., "Y": ...}`` with decimal (default) or 0x-hex strings."""
    return {"X": field_element_to_json(p.x, hex=hex), "Y": field_element_to_json(p.y, hex=hex)}


def g1_from_json(obj: object, *, field: str, allow_infinity: bool = False) -> G1:
    """Parse ``{"X", "Y"}`` strictly and validate the point."""
    o = _object(obj, field, {"X", "Y"})
    x = field_element_from_json(o["X"], field=f"{field}.X")
    y = field_element_from_json(o["Y"], field=f"{field}.Y")
    return G1.from_affine(x, y, field=field, allow_infinity=allow_infinity)


def g2_to_json(q: G2, *, hex: bool = False) -> dict[str, list[str]]:
    """``{"X": [x_imag, x_real], "Y": [y_imag, y_real]}`` (Solidity order)."""
    return {
        "X": [field_element_to_json(q.x[1], hex=hex), field_element_to_json(q.x[0], hex=hex)],
        "Y": [field_element_to_json(q.y[1], hex=hex), field_element_to_json(q.y[0], hex=hex)],
    }


def _pair(value: object, field: str) -> Fp2:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise InvalidFormat(field, "must be a list [imag, real] of two strings")
    imag = field_element_from_json(value[0], field=f"{field}[0]")
    real = field_element_from_json(value[1], field=f"{field}[1]")
    return (real, imag)


def g2_from_json(obj: object, *, field: str, allow_infinity: bool = False) -> G2:
    """Parse ``{"X": [imag, real], "Y": [imag, real]}`` strictly and validate."""
    o = _object(obj, field, {"X", "Y"})
    x = _pair(o["X"], f"{field}.X")
    y = _pair(o["Y"], f"{field}.Y")
    return _g2_from_parts(x, y, field, allow_infinity)


def msg_hash_to_hex(msg_hash: bytes) -> str:
    """A 32-byte message hash as ``0x`` + 64 lowercase hex digits."""
    return "0x" + _as_bytes(msg_hash, "msgHash", WORD).hex()


def msg_hash_from_hex(s: object, *, field: str = "msgHash") -> bytes:
    """Parse ``0x`` + exactly 64 hex digits (either case) into 32 bytes."""
    if not isinstance(s, str) or not _MSG_HEX_RE.fullmatch(s):
        raise InvalidFormat(field, "must be a string 0x followed by hex digits")
    if len(s) != 66:
        raise InvalidLength(field, "must be 0x followed by exactly 64 hex digits")
    return bytes.fromhex(s[2:])


def g1_to_gnark_string(p: G1) -> str:
    """gnark's ``G1Affine.String()``: ``E([X,Y])`` in decimal (eigensdk-go ``pubKey``)."""
    return f"E([{p.x},{p.y}])"


def g1_from_gnark_string(s: object, *, field: str, allow_infinity: bool = False) -> G1:
    """Parse ``E([X,Y])`` (decimal coordinates) and validate the point."""
    m = _GNARK_G1_RE.fullmatch(s) if isinstance(s, str) else None
    if m is None:
        raise InvalidFormat(field, "must be E([X,Y]) with decimal coordinates")
    return _g1_from_ints(int(m.group(1)), int(m.group(2)), field, allow_infinity)

"""Threshold math over the BN254 scalar field Fr.

* ``Polynomial``: coefficients mod r (constant term first); the secret-holding
  object, so its repr hides the coefficients.
* Shamir: ``split(secret, t, n, rng)`` gives shares at x = 1..n of a random
  degree t-1 polynomial; any t of them determine the secret, t-1 reveal nothing.
* Lagrange coefficients at 0 for any set of distinct indices in [1, r-1];
  ``combine_g1`` turns t partial signatures s_j*H(m) into sk*H(m) with one MSM.
* Feldman commitments C_k = a_k*G1, share verification and public shares
  P_j = s_j*G1 = sum_k j^k C_k.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from protocol.bn254 import G1, R, g1_msm, g1_mul_generator
from protocol.errors import Fault, InvalidScalar, TkmsError
from protocol.rng import Rng, os_rng, random_scalar


class ThresholdParameterError(TkmsError, ValueError):
    """Threshold parameters that make no sense (t < 1, t > n, n >= r, ...)."""

    fault: ClassVar[Fault] = Fault.LOCAL


def _check_index(index: object, field: str = "index") -> int:
    if isinstance(index, bool) or not isinstance(index, int):
        raise InvalidScalar(field, "a share index must be an integer")
    if not 0 < index < R:
        raise InvalidScalar(field, "a share index must be in [1, r-1]")
    return index


@dataclass(frozen=True, repr=False)
class Polynomial:
    """f(x) = sum coeffs[k] x^k over Fr; coeffs[0] is the secret."""

    coeffs: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.coeffs:
            raise ThresholdParameterError("a polynomial needs at least one coefficient")
        for c in self.coeffs:
            if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < R:
                raise InvalidScalar("coefficient", "not an integer in [0, r)")

    @property
    def degree(self) -> int:
        """Nominal degree (number of coefficients - 1)."""
        return len(self.coeffs) - 1

    def evaluate(self, x: int) -> int:
        """f(x) mod r (Horner)."""
        acc = 0
        x %= R
        for c in reversed(self.coeffs):
            acc = (acc * x + c) % R
        return acc

    def commitments(self) -> tuple[G1, ...]:
        """Feldman commitments (a_0*G1, ..., a_d*G1)."""
        return tuple(g1_mul_generator(c) for c in self.coeffs)

    def __repr__(self) -> str:
        return f"Polynomial(degree={self.degree}, coeffs=<hidden>)"


def random_polynomial(degree: int, rng: Rng = os_rng, *, constant: int | None = None) -> Polynomial:
    """A uniformly random polynomial of the given degree; ``constant`` fixes a_0
    (0 <= constant < r, e.g. 0 for a refresh). Random coefficients are nonzero."""
    if degree < 0:
        raise ThresholdParameterError("degree must be >= 0")
    if constant is not None and (
        isinstance(constant, bool) or not isinstance(constant, int) or not 0 <= constant < R
    ):
        raise InvalidScalar("constant", "not in [0, r)")
    a0 = random_scalar(rng) if constant is None else constant
    return Polynomial((a0, *(random_scalar(rng) for _ in range(degree))))


def _check_t_n(t: int, n: int) -> None:
    if not 1 <= t <= n or n >= R:
        raise ThresholdParameterError("need 1 <= t <= n < r")


def split(secret: int, t: int, n: int, rng: Rng = os_rng) -> dict[int, int]:
    """Shamir shares {j: f(j)} for j = 1..n of a random degree t-1 polynomial with
    f(0) = secret (secret in [1, r-1])."""
    if isinstance(secret, bool) or not isinstance(secret, int) or not 0 < secret < R:
        raise InvalidScalar("secret", "not in [1, r-1]")
    _check_t_n(t, n)
    poly = random_polynomial(t - 1, rng, constant=secret)
    return {j: poly.evaluate(j) for j in range(1, n + 1)}


def lagrange_at_zero(indices: Iterable[int]) -> dict[int, int]:
    """lambda_i = prod_{j != i} j / (j - i) mod r for every i in ``indices``; then
    sum lambda_i f(i) = f(0) for any polynomial of degree < len(indices).
    Rejects duplicates, 0 and indices >= r."""
    idx = [_check_index(i) for i in indices]
    if not idx:
        raise ThresholdParameterError("need at least one index")
    if len(set(idx)) != len(idx):
        raise InvalidScalar("index", "duplicate share index")
    total = 1
    for j in idx:
        total = total * j % R
    out: dict[int, int] = {}
    for i in idx:
        den = i
        for j in idx:
            if j != i:
                den = den * (j - i) % R
        # prod_{j != i} j = total / i, so lambda_i = total / (i * prod_{j != i} (j - i)).
        out[i] = total * pow(den, -1, R) % R
    return out


def combine_g1(partials: Mapping[int, G1]) -> G1:
    """sum lambda_j sigma_j over the given partial signatures (one MSM). With t valid
    partials of a degree t-1 sharing this is sk*H(m)."""
    lam = lagrange_at_zero(partials.keys())
    order = list(partials)
    return g1_msm([partials[j] for j in order], [lam[j] for j in order])


def interpolate_at_zero(shares: Mapping[int, int]) -> int:
    """f(0) from {j: f(j)} (reconstructs a secret: tests and key import only)."""
    lam = lagrange_at_zero(shares.keys())
    acc = 0
    for j, s in shares.items():
        acc = (acc + lam[j] * s) % R
    return acc


def _powers(index: int, count: int) -> list[int]:
    out, acc = [], 1
    for _ in range(count):
        out.append(acc)
        acc = acc * index % R
    return out


def public_share(commitments: Sequence[G1], index: int) -> G1:
    """P_j = sum_k j^k C_k = f(j)*G1 from Feldman commitments."""
    _check_index(index)
    if not commitments:
        raise ThresholdParameterError("no commitments")
    return g1_msm(list(commitments), _powers(index, len(commitments)))


def feldman_verify(index: int, share: int, commitments: Sequence[G1]) -> bool:
    """True iff share*G1 equals the public share the commitments give for ``index``."""
    if isinstance(share, bool) or not isinstance(share, int) or not 0 <= share < R:
        return False
    try:
        expected = public_share(commitments, index)
    except (InvalidScalar, ThresholdParameterError):
        return False
    return g1_mul_generator(share) == expected

"""BN254 (alt_bn128): fields, the groups G1 and G2, and the optimal-ate pairing.

Public API (stable; everything else in this package is internal):

* ``P``, ``R``: the base-field modulus and the group order.
* ``G1``: an immutable affine point on y^2 = x^3 + 3 over Fp. ``x``, ``y`` are ints;
  the point at infinity is (0, 0) as in Solidity. ``G1.from_affine`` validates.
* ``G2``: an immutable affine point on the twist over Fp2. ``x``, ``y`` are
  ``(real, imag)`` pairs of ints (py_ecc / gnark A0,A1 order, NOT Solidity order);
  infinity is ((0, 0), (0, 0)). ``G2.from_affine`` validates (curve and subgroup);
  ``G2.in_subgroup()`` is the fast ψ-based check, ``in_subgroup_slow()`` is r·Q == 0.
* ``g1_mul_generator(k)``, ``g2_mul_generator(k)``: fixed-base multiplication.
* ``g1_msm(points, scalars)``: multi-scalar multiplication in G1.
* ``GT``, ``pairing(P, Q)``, ``prepare_g2(Q)``, ``pairing_check(pairs)``: the pairing,
  precomputed G2 lines for a fixed G2 point, and a product-of-pairings check with
  one shared final exponentiation. ``GT.coeffs()`` are py_ecc's flat Fp12 coefficients.

Inside (gmpy2, all pure Python): ``fields`` (Fp, Fr, GLV constants), ``fp2``, ``fp12``
(one packed integer per element), ``g1``, ``g2``, ``pairing``. Nothing is
constant-time: see docs/threat-model.md.
"""

from protocol.bn254.fields import P, R
from protocol.bn254.g1 import G1, G1_GENERATOR, G1_INFINITY, g1_msm, g1_mul_generator
from protocol.bn254.g2 import G2, G2_GENERATOR, G2_INFINITY, g2_mul_generator
from protocol.bn254.pairing import GT, G2Prepared, pairing, pairing_check, prepare_g2

__all__ = [
    "G1",
    "G1_GENERATOR",
    "G1_INFINITY",
    "G2",
    "G2_GENERATOR",
    "G2_INFINITY",
    "GT",
    "G2Prepared",
    "P",
    "R",
    "g1_msm",
    "g1_mul_generator",
    "g2_mul_generator",
    "pairing",
    "pairing_check",
    "prepare_g2",
]

"""Helpers that generated kernels call, for what Numba does not do directly: the
finiteness test of a result, integer division with C semantics, rounding halves away
from zero, and the special functions that Numba supports in `math` only.

Every helper is `numba.njit(cache=True, error_model="numpy")`: compiled once per machine and type."""

import math

import numba
import numpy as np

# NumPy's error model: x / 0 is inf or nan, as in XLA, not Python's ZeroDivisionError.
_jit = numba.njit(cache=True, error_model="numpy")


@_jit
def all_finite(x):
    """Whether every entry of `x` is finite: the check the host path makes on every
    callback result, here without leaving native code."""
    for v in x.ravel():
        if not np.isfinite(v):
            return False
    return True


# Integer division and remainder as XLA defines them (C: truncation toward zero, the
# remainder with the sign of the dividend); Python's // and % floor instead.


@_jit
def idiv(a, b):
    # Arithmetic, not np.where: a scalar stays a scalar (np.where makes a 0-d array).
    q = np.abs(a) // np.abs(b)
    return q - 2 * q * ((a < 0) != (b < 0))


@_jit
def irem(a, b):
    return a - idiv(a, b) * b


# Special functions: Numba has them in `math`, on scalars.


@numba.vectorize(cache=True)
def erf(x):
    return math.erf(x)


@numba.vectorize(cache=True)
def erfc(x):
    return math.erfc(x)


@numba.vectorize(cache=True)
def lgamma(x):
    return math.lgamma(x)


@_jit
def round_away(x):
    """XLA's `round` with `rounding_method=0`: halves away from zero."""
    # `floor(|x| + 0.5)` would round 0.49999999999999994 up; `x - trunc(x)` is exact.
    r = np.trunc(x)
    return r + np.sign(x) * (np.abs(x - r) >= 0.5)


@_jit
def logistic(x):
    return 1.0 / (1.0 + np.exp(-x))

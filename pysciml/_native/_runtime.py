"""Helpers that generated kernels call, for what NumPy-in-Numba does not do directly:
partial reductions, integer division with C semantics, batched matrix products, and
the special functions that Numba supports on scalars only.

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


# Partial reductions. Generated code moves the reduced axes last and reshapes to
# `(kept, reduced)`; Numba's `np.sum(x, axis=...)` takes one axis, and `np.max` none.


@_jit
def rows_sum(a):
    out = np.zeros(a.shape[0], a.dtype)
    for i in range(a.shape[0]):
        s = out[i]
        for j in range(a.shape[1]):
            s += a[i, j]
        out[i] = s
    return out


@_jit
def rows_prod(a):
    out = np.ones(a.shape[0], a.dtype)
    for i in range(a.shape[0]):
        s = out[i]
        for j in range(a.shape[1]):
            s *= a[i, j]
        out[i] = s
    return out


@_jit
def rows_max(a):
    # XLA's max propagates NaN, as np.maximum does.
    out = np.empty(a.shape[0], a.dtype)
    for i in range(a.shape[0]):
        s = a[i, 0]
        for j in range(1, a.shape[1]):
            s = np.maximum(s, a[i, j])
        out[i] = s
    return out


@_jit
def rows_min(a):
    out = np.empty(a.shape[0], a.dtype)
    for i in range(a.shape[0]):
        s = a[i, 0]
        for j in range(1, a.shape[1]):
            s = np.minimum(s, a[i, j])
        out[i] = s
    return out


@_jit
def rows_all(a):
    out = np.empty(a.shape[0], np.bool_)
    for i in range(a.shape[0]):
        s = True
        for j in range(a.shape[1]):
            s = s and bool(a[i, j])
        out[i] = s
    return out


@_jit
def rows_any(a):
    out = np.empty(a.shape[0], np.bool_)
    for i in range(a.shape[0]):
        s = False
        for j in range(a.shape[1]):
            s = s or bool(a[i, j])
        out[i] = s
    return out


@_jit
def matmul(a, b):
    """`a @ b` for 2D arrays of any dtype: BLAS for floats, loops otherwise (Numba's
    `np.dot` takes floats only)."""
    return np.dot(np.ascontiguousarray(a), np.ascontiguousarray(b))


@_jit
def matmul_loops(a, b):
    out = np.zeros((a.shape[0], b.shape[1]), a.dtype)
    for i in range(a.shape[0]):
        for k in range(a.shape[1]):
            aik = a[i, k]
            for j in range(b.shape[1]):
                out[i, j] += aik * b[k, j]
    return out


@_jit
def batched_matmul(a, b):
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), a.dtype)
    for i in range(a.shape[0]):
        out[i] = np.dot(np.ascontiguousarray(a[i]), np.ascontiguousarray(b[i]))
    return out


@_jit
def batched_matmul_loops(a, b):
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), a.dtype)
    for i in range(a.shape[0]):
        out[i] = matmul_loops(a[i], b[i])
    return out


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

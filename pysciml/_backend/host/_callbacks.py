"""Callbacks from the host solver into JAX: `host_callbacks` builds, once per problem
and cached, the jitted NumPy-in, NumPy-out float64 `HostCallbacks` of one flat vector
field (`f`, the fused VJPs, dense Jacobians, and a `SparseJacobian` when the problem
gives a sparsity pattern). Each is wrapped by `_codes._checked`."""

import functools as ft
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..._flatten import FlatVectorField
from ._codes import _checked
from ._sparse import SparseJacobian


class HostCallbacks(NamedTuple):
    """NumPy-in, NumPy-out float64 callbacks for one flat vector field. Each is a single
    jitted JAX call: the VJPs are fused so that one evaluation of an adjoint right-hand
    side is one call."""

    n: int
    m: int
    f: Any  # (t, y, p) -> dy
    vjp: Any  # (t, y, p, lam) -> concat(λᵀ∂f/∂y, λᵀ∂f/∂p)
    f_vjp: Any  # (t, y, p, lam) -> concat(f, λᵀ∂f/∂y, λᵀ∂f/∂p)
    jac: Any  # (t, y, p) -> ∂f/∂y, shape (n, n)
    jac_p: Any  # (t, y, p) -> ∂f/∂p, shape (n, m)
    sparse: "SparseJacobian | None" = None  # when the problem gives a sparsity


@ft.lru_cache(maxsize=64)
def host_callbacks(
    field: FlatVectorField, n: int, m: int, sparsity=None
) -> HostCallbacks:
    """Builds (once per problem: `field` compares by structure, `sparsity`, the
    problem's frozen pattern, by identity) the jitted callbacks."""

    def f(t, y, p):
        return field(t, y, p)

    def vjp(t, y, p, lam):
        _, pullback = jax.vjp(lambda y_, p_: field(t, y_, p_), y, p)
        return jnp.concatenate(pullback(lam))

    def f_vjp(t, y, p, lam):
        dy, pullback = jax.vjp(lambda y_, p_: field(t, y_, p_), y, p)
        return jnp.concatenate([dy, *pullback(lam)])

    def jac(t, y, p):
        return jax.jacfwd(field, argnums=1)(t, y, p)

    def jac_p(t, y, p):
        return jax.jacfwd(field, argnums=2)(t, y, p).reshape(n, m)

    return HostCallbacks(
        n=n,
        m=m,
        f=_checked(jax.jit(f), "the vector field"),
        vjp=_checked(jax.jit(vjp), "the vector-Jacobian product of the vector field"),
        f_vjp=_checked(jax.jit(f_vjp), "the vector field"),
        jac=_checked(jax.jit(jac), "the Jacobian of the vector field"),
        jac_p=_checked(jax.jit(jac_p), "the parameter Jacobian of the vector field"),
        sparse=None if sparsity is None else SparseJacobian(field, n, m, sparsity.value),
    )


def _all_finite(*arrays: np.ndarray) -> bool:
    return all(np.isfinite(a).all() for a in arrays)

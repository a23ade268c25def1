"""Exact sparse Jacobians on the host path, as units: the column colouring
(`greedy_colouring`) and `SparseJacobian` against `jax.jacfwd`. Solves with sparse
Jacobians are in `tests/test_pde_heat.py`."""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

import pysciml.pde as pde
from pysciml._backend.host import SparseJacobian, greedy_colouring
from pysciml._flatten import FlatVectorField, spec_of, split_args


def _gray_scott_2d():
    grid = pde.Grid2D((0.0, 1.0), (0.0, 1.0), (5, 6), pde.Periodic())

    def f(t, y, p):
        u, v = y
        r = u * v**2
        return (p[0] * pde.laplacian(u, grid) - r + p[2] * (1 - u),
                p[1] * pde.laplacian(v, grid) + r - (p[2] + p[3]) * v)

    rng = np.random.default_rng(0)
    y = (jnp.asarray(rng.uniform(0.3, 1, grid.shape)),
         jnp.asarray(rng.uniform(0.1, 0.5, grid.shape)))
    return grid, f, y, jnp.array([0.2, 0.1, 0.04, 0.06])


def test_greedy_colouring_is_valid_and_small():
    grid, _, _, _ = _gray_scott_2d()
    for pattern, most in ((pde.Grid1D(0.0, 1.0, 50, pde.Dirichlet(0.0)).jac_sparsity(), 3),
                          (pde.Grid1D(0.0, 1.0, 50, pde.Periodic()).jac_sparsity(), 5),
                          (pde.Grid2D((0, 1), (0, 1), (20, 20),
                                      pde.Neumann(0.0)).jac_sparsity(), 7),
                          (grid.jac_sparsity(fields=2), 14)):
        colours = greedy_colouring(pattern)
        s = sp.csc_matrix(pattern)
        for c in range(colours.max() + 1):
            # No row has two nonzeros among the columns of one colour.
            assert s[:, colours == c].sum(axis=1).max() <= 1
        assert colours.max() + 1 <= most


def test_sparse_jacobians_are_exact():
    """`SparseJacobian.jac` equals `jax.jacfwd` of the flat field, and `adjoint_jac`
    the adjoint system's `[[-Jᵀ, 0], [-J_pᵀ, 0]]`, on a two-field 2D problem."""
    grid, f, y, p = _gray_scott_2d()
    dyn, static = split_args(p)
    field = FlatVectorField(f, spec_of(y), spec_of(dyn), static)
    n, m = 2 * grid.size, 4
    y_flat = spec_of(y).flatten(y)
    jac = SparseJacobian(field, n, m, grid.jac_sparsity(fields=2))
    with jax.enable_x64(True):
        got = jac.jac(0.0, np.asarray(y_flat), p)
        got_adj = jac.adjoint_jac(0.0, np.asarray(y_flat), p)
        dense = np.asarray(jax.jacfwd(field, argnums=1)(0.0, y_flat, p))
        dense_p = np.asarray(jax.jacfwd(field, argnums=2)(0.0, y_flat, p))
    assert isinstance(got, sp.csc_matrix)
    np.testing.assert_allclose(got.toarray(), dense, rtol=1e-14, atol=1e-14)
    expected = np.zeros((n + m, n + m))
    expected[:n, :n] = -dense.T
    expected[n:, :n] = -dense_p.T
    np.testing.assert_allclose(got_adj.toarray(), expected, rtol=1e-14, atol=1e-14)

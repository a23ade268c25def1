"""The heat equation by the method of lines, against independent truth: the exact
semi-discrete solution (the discrete Laplacian's eigen-decomposition is known in closed
form: sine vectors), the continuum solution, and the closed-form gradients of both.
Also solves with the exact sparse Jacobians of the SciPy backend (the colouring and
`SparseJacobian` themselves are tested as units in `tests/host/test_host_sparse.py`)
and the sparsity pattern handed to the Julia bridge."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

import pysciml as ps
import pysciml.pde as pde
from pysciml._backend.scipy import ScipyBackend

D_TRUE = 0.5
TS = np.array([0.02, 0.05, 0.1, 0.2])
TIGHT = dict(rtol=1e-10, atol=1e-12, max_steps=100_000)


def heat(grid):
    def f(t, u, diffusivity):
        return diffusivity * pde.laplacian(u, grid)

    return f


class SemiDiscrete:
    """`du/dt = D A u` for the Dirichlet Laplacian A on n interior nodes of [0, 1]: A =
    V diag(lam) Vᵀ with V[j, k] = sqrt(2/(n+1)) sin(k π x_j) and lam_k = -(4/dx²)
    sin²(k π dx / 2), k = 1..n. Written here from the formula, not from pysciml."""

    def __init__(self, n):
        self.n = n
        dx = 1.0 / (n + 1)
        x = dx * np.arange(1, n + 1)
        k = np.arange(1, n + 1)
        self.x = x
        self.v = np.sqrt(2 / (n + 1)) * np.sin(np.pi * np.outer(x, k))
        self.lam = -4 / dx**2 * np.sin(k * np.pi * dx / 2) ** 2

    def solve(self, u0, d, ts):
        c = self.v.T @ u0
        return np.stack([self.v @ (np.exp(d * self.lam * t) * c) for t in ts])

    def loss_and_grads(self, u0, d, ts, w):
        """L = sum(w * u(ts)); returns (L, dL/du0, dL/dD)."""
        c = self.v.T @ u0
        ys = self.solve(u0, d, ts)
        dd = sum(w[i] @ (self.v @ (self.lam * t * np.exp(d * self.lam * t) * c))
                 for i, t in enumerate(ts))
        du0 = sum(self.v @ (np.exp(d * self.lam * t) * (self.v.T @ w[i]))
                  for i, t in enumerate(ts))
        return float(np.sum(w * ys)), du0, float(dd)


def initial(x):
    # Smooth, but with every sine mode present (the last term is not a sine series).
    return np.sin(np.pi * x) + 0.5 * np.sin(3 * np.pi * x) + 0.3 * x * (1 - x)


def weights(x):
    return np.sin(2 * np.pi * x)[None, :] * np.arange(1, 5)[:, None] + 0.3


def _problem(grid, sparse=True, t1=0.2):
    return ps.ODEProblem(heat(grid), 0.0, t1,
                         jac_sparsity=grid.jac_sparsity() if sparse else None)


# (backend, solver, sensitivity, sparsity) for value and gradient checks.
SOLVES = [
    pytest.param("diffrax", ps.Tsit5(), ps.DiscreteAdjoint(), False, id="diffrax-Tsit5"),
    pytest.param("scipy", ps.Dopri5(), ps.InterpolatingAdjoint(), False,
                 id="scipy-Dopri5"),
    pytest.param("scipy", ps.RadauIIA5(), ps.InterpolatingAdjoint(), True,
                 id="scipy-Radau-sparse"),
    pytest.param("scipy", ps.QNDF(), ps.InterpolatingAdjoint(), True,
                 id="scipy-BDF-sparse"),
    pytest.param(ScipyBackend(sparse_jacobian="finite_differences"), ps.QNDF(),
                 ps.InterpolatingAdjoint(), True, id="scipy-BDF-sparse-fd"),
    pytest.param("scipy", ps.QNDF(), ps.InterpolatingAdjoint(), False,
                 id="scipy-BDF-dense"),
    pytest.param("scipy", ps.LSODA(), ps.InterpolatingAdjoint(), True,
                 id="scipy-LSODA"),
    # The state is re-integrated backward (anti-diffusion): fine at n = 16 and these
    # tolerances with explicit solvers. (Diffrax Kvaerno5 + BacksolveAdjoint is off by
    # 1% here, and takes ~50 s to compile: not tested.)
    pytest.param("diffrax", ps.Tsit5(), ps.BacksolveAdjoint(), False,
                 id="diffrax-Tsit5-backsolve"),
    pytest.param("scipy", ps.Dopri5(), ps.BacksolveAdjoint(), False,
                 id="scipy-Dopri5-backsolve"),
]
SLOW_SOLVES = [
    # Passes (6e-9), unlike on the stiffer system of tests/host/test_host_solves.py
    # (`test_stiff_gradient_along_an_unexcited_fast_mode`); compiling it
    # takes 10-25 s on two busy cores.
    pytest.param("diffrax", ps.Kvaerno5(), ps.DiscreteAdjoint(), False,
                 id="diffrax-Kvaerno5", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("backend,solver,sensitivity,sparse", SOLVES + SLOW_SOLVES)
def test_heat_gradients_match_the_semidiscrete_closed_form(backend, solver,
                                                           sensitivity, sparse):
    """Values to 1e-8 and gradients (w.r.t. u0 and D) to 1e-6, relative, at rtol =
    1e-10, on n = 16 (small enough for explicit solvers)."""
    n = 16
    grid = pde.Grid1D(0.0, 1.0, n, pde.Dirichlet(0.0))
    exact = SemiDiscrete(n)
    np.testing.assert_allclose(grid.x, exact.x, rtol=1e-14)
    u0, w = initial(grid.x), weights(grid.x)
    problem = _problem(grid, sparse)

    def loss(u0, d):
        ys = ps.solve(problem, u0, d, saveat=jnp.asarray(TS), backend=backend,
                      solver=solver, sensitivity=sensitivity, **TIGHT).ys
        return jnp.sum(jnp.asarray(w) * ys), ys

    (value, ys), (g_u0, g_d) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        jnp.asarray(u0), D_TRUE)
    value_ex, du0_ex, dd_ex = exact.loss_and_grads(u0, D_TRUE, TS, w)
    np.testing.assert_allclose(ys, exact.solve(u0, D_TRUE, TS), rtol=0, atol=1e-8)
    assert abs(float(g_d) - dd_ex) <= 1e-6 * abs(dd_ex)
    assert np.abs(np.asarray(g_u0) - du0_ex).max() <= 1e-6 * np.abs(du0_ex).max()


def test_heat_semidiscrete_to_solver_tolerance_at_moderate_tolerances():
    """At rtol = 1e-6 the error against the exact semi-discrete solution is of the
    order of the tolerance (not of dx²): the solver, not the grid, sets it."""
    n = 64
    grid = pde.Grid1D(0.0, 1.0, n, pde.Dirichlet(0.0))
    exact = SemiDiscrete(n)
    u0 = initial(grid.x)
    for solver in (ps.QNDF(), ps.RadauIIA5()):
        ys = ps.solve(_problem(grid), jnp.asarray(u0), D_TRUE, saveat=jnp.asarray(TS),
                      backend="scipy", solver=solver, rtol=1e-6, atol=1e-9).ys
        err = np.abs(np.asarray(ys) - exact.solve(u0, D_TRUE, TS)).max()
        assert err < 2e-5, (solver, err)


@pytest.mark.parametrize("bc", ["dirichlet", "neumann"])
def test_heat_converges_to_the_continuum_at_second_order(bc):
    """u = e^{-Dπ²t} sin(πx) (Dirichlet) or 1 + e^{-Dπ²t} cos(πx) (no-flux Neumann):
    the method-of-lines solution converges at O(dx²)."""
    errs, dxs = [], []
    for n in (16, 32, 64, 128):
        if bc == "dirichlet":
            grid = pde.Grid1D(0.0, 1.0, n, pde.Dirichlet(0.0))
            shape, offset = np.sin, 0.0
        else:
            grid = pde.Grid1D(0.0, 1.0, n, pde.Neumann(0.0))
            shape, offset = np.cos, 1.0
        u0 = offset + shape(np.pi * grid.x)
        ys = ps.solve(_problem(grid), jnp.asarray(u0), D_TRUE, saveat=jnp.asarray(TS),
                      backend="scipy", solver=ps.QNDF(), **TIGHT).ys
        cont = offset + np.exp(-D_TRUE * np.pi**2 * TS)[:, None] * shape(np.pi * grid.x)
        errs.append(np.abs(np.asarray(ys) - cont).max())
        dxs.append(grid.dx)
    order = np.polyfit(np.log(dxs), np.log(errs), 1)[0]
    assert order > 1.9, (order, errs)
    assert errs[-1] < 1e-4


def test_stiff_solver_handles_n_512():
    """N = 512: stiffness ratio ~1e5 (|lam_max| D t1 ~ 2e5). BDF with the sparse
    Jacobian takes a few hundred steps; value and gradient match the closed form."""
    n = 512
    grid = pde.Grid1D(0.0, 1.0, n, pde.Dirichlet(0.0))
    exact = SemiDiscrete(n)
    u0, w = initial(grid.x), weights(grid.x)
    problem = _problem(grid)

    def loss(d):
        sol = ps.solve(problem, jnp.asarray(u0), d, saveat=jnp.asarray(TS),
                       backend="scipy", solver=ps.QNDF(), rtol=1e-8, atol=1e-10)
        return jnp.sum(jnp.asarray(w) * sol.ys), sol

    (_, sol), g = jax.value_and_grad(loss, has_aux=True)(D_TRUE)
    _, _, dd_ex = exact.loss_and_grads(u0, D_TRUE, TS, w)
    np.testing.assert_allclose(sol.ys, exact.solve(u0, D_TRUE, TS), atol=1e-6)
    assert abs(float(g) - dd_ex) < 1e-5 * abs(dd_ex)
    assert int(sol.stats["num_steps"]) < 1000


def test_2d_heat_matches_the_product_solution():
    """64 x 64 grid (4096 unknowns), 5-point stencil: sin(πx) sin(2πy) decays as
    exp(D (lam_1(x) + lam_2(y)) t), exactly for the semi-discrete problem."""
    grid = pde.Grid2D((0.0, 1.0), (0.0, 1.0), (64, 64), pde.Dirichlet(0.0))
    x, y = grid.mesh()
    u0 = np.sin(np.pi * x) * np.sin(2 * np.pi * y)
    ts = np.array([0.01, 0.05])
    problem = ps.ODEProblem(lambda t, u, d: d * pde.laplacian(u, grid), 0.0, 0.05,
                            jac_sparsity=grid.jac_sparsity())
    ys = ps.solve(problem, jnp.asarray(u0), D_TRUE, saveat=jnp.asarray(ts),
                  backend="scipy", solver=ps.QNDF(), rtol=1e-8, atol=1e-10).ys
    lam = sum(-4 / h**2 * np.sin(k * np.pi * h / 2) ** 2
              for k, h in ((1, grid.dx), (2, grid.dy)))
    exact = np.exp(D_TRUE * lam * ts)[:, None, None] * u0
    np.testing.assert_allclose(ys, exact, atol=1e-6)


# ------------------------------------------------------ exact sparse Jacobians


def test_exact_sparse_jacobian_saves_vector_field_calls(monkeypatch):
    """Same solution with SciPy's finite differences and with the exact Jacobian; the
    exact one makes no calls of f for its Jacobians (SciPy's finite differences make
    `colours + 1` per Jacobian, which its `nfev` does not count)."""
    grid = pde.Grid1D(0.0, 1.0, 256, pde.Dirichlet(0.0))
    problem = _problem(grid)
    u0 = jnp.asarray(initial(grid.x))
    calls = []
    original = ScipyBackend._callbacks

    def counting(self, problem, n, m):
        cb = original(self, problem, n, m)
        return cb._replace(f=lambda *a: calls.append(1) or cb.f(*a))

    monkeypatch.setattr(ScipyBackend, "_callbacks", counting)
    out = {}
    for name, backend in (("exact", ScipyBackend()),
                          ("fd", ScipyBackend(sparse_jacobian="finite_differences"))):
        calls.clear()
        sol = ps.solve(problem, u0, D_TRUE, saveat=jnp.asarray(TS), backend=backend,
                       solver=ps.QNDF(), rtol=1e-8, atol=1e-10)
        out[name] = (sol.ys, int(sol.stats["num_fevals"]), len(calls))
    np.testing.assert_allclose(out["exact"][0], out["fd"][0], atol=1e-7)
    assert out["exact"][2] == out["exact"][1]  # f calls = SciPy's nfev
    assert out["fd"][2] > out["fd"][1]  # plus the finite differences


def test_wrong_sparsity_shape_is_a_clear_error():
    grid = pde.Grid1D(0.0, 1.0, 8, pde.Dirichlet(0.0))
    problem = ps.ODEProblem(heat(grid), 0.0, 1.0, jac_sparsity=grid.jac_sparsity(2))
    with pytest.raises(ValueError, match=r"jac_sparsity=.*\(16, 16\).*\(8, 8\)"):
        ps.solve(problem, jnp.ones(8), 1.0, saveat=jnp.array([1.0]), backend="scipy",
                 solver=ps.QNDF())


def test_scipy_backend_option_is_checked():
    with pytest.raises(ValueError, match="sparse_jacobian"):
        ScipyBackend(sparse_jacobian="colour")


def test_julia_gets_the_pattern_as_one_based_coo():
    """What `JuliaBackend` sends to the bridge (which builds the `jac_prototype`)."""
    from pysciml._backend.julia import _jac_pattern

    grid = pde.Grid1D(0.0, 1.0, 5, pde.Periodic())
    pattern = grid.jac_sparsity()
    problem = ps.ODEProblem(heat(grid), 0.0, 1.0, jac_sparsity=pattern)
    rows, cols = _jac_pattern(problem)
    assert rows.dtype == cols.dtype == np.int64 and rows.min() == 1
    rebuilt = sp.coo_matrix((np.ones(len(rows)), (rows - 1, cols - 1)), shape=(5, 5))
    np.testing.assert_array_equal(rebuilt.toarray() != 0, pattern.toarray())
    rows, cols = _jac_pattern(ps.ODEProblem(heat(grid), 0.0, 1.0))
    assert rows.size == cols.size == 0

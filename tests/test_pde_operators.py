"""`pysciml.pde` operators against analytic derivatives of smooth functions: each
converges at the order its docstring states, for every boundary condition; the
Jacobian sparsity that the grid reports matches `jax.jacfwd`; conservation and the
argument errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pysciml.pde as pde

NS = (16, 32, 64, 128)


# A smooth, non-periodic test function with nonzero derivatives of every order at both
# ends, and a periodic one on [0, 1].
def u_(x):
    return np.sin(2 * x + 0.3) + 0.5 * x**3


def du_(x):
    return 2 * np.cos(2 * x + 0.3) + 1.5 * x**2


def d2u_(x):
    return -4 * np.sin(2 * x + 0.3) + 3 * x


def up_(x):
    return np.exp(np.sin(2 * np.pi * x))


def dup_(x):
    return 2 * np.pi * np.cos(2 * np.pi * x) * up_(x)


def d2up_(x):
    c, s = np.cos(2 * np.pi * x), np.sin(2 * np.pi * x)
    return (2 * np.pi) ** 2 * (c**2 - s) * up_(x)


# name: (u, u', u'', boundary conditions built from the exact function)
CASES = {
    "dirichlet": (u_, du_, d2u_, (pde.Dirichlet(u_(0.0)), pde.Dirichlet(u_(1.0)))),
    # Neumann values are *outward* normal derivatives: -u'(0) on the left.
    "neumann": (u_, du_, d2u_, (pde.Neumann(-du_(0.0)), pde.Neumann(du_(1.0)))),
    "dirichlet_neumann": (u_, du_, d2u_, (pde.Dirichlet(u_(0.0)), pde.Neumann(du_(1.0)))),
    "neumann_dirichlet": (u_, du_, d2u_, (pde.Neumann(-du_(0.0)), pde.Dirichlet(u_(1.0)))),
    "periodic": (up_, dup_, d2up_, pde.Periodic()),
}


def _neumann_mask(grid):
    """True at the Neumann boundary nodes (where some operators drop one order)."""
    ax = grid.axes[0]
    mask = np.zeros(grid.n, bool)
    mask[0] = isinstance(ax.bc_lo, pde.Neumann)
    mask[-1] = isinstance(ax.bc_hi, pde.Neumann)
    return mask


def _order(dxs, errs):
    """Least-squares slope of log(error) against log(dx)."""
    return np.polyfit(np.log(dxs), np.log(errs), 1)[0]


def _convergence(case, op, exact, *, at="nodes"):
    """Errors of `op(grid, u at nodes)` against `exact(positions)` over NS, split into
    (interior, Neumann boundary nodes). Returns (dxs, interior errs, boundary errs)."""
    f, _, _, bc = CASES[case]
    dxs, inner, edge = [], [], []
    for n in NS:
        grid = pde.Grid1D(0.0, 1.0, n, bc)
        got = np.asarray(op(grid, jnp.asarray(f(grid.x))))
        pos = grid.x if at == "nodes" else grid.faces
        err = np.abs(got - exact(pos))
        mask = _neumann_mask(grid) if at == "nodes" else np.zeros(len(pos), bool)
        dxs.append(grid.dx)
        inner.append(err[~mask].max())
        edge.append(err[mask].max() if mask.any() else np.nan)
    return np.array(dxs), np.array(inner), np.array(edge)


def _assert_order(dxs, errs, order, what):
    errs = np.asarray(errs)
    if np.all(errs < 1e-11):  # exact up to rounding
        return
    slope = _order(dxs, errs)
    assert slope > order - 0.15, f"{what}: observed order {slope:.2f}, stated {order}"


@pytest.mark.parametrize("case", list(CASES))
def test_laplacian_second_order_first_at_neumann_nodes(case):
    _, _, d2u, _ = CASES[case]
    dxs, inner, edge = _convergence(case, lambda g, u: pde.laplacian(u, g), d2u)
    _assert_order(dxs, inner, 2, f"laplacian ({case}), interior")
    if "neumann" in case:
        _assert_order(dxs, edge, 1, f"laplacian ({case}), Neumann node")
    # Finest grid (n = 128): small relative to u'' too.
    assert inner[-1] < 2e-3 * np.abs(d2u(np.linspace(0, 1, 100))).max()


@pytest.mark.parametrize("case", list(CASES))
def test_central_gradient_second_order(case):
    _, du, _, _ = CASES[case]
    dxs, inner, edge = _convergence(case, lambda g, u: pde.gradient(u, g), du)
    _assert_order(dxs, inner, 2, f"central gradient ({case})")
    if "neumann" in case:  # the prescribed derivative, exactly
        assert np.all(edge < 1e-10)


@pytest.mark.parametrize("velocity", [1.0, -1.0])
@pytest.mark.parametrize("case", list(CASES))
def test_upwind_gradient_first_order(case, velocity):
    _, du, _, _ = CASES[case]

    def op(g, u):
        return pde.gradient(u, g, scheme="upwind", velocity=velocity)

    dxs, inner, edge = _convergence(case, op, du)
    _assert_order(dxs, inner, 1, f"upwind gradient ({case}, v={velocity})")
    if "neumann" in case:
        _assert_order(dxs, edge, 1, f"upwind gradient ({case}), Neumann node")


def test_upwind_picks_the_side_the_flow_comes_from():
    grid = pde.Grid1D(0.0, 1.0, 8, pde.Periodic())
    u = jnp.arange(8.0) ** 2
    v = jnp.where(jnp.arange(8) < 4, 1.0, -1.0)
    g = pde.gradient(u, grid, scheme="upwind", velocity=v)
    backward = (u - jnp.roll(u, 1)) / grid.dx
    forward = (jnp.roll(u, -1) - u) / grid.dx
    np.testing.assert_allclose(g, jnp.where(v > 0, backward, forward))


@pytest.mark.parametrize("case", list(CASES))
def test_face_gradient_second_order(case):
    _, du, _, _ = CASES[case]
    dxs, inner, _ = _convergence(case, lambda g, u: pde.face_gradient(u, g), du,
                                 at="faces")
    _assert_order(dxs, inner, 2, f"face gradient ({case})")


@pytest.mark.parametrize("case", list(CASES))
def test_flux_divergence_of_exact_fluxes(case):
    # F = a smooth flux known at the faces; its divergence F' at the nodes.
    periodic = case == "periodic"
    flux = (lambda x: np.cos(2 * np.pi * x)) if periodic else (lambda x: np.exp(x) * x)
    dflux = ((lambda x: -2 * np.pi * np.sin(2 * np.pi * x)) if periodic
             else (lambda x: np.exp(x) * (1 + x)))
    _, _, _, bc = CASES[case]
    dxs, inner, edge = [], [], []
    for n in NS:
        grid = pde.Grid1D(0.0, 1.0, n, bc)
        err = np.abs(np.asarray(pde.flux_divergence(jnp.asarray(flux(grid.faces)), grid))
                     - dflux(grid.x))
        mask = _neumann_mask(grid)
        dxs.append(grid.dx)
        inner.append(err[~mask].max())
        edge.append(err[mask].max() if mask.any() else np.nan)
    _assert_order(dxs, inner, 2, f"flux divergence ({case}), interior")
    if "neumann" in case:
        _assert_order(dxs, edge, 1, f"flux divergence ({case}), Neumann node")


@pytest.mark.parametrize("case", list(CASES))
def test_variable_coefficient_diffusion_second_order(case):
    """∇·(D∇u) = (D u')' with D(x) = 1 + 0.5 sin(kx) at the faces."""
    f, du, d2u, bc = CASES[case]
    k = 2 * np.pi if case == "periodic" else 3.0  # D periodic on a periodic grid

    def diff(x):
        return 1 + 0.5 * np.sin(k * x)

    def exact(x):
        return 0.5 * k * np.cos(k * x) * du(x) + diff(x) * d2u(x)

    def op(g, u):
        return pde.flux_divergence(diff(g.faces) * pde.face_gradient(u, g), g)

    dxs, inner, edge = _convergence(case, op, exact)
    _assert_order(dxs, inner, 2, f"div(D grad u) ({case}), interior")
    if "neumann" in case:
        _assert_order(dxs, edge, 1, f"div(D grad u) ({case}), Neumann node")


@pytest.mark.parametrize("case", list(CASES))
def test_flux_divergence_of_face_gradient_is_the_laplacian(case):
    _, _, _, bc = CASES[case]
    grid = pde.Grid1D(0.0, 1.0, 11, bc)
    u = jnp.asarray(np.random.default_rng(0).normal(size=11))
    np.testing.assert_allclose(
        pde.flux_divergence(pde.face_gradient(u, grid), grid), pde.laplacian(u, grid),
        rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("bc", [pde.Neumann(0.0), pde.Periodic()],
                         ids=["no-flux", "periodic"])
def test_conservation(bc):
    grid = pde.Grid1D(0.0, 2.0, 13, bc)
    rng = np.random.default_rng(1)
    u = jnp.asarray(rng.normal(size=13))
    assert abs(float(jnp.sum(grid.weights * pde.laplacian(u, grid)))) < 1e-10
    flux = jnp.asarray(rng.normal(size=len(grid.faces)))
    total = float(jnp.sum(grid.weights * pde.flux_divergence(flux, grid)))
    boundary = 0.0 if isinstance(bc, pde.Periodic) else float(flux[-1] - flux[0])
    assert abs(total - boundary) < 1e-12


def test_grid_layout():
    g = pde.Grid1D(0.0, 1.0, 4, pde.Dirichlet(0.0))
    np.testing.assert_allclose(g.x, [0.2, 0.4, 0.6, 0.8])
    g = pde.Grid1D(0.0, 1.0, 5, pde.Neumann(0.0))
    np.testing.assert_allclose(g.x, [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(g.faces, [0.0, 0.125, 0.375, 0.625, 0.875, 1.0])
    np.testing.assert_allclose(g.weights, [0.125, 0.25, 0.25, 0.25, 0.125])
    g = pde.Grid1D(0.0, 1.0, 4, pde.Periodic())
    np.testing.assert_allclose(g.x, [0.0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(g.faces, [0.125, 0.375, 0.625, 0.875])
    g = pde.Grid2D((0.0, 1.0), (0.0, 2.0), (3, 4),
                   (pde.Dirichlet(0.0), (pde.Neumann(0.0), pde.Dirichlet(0.0))))
    assert g.shape == (3, 4) and g.mesh()[0].shape == (3, 4)
    np.testing.assert_allclose(g.x, [0.25, 0.5, 0.75])
    np.testing.assert_allclose(g.y, [0.0, 0.5, 1.0, 1.5])


# ---------------------------------------------------------------------------- 2D


def _u2(x, y):
    return np.sin(2 * x + 0.3) * np.cos(1.5 * y - 0.2)


def _u2_lap(x, y):
    return -(4 + 2.25) * _u2(x, y)


def _u2_dx(x, y):
    return 2 * np.cos(2 * x + 0.3) * np.cos(1.5 * y - 0.2)


def _u2_dy(x, y):
    return -1.5 * np.sin(2 * x + 0.3) * np.sin(1.5 * y - 0.2)


def _grid2(n, kind):
    shape = (n, 2 * n)
    if kind == "dirichlet_x_neumann_y":
        g = pde.Grid2D((0.0, 1.0), (0.0, 2.0), shape, (pde.Dirichlet(0.0), pde.Neumann(0.0)))
        # Boundary values along each side, at the unknowns of the other axis.
        return g.with_bc((
            (pde.Dirichlet(_u2(0.0, g.y)), pde.Dirichlet(_u2(1.0, g.y))),
            (pde.Neumann(-_u2_dy(g.x, 0.0)), pde.Neumann(_u2_dy(g.x, 2.0))),
        ))
    # periodic along y on [0, 4π/3] (cos(1.5 y) has period 4π/3), Dirichlet along x
    g = pde.Grid2D((0.0, 1.0), (0.0, 4 * np.pi / 3), shape,
                   (pde.Dirichlet(0.0), pde.Periodic()))
    return g.with_bc(((pde.Dirichlet(_u2(0.0, g.y)), pde.Dirichlet(_u2(1.0, g.y))),
                      pde.Periodic()))


@pytest.mark.parametrize("kind", ["dirichlet_x_neumann_y", "dirichlet_x_periodic_y"])
def test_2d_operators_converge(kind):
    dxs, dys, lap, gx, gy = [], [], [], [], []
    for n in (16, 32, 64):
        g = _grid2(n, kind)
        x, y = g.mesh()
        u = jnp.asarray(_u2(x, y))
        interior = (slice(None), slice(1, -1)) if "neumann" in kind else ...
        lap.append(np.abs(np.asarray(pde.laplacian(u, g)) - _u2_lap(x, y))[interior].max())
        dux, duy = pde.gradient(u, g)
        gx.append(np.abs(np.asarray(dux) - _u2_dx(x, y)).max())
        gy.append(np.abs(np.asarray(duy) - _u2_dy(x, y)).max())
        dxs.append(g.dx)
        dys.append(g.dy)
    _assert_order(np.maximum(dxs, dys), lap, 2, f"2D laplacian ({kind})")
    _assert_order(dxs, gx, 2, f"2D gradient x ({kind})")
    _assert_order(dys, gy, 2, f"2D gradient y ({kind})")


def test_2d_flux_divergence_matches_laplacian_and_upwind_shapes():
    g = _grid2(6, "dirichlet_x_neumann_y")
    u = jnp.asarray(np.random.default_rng(2).normal(size=g.shape))
    fx, fy = pde.face_gradient(u, g)
    assert fx.shape == (len(g.faces[0]), g.shape[1])
    assert fy.shape == (g.shape[0], len(g.faces[1]))
    np.testing.assert_allclose(pde.flux_divergence((fx, fy), g), pde.laplacian(u, g),
                               rtol=1e-12, atol=1e-9)
    ux, uy = pde.gradient(u, g, scheme="upwind", velocity=(1.0, -jnp.ones(g.shape)))
    assert ux.shape == uy.shape == g.shape


# ---------------------------------------------------------------------- sparsity


def _field_1d(grid):
    def f(u):
        return (pde.laplacian(u, grid) + pde.gradient(u, grid, scheme="upwind",
                                                      velocity=0.3) + u**2)
    return f


@pytest.mark.parametrize("case", list(CASES))
def test_sparsity_matches_jacfwd_1d(case):
    _, _, _, bc = CASES[case]
    grid = pde.Grid1D(0.0, 1.0, 9, bc)
    u = jnp.asarray(np.random.default_rng(3).uniform(1, 2, size=9))
    jac = np.asarray(jax.jacfwd(_field_1d(grid))(u)) != 0
    np.testing.assert_array_equal(jac, grid.jac_sparsity().toarray())


@pytest.mark.parametrize("kind", ["dirichlet_x_neumann_y", "dirichlet_x_periodic_y"])
def test_sparsity_matches_jacfwd_2d_5_point(kind):
    g = _grid2(4, kind)  # 4 x 8

    def f(u):
        return pde.laplacian(u.reshape(g.shape), g).ravel()

    u = jnp.asarray(np.random.default_rng(4).normal(size=g.size))
    jac = np.asarray(jax.jacfwd(f)(u)) != 0
    pattern = g.jac_sparsity()
    np.testing.assert_array_equal(jac, pattern.toarray())
    assert pattern.sum(axis=1).max() == 5  # the 5-point stencil


def test_sparsity_of_two_reacting_fields():
    """Gray-Scott-like: two diffusing fields coupled at each node; state (2, n)."""
    grid = pde.Grid1D(0.0, 1.0, 7, pde.Neumann(0.0))

    def f(y):
        u, v = y[:7], y[7:]
        return jnp.concatenate([pde.laplacian(u, grid) - u * v**2,
                                0.5 * pde.laplacian(v, grid) + u * v**2])

    y = jnp.asarray(np.random.default_rng(5).uniform(0.5, 1, size=14))
    jac = np.asarray(jax.jacfwd(f)(y)) != 0
    np.testing.assert_array_equal(jac, grid.jac_sparsity(fields=2).toarray())


def test_sparsity_is_cached_per_structure():
    a = pde.Grid1D(0.0, 1.0, 32, pde.Dirichlet(0.0))
    b = pde.Grid1D(0.0, 2.0, 32, pde.Dirichlet(1.0))  # same structure, other values
    assert a.jac_sparsity() is b.jac_sparsity()
    assert a.jac_sparsity() is not pde.Grid1D(0.0, 1.0, 32, pde.Periodic()).jac_sparsity()


# ------------------------------------------------------------ JAX transformations


def test_operators_compose_under_jit_grad_vmap():
    grid = pde.Grid1D(0.0, 1.0, 16, pde.Dirichlet(0.0))
    x = jnp.asarray(grid.x)

    @jax.jit
    def energy(left, u):
        # A boundary value as a traced parameter, through `with_bc`.
        g = grid.with_bc((pde.Dirichlet(left), pde.Dirichlet(0.0)))
        return jnp.sum(pde.laplacian(u, g) ** 2)

    u = jnp.sin(jnp.pi * x)
    d = jax.grad(energy)(0.5, u)
    eps = 1e-6
    fd = (energy(0.5 + eps, u) - energy(0.5 - eps, u)) / (2 * eps)
    assert abs(float(d) - float(fd)) < 1e-4 * abs(float(fd))
    batch = jnp.stack([u, 2 * u, 3 * u])
    np.testing.assert_allclose(jax.vmap(lambda v: pde.laplacian(v, grid))(batch),
                               pde.laplacian(batch, grid))  # leading batch dims


def test_float32_keeps_dtype():
    grid = pde.Grid1D(0.0, 1.0, 8, pde.Neumann(0.5))
    u = jnp.ones(8, jnp.float32)
    assert pde.laplacian(u, grid).dtype == jnp.float32
    assert pde.gradient(u, grid).dtype == jnp.float32


# ---------------------------------------------------------------------- errors


def test_argument_errors_name_the_argument():
    grid = pde.Grid1D(0.0, 1.0, 8, pde.Dirichlet(0.0))
    with pytest.raises(ValueError, match=r"laplacian\(u=.*trailing shape \(8,\)"):
        pde.laplacian(jnp.ones(7), grid)
    with pytest.raises(ValueError, match="velocity"):
        pde.gradient(jnp.ones(8), grid, scheme="upwind")
    with pytest.raises(ValueError, match="central.*upwind"):
        pde.gradient(jnp.ones(8), grid, scheme="weno")
    with pytest.raises(ValueError, match="both sides"):
        pde.Grid1D(0.0, 1.0, 8, (pde.Periodic(), pde.Dirichlet(0.0)))
    with pytest.raises(TypeError, match="Grid1D\\(bc=...\\)"):
        pde.Grid1D(0.0, 1.0, 8, "dirichlet")
    with pytest.raises(ValueError, match=">= 2"):
        pde.Grid1D(0.0, 1.0, 1, pde.Dirichlet(0.0))
    with pytest.raises(ValueError, match="x0 < x1"):
        pde.Grid1D(1.0, 0.0, 8, pde.Dirichlet(0.0))
    with pytest.raises(ValueError, match="must stay a Dirichlet"):
        grid.with_bc(pde.Neumann(0.0))
    with pytest.raises(ValueError, match="faces"):
        pde.flux_divergence(jnp.ones(8), grid)
    with pytest.raises(ValueError, match="fields"):
        grid.jac_sparsity(fields=0)

"""Every vector field of the examples and tests, compiled natively for `f`, the fused
VJPs, `f_vjp` and both Jacobians, against the XLA callbacks of the same functions
(the host path's own reference), at random points: float64, 1e-12."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pysciml.pde as pde
from pysciml._backend.host import host_callbacks
from pysciml._flatten import FlatVectorField, spec_of, split_args
from pysciml._forward import ForwardSensitivityField
from pysciml._nn import MLPVectorField, _field

jax.config.update("jax_enable_x64", True)

C_KM_S = 299792.458


def lotka_volterra(t, y, p):
    a, b, c, d = p[0], p[1], p[2], p[3]
    return jnp.stack([a * y[0] - b * y[0] * y[1], -c * y[1] + d * y[0] * y[1]])


def oscillator(t, y, p):  # examples/damped_oscillator_fit.py
    x, v = y[0], y[1]
    gamma, omega0 = p[0], p[1]
    return jnp.stack([v, -gamma * v - omega0**2 * x])


def supernova(z, D, p):  # examples/supernova_cosmology.py
    H0, Om = p[0], p[1]
    H = H0 * jnp.sqrt(Om * (1.0 + z) ** 3 + 1.0 - Om)
    return jnp.broadcast_to(C_KM_S / H, D.shape)


def pytree_field(t, y, args):  # a dict state and pytree args, as users write them
    return {"x": args["k"] * y["v"].sum(), "v": -args["w"] ** 2 * y["x"] - args["c"] * y["v"]}


def heat_field(grid):
    def heat(t, u, D):
        return D * pde.laplacian(u, grid)

    return heat


def fisher_kpp_field(grid):
    def fisher_kpp(t, u, p):
        return p["D"] * pde.laplacian(u, grid) + p["r"] * u * (1 - u)

    return fisher_kpp


def flux_field(grid):
    # Variable diffusivity in conservative form, with an upwind advection term.
    def field(t, u, p):
        flux = p["D"] * (1.0 + u**2)
        faces = pde.face_gradient(u, grid)
        if isinstance(faces, tuple):
            fluxes = tuple(f * p["D"] for f in faces)
        else:
            fluxes = faces * p["D"]
        adv = pde.gradient(u, grid, scheme="upwind", velocity=p["v"])
        adv = sum(adv) if isinstance(adv, tuple) else adv
        return pde.flux_divergence(fluxes, grid) - adv + 0.0 * flux

    return field


BCS = {
    "dirichlet": pde.Dirichlet(0.5),
    "neumann": pde.Neumann(0.1),
    "periodic": pde.Periodic(),
}


def flat(vector_field, y0, args):
    dynamic, static = split_args(args)
    field = FlatVectorField(vector_field, spec_of(y0), spec_of(dynamic), static)
    n = spec_of(y0).size
    m = spec_of(dynamic).size
    return field, n, m, spec_of(y0).flatten(y0), spec_of(dynamic).flatten(dynamic)


def cases():
    key = jax.random.PRNGKey(0)
    yield "lotka_volterra", flat(lotka_volterra, jnp.array([1.0, 0.5]),
                                 jnp.array([1.5, 1.0, 3.0, 1.0]))
    yield "oscillator", flat(oscillator, jnp.array([1.0, 0.0]), jnp.array([0.3, 2.0]))
    yield "supernova", flat(supernova, jnp.array([0.0]), jnp.array([70.0, 0.3]))
    yield "pytree", flat(pytree_field, {"x": jnp.array(1.0), "v": jnp.zeros(3)},
                         {"k": 1.0, "w": jnp.array(2.0), "c": jnp.array(0.1)})
    mlp = MLPVectorField(2, width=64, depth=2, key=key)
    yield "mlp", flat(_field, jnp.array([0.5, -0.3]), mlp)
    aug = MLPVectorField(4, width=16, depth=2, time_dependent=True,
                         activation=jax.nn.tanh, key=key)
    yield "augmented_mlp", flat(_field, jnp.zeros(4), aug)
    for bc_name, bc in BCS.items():
        g1 = pde.Grid1D(0.0, 1.0, 12, bc)
        yield f"heat_1d_{bc_name}", flat(heat_field(g1), jnp.sin(g1.x), jnp.array(0.3))
        yield f"fisher_kpp_1d_{bc_name}", flat(
            fisher_kpp_field(g1), jnp.cos(g1.x), {"D": jnp.array(0.1), "r": jnp.array(2.0)})
        g2 = pde.Grid2D((0.0, 1.0), (0.0, 2.0), (4, 5), bc)
        u2 = jnp.outer(jnp.arange(4.0), jnp.ones(5)) / 4
        yield f"heat_2d_{bc_name}", flat(heat_field(g2), u2, jnp.array(0.2))
        yield f"fisher_kpp_2d_{bc_name}", flat(
            fisher_kpp_field(g2), u2, {"D": jnp.array(0.1), "r": jnp.array(2.0)})
        yield f"flux_1d_{bc_name}", flat(
            flux_field(g1), jnp.sin(g1.x), {"D": jnp.array(0.2), "v": jnp.array(0.7)})
    # The forward-sensitivity augmented fields built from the user's fields.
    for name, (field, n, m, y, p) in [
        ("lotka_volterra", flat(lotka_volterra, jnp.array([1.0, 0.5]),
                                jnp.array([1.5, 1.0, 3.0, 1.0]))),
        ("heat_1d", flat(heat_field(pde.Grid1D(0.0, 1.0, 8, pde.Dirichlet(0.0))),
                         jnp.ones(8), jnp.array(0.3))),
    ]:
        fs = ForwardSensitivityField(field, n, m)
        yield f"forward_sensitivity_{name}", (fs, n * (1 + n + m), m,
                                              fs.initial_state(y), p)


CASES = dict(cases())


# Every field gets `f` and the fused VJP (what SciPy's explicit forward and adjoint
# call) in the default run; all five callbacks for one field of each kind. The rest are
# `slow` only for time: a cold kernel compiles in ~1.4 s, and the full matrix is 115
# kernels (`make test-slow` runs it).
FULL = {"lotka_volterra", "mlp", "heat_1d_dirichlet", "fisher_kpp_2d_periodic",
        "forward_sensitivity_lotka_volterra", "flux_1d_neumann"}
CALLBACKS = ("f", "vjp", "f_vjp", "jac", "jac_p")
PARAMS = [
    pytest.param(name, what, marks=() if name in FULL or what in ("f", "vjp")
                 else pytest.mark.slow)
    for name in CASES for what in CALLBACKS
]


@pytest.mark.parametrize("name, what", PARAMS)
def test_native_callbacks_match_xla(name, what):
    field, n, m, y, p = CASES[name]
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    y = np.asarray(y, np.float64) + 0.1 * rng.normal(size=n)
    p = np.asarray(p, np.float64) * (1 + 0.05 * rng.normal(size=m))
    lam = rng.normal(size=n)
    t = 0.37
    native = host_callbacks(field, n, m, None, True)
    xla = host_callbacks(field, n, m, None, False)
    assert native.native and not xla.native
    args = (t, y, p, lam) if what in ("vjp", "f_vjp") else (t, y, p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to XLA would warn: fail instead
        got = getattr(native, what)(*args)
    want = getattr(xla, what)(*args)
    assert getattr(native, what).kernel is not None, f"{what} fell back"
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * (
        1 + np.abs(want).max()), err_msg=f"{name}: {what}")

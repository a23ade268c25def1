"""Gradients through every solver of every backend, with the backend's default
adjoint (named: `sensitivity=None` would pick forward sensitivities for these small
problems, which `test_forward_sensitivity.py` covers): against the analytic adjoint of exponential decay, and against central
finite differences on Lotka--Volterra. (`test_core_gradients.py` covers every
*sensitivity* with each backend's default solver.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import LV_P, LV_Y0, central_fd, lotka_volterra, solver_backend_pairs

import pysciml as ps

DECAY = ps.ODEProblem(lambda t, y, tau: -y / tau, 0.0, 2.0)
LV = ps.ODEProblem(lotka_volterra, 0.0, 3.0)
LV_TS = np.linspace(0.5, 3.0, 6)
LV_W = np.random.default_rng(7).normal(size=(6, 2))


def _adjoint(backend):
    return ps.get_backend(backend).default_sensitivity


@pytest.mark.parametrize("backend,solver", solver_backend_pairs())
def test_decay_gradient_against_analytic_adjoint(backend, solver):
    T, tau, y0 = 2.0, 0.7, 1.3

    def loss(y0, tau):
        ys = ps.solve(DECAY, y0, tau, saveat=jnp.array([1.0, T]), backend=backend,
                      solver=solver, sensitivity=_adjoint(backend), rtol=1e-10,
                      atol=1e-12, max_steps=100_000).ys
        return jnp.sum(ys**2)

    g_y0, g_tau = jax.grad(loss, argnums=(0, 1))(jnp.asarray(y0), jnp.asarray(tau))
    # L = Σ_t y0² e^{-2t/τ}: dL/dy0 = Σ 2 y0 e^{-2t/τ}, dL/dτ = Σ y0² (2t/τ²) e^{-2t/τ}.
    t = np.array([1.0, T])
    e = np.exp(-2 * t / tau)
    # At rtol 1e-10 every solver's value is good to ~1e-9; the adjoints add as much.
    np.testing.assert_allclose(float(g_y0), np.sum(2 * y0 * e), rtol=1e-7)
    np.testing.assert_allclose(float(g_tau), np.sum(y0**2 * 2 * t / tau**2 * e),
                               rtol=1e-7)


@pytest.mark.parametrize("backend,solver", solver_backend_pairs())
def test_lotka_volterra_gradient_against_finite_differences(backend, solver):
    def loss(y0, p):
        ys = ps.solve(LV, y0, p, saveat=jnp.asarray(LV_TS), backend=backend,
                      solver=solver, sensitivity=_adjoint(backend), rtol=1e-11,
                      atol=1e-11, max_steps=100_000).ys
        return jnp.sum(LV_W * ys)

    y0, p = jnp.asarray(LV_Y0), jnp.asarray(LV_P)
    g_y0, g_p = jax.grad(loss, argnums=(0, 1))(y0, p)
    fd_y0 = central_fd(lambda x: loss(x, p), LV_Y0, 1e-5)
    fd_p = central_fd(lambda x: loss(y0, x), LV_P, 1e-5)
    # Central differences at h = 1e-5: truncation ~h² |f'''| ~ 1e-9, solver noise
    # ~1e-11 / h = 1e-6 of the value at worst; 1e-5 relative leaves a margin.
    scale = max(np.max(np.abs(fd_y0)), np.max(np.abs(fd_p)))
    np.testing.assert_allclose(g_y0, fd_y0, rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(g_p, fd_p, rtol=1e-5, atol=1e-6 * scale)

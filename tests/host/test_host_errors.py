"""Failures on the host path, driven by the SciPy backend: result codes instead of
exceptions across the callback (max_steps, vector-field errors, non-finite states and
inputs), each distinct error reported once, and a clear error under second
derivatives. Everything here also holds for the Julia backend."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import RUNTIME_ERRORS

import pysciml as ps


def decay(t, y, tau):
    return -y / tau


def stiff_linear(t, y, p):
    # Eigenvalues -p[0] (fast, stiffness ratio 1e4) and -p[1] (slow), coupled.
    a = jnp.array([[-p[0], p[0] - p[1]], [0.0, -p[1]]])
    return a @ y


def test_stiff_problem_explicit_solver_max_steps():
    problem = ps.ODEProblem(stiff_linear, 0.0, 2.0)
    kw = dict(saveat=jnp.array([1.0, 2.0]), backend="scipy", solver=ps.Dopri5(),
              max_steps=50)
    y0, p = jnp.array([1.0, 1.0]), jnp.array([1e4, 1.0])
    with pytest.raises(RUNTIME_ERRORS, match="max_steps"):
        jax.block_until_ready(ps.solve(problem, y0, p, **kw).ys)
    sol = ps.solve(problem, y0, p, throw=False, **kw)
    assert sol.result == ps.RESULTS.max_steps_reached
    assert np.all(np.isnan(sol.ys))
    # The stiff solver handles it within the same budget.
    sol = ps.solve(problem, y0, p, **{**kw, "solver": ps.RadauIIA5()})
    expected = np.exp(-2.0)  # slow mode: y[1] = exp(-p1 t)
    assert abs(float(sol.ys[-1, 1]) - expected) < 1e-5


def test_exception_in_vector_field_is_a_clear_error(capsys):
    def f(t, y, p):
        y = eqx.error_if(y, y[0] < 0.5, "state fell below 0.5")
        return -p * y

    problem = ps.ODEProblem(f, 0.0, 2.0)
    kw = dict(saveat=jnp.array([1.0, 2.0]), backend="scipy")
    with pytest.raises(RUNTIME_ERRORS, match="vector field raised"):
        jax.block_until_ready(ps.solve(problem, jnp.ones(1), jnp.array(1.0), **kw).ys)
    assert "state fell below 0.5" in capsys.readouterr().err
    sol = ps.solve(problem, jnp.ones(1), jnp.array(1.0), throw=False, **kw)
    assert sol.result == ps.RESULTS.vector_field_error
    assert np.all(np.isnan(sol.ys))
    # Fine where the state stays above 0.5.
    sol = ps.solve(problem, jnp.ones(1), jnp.array(0.1), **kw)
    assert abs(float(sol.ys[-1, 0]) - np.exp(-0.2)) < 1e-5


def test_nonfinite_vector_field_gives_nonfinite_code():
    problem = ps.ODEProblem(lambda t, y, p: jnp.sqrt(p - t) * y, 0.0, 2.0)
    sol = ps.solve(problem, jnp.ones(1), jnp.array(1.0), saveat=jnp.array([0.5, 2.0]),
                   backend="scipy", throw=False)
    assert sol.result == ps.RESULTS.nonfinite
    assert np.all(np.isnan(sol.ys))


def test_no_second_derivatives_on_host_says_so():
    problem = ps.ODEProblem(decay, 0.0, 1.0)

    def f(tau):
        return ps.solve(problem, jnp.ones(1), tau, saveat=jnp.array([1.0]),
                        backend="scipy", sensitivity=ps.InterpolatingAdjoint()).ys[0, 0]

    assert abs(float(jax.grad(f)(1.0)) - np.exp(-1.0)) < 1e-5  # d/dτ e^{-1/τ} at τ=1
    with pytest.raises(TypeError, match="no second derivatives.*ForwardSensitivity"):
        jax.hessian(f)(1.0)
    with pytest.raises(TypeError, match="no second derivatives"):
        jax.grad(jax.grad(f))(1.0)


def test_a_vector_field_error_is_reported_once(capsys, monkeypatch):
    """Inside inference the same failure recurs at every proposal: its traceback is
    printed once per distinct error, not once per call."""
    from pysciml._backend.host import _codes

    monkeypatch.setattr(_codes, "_REPORTED", set())

    def f(t, y, p):
        y = eqx.error_if(y, y[0] < 0.5, "state fell below 0.5")
        return -p * y

    problem = ps.ODEProblem(f, 0.0, 2.0)
    for _ in range(3):
        sol = ps.solve(problem, jnp.ones(1), jnp.array(1.0), saveat=jnp.array([2.0]),
                       backend="scipy", throw=False)
        assert sol.result == ps.RESULTS.vector_field_error
    err = capsys.readouterr().err
    assert err.count("pysciml: the vector field raised") == 1, err
    assert "state fell below 0.5" in err
    assert "prints each distinct error once" in err


def test_nonfinite_inputs_at_run_time_reach_no_host_solver(capfd, monkeypatch):
    """A proposal outside the model's domain (traced y0 or args with Inf or NaN) is a
    `nonfinite` code at once: SciPy would raise on it ("All components of the initial
    state y0 must be finite"), and print nothing."""
    from pysciml._backend.scipy import ScipyBackend

    calls = []
    original = ScipyBackend.host_forward
    monkeypatch.setattr(ScipyBackend, "host_forward",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    problem = ps.ODEProblem(decay, 0.0, 1.0)
    solve = jax.jit(lambda y0, tau: ps.solve(problem, y0, tau, saveat=jnp.array([1.0]),
                                             backend="scipy", throw=False))
    for y0, tau in [(jnp.array([jnp.inf]), 1.0), (jnp.array([1.0]), jnp.nan)]:
        sol = solve(y0, tau)
        assert sol.result == ps.RESULTS.nonfinite
        assert np.all(np.isnan(sol.ys))
    assert not calls
    sol = solve(jnp.array([1.0]), 1.0)  # and a finite one does reach the solver
    np.testing.assert_allclose(sol.ys[0, 0], np.exp(-1.0), rtol=1e-5)
    assert calls
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and "Warning" not in captured.err, \
        captured.err

"""examples/damped_oscillator_fit.py and examples/lotka_volterra_gd.py recover the
truth. The reference is computed here, independently of pysciml: the least-squares
estimate of the same data by `scipy.optimize.least_squares` over `solve_ivp`, with its
asymptotic standard errors from the Jacobian at the optimum."""

import numpy as np
import pytest
from helpers import BACKENDS
from scipy.integrate import solve_ivp
from scipy.optimize import least_squares
from test_examples import load_example


def _least_squares_reference(rhs, y0, ts, data, observed, start):
    """Least-squares fit of `data` (observed components of the state) with SciPy
    only. Returns the estimate and its standard errors, sigma^2 (J^T J)^-1."""

    def residuals(p):
        sol = solve_ivp(rhs, (0.0, ts[-1]), y0, t_eval=ts, args=(p,), method="DOP853",
                        rtol=1e-11, atol=1e-12)
        return (sol.y[observed].T - data).ravel()

    fit = least_squares(residuals, start, x_scale="jac", xtol=1e-12, ftol=1e-12,
                        gtol=1e-12)
    dof = fit.fun.size - fit.x.size
    cov = np.linalg.inv(fit.jac.T @ fit.jac) * (fit.fun @ fit.fun) / dof
    return fit.x, np.sqrt(np.diag(cov))


def _oscillator(t, y, p):
    gamma, omega0 = p
    return [y[1], -gamma * y[1] - omega0**2 * y[0]]


def _lotka_volterra(t, y, p):
    a, b, c, d = p
    return [a * y[0] - b * y[0] * y[1], -c * y[1] + d * y[0] * y[1]]


def _check(out, reference, se, converged):
    fit, true = np.asarray(out["fit"]), np.asarray(out["true"])
    # Statistics of this (seeded) data set: the least-squares estimate lies within 4
    # standard errors of the truth, and that is within 5% of it.
    assert np.all(np.abs(reference - true) < 4 * se), (reference, true, se)
    assert np.all(np.abs(fit / true - 1.0) < 0.05), (fit, true)
    # Optimisation: Adam has reached the least-squares estimate, to `converged`
    # standard errors (set per example below from what its default steps achieve).
    assert np.all(np.abs(fit - reference) < converged * se), (fit, reference, se)


@pytest.mark.parametrize("backend", BACKENDS)
def test_damped_oscillator_recovers_truth(backend):
    out = load_example("damped_oscillator_fit").main(["--backend", backend])
    reference, se = _least_squares_reference(
        _oscillator, [1.0, 0.0], out["ts"], out["data"], 0, out["true"])
    # 300 Adam steps converge fully on this 2-parameter problem (observed gap 1e-5 SE,
    # set by the solver tolerance rtol=1e-7 of the loss); 0.01 SE leaves a 1000x margin.
    _check(out, reference, se, converged=0.01)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lotka_volterra_gd_recovers_truth(backend):
    out = load_example("lotka_volterra_gd").main(["--backend", backend])
    reference, se = _least_squares_reference(
        _lotka_volterra, [1.0, 1.0], out["ts"], out["data"], slice(None), out["true"])
    # Lotka-Volterra's loss valley is elongated: after the default 300 steps at a fixed
    # lr=0.05, Adam sits 0.06-0.09 SE from the optimum (observed; <0.05% of the
    # values). A quarter of a standard error is still far inside the statistical error.
    _check(out, reference, se, converged=0.25)

"""examples/exponential_decay_adjoint.py: every sensitivity of every backend against the
analytic adjoint, and the Euler discretise-then-optimise gradient against its closed
form. The reference values are computed here, not read from the example."""

import numpy as np
import pytest
from helpers import BACKENDS, SENSITIVITIES_BY_BACKEND
from test_examples import load_example

TAU, Y0, T, TARGET = 2.0, 1.0, 3.0, 0.1
EULER_N = [10, 30, 100, 300, 1000]


@pytest.fixture(scope="module")
def example():
    return load_example("exponential_decay_adjoint")


def _analytic():
    yT = Y0 * np.exp(-T / TAU)
    return (T / TAU**2) * 2.0 * (yT - TARGET) * Y0 * np.exp(-T / TAU)


def _euler_closed_form(n):
    q = 1.0 - T / (n * TAU)
    return (T / TAU**2) * 2.0 * (Y0 * q**n - TARGET) * Y0 * q ** (n - 1)


@pytest.fixture(scope="module", params=BACKENDS)
def result(request, example):
    argv = ["--backend", request.param, "--tau", str(TAU), "--y0", str(Y0),
            "--T", str(T), "--target", str(TARGET), "--rtol", "1e-10",
            "--atol", "1e-12", "--euler-steps", ",".join(map(str, EULER_N))]
    return request.param, example.main(argv)


def test_every_sensitivity_matches_analytic_adjoint(result):
    backend, out = result
    exact = _analytic()
    # Every sensitivity the backend declares was exercised.
    assert set(out["gradients"]) == {
        type(s).__name__ for s in SENSITIVITIES_BY_BACKEND[backend]
    }
    for name, g in out["gradients"].items():
        # At rtol=1e-10, atol=1e-12 the forward solution and (for continuous adjoints)
        # the backward adjoint solve each carry a global relative error of order
        # 1e-10 (observed 1.5e-11 .. 1.1e-10). 1e-7 leaves a 1000x margin, and is still
        # 6 orders below any modelling error (a wrong sign, factor or a solve at the
        # default rtol=1e-6 would all fail it).
        assert abs(g / exact - 1.0) < 1e-7, (backend, name, g, exact)


def test_euler_gradient_equals_closed_form(result):
    _, out = result
    for n in EULER_N:
        g = out["euler"][n]["grad"]
        # The JAX recursion and the closed form are the same rational function of tau,
        # evaluated in different orders: they differ by rounding only, at most ~2N ulps
        # (N products, and pow's base rounding amplified N times): 4.4e-13 at N=1000.
        assert abs(g / _euler_closed_form(n) - 1.0) < 1e-12, (n, g)


def test_euler_gradient_converges_at_first_order(result):
    _, out = result
    exact = _analytic()
    ns = np.array(EULER_N, dtype=float)
    errs = np.array([abs(out["euler"][n]["grad"] / exact - 1.0) for n in EULER_N])
    order = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
    # Explicit Euler is first order: the error is C/N + O(1/N^2). Over N = 10..1000 the
    # O(1/N^2) term shifts the fitted slope by ~1% (observed 1.01).
    assert 0.95 < order < 1.05, order
    # And N * error tends to a constant: the last two agree to the O(1/N) correction.
    assert abs(errs[-1] * ns[-1] / (errs[-2] * ns[-2]) - 1.0) < 0.01

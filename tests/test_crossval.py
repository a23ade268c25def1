"""The cross-validation report (`python -m pysciml crossval`, part of `make demo`)."""

import numpy as np
import pytest
from helpers import BACKENDS

from pysciml._crossval import CASES, _lotka_volterra_truth, crossval, print_report


def test_crossval_rows_against_the_closed_form(capsys):
    rows = crossval(BACKENDS, rtol=1e-8, atol=1e-10, cases=("decay",))
    assert {r["backend"] for r in rows} == set(BACKENDS)
    for r in rows:
        assert "error" not in r, r
        # rtol 1e-8 on a smooth problem: values and gradients to ~1e-8; 1e-6 is safe.
        assert r["value_err"] < 1e-6 and r["grad_err"] < 1e-6, r
        assert r["forward_s"] > 0 and r["grad_s"] > 0
    print_report(rows, 1e-8)
    out = capsys.readouterr().out
    assert out.count("| decay") == len(rows)


@pytest.mark.slow  # ~35 s: stiff solves and their adjoints on every SciPy solver
def test_crossval_reports_a_failed_solve_as_a_row():
    # Backsolve on the stiff system: the backward state blows up on SciPy's Radau;
    # the report shows the reason (or a failed adjoint) instead of crashing.
    rows = crossval(["scipy"], cases=("stiff-linear",))
    backsolve = [r for r in rows if r["sensitivity"] == "BacksolveAdjoint"]
    assert backsolve
    for r in backsolve:
        assert "error" in r or not np.isfinite(r["grad_err"]) or r["grad_err"] > 1e-3
    good = [r for r in rows if r["sensitivity"] == "InterpolatingAdjoint"]
    assert all(r["grad_err"] < 1e-5 for r in good), good


def test_lotka_volterra_truth_is_self_consistent():
    # The truth comes from raw SciPy, outside pysciml; check it by two facts that do
    # not depend on any solver. 1) Lotka–Volterra conserves
    # V = δx − γ ln x + βz − α ln z; DOP853 at 1e-13 keeps it to 1.2e-14 relative
    # (measured), so 1e-11 leaves a wide margin and still catches a wrong equation.
    case = CASES["lotka-volterra"]()
    ys, grad = case.truth()
    a, b, c, d = np.asarray(case.args)
    x, z = ys[:, 0], ys[:, 1]
    first_integral = d * x - c * np.log(x) + b * z - a * np.log(z)
    assert np.ptp(first_integral) < 1e-11 * np.abs(first_integral[0])
    # 2) The forward-sensitivity gradient against central differences of the values
    # (step 1e-5: truncation ~1e-10 × |∂³L|; measured 2.2e-10 relative), at 1e-7.
    fd = []
    for j in range(4):
        e = np.zeros(4)
        e[j] = 1e-5
        hi = _lotka_volterra_truth(case.ts, case.y0, case.args + e)[0]
        lo = _lotka_volterra_truth(case.ts, case.y0, case.args - e)[0]
        fd.append((np.sum(hi**2) - np.sum(lo**2)) / 2e-5)
    np.testing.assert_allclose(grad, fd, rtol=1e-7)

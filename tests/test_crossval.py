"""The cross-validation report (`python -m pysciml crossval`, part of `make demo`)."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import BACKENDS

import pysciml as ps
from pysciml import RESULTS, ODEProblem
from pysciml._crossval import (
    CASES,
    Case,
    _lotka_volterra_truth,
    crossval,
    plot_work_precision,
    print_report,
)


def test_crossval_rows_against_the_closed_form(capsys):
    # Dopri5, which every backend has, with every sensitivity: each row compiles a
    # gradient (~5 s on diffrax), so all solvers would take a minute.
    rows = crossval(BACKENDS, rtol=1e-8, atol=1e-10, cases=("decay",),
                    solvers=("Dopri5",))
    assert {r["backend"] for r in rows} == set(BACKENDS)
    assert len(rows) == sum(len(ps.get_backend(b).sensitivities) for b in BACKENDS)
    for r in rows:
        assert "error" not in r, r
        # rtol 1e-8 on a smooth problem: values and gradients to ~1e-8; 1e-6 is safe.
        assert r["value_err"] < 1e-6 and r["grad_err"] < 1e-6, r
        assert r["forward_s"] > 0 and r["grad_s"] > 0
    print_report(rows, 1e-8)
    out = capsys.readouterr().out
    assert out.count("| decay") == len(rows)


def _assert_quiet(capfd, recwarn):
    """Nothing but the report: no NumPy/SciPy RuntimeWarning (recorded by pytest, or
    printed) and no traceback on stderr."""
    err = capfd.readouterr().err
    assert "RuntimeWarning" not in err and "Traceback" not in err, err
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)], [
        str(w.message) for w in recwarn
    ]


def test_crossval_failure_rows_carry_their_reason(capfd, recwarn):
    # A forward solve that fails (3 steps allowed), an adjoint that fails (Backsolve on
    # the stiff system: the state re-integrated backward blows up; LSODA is the
    # fastest to fail, ~1 s), and a solve that overflows are rows of the report with
    # their reason, and nothing else reaches stderr.
    rows = crossval(["scipy"], cases=("decay",), solvers=("Dopri5",),
                    sensitivities=("InterpolatingAdjoint",), max_steps=3)
    rows += crossval(["scipy"], cases=("stiff-linear",), solvers=("LSODA",),
                     sensitivities=("BacksolveAdjoint",))
    # y' = 1e300 y: Radau's first step-size estimate divides f = 1e300 by the error
    # scale and overflows (0.2 s). With NumPy's warnings left on in the host thread,
    # three RuntimeWarnings (overflow in dot, invalid value and division by zero in
    # SciPy's step-size code) reach stderr here (checked).
    overflow = Case("y'=1e300·y", ODEProblem(lambda t, y, p: p * y, 0.0, 1.0),
                    jnp.ones(1), jnp.array([1e300]), np.array([1.0]), True,
                    lambda: (np.ones((1, 1)), np.zeros(1)))
    rows += crossval(["scipy"], cases=(overflow,), solvers=("RadauIIA5",),
                     sensitivities=("InterpolatingAdjoint",))
    forward_failed, adjoint_failed, overflowed = rows
    assert overflowed["error"] == RESULTS._index_to_message[
        int(RESULTS.nonfinite._value)
    ]
    assert forward_failed["error"] == RESULTS._index_to_message[
        int(RESULTS.max_steps_reached._value)
    ]
    assert "value_err" not in forward_failed
    assert adjoint_failed["value_err"] < 1e-6  # the forward solve is fine
    assert "NaN" in adjoint_failed["grad_error"] and "grad_err" not in adjoint_failed
    print_report(rows, 1e-8)
    out = capfd.readouterr().out
    assert "| failed: The maximum number of solver steps" in out
    assert "| failed: the gradient is NaN: the adjoint solve failed |" in out
    _assert_quiet(capfd, recwarn)


@pytest.mark.slow  # ~22 s: stiff solves and their adjoints on every SciPy solver
def test_crossval_reports_a_failed_solve_as_a_row(capfd, recwarn):
    # Backsolve on the stiff system: the backward state blows up on SciPy's Radau;
    # the report shows the reason (or a failed adjoint) instead of crashing. Radau
    # overflows on the way (after >10,000 backward steps): without NumPy's warnings
    # off on the host thread, SciPy's RuntimeWarnings would reach stderr here.
    rows = crossval(["scipy"], cases=("stiff-linear",))
    backsolve = [r for r in rows if r["sensitivity"] == "BacksolveAdjoint"]
    assert backsolve
    for r in backsolve:
        assert "error" in r or "grad_error" in r or r["grad_err"] > 1e-3
    good = [r for r in rows if r["sensitivity"] == "InterpolatingAdjoint"]
    assert all(r["grad_err"] < 1e-5 for r in good), good
    _assert_quiet(capfd, recwarn)


def test_crossval_test_set_rows_are_values_only(capsys):
    # VDPOL on LSODA (0.1 s): the published y(t1) is the truth; there is no gradient
    # reference, so one row per solver, with "—" for the sensitivity and gradient.
    rows = crossval(["scipy"], cases=("vdpol",), solvers=("LSODA",))
    (row,) = rows
    assert row["sensitivity"] == "—" and "grad_err" not in row and "grad_s" not in row
    # rtol 1e-8, atol 1e-11 (atol_per_rtol 1e-3): measured 1.8e-7; 10x.
    assert row["atol"] == pytest.approx(1e-11)
    assert row["value_err"] < 2e-6, row
    print_report(rows, 1e-8)
    out = capsys.readouterr().out
    assert "| VDPOL μ=1000 (test set) | scipy | LSODA | — | 1e-11 |" in out
    assert out.rstrip().endswith("| — |")


def test_crossval_plots_work_precision_diagrams(tmp_path):
    pytest.importorskip("matplotlib")
    rows = crossval(["scipy"], cases=("decay", "vdpol"), solvers=("Dopri8", "LSODA"),
                    sensitivities=("InterpolatingAdjoint",), sweep_rtols=(1e-4, 1e-6))
    # The sweep adds one row per solver and rtol (the report's own rtol is reused).
    assert sorted(r["rtol"] for r in rows if r["key"] == "decay") == [1e-8, 1e-6, 1e-4]
    sweep = [r for r in rows if r["rtol"] != 1e-8]
    assert all("value_err" in r and "forward_s" in r for r in sweep), sweep
    paths = plot_work_precision(rows, tmp_path / "plots")
    assert [p.name for p in paths] == ["decay.png", "vdpol.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_crossval_cli_case_names():
    # `python -m pysciml crossval --help` lists the cases without importing JAX.
    from pysciml.__main__ import CASE_NAMES, main

    assert CASE_NAMES == tuple(CASES)
    with pytest.raises(SystemExit):
        main(["crossval", "--cases", "decay,nope"])


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

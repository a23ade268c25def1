"""The cross-validation report (`python -m pysciml crossval`, part of `make demo`)."""

import numpy as np
import pytest
from helpers import BACKENDS

from pysciml._crossval import crossval, print_report


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

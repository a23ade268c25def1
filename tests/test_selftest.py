"""`python -m pysciml julia --selftest` runs its checks on any host backend. Here they
run on SciPy, so that every line of the self-test runs on every machine (the Julia run
needs Julia: `test_julia_layer.py::test_julia_selftest_check`, marked `julia`). The
checks' references are closed forms and diffrax, never SciPy itself."""

import io

import pytest

from pysciml._selftest import Skipped, checks, run_selftest


@pytest.fixture(scope="module")
def scipy_report():
    stream = io.StringIO()
    status = run_selftest("scipy", stream=stream)
    return status, stream.getvalue()


def test_every_check_passes_on_scipy(scipy_report):
    status, report = scipy_report
    assert status == 0, report
    rows = [line for line in report.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == len(checks("scipy"))
    for row in rows:
        # Every check concludes here: none is skipped.
        assert "| pass   |" in row, row


def test_ctrl_c_stops_a_host_solve_and_the_process_lives(scipy_report):
    """Before this check, Ctrl-C during a host solve aborted the whole interpreter: a
    KeyboardInterrupt left the pure_callback ("terminate called ... FATAL: exception
    not rethrown")."""
    _, report = scipy_report
    row = next(line for line in report.splitlines()
               if line.startswith("| Ctrl-C during a solve"))
    assert "| pass" in row and "process alive" in row, row


def test_a_failing_check_is_reported_not_raised(monkeypatch):
    import pysciml._selftest as selftest

    def boom():
        raise AssertionError("value: relative error 1.0e-02 > 1e-06")

    def skip():
        raise Skipped("cannot conclude")

    monkeypatch.setattr(selftest, "checks", lambda backend: [
        selftest.Check("a failing check", boom), selftest.Check("a skipped one", skip)])
    stream = io.StringIO()
    assert run_selftest("scipy", stream=stream) == 1
    text = stream.getvalue()
    assert "| a failing check | FAIL" in text and "relative error 1.0e-02" in text
    assert "| a skipped one   | skip" in text

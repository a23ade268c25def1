"""`python -m pysciml` (what `make demo` runs) in a child process, with small settings:
it exits with status 0 and prints what it promises. The cross-validation report is
checked by its headers only: its rows and numbers are `tests/test_crossval.py`'s job."""

import os
import subprocess
import sys


def _run(*args, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    out = subprocess.run([sys.executable, "-m", "pysciml", *args], capture_output=True,
                         text=True, timeout=timeout, env=env)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-4000:])
    return out.stdout


def test_backends_lists_every_backend():
    lines = _run("backends").splitlines()
    assert [line.split()[0] for line in lines] == ["diffrax", "scipy", "julia"]
    assert lines[0].split()[1] == "available:" and lines[1].split()[1] == "available:"
    # Julia: available or not, with a reason, and never started by this command.
    assert lines[2].split()[1] in ("available:", "unavailable:"), lines[2]


def test_demo_quick_on_scipy():
    """The calibration (3 Adam steps), then the quick cross-validation report (the
    decay case), on the SciPy backend: the host path, which the demo exercises end to
    end. (~5 s; the full report compiles every solver x sensitivity of every backend
    on four problems: minutes.)"""
    out = _run("demo", "--steps", "3", "--backends", "scipy", "--quick")
    # Julia is not named, so it is neither started nor installed (it once was: the
    # demo checked every backend's availability before looking at --backends).
    assert "Julia" not in out and "julia" not in out, out
    assert "Lotka-Volterra calibration: 40 noisy observations" in out
    assert "[scipy] 3 Adam steps in" in out
    assert "  fitted = [" in out and "  rel. error = [" in out
    assert "Backend cross-validation at rtol=1e-08" in out
    assert "| case | backend | solver | sensitivity |" in out
    # The report has rows for the SciPy backend, and for no other.
    rows = [line for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| case")]
    assert rows and all(line.split("|")[2].strip() == "scipy" for line in rows), rows


def test_unknown_backend_is_refused_by_name():
    out = subprocess.run([sys.executable, "-m", "pysciml", "demo", "--backends",
                          "scipy,fortran"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--backends: unknown backend(s) 'fortran'; known: diffrax,scipy,julia" in \
        out.stderr

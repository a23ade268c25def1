"""Shared helpers for the backend-agnostic core tests.

Tests parametrise over `available_backends()` and pick solvers and sensitivities from
each backend's own support table, so that a new backend gets every test automatically.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest

import pysciml as ps


def available_backends() -> list[str]:
    """The backends these tests run on: "diffrax" and "scipy", both installed by
    pysciml's own dependencies, so a failing import is an error here, never a silent
    drop of every SciPy test. Julia is never included here (it has its own, marked,
    tests)."""
    import pysciml._backend.scipy  # noqa: F401  (fails loudly if it cannot import)

    return ["diffrax", "scipy"]


BACKENDS = available_backends()

# One instance of every solver / sensitivity tag that each backend declares it supports.
SOLVERS_BY_BACKEND = {
    name: [cls() for cls in ps.get_backend(name).solvers] for name in BACKENDS
}
SENSITIVITIES_BY_BACKEND = {
    name: [cls() for cls in ps.get_backend(name).sensitivities] for name in BACKENDS
}

# Explicit (non-stiff) solvers: not implicit, and not the stiffness-switching LSODA.
_EXPLICIT = (ps.Tsit5, ps.Dopri5, ps.Dopri8)


def explicit_solver(backend: str) -> ps.AbstractSolver:
    """The first explicit Runge--Kutta solver the backend supports."""
    for s in SOLVERS_BY_BACKEND[backend]:
        if isinstance(s, _EXPLICIT):
            return s
    raise LookupError(f"backend {backend!r} has no explicit solver")


def default_solver(backend: str) -> ps.AbstractSolver:
    """`ps.Tsit5()` where supported (the `solve` default), else an explicit solver."""
    for s in SOLVERS_BY_BACKEND[backend]:
        if isinstance(s, ps.Tsit5):
            return s
    return explicit_solver(backend)


def solver_backend_pairs():
    """`(backend, solver)` pairs for `pytest.mark.parametrize`, with readable ids."""
    return [
        pytest.param(b, s, id=f"{b}-{type(s).__name__}")
        for b in BACKENDS
        for s in SOLVERS_BY_BACKEND[b]
    ]


def sensitivity_backend_pairs():
    return [
        pytest.param(b, s, id=f"{b}-{type(s).__name__}")
        for b in BACKENDS
        for s in SENSITIVITIES_BY_BACKEND[b]
    ]


# What a failed runtime check (`eqx.error_if`, with EQX_ON_ERROR=raise) surfaces as:
# an `EquinoxRuntimeError` outside `jit`; inside it, a `JaxRuntimeError`, or (jax 0.10,
# when the failure is collected by `block_until_ready`) a plain `ValueError`. All carry
# the message, which is what the tests match on, so the broad type is harmless.
RUNTIME_ERRORS = (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError, ValueError)


def tree_allclose(x, y, *, rtol=1e-5, atol=1e-8) -> bool:
    """Same structure, shapes and dtypes, and every leaf allclose."""
    if jtu.tree_structure(x) != jtu.tree_structure(y):
        return False
    for a, b in zip(jtu.tree_leaves(x), jtu.tree_leaves(y)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if not np.allclose(a, b, rtol=rtol, atol=atol):
            return False
    return True


def central_fd(f, x, eps):
    """Central finite-difference gradient of a scalar function `f` of an array `x`
    (float64), one coordinate at a time: (f(x + eps e_i) - f(x - eps e_i)) / (2 eps).
    Truncation error O(eps^2 f'''), rounding/solver noise O(noise(f) / eps)."""
    x = np.asarray(x, dtype=np.float64)
    g = np.zeros(x.shape)
    for i in np.ndindex(x.shape):
        e = np.zeros(x.shape)
        e[i] = eps
        g[i] = (float(f(jnp.asarray(x + e))) - float(f(jnp.asarray(x - e)))) / (2 * eps)
    return g


def lotka_volterra(t, y, p):
    x, z = y
    a, b, c, d = p
    return jnp.stack([a * x - b * x * z, -c * z + d * x * z])


LV_P = np.array([1.5, 1.0, 3.0, 1.0])
LV_Y0 = np.array([1.0, 1.0])


# --- Child processes: tests that need a JAX of their own (devices, processes) --------


def json_of(stdout: str, stderr: str) -> dict:
    """The last `JSON:` line a child process printed, parsed."""
    import json

    lines = [line for line in stdout.splitlines() if line.startswith("JSON:")]
    assert lines, f"no result from the child process; stderr:\n{stderr[-4000:]}"
    return json.loads(lines[-1][len("JSON:"):])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_together(argvs: list[list[str]], env: dict, timeout: float) -> list[dict]:
    """Starts every command at once (the processes of one `jax.distributed` run), waits
    for all of them, asserts that each exited with 0, and returns their `JSON:`
    results. No process outlives the call, on a failure or a timeout either."""
    import subprocess

    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for argv in argvs]
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=timeout)
            assert p.returncode == 0, stderr[-4000:]
            outs.append(json_of(stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return outs

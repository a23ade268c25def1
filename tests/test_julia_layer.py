"""The Python side of the Julia backend. What needs Julia is marked `julia` and skips
where none exists (every machine of this project's CI); the rest runs everywhere and
covers every line of the Julia layer except the calls into Julia itself."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pysciml as ps
from pysciml import _julia
from pysciml._backend import julia as julia_backend
from pysciml._backend.host import (
    NONFINITE,
    VECTOR_FIELD_ERROR,
    HostThread,
    NonFiniteError,
    VectorFieldError,
    host_callbacks,
)
from pysciml._flatten import FlatVectorField, spec_of, split_args

ROOT = Path(__file__).resolve().parent.parent


def lotka_volterra(t, y, p):
    x, z = y[0], y[1]
    return jnp.stack([p[0] * x - p[1] * x * z, -p[2] * z + p[3] * x * z])


def _callbacks():
    y0, p = jnp.array([1.0, 2.0]), jnp.array([1.5, 1.0, 3.0, 1.0])
    dyn, static = split_args(p)
    field = FlatVectorField(lotka_volterra, spec_of(y0), spec_of(dyn), static)
    return HostThread.run(host_callbacks, field, 2, 4)


# --- Needs Julia ---------------------------------------------------------------------

JULIA_CASES = [
    (lotka_volterra, jnp.array([1.0, 1.0]), jnp.array([1.5, 1.0, 3.0, 1.0]), 5.0),
    (lambda t, y, tau: -y / tau, jnp.array([2.0]), jnp.array(1.5), 3.0),
]


@pytest.mark.julia
@pytest.mark.parametrize("sensitivity", [cls() for cls in julia_backend._SENSEALGS],
                         ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("case", range(len(JULIA_CASES)))
def test_julia_agrees_with_diffrax(case, sensitivity):
    f, y0, args, t1 = JULIA_CASES[case]
    problem = ps.ODEProblem(f, 0.0, t1)
    ts = jnp.linspace(0.1, t1, 7)

    def run(backend, solver, sens):
        def loss(y0, args):
            ys = ps.solve(problem, y0, args, saveat=ts, backend=backend, solver=solver,
                          sensitivity=sens, rtol=1e-10, atol=1e-10,
                          max_steps=100_000).ys
            return jnp.sum(ys**2), ys
        return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(y0, args)

    (_, ys_ref), g_ref = run("diffrax", ps.Dopri8(), None)
    (_, ys), g = run("julia", ps.Dopri8(), sensitivity)
    for a, b in zip(jax.tree.leaves((ys, g)), jax.tree.leaves((ys_ref, g_ref))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


@pytest.mark.julia
def test_julia_runs_on_the_host_thread():
    jl = _julia.julia_module()
    assert jl is not None
    # Julia was started by the host thread, and only ever called from it.
    threads = []
    original = julia_backend.JuliaCallbacks.f

    def f(self, u, p, t):
        import threading

        threads.append(threading.current_thread())
        return original(self, u, p, t)

    julia_backend.JuliaCallbacks.f = f
    try:
        ps.solve(ps.ODEProblem(lambda t, y, k: -k * y, 0.0, 1.0), jnp.ones(2), 1.0,
                 saveat=jnp.array([1.0]), backend="julia")
    finally:
        julia_backend.JuliaCallbacks.f = original
    assert threads and all(t is HostThread.thread() for t in threads)


# --- Runs everywhere -----------------------------------------------------------------


def test_missing_julia_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(_julia, "_module", None)
    monkeypatch.setattr(
        _julia, "julia_status",
        lambda: _julia.JuliaStatus(False, "the Python package `juliacall` is not "
                                          "installed."),
    )
    problem = ps.ODEProblem(lambda t, y, k: -k * y, 0.0, 1.0)
    with pytest.raises(_julia.JuliaNotAvailableError) as info:
        ps.solve(problem, jnp.ones(2), 1.0, saveat=jnp.array([1.0]), backend="julia")
    message = str(info.value)
    assert "juliacall" in message
    assert 'pip install "pysciml[julia]"' in message
    assert "PYTHON_JULIAPKG_EXE" in message and "PYTHON_JULIACALL_EXE" in message
    assert "backend=\"diffrax\"" in message


def test_julia_status_reasons(monkeypatch):
    monkeypatch.setattr(_julia.importlib.util, "find_spec", lambda name: None)
    status = _julia.julia_status()
    assert not status.available and "not installed" in status.reason
    monkeypatch.setattr(_julia.importlib.util, "find_spec", lambda name: object())
    for var in _julia._EXE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(_julia.shutil, "which", lambda name: None)
    status = _julia.julia_status()
    assert not status.available and "no Julia executable" in status.reason
    monkeypatch.setenv("PYTHON_JULIAPKG_EXE", "/opt/julia/bin/julia")
    assert _julia.julia_status().available


def test_bridge_sources_are_found():
    sources = _julia.bridge_sources()
    assert sources[0].name == "PySciML.jl" and sources[0].is_file()


def test_solver_and_sensealg_names_exist_on_the_julia_side():
    text = "\n".join(p.read_text() for p in (ROOT / "julia").glob("*.jl"))
    literals = set(re.findall(r'"([A-Za-z0-9]+)"', text))
    assert set(julia_backend._ALGS.values()) <= literals
    assert set(julia_backend._SENSEALGS.values()) <= literals


def test_julia_callbacks_match_jax():
    callbacks = _callbacks()
    cb = julia_backend.JuliaCallbacks(callbacks)
    u, p, lam, t = np.array([1.0, 2.0]), np.array([1.5, 1.0, 3.0, 1.0]), \
        np.array([0.3, -0.7]), 0.25
    np.testing.assert_allclose(cb.f(u, p, t), lotka_volterra(t, u, p), rtol=1e-15)
    _, pullback = jax.vjp(lambda u_, p_: lotka_volterra(t, u_, p_), u, p)
    du, dp = pullback(lam)
    calls = []
    original = callbacks.vjp
    cb.callbacks = callbacks._replace(vjp=lambda *a: calls.append(1) or original(*a))
    np.testing.assert_allclose(cb.vjp_u(lam, u, p, t), du, rtol=1e-14)
    np.testing.assert_allclose(cb.vjp_p(lam, u, p, t), dp, rtol=1e-14)
    assert len(calls) == 1  # the second hook at the same point is served by the memo
    cb.vjp_u(lam * 2, u, p, t)
    assert len(calls) == 2
    # Inputs are copied: Julia may reuse its buffers after the call returns.
    out = cb.vjp_u(lam, u, p, t)
    out[:] = 0.0
    np.testing.assert_allclose(cb.vjp_u(lam, u, p, t), du, rtol=1e-14)


def test_julia_callbacks_record_the_python_error():
    callbacks = _callbacks()

    def boom(*args):
        raise NonFiniteError("the vector field")

    cb = julia_backend.JuliaCallbacks(callbacks._replace(f=boom))
    with pytest.raises(NonFiniteError):
        cb.f(np.ones(2), np.ones(4), 0.0)
    # Julia reports "a callback failed" (4); the recorded exception refines it.
    assert cb.code(VECTOR_FIELD_ERROR) == NONFINITE
    assert cb.code(0) == 0

    def fail(*args):
        raise VectorFieldError("the vector field raised ValueError: bad")

    cb = julia_backend.JuliaCallbacks(callbacks._replace(f=fail))
    with pytest.raises(VectorFieldError):
        cb.f(np.ones(2), np.ones(4), 0.0)
    assert cb.code(VECTOR_FIELD_ERROR) == VECTOR_FIELD_ERROR


def test_julia_tables_are_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for tag, name in julia_backend._ALGS.items():
        assert f"`{tag.__name__}`" in readme and name in readme
    for tag in julia_backend._SENSEALGS:
        assert f"`{tag.__name__}`" in readme


def test_listing_the_julia_tables_starts_no_julia(monkeypatch):
    started = []
    monkeypatch.setattr(_julia, "_start", lambda: started.append(1))
    backend = ps.get_backend("julia")
    assert ps.Tsit5 in backend.solvers and ps.GaussAdjoint in backend.sensitivities
    assert not started

"""The Python side of the Julia backend. What needs Julia is marked `julia` and skips
where none exists (every machine of this project's CI); the rest runs everywhere and
covers every line of the Julia layer except the calls into Julia itself."""

import os
import re
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pysciml as ps
from pysciml import _julia
from pysciml._backend import julia as julia_backend
from pysciml._backend.host import (
    NONFINITE,
    SOLVER_FAILED,
    VECTOR_FIELD_ERROR,
    HostInterrupted,
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
# The same checks as `python -m pysciml julia --selftest` (pysciml/_selftest.py), one
# test each: values and gradients against diffrax and closed forms for every Julia
# sensitivity, explicit and stiff, the sparse heat equation, the host thread, exit and
# Ctrl-C. `tests/test_selftest.py` runs the same checks on SciPy everywhere.


def _julia_check_names():
    from pysciml._selftest import checks

    return [c.name for c in checks("julia")]


@pytest.mark.julia
@pytest.mark.parametrize("name", _julia_check_names())
def test_julia_selftest_check(name):
    from pysciml._selftest import Skipped, checks

    check = next(c for c in checks("julia") if c.name == name)
    try:
        check.run()
    except Skipped as e:
        pytest.skip(f"inconclusive here: {e}")


@pytest.fixture(scope="module")
def lv_pointers():
    from pysciml._selftest import export_field

    return export_field(lotka_volterra, 2, 4)


@pytest.mark.julia
@pytest.mark.parametrize("solver, sensitivity", [
    (ps.Dopri8(), ps.GaussAdjoint()),
    (ps.Dopri8(), ps.InterpolatingAdjoint()),  # hooks get views: copied for the ccall
    (ps.Dopri8(), ps.QuadratureAdjoint()),
    (ps.Dopri8(), ps.BacksolveAdjoint()),      # f gets a view `du`
    (ps.Kvaerno5(), ps.GaussAdjoint()),        # finite-difference Jacobians through f
], ids=lambda x: type(x).__name__)
def test_native_kernels_agree_with_python_callbacks(lv_pointers, solver, sensitivity):
    """The same Julia solve and adjoint, once over the native kernels (ccall) and once
    over the Python callbacks."""
    from pysciml._selftest import offered_pointers

    y0, p = jnp.array([1.0, 1.0]), jnp.array([1.5, 1.0, 3.0, 1.0])
    ts = jnp.array([0.5, 1.7, 3.0, 5.0])
    problem = ps.ODEProblem(lotka_volterra, 0.0, 5.0)

    def loss(y0, p):
        return jnp.sum(ps.solve(problem, y0, p, saveat=ts, backend="julia", solver=solver,
                                sensitivity=sensitivity, rtol=1e-9, atol=1e-9).ys ** 2)

    def run(pointers):
        with offered_pointers("julia", pointers) as calls:
            value, grads = jax.value_and_grad(loss, argnums=(0, 1))(y0, p)
        return value, grads, len(calls)

    native, python = run(lv_pointers), run(None)
    assert native[2] == 0, "the native solve called the Python callbacks"
    assert python[2] > 0
    np.testing.assert_allclose(native[0], python[0], rtol=1e-9)
    for got, want in zip(native[1], python[1]):
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-10)


def _landing_cases():
    """`projectile_landing` keywords and what the event time is: "landing" (the closed
    form), "t0" (the rule counts a rise from a zero at t0: `Event`'s docstring) or
    "t1" (no event)."""
    return [
        ("landing", dict(), "landing"),
        ("from 1 m, direction 0", dict(h0=1.0, direction=0), "landing"),
        ("-height upward", dict(sign=-1.0, direction=1), "landing"),
        ("rise from 0, direction +1", dict(direction=1), "t0"),
        ("zero at t0, direction 0", dict(direction=0), "t0"),
        ("no upward crossing", dict(h0=1.0, direction=1), "t1"),
    ]


@pytest.mark.parametrize("backend", ["scipy", pytest.param("julia", marks=pytest.mark.julia)])
@pytest.mark.parametrize("name, kwargs, kind", _landing_cases(),
                         ids=[c[0] for c in _landing_cases()])
def test_projectile_event_time_and_gradient(backend, name, kwargs, kind):
    """The landing time of a projectile without drag and its derivative in the launch
    angle, against the closed form `(s + sqrt(s² + 2 g h0)) / g`, `s = v0 sin(angle)`
    (`2 v0 sin(angle) / g` from the ground), with the backend's default adjoint; and
    the sign rule at t0 (SciPy runs the same expectations everywhere)."""
    from pysciml._selftest import PROJECTILE, PROJECTILE_V0, projectile_landing

    angle, g = 0.7, 9.81
    adjoint = ps.get_backend(backend).default_sensitivity
    t, d_angle = jax.value_and_grad(projectile_landing, argnums=1)(
        backend, angle, g, sensitivity=adjoint, **kwargs)
    if kind == "landing":
        h0 = kwargs.get("h0", 0.0)
        s, c = PROJECTILE_V0 * np.sin(angle), PROJECTILE_V0 * np.cos(angle)
        root = np.sqrt(s * s + 2 * g * h0)
        want, want_d = (s + root) / g, c * (1 + s / root) / g
    else:
        want, want_d = (PROJECTILE.t0 if kind == "t0" else PROJECTILE.t1), 0.0
    np.testing.assert_allclose(t, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(d_angle, want_d, rtol=1e-7, atol=1e-10)


@pytest.mark.julia
def test_julia_locates_over_the_python_callbacks():
    """`locate` (Python callbacks) rather than `locate_native`, which the default
    `native_rhs="auto"` takes where the field compiles."""
    from pysciml._selftest import PROJECTILE_V0, offered_pointers, projectile_landing

    angle, g = 0.7, 9.81
    with offered_pointers("julia", None) as calls:
        t, (d_angle, d_g) = jax.value_and_grad(projectile_landing, argnums=(1, 2))(
            "julia", angle, g, sensitivity=ps.GaussAdjoint())
    assert calls, "the Python callbacks never ran"
    landing = 2 * PROJECTILE_V0 * np.sin(angle) / g
    np.testing.assert_allclose(t, landing, rtol=1e-9)
    np.testing.assert_allclose(d_angle, 2 * PROJECTILE_V0 * np.cos(angle) / g, rtol=1e-7)
    np.testing.assert_allclose(d_g, -landing / g, rtol=1e-7)


# --- Runs everywhere -----------------------------------------------------------------


class _StandInBridge:
    """Stands in for the Julia module `PySciML`, to see what `JuliaBackend` sends it. It
    solves nothing (it returns zeros): only the Python side is under test."""

    def __init__(self):
        self.calls = []

    def forward(self, *args):
        self.calls.append(("forward", args))
        return np.zeros((len(args[7]), len(args[3]))), 0, 0, 0, 0

    def forward_native(self, *args):
        self.calls.append(("forward_native", args))
        return np.zeros((len(args[8]), len(args[4]))), 0, 0, 0, 0

    def vjp(self, *args):
        self.calls.append(("vjp", args))
        return np.zeros(len(args[3])), np.zeros(len(args[4])), 0

    def vjp_native(self, *args):
        self.calls.append(("vjp_native", args))
        return np.zeros(len(args[4])), np.zeros(len(args[5])), 0

    # What `locate` returns: (t_event, happened, code); `None`: (t1, False, 0).
    located = None

    def locate(self, *args):
        self.calls.append(("locate", args))
        return self.located or (args[7], False, 0)

    def locate_native(self, *args):
        self.calls.append(("locate_native", args))
        return self.located or (args[8], False, 0)


def _same(a, b):
    return all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y
               for x, y in zip(a, b, strict=True))


def test_julia_backend_sends_the_native_addresses_when_offered(monkeypatch):
    from pysciml._selftest import offered_pointers

    bridge = _StandInBridge()
    monkeypatch.setattr(julia_backend, "julia_module", lambda: bridge)
    pointers = SimpleNamespace(f=SimpleNamespace(address=0x1000),
                               vjp_u=SimpleNamespace(address=0x2000),
                               vjp_p=SimpleNamespace(address=0x3000))
    problem = ps.ODEProblem(lotka_volterra, 0.0, 1.0)

    def grad():
        return jax.grad(lambda p: jnp.sum(ps.solve(
            problem, jnp.ones(2), p, saveat=jnp.array([0.5, 1.0]), backend="julia",
            sensitivity=ps.GaussAdjoint()).ys))(jnp.array([1.5, 1.0, 3.0, 1.0]))

    with offered_pointers("julia", pointers) as calls:
        grad()
    assert not calls
    assert [name for name, _ in bridge.calls] == ["forward_native", "vjp_native"]
    native = [args for _, args in bridge.calls]
    for args in native:
        assert args[:3] == (0x1000, 0x2000, 0x3000)
        assert all(type(a) is int for a in args[:3])  # PythonCall: int -> Int
        assert callable(args[3])
    bridge.calls.clear()
    with offered_pointers("julia", None):
        grad()
    assert [name for name, _ in bridge.calls] == ["forward", "vjp"]
    # Everything after the callbacks is the same on both paths.
    for (_, python), native_args in zip(bridge.calls, native, strict=True):
        assert _same(python[3:], native_args[4:])


def test_julia_backend_sends_the_event_condition(monkeypatch):
    """What `JuliaBackend.host_locate` sends `locate`/`locate_native` (the condition as
    `g(u, p, t) -> float` after the vector field's callables, then `y0, p, t0, t1,
    direction` and the solver options), and that the event time it gets back is where
    the solve to the event then stops (a stand-in bridge: no Julia)."""
    from pysciml._selftest import offered_pointers

    bridge = _StandInBridge()
    monkeypatch.setattr(julia_backend, "julia_module", lambda: bridge)
    pointers = SimpleNamespace(f=SimpleNamespace(address=0x1000),
                               vjp_u=SimpleNamespace(address=0x2000),
                               vjp_p=SimpleNamespace(address=0x3000))

    def condition(t, y, k):
        return y[1] - k * t

    problem = ps.ODEProblem(lambda t, y, k: -k * y, 0.0, 2.0)
    y0, k = np.array([1.0, 3.0]), 0.5

    def solve():
        return ps.solve(problem, jnp.asarray(y0), k, saveat=jnp.array([0.5, 2.0]),
                        backend="julia", sensitivity=ps.GaussAdjoint(),
                        event=ps.Event(condition, direction=-1), rtol=1e-7,
                        atol=1e-9, max_steps=123)

    sent = {}
    for offered, names in ((None, ["locate", "forward"]),
                           (pointers, ["locate_native", "forward_native"])):
        bridge.calls.clear()
        with offered_pointers("julia", offered):
            sol = solve()
        assert [name for name, _ in bridge.calls] == names
        sent[names[0]] = bridge.calls[0][1]
        # No event: the solve runs to t1.
        assert float(sol.event_time) == 2.0 and not bool(sol.event_happened)
    python, native = sent["locate"], sent["locate_native"]
    assert all(callable(a) for a in python[:4])
    assert native[:3] == (0x1000, 0x2000, 0x3000) and callable(native[3])
    g = python[3]
    u, p, t = np.array([2.0, 1.25]), np.array([0.5]), 0.75
    value = g(u, p, t)  # the bridge's order: (u, p, t)
    assert type(value) is float and value == condition(t, u, 0.5)
    assert native[4](u, p, t) == value
    expected = (0.0, 2.0, -1, "Tsit5", 1e-7, 1e-9, 123)
    assert _same(python[4:6], (y0, p)) and python[6:13] == expected
    assert _same(python[4:], native[5:])
    assert [len(a) for a in python[13:]] == [0, 0]  # no sparsity pattern

    # An event at t = 1.25: the solve to it stops there (save times beyond it are held
    # at it, and repeated ones are solved once: `SaveTimes`).
    bridge.located = (1.25, True, 0)
    bridge.calls.clear()
    with offered_pointers("julia", None):
        sol = solve()
    assert float(sol.event_time) == 1.25 and bool(sol.event_happened)
    (name, args), = [c for c in bridge.calls if c[0] == "forward"]
    np.testing.assert_array_equal(args[7], [0.5, 1.25])


def test_julia_condition_callback_reports_its_error():
    callbacks = _callbacks()

    def boom(t, y, p):
        raise NonFiniteError("the event condition")

    cb = julia_backend.JuliaCallbacks(callbacks, boom)
    with pytest.raises(NonFiniteError):
        cb.g(np.ones(2), np.ones(4), 0.0)
    # The bridge reports code 4 for the Python exception; it is refined from it.
    assert cb.code(VECTOR_FIELD_ERROR) == NONFINITE


def test_native_pointers_are_used_unless_refused():
    offered = SimpleNamespace(c_pointers=lambda: "pointers")
    choose = julia_backend._native_pointers
    assert choose(SimpleNamespace(), offered) == "pointers"  # no native_rhs field yet
    assert choose(SimpleNamespace(native_rhs="auto"), offered) == "pointers"
    assert choose(SimpleNamespace(native_rhs=True), offered) == "pointers"
    assert choose(SimpleNamespace(native_rhs=False), offered) is None
    assert choose(SimpleNamespace(), SimpleNamespace(c_pointers=lambda: None)) is None
    assert choose(SimpleNamespace(), SimpleNamespace()) is None  # no c_pointers at all


def test_poll_stops_a_native_solve_after_ctrl_c(monkeypatch):
    cb = julia_backend.JuliaCallbacks(_callbacks())
    cb.poll()  # nothing to do
    assert cb.code(VECTOR_FIELD_ERROR) == SOLVER_FAILED  # (no exception recorded)
    monkeypatch.setattr(HostThread, "cancel", True)
    with pytest.raises(HostInterrupted):
        cb.poll()
    # The bridge reports the poll's exception as code 4; the interruption behind it is
    # no vector-field error (HostThread.run raises HostInterrupted for the caller).
    assert cb.code(VECTOR_FIELD_ERROR) == SOLVER_FAILED
    assert isinstance(cb.error, HostInterrupted)




def test_missing_juliacall_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(_julia, "_module", None)
    monkeypatch.setattr(_julia, "_failure", None)
    monkeypatch.setattr(_julia.importlib.util, "find_spec", lambda name: None)
    problem = ps.ODEProblem(lambda t, y, k: -k * y, 0.0, 1.0)
    with pytest.raises(_julia.JuliaNotAvailableError) as info:
        ps.solve(problem, jnp.ones(2), 1.0, saveat=jnp.array([1.0]), backend="julia")
    message = str(info.value)
    assert "`juliacall` is not installed" in message
    assert 'pip install "pysciml[julia]"' in message
    assert "PYTHON_JULIAPKG_EXE" in message and "PYTHON_JULIAPKG_OFFLINE" in message
    assert "backend=\"diffrax\"" in message
    assert not _julia.julia_status().available


def test_julia_status_is_juliacalls_decision(monkeypatch):
    monkeypatch.setattr(_julia, "_failure", None)
    monkeypatch.setattr(_julia.importlib.util, "find_spec", lambda name: None)
    status = _julia.julia_status()
    assert not status.available and "not installed" in status.reason
    # juliacall installed: available, whatever PATH holds (juliacall finds or installs
    # Julia itself, into a prefix that is never on PATH).
    monkeypatch.setattr(_julia.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setenv("PATH", "/nonexistent")
    status = _julia.julia_status()
    assert status.available and "installs it" in status.reason
    # After a failed start: unavailable, with the failure's reason.
    monkeypatch.setattr(_julia, "_failure", _julia.JuliaNotAvailableError("boom"))
    assert _julia.julia_status() == (False, "boom")


_NO_JULIA_CHILD = """
import jax.numpy as jnp, pysciml as ps
from pysciml import _julia
try:
    ps.solve(ps.ODEProblem(lambda t, y, k: -k * y, 0.0, 1.0), jnp.ones(2), 1.0,
             saveat=jnp.array([1.0]), backend="julia")
except _julia.JuliaNotAvailableError as e:
    print("REASON:" + e.reason.replace("\\n", " | "))
    print("MESSAGE:" + str(e).replace("\\n", " | "))
    cause = e.__cause__
    print("CAUSE:" + type(cause).__module__ + "." + type(cause).__name__)
    import sys
    print("JULIACALL_IMPORTED:" + str("juliacall" in sys.modules))
"""


@pytest.fixture(scope="module")
def offline_start(tmp_path_factory):
    """`backend="julia"` where juliacall is installed but no Julia exists, offline: the
    real start path (juliacall -> juliapkg), in a child process with a timeout."""
    import importlib.util
    import subprocess

    # (`importorskip` would import juliacall here, which starts Julia.)
    if importlib.util.find_spec("juliacall") is None:
        pytest.skip("juliacall is not installed (it is in the `dev` extra)")
    import sys

    env = dict(os.environ, PYTHON_JULIAPKG_OFFLINE="yes", PATH="/usr/bin:/bin")
    for var in ("PYTHON_JULIAPKG_EXE", "PYTHON_JULIACALL_EXE", "PYTHON_JULIACALL_LIB",
                "PYTHON_JULIACALL_BINDIR", "PYTHON_JULIACALL_PROJECT"):
        env.pop(var, None)
    if _julia_on_this_machine(env):
        pytest.skip("a Julia exists here: this test is for a machine without one")
    run = subprocess.run([sys.executable, "-c", _NO_JULIA_CHILD], env=env,
                         capture_output=True, text=True, timeout=120,
                         cwd=tmp_path_factory.mktemp("offline"))
    return run, env


def _julia_on_this_machine(env) -> bool:
    import shutil

    return bool(shutil.which("julia", path=env["PATH"]) or shutil.which("julia"))


def test_offline_start_reports_juliacalls_own_failure(offline_start):
    run, _ = offline_start
    out = dict(line.split(":", 1) for line in run.stdout.splitlines() if ":" in line
               and line.split(":", 1)[0] in ("REASON", "MESSAGE", "CAUSE",
                                              "JULIACALL_IMPORTED"))
    assert run.returncode == 0, run.stderr[-2000:]
    # juliapkg's own words, raised by juliacall's `import` (its find_julia found none
    # and, offline, may not download one): not a pre-check of pysciml's.
    assert "juliacall could not start Julia" in out["REASON"]
    assert "could not find Julia" in out["REASON"]
    assert "PYTHON_JULIAPKG_OFFLINE is set" in out["REASON"]
    assert out["CAUSE"] == "builtins.Exception"
    assert 'pip install "pysciml[julia]"' in out["MESSAGE"]
    assert "pysciml: starting Julia" in run.stderr  # the notice came before the try


def test_probe_gives_the_same_reason(offline_start):
    import subprocess
    import sys

    run, env = offline_start
    probe = subprocess.run(
        [sys.executable, "-c", "from pysciml._julia import julia_probe; "
         "print(julia_probe(timeout=120))"],
        env=env, capture_output=True, text=True, timeout=240)
    assert "available=False" in probe.stdout
    assert "could not find Julia" in probe.stdout


def test_selftest_says_why_it_cannot_run(offline_start):
    import subprocess
    import sys

    _, env = offline_start
    run = subprocess.run([sys.executable, "-m", "pysciml", "julia", "--selftest"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "The Julia self-test cannot run: Julia did not start" in run.stdout
    assert "could not find Julia" in run.stdout


def test_a_failed_start_is_not_retried(monkeypatch):
    monkeypatch.setattr(_julia, "_module", None)
    failure = _julia.JuliaNotAvailableError("juliacall could not start Julia: x")
    monkeypatch.setattr(_julia, "_failure", failure)
    with pytest.raises(_julia.JuliaNotAvailableError) as info:
        _julia.julia_module()
    assert info.value is failure


@pytest.mark.parametrize(
    "env,threads,signals",
    [
        ({}, "1", None),  # the default: one thread, Python keeps Ctrl-C
        ({"JULIA_NUM_THREADS": "8"}, "1", None),  # not inherited
        ({"PYTHON_JULIACALL_THREADS": "4"}, "4", "yes"),  # PythonCall's advice
        ({"PYTHON_JULIACALL_THREADS": "auto"}, "auto", "yes"),
        ({"PYTHON_JULIACALL_THREADS": "4", "PYTHON_JULIACALL_HANDLE_SIGNALS": "no"},
         "4", "no"),  # the user's choice wins
    ],
)
def test_thread_and_signal_settings(monkeypatch, env, threads, signals):
    for var in ("PYTHON_JULIACALL_THREADS", "PYTHON_JULIACALL_HANDLE_SIGNALS",
                "JULIA_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    _julia._thread_and_signal_settings()
    assert os.environ["PYTHON_JULIACALL_THREADS"] == threads
    assert os.environ.get("PYTHON_JULIACALL_HANDLE_SIGNALS") == signals


def test_shutdown_runs_julias_exit_hook_once_on_the_host_thread(monkeypatch):
    """The mechanics of `_shutdown` against a stand-in for juliacall's `CONFIG["lib"]`
    (no Julia is involved or claimed): Julia's exit hook runs once, on the host thread,
    and juliacall's own atexit hook then finds a no-op."""
    import sys
    import threading
    import types

    calls = []

    class Hook:
        argtypes = restype = None

        def __call__(self, code):
            calls.append((code, threading.current_thread()))

    lib = types.SimpleNamespace(jl_atexit_hook=Hook())
    monkeypatch.setitem(sys.modules, "juliacall",
                        types.SimpleNamespace(CONFIG={"lib": lib}))
    monkeypatch.setattr(_julia, "_module", object())
    monkeypatch.setattr(_julia, "_closed", False)
    _julia._shutdown()
    assert calls == [(0, HostThread.thread())]
    assert _julia._closed
    # juliacall's at_jl_exit looks the hook up on `lib` when it runs: now a no-op.
    lib.jl_atexit_hook(0)
    assert len(calls) == 1
    _julia._shutdown()  # idempotent
    assert len(calls) == 1
    monkeypatch.setattr(_julia, "_failure", None)
    with pytest.raises(_julia.JuliaNotAvailableError, match="shut down"):
        monkeypatch.setattr(_julia, "_module", None)
        _julia.julia_module()


def test_sparse_implicit_interpolating_is_refused_before_julia_starts(monkeypatch):
    started = []
    monkeypatch.setattr(_julia, "_start", lambda: started.append(1))
    import scipy.sparse as sp

    problem = ps.ODEProblem(lambda t, y, k: -k * y, 0.0, 1.0,
                            jac_sparsity=sp.identity(3, format="csr"))
    for sensitivity in (ps.InterpolatingAdjoint(), ps.BacksolveAdjoint()):
        with pytest.raises(ValueError, match=r"incomplete sparsity pattern.*"
                                             r"GaussAdjoint"):
            ps.solve(problem, jnp.ones(3), 1.0, saveat=jnp.array([1.0]),
                     backend="julia", solver=ps.FBDF(), sensitivity=sensitivity)
    assert not started


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
    # Code 4 with no Python exception behind it (the bridge's own shape check, say):
    # a solver failure, whose message the bridge holds.
    cb = julia_backend.JuliaCallbacks(callbacks)
    assert cb.code(VECTOR_FIELD_ERROR) == SOLVER_FAILED


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

"""`python -m pysciml julia --selftest`: the one command that verifies the Julia bridge
where Julia exists, with a pass/fail table and no pytest knowledge needed.

Every check compares with a reference from outside the backend under test: closed
forms (matrix exponentials and their Fréchet derivatives, the exact solution of the
semi-discrete heat equation), or the diffrax backend at tight tolerances. The checks
are written for any host backend: CI runs them on SciPy (`tests/test_selftest.py`), so
every line here runs on every machine; only `backend="julia"` verifies Julia.
"""

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from ._backend import get_backend
from ._backend.host import HostThread
from ._event import Event
from ._flatten import FlatVectorField, spec_of, split_args
from ._problem import ODEProblem
from ._sensitivity import BacksolveAdjoint, DirectAdjoint, ForwardSensitivity
from ._solution import RESULTS
from ._solve import solve
from ._solver import LSODA, AbstractImplicitSolver, Dopri8


class Check(NamedTuple):
    """One check: `run()` returns a one-line detail, or raises (an `AssertionError`
    for a wrong number) when the check fails."""

    name: str
    run: Callable[[], str]


class Skipped(Exception):
    """A check that cannot conclude here (the detail says why)."""


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def _expect(name: str, got, want, rtol: float) -> float:
    err = _rel(got, want)
    if not err <= rtol:  # also catches NaN
        raise AssertionError(f"{name}: relative error {err:.1e} > {rtol:.0e}")
    return err


# --- Lotka-Volterra against diffrax, every sensitivity ---------------------------------


def _lotka_volterra(t, y, p):
    x, z = y[0], y[1]
    return jnp.stack([p[0] * x - p[1] * x * z, -p[2] * z + p[3] * x * z])


LV = ODEProblem(_lotka_volterra, 0.0, 5.0)
LV_Y0 = np.array([1.0, 1.0])
LV_P = np.array([1.5, 1.0, 3.0, 1.0])
# t0 and a repeated time included: both are handled by pysciml, not the backend.
LV_TS = np.array([0.0, 0.5, 0.5, 1.7, 3.0, 5.0])
LV_W = np.cos(np.arange(LV_TS.size * 2.0)).reshape(-1, 2)


def _lv_value_and_grad(backend, solver, sensitivity, tol):
    def loss(y0, p):
        ys = solve(LV, y0, p, saveat=LV_TS, backend=backend, solver=solver,
                   sensitivity=sensitivity, rtol=tol, atol=tol, max_steps=100_000).ys
        return jnp.sum(LV_W * ys**2)

    return jax.value_and_grad(loss, argnums=(0, 1))(jnp.asarray(LV_Y0),
                                                    jnp.asarray(LV_P))


def _explicit_check(backend, sensitivity):
    def run():
        value, (g_y0, g_p) = _lv_value_and_grad(backend, Dopri8(), sensitivity, 1e-10)
        ref, (r_y0, r_p) = _lv_value_and_grad("diffrax", Dopri8(), DirectAdjoint(),
                                              1e-12)
        errs = [_expect("value", value, ref, 1e-6), _expect("dL/dy0", g_y0, r_y0, 1e-6),
                _expect("dL/dp", g_p, r_p, 1e-6)]
        return f"max rel. error {max(errs):.1e} vs diffrax Dopri8 at 1e-12"

    return Check(f"Lotka-Volterra Dopri8 {type(sensitivity).__name__}", run)


def _forward_sensitivity_check(backend):
    def run():
        def loss(x, backend, sensitivity):
            ys = solve(LV, x[:2], x[2:], saveat=LV_TS, backend=backend, solver=Dopri8(),
                       sensitivity=sensitivity, rtol=1e-10, atol=1e-10,
                       max_steps=100_000).ys
            return jnp.sum(LV_W * ys**2)

        x = jnp.concatenate([jnp.asarray(LV_Y0), jnp.asarray(LV_P)])
        fs = ForwardSensitivity()
        grad = jax.grad(loss)(x, backend, fs)
        hess = jax.hessian(loss)(x, backend, fs)
        ref_grad = jax.grad(loss)(x, "diffrax", DirectAdjoint())
        ref_hess = jax.hessian(loss)(x, "diffrax", DirectAdjoint())
        errs = [_expect("gradient", grad, ref_grad, 1e-6),
                _expect("Hessian", hess, ref_hess, 1e-6)]
        return (f"grad and jax.hessian: max rel. error {max(errs):.1e} vs diffrax "
                "DirectAdjoint")

    return Check("Lotka-Volterra Dopri8 ForwardSensitivity", run)


# --- A stiff linear system against its matrix exponential -----------------------------


def _stiff_field(t, y, p):
    return jnp.array([[-p[0], p[0] - p[1]], [0.0, -p[1]]]) @ y


STIFF = ODEProblem(_stiff_field, 0.0, 2.0)
# y0 = (2, 1) excites the fast mode (at (1, 1) it has zero amplitude, and a
# discretise-then-optimise gradient along it has no error control).
STIFF_Y0 = np.array([2.0, 1.0])
STIFF_P = np.array([1e3, 1.0])
STIFF_TS = np.array([0.001, 0.01, 0.1, 1.0, 2.0])
STIFF_W = np.array([[1.0, -0.5], [0.3, 2.0], [-1.0, 0.7], [0.2, 0.4], [1.5, -1.0]])


def _stiff_truth():
    """Loss Σ w·y(t) and its gradient from `expm(A t) y0` and its Fréchet derivative
    (scipy.linalg.expm_frechet): exact, from outside pysciml."""
    lam, mu = STIFF_P
    a = np.array([[-lam, lam - mu], [0.0, -mu]])
    d_a = [np.array([[-1.0, 1.0], [0.0, 0.0]]), np.array([[0.0, -1.0], [0.0, -1.0]])]
    value, g_y0, g_p = 0.0, np.zeros(2), np.zeros(2)
    for t, w in zip(STIFF_TS, STIFF_W):
        e = scipy.linalg.expm(a * t)
        value += w @ e @ STIFF_Y0
        g_y0 += e.T @ w
        for i, da in enumerate(d_a):
            g_p[i] += w @ scipy.linalg.expm_frechet(a * t, da * t)[1] @ STIFF_Y0
    return value, g_y0, g_p


def _stiff_check(backend, solver, sensitivity):
    def run():
        def loss(y0, p):
            ys = solve(STIFF, y0, p, saveat=STIFF_TS, backend=backend, solver=solver,
                       sensitivity=sensitivity, rtol=1e-9, atol=1e-11,
                       max_steps=100_000).ys
            return jnp.sum(STIFF_W * ys)

        value, (g_y0, g_p) = jax.value_and_grad(loss, argnums=(0, 1))(
            jnp.asarray(STIFF_Y0), jnp.asarray(STIFF_P))
        ref, r_y0, r_p = _stiff_truth()
        errs = [_expect("value", value, ref, 1e-6), _expect("dL/dy0", g_y0, r_y0, 1e-5),
                _expect("dL/dp", g_p, r_p, 1e-5)]
        return f"max rel. error {max(errs):.1e} vs expm and its Fréchet derivative"

    return Check(f"stiff linear λ=1e3 {type(solver).__name__} "
                 f"{type(sensitivity).__name__}", run)


# --- The heat equation on 256 nodes with a sparse Jacobian ----------------------------


HEAT_N = 256
HEAT_D = 0.5
HEAT_TS = np.array([0.02, 0.05, 0.1])
HEAT_MODES = {1: 1.0, 3: 0.5}


def _heat_truth(x, weights):
    """The exact solution of the semi-discrete problem: sin(kπx) on the nodes is an
    eigenvector of the second-order Laplacian, eigenvalue -(4/h²) sin²(kπh/2)."""
    h = x[1] - x[0]
    value, grad = 0.0, 0.0
    for t, w in zip(HEAT_TS, weights):
        for k, a in HEAT_MODES.items():
            lam = -(4 / h**2) * np.sin(k * np.pi * h / 2) ** 2
            mode = a * np.sin(k * np.pi * x) * np.exp(HEAT_D * lam * t)
            value += w @ mode
            grad += w @ (lam * t * mode)
    return value, grad


def _heat_check(backend, solver):
    def run():
        from . import pde

        grid = pde.Grid1D(0.0, 1.0, HEAT_N, pde.Dirichlet(0.0))
        problem = ODEProblem(lambda t, u, d: d * pde.laplacian(u, grid), 0.0, 0.1,
                             jac_sparsity=grid.jac_sparsity())
        x = np.asarray(grid.x)
        u0 = sum(a * np.sin(k * np.pi * x) for k, a in HEAT_MODES.items())
        weights = np.stack([np.cos(3 * x + t) for t in range(HEAT_TS.size)])

        def loss(d):
            ys = solve(problem, jnp.asarray(u0), d, saveat=HEAT_TS, backend=backend,
                       solver=solver, rtol=1e-9, atol=1e-11, max_steps=100_000).ys
            return jnp.sum(weights * ys)

        start = time.perf_counter()
        value, grad = jax.value_and_grad(loss)(HEAT_D)
        elapsed = time.perf_counter() - start
        ref, ref_grad = _heat_truth(x, weights)
        errs = [_expect("value", value, ref, 1e-6),
                _expect("dL/dD", grad, ref_grad, 1e-5)]
        return (f"max rel. error {max(errs):.1e} vs the exact semi-discrete solution; "
                f"value and gradient in {elapsed:.1f} s (compilation included)")

    return Check(f"heat n={HEAT_N} {type(solver).__name__} sparse Jacobian", run)


# --- An event: the landing of a projectile without drag ------------------------------


def _projectile(t, y, g):
    # (x, height, vx, vheight) under gravity g, no drag: the height is a parabola in t,
    # which every solver integrates exactly, so the errors are the event location's.
    return jnp.stack([y[2], y[3], jnp.zeros_like(g), -g])


PROJECTILE = ODEProblem(_projectile, 0.0, 5.0)
PROJECTILE_V0 = 10.0


def projectile_landing(backend, angle, g, *, h0=0.0, sign=1.0, direction=-1,
                       sensitivity=None, tol=1e-10):
    """The event time of a projectile thrown at speed `PROJECTILE_V0` and `angle` from
    height `h0`, with the event condition `sign * height` crossing zero in
    `direction` (landing: `sign=1, direction=-1`). Without drag it lands at
    `(s + sqrt(s² + 2 g h0)) / g`, `s = v0 sin(angle)`: `2 v0 sin(angle) / g` from the
    ground."""
    y0 = jnp.stack([0.0, h0, PROJECTILE_V0 * jnp.cos(angle),
                    PROJECTILE_V0 * jnp.sin(angle)])
    event = Event(lambda t, y, g: sign * y[1], direction)
    return solve(PROJECTILE, y0, g, saveat=jnp.array([PROJECTILE.t1]), backend=backend,
                 sensitivity=sensitivity, rtol=tol, atol=tol, event=event).event_time


def _event_check(backend):
    adjoint = get_backend(backend).default_sensitivity

    def run():
        v0, angle, g = PROJECTILE_V0, 0.7, 9.81
        landing = 2 * v0 * np.sin(angle) / g
        errs = []
        for sensitivity in (ForwardSensitivity(), adjoint):
            name = type(sensitivity).__name__
            t, (d_angle, d_g) = jax.value_and_grad(projectile_landing, argnums=(1, 2))(
                backend, angle, g, sensitivity=sensitivity)
            errs += [_expect(f"landing time ({name})", t, landing, 1e-8),
                     _expect(f"dT/dangle ({name})", d_angle, 2 * v0 * np.cos(angle) / g,
                             1e-7),
                     _expect(f"dT/dg ({name})", d_g, -landing / g, 1e-7)]
        return (f"landing time, dT/dangle and dT/dg (ForwardSensitivity, "
                f"{type(adjoint).__name__}): max rel. error {max(errs):.1e} vs "
                "2 v0 sin(angle)/g")

    return Check("event: projectile landing time", run)


# --- Threads, exit and Ctrl-C ---------------------------------------------------------


def _thread_check(backend):
    def run():
        backend_obj = get_backend(backend)
        cls = type(backend_obj)
        original = cls._callbacks
        threads = set()

        def recording(self, problem, n, m):
            callbacks = original(self, problem, n, m)
            f = callbacks.f

            def f_recorded(*args):
                threads.add(threading.current_thread())
                return f(*args)

            return callbacks._replace(f=f_recorded)

        cls._callbacks = recording
        try:
            problem = ODEProblem(lambda t, y, k: -k * y, 0.0, 1.0)
            jax.grad(lambda k: jnp.sum(solve(problem, jnp.ones(2), k,
                                             saveat=jnp.array([0.5, 1.0]),
                                             backend=backend).ys))(1.0)
        finally:
            cls._callbacks = original
        if not threads:
            raise AssertionError("the vector field was never called")
        if threads != {HostThread.thread()}:
            raise AssertionError(f"the vector field ran on {threads}, not only on the "
                                 "host thread")
        return "every right-hand side ran on the pysciml-host thread"

    return Check("host thread", run)


# The Ctrl-C check sends SIGINT to its child, which must then have Python's handler:
# a child inherits an ignored SIGINT from a self-test (or test run) started in the
# background (`cmd &` in a non-interactive shell, `nohup`), and Python keeps it ignored.
_CHILD_PREAMBLE = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import pysciml as ps
backend = sys.argv[1]
"""


def _child(code: str, backend: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD_PREAMBLE + textwrap.dedent(code), backend],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True, env=env,
    )


def _exit_check(backend, timeout):
    def run():
        start = time.perf_counter()
        child = _child("""
            problem = ps.ODEProblem(lambda t, y, k: -k * y, 0.0, 1.0)
            f = lambda k: jnp.sum(ps.solve(problem, jnp.ones(2), k,
                                           saveat=jnp.array([1.0]), backend=backend).ys)
            print("solved", float(jax.grad(f)(1.0)))
        """, backend)
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
            stage = "it solved, then hung at exit" if "solved" in out else "no solve"
            raise AssertionError(f"the child did not exit within {timeout} s ({stage})") from None
        elapsed = time.perf_counter() - start
        if child.returncode != 0 or "solved" not in out:
            raise AssertionError(f"exit code {child.returncode}: "
                                 + " / ".join(err.strip().splitlines()[-3:]))
        return f"one solve and its gradient, then a clean exit, in {elapsed:.1f} s"

    return Check("exit after a solve", run)


def _ctrl_c_check(backend, timeout):
    def run():
        child = _child("""
            def lv(t, y, p):
                return jnp.stack([p[0]*y[0] - p[1]*y[0]*y[1],
                                  -p[2]*y[1] + p[3]*y[0]*y[1]])
            problem = ps.ODEProblem(lv, 0.0, 1e6)
            p = jnp.array([1.5, 1.0, 3.0, 1.0])
            # Compile (and start the backend) on a short solve first.
            ps.solve(problem, jnp.ones(2), p, saveat=jnp.array([1.0]), backend=backend)
            print("started", flush=True)
            try:
                ps.solve(problem, jnp.ones(2), p, saveat=jnp.array([1e6]),
                         backend=backend, rtol=1e-12, atol=1e-12, max_steps=10**9)
                print("finished")
            except KeyboardInterrupt:
                print("KeyboardInterrupt")
            except Exception as e:
                print("raised", type(e).__name__, "interrupted by Ctrl-C" in str(e))
            print("alive")
        """, backend)
        try:
            line = ""
            deadline = time.monotonic() + timeout
            while "started" not in line and time.monotonic() < deadline:
                line = child.stdout.readline()
                if not line and child.poll() is not None:
                    break
            if "started" not in line:
                raise AssertionError("the child never started its long solve: "
                                     + " / ".join(child.stderr.read().splitlines()[-3:]))
            time.sleep(2.0)
            sent = time.perf_counter()
            child.send_signal(signal.SIGINT)
            out, err = child.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            raise AssertionError("the child did not stop within 60 s of Ctrl-C") from None
        waited = time.perf_counter() - sent
        if child.returncode < 0:
            raise AssertionError(f"the child died of signal {-child.returncode} "
                                 "(an exception left a pure_callback?)")
        if "alive" not in out or "finished" in out:
            raise AssertionError(f"unexpected output {out.strip()!r}; stderr: "
                                 + " / ".join(err.strip().splitlines()[-3:]))
        how = out.strip().splitlines()[-2]
        return f"Ctrl-C stopped the solve after {waited:.2f} s ({how}); process alive"

    return Check("Ctrl-C during a solve", run)


# --- Failure reports -------------------------------------------------------------------


def _adjoint_max_steps_check(backend):
    adjoint = get_backend(backend).default_sensitivity

    def run():
        def steps(max_steps):
            def loss(p):
                return jnp.sum(solve(LV, jnp.asarray(LV_Y0), p, saveat=LV_TS,
                                     backend=backend, rtol=1e-10, atol=1e-10,
                                     max_steps=max_steps, throw=False,
                                     sensitivity=adjoint).ys)

            sol = solve(LV, jnp.asarray(LV_Y0), jnp.asarray(LV_P), saveat=LV_TS,
                        backend=backend, rtol=1e-10, atol=1e-10, max_steps=max_steps,
                        throw=False)
            return sol, jax.grad(loss)(jnp.asarray(LV_P))

        # The throw=True failure below is expected: JAX logs the callback error that
        # carries it, which is noise here.
        logger = logging.getLogger("jax._src.callback")
        level = logger.level
        logger.setLevel(logging.CRITICAL)
        try:
            return _adjoint_max_steps(steps)
        finally:
            logger.setLevel(level)

    def _adjoint_max_steps(steps):
        sol, _ = steps(100_000)
        forward_steps = int(sol.stats["num_steps"])
        sol, grad = steps(forward_steps + 1)
        if sol.result != RESULTS.successful:
            raise Skipped(f"the forward solve failed with max_steps={forward_steps + 1}")
        if np.all(np.isfinite(np.asarray(grad))):
            raise Skipped(f"the adjoint needed at most {forward_steps + 1} steps")
        # The gradient is NaN: with throw=True the same solve must say why.
        try:
            jax.grad(lambda p: jnp.sum(solve(LV, jnp.asarray(LV_Y0), p, saveat=LV_TS,
                                             backend=backend, rtol=1e-10, atol=1e-10,
                                             max_steps=forward_steps + 1,
                                             sensitivity=adjoint).ys))(
                jnp.asarray(LV_P)).block_until_ready()
        except Exception as e:
            if "maximum number of solver steps" not in str(e):
                raise AssertionError(f"the adjoint failed, but reported: "
                                     f"{str(e).splitlines()[0]}") from None
            return (f"max_steps={forward_steps + 1}: the forward solve succeeds, the "
                    "adjoint reports max_steps_reached")
        raise AssertionError("throw=True gave a NaN gradient and no error")

    return Check("adjoint stopped by max_steps", run)


def _shape_error_check():
    def run():
        from ._julia import julia_module

        jl = julia_module()

        def bad(*args):
            return np.zeros(3)

        def work():
            return jl.forward(bad, bad, bad, np.ones(2), np.ones(1), 0.0, 1.0,
                              np.array([1.0]), "Tsit5", 1e-6, 1e-8, 100)

        _, code, *_ = HostThread.run(work)
        message = str(HostThread.run(jl.last_error))
        if int(code) != 5 or "returned an array of shape (3,)" not in message:
            raise AssertionError(f"code {int(code)}, message {message!r}")
        return f"reported as: {message}"

    return Check("callback of the wrong shape", run)


def _start_check():
    def run():
        from ._julia import julia_module

        start = time.perf_counter()
        jl = julia_module()
        elapsed = time.perf_counter() - start
        return f"{HostThread.run(lambda: str(jl.versions()))} (start {elapsed:.1f} s)"

    return Check("start Julia and load the bridge", run)


# --- Native kernels: the C function pointers that the Julia bridge `ccall`s ----------


class NativePointers(NamedTuple):
    """C function pointers (`pysciml._native._cabi.CFunction`s) of one flat vector
    field, with the fields of `HostCallbacks.c_pointers()`'s result and `jac`."""

    f: object
    vjp_u: object
    vjp_p: object
    jac: object


def export_field(field, n: int, m: int) -> NativePointers:
    """Compiles `field(t, y, p)` (flat float64 vectors of n and m values), its VJPs and
    its Jacobian with pysciml's native compiler and exports them with the C ABI."""
    from ._native import compile_function
    from ._native._cabi import export

    u, p = np.zeros(n), np.zeros(m)
    fns = {
        "f": (lambda t, y, q: field(t, y, q), (0.0, u, p)),
        "vjp_u": (lambda t, y, q, v: jax.vjp(lambda y_: field(t, y_, q), y)[1](v)[0],
                  (0.0, u, p, u)),
        "vjp_p": (lambda t, y, q, v: jax.vjp(lambda q_: field(t, y, q_), q)[1](v)[0],
                  (0.0, u, p, u)),
        "jac": (lambda t, y, q: jax.jacfwd(field, argnums=1)(t, y, q), (0.0, u, p)),
    }
    return NativePointers(**{
        name: export(name, compile_function(fn, *example), n, m)
        for name, (fn, example) in fns.items()
    })


_DP = ctypes.POINTER(ctypes.c_double)
# The C ABI as the Julia bridge's `ccall`s spell it (julia/pycallbacks.jl,
# `make_native_odefunction`): (out, u, p, t) and (out, v, u, p, t) -> Cint.
_CTYPES = {
    "f": ctypes.CFUNCTYPE(ctypes.c_int32, _DP, _DP, _DP, ctypes.c_double),
    "jac": ctypes.CFUNCTYPE(ctypes.c_int32, _DP, _DP, _DP, ctypes.c_double),
    "vjp_u": ctypes.CFUNCTYPE(ctypes.c_int32, _DP, _DP, _DP, _DP, ctypes.c_double),
    "vjp_p": ctypes.CFUNCTYPE(ctypes.c_int32, _DP, _DP, _DP, _DP, ctypes.c_double),
}


def call_native(pointer, size: int, t, u, p, v=None) -> tuple[np.ndarray, int]:
    """Calls one exported pointer from its bare address (as Julia does), through ctypes,
    on contiguous float64 copies; returns `(out, return code)`."""
    fn = _CTYPES[pointer.name](int(pointer.address))
    out = np.full(size, np.nan)
    args = [np.ascontiguousarray(a, np.float64) for a in
            ([u, p] if v is None else [v, u, p])]
    rc = fn(out.ctypes.data_as(_DP), *(a.ctypes.data_as(_DP) for a in args), float(t))
    return out, int(rc)


class _Offered:
    """A backend's `HostCallbacks` whose `c_pointers()` gives `pointers` (`None`: the
    Python callbacks), recording every call of its Python `f` and `vjp` in `calls`."""

    def __init__(self, callbacks, pointers, calls):
        def counted(fn):
            def call(*args):
                calls.append(1)
                return fn(*args)

            return call

        self._callbacks = callbacks
        self.f, self.vjp = counted(callbacks.f), counted(callbacks.vjp)
        self._pointers = pointers

    def __getattr__(self, name):
        return getattr(self._callbacks, name)

    def c_pointers(self):
        return self._pointers


@contextlib.contextmanager
def offered_pointers(backend, pointers):
    """Within the block, `backend`'s callbacks offer `pointers` (or `None`) as their
    native kernels; yields the list that records the Python callbacks' calls."""
    cls = type(get_backend(backend))
    original = cls._callbacks
    calls: list = []

    def offered(self, problem, n, m):
        return _Offered(original(self, problem, n, m), pointers, calls)

    cls._callbacks = offered
    try:
        yield calls
    finally:
        cls._callbacks = original


def _nan_after_p0(t, y, p):
    # y' = y, exactly, up to t = p[0], and NaN after it (0 * NaN): a kernel returns 1
    # there, while the solution before it is smooth (no step-size collapse first).
    return y * (1.0 + 0.0 * jnp.sqrt(p[0] - t))


def _lv_host_pointers(backend):
    """`c_pointers()` of the callbacks that `backend` builds for Lotka-Volterra, where
    that method exists (else, or where it gives none, `None`)."""
    dyn, static = split_args(jnp.asarray(LV_P))
    field = FlatVectorField(_lotka_volterra, spec_of(jnp.asarray(LV_Y0)), spec_of(dyn),
                            static)
    problem = SimpleNamespace(vector_field=field, jac_sparsity=None)
    callbacks = HostThread.run(get_backend(backend)._callbacks, problem, 2, 4)
    c_pointers = getattr(callbacks, "c_pointers", None)
    return None if c_pointers is None else HostThread.run(c_pointers)


def _native_abi(pointers, tag) -> float:
    """Every pointer of Lotka-Volterra through ctypes, in the bridge's layout, against
    JAX; the Jacobian column-major."""
    errs = []
    rng = np.random.default_rng(0)
    for _ in range(3):
        t, u, p, v = rng.uniform(0, 5), rng.uniform(0.1, 3, 2), rng.uniform(0.1, 3, 4), \
            rng.normal(size=2)
        _, pullback = jax.vjp(lambda u_, p_: _lotka_volterra(t, u_, p_), u, p)
        want_u, want_p = pullback(v)
        calls = [("f", 2, (), _lotka_volterra(t, u, p))]
        calls += [("vjp_u", 2, (v,), want_u), ("vjp_p", 4, (v,), want_p)]
        if getattr(pointers, "jac", None) is not None:
            jac = np.asarray(jax.jacfwd(_lotka_volterra, argnums=1)(t, u, p))
            calls.append(("jac", 4, (), jac.ravel(order="F")))
        for name, size, v_arg, want in calls:
            out, rc = call_native(getattr(pointers, name), size, t, u, p, *v_arg)
            if rc != 0:
                raise AssertionError(f"{tag} {name} returned {rc} on finite values")
            errs.append(_expect(f"{tag} {name}", out, want, 1e-12))
    return max(errs)


def _native_check(backend):
    adjoint = get_backend(backend).default_sensitivity

    def run():
        host = _lv_host_pointers(backend)
        bad = export_field(_nan_after_p0, 1, 1)
        if backend != "julia":
            # No ccall here: the same pointers, called as the bridge calls them.
            err = _native_abi(export_field(_lotka_volterra, 2, 4), "exported")
            if host is not None:
                err = max(err, _native_abi(host, "c_pointers()"))
            codes = [call_native(bad.f, 1, t, [1.0], [0.5])[1] for t in (0.25, 0.75)]
            if codes != [0, 1]:
                raise AssertionError(f"return codes {codes} at t < p0 and t > p0; "
                                     "expected [0, 1]")
            which = "export and c_pointers()" if host is not None else "export"
            return (f"f, vjp_u, vjp_p, jac ({which}) through ctypes in the ccall layout: "
                    f"max rel. error {err:.1e} vs JAX; a non-finite output returns 1")
        offered = host if host is not None else export_field(_lotka_volterra, 2, 4)
        with offered_pointers(backend, offered) as calls:
            value, (g_y0, g_p) = _lv_value_and_grad(backend, Dopri8(), adjoint, 1e-10)
            sol = solve(LV, jnp.asarray(LV_Y0), jnp.asarray(LV_P), saveat=LV_TS,
                        backend=backend, solver=Dopri8(), sensitivity=adjoint,
                        rtol=1e-10, atol=1e-10, max_steps=100_000)
        if calls:
            raise AssertionError(f"the Python callbacks ran {len(calls)} times: the "
                                 "native path was not taken")
        if not int(sol.stats["num_fevals"]) > 0:
            raise AssertionError("no native f call was counted")
        ref, (r_y0, r_p) = _lv_value_and_grad("diffrax", Dopri8(), DirectAdjoint(), 1e-12)
        errs = [_expect("value", value, ref, 1e-6), _expect("dL/dy0", g_y0, r_y0, 1e-6),
                _expect("dL/dp", g_p, r_p, 1e-6)]
        with offered_pointers(backend, bad):
            result = solve(ODEProblem(_nan_after_p0, 0.0, 1.0), jnp.ones(1),
                           jnp.array([0.5]), saveat=jnp.array([1.0]), backend=backend,
                           sensitivity=adjoint, throw=False).result
        if result != RESULTS.nonfinite:
            raise AssertionError(f"a kernel returning 1 ended the solve as {result}, "
                                 "not nonfinite")
        which = "c_pointers()" if host is not None else "exported pointers"
        return (f"forward and {type(adjoint).__name__} gradient with no Python "
                f"callback ({which}, {int(sol.stats['num_fevals'])} native f calls): "
                f"max rel. error "
                f"{max(errs):.1e} vs diffrax Dopri8 at 1e-12; a kernel returning 1 "
                "gives nonfinite")

    return Check("native kernels (ccall) Lotka-Volterra", run)


# --- The list -----------------------------------------------------------------------


def checks(backend: str = "julia") -> list[Check]:
    """The checks for one host backend, built from its own solver and sensitivity
    tables.

    **Arguments:**

    - `backend`: `"julia"`, or `"scipy"` to run the same checks on SciPy.

    **Returns:**

    A list of `Check`s.
    """
    table = get_backend(backend)
    adjoints = list(table.sensitivities)
    implicit = [s for s in table.solvers if issubclass(s, AbstractImplicitSolver | LSODA)]
    out = [_start_check()] if backend == "julia" else []
    out += [_explicit_check(backend, s()) for s in adjoints]
    out.append(_forward_sensitivity_check(backend))
    # BacksolveAdjoint re-integrates the state backward, which is unstable on a stiff
    # problem whatever the solver (the fast mode grows backward): not checked there.
    out += [_stiff_check(backend, solver(), s()) for solver in implicit
            for s in adjoints if s is not BacksolveAdjoint]
    heat_solver = next(s for s in implicit if s.__name__ in ("FBDF", "QNDF"))
    out.append(_heat_check(backend, heat_solver()))
    out.append(_event_check(backend))
    out.append(_adjoint_max_steps_check(backend))
    out.append(_native_check(backend))
    if backend == "julia":
        out.append(_shape_error_check())
    timeout = 900 if backend == "julia" else 120
    out += [_thread_check(backend), _exit_check(backend, timeout),
            _ctrl_c_check(backend, timeout)]
    return out


def run_selftest(backend: str = "julia", stream=None) -> int:
    """Runs every check and prints a table.

    **Arguments:**

    - `backend`: the host backend to check (`"julia"` by default).
    - `stream`: where to print (default: standard output).

    **Returns:**

    An exit status: 0 if every check passed, 1 if one failed, 2 if the backend could
    not be started at all (the reason is printed).
    """
    stream = stream or sys.stdout
    jax.config.update("jax_enable_x64", True)
    if backend == "julia":
        from ._julia import JuliaNotAvailableError, julia_module

        try:
            julia_module()
        except JuliaNotAvailableError as e:
            print(f"The Julia self-test cannot run: Julia did not start.\n\n{e}",
                  file=stream)
            return 2
    rows = []
    for check in checks(backend):
        start = time.perf_counter()
        try:
            status, detail = "pass", check.run()
        except Skipped as e:
            status, detail = "skip", str(e)
        except Exception as e:
            status, detail = "FAIL", f"{type(e).__name__}: {str(e).splitlines()[0]}"
        rows.append((check.name, status, time.perf_counter() - start, detail))
        print(f"  {status:4s}  {check.name}", file=stream, flush=True)
    width = max(len(r[0]) for r in rows)
    print(f"\npysciml self-test of the {backend!r} backend\n", file=stream)
    print(f"| {'check':{width}s} | result | time s | detail |", file=stream)
    print(f"|{'-' * (width + 2)}|--------|-------:|--------|", file=stream)
    for name, status, elapsed, detail in rows:
        print(f"| {name:{width}s} | {status:6s} | {elapsed:6.1f} | {detail} |",
              file=stream)
    failed = sum(r[1] == "FAIL" for r in rows)
    print(f"\nself-test: {len(rows) - failed} of {len(rows)} checks passed or skipped",
          file=stream)
    return 1 if failed else 0

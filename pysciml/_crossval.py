"""Cross-validation of the backends: values, gradients and timings side by side.

`python -m pysciml crossval` (and `make demo`) prints, for a few test problems with a
known truth, every installed backend × solver × sensitivity: the error of the solution
and of its gradient against the truth, and the time of a jitted forward and gradient.
"""

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.integrate
import scipy.linalg

from ._backend import get_backend
from ._problem import ODEProblem
from ._solution import RESULTS
from ._solve import solve


class Case(NamedTuple):
    name: str
    problem: ODEProblem
    y0: jax.Array
    args: jax.Array
    ts: np.ndarray
    stiff: bool
    truth: object  # () -> (ys, d loss / d args), computed outside pysciml


def _decay():
    ts = np.linspace(0.5, 3.0, 6)
    tau = 1.5

    def truth():
        ys = 2.0 * np.exp(-ts / tau)[:, None]
        # loss = sum(ys²): d/dτ of 4 e^{-2t/τ} summed = Σ 8 t/τ² e^{-2t/τ}
        return ys, np.array(np.sum(8 * ts / tau**2 * np.exp(-2 * ts / tau)))

    return Case("decay y'=-y/τ", ODEProblem(lambda t, y, k: -y / k, 0.0, 3.0),
                jnp.array([2.0]), jnp.array(tau), ts, False, truth)


def _linear(stiff: bool):
    lam = 1e4 if stiff else 3.0
    ts = np.linspace(0.1, 2.0, 7)

    def field(t, y, p):
        return jnp.array([[-p[0], p[0] - p[1]], [0.0, -p[1]]]) @ y

    def truth():
        a = np.array([[-lam, lam - 1.0], [0.0, -1.0]])
        ys = np.stack([scipy.linalg.expm(a * t) @ np.ones(2) for t in ts])
        # y = (e^{-t}, e^{-t}) from y0 = (1, 1) for every λ: the loss does not depend
        # on λ, and d/dp1 of Σ 2 e^{-2 p1 t} at p1 = 1 is Σ -4 t e^{-2t}.
        return ys, np.array([0.0, np.sum(-4 * ts * np.exp(-2 * ts))])

    name = "stiff linear (λ=1e4)" if stiff else "linear (λ=3)"
    return Case(name, ODEProblem(field, 0.0, 2.0), jnp.ones(2),
                jnp.array([lam, 1.0]), ts, stiff, truth)


def _lotka_volterra_truth(ts, y0, p):
    """Lotka–Volterra's values at `ts` and the gradient of `Σ ys²` with respect to
    `p`, from outside pysciml: SciPy's DOP853 at rtol = atol = 1e-13 on a right-hand
    side written here in NumPy, with the forward sensitivity equations `S' = J S +
    ∂f/∂p` (`S = ∂y/∂p`, 2×4) written out by hand beside the state."""
    a, b, c, d = (float(v) for v in p)

    def rhs(t, u):
        x, z = u[0], u[1]
        s = u[2:].reshape(2, 4)
        jac = np.array([[a - b * z, -b * x], [d * z, -c + d * x]])
        f_p = np.array([[x, -x * z, 0.0, 0.0], [0.0, 0.0, -z, x * z]])
        return np.concatenate(
            [[a * x - b * x * z, -c * z + d * x * z], (jac @ s + f_p).ravel()]
        )

    u = np.concatenate([np.asarray(y0, dtype=np.float64), np.zeros(8)])
    t = ts[0]  # the span starts at ts[0] = t0, where S = 0
    out = []
    for t_next in ts:
        # One solve per interval, so that every save time is a step end: no error
        # from DOP853's dense output enters the truth.
        if t_next > t:
            sol = scipy.integrate.solve_ivp(rhs, (t, t_next), u, method="DOP853",
                                            rtol=1e-13, atol=1e-13)
            if sol.status != 0:
                raise RuntimeError(f"the Lotka–Volterra truth failed: {sol.message}")
            u, t = sol.y[:, -1], t_next
        out.append(u)
    out = np.array(out)
    ys, sens = out[:, :2], out[:, 2:].reshape(-1, 2, 4)
    # d/dp Σ_i |y(t_i)|² = Σ_i 2 y(t_i)ᵀ S(t_i)
    return ys, np.einsum("ik,ikj->j", 2 * ys, sens)


def _lotka_volterra():
    def field(t, y, p):
        x, z = y[0], y[1]
        return jnp.stack([p[0] * x - p[1] * x * z, -p[2] * z + p[3] * x * z])

    ts = np.linspace(0.0, 10.0, 50)
    y0, p = np.ones(2), np.array([1.5, 1.0, 3.0, 1.0])
    return Case("Lotka–Volterra", ODEProblem(field, 0.0, 10.0), jnp.asarray(y0),
                jnp.asarray(p), ts, False, lambda: _lotka_volterra_truth(ts, y0, p))


def _reference(case: Case):
    """The truth, from outside pysciml: closed forms, or raw SciPy (see each case)."""
    ys, grad = case.truth()
    return np.asarray(ys), np.asarray(grad)


def _time(fn, *args, repeat=5):
    """Best of `repeat` calls after compilation; a single call if one takes > 0.5 s."""
    jax.block_until_ready(fn(*args))  # compile
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
        if best > 0.5:
            break
    return best


def _rel(a, b):
    scale = max(float(np.max(np.abs(b))), 1e-300)
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) / scale


CASES = {
    "decay": _decay,
    "linear": lambda: _linear(False),
    "stiff-linear": lambda: _linear(True),
    "lotka-volterra": _lotka_volterra,
}


def crossval(
    backends, rtol: float = 1e-8, atol: float = 1e-10, cases=tuple(CASES)
) -> list[dict]:
    """Runs every case on every backend × solver × sensitivity.

    **Arguments:**

    - `backends`: backend names to compare.
    - `rtol`, `atol`: solver tolerances.
    - `cases`: names from `CASES`.

    **Returns:**

    One dict per run: case, backend, solver, sensitivity, value and gradient errors
    (relative to the largest value of the truth), forward and gradient times (s), or
    the error message if the run failed.
    """
    from ._solver import LSODA, AbstractImplicitSolver

    jax.config.update("jax_enable_x64", True)
    rows = []
    for case in (CASES[name]() for name in cases):
        ys_true, grad_true = _reference(case)
        for name in backends:
            backend = get_backend(name)
            for solver_cls in backend.solvers:
                stiff_solver = issubclass(solver_cls, AbstractImplicitSolver | LSODA)
                if case.stiff != stiff_solver:
                    continue  # explicit solvers on the stiff case only show slowness
                for sens_cls in backend.sensitivities:
                    row = dict(case=case.name, backend=name, solver=solver_cls.__name__,
                               sensitivity=sens_cls.__name__)
                    # throw=False: a failure is a row of the report, with its reason.
                    kw = dict(saveat=case.ts, backend=name, solver=solver_cls(),
                              sensitivity=sens_cls(), rtol=rtol, atol=atol,
                              max_steps=100_000, throw=False)

                    def forward(args, kw=kw):
                        sol = solve(case.problem, case.y0, args, **kw)
                        return sol.ys, sol.result._value

                    def grad(args, kw=kw):
                        return jax.grad(lambda a: jnp.sum(forward(a, kw)[0] ** 2))(args)

                    try:
                        forward_jit, grad_jit = jax.jit(forward), jax.jit(grad)
                        ys, code = forward_jit(case.args)
                        if int(code) != 0:
                            row["error"] = RESULTS._index_to_message[int(code)]
                            rows.append(row)
                            continue
                        row["value_err"] = _rel(ys, ys_true)
                        row["grad_err"] = _rel(grad_jit(case.args), grad_true)
                        row["forward_s"] = _time(forward_jit, case.args)
                        row["grad_s"] = _time(grad_jit, case.args)
                    except Exception as e:  # a row of the report, not a crash
                        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
                    rows.append(row)
    return rows


def print_report(rows: list[dict], rtol: float) -> None:
    print(f"Backend cross-validation at rtol={rtol:g}: errors relative to the truth, "
          "taken from outside pysciml (closed forms; for Lotka–Volterra, SciPy's "
          "DOP853 at 1e-13 on a NumPy right-hand side, the gradient from forward "
          "sensitivities); loss = Σ ys²;")
    print("times are the best of up to 5 jitted calls after compilation.\n")
    print("| case | backend | solver | sensitivity | value err | grad err | "
          "forward ms | grad ms |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['case']} | {r['backend']} | {r['solver']} | "
                  f"{r['sensitivity']} | failed: {r['error']} | | | |")
            continue
        print(f"| {r['case']} | {r['backend']} | {r['solver']} | {r['sensitivity']} | "
              f"{r['value_err']:.1e} | {r['grad_err']:.1e}"
              f"{' (adjoint failed)' if not np.isfinite(r['grad_err']) else ''} | "
              f"{1e3 * r['forward_s']:.2f} | {1e3 * r['grad_s']:.2f} |")

"""Cross-validation of the backends: values, gradients and timings side by side.

`python -m pysciml crossval` (and `make demo`) prints, for test problems with a truth
from outside pysciml, every installed backend × solver × sensitivity: the error of the
solution and of its gradient against the truth, and the time of a jitted forward and
gradient. With `--plot DIR` it also sweeps the tolerance and saves work-precision
diagrams (error against time), one per problem.
"""

import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.integrate
import scipy.linalg

from . import _testset
from ._backend import get_backend
from ._problem import ODEProblem
from ._solution import RESULTS
from ._solve import solve


class Case(NamedTuple):
    """A test problem of the report.

    - `truth`: `() -> (ys, d loss / d args)` at `ts`, computed outside pysciml; the
        gradient is `None` where no reference exists (the IVP test set).
    - `value_error`: `ys -> error`; `None` uses the largest absolute error relative to
        the largest value of the truth.
    - `atol_per_rtol`: the case's absolute tolerance as a multiple of `rtol`; `None`
        uses the report's `atol / rtol`.
    - `reference_error`: the truth's own relative error, where it is known to exceed
        roundoff (drawn in the diagrams); else `None`.
    """

    name: str
    problem: ODEProblem
    y0: jax.Array
    args: jax.Array
    ts: np.ndarray
    stiff: bool
    truth: Callable
    value_error: Callable | None = None
    atol_per_rtol: float | None = None
    reference_error: float | None = None


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


def _testset_case(make) -> Case:
    """A problem of the IVP test set (`_testset.py`): its published `y(t1)` is the
    truth; there is no gradient reference."""
    tp = make()
    return Case(f"{tp.name} (test set)", tp.problem, jnp.asarray(tp.y0),
                jnp.asarray(tp.args), np.array([tp.problem.t1]), True,
                lambda: (tp.reference[None], None),
                value_error=lambda ys: tp.relative_error(ys[-1]),
                atol_per_rtol=tp.atol_per_rtol, reference_error=tp.reference_error)


def _time(fn, *args, repeat=5):
    """Best of `repeat` calls of an already compiled (and called) `fn`; fewer if one
    takes > 0.5 s."""
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
    **{key: (lambda make=make: _testset_case(make))
       for key, make in _testset.PROBLEMS.items()},
}

# The tolerances of the work-precision sweep (`--plot`), as in SciMLBenchmarks' diagrams.
SWEEP_RTOLS = (1e-4, 1e-6, 1e-8, 1e-10)

# Shown in the sensitivity and gradient columns of value-only rows.
NO_GRADIENT = "—"

_GRAD_NAN = "the gradient is NaN: the adjoint solve failed"


def _run(case, key, backend, solver_cls, sens_cls, truth, rtol, atol, max_steps,
         repeat) -> dict:
    """One row: solve, compare with the truth, and time the jitted forward (and
    gradient, where the truth has one)."""
    ys_true, grad_true = truth
    with_grad = grad_true is not None
    row = dict(case=case.name, key=key, backend=backend, solver=solver_cls.__name__,
               sensitivity=sens_cls.__name__ if with_grad else NO_GRADIENT,
               rtol=rtol, atol=atol)
    # throw=False: a failure is a row of the report, with its reason.
    kw = dict(saveat=case.ts, backend=backend, solver=solver_cls(), rtol=rtol,
              atol=atol, max_steps=max_steps, throw=False)
    if with_grad:
        kw["sensitivity"] = sens_cls()

    def forward(args):
        sol = solve(case.problem, case.y0, args, **kw)
        return sol.ys, sol.result._value

    def grad(args):
        return jax.grad(lambda a: jnp.sum(forward(a)[0] ** 2))(args)

    def reason(e):
        return f"{type(e).__name__}: {str(e).splitlines()[0]}"

    try:
        forward_jit = jax.jit(forward)
        ys, code = forward_jit(case.args)  # compiles, then runs
        if int(code) != 0:
            row["error"] = RESULTS._index_to_message[int(code)]
            return row
        row["value_err"] = (_rel(ys, ys_true) if case.value_error is None
                            else case.value_error(np.asarray(ys)))
        row["forward_s"] = _time(forward_jit, case.args, repeat=repeat)
    except Exception as e:  # a row of the report, not a crash
        row["error"] = reason(e)
        return row
    if not with_grad:
        return row
    try:
        grad_jit = jax.jit(grad)
        g = grad_jit(case.args)
        if not np.all(np.isfinite(g)):
            # With throw=False a failed adjoint solve returns NaN (its code does not
            # reach here); a failed gradient is not timed.
            row["grad_error"] = _GRAD_NAN
        else:
            row["grad_err"] = _rel(g, grad_true)
            row["grad_s"] = _time(grad_jit, case.args, repeat=repeat)
    except Exception as e:
        row["grad_error"] = reason(e)
    return row


def crossval(
    backends,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    cases=tuple(CASES),
    *,
    max_steps: int = 100_000,
    solvers=None,
    sensitivities=None,
    sweep_rtols=(),
    sweep_cases=None,
) -> list[dict]:
    """Runs every case on every backend × solver × sensitivity.

    Stiff cases run on the stiff solvers only (implicit ones and LSODA), the others on
    the rest. Cases without a gradient reference (the IVP test set) get one row per
    solver, with the sensitivity `"—"`.

    **Arguments:**

    - `backends`: backend names to compare.
    - `rtol`, `atol`: solver tolerances. A case with `atol_per_rtol` (the test set)
        solves with `atol = atol_per_rtol * rtol` instead.
    - `cases`: names from `CASES`, or `Case` objects (a problem of your own; its
        `name` is its key).
    - `max_steps`: passed to `solve`.
    - `solvers`, `sensitivities`: names (e.g. `("LSODA",)`) to restrict the rows to;
        `None` runs all that each backend supports. (A value-only case has one row
        per solver whatever `sensitivities` says.)
    - `sweep_rtols`: extra tolerances for the work-precision diagrams
        (`plot_work_precision`): at each, every solver runs again with its backend's
        default sensitivity, at `atol` scaled with `rtol`, and is timed once
        (`rtol` itself is not repeated).
    - `sweep_cases`: the names in `cases` to sweep; `None` sweeps all.

    **Returns:**

    One dict per run: `case`, `key` (the name in `CASES`), `backend`, `solver`,
    `sensitivity`, `rtol`, `atol`; then `value_err` and `grad_err` (relative errors;
    no `grad_err` without a gradient reference) and `forward_s`, `grad_s` (seconds);
    or `error` (the forward solve failed) or `grad_error` (the gradient did), with
    the reason.
    """
    from ._solver import LSODA, AbstractImplicitSolver

    jax.config.update("jax_enable_x64", True)
    rows = []
    for item in cases:
        case, key = (CASES[item](), item) if isinstance(item, str) else (item, item.name)
        truth = case.truth()
        rtols = sweep_rtols if sweep_cases is None or key in sweep_cases else ()

        def atol_at(r, case=case):
            if case.atol_per_rtol is not None:
                return case.atol_per_rtol * r
            return atol if r == rtol else atol / rtol * r

        for name in backends:
            backend = get_backend(name)
            default_sens = type(backend.default_sensitivity)
            for solver_cls in backend.solvers:
                stiff_solver = issubclass(solver_cls, AbstractImplicitSolver | LSODA)
                if case.stiff != stiff_solver:
                    continue  # explicit solvers on the stiff case only show slowness
                if solvers is not None and solver_cls.__name__ not in solvers:
                    continue
                if truth[1] is None:
                    sens_classes = [default_sens]  # values only: one row
                else:
                    sens_classes = [
                        s for s in backend.sensitivities
                        if sensitivities is None or s.__name__ in sensitivities
                    ]
                for sens_cls in sens_classes:
                    rows.append(_run(case, key, name, solver_cls, sens_cls, truth,
                                     rtol, atol_at(rtol), max_steps, repeat=5))
                for r in rtols:
                    if r != rtol:
                        rows.append(_run(case, key, name, solver_cls, default_sens,
                                         truth, r, atol_at(r), max_steps, repeat=1))
    return rows


def _fmt_err(r, key, failed_key):
    if failed_key in r:
        return f"failed: {r[failed_key]}"
    return f"{r[key]:.1e}" if key in r else NO_GRADIENT


def print_report(rows: list[dict], rtol: float) -> None:
    """Prints the rows at `rtol` (the report's tolerance) as a Markdown table."""
    print(f"Backend cross-validation at rtol={rtol:g}: errors relative to the truth, "
          "taken from outside pysciml (closed forms; for Lotka–Volterra, SciPy's "
          "DOP853 at 1e-13 on a NumPy right-hand side, the gradient from forward "
          "sensitivities); loss = Σ ys²;")
    print("times are the best of up to 5 jitted calls after compilation.")
    print("Test-set rows (stiff solvers only): ROBER, VDPOL, OREGO and E5 against the "
          "published y(t1) of the IVP test set (Mazzia & Magherini 2008, through the "
          "deTestSet R package: Mazzia, Cash & Soetaert 2012), the largest relative "
          "error of a component; each at its own atol (column atol). Values only: no "
          "gradient reference exists ('—').\n")
    print("| case | backend | solver | sensitivity | atol | value err | grad err | "
          "forward ms | grad ms |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["rtol"] != rtol:
            continue  # a point of the work-precision sweep
        start = (f"| {r['case']} | {r['backend']} | {r['solver']} | "
                 f"{r['sensitivity']} | {r['atol']:.0e} |")
        if "error" in r:
            print(f"{start} failed: {r['error']} | | | |")
            continue
        grad_ms = f"{1e3 * r['grad_s']:.2f}" if "grad_s" in r else ""
        if r["sensitivity"] == NO_GRADIENT:
            grad_ms = NO_GRADIENT
        print(f"{start} {r['value_err']:.1e} | {_fmt_err(r, 'grad_err', 'grad_error')}"
              f" | {1e3 * r['forward_s']:.2f} | {grad_ms} |")


def plot_work_precision(rows: list[dict], directory) -> list:
    """Saves one work-precision diagram per case: error against time, one line per
    backend × solver over the swept tolerances, as SciMLBenchmarks draws them; the
    gradient's error against its time in a second panel where the case has a
    gradient reference.

    **Arguments:**

    - `rows`: from `crossval(..., sweep_rtols=SWEEP_RTOLS)`.
    - `directory`: where to write `<case>.png`; created if missing.

    **Returns:**

    The paths written, one per swept case.
    """
    import pathlib

    # Imported here: matplotlib is an optional dependency (the `examples` extra), and
    # only `--plot` needs it. The Agg canvas renders to files, with no display and no
    # change to pyplot's global backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    markers = {"diffrax": "o", "scipy": "s", "julia": "^"}
    paths = []
    for key in dict.fromkeys(r["key"] for r in rows):
        case_rows = [r for r in rows if r["key"] == key]
        rtols = sorted({r["rtol"] for r in case_rows}, reverse=True)
        if len(rtols) < 2:
            continue  # not swept: no diagram
        with_grad = any(r["sensitivity"] != NO_GRADIENT for r in case_rows)
        fig = Figure(figsize=(12 if with_grad else 7, 5.5), layout="constrained")
        FigureCanvasAgg(fig)
        panels = [("value_err", "forward_s", "error", "solution")]
        if with_grad:
            panels.append(("grad_err", "grad_s", "grad_error",
                           "gradient d(Σ ys²)/d args"))
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        lines = {}
        for r in case_rows:
            default = type(get_backend(r["backend"]).default_sensitivity).__name__
            if r["sensitivity"] in (default, NO_GRADIENT):
                lines.setdefault((r["backend"], r["solver"], r["sensitivity"]),
                                 []).append(r)
        floor = CASES[key]().reference_error if key in CASES else None
        for ax, (err_key, time_key, failed_key, what) in zip(axes, panels):
            for (backend, solver, sens), points in lines.items():
                points = sorted(points, key=lambda p: -p["rtol"])
                good = [p for p in points if err_key in p and time_key in p]
                label = f"{backend} {solver}"
                if err_key == "grad_err":
                    label += f" ({sens})"
                failed = [p["rtol"] for p in points
                          if "error" in p or failed_key in p]
                if failed:
                    label += f"; failed at rtol {', '.join(f'{t:g}' for t in failed)}"
                # An error of exactly 0 has no place on a log axis: draw it at 1e-17.
                ax.plot([max(p[err_key], 1e-17) for p in good],
                        [p[time_key] for p in good],
                        marker=markers.get(backend, "D"), label=label)
            if floor is not None and err_key == "value_err":
                ax.axvline(floor, color="0.5", linestyle=":",
                           label=f"accuracy of the reference ({floor:.1e})")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(f"relative error of the {what}, against the truth")
            ax.set_ylabel("time of a jitted call (s)")
            ax.set_title("gradient" if err_key == "grad_err" else "values",
                         fontsize="medium")
            ax.grid(True, which="major", alpha=0.4)
            ax.legend(fontsize="small")
        fig.suptitle(f"{case_rows[0]['case']}: work-precision\nrtol "
                     f"{', '.join(f'{t:g}' for t in rtols)} (tighter to the left)")
        path = directory / f"{key}.png"
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths

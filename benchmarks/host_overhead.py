"""Overhead of the host path (`backend="scipy"`) on Lotka--Volterra.

    .venv/bin/python benchmarks/host_overhead.py              # 41 rounds
    .venv/bin/python benchmarks/host_overhead.py --quick      # a smoke run (7 rounds)
    .venv/bin/python benchmarks/host_overhead.py --profile    # cProfile tables

Lotka--Volterra, p = [1.5, 1, 3, 1], y0 = [1, 1], save times on [0, 15] (100, and 20),
rtol = atol = 1e-8, float64. Every figure is the median and IQR of paired ratios over
interleaved rounds against an anchor timed in the same process (see `_common.py`);
the anchors are raw SciPy with a hand-written NumPy right-hand side, no JAX:

1. Forward: `jax.jit`ted `ps.solve(..., backend="scipy")` with `Dopri5`, `Dopri8` and
   `LSODA` against `scipy.integrate.solve_ivp(rhs, (0, 15), y0, method=...,
   t_eval=ts, rtol=1e-8, atol=1e-8)` with `RK45`, `DOP853` and `LSODA`. Headline: the
   fastest pysciml configuration against the fastest raw one of the same run (goal
   <= 1.5x); also pysciml `Dopri5` against `RK45`, the same method making the same
   right-hand-side evaluations (the overhead alone).
2. Gradient: `jax.jit(jax.grad(loss))`, loss = sum(ys**2) w.r.t. p, on the SciPy
   backend (InterpolatingAdjoint and BacksolveAdjoint, each with Dopri5, Dopri8 and
   LSODA),
   against external denominators timed in the same rounds: the fastest raw
   `solve_ivp` forward above (goal <= 4x), and the fastest raw SciPy gradient written
   by hand (forward sensitivities dS/dt = J S + df/dp in NumPy, one `solve_ivp` call
   with `RK45`, `DOP853` or `LSODA`). The ratio to pysciml's own forward is printed
   as well.
3. One right-hand-side callback, `host_callbacks(field, n, m).f(t, y, p)` (what the
   SciPy solver calls at every stage), against the NumPy `rhs`, in microseconds.
4. Where the time goes: the forward split into layers, each timed alongside the
   others (solve_ivp; pysciml's own stepping loop with the NumPy rhs; the backend's
   `host_forward` with the JAX callbacks, called directly; the full jitted solve),
   and the number of right-hand-side evaluations each solve makes.
"""

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.integrate as si  # noqa: E402
from _common import (  # noqa: E402
    Run,
    add_rounds_arguments,
    compare,
    ms,
    ratio_cell,
    rounds_of,
    us,
)

import pysciml as ps  # noqa: E402
from pysciml._backend import scipy as ps_scipy  # noqa: E402
from pysciml._backend.base import FlatProblem, SolveOptions  # noqa: E402
from pysciml._backend.host import NonFiniteError, host_callbacks  # noqa: E402
from pysciml._flatten import FlatVectorField, spec_of, split_args  # noqa: E402

FORWARD_GOAL = 1.5
GRADIENT_GOAL = 4.0
RTOL = ATOL = 1e-8
T0, T1 = 0.0, 15.0
P = np.array([1.5, 1.0, 3.0, 1.0])
Y0 = np.array([1.0, 1.0])


def lotka_volterra(t, y, p):
    x, z = y[0], y[1]
    return jnp.stack([p[0] * x - p[1] * x * z, -p[2] * z + p[3] * x * z])


def make_numpy_rhs(p):
    """The right-hand side a SciPy user writes by hand."""
    alpha, beta, gamma, delta = p

    def rhs(t, y):
        x, z = y
        return np.array([alpha * x - beta * x * z, -gamma * z + delta * x * z])

    return rhs


PROBLEM = ps.ODEProblem(lotka_volterra, T0, T1)


def ps_ys(y0, p, ts, solver=None, sensitivity=None):
    return ps.solve(
        PROBLEM,
        y0,
        p,
        saveat=ts,
        backend="scipy",
        solver=solver or ps.Dopri5(),
        rtol=RTOL,
        atol=ATOL,
        sensitivity=sensitivity,
    ).ys


def flat_field():
    """The flat vector field exactly as `solve` builds it (see `_solve.py`)."""
    y0, p = jnp.asarray(Y0), jnp.asarray(P)
    dynamic, static = split_args(p)
    return FlatVectorField(lotka_volterra, spec_of(y0), spec_of(dynamic), static)


def lean_f(field, p):
    """Prototype of a cheaper `callbacks.f`, for this benchmark only: `p` put on the
    device once per solve (it is constant during a solve) instead of converted at
    every call, and a finiteness check on the sum instead of `np.all(np.isfinite)`.
    Same numbers, same errors."""
    fn = jax.jit(lambda t, y, p: field(t, y, p))
    p_dev = jax.device_put(p)

    def f(t, y, _p):
        out = np.array(fn(t, y, p_dev))
        if not math.isfinite(out.sum()):
            raise NonFiniteError("the vector field")
        return out

    return f


def counted(fn, box, key):
    def call(*args):
        box[key] = box.get(key, 0) + 1
        return fn(*args)

    return call


# --------------------------------------------------------------------------------------


def make_sensitivity_rhs(p):
    """A raw-SciPy gradient by hand: the state and its forward sensitivities S = dy/dp
    (2 x 4), dS/dt = J S + df/dp, in NumPy, for one `solve_ivp` call."""
    alpha, beta, gamma, delta = p

    def rhs(t, u):
        x, z = u[0], u[1]
        s = u[2:].reshape(2, 4)
        jac = np.array([[alpha - beta * z, -beta * x], [delta * z, -gamma + delta * x]])
        fp = np.array([[x, -x * z, 0.0, 0.0], [0.0, 0.0, -z, x * z]])
        out = np.empty(10)
        out[0] = alpha * x - beta * x * z
        out[1] = -gamma * z + delta * x * z
        out[2:] = (jac @ s + fp).ravel()
        return out

    return rhs


def sensitivity_grad(rhs, method, ts_np):
    """dL/dp of L = sum(ys**2) from forward sensitivities (raw SciPy, no JAX)."""
    u0 = np.concatenate([Y0, np.zeros(8)])
    sol = si.solve_ivp(
        rhs, (T0, T1), u0, method=method, t_eval=ts_np, rtol=RTOL, atol=ATOL
    )
    ys, s = sol.y[:2], sol.y[2:].reshape(2, 4, -1)
    return 2 * np.einsum("it,ijt->j", ys, s)


# Raw SciPy configurations (the anchors) and the pysciml solvers that match them.
RAW_METHODS = ("RK45", "DOP853", "LSODA")
PS_SOLVERS = {"Dopri5": ps.Dopri5(), "Dopri8": ps.Dopri8(), "LSODA": ps.LSODA()}
ADJOINTS = {
    "InterpolatingAdjoint": ps.InterpolatingAdjoint(),
    "BacksolveAdjoint": ps.BacksolveAdjoint(),
}
GRAD_SOLVERS = ("Dopri5", "Dopri8", "LSODA")


def bench_forward_and_gradient(run, nsave: int, rounds: int) -> dict:
    ts_np = np.linspace(T0, T1, nsave)
    y0, p, ts = jnp.asarray(Y0), jnp.asarray(P), jnp.asarray(ts_np)
    rhs = make_numpy_rhs(P)
    sens_rhs = make_sensitivity_rhs(P)

    def raw(method):
        return lambda: si.solve_ivp(
            rhs, (T0, T1), Y0, method=method, t_eval=ts_np, rtol=RTOL, atol=ATOL
        )

    raw_fwd = {f"solve_ivp {m}": raw(m) for m in RAW_METHODS}
    ps_fwd = {
        f"pysciml {name}": jax.jit(lambda y0, p, ts, s=solver: ps_ys(y0, p, ts, s))
        for name, solver in PS_SOLVERS.items()
    }
    raw_grad = {
        f"raw gradient (sensitivities) {m}": (
            lambda m=m: sensitivity_grad(sens_rhs, m, ts_np)
        )
        for m in RAW_METHODS
    }
    ps_grad = {
        f"pysciml grad {adj} {name}": jax.jit(
            jax.grad(
                lambda p, y0, ts, s=PS_SOLVERS[name], a=sens: jnp.sum(
                    ps_ys(y0, p, ts, s, a) ** 2
                )
            )
        )
        for adj, sens in ADJOINTS.items()
        for name in GRAD_SOLVERS
    }

    # Same work: the same numbers.
    ref = raw("RK45")()
    np.testing.assert_allclose(
        np.asarray(ps_fwd["pysciml Dopri5"](y0, p, ts)), ref.y.T, rtol=1e-10, atol=1e-10
    )
    for name, fn in ps_fwd.items():
        np.testing.assert_allclose(
            np.asarray(fn(y0, p, ts)), ref.y.T, rtol=1e-5, atol=1e-6, err_msg=name
        )
    g_ref = jax.jit(
        jax.grad(
            lambda p: jnp.sum(
                ps.solve(PROBLEM, y0, p, saveat=ts, rtol=1e-10, atol=1e-10).ys ** 2
            )
        )
    )(p)
    for name, g in ps_grad.items():
        np.testing.assert_allclose(
            np.asarray(g(p, y0, ts)), g_ref, rtol=1e-4, err_msg=name
        )
    for name, g in raw_grad.items():
        np.testing.assert_allclose(g(), g_ref, rtol=1e-4, err_msg=name)

    sol = jax.jit(
        lambda y0, p, ts: (
            ps.solve(
                PROBLEM, y0, p, saveat=ts, backend="scipy", rtol=RTOL, atol=ATOL
            ).stats
        )
    )(y0, p, ts)

    def block(fn, *args):
        return lambda: jax.block_until_ready(fn(*args))

    # Forward: every raw SciPy configuration and every pysciml one, interleaved.
    t_fwd = run.add(
        f"forward, {nsave} saves",
        compare(
            {
                **raw_fwd,
                **{k: block(fn, y0, p, ts) for k, fn in ps_fwd.items()},
                "pysciml Dopri5 eager": block(ps_ys, y0, p, ts, PS_SOLVERS["Dopri5"]),
            },
            rounds=rounds,
        ),
    )
    # Gradient: against raw SciPy forwards (external), raw SciPy gradients by hand,
    # and (for continuity with earlier figures) pysciml's own forward.
    t_grad = run.add(
        f"gradient, {nsave} saves",
        compare(
            {
                **raw_fwd,
                **raw_grad,
                "pysciml Dopri5": block(ps_fwd["pysciml Dopri5"], y0, p, ts),
                **{k: block(fn, p, y0, ts) for k, fn in ps_grad.items()},
            },
            rounds=rounds,
        ),
    )
    return {
        "nsave": nsave,
        "fwd": t_fwd,
        "grad": t_grad,
        "nfev_solve_ivp": int(ref.nfev),
        "pysciml_stats": {k: int(v) for k, v in sol.items()},
    }


def report_forward_and_gradient(run, r: dict) -> None:
    n, f, g = r["nsave"], r["fwd"], r["grad"]
    raw_names = [f"solve_ivp {m}" for m in RAW_METHODS]
    ps_names = [f"pysciml {name}" for name in PS_SOLVERS]
    fastest_raw, fastest_ps = f.fastest(raw_names), f.fastest(ps_names)
    print(
        f"\n#### Forward, {n} saves: paired ratio to the fastest raw SciPy "
        f"configuration in this run ({fastest_raw}), median [IQR]\n"
    )
    print("| configuration | ms (median) | ratio to fastest raw | ratio to solve_ivp "
          "RK45 |")
    print("|---|---:|---:|---:|")
    for name in f.names:
        print(
            f"| {name} | {ms(f.median(name))} | "
            f"{ratio_cell(f.paired(name, fastest_raw), 2)} | "
            f"{ratio_cell(f.paired(name, 'solve_ivp RK45'), 2)} |"
        )
    print()
    run.figure(
        f"host forward, {n} saves: fastest pysciml ({fastest_ps}) vs fastest raw SciPy",
        f.ratios(fastest_ps, fastest_raw),
        anchor=f"{fastest_raw}, NumPy rhs (fastest of {', '.join(RAW_METHODS)})",
        what="pysciml / raw",
        goal=f"<= {FORWARD_GOAL}",
        digits=2,
    )
    run.figure(
        f"host forward, {n} saves, same method: pysciml Dopri5 (jitted) vs solve_ivp RK45",
        f.ratios("pysciml Dopri5", "solve_ivp RK45"),
        anchor="solve_ivp RK45, NumPy rhs (same method and evaluations: the overhead)",
        what="pysciml / raw",
        digits=2,
    )

    fastest_fwd = g.fastest(raw_names)
    sens_names = [k for k in g.names if k.startswith("raw gradient")]
    fastest_sens = g.fastest(sens_names)
    grad_names = [k for k in g.names if k.startswith("pysciml grad")]
    fastest_grad = g.fastest(grad_names)
    print(
        f"\n#### Gradient of sum(ys**2) w.r.t. p, {n} saves: paired ratios to the "
        f"fastest raw SciPy forward ({fastest_fwd}), to the fastest raw SciPy gradient "
        f"by hand ({fastest_sens}) and to pysciml's own forward (Dopri5), median "
        "[IQR]\n"
    )
    print("| configuration | ms (median) | ÷ fastest raw forward | ÷ fastest raw "
          "gradient | ÷ pysciml Dopri5 forward |")
    print("|---|---:|---:|---:|---:|")
    for name in g.names:
        print(
            f"| {name} | {ms(g.median(name))} | "
            f"{ratio_cell(g.paired(name, fastest_fwd), 2)} | "
            f"{ratio_cell(g.paired(name, fastest_sens), 2)} | "
            f"{ratio_cell(g.paired(name, 'pysciml Dopri5'), 2)} |"
        )
    print()
    run.figure(
        f"host gradient, {n} saves: fastest pysciml gradient ({fastest_grad}) vs "
        "fastest raw SciPy forward",
        g.ratios(fastest_grad, fastest_fwd),
        anchor=f"{fastest_fwd} forward, NumPy rhs (fastest of "
        f"{', '.join(RAW_METHODS)})",
        what="pysciml gradient / raw forward",
        goal=f"<= {GRADIENT_GOAL}",
        digits=2,
    )
    run.figure(
        f"host gradient, {n} saves: fastest pysciml gradient ({fastest_grad}) vs "
        "fastest raw SciPy gradient by hand",
        g.ratios(fastest_grad, fastest_sens),
        anchor=f"{fastest_sens} (forward sensitivities in NumPy, one solve_ivp; "
        f"fastest of {', '.join(RAW_METHODS)})",
        what="pysciml gradient / raw gradient",
        digits=2,
    )
    for adj in ADJOINTS:
        run.figure(
            f"host gradient, {n} saves, same method: pysciml {adj} Dopri5 vs "
            "solve_ivp RK45 forward",
            g.ratios(f"pysciml grad {adj} Dopri5", "solve_ivp RK45"),
            anchor="solve_ivp RK45 forward, NumPy rhs",
            what="pysciml gradient / raw forward",
            digits=2,
        )


def bench_callback(rounds: int):
    field = flat_field()
    rhs = make_numpy_rhs(P)
    y = np.array([1.1, 0.9])
    t = 0.5
    lam = np.array([0.3, -0.2])
    with jax.enable_x64(True):  # as on the host thread
        cb = host_callbacks(field, 2, 4)  # the XLA callbacks
        native = host_callbacks(field, 2, 4, None, True)  # what solves use by default
        f_native = native.resolved("f")
        vjp_native = native.resolved("vjp")
        np.testing.assert_allclose(f_native(t, y, P), rhs(t, y), rtol=1e-14)
        raw_jit = jax.jit(lambda t, y, p: field(t, y, p))
        p_dev = jax.device_put(P)
        out_np = cb.f(t, y, P)
        lean = lean_f(field, P)
        np.testing.assert_allclose(out_np, rhs(t, y), rtol=1e-14)
        np.testing.assert_allclose(lean(t, y, P), out_np, rtol=1e-14)
        out = compare(
            {
                "numpy rhs": lambda: rhs(t, y),
                "callbacks.f": lambda: cb.f(t, y, P),
                "native f (the default)": lambda: f_native(t, y, P),
                "native vjp (the default)": lambda: vjp_native(t, y, P, lam),
                "jax.jit(field) only": lambda: raw_jit(t, y, P),
                "jax.jit(field) only, p already on device": lambda: raw_jit(
                    t, y, p_dev
                ),
                "np.array(out) (the copy in callbacks.f)": lambda: np.array(out_np),
                "np.all(np.isfinite(out)) (the check in callbacks.f)": lambda: np.all(
                    np.isfinite(out_np)
                ),
                "math.isfinite(out.sum())": lambda: math.isfinite(out_np.sum()),
                "lean f (prototype, see lean_f)": lambda: lean(t, y, P),
                "callbacks.vjp": lambda: cb.vjp(t, y, P, lam),
                "callbacks.f_vjp": lambda: cb.f_vjp(t, y, P, lam),
            },
            rounds=rounds,
        )
    return out


def bench_layers(rounds: int, nsave: int = 100) -> dict:
    """The forward, layer by layer."""
    ts_np = np.linspace(T0, T1, nsave)
    rhs = make_numpy_rhs(P)
    field = flat_field()
    problem = FlatProblem(vector_field=field, t0=T0, t1=T1)
    options = SolveOptions(
        solver=ps.Dopri5(),
        sensitivity=ps.InterpolatingAdjoint(),
        rtol=RTOL,
        atol=ATOL,
        max_steps=4096,
        throw=True,
    )
    backend = ps_scipy.ScipyBackend()
    fwd = jax.jit(ps_ys)
    y0, p, ts = jnp.asarray(Y0), jnp.asarray(P), jnp.asarray(ts_np)
    counts: dict = {}
    with jax.enable_x64(True):
        cb = host_callbacks(field, 2, 4)

        def host_forward():
            return backend.host_forward(cb, problem, Y0, P, ts_np, options, keep=False)

        cb_lean = cb._replace(f=lean_f(field, P))

        def host_forward_lean():
            return backend.host_forward(
                cb_lean, problem, Y0, P, ts_np, options, keep=False
            )

        np.testing.assert_allclose(host_forward_lean()[0], host_forward()[0])

        def own_loop_numpy():
            return ps_scipy._forward(
                si.RK45, rhs, T0, Y0, ts_np, options, None, None, dense=False
            )

        # Callback counts of a forward, and of each gradient (as under `jax.grad`: a
        # forward that keeps what the backward needs, then the backward), on the host.
        cb_count = cb._replace(
            f=counted(cb.f, counts, "f"),
            vjp=counted(cb.vjp, counts, "vjp"),
            f_vjp=counted(cb.f_vjp, counts, "f_vjp"),
        )
        backend.host_forward(cb_count, problem, Y0, P, ts_np, options, keep=False)
        evals = {"forward": dict(counts)}
        for name, sens in [
            ("InterpolatingAdjoint", ps.InterpolatingAdjoint()),
            ("BacksolveAdjoint", ps.BacksolveAdjoint()),
        ]:
            opts = SolveOptions(
                solver=ps.Dopri5(),
                sensitivity=sens,
                rtol=RTOL,
                atol=ATOL,
                max_steps=4096,
                throw=True,
            )
            counts.clear()
            *_, saved = backend.host_forward(
                cb_count, problem, Y0, P, ts_np, opts, keep=True
            )
            evals[f"grad {name}: forward (keep=True)"] = dict(counts)
            counts.clear()
            backend.host_vjp(
                cb_count, problem, Y0, P, ts_np, np.ones((nsave, 2)), opts, saved=saved
            )
            evals[f"grad {name}: backward"] = dict(counts)

        t = compare(
            {
                "solve_ivp, numpy rhs": lambda: si.solve_ivp(
                    rhs, (T0, T1), Y0, method="RK45", t_eval=ts_np, rtol=RTOL, atol=ATOL
                ),
                "pysciml's stepping loop, numpy rhs": own_loop_numpy,
                "host_forward, JAX callbacks (main thread)": host_forward,
                "host_forward, lean f (prototype, see lean_f)": host_forward_lean,
                "full jitted ps.solve": lambda: jax.block_until_ready(fwd(y0, p, ts)),
            },
            rounds=rounds,
        )
    return {"times": t, "evals": evals}


# --------------------------------------------------------------------------------------


def profile(calls: int = 20) -> None:
    """cProfile of the host work (on pysciml's host thread, where the solver runs) of
    the jitted forward and gradients, and of an eager forward (main thread)."""
    import cProfile
    import io
    import pstats

    from pysciml._backend.host import HostThread

    ts = jnp.linspace(T0, T1, 100)
    y0, p = jnp.asarray(Y0), jnp.asarray(P)

    def show(title, prof, sort, lines):
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats(sort).print_stats(lines)
        text = "\n".join(x for x in out.getvalue().splitlines() if x.strip())
        print(f"\n### {title} ({calls} calls, sorted by {sort})\n\n```\n{text}\n```")

    cases = {
        "jitted forward, host thread": jax.jit(ps_ys),
        "jitted grad, InterpolatingAdjoint, host thread": jax.jit(
            jax.grad(
                lambda p, y0, ts: jnp.sum(
                    ps_ys(y0, p, ts, sensitivity=ps.InterpolatingAdjoint()) ** 2
                )
            )
        ),
        "jitted grad, BacksolveAdjoint, host thread": jax.jit(
            jax.grad(
                lambda p, y0, ts: jnp.sum(
                    ps_ys(y0, p, ts, sensitivity=ps.BacksolveAdjoint()) ** 2
                )
            )
        ),
    }
    for title, fn in cases.items():
        args = (y0, p, ts) if "forward" in title else (p, y0, ts)
        jax.block_until_ready(fn(*args))
        prof = cProfile.Profile()
        HostThread.run(prof.enable)  # cProfile profiles the thread that enables it
        for _ in range(calls):
            jax.block_until_ready(fn(*args))
        HostThread.run(prof.disable)
        show(title, prof, "tottime", 12)

    jax.block_until_ready(ps_ys(y0, p, ts))
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        jax.block_until_ready(ps_ys(y0, p, ts))
    prof.disable()
    show("eager forward (no jit), main thread", prof, "tottime", 15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_rounds_arguments(parser, default=41, quick=7)
    parser.add_argument(
        "--profile", action="store_true", help="print cProfile tables and exit"
    )
    args = parser.parse_args()
    if args.profile:
        profile()
        return
    rounds = rounds_of(args)
    run = Run("host_overhead")

    results = [bench_forward_and_gradient(run, n, rounds) for n in (100, 20)]
    cb = run.add("one right-hand-side call", bench_callback(rounds))
    layers = bench_layers(rounds)
    run.add("forward, layer by layer (100 saves)", layers["times"])
    run.extra["evaluations"] = {
        "per save count": {
            r["nsave"]: {"nfev_solve_ivp": r["nfev_solve_ivp"], **r["pysciml_stats"]}
            for r in results
        },
        "callbacks": layers["evals"],
    }
    run.save()

    print(
        f"\nHost path (backend='scipy'), Lotka-Volterra on [0, 15], rtol = atol = 1e-8,"
        f" float64; {rounds} interleaved rounds; ratios are paired (same round), "
        "median [IQR]."
    )
    for r in results:
        report_forward_and_gradient(run, r)

    print("\n| one right-hand-side call | µs (median) | ÷ numpy rhs, paired [IQR] |")
    print("|---|---:|---:|")
    for name in cb.names:
        print(
            f"| {name} | {us(cb.median(name))} | "
            f"{ratio_cell(cb.paired(name, 'numpy rhs'), 2)} |"
        )

    t = layers["times"]
    base = "solve_ivp, numpy rhs"
    print("\n| forward, layer by layer (100 saves) | ms (median) | ÷ solve_ivp, paired "
          "[IQR] |")
    print("|---|---:|---:|")
    for name in t.names:
        print(f"| {name} | {ms(t.median(name))} | {ratio_cell(t.paired(name, base), 2)} |")

    print("\n| solve | saves | RHS evaluations | steps |")
    print("|---|---:|---:|---:|")
    for r in results:
        s = r["pysciml_stats"]
        print(f"| solve_ivp RK45 (nfev) | {r['nsave']} | {r['nfev_solve_ivp']} | - |")
        print(
            f"| pysciml scipy forward (stats) | {r['nsave']} | {s['num_fevals']} | "
            f"{s['num_steps']} |"
        )
    for name, c in layers["evals"].items():
        calls = ", ".join(f"{k}: {v}" for k, v in c.items())
        print(f"| pysciml {name}, callbacks | 100 | {calls} | - |")
    run.footer()


if __name__ == "__main__":
    main()

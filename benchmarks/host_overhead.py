"""Overhead of the host path (`backend="scipy"`) on Lotka--Volterra.

    .venv/bin/python benchmarks/host_overhead.py           # full repeats
    .venv/bin/python benchmarks/host_overhead.py --quick   # fewer rounds

Lotka--Volterra, p = [1.5, 1, 3, 1], y0 = [1, 1], save times on [0, 15] (100, and 20),
rtol = atol = 1e-8, float64. Every figure is a ratio against an anchor timed in the
same process, alternately with it (see `_common.py`):

1. Forward: `jax.jit`ted `ps.solve(..., backend="scipy", solver=ps.Dopri5())` (SciPy's
   RK45) against `scipy.integrate.solve_ivp(rhs, (0, 15), y0, method="RK45",
   t_eval=ts, rtol=1e-8, atol=1e-8)` with a hand-written NumPy `rhs`: what a SciPy
   user writes today. Goal <= 1.5x.
2. Gradient: `jax.jit(jax.grad(loss))`, loss = sum(ys**2) w.r.t. p, on the SciPy
   backend (InterpolatingAdjoint, the default; and BacksolveAdjoint), against the
   SciPy backend's own jitted forward. Goal <= 4x.
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
from _common import compare, met  # noqa: E402

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


def ps_ys(y0, p, ts, sensitivity=None):
    return ps.solve(
        PROBLEM,
        y0,
        p,
        saveat=ts,
        backend="scipy",
        solver=ps.Dopri5(),
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


def bench_forward_and_gradient(nsave: int, rounds: int) -> dict:
    ts_np = np.linspace(T0, T1, nsave)
    y0, p, ts = jnp.asarray(Y0), jnp.asarray(P), jnp.asarray(ts_np)
    rhs = make_numpy_rhs(P)

    def anchor():
        return si.solve_ivp(
            rhs, (T0, T1), Y0, method="RK45", t_eval=ts_np, rtol=RTOL, atol=ATOL
        )

    fwd = jax.jit(ps_ys)
    grads = {
        name: jax.jit(
            jax.grad(lambda p, y0, ts, s=sens: jnp.sum(ps_ys(y0, p, ts, s) ** 2))
        )
        for name, sens in [
            ("InterpolatingAdjoint", ps.InterpolatingAdjoint()),
            ("BacksolveAdjoint", ps.BacksolveAdjoint()),
        ]
    }

    # Same work: the same numbers.
    ref = anchor()
    np.testing.assert_allclose(
        np.asarray(fwd(y0, p, ts)), ref.y.T, rtol=1e-10, atol=1e-10
    )
    g_ref = jax.jit(
        jax.grad(
            lambda p: jnp.sum(
                ps.solve(PROBLEM, y0, p, saveat=ts, rtol=1e-10, atol=1e-10).ys ** 2
            )
        )
    )(p)
    for g in grads.values():
        np.testing.assert_allclose(np.asarray(g(p, y0, ts)), g_ref, rtol=1e-4)

    sol = jax.jit(
        lambda y0, p, ts: (
            ps.solve(
                PROBLEM, y0, p, saveat=ts, backend="scipy", rtol=RTOL, atol=ATOL
            ).stats
        )
    )(y0, p, ts)

    # Forward: pysciml (jitted, and eager) against solve_ivp.
    t_fwd = compare(
        {
            "solve_ivp": anchor,
            "pysciml": lambda: jax.block_until_ready(fwd(y0, p, ts)),
            "pysciml eager": lambda: jax.block_until_ready(ps_ys(y0, p, ts)),
        },
        rounds=rounds,
    )
    # Gradient against the SciPy backend's own jitted forward.
    t_grad = compare(
        {
            "forward": lambda: jax.block_until_ready(fwd(y0, p, ts)),
            **{
                name: lambda g=g: jax.block_until_ready(g(p, y0, ts))
                for name, g in grads.items()
            },
        },
        rounds=rounds,
    )
    return {
        "nsave": nsave,
        "fwd": t_fwd,
        "grad": t_grad,
        "nfev_solve_ivp": int(ref.nfev),
        "pysciml_stats": {k: int(v) for k, v in sol.items()},
    }


def bench_callback(rounds: int) -> dict:
    field = flat_field()
    rhs = make_numpy_rhs(P)
    y = np.array([1.1, 0.9])
    t = 0.5
    lam = np.array([0.3, -0.2])
    with jax.enable_x64(True):  # as on the host thread
        cb = host_callbacks(field, 2, 4)
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
                    ps_ys(y0, p, ts, ps.InterpolatingAdjoint()) ** 2
                )
            )
        ),
        "jitted grad, BacksolveAdjoint, host thread": jax.jit(
            jax.grad(
                lambda p, y0, ts: jnp.sum(ps_ys(y0, p, ts, ps.BacksolveAdjoint()) ** 2)
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
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument(
        "--profile", action="store_true", help="print cProfile tables and exit"
    )
    args = parser.parse_args()
    if args.profile:
        profile()
        return
    rounds = 7 if args.quick else 41

    results = [bench_forward_and_gradient(n, rounds) for n in (100, 20)]
    cb = bench_callback(rounds)
    layers = bench_layers(rounds)

    print(
        f"\nHost path (backend='scipy'), Lotka-Volterra on [0, 15], rtol = atol = 1e-8,"
        f" float64; median of {rounds} interleaved rounds.\n"
    )
    print(
        "| figure | saves | anchor (ms) | pysciml (ms) | ratio | paired ratio | goal | met |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|:---:|")
    for r in results:
        f, g = r["fwd"], r["grad"]
        a = f["solve_ivp"]
        for name in ("pysciml", "pysciml eager"):
            b = f[name]
            ratio = b["median"] / a["median"]
            jit = "jitted" if name == "pysciml" else "eager, no jit"
            goal = f"{FORWARD_GOAL}" if name == "pysciml" else "-"
            ok = met(ratio, FORWARD_GOAL) if name == "pysciml" else "-"
            print(
                f"| forward ({jit}) vs solve_ivp | {r['nsave']} | "
                f"{1e3 * a['median']:.2f} | {1e3 * b['median']:.2f} | {ratio:.2f} | "
                f"{b['paired_ratio']:.2f} | {goal} | {ok} |"
            )
        a = g["forward"]
        for name in ("InterpolatingAdjoint", "BacksolveAdjoint"):
            b = g[name]
            ratio = b["median"] / a["median"]
            print(
                f"| grad ({name}) vs pysciml scipy forward | {r['nsave']} | "
                f"{1e3 * a['median']:.2f} | {1e3 * b['median']:.2f} | {ratio:.2f} | "
                f"{b['paired_ratio']:.2f} | {GRADIENT_GOAL} | "
                f"{met(ratio, GRADIENT_GOAL)} |"
            )
    print(
        "\nratio = pysciml median / anchor median; paired ratio = median over rounds "
        "of the same-round ratio.\n"
    )

    print("| one right-hand-side call | µs (median) | × numpy rhs |")
    print("|---|---:|---:|")
    base = cb["numpy rhs"]["median"]
    for name, v in cb.items():
        print(f"| {name} | {1e6 * v['median']:.1f} | {v['median'] / base:.1f} |")

    print("\n| forward, layer by layer (100 saves) | ms (median) | × solve_ivp |")
    print("|---|---:|---:|")
    base = layers["times"]["solve_ivp, numpy rhs"]["median"]
    for name, v in layers["times"].items():
        print(f"| {name} | {1e3 * v['median']:.2f} | {v['median'] / base:.2f} |")

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


if __name__ == "__main__":
    main()

"""Method-of-lines heat equation: forward and gradient time per backend and solver,
against raw Diffrax. Goal: at N = 1024 with a stiff solver, the best pysciml
configuration is at least 10x faster than the fastest raw Diffrax configuration
measured in the same run.

    .venv/bin/python benchmarks/pde.py                          # 1D N = 64, 256, 1024 and 2D
    .venv/bin/python benchmarks/pde.py --quick                  # N = 64, 256 only
    .venv/bin/python benchmarks/pde.py --quick --rounds 2       # a smoke run
    .venv/bin/python benchmarks/pde.py --plot benchmarks/pde.png

Problem: du/dt = D u_xx on (0, 1), u = 0 at both ends, N interior nodes (second-order
Laplacian: `pysciml.pde.laplacian`; the raw-Diffrax anchors write their own), D = 0.5,
u(x, 0) = exp(-100 (x - 0.4)²), 10 save times on (0, 0.1], rtol = 1e-6, atol = 1e-8,
float64. The 2D case is the same on the unit square with 64 x 64 nodes (5-point
stencil), u(x, y, 0) = exp(-50 |(x, y) - (0.4, 0.5)|²). The gradient is that of L =
sum(ys²)/2 with respect to D. Stiffness: |lambda_max| D t1 = 4 (N+1)² D t1 = 2.1e5 at
N = 1024 (6.8e3 in 2D), so an explicit solver takes ~|lambda_max| D t1 / 3 steps.

Each row is checked against the exact semi-discrete solution and gradient (the discrete
Laplacian's eigenvectors are sine vectors: a type-I discrete sine transform), whose
errors are printed. All rows of a grid are timed in interleaved rounds after
compilation (`_common.compare`, one call per sample), forward and gradient separately.

Rows: raw Diffrax (`diffeqsolve`, `PIDController`, `RecursiveCheckpointAdjoint`, no
pysciml) with Tsit5, Dopri5, Dopri8 and Kvaerno5 (its default root finder: a dense
Jacobian and dense LU; Diffrax passes no structure tags to it); pysciml on Diffrax with
Tsit5 and Kvaerno5; pysciml on SciPy with RK45 (`Dopri5`), BDF (`QNDF`) and Radau
(`RadauIIA5`), with the grid's sparsity pattern: "exact sparse J" = exact sparse
Jacobians from JAX by column colouring (the default), "FD sparse J" = SciPy's grouped
finite differences (`ScipyBackend(sparse_jacobian="finite_differences")`); "dense J" =
no pattern (dense exact Jacobian from `jax.jacfwd`). Explicit SciPy solves at N = 1024
are skipped (~6e4 steps of ~50 µs each); in 2D, raw and pysciml Kvaerno5 (a dense
4096 x 4096 LU per step) are not in the rounds: raw Kvaerno5's forward is timed once.

Figures, per grid and for forward and gradient separately, as speed-ups (anchor time /
pysciml time in the same round; median and IQR over rounds):

- headline: the fastest pysciml configuration against the fastest raw Diffrax
  configuration of the same run (both chosen by median time);
- sparse vs dense linear algebra: the fastest pysciml configuration with a sparse
  Jacobian against raw Diffrax Kvaerno5 with its dense Jacobian.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.fft  # noqa: E402
from _common import Run, compare, ratio_cell  # noqa: E402

import pysciml as ps  # noqa: E402
import pysciml.pde as pde  # noqa: E402
from pysciml._backend.scipy import ScipyBackend  # noqa: E402

D = 0.5
T1 = 0.1
TS = np.linspace(T1 / 10, T1, 10)
RTOL, ATOL = 1e-6, 1e-8
GOAL = 10.0


# ------------------------------------------------------------------ the problem


def setup(shape):
    """Grid, initial condition, exact (ys, dL/dD) by the sine transform."""
    if len(shape) == 1:
        grid = pde.Grid1D(0.0, 1.0, shape[0], pde.Dirichlet(0.0))
        u0 = np.exp(-100 * (grid.x - 0.4) ** 2)
    else:
        grid = pde.Grid2D((0.0, 1.0), (0.0, 1.0), shape, pde.Dirichlet(0.0))
        x, y = grid.mesh()
        u0 = np.exp(-50 * ((x - 0.4) ** 2 + (y - 0.5) ** 2))
    # Eigenvalues of the discrete Laplacian along each axis, summed over axes.
    lam = 0.0
    for k, n in enumerate(shape):
        h = 1.0 / (n + 1)
        lk = -4 / h**2 * np.sin(np.arange(1, n + 1) * np.pi * h / 2) ** 2
        lam = lam + lk.reshape((-1,) + (1,) * (len(shape) - 1 - k))
    c = scipy.fft.dstn(u0, type=1, norm="ortho")
    ys, dys = [], []
    for t in TS:
        e = np.exp(D * lam * t) * c
        ys.append(scipy.fft.idstn(e, type=1, norm="ortho"))
        dys.append(scipy.fft.idstn(lam * t * e, type=1, norm="ortho"))
    ys, dys = np.stack(ys), np.stack(dys)
    return grid, jnp.asarray(u0), ys, float(np.sum(ys * dys))


def raw_field(shape):
    """The raw-Diffrax anchor's own vector field (no pysciml): zero Dirichlet values."""
    hs = [1.0 / (n + 1) for n in shape]

    def f(t, u, d):
        out = jnp.zeros_like(u)
        for axis, h in enumerate(hs):
            pad = [(0, 0)] * u.ndim
            pad[axis] = (1, 1)
            ext = jnp.pad(u, pad)
            n = u.shape[axis]
            out = out + (jax.lax.slice_in_dim(ext, 2, n + 2, axis=axis) - 2 * u
                         + jax.lax.slice_in_dim(ext, 0, n, axis=axis)) / h**2
        return d * out

    return f


def raw_solve(shape, solver, max_steps):
    f = raw_field(shape)
    ts = jnp.asarray(TS)

    def ys(u0, d):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(f), solver, 0.0, T1, None, u0, d,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
            adjoint=diffrax.RecursiveCheckpointAdjoint(), max_steps=max_steps,
        ).ys

    return ys


def ps_solve(grid, backend, solver, sparse, max_steps):
    problem = ps.ODEProblem(lambda t, u, d: d * pde.laplacian(u, grid), 0.0, T1,
                            jac_sparsity=grid.jac_sparsity() if sparse else None)
    ts = jnp.asarray(TS)

    def ys(u0, d):
        return ps.solve(problem, u0, d, saveat=ts, backend=backend, solver=solver,
                        rtol=RTOL, atol=ATOL, max_steps=max_steps).ys

    return ys


RAW_KV5 = "raw diffrax Kvaerno5 (dense J)"


def cases(shape):
    """name -> solves for this grid shape; raw configurations first."""
    size = int(np.prod(shape))
    explicit_steps = int(4 * sum((n + 1) ** 2 for n in shape) * D * T1 / 2) + 10_000
    grid = (pde.Grid1D(0.0, 1.0, shape[0], pde.Dirichlet(0.0)) if len(shape) == 1
            else pde.Grid2D((0.0, 1.0), (0.0, 1.0), shape, pde.Dirichlet(0.0)))
    fd = ScipyBackend(sparse_jacobian="finite_differences")
    out = {
        "raw diffrax Tsit5": raw_solve(shape, diffrax.Tsit5(), explicit_steps),
        "raw diffrax Dopri5": raw_solve(shape, diffrax.Dopri5(), explicit_steps),
        "raw diffrax Dopri8": raw_solve(shape, diffrax.Dopri8(), explicit_steps),
        RAW_KV5: raw_solve(shape, diffrax.Kvaerno5(), 10_000),
        "pysciml diffrax Tsit5": ps_solve(grid, "diffrax", ps.Tsit5(), False,
                                          explicit_steps),
        "pysciml diffrax Kvaerno5 (dense J)": ps_solve(grid, "diffrax", ps.Kvaerno5(),
                                                       False, 10_000),
        "pysciml scipy BDF, exact sparse J": ps_solve(grid, "scipy", ps.QNDF(), True,
                                                      10_000),
        "pysciml scipy BDF, FD sparse J": ps_solve(grid, fd, ps.QNDF(), True, 10_000),
        "pysciml scipy Radau, exact sparse J": ps_solve(grid, "scipy", ps.RadauIIA5(),
                                                        True, 10_000),
        "pysciml scipy Radau, FD sparse J": ps_solve(grid, fd, ps.RadauIIA5(), True,
                                                     10_000),
    }
    if len(shape) > 1:
        # A dense 4096 x 4096 Jacobian per step: ~100 s per forward solve here, timed
        # once by `run_shape` (forward only), not in the interleaved rounds.
        del out[RAW_KV5]
        del out["pysciml diffrax Kvaerno5 (dense J)"]
    if size <= 256:
        out["pysciml scipy BDF, dense J"] = ps_solve(grid, "scipy", ps.QNDF(), False,
                                                     10_000)
        out["pysciml scipy RK45"] = ps_solve(grid, "scipy", ps.Dopri5(), False,
                                             explicit_steps)
    return out


# ------------------------------------------------------------------ timing


def run_shape(run, shape, rounds, only=None):
    """Checks and times every case on one grid; returns {"forward": Timing,
    "gradient": Timing, "checks": ..., "single": ...}."""
    grid_name = "x".join(map(str, shape))
    _, u0, ys_exact, grad_exact = setup(shape)
    fwd, grad = {}, {}
    for name, ys in cases(shape).items():
        if only and not any(s in name for s in only):
            continue
        fwd[name] = jax.jit(ys)
        grad[name] = jax.jit(jax.grad(lambda d, ys=ys: 0.5 * jnp.sum(ys(u0, d) ** 2)))
    # Correctness first (also compiles), then timing.
    checks = {}
    for name in fwd:
        t = time.perf_counter()
        y = np.asarray(fwd[name](u0, D))
        g = float(grad[name](D))
        checks[name] = {"max_abs_err_ys": float(np.abs(y - ys_exact).max()),
                        "rel_err_grad": abs(g - grad_exact) / abs(grad_exact),
                        "compile_and_check_s": time.perf_counter() - t}
        print(f"  [{grid_name}] {name}: compiled and checked in "
              f"{checks[name]['compile_and_check_s']:.1f} s", flush=True)
    single = None
    if len(shape) > 1 and (not only or any("Kvaerno5" in o for o in only)):
        fn = jax.jit(raw_solve(shape, diffrax.Kvaerno5(), 10_000))
        y = np.asarray(fn(u0, D))  # compiles
        t = time.perf_counter()
        jax.block_until_ready(fn(u0, D))
        seconds = time.perf_counter() - t
        print(f"  [{grid_name}] {RAW_KV5}: forward {seconds:.1f} s (one call, not in "
              "the rounds; gradient not run)", flush=True)
        single = {"case": RAW_KV5, "kind": "forward", "seconds": seconds,
                  "max_abs_err_ys": float(np.abs(y - ys_exact).max())}
    out = {"grid": grid_name, "n": int(np.prod(shape)), "checks": checks,
           "single": single}
    run.extra.setdefault("checks", {})[grid_name] = checks
    if single:
        run.extra.setdefault("single calls", {})[grid_name] = single
    for kind, fns in (("forward", fwd), ("gradient", grad)):
        out[kind] = run.add(f"{grid_name} {kind}", compare(
            {name: (lambda fn=fn, kind=kind: jax.block_until_ready(
                fn(u0, D) if kind == "forward" else fn(D))) for name, fn in fns.items()},
            rounds=rounds, warmup=0, target_s=0.0,
        ), grid=grid_name, n=out["n"], kind=kind)
    return out


def anchors(t):
    """(fastest raw, fastest pysciml, fastest pysciml with a sparse Jacobian) of one
    Timing, by median time; None where there is no such row."""
    def best(pred):
        names = [n for n in t.names if pred(n)]
        return t.fastest(names) if names else None

    return (best(lambda n: n.startswith("raw")),
            best(lambda n: n.startswith("pysciml")),
            best(lambda n: n.startswith("pysciml") and "sparse J" in n))


def table(res):
    """One grid's rows: median times, speed-ups over the fastest raw configuration and
    over raw Kvaerno5 (paired, median [IQR]), errors."""
    f, g = res["forward"], res["gradient"]
    raw_f, raw_g = anchors(f)[0], anchors(g)[0]
    lines = [f"\n### {res['grid']}: speed-up = anchor time / row time in the same "
             f"round, median [IQR] over {f.rounds} rounds; fastest raw: forward "
             f"{raw_f}, gradient {raw_g}\n",
             "| case | forward (s) | gradient (s) | forward speed-up vs fastest raw | "
             "gradient speed-up vs fastest raw | forward vs raw Kvaerno5 | gradient "
             "vs raw Kvaerno5 | max abs error of ys | rel. error of dL/dD |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(t, anchor, name):
        if anchor is None or name not in t.names:
            return "-"
        return ratio_cell(t.paired(anchor, name), 1)

    kv5 = RAW_KV5 if RAW_KV5 in f.names else None
    for name in f.names:
        c = res["checks"][name]
        lines.append(
            f"| {name} | {f.median(name):.4f} | {g.median(name):.4f} | "
            f"{cell(f, raw_f, name)} | {cell(g, raw_g, name)} | {cell(f, kv5, name)} | "
            f"{cell(g, kv5, name)} | {c['max_abs_err_ys']:.1e} | "
            f"{c['rel_err_grad']:.1e} |")
    if res["single"]:
        s = res["single"]
        lines.append(f"| {s['case']} | {s['seconds']:.2f} (one call, not in the "
                     f"rounds) | not run | - | - | - | - | {s['max_abs_err_ys']:.1e} | "
                     "- |")
    return "\n".join(lines)


def figures(run, res):
    for kind in ("forward", "gradient"):
        t = res[kind]
        raw, best, best_sparse = anchors(t)
        where = f"heat equation {res['grid']} {kind}"
        if raw and best:
            raw_names = [n for n in t.names if n.startswith("raw")]
            run.figure(
                f"{where}: fastest pysciml ({best}) vs fastest raw Diffrax ({raw})",
                t.ratios(raw, best),
                anchor=f"{raw} (fastest of {', '.join(raw_names)} in this run)",
                what="speed-up (raw / pysciml)",
                goal=f">= {GOAL:.0f}" if res["n"] == 1024 else None,
                digits=1,
            )
        if best_sparse and RAW_KV5 in t.names:
            run.figure(
                f"{where}, sparse vs dense linear algebra: {best_sparse} vs {RAW_KV5}",
                t.ratios(RAW_KV5, best_sparse),
                anchor=f"{RAW_KV5} (a stiff solver with dense Jacobian and LU; not "
                "the fastest raw configuration)",
                what="speed-up (raw / pysciml)",
                digits=1,
            )


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    one_d = [r for r in results if "x" not in r["grid"]]
    two_d = [r for r in results if "x" in r["grid"]]
    for ax, kind in zip(axes, ("forward", "gradient")):
        names = list(dict.fromkeys(n for r in one_d for n in r[kind].names))
        for i, case in enumerate(names):
            pts = sorted((r["n"], r[kind].median(case)) for r in one_d
                         if case in r[kind].names)
            style = "--" if case.startswith("raw") else "-"
            ax.loglog(*zip(*pts), style, marker="o", color=f"C{i % 10}", label=case)
            for r in two_d:
                if case in r[kind].names:
                    ax.loglog([r["n"]], [r[kind].median(case)], "*", ms=11,
                              color=f"C{i % 10}")
        ax.set(xlabel="N (unknowns)", title=f"{kind} (stars: 2D 64x64, N = 4096)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("time per call (s), median over rounds")
    axes[1].legend(fontsize=7, loc="upper left")
    fig.suptitle("heat equation by the method of lines: pysciml vs raw Diffrax")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"saved {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="N = 64 and 256 only, no 2D")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--sizes", type=int, nargs="*", default=None)
    p.add_argument("--no-2d", action="store_true")
    p.add_argument("--only", nargs="*", default=None, help="substrings of case names")
    p.add_argument("--plot", default=None, help="save the time-vs-N plot here")
    args = p.parse_args()
    sizes = args.sizes or ([64, 256] if args.quick else [64, 256, 1024])
    shapes = [(n,) for n in sizes] + ([] if args.no_2d or args.quick else [(64, 64)])
    run = Run("pde")
    results = []
    for shape in shapes:
        res = run_shape(run, shape, args.rounds, args.only)
        results.append(res)
        print(table(res), flush=True)
    print("\n# all results")
    for res in results:
        print(table(res))
    print()
    for res in results:
        figures(run, res)
    if args.plot:
        plot(results, args.plot)
    run.footer()


if __name__ == "__main__":
    main()

"""Method-of-lines heat equation: forward and gradient time per backend and solver,
against raw Diffrax. Goal: at N = 1024 with a stiff solver, the best pysciml backend is
at least 10x faster than raw Diffrax `Kvaerno5` (dense Jacobian).

    .venv/bin/python benchmarks/pde.py                          # everything
    .venv/bin/python benchmarks/pde.py --quick                  # N = 64, 256 only
    .venv/bin/python benchmarks/pde.py --plot benchmarks/pde.png

Problem: du/dt = D u_xx on (0, 1), u = 0 at both ends, N interior nodes (second-order
Laplacian: `pysciml.pde.laplacian`; the raw-Diffrax anchor writes its own), D = 0.5,
u(x, 0) = exp(-100 (x - 0.4)²), 10 save times on (0, 0.1], rtol = 1e-6, atol = 1e-8,
float64. The 2D case is the same on the unit square with 64 x 64 nodes (5-point
stencil), u(x, y, 0) = exp(-50 |(x, y) - (0.4, 0.5)|²). The gradient is that of L =
sum(ys²)/2 with respect to D. Stiffness: |lambda_max| D t1 = 4 (N+1)² D t1 = 2.1e5 at
N = 1024 (6.8e3 in 2D), so an explicit solver takes ~|lambda_max| D t1 / 3 steps.

Each row is checked against the exact semi-discrete solution and gradient (the discrete
Laplacian's eigenvectors are sine vectors: a type-I discrete sine transform), whose
errors are printed. Times are medians over interleaved rounds after compilation
(`_common.compare`, one call per sample); explicit SciPy solves at N = 1024 are skipped
(~6e4 steps of ~50 µs each).

Rows: raw Diffrax (`diffeqsolve`, `PIDController`, `RecursiveCheckpointAdjoint`) with
Tsit5 and Kvaerno5; pysciml on Diffrax with the same; pysciml on SciPy with RK45
(`Dopri5`), BDF (`QNDF`) and Radau (`RadauIIA5`), with the grid's sparsity pattern:
"exact sparse J" = exact sparse Jacobians from JAX by column colouring (the default),
"FD sparse J" = SciPy's grouped finite differences
(`ScipyBackend(sparse_jacobian="finite_differences")`); "dense J" = no pattern (dense
exact Jacobian from `jax.jacfwd`).
"""

import argparse
import json
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
from _common import compare  # noqa: E402

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


def cases(shape):
    """name -> (family, solves) for this grid shape. `family` groups rows for the plot."""
    size = int(np.prod(shape))
    explicit_steps = int(4 * sum((n + 1) ** 2 for n in shape) * D * T1 / 2) + 10_000
    grid = (pde.Grid1D(0.0, 1.0, shape[0], pde.Dirichlet(0.0)) if len(shape) == 1
            else pde.Grid2D((0.0, 1.0), (0.0, 1.0), shape, pde.Dirichlet(0.0)))
    fd = ScipyBackend(sparse_jacobian="finite_differences")
    out = {
        "raw diffrax Tsit5": raw_solve(shape, diffrax.Tsit5(), explicit_steps),
        "raw diffrax Kvaerno5 (dense J)": raw_solve(shape, diffrax.Kvaerno5(), 10_000),
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
        del out["raw diffrax Kvaerno5 (dense J)"]
        del out["pysciml diffrax Kvaerno5 (dense J)"]
    if size <= 256:
        out["pysciml scipy BDF, dense J"] = ps_solve(grid, "scipy", ps.QNDF(), False,
                                                     10_000)
        out["pysciml scipy RK45"] = ps_solve(grid, "scipy", ps.Dopri5(), False,
                                             explicit_steps)
    return out


# ------------------------------------------------------------------ timing


def run_shape(shape, rounds, only=None):
    grid_name = "x".join(map(str, shape))
    _, u0, ys_exact, grad_exact = setup(shape)
    rows = []
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
        checks[name] = (np.abs(y - ys_exact).max(), abs(g - grad_exact) / abs(grad_exact),
                        time.perf_counter() - t)
        print(f"  [{grid_name}] {name}: compiled and checked in {checks[name][2]:.1f} s",
              flush=True)
    if len(shape) > 1 and (not only or any("Kvaerno5" in o for o in only)):
        name = "raw diffrax Kvaerno5 (dense J)"
        fn = jax.jit(raw_solve(shape, diffrax.Kvaerno5(), 10_000))
        y = np.asarray(fn(u0, D))  # compiles
        t = time.perf_counter()
        jax.block_until_ready(fn(u0, D))
        seconds = time.perf_counter() - t
        print(f"  [{grid_name}] {name}: forward {seconds:.1f} s (one call; gradient "
              "not run)", flush=True)
        rows.append({"grid": grid_name, "n": int(np.prod(shape)), "kind": "forward",
                     "case": name, "median_s": seconds, "q1_s": seconds,
                     "q3_s": seconds, "max_abs_err_ys": float(np.abs(y - ys_exact).max()),
                     "rel_err_grad": float("nan"), "single_call": True})
    for kind, fns in (("forward", fwd), ("gradient", grad)):
        timed = compare(
            {name: (lambda fn=fn, kind=kind: jax.block_until_ready(
                fn(u0, D) if kind == "forward" else fn(D))) for name, fn in fns.items()},
            rounds=rounds, warmup=0, target_s=1e-3,
        )
        for name, r in timed.items():
            rows.append({
                "grid": grid_name, "n": int(np.prod(shape)), "kind": kind, "case": name,
                "median_s": r["median"], "q1_s": r["q1"], "q3_s": r["q3"],
                "max_abs_err_ys": float(checks[name][0]),
                "rel_err_grad": float(checks[name][1]),
            })
    return rows


def table(rows):
    lines = []
    for grid in dict.fromkeys(r["grid"] for r in rows):
        sub = [r for r in rows if r["grid"] == grid]
        anchor = {r["kind"]: r["median_s"] for r in sub
                  if r["case"] == "raw diffrax Kvaerno5 (dense J)"}
        lines.append(f"\n### {grid}\n")
        lines.append("| case | forward (s) | gradient (s) | forward vs raw Kvaerno5 | "
                     "gradient vs raw Kvaerno5 | max abs error of ys | rel. error of "
                     "dL/dD |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for case in dict.fromkeys(r["case"] for r in sub):
            f = next(r for r in sub if r["case"] == case and r["kind"] == "forward")
            g = next((r for r in sub if r["case"] == case and r["kind"] == "gradient"),
                     None)
            speed = [f"{anchor[k] / r['median_s']:.1f}x" if k in anchor and r else "-"
                     for k, r in (("forward", f), ("gradient", g))]
            once = " (one call)" if f.get("single_call") else ""
            grad_s = f"{g['median_s']:.4f}" if g else "not run"
            lines.append(f"| {case} | {f['median_s']:.4f}{once} | {grad_s} | "
                         f"{speed[0]} | {speed[1]} | {f['max_abs_err_ys']:.1e} | "
                         f"{f['rel_err_grad']:.1e} |")
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    one_d = [r for r in rows if "x" not in r["grid"]]
    for ax, kind in zip(axes, ("forward", "gradient")):
        for i, case in enumerate(dict.fromkeys(r["case"] for r in one_d)):
            pts = sorted((r["n"], r["median_s"]) for r in one_d
                         if r["case"] == case and r["kind"] == kind)
            style = "--" if case.startswith("raw") else "-"
            ax.loglog(*zip(*pts), style, marker="o", color=f"C{i}", label=case)
            two = [r for r in rows if "x" in r["grid"] and r["case"] == case
                   and r["kind"] == kind]
            if two:
                ax.loglog([two[0]["n"]], [two[0]["median_s"]], "*", ms=11,
                          color=f"C{i}")
        ax.set(xlabel="N (unknowns)", title=f"{kind} (stars: 2D 64x64, N = 4096)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("time per call (s)")
    axes[1].legend(fontsize=7, loc="upper left")
    fig.suptitle("heat equation by the method of lines: pysciml vs raw Diffrax")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"saved {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="N = 64 and 256 only")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="*", default=None)
    p.add_argument("--no-2d", action="store_true")
    p.add_argument("--only", nargs="*", default=None, help="substrings of case names")
    p.add_argument("--plot", default=None, help="save the time-vs-N plot here")
    p.add_argument("--json", default=None, help="save the rows here")
    args = p.parse_args()
    sizes = args.sizes or ([64, 256] if args.quick else [64, 256, 1024])
    shapes = [(n,) for n in sizes] + ([] if args.no_2d or args.quick else [(64, 64)])
    rows = []
    for shape in shapes:
        rows += run_shape(shape, args.rounds, args.only)
        print(table([r for r in rows if r["grid"] == "x".join(map(str, shape))]),
              flush=True)
    print("\n# all results\n" + table(rows))
    big = [r for r in rows if r["n"] == 1024 and "x" not in r["grid"]]
    if big:
        for kind in ("forward", "gradient"):
            anchor = [r["median_s"] for r in big if r["kind"] == kind
                      and r["case"] == "raw diffrax Kvaerno5 (dense J)"]
            best = min((r for r in big if r["kind"] == kind
                        and r["case"].startswith("pysciml")),
                       key=lambda r: r["median_s"])
            if anchor:
                ratio = anchor[0] / best["median_s"]
                print(f"N = 1024 {kind}: best pysciml = {best['case']} "
                      f"{best['median_s']:.4f} s; raw diffrax Kvaerno5 {anchor[0]:.3f} s;"
                      f" speed-up {ratio:.1f}x (goal >= {GOAL:.0f}x: "
                      f"{'met' if ratio >= GOAL else 'NOT met'})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()

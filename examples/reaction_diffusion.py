"""Reaction-diffusion: calibrate the diffusion and reaction rates of a Fisher-KPP
invasion front from noisy snapshots, by gradient descent.

    du/dt = D d²u/dx² + r u (1 - u)   on (0, L),   du/dx = 0 at both walls
    u(x, 0) = 1 / (1 + exp((x - x0) / w))

The population invades the empty domain as a travelling front whose speed tends to
c* = 2 sqrt(r D) (slowly: the front of a steep initial condition lags by ~3/(2 sqrt(r/D)
t)). The front's position fixes sqrt(rD), its width sqrt(D/r): a few snapshots
determine both. The PDE is discretised by the method of lines on `--n` nodes of a
`pysciml.pde.Grid1D` with no-flux (Neumann) walls; the grid's tridiagonal Jacobian
sparsity goes to the stiff solvers (SciPy `BDF` with exact sparse Jacobians from JAX,
Julia `FBDF` with a sparse `jac_prototype`).

The data are synthetic: the same discretisation, solved at tight tolerance, for D = 1
and r = 1, plus Gaussian noise. Gradient descent (Barzilai-Borwein steps with
backtracking, `heat_equation_inverse.descend`) on (log D, log r) of the least-squares
misfit, from D = r = 0.5, with gradients through `ps.solve`.

    python examples/reaction_diffusion.py --backend scipy --n 256 --plot out/
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import figure_path, parser, setup
from heat_equation_inverse import descend

import pysciml as ps
import pysciml.pde as pde

TINY_ARGS = ["--n", "32", "--steps", "6", "--snapshots", "3"]

TRUTH = {"D": 1.0, "r": 1.0}
LENGTH, T1, X0, WIDTH = 40.0, 10.0, 5.0, 1.0
SOLVERS = {"diffrax": ps.Tsit5(), "scipy": ps.QNDF(), "julia": ps.FBDF()}


def make_problem(n):
    """The grid and the method-of-lines `ODEProblem` (with its Jacobian sparsity)."""
    grid = pde.Grid1D(0.0, LENGTH, n, pde.Neumann(0.0))

    def fisher_kpp(t, u, p):
        return p["D"] * pde.laplacian(u, grid) + p["r"] * u * (1 - u)

    return grid, ps.ODEProblem(fisher_kpp, 0.0, T1, jac_sparsity=grid.jac_sparsity())


def front_positions(grid, ys):
    """Where u crosses 1/2, by linear interpolation between nodes, per snapshot."""
    out = []
    for u in np.asarray(ys):
        i = int(np.argmax(u < 0.5))
        out.append(grid.x[i - 1] + (u[i - 1] - 0.5) / (u[i - 1] - u[i]) * grid.dx)
    return np.array(out)


def main(argv=None) -> dict:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=128, help="grid nodes")
    p.add_argument("--snapshots", type=int, default=5, help="observation times")
    p.add_argument("--noise", type=float, default=0.02, help="noise sd")
    p.add_argument("--steps", type=int, default=40, help="gradient-descent iterations")
    p.add_argument("--solver", default=None,
                   help="solver tag, e.g. Tsit5, QNDF, RadauIIA5, FBDF (default: Tsit5 "
                        "on diffrax, QNDF on scipy, FBDF on julia)")
    p.add_argument("--rtol", type=float, default=1e-6)
    p.add_argument("--atol", type=float, default=1e-8)
    args = p.parse_args(argv)
    setup()

    solver = getattr(ps, args.solver)() if args.solver else SOLVERS[args.backend]
    grid, problem = make_problem(args.n)
    kw = dict(backend=args.backend, solver=solver, rtol=args.rtol, atol=args.atol,
              max_steps=100_000)
    u0 = jnp.asarray(1 / (1 + np.exp((grid.x - X0) / WIDTH)))

    # Synthetic data on a fine time grid (for the plot), observed every stride-th time.
    stride = max(1, 40 // args.snapshots)
    t_fine = jnp.linspace(T1 / (stride * args.snapshots), T1, stride * args.snapshots)
    ts = t_fine[stride - 1 :: stride]
    truth = {k: jnp.asarray(v) for k, v in TRUTH.items()}
    field = ps.solve(problem, u0, truth, saveat=t_fine,
                     **{**kw, "rtol": 1e-10, "atol": 1e-12}).ys
    clean = field[stride - 1 :: stride]
    key = jax.random.key(args.seed)
    data = clean + args.noise * jax.random.normal(key, clean.shape)

    def misfit(log_p):
        params = {"D": jnp.exp(log_p[0]), "r": jnp.exp(log_p[1])}
        ys = ps.solve(problem, u0, params, saveat=ts, **kw).ys
        return 0.5 * jnp.sum((ys - data) ** 2) / args.noise**2, ys

    value_and_grad = jax.jit(jax.value_and_grad(misfit, has_aux=True))
    start = time.perf_counter()
    log_p, fitted, evaluations = descend(value_and_grad, jnp.log(jnp.array([0.5, 0.5])),
                                         args.steps)
    seconds = time.perf_counter() - start
    fit = {"D": float(jnp.exp(log_p[0])), "r": float(jnp.exp(log_p[1]))}
    rel = {k: abs(fit[k] - TRUTH[k]) / TRUTH[k] for k in TRUTH}

    fronts = front_positions(grid, fitted)
    speed = float(np.polyfit(np.asarray(ts), fronts, 1)[0]) if len(ts) > 1 else np.nan
    c_star = 2 * np.sqrt(fit["D"] * fit["r"])

    print(f"Fisher-KPP calibration, backend={args.backend}, "
          f"solver={type(solver).__name__}, n={args.n} (dx={grid.dx:.3f}), "
          f"{args.snapshots} snapshots, noise sd {args.noise}")
    print(f"gradient descent ({evaluations} gradients, {seconds:.1f} s):")
    for k in TRUTH:
        print(f"  {k} = {fit[k]:.5f}   (truth {TRUTH[k]}, relative error {rel[k]:.2e})")
    print(f"front speed of the fitted model over the snapshots: {speed:.3f} "
          f"(asymptotic 2 sqrt(rD) = {c_star:.3f})")

    path = figure_path(args.plot, "reaction_diffusion.png")
    if path is not None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
        im = axes[0].imshow(np.asarray(field), origin="lower", aspect="auto",
                            extent=[0.0, LENGTH, float(t_fine[0]), T1], cmap="viridis")
        axes[0].plot(fronts, np.asarray(ts), "w.--", label="front (u = 1/2), fitted")
        axes[0].set(xlabel="x", ylabel="t", title="u(x, t), true parameters")
        axes[0].legend(fontsize=7, loc="upper left")
        fig.colorbar(im, ax=axes[0])
        for i, t in enumerate(np.asarray(ts)):
            axes[1].plot(grid.x, data[i], ".", ms=2, color=f"C{i}")
            axes[1].plot(grid.x, fitted[i], "-", color=f"C{i}", label=f"t = {t:.1f}")
        axes[1].set(xlabel="x", ylabel="u",
                    title=f"data and fit: D = {fit['D']:.3f}, r = {fit['r']:.3f}")
        axes[1].legend(fontsize=7)
        fig.suptitle(f"Fisher-KPP front ({args.backend}, n = {args.n})")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        print(f"saved {path}")

    return {
        "truth": dict(TRUTH),
        "ts": np.asarray(ts),
        "clean": np.asarray(clean),  # the noise-free data
        "data": np.asarray(data),
        "fit": fit,
        "rel_error": rel,
        "front_speed": speed,
        "asymptotic_speed": float(c_star),
        "evaluations": evaluations,
        "seconds": seconds,
    }


if __name__ == "__main__":
    main()

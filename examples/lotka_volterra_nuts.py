"""Lotka–Volterra by NumPyro NUTS: positive populations observed with multiplicative
noise, wide priors, a dense mass matrix, and failed solves that reject proposals.

    dx/dt = alpha x - beta x z,    dz/dt = -gamma z + delta x z,    x(0) = z(0) = 1
    alpha, beta, gamma, delta ~ LogNormal(0, 1)      (95% prior mass in [0.14, 7.1])
    sigma ~ LogNormal(-1, 1)
    obs(t_j) ~ LogNormal(log y(t_j), sigma)          (both species, every t_j)

The data are synthetic, from a known truth (alpha, beta, gamma, delta, sigma) = (1.5,
1, 3, 1, 0.1). Wide priors let the sampler propose rates for which the solver fails
(with `--max-steps` small, on purpose): `ps.solve(..., throw=False)` then returns NaN,
the log-likelihood is NaN, and NUTS treats the proposal as a divergent transition and
rejects it. The chain goes on. The example counts every failed solve seen by the
model (warm-up and sampling, through `jax.debug.callback`) and the divergent
transitions that NumPyro reports.

`make_model(...)` builds the model; `benchmarks/nuts.py` reuses it.

    python examples/lotka_volterra_nuts.py --backend scipy --plot out/
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from _common import figure_path, parser, setup
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.infer import MCMC, NUTS, init_to_median

import pysciml as ps

TINY_ARGS = ["--num-warmup", "15", "--num-samples", "15", "--max-tree-depth", "3",
             "--num-obs", "10"]

NAMES = ("alpha", "beta", "gamma", "delta", "sigma")
TRUTH = {"alpha": 1.5, "beta": 1.0, "gamma": 3.0, "delta": 1.0, "sigma": 0.1}
Y0 = (1.0, 1.0)


def lotka_volterra(t, y, p):
    x, z = y[0], y[1]
    alpha, beta, gamma, delta = p[0], p[1], p[2], p[3]
    return jnp.stack([alpha * x - beta * x * z, -gamma * z + delta * x * z])


def make_model(backend=None, *, t1=5.0, rtol=1e-6, atol=1e-8, max_steps=4096,
               on_failed_solve=None, sensitivity=None):
    """The NumPyro model `model(ts, y0, obs=None)`.

    Solves with `ps.solve(..., solver=None, throw=False)` on `backend` (None: the
    default backend), with `sensitivity` (None: `solve`'s choice, forward
    sensitivities for these 6 inputs). `on_failed_solve`, if given, is called on the host with the
    number of failed solves in each model evaluation (`jax.debug.callback`)."""
    problem = ps.ODEProblem(lotka_volterra, t0=0.0, t1=t1)

    def model(ts, y0, obs=None):
        rates = [numpyro.sample(name, dist.LogNormal(0.0, 1.0)) for name in NAMES[:4]]
        sigma = numpyro.sample("sigma", dist.LogNormal(-1.0, 1.0))
        sol = ps.solve(problem, y0, jnp.stack(rates), saveat=ts, backend=backend,
                       rtol=rtol, atol=atol, max_steps=max_steps, throw=False,
                       sensitivity=sensitivity)
        if on_failed_solve is not None:
            jax.debug.callback(on_failed_solve, sol.result != ps.RESULTS.successful)
        # A failed solve is NaN here: NaN log-likelihood, proposal rejected.
        numpyro.sample("obs", dist.LogNormal(jnp.log(sol.ys), sigma), obs=obs)

    return model


def synthetic_data(key, num_obs, t1, backend=None, *, rtol=1e-6, atol=1e-8):
    """Observation times, y0 and LogNormal(log y_true, sigma) data from TRUTH.

    Solved with the model's own solve options, so that this solve and the model's
    share one compilation: a solver error of ~rtol is nothing next to 10% noise."""
    ts = jnp.linspace(t1 / num_obs, t1, num_obs)
    problem = ps.ODEProblem(lotka_volterra, t0=0.0, t1=t1)
    p = jnp.array([TRUTH[k] for k in NAMES[:4]])
    y_true = ps.solve(problem, jnp.array(Y0), p, saveat=ts, backend=backend,
                      rtol=rtol, atol=atol, throw=False).ys
    assert bool(jnp.all(jnp.isfinite(y_true))), "the true parameters failed to solve"
    obs = y_true * jnp.exp(TRUTH["sigma"] * jax.random.normal(key, y_true.shape))
    return ts, jnp.array(Y0), obs, y_true


def run_nuts(model, ts, y0, obs, key, *, num_warmup, num_samples, num_chains=1,
             max_tree_depth=10, progress_bar=False):
    """NUTS with a dense mass matrix, started at the prior median."""
    kernel = NUTS(model, dense_mass=True, max_tree_depth=max_tree_depth,
                  init_strategy=init_to_median)
    method = "parallel" if jax.local_device_count() >= num_chains else "sequential"
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples,
                num_chains=num_chains, chain_method=method, progress_bar=progress_bar)
    mcmc.run(key, ts, y0, obs, extra_fields=("diverging", "num_steps"))
    return mcmc


def main(argv=None) -> dict:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--num-warmup", type=int, default=1000)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--num-chains", type=int, default=1)
    p.add_argument("--max-tree-depth", type=int, default=10)
    p.add_argument("--num-obs", type=int, default=20, help="observation times")
    p.add_argument("--t1", type=float, default=5.0, help="last observation time")
    p.add_argument("--rtol", type=float, default=1e-6)
    p.add_argument("--atol", type=float, default=1e-8)
    p.add_argument("--max-steps", type=int, default=4096,
                   help="solver step limit (make it small to see failed solves)")
    p.add_argument("--progress-bar", action="store_true")
    args = p.parse_args(argv)
    setup()

    key_data, key_mcmc = jax.random.split(jax.random.key(args.seed))
    ts, y0, obs, y_true = synthetic_data(key_data, args.num_obs, args.t1, args.backend,
                                         rtol=args.rtol, atol=args.atol)

    failed = []  # failed solves per model evaluation, on the host
    model = make_model(args.backend, t1=args.t1, rtol=args.rtol, atol=args.atol,
                       max_steps=args.max_steps,
                       on_failed_solve=lambda f: failed.append(int(np.sum(f))))
    mcmc = run_nuts(model, ts, y0, obs, key_mcmc, num_warmup=args.num_warmup,
                    num_samples=args.num_samples, num_chains=args.num_chains,
                    max_tree_depth=args.max_tree_depth, progress_bar=args.progress_bar)
    grouped = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    extra = mcmc.get_extra_fields()
    divergent = int(np.sum(np.asarray(extra["diverging"])))
    leapfrog = np.asarray(extra["num_steps"])

    print(f"Lotka-Volterra NUTS, backend={args.backend}: {args.num_obs} observations "
          f"of both species on (0, {args.t1:g}], {args.num_chains} chain(s) x "
          f"({args.num_warmup} warm-up + {args.num_samples} samples), dense mass")
    print(f"failed solves (NaN likelihood, proposal rejected): {sum(failed)} of "
          f"{len(failed)} model evaluations")
    print(f"divergent transitions after warm-up: {divergent} of {leapfrog.size}; "
          f"mean leapfrog steps per sample {leapfrog.mean():.1f}")
    print(f"{'':>7}{'truth':>8}{'mean':>9}{'sd':>9}{'5%':>9}{'95%':>9}"
          f"{'n_eff':>8}{'r_hat':>7}")
    means, sds, n_eff, r_hat = {}, {}, {}, {}
    for k in NAMES:
        x = grouped[k]
        means[k], sds[k] = float(x.mean()), float(x.std())
        n_eff[k] = float(effective_sample_size(x))
        r_hat[k] = float(split_gelman_rubin(x)) if x.shape[1] >= 4 else float("nan")
        q5, q95 = np.quantile(x, [0.05, 0.95])
        print(f"{k:>7}{TRUTH[k]:>8.3f}{means[k]:>9.4f}{sds[k]:>9.4f}{q5:>9.4f}"
              f"{q95:>9.4f}{n_eff[k]:>8.1f}{r_hat[k]:>7.3f}")

    path = figure_path(args.plot, "lotka_volterra_nuts.png")
    if path is not None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(len(NAMES), 2, figsize=(9, 1.8 * len(NAMES)),
                                 gridspec_kw={"width_ratios": [2.5, 1]})
        for row, k in zip(axes, NAMES):
            for c in range(grouped[k].shape[0]):
                row[0].plot(grouped[k][c], lw=0.5, alpha=0.8)
                row[1].hist(grouped[k][c], bins=30, density=True, alpha=0.5)
            row[0].axhline(TRUTH[k], color="k", ls="--", lw=1)
            row[1].axvline(TRUTH[k], color="k", ls="--", lw=1, label="truth")
            row[0].set_ylabel(k)
        axes[0, 0].set_title(f"traces ({args.backend})")
        axes[0, 1].set_title("marginals")
        axes[0, 1].legend(fontsize=7)
        axes[-1, 0].set_xlabel("sample")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        print(f"saved {path}")

    return {
        "truth": dict(TRUTH),
        "means": means,
        "sds": sds,
        "n_eff": n_eff,
        "r_hat": r_hat,
        "samples": {k: v.reshape(-1) for k, v in grouped.items()},
        "samples_by_chain": grouped,
        "failed_solves": sum(failed),
        "model_evaluations": len(failed),
        "divergent": divergent,
        "mean_leapfrog_steps": float(leapfrog.mean()),
        "data": (ts, y0, obs),
        # The adapted kernel (step size, inverse mass matrix) and the last position.
        "last_state": mcmc.last_state,
    }


if __name__ == "__main__":
    main()

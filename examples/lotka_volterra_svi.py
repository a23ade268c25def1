"""Lotka–Volterra by NumPyro SVI, with a mean-field (`AutoNormal`) and a full-rank
(`AutoMultivariateNormal`) Gaussian guide, and posterior predictive bands.

    dx/dt = alpha x - beta x z,    dz/dt = -gamma z + delta x z,    x(0) = z(0) = 1
    alpha, beta, gamma, delta ~ LogNormal(0, 1),    sigma ~ LogNormal(-1, 1)
    obs(t_j) ~ LogNormal(log y(t_j), sigma)

The data are synthetic, from a known truth (alpha, beta, gamma, delta, sigma) = (1.5,
1, 3, 1, 0.1). Each guide is fitted by Adam on the ELBO; the posterior means and
standard deviations come from guide samples, and the predictive bands (5-95%) from one
`jax.vmap`ped `ps.solve` over those samples. The model leaves `solver=None`, so it runs
unchanged on every backend.

    python examples/lotka_volterra_svi.py --guide both --backend scipy --plot out/
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from _common import figure_path, parser, setup
from numpyro.infer import SVI, Trace_ELBO, init_to_median
from numpyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

import pysciml as ps

TINY_ARGS = ["--guide", "mvn", "--steps", "60", "--num-obs", "10",
             "--num-draws", "200", "--num-predictive", "20"]

NAMES = ("alpha", "beta", "gamma", "delta", "sigma")
TRUTH = {"alpha": 1.5, "beta": 1.0, "gamma": 3.0, "delta": 1.0, "sigma": 0.1}
Y0 = (1.0, 1.0)
GUIDES = {"normal": AutoNormal, "mvn": AutoMultivariateNormal}


def lotka_volterra(t, y, p):
    x, z = y[0], y[1]
    alpha, beta, gamma, delta = p[0], p[1], p[2], p[3]
    return jnp.stack([alpha * x - beta * x * z, -gamma * z + delta * x * z])


def make_model(problem, backend=None, *, rtol=1e-6, atol=1e-8):
    def model(ts, y0, obs=None):
        rates = [numpyro.sample(name, dist.LogNormal(0.0, 1.0)) for name in NAMES[:4]]
        sigma = numpyro.sample("sigma", dist.LogNormal(-1.0, 1.0))
        sol = ps.solve(problem, y0, jnp.stack(rates), saveat=ts, backend=backend,
                       rtol=rtol, atol=atol, throw=False)
        numpyro.sample("obs", dist.LogNormal(jnp.log(sol.ys), sigma), obs=obs)

    return model


def synthetic_data(problem, key, num_obs, t1, backend=None, *, rtol=1e-6, atol=1e-8):
    """Solved with the model's own solve options, so that this solve and the model's
    share one compilation: a solver error of ~rtol is nothing next to 10% noise."""
    ts = jnp.linspace(t1 / num_obs, t1, num_obs)
    p = jnp.array([TRUTH[k] for k in NAMES[:4]])
    y_true = ps.solve(problem, jnp.array(Y0), p, saveat=ts, backend=backend,
                      rtol=rtol, atol=atol, throw=False).ys
    assert bool(jnp.all(jnp.isfinite(y_true))), "the true parameters failed to solve"
    obs = y_true * jnp.exp(TRUTH["sigma"] * jax.random.normal(key, y_true.shape))
    return ts, jnp.array(Y0), obs


def fit(model, guide_name, ts, y0, obs, key, *, steps, lr):
    """Adam on the ELBO (one particle); returns the guide, its parameters, losses."""
    guide = GUIDES[guide_name](model, init_loc_fn=init_to_median)
    svi = SVI(model, guide, optax.adam(lr), Trace_ELBO())
    run = svi.run(key, steps, ts, y0, obs, progress_bar=False)
    return guide, run.params, np.asarray(run.losses)


def main(argv=None) -> dict:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--guide", choices=["normal", "mvn", "both"], default="both")
    p.add_argument("--steps", type=int, default=2000, help="Adam steps per guide")
    p.add_argument("--lr", type=float, default=0.02, help="Adam learning rate")
    p.add_argument("--num-obs", type=int, default=20, help="observation times")
    p.add_argument("--t1", type=float, default=5.0, help="last observation time")
    p.add_argument("--rtol", type=float, default=1e-6)
    p.add_argument("--atol", type=float, default=1e-8)
    p.add_argument("--num-draws", type=int, default=4000,
                   help="guide samples for the posterior means and sds")
    p.add_argument("--num-predictive", type=int, default=300,
                   help="guide samples solved (vmapped) for the predictive bands")
    args = p.parse_args(argv)
    setup()

    problem = ps.ODEProblem(lotka_volterra, t0=0.0, t1=args.t1)
    key_data, key_svi, key_post, key_pred = jax.random.split(jax.random.key(args.seed), 4)
    ts, y0, obs = synthetic_data(problem, key_data, args.num_obs, args.t1, args.backend,
                                 rtol=args.rtol, atol=args.atol)
    model = make_model(problem, args.backend, rtol=args.rtol, atol=args.atol)
    names = ["normal", "mvn"] if args.guide == "both" else [args.guide]

    print(f"Lotka-Volterra SVI, backend={args.backend}: {args.num_obs} observations "
          f"of both species on (0, {args.t1:g}], {args.steps} Adam steps "
          f"(lr {args.lr:g}) per guide")
    t_plot = jnp.linspace(0.0, args.t1, 150)

    @jax.jit
    def trajectories(rates):  # one vmapped solve over the guide samples
        return jax.vmap(lambda r: ps.solve(
            problem, y0, r, saveat=t_plot, backend=args.backend, rtol=args.rtol,
            atol=args.atol, throw=False).ys)(rates)

    results = {}
    for name in names:
        guide, params, losses = fit(model, name, ts, y0, obs, key_svi, steps=args.steps,
                                    lr=args.lr)
        draws = guide.sample_posterior(key_post, params, sample_shape=(args.num_draws,))
        means = {k: float(np.mean(draws[k])) for k in NAMES}
        sds = {k: float(np.std(draws[k])) for k in NAMES}
        pred = guide.sample_posterior(key_pred, params,
                                      sample_shape=(args.num_predictive,))
        ys = np.asarray(trajectories(jnp.stack([pred[k] for k in NAMES[:4]], -1)))
        ok = np.all(np.isfinite(ys), axis=(1, 2))
        band = np.quantile(ys[ok], [0.05, 0.5, 0.95], axis=0)
        results[name] = {"means": means, "sds": sds, "final_loss": float(losses[-1]),
                         "losses": losses, "band": band,
                         "failed_predictive_solves": int((~ok).sum())}
        print(f"\nguide {GUIDES[name].__name__}: final ELBO loss "
              f"{np.mean(losses[-max(1, args.steps // 20):]):.3f} (mean of last 5%), "
              f"{(~ok).sum()} failed predictive solves of {args.num_predictive}")
        print(f"{'':>7}{'truth':>8}{'mean':>9}{'sd':>9}{'(mean-truth)/sd':>17}")
        for k in NAMES:
            z = (means[k] - TRUTH[k]) / sds[k]
            print(f"{k:>7}{TRUTH[k]:>8.3f}{means[k]:>9.4f}{sds[k]:>9.4f}{z:>17.2f}")

    path = figure_path(args.plot, "lotka_volterra_svi.png")
    if path is not None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4),
                                 squeeze=False)
        for ax, name in zip(axes[0], names):
            band = results[name]["band"]
            for s, (label, color) in enumerate([("prey x", "C0"), ("predator z", "C1")]):
                ax.fill_between(t_plot, band[0, :, s], band[2, :, s], color=color,
                                alpha=0.3, label=f"{label}: 5-95%")
                ax.plot(t_plot, band[1, :, s], color=color, lw=1)
                ax.plot(ts, obs[:, s], "o", color=color, ms=3)
            ax.set_title(f"{GUIDES[name].__name__} ({args.backend})")
            ax.set_xlabel("t")
            ax.legend(fontsize=7)
        axes[0, 0].set_ylabel("population")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        print(f"saved {path}")

    return {"truth": dict(TRUTH), "guides": results}


if __name__ == "__main__":
    main()

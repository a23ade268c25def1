"""Supernova cosmology: H0 and the matter density Ωm of a flat ΛCDM universe from the
580 Union2.1 Type Ia supernovae, by NumPyro NUTS through one ODE solve per likelihood.

    μ(z)   = 25 + 5 log10(d_L / Mpc),       d_L(z) = (1 + z) D_C(z),
    D_C(z) = ∫_0^z c / H(z') dz',           H(z) = H0 sqrt(Ωm (1 + z)^3 + 1 - Ωm).

The comoving distance is the solution of the ODE dD_C/dz = c / H(z), D_C(0) = 0, with
the redshift as "time": one solve, saved at every (distinct, sorted) supernova redshift,
gives all 580 distances; no quadrature per supernova. Priors H0 ~ U(50, 100) km/s/Mpc,
Ωm ~ U(0, 1); Normal likelihood with the published diagonal errors. The distance moduli
assume h = 0.7 through the absolute magnitude (see examples/data/README.md), so H0 comes
out near 70 by construction; Ωm is the measurement.

    python examples/supernova_cosmology.py --backend scipy --plot out/
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from _common import figure_path, parser, setup
from numpyro.diagnostics import summary
from numpyro.infer import MCMC, NUTS, init_to_median

import pysciml as ps

TINY_ARGS = ["--num-warmup", "8", "--num-samples", "8", "--max-tree-depth", "4"]
DATA = Path(__file__).resolve().parent / "data" / "union21_mu_vs_z.txt"
C_KM_S = 299792.458  # speed of light, km/s
H0_PRIOR = (50.0, 100.0)
OM_PRIOR = (0.0, 1.0)


def load_data(path=DATA):
    """Redshifts, distance moduli and their (diagonal) errors, as float64 arrays."""
    table = np.genfromtxt(path, comments="#", delimiter="\t", usecols=(1, 2, 3))
    z, mu, sigma = table.T
    return z, mu, sigma


def comoving_distance_rate(z, D, p):
    """dD_C/dz = c / H(z), in Mpc per unit redshift; p = (H0 [km/s/Mpc], Ωm)."""
    H0, Om = p[0], p[1]
    H = H0 * jnp.sqrt(Om * (1.0 + z) ** 3 + 1.0 - Om)
    return jnp.broadcast_to(C_KM_S / H, D.shape)


def make_distance_modulus(z, *, backend=None, rtol=1e-8, atol=1e-6):
    """μ(H0, Ωm, throw) at the redshifts `z` (any order, duplicates allowed).

    `saveat` must be strictly increasing and inside [t0, t1] = [0, max z]: solve on the
    distinct sorted redshifts and map back with the inverse index. z = 0 would be the
    initial point (d_L = 0, μ = -inf), so every redshift must be positive.
    """
    z = np.asarray(z, dtype=np.float64)
    if not np.all(z > 0):
        raise ValueError(f"every redshift must be > 0; the smallest is {z.min()}")
    z_unique, inverse = np.unique(z, return_inverse=True)
    problem = ps.ODEProblem(comoving_distance_rate, t0=0.0, t1=float(z_unique[-1]))
    z_unique_j, inverse_j = jnp.asarray(z_unique), jnp.asarray(inverse.ravel())

    def distance_modulus_jit(H0, Om, throw):
        p = jnp.stack([H0, Om])
        sol = ps.solve(problem, jnp.zeros(1), p, saveat=z_unique_j, backend=backend,
                       rtol=rtol, atol=atol, throw=throw)
        d_L = (1.0 + z_unique_j) * sol.ys[:, 0]  # Mpc
        return (25.0 + 5.0 * jnp.log10(d_L))[inverse_j]

    # Jitted as a whole: NumPyro initialises NUTS eagerly, and op-by-op dispatch would
    # compile every small operation of the solve's gradient separately (seconds). The
    # inputs are cast first, so that floats, weak and strong arrays share one compile.
    distance_modulus_jit = jax.jit(distance_modulus_jit, static_argnames="throw")

    def distance_modulus(H0, Om, throw=True):
        return distance_modulus_jit(jnp.asarray(H0, dtype=float),
                                    jnp.asarray(Om, dtype=float), throw)

    return distance_modulus


def make_model(z, sigma, *, backend=None):
    distance_modulus = make_distance_modulus(z, backend=backend)
    sigma = jnp.asarray(sigma)

    def model(mu_obs=None):
        H0 = numpyro.sample("H0", dist.Uniform(*H0_PRIOR))
        Om = numpyro.sample("Om", dist.Uniform(*OM_PRIOR))
        # A failed solve gives NaN: NUTS rejects the proposal, the chain goes on.
        mu = distance_modulus(H0, Om, throw=False)
        numpyro.sample("obs", dist.Normal(mu, sigma), obs=mu_obs)

    return model, distance_modulus


def _levels(hist, masses=(0.95, 0.68)):
    """Density thresholds enclosing the given probability masses (increasing)."""
    h = np.sort(hist.ravel())[::-1]
    cdf = np.cumsum(h) / h.sum()
    return [h[min(np.searchsorted(cdf, m), h.size - 1)] for m in masses]


def corner_plot(path, samples, labels, truths=None):
    import matplotlib.pyplot as plt

    x, y = samples
    fig, axes = plt.subplots(2, 2, figsize=(5.5, 5.5))
    axes[0, 1].axis("off")
    axes[0, 0].hist(x, bins=30, color="C0", histtype="stepfilled", alpha=0.6)
    axes[1, 1].hist(y, bins=30, color="C0", histtype="stepfilled", alpha=0.6,
                    orientation="horizontal")
    ax = axes[1, 0]
    ax.plot(x, y, ".", ms=2, alpha=0.3, color="C0")
    if len(x) >= 200:
        from scipy.ndimage import gaussian_filter

        hist, xe, ye = np.histogram2d(x, y, bins=30)
        hist = gaussian_filter(hist, 1.5)  # smooth the Monte Carlo noise
        levels = _levels(hist)
        if levels[0] < levels[1]:
            xc, yc = (xe[1:] + xe[:-1]) / 2, (ye[1:] + ye[:-1]) / 2
            ax.contour(xc, yc, hist.T, levels=levels, colors="k", linewidths=1)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    axes[0, 0].set_xlim(ax.get_xlim())
    axes[1, 1].set_ylim(ax.get_ylim())
    axes[0, 0].set_yticks([])
    axes[1, 1].set_xticks([])
    axes[1, 1].set_title(f"{labels[1]} = {np.mean(y):.3f} ± {np.std(y):.3f}", fontsize=9)
    axes[0, 0].set_title(f"{labels[0]} = {np.mean(x):.2f} ± {np.std(x):.2f}", fontsize=9)
    fig.suptitle("Union2.1, flat ΛCDM: NUTS posterior (68%, 95% contours)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def hubble_plot(path, z, mu, sigma, distance_modulus, H0, Om):
    import matplotlib.pyplot as plt

    model_mu = np.asarray(distance_modulus(H0, Om, throw=False))
    order = np.argsort(z)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True,
                                  gridspec_kw={"height_ratios": [2.5, 1]})
    ax.errorbar(z, mu, sigma, fmt=".", ms=3, lw=0.5, color="0.5", label="Union2.1")
    ax.plot(z[order], model_mu[order], "C3-",
            label=f"flat ΛCDM, H0={H0:.1f}, Ωm={Om:.3f}")
    ax.set_ylabel("distance modulus μ")
    ax.legend(fontsize=8)
    ax2.errorbar(z, mu - model_mu, sigma, fmt=".", ms=3, lw=0.5, color="0.5")
    ax2.axhline(0.0, color="C3")
    ax2.set_xscale("log")
    ax2.set_xlabel("redshift z")
    ax2.set_ylabel("residual")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--num-warmup", type=int, default=500)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--num-chains", type=int, default=1)
    p.add_argument("--max-tree-depth", type=int, default=10,
                   help="NUTS tree depth limit (at most 2^depth gradients per sample)")
    p.add_argument("--data", default=str(DATA))
    args = p.parse_args(argv)
    setup()

    z, mu, sigma = load_data(args.data)
    print(f"Union2.1: {z.size} supernovae, {np.unique(z).size} distinct redshifts in "
          f"[{z.min()}, {z.max()}]; backend={args.backend}")
    model, distance_modulus = make_model(z, sigma, backend=args.backend)
    chain_method = ("parallel" if args.num_chains <= jax.local_device_count()
                    else "sequential")
    kernel = NUTS(model, dense_mass=True, init_strategy=init_to_median,
                  max_tree_depth=args.max_tree_depth)
    mcmc = MCMC(kernel,
                num_warmup=args.num_warmup, num_samples=args.num_samples,
                num_chains=args.num_chains, chain_method=chain_method,
                progress_bar=False)
    mcmc.run(jax.random.key(args.seed), mu_obs=jnp.asarray(mu))
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    stats = summary(samples)
    divergences = int(np.sum(mcmc.get_extra_fields()["diverging"]))

    out = {"num_divergences": divergences}
    print(f"NUTS: {args.num_chains} chain(s) x ({args.num_warmup} warmup + "
          f"{args.num_samples} samples), {divergences} divergences")
    for key, label in (("H0", "H0 [km/s/Mpc]"), ("Om", "Ωm")):
        s = stats[key]
        out[f"{key}_mean"], out[f"{key}_sd"] = float(s["mean"]), float(s["std"])
        out[f"{key}_ess"], out[f"{key}_rhat"] = float(s["n_eff"]), float(s["r_hat"])
        print(f"  {label:<14} = {s['mean']:.4f} ± {s['std']:.4f}   "
              f"(n_eff {s['n_eff']:.0f}, r_hat {s['r_hat']:.3f})")
    # throw=False reuses the forward solve compiled for NUTS (a NaN would show here).
    best = np.asarray(distance_modulus(out["H0_mean"], out["Om_mean"], throw=False))
    chi2 = float(np.sum(((mu - best) / sigma) ** 2))
    out["chi2"] = chi2
    print(f"  chi^2 at the posterior mean = {chi2:.1f} for {z.size - 2} dof")
    out["samples"] = {k: v.reshape(-1) for k, v in samples.items()}

    if args.plot is not None:
        path = figure_path(args.plot, "supernova_corner.png")
        corner_plot(path, (out["samples"]["H0"], out["samples"]["Om"]),
                    ("H0", "Ωm"))
        print(f"saved {path}")
        path = figure_path(args.plot, "supernova_hubble_diagram.png")
        hubble_plot(path, z, mu, sigma, distance_modulus, out["H0_mean"],
                    out["Om_mean"])
        print(f"saved {path}")
    return out


if __name__ == "__main__":
    main()

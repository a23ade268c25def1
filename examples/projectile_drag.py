"""Projectile with linear drag: calibrate the drag coefficient k (and, with
`--fit-speed`, the launch speed v0) from the noisy landing times and landing distances
of throws at several launch angles, with a terminal event that stops each solve where
the projectile lands.

    dx/dt = v,   dv/dt = (0, -g) - k v,   x(0) = (0, 0),   v(0) = v0 (cos θ, sin θ)
    landing: the first t > 0 at which the height x_2 crosses 0 downwards
             (`ps.Event(lambda t, y, args: y["position"][1], direction=-1)`)

`ps.solve(..., event=...)` returns the landing time `event_time` and the state there
`event_state` (a pytree like `y0`: the landing distance is
`event_state["position"][0]`), both differentiable. Every throw is one solve,
`jax.vmap`-ed over the launch angles.

The data are synthetic, from a known truth (k, v0, g) = (0.3 1/s, 20 m/s, 9.81 m/s^2)
and angles evenly spaced in [20°, 80°]: each throw's landing time with Gaussian noise of
sd 0.05 s and its landing distance with Gaussian noise of sd 0.5 m (both noise levels
known to the fit, seeded by `--seed`). Two fits of the same data:

(a) gradient descent: Optax Adam on the log-parameters, minimising the Gaussian negative
    log-likelihood of all landing times and distances;
(b) NumPyro NUTS, with priors k ~ LogNormal(log 0.1, 1) and v0 ~ LogNormal(log 15,
    0.5). The solves use `throw=False`: a failed solve is NaN, and so is a throw that
    does not land before `--t1`; the NaN log-likelihood rejects the proposal.

Sanity check against a closed form. Under linear drag the height is
y(t) = (v0 sin θ + g/k)(1 - e^{-kt})/k - g t/k, and its positive zero, the landing time,
is (with W0 the principal branch of the Lambert W function)

    T = (c + W0(-c e^{-c})) / k,     c = 1 + k v0 sin(θ) / g,

with landing distance X = v0 cos(θ) (1 - e^{-kT}) / k (E. W. Packel and D. S. Yuen,
"Projectile motion with resistance and the Lambert W function", College Math. J. 35,
337 (2004); D. A. Morales, Can. J. Phys. 83, 67 (2005)). The example prints T and X
of the true parameters for one throw from this formula (`scipy.special.lambertw`)
against the solve's event.

    python examples/projectile_drag.py --backend scipy --plot out/
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from _common import figure_path, parser, setup
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC, NUTS, init_to_median
from scipy.special import lambertw

import pysciml as ps

TINY_ARGS = ["--steps", "30", "--num-warmup", "20", "--num-samples", "20",
             "--max-tree-depth", "3", "--num-throws", "3"]

TRUTH = {"k": 0.3, "v0": 20.0}
G = 9.81
NOISE = {"time": 0.05, "distance": 0.5}  # sd of the landing time (s), distance (m)
PRIORS = {"k": (np.log(0.1), 1.0), "v0": (np.log(15.0), 0.5)}  # LogNormal(loc, scale)
LANDING = ps.Event(lambda t, y, args: y["position"][1], direction=-1)


def projectile(t, y, args):
    """Linear drag; `y = {"position": (x, height), "velocity": (vx, vy)}`."""
    gravity = jnp.array([0.0, -G])
    return {"position": y["velocity"], "velocity": gravity - args["k"] * y["velocity"]}


def launch(v0, theta):
    """The initial state of a throw at speed `v0` and angle `theta` (rad)."""
    return {"position": jnp.zeros(2),
            "velocity": v0 * jnp.stack([jnp.cos(theta), jnp.sin(theta)])}


def landing_closed_form(k, v0, theta, g=G):
    """Landing time and distance under linear drag, by the Lambert W function."""
    c = 1.0 + k * v0 * np.sin(theta) / g
    w = lambertw(-c * np.exp(-c), 0)
    assert abs(w.imag) < 1e-12
    t = (c + w.real) / k
    return t, v0 * np.cos(theta) * (1.0 - np.exp(-k * t)) / k


def make_landings(problem, backend, *, rtol=1e-8, atol=1e-10):
    """`landings(k, v0, thetas) -> (times, distances)`: one solve per throw, vmapped
    over the angles. A throw that fails to solve (`throw=False`), or that does not land
    before `t1`, gives NaN. Jitted: the data, both fits and the plots share it, and its
    calls outside `jit` share one compilation."""

    def one(k, v0, theta):
        sol = ps.solve(problem, launch(v0, theta), {"k": k}, saveat=jnp.array([0.0]),
                       event=LANDING, backend=backend, rtol=rtol, atol=atol,
                       throw=False)
        landed = sol.event_happened
        return (jnp.where(landed, sol.event_time, jnp.nan),
                jnp.where(landed, sol.event_state["position"][0], jnp.nan))

    return jax.jit(jax.vmap(one, in_axes=(None, None, 0)))


def trajectories(problem, backend, k, v0, thetas, ts):
    """Positions at `ts` of each throw, NaN after its landing (for plots)."""

    def one(theta):
        sol = ps.solve(problem, launch(v0, theta), {"k": k}, saveat=ts, event=LANDING,
                       backend=backend, rtol=1e-8, atol=1e-10)
        return jnp.where((ts <= sol.event_time)[:, None], sol.ys["position"], jnp.nan)

    return np.asarray(jax.jit(jax.vmap(one))(thetas))


def main(argv=None) -> dict:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--num-throws", type=int, default=5,
                   help="throws, at angles evenly spaced in [20, 80] degrees")
    p.add_argument("--fit-speed", action="store_true",
                   help="fit the launch speed v0 too (default: v0 known)")
    p.add_argument("--t1", type=float, default=60.0,
                   help="end of each solve: a throw not landed by then is NaN")
    p.add_argument("--steps", type=int, default=300, help="Adam steps")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--num-warmup", type=int, default=300)
    p.add_argument("--num-samples", type=int, default=300)
    p.add_argument("--max-tree-depth", type=int, default=10)
    args = p.parse_args(argv)
    setup()

    names = ("k", "v0") if args.fit_speed else ("k",)
    thetas = jnp.deg2rad(jnp.linspace(20.0, 80.0, args.num_throws))
    problem = ps.ODEProblem(projectile, t0=0.0, t1=args.t1)
    landings = make_landings(problem, args.backend)

    key_data, key_mcmc = jax.random.split(jax.random.key(args.seed))
    true_t, true_x = landings(TRUTH["k"], TRUTH["v0"], thetas)
    assert np.all(np.isfinite(true_t)), "the true parameters failed to solve or land"
    noise = jax.random.normal(key_data, (2, args.num_throws))
    obs_t = true_t + NOISE["time"] * noise[0]
    obs_x = true_x + NOISE["distance"] * noise[1]

    print(f"projectile with linear drag, backend={args.backend}: {args.num_throws} "
          f"throws at {np.array2string(np.rad2deg(np.asarray(thetas)), precision=0)} "
          f"deg; noise sd {NOISE['time']} s on landing times, {NOISE['distance']} m "
          "on distances")
    print(f"true k = {TRUTH['k']} 1/s, v0 = {TRUTH['v0']} m/s "
          f"({'fitted' if args.fit_speed else 'known'}), g = {G} m/s^2")

    # Sanity check: the event of the first throw against the Lambert-W closed form.
    t_cf, x_cf = landing_closed_form(TRUTH["k"], TRUTH["v0"], float(thetas[0]))
    t_ev, x_ev = float(true_t[0]), float(true_x[0])
    print(f"closed form (Lambert W), throw at {np.rad2deg(float(thetas[0])):.0f} deg: "
          f"T = {t_cf:.9f} s, X = {x_cf:.9f} m; event: T = {t_ev:.9f} s, "
          f"X = {x_ev:.9f} m (differences {t_ev - t_cf:.1e} s, {x_ev - x_cf:.1e} m)")

    def params(log_p):
        return {n: jnp.exp(log_p[i]) for i, n in enumerate(names)}

    def nll(log_p):
        """Gaussian negative log-likelihood (constants dropped), summed over throws."""
        q = params(log_p)
        t, x = landings(q["k"], q.get("v0", TRUTH["v0"]), thetas)
        return 0.5 * (jnp.sum(((t - obs_t) / NOISE["time"]) ** 2)
                      + jnp.sum(((x - obs_x) / NOISE["distance"]) ** 2))

    # (a) Gradient descent.
    optimiser = optax.adam(args.lr)
    log_p = jnp.log(jnp.array([float(np.exp(PRIORS[n][0])) for n in names]))
    opt_state = optimiser.init(log_p)

    @jax.jit
    def step(log_p, opt_state):
        value, grad = jax.value_and_grad(nll)(log_p)
        updates, opt_state = optimiser.update(grad, opt_state)
        return optax.apply_updates(log_p, updates), opt_state, value

    start = time.perf_counter()
    print(f"(a) Adam on the negative log-likelihood, start "
          f"{ {n: round(float(v), 4) for n, v in params(log_p).items()} }")
    for i in range(args.steps):
        log_p, opt_state, value = step(log_p, opt_state)
        if i % max(1, args.steps // 5) == 0:
            print(f"  step {i:4d}  NLL {float(value):12.4f}  "
                  + "  ".join(f"{n} {float(v):.5f}" for n, v in params(log_p).items()))
    gd = {n: float(v) for n, v in params(log_p).items()}
    gd_nll = float(nll(log_p))
    print(f"  {args.steps} steps in {time.perf_counter() - start:.1f} s; final NLL "
          f"{gd_nll:.4f} ({2 * args.num_throws} observations)")

    # (b) NUTS.
    def model(obs_t, obs_x):
        q = {n: numpyro.sample(n, dist.LogNormal(*PRIORS[n])) for n in names}
        # NaN (a failed solve, or no landing before t1): the proposal is rejected.
        t, x = landings(q["k"], q.get("v0", TRUTH["v0"]), thetas)
        numpyro.sample("obs_t", dist.Normal(t, NOISE["time"]), obs=obs_t)
        numpyro.sample("obs_x", dist.Normal(x, NOISE["distance"]), obs=obs_x)

    kernel = NUTS(model, max_tree_depth=args.max_tree_depth,
                  init_strategy=init_to_median)
    mcmc = MCMC(kernel, num_warmup=args.num_warmup, num_samples=args.num_samples,
                num_chains=1, progress_bar=False)
    start = time.perf_counter()
    mcmc.run(key_mcmc, obs_t, obs_x, extra_fields=("diverging",))
    samples = {n: np.asarray(v) for n, v in mcmc.get_samples().items()}
    divergent = int(np.sum(np.asarray(mcmc.get_extra_fields()["diverging"])))
    print(f"(b) NUTS, 1 chain x ({args.num_warmup} warm-up + {args.num_samples} "
          f"samples) in {time.perf_counter() - start:.1f} s; {divergent} divergent "
          "transitions after warm-up")

    summary = {}
    print(f"{'':>4}{'truth':>8}{'GD':>10}{'mean':>10}{'sd':>9}{'5%':>10}{'95%':>10}"
          f"{'n_eff':>8}  truth in 90%")
    for n in names:
        x = samples[n]
        q5, q95 = (float(v) for v in np.quantile(x, [0.05, 0.95]))
        inside = q5 <= TRUTH[n] <= q95
        summary[n] = {"mean": float(x.mean()), "sd": float(x.std()), "q5": q5,
                      "q95": q95, "n_eff": float(effective_sample_size(x[None])),
                      "truth_inside_90": inside}
        s = summary[n]
        print(f"{n:>4}{TRUTH[n]:>8.3f}{gd[n]:>10.5f}{s['mean']:>10.5f}{s['sd']:>9.5f}"
              f"{q5:>10.5f}{q95:>10.5f}{s['n_eff']:>8.1f}  "
              f"{'yes' if inside else 'NO'}")

    files = []
    path = figure_path(args.plot, "projectile_drag_trajectories.png")
    if path is not None:
        import matplotlib.pyplot as plt

        v0_gd = gd.get("v0", TRUTH["v0"])
        ts = jnp.linspace(0.0, 1.05 * float(jnp.max(true_t)), 300)
        truth_xy = trajectories(problem, args.backend, TRUTH["k"], TRUTH["v0"],
                                thetas, ts)
        fit_xy = trajectories(problem, args.backend, gd["k"], v0_gd, thetas, ts)
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.8),
                                      gridspec_kw={"width_ratios": [1.8, 1]})
        for i in range(args.num_throws):
            ax.plot(truth_xy[i, :, 0], truth_xy[i, :, 1], color=f"C{i}", lw=0.8,
                    alpha=0.5)
            ax.plot(fit_xy[i, :, 0], fit_xy[i, :, 1], "--", color=f"C{i}", lw=1.2)
        ax.errorbar(obs_x, np.zeros(args.num_throws), xerr=NOISE["distance"], fmt="kx",
                    label="observed landings")
        ax.set_xlabel("distance (m)")
        ax.set_ylabel("height (m)")
        ax.set_title(f"throws ({args.backend}): truth thin, GD fit dashed")
        ax.legend(fontsize=8)
        deg = np.rad2deg(np.asarray(thetas))
        fit_t, _ = landings(gd["k"], v0_gd, thetas)
        ax2.errorbar(deg, obs_t, yerr=NOISE["time"], fmt="kx", label="observed")
        ax2.plot(deg, np.asarray(true_t), "o", mfc="none", label="truth")
        ax2.plot(deg, np.asarray(fit_t), "+", ms=10, label="GD fit")
        ax2.set_xlabel("launch angle (deg)")
        ax2.set_ylabel("landing time (s)")
        ax2.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)

        path = figure_path(args.plot, "projectile_drag_posterior.png")
        fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.2),
                                 squeeze=False)
        for ax, n in zip(axes[0], names):
            ax.hist(samples[n], bins=30, density=True, alpha=0.6, label="NUTS")
            ax.axvline(TRUTH[n], color="k", ls="--", lw=1, label="truth")
            ax.axvline(gd[n], color="C3", lw=1, label="GD")
            ax.axvspan(summary[n]["q5"], summary[n]["q95"], color="C0", alpha=0.1,
                       label="90% interval")
            ax.set_xlabel(n)
            ax.legend(fontsize=7)
        axes[0, 0].set_title(f"posterior ({args.backend})")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
        for f in files:
            print(f"saved {f}")

    return {
        "truth": dict(TRUTH) if args.fit_speed else {"k": TRUTH["k"]},
        "gd": gd,
        "gd_nll": gd_nll,
        "posterior": summary,
        "samples": samples,
        "divergent": divergent,
        "closed_form_check": {"time": (t_cf, t_ev), "distance": (x_cf, x_ev)},
        "thetas": np.asarray(thetas),
        "true_landings": (np.asarray(true_t), np.asarray(true_x)),
        "data": (np.asarray(obs_t), np.asarray(obs_x)),
        "noise": dict(NOISE),
        "g": G,
    }


if __name__ == "__main__":
    main()

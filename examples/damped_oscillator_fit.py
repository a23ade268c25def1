"""Damped harmonic oscillator: fit the damping rate and natural frequency to noisy
observations of the position, with Optax Adam through `ps.solve`.

    x'' + gamma x' + omega0^2 x = 0,   as   x' = v,  v' = -gamma v - omega0^2 x.

The parameters are optimised in log space (both are positive). The same script runs on
every backend:

    python examples/damped_oscillator_fit.py --backend scipy --plot out/
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import figure_path, parser, setup

import pysciml as ps

TINY_ARGS = ["--steps", "5", "--num-points", "20"]


def oscillator(t, y, p):
    x, v = y[0], y[1]
    gamma, omega0 = p[0], p[1]
    return jnp.stack([v, -gamma * v - omega0**2 * x])


def main(argv=None) -> dict:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--gamma", type=float, default=0.3, help="true damping rate")
    p.add_argument("--omega0", type=float, default=2.0, help="true natural frequency")
    p.add_argument("--init", type=float, nargs=2, default=[0.6, 1.7],
                   metavar=("GAMMA", "OMEGA0"), help="starting guess")
    p.add_argument("--t1", type=float, default=10.0)
    p.add_argument("--num-points", type=int, default=50)
    p.add_argument("--noise", type=float, default=0.05, help="noise sd on x")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=0.05)
    args = p.parse_args(argv)
    setup()

    true = np.array([args.gamma, args.omega0])
    problem = ps.ODEProblem(oscillator, t0=0.0, t1=args.t1)
    y0 = jnp.array([1.0, 0.0])
    ts = jnp.linspace(0.0, args.t1, args.num_points)

    def positions(params, rtol=1e-7, atol=1e-9):
        sol = ps.solve(problem, y0, params, saveat=ts, backend=args.backend,
                       rtol=rtol, atol=atol)
        return sol.ys[:, 0]

    clean = positions(jnp.asarray(true), rtol=1e-10, atol=1e-12)
    noise = args.noise * jax.random.normal(jax.random.key(args.seed), clean.shape)
    data = clean + noise

    def loss(log_p):
        return jnp.mean((positions(jnp.exp(log_p)) - data) ** 2)

    optimiser = optax.adam(args.lr)
    log_p = jnp.log(jnp.asarray(args.init, dtype=float))
    state = optimiser.init(log_p)

    @jax.jit
    def step(log_p, state):
        value, grad = jax.value_and_grad(loss)(log_p)
        updates, state = optimiser.update(grad, state)
        return optax.apply_updates(log_p, updates), state, value

    print(f"damped oscillator, backend={args.backend}: {args.num_points} noisy "
          f"observations of x on [0, {args.t1}], noise sd {args.noise}")
    print(f"true (gamma, omega0) = {true}, start = {np.asarray(args.init)}")
    start = time.perf_counter()
    losses = []
    for i in range(args.steps):
        log_p, state, value = step(log_p, state)
        losses.append(float(value))
        if i % max(1, args.steps // 5) == 0:
            g, w = np.exp(np.asarray(log_p))
            print(f"  step {i:4d}  MSE {value:.6f}  gamma {g:.4f}  omega0 {w:.4f}")
    elapsed = time.perf_counter() - start
    fit = np.exp(np.asarray(log_p))
    final_loss = float(loss(log_p))
    rel_err = np.abs(fit / true - 1.0)
    print(f"{args.steps} Adam steps in {elapsed:.1f} s; final MSE {final_loss:.6f} "
          f"(noise variance {args.noise**2:.6f})")
    print(f"fitted gamma = {fit[0]:.4f} (true {true[0]}), rel. error {rel_err[0]:.2%}")
    print(f"fitted omega0 = {fit[1]:.4f} (true {true[1]}), rel. error {rel_err[1]:.2%}")

    path = figure_path(args.plot, "damped_oscillator_fit.png")
    if path is not None:
        import matplotlib.pyplot as plt

        fine = jnp.linspace(0.0, args.t1, 400)

        def curve(params):
            return ps.solve(problem, y0, jnp.asarray(params), saveat=fine,
                            backend=args.backend).ys[:, 0]

        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8),
                                      gridspec_kw={"width_ratios": [2.2, 1]})
        ax.plot(ts, data, "k.", label="data")
        ax.plot(fine, curve(true), "C0-", lw=1, label="truth")
        ax.plot(fine, curve(args.init), "C7:", lw=1, label="start")
        ax.plot(fine, curve(fit), "C3--", lw=1.5,
                label=f"fit: gamma={fit[0]:.3f}, omega0={fit[1]:.3f}")
        ax.set_xlabel("t")
        ax.set_ylabel("x(t)")
        ax.legend(fontsize=8)
        ax.set_title(f"Damped oscillator fit ({args.backend})")
        ax2.semilogy(losses)
        ax2.axhline(args.noise**2, color="k", ls=":", lw=0.8, label="noise variance")
        ax2.set_xlabel("Adam step")
        ax2.set_ylabel("MSE")
        ax2.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        print(f"saved {path}")

    return {
        "true": true.tolist(),
        "fit": fit.tolist(),
        "rel_error": rel_err.tolist(),
        "final_loss": final_loss,
        "seconds": elapsed,
        "ts": np.asarray(ts),
        "data": np.asarray(data),
    }


if __name__ == "__main__":
    main()

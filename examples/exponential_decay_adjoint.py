"""Exponential decay: the gradient of a loss on y(T) with respect to the time constant,
from every sensitivity of the chosen backend, against the analytic adjoint.

    y' = -y / tau,   y(0) = y0,   L = (y(T) - target)^2

The exact solution y(T) = y0 exp(-T/tau) gives the analytic adjoint

    dL/dtau = (T / tau^2) * dL/dy(T) * y0 * exp(-T / tau).

A continuous adjoint matches it to within the solver tolerance; a discretise-then-
optimise gradient matches the *discrete* solution exactly. To show the difference, the
example also differentiates a fixed-step explicit Euler recursion (written here in JAX,
`y_{k+1} = y_k (1 - h/tau)`), whose gradient has the closed form

    dL/dtau = (T / tau^2) * dL/dy_N * y0 * (1 - T/(N tau))^(N-1),

and which converges to the continuous gradient at first order, O(1/N).

    python examples/exponential_decay_adjoint.py --backend scipy --plot out/
"""


import jax
import jax.numpy as jnp
import numpy as np
from _common import figure_path, parser, setup

import pysciml as ps

TINY_ARGS = ["--euler-steps", "10,100,1000"]


def decay(t, y, tau):
    return -y / tau


def sensitivities_of(backend: str) -> list[ps.AbstractSensitivity]:
    """One instance of every sensitivity the backend declares (listing them starts no
    Julia: that happens when a solve is first traced)."""
    return [s() for s in ps.get_backend(backend).sensitivities]


def analytic(tau, y0, T, target):
    """y(T) and the analytic adjoint dL/dtau for L = (y(T) - target)^2."""
    yT = y0 * np.exp(-T / tau)
    return yT, (T / tau**2) * 2.0 * (yT - target) * y0 * np.exp(-T / tau)


def euler_loss(tau, y0, T, target, n):
    """L(y_N) for N explicit Euler steps of size h = T/N (a JAX recursion)."""
    h = T / n
    yN = jax.lax.fori_loop(0, n, lambda _, y: y * (1.0 - h / tau), jnp.asarray(y0))
    return (yN - target) ** 2, yN


def euler_closed_form(tau, y0, T, target, n):
    yN = y0 * (1.0 - T / (n * tau)) ** n
    return (T / tau**2) * 2.0 * (yN - target) * y0 * (1.0 - T / (n * tau)) ** (n - 1)


def main(argv=None) -> dict:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--tau", type=float, default=2.0)
    p.add_argument("--y0", type=float, default=1.0)
    p.add_argument("--T", type=float, default=3.0, help="final time")
    p.add_argument("--target", type=float, default=0.1)
    p.add_argument("--rtol", type=float, default=1e-10)
    p.add_argument("--atol", type=float, default=1e-12)
    p.add_argument("--solver", default=None,
                   help="a pysciml solver tag, e.g. Dopri8 (default: the backend's)")
    p.add_argument("--euler-steps", default="10,20,50,100,200,500,1000,2000,5000,10000",
                   help="comma-separated numbers of Euler steps N")
    args = p.parse_args(argv)
    setup()

    tau, y0, T, target = args.tau, args.y0, args.T, args.target
    solver = None if args.solver is None else getattr(ps, args.solver)()
    problem = ps.ODEProblem(decay, t0=0.0, t1=T)
    yT_exact, g_exact = analytic(tau, y0, T, target)

    print(f"y' = -y/tau, tau={tau}, y0={y0}, T={T}, L=(y(T)-{target})^2, "
          f"backend={args.backend}, rtol={args.rtol:g}, atol={args.atol:g}")
    print(f"analytic: y(T) = {yT_exact:.15g}, dL/dtau = {g_exact:.15g}")
    print(f"{'sensitivity':<22}{'dL/dtau':>24}{'rel. error':>14}")
    gradients, rel_errors = {}, {}
    for sens in sensitivities_of(args.backend):

        def loss(tau_, sens=sens):
            sol = ps.solve(problem, jnp.array([y0]), tau_, saveat=jnp.array([T]),
                           solver=solver, backend=args.backend, rtol=args.rtol,
                           atol=args.atol, sensitivity=sens)
            return (sol.ys[0, 0] - target) ** 2

        g = float(jax.grad(loss)(jnp.asarray(tau)))
        name = type(sens).__name__
        gradients[name] = g
        rel_errors[name] = abs(g / g_exact - 1.0)
        print(f"{name:<22}{g:>24.15g}{rel_errors[name]:>14.2e}")

    steps = [int(s) for s in args.euler_steps.split(",")]
    euler = {}
    print("\nexplicit Euler, N fixed steps, jax.grad through the recursion")
    print(f"{'N':>7}{'dL/dtau':>24}{'vs closed form':>16}{'vs continuous':>16}")
    for n in steps:
        g = float(jax.grad(lambda t, n=n: euler_loss(t, y0, T, target, n)[0])(
            jnp.asarray(tau)))
        closed = euler_closed_form(tau, y0, T, target, n)
        euler[n] = {
            "grad": g,
            "closed_form": closed,
            "rel_err_closed_form": abs(g / closed - 1.0),
            "rel_err_continuous": abs(g / g_exact - 1.0),
        }
        print(f"{n:>7}{g:>24.15g}{euler[n]['rel_err_closed_form']:>16.2e}"
              f"{euler[n]['rel_err_continuous']:>16.2e}")
    ns = np.array(steps, dtype=float)
    errs = np.array([euler[n]["rel_err_continuous"] for n in steps])
    order = float(-np.polyfit(np.log(ns), np.log(errs), 1)[0])
    print(f"Euler gradient error vs N: fitted order {order:.3f} (expected 1)")

    path = figure_path(args.plot, "exponential_decay_adjoint.png")
    if path is not None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 4))
        ax.loglog(ns, errs, "o-", label="Euler (discretise-then-optimise)")
        ax.loglog(ns, errs[0] * ns[0] / ns, "k--", lw=0.8, label="O(1/N)")
        for name, err in rel_errors.items():
            ax.axhline(max(err, 1e-17), ls=":", lw=1,
                       label=f"{args.backend} {name}", color=f"C{len(ax.lines)}")
        ax.set_xlabel("number of Euler steps N")
        ax.set_ylabel("relative error of dL/dtau")
        ax.set_title("Gradient error against the analytic adjoint")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        print(f"saved {path}")

    return {
        "analytic": g_exact,
        "y_T": yT_exact,
        "gradients": gradients,
        "rel_errors": rel_errors,
        "euler": euler,
        "euler_order": order,
    }


if __name__ == "__main__":
    main()

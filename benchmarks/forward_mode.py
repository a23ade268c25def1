"""Forward sensitivities (`ps.ForwardSensitivity()`) against adjoints, per backend, on
the seeds' workflows, and against raw Diffrax. Measures what the issue "Forward-mode
sensitivities" asks, and what the default rule (`sensitivity=None`) rests on.

    .venv/bin/python benchmarks/forward_mode.py            # 21 rounds
    .venv/bin/python benchmarks/forward_mode.py --quick    # 5 rounds, a smoke run

Figures (paired ratios per round, median and IQR; see `_common.py`):

1. Gradient cost, `ForwardSensitivity` / the backend's adjoint, per workflow × backend:
   Lotka--Volterra (2 states, 4 + 2 inputs), the damped oscillator (2 + 2), a
   supernova-like distance integral (1 state, 2 parameters, 200 save times), the heat
   equation on 64 nodes (1 parameter; SciPy with its stiff BDF and sparse Jacobians),
   and a small neural ODE (2 states, an MLP 2-16-16-2: 354 parameters).
2. Lotka--Volterra on SciPy: `ForwardSensitivity` gradient / the SciPy forward of the
   same problem (goal <= 1.6), and / raw `solve_ivp` with a NumPy right-hand side.
3. Diffrax: `jax.jacfwd` of the solution with `ForwardSensitivity` / raw Diffrax with
   `diffrax.ForwardMode()` and `jax.jacfwd` (goal <= 1.2); `jax.hessian` with
   `ForwardSensitivity` / `DirectAdjoint` reverse-over-reverse (reported).
4. A 21-point log-normal likelihood of 2-state Lotka--Volterra (6 inputs, rtol 1e-6):
   value and gradient, pysciml diffrax with `sensitivity=None` / raw Diffrax as
   usually written (`RecursiveCheckpointAdjoint`, `jax.value_and_grad`); goal: >= 2x
   faster (ratio <= 0.5).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.integrate as si  # noqa: E402
from _common import (  # noqa: E402
    Run,
    add_rounds_arguments,
    compare,
    ratio_cell,
    rounds_of,
)

import pysciml as ps  # noqa: E402
import pysciml.pde as pde  # noqa: E402

FS = ps.ForwardSensitivity()


def lotka_volterra(t, y, p):
    x, z = y[0], y[1]
    return jnp.stack([p[0] * x - p[1] * x * z, -p[2] * z + p[3] * x * z])


def oscillator(t, y, p):
    return jnp.stack([y[1], -p[0] * y[1] - p[1] ** 2 * y[0]])


def distance(t, y, p):
    # dχ/dz = c / H(z), H = H0 sqrt(Ωm (1+z)³ + 1 - Ωm): the supernova example's field.
    return jnp.atleast_1d(299792.458 / (p[0] * jnp.sqrt(p[1] * (1 + t) ** 3 + 1 - p[1])))


class MLP(eqx.Module):
    mlp: eqx.nn.MLP

    def __call__(self, t, y):
        return self.mlp(y)


def workflows():
    grid = pde.Grid1D(0.0, 1.0, 64, pde.Dirichlet(0.0))
    x = np.asarray(grid.x)
    heat = ps.ODEProblem(lambda t, u, d: d * pde.laplacian(u, grid), 0.0, 0.1,
                         jac_sparsity=grid.jac_sparsity())
    mlp = MLP(eqx.nn.MLP(2, 2, 16, 2, activation=jnp.tanh, key=jax.random.key(0)))
    return {
        "Lotka-Volterra": (ps.ODEProblem(lotka_volterra, 0.0, 10.0), jnp.ones(2),
                           jnp.array([1.5, 1.0, 3.0, 1.0]), jnp.linspace(0.5, 10, 21),
                           {}),
        "oscillator": (ps.ODEProblem(oscillator, 0.0, 10.0), jnp.array([1.0, 0.0]),
                       jnp.array([0.3, 2.0]), jnp.linspace(0.5, 10, 40), {}),
        "supernova-like": (ps.ODEProblem(distance, 0.0, 1.5), jnp.zeros(1),
                           jnp.array([70.0, 0.3]), jnp.linspace(0.01, 1.5, 200), {}),
        "heat n=64": (heat, jnp.asarray(np.sin(np.pi * x)), jnp.array(0.5),
                      jnp.array([0.02, 0.05, 0.1]), {"scipy": ps.QNDF()}),
        "neural ODE 354 params": (ps.ODEProblem(lambda t, y, m: m(t, y), 0.0, 2.0),
                                  jnp.array([0.5, -0.3]), mlp, jnp.linspace(0.1, 2, 20),
                                  {}),
    }


def grad_fn(problem, y0, args, ts, backend, solver, sensitivity):
    def loss(y0, args):
        ys = ps.solve(problem, y0, args, saveat=ts, backend=backend, solver=solver,
                      sensitivity=sensitivity, rtol=1e-6, atol=1e-8,
                      max_steps=100_000).ys
        return jnp.sum(ys**2)

    g = eqx.filter_jit(eqx.filter_grad(lambda a: loss(y0, a)))
    return lambda: jax.block_until_ready(g(args))


def part_workflows(run, rounds):
    rows = []
    for name, (problem, y0, args, ts, solvers) in workflows().items():
        for backend in ("diffrax", "scipy"):
            solver = solvers.get(backend)
            # The backend's adjoint, named: `None` would pick forward sensitivities
            # for the small workflows (the first run of this script did, by mistake).
            adjoint = ps.get_backend(backend).default_sensitivity
            fns = {
                "adjoint": grad_fn(problem, y0, args, ts, backend, solver, adjoint),
            }
            n = y0.size + sum(x.size for x in jax.tree.leaves(eqx.filter(
                args, eqx.is_inexact_array)))
            if n <= FS.max_directions:
                fns["forward"] = grad_fn(problem, y0, args, ts, backend, solver, FS)
            timing = run.add(f"{name}/{backend}", compare(fns, rounds=rounds,
                                                          target_s=0.05))
            if "forward" in fns:
                s = run.figure(f"{name}, {backend}: gradient",
                               timing.ratios("forward", "adjoint"),
                               anchor=f"{backend}'s default adjoint (same run)",
                               what="ForwardSensitivity / adjoint")
                rows.append((name, backend, n, timing.median("adjoint"),
                             timing.median("forward"), ratio_cell(s)))
    print("\n| workflow | backend | n+m | adjoint ms | forward ms | forward/adjoint |")
    print("|---|---|---:|---:|---:|---|")
    for name, backend, n, a, f, cell in rows:
        print(f"| {name} | {backend} | {n} | {1e3 * a:.2f} | {1e3 * f:.2f} | {cell} |")


def part_scipy_lv(run, rounds):
    problem, y0, p, ts, _ = workflows()["Lotka-Volterra"]

    def rhs(t, y):
        a, b, c, d = 1.5, 1.0, 3.0, 1.0
        return np.array([a * y[0] - b * y[0] * y[1], -c * y[1] + d * y[0] * y[1]])

    ts_np = np.asarray(ts)

    def raw_forward():
        return si.solve_ivp(rhs, (0.0, 10.0), np.ones(2), method="RK45", t_eval=ts_np,
                            rtol=1e-6, atol=1e-8).y

    fwd = jax.jit(lambda p: ps.solve(problem, y0, p, saveat=ts, backend="scipy",
                                     rtol=1e-6, atol=1e-8).ys)
    fns = {
        "raw solve_ivp RK45": raw_forward,
        "pysciml forward": lambda: jax.block_until_ready(fwd(p)),
        "pysciml ForwardSensitivity grad": grad_fn(problem, y0, p, ts, "scipy", None,
                                                   FS),
        "pysciml adjoint grad": grad_fn(problem, y0, p, ts, "scipy", None,
                                        ps.InterpolatingAdjoint()),
    }
    timing = run.add("scipy-lv", compare(fns, rounds=rounds, target_s=0.05))
    run.figure("LV SciPy: ForwardSensitivity gradient / its own forward",
               timing.ratios("pysciml ForwardSensitivity grad", "pysciml forward"),
               anchor="pysciml SciPy forward (same run)", what="grad / forward",
               goal="<= 1.6")
    run.figure("LV SciPy: ForwardSensitivity gradient / raw solve_ivp forward",
               timing.ratios("pysciml ForwardSensitivity grad", "raw solve_ivp RK45"),
               anchor="raw solve_ivp RK45 + NumPy rhs (same run)",
               what="grad / raw forward")
    run.figure("LV SciPy: ForwardSensitivity gradient / SciPy adjoint gradient",
               timing.ratios("pysciml ForwardSensitivity grad", "pysciml adjoint grad"),
               anchor="pysciml SciPy InterpolatingAdjoint (same run)",
               what="forward / adjoint", goal="<= 1.0")


def part_diffrax(run, rounds):
    problem, y0, p, ts, _ = workflows()["Lotka-Volterra"]

    def raw_ys(p, adjoint):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(lotka_volterra), diffrax.Tsit5(), 0.0, 10.0, None, y0, p,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-8),
            adjoint=adjoint, max_steps=4096).ys

    def ps_ys(p, sensitivity):
        return ps.solve(problem, y0, p, saveat=ts, sensitivity=sensitivity, rtol=1e-6,
                        atol=1e-8).ys

    raw_jac = jax.jit(jax.jacfwd(lambda p: raw_ys(p, diffrax.ForwardMode())))
    ps_jac = jax.jit(jax.jacfwd(lambda p: ps_ys(p, FS)))
    timing = run.add("diffrax-jacfwd", compare({
        "raw ForwardMode jacfwd": lambda: jax.block_until_ready(raw_jac(p)),
        "pysciml ForwardSensitivity jacfwd": lambda: jax.block_until_ready(ps_jac(p)),
    }, rounds=rounds, target_s=0.05))
    run.figure("LV diffrax: jax.jacfwd of ys",
               timing.ratios("pysciml ForwardSensitivity jacfwd",
                             "raw ForwardMode jacfwd"),
               anchor="raw diffrax ForwardMode + jax.jacfwd (same run)",
               what="pysciml / raw", goal="<= 1.2")

    def loss(p, sensitivity):
        return jnp.sum(ps_ys(p, sensitivity) ** 2)

    h_fs = jax.jit(jax.hessian(lambda p: loss(p, FS)))
    h_direct = jax.jit(jax.jacrev(jax.jacrev(lambda p: loss(p, ps.DirectAdjoint()))))
    timing = run.add("diffrax-hessian", compare({
        "DirectAdjoint jacrev(jacrev)": lambda: jax.block_until_ready(h_direct(p)),
        "ForwardSensitivity hessian": lambda: jax.block_until_ready(h_fs(p)),
    }, rounds=rounds, target_s=0.05))
    run.figure("LV diffrax: Hessian",
               timing.ratios("ForwardSensitivity hessian",
                             "DirectAdjoint jacrev(jacrev)"),
               anchor="pysciml DirectAdjoint reverse-over-reverse (same run)",
               what="ForwardSensitivity / DirectAdjoint")


def part_likelihood(run, rounds):
    problem, _, _, _, _ = workflows()["Lotka-Volterra"]
    ts = jnp.linspace(0.0, 10.0, 21)
    rng = np.random.default_rng(0)
    data = jnp.asarray(np.exp(rng.normal(0, 0.1, (21, 2))) * 2.0)

    def loglik(ys, sigma=0.25):
        return jnp.sum(jax.scipy.stats.norm.logpdf(jnp.log(data), jnp.log(ys), sigma))

    def raw(theta):
        ys = diffrax.diffeqsolve(
            diffrax.ODETerm(lotka_volterra), diffrax.Tsit5(), 0.0, 10.0, None,
            theta[:2], theta[2:], saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-6),
            adjoint=diffrax.RecursiveCheckpointAdjoint(), max_steps=4096).ys
        return loglik(ys)

    def pysciml(theta):
        ys = ps.solve(problem, theta[:2], theta[2:], saveat=ts, rtol=1e-6,
                      atol=1e-6).ys
        return loglik(ys)

    theta = jnp.array([1.0, 1.0, 1.5, 1.0, 3.0, 1.0])
    raw_vg = jax.jit(jax.value_and_grad(raw))
    ps_vg = jax.jit(jax.value_and_grad(pysciml))
    timing = run.add("likelihood", compare({
        "raw RecursiveCheckpointAdjoint": lambda: jax.block_until_ready(raw_vg(theta)),
        "pysciml sensitivity=None": lambda: jax.block_until_ready(ps_vg(theta)),
    }, rounds=rounds, target_s=0.05))
    run.figure("21-point log-normal LV likelihood, value and gradient (diffrax)",
               timing.ratios("pysciml sensitivity=None",
                             "raw RecursiveCheckpointAdjoint"),
               anchor="raw diffrax RecursiveCheckpointAdjoint + jax.value_and_grad "
                      "(same run)",
               what="pysciml / raw", goal="<= 0.5")


def main():
    parser = argparse.ArgumentParser()
    add_rounds_arguments(parser, default=21, quick=5)
    parser.add_argument("--part", default="all",
                        choices=["all", "workflows", "scipy", "diffrax", "likelihood"])
    args = parser.parse_args()
    rounds = rounds_of(args)
    run = Run("forward_mode")
    parts = {"workflows": part_workflows, "scipy": part_scipy_lv,
             "diffrax": part_diffrax, "likelihood": part_likelihood}
    for name, part in parts.items():
        if args.part in ("all", name):
            print(f"\n## {name}", flush=True)
            part(run, rounds)
    run.footer()


if __name__ == "__main__":
    main()

"""Overhead of `pysciml.solve(..., backend="diffrax")` over hand-written raw Diffrax
doing the same work. Goal: pysciml median / raw-diffrax median <= 1.05 for each case.

    .venv/bin/python benchmarks/overhead.py            # all cases, full repeats
    .venv/bin/python benchmarks/overhead.py --quick    # a smoke run (15 rounds)
    .venv/bin/python benchmarks/overhead.py --rounds 201
    .venv/bin/python benchmarks/overhead.py --part lv  # Lotka--Volterra only (float64)
    .venv/bin/python benchmarks/overhead.py --part nn  # neural ODE step only (float32)

Cases:

- Lotka--Volterra, float64 (x64 on), p = [1.5, 1, 3, 1], y0 = [1, 1], 100 save times on
  [0, 15], Tsit5, rtol = atol = 1e-8: the forward solve, and the gradient of
  sum(ys**2) with respect to p (discrete adjoint: RecursiveCheckpointAdjoint).
- One neural ODE training step, float32 (x64 off): MLP 2 -> 64 -> 64 -> 2 (softplus),
  vector field mlp(y), a batch of 32 initial conditions (vmap over y0), 100 save
  times on [0, 10], Tsit5, rtol = atol = 1e-4, MSE against fixed targets, one
  optax.adam step, under `eqx.filter_jit`.

Both sides are jitted and warmed up, every call ends in `block_until_ready`, and the
two sides are timed in interleaved rounds (see `_common.py`). Each figure is the
median and IQR over rounds of the paired ratio pysciml / raw Diffrax. The anchor does
the identical work (same solver, tolerances, adjoint), so each figure is pysciml's
overhead; it is not a comparison of solvers. The two parts need different x64
settings, so `--part all` (the default) runs each in a subprocess of its own and
records both in one JSON file under `out/bench/`.
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    Run,
    Timing,
    add_rounds_arguments,
    ms,
    ratio_cell,
    rounds_of,
)

GOAL = 1.05
ANCHOR = "raw diffrax"


# --------------------------------------------------------------------------------------
# Lotka--Volterra (float64)
# --------------------------------------------------------------------------------------


def part_lv(rounds: int) -> list[dict]:
    import jax

    jax.config.update("jax_enable_x64", True)
    import diffrax
    import jax.numpy as jnp
    import numpy as np
    from _common import compare

    import pysciml as ps

    def lotka_volterra(t, y, p):
        x, z = y[0], y[1]
        return jnp.stack([p[0] * x - p[1] * x * z, -p[2] * z + p[3] * x * z])

    y0 = jnp.array([1.0, 1.0])
    p = jnp.array([1.5, 1.0, 3.0, 1.0])
    ts = jnp.linspace(0.0, 15.0, 100)
    rtol = atol = 1e-8

    # The anchor: raw Diffrax, no pysciml.
    def raw_ys(y0, p, ts):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lotka_volterra),
            diffrax.Tsit5(),
            0.0,
            15.0,
            None,
            y0,
            p,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=4096,
            adjoint=diffrax.RecursiveCheckpointAdjoint(),
        )
        return sol.ys

    problem = ps.ODEProblem(lotka_volterra, 0.0, 15.0)

    def ps_ys(y0, p, ts):
        return ps.solve(
            problem,
            y0,
            p,
            saveat=ts,
            backend="diffrax",
            solver=ps.Tsit5(),
            rtol=rtol,
            atol=atol,
            sensitivity=ps.DiscreteAdjoint(),
        ).ys

    def loss(ys_fn):
        return lambda p, y0, ts: jnp.sum(ys_fn(y0, p, ts) ** 2)

    raw_fwd, ps_fwd = jax.jit(raw_ys), jax.jit(ps_ys)
    raw_grad, ps_grad = jax.jit(jax.grad(loss(raw_ys))), jax.jit(jax.grad(loss(ps_ys)))

    # Same work: same numbers, same dtype.
    a, b = raw_fwd(y0, p, ts), ps_fwd(y0, p, ts)
    assert a.dtype == b.dtype == jnp.float64, (a.dtype, b.dtype)
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, atol=1e-12)
    ga, gb = raw_grad(p, y0, ts), ps_grad(p, y0, ts)
    np.testing.assert_allclose(np.asarray(gb), np.asarray(ga), rtol=1e-10, atol=1e-10)

    groups = {}
    for case, raw, mine, fargs in [
        ("Lotka-Volterra forward (f64, 100 saves, 1e-8)", raw_fwd, ps_fwd, (y0, p, ts)),
        (
            "Lotka-Volterra grad wrt p (f64, 100 saves, 1e-8)",
            raw_grad,
            ps_grad,
            (p, y0, ts),
        ),
    ]:
        groups[case] = compare(
            {
                ANCHOR: lambda raw=raw, fargs=fargs: jax.block_until_ready(
                    raw(*fargs)
                ),
                "pysciml": lambda mine=mine, fargs=fargs: jax.block_until_ready(
                    mine(*fargs)
                ),
            },
            rounds=rounds,
        )
    return groups


# --------------------------------------------------------------------------------------
# Neural ODE training step (float32)
# --------------------------------------------------------------------------------------


def nn_setup(batch: int = 32):
    """The neural ODE case, shared with `diagnose_nn.py`, `neural_ode.py` and `gpu.py`
    (which passes a larger `batch`). Call with x64 off."""
    import types

    import diffrax
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import scipy.linalg

    import pysciml as ps

    assert not jax.config.jax_enable_x64, "the neural ODE case runs in float32"
    f32 = jnp.float32
    rtol = atol = 1e-4
    nsave, t1 = 100, 10.0

    mlp = eqx.nn.MLP(
        2, 2, 64, depth=2, activation=jax.nn.softplus, key=jax.random.PRNGKey(0)
    )
    # Targets: a damped spiral, y(t) = expm(A t) y0.
    A = np.array([[-0.1, 2.0], [-2.0, -0.1]])
    # An untrained MLP gives a near-still field that a solve crosses in ~5 steps; so
    # first fit the MLP pointwise (no ODE) to y -> Ay. The solves then take ~20-30
    # steps, as in the middle of training. Identical for both sides.
    mlp = _prefit(mlp, jnp.asarray(A, f32), steps=1000)
    y0s = jax.random.uniform(jax.random.PRNGKey(1), (batch, 2), f32, -2.0, 2.0)
    ts = jnp.linspace(0.0, t1, nsave, dtype=f32)
    props = np.stack([scipy.linalg.expm(A * t) for t in np.asarray(ts, np.float64)])
    targets = jnp.asarray(np.einsum("tij,bj->bti", props, np.asarray(y0s)), f32)

    def field(t, y, model):
        return model(y)

    def raw_solve(vector_field, y0, args):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(vector_field),
            diffrax.Tsit5(),
            0.0,
            t1,
            None,
            y0,
            args,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=4096,
            adjoint=diffrax.RecursiveCheckpointAdjoint(),
        )

    steps = int(raw_solve(field, y0s[0], mlp).stats["num_accepted_steps"])

    # The anchor: raw Diffrax, no pysciml.
    def raw_one(model, y0):
        return raw_solve(field, y0, model).ys

    problem = ps.ODEProblem(field, 0.0, t1)

    def ps_one(model, y0, backend="diffrax"):
        return ps.solve(
            problem,
            y0,
            model,
            saveat=ts,
            backend=backend,
            solver=ps.Tsit5(),
            rtol=rtol,
            atol=atol,
            sensitivity=ps.DiscreteAdjoint(),
        ).ys

    optim = optax.adam(1e-3)
    opt_state = optim.init(eqx.filter(mlp, eqx.is_inexact_array))

    def make_step(one):
        def loss_fn(model, y0s, targets):
            ys = jax.vmap(one, in_axes=(None, 0))(model, y0s)
            return jnp.mean((ys - targets) ** 2), ys

        @eqx.filter_jit
        def step(model, opt_state, y0s, targets):
            (loss, ys), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(
                model, y0s, targets
            )
            updates, opt_state = optim.update(
                grads, opt_state, eqx.filter(model, eqx.is_inexact_array)
            )
            model = eqx.apply_updates(model, updates)
            return model, opt_state, loss, ys

        return step

    return types.SimpleNamespace(**locals())


def check_same_step(ra, rb):
    """Two results of a train step: float32, and the same numbers."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    for leaf in jax.tree.leaves(eqx.filter((ra, rb), eqx.is_inexact_array)):
        assert leaf.dtype == jnp.float32, leaf.dtype
    np.testing.assert_allclose(float(rb[2]), float(ra[2]), rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(rb[3]), np.asarray(ra[3]), rtol=1e-4, atol=1e-5
    )
    for la, lb in zip(
        jax.tree.leaves(eqx.filter(ra[0], eqx.is_inexact_array)),
        jax.tree.leaves(eqx.filter(rb[0], eqx.is_inexact_array)),
    ):
        np.testing.assert_allclose(np.asarray(lb), np.asarray(la), rtol=1e-4, atol=1e-6)


def part_nn(rounds: int) -> list[dict]:
    import jax

    jax.config.update("jax_enable_x64", False)
    from _common import compare

    s = nn_setup()
    mlp, opt_state, y0s, targets = s.mlp, s.opt_state, s.y0s, s.targets
    raw_step, ps_step = s.make_step(s.raw_one), s.make_step(s.ps_one)

    # Same work, really in float32 on both sides.
    check_same_step(
        raw_step(mlp, opt_state, y0s, targets), ps_step(mlp, opt_state, y0s, targets)
    )

    # Every call does identical work: the same model and optimiser state each time
    # (feeding the update back would change the number of solver steps).
    t = compare(
        {
            ANCHOR: lambda: jax.block_until_ready(
                raw_step(mlp, opt_state, y0s, targets)
            ),
            "pysciml": lambda: jax.block_until_ready(
                ps_step(mlp, opt_state, y0s, targets)
            ),
        },
        rounds=rounds,
        target_s=0.0,
    )
    case = (
        "Neural ODE train step (f32, MLP 2-64-64-2, batch 32, 100 saves, 1e-4; "
        f"{s.steps} steps for y0s[0])"
    )
    return {case: t}


def _prefit(mlp, A, steps):
    """Fits `mlp(y)` to `A @ y` on random points of [-2.5, 2.5]^2 by adam."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    optim = optax.adam(3e-3)
    state = optim.init(eqx.filter(mlp, eqx.is_inexact_array))

    @eqx.filter_jit
    def fit(model, state, key):
        y = jax.random.uniform(key, (256, 2), A.dtype, -2.5, 2.5)
        grads = eqx.filter_grad(lambda m: jnp.mean((jax.vmap(m)(y) - y @ A.T) ** 2))(
            model
        )
        updates, state = optim.update(
            grads, state, eqx.filter(model, eqx.is_inexact_array)
        )
        return eqx.apply_updates(model, updates), state

    for key in jax.random.split(jax.random.PRNGKey(3), steps):
        mlp, state = fit(mlp, state, key)
    return mlp


# --------------------------------------------------------------------------------------


def report(run, groups: dict) -> None:
    print(
        "\nOverhead of pysciml (backend='diffrax') over raw Diffrax doing the same "
        "work; paired ratio = pysciml / raw in the same round, median [IQR].\n"
    )
    print("| case | raw diffrax (ms) | pysciml (ms) | paired ratio [IQR] | rounds |")
    print("|---|---:|---:|---:|---:|")
    for case, t in groups.items():
        r = t.paired("pysciml", ANCHOR)
        print(
            f"| {case} | {ms(t.median(ANCHOR))} | {ms(t.median('pysciml'))} | "
            f"{ratio_cell(r)} | {r.n} |"
        )
    print()
    for case, t in groups.items():
        run.figure(
            case,
            t.ratios("pysciml", ANCHOR),
            anchor=f"{ANCHOR} (identical work)",
            what="pysciml / raw",
            goal=f"<= {GOAL}",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_rounds_arguments(parser, default=101, quick=15)
    parser.add_argument("--part", choices=["all", "lv", "nn"], default="all")
    parser.add_argument(
        "--json", action="store_true", help="print the rounds as JSON (internal)"
    )
    args = parser.parse_args()
    rounds = rounds_of(args)

    if args.json:  # a child of `--part all`: rounds to the parent, no record of its own
        groups = part_lv(rounds) if args.part == "lv" else part_nn(rounds)
        print(json.dumps({k: t.to_json() for k, t in groups.items()}))
        return
    run = Run("overhead")
    if args.part == "all":
        groups = {}
        for part in ("lv", "nn"):
            cmd = [sys.executable, os.path.abspath(__file__), "--part", part, "--json"]
            cmd += ["--rounds", str(rounds)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
            for k, d in json.loads(out.stdout.strip().splitlines()[-1]).items():
                groups[k] = Timing.from_json(d)
    else:
        groups = part_lv(rounds) if args.part == "lv" else part_nn(rounds)
    for k, t in groups.items():
        run.add(k, t)
    report(run, groups)
    run.footer()


if __name__ == "__main__":
    main()

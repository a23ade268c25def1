"""Neural ODE training step: pysciml against raw diffrax + equinox + optax.

    .venv/bin/python benchmarks/neural_ode.py            # 41 rounds (SciPy: 5)
    .venv/bin/python benchmarks/neural_ode.py --quick    # a smoke run: 11 rounds (SciPy: 3)

One step = forward, gradient and Adam update for an MLP 2→64→64→2 field, batch 32,
100 save times on [0, 10], float32, rtol = atol = 1e-4 (the setting of
`overhead.py --part nn`, whose `nn_setup` this reuses). Figures, as paired ratios over
interleaved rounds (median and IQR): pysciml on the Diffrax backend against the raw
anchor doing identical work (goal ≤ 1.05), and the SciPy backend's step against the
same anchor, in rounds of their own. The GPU figure (batch 1024) is `gpu.py`'s, on a
lent GPU machine.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    Run,
    add_rounds_arguments,
    compare,
    ms,
    ratio_cell,
    rounds_of,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_rounds_arguments(parser, default=41, quick=11)
    parser.add_argument("--scipy-rounds", type=int, default=None,
                        help="rounds of the SciPy comparison (default 5; --quick: 3)")
    args = parser.parse_args()

    import jax

    jax.config.update("jax_enable_x64", False)
    import equinox as eqx
    import jax.numpy as jnp
    from overhead import check_same_step, nn_setup

    import pysciml as ps

    run = Run("neural_ode")
    s = nn_setup()
    raw_step, ps_step = s.make_step(s.raw_one), s.make_step(s.ps_one)

    def scipy_one(model, y0):
        return ps.solve(s.problem, y0, model, saveat=s.ts, backend="scipy",
                        solver=ps.Dopri5(), rtol=s.rtol, atol=s.atol).ys

    scipy_step = s.make_step(scipy_one)

    # The same, item by item (the pre-stacking path), for the batched alternative.
    loop_backend = ps.ScipyBackend(batch_mode="loop")

    def loop_one(model, y0):
        return ps.solve(s.problem, y0, model, saveat=s.ts, backend=loop_backend,
                        solver=ps.Dopri5(), rtol=s.rtol, atol=s.atol).ys

    loop_step = s.make_step(loop_one)
    inputs = (s.mlp, s.opt_state, s.y0s, s.targets)
    ra, rb = raw_step(*inputs), ps_step(*inputs)
    check_same_step(ra, rb)
    rc = scipy_step(*inputs)
    # Different method (RK45 vs Tsit5) and steps at rtol 1e-4: the same loss to a few
    # percent. (The float64 reference loss is 7.716e-4; raw Diffrax gives 7.92e-4, 2.7%
    # off, and the stacked SciPy batch 7.73e-4: `accuracy` below compares each item.)
    assert abs(float(rc[2]) / float(ra[2]) - 1) < 5e-2, (float(rc[2]), float(ra[2]))

    def block(step):
        return lambda: jax.block_until_ready(step(*inputs))

    rounds = rounds_of(args)
    scipy_rounds = args.scipy_rounds or (3 if args.quick else 5)
    t = run.add("diffrax backend", compare(
        {"raw diffrax": block(raw_step), "pysciml diffrax": block(ps_step)},
        rounds=rounds))
    t2 = run.add("scipy backend", compare(
        {"raw diffrax": block(raw_step), "pysciml scipy": block(scipy_step),
         "pysciml scipy loop": block(loop_step)},
        rounds=scipy_rounds, warmup=1, target_s=0.0))
    print(f"\nNeural ODE train step (f32, MLP 2-64-64-2, batch 32, 100 saves, 1e-4; "
          f"{s.steps} steps for y0s[0]); paired ratios over interleaved rounds, median "
          "[IQR].\n")
    print("| backend | raw diffrax (ms) | pysciml (ms) | paired ratio [IQR] | rounds |")
    print("|---|---:|---:|---:|---:|")
    for tt, name, digits in ((t, "pysciml diffrax", 3), (t2, "pysciml scipy", 1),
                             (t2, "pysciml scipy loop", 1)):
        r = tt.paired(name, "raw diffrax")
        print(f"| {name} | {ms(tt.median('raw diffrax'))} | {ms(tt.median(name))} | "
              f"{ratio_cell(r, digits)} | {r.n} |")
    print()
    run.figure("neural ODE train step, pysciml diffrax vs raw diffrax",
               t.ratios("pysciml diffrax", "raw diffrax"),
               anchor="raw diffrax + equinox + optax (identical work)",
               what="pysciml / raw", goal="<= 1.05")
    run.figure("neural ODE train step, pysciml scipy (RK45, InterpolatingAdjoint, "
               "stacked batch, native rhs) vs raw diffrax Tsit5",
               t2.ratios("pysciml scipy", "raw diffrax"),
               anchor="raw diffrax + equinox + optax (Tsit5)",
               what="pysciml / raw", goal="<= 20", digits=1)
    run.figure("neural ODE train step, pysciml scipy item by item (batch_mode='loop') "
               "vs raw diffrax Tsit5", t2.ratios("pysciml scipy loop", "raw diffrax"),
               anchor="raw diffrax + equinox + optax (Tsit5)",
               what="pysciml / raw", digits=1)
    run.figure("neural ODE train step, SciPy stacked batch vs item by item",
               t2.ratios("pysciml scipy", "pysciml scipy loop"),
               anchor="pysciml scipy, batch_mode='loop'", what="stacked / loop")
    accuracy(s, ps, {"stacked": scipy_one, "loop": loop_one})
    if jax.default_backend() == "gpu":
        print("\n(GPU present: `benchmarks/gpu.py` times this step at batch 1024.)")
    else:
        print(f"\nGPU figure skipped: JAX runs on {jax.default_backend()!r} here.")
    run.footer()
    del eqx, jnp


def accuracy(s, ps, ones):
    """Per-item error of the states and the loss gradient against a float64 Diffrax
    reference at rtol = atol = 1e-10 (not timed): the stacked batch must keep each
    item's accuracy."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    def loss_of(one):
        def loss(model, y0s, targets):
            ys = jax.vmap(one, in_axes=(None, 0))(model, y0s)
            return jnp.mean((ys - targets) ** 2), ys
        return eqx.filter_jit(eqx.filter_value_and_grad(loss, has_aux=True))

    results = {k: loss_of(one)(s.mlp, s.y0s, s.targets) for k, one in ones.items()}
    with jax.enable_x64(True):
        f64 = lambda x: jnp.asarray(x, jnp.float64)  # noqa: E731
        model = jax.tree.map(lambda x: f64(x) if eqx.is_inexact_array(x) else x, s.mlp)
        ts64 = f64(s.ts)

        def ref_one(m, y0):
            return ps.solve(s.problem, y0, m, saveat=ts64, backend="diffrax",
                            rtol=1e-10, atol=1e-10, max_steps=100_000).ys

        (_, ys_ref), g_ref = loss_of(ref_one)(model, f64(s.y0s), f64(s.targets))
        g_ref = jax.tree.leaves(eqx.filter(g_ref, eqx.is_inexact_array))
        print("\n| batch | largest item error (states) | median item error | "
              "gradient error (max rel.) |")
        print("|---|---:|---:|---:|")
        for k, ((_, ys), g) in results.items():
            err = np.abs(np.asarray(ys, np.float64) - np.asarray(ys_ref))
            per_item = err.reshape(err.shape[0], -1).max(axis=1)
            leaves = jax.tree.leaves(eqx.filter(g, eqx.is_inexact_array))
            g_err = max(float(np.abs(np.asarray(a, np.float64) - np.asarray(b)).max()
                              / np.abs(np.asarray(b)).max())
                        for a, b in zip(leaves, g_ref))
            print(f"| {k} | {per_item.max():.2e} | {np.median(per_item):.2e} | "
                  f"{g_err:.2e} |")


if __name__ == "__main__":
    main()

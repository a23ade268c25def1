"""Neural ODE training step: pysciml against raw diffrax + equinox + optax.

    .venv/bin/python benchmarks/neural_ode.py            # 41 rounds (SciPy: 5)
    .venv/bin/python benchmarks/neural_ode.py --quick    # a smoke run: 11 rounds (SciPy: 3)

One step = forward, gradient and Adam update for an MLP 2→64→64→2 field, batch 32,
100 save times on [0, 10], float32, rtol = atol = 1e-4 (the setting of
`overhead.py --part nn`, whose `nn_setup` this reuses). Figures, as paired ratios over
interleaved rounds (median and IQR): pysciml on the Diffrax backend against the raw
anchor doing identical work (goal ≤ 1.05), and the SciPy backend's step against the
same anchor, in rounds of their own. A GPU figure (batch 1024) needs a lent GPU machine; on CPU this script
says so and skips it.
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
    inputs = (s.mlp, s.opt_state, s.y0s, s.targets)
    ra, rb = raw_step(*inputs), ps_step(*inputs)
    check_same_step(ra, rb)
    rc = scipy_step(*inputs)
    # Different method (RK45 vs Tsit5) at rtol 1e-4: same loss to ~1e-3.
    assert abs(float(rc[2]) / float(ra[2]) - 1) < 1e-2, (float(rc[2]), float(ra[2]))

    def block(step):
        return lambda: jax.block_until_ready(step(*inputs))

    rounds = rounds_of(args)
    scipy_rounds = args.scipy_rounds or (3 if args.quick else 5)
    t = run.add("diffrax backend", compare(
        {"raw diffrax": block(raw_step), "pysciml diffrax": block(ps_step)},
        rounds=rounds))
    t2 = run.add("scipy backend", compare(
        {"raw diffrax": block(raw_step), "pysciml scipy": block(scipy_step)},
        rounds=scipy_rounds, warmup=1, target_s=0.0))
    print(f"\nNeural ODE train step (f32, MLP 2-64-64-2, batch 32, 100 saves, 1e-4; "
          f"{s.steps} steps for y0s[0]); paired ratios over interleaved rounds, median "
          "[IQR].\n")
    print("| backend | raw diffrax (ms) | pysciml (ms) | paired ratio [IQR] | rounds |")
    print("|---|---:|---:|---:|---:|")
    for tt, name, digits in ((t, "pysciml diffrax", 3), (t2, "pysciml scipy", 1)):
        r = tt.paired(name, "raw diffrax")
        print(f"| {name} | {ms(tt.median('raw diffrax'))} | {ms(tt.median(name))} | "
              f"{ratio_cell(r, digits)} | {r.n} |")
    print()
    run.figure("neural ODE train step, pysciml diffrax vs raw diffrax",
               t.ratios("pysciml diffrax", "raw diffrax"),
               anchor="raw diffrax + equinox + optax (identical work)",
               what="pysciml / raw", goal="<= 1.05")
    run.figure("neural ODE train step, pysciml scipy (RK45, InterpolatingAdjoint) vs "
               "raw diffrax Tsit5", t2.ratios("pysciml scipy", "raw diffrax"),
               anchor="raw diffrax + equinox + optax (Tsit5)",
               what="pysciml / raw", digits=1)
    if jax.default_backend() == "gpu":
        print("\n(GPU present: run with a batch of 1024 by editing `batch` in "
              "overhead.nn_setup.)")
    else:
        print(f"\nGPU figure skipped: JAX runs on {jax.default_backend()!r} here.")
    run.footer()
    del eqx, jnp


if __name__ == "__main__":
    main()

"""Neural ODE training step: pysciml against raw diffrax + equinox + optax.

    .venv/bin/python benchmarks/neural_ode.py [--quick]

One step = forward, gradient and Adam update for an MLP 2→64→64→2 field, batch 32,
100 save times on [0, 10], float32, rtol = atol = 1e-4 (the setting of
`overhead.py --part nn`, whose `nn_setup` this reuses). Figures: pysciml on the Diffrax
backend against the raw anchor (goal ≤ 1.05), and the SciPy backend's step time against
the same anchor. A GPU figure (batch 1024) needs a lent GPU machine; on CPU this script
says so and skips it.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    import jax

    jax.config.update("jax_enable_x64", False)
    import equinox as eqx
    import jax.numpy as jnp
    from _common import compare, met, ms
    from overhead import check_same_step, nn_setup

    import pysciml as ps

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

    rounds = 11 if args.quick else 41
    t = compare({"raw": block(raw_step), "pysciml": block(ps_step)}, rounds=rounds)
    ratio = t["pysciml"]["median"] / t["raw"]["median"]
    t2 = compare({"raw": block(raw_step), "scipy": block(scipy_step)},
                 rounds=3 if args.quick else 5, warmup=1, target_s=0.0)
    print(f"\nNeural ODE train step (f32, MLP 2-64-64-2, batch 32, 100 saves, 1e-4; "
          f"{s.steps} steps for y0s[0]); median of interleaved rounds.\n")
    print("| backend | raw diffrax (ms) | pysciml (ms) | ratio | goal |")
    print("|---|---:|---:|---:|---|")
    print(f"| diffrax | {ms(t['raw']['median'])} | {ms(t['pysciml']['median'])} | "
          f"{ratio:.3f} | <= 1.05: {met(ratio, 1.05)} |")
    r2 = t2["scipy"]["median"] / t2["raw"]["median"]
    print(f"| scipy (RK45, InterpolatingAdjoint) | {ms(t2['raw']['median'])} | "
          f"{ms(t2['scipy']['median'])} | {r2:.1f} | - |")
    if jax.default_backend() == "gpu":
        print("\n(GPU present: run with a batch of 1024 by editing `batch` in "
              "overhead.nn_setup.)")
    else:
        print(f"\nGPU figure skipped: JAX runs on {jax.default_backend()!r} here.")
    del eqx, jnp


if __name__ == "__main__":
    main()

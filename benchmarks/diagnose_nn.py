"""Where the neural ODE overhead of `overhead.py` comes from: the train step of
`overhead.py --part nn`, in variants that each add or remove one thing that pysciml
does. A diagnostic, not a benchmark with a goal.

    .venv/bin/python benchmarks/diagnose_nn.py            # 31 rounds
    .venv/bin/python benchmarks/diagnose_nn.py --quick    # a smoke run: 7 rounds

Variants (all float32, identical numbers; paired ratios against raw Diffrax over
interleaved rounds, median and IQR):

- raw diffrax: the anchor of `overhead.py`.
- raw, params flat, unflattened in the field: the MLP's parameters flattened to one
  vector (pysciml's `FlatSpec`) and unflattened at every vector-field evaluation,
  as `FlatVectorField` does.
- raw, params flat, unflattened once: the same vector, unflattened once before
  `diffeqsolve`, which then sees the parameter pytree.
- raw in a custom_vjp: raw Diffrax (pytree params) inside a `jax.custom_vjp` whose
  forward saves Diffrax's VJP closure, as `solve`'s `_solve_flat` does.
- pysciml: `ps.solve(backend="diffrax")`, which unflattens `p` once outside
  `diffeqsolve` since commit 8c1278e (this script's former "prototype" variant, a copy
  of that code, was removed when it became the backend's own).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)

import equinox as eqx  # noqa: E402
from _common import (  # noqa: E402
    Run,
    add_rounds_arguments,
    compare,
    ratio_cell,
    rounds_of,
)
from overhead import check_same_step, nn_setup  # noqa: E402

from pysciml._flatten import spec_of, split_args  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_rounds_arguments(parser, default=31, quick=7)
    args = parser.parse_args()
    rounds = rounds_of(args)

    run = Run("diagnose_nn")
    s = nn_setup()
    dynamic, static = split_args(s.mlp)
    p_spec = spec_of(dynamic)

    def flat_params(model):
        return p_spec.flatten(eqx.filter(model, eqx.is_inexact_array))

    def rebuild(p):
        return eqx.combine(p_spec.unflatten(p), static.tree)

    def flat_inside(model, y0):
        return s.raw_solve(lambda t, y, p: rebuild(p)(y), y0, flat_params(model)).ys

    def flat_once(model, y0):
        return s.raw_solve(s.field, y0, rebuild(flat_params(model))).ys

    def _solve_params(params, y0):
        return s.raw_solve(s.field, y0, eqx.combine(params, static.tree)).ys

    _cv = jax.custom_vjp(_solve_params)

    def _cv_fwd(params, y0):
        return jax.vjp(_solve_params, params, y0)

    def _cv_bwd(vjp_fn, ct):
        return vjp_fn(ct)

    _cv.defvjp(_cv_fwd, _cv_bwd)

    def custom_vjp(model, y0):
        return _cv(eqx.filter(model, eqx.is_inexact_array), y0)

    variants = {
        "raw diffrax": s.raw_one,
        "raw, params flat, unflattened in the field": flat_inside,
        "raw, params flat, unflattened once": flat_once,
        "raw in a custom_vjp (like solve)": custom_vjp,
        "pysciml": s.ps_one,
    }
    steps = {name: s.make_step(one) for name, one in variants.items()}
    fargs = (s.mlp, s.opt_state, s.y0s, s.targets)
    ref = steps["raw diffrax"](*fargs)
    for step in steps.values():
        check_same_step(ref, step(*fargs))

    t = run.add(
        "train step variants",
        compare(
            {
                name: (lambda step=step: jax.block_until_ready(step(*fargs)))
                for name, step in steps.items()
            },
            rounds=rounds,
            target_s=0.0,
        ),
    )
    print(
        f"\nNeural ODE train step ({s.steps} solver steps for y0s[0]), variants; paired "
        f"ratio to raw diffrax over {rounds} interleaved rounds, median [IQR].\n"
    )
    print("| variant | ms (median) | paired ratio to raw [IQR] |")
    print("|---|---:|---:|")
    for name in t.names:
        print(
            f"| {name} | {1e3 * t.median(name):.2f} | "
            f"{ratio_cell(t.paired(name, 'raw diffrax'))} |"
        )
    print()
    for name in t.names[1:]:
        run.figure(
            f"diagnostic, neural ODE train step: {name}",
            t.ratios(name, "raw diffrax"),
            anchor="raw diffrax (identical work)",
            what="variant / raw",
        )
    run.footer()


if __name__ == "__main__":
    main()

"""NumPyro NUTS wall time on the `examples/lotka_volterra_nuts.py` model: pysciml
(`backend="diffrax"`, and `backend="scipy"`) against the same model written with raw
Diffrax. Goal: the median over rounds of the paired ratio pysciml-diffrax / raw
Diffrax <= 1.05.

    .venv/bin/python benchmarks/nuts.py                  # 1000 + 1000, 7 rounds, SciPy in 1
    .venv/bin/python benchmarks/nuts.py --rounds 5 --scipy-rounds 0
    .venv/bin/python benchmarks/nuts.py --quick          # a smoke run: 100 + 100, 2 rounds

The model (`make_model` of the example, with no failure counter): rates alpha, beta,
gamma, delta ~ LogNormal(0, 1), sigma ~ LogNormal(-1, 1), obs ~ LogNormal(log y,
sigma) at 20 times on (0, 5], both species; NUTS with a dense mass matrix, started at
the prior median, 1 chain, 1000 warm-up + 1000 samples, the same seeds on every side.

The anchor is the same model by hand, with no pysciml call in it: `diffrax.diffeqsolve`
with `Tsit5`, `PIDController(rtol=1e-6, atol=1e-8)`, `max_steps=4096`,
`RecursiveCheckpointAdjoint`, `throw=False`, and NaN wherever the solve did not succeed
or the rates are not finite (pysciml's `throw=False` handling). Before any timing the
script checks that the two Diffrax models give the same draws on a short chain.

Each sample is one whole `MCMC.run` (warm-up and sampling; a fresh `MCMC` object, so
each run compiles its own sampler, as a user's script does), timed in interleaved
rounds in alternating order (`_common.compare`). The SciPy side (minutes per run) runs
only in the first `--scipy-rounds` rounds, each paired with the anchor of its round.
"XLA compile" is the sum of JAX's `backend_compile_duration` events inside a run.
"""

import argparse
import importlib.util
import os
import statistics
import sys
import time

# This directory's `_common.py` under another name: the example imports its own
# `_common` (examples/_common.py).
_HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "bench_common", os.path.join(_HERE, "_common.py"))
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_common"] = bench
_spec.loader.exec_module(bench)

# The example script (and its own `_common`, for `from _common import ...`).
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "examples"))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import lotka_volterra_nuts as example  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS, init_to_median  # noqa: E402

import pysciml as ps  # noqa: E402

GOAL = 1.05
ANCHOR = "raw diffrax"
RTOL, ATOL, MAX_STEPS = 1e-6, 1e-8, 4096
NUM_OBS, T1 = 20, 5.0


# --------------------------------------------------------------------------------------
# The anchor: the example's model by hand, raw Diffrax (no pysciml).
# --------------------------------------------------------------------------------------


def raw_lotka_volterra(t, y, p):
    x, z = y[0], y[1]
    alpha, beta, gamma, delta = p[0], p[1], p[2], p[3]
    return jnp.stack([alpha * x - beta * x * z, -gamma * z + delta * x * z])


def raw_model(ts, y0, obs=None):
    rates = [numpyro.sample(name, dist.LogNormal(0.0, 1.0))
             for name in ("alpha", "beta", "gamma", "delta")]
    sigma = numpyro.sample("sigma", dist.LogNormal(-1.0, 1.0))
    p = jnp.stack(rates)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(raw_lotka_volterra),
        diffrax.Tsit5(),
        0.0,
        T1,
        None,
        y0,
        p,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
        max_steps=MAX_STEPS,
        adjoint=diffrax.RecursiveCheckpointAdjoint(),
        throw=False,
    )
    ok = (sol.result == diffrax.RESULTS.successful) & jnp.all(jnp.isfinite(p))
    ys = jnp.where(ok, sol.ys, jnp.nan)
    numpyro.sample("obs", dist.LogNormal(jnp.log(ys), sigma), obs=obs)


# --------------------------------------------------------------------------------------


_COMPILE_S = [0.0]


def _on_event(event, duration, **kwargs):
    # XLA compilation only: not nested (unlike tracing), so the sum is exact.
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILE_S[0] += duration


jax.monitoring.register_event_duration_secs_listener(_on_event)


def one_run(model, data, num_warmup, num_samples, seed=1):
    """One whole NUTS run as the example makes it; returns (seconds, seconds of XLA
    compilation within them, samples)."""
    kernel = NUTS(model, dense_mass=True, init_strategy=init_to_median)
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples,
                progress_bar=False)
    c0 = _COMPILE_S[0]
    t = time.perf_counter()
    mcmc.run(jax.random.key(seed), *data, extra_fields=("num_steps",))
    samples = jax.block_until_ready(mcmc.get_samples())
    dt = time.perf_counter() - t
    samples = {k: np.asarray(v) for k, v in samples.items()}
    samples["num_steps"] = np.asarray(mcmc.get_extra_fields()["num_steps"])
    return dt, _COMPILE_S[0] - c0, samples


def max_diff(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in example.NAMES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-warmup", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--rounds", "--repeats", type=int, default=None,
                        help="interleaved rounds of the two Diffrax sides (default 7; "
                        "--quick: 2)")
    parser.add_argument("--scipy-rounds", "--scipy-repeats", type=int, default=None,
                        help="the SciPy side runs in the first this many rounds "
                        "(default 1; --quick: 0)")
    parser.add_argument("--check-samples", type=int, default=None,
                        help="warm-up and samples of the same-draws check (default "
                        "200; --quick: 50)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 100 + 100, 2 rounds, no SciPy side")
    args = parser.parse_args()
    quick = args.quick
    if quick and "--num-warmup" not in sys.argv:
        args.num_warmup = 100
    if quick and "--num-samples" not in sys.argv:
        args.num_samples = 100
    rounds = args.rounds or (2 if quick else 7)
    scipy_rounds = min(rounds, args.scipy_rounds if args.scipy_rounds is not None
                       else (0 if quick else 1))
    check_n = args.check_samples or (50 if quick else 200)
    run = bench.Run("nuts")

    ts, y0, obs, _ = example.synthetic_data(
        jax.random.split(jax.random.key(0))[0], NUM_OBS, T1, "diffrax", rtol=RTOL,
        atol=ATOL)
    data = (ts, y0, obs)
    sides = {
        ANCHOR: raw_model,
        # The overhead figure: identical work, so the same adjoint as the anchor.
        "pysciml diffrax": example.make_model("diffrax", t1=T1, rtol=RTOL, atol=ATOL,
                                              max_steps=MAX_STEPS,
                                              sensitivity=ps.DiscreteAdjoint()),
        # What a user gets with `sensitivity=None`: forward sensitivities (6 inputs).
        "pysciml diffrax default": example.make_model("diffrax", t1=T1, rtol=RTOL,
                                                      atol=ATOL, max_steps=MAX_STEPS),
    }
    if scipy_rounds:
        sides["pysciml scipy"] = example.make_model("scipy", t1=T1, rtol=RTOL,
                                                    atol=ATOL, max_steps=MAX_STEPS)

    # Same work: the same draws on a short chain, before any timing.
    _, _, a = one_run(sides[ANCHOR], data, check_n, check_n)
    _, _, b = one_run(sides["pysciml diffrax"], data, check_n, check_n)
    d = max_diff(a, b)
    same_steps = bool(np.array_equal(a["num_steps"], b["num_steps"]))
    print(f"check ({check_n} warm-up + {check_n} samples): max |draw difference| = "
          f"{d:.3g}, identical leapfrog counts: {same_steps}", flush=True)
    assert d < 1e-6, d
    run.extra["same draws check"] = {"samples": check_n, "max_abs_draw_difference": d,
                                     "identical_leapfrog_counts": same_steps}

    compile_s = {k: [] for k in sides}
    last = {}

    def timed(name):
        def call():
            _, ct, last[name] = one_run(sides[name], data, args.num_warmup,
                                        args.num_samples)
            compile_s[name].append(ct)
            print(f"  {name}: {ct:.2f} s XLA compile", flush=True)
        return call

    t = bench.compare({name: timed(name) for name in sides}, rounds=rounds, warmup=0,
                      target_s=0.0, first_rounds={"pysciml scipy": scipy_rounds})
    # compile_s holds one entry per timed run, in the order of the rounds.
    comp = {k: iter(v) for k, v in compile_s.items()}
    compile_by_round = {k: [next(comp[k]) if x is not None else None
                            for x in t.samples[k]] for k in sides}
    run.add("NUTS runs", t, xla_compile_s=compile_by_round)
    full_diff = max_diff(last[ANCHOR], last["pysciml diffrax"])
    leap = {k: float(last[k]["num_steps"].mean()) for k in last}
    run.extra["mean leapfrog steps (last run)"] = leap
    run.extra["max |draw difference| between the Diffrax sides, last run"] = full_diff

    def minus_compile(name):
        return [None if x is None else x - c
                for x, c in zip(t.samples[name], compile_by_round[name])]

    print(f"\nNUTS, {args.num_warmup} warm-up + {args.num_samples} samples, 1 chain, "
          f"{rounds} interleaved rounds ({scipy_rounds} with the SciPy side); max |draw "
          f"difference| between the two Diffrax sides in the last full run: "
          f"{full_diff:.3g}\n")
    print("| side | runs | median (s) | min (s) | max (s) | paired ratio to anchor "
          "[IQR] | median XLA compile (s) | paired ratio of (run - compile) [IQR] | "
          "mean leapfrog steps |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    anchor_rest = minus_compile(ANCHOR)
    for name in sides:
        xs = [x for x in t.samples[name] if x is not None]
        rest = [a / b for a, b in zip(minus_compile(name), anchor_rest)
                if a is not None]
        cs = [c for c in compile_by_round[name] if c is not None]
        print(f"| {name} | {len(xs)} | {statistics.median(xs):.2f} | {min(xs):.2f} | "
              f"{max(xs):.2f} | {bench.ratio_cell(t.paired(name, ANCHOR))} | "
              f"{statistics.median(cs):.2f} | "
              f"{bench.ratio_cell(bench.summarize(rest))} | {leap[name]:.1f} |")
    print()
    run.figure("NUTS 1 chain, pysciml diffrax vs raw diffrax (whole MCMC.run)",
               t.ratios("pysciml diffrax", ANCHOR), anchor=f"{ANCHOR} (identical work)",
               what="pysciml / raw", goal=f"<= {GOAL}",
               note=f"{args.num_warmup} warm-up + {args.num_samples} samples")
    run.figure("NUTS 1 chain, pysciml diffrax sensitivity=None (forward "
               "sensitivities) vs raw diffrax RecursiveCheckpointAdjoint",
               t.ratios("pysciml diffrax default", ANCHOR), anchor=ANCHOR,
               what="pysciml / raw", goal="<= 0.5",
               note=f"{args.num_warmup} warm-up + {args.num_samples} samples")
    if scipy_rounds:
        run.figure("NUTS 1 chain, pysciml scipy (Dopri5 = RK45, sensitivity=None: "
                   "forward sensitivities) vs raw diffrax Tsit5",
                   t.ratios("pysciml scipy", ANCHOR), anchor=ANCHOR,
                   what="pysciml / raw", digits=1,
                   note=f"{args.num_warmup} warm-up + {args.num_samples} samples")
    run.footer()


if __name__ == "__main__":
    main()

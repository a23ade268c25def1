"""NumPyro NUTS wall time on the `examples/lotka_volterra_nuts.py` model: pysciml
(`backend="diffrax"`, and `backend="scipy"`) against the same model written with raw
Diffrax. Goal: pysciml-diffrax median / raw-diffrax median <= 1.05.

    .venv/bin/python benchmarks/nuts.py                       # 1000 + 1000, 3 repeats
    .venv/bin/python benchmarks/nuts.py --repeats 5 --scipy-repeats 0

The model (`make_model` of the example, with no failure counter): rates alpha, beta,
gamma, delta ~ LogNormal(0, 1), sigma ~ LogNormal(-1, 1), obs ~ LogNormal(log y,
sigma) at 20 times on (0, 5], both species; NUTS with a dense mass matrix, started at
the prior median, 1 chain, 1000 warm-up + 1000 samples, the same seeds on every side.

The anchor is the same model by hand, with no pysciml call in it: `diffrax.diffeqsolve`
with `Tsit5`, `PIDController(rtol=1e-6, atol=1e-8)`, `max_steps=4096`,
`RecursiveCheckpointAdjoint`, `throw=False`, and NaN wherever the solve did not succeed
or the rates are not finite (pysciml's `throw=False` handling). Before any timing the
script checks that the two Diffrax models give the same draws on a short chain.

Each timed figure is one whole `MCMC.run` (warm-up and sampling; a fresh `MCMC` object,
so each run compiles its own sampler, as a user's script does), rounds interleaved in
alternating order. The SciPy run is timed once (minutes) against the anchor's median.
"""

import argparse
import os
import statistics
import sys
import time

# The example script (and its own `_common`, for `from _common import ...`).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "examples"))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import lotka_volterra_nuts as example  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS, init_to_median  # noqa: E402

GOAL = 1.05


def met(ratio: float, goal: float) -> str:  # as in benchmarks/_common.py
    return "yes" if ratio <= goal else "**no**"

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


def run(model, data, num_warmup, num_samples, seed=1):
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
    parser.add_argument("--repeats", type=int, default=3, help="rounds per Diffrax side")
    parser.add_argument("--scipy-repeats", type=int, default=1)
    parser.add_argument("--check-samples", type=int, default=200,
                        help="warm-up and samples of the same-draws check")
    args = parser.parse_args()

    ts, y0, obs, _ = example.synthetic_data(
        jax.random.split(jax.random.key(0))[0], NUM_OBS, T1, "diffrax", rtol=RTOL,
        atol=ATOL)
    data = (ts, y0, obs)
    sides = {
        "raw diffrax (anchor)": raw_model,
        "pysciml diffrax": example.make_model("diffrax", t1=T1, rtol=RTOL, atol=ATOL,
                                              max_steps=MAX_STEPS),
    }

    # Same work: the same draws on a short chain, before any timing.
    n = args.check_samples
    _, _, a = run(sides["raw diffrax (anchor)"], data, n, n)
    _, _, b = run(sides["pysciml diffrax"], data, n, n)
    d = max_diff(a, b)
    same_steps = bool(np.array_equal(a["num_steps"], b["num_steps"]))
    print(f"check ({n} warm-up + {n} samples): max |draw difference| = {d:.3g}, "
          f"identical leapfrog counts: {same_steps}")
    assert d < 1e-6, d

    names = list(sides)
    times = {k: [] for k in names}
    compile_s = {k: [] for k in names}
    last = {}
    for r in range(args.repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            dt, ct, last[name] = run(sides[name], data, args.num_warmup,
                                     args.num_samples)
            times[name].append(dt)
            compile_s[name].append(ct)
            print(f"round {r}: {name}: {dt:.2f} s ({ct:.2f} s XLA compile)",
                  flush=True)
    full_diff = max_diff(last[names[0]], last[names[1]])

    anchor = statistics.median(times[names[0]])
    mine = statistics.median(times[names[1]])
    paired = statistics.median(m / a for m, a in zip(times[names[1]], times[names[0]]))
    leap = {k: float(last[k]["num_steps"].mean()) for k in names}

    scipy_times, scipy_compile = [], []
    for _ in range(args.scipy_repeats):
        dt, ct, s = run(example.make_model("scipy", t1=T1, rtol=RTOL, atol=ATOL,
                                           max_steps=MAX_STEPS), data,
                        args.num_warmup, args.num_samples)
        scipy_times.append(dt)
        scipy_compile.append(ct)
        leap["pysciml scipy"] = float(s["num_steps"].mean())
        print(f"pysciml scipy: {dt:.2f} s ({ct:.2f} s XLA compile)", flush=True)

    print(f"\nNUTS, {args.num_warmup} warm-up + {args.num_samples} samples, 1 chain, "
          f"{args.repeats} interleaved rounds per Diffrax side; max |draw difference| "
          f"between the two Diffrax sides in the last full run: {full_diff:.3g}\n")
    med = statistics.median
    run_minus = {k: [t - c for t, c in zip(times[k], compile_s[k])] for k in names}
    print("| side | runs | median (s) | min (s) | max (s) | ratio to anchor | "
          "paired ratio | median XLA compile (s) | median run - compile (s) | "
          "ratio of (run - compile) | mean leapfrog steps | goal met |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for name, ratio, pr in [(names[0], 1.0, 1.0), (names[1], mine / anchor, paired)]:
        rm = med(run_minus[name]) / med(run_minus[names[0]])
        print(f"| {name} | {len(times[name])} | {med(times[name]):.2f} | "
              f"{min(times[name]):.2f} | {max(times[name]):.2f} | {ratio:.3f} | "
              f"{pr:.3f} | {med(compile_s[name]):.2f} | {med(run_minus[name]):.2f} | "
              f"{rm:.3f} | {leap[name]:.1f} | "
              f"{'-' if name == names[0] else met(ratio, GOAL)} |")
    if scipy_times:
        s, c = med(scipy_times), med(scipy_compile)
        print(f"| pysciml scipy | {len(scipy_times)} | {s:.2f} | {min(scipy_times):.2f} "
              f"| {max(scipy_times):.2f} | {s / anchor:.2f} | - | {c:.2f} | "
              f"{s - c:.2f} | {(s - c) / med(run_minus[names[0]]):.2f} | "
              f"{leap['pysciml scipy']:.1f} | - |")

if __name__ == "__main__":
    main()

"""GPU benchmark: pysciml (`backend="diffrax"`) against hand-written raw Diffrax doing the
identical work, on large vmapped batches. Written for a lent GPU machine with a few
minutes of wall time; `--quick` runs the same code with tiny sizes on CPU.

    # on the GPU machine, from the repository root (no install: pysciml from the
    # tree; no .git there, so the commit comes from $PYSCIML_COMMIT). About 4 min:
    PYTHONUNBUFFERED=1 PYSCIML_COMMIT=<sha> PYTHONPATH=. python3 benchmarks/gpu.py --out "$OUT"
    # a smoke run on CPU (tiny sizes, few rounds; NOT figures). About 2 min on a quiet
    # 2-core machine; under load `--budget-s` skips the last sections (raise it):
    PYTHONPATH=. .venv/bin/python benchmarks/gpu.py --quick

Sections, in this order (the order is the priority: `--budget-s` skips what is left):

- `lv32`, `lv64`: a Lotka–Volterra ensemble, B = 16384 members (`--quick`: 64), float32
  then float64. The field, `p = [1.5, 1, 3, 1]` and `y0 = [1, 1]` are those of
  `overhead.py`; each member's `p` is that times an independent U(0.8, 1.2) factor per
  entry. Span [0, 15], 20 save times, Tsit5, rtol 1e-6, atol 1e-8, max_steps 4096.
  Forward: `jit(vmap(solve))` returning `ys`. Gradient: `jit(grad(loss))`, loss =
  sum over the batch of `sum(ys**2)`, with respect to the (B, 4) parameters; pysciml
  `sensitivity=ps.DiscreteAdjoint()` against raw `RecursiveCheckpointAdjoint()`.
- `event`: projectiles with linear drag, float64, B = 16384 (`--quick`: 64): state
  (x, h, vx, vh), field (vx, vh, -k vx, -g - k vh), each member's k ~ U(0.05, 0.2),
  speed ~ U(15, 30), angle ~ U(30°, 60°) (y0 built from them, so the gradient goes
  through y0 and args). The solve stops where the height crosses zero downwards:
  pysciml `ps.Event(lambda t, y, args: y[1], direction=-1)`, raw `diffrax.Event(...,
  optimistix.Newton(rtol=1e-12, atol=1e-12), direction=False)`: raw diffrax's fastest
  root finder that is right on this problem (pysciml uses a bracketed bisection at
  100 eps, since Newton leaves a step that also holds an extremum of the condition). Forward: the landing times; gradient: of their
  sum with respect to the (B, 3) parameters. Span [0, 10], same solver settings as LV.
  pysciml with `saveat=None` (the event alone), raw saving `t1` only.
- `nn`: the neural ODE train step of `overhead.py --part nn` (`nn_setup`, MLP
  2-64-64-2, float32, rtol = atol = 1e-4, 100 saves, Adam step), at batch 1024
  (`--quick`: 8).
- `curve32`, `curve64`: Lotka–Volterra at B = 1024 and 4096, forward and gradient,
  for a curve with the B = 16384 point (`--quick`: B = 16, forward only).

Method (as `_common.compare`, but stopping at the budget): every function is lowered
(`jax.jit(f).lower`) and compiled (`.compile()`, in a pool of threads, overlapping the
lowering of the next function; the neural ODE's two steps in turn) before timing, and
the lowering, compile and first-call times are recorded apart. Then each pair (raw,
pysciml) is warmed up and timed in interleaved rounds, the order alternating every
round, each sample ending in `jax.block_until_ready`: at most `--rounds` (21), at
least `--min-rounds` (7, even past the budget: the compiles are paid for), stopping
after `--case-cap-s` (6 s). A figure is the median and IQR over rounds of the paired
ratio pysciml / raw of the same round, and the time per solve (µs = sample time / B)
of each side. Before timing, the two sides' outputs are compared (same work, same
dtype). Goal: ratio <= 1.05. Budget: no section or build starts with less than
`--min-left-s` (25 s) of `--budget-s` (200 s) left, and no round beyond the minimum
starts after it; at `--hard-limit-s` (budget + 35 s) the script saves what it has and
exits (status 3).

Precision is switched per section with `jax.config.update("jax_enable_x64", ...)`;
`--isolate` instead runs each section in a subprocess of its own (use it if mixing
precisions in one process goes wrong). Results: one JSON file (and a log of what was
printed) under `--out`, saved after every case, with the device, the versions, the
commit (`git rev-parse HEAD`, else `$PYSCIML_COMMIT`) and every round.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import provenance, summarize  # noqa: E402  (imports no JAX)

T_START = time.perf_counter()
OFFSET = 0.0  # a child of --isolate: the parent's elapsed time when it started it
GOAL = 1.05
RAW, PS = "raw diffrax", "pysciml"
REFERENCE = {
    "device": "NVIDIA H100",
    "what": "raw diffrax, Lotka-Volterra ensemble, B = 16384",
    "forward_us_per_solve": 4.3,
    "gradient_us_per_solve": 14.8,
    "precision": "unknown",
    "note": "external figure given in the brief; its problem settings (span, saves, "
            "tolerances) and float precision are unknown, so compare only roughly",
}
SECTIONS = ("lv32", "lv64", "event", "nn", "curve32", "curve64")
_PACKAGES = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt",
             "jax-cuda13-plugin", "jax-cuda13-pjrt", "diffrax", "equinox", "lineax",
             "optimistix", "optax", "numpyro", "numpy", "scipy")

# LV, as in overhead.py.
LV_P = (1.5, 1.0, 3.0, 1.0)
LV_T1, LV_NSAVE = 15.0, 20
RTOL, ATOL, MAX_STEPS = 1e-6, 1e-8, 4096
# Projectile.
GRAVITY, PROJ_T1, EVENT_TOL = 9.81, 10.0, 1e-12


# ------------------------------------------------------------------ record and log


class Record:
    """Everything this run measured, written to JSON after each change, and a log of
    what was printed."""

    def __init__(self, out_dir: Path, data: dict, stamp: str, tag: str,
                 json_path: Path | None = None, log_path: Path | None = None):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.data = data
        self.path = json_path or out_dir / f"gpu_{stamp}_{tag}.json"
        self.log_path = log_path or out_dir / f"gpu_{stamp}_{tag}.log"
        self.lock = threading.Lock()

    def save(self) -> None:
        with self.lock:
            try:
                text = json.dumps(self.data, indent=1, default=_jsonable)
            except Exception as e:  # never lose the run to a JSON problem
                text = json.dumps({"json_error": repr(e)})
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.path)


REC: Record | None = None


def elapsed() -> float:
    return time.perf_counter() - T_START + OFFSET


def log(msg: str = "") -> None:
    line = f"[{elapsed():6.1f}s] {msg}" if msg else ""
    print(line, flush=True)
    if REC is not None:
        try:
            with open(REC.log_path, "a") as fh:
                fh.write(line + "\n")
        except OSError:
            pass


def _jsonable(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def stats_of(xs, scale: float = 1.0) -> dict:
    s = summarize([x * scale for x in xs if x is not None])
    return {"median": s.median, "q1": s.q1, "q3": s.q3, "n": s.n}


def fmt(d: dict, digits: int = 2) -> str:
    f = f"{{:.{digits}f}}"
    return f"{f.format(d['median'])} [{f.format(d['q1'])}, {f.format(d['q3'])}]"


# ------------------------------------------------------------------ budget


class Budget:
    def __init__(self, budget_s: float, min_left_s: float):
        self.deadline = T_START - OFFSET + budget_s
        self.min_left_s = min_left_s

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def enough(self) -> bool:
        return self.left() >= self.min_left_s


class OverBudget(Exception):
    pass


# ------------------------------------------------------------------ compile and time


def build(specs: dict, workers: int) -> tuple[dict, dict, dict]:
    """Lowers `jax.jit(fn)` for each `name: (fn, args)` in turn (tracing holds the
    GIL) and hands each lowered function to a pool of `workers` threads to compile
    (XLA releases the GIL), so that compiles overlap each other and the lowering of
    the next functions; then calls each compiled function once. Returns the compiled
    callables, their first outputs, and the times."""
    import jax

    info = {}

    def comp(name, lowered):
        t = time.perf_counter()
        return lowered.compile(), time.perf_counter() - t

    t_all = time.perf_counter()
    pool = ThreadPoolExecutor(max(1, workers))
    futures = {}
    try:
        for name, (fn, args) in specs.items():
            t = time.perf_counter()
            lowered = jax.jit(fn).lower(*args)
            info[name] = {"lower_s": time.perf_counter() - t}
            if workers > 1:
                futures[name] = pool.submit(comp, name, lowered)
            else:
                futures[name] = comp(name, lowered)
        compiled = {}
        for name, fut in futures.items():
            c, dt = fut.result() if workers > 1 else fut
            compiled[name] = c
            info[name]["compile_s"] = dt
    finally:
        pool.shutdown(wait=True)
    build_wall = time.perf_counter() - t_all
    outs = {}
    for name, (_, args) in specs.items():
        t = time.perf_counter()
        outs[name] = jax.block_until_ready(compiled[name](*args))
        info[name]["first_call_s"] = time.perf_counter() - t
    total = {"lower_s": sum(i["lower_s"] for i in info.values()),
             "compile_sum_s": sum(i["compile_s"] for i in info.values()),
             "lower_and_compile_wall_s": build_wall, "workers": workers}
    log("  lower/compile/first call (s): " + "; ".join(
        f"{_name(k)} {v['lower_s']:.1f}/{v['compile_s']:.1f}/{v['first_call_s']:.2f}"
        for k, v in info.items()))
    log(f"  built {len(specs)} functions in {build_wall:.1f}s (lowering "
        f"{total['lower_s']:.1f}s in turn, compiles {total['compile_sum_s']:.1f}s "
        f"summed in {workers} threads, overlapping)")
    return compiled, outs, {"functions": info, "total": total}


def _name(key) -> str:
    return " ".join(str(k) for k in key) if isinstance(key, tuple) else str(key)


def time_rounds(fns: dict, *, rounds: int, min_rounds: int, cap_s: float,
                budget: Budget, warmup: int, target_s: float) -> dict:
    """Interleaved rounds, the order alternating every round; stops early (after at
    least `min_rounds`) when this comparison has run `cap_s` or the budget is spent.
    A sample is the mean of `calls_per_sample` calls (calibrated to ~`target_s`)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    inner = {}
    for name, fn in fns.items():
        t = time.perf_counter()
        fn()
        dt = max(time.perf_counter() - t, 1e-7)
        inner[name] = max(1, min(1000, round(target_s / dt)))
    names = list(fns)
    samples = {name: [] for name in names}
    t0 = time.perf_counter()
    stopped = None
    for r in range(rounds):
        if r >= min_rounds:
            if time.perf_counter() - t0 > cap_s:
                stopped = f"time cap {cap_s}s after {r} rounds"
                break
            if budget.left() < 0:
                stopped = f"budget spent after {r} rounds"
                break
        for name in names if r % 2 == 0 else names[::-1]:
            fn, n = fns[name], inner[name]
            t = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t) / n)
    return {"seconds_per_call": samples, "calls_per_sample": inner,
            "rounds": len(samples[names[0]]), "stopped_early": stopped,
            "timing_s": time.perf_counter() - t0}


def pair_case(section: dict, key: str, label: str, calls: dict, per: int,
              opts, budget: Budget, unit: str = "solve", ref_us: float | None = None,
              extra: dict | None = None) -> dict:
    """Times `calls = {RAW: fn, PS: fn}` and records the figure under `key`."""
    t = time_rounds(calls, rounds=opts.rounds, min_rounds=opts.min_rounds,
                    cap_s=opts.case_cap_s, budget=budget, warmup=opts.warmup,
                    target_s=opts.target_s)
    s = t["seconds_per_call"]
    ratios = [a / b for a, b in zip(s[PS], s[RAW])]
    case = {
        "label": label,
        "per": per,
        "unit": unit,
        f"{RAW} us_per_{unit}": stats_of(s[RAW], 1e6 / per),
        f"{PS} us_per_{unit}": stats_of(s[PS], 1e6 / per),
        f"{RAW} ms_per_call": stats_of(s[RAW], 1e3),
        f"{PS} ms_per_call": stats_of(s[PS], 1e3),
        "ratio pysciml/raw": {**stats_of(ratios), "all": ratios},
        "goal": f"<= {GOAL}",
        **t,
        **(extra or {}),
    }
    r = case["ratio pysciml/raw"]
    case["goal_met"] = bool(r["median"] <= GOAL)
    section["cases"][key] = case
    REC.save()
    log(f"  {label}: raw {fmt(case[f'{RAW} us_per_{unit}'])} µs/{unit}, pysciml "
        f"{fmt(case[f'{PS} us_per_{unit}'])} µs/{unit} (per call: raw "
        f"{case[f'{RAW} ms_per_call']['median']:.3f} ms, pysciml "
        f"{case[f'{PS} ms_per_call']['median']:.3f} ms); ratio pysciml/raw "
        f"{fmt(r, 3)} over {r['n']} rounds "
        f"(goal <= {GOAL}: {'met' if case['goal_met'] else 'NOT met'})"
        + (f"; stopped early: {t['stopped_early']}" if t["stopped_early"] else ""))
    if ref_us is not None:
        log(f"    reference (H100, raw diffrax, precision unknown): {ref_us} µs/{unit}")
    return case


def same(a, b, rtol, atol) -> dict:
    """Whether two outputs agree (same work); never raises."""
    import jax
    import numpy as np

    try:
        la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
        if len(la) != len(lb):
            return {"ok": False, "why": "different tree structure"}
        worst, dtypes = 0.0, []
        for x, y in zip(la, lb):
            x, y = np.asarray(x), np.asarray(y)
            dtypes.append(f"{x.dtype}/{y.dtype}")
            if x.shape != y.shape or x.dtype != y.dtype:
                return {"ok": False, "why": f"{x.shape} {x.dtype} vs {y.shape} {y.dtype}"}
            if not np.issubdtype(x.dtype, np.inexact):
                continue
            both_nan = np.isnan(x) & np.isnan(y)
            err = np.where(both_nan, 0, np.abs(x - y) / (atol + rtol * np.abs(y)))
            worst = max(worst, float(np.max(err, initial=0.0)))
        return {"ok": bool(worst <= 1), "worst_err_over_tol": worst, "rtol": rtol,
                "atol": atol, "dtypes": sorted(set(dtypes))}
    except Exception as e:
        return {"ok": False, "why": repr(e)}


def log_check(name: str, c: dict) -> None:
    if c["ok"]:
        log(f"  same work ({name}): outputs agree, worst |diff| / tol = "
            f"{c['worst_err_over_tol']:.2g}, dtypes {c['dtypes']}")
    else:
        log(f"  WARNING ({name}): the two sides' outputs differ: {c}")


def set_x64(on: bool) -> None:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", on)
    got = jnp.asarray(1.0).dtype
    assert got == (jnp.float64 if on else jnp.float32), (on, got)


# ------------------------------------------------------------------ Lotka-Volterra


def lv_field(t, y, p):
    import jax.numpy as jnp

    x, z = y[0], y[1]
    return jnp.stack([p[0] * x - p[1] * x * z, -p[2] * z + p[3] * x * z])


def lv_section(section: dict, dtype_name: str, sizes: list[int], opts,
               budget: Budget, reference: bool, grads: bool = True) -> None:
    set_x64(dtype_name == "float64")
    import diffrax
    import jax
    import jax.numpy as jnp

    import pysciml as ps

    dtype = jnp.dtype(dtype_name)
    ts = jnp.linspace(0.0, LV_T1, LV_NSAVE, dtype=dtype)
    y0 = jnp.array([1.0, 1.0], dtype)
    problem = ps.ODEProblem(lv_field, 0.0, LV_T1)

    def raw_sol(y0, p):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(lv_field), diffrax.Tsit5(), 0.0, LV_T1, None, y0, p,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
            max_steps=MAX_STEPS, adjoint=diffrax.RecursiveCheckpointAdjoint())

    def raw_one(y0, p):
        return raw_sol(y0, p).ys

    def ps_one(y0, p):
        return ps.solve(problem, y0, p, saveat=ts, backend="diffrax",
                        solver=ps.Tsit5(), rtol=RTOL, atol=ATOL, max_steps=MAX_STEPS,
                        sensitivity=ps.DiscreteAdjoint()).ys

    def fwd(one):
        return lambda y0, P: jax.vmap(one, in_axes=(None, 0))(y0, P)

    def grad(one):
        return jax.grad(lambda P, y0: jnp.sum(fwd(one)(y0, P) ** 2))

    def steps(y0, P):
        return jax.vmap(lambda p: raw_sol(y0, p).stats["num_accepted_steps"])(P)

    section.update(dtype=dtype_name, sizes=sizes, ts=f"linspace(0, {LV_T1}, {LV_NSAVE})",
                   rtol=RTOL, atol=ATOL, solver="Tsit5", max_steps=MAX_STEPS,
                   params="[1.5, 1, 3, 1] * U(0.8, 1.2) per entry per member")
    tol = {"float32": (2e-4, 1e-5), "float64": (1e-9, 1e-12)}[dtype_name]
    gtol = {"float32": (2e-3, 1e-4), "float64": (1e-7, 1e-10)}[dtype_name]
    if not budget.enough():
        raise OverBudget
    # One build for all sizes: their compiles overlap.
    whats = ("fwd", "grad") if grads else ("fwd",)
    specs, Ps = {}, {}
    for B in sizes:
        P = jnp.asarray(LV_P, dtype) * jax.random.uniform(
            jax.random.key(B), (B, 4), dtype, minval=0.8, maxval=1.2)
        Ps[B] = P
        if reference:
            specs[(B, "steps")] = (steps, (y0, P))
        specs[(B, "fwd", RAW)] = (fwd(raw_one), (y0, P))
        specs[(B, "fwd", PS)] = (fwd(ps_one), (y0, P))
        if grads:
            specs[(B, "grad", RAW)] = (grad(raw_one), (P, y0))
            specs[(B, "grad", PS)] = (grad(ps_one), (P, y0))
    compiled, outs, info = build(specs, opts.compile_workers)
    section["build"] = {str(k): v for k, v in info["functions"].items()}
    section["build_total"] = info["total"]
    REC.save()
    for B in sizes:
        P = Ps[B]
        workload = None
        if (B, "steps") in outs:
            n = outs[(B, "steps")]
            workload = {"accepted_steps_max": int(n.max()), "accepted_steps_mean":
                        float(n.mean()), "accepted_steps_min": int(n.min())}
            log(f"  LV {dtype_name} B={B}: accepted steps per member min/mean/max "
                f"{workload['accepted_steps_min']}/"
                f"{workload['accepted_steps_mean']:.1f}/"
                f"{workload['accepted_steps_max']} (a vmapped loop runs to the max)")
        for what in whats:
            args = (y0, P) if what == "fwd" else (P, y0)
            a, b = outs[(B, what, RAW)], outs[(B, what, PS)]
            check = same(b, a, *(tol if what == "fwd" else gtol))
            check["dtype"] = str(b.dtype)
            if str(b.dtype) != dtype_name:
                check["ok"] = False
            log_check(f"LV {what} B={B}", check)
            calls = {name: (lambda c=compiled[(B, what, name)], args=args:
                            jax.block_until_ready(c(*args))) for name in (RAW, PS)}
            ref = None
            if reference and B == 16384:
                ref = REFERENCE[("forward" if what == "fwd" else "gradient")
                                + "_us_per_solve"]
            label = (f"LV {dtype_name} B={B} "
                     f"{'forward' if what == 'fwd' else 'gradient'}")
            pair_case(section, f"B={B} {what}", label, calls, B, opts, budget,
                      ref_us=ref, extra={"check": check, "workload": workload,
                                         "B": B, "dtype": dtype_name})


# ------------------------------------------------------------------ events


def event_section(section: dict, B: int, opts, budget: Budget) -> None:
    set_x64(True)
    import diffrax
    import jax
    import jax.numpy as jnp
    import optimistix as optx

    import pysciml as ps

    dtype = jnp.float64

    def field(t, y, p):
        k = p[0]
        return jnp.stack([y[2], y[3], -k * y[2], -GRAVITY - k * y[3]])

    def y0_of(p):
        speed, angle = p[1], p[2]
        zero = jnp.zeros_like(speed)
        return jnp.stack([zero, zero, speed * jnp.cos(angle), speed * jnp.sin(angle)])

    def raw_land(p):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), diffrax.Tsit5(), 0.0, PROJ_T1, None, y0_of(p), p,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
            max_steps=MAX_STEPS, adjoint=diffrax.RecursiveCheckpointAdjoint(),
            event=diffrax.Event(lambda t, y, args, **kw: y[1],
                                optx.Newton(rtol=EVENT_TOL, atol=EVENT_TOL),
                                direction=False))
        return sol.ts[-1]

    problem = ps.ODEProblem(field, 0.0, PROJ_T1)
    event = ps.Event(lambda t, y, args: y[1], direction=-1)
    def ps_land(p):
        # saveat=None: the event alone, as raw saves t1 alone.
        return ps.solve(problem, y0_of(p), p, saveat=None, backend="diffrax",
                        solver=ps.Tsit5(), rtol=RTOL, atol=ATOL, max_steps=MAX_STEPS,
                        sensitivity=ps.DiscreteAdjoint(), event=event).event_time

    k1, k2, k3 = jax.random.split(jax.random.key(7), 3)
    P = jnp.stack([
        jax.random.uniform(k1, (B,), dtype, minval=0.05, maxval=0.2),
        jax.random.uniform(k2, (B,), dtype, minval=15.0, maxval=30.0),
        jax.random.uniform(k3, (B,), dtype, minval=jnp.pi / 6, maxval=jnp.pi / 3),
    ], axis=1)
    section.update(dtype="float64", B=B, rtol=RTOL, atol=ATOL, solver="Tsit5",
                   t1=PROJ_T1, event_tol=EVENT_TOL,
                   params="k ~ U(0.05, 0.2), speed ~ U(15, 30), angle ~ U(pi/6, pi/3)")
    if not budget.enough():
        raise OverBudget

    def fwd(land):
        return jax.vmap(land)

    def grad(land):
        return jax.grad(lambda P: jnp.sum(jax.vmap(land)(P)))

    specs = {("fwd", RAW): (fwd(raw_land), (P,)), ("fwd", PS): (fwd(ps_land), (P,)),
             ("grad", RAW): (grad(raw_land), (P,)), ("grad", PS): (grad(ps_land), (P,))}
    compiled, outs, info = build(specs, opts.compile_workers)
    section["build"] = {str(k): v for k, v in info["functions"].items()}
    section["build_total"] = info["total"]
    t_land = outs[("fwd", RAW)]
    landed = int(jnp.sum(t_land < PROJ_T1))
    log(f"  projectiles: {landed}/{B} land before t1 = {PROJ_T1}; landing times "
        f"{float(t_land.min()):.3f}..{float(t_land.max()):.3f}")
    for what, tol in (("fwd", (1e-9, 1e-12)), ("grad", (1e-6, 1e-9))):
        check = same(outs[(what, PS)], outs[(what, RAW)], *tol)
        log_check(f"event {what}", check)
        calls = {name: (lambda c=compiled[(what, name)]: jax.block_until_ready(c(P)))
                 for name in (RAW, PS)}
        label = (f"event float64 B={B} "
                 f"{'forward (landing time)' if what == 'fwd' else 'gradient of landing times'}")
        pair_case(section, what, label, calls, B, opts, budget,
                  extra={"check": check, "landed": landed, "B": B})


# ------------------------------------------------------------------ neural ODE


def nn_section(section: dict, batch: int, opts, budget: Budget) -> None:
    set_x64(False)
    import equinox as eqx
    import jax
    from overhead import check_same_step, nn_setup

    t = time.perf_counter()
    s = nn_setup(batch=batch)
    log(f"  nn_setup(batch={batch}) (prefit, targets) {time.perf_counter() - t:.1f}s; "
        f"{s.steps} accepted steps for y0s[0]")
    section.update(batch=batch, dtype="float32", rtol=s.rtol, atol=s.atol,
                   nsave=s.nsave, t1=s.t1, steps_y0s0=s.steps,
                   model="MLP 2-64-64-2 softplus (overhead.nn_setup)")
    if not budget.enough():
        raise OverBudget
    params, static = eqx.partition(s.mlp, eqx.is_array)

    def arrays_only(step):
        # The step of `nn_setup` (an `eqx.filter_jit`), as a function of arrays only,
        # so that `jax.jit(...).lower(...).compile()` applies.
        def f(params, opt_state, y0s, targets):
            model, opt_state, loss, ys = step(eqx.combine(params, static), opt_state,
                                              y0s, targets)
            return eqx.filter(model, eqx.is_array), opt_state, loss, ys
        return f

    inputs = (params, s.opt_state, s.y0s, s.targets)
    specs = {RAW: (arrays_only(s.make_step(s.raw_one)), inputs),
             PS: (arrays_only(s.make_step(s.ps_one)), inputs)}
    # Compiled in turn: XLA autotunes the MLP's matrix products on the GPU, and two
    # compiles autotuning at once could pick different kernels for the two sides; in
    # turn, the second reuses the first's choices (XLA's autotuning cache).
    compiled, outs, info = build(specs, 1)
    section["build"] = info["functions"]
    section["build_total"] = info["total"]
    try:
        check_same_step(outs[RAW], outs[PS])
        check = {"ok": True, "how": "overhead.check_same_step"}
        log("  same work (nn step): float32, losses, states and updated models agree")
    except Exception as e:
        check = {"ok": False, "why": repr(e)[:2000]}
        log(f"  WARNING (nn step): the two sides differ: {repr(e)[:500]}")
    calls = {name: (lambda c=compiled[name]: jax.block_until_ready(c(*inputs)))
             for name in (RAW, PS)}
    pair_case(section, "step", f"neural ODE train step float32 batch={batch}", calls,
              batch, opts, budget, unit="trajectory",
              extra={"check": check, "batch": batch})


# ------------------------------------------------------------------ header


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def nvidia_smi() -> str | None:
    try:
        r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                           timeout=20)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"(nvidia-smi not available: {e.__class__.__name__})"


def jax_info() -> dict:
    import jax

    devs = jax.devices()
    return {"jax_devices": [repr(d) for d in devs],
            "device_kind": [getattr(d, "device_kind", "?") for d in devs],
            "default_backend": jax.default_backend()}


def commit_info(prov: dict) -> dict:
    if prov.get("commit"):
        return {"commit": prov["commit"], "commit_source": "git rev-parse HEAD",
                "dirty": prov.get("dirty"), "changes": prov.get("changes")}
    env = os.environ.get("PYSCIML_COMMIT") or os.environ.get("GIT_COMMIT")
    return {"commit": env, "commit_source": "$PYSCIML_COMMIT" if env else None,
            "dirty": None, "changes": ["(no git here: dirtiness unknown)"]}


# ------------------------------------------------------------------ main


def run_sections(opts, budget: Budget, data: dict) -> None:
    sizes = {"main": 64 if opts.quick else 16384,
             "curve": [16] if opts.quick else [1024, 4096],
             "nn": 8 if opts.quick else 1024}
    for name in opts.sections:
        section = data["sections"].setdefault(name, {"cases": {}})
        section["status"] = "running (if this stays, the hard limit stopped it)"
        t = time.perf_counter()
        log(f"== section {name} (budget left {budget.left():.0f}s) ==")
        if not budget.enough():
            section["status"] = f"skipped: {budget.left():.0f}s of budget left"
            log(f"  SKIPPED: {budget.left():.0f}s of budget left "
                f"(< {budget.min_left_s:.0f}s)")
            REC.save()
            continue
        try:
            if name in ("lv32", "lv64"):
                lv_section(section, "float32" if name == "lv32" else "float64",
                           [sizes["main"]], opts, budget, reference=True)
            elif name in ("curve32", "curve64"):
                # --quick: forward only (the gradient path is lv32's and lv64's).
                lv_section(section, "float32" if name == "curve32" else "float64",
                           sizes["curve"], opts, budget, reference=False,
                           grads=not opts.quick)
            elif name == "event":
                event_section(section, sizes["main"], opts, budget)
            elif name == "nn":
                nn_section(section, sizes["nn"], opts, budget)
            section["status"] = "ok"
        except OverBudget:
            section["status"] = "stopped: budget spent"
            log("  STOPPED: budget spent")
        except Exception:
            tb = traceback.format_exc()
            section["status"] = "error"
            section["traceback"] = tb
            log(f"  ERROR in section {name}:\n{tb}")
            if "set_x64" in tb:
                log("  (switching precision in one process failed: rerun with "
                    "--isolate, which runs each section in a process of its own)")
        section["elapsed_s"] = time.perf_counter() - t
        REC.save()
        log(f"== section {name}: {section['status']}, {section['elapsed_s']:.1f}s; "
            f"total elapsed {elapsed():.1f}s ==")


def summary(data: dict) -> None:
    log("\n# Summary: pysciml (backend='diffrax') / raw diffrax, identical work; "
        "paired ratio median [IQR] over interleaved rounds; µs per solve (per "
        "trajectory for nn) median [IQR]")
    log("| case | raw µs | pysciml µs | ratio [IQR] | rounds | goal <= 1.05 | same work |")
    log("|---|---:|---:|---:|---:|---|---|")
    for sec in data["sections"].values():
        for case in sec.get("cases", {}).values():
            u = case["unit"]
            r = case["ratio pysciml/raw"]
            log(f"| {case['label']} | {fmt(case[f'{RAW} us_per_{u}'])} | "
                f"{fmt(case[f'{PS} us_per_{u}'])} | {fmt(r, 3)} | {r['n']} | "
                f"{'met' if case['goal_met'] else 'NOT met'} | "
                f"{'yes' if case.get('check', {}).get('ok') else 'NO'} |")
    log(f"Reference: {REFERENCE['device']}, {REFERENCE['what']}: "
        f"{REFERENCE['forward_us_per_solve']} µs per forward solve, "
        f"{REFERENCE['gradient_us_per_solve']} µs per gradient; float precision "
        f"{REFERENCE['precision']} (and other settings unknown).")
    for name, sec in data["sections"].items():
        if sec.get("status") != "ok":
            log(f"section {name}: {sec.get('status')}")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and few rounds (a CPU smoke run; not figures)")
    p.add_argument("--out", default=None,
                   help="directory for the JSON and the log (default out/bench in the "
                        "repository)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="start no section or comparison after this many seconds "
                        "(default 200; --quick: 115)")
    p.add_argument("--hard-limit-s", type=float, default=None,
                   help="save and exit at this many seconds, whatever runs "
                        "(default budget + 35; --quick: + 25)")
    p.add_argument("--min-left-s", type=float, default=None,
                   help="start a section only with this much budget left "
                        "(default 25; --quick: 5)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated, in order (default {','.join(SECTIONS)})")
    p.add_argument("--rounds", type=int, default=None,
                   help="most rounds per comparison (default 21; --quick: 7)")
    p.add_argument("--min-rounds", type=int, default=None,
                   help="fewest rounds before a comparison may stop early "
                        "(default 7; --quick: 3)")
    p.add_argument("--case-cap-s", type=float, default=None,
                   help="stop a comparison's rounds after this long (default 6; "
                        "--quick: 2)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--target-s", type=float, default=0.02,
                   help="calls per sample are calibrated to about this long")
    p.add_argument("--compile-workers", type=int, default=None,
                   help="threads compiling in parallel (default: CPU count, at most 8)")
    p.add_argument("--isolate", action="store_true",
                   help="run each section in a subprocess of its own")
    p.add_argument("--child-json", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-log", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-offset", type=float, default=0.0, help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    q = opts.quick
    if opts.budget_s is None:
        opts.budget_s = 115.0 if q else 200.0
    if opts.hard_limit_s is None:
        opts.hard_limit_s = opts.budget_s + (25.0 if q else 35.0)
    if opts.min_left_s is None:
        opts.min_left_s = 5.0 if q else 25.0
    if opts.rounds is None:
        opts.rounds = 7 if q else 21
    if opts.min_rounds is None:
        opts.min_rounds = 3 if q else 7
    if opts.case_cap_s is None:
        opts.case_cap_s = 2.0 if q else 6.0
    if opts.compile_workers is None:
        opts.compile_workers = max(1, min(8, os.cpu_count() or 1))
    opts.sections = [s.strip() for s in opts.sections.split(",") if s.strip()]
    bad = [s for s in opts.sections if s not in SECTIONS]
    if bad:
        p.error(f"unknown sections {bad}; choose from {SECTIONS}")
    return opts


def main(argv=None) -> int:
    global REC, OFFSET
    opts = parse(argv)
    OFFSET = opts.child_offset
    repo = Path(__file__).resolve().parent.parent
    out_dir = Path(opts.out) if opts.out else repo / "out" / "bench"
    child = opts.child_json is not None
    prov = provenance()
    commit = commit_info(prov)
    stamp = prov["started_utc"].replace("-", "").replace(":", "")
    tag = (commit["commit"] or "nocommit")[:10] + ("-quick" if opts.quick else "")
    data = {"script": "gpu", "quick": opts.quick, "options": vars(opts),
            "reference": REFERENCE, **commit, "versions": versions(),
            "provenance": prov, "sections": {}}
    REC = Record(out_dir, data, stamp, tag,
                 json_path=Path(opts.child_json) if child else None,
                 log_path=Path(opts.child_log) if opts.child_log else None)

    def hard_stop():
        log(f"HARD LIMIT {opts.hard_limit_s:.0f}s reached: saving and exiting")
        data["hard_limit_reached"] = True
        REC.save()
        if not child:
            try:
                summary(data)
            except Exception:
                pass
        os._exit(3)

    timer = threading.Timer(max(0.0, opts.hard_limit_s - elapsed()), hard_stop)
    timer.daemon = True
    timer.start()

    if not child:
        log(f"# gpu.py: commit {commit['commit']} (from {commit['commit_source']}; "
            f"dirty: {commit['dirty']}){' QUICK (not figures)' if opts.quick else ''}")
        log(f"# command: {prov['command']}")
        log("# versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items()))
        smi = nvidia_smi()
        data["nvidia_smi_L"] = smi
        log(f"# nvidia-smi -L: {smi}")
        log(f"# machine: {platform.platform()}, {os.cpu_count()} CPUs; budget "
            f"{opts.budget_s:.0f}s, hard limit {opts.hard_limit_s:.0f}s; sections "
            f"{','.join(opts.sections)}; results {REC.path}")
        for reason in prov.get("not_a_figure_because", []):
            if commit["commit_source"] == "$PYSCIML_COMMIT" and (
                    "no git commit" in reason or "git status failed" in reason):
                continue
            log(f"# note: {reason}")
    budget = Budget(opts.budget_s, opts.min_left_s)

    if opts.isolate and not child:
        # Each section in a process of its own; this one never imports JAX (which
        # would take the GPU's memory).
        for name in opts.sections:
            left = budget.left()
            if left < opts.min_left_s:
                data["sections"][name] = {"status": f"skipped: {left:.0f}s left",
                                          "cases": {}}
                log(f"== section {name}: SKIPPED, {left:.0f}s of budget left ==")
                continue
            cj = REC.path.with_name(REC.path.stem + f"_{name}.child.json")
            cmd = [sys.executable, os.path.abspath(__file__), "--sections", name,
                   "--child-json", str(cj), "--child-log", str(REC.log_path),
                   "--child-offset", str(elapsed()), "--budget-s",
                   str(opts.budget_s), "--hard-limit-s", str(opts.hard_limit_s),
                   "--min-left-s",
                   str(opts.min_left_s), "--rounds", str(opts.rounds), "--min-rounds",
                   str(opts.min_rounds), "--case-cap-s", str(opts.case_cap_s),
                   "--warmup", str(opts.warmup), "--target-s", str(opts.target_s),
                   "--compile-workers", str(opts.compile_workers)]
            if opts.quick:
                cmd.append("--quick")
            if opts.out:
                cmd += ["--out", opts.out]
            try:
                rc = subprocess.run(cmd, timeout=max(10.0, opts.hard_limit_s
                                                      - elapsed())).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
            try:
                cd = json.loads(cj.read_text())
                data["sections"].update(cd.get("sections", {}))
                for k in ("jax_devices", "device_kind", "default_backend"):
                    data.setdefault(k, cd.get(k))
                cj.unlink()
            except Exception as e:
                data["sections"][name] = {"status": f"child failed (rc {rc}): {e!r}",
                                          "cases": {}}
            REC.save()
        summary(data)
        REC.save()
        log(f"# done in {elapsed():.1f}s; every round in {REC.path}")
        return 0

    try:
        import jax

        info = jax_info()
        data.update(info)
        log(f"# jax.devices(): {info['jax_devices']} (kind {info['device_kind']}, "
            f"backend {info['default_backend']}); jax {jax.__version__}")
        if info["default_backend"] != "gpu" and not opts.quick:
            log("# WARNING: no GPU: these are not GPU figures")
    except Exception:
        data["jax_error"] = traceback.format_exc()
        log(f"# jax failed to start:\n{data['jax_error']}")
        REC.save()
        return 1
    REC.save()
    run_sections(opts, budget, data)
    REC.save()
    if not child:
        summary(data)
        log(f"# done in {elapsed():.1f}s; every round in {REC.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

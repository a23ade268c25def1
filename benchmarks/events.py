"""Events (`solve(event=ps.Event(...))`) against raw Diffrax and raw SciPy.

    .venv/bin/python benchmarks/events.py                  # 41 rounds
    .venv/bin/python benchmarks/events.py --quick          # a smoke run (7 rounds)
    .venv/bin/python benchmarks/events.py --part diffrax   # one part: diffrax, batch,
                                                           # scipy or diagnose

Problem: a projectile with linear drag, state (x, y, vx, vy), args (k, g) = (0.1,
9.81), launched from (0, 0) at speed 20 and angle theta = 0.8 rad; the event is the
height y crossing zero downward (`direction=-1`), t1 = 10 (it lands at t = 2.79);
Tsit5 / RK45 at rtol = atol = 1e-8, float64. Every figure is the median and IQR of
paired ratios over interleaved rounds against an anchor timed in the same process
(see `_common.py`). Before timing, every pair is checked to compute the same numbers
(event times within 1e-8; gradients as stated where they are built).

1. Diffrax forward: `jax.jit`ted `ps.solve(..., backend="diffrax", event=...)`
   returning `event_time` (with `saveat=None`: the event alone; and with 50 save
   times), against raw `diffrax.diffeqsolve` with `diffrax.Event(cond_fn,
   optimistix.Newton(rtol=tol, atol=tol), direction=False)`, tol = 1e-12 (raw
   diffrax's fastest root finder that is right on this problem; pysciml uses its
   `BracketedNewton` at 100 eps), `Tsit5`, `PIDController(rtol, atol)`, `SaveAt(t1=True)`
   (and `SaveAt(subs=[SubSaveAt(ts=ts), SubSaveAt(t1=True)])` with the save times).
   pysciml with the default sensitivity and with `DiscreteAdjoint()`. Goal <= 1.1.
2. Diffrax gradient: `jax.jit(jax.grad(...))` of the landing time and of the landing
   distance w.r.t. (theta, k); raw Diffrax differentiates through its own event with
   `RecursiveCheckpointAdjoint`. pysciml with `sensitivity=ps.DiscreteAdjoint()` (the
   same method) and with the default (`ForwardSensitivity` here: 4 states + 2 args).
   Goal <= 1.1.
3. Batch: `jax.vmap` over 64 launch angles of the forward (event time) and of the
   gradient of the landing time, pysciml against raw Diffrax vmapped.
4. SciPy: pysciml `backend="scipy"` (Dopri5 = RK45) forward (event time), against the
   fastest of raw `scipy.integrate.solve_ivp(rhs, ..., method="RK45", events=ev)`
   (`ev.terminal = True`, `ev.direction = -1`) and a hand-written loop over
   `scipy.integrate.RK45` steps that locates the crossing with `brentq` on the step's
   dense output (what `solve_ivp` does, less its bookkeeping), both with a
   hand-written NumPy right-hand side. pysciml's SciPy gradients (default and
   `InterpolatingAdjoint`) against the same raw forward. Report only, no goal.
5. Diagnose: where pysciml's forward and gradient time goes (one solve, and vmapped
   over the 64 angles), by raw Diffrax variants that each add one thing pysciml's
   diffeqsolve does (the condition divided by a scale computed at t0, the
   `SubSaveAt` pair, the same pair without a save-time loop, `throw=False`, all
   three; for the gradient also the saved states in the loss with weight 0, so that
   their zero cotangents are not dropped), the Diffrax backend's own diffeqsolve
   called directly (`DiffraxBackend._solve`: pysciml less `solve`'s wrapper), with
   and without `event_outputs` (the grazing test), pysciml returning the whole
   `Solution`, the count of the condition's evaluations (steps and Newton
   iterations), and the size of the compiled HLO. On SciPy, one pysciml
   solve without an event to the landing time (the second of the two solves that
   pysciml's SciPy forward makes).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optimistix as optx  # noqa: E402
import scipy.integrate as si  # noqa: E402
from _common import (  # noqa: E402
    Run,
    add_rounds_arguments,
    compare,
    ratio_cell,
    rounds_of,
    us,
)
from scipy.optimize import brentq  # noqa: E402

import pysciml as ps  # noqa: E402
from pysciml._backend.base import FlatProblem, SolveOptions  # noqa: E402
from pysciml._event import FlatEvent, event_outputs  # noqa: E402
from pysciml._flatten import FlatVectorField, spec_of, split_args  # noqa: E402

GOAL = 1.1
RTOL = ATOL = 1e-8
V0, THETA, K, G = 20.0, 0.8, 0.1, 9.81
T0, T1 = 0.0, 10.0
TS_TRAJ = np.linspace(0.0, 2.5, 50)  # all before the landing (t = 2.79)
BATCH = 64
THETAS = np.linspace(0.3, 1.3, BATCH)
# pysciml's Newton tolerance on Diffrax (`DiffraxBackend._event`), used by both sides.
NEWTON_TOL = max(100 * float(jnp.finfo(jnp.float64).eps), 1e-12)
EPS = np.finfo(float).eps


def drag(t, y, a):
    k, g = a[0], a[1]
    return jnp.stack([y[2], y[3], -k * y[2], -g - k * y[3]])


def launch(theta):
    zero = jnp.zeros_like(theta)
    return jnp.stack([zero, zero, V0 * jnp.cos(theta), V0 * jnp.sin(theta)])


def args_of(k):
    return jnp.stack([k, jnp.asarray(G, jnp.result_type(k))])


PROBLEM = ps.ODEProblem(drag, T0, T1)
EVENT = ps.Event(lambda t, y, a: y[1], direction=-1)
DISCRETE = ps.DiscreteAdjoint()


# ------------------------------------------------------------------ pysciml


def ps_sol(theta, k, *, backend="diffrax", sensitivity=None, ts=None):
    return ps.solve(PROBLEM, launch(theta), args_of(k),
                    saveat=ts, event=EVENT,
                    backend=backend, rtol=RTOL, atol=ATOL, sensitivity=sensitivity)


def ps_time(theta, k, **kw):
    return ps_sol(theta, k, **kw).event_time


def ps_distance(theta, k, **kw):
    return ps_sol(theta, k, **kw).event_state[0]


# ------------------------------------------------------------------ raw diffrax


def raw_height(t, y, args, **kwargs):
    return y[1]


def raw_sol(theta, k, *, ts=None, scaled=False, subs=False, throw=True,
            cond=raw_height):
    """Raw Diffrax, by hand. The defaults are the anchor; `scaled`, `subs` and
    `throw=False` add, one by one, what pysciml's diffeqsolve does (diagnose part)."""
    y0, a = launch(theta), args_of(k)
    if scaled:  # pysciml's scale: max(|g(t0)|, |dg/dt(t0)| (t1 - t0)), no gradient
        y0_c, a_c = jax.lax.stop_gradient((y0, a))
        g0, g0_dot = jax.jvp(lambda t, y: y[1], (jnp.asarray(T0), y0_c),
                             (jnp.ones(()), drag(T0, y0_c, a_c)))
        scale = jnp.maximum(jnp.abs(g0), jnp.abs(g0_dot) * (T1 - T0))
        scale = jnp.where((scale > 0) & jnp.isfinite(scale), scale, 1)

        def condition(t, y, args, **kwargs):
            return cond(t, y, args) / scale
    else:
        condition = cond
    if ts is not None:
        saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts),
                                      diffrax.SubSaveAt(t1=True)])
    elif subs == "t0":  # the same pair of outputs, without a save-time loop
        saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(t0=True),
                                      diffrax.SubSaveAt(t1=True)])
    elif subs:
        saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=jnp.array([T0])),
                                      diffrax.SubSaveAt(t1=True)])
    else:
        saveat = diffrax.SaveAt(t1=True)
    return diffrax.diffeqsolve(
        diffrax.ODETerm(drag), diffrax.Tsit5(), T0, T1, None, y0, a, saveat=saveat,
        stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
        event=diffrax.Event(condition, optx.Newton(rtol=NEWTON_TOL, atol=NEWTON_TOL),
                            direction=False),
        adjoint=diffrax.RecursiveCheckpointAdjoint(), max_steps=4096, throw=throw)


def raw_time(theta, k, **kw):
    sol = raw_sol(theta, k, **kw)
    return sol.ts[1][0] if isinstance(sol.ts, list) else sol.ts[-1]


def raw_distance(theta, k, **kw):
    sol = raw_sol(theta, k, **kw)
    return sol.ys[1][0, 0] if isinstance(sol.ys, list) else sol.ys[-1, 0]


def raw_traj(theta, k, ts):
    sol = raw_sol(theta, k, ts=ts)
    return sol.ys[0], sol.ts[1][0]


def backend_time(theta, k, outputs=False):
    """Diagnose only: the Diffrax backend's own diffeqsolve (`DiffraxBackend._solve`
    with its `_event`), called directly on the problem as `solve` flattens it: all of
    pysciml's solve less `solve`'s wrapper (checks, custom_vjp, `event_outputs`).
    `outputs=True` adds `event_outputs` (the grazing test) as `solve` calls it on
    Diffrax with `DiscreteAdjoint` (no implicit correction)."""
    y0, a = launch(theta), args_of(k)
    dynamic, static = split_args(a)
    y_spec, p_spec = spec_of(y0), spec_of(dynamic)
    flat = FlatProblem(
        vector_field=FlatVectorField(drag, y_spec, p_spec, static), t0=T0, t1=T1,
        event=FlatEvent(EVENT.condition, EVENT.direction, y_spec, p_spec, static))
    options = SolveOptions(solver=ps.Tsit5(), sensitivity=DISCRETE, rtol=RTOL,
                           atol=ATOL, max_steps=4096, throw=True)
    backend = ps.get_backend("diffrax")
    p = p_spec.flatten(dynamic, dtype=y0.dtype)
    ys, (_, _, t_event, happened) = backend._solve(
        flat, options, jnp.array([T0]), y0, p, event=backend._event(flat, y0, p))
    if outputs:
        t_event, _, grazing = event_outputs(flat.event, flat.vector_field, t_event,
                                            ys[-1], p, happened, RTOL, ATOL,
                                            correct=False)
        t_event = jnp.where(grazing, jnp.nan, t_event)
    return t_event


# ------------------------------------------------------------------ raw scipy


def make_rhs(k, g):
    def rhs(t, y):
        return np.array([y[2], y[3], -k * y[2], -g - k * y[3]])

    return rhs


def height(t, y):
    return y[1]


height.terminal = True
height.direction = -1


def raw_solve_ivp(rhs, y0):
    sol = si.solve_ivp(rhs, (T0, T1), y0, method="RK45", events=height, rtol=RTOL,
                       atol=ATOL)
    return sol.t_events[0][0] if sol.t_events[0].size else T1


def raw_loop(rhs, y0):
    """`solve_ivp`'s event location by hand: step `RK45`, test the crossing of the
    accepted step (g > 0 before, g <= 0 after), `brentq` on its dense output."""
    solver = si.RK45(rhs, T0, y0, T1, rtol=RTOL, atol=ATOL)
    g_old = y0[1]
    while solver.status == "running":
        solver.step()
        g_new = solver.y[1]
        if g_old > 0 and g_new <= 0:
            piece = solver.dense_output()
            return brentq(lambda t: piece(t)[1], solver.t_old, solver.t,
                          xtol=4 * EPS, rtol=4 * EPS)
        g_old = g_new
    return T1


# ------------------------------------------------------------------ helpers


def block(fn, *args):
    return lambda: jax.block_until_ready(fn(*args))


def check_close(name, got, want, *, atol=1e-8, rtol=0.0):
    got, want = np.asarray(got, float), np.asarray(want, float)
    err = float(np.max(np.abs(got - want)))
    print(f"# same numbers: {name}: max |difference| = {err:.2e}", flush=True)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)
    return err


def table(timing, anchor, title):
    print(f"\n#### {title}: paired ratio to {anchor}, median [IQR], "
          f"{timing.rounds} rounds\n")
    print("| configuration | µs (median) | ÷ anchor |")
    print("|---|---:|---:|")
    for name in timing.names:
        print(f"| {name} | {us(timing.median(name))} | "
              f"{ratio_cell(timing.paired(name, anchor))} |")
    print(flush=True)


def grad2(f):
    return jax.jit(jax.grad(f, argnums=(0, 1)))


# ------------------------------------------------------------------ parts


def part_diffrax(run, rounds):
    th, k = jnp.asarray(THETA), jnp.asarray(K)
    ts = jnp.asarray(TS_TRAJ)
    fwd = {
        "raw diffrax": jax.jit(raw_time),
        "pysciml default": jax.jit(ps_time),
        "pysciml DiscreteAdjoint": jax.jit(lambda th, k: ps_time(
            th, k, sensitivity=DISCRETE)),
        "raw diffrax, 50 saves": jax.jit(lambda th, k: raw_traj(th, k, ts)),
        "pysciml default, 50 saves": jax.jit(lambda th, k: (
            lambda s: (s.ys, s.event_time))(ps_sol(th, k, ts=ts))),
    }
    t_ref = fwd["raw diffrax"](th, k)
    for name, fn in fwd.items():
        out = fn(th, k)
        check_close(f"forward event time, {name}", out[1] if isinstance(out, tuple)
                    else out, t_ref)
    check_close("forward 50 saves, ys", fwd["pysciml default, 50 saves"](th, k)[0],
                fwd["raw diffrax, 50 saves"](th, k)[0], atol=1e-12)
    run.extra["event time"] = float(t_ref)
    stats = jax.jit(lambda th, k: raw_sol(th, k).stats)(th, k)
    run.extra["raw diffrax steps"] = {k_: int(v) for k_, v in stats.items()}
    print(f"# landing at t = {float(t_ref):.12f}; raw diffrax steps: "
          f"{run.extra['raw diffrax steps']}", flush=True)

    t = run.add("diffrax forward", compare(
        {name: block(fn, th, k) for name, fn in fwd.items()}, rounds=rounds))
    table(t, "raw diffrax", "Diffrax forward, event time (50-save rows: ÷ raw diffrax "
          "without saves; see the figure for the paired 50-save ratio)")
    run.figure("diffrax forward, event time: pysciml (default sensitivity) vs raw",
               t.ratios("pysciml default", "raw diffrax"),
               anchor="raw diffrax, identical work (Tsit5, PIDController, Event with "
               "the same Newton tolerances, SaveAt(t1=True))",
               what="pysciml / raw", goal=f"<= {GOAL}")
    run.figure("diffrax forward, event time: pysciml (DiscreteAdjoint) vs raw",
               t.ratios("pysciml DiscreteAdjoint", "raw diffrax"),
               anchor="raw diffrax, identical work", what="pysciml / raw",
               goal=f"<= {GOAL}")
    run.figure("diffrax forward, 50 saves + event time: pysciml vs raw",
               t.ratios("pysciml default, 50 saves", "raw diffrax, 50 saves"),
               anchor="raw diffrax, SaveAt(subs=[SubSaveAt(ts), SubSaveAt(t1=True)])",
               what="pysciml / raw", goal=f"<= {GOAL}")

    grads = {}
    for what, raw_f, ps_f in (("landing time", raw_time, ps_time),
                              ("landing distance", raw_distance, ps_distance)):
        fns = {
            "raw diffrax": grad2(raw_f),
            "pysciml DiscreteAdjoint": grad2(lambda th, k, f=ps_f: f(
                th, k, sensitivity=DISCRETE)),
            "pysciml default (ForwardSensitivity)": grad2(ps_f),
        }
        g_ref = np.asarray(fns["raw diffrax"](th, k))
        check_close(f"gradient of {what}, DiscreteAdjoint",
                    fns["pysciml DiscreteAdjoint"](th, k), g_ref, atol=0, rtol=1e-8)
        # Forward sensitivities solve the sensitivity equations under error control:
        # different steps, so agreement to the tolerance, not to rounding.
        check_close(f"gradient of {what}, default (ForwardSensitivity)",
                    fns["pysciml default (ForwardSensitivity)"](th, k), g_ref,
                    atol=0, rtol=1e-6)
        run.extra[f"gradient of {what} (theta, k), raw"] = g_ref.tolist()
        t = run.add(f"diffrax gradient, {what}", compare(
            {name: block(fn, th, k) for name, fn in fns.items()}, rounds=rounds))
        table(t, "raw diffrax", f"Diffrax gradient of the {what} w.r.t. (theta, k)")
        for side in ("pysciml DiscreteAdjoint", "pysciml default (ForwardSensitivity)"):
            run.figure(f"diffrax gradient of the {what}: {side} vs raw",
                       t.ratios(side, "raw diffrax"),
                       anchor="raw diffrax RecursiveCheckpointAdjoint through its "
                       "own Event" + (" (same method)" if "Discrete" in side else
                                      " (a different method)"),
                       what="pysciml / raw", goal=f"<= {GOAL}")
        grads[what] = t
    return grads


def part_batch(run, rounds):
    ths, k = jnp.asarray(THETAS), jnp.asarray(K)
    vm = lambda f: jax.jit(jax.vmap(f, in_axes=(0, None)))  # noqa: E731
    fwd = {"raw diffrax": vm(raw_time), "pysciml default": vm(ps_time)}
    t_ref = fwd["raw diffrax"](ths, k)
    check_close("batch forward event times", fwd["pysciml default"](ths, k), t_ref)
    t = run.add(f"batch {BATCH} forward", compare(
        {name: block(fn, ths, k) for name, fn in fwd.items()}, rounds=rounds))
    table(t, "raw diffrax", f"vmap over {BATCH} angles, forward (event times)")
    run.figure(f"diffrax vmap {BATCH} forward, event time: pysciml vs raw",
               t.ratios("pysciml default", "raw diffrax"),
               anchor="raw diffrax vmapped, identical work", what="pysciml / raw",
               goal=f"<= {GOAL}")

    vg = lambda f: vm(jax.grad(f, argnums=(0, 1)))  # noqa: E731
    fns = {
        "raw diffrax": vg(raw_time),
        "pysciml DiscreteAdjoint": vg(lambda th, k: ps_time(th, k,
                                                            sensitivity=DISCRETE)),
        "pysciml default (ForwardSensitivity)": vg(ps_time),
    }
    g_ref = np.asarray(fns["raw diffrax"](ths, k))
    check_close("batch gradient, DiscreteAdjoint",
                fns["pysciml DiscreteAdjoint"](ths, k), g_ref, atol=0, rtol=1e-8)
    check_close("batch gradient, default", fns["pysciml default (ForwardSensitivity)"](
        ths, k), g_ref, atol=0, rtol=1e-6)
    t = run.add(f"batch {BATCH} gradient", compare(
        {name: block(fn, ths, k) for name, fn in fns.items()}, rounds=rounds))
    table(t, "raw diffrax", f"vmap over {BATCH} angles, gradient of the landing time")
    for side in ("pysciml DiscreteAdjoint", "pysciml default (ForwardSensitivity)"):
        run.figure(f"diffrax vmap {BATCH} gradient of the landing time: {side} vs raw",
                   t.ratios(side, "raw diffrax"),
                   anchor="raw diffrax vmapped, RecursiveCheckpointAdjoint",
                   what="pysciml / raw", goal=f"<= {GOAL}")


def part_scipy(run, rounds):
    th, k = jnp.asarray(THETA), jnp.asarray(K)
    y0 = np.asarray(launch(th))
    rhs = make_rhs(K, G)
    fwd = jax.jit(lambda th, k: ps_time(th, k, backend="scipy"))
    g_default = grad2(lambda th, k: ps_time(th, k, backend="scipy"))
    g_interp = grad2(lambda th, k: ps_time(th, k, backend="scipy",
                                           sensitivity=ps.InterpolatingAdjoint()))
    t_ref = raw_solve_ivp(rhs, y0)
    check_close("scipy: hand-written RK45 loop vs solve_ivp", raw_loop(rhs, y0), t_ref)
    check_close("scipy: pysciml vs solve_ivp", fwd(th, k), t_ref)
    check_close("scipy vs diffrax event time", t_ref, jax.jit(raw_time)(th, k),
                atol=1e-6)
    g_ref = np.asarray(grad2(raw_time)(th, k))
    check_close("scipy gradient (default) vs raw diffrax", g_default(th, k), g_ref,
                atol=0, rtol=1e-5)
    check_close("scipy gradient (InterpolatingAdjoint) vs raw diffrax",
                g_interp(th, k), g_ref, atol=0, rtol=1e-5)
    # Diagnose: one pysciml SciPy solve without an event, to the landing time (the
    # second of the two solves pysciml's SciPy forward makes).
    to_landing = ps.ODEProblem(drag, T0, float(t_ref))
    no_event = jax.jit(lambda th, k: ps.solve(
        to_landing, launch(th), args_of(k), saveat=jnp.array([float(t_ref)]),
        backend="scipy", rtol=RTOL, atol=ATOL).ys[-1])
    check_close("scipy: pysciml no-event solve to the landing time, height",
                no_event(th, k)[1], 0.0, atol=1e-8)
    nfev = si.solve_ivp(rhs, (T0, T1), y0, method="RK45", events=height, rtol=RTOL,
                        atol=ATOL).nfev
    run.extra["solve_ivp nfev"] = int(nfev)
    t = run.add("scipy", compare({
        "raw solve_ivp RK45 events": lambda: raw_solve_ivp(rhs, y0),
        "raw RK45 loop + brentq": lambda: raw_loop(rhs, y0),
        "pysciml scipy forward": block(fwd, th, k),
        "pysciml scipy, no event, one solve to the landing time": block(no_event, th,
                                                                       k),
        "pysciml scipy gradient, default (ForwardSensitivity)": block(g_default, th, k),
        "pysciml scipy gradient, InterpolatingAdjoint": block(g_interp, th, k),
    }, rounds=rounds))
    raws = ["raw solve_ivp RK45 events", "raw RK45 loop + brentq"]
    fastest = t.fastest(raws)
    table(t, fastest, f"SciPy, event time (anchor: the fastest raw, {fastest})")
    run.figure("scipy forward, event time: pysciml vs fastest raw",
               t.ratios("pysciml scipy forward", fastest),
               anchor=f"{fastest}, NumPy rhs (fastest of {', '.join(raws)})",
               what="pysciml / raw", digits=2)
    run.figure("scipy forward, event time: pysciml vs solve_ivp",
               t.ratios("pysciml scipy forward", "raw solve_ivp RK45 events"),
               anchor="solve_ivp RK45 with a terminal event, NumPy rhs",
               what="pysciml / raw", digits=2)
    for side in ("pysciml scipy gradient, default (ForwardSensitivity)",
                 "pysciml scipy gradient, InterpolatingAdjoint"):
        run.figure(f"scipy gradient of the landing time ({side.split(', ', 1)[1]}) "
                   "vs fastest raw forward", t.ratios(side, fastest),
                   anchor=f"{fastest} forward", what="pysciml gradient / raw forward",
                   digits=2)


def count_conditions(fn, th, k, batched=False):
    """How many times the condition runs in one solve (every step, and every Newton
    iteration of the root find), counted by a host callback; `batched`: vmapped over
    `th`, where the callback runs once per iteration of the batched loops."""
    box = [0]

    def bump():
        box[0] += 1

    def counted(t, y, args, **kwargs):
        jax.debug.callback(bump)
        return y[1]

    f = lambda th, k: fn(th, k, counted)  # noqa: E731
    jax.block_until_ready(jax.jit(jax.vmap(f, in_axes=(0, None)) if batched else f)(
        th, k))
    return box[0]


def _zero_weighted(sol):
    """The event time plus the saved states times 0: their cotangents are zeros that
    JAX cannot drop, as in pysciml's custom_vjp (whose backward receives them)."""
    return sol.ts[1][0] + 0.0 * (jnp.sum(sol.ys[0]) + jnp.sum(sol.ys[1]))


def diagnose_variants():
    """Forward and gradient variants, from raw Diffrax to pysciml, each adding one
    thing pysciml does."""
    all3 = dict(scaled=True, subs=True, throw=False)
    fwd = {
        "raw diffrax": raw_time,
        "raw + scaled condition": lambda th, k: raw_time(th, k, scaled=True),
        "raw + SubSaveAt pair": lambda th, k: raw_time(th, k, subs=True),
        "raw + SubSaveAt(t0), SubSaveAt(t1) (no save-time loop)": lambda th, k:
            raw_time(th, k, subs="t0"),
        "raw + throw=False": lambda th, k: raw_time(th, k, throw=False),
        "raw + all three (pysciml's diffeqsolve)": lambda th, k: raw_time(th, k,
                                                                          **all3),
        "pysciml backend's diffeqsolve only": backend_time,
        "pysciml backend's diffeqsolve + event_outputs": lambda th, k: backend_time(
            th, k, outputs=True),
        "pysciml DiscreteAdjoint": lambda th, k: ps_time(th, k, sensitivity=DISCRETE),
        "pysciml default": ps_time,
    }
    grads = {
        "raw diffrax": raw_time,
        "raw + scaled condition": lambda th, k: raw_time(th, k, scaled=True),
        "raw + SubSaveAt pair": lambda th, k: raw_time(th, k, subs=True),
        "raw + throw=False": lambda th, k: raw_time(th, k, throw=False),
        "raw + all three (pysciml's diffeqsolve)": lambda th, k: raw_time(th, k,
                                                                          **all3),
        "raw + all three, saved ys in the loss times 0": lambda th, k: _zero_weighted(
            raw_sol(th, k, **all3)),
        "pysciml backend's diffeqsolve only": backend_time,
        "pysciml backend's diffeqsolve + event_outputs": lambda th, k: backend_time(
            th, k, outputs=True),
        "pysciml DiscreteAdjoint": lambda th, k: ps_time(th, k, sensitivity=DISCRETE),
    }
    return fwd, grads


def part_diagnose(run, rounds):
    th, k = jnp.asarray(THETA), jnp.asarray(K)
    ths = jnp.asarray(THETAS)
    fwd_fns, grad_fns = diagnose_variants()
    vm = lambda f: jax.jit(jax.vmap(f, in_axes=(0, None)))  # noqa: E731
    groups = {
        "forward": ({**{n: jax.jit(f) for n, f in fwd_fns.items()},
                     "pysciml default, the whole Solution returned": jax.jit(ps_sol)},
                    th, 1e-8, 0.0),
        "gradient": ({n: grad2(f) for n, f in grad_fns.items()}, th, 0.0, 1e-8),
        f"vmap {BATCH} forward": ({n: vm(f) for n, f in fwd_fns.items()}, ths, 1e-8,
                                  0.0),
        f"vmap {BATCH} gradient": ({n: vm(jax.grad(f, argnums=(0, 1)))
                                    for n, f in grad_fns.items()}, ths, 1e-14, 1e-8),
    }
    compiled = {}
    for group, (fns, x, atol, rtol) in groups.items():
        ref = fns["raw diffrax"](x, k)
        for name, fn in fns.items():
            out = fn(x, k)
            check_close(f"diagnose {group}, {name}",
                        out.event_time if isinstance(out, ps.Solution) else out, ref,
                        atol=atol, rtol=rtol)
        t = run.add(f"diagnose {group}", compare(
            {name: block(fn, x, k) for name, fn in fns.items()}, rounds=rounds))
        table(t, "raw diffrax", f"Diagnose: Diffrax {group}, variants")
        compiled[group] = (fns, x)

    counts = {
        "raw condition": count_conditions(
            lambda th, k, c: raw_time(th, k, cond=c), th, k),
        "scaled condition (pysciml's)": count_conditions(
            lambda th, k, c: raw_time(th, k, cond=c, scaled=True), th, k),
        f"vmap {BATCH}, raw condition": count_conditions(
            lambda th, k, c: raw_time(th, k, cond=c), ths, k, batched=True),
        f"vmap {BATCH}, scaled condition": count_conditions(
            lambda th, k, c: raw_time(th, k, cond=c, scaled=True), ths, k,
            batched=True),
    }
    steps = int(jax.jit(lambda th, k: raw_sol(th, k).stats["num_steps"])(th, k))
    batch_steps = np.asarray(vm(lambda th, k: raw_sol(th, k).stats["num_steps"])(
        ths, k))
    print(f"\n# condition evaluations per solve (steps: {steps}; vmapped: "
          f"{batch_steps.min()}-{batch_steps.max()} per item; the rest is the root "
          f"find): {counts}")
    hlo = {}
    for group, (fns, x) in compiled.items():
        if group.startswith("vmap"):
            continue
        for name, fn in fns.items():
            text = fn.lower(x, k).compile().as_text()
            hlo[f"{group}: {name}"] = {
                "lines": len(text.splitlines()),
                "while": text.count(" while("),
                "conditional": text.count(" conditional("),
                "custom-call": text.count(" custom-call("),
                "fusion": text.count(" fusion("),
            }
    print("\n| compiled HLO | lines | while | conditional | custom-call | fusion |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, h in hlo.items():
        print(f"| {name} | {h['lines']} | {h['while']} | {h['conditional']} | "
              f"{h['custom-call']} | {h['fusion']} |")
    run.extra["diagnose"] = {"condition evaluations": counts, "steps": steps,
                             "vmap steps": batch_steps.tolist(), "hlo": hlo}
    run.save()


PARTS = {"diffrax": part_diffrax, "batch": part_batch, "scipy": part_scipy,
         "diagnose": part_diagnose}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_rounds_arguments(parser, default=41, quick=7)
    parser.add_argument("--part", default="all", choices=["all", *PARTS])
    args = parser.parse_args()
    rounds = rounds_of(args)
    run = Run("events")
    for name, part in PARTS.items():
        if args.part in ("all", name):
            print(f"\n## {name}", flush=True)
            part(run, rounds)
            print(f"# load average after {name}: {os.getloadavg()}", flush=True)
    run.footer()


if __name__ == "__main__":
    main()

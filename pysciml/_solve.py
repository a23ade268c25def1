"""`solve`: argument checks, flattening, and the one `jax.custom_vjp` shared by every
backend."""

import functools as ft
import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ._backend import get_backend
from ._backend.base import AbstractBackend, FlatProblem, SolveOptions
from ._event import Event, FlatEvent, check_condition, event_outputs, event_times
from ._flatten import FlatVectorField, eval_shape_of, spec_of, split_args
from ._forward import (
    MSG_TOO_MANY_DIRECTIONS,
    ForwardSensitivityField,
    augmented_sparsity,
)
from ._problem import ODEProblem, _Frozen
from ._sensitivity import AbstractSensitivity, ForwardSensitivity
from ._shard import explicit_vmap_errors, island, local
from ._solution import RESULTS, Solution, result_from_code
from ._solver import AbstractSolver


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _names(table) -> str:
    return ", ".join(f"ps.{k.__name__}()" for k in table)


def _check_option(name, value, base, table, backend):
    if not isinstance(value, base):
        raise TypeError(
            f"`solve({name}=...)` must be an instance of `ps.{base.__name__}`, such "
            f"as {_names(table)}; got {value!r}."
        )
    if type(value) not in table:
        raise ValueError(
            f"`solve({name}={type(value).__name__}())` is not supported by the "
            f"{backend.name!r} backend. It supports: {_names(table)}."
        )


def _check_positive(name, value, kind):
    if (
        isinstance(value, bool)
        or not isinstance(value, kind)
        or not np.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"`solve({name}=...)` must be a positive finite Python "
            f"{'int' if kind is numbers.Integral else 'float'}; got {value!r}."
        )


def _check_finite(name, tree):
    """NaN or Inf inputs: an error now if the values are known, else a runtime check."""
    runtime = []
    for path, leaf in jtu.tree_leaves_with_path(tree):
        if _is_concrete(leaf):
            if not np.all(np.isfinite(np.asarray(leaf))):
                raise ValueError(
                    f"`{name}{jtu.keystr(path)}` contains NaN or Inf. Every value in "
                    f"`{name}` must be finite."
                )
        else:
            runtime.append(jnp.all(jnp.isfinite(leaf)))
    return runtime


def _check_y0(y0):
    leaves = jtu.tree_leaves(y0)
    if not leaves:
        raise ValueError("`solve(y0=...)` is empty: the state needs at least one value.")
    for path, leaf in jtu.tree_leaves_with_path(y0):
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"`y0{jtu.keystr(path)}` has dtype {dtype}; the state must be "
                "floating point. Pass e.g. `jnp.asarray(y0, dtype=float)`."
            )


def _check_saveat(saveat, problem: ODEProblem, dtype):
    if saveat is None:
        raise TypeError(
            "`solve(saveat=...)` is required: the times at which to return the "
            f"solution, e.g. `saveat=jnp.linspace({problem.t0}, {problem.t1}, 100)`."
        )
    ts = jnp.asarray(saveat)
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError(
            "`solve(saveat=...)` must be a non-empty 1D array of times; got shape "
            f"{ts.shape}. For a single time use `saveat=jnp.array([t])`."
        )
    if not jnp.issubdtype(ts.dtype, jnp.floating) and not jnp.issubdtype(
        ts.dtype, jnp.integer
    ):
        raise TypeError(f"`solve(saveat=...)` must be real times; got dtype {ts.dtype}.")
    ts = ts.astype(dtype)
    # Repeated times are allowed (several observations at one instant): host
    # backends solve at the unique times and gather (see `host.SaveTimes`); diffrax
    # takes non-decreasing `SaveAt(ts=...)` as it is.
    msg_order = (
        "`solve(saveat=...)` must be non-decreasing (repeated times are allowed). Sort "
        "the save times, and your data with them."
    )
    msg_span = (
        f"`solve(saveat=...)` must lie inside the problem's span [t0, t1] = "
        f"[{problem.t0}, {problem.t1}]. Widen `ODEProblem(t0=..., t1=...)` or drop "
        "the times outside it."
    )
    if _is_concrete(saveat):
        t = np.asarray(saveat, dtype=np.float64)
        if not np.all(np.isfinite(t)):
            raise ValueError("`solve(saveat=...)` contains NaN or Inf.")
        if np.any(np.diff(t) < 0):
            bad = int(np.argmax(np.diff(t) < 0))
            raise ValueError(f"{msg_order} (saveat[{bad}]={t[bad]}, "
                             f"saveat[{bad + 1}]={t[bad + 1]})")
        if t[0] < problem.t0 or t[-1] > problem.t1:
            raise ValueError(f"{msg_span} Got [{t[0]}, {t[-1]}].")
    else:
        ts = eqx.error_if(ts, jnp.any(jnp.diff(ts) < 0), msg_order)
        ts = eqx.error_if(ts, (ts[0] < problem.t0) | (ts[-1] > problem.t1), msg_span)
    return ts


def _check_vector_field(problem: ODEProblem, y0, args):
    t = jax.ShapeDtypeStruct((), jnp.result_type(float))
    out = eval_shape_of(problem.vector_field, "ODEProblem(vector_field=...)",
                        "vector_field(t, y0, args)", t, y0, args)
    want = jtu.tree_structure(y0)
    got = jtu.tree_structure(out)
    if want != got:
        raise ValueError(
            "`ODEProblem(vector_field=...)` must return a pytree of the same structure "
            f"as `y0`.\n  y0 has structure:     {want}\n  vector_field returned: {got}"
        )
    for path, a, b in zip(
        [p for p, _ in jtu.tree_leaves_with_path(y0)],
        jtu.tree_leaves(y0),
        jtu.tree_leaves(out),
    ):
        if jnp.shape(a) != b.shape:
            raise ValueError(
                f"`ODEProblem(vector_field=...)` returned shape {b.shape} for "
                f"`y0{jtu.keystr(path)}` of shape {jnp.shape(a)}: dy/dt must have the "
                "shape of y. (A common cause: returning a list of scalars with a "
                "trailing dimension, or broadcasting against a parameter vector.)"
            )


class _Static(eqx.Module):
    """The non-array inputs of the custom_vjp, hashable as a whole."""

    backend: AbstractBackend = eqx.field(static=True)
    problem: FlatProblem = eqx.field(static=True)
    options: SolveOptions = eqx.field(static=True)


def _forward(static: _Static, y0, p, ts, residuals: bool):
    """The backend's forward pass: `((ys, code, stats, event), residuals)`, where
    `event` is `(t_event, happened)` for a problem with an event (then `ys` has one
    more row, the state at `t_event`), else `None`."""
    backend, problem, options = static.backend, static.problem, static.options
    if problem.event is None:
        (ys, code, stats), res = backend.forward(
            problem, y0, p, ts, options, residuals=residuals
        )
        return (ys, code, stats, None), res
    (ys, code, stats, t_event, happened), res = backend.forward_event(
        problem, y0, p, ts, options, residuals=residuals
    )
    return (ys, code, stats, (t_event, happened)), res


# Each rule is `local` (`_shard.py`): inside `jax.shard_map`, JAX may trace it outside
# `solve`'s local island (a backward pass at transpose time), and it re-enters it.
@ft.partial(jax.custom_vjp, nondiff_argnums=(0,))
@local
def _solve_flat(static: _Static, y0, p, ts):
    out, _ = _forward(static, y0, p, ts, residuals=False)
    return out


@local
def _solve_flat_fwd(static: _Static, y0, p, ts):
    out, residuals = _forward(static, y0, p, ts, residuals=True)
    event = out[3]
    # With an event, `ys` are at `event_times(ts, t_event)`: differentiate there.
    ts_vjp = ts if event is None else event_times(ts, event[0])
    return out, (y0, p, ts, ts_vjp, residuals)


@local
def _solve_flat_bwd(static: _Static, saved, cotangents):
    y0, p, ts, ts_vjp, residuals = saved
    # The result code, stats and event time are not differentiated here (the event
    # time's derivative is `solve`'s implicit one).
    ys_bar = cotangents[0]
    if static.problem.event is not None and static.backend.events_differentiated(
        static.options
    ):
        ys_bar = (ys_bar, cotangents[3][0])
    y0_bar, p_bar = static.backend.vjp(
        static.problem, y0, p, ts_vjp, residuals, ys_bar, static.options
    )
    # Save times are not differentiated.
    return y0_bar, p_bar, jnp.zeros_like(ts)


_solve_flat.defvjp(_solve_flat_fwd, _solve_flat_bwd)


# The forward-sensitivity path: the backend's plain `forward` as the primal, and a JVP
# rule that solves the sensitivity equations with the same backend, through this very
# function. The tangent is `S @ (dy0, dp)`, a matrix product with a primal value: JAX
# transposes it for reverse mode (and keeps `S` from the forward pass, so `grad` costs
# no backward solve), and differentiating the rule again augments once more, so
# `jax.hessian` works on every backend.
@ft.partial(jax.custom_jvp, nondiff_argnums=(0,))
@local
def _solve_flat_forward_mode(static: _Static, y0, p, ts):
    out, _ = _forward(static, y0, p, ts, residuals=False)
    return out


@ft.lru_cache(maxsize=32)
def _augmented_pattern(pattern: _Frozen, n: int, m: int) -> _Frozen:
    # One object per (pattern, n, m): host backends cache their Jacobians by identity.
    return _Frozen(augmented_sparsity(pattern.value, n, m))


def _augmented(static: _Static, n: int, m: int) -> tuple[_Static, ForwardSensitivityField]:
    problem = static.problem
    field = ForwardSensitivityField(problem.vector_field, n, m)
    pattern = problem.jac_sparsity
    flat = FlatProblem(
        vector_field=field,
        t0=problem.t0,
        t1=problem.t1,
        jac_sparsity=None if pattern is None else _augmented_pattern(pattern, n, m),
        # The event reads the state part of the augmented state: one solve locates
        # it and gives the sensitivities at the (fixed) event time.
        event=problem.event,
    )
    return _Static(static.backend, flat, static.options), field


@_solve_flat_forward_mode.defjvp
@local
def _solve_flat_forward_mode_jvp(static: _Static, primals, tangents):
    y0, p, ts = primals
    dy0, dp, _ = tangents  # Save times are not differentiated.
    n, m = y0.shape[-1], p.shape[-1]
    aug, field = _augmented(static, n, m)
    zs, code, stats, event = _solve_flat_forward_mode(
        aug, field.initial_state(y0), p, ts
    )
    ys, s = field.split(zs)
    # A failed solve's sensitivities are NaN; `solve` replaces its values by NaN with
    # zero derivatives, but `grad` transposes this product, and a zero cotangent
    # times a NaN `S` would still poison the sum over a batch. So: zero.
    s = jnp.where((code != RESULTS.successful._value)[..., None, None, None], 0.0, s)
    dys = s @ jnp.concatenate([dy0, dp])

    def no_tangent(x):
        if jnp.issubdtype(jnp.result_type(x), jnp.floating):
            return jnp.zeros_like(x)  # the event time: `solve` adds its derivative
        return np.zeros(jnp.shape(x), jax.dtypes.float0)

    return (ys, code, stats, event), (dys, *jtu.tree_map(no_tangent,
                                                         (code, stats, event)))


# Outside any jit (eager use), each call would otherwise re-trace the backend, and
# re-compile its `pure_callback` (~8 ms on host backends). Inside a jit it is inlined.
_solve_flat_jit = jax.jit(_solve_flat, static_argnums=0)
_solve_flat_forward_mode_jit = jax.jit(_solve_flat_forward_mode, static_argnums=0)


# `sensitivity=None` picks forward sensitivities up to this many inputs (states plus
# differentiated parameters). Measured (`benchmarks/forward_mode.py`, RESULTS.md): the
# forward-sensitivity gradient costs 0.07-0.6x the adjoint's at 3-6 inputs on Diffrax
# and SciPy (Lotka-Volterra, the oscillator, a supernova-like integral), and 2.3-8x at
# 65 (the heat equation on 64 nodes); its cost grows with the inputs, the adjoint's
# does not. 8 is on the safe side of the crossover on both backends.
FORWARD_MODE_MAX_INPUTS = 8


def default_sensitivity(backend: AbstractBackend, n: int, m: int) -> AbstractSensitivity:
    """The sensitivity that `solve(sensitivity=None)` uses.

    **Arguments:**

    - `backend`: the backend object.
    - `n`, `m`: the sizes of the flattened state and of the differentiated args.

    **Returns:**

    `ps.ForwardSensitivity()` if `n + m <= FORWARD_MODE_MAX_INPUTS`, else the
    backend's default adjoint (`backend.default_sensitivity`).
    """
    if n + m <= FORWARD_MODE_MAX_INPUTS:
        return ForwardSensitivity()
    return backend.default_sensitivity


def solve(
    problem: ODEProblem,
    y0,
    args=None,
    *,
    saveat,
    solver: AbstractSolver | None = None,
    backend=None,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    sensitivity: AbstractSensitivity | None = None,
    max_steps: int = 4096,
    throw: bool = True,
    event: Event | None = None,
) -> Solution:
    """Solves an ODE, differentiably, on any backend.

    `jax.jit`, `jax.grad` (reverse mode) and `jax.vmap` work through `solve` on every
    backend. The gradient is taken with respect to `y0` and to the floating-point
    leaves of `args`; save times are not differentiated.

    **Arguments:**

    - `problem`: a [`pysciml.ODEProblem`][].
    - `y0`: the initial state, a pytree of floating-point arrays. The output keeps the
        dtype of each leaf (host backends compute in float64 internally).
    - `args`: anything passed as the third argument of the vector field: a pytree of
        parameters, an `eqx.Module`. Its floating-point leaves are differentiated, the
        rest is static.
    - `saveat`: a non-decreasing 1D array of times inside `[t0, t1]`; repeated
        times (several observations at one instant) and `t0` itself are allowed.
        With an `event`, `None` returns only the event outputs (`ys` then has no
        save times).
    - `solver`: a solver tag, e.g. `ps.Tsit5()`, `ps.Kvaerno5()`; `None` uses the
        backend's default (`Tsit5` on diffrax and Julia, `Dopri5` on SciPy).
    - `backend`: `"diffrax"`, `"scipy"`, `"julia"`, a backend object, or `None` for
        the default (`ps.set_default_backend`, then `$PYSCIML_BACKEND`, then
        `"diffrax"`).
    - `rtol`, `atol`: the relative and absolute tolerances of the adaptive step.
    - `sensitivity`: how to compute derivatives, e.g. `ps.ForwardSensitivity()`,
        `ps.DiscreteAdjoint()` or `ps.InterpolatingAdjoint()`. `None` chooses (see
        `default_sensitivity`): forward sensitivities when the state and the
        differentiated args have at most `FORWARD_MODE_MAX_INPUTS` (8) entries
        together, else the backend's adjoint.
    - `max_steps`: the most steps the solver may take.
    - `throw`: if `True`, a failed solve raises an error (also under `jit`). If
        `False`, a failed solve returns NaN in `ys` and the reason in `result`: use
        this inside inference, where a NaN likelihood rejects the proposal.
    - `event`: a [`pysciml.Event`][]: stop at the first time its condition crosses
        zero. The solution then holds `event_time`, `event_state` and
        `event_happened`, differentiable like `ys`; save times after the event hold
        the event state (see [`pysciml.Solution`][]). Without a crossing the solve
        runs to `t1`. Only first derivatives are exact through an event.

    **Returns:**

    A [`pysciml.Solution`][] with `ts`, `ys` (leaves of shape `(len(saveat),
    *leaf.shape)`), `result` and `stats`; with an event, also `event_time`,
    `event_state` and `event_happened`.
    """
    if not isinstance(problem, ODEProblem):
        raise TypeError(
            "`solve(problem=...)` must be a `ps.ODEProblem`; got "
            f"{type(problem).__name__}. Build one with `ps.ODEProblem(f, t0, t1)`."
        )
    backend = get_backend(backend)
    if solver is None:
        solver = backend.default_solver
    _check_option("solver", solver, AbstractSolver, backend.solvers, backend)
    if sensitivity is not None and not isinstance(sensitivity, ForwardSensitivity):
        # Forward sensitivities are `solve`'s own, on every backend.
        _check_option(
            "sensitivity", sensitivity, AbstractSensitivity, backend.sensitivities,
            backend,
        )
    _check_positive("rtol", rtol, numbers.Real)
    _check_positive("atol", atol, numbers.Real)
    _check_positive("max_steps", max_steps, numbers.Integral)
    if not isinstance(throw, bool):
        raise TypeError(f"`solve(throw=...)` must be True or False; got {throw!r}.")
    if event is not None and not isinstance(event, Event):
        raise TypeError(
            "`solve(event=...)` must be a `ps.Event(condition, direction)`; got "
            f"{type(event).__name__}."
        )

    y0 = jtu.tree_map(jnp.asarray, y0)
    _check_y0(y0)
    dynamic_args, static_args = split_args(args)
    finite = _check_finite("y0", y0) + _check_finite("args", dynamic_args)
    _check_vector_field(problem, y0, args)
    if event is not None:
        check_condition(event, jax.ShapeDtypeStruct((), jnp.result_type(float)), y0,
                        args)

    y_spec = spec_of(y0)
    p_spec = spec_of(dynamic_args)
    if sensitivity is None:
        sensitivity = default_sensitivity(backend, y_spec.size, p_spec.size)
    forward_mode = isinstance(sensitivity, ForwardSensitivity)
    dtype = y_spec.dtype
    if saveat is None and event is not None:
        # Only the event outputs: no save times (and no save-time bookkeeping in the
        # solver's steps).
        ts = jnp.zeros((0,), dtype)
    else:
        ts = _check_saveat(saveat, problem, dtype)
    flat_event = None if event is None else FlatEvent(
        event.condition, event.direction, y_spec, p_spec, static_args
    )
    flat = FlatProblem(
        vector_field=FlatVectorField(problem.vector_field, y_spec, p_spec, static_args),
        t0=problem.t0,
        t1=problem.t1,
        jac_sparsity=problem.jac_sparsity,
        event=flat_event,
    )
    options = SolveOptions(
        solver=solver,
        sensitivity=sensitivity,
        rtol=float(rtol),
        atol=float(atol),
        max_steps=int(max_steps),
        throw=throw,
    )
    y0_flat = y_spec.flatten(y0)
    p_flat = p_spec.flatten(dynamic_args, dtype=p_spec.dtype if p_spec.dtypes else dtype)
    if forward_mode and y_spec.size + p_spec.size > sensitivity.max_directions:
        raise ValueError(MSG_TOO_MANY_DIRECTIONS.format(
            n=y_spec.size, m=p_spec.size, directions=y_spec.size + p_spec.size,
            limit=sensitivity.max_directions))
    solve_flat = _solve_flat_forward_mode_jit if forward_mode else _solve_flat_jit

    def run(y0_flat, p_flat, ts, ok):
        ys, code, stats, located = solve_flat(
            _Static(backend, flat, options), y0_flat, p_flat, ts
        )

        if ok is not None:
            code = jnp.where(ok, code, RESULTS.nonfinite._value)
        failed = code != RESULTS.successful._value
        event_fields = {}
        if event is not None:
            t_star, happened = located
            # Where the solve failed, the correction is evaluated at the initial point
            # instead of at NaN: its derivative, multiplied by the zero cotangent of the
            # NaN that replaces it below, must be finite (0 * NaN would poison a vmapped
            # batch's gradients).
            t_star = jnp.where(failed, problem.t0, t_star).astype(dtype)
            y_star = jnp.where(failed, y0_flat, ys[-1])
            ys = ys[:-1]
            t_event, y_event, grazing = event_outputs(
                flat_event, flat.vector_field, t_star, y_star, p_flat,
                happened & ~failed,
                options.rtol, options.atol,
                correct=forward_mode or not backend.events_differentiated(options),
            )
            code = jnp.where(grazing, RESULTS.event_grazing._value, code)
            failed = failed | grazing
            # Save times after the event hold the event state (with its derivative): a
            # finite value, so that a loss masked with `ts <= event_time` has finite
            # gradients.
            after = (ts > t_star)[:, None]
            ys = jnp.where(after, y_event, ys)
            t_event = jnp.where(failed, jnp.nan, t_event)
            y_event = jnp.where(failed, jnp.nan, y_event)
        result = result_from_code(code)
        # A failed solve: NaN values, and zero derivatives (the derivative of the
        # constant NaN branch) on every path, forward or reverse, so that a failed
        # member of a vmapped batch does not poison the others' gradients through
        # 0 * NaN.
        ys = jnp.where(failed, jnp.nan, ys)
        if throw:
            # On every output: under `jit`, a check attached to an unused output is
            # dropped (a loss of `event_time` alone would otherwise get a silent NaN).
            if event is None:
                ys = result.error_if(ys, failed)
            else:
                ys, t_event, y_event = result.error_if((ys, t_event, y_event), failed)
        if event is not None:
            event_fields = dict(
                event_time=t_event,
                event_state=y_spec.unflatten(y_event, restore_dtypes=True),
                event_happened=happened & ~failed,
            )
        ys_tree = y_spec.unflatten(ys, restore_dtypes=True, batch_shape=(ts.shape[0],))
        return Solution(ts=ts, ys=ys_tree, result=result, stats=stats, **event_fields)

    # Traced inputs: NaN or Inf is only known at run time.
    ok = ft.reduce(jnp.logical_and, finite) if finite else None
    # Inside `jax.shard_map`, the solve runs as a local island (`_shard.py`).
    with explicit_vmap_errors():
        return island(run)(y0_flat, p_flat, ts, ok)

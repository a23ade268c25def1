"""The Diffrax backend: solves and differentiates in traced JAX (CPU, GPU, TPU)."""

from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp

from .._sensitivity import (
    AbstractSensitivity,
    BacksolveAdjoint,
    DirectAdjoint,
    DiscreteAdjoint,
    ForwardSensitivity,
)
from .._solution import RESULTS
from .._solver import AbstractSolver, Dopri5, Dopri8, Kvaerno5, Tsit5
from ._root import BracketedNewton
from .base import AbstractBackend, FlatProblem, SolveOptions

_SOLVERS = {
    Tsit5: diffrax.Tsit5,
    Dopri5: diffrax.Dopri5,
    Dopri8: diffrax.Dopri8,
    Kvaerno5: diffrax.Kvaerno5,
}


def _adjoint(sensitivity: AbstractSensitivity) -> diffrax.AbstractAdjoint:
    if isinstance(sensitivity, DiscreteAdjoint):
        return diffrax.RecursiveCheckpointAdjoint(checkpoints=sensitivity.checkpoints)
    if isinstance(sensitivity, DirectAdjoint):
        return diffrax.DirectAdjoint()
    if isinstance(sensitivity, BacksolveAdjoint):
        return diffrax.BacksolveAdjoint()
    if isinstance(sensitivity, ForwardSensitivity):
        # `solve` differentiates this solve by its own rule (the sensitivity equations,
        # solved by this backend); the solve itself is never differentiated by diffrax.
        return diffrax.ForwardMode()
    raise AssertionError(sensitivity)  # `solve` checked support against the table.


def _saveat(ts, event: bool) -> diffrax.SaveAt:
    if not event:
        return diffrax.SaveAt(ts=ts)
    # With an event, the state at the event time is saved too, as `t1`, in a
    # `SubSaveAt` of its own: within one, diffrax writes it right after the last save
    # time before the event. No save times (`solve(saveat=None)`): only that one, and
    # no save-time loop in every step (~10% of a small event solve).
    subs = [diffrax.SubSaveAt(t1=True)]
    if ts.shape[0]:
        subs = [diffrax.SubSaveAt(ts=ts), *subs]
    return diffrax.SaveAt(subs=subs)


def _code(result) -> jax.Array:
    """Maps a `diffrax.RESULTS` item onto the value of a `pysciml.RESULTS` item."""
    r = diffrax.RESULTS
    return jnp.select(
        [
            # A terminal event is a success; `forward_event` reports it separately.
            (result == r.successful) | (result == r.event_occurred),
            result == r.max_steps_reached,
            result == r.dt_min_reached,
            result == r.nonfinite,
        ],
        [
            RESULTS.successful._value,
            RESULTS.max_steps_reached._value,
            RESULTS.dt_min_reached._value,
            RESULTS.nonfinite._value,
        ],
        RESULTS.solver_failed._value,
    ).astype(jnp.int32)


class DiffraxBackend(AbstractBackend):
    """Solves with `diffrax.diffeqsolve`, under an adaptive `PIDController` at the
    user's `rtol` and `atol`. Everything is traced JAX: it runs on any JAX device,
    and its `vjp` is itself differentiable (so `jax.jacrev(jax.jacrev(...))` works with
    `sensitivity=ps.DiscreteAdjoint()`).

    | pysciml           | diffrax                                   |
    |-------------------|-------------------------------------------|
    | `Tsit5`           | `diffrax.Tsit5`                           |
    | `Dopri5`          | `diffrax.Dopri5`                          |
    | `Dopri8`          | `diffrax.Dopri8`                          |
    | `Kvaerno5`        | `diffrax.Kvaerno5`                        |
    | `DiscreteAdjoint` | `diffrax.RecursiveCheckpointAdjoint` (default) |
    | `DirectAdjoint`   | `diffrax.DirectAdjoint`                   |
    | `BacksolveAdjoint`| `diffrax.BacksolveAdjoint`                |
    """

    name: ClassVar[str] = "diffrax"
    solvers: ClassVar[dict[type[AbstractSolver], str]] = {
        k: f"diffrax.{v.__name__}" for k, v in _SOLVERS.items()
    }
    sensitivities: ClassVar[dict[type[AbstractSensitivity], str]] = {
        DiscreteAdjoint: "diffrax.RecursiveCheckpointAdjoint",
        DirectAdjoint: "diffrax.DirectAdjoint",
        BacksolveAdjoint: "diffrax.BacksolveAdjoint",
    }
    default_solver: ClassVar[AbstractSolver] = Tsit5()
    default_sensitivity: ClassVar[AbstractSensitivity] = DiscreteAdjoint()
    computes_in_float64: ClassVar[bool] = False

    def _solve(self, problem: FlatProblem, options: SolveOptions, ts, y0, p, *,
               event=None, adjoint=None):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(problem.vector_field.with_args),
            _SOLVERS[type(options.solver)](),
            problem.t0,
            problem.t1,
            None,
            y0,
            # Unflattened once, here: see `FlatVectorField.with_args`.
            problem.vector_field.args(p),
            saveat=_saveat(ts, event is not None),
            stepsize_controller=diffrax.PIDController(
                rtol=options.rtol, atol=options.atol
            ),
            adjoint=_adjoint(options.sensitivity) if adjoint is None else adjoint,
            event=event,
            max_steps=options.max_steps,
            # pysciml applies its own failure policy (`solve(throw=...)`).
            throw=False,
        )
        stats = {
            "num_steps": jnp.asarray(sol.stats["num_accepted_steps"], jnp.int32),
            "num_rejected_steps": jnp.asarray(
                sol.stats["num_rejected_steps"], jnp.int32
            ),
            "num_fevals": jnp.asarray(-1, jnp.int32),
        }
        if event is None:
            return sol.ys, (_code(sol.result), stats)
        # Save times after the event are `inf` in diffrax; hold the event state there,
        # as every backend does (`event_times`).
        if ts.shape[0]:
            ys, y_event, t_event = sol.ys[0], sol.ys[1][0], sol.ts[1][0]
        else:  # `solve(saveat=None)`: the event alone
            ys, y_event, t_event = sol.ys[0][:0], sol.ys[0][0], sol.ts[0][0]
        ys = jnp.where((ts > t_event)[:, None], y_event, ys)
        happened = sol.result == diffrax.RESULTS.event_occurred
        out = jnp.concatenate([ys, y_event[None]])
        return out, (_code(sol.result), stats, t_event, happened)

    def _event(self, problem: FlatProblem, y0, p) -> diffrax.Event:
        """`problem.event` as a `diffrax.Event`, differentiated by diffrax itself
        where the solve is (`events_differentiated`)."""
        event, field = problem.event, problem.vector_field
        y0_c, p_c = jax.lax.stop_gradient((y0, p))
        t0 = jnp.asarray(problem.t0, y0.dtype)
        # A Newton iteration kept inside the step where the sign changed
        # (`BracketedNewton`), to near rounding, so that the event time is as
        # accurate as the solution. Optimistix's tests are absolute, so `g` is divided
        # by its scale over the span (its value at t0, or its rate there times the
        # span): `|g|` is then O(1) whatever the units of `g`.
        g0, g0_dot = jax.jvp(lambda t, y: event(t, y, p_c), (t0, y0_c),
                             (jnp.ones_like(t0), field(t0, y0_c, p_c)))
        scale = jnp.maximum(jnp.abs(g0), jnp.abs(g0_dot) * (problem.t1 - problem.t0))
        scale = jnp.where((scale > 0) & jnp.isfinite(scale), scale, 1)

        def cond_fn(t, y, args, **kwargs):
            return event(t, y, p) / scale

        tol = 100 * float(jnp.finfo(y0.dtype).eps)
        direction = {0: None, 1: True, -1: False}[event.direction]
        return diffrax.Event(cond_fn, BracketedNewton(rtol=tol, atol=tol), direction)

    def events_differentiated(self, options):
        # diffrax differentiates its own event (the implicit function theorem on its
        # dense output, in `optimistix.root_find`), in one solve: as fast as raw
        # diffrax. Not with BacksolveAdjoint, which takes no event, nor with forward
        # sensitivities, which are `solve`'s own.
        return not isinstance(options.sensitivity, (BacksolveAdjoint, ForwardSensitivity))

    def locate_event(self, problem, y0, p, options):
        y0, p = jax.lax.stop_gradient((y0, p))
        ts = jnp.asarray([problem.t0], y0.dtype)
        _, (code, _, t_event, happened) = self._solve(
            problem, options, ts, y0, p, event=self._event(problem, y0, p),
            adjoint=diffrax.RecursiveCheckpointAdjoint(),
        )
        return t_event, happened, code

    def forward_event(self, problem, y0, p, ts, options, *, residuals):
        if isinstance(options.sensitivity, BacksolveAdjoint):
            # diffrax's BacksolveAdjoint takes no event: locate, then solve to it.
            return super().forward_event(
                problem, y0, p, ts, options, residuals=residuals
            )

        # One solve: diffrax locates the event and saves at `ts` and at the event.
        def run(y0_, p_):
            ys, (code, stats, t_event, happened) = self._solve(
                problem, options, ts, y0_, p_, event=self._event(problem, y0_, p_)
            )
            return (ys, t_event), (code, stats, happened)

        if not residuals:
            (ys, t_event), (code, stats, happened) = run(y0, p)
            return (ys, code, stats, t_event, happened), None
        (ys, t_event), vjp_fn, (code, stats, happened) = jax.vjp(
            run, y0, p, has_aux=True
        )
        return (ys, code, stats, t_event, happened), vjp_fn

    def forward(self, problem, y0, p, ts, options, *, residuals):
        if not residuals:
            ys, (code, stats) = self._solve(problem, options, ts, y0, p)
            return (ys, code, stats), None
        # Save diffrax's own VJP closure, so that the backward pass costs exactly what
        # differentiating raw diffrax does: no second forward solve.
        ys, vjp_fn, (code, stats) = jax.vjp(
            lambda y0_, p_: self._solve(problem, options, ts, y0_, p_),
            y0,
            p,
            has_aux=True,
        )
        return (ys, code, stats), vjp_fn

    def vjp(self, problem, y0, p, ts, residuals, ys_bar, options):
        # With an event differentiated here, `ys_bar` is `(ys_bar, t_event_bar)`.
        return residuals(ys_bar)

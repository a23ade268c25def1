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


def _code(result) -> jax.Array:
    """Maps a `diffrax.RESULTS` item onto the value of a `pysciml.RESULTS` item."""
    r = diffrax.RESULTS
    return jnp.select(
        [
            result == r.successful,
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

    def _solve(self, problem: FlatProblem, options: SolveOptions, ts, y0, p):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(problem.vector_field.with_args),
            _SOLVERS[type(options.solver)](),
            problem.t0,
            problem.t1,
            None,
            y0,
            # Unflattened once, here: see `FlatVectorField.with_args`.
            problem.vector_field.args(p),
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(
                rtol=options.rtol, atol=options.atol
            ),
            adjoint=_adjoint(options.sensitivity),
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
        return sol.ys, (_code(sol.result), stats)

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
        return residuals(ys_bar)

"""The backend protocol: two primitives over flat arrays."""

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .._event import event_times
from .._flatten import FlatVectorField
from .._sensitivity import AbstractSensitivity
from .._solution import RESULTS
from .._solver import AbstractSolver


class SolveOptions(eqx.Module):
    """Everything about a solve that is not an array. Static: a change recompiles."""

    solver: AbstractSolver = eqx.field(static=True)
    sensitivity: AbstractSensitivity = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    throw: bool = eqx.field(static=True)


class FlatProblem(eqx.Module):
    """An `ODEProblem` after flattening: what a backend sees."""

    vector_field: FlatVectorField
    t0: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    jac_sparsity: Any = eqx.field(static=True, default=None)
    # A `FlatEvent` (`_event.py`) that ends the solve, or None.
    event: Any = eqx.field(static=True, default=None)


Stats = dict[str, Int[Array, ""]]


class AbstractBackend(eqx.Module):
    """A backend solves and differentiates a [`pysciml.FlatProblem`][] over flat
    vectors `y0` (shape `(n,)`) and `p` (shape `(m,)`).

    [`pysciml.solve`][] wraps the primitives below, once for every backend, in a single
    `jax.custom_vjp`; so a backend never sees pytrees, and never needs to know about
    `jit`, `grad` or `vmap` beyond making its primitives traceable.

    Each concrete backend declares what it supports in two tables, `solvers` and
    `sensitivities`, that map pysciml's tags onto its native methods.
    """

    name: ClassVar[str]
    solvers: ClassVar[dict[type[AbstractSolver], str]]
    sensitivities: ClassVar[dict[type[AbstractSensitivity], str]]
    default_solver: ClassVar[AbstractSolver]
    default_sensitivity: ClassVar[AbstractSensitivity]
    # Host backends compute in float64 whatever the input dtype; traced backends keep
    # the input's dtype.
    computes_in_float64: ClassVar[bool]

    @abc.abstractmethod
    def forward(
        self,
        problem: FlatProblem,
        y0: Float[Array, " n"],
        p: Float[Array, " m"],
        ts: Float[Array, " k"],
        options: SolveOptions,
        *,
        residuals: bool,
    ) -> tuple[tuple[Float[Array, "k n"], Int[Array, ""], Stats], Any]:
        """Solves the problem.

        **Arguments:**

        - `problem`, `y0`, `p`, `ts`, `options`: the flat problem, its initial state and
            parameters, the save times and the solve options.
        - `residuals`: whether the caller will call `vjp` afterwards. A backend may then
            save what its backward pass needs (diffrax saves its own VJP closure, so
            that the gradient costs no second forward solve).

        **Returns:**

        `((ys, code, stats), residuals)`: `ys` of shape `(len(ts), n)` and the dtype
        of `y0`; an `int32` code, the value of a [`pysciml.RESULTS`][] item; a dict of
        integer statistics; and a pytree of residuals (`None` if not asked for).
        """

    @abc.abstractmethod
    def vjp(
        self,
        problem: FlatProblem,
        y0: Float[Array, " n"],
        p: Float[Array, " m"],
        ts: Float[Array, " k"],
        residuals: Any,
        ys_bar: Float[Array, "k n"],
        options: SolveOptions,
    ) -> tuple[Float[Array, " n"], Float[Array, " m"]]:
        """The vector-Jacobian product of `forward`'s `ys` with respect to `y0` and
        `p`, by the method `options.sensitivity`.

        **Returns:**

        `(y0_bar, p_bar)`, of the shapes and dtypes of `y0` and `p`.
        """

    def locate_event(
        self,
        problem: FlatProblem,
        y0: Float[Array, " n"],
        p: Float[Array, " m"],
        options: SolveOptions,
    ) -> tuple[Float[Array, ""], Bool[Array, ""], Int[Array, ""]]:
        """Solves from `t0` until `problem.event` triggers or `t1`, and returns where.
        Not differentiated: `solve` differentiates the event by the implicit function
        theorem (`_event.py`).

        **Returns:**

        `(t_event, happened, code)`: the event time (`t1` if none happened, or if the
        solve failed), whether an event happened, and a result code.
        """
        raise NotImplementedError(
            f"The {self.name!r} backend does not locate events: `solve(event=...)` "
            "is not supported on it."
        )

    def events_differentiated(self, options: SolveOptions) -> bool:
        """Whether `forward_event` returns the event time and the state at it (the
        last row of `ys`) with their full derivatives, from the backend's own event
        differentiation. Then `vjp` takes `(ys_bar, t_event_bar)`, and `solve` adds no
        implicit derivative. By default (False) they are differentiated at the fixed
        event time, and `solve` adds the implicit derivative (`_event.py`)."""
        return False

    def forward_event(
        self,
        problem: FlatProblem,
        y0: Float[Array, " n"],
        p: Float[Array, " m"],
        ts: Float[Array, " k"],
        options: SolveOptions,
        *,
        residuals: bool,
    ) -> tuple[tuple[Any, ...], Any]:
        """`forward` for a problem with an event: the solution at the save times of
        `event_times(ts, t_event)` (`ts` held at `t_event` beyond it, then `t_event`),
        the event time and whether it happened. `vjp` is then called with those save
        times, and differentiates at them as fixed times.

        The default locates the event (`locate_event`), then solves to it with
        `forward`: two solves. A backend that can do both in one overrides this.

        **Returns:**

        `((ys, code, stats, t_event, happened), residuals)`, `ys` of shape
        `(len(ts) + 1, n)`.
        """
        t_event, happened, located = self.locate_event(problem, y0, p, options)
        (ys, code, stats), res = self.forward(
            problem, y0, p, event_times(ts, t_event), options, residuals=residuals
        )
        code = jnp.where(located != RESULTS.successful._value, located, code)
        return (ys, code, stats, t_event, happened), res

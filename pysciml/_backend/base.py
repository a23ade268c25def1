"""The backend protocol: two primitives over flat arrays."""

import abc
from typing import Any, ClassVar

import equinox as eqx
from jaxtyping import Array, Float, Int

from .._flatten import FlatVectorField
from .._sensitivity import AbstractSensitivity
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

"""Neural ODEs: a neural vector field and a `NeuralODE` module that solves with it."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._problem import ODEProblem
from ._sensitivity import AbstractSensitivity
from ._solve import solve
from ._solver import AbstractSolver


class MLPVectorField(eqx.Module):
    """An MLP vector field `f(t, y) = mlp([y, t])` (or `mlp(y)` if autonomous).

    **Arguments:**

    - `state_size`: the size of `y`.
    - `width`, `depth`: the MLP's hidden width and number of hidden layers.
    - `activation`: the hidden activation (default `jax.nn.softplus`: smooth, so the
        vector field is smooth and adaptive solvers take few steps).
    - `time_dependent`: whether `t` is an input of the MLP.
    - `key`: a JAX PRNG key for the initial weights.

    The final layer's weights are scaled down (`final_scale`), so that an untrained
    field is close to zero and early training solves are easy.
    """

    mlp: eqx.nn.MLP
    time_dependent: bool = eqx.field(static=True)

    def __init__(
        self,
        state_size: int,
        *,
        width: int = 64,
        depth: int = 2,
        activation: Callable = jax.nn.softplus,
        time_dependent: bool = False,
        final_scale: float = 0.1,
        key: PRNGKeyArray,
    ):
        if state_size < 1 or width < 1 or depth < 0:
            raise ValueError(
                "`MLPVectorField` needs state_size >= 1, width >= 1 and depth >= 0; "
                f"got state_size={state_size}, width={width}, depth={depth}."
            )
        self.time_dependent = time_dependent
        mlp = eqx.nn.MLP(
            in_size=state_size + int(time_dependent),
            out_size=state_size,
            width_size=width,
            depth=depth,
            activation=activation,
            key=key,
        )
        last = mlp.layers[-1]
        self.mlp = eqx.tree_at(
            lambda m: (m.layers[-1].weight, m.layers[-1].bias),
            mlp,
            (last.weight * final_scale, last.bias * final_scale),
        )

    def __call__(self, t, y, args=None):
        if self.time_dependent:
            y = jnp.concatenate([y, jnp.reshape(t, (1,)).astype(y.dtype)])
        return self.mlp(y)


def _field(t, y, field):
    # Module-level (not a lambda) so that every solve of every NeuralODE shares one
    # vector-field identity: host backends cache their compiled callbacks per field.
    return field(t, y)


class NeuralODE(eqx.Module):
    """`dy/dt = field(t, y)`, solved by [`pysciml.solve`][] on any backend.

    The field's arrays are the trainable parameters: they reach every backend as one
    flat vector (host backends included), and its non-array parts (the activation,
    say) stay static.

    **Arguments:**

    - `field`: a vector field module `field(t, y)`, e.g. [`pysciml.nn.MLPVectorField`][]
        (whose `state_size` must be `data_size + augment`).
    - `augment`: how many extra state dimensions, started at zero, to add to the data
        dimensions (augmented neural ODEs, Dupont et al. 2019): they let the flow
        represent maps that a plain neural ODE cannot.
    - `t0`: the start of integration (default `0.0`).
    - `backend`, `solver`, `sensitivity`, `rtol`, `atol`, `max_steps`, `throw`: passed
        to `solve`.
    """

    field: eqx.Module
    augment: int = eqx.field(static=True, default=0)
    t0: float = eqx.field(static=True, default=0.0)
    backend: object = eqx.field(static=True, default=None)
    solver: AbstractSolver | None = eqx.field(static=True, default=None)
    sensitivity: AbstractSensitivity | None = eqx.field(static=True, default=None)
    rtol: float = eqx.field(static=True, default=1e-3)
    atol: float = eqx.field(static=True, default=1e-6)
    max_steps: int = eqx.field(static=True, default=4096)
    throw: bool = eqx.field(static=True, default=True)

    def __call__(
        self, ts: Float[np.ndarray, " k"], y0: Float[Array, " d"]
    ) -> Float[Array, "k d"]:
        """Solves from `y0` at `self.t0` and returns the data dimensions at `ts`.

        **Arguments:**

        - `ts`: the save times, a concrete (NumPy) array: its last value is the end of
            integration, so a shorter `ts` (a training curriculum) integrates less.
        - `y0`: the initial state, shape `(d,)`; vmap over a batch.

        **Returns:**

        The solution at `ts`, shape `(len(ts), d)`.
        """
        if isinstance(ts, jax.core.Tracer):
            raise TypeError(
                "`NeuralODE(ts, y0)` needs concrete save times (a NumPy array), since "
                "their last value sets the end of integration. Close over `ts` instead "
                "of passing it through `jax.jit`/`eqx.filter_jit` as an argument."
            )
        ts = np.asarray(ts)
        problem = ODEProblem(_field, self.t0, float(ts[-1]))
        if self.augment:
            y0 = jnp.concatenate([y0, jnp.zeros((self.augment,), y0.dtype)])
        sol = solve(
            problem,
            y0,
            self.field,
            saveat=jnp.asarray(ts, dtype=y0.dtype),
            solver=self.solver,
            backend=self.backend,
            sensitivity=self.sensitivity,
            rtol=self.rtol,
            atol=self.atol,
            max_steps=self.max_steps,
            throw=self.throw,
        )
        return sol.ys[:, : y0.shape[0] - self.augment]

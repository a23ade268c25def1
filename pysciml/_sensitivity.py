"""Sensitivity (gradient) methods. Like solvers, these are tags: each backend maps the
ones it supports onto its own implementation (`Backend.sensitivities`)."""

import equinox as eqx


class AbstractSensitivity(eqx.Module):
    """Base class of every sensitivity tag: how a backend computes the vector-Jacobian
    product of the solution with respect to `y0` and `args`."""


class AbstractContinuousAdjoint(AbstractSensitivity):
    """Marker for optimise-then-discretise methods: an adjoint ODE is solved backward in
    time at the user's tolerances. Its gradient matches the exact gradient of the ODE
    solution to within solver tolerance, not to rounding error."""


class DiscreteAdjoint(AbstractSensitivity):
    """Discretise-then-optimise: reverse-mode differentiation through the solver's
    own steps, with recursive checkpointing to bound memory (diffrax's
    `RecursiveCheckpointAdjoint`). The gradient is exact for the discrete solution.

    **Arguments:**

    - `checkpoints`: how many steps to store for the backward pass; `None` lets the
        backend choose (diffrax: based on `max_steps`).
    """

    checkpoints: int | None = None


class DirectAdjoint(AbstractSensitivity):
    """Discretise-then-optimise without checkpointing (diffrax's `DirectAdjoint`): the
    solver's loop is differentiated as it stands. It costs more memory and compile time
    than `DiscreteAdjoint`, but it is itself differentiable in reverse mode, so
    `jax.jacrev(jax.jacrev(...))` works: use it for Hessians (e.g. NumPyro's
    `AutoLaplaceApproximation(hessian_fn=lambda f, x: jax.jacrev(jax.jacrev(f))(x))`).
    Keep `max_steps` small: the unrolled loop is sized by it."""


class BacksolveAdjoint(AbstractContinuousAdjoint):
    """Continuous adjoint that re-solves the state backward in time together with the
    adjoint. Constant memory, but unstable for problems whose backward dynamics are
    stiff or chaotic (diffrax's and SciMLSensitivity's `BacksolveAdjoint`)."""


class InterpolatingAdjoint(AbstractContinuousAdjoint):
    """Continuous adjoint that reads the state from the forward pass's dense output
    (SciMLSensitivity's `InterpolatingAdjoint`; the SciPy backend's default)."""


class GaussAdjoint(AbstractContinuousAdjoint):
    """Continuous adjoint with the parameter gradient computed by Gauss--Kronrod
    quadrature alongside (SciMLSensitivity's `GaussAdjoint`; the Julia default)."""


class QuadratureAdjoint(AbstractContinuousAdjoint):
    """Continuous adjoint with the parameter gradient computed by a separate
    quadrature after the adjoint solve (SciMLSensitivity's `QuadratureAdjoint`)."""

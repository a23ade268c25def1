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


class ForwardSensitivity(AbstractSensitivity):
    """Forward sensitivities: the state is solved together with its Jacobian
    `S = ∂y/∂(y0, args)`, `S' = (∂f/∂y) S + [0 | ∂f/∂args]`, `S(t0) = [I | 0]`, by the
    backend's own solver, with error control over `S` too (as CVODES with `errconS`).
    Derivatives are then matrix products with `S`, so every JAX transform works on
    every backend: `jax.jvp`, `jax.jacfwd`, `jax.grad`, and `jax.hessian` (the
    augmented solve is itself a `solve` with forward sensitivities).

    Each right-hand-side evaluation costs about `1 + n + m` evaluations of the vector
    field (`n` states, `m` parameters): the fastest gradient when `n + m` is small,
    and no backward pass at all.

    **Arguments:**

    - `max_directions`: the most columns `n + m` that `S` may have; `solve` refuses
        bigger problems with an error that suggests an adjoint. Raise it knowingly.
    """

    max_directions: int = 1000

"""A `vmap`ped host solve as one stacked system.

Looping over a batch item by item costs each item its own solver loop: for small
systems (a neural ODE's 2 states, a hierarchical model's populations) the host
solver's per-step Python overhead, not the vector field, is the bill. A batch of `B`
problems that share their save times is instead solved as *one* system of `B·n`
states whose vector field is the `vmap` of the field (one native call per stage for
the whole batch), with tolerances `rtol/√B` and `atol/√B`.

Why `√B`: host solvers control the RMS norm of the scaled error estimate over all
components. Over the stacked state that norm is `sqrt(Σ_items e_i² / (B n))`, so
`norm ≤ 1` at `tol/√B` gives each item `sqrt(Σ e_i² / n) ≤ 1` at its own `tol`: every
item's error estimate meets the tolerance it would have had alone. The steps are those
of the hardest item, so items are usually more accurate than alone (measured:
`benchmarks/RESULTS.md`, A8).

Parameters that are not batched (a neural ODE's weights, shared by the batch) stay one
vector of `m` in the forward solve. The adjoint carries one parameter adjoint per item
(`B·m`), because the cotangent of each item is its own row: under `vmap(grad)` those
rows are the per-item gradients, and JAX sums them only where the loss sums the items.
(Returning the sum in one row, as an earlier version did, gave `vmap(grad)` wrong
per-item gradients with shared parameters.) With many shared parameters (past
`B·m > 4 (B·n + m)`) those `B·m` adjoint states would cost far more than the loop, so
the stacked adjoint integrates only the `B·n` states of `λ` and computes each item's
parameter cotangent by quadrature over its steps, where the backend supports it
(`host_quadrature`: SciPy's interpolating adjoint of explicit Runge--Kutta methods);
otherwise that VJP runs item by item.

Used for explicit solvers only (an implicit solver would factorise a dense `B·n`
Jacobian), when every item has the same save times; a failed stacked solve is redone
item by item, so that each item gets its own result code.
"""

import dataclasses

import equinox as eqx
import jax

from ..._solver import LSODA, AbstractImplicitSolver
from ..base import FlatProblem, SolveOptions


class StackedField(eqx.Module):
    """`B` copies of a flat vector field as one: `z = [y_1, ..., y_B]`, and `p` either
    stacked the same way (`shared=False`) or shared by all items."""

    inner: eqx.Module
    batch: int = eqx.field(static=True)
    n: int = eqx.field(static=True)
    m: int = eqx.field(static=True)
    shared: bool = eqx.field(static=True)

    def __call__(self, t, z, p):
        ys = z.reshape(self.batch, self.n)
        if self.shared:
            out = jax.vmap(lambda y: self.inner(t, y, p))(ys)
        else:
            out = jax.vmap(lambda y, q: self.inner(t, y, q))(
                ys, p.reshape(self.batch, self.m)
            )
        return out.reshape(-1)

    def vjp_p_items(self, t, z, p, lam):
        """`λ_iᵀ ∂f/∂p(t, y_i, p_i)` of every item, stacked (`batch·m`): with shared
        `p`, each item's own row rather than their sum (the integrand of the
        quadrature adjoint's per-item parameter cotangents)."""
        ys, lams = z.reshape(self.batch, self.n), lam.reshape(self.batch, self.n)

        def one(y, q, lam_i):
            return jax.vjp(lambda q_: self.inner(t, y, q_), q)[1](lam_i)[0]

        # Shared: differentiate at the one `p` (`in_axes=None`), with no tiled copy
        # of it (measured on the neural ODE's field: 3× faster than `p` tiled).
        in_axes = (0, None, 0) if self.shared else (0, 0, 0)
        q = p if self.shared else p.reshape(self.batch, self.m)
        return jax.vmap(one, in_axes=in_axes)(ys, q, lams).reshape(-1)


def can_stack(problem: FlatProblem, options: SolveOptions) -> bool:
    return problem.jac_sparsity is None and not isinstance(
        options.solver, (AbstractImplicitSolver, LSODA)
    )


def stacked(problem: FlatProblem, options: SolveOptions, batch: int, n: int, m: int,
            shared: bool) -> tuple[FlatProblem, SolveOptions]:
    """The stacked problem of `batch` items, and its options (tolerances over √B)."""
    scale = batch**-0.5
    field = StackedField(problem.vector_field, batch, n, m, shared)
    return (
        FlatProblem(vector_field=field, t0=problem.t0, t1=problem.t1),
        dataclasses.replace(
            options, rtol=options.rtol * scale, atol=options.atol * scale
        ),
    )

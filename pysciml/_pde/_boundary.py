"""Boundary conditions: data-only `eqx.Module`s, read by the operators in
`_operators.py` when they extend a field by one node past each edge of the grid."""

from typing import Any

import equinox as eqx


class AbstractBoundaryCondition(eqx.Module):
    """Base class of the boundary conditions on one side of one axis of a grid.

    A condition decides which nodes are unknowns (a Dirichlet node is known, so it is
    not part of the state) and how the operators close their stencils at the edge.
    """


class Dirichlet(AbstractBoundaryCondition):
    """Prescribed value on the boundary: `u = value` there.

    The boundary node is *not* an unknown: the grid's first (or last) unknown sits one
    spacing inside the boundary, and stencils that reach the boundary node read
    `value`. Operators stay second-order accurate up to the boundary.

    **Arguments:**

    - `value`: the boundary value; a scalar, or an array that broadcasts against one
        side of the field (shape `(ny,)` on an x-side of a 2D grid). It may be a traced
        JAX array (a parameter to calibrate, or a function of `t` computed inside the
        vector field: see `Grid1D.with_bc`).
    """

    value: Any = 0.0


class Neumann(AbstractBoundaryCondition):
    """Prescribed *outward* normal derivative on the boundary: `∂u/∂n = value`, where
    `n` points out of the domain (so `-∂u/∂x = value` on a left side and
    `∂u/∂x = value` on a right side). `value = 0` is a no-flux wall.

    The boundary node is an unknown. Stencils are closed with the ghost value
    `u_{-1} = u_1 + 2 dx value` (a centred difference for the derivative), which keeps
    the discrete Laplacian symmetric in the grid's `weights` and conservative (the
    weighted sum of `u` changes only by the boundary fluxes).

    **Arguments:**

    - `value`: the outward normal derivative; a scalar or an array that broadcasts
        against one side of the field (as for `Dirichlet`).
    """

    value: Any = 0.0


class Periodic(AbstractBoundaryCondition):
    """Periodic boundary: the field repeats with the period of the domain. Must be
    given on both sides of an axis. The unknowns are at `x0 + i dx`, `i = 0..n-1`,
    `dx = (x1 - x0)/n` (the node at `x1` is the node at `x0`)."""

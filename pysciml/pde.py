"""Partial differential equations by the method of lines.

A PDE becomes an ODE in time for its values on a grid: build a `Grid1D` or `Grid2D`
with boundary conditions, write the vector field with the operators below, and solve it
with `ps.solve` on any backend. The grid also reports the Jacobian's sparsity, which
lets the stiff SciPy (and Julia) solvers use sparse linear algebra:

```python
import jax.numpy as jnp
import pysciml as ps
import pysciml.pde as pde

grid = pde.Grid1D(0.0, 1.0, 512, pde.Dirichlet(0.0))

def heat(t, u, D):
    return D * pde.laplacian(u, grid)

problem = ps.ODEProblem(heat, 0.0, 0.1, jac_sparsity=grid.jac_sparsity())
sol = ps.solve(problem, jnp.sin(jnp.pi * grid.x), 0.5, saveat=jnp.array([0.1]),
               backend="scipy", solver=ps.QNDF())
```

Every operator is a pure JAX function (so it composes under `jit`, `grad`, `vmap`) and
states its order of accuracy in its docstring.
"""

from ._pde._boundary import AbstractBoundaryCondition as AbstractBoundaryCondition
from ._pde._boundary import Dirichlet as Dirichlet
from ._pde._boundary import Neumann as Neumann
from ._pde._boundary import Periodic as Periodic
from ._pde._grid import AbstractGrid as AbstractGrid
from ._pde._grid import Grid1D as Grid1D
from ._pde._grid import Grid2D as Grid2D
from ._pde._operators import face_gradient as face_gradient
from ._pde._operators import flux_divergence as flux_divergence
from ._pde._operators import gradient as gradient
from ._pde._operators import laplacian as laplacian

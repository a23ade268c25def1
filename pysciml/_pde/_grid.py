"""Uniform 1D and 2D grids of a method-of-lines discretisation: where the unknowns are,
their spacing and control volumes, and the sparsity of every operator built on them."""

import functools as ft
import math

import equinox as eqx
import numpy as np

from ._boundary import AbstractBoundaryCondition, Dirichlet, Neumann, Periodic

MSG_BC = (
    "`{cls}(bc=...)` must be a boundary condition (`pde.Dirichlet(value)`, "
    "`pde.Neumann(value)`, `pde.Periodic()`){forms}; got {bc!r}."
)


class _Axis(eqx.Module):
    """One axis of a grid: the interval `[lo, hi]`, `n` unknowns, and the boundary
    condition on each side. The nodes are `lo + j dx`; which of them are unknowns
    depends on the conditions (a Dirichlet node is known, so it is not one)."""

    lo: float = eqx.field(static=True)
    hi: float = eqx.field(static=True)
    n: int = eqx.field(static=True)
    bc_lo: AbstractBoundaryCondition
    bc_hi: AbstractBoundaryCondition

    @property
    def periodic(self) -> bool:
        return isinstance(self.bc_lo, Periodic)

    @property
    def intervals(self) -> int:
        if self.periodic:
            return self.n
        dirichlet = isinstance(self.bc_lo, Dirichlet) + isinstance(self.bc_hi, Dirichlet)
        return self.n - 1 + dirichlet

    @property
    def dx(self) -> float:
        return (self.hi - self.lo) / self.intervals

    @property
    def x(self) -> np.ndarray:
        first = 1 if isinstance(self.bc_lo, Dirichlet) else 0
        return self.lo + (first + np.arange(self.n)) * self.dx

    @property
    def faces(self) -> np.ndarray:
        x, h = self.x, self.dx
        if self.periodic:
            return x + h / 2
        lo = self.lo if isinstance(self.bc_lo, Neumann) else x[0] - h / 2
        hi = self.hi if isinstance(self.bc_hi, Neumann) else x[-1] + h / 2
        return np.concatenate([[lo], x[:-1] + h / 2, [hi]])

    @property
    def volumes(self) -> np.ndarray:
        v = np.full(self.n, self.dx)
        # A Neumann boundary node owns half a cell: [x0, x0 + dx/2].
        if isinstance(self.bc_lo, Neumann):
            v[0] /= 2
        if isinstance(self.bc_hi, Neumann):
            v[-1] /= 2
        return v

    @property
    def structure(self) -> tuple:
        """What the sparsity pattern depends on (not the boundary values)."""
        return (self.n, self.periodic)


def _is_bc(x) -> bool:
    return isinstance(x, AbstractBoundaryCondition)


def _pair(bc, cls: str, forms: str) -> tuple:
    """A condition or a `(low side, high side)` pair -> a pair."""
    if _is_bc(bc):
        return (bc, bc)
    if isinstance(bc, (tuple, list)) and len(bc) == 2 and all(map(_is_bc, bc)):
        return tuple(bc)
    raise TypeError(MSG_BC.format(cls=cls, forms=forms, bc=bc))


_FORMS_1D = " or a pair `(left, right)` of them"
_FORMS_2D = (
    ", or a pair `(bc_x, bc_y)` whose items are each a condition or a pair "
    "`(low side, high side)`"
)


def _bc_pairs(bc, ndim: int, cls: str) -> tuple:
    if ndim == 1:
        return (_pair(bc, cls, _FORMS_1D),)
    if _is_bc(bc):
        return ((bc, bc),) * ndim
    if isinstance(bc, (tuple, list)) and len(bc) == ndim:
        return tuple(_pair(b, cls, _FORMS_2D) for b in bc)
    raise TypeError(MSG_BC.format(cls=cls, forms=_FORMS_2D, bc=bc))


def _make_axis(cls: str, name: str, lo, hi, n, pair) -> _Axis:
    try:
        lo, hi = float(lo), float(hi)
    except Exception:
        raise TypeError(
            f"`{cls}` needs concrete real bounds for {name}; got {lo!r}, {hi!r}."
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"`{cls}` needs finite bounds {name}0 < {name}1; got {lo}, {hi}.")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(
            f"`{cls}` needs an integer number of unknowns >= 2 along {name}; got {n!r}."
        )
    if isinstance(pair[0], Periodic) != isinstance(pair[1], Periodic):
        raise ValueError(
            f"`{cls}`: `pde.Periodic()` must be given on both sides of axis {name}; "
            f"got {type(pair[0]).__name__} and {type(pair[1]).__name__}."
        )
    return _Axis(lo=lo, hi=hi, n=int(n), bc_lo=pair[0], bc_hi=pair[1])


@ft.lru_cache(maxsize=32)
def _pattern(structure: tuple, fields: int):
    import scipy.sparse as sp  # here, so that importing pysciml does not import it

    # Cached so that repeated calls return the *same* object: `ODEProblem` keys its
    # compiled host callbacks on the pattern's identity.
    mats = []
    for n, periodic in structure:
        a = sp.diags([1, 1, 1], [-1, 0, 1], shape=(n, n), format="lil", dtype=bool)
        if periodic:
            a[0, n - 1] = a[n - 1, 0] = True
        mats.append(a.tocsr())
    # Row-major flattening: index i * ny + j for a field of shape (nx, ny).
    s = mats[0]
    for a in mats[1:]:
        s = sp.kron(s, sp.identity(a.shape[0], bool)) + sp.kron(
            sp.identity(s.shape[0], bool), a
        )
    if fields > 1:
        size = s.shape[0]
        s = sp.kron(np.ones((fields, fields), bool), sp.identity(size, bool)) + sp.kron(
            sp.identity(fields, bool), s
        )
    out = sp.csr_matrix(s, dtype=bool)
    out.sort_indices()
    return out


class AbstractGrid(eqx.Module):
    """Base class of the uniform grids. A grid holds, per axis, the interval, the number
    of unknowns and the boundary condition on each side; fields on it are arrays of
    shape `grid.shape` (optionally with leading batch dimensions)."""

    axes: eqx.AbstractVar[tuple[_Axis, ...]]

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of a field on this grid (the unknowns only)."""
        return tuple(a.n for a in self.axes)

    @property
    def ndim(self) -> int:
        return len(self.axes)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def weights(self) -> np.ndarray:
        """The control volume of each unknown, shape `grid.shape`: `dx` (times `dy`),
        halved at a Neumann boundary node. `sum(weights * u)` is the conserved total
        of a no-flux problem."""
        out = self.axes[0].volumes
        for a in self.axes[1:]:
            out = np.multiply.outer(out, a.volumes)
        return out

    def jac_sparsity(self, fields: int = 1) -> "scipy.sparse.csr_matrix":  # noqa: F821
        """The sparsity pattern of the Jacobian of a vector field built from this
        module's operators (each reaches one node along each axis) plus pointwise
        reactions, for `ps.ODEProblem(..., jac_sparsity=...)`.

        1D: tridiagonal (plus the two corners if periodic). 2D: the 5-point stencil,
        for fields flattened row-major (`u.ravel()` of shape `(nx, ny)`).

        **Arguments:**

        - `fields`: the number of fields in the state (2 for a two-species
            reaction–diffusion system). The state must then be a pytree of `fields`
            arrays of shape `grid.shape`, or one array of shape `(fields,
            *grid.shape)`: field-major, as `ps.solve` flattens it. Every field is
            assumed to react with every other at the same node (a superset is safe).

        **Returns:**

        A boolean `scipy.sparse.csr_matrix` of shape `(fields * size, fields *
        size)`. The same object is returned for grids of the same structure, so
        that solves with it are compiled once.
        """
        if isinstance(fields, bool) or not isinstance(fields, int) or fields < 1:
            raise ValueError(f"`jac_sparsity(fields=...)` must be an int >= 1; "
                             f"got {fields!r}.")
        return _pattern(tuple(a.structure for a in self.axes), fields)

    def with_bc(self, bc):
        """This grid with other boundary *values*: the same kinds of conditions on the
        same sides, hence the same unknowns. Use it inside a vector field for boundary
        values that are parameters or depend on time, e.g.
        `grid.with_bc(pde.Dirichlet(jnp.sin(t)))`.

        **Arguments:**

        - `bc`: as for the grid's constructor.

        **Returns:**

        A grid of the same type.
        """
        pairs = _bc_pairs(bc, self.ndim, type(self).__name__)
        for name, axis, (lo, hi) in zip("xy", self.axes, pairs):
            for old, new in ((axis.bc_lo, lo), (axis.bc_hi, hi)):
                if type(old) is not type(new):
                    raise ValueError(
                        f"`with_bc`: the condition along {name} must stay a "
                        f"{type(old).__name__} (it decides which nodes are unknowns); "
                        f"got {type(new).__name__}. Build a new grid instead."
                    )
        axes = tuple(
            _Axis(a.lo, a.hi, a.n, lo, hi) for a, (lo, hi) in zip(self.axes, pairs)
        )
        return eqx.tree_at(lambda g: g.axes, self, axes)


class Grid1D(AbstractGrid):
    """A uniform grid on `[x0, x1]` with `n` unknowns.

    Where the unknowns sit depends on the boundary conditions: a Dirichlet node is
    known, so with `Dirichlet` on both sides the unknowns are the `n` interior nodes
    (`dx = (x1 - x0)/(n + 1)`); with `Neumann` the boundary node is an unknown; with
    `Periodic`, `dx = (x1 - x0)/n`. `grid.x` gives their positions.

    **Arguments:**

    - `x0`, `x1`: the interval, `x0 < x1`.
    - `n`: the number of unknowns (the size of the state).
    - `bc`: a boundary condition for both sides, or a pair `(left, right)`.

    ```python
    grid = pde.Grid1D(0.0, 1.0, 128, pde.Dirichlet(0.0))
    u0 = jnp.sin(jnp.pi * grid.x)
    heat = lambda t, u, D: D * pde.laplacian(u, grid)
    problem = ps.ODEProblem(heat, 0.0, 0.1, jac_sparsity=grid.jac_sparsity())
    ```
    """

    axes: tuple[_Axis]

    def __init__(self, x0, x1, n: int, bc):
        (pair,) = _bc_pairs(bc, 1, "Grid1D")
        self.axes = (_make_axis("Grid1D", "x", x0, x1, n, pair),)

    @property
    def n(self) -> int:
        return self.axes[0].n

    @property
    def x(self) -> np.ndarray:
        """Positions of the unknowns, shape `(n,)` (NumPy, float64)."""
        return self.axes[0].x

    @property
    def dx(self) -> float:
        return self.axes[0].dx

    @property
    def faces(self) -> np.ndarray:
        """Positions of the faces where `face_gradient` and `flux_divergence` take
        fluxes: shape `(n + 1,)` (`(n,)` if periodic). Midpoints between nodes, and the
        boundary itself on a Neumann side."""
        return self.axes[0].faces


class Grid2D(AbstractGrid):
    """A uniform grid on the rectangle `[x0, x1] × [y0, y1]` with `shape = (nx, ny)`
    unknowns. Fields have shape `(nx, ny)`: the first index runs along x. Along each
    axis the unknowns are placed as in `Grid1D`.

    **Arguments:**

    - `x`, `y`: the intervals `(x0, x1)` and `(y0, y1)`.
    - `shape`: `(nx, ny)`, the number of unknowns along each axis.
    - `bc`: one boundary condition for all four sides, or a pair `(bc_x, bc_y)` whose
        items are each a condition or a pair `(low side, high side)`.
    """

    axes: tuple[_Axis, _Axis]

    def __init__(self, x, y, shape, bc):
        try:
            (x0, x1), (y0, y1), (nx, ny) = x, y, shape
        except (TypeError, ValueError):
            raise TypeError(
                "`Grid2D(x, y, shape, bc)` takes `x=(x0, x1)`, `y=(y0, y1)` and "
                f"`shape=(nx, ny)`; got x={x!r}, y={y!r}, shape={shape!r}."
            ) from None
        px, py = _bc_pairs(bc, 2, "Grid2D")
        self.axes = (
            _make_axis("Grid2D", "x", x0, x1, nx, px),
            _make_axis("Grid2D", "y", y0, y1, ny, py),
        )

    @property
    def x(self) -> np.ndarray:
        """Positions of the unknowns along x, shape `(nx,)`."""
        return self.axes[0].x

    @property
    def y(self) -> np.ndarray:
        """Positions of the unknowns along y, shape `(ny,)`."""
        return self.axes[1].x

    @property
    def dx(self) -> float:
        return self.axes[0].dx

    @property
    def dy(self) -> float:
        return self.axes[1].dx

    @property
    def faces(self) -> tuple[np.ndarray, np.ndarray]:
        """Face positions along x and along y (see `Grid1D.faces`). A flux along x
        lives on `(len(faces[0]), ny)`, one along y on `(nx, len(faces[1]))`."""
        return self.axes[0].faces, self.axes[1].faces

    def mesh(self) -> tuple[np.ndarray, np.ndarray]:
        """`(X, Y)`, the positions of the unknowns, each of shape `(nx, ny)`."""
        return np.meshgrid(self.x, self.y, indexing="ij")

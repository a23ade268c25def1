"""Finite-difference operators on uniform grids. Each is a pure JAX function of a field
(an array of shape `grid.shape`, optionally with leading batch dimensions), so it
composes inside a vector field under `jit`, `grad` and `vmap`.

Every operator reaches one node along each axis, which is what `grid.jac_sparsity()`
encodes. Stencils are closed at the edges by extending the field by one node on each
side (`_extend`): the Dirichlet value, the Neumann ghost `u_1 + 2 dx g`, or the
periodic image.
"""

import jax.numpy as jnp

from ._boundary import Dirichlet, Neumann
from ._grid import AbstractGrid, _Axis


def _check(u, grid, fn: str, name: str = "u"):
    if not isinstance(grid, AbstractGrid):
        raise TypeError(
            f"`pde.{fn}(grid=...)` must be a `pde.Grid1D` or `pde.Grid2D`; got "
            f"{type(grid).__name__}."
        )
    u = jnp.asarray(u)
    if u.shape[u.ndim - grid.ndim :] != grid.shape or u.ndim < grid.ndim:
        raise ValueError(
            f"`pde.{fn}({name}=...)` must have trailing shape {grid.shape} (the grid's "
            f"unknowns); got shape {u.shape}."
        )
    return u


def _side(value, like):
    """A boundary value broadcast to one side of the field (the slice `like`)."""
    return jnp.broadcast_to(jnp.asarray(value, like.dtype), like.shape)


def _take(u, axis, i):
    return jnp.take(u, i, axis=axis)


def _extend(u, axis: int, ax: _Axis):
    """`u` with one more node on each side along `axis`: shape `n + 2` there."""
    n = u.shape[axis]
    if ax.periodic:
        lo, hi = _take(u, axis, n - 1), _take(u, axis, 0)
    else:
        lo = _ghost(ax.bc_lo, _take(u, axis, 0), _take(u, axis, 1), ax.dx)
        hi = _ghost(ax.bc_hi, _take(u, axis, n - 1), _take(u, axis, n - 2), ax.dx)
    return jnp.concatenate(
        [jnp.expand_dims(lo, axis), u, jnp.expand_dims(hi, axis)], axis=axis
    )


def _ghost(bc, edge, inner, dx):
    if isinstance(bc, Dirichlet):
        return _side(bc.value, edge)  # the boundary node itself
    if isinstance(bc, Neumann):
        # Outward derivative g = (u_ghost - u_inner) / (2 dx), centred on the edge node.
        return inner + 2 * dx * _side(bc.value, edge)
    raise TypeError(f"unsupported boundary condition {bc!r}")


def _shift(ext, axis, start, stop):
    """`ext[start:stop]` along `axis`, `stop` counted from the end if <= 0."""
    n = ext.shape[axis]
    idx = [slice(None)] * ext.ndim
    idx[axis] = slice(start, n + stop)
    return ext[tuple(idx)]


def _axes(u, grid):
    offset = u.ndim - grid.ndim
    return [(offset + k, ax) for k, ax in enumerate(grid.axes)]


def laplacian(u, grid: AbstractGrid):
    """The Laplacian `∇²u` by the second-order centred difference along each axis
    (3 points in 1D, the 5-point stencil in 2D).

    **Order of accuracy:** 2. The truncation error is `O(dx²)` at every unknown with
    Dirichlet and periodic conditions. At a Neumann boundary node it is `O(dx)`
    (`dx/3 · u'''`), as for every symmetric ghost-point closure; the *solution* of a
    method-of-lines problem still converges at `O(dx²)`.

    **Arguments:**

    - `u`: the field, shape `(..., *grid.shape)`.
    - `grid`: a `pde.Grid1D` or `pde.Grid2D`, with its boundary conditions.

    **Returns:**

    An array of the shape and dtype of `u`.
    """
    u = _check(u, grid, "laplacian")
    out = jnp.zeros_like(u)
    for axis, ax in _axes(u, grid):
        ext = _extend(u, axis, ax)
        out = out + (
            _shift(ext, axis, 2, 0) - 2 * u + _shift(ext, axis, 0, -2)
        ) / ax.dx**2
    return out


def gradient(u, grid: AbstractGrid, *, scheme: str = "central", velocity=None):
    """The first derivative of `u` along each axis, at the unknowns.

    **Order of accuracy:**

    - `scheme="central"`: 2 (`(u[i+1] - u[i-1]) / 2dx`). At a Neumann boundary node it
        returns the prescribed derivative exactly.
    - `scheme="upwind"`: 1. The one-sided difference on the side the flow comes from:
        backward where `velocity > 0`, forward where `velocity <= 0`. Use it for the
        advection term `-v ∂u/∂x`, where it is stable and monotone.

    **Arguments:**

    - `u`: the field, shape `(..., *grid.shape)`.
    - `grid`: a `pde.Grid1D` or `pde.Grid2D`.
    - `scheme`: `"central"` or `"upwind"`.
    - `velocity`: for `"upwind"` only: the advecting velocity, a scalar or an array
        that broadcasts against `u`; on a 2D grid, a pair `(vx, vy)`.

    **Returns:**

    On a 1D grid, an array of the shape of `u`; on a 2D grid, the pair `(∂u/∂x,
    ∂u/∂y)`.
    """
    u = _check(u, grid, "gradient")
    if scheme not in ("central", "upwind"):
        raise ValueError(
            f'`pde.gradient(scheme=...)` must be "central" or "upwind"; got {scheme!r}.'
        )
    if scheme == "upwind":
        if velocity is None:
            raise ValueError(
                '`pde.gradient(scheme="upwind")` needs `velocity=`: the upwind side '
                "is where the flow comes from."
            )
        if grid.ndim == 1:
            velocity = (velocity,)
        elif not (isinstance(velocity, (tuple, list)) and len(velocity) == grid.ndim):
            raise ValueError(
                "`pde.gradient(velocity=...)` on a 2D grid must be a pair `(vx, vy)`; "
                f"got {velocity!r}."
            )
    outs = []
    for k, (axis, ax) in enumerate(_axes(u, grid)):
        ext = _extend(u, axis, ax)
        up, down = _shift(ext, axis, 2, 0), _shift(ext, axis, 0, -2)
        if scheme == "central":
            outs.append((up - down) / (2 * ax.dx))
        else:
            backward = (u - down) / ax.dx
            forward = (up - u) / ax.dx
            outs.append(jnp.where(jnp.asarray(velocity[k]) > 0, backward, forward))
    return outs[0] if grid.ndim == 1 else tuple(outs)


def face_gradient(u, grid: AbstractGrid):
    """The derivative of `u` along each axis at the faces between nodes (`grid.faces`):
    `(u[i+1] - u[i]) / dx`, centred on the face; on a Neumann side, the prescribed
    derivative at the boundary face. Multiply by a diffusivity at the faces and take
    `flux_divergence` for `∇·(D∇u)` in conservative form.

    **Order of accuracy:** 2 at every face (exact at a Neumann face).

    **Arguments:**

    - `u`: the field, shape `(..., *grid.shape)`.
    - `grid`: a `pde.Grid1D` or `pde.Grid2D`.

    **Returns:**

    On a 1D grid, an array of shape `(..., len(grid.faces))`; on a 2D grid, the pair
    `(∂u/∂x on (..., len(faces[0]), ny), ∂u/∂y on (..., nx, len(faces[1])))`.
    """
    u = _check(u, grid, "face_gradient")
    outs = []
    for axis, ax in _axes(u, grid):
        if ax.periodic:
            outs.append((jnp.roll(u, -1, axis=axis) - u) / ax.dx)
            continue
        ext = _extend(u, axis, ax)
        g = (_shift(ext, axis, 1, 0) - _shift(ext, axis, 0, -1)) / ax.dx
        n = g.shape[axis]
        lo = _take(g, axis, 0)
        hi = _take(g, axis, n - 1)
        # The outward normal points to -x on the low side and to +x on the high side.
        if isinstance(ax.bc_lo, Neumann):
            lo = -_side(ax.bc_lo.value, lo)
        if isinstance(ax.bc_hi, Neumann):
            hi = _side(ax.bc_hi.value, hi)
        g = jnp.concatenate(
            [jnp.expand_dims(lo, axis), _shift(g, axis, 1, -1), jnp.expand_dims(hi, axis)],
            axis=axis,
        )
        outs.append(g)
    return outs[0] if grid.ndim == 1 else tuple(outs)


def flux_divergence(flux, grid: AbstractGrid):
    """The divergence of a flux given at the faces, in conservative (finite-volume)
    form: `(F[i+1/2] - F[i-1/2]) / volume[i]`. The weighted total `sum(grid.weights *
    div)` telescopes to the boundary fluxes, so `∂u/∂t = flux_divergence(F)` conserves
    `sum(grid.weights * u)` exactly under no-flux or periodic conditions.

    `pde.flux_divergence(D * pde.face_gradient(u, grid), grid)` is `∇·(D∇u)` with a
    diffusivity `D` at the faces (for example `D(grid.faces)`); with a constant `D` it
    equals `D * pde.laplacian(u, grid)`.

    **Order of accuracy:** 2 for fluxes exact at the faces (`O(dx²)` at every
    unknown), except at a Neumann boundary node, whose half cell makes it `O(dx)`.
    With fluxes from `face_gradient` the result is second order in the same sense.

    **Arguments:**

    - `flux`: on a 1D grid, an array of shape `(..., len(grid.faces))`; on a 2D grid,
        a pair `(Fx, Fy)` of shapes `(..., len(faces[0]), ny)` and `(..., nx,
        len(faces[1]))`.
    - `grid`: a `pde.Grid1D` or `pde.Grid2D`.

    **Returns:**

    An array of shape `(..., *grid.shape)`.
    """
    if not isinstance(grid, AbstractGrid):
        _check(None, grid, "flux_divergence")
    fluxes = (flux,) if grid.ndim == 1 else tuple(flux)
    if len(fluxes) != grid.ndim:
        raise ValueError(
            "`pde.flux_divergence(flux=...)` on a 2D grid must be a pair `(Fx, Fy)`."
        )
    out = None
    for k, (f, ax) in enumerate(zip(fluxes, grid.axes)):
        f = jnp.asarray(f)
        axis = f.ndim - grid.ndim + k
        want = list(grid.shape)
        want[k] = len(ax.faces)
        if f.ndim < grid.ndim or list(f.shape[f.ndim - grid.ndim :]) != want:
            raise ValueError(
                f"`pde.flux_divergence`: the flux along axis {k} must have trailing "
                f"shape {tuple(want)} (the faces `grid.faces`); got {f.shape}."
            )
        if ax.periodic:
            d = (f - jnp.roll(f, 1, axis=axis)) / ax.dx
        else:
            d = (_shift(f, axis, 1, 0) - _shift(f, axis, 0, -1)) / ax.dx
            # A Neumann boundary node's control volume is half a cell.
            scale = jnp.ones(ax.n, d.dtype)
            if isinstance(ax.bc_lo, Neumann):
                scale = scale.at[0].set(2)
            if isinstance(ax.bc_hi, Neumann):
                scale = scale.at[-1].set(2)
            d = d * scale.reshape((-1,) + (1,) * (d.ndim - axis - 1))
        out = d if out is None else out + d
    return out

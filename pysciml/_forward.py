"""The forward sensitivity equations, as a vector field that any backend can solve.

For `y' = f(t, y, p)` with `n` states and `m` parameters, the sensitivity
`S = ∂y/∂(y0, p)`, an `n × (n + m)` matrix, obeys

    S' = (∂f/∂y) S + [0 | ∂f/∂p],    S(t0) = [I | 0].

`ForwardSensitivityField` is the vector field of `z = [y, vec(S)]`; `solve` solves it
with the backend's own solver (`_solve.py`, the forward-sensitivity path). The field is
itself a flat vector field of the same kind as the user's, so differentiating the
augmented solve again (second derivatives) augments it once more.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

MSG_TOO_MANY_DIRECTIONS = (
    "`sensitivity=ps.ForwardSensitivity()` solves the state together with its "
    "Jacobian with respect to y0 and args: {n} states × {directions} directions "
    "(n + m = {n} + {m}), so each right-hand side costs about {directions} evaluations "
    "of the vector field, over the limit `max_directions={limit}`. Use an adjoint "
    "instead (e.g. `sensitivity=None` for the backend's default), or raise the limit "
    "with `ps.ForwardSensitivity(max_directions=...)` if you mean it."
)


class ForwardSensitivityField(eqx.Module):
    """The vector field of `z = [y, vec(S)]` (`S` row-major, `n × (n + m)`), built from
    a flat vector field `inner(t, y, p)`.

    `∂f/∂y S + [0 | ∂f/∂p]` is one `jax.linearize` of `inner` and a `vmap` of the
    linear map over the `n + m` columns, so the primal `f` is evaluated once.
    Fully static (the inner field, `n`, `m`), so host backends cache its callbacks
    per problem as they do the user's field.
    """

    inner: eqx.Module
    n: int = eqx.field(static=True)
    m: int = eqx.field(static=True)

    def __call__(self, t, z, p):
        n, m = self.n, self.m
        y = z[:n]
        s = z[n:].reshape(n, n + m)
        dy, linear = jax.linearize(lambda y_, p_: self.inner(t, y_, p_), y, p)
        # Column j of [S; P] is the tangent (∂y/∂x_j, ∂p/∂x_j), x = (y0, p).
        p_dirs = jnp.concatenate([jnp.zeros((m, n), z.dtype), jnp.eye(m, dtype=z.dtype)],
                                 axis=1)
        ds = jax.vmap(linear, in_axes=(1, 1), out_axes=1)(s, p_dirs)
        return jnp.concatenate([dy, ds.reshape(-1)])

    # The interface of `FlatVectorField` that traced backends use: `p` stays flat.
    def args(self, p):
        return p

    def with_args(self, t, z, p):
        return self(t, z, p)

    def initial_state(self, y0):
        """`z(t0) = [y0, vec([I | 0])]`."""
        n, m = self.n, self.m
        s0 = jnp.concatenate([jnp.eye(n, dtype=y0.dtype),
                              jnp.zeros((n, m), y0.dtype)], axis=1)
        return jnp.concatenate([y0, s0.reshape(-1)])

    def split(self, zs):
        """`zs` of shape `(k, n (1 + n + m))` -> `(ys (k, n), S (k, n, n + m))`."""
        n, m = self.n, self.m
        return zs[:, :n], zs[:, n:].reshape(zs.shape[0], n, n + m)


def augmented_sparsity(pattern, n: int, m: int):
    """The Jacobian sparsity of `ForwardSensitivityField` from that of `f` (`P`, n × n):
    `∂y'/∂y = J` has `P`; every column block `S_j` has `∂S_j'/∂y` inside `P` (row `i`
    of `J S_j + ∂f/∂p_j` depends only on the `y_k` that row `i` of `f` depends on) and
    `∂S_j'/∂S_j = J`, so `P` again, on the diagonal.

    **Arguments:**

    - `pattern`: the `(n, n)` pattern of `∂f/∂y` (scipy sparse or dense boolean).
    - `n`, `m`: states and parameters.

    **Returns:**

    The `(N, N)` pattern, `N = n (1 + n + m)`, as a scipy CSR matrix, with `S`
    row-major as in `ForwardSensitivityField` (entry `(i, j)` of `S` at `n + i (n + m) +
    j`).
    """
    p = sp.csr_matrix(sp.csr_matrix(pattern) != 0, dtype=bool)
    d = n + m
    size = n * (1 + d)
    coo = p.tocoo()
    rows, cols = [coo.row], [coo.col]
    for j in range(d):
        # rows of S[:, j]: n + i d + j; columns y_k and S[k, j].
        r = n + coo.row * d + j
        rows += [r, r]
        cols += [coo.col, n + coo.col * d + j]
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_matrix((np.ones(rows.size, bool), (rows, cols)), shape=(size, size))

"""Flattening of `y0` and `args` pytrees into the flat vectors that every backend works
on, and the flat vector field built from the user's one."""

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np


class FlatSpec(eqx.Module):
    """How to turn a pytree of arrays into one flat vector and back. Fully static, so
    two specs of the same structure, shapes and dtypes compare (and hash) equal."""

    treedef: Any = eqx.field(static=True)
    shapes: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    dtypes: tuple[Any, ...] = eqx.field(static=True)

    @property
    def size(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    @property
    def dtype(self):
        """The common dtype of the leaves (the dtype of the flat vector)."""
        if not self.dtypes:
            return jnp.result_type(float)
        return jnp.result_type(*self.dtypes)

    def flatten(self, tree, dtype=None):
        leaves = jtu.tree_leaves(tree)
        dtype = self.dtype if dtype is None else dtype
        if not leaves:
            return jnp.zeros((0,), dtype)
        return jnp.concatenate([jnp.ravel(x).astype(dtype) for x in leaves])

    def unflatten(self, flat, *, restore_dtypes: bool = False, batch_shape=()):
        """Inverse of `flatten`. Leading `batch_shape` dimensions are kept. Unless
        `restore_dtypes`, leaves keep the flat vector's dtype: host backends compute in
        float64 whatever the user's dtype."""
        leaves = []
        start = 0
        for shape, dtype in zip(self.shapes, self.dtypes):
            size = math.prod(shape)
            leaf = flat[..., start : start + size].reshape(*batch_shape, *shape)
            leaves.append(leaf.astype(dtype) if restore_dtypes else leaf)
            start += size
        return jtu.tree_unflatten(self.treedef, leaves)


def spec_of(tree) -> FlatSpec:
    leaves, treedef = jtu.tree_flatten(tree)
    return FlatSpec(
        treedef=treedef,
        shapes=tuple(tuple(jnp.shape(x)) for x in leaves),
        dtypes=tuple(jnp.result_type(x) for x in leaves),
    )


class _Static:
    """Holds the non-differentiable part of `args` as static data. It compares by value
    where it can (so that a new but equal model does not recompile) and falls back to
    identity for unhashable leaves."""

    __slots__ = ("tree", "_key")

    def __init__(self, tree):
        self.tree = tree
        leaves, treedef = jtu.tree_flatten(tree)
        try:
            hash((treedef, tuple(leaves)))
            self._key = (treedef, tuple(leaves))
        except TypeError:
            self._key = ("id", id(tree))

    def __eq__(self, other):
        return isinstance(other, _Static) and self._key == other._key

    def __hash__(self):
        return hash(self._key)


def is_differentiable(x) -> bool:
    """The leaves of `args` that pysciml differentiates: floating-point arrays and
    Python or NumPy floats. Everything else (ints, strings, functions) is static."""
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        return bool(jnp.issubdtype(x.dtype, jnp.floating))
    return isinstance(x, float)


def split_args(args):
    """Splits `args` into (dynamic floating-point leaves, static rest)."""
    dynamic, static = eqx.partition(args, is_differentiable)
    for path, leaf in jtu.tree_leaves_with_path(static):
        if isinstance(leaf, (jax.Array, np.ndarray)) and leaf.ndim > 0:
            raise TypeError(
                f"`args{jtu.keystr(path)}` is an array of dtype {leaf.dtype}. pysciml "
                "differentiates the floating-point arrays in `args` and treats every "
                "other leaf as static, so it cannot hold a non-float array. Cast it to "
                "float, or pass it as a Python int or tuple."
            )
        if isinstance(leaf, jax.core.Tracer):
            raise TypeError(
                f"`args{jtu.keystr(path)}` is a traced value of dtype "
                f"{leaf.dtype}, which pysciml cannot treat as static. Cast it to float."
            )
    dynamic = jtu.tree_map(jnp.asarray, dynamic)
    return dynamic, _Static(static)


def user_args(p_spec: FlatSpec, args_static: _Static, p):
    """The user's `args` pytree from the flat parameter vector and the static rest."""
    return eqx.combine(p_spec.unflatten(p), args_static.tree)


def eval_shape_of(fn, where: str, call: str, t, y0, args):
    """`eqx.filter_eval_shape(fn, t, y0, args)`, with an error re-raised to name the
    user's function (`where`, e.g. "ODEProblem(vector_field=...)") and the call."""
    try:
        return eqx.filter_eval_shape(fn, t, y0, args)
    except Exception as e:
        raise type(e)(
            f"{e}\n\n(raised while tracing `{where}` as `{call}` with the `y0` and "
            "`args` given to `solve`.)"
        ) from e


class FlatVectorField(eqx.Module):
    """The user's vector field as a function `(t, y, p) -> dy` of flat vectors.

    Fully static: two solves of the same vector field on inputs of the same structure
    give equal (and equally hashing) instances, which is what lets host backends cache
    their compiled callbacks per problem.
    """

    vector_field: Callable = eqx.field(static=True)
    y_spec: FlatSpec
    p_spec: FlatSpec
    args_static: _Static = eqx.field(static=True)

    def __call__(self, t, y, p):
        return self.with_args(t, y, self.args(p))

    def args(self, p):
        """The user's `args` pytree from the flat parameter vector."""
        return user_args(self.p_spec, self.args_static, p)

    def with_args(self, t, y, args):
        """The vector field on a flat state and the user's `args` pytree. Traced
        backends unflatten `p` once, outside the solver loop, and call this: an unflatten
        inside the loop costs a full-length cotangent per leaf, stage and step in the
        backward pass (2x on a 4,610-parameter neural ODE; `benchmarks/RESULTS.md`)."""
        dy = self.vector_field(t, self.y_spec.unflatten(y), args)
        return self.y_spec.flatten(dy, dtype=y.dtype)

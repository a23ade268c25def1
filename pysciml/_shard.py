"""`solve` inside `jax.shard_map`: a local island.

Inside `jax.shard_map` (with its default `check_vma=True`), JAX types every value with
the set of manual mesh axes along which it varies (its "vma"), and every value with
the context mesh. Two things in Diffrax and Equinox break under that typing:

1. Their loops start from constants (`jnp.zeros`, `jnp.array(True)`, the solver's
    first `f0`): invariant values. After one step that depends on `y0` or the
    parameters (varying along the sharded axis), the carry is varying, and
    `lax.while_loop` refuses a carry whose type changes ("while_loop body function
    carry input and carry output must have equal types"). JAX leaves it to library
    code to `pcast` such carries to varying; Diffrax 0.7 and Equinox 0.13 do not.
2. Equinox's checkpointed while loop (`RecursiveCheckpointAdjoint`, pysciml's
    `DiscreteAdjoint`) re-traces its body in the backward pass and compares the
    `ShapeDtypeStruct`s, sharding included, with the forward pass's: but a Python
    literal in the carry has no mesh in the forward pass, and the same value re-traced
    at transpose time has the manual mesh ("Closure-converted function called with
    different dynamic arguments"). This one also happens under `check_vma=False`.

Neither is a property of the ODE: a vmapped solve inside `shard_map` is purely local
to each shard, with no collective. So `solve` runs as a *local island*:

- at its boundary, each input is made varying along every manual axis (an honest
  `pcast(..., to="varying")`, whose transpose is a `psum`: a parameter replicated
  across shards gets the sum of the shards' cotangents, as JAX gives it for any other
  function of a replicated input), then cast, by `local_cast_p`, to a *local* type:
  no mesh, varying along nothing;
- inside, everything is traced under an empty abstract mesh, exactly as outside any
  `shard_map` (so no loop ever sees a mixed carry, and no re-trace sees a mesh that
  the forward trace did not);
- the outputs are cast back to the context mesh, varying along every manual axis.

`local_cast_p` is a no-op at run time (it lowers to its operand): only the type
changes. Its transpose is the cast back, so the cotangents cross the island's
boundary unchanged; the only collective is the `psum` of the honest `pcast` above,
for inputs that were not already varying. The rules inside the island that JAX may
trace later, outside the island's Python context (a `custom_vjp`'s backward pass at
transpose time, or a rule traced lazily under `jax.grad(jax.jit(...))`), re-enter the
local world themselves (`local`), casting their array inputs to the local type.

The island is entered where every mesh axis is manual (inside a fully manual
`shard_map`, where host callbacks run per device, on each shard's batch). Inside a
`shard_map` that leaves some axes automatic, `solve` raises: JAX runs no callback
there, and every backend has some (Diffrax's runtime checks of its save times
included). Elsewhere (no mesh, `jax.jit` with `NamedSharding` inputs) `solve` traces
as it always did.
"""

import contextlib
import functools as ft

import jax
import jax.tree_util as jtu
from jax.interpreters import ad, batching, mlir
from jax.sharding import PartitionSpec

try:
    from jax.extend.core import Primitive
except ImportError:  # pragma: no cover - older JAX
    from jax.core import Primitive

try:  # The flag shard_map sets for its body (JAX keeps it internal).
    from jax._src.config import _check_vma as _CHECK_VMA
except ImportError:  # pragma: no cover - JAX without varying-manual-axes types
    _CHECK_VMA = None

_NONE = frozenset()

try:  # JAX with abstract meshes in context (what `shard_map` sets for its body).
    _EMPTY = jax.sharding.AbstractMesh((), ())
    _get_abstract_mesh = jax.sharding.get_abstract_mesh
    _use_abstract_mesh = jax.sharding.use_abstract_mesh
    _typeof = jax.typeof
except (AttributeError, TypeError):  # pragma: no cover - older JAX: no island
    _EMPTY = _get_abstract_mesh = _use_abstract_mesh = _typeof = None


def _vma(aval) -> frozenset:
    """The manual axes along which a value varies (JAX >= 0.10: `aval.mat.varying`;
    before: `aval.vma`)."""
    mat = getattr(aval, "mat", None)
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", _NONE))


def _retype(aval, mesh, varying):
    sharding = aval.sharding.update(
        mesh=mesh, spec=PartitionSpec(*([None] * aval.ndim))
    )
    if getattr(aval, "mat", None) is not None:
        return aval.update(
            sharding=sharding, manual_axis_type=aval.mat.update(varying=varying)
        )
    return aval.update(sharding=sharding, vma=varying)


local_cast_p = Primitive("pysciml_local_cast")
local_cast_p.def_impl(lambda x, *, mesh, varying: x)
local_cast_p.def_abstract_eval(lambda aval, *, mesh, varying: _retype(aval, mesh, varying))
mlir.register_lowering(local_cast_p, lambda ctx, x, *, mesh, varying: [x])


def _cast_transpose(ct, x, *, mesh, varying):
    # The cast back to the operand's type: no collective.
    if type(ct) is ad.Zero:
        return (ad.Zero(x.aval),)
    return (local_cast_p.bind(ct, mesh=x.aval.sharding.mesh, varying=_vma(x.aval)),)


ad.deflinear2(local_cast_p, _cast_transpose)


def _cast_batcher(vals, dims, *, mesh, varying):
    return local_cast_p.bind(vals[0], mesh=mesh, varying=varying), dims[0]


batching.primitive_batchers[local_cast_p] = _cast_batcher


def _is_array(x) -> bool:
    return isinstance(x, jax.Array)


def _manual():
    """`(mesh, varying)` inside a fully manual `shard_map` (`varying`: the manual axes
    along which the island's outputs vary; none under `check_vma=False`), else None."""
    if _get_abstract_mesh is None:  # pragma: no cover - older JAX
        return None
    mesh = _get_abstract_mesh()
    if mesh.empty:
        return None
    manual = frozenset(getattr(mesh, "manual_axes", ()))
    if not manual:
        return None
    if manual != frozenset(mesh.axis_names):
        raise ValueError(MSG_PARTIAL_MANUAL.format(
            manual=sorted(manual), axes=list(mesh.axis_names)))
    check = _CHECK_VMA is not None and _CHECK_VMA.value
    return mesh, (manual if check else _NONE)


def _has_manual_mesh(x) -> bool:
    if not _is_array(x) or _typeof is None:
        return False
    mesh = getattr(getattr(_typeof(x), "sharding", None), "mesh", None)
    return bool(mesh is not None and getattr(mesh, "manual_axes", ()))


def _to_local(x):
    if not _is_array(x):
        return x
    return local_cast_p.bind(x, mesh=_EMPTY, varying=_NONE)


def _enter(varying, x):
    if not isinstance(x, jax.core.Tracer):
        # A constant (save times known at trace time, say): the same on every shard,
        # and not differentiated; it stays a constant, so that what depends only on
        # it is still known when traced (as outside `shard_map`).
        return x
    missing = tuple(a for a in sorted(varying) if a not in _vma(_typeof(x)))
    if missing:
        x = _pcast_varying(x, missing)
    return _to_local(x)


def _pcast_varying(x, axes):
    pcast = getattr(jax.lax, "pcast", None)
    if pcast is not None:
        return pcast(x, axes, to="varying")
    return jax.lax.pvary(x, axes)  # pragma: no cover - JAX before `pcast`


def island(fn):
    """`fn(*args)`, run as a local island inside a fully manual `shard_map` (see the
    module docstring), else as it is. `args` and the output are pytrees; their array
    leaves cross the boundary."""

    @ft.wraps(fn)
    def wrapped(*args):
        ctx = _manual()
        if ctx is None:
            return fn(*args)
        mesh, varying = ctx
        args = jtu.tree_map(ft.partial(_enter, varying), args)
        with _use_abstract_mesh(_EMPTY):
            out = fn(*args)
        return jtu.tree_map(
            lambda y: local_cast_p.bind(y, mesh=mesh, varying=varying)
            if _is_array(y) else y,
            out,
        )

    return wrapped


def local(fn):
    """For a rule inside the island that JAX may trace outside the island's Python
    context (at transpose time, or lazily): re-enter the local world, casting every
    array in the arguments (residuals included) to the local type and tracing under
    the empty mesh. Outputs are left local. Outside a manual `shard_map`: `fn`."""

    @ft.wraps(fn)
    def wrapped(*args):
        # At transpose time, JAX may run a backward pass with no mesh in context
        # (`jax.grad` outside the `shard_map`) on residuals typed with the manual
        # mesh: so the arguments' types decide too.
        if _manual() is None and not any(
            _has_manual_mesh(x) for x in jtu.tree_leaves(args)
        ):
            return fn(*args)
        args = jtu.tree_map(_to_local, args)
        with _use_abstract_mesh(_EMPTY):
            out = fn(*args)
        return jtu.tree_map(_to_local, out)

    return wrapped


@contextlib.contextmanager
def explicit_vmap_errors():
    """Turns JAX's error for a `vmap` over an axis sharded along an `Explicit` mesh
    axis into one that says what is unsupported and what works."""
    try:
        yield
    except ValueError as e:
        axes = _explicit_vmap_axes()
        if axes and "is not found in mesh" in str(e):
            raise ValueError(MSG_EXPLICIT_VMAP.format(axes=sorted(axes))) from e
        raise


def _explicit_vmap_axes() -> frozenset:
    try:
        from jax._src import core
        return frozenset(core.get_axis_env().explicit_mesh_axis_names)
    except Exception:  # pragma: no cover - JAX internals moved
        return _NONE


MSG_PARTIAL_MANUAL = (
    "`ps.solve` inside a `jax.shard_map` that is manual over only some mesh axes "
    "({manual} of {axes}) is not supported: every backend runs `jax` callbacks (the "
    "host solvers, and Diffrax's and Equinox's runtime checks), which JAX supports "
    "only where every mesh axis is manual. Make the `shard_map` manual over every "
    "axis (leave `axis_names` at its default)."
)

MSG_EXPLICIT_VMAP = (
    "`jax.vmap` over `ps.solve` with the batch sharded along the Explicit mesh "
    "axes {axes} is not supported: JAX 0.10's batching rules for `while_loop` (with a "
    "batched predicate, as every adaptive solve has) and for `pure_callback` build "
    "types without a mesh and fail there, raw Diffrax included. (`jax.make_mesh` "
    "makes Explicit axes by default.) Use a mesh with Auto axes, "
    "`jax.make_mesh(shape, names, axis_types=(jax.sharding.AxisType.Auto,) * "
    "len(names))`, with `NamedSharding` inputs under `jax.jit`; or call the vmapped "
    "solve inside `jax.shard_map`, which works with either kind of axis."
)

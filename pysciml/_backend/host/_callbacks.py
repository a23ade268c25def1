"""Callbacks from the host solver into JAX: `host_callbacks` builds, once per problem
and cached, the NumPy-in, NumPy-out float64 `HostCallbacks` of one flat vector field
(`f`, the fused VJPs, dense Jacobians, and a `SparseJacobian` when the problem gives a
sparsity pattern). Each is a jitted XLA call wrapped by `_codes._checked`, or, with
native right-hand sides, a Numba kernel compiled from the same function
(`_native.NativeCallback`), which falls back to the XLA call where it cannot compile."""

import functools as ft
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..._flatten import FlatVectorField
from . import _native
from ._codes import _checked
from ._sparse import SparseJacobian


class HostCallbacks:
    """NumPy-in, NumPy-out float64 callbacks for one flat vector field. Each is a single
    call (jitted XLA, or a native kernel): the VJPs are fused so that one evaluation of
    an adjoint right-hand side is one call.

    - `f(t, y, p) -> dy`;
    - `vjp(t, y, p, lam) -> concat(λᵀ∂f/∂y, λᵀ∂f/∂p)`;
    - `f_vjp(t, y, p, lam) -> concat(f, λᵀ∂f/∂y, λᵀ∂f/∂p)`;
    - `vjp_u(t, y, p, lam) -> λᵀ∂f/∂y` and `vjp_p(t, y, p, lam) -> λᵀ∂f/∂p` apart (a
        quadrature adjoint integrates `λ` alone and evaluates `λᵀ∂f/∂p` only at its
        quadrature nodes); for a stacked batch (`_stacked.StackedField`) also
        `vjp_p_items(t, z, p, lam)`, each item's own row of `λᵀ∂f/∂p` (`batch·m`);
    - `jac(t, y, p) -> ∂f/∂y`, shape `(n, n)`; `jac_p(t, y, p) -> ∂f/∂p`, `(n, m)`;
    - `sparse`: a `SparseJacobian` when the problem gives a sparsity pattern.

    `native` says whether the callbacks are native kernels (then pass `p` as a NumPy
    array; otherwise a device array saves ~1 µs a call)."""

    def __init__(self, n, m, f, vjp, f_vjp, jac, jac_p, sparse, native, functions,
                 vjp_u=None, vjp_p=None, vjp_p_items=None):
        self.n, self.m = n, m
        self.f, self.vjp, self.f_vjp, self.jac, self.jac_p = f, vjp, f_vjp, jac, jac_p
        self.vjp_u, self.vjp_p, self.vjp_p_items = vjp_u, vjp_p, vjp_p_items
        self.sparse = sparse
        self.native = native
        self._functions = functions
        self._pointers: Any = None
        self._lock = threading.Lock()

    def resolved(self, name: str):
        """Callback `name` as the callable it resolves to (a native kernel compiled
        now, or the XLA call): for a host solver's inner loop."""
        fn = getattr(self, name)
        return fn.resolve() if isinstance(fn, _native.NativeCallback) else fn

    def _replace(self, **changes) -> "HostCallbacks":
        """A copy with some callbacks replaced (as `NamedTuple._replace`; tests wrap
        callbacks this way)."""
        fields = dict(n=self.n, m=self.m, f=self.f, vjp=self.vjp, f_vjp=self.f_vjp,
                      jac=self.jac, jac_p=self.jac_p, sparse=self.sparse,
                      native=self.native, functions=self._functions,
                      vjp_u=self.vjp_u, vjp_p=self.vjp_p,
                      vjp_p_items=self.vjp_p_items)
        fields.update(changes)
        return HostCallbacks(**fields)

    def check_native(self) -> None:
        """For `native_rhs=True`: raises a `ValueError` at trace time if any callback
        would not compile, naming the primitive."""
        n, m = self.n, self.m
        for name, fn in self._functions.items():
            if name == "vjp_p_items":  # always XLA (see `host_callbacks`)
                continue
            lam = name in ("vjp", "f_vjp", "vjp_u", "vjp_p")
            _native.translate_or_raise(fn, _native.example_args(n, m, lam), _WHAT[name])

    def c_pointers(self) -> "_native.CPointers | None":
        """The C function pointers of `f`, `vjp_u` and `vjp_p` for a host solver that
        calls them itself (the Julia bridge), compiled once; `None` when the callbacks
        are not native or one of them does not compile (then: the Python callbacks)."""
        if not self.native:
            return None
        with self._lock:
            if self._pointers is None:
                self._pointers = _export_pointers(self._functions, self.n, self.m)
            return self._pointers or None


_WHAT = {
    "f": "the vector field",
    "vjp": "the vector-Jacobian product of the vector field",
    "f_vjp": "the vector field and its vector-Jacobian product",
    "jac": "the Jacobian of the vector field",
    "jac_p": "the parameter Jacobian of the vector field",
    "vjp_u": "the vector-Jacobian product of the vector field",
    "vjp_p": "the parameter vector-Jacobian product of the vector field",
    "vjp_p_items": "the per-item parameter vector-Jacobian products of a stacked batch",
}


def _export_pointers(functions, n, m):
    from ..._native import UnsupportedPrimitive, compile_function
    from ..._native._cabi import export

    pointers = {}
    for name in ("f", "vjp_u", "vjp_p"):
        try:
            kernel = compile_function(
                functions[name], *_native.example_args(n, m, name != "f")
            )
        except UnsupportedPrimitive as e:
            _native._warn_once(
                e.primitive,
                _native.MSG_UNSUPPORTED.format(what=_WHAT[name], primitive=e.primitive),
            )
            return False
        pointers[name] = export(name, kernel, n, m)
    return _native.CPointers(**pointers)


@ft.lru_cache(maxsize=64)
def host_callbacks(
    field: FlatVectorField, n: int, m: int, sparsity=None, native: bool = False
) -> HostCallbacks:
    """Builds (once per problem: `field` compares by structure, `sparsity`, the
    problem's frozen pattern, by identity) the callbacks: jitted XLA calls, or with
    `native=True` native kernels compiled on first use."""

    def f(t, y, p):
        return field(t, y, p)

    def vjp(t, y, p, lam):
        _, pullback = jax.vjp(lambda y_, p_: field(t, y_, p_), y, p)
        return jnp.concatenate(pullback(lam))

    def f_vjp(t, y, p, lam):
        dy, pullback = jax.vjp(lambda y_, p_: field(t, y_, p_), y, p)
        return jnp.concatenate([dy, *pullback(lam)])

    def jac(t, y, p):
        return jax.jacfwd(field, argnums=1)(t, y, p)

    def jac_p(t, y, p):
        return jax.jacfwd(field, argnums=2)(t, y, p).reshape(n, m)

    def vjp_u(t, y, p, lam):
        return jax.vjp(lambda y_: field(t, y_, p), y)[1](lam)[0]

    def vjp_p(t, y, p, lam):
        return jax.vjp(lambda p_: field(t, y, p_), p)[1](lam)[0]

    functions = dict(f=f, vjp=vjp, f_vjp=f_vjp, jac=jac, jac_p=jac_p, vjp_u=vjp_u,
                     vjp_p=vjp_p)
    names = ["f", "vjp", "f_vjp", "jac", "jac_p", "vjp_u", "vjp_p"]
    if hasattr(field, "vjp_p_items"):  # a stacked batch (`_stacked.StackedField`)
        functions["vjp_p_items"] = field.vjp_p_items
        names.append("vjp_p_items")
    native = native and _native.numba_available()
    made = {}
    for name in names:
        xla = _checked(jax.jit(functions[name]), _WHAT[name])
        # `vjp_p_items` stays an XLA call: its output is `batch·m` long, and the
        # native compiler transposes the slicing of the flat `p` into one padded
        # `batch·m` array per parameter leaf, summed, where XLA fuses them (measured
        # on `benchmarks/neural_ode.py`'s field, 32 × 4,610: ~3 ms a call native,
        # ~0.7-1 ms XLA). Like every XLA callback, it computes in the precision
        # JAX is configured for (float32 without `jax_enable_x64`).
        if native and name != "vjp_p_items":
            lam = name in ("vjp", "f_vjp", "vjp_u", "vjp_p")
            made[name] = _native.NativeCallback(
                functions[name], _native.example_args(n, m, lam), _WHAT[name], xla
            )
        else:
            made[name] = xla
    return HostCallbacks(
        n=n,
        m=m,
        **made,
        sparse=None if sparsity is None else SparseJacobian(field, n, m, sparsity.value),
        native=native,
        functions=functions,
    )


@ft.lru_cache(maxsize=64)
def event_callback(event, n: int, m: int, native: bool = False):
    """The event condition `g(t, y, p) -> float` of a `FlatEvent` as a host callback
    (once per event: `event` compares by structure), native like `f` where it
    compiles."""
    what = "the event condition"

    def vector(t, y, p):  # shape (1,): the form native kernels check for finiteness
        return event(t, y, p)[None]

    xla = _checked(jax.jit(vector), what)
    fn = xla
    if native and _native.numba_available():
        fn = _native.NativeCallback(vector, _native.example_args(n, m), what, xla)

    def call(t, y, p):
        return float(fn(t, y, p)[0])

    return call


def _all_finite(*arrays: np.ndarray) -> bool:
    return all(np.isfinite(a).all() for a in arrays)

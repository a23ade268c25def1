"""The problem definition: a vector field and a time span."""

from collections.abc import Callable

import equinox as eqx
import numpy as np

MSG_TIME = (
    "`ODEProblem({name}=...)` must be a finite real number (a Python float or a "
    "concrete scalar); got {value!r}. Pass e.g. `ps.ODEProblem(f, t0=0.0, t1=10.0)`."
)


def _as_time(name: str, value) -> float:
    try:
        out = float(value)
    except Exception:  # a tracer, an array of size > 1, a string, ...
        raise TypeError(MSG_TIME.format(name=name, value=value)) from None
    if not np.isfinite(out):
        raise ValueError(MSG_TIME.format(name=name, value=value))
    return out


class ODEProblem(eqx.Module):
    """An initial value problem `dy/dt = vector_field(t, y, args)` on `[t0, t1]`.

    **Arguments:**

    - `vector_field`: a JAX-traceable function `f(t, y, args)` that returns a pytree of
        the same structure, shapes and dtypes as `y`. `args` may be any pytree,
        including an `eqx.Module` (a neural network, say).
    - `t0`, `t1`: the time span, with `t0 < t1`. These are static: changing them
        recompiles. Save times are passed to [`pysciml.solve`][] instead.
    - `jac_sparsity`: optional `(n, n)` boolean array or scipy sparse matrix giving the
        sparsity of the Jacobian of the *flattened* vector field. Stiff host solvers
        use it to build sparse Jacobians (`scipy.integrate.solve_ivp(jac_sparsity=)`,
        Julia `jac_prototype`). Backends that cannot use it ignore it.
    """

    vector_field: Callable = eqx.field(static=True)
    t0: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    jac_sparsity: object = eqx.field(static=True, default=None)

    def __init__(self, vector_field: Callable, t0, t1, *, jac_sparsity=None):
        if not callable(vector_field):
            raise TypeError(
                "`ODEProblem(vector_field=...)` must be a callable `f(t, y, args)`; "
                f"got {type(vector_field).__name__}."
            )
        t0 = _as_time("t0", t0)
        t1 = _as_time("t1", t1)
        if not t0 < t1:
            raise ValueError(
                f"`ODEProblem` needs `t0 < t1`; got t0={t0}, t1={t1}. Integration "
                "backward in time is not supported: substitute s = -t in the vector "
                "field instead."
            )
        self.vector_field = vector_field
        self.t0 = t0
        self.t1 = t1
        # Held by identity: an array is not hashable, and the problem is a static
        # argument of the solve.
        self.jac_sparsity = None if jac_sparsity is None else _Frozen(jac_sparsity)


class _Frozen:
    """Wraps a value so that it hashes by identity (used for static, unhashable data)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, _Frozen) and other.value is self.value

    def __hash__(self):
        return id(self.value)

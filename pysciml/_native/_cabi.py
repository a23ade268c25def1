"""C function pointers over native kernels: what the Julia bridge `ccall`s.

The signatures are fixed (`ABI`), in Julia's argument order for `ODEFunction` and
SciMLSensitivity's `vjp`/`vjp_p` hooks, all pointers to contiguous `Float64` buffers:

| name    | C signature                                              | writes            |
|---------|----------------------------------------------------------|-------------------|
| `f`     | `int32 f(double *out, double *u, double *p, double t)`   | `f(t, u, p)`, n   |
| `vjp_u` | `int32 vjp_u(double *out, double *v, double *u, double *p, double t)` | `vᵀ∂f/∂u`, n |
| `vjp_p` | `int32 vjp_p(double *out, double *v, double *u, double *p, double t)` | `vᵀ∂f/∂p`, m |
| `jac`   | `int32 jac(double *out, double *u, double *p, double t)` | `∂f/∂u`, n×n, column-major (Julia's layout) |

Each returns 0, or 1 when what it wrote is not finite. No Python runs in a call and
the GIL is not taken: the constants of the vector field are frozen into the machine
code, so a pointer stays valid as long as its `CFunction` object lives.
"""

import dataclasses
from typing import Any

import numba
import numpy as np
from numba import types

from . import _runtime
from ._compile import NativeKernel

_P = types.CPointer(types.float64)
ABI = {
    "f": types.int32(_P, _P, _P, types.float64),
    "vjp_u": types.int32(_P, _P, _P, _P, types.float64),
    "vjp_p": types.int32(_P, _P, _P, _P, types.float64),
    "jac": types.int32(_P, _P, _P, types.float64),
}

# The wrappers: `kernel` takes `(t, u, p[, v], consts...)`, row-major outputs.
_TEMPLATES = {
    "f": (
        "def wrapper(out_, u_, p_, t):\n"
        "    r = kernel(t, numba.carray(u_, (N,)), numba.carray(p_, (M,)){consts})\n"
        "    numba.carray(out_, (OUT,))[:] = r\n"
        "    return 0 if rt.all_finite(r) else 1\n"
    ),
    "vjp_u": (
        "def wrapper(out_, v_, u_, p_, t):\n"
        "    r = kernel(t, numba.carray(u_, (N,)), numba.carray(p_, (M,)),\n"
        "               numba.carray(v_, (N,)){consts})\n"
        "    numba.carray(out_, (OUT,))[:] = r\n"
        "    return 0 if rt.all_finite(r) else 1\n"
    ),
    "jac": (
        "def wrapper(out_, u_, p_, t):\n"
        "    r = kernel(t, numba.carray(u_, (N,)), numba.carray(p_, (M,)){consts})\n"
        # Column-major: out[i + N*j] = r[i, j], i.e. the rows of rᵀ.
        "    numba.carray(out_, (N, N))[:, :] = r.T\n"
        "    return 0 if rt.all_finite(r) else 1\n"
    ),
}
_TEMPLATES["vjp_p"] = _TEMPLATES["vjp_u"]


@dataclasses.dataclass(frozen=True)
class CFunction:
    """One exported pointer. `address` is what Julia receives; `cfunc` owns the
    machine code (keep this object alive while the address is in use)."""

    name: str
    address: int
    cfunc: Any
    ctypes: Any


def export(name: str, kernel: NativeKernel, n: int, m: int) -> CFunction:
    """Wraps a native kernel as a C function pointer with the signature `ABI[name]`.

    **Arguments:**

    - `name`: one of `"f"`, `"vjp_u"`, `"vjp_p"`, `"jac"`.
    - `kernel`: the compiled callback: `(t, u, p) -> out` for `f` and `jac`, and
        `(t, u, p, v) -> out` for the VJPs.
    - `n`, `m`: the sizes of the state and of the parameters.

    **Returns:**

    A `CFunction`.
    """
    out = {"f": n, "vjp_u": n, "vjp_p": m, "jac": n * n}[name]
    consts = "".join(f", c{i}" for i in range(len(kernel.consts)))
    source = (
        _TEMPLATES[name]
        .format(consts=consts)
        .replace("(N,)", f"({n},)")
        .replace("(M,)", f"({m},)")
        .replace("(OUT,)", f"({out},)")
        .replace("(N, N)", f"({n}, {n})")
    )
    # Constants are module globals of the wrapper, which Numba freezes into the
    # machine code; so the wrapper is compiled per process and never cached on disk.
    namespace = {"numba": numba, "np": np, "rt": _runtime, "kernel": kernel.kernel}
    namespace.update({f"c{i}": c for i, c in enumerate(kernel.consts)})
    exec(compile(source, f"<pysciml native {name}>", "exec"), namespace)
    cfunc = numba.cfunc(ABI[name], nopython=True)(namespace["wrapper"])
    return CFunction(name=name, address=cfunc.address, cfunc=cfunc, ctypes=cfunc.ctypes)

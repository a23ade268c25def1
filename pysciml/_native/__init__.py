"""A jaxpr → Numba compiler for the host path's callbacks.

The host solvers (SciPy, Julia) call the vector field, its VJPs and its Jacobian
thousands of times per solve; as jitted XLA calls each costs 5-7 µs of dispatch. This
package translates the same functions, from their jaxprs, into Python source over
NumPy that Numba compiles: `njit` kernels that SciPy calls directly, and `cfunc`
pointers with a fixed C signature that Julia calls with no Python in its loop.

- `_translate.py`: the jaxpr traversal and one rule per primitive;
- `_runtime.py`: helpers the generated code calls (reductions, batched products, …);
- `_compile.py`: source → Numba kernel, cached on disk by the hash of its source;
- `_cabi.py`: the C function pointers and their signature.
"""

from ._compile import NativeKernel, cache_dir, compile_function, compile_jaxpr
from ._translate import RULES, UnsupportedPrimitive

__all__ = [
    "RULES",
    "NativeKernel",
    "UnsupportedPrimitive",
    "cache_dir",
    "compile_function",
    "compile_jaxpr",
]

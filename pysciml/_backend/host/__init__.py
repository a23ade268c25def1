"""The host path, shared by every backend whose solver runs outside JAX (SciPy, Julia).

Everything that is not the host solver itself lives here, once:

- the jitted JAX callbacks over flat float64 NumPy vectors that a host solver calls:
    `f(t, y, p)`, the fused vector-Jacobian products `λᵀ∂f/∂y`, `λᵀ∂f/∂p`, and dense
    Jacobians for stiff solvers, or exact sparse ones when the problem gives a
    sparsity pattern (`SparseJacobian`); built once per problem and cached;
- `jax.pure_callback` for the two protocol primitives, with `vmap` support;
- the host thread: every host-solver call runs on one dedicated Python thread (see
    `HostThread` for why);
- status codes instead of exceptions across the callback boundary.

A concrete host backend implements only `host_forward` and `host_vjp`, on single
(unbatched) float64 NumPy arrays.

One concept per module (each imports only the ones listed before it):

- `_thread.py`: `HostThread`, the one thread every host-solver call runs on, and
    `HostInterrupted` (Ctrl-C during a host solve);
- `_codes.py`: the result codes (`SUCCESS` ... `SOLVER_FAILED`), `STATS_KEYS`, the
    exceptions host code turns into codes (`VectorFieldError`, `NonFiniteError`),
    `_checked` (which raises them from a callback) and `code_for` (which maps them onto
    codes, reporting each distinct error once);
- `_sparse.py`: exact sparse Jacobians (`greedy_colouring`, `SparseJacobian`);
- `_callbacks.py`: `HostCallbacks` and `host_callbacks`, the jitted callbacks of one
    vector field, cached per problem;
- `_savetimes.py`: `SaveTimes`, the save times of one solve as a host solver sees them;
- `_residuals.py`: `ResidualStore` and the store `RESIDUALS`, what a forward pass keeps
    for the backward pass;
- `_native.py`: native callbacks (`pysciml._native`'s Numba kernels in place of
    jitted XLA calls), compiled on first use, with the fallback to XLA;
- `_stacked.py`: a `vmap`ped batch solved as one stacked system;
- `_backend.py`: `AbstractHostBackend`, the `pure_callback`s of the two protocol
    primitives, with `vmap` support, and the error under second derivatives.

Mutable module state is read where it is defined: `RESIDUALS` from `_residuals`,
`_all_finite` from `_callbacks`, `_REPORTED` from `_codes`. To replace one (in a test),
patch that module; the names re-exported here are only the same objects, bound twice.
"""

from ._backend import MSG_NO_SECOND_DERIVATIVES, AbstractHostBackend
from ._callbacks import HostCallbacks, host_callbacks
from ._codes import (
    DT_MIN,
    MAX_STEPS,
    NONFINITE,
    SOLVER_FAILED,
    STATS_KEYS,
    SUCCESS,
    VECTOR_FIELD_ERROR,
    NonFiniteError,
    VectorFieldError,
    code_for,
)
from ._residuals import RESIDUALS, ResidualStore
from ._savetimes import SaveTimes
from ._sparse import SparseJacobian, greedy_colouring
from ._thread import MSG_INTERRUPTED, HostInterrupted, HostThread

__all__ = [
    "SUCCESS",
    "MAX_STEPS",
    "DT_MIN",
    "NONFINITE",
    "VECTOR_FIELD_ERROR",
    "SOLVER_FAILED",
    "STATS_KEYS",
    "HostThread",
    "HostInterrupted",
    "MSG_INTERRUPTED",
    "VectorFieldError",
    "NonFiniteError",
    "HostCallbacks",
    "host_callbacks",
    "greedy_colouring",
    "SparseJacobian",
    "code_for",
    "SaveTimes",
    "ResidualStore",
    "RESIDUALS",
    "AbstractHostBackend",
    "MSG_NO_SECOND_DERIVATIVES",
]

"""The Julia backend: DifferentialEquations.jl through juliacall, with SciMLSensitivity
adjoints, on the shared host path.

Only `JuliaBackend.host_forward`/`host_vjp` and `_julia.py` touch Julia; everything else
(flattening, callbacks, vmap, threads, failure codes) is `host/`, which the SciPy
backend runs in CI. The Julia side is `julia/PySciML.jl`.
"""

from typing import ClassVar

import numpy as np

from .._julia import julia_module
from .._sensitivity import (
    AbstractSensitivity,
    BacksolveAdjoint,
    GaussAdjoint,
    InterpolatingAdjoint,
    QuadratureAdjoint,
)
from .._solver import (
    FBDF,
    AbstractSolver,
    Dopri5,
    Dopri8,
    Kvaerno5,
    Rodas5P,
    Tsit5,
)
from .host import (
    MSG_INTERRUPTED,
    NONFINITE,
    SOLVER_FAILED,
    VECTOR_FIELD_ERROR,
    AbstractHostBackend,
    HostInterrupted,
    HostThread,
    code_for,
)

# pysciml tag -> OrdinaryDiffEq algorithm name, as understood by `julia/solvers.jl`.
# Where each lives (OrdinaryDiffEq v7 re-exports only Tsit5, Rodas5P and FBDF from its
# subpackages; DP5, DP8 and Kvaerno5 come from the subpackages the bridge imports).
_HOMES = {
    "Tsit5": "OrdinaryDiffEq.Tsit5",
    "DP5": "OrdinaryDiffEqLowOrderRK.DP5",
    "DP8": "OrdinaryDiffEqHighOrderRK.DP8",
    "Kvaerno5": "OrdinaryDiffEqSDIRK.Kvaerno5",
    "Rodas5P": "OrdinaryDiffEq.Rodas5P",
    "FBDF": "OrdinaryDiffEq.FBDF",
}
_IMPLICIT = (Kvaerno5, Rodas5P, FBDF)
_ALGS = {
    Tsit5: "Tsit5",
    Dopri5: "DP5",
    Dopri8: "DP8",
    Kvaerno5: "Kvaerno5",
    Rodas5P: "Rodas5P",
    FBDF: "FBDF",
}
_SENSEALGS = {
    GaussAdjoint: "GaussAdjoint",
    InterpolatingAdjoint: "InterpolatingAdjoint",
    QuadratureAdjoint: "QuadratureAdjoint",
    BacksolveAdjoint: "BacksolveAdjoint",
}


class JuliaCallbacks:
    """The Python functions that Julia calls, in the argument order of the bridge:
    `f(u, p, t)`, `vjp_u(λ, u, p, t)`, `vjp_p(λ, u, p, t)`, and, given the event
    condition `event(t, y, p) -> float` (`host_locate`), `g(u, p, t) -> float`. Each
    copies its inputs (Julia reuses its buffers) and returns a fresh float64 NumPy
    vector (`g`: a float).

    SciMLSensitivity asks for `λᵀ∂f/∂u` and `λᵀ∂f/∂p` in two calls at the same point;
    the fused JAX callback computes both at once, so the second call is served from a
    one-entry memo. The first Python exception is kept in `error`, since Julia reports
    only that a callback failed.
    """

    def __init__(self, callbacks, event=None):
        self.callbacks = callbacks
        self.event = event
        self.error = None
        self._key = None
        self._value = None

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except Exception as e:
            if self.error is None:
                self.error = e
            raise

    def f(self, u, p, t):
        return self._guard(
            self.callbacks.f, float(t), np.array(u, np.float64), np.array(p, np.float64)
        )

    def g(self, u, p, t):
        return self._guard(
            self.event, float(t), np.array(u, np.float64), np.array(p, np.float64)
        )

    def _vjp(self, lam, u, p, t):
        lam = np.array(lam, np.float64)
        u = np.array(u, np.float64)
        p = np.array(p, np.float64)
        key = (float(t), lam.tobytes(), u.tobytes(), p.tobytes())
        if key != self._key:
            self._value = self._guard(self.callbacks.vjp, float(t), u, p, lam)
            self._key = key
        return self._value

    def vjp_u(self, lam, u, p, t):
        return self._vjp(lam, u, p, t)[: self.callbacks.n].copy()

    def vjp_p(self, lam, u, p, t):
        return self._vjp(lam, u, p, t)[self.callbacks.n :].copy()

    def poll(self):
        """Called by the bridge every few milliseconds of a solve over native kernels,
        where no other Python runs: raises `HostInterrupted` after a Ctrl-C (as the
        Python callbacks do), and lets the waiting thread take the GIL."""
        self._guard(_check_cancel)

    def code(self, code: int) -> int:
        """Refines a bridge code with the Python exception behind it, reporting it.
        The bridge's code 4 means "a Python callback raised"; without a recorded
        exception there is nothing behind it to report, so it is a solver failure
        (whose message the bridge holds)."""
        if code == VECTOR_FIELD_ERROR:
            return SOLVER_FAILED if self.error is None else code_for(self.error)
        return code


def _check_cancel():
    if HostThread.cancel:
        raise HostInterrupted(MSG_INTERRUPTED)


def _native_pointers(backend, callbacks):
    """The native kernels' C function pointers for the bridge's `forward_native` /
    `vjp_native`, or `None` for the Python callbacks: `native_rhs=False`, or
    `callbacks.c_pointers()` gave none (native code unavailable, or the vector field
    does not compile). The caller keeps the returned object alive until Julia returns:
    it owns the machine code behind the addresses."""
    if getattr(backend, "native_rhs", "auto") is False:
        return None
    c_pointers = getattr(callbacks, "c_pointers", None)
    return None if c_pointers is None else c_pointers()


def _addresses(pointers) -> tuple[int, int, int]:
    return (int(pointers.f.address), int(pointers.vjp_u.address),
            int(pointers.vjp_p.address))


def _jac_pattern(problem) -> tuple[np.ndarray, np.ndarray]:
    """The problem's Jacobian sparsity as 1-based COO `(rows, cols)` for the bridge,
    which builds a `SparseMatrixCSC` `jac_prototype` from them for implicit solvers;
    two empty vectors when the problem gives none."""
    if problem.jac_sparsity is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    import scipy.sparse as sp

    coo = sp.coo_matrix(sp.csr_matrix(problem.jac_sparsity.value) != 0)
    return coo.row.astype(np.int64) + 1, coo.col.astype(np.int64) + 1


def _julia_message(jl, what: str, options) -> None:
    import sys

    message = str(jl.last_error())
    if message:
        print(
            f"pysciml: Julia {what} failed with solver={type(options.solver).__name__}() "
            f"({_HOMES[_ALGS[type(options.solver)]]}), "
            f"sensitivity={type(options.sensitivity).__name__}():\n  {message}",
            file=sys.stderr,
        )


class JuliaBackend(AbstractHostBackend):
    """Solves with OrdinaryDiffEq.jl and differentiates with SciMLSensitivity.jl's
    adjoints, through juliacall. The vector field and its VJPs stay in JAX: Julia calls
    them back through `ODEFunction{true, FullSpecialize}(f!; vjp, vjp_p)`, so no Julia
    AD ever runs through Python (which would silently give zero gradients,
    SciMLSensitivity#334).

    | pysciml              | Julia                                               |
    |----------------------|-----------------------------------------------------|
    | `Tsit5` (default)    | `OrdinaryDiffEq.Tsit5()`                            |
    | `Dopri5`             | `OrdinaryDiffEqLowOrderRK.DP5()`                    |
    | `Dopri8`             | `OrdinaryDiffEqHighOrderRK.DP8()`                   |
    | `Kvaerno5`           | `OrdinaryDiffEqSDIRK.Kvaerno5()` (finite-difference Jacobian) |
    | `Rodas5P`            | `OrdinaryDiffEq.Rodas5P()` (finite-difference Jacobian) |
    | `FBDF`               | `OrdinaryDiffEq.FBDF()` (finite-difference Jacobian) |
    | `GaussAdjoint` (default) | `GaussAdjoint(autojacvec=ZygoteVJP())` + `vjp` hooks |
    | `InterpolatingAdjoint` | `InterpolatingAdjoint(autojacvec=ZygoteVJP())`    |
    | `QuadratureAdjoint`  | `QuadratureAdjoint(autojacvec=ZygoteVJP())`         |
    | `BacksolveAdjoint`   | `BacksolveAdjoint(autojacvec=ZygoteVJP())`          |

    `ZygoteVJP` only keeps SciMLSensitivity from allocating dense Jacobians: the `vjp`
    hooks are used first, so Zygote never runs (julia/NOTES.md).

    Native kernels: where `callbacks.c_pointers()` gives C function pointers (the same
    f, λᵀ∂f/∂u and λᵀ∂f/∂p compiled by Numba; `native_rhs` not `False`), the bridge's
    `forward_native`/`vjp_native` `ccall` them, so no Python runs per right-hand side;
    a non-finite kernel output ends the solve as `nonfinite`, and Ctrl-C still stops
    it (the bridge polls Python every 10 ms). Otherwise the Python callbacks above.

    Events (`solve(event=...)`): `host_locate` calls the bridge's `locate` (or
    `locate_native`), which solves with a terminal `ContinuousCallback` around the
    condition, a Python callback `g(u, p, t)`; only the event time comes back, and
    `solve` differentiates the solve to that fixed time as usual. Written from the
    SciMLBase and DiffEqBase sources, never run (julia/NOTES.md, "Events").

    The adjoint is integrated with the forward solver, so stiff problems get stiff
    adjoints (implicit, with finite-difference Jacobians of the adjoint system: Float64
    only, no dual numbers reach Python).

    With `ODEProblem(jac_sparsity=...)`, the implicit solvers get the pattern as a
    sparse `jac_prototype` (coloured finite differences and a sparse linear solver), and
    `GaussAdjoint`/`QuadratureAdjoint` derive the adjoint's pattern from it. Written
    from the OrdinaryDiffEq and SciMLSensitivity sources, never run.

    This backend has never been executed in pysciml's CI: no Julia exists there.
    """

    name: ClassVar[str] = "julia"
    solvers: ClassVar[dict[type[AbstractSolver], str]] = {
        k: _HOMES[v] for k, v in _ALGS.items()
    }
    sensitivities: ClassVar[dict[type[AbstractSensitivity], str]] = {
        k: f"SciMLSensitivity.{v}" for k, v in _SENSEALGS.items()
    }
    default_solver: ClassVar[AbstractSolver] = Tsit5()
    default_sensitivity: ClassVar[AbstractSensitivity] = GaussAdjoint()

    def host_prepare(self, problem, options):
        # SciMLSensitivity builds the adjoint `jac_prototype` of InterpolatingAdjoint
        # and BacksolveAdjoint from the forward pattern without the block that couples
        # the parameter gradient to λ (interpolating_adjoint.jl, backsolve_adjoint.jl:
        # `[Jᵀ 0; 0 I]`), and no keyword overrides it: coloured finite differences would
        # then fold that block into wrong Newton-matrix entries.
        if (
            problem.jac_sparsity is not None
            and isinstance(options.solver, _IMPLICIT)
            and isinstance(options.sensitivity, (InterpolatingAdjoint, BacksolveAdjoint))
        ):
            raise ValueError(
                f"`sensitivity={type(options.sensitivity).__name__}()` with "
                f"`solver={type(options.solver).__name__}()` and "
                "`ODEProblem(jac_sparsity=...)` is not supported by the 'julia' backend: "
                "SciMLSensitivity gives that adjoint an incomplete sparsity pattern. Use "
                "`sensitivity=ps.GaussAdjoint()` (the default) or "
                "`ps.QuadratureAdjoint()`, whose adjoint pattern is complete."
            )
        # Start Julia (or fail with what to install) at trace time, on the host
        # thread, rather than inside a callback; listing `solvers` starts nothing.
        julia_module()

    def host_forward(self, callbacks, problem, y0, p, ts, options, *, keep):
        jl = julia_module()
        cb = JuliaCallbacks(callbacks)
        pointers = _native_pointers(self, callbacks)  # alive until Julia returns
        # Up to the last save time, not `t1`, as the SciPy backend does: nothing past
        # it is needed, and past an event the field may be undefined.
        args = (y0, p, problem.t0, float(ts[-1]), ts, _ALGS[type(options.solver)],
                options.rtol, options.atol, options.max_steps, *_jac_pattern(problem))
        if pointers is None:
            result = jl.forward(cb.f, cb.vjp_u, cb.vjp_p, *args)  # not run in CI
        else:
            result = jl.forward_native(*_addresses(pointers), cb.poll, *args)  # likewise
        ys, code, nf, naccept, nreject = result
        code = cb.code(int(code))
        if code not in (0, NONFINITE, VECTOR_FIELD_ERROR):
            _julia_message(jl, "forward solve", options)
        stats = {"num_steps": int(naccept), "num_rejected_steps": int(nreject),
                 "num_fevals": int(nf)}
        # The bridge keeps nothing: `vjp` re-solves (SciMLSensitivity needs the
        # Julia solution object, which does not outlive the call).
        return np.array(ys, np.float64), code, stats, None

    def host_vjp(self, callbacks, problem, y0, p, ts, ys_bar, options, *, saved):
        jl = julia_module()
        cb = JuliaCallbacks(callbacks)
        pointers = _native_pointers(self, callbacks)  # alive until Julia returns
        args = (y0, p, problem.t0, float(ts[-1]), ts, ys_bar, _ALGS[type(options.solver)],
                _SENSEALGS[type(options.sensitivity)], options.rtol, options.atol,
                options.max_steps, *_jac_pattern(problem))
        if pointers is None:
            result = jl.vjp(cb.f, cb.vjp_u, cb.vjp_p, *args)  # not run in CI
        else:
            result = jl.vjp_native(*_addresses(pointers), cb.poll, *args)  # likewise
        du0, dp, code = result
        code = cb.code(int(code))
        if code not in (0, NONFINITE, VECTOR_FIELD_ERROR):
            _julia_message(jl, "adjoint solve", options)
        return np.array(du0, np.float64), np.array(dp, np.float64), code

    def host_locate(self, callbacks, problem, event, y0, p, options):
        jl = julia_module()
        cb = JuliaCallbacks(callbacks, event)
        pointers = _native_pointers(self, callbacks)  # alive until Julia returns
        args = (y0, p, problem.t0, problem.t1, int(problem.event.direction),
                _ALGS[type(options.solver)], options.rtol, options.atol,
                options.max_steps, *_jac_pattern(problem))
        if pointers is None:
            result = jl.locate(cb.f, cb.vjp_u, cb.vjp_p, cb.g, *args)  # not run in CI
        else:
            result = jl.locate_native(*_addresses(pointers), cb.poll, cb.g,
                                      *args)  # likewise
        t_event, happened, code = result
        code = cb.code(int(code))
        if code not in (0, NONFINITE, VECTOR_FIELD_ERROR):
            _julia_message(jl, "event location", options)
        return float(t_event), bool(happened), code

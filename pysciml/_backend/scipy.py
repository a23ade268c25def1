"""The SciPy backend: `scipy.integrate`'s solvers on the shared host path.

It exists for two reasons: it is an independent reference for the other backends, and
it runs the host path (`host/`) that the Julia backend relies on, on every machine.
"""

from typing import ClassVar

import equinox as eqx
import jax
import numpy as np
import scipy.integrate as si
import scipy.sparse as sp
from scipy.optimize import brentq

from .._sensitivity import AbstractSensitivity, BacksolveAdjoint, InterpolatingAdjoint
from .._solver import LSODA, QNDF, AbstractSolver, Dopri5, Dopri8, RadauIIA5
from .host import (
    DT_MIN,
    MAX_STEPS,
    SOLVER_FAILED,
    SUCCESS,
    AbstractHostBackend,
    NonFiniteError,
    VectorFieldError,
    code_for,
)

_METHODS = {
    Dopri5: si.RK45,
    Dopri8: si.DOP853,
    RadauIIA5: si.Radau,
    QNDF: si.BDF,
    LSODA: si.LSODA,
}
_IMPLICIT = (si.Radau, si.BDF, si.LSODA)
_RUNGE_KUTTA = (si.RK45, si.DOP853)


class _Failed(Exception):
    def __init__(self, code):
        self.code = code


class _Interpolant:
    """The forward pass's dense output, read by the backward pass at ~10^4 points.

    The backward pass walks it from the end, so the current segment is cached and
    searched for only when left; `RK45` pieces are evaluated directly. Together this
    halves the cost of SciPy's `OdeSolution.__call__` (15 µs a call, 28% of a gradient).
    """

    def __init__(self, grid, pieces):
        self.grid = np.asarray(grid)
        self.pieces = pieces
        self.k = len(pieces) - 1

    def __call__(self, t):
        k, grid = self.k, self.grid
        if not grid[k] <= t <= grid[k + 1]:
            k = int(np.searchsorted(grid, t, side="left")) - 1
            k = min(max(k, 0), len(self.pieces) - 1)
            self.k = k
        piece = self.pieces[k]
        if type(piece) is _RK_DENSE:
            x = (t - piece.t_old) / piece.h
            return piece.h * (piece.Q @ np.cumprod(np.full(piece.order + 1, x))) + (
                piece.y_old
            )
        return piece(t)


_RK_DENSE = si._ivp.rk.RkDenseOutput


def _make_solver(method, fun, t, y, t_bound, options, jac, jac_sparsity, first_step):
    kwargs = dict(rtol=options.rtol, atol=options.atol)
    if first_step is not None:
        kwargs["first_step"] = min(first_step, abs(t_bound - t))
    if method in (si.Radau, si.BDF):
        if jac_sparsity is not None:
            kwargs["jac_sparsity"] = jac_sparsity
        elif jac is not None:
            kwargs["jac"] = jac
    elif method is si.LSODA and jac is not None:
        kwargs["jac"] = jac
    return method(fun, t, y, t_bound, **kwargs)


def _release(solver):
    """Drops the solver's sparse LU factors now. SciPy's `BDF` and `Radau` hold their
    factors in a reference cycle (`solver.lu` closes over `solver`), so they would
    otherwise live until a garbage collection; and a SuperLU factor made on the host
    thread that is still alive at interpreter exit makes the exit fail (status 120,
    "TypeError: an integer is required" while flushing stdout; scipy 1.17.1)."""
    if solver is not None:
        for name in ("LU", "LU_real", "LU_complex"):
            if getattr(solver, name, None) is not None:
                setattr(solver, name, None)


def _step(solver, counter, max_steps):
    """One accepted step, or an exception carrying the result code."""
    if counter[0] >= max_steps:
        raise _Failed(MAX_STEPS)
    message = solver.step()
    counter[0] += 1
    if solver.status == "failed":
        if message is not None and "step size" in message:
            raise _Failed(DT_MIN)
        raise _Failed(SOLVER_FAILED)


def _forward(method, fun, t0, y0, ts, options, jac, jac_sparsity, dense):
    """Integrates from `t0` to `ts[-1]` in one solver run, saving at `ts` from each
    step's dense output. Returns `(ys, stats, interpolant or None)`."""
    n = y0.shape[0]
    ys = np.empty((ts.shape[0], n))
    # `ts` is strictly increasing and after t0 (the host path's `SaveTimes`).
    i = 0
    counter = [0]
    solver = _make_solver(method, fun, t0, y0, ts[-1], options, jac, jac_sparsity, None)
    grid, pieces = [t0], []
    try:
        while i < ts.shape[0]:
            _step(solver, counter, options.max_steps)
            t = solver.t
            j = int(np.searchsorted(ts, t, side="right"))
            if dense or j > i:
                piece = solver.dense_output()
                if dense:
                    grid.append(t)
                    pieces.append(piece)
                if j > i:
                    ys[i:j] = piece(ts[i:j]).T
                    if ts[j - 1] == t:  # exactly on a step end: no interpolation error
                        ys[j - 1] = solver.y
                    i = j
    finally:
        _release(solver)
    stats = {"num_steps": counter[0], "num_rejected_steps": -1, "num_fevals": solver.nfev}
    interpolant = _Interpolant(grid, pieces) if dense and pieces else None
    return ys, stats, interpolant


def _backward(method, fun, t_start, z, stops, jump, options, jac, jac_sparsity,
              on_step=None):
    """Integrates the adjoint system backward through `stops` (decreasing times) in a
    single pass, calling `jump(k, z)` on reaching `stops[k]`, and `on_step(solver)`
    after every accepted step (if given). Runge--Kutta solvers are kept across the
    jumps (only their state and first stage are reset); others are restarted with the
    last step size."""
    counter = [0]
    solver = None
    step_size = None
    t = t_start
    try:
        for k, target in enumerate(stops):
            if target < t:
                if solver is not None and method in _RUNGE_KUTTA:
                    solver.y = z
                    solver.f = solver.fun(t, z)  # first-same-as-last stage of new state
                    solver.t_bound = target
                    solver.status = "running"
                else:
                    _release(solver)
                    solver = _make_solver(
                        method, fun, t, z, target, options, jac, jac_sparsity, step_size
                    )
                while solver.status == "running":
                    _step(solver, counter, options.max_steps)
                    if on_step is not None:
                        on_step(solver)
                t = solver.t
                step_size = solver.step_size
                z = solver.y.copy()
            z = jump(k, z)
    finally:
        _release(solver)
    return z


# The order of each Runge--Kutta method's dense output (SciPy's `RkDenseOutput`):
# `RK45`'s free interpolant is of order 4, `DOP853`'s of order 7.
_DENSE_ORDER = {si.RK45: 4, si.DOP853: 7}


def _gauss_legendre(method):
    """Gauss--Legendre nodes and weights on [0, 1] for the quadrature adjoint of a
    Runge--Kutta `method`.

    The integrand reads `λ` from the step's dense output, whose error on a step of
    length `h` is `O(h^(q+1))` for a dense output of order `q` (`_DENSE_ORDER`). `G`
    nodes integrate polynomials of degree `2G - 1` exactly, an error `O(h^(2G+1))`:
    the smallest `G` with `2G + 1 >= q + 1` matches the dense output, and more nodes
    would buy nothing. So 2 nodes for `RK45` (each a `vjp_p_items` call over the whole
    batch: the quadrature's main cost), 4 for `DOP853`."""
    q = _DENSE_ORDER[method]
    x, w = np.polynomial.legendre.leggauss(-(-q // 2))
    return (x + 1) / 2, w / 2


def _quadrature_adjoint(method, callbacks, batch, y_at, p, ts, ys_bar, stops,
                        options):
    """The interpolating adjoint of a stacked batch of `batch` items with shared `p`,
    with the per-item parameter cotangents by quadrature (as SciMLSensitivity's
    `GaussAdjoint`): only `λ` (`n` states, all items) is integrated backward,
    `λ' = -(∂f/∂y)ᵀλ`; each item's `μ_i = ∫ λ_iᵀ∂f/∂p(y_i, p) dt` over
    `[t0, t_last]` is accumulated outside the ODE, on each accepted step `[t, t_old]`
    of `λ`, by Gauss--Legendre quadrature on the step's dense output of `λ` and the
    forward pass's dense output of `y` (`callbacks.vjp_p_items`).

    Why: with many shared parameters (a neural ODE's weights) the `batch·m` states of
    the per-item `μ` would make every adjoint evaluation and every error norm
    `O(batch·(n + m))`, and, being under error control, force extra steps. Here the
    steps are `λ`'s alone, `λ`'s right-hand side reads the one shared `p`, and
    `vjp_p_items` is called `G` times a step.

    The price: `μ` is not under the solver's error control. Its accuracy follows
    `λ`'s steps (chosen for `λ` at the solve's tolerances), the dense outputs' order
    and the quadrature's (`_gauss_legendre`), as with `GaussAdjoint`. Returns
    `(λ(t0), μ(t0))`, `μ` with one row of `m` per item (`batch·m`)."""
    vjp_u, vjp_p = callbacks.resolved("vjp_u"), callbacks.resolved("vjp_p_items")
    x, w = _gauss_legendre(method)
    mu = np.zeros(callbacks.m * batch)

    def rhs(t, lam):
        return -vjp_u(t, y_at(t), p, lam)

    def jump(k, lam):
        # `λ` jumps by the save time's cotangent; `μ` is continuous (nothing to add).
        if k < len(ts) - 1:
            lam += ys_bar[-2 - k]
        return lam

    def on_step(solver):
        # A backward step, from `t_old` down to `t`: `μ(t) = μ(t_old) + ∫_t^t_old
        # λᵀ∂f/∂p ds` (the adjoint ODE's `μ' = -λᵀ∂f/∂p` integrated backward), so
        # add `h Σ_g w_g λ(s_g)ᵀ∂f/∂p(y(s_g))` with `h = t_old - t > 0`.
        h = solver.t_old - solver.t
        nodes = solver.t + h * x
        lams = np.ascontiguousarray(solver.dense_output()(nodes).T)
        total = np.zeros(mu.shape)
        for g in range(len(x) - 1, -1, -1):  # decreasing times: `y_at` walks back
            total += w[g] * vjp_p(nodes[g], y_at(nodes[g]), p, lams[g])
        mu[:] += h * total

    lam = _backward(method, rhs, ts[-1], np.array(ys_bar[-1], dtype=np.float64),
                    stops, jump, options, None, None, on_step)
    return lam, mu


def _params(callbacks, p):
    """`p` as the callbacks take it best: NumPy for native kernels; for XLA callbacks,
    on the device once per solve rather than once per call (~1 µs a call)."""
    return p if callbacks.native else jax.device_put(p)


class ScipyBackend(AbstractHostBackend):
    """Solves with `scipy.integrate`'s `OdeSolver` classes, on the host, in float64.

    Gradients are continuous adjoints computed on the host: the adjoint ODE
    `dλ/dt = -(∂f/∂y)ᵀλ`, `dμ/dt = -(∂f/∂p)ᵀλ` is integrated backward in one pass from
    the last save time to `t0`, with `λ` jumping by `ys_bar[i]` at each save time, by the
    same method and at the same tolerances as the forward solve. For a `vmap`ped batch
    solved stacked with many shared parameters, the interpolating adjoint of `RK45` and
    `DOP853` integrates `λ` alone and `μ` (one row per item) by Gauss--Legendre
    quadrature on `λ`'s steps (`_quadrature_adjoint`; `μ` is then not under error
    control, as in SciMLSensitivity's `GaussAdjoint`).

    | pysciml                | SciPy                                              |
    |------------------------|----------------------------------------------------|
    | `Dopri5` (default)     | `RK45`                                             |
    | `Dopri8`               | `DOP853`                                           |
    | `RadauIIA5`            | `Radau` (exact Jacobian from JAX: dense, or sparse with `jac_sparsity`) |
    | `QNDF`                 | `BDF` (likewise)                                   |
    | `LSODA`                | `LSODA` (exact dense Jacobian from JAX)            |
    | `InterpolatingAdjoint` (default) | state read from the forward dense output |
    | `BacksolveAdjoint`     | state re-integrated backward, reset to the forward values at each save time |
    """

    name: ClassVar[str] = "scipy"
    solvers: ClassVar[dict[type[AbstractSolver], str]] = {
        k: f"scipy.integrate.{v.__name__}" for k, v in _METHODS.items()
    }
    sensitivities: ClassVar[dict[type[AbstractSensitivity], str]] = {
        InterpolatingAdjoint: "backward adjoint ODE on the forward dense output",
        BacksolveAdjoint: "backward adjoint ODE with the state re-integrated",
    }
    default_solver: ClassVar[AbstractSolver] = Dopri5()
    default_sensitivity: ClassVar[AbstractSensitivity] = InterpolatingAdjoint()

    # With `ODEProblem(jac_sparsity=...)`, `Radau` and `BDF` (and their adjoints) get
    # sparse Jacobians: "exact" computes them in JAX by column colouring
    # (`host.SparseJacobian`: one callback per Jacobian); "finite_differences" passes
    # the pattern to SciPy's own grouped finite differences (`k + 1` callbacks of f).
    # `ScipyBackend(sparse_jacobian="finite_differences")` selects the latter.
    sparse_jacobian: str = eqx.field(static=True, default="exact")

    def __check_init__(self):
        if self.sparse_jacobian not in ("exact", "finite_differences"):
            raise ValueError(
                '`ScipyBackend(sparse_jacobian=...)` must be "exact" or '
                f'"finite_differences"; got {self.sparse_jacobian!r}.'
            )

    def _sparse(self, method, sparsity) -> bool:
        """Whether SciPy solves with sparse Jacobians (LSODA takes dense ones only)."""
        return sparsity is not None and method in (si.Radau, si.BDF)

    def _jacobians(self, callbacks, problem, method, p):
        """The forward Jacobian (exact, from JAX) and the sparsity to pass to SciPy."""
        sparsity = None if problem.jac_sparsity is None else problem.jac_sparsity.value
        if method not in _IMPLICIT:
            return None, None
        if self._sparse(method, sparsity):
            if self.sparse_jacobian == "exact":
                return (lambda t, y: callbacks.sparse.jac(t, y, p)), None
            return None, sparsity
        jac = callbacks.resolved("jac")
        return (lambda t, y: jac(t, y, p)), None

    def host_prepare(self, problem, options):
        pass  # SciPy is imported with this module: nothing to start.

    def _solve(self, callbacks, problem, y0, p, ts, options, *, dense):
        """The forward solve of `host_forward`, and of `host_vjp` when the forward
        pass's dense output was not kept."""
        method = _METHODS[type(options.solver)]
        jac, sparsity = self._jacobians(callbacks, problem, method, p)
        f = callbacks.resolved("f")
        return _forward(
            method,
            lambda t, y: f(t, y, p),
            problem.t0,
            y0,
            ts,
            options,
            jac,
            sparsity,
            dense=dense,
        )

    def host_forward(self, callbacks, problem, y0, p, ts, options, *, keep):
        p = _params(callbacks, p)
        dense = keep and isinstance(options.sensitivity, InterpolatingAdjoint)
        try:
            ys, stats, interpolant = self._solve(
                callbacks, problem, y0, p, ts, options, dense=dense
            )
        except _Failed as e:
            return None, e.code, {}, None
        except (VectorFieldError, NonFiniteError) as e:
            return None, code_for(e), {}, None
        return ys, SUCCESS, stats, ((ys, interpolant) if keep else None)

    def host_locate(self, callbacks, problem, event, y0, p, options):
        p = _params(callbacks, p)
        method = _METHODS[type(options.solver)]
        jac, sparsity = self._jacobians(callbacks, problem, method, p)
        f = callbacks.resolved("f")
        triggered = problem.event.triggered  # bound once: ~25 µs per bound access
        solver = _make_solver(method, lambda t, y: f(t, y, p), problem.t0, y0,
                              problem.t1, options, jac, sparsity, None)
        counter = [0]
        g_old = event(problem.t0, y0, p)
        try:
            while solver.status == "running":
                _step(solver, counter, options.max_steps)
                g_new = event(solver.t, solver.y, p)
                if triggered(g_old, g_new):
                    return self._root(event, p, solver, g_old, g_new), True, SUCCESS
                g_old = g_new
        except _Failed as e:
            return problem.t1, False, e.code
        finally:
            _release(solver)
        return problem.t1, False, SUCCESS

    @staticmethod
    def _root(event, p, solver, g_old, g_new):
        """The crossing inside the last step, on its dense output, to rounding (as
        `solve_ivp(events=...)` locates it)."""
        if g_old == 0:
            return solver.t_old
        if g_new == 0:
            return solver.t
        piece = solver.dense_output()
        eps = 4 * np.finfo(float).eps
        return brentq(lambda t: event(t, piece(t), p), solver.t_old, solver.t,
                      xtol=eps, rtol=eps)

    def host_quadrature(self, options):
        # The interpolating adjoint of the explicit Runge--Kutta methods, whose
        # backward steps give a dense output of `λ` to integrate on.
        return (isinstance(options.sensitivity, InterpolatingAdjoint)
                and _METHODS[type(options.solver)] in _RUNGE_KUTTA)

    def host_vjp(self, callbacks, problem, y0, p, ts, ys_bar, options, *, saved,
                 quadrature=False):
        p = _params(callbacks, p)
        method = _METHODS[type(options.solver)]
        n, m = callbacks.n, callbacks.m
        interpolating = isinstance(options.sensitivity, InterpolatingAdjoint)
        if quadrature and not self.host_quadrature(options):
            raise ValueError("no quadrature adjoint for these options")  # a bug
        try:
            if saved is None:
                ys, _, interpolant = self._solve(
                    callbacks, problem, y0, p, ts, options, dense=interpolating
                )
            else:
                ys, interpolant = saved
            # Stops of the backward pass: every save time below the last, then t0.
            stops = np.concatenate([ts[-2::-1], [problem.t0]])
            if interpolating:
                y_at = (lambda t: y0) if interpolant is None else interpolant
                if quadrature:
                    lam, mu = _quadrature_adjoint(
                        method, callbacks, problem.vector_field.batch, y_at, p, ts,
                        ys_bar, stops, options)
                    return lam, mu, SUCCESS
                z = np.concatenate([ys_bar[-1], np.zeros(m)])
                vjp = callbacks.resolved("vjp")

                def rhs(t, z):
                    return -vjp(t, y_at(t), p, z[:n])

                def jump(k, z):
                    if k < len(ts) - 1:
                        z[:n] += ys_bar[-2 - k]
                    return z

                pattern = problem.jac_sparsity
                bjac, bsparsity = self._adjoint_jacobians(
                    callbacks, method, y_at, p, n, m,
                    None if pattern is None else pattern.value,
                )
                z = _backward(
                    method, rhs, ts[-1], z, stops, jump, options, bjac, bsparsity
                )
                return z[:n], z[n:], SUCCESS
            # Backsolve: z = [y, λ, μ]; y restarts from the forward value at each save
            # time, which keeps the backward state on the forward trajectory.
            z = np.concatenate([ys[-1], ys_bar[-1], np.zeros(m)])
            f_vjp = callbacks.resolved("f_vjp")

            def rhs(t, z):
                out = f_vjp(t, z[:n], p, z[n : 2 * n])
                out[n:] *= -1
                return out

            def jump(k, z):
                if k < len(ts) - 1:
                    z[:n] = ys[-2 - k]
                    z[n : 2 * n] += ys_bar[-2 - k]
                return z

            z = _backward(method, rhs, ts[-1], z, stops, jump, options, None, None)
            return z[n : 2 * n], z[2 * n :], SUCCESS
        except _Failed as e:
            return None, None, e.code

    def _adjoint_jacobians(self, callbacks, method, y_at, p, n, m, sparsity):
        """Jacobian of the interpolating adjoint system `z = [λ, μ]`, for implicit
        methods: `[[-(∂f/∂y)ᵀ, 0], [-(∂f/∂p)ᵀ, 0]]`."""
        if method not in _IMPLICIT:
            return None, None
        if self._sparse(method, sparsity) and self.sparse_jacobian == "exact":
            return (lambda t, z: callbacks.sparse.adjoint_jac(t, y_at(t), p)), None
        if self._sparse(method, sparsity):
            s = sp.csr_matrix(sparsity, dtype=bool).T
            pattern = sp.bmat(
                [[s, None], [sp.csr_matrix(np.ones((m, n), bool)), None]],
                format="csr",
            ) if m else s
            pattern = sp.csr_matrix(pattern, shape=(n + m, n + m))
            return None, pattern

        def jac(t, z):
            y = y_at(t)
            out = np.zeros((n + m, n + m))
            out[:n, :n] = -callbacks.jac(t, y, p).T
            if m:
                out[n:, :n] = -callbacks.jac_p(t, y, p).T
            return out

        return jac, None

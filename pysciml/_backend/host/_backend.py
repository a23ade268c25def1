"""The backend: `AbstractHostBackend`, which turns a host solver's `host_forward` and
`host_vjp` on single NumPy problems into the two protocol primitives, through
`jax.pure_callback` (with `vmap` support)."""

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..._forward import ForwardSensitivityField
from ..._solution import RESULTS
from ..base import AbstractBackend, FlatProblem, SolveOptions
from . import _callbacks, _native, _residuals, _stacked
from ._callbacks import HostCallbacks, host_callbacks
from ._codes import NONFINITE, STATS_KEYS, SUCCESS, code_for
from ._savetimes import SaveTimes
from ._thread import CtrlC, HostThread

MSG_NO_SECOND_DERIVATIVES = (
    "The {name!r} backend computes adjoint gradients on the host, outside JAX, so "
    "its adjoints have no second derivatives and no forward mode: `jax.hessian`, "
    "`jax.jacfwd`, `jax.jvp` and `jax.jacrev(jax.jacrev(...))` cannot pass through "
    "them. Use `sensitivity=ps.ForwardSensitivity()`, which supports every JAX "
    "transform on every backend."
)


def _no_derivatives(name: str, fn):
    """Makes `fn` (a function around `pure_callback`) fail with a clear message under
    any differentiation, instead of JAX's generic one for callbacks."""
    # Traced on the main thread, as a rule: where Ctrl-C can be watched for the
    # callbacks that XLA will run on its own threads.
    CtrlC.watch()

    @jax.custom_jvp
    def wrapped(*args):
        return fn(*args)

    @wrapped.defjvp
    def _jvp(primals, tangents):
        raise TypeError(MSG_NO_SECOND_DERIVATIVES.format(name=name))

    return wrapped


class AbstractHostBackend(AbstractBackend):
    """A backend whose solver runs on the host. Subclasses implement `host_forward` and
    `host_vjp` on single float64 NumPy problems; everything else is shared."""

    computes_in_float64: ClassVar[bool] = True

    # Native right-hand sides (`_native.py`): "auto" compiles the callbacks with Numba
    # and falls back to XLA, with a warning, where one does not compile; True makes
    # that an error at trace time; False keeps XLA callbacks. `PYSCIML_NATIVE_RHS`
    # (0/1/auto) overrides it.
    native_rhs: "bool | str" = eqx.field(static=True, default="auto", kw_only=True)

    @abc.abstractmethod
    def host_forward(
        self,
        callbacks: HostCallbacks,
        problem: FlatProblem,
        y0: np.ndarray,
        p: np.ndarray,
        ts: np.ndarray,
        options: SolveOptions,
        *,
        keep: bool,
    ) -> tuple[np.ndarray, int, dict[str, int], Any]:
        """Solves one problem on the host, on the host thread.

        **Arguments:**

        - `keep`: whether a `host_vjp` will follow; if so, return what it needs to
            skip re-solving (a dense output, say) as `saved`.

        **Returns:**

        `(ys, code, stats, saved)`: `ys` of shape `(len(ts), n)`; a result code (raise
        nothing: use `code_for` on a caught exception); a dict with `STATS_KEYS`;
        `saved` (or `None`).
        """

    @abc.abstractmethod
    def host_vjp(
        self,
        callbacks: HostCallbacks,
        problem: FlatProblem,
        y0: np.ndarray,
        p: np.ndarray,
        ts: np.ndarray,
        ys_bar: np.ndarray,
        options: SolveOptions,
        *,
        saved: Any,
        quadrature: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """The VJP of `host_forward`'s `ys` with respect to `y0` and `p`, on the host
        thread. `saved` is what `host_forward(keep=True)` returned, or `None` if it was
        dropped: then re-solve. Returns `(y0_bar, p_bar, code)`.

        `quadrature=True` (passed only where `host_quadrature(options)` says so): the
        problem is a stacked batch with shared `p` (`_stacked.StackedField`, `m`
        parameters); integrate only the state adjoint `λ` and return in `p_bar` each
        item's own parameter cotangent (`batch·m`: `callbacks.vjp_p_items`), by
        quadrature on `λ`'s steps."""

    def host_quadrature(self, options: SolveOptions) -> bool:
        """Whether `host_vjp(quadrature=True)` is supported for these options: the
        parameter cotangent by quadrature over the backward steps of `λ` instead of as
        `m` more adjoint states (as SciMLSensitivity's `GaussAdjoint`). Used for a
        stacked batch with many shared parameters, whose adjoint would otherwise carry
        one copy of them per item."""
        return False

    @abc.abstractmethod
    def host_prepare(self, problem: FlatProblem, options: SolveOptions) -> None:
        """Called when `solve` is traced, before any callback: make sure the host
        solver can run this problem with these options (start its runtime), or raise
        an error that says what is missing or unsupported."""

    def host_locate(
        self,
        callbacks: HostCallbacks,
        problem: FlatProblem,
        event,
        y0: np.ndarray,
        p: np.ndarray,
        options: SolveOptions,
    ) -> tuple[float, bool, int]:
        """Solves one problem on the host thread from `t0` until `problem.event`
        triggers (by the rule of `FlatEvent.triggered`, on each accepted step) or
        `t1`, and locates the crossing on the step's dense output. `event(t, y, p)`
        is the condition as a host callback.

        **Returns:**

        `(t_event, happened, code)`, with `t_event = t1` where no event happened.
        """
        raise NotImplementedError(
            f"The {self.name!r} backend does not locate events: `solve(event=...)` "
            "is not supported on it."
        )

    def _callbacks(self, problem: FlatProblem, n: int, m: int) -> HostCallbacks:
        native = _native.resolve_mode(self.native_rhs) is not False
        return host_callbacks(problem.vector_field, n, m, problem.jac_sparsity, native)

    def _check_native(self, problem: FlatProblem, n: int, m: int) -> None:
        """`native_rhs=True`: every callback must compile; say so at trace time."""
        if _native.resolve_mode(self.native_rhs) is not True:
            return
        if not _native.numba_available():
            raise ValueError(
                "`native_rhs=True` needs Numba, which could not be imported: "
                "`pip install 'numba>=0.63'`, or use `native_rhs=\"auto\"`."
            )
        self._callbacks(problem, n, m).check_native()

    # A `vmap`ped solve: "stack" solves a batch that shares its save times as one
    # stacked system (`_stacked.py`; explicit solvers), "loop" item by item.
    batch_mode: str = eqx.field(static=True, default="stack", kw_only=True)

    def _solve_one(self, problem, options, n, m, dtype, residuals, y0_, p_, ts_):
        """One host solve, on the host thread: `(ys, code, stats, token)`."""
        k = ts_.shape[-1]
        callbacks = self._callbacks(problem, n, m)
        saved = None
        y0_64 = np.array(y0_, dtype=np.float64)
        p_64 = np.array(p_, dtype=np.float64)
        times = SaveTimes.of(np.array(ts_, dtype=np.float64), problem.t0)
        try:
            if not _callbacks._all_finite(y0_64, p_64):
                # A proposal outside the model's domain, inside inference: a code, at
                # once, and no solver call (SciPy would raise on it).
                ys, code, stats = None, NONFINITE, {}
            elif times.unique.size:
                ys, code, stats, saved = self.host_forward(
                    callbacks, problem, y0_64, p_64, times.unique, options,
                    keep=residuals,
                )
            else:  # every save time is t0: nothing to solve
                ys, code, stats = None, SUCCESS, {}
        except Exception as e:  # never let an exception cross the callback
            ys, code, stats = None, code_for(e), {}
        if code == SUCCESS:
            ys = times.gather(ys, y0_64)
        if code != SUCCESS or ys is None:
            ys, saved = np.full((k, n), np.nan), None
        token = _residuals.RESIDUALS.put((problem, saved)) if residuals else 0
        return (
            np.asarray(ys, dtype=dtype),
            np.int32(code),
            np.array([stats.get(key, -1) for key in STATS_KEYS], np.int32),
            np.int32(token),
        )

    def _vjp_one(self, problem, options, n, m, dtypes, y0_, p_, ts_, ys_bar_, token_,
                 forward_problem=None, quadrature=False):
        """One host VJP, on the host thread: `(y0_bar, p_bar, code)`.
        `forward_problem`: the problem the forward pass solved, where it differs from
        `problem` only in how `p` is laid out (a stacked batch with shared `p`), so
        that what it kept (the states) serves this VJP. `quadrature`: passed on to
        `host_vjp` (only where `host_quadrature` allows it); `problem` is then the
        stacked batch with shared `p`, and `p_bar` has one row of `m` per item."""
        callbacks = self._callbacks(problem, n, m)
        if quadrature:
            m = problem.vector_field.batch * m  # the size of `p_bar`
        times = SaveTimes.of(np.array(ts_, dtype=np.float64), problem.t0)
        bar, y0_bar_at_t0 = times.scatter(np.array(ys_bar_, dtype=np.float64))
        # What the forward pass kept, if it was kept for this very problem (a batch
        # solved stacked keeps the stacked solve's).
        entry = _residuals.RESIDUALS.get(int(token_))
        saved = None
        if entry is not None and entry[0] in (problem, forward_problem):
            saved = entry[1]
        try:
            if times.unique.size and not bar.any():
                # A zero cotangent (the member of a batch whose failed solve `solve`
                # replaced by NaN, or an output the loss ignores): a zero VJP, without
                # a backward solve that could fail again and return NaN, which would
                # poison a sum over the batch through 0 * NaN.
                y0_bar, p_bar, code = np.zeros(n), np.zeros(m), SUCCESS
            elif times.unique.size:
                # `quadrature` is passed only when set: a backend without the
                # quadrature adjoint need not take the keyword.
                extra = {"quadrature": True} if quadrature else {}
                y0_bar, p_bar, code = self.host_vjp(
                    callbacks, problem, np.array(y0_, dtype=np.float64),
                    np.array(p_, dtype=np.float64), times.unique, bar, options,
                    saved=saved, **extra,
                )
            else:
                y0_bar, p_bar, code = np.zeros(n), np.zeros(m), SUCCESS
            if code == SUCCESS:
                y0_bar = y0_bar + y0_bar_at_t0
        except Exception as e:
            y0_bar, p_bar, code = None, None, code_for(e)
        if code != SUCCESS:
            y0_bar, p_bar = np.full(n, np.nan), np.full(m, np.nan)
        return (
            np.asarray(y0_bar, dtype=dtypes[0]),
            np.asarray(p_bar, dtype=dtypes[1]),
            np.int32(code),
        )

    def _stack_of(self, problem, options, batch, n, m, shared, ts):
        """The stacked problem for this batch, or None to loop."""
        if (
            self.batch_mode != "stack"
            or batch < 2
            or not _stacked.can_stack(problem, options)
            or not (ts == ts[0]).all()
        ):
            return None
        return _stacked.stacked(problem, options, batch, n, m, shared)

    def forward(self, problem, y0, p, ts, options, *, residuals):
        self.host_prepare(problem, options)
        n, m, k = y0.shape[-1], p.shape[-1], ts.shape[-1]
        self._check_native(problem, n, m)
        if self.batch_mode not in ("stack", "loop"):
            raise ValueError(
                f'`batch_mode` must be "stack" or "loop"; got {self.batch_mode!r}.'
            )
        dtype = y0.dtype
        if problem.jac_sparsity is not None:
            shape = np.shape(problem.jac_sparsity.value)
            if shape != (n, n):
                raise ValueError(
                    f"`ODEProblem(jac_sparsity=...)` has shape {shape}, but the "
                    f"flattened state has {n} entries: it must be ({n}, {n}). "
                    "(For a grid, `grid.jac_sparsity(fields=...)` with the number of "
                    "fields in the state.)"
                )

        def one(prob, opts, nn, y0_, p_, ts_):
            return HostThread.run(
                self._solve_one, prob, opts, nn, p_.shape[-1], dtype, residuals, y0_,
                p_, ts_,
            )

        def host(y0_, p_, ts_):
            b = _Batch(y0_, p_, ts_)
            if not b.shape:
                return one(problem, options, n, y0_, p_, ts_)
            stack = self._stack_of(problem, options, b.size, n, m, b.shared, b.ts)
            if stack is not None:
                ys, code, stats, token = one(
                    stack[0], stack[1], b.size * n, b.y0.reshape(-1), b.p_stacked(),
                    b.ts[0],
                )
                if code == SUCCESS:  # else: item by item, for each item's own code
                    ys = ys.reshape(k, b.size, n).transpose(1, 0, 2)
                    return b.out(ys, np.full(b.size, code),
                                 np.tile(stats, (b.size, 1)), np.full(b.size, token))
            outs = [one(problem, options, n, b.y0[i], b.p_item(i), b.ts[i])
                    for i in range(b.size)]
            return b.out(*(np.stack(x) for x in zip(*outs)))

        batch = y0.shape[:-1]
        shapes = (
            jax.ShapeDtypeStruct(batch + (k, n), dtype),
            jax.ShapeDtypeStruct(batch, jnp.int32),
            jax.ShapeDtypeStruct(batch + (len(STATS_KEYS),), jnp.int32),
            jax.ShapeDtypeStruct(batch, jnp.int32),
        )
        callback = _no_derivatives(
            self.name,
            lambda y0_, p_, ts_: jax.pure_callback(
                host, shapes, y0_, p_, ts_, vmap_method="expand_dims"
            ),
        )
        ys, code, stats, token = callback(y0, p, ts.astype(dtype))
        stats = {key: stats[..., i] for i, key in enumerate(STATS_KEYS)}
        # The residual is a token for what the host solver kept (its dense output):
        # `vjp` then skips the forward re-solve. A missing entry is recomputed.
        return (ys, code, stats), (token if residuals else None)

    def _locate_one(self, problem, options, n, m, dtype, y0_, p_):
        """One event location, on the host thread: `(t_event, happened, code)`."""
        callbacks = self._callbacks(problem, n, m)
        native = _native.resolve_mode(self.native_rhs) is not False
        event = _callbacks.event_callback(problem.event, n, m, native)
        y0_64 = np.array(y0_, dtype=np.float64)
        p_64 = np.array(p_, dtype=np.float64)
        t, happened = problem.t1, False
        try:
            if not _callbacks._all_finite(y0_64, p_64):
                code = NONFINITE
            else:
                t, happened, code = self.host_locate(
                    callbacks, problem, event, y0_64, p_64, options
                )
        except Exception as e:
            code = code_for(e)
        if code != SUCCESS:
            t, happened = problem.t1, False
        return np.asarray(t, dtype), np.bool_(happened), np.int32(code)

    def locate_event(self, problem, y0, p, options):
        self.host_prepare(problem, options)
        field = problem.vector_field
        if isinstance(field, ForwardSensitivityField):
            # The event reads the state part: locate it on the (cheaper) primal system.
            problem = FlatProblem(vector_field=field.inner, t0=problem.t0,
                                  t1=problem.t1, event=problem.event)
            y0 = y0[..., : field.n]
        n, m = y0.shape[-1], p.shape[-1]
        self._check_native(problem, n, m)
        dtype = y0.dtype

        def host(y0_, p_):
            lead = y0_.ndim - 1
            shape = np.broadcast_shapes(y0_.shape[:lead], p_.shape[:lead])
            if not shape:
                return HostThread.run(self._locate_one, problem, options, n, m, dtype,
                                      y0_, p_)
            y0s = np.broadcast_to(y0_, shape + (n,)).reshape(-1, n)
            ps_ = np.broadcast_to(p_, shape + (m,)).reshape(-1, m)
            outs = [HostThread.run(self._locate_one, problem, options, n, m, dtype,
                                   y0s[i], ps_[i]) for i in range(y0s.shape[0])]
            return tuple(np.stack(x).reshape(shape) for x in zip(*outs))

        batch = y0.shape[:-1]
        shapes = (
            jax.ShapeDtypeStruct(batch, dtype),
            jax.ShapeDtypeStruct(batch, jnp.bool_),
            jax.ShapeDtypeStruct(batch, jnp.int32),
        )
        callback = _no_derivatives(
            self.name,
            lambda y0_, p_: jax.pure_callback(host, shapes, y0_, p_,
                                              vmap_method="expand_dims"),
        )
        return callback(jax.lax.stop_gradient(y0), jax.lax.stop_gradient(p))

    def vjp(self, problem, y0, p, ts, residuals, ys_bar, options):
        n, m = y0.shape[-1], p.shape[-1]
        dtypes = (y0.dtype, p.dtype)

        def one(prob, opts, nn, y0_, p_, ts_, ys_bar_, token_, forward_problem=None,
                quadrature=False):
            return HostThread.run(
                self._vjp_one, prob, opts, nn, p_.shape[-1], dtypes, y0_, p_, ts_,
                ys_bar_, token_, forward_problem, quadrature,
            )

        def host(y0_, p_, ts_, ys_bar_, token_):
            b = _Batch(y0_, p_, ts_, ys_bar_, token_)
            if not b.shape:
                return one(problem, options, n, y0_, p_, ts_, ys_bar_, token_)
            k = ts_.shape[-1]
            bars = np.broadcast_to(ys_bar_, b.shape + (k, n)).reshape(b.size, k, n)
            tokens = np.broadcast_to(token_, b.shape).reshape(b.size)
            # Each item's parameter cotangent is its own row, also where `p` is
            # shared: under `vmap(grad)` the rows are the per-item gradients (JAX
            # sums them only where the loss sums the items). So the stacked adjoint
            # carries one parameter adjoint per item (`shared=False`, `p` tiled); the
            # forward pass's kept states serve it all the same (`forward_problem`).
            #
            # That adjoint has `B·n + B·m` states. With many shared parameters (a
            # neural ODE: B·m = 32 × 4,610) it costs far more than `B` adjoints of
            # `n + m` states each (measured on `benchmarks/neural_ode.py --quick`:
            # 4.4× the loop). So past `B·m > 4 (B·n + m)` the stacked VJP computes
            # the per-item parameter cotangents by quadrature over the steps of the
            # stacked state adjoint (`B·n` states; `host_quadrature`, SciPy's
            # interpolating adjoint of `RK45`/`DOP853`), and where the backend has no
            # quadrature adjoint (Julia, implicit or backsolve adjoints) it runs
            # item by item.
            per_item_cheap = b.size * m <= 4 * (b.size * n + m)
            quadrature = (not per_item_cheap and b.shared
                          and self.host_quadrature(options))
            stack = (self._stack_of(problem, options, b.size, n, m, False, b.ts)
                     if per_item_cheap or not b.shared else None)
            if quadrature:  # the forward pass's problem, `p` shared: per-item rows
                stack = self._stack_of(problem, options, b.size, n, m, True, b.ts)
            if stack is not None:
                forward = self._stack_of(problem, options, b.size, n, m, b.shared, b.ts)
                y0_bar, p_bar, code = one(
                    stack[0], stack[1], b.size * n, b.y0.reshape(-1),
                    b.p_stacked() if quadrature else b.p_tiled(), b.ts[0],
                    bars.transpose(1, 0, 2).reshape(k, b.size * n), tokens[0],
                    forward[0], quadrature,
                )
                if code == SUCCESS:
                    return b.out(y0_bar.reshape(b.size, n), p_bar.reshape(b.size, m),
                                 np.full(b.size, code))
            outs = [one(problem, options, n, b.y0[i], b.p_item(i), b.ts[i], bars[i],
                        tokens[i]) for i in range(b.size)]
            return b.out(*(np.stack(x) for x in zip(*outs)))

        shapes = (
            jax.ShapeDtypeStruct(y0.shape, y0.dtype),
            jax.ShapeDtypeStruct(p.shape, p.dtype),
            jax.ShapeDtypeStruct(y0.shape[:-1], jnp.int32),
        )
        callback = _no_derivatives(
            self.name,
            lambda *args: jax.pure_callback(
                host, shapes, *args, vmap_method="expand_dims"
            ),
        )
        token = jnp.zeros((), jnp.int32) if residuals is None else residuals
        y0_bar, p_bar, code = callback(y0, p, ts.astype(y0.dtype), ys_bar, token)
        if options.throw:
            result = eqx._enum.EnumerationItem(code, RESULTS)
            y0_bar, p_bar = result.error_if((y0_bar, p_bar), code != SUCCESS)
        return y0_bar, p_bar


class _Batch:
    """The batch of one `vmap`ped host call (`vmap_method="expand_dims"`: every
    argument has the same leading batch dimensions, of full size or 1 where that
    argument is not batched)."""

    def __init__(self, y0, p, ts, *others):
        # `others`: further arguments batched in the same leading dimensions (the
        # cotangents of a `jax.jacrev`, batched where the primal inputs are not).
        lead = y0.ndim - 1
        self.shape = np.broadcast_shapes(y0.shape[:lead], p.shape[:lead], ts.shape[:lead],
                                         *(x.shape[:lead] for x in others))
        self.size = int(np.prod(self.shape)) if self.shape else 1
        n, m, k = y0.shape[-1], p.shape[-1], ts.shape[-1]
        self.y0 = np.broadcast_to(y0, self.shape + (n,)).reshape(self.size, n)
        self.ts = np.broadcast_to(ts, self.shape + (k,)).reshape(self.size, k)
        # Parameters not batched (size 1 in every batch dimension) are shared.
        self.shared = int(np.prod(p.shape[:lead])) == 1
        self._p = (p.reshape(1, m) if self.shared else
                   np.broadcast_to(p, self.shape + (m,)).reshape(self.size, m))
        self.m = m

    def p_item(self, i):
        return self._p[0] if self.shared else self._p[i]

    def p_stacked(self):
        return self._p[0] if self.shared else self._p.reshape(-1)

    def p_tiled(self):
        """`p` of every item, stacked, also where it is shared."""
        return np.broadcast_to(self._p, (self.size, self.m)).reshape(-1)

    def out(self, *arrays):
        return tuple(np.asarray(a).reshape(self.shape + np.shape(a)[1:]) for a in arrays)

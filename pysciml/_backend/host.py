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
"""

import abc
import functools as ft
import math
import queue
import sys
import threading
import traceback
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from .._flatten import FlatVectorField
from .._solution import RESULTS
from .base import AbstractBackend, FlatProblem, SolveOptions

SUCCESS = int(RESULTS.successful._value)
MAX_STEPS = int(RESULTS.max_steps_reached._value)
DT_MIN = int(RESULTS.dt_min_reached._value)
NONFINITE = int(RESULTS.nonfinite._value)
VECTOR_FIELD_ERROR = int(RESULTS.vector_field_error._value)
SOLVER_FAILED = int(RESULTS.solver_failed._value)

STATS_KEYS = ("num_steps", "num_rejected_steps", "num_fevals")


# --------------------------------------------------------------------------------------
# The host thread
# --------------------------------------------------------------------------------------


class HostThread:
    """One long-lived Python thread on which every host-solver call runs.

    Why not the main thread: XLA may run a `pure_callback` on one of its own worker
    threads, even with `jax_cpu_enable_async_dispatch=False` (we saw it here when the
    callback sits in a `vmap`ped loop next to independent work; cf. jax#24255), and
    while it does, the main thread is blocked inside XLA, so work cannot be handed to
    it. Julia's GC hangs when Julia is entered from a thread other than the one that
    started it, while that one is busy elsewhere (PythonCall#578). So pysciml starts
    Julia *on this thread*, and enters it only from this thread: whichever thread XLA
    calls back on, the call is handed here and the caller waits.

    The thread computes with `jax.enable_x64(True)` (a thread-local setting), so the
    host callbacks are float64 without touching the user's global JAX configuration.
    """

    _lock = threading.Lock()
    _thread: threading.Thread | None = None
    _queue: "queue.SimpleQueue[Any]"

    @classmethod
    def _ensure_started(cls):
        with cls._lock:
            if cls._thread is None or not cls._thread.is_alive():
                cls._queue = queue.SimpleQueue()
                cls._thread = threading.Thread(
                    target=cls._loop, name="pysciml-host", daemon=True
                )
                cls._thread.start()

    @classmethod
    def _loop(cls):
        # NumPy's floating-point warnings are off on this thread (errstate is
        # thread-local): a state that blows up inside a host solve is reported by its
        # result code (`nonfinite`), not by a flood of RuntimeWarnings in the middle of
        # an inference run.
        with jax.enable_x64(True), np.errstate(all="ignore"):
            while True:
                fn, args, box, done = cls._queue.get()
                try:
                    box.append((True, fn(*args)))
                except BaseException as e:  # delivered to the waiting caller
                    box.append((False, e))
                done.set()

    @classmethod
    def is_current(cls) -> bool:
        return threading.current_thread() is cls._thread

    # Set while a Ctrl-C is being honoured: every callback into JAX then raises
    # `HostInterrupted`, which ends the host solve at its next right-hand side.
    cancel: bool = False

    @classmethod
    def run(cls, fn, *args):
        """Runs `fn(*args)` on the host thread and returns its result (re-raising its
        exception, if any). Called from the host thread itself, runs inline: so host
        code may call back into JAX, and JAX into host code, without deadlock.

        Ctrl-C while waiting: a `KeyboardInterrupt` must not leave a `pure_callback`
        (XLA would abort the whole process: "terminate called ... FATAL: exception not
        rethrown"). So the host solve is cancelled, awaited, and `HostInterrupted`, an
        ordinary exception that JAX passes on as a runtime error, is raised instead."""
        if cls.is_current():
            return fn(*args)
        cls._ensure_started()
        box: list = []
        done = threading.Event()
        cls._queue.put((fn, args, box, done))
        interrupted = False
        while True:
            try:
                done.wait()
                break
            except KeyboardInterrupt:
                interrupted = True
                cls.cancel = True
        if interrupted:
            cls.cancel = False
            raise HostInterrupted(MSG_INTERRUPTED)
        ok, value = box[0]
        if ok:
            return value
        raise value

    @classmethod
    def thread(cls) -> threading.Thread:
        cls._ensure_started()
        return cls._thread


# --------------------------------------------------------------------------------------
# Callbacks from the host solver into JAX
# --------------------------------------------------------------------------------------


MSG_INTERRUPTED = (
    "KeyboardInterrupt: the host solve was interrupted by Ctrl-C, and stopped at its "
    "next right-hand-side evaluation."
)


class HostInterrupted(Exception):
    """Ctrl-C during a host solve: raised in place of `KeyboardInterrupt`, which must
    not cross a `pure_callback` (see `HostThread.run`)."""


class VectorFieldError(Exception):
    """Raised inside host code when the user's vector field fails at run time."""


class NonFiniteError(Exception):
    """Raised inside host code when the vector field returns NaN or Inf."""


class HostCallbacks(NamedTuple):
    """NumPy-in, NumPy-out float64 callbacks for one flat vector field. Each is a single
    jitted JAX call: the VJPs are fused so that one evaluation of an adjoint right-hand
    side is one call."""

    n: int
    m: int
    f: Any  # (t, y, p) -> dy
    vjp: Any  # (t, y, p, lam) -> concat(λᵀ∂f/∂y, λᵀ∂f/∂p)
    f_vjp: Any  # (t, y, p, lam) -> concat(f, λᵀ∂f/∂y, λᵀ∂f/∂p)
    jac: Any  # (t, y, p) -> ∂f/∂y, shape (n, n)
    jac_p: Any  # (t, y, p) -> ∂f/∂p, shape (n, m)
    sparse: "SparseJacobian | None" = None  # when the problem gives a sparsity


def _checked(fn, name):
    """Wraps a jitted callback: NumPy out, and a failure turned into an exception type
    that host code maps onto a status code."""

    def call(*args):
        if HostThread.cancel:
            raise HostInterrupted(MSG_INTERRUPTED)
        try:
            out = np.array(fn(*args))  # a writable copy: host solvers may write to it
        except Exception as e:
            raise VectorFieldError(f"{name} raised {type(e).__name__}: {e}") from e
        # The sum is the cheap test (~1 µs less per call than np.isfinite on small
        # vectors); the full test only confirms a suspect sum (overflow of the sum).
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in the sum
            total = out.sum()
        if not math.isfinite(total) and not np.isfinite(out).all():
            raise NonFiniteError(name)
        return out

    return call


def greedy_colouring(pattern) -> np.ndarray:
    """Colours the columns of a sparsity pattern so that no two columns of one colour
    have a nonzero in the same row (Curtis, Powell and Reid): greedily, in natural
    order, on the column intersection graph. Banded patterns get `bandwidth` colours
    (3 for a tridiagonal one, at most 5 with periodic corners); a 2D 5-point stencil
    gets 5 to 7.

    **Arguments:**

    - `pattern`: an `(n, n)` scipy sparse matrix or array; nonzeros mark entries.

    **Returns:**

    The colour of each column, an int array of shape `(n,)`, colours `0..k-1`.
    """
    s = sp.csc_matrix(sp.csc_matrix(pattern) != 0, dtype=np.int32)
    graph = (s.T @ s).tocsr()  # columns i, j adjacent iff they share a row
    n = s.shape[1]
    colours = np.full(n, -1)
    seen = np.full(n + 1, -1)  # seen[c] == j: colour c is taken by a neighbour of j
    for j in range(n):
        nbr = colours[graph.indices[graph.indptr[j] : graph.indptr[j + 1]]]
        seen[nbr[nbr >= 0]] = j
        c = 0
        while seen[c] == j:
            c += 1
        colours[j] = c
    return colours


class SparseJacobian:
    """Exact sparse Jacobians of a flat vector field, from JAX, for stiff host solvers.

    The columns of the pattern are coloured (`greedy_colouring`) so that columns of one
    colour never share a row; one forward-mode product per colour, `J @ seed`, then
    gives every entry of those columns at once (the compressed Jacobian, `n × k`). The
    `k` products are one `vmap` of `jax.jvp`, jitted once per problem; the entries are
    gathered into CSC order inside the same call. So a Jacobian costs one callback and
    `k` (3 for a 1D stencil, 5-7 for a 2D one) tangent evaluations of `f`, instead of
    SciPy's `k + 1` finite-difference callbacks, and it is exact.

    An entry of the true Jacobian *outside* the pattern is folded into a neighbour of
    the same colour: the pattern must cover the Jacobian (as for SciPy's own use).
    """

    def __init__(self, field: FlatVectorField, n: int, m: int, pattern):
        self.field, self.n, self.m = field, n, m
        s = sp.csc_matrix(sp.csc_matrix(pattern) != 0, dtype=bool)
        s.sort_indices()
        self.pattern = s

    @ft.cached_property
    def colours(self) -> np.ndarray:
        return greedy_colouring(self.pattern)

    @staticmethod
    def _csc(rows, cols, src, size):
        order = np.lexsort((rows, cols))
        rows, cols, src = rows[order], cols[order], src[order]
        indptr = np.searchsorted(cols, np.arange(size + 1)).astype(np.int32)
        return rows.astype(np.int32), indptr, src

    @ft.cached_property
    def _built(self):
        n, m, field = self.n, self.m, self.field
        colours = self.colours
        k = int(colours.max()) + 1 if n else 0
        seeds = np.zeros((k + m, n + m))  # tangents (dy, dp), one row each
        seeds[colours, np.arange(n)] = 1.0
        seeds[k + np.arange(m), n + np.arange(m)] = 1.0
        coo = self.pattern.tocoo()
        # ∂f/∂y: entry (r, c) is row r of the product with column c's colour.
        fwd = self._csc(coo.row, coo.col, coo.row * k + colours[coo.col], n)
        # Adjoint system z = [λ, μ]: [[-Jᵀ, 0], [-J_pᵀ, 0]]; (Jᵀ)[c, r] = J[r, c].
        pr = np.repeat(np.arange(m), n) + n
        pc = np.tile(np.arange(n), m)
        adj = self._csc(
            np.concatenate([coo.col, pr]),
            np.concatenate([coo.row, pc]),
            np.concatenate([coo.row * k + colours[coo.col], n * k + pc * m + pr - n]),
            n + m,
        )

        def compressed(t, y, p, nt):
            # [J @ seed_c for each colour, then J_p @ e_i for each parameter], (n, nt)
            def jvp(tangent):
                return jax.jvp(
                    lambda y_, p_: field(t, y_, p_), (y, p), (tangent[:n], tangent[n:])
                )[1]

            return jax.vmap(jvp, out_axes=1)(jnp.asarray(seeds[:nt]))

        def jac_data(t, y, p):
            return compressed(t, y, p, k).ravel()[fwd[2]]

        def adjoint_data(t, y, p):
            b = compressed(t, y, p, k + m)
            flat = jnp.concatenate([b[:, :k].ravel(), b[:, k:].ravel()])
            return -flat[adj[2]]

        return (
            fwd[:2],
            adj[:2],
            _checked(jax.jit(jac_data), "the Jacobian of the vector field"),
            _checked(jax.jit(adjoint_data), "the Jacobian of the vector field"),
        )

    def jac(self, t, y, p) -> sp.csc_matrix:
        """`∂f/∂y` at `(t, y, p)`, a `scipy.sparse.csc_matrix` of shape `(n, n)`."""
        (indices, indptr), _, data, _ = self._built
        return sp.csc_matrix((data(t, y, p), indices, indptr), shape=(self.n, self.n))

    def adjoint_jac(self, t, y, p) -> sp.csc_matrix:
        """The Jacobian `[[-(∂f/∂y)ᵀ, 0], [-(∂f/∂p)ᵀ, 0]]` of the adjoint system
        `z = [λ, μ]` at the state `y`, shape `(n + m, n + m)`."""
        _, (indices, indptr), _, data = self._built
        size = self.n + self.m
        return sp.csc_matrix((data(t, y, p), indices, indptr), shape=(size, size))


@ft.lru_cache(maxsize=64)
def host_callbacks(
    field: FlatVectorField, n: int, m: int, sparsity=None
) -> HostCallbacks:
    """Builds (once per problem: `field` compares by structure, `sparsity`, the
    problem's frozen pattern, by identity) the jitted callbacks."""

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

    return HostCallbacks(
        n=n,
        m=m,
        f=_checked(jax.jit(f), "the vector field"),
        vjp=_checked(jax.jit(vjp), "the vector-Jacobian product of the vector field"),
        f_vjp=_checked(jax.jit(f_vjp), "the vector field"),
        jac=_checked(jax.jit(jac), "the Jacobian of the vector field"),
        jac_p=_checked(jax.jit(jac_p), "the parameter Jacobian of the vector field"),
        sparse=None if sparsity is None else SparseJacobian(field, n, m, sparsity.value),
    )


_REPORTED: set[tuple[str, str]] = set()


def _report_once(header: str, exc: BaseException) -> None:
    """Prints `header` and the traceback of `exc` to stderr, once per distinct error
    (type and message): inside inference the same failure recurs at every proposal,
    and one copy tells the user everything."""
    # Keyed by the type and the last line of the message: an error raised inside a
    # JAX callback carries a whole traceback in its text, whose last line is the
    # error itself.
    lines = [line for line in str(exc).splitlines() if line.strip()]
    key = (type(exc).__name__, lines[-1] if lines else "")
    if key in _REPORTED:
        return
    _REPORTED.add(key)
    print(
        f"{header}\n" + "".join(traceback.format_exception(exc))
        + "(pysciml prints each distinct error once.)",
        file=sys.stderr,
    )


def code_for(exc: BaseException) -> int:
    """Maps an exception raised in host code onto a result code. A genuine exception
    in the user's vector field, or an unexpected one in the host solver, is reported
    (once per distinct error); a non-finite state is only a code."""
    if isinstance(exc, NonFiniteError):
        return NONFINITE
    if isinstance(exc, HostInterrupted):
        return SOLVER_FAILED  # the caller raises HostInterrupted; nothing to report
    if isinstance(exc, (ValueError, FloatingPointError)) and (
        "inf" in str(exc).lower() or "finite" in str(exc).lower()
    ):
        # A host solver's linear algebra meeting a state that blew up, e.g. SciPy's
        # "array must not contain infs or NaNs".
        return NONFINITE
    if isinstance(exc, VectorFieldError):
        _report_once(f"pysciml: {exc}", exc.__cause__ or exc)
        return VECTOR_FIELD_ERROR
    _report_once("pysciml: the host solver raised an unexpected error:", exc)
    return SOLVER_FAILED


def _all_finite(*arrays: np.ndarray) -> bool:
    return all(np.isfinite(a).all() for a in arrays)


# --------------------------------------------------------------------------------------
# Save times as host solvers see them
# --------------------------------------------------------------------------------------


class SaveTimes(NamedTuple):
    """The save times of one solve, as a host solver gets them: strictly increasing
    and after `t0`. `solve` accepts non-decreasing times (several observations at one
    instant) that may start at `t0`, also when they are traced, so this is done here,
    on the host, per solve, once for every host backend.

    `index[i]` is the position in `unique` of the requested time `i`, or `-1` where
    that time is `t0` (its state is `y0`; its cotangent goes to `y0` directly)."""

    unique: np.ndarray
    index: np.ndarray

    @classmethod
    def of(cls, ts: np.ndarray, t0: float) -> "SaveTimes":
        unique, index = np.unique(ts, return_inverse=True)
        start = int(unique.size > 0 and unique[0] <= t0)
        return cls(unique[start:], index.reshape(-1) - start)

    def gather(self, ys: "np.ndarray | None", y0: np.ndarray) -> np.ndarray:
        """`ys` at the unique times -> the state at every requested time."""
        out = np.empty((self.index.size, y0.shape[0]))
        at_t0 = self.index < 0
        out[at_t0] = y0
        if ys is not None:
            out[~at_t0] = ys[self.index[~at_t0]]
        return out

    def scatter(self, ys_bar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The transpose of `gather`: cotangents of repeated times add up. Returns
        `(cotangent at the unique times, cotangent of y0 from save times at t0)`."""
        at_t0 = self.index < 0
        out = np.zeros((self.unique.size, ys_bar.shape[1]))
        np.add.at(out, self.index[~at_t0], ys_bar[~at_t0])
        return out, ys_bar[at_t0].sum(axis=0)


# --------------------------------------------------------------------------------------
# What the forward pass keeps for the backward pass
# --------------------------------------------------------------------------------------


def _nbytes(obj, depth=0) -> int:
    """Rough size of the NumPy arrays held by `obj` (a dense output, say)."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if depth > 3:
        return 0
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(x, depth + 1) for x in obj)
    if hasattr(obj, "__dict__"):
        return sum(_nbytes(x, depth + 1) for x in vars(obj).values())
    return 0


class ResidualStore:
    """Host-side residuals of forward solves, keyed by an integer token that travels
    through JAX as the custom_vjp residual. Bounded in bytes: the oldest entries are
    dropped first, and a `vjp` whose entry is gone re-solves the forward problem (so a
    drop costs time, never correctness)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: "dict[int, tuple[Any, int]]" = {}
        self._bytes = 0
        self._next = 1
        self._lock = threading.Lock()

    def put(self, value) -> int:
        if value is None:
            return 0
        size = _nbytes(value)
        if size > self.max_bytes:
            return 0
        with self._lock:
            token = self._next
            # Token 0 means "nothing kept"; stay inside int32.
            self._next = self._next % (2**31 - 2) + 1
            self._entries[token] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                oldest = next(iter(self._entries))
                self._bytes -= self._entries.pop(oldest)[1]
        return token

    def get(self, token: int):
        with self._lock:
            entry = self._entries.get(token)
        return None if entry is None else entry[0]

    def clear(self):
        with self._lock:
            self._entries.clear()
            self._bytes = 0


RESIDUALS = ResidualStore(max_bytes=256 * 2**20)


# --------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------


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

    @jax.custom_jvp
    def wrapped(*args):
        return fn(*args)

    @wrapped.defjvp
    def _jvp(primals, tangents):
        raise TypeError(MSG_NO_SECOND_DERIVATIVES.format(name=name))

    return wrapped


def _batched(host_fn, unbatched_ndims):
    """Lifts a host function on single problems to the `broadcast_all` calling
    convention of `pure_callback`: every input carries the same leading batch dims (or
    none). Loops over the batch on the host."""

    def call(*args):
        batch = args[0].shape[: args[0].ndim - unbatched_ndims[0]]
        if not batch:
            return host_fn(*args)
        size = int(np.prod(batch))
        flat = [a.reshape(size, *a.shape[len(batch) :]) for a in args]
        outs = [host_fn(*[a[i] for a in flat]) for i in range(size)]
        return jax.tree.map(
            lambda *xs: np.stack(xs).reshape(*batch, *xs[0].shape), *outs
        )

    return call


class AbstractHostBackend(AbstractBackend):
    """A backend whose solver runs on the host. Subclasses implement `host_forward` and
    `host_vjp` on single float64 NumPy problems; everything else is shared."""

    computes_in_float64: ClassVar[bool] = True

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
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """The VJP of `host_forward`'s `ys` with respect to `y0` and `p`, on the host
        thread. `saved` is what `host_forward(keep=True)` returned, or `None` if it was
        dropped: then re-solve. Returns `(y0_bar, p_bar, code)`."""

    @abc.abstractmethod
    def host_prepare(self, problem: FlatProblem, options: SolveOptions) -> None:
        """Called when `solve` is traced, before any callback: make sure the host
        solver can run this problem with these options (start its runtime), or raise
        an error that says what is missing or unsupported."""

    def _callbacks(self, problem: FlatProblem, n: int, m: int) -> HostCallbacks:
        return host_callbacks(problem.vector_field, n, m, problem.jac_sparsity)

    def forward(self, problem, y0, p, ts, options, *, residuals):
        self.host_prepare(problem, options)
        n, m, k = y0.shape[-1], p.shape[-1], ts.shape[-1]
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

        def single(y0_, p_, ts_):
            def work():
                callbacks = self._callbacks(problem, n, m)
                saved = None
                y0_64 = np.array(y0_, dtype=np.float64)
                p_64 = np.array(p_, dtype=np.float64)
                times = SaveTimes.of(np.array(ts_, dtype=np.float64), problem.t0)
                try:
                    if not _all_finite(y0_64, p_64):
                        # A proposal outside the model's domain, inside inference: a
                        # code, at once, and no solver call (SciPy would raise on it).
                        ys, code, stats = None, NONFINITE, {}
                    elif times.unique.size:
                        ys, code, stats, saved = self.host_forward(
                            callbacks,
                            problem,
                            y0_64,
                            p_64,
                            times.unique,
                            options,
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
                token = RESIDUALS.put(saved) if residuals else 0
                return (
                    np.asarray(ys, dtype=dtype),
                    np.int32(code),
                    np.array([stats.get(key, -1) for key in STATS_KEYS], np.int32),
                    np.int32(token),
                )

            return HostThread.run(work)

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
                _batched(single, (1, 1, 1)),
                shapes,
                y0_,
                p_,
                ts_,
                vmap_method="broadcast_all",
            ),
        )
        ys, code, stats, token = callback(y0, p, ts.astype(dtype))
        stats = {key: stats[..., i] for i, key in enumerate(STATS_KEYS)}
        # The residual is a token for what the host solver kept (its dense output):
        # `vjp` then skips the forward re-solve. A missing entry is recomputed.
        return (ys, code, stats), (token if residuals else None)

    def vjp(self, problem, y0, p, ts, residuals, ys_bar, options):
        n, m = y0.shape[-1], p.shape[-1]

        def single(y0_, p_, ts_, ys_bar_, token_):
            def work():
                callbacks = self._callbacks(problem, n, m)
                times = SaveTimes.of(np.array(ts_, dtype=np.float64), problem.t0)
                bar, y0_bar_at_t0 = times.scatter(np.array(ys_bar_, dtype=np.float64))
                try:
                    if times.unique.size:
                        y0_bar, p_bar, code = self.host_vjp(
                            callbacks,
                            problem,
                            np.array(y0_, dtype=np.float64),
                            np.array(p_, dtype=np.float64),
                            times.unique,
                            bar,
                            options,
                            saved=RESIDUALS.get(int(token_)),
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
                    np.asarray(y0_bar, dtype=y0.dtype),
                    np.asarray(p_bar, dtype=p.dtype),
                    np.int32(code),
                )

            return HostThread.run(work)

        shapes = (
            jax.ShapeDtypeStruct(y0.shape, y0.dtype),
            jax.ShapeDtypeStruct(p.shape, p.dtype),
            jax.ShapeDtypeStruct(y0.shape[:-1], jnp.int32),
        )
        callback = _no_derivatives(
            self.name,
            lambda *args: jax.pure_callback(
                _batched(single, (1, 1, 1, 2, 0)),
                shapes,
                *args,
                vmap_method="broadcast_all",
            ),
        )
        token = jnp.zeros((), jnp.int32) if residuals is None else residuals
        y0_bar, p_bar, code = callback(y0, p, ts.astype(y0.dtype), ys_bar, token)
        if options.throw:
            result = eqx._enum.EnumerationItem(code, RESULTS)
            y0_bar, p_bar = result.error_if((y0_bar, p_bar), code != SUCCESS)
        return y0_bar, p_bar

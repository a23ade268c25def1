"""Native callbacks: the host callbacks compiled by `pysciml._native` (jaxpr → Numba),
in place of jitted XLA calls.

A native callback is compiled on its first call (so a solve pays only for what its
solver uses: an explicit forward solve compiles `f` alone), from the same JAX function
the XLA callback jits. A function that does not compile (a primitive without a rule)
falls back to its XLA callback, with one warning per primitive; with
`native_rhs=True` it is an error at trace time instead.

`native_rhs="auto"` (the default) also falls back, with one warning, when Numba cannot
be imported. The environment variable `PYSCIML_NATIVE_RHS` (`0`/`1`/`auto`) overrides
the default of every host backend.
"""

import os
import threading
import time
import warnings
from typing import Any, NamedTuple

import numpy as np

from ._codes import NonFiniteError, VectorFieldError
from ._thread import MSG_INTERRUPTED, HostInterrupted, HostThread

ENV_VAR = "PYSCIML_NATIVE_RHS"

_WARNED: set[str] = set()
_LOCK = threading.Lock()

# First-call compile times, for reports: (what, seconds, loaded from the disk cache).
COMPILE_LOG: list[tuple[str, float, bool]] = []


def _warn_once(key: str, message: str) -> None:
    with _LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    warnings.warn(message, RuntimeWarning, stacklevel=2)


def resolve_mode(native_rhs) -> "bool | str":
    """The effective mode: the backend's `native_rhs`, unless `PYSCIML_NATIVE_RHS` is
    set."""
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if env:
        modes = {"0": False, "false": False, "1": True, "true": True, "auto": "auto"}
        if env not in modes:
            raise ValueError(
                f"The environment variable {ENV_VAR}={env!r} must be 0, 1 or auto."
            )
        return modes[env]
    if native_rhs not in (True, False, "auto"):
        raise ValueError(
            f'`native_rhs` must be True, False or "auto"; got {native_rhs!r}.'
        )
    return native_rhs


def numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except Exception as e:  # ImportError, or a Numba/NumPy version mismatch
        _warn_once(
            "numba",
            f"pysciml: Numba could not be imported ({type(e).__name__}: {e}); host "
            "backends call the vector field through XLA instead (5-7 µs a call). "
            "`pip install 'numba>=0.63'` restores native right-hand sides.",
        )
        return False
    return True


MSG_UNSUPPORTED = (
    "pysciml: {what} uses the JAX primitive {primitive!r}, which the native "
    "compiler (jaxpr → Numba) does not translate; it runs as an XLA callback instead "
    "(5-7 µs a call). `native_rhs=False` on the backend silences this."
)

MSG_UNSUPPORTED_STRICT = (
    "`native_rhs=True`: {what} uses the JAX primitive {primitive!r}, which the native "
    "compiler (jaxpr → Numba) does not translate. Use `native_rhs=\"auto\"` to fall "
    "back to XLA for such functions, or write the vector field without it."
)


def translate_or_raise(fn, example_args, what: str) -> None:
    """For `native_rhs=True`, at trace time: translates `fn` (no compilation) and
    raises a `ValueError` naming the first unsupported primitive."""
    import jax

    from ..._native import UnsupportedPrimitive
    from ..._native._compile import _source

    with jax.enable_x64(True):
        closed = jax.make_jaxpr(fn)(*example_args)
    try:
        _source(closed)
    except UnsupportedPrimitive as e:
        raise ValueError(
            MSG_UNSUPPORTED_STRICT.format(what=what, primitive=e.primitive)
        ) from None


class NativeCallback:
    """One host callback that compiles itself natively on first use, and otherwise
    (or on failure to compile) is the XLA callback `fallback`."""

    def __init__(self, fn, example_args, what: str, fallback):
        self._fn, self._example, self.what, self._fallback = fn, example_args, what, fallback
        self._impl = None
        self.kernel = None  # the NativeKernel, once compiled

    def __call__(self, *args):
        impl = self._impl
        if impl is None:
            impl = self._build()
        return impl(*args)

    def resolve(self):
        """The callable this resolves to (compiling it now if needed): a host solver's
        inner loop calls it directly, one Python frame less per call."""
        return self._impl or self._build()

    def _build(self):
        from ..._native import UnsupportedPrimitive, compile_function

        try:
            start = time.perf_counter()
            kernel = compile_function(self._fn, *self._example)
            COMPILE_LOG.append(
                (self.what, time.perf_counter() - start, kernel.cached)
            )
        except UnsupportedPrimitive as e:
            _warn_once(
                e.primitive, MSG_UNSUPPORTED.format(what=self.what, primitive=e.primitive)
            )
            self._impl = self._fallback
            return self._impl
        except Exception as e:  # a Numba error: never fail a solve over it
            _warn_once(
                f"compile:{type(e).__name__}:{e}",
                f"pysciml: compiling {self.what} natively failed ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); it runs as an XLA "
                "callback instead. Please report this with the vector field.",
            )
            self._impl = self._fallback
            return self._impl
        self.kernel = kernel
        self._impl = _checked_native(kernel, self.what)
        return self._impl


def _checked_native(kernel, name):
    """The native twin of `_codes._checked`: the kernel already returns a fresh array
    and whether it is finite, so no copy and no NumPy test here. Called thousands of
    times per solve: the Numba dispatcher is called directly (without constants, as
    most fields have none, with no argument repacking)."""
    checked = kernel.checked_dispatcher
    consts = kernel.consts
    cancelled = HostThread

    def call(*args):
        if cancelled.cancel:
            raise HostInterrupted(MSG_INTERRUPTED)
        try:
            out, finite = checked(*args, *consts) if consts else checked(*args)
        except Exception as e:
            raise VectorFieldError(f"{name} raised {type(e).__name__}: {e}") from e
        if not finite:
            raise NonFiniteError(name)
        return out

    return call


class CPointers(NamedTuple):
    """The C function pointers of one vector field (`pysciml._native._cabi`), for a
    host solver that calls them itself (the Julia bridge). Keep this object alive while
    the addresses are in use."""

    f: Any
    vjp_u: Any
    vjp_p: Any


def example_args(n: int, m: int, lam: bool = False) -> tuple:
    args = (0.0, np.zeros(n), np.zeros(m))
    return args + (np.zeros(n),) if lam else args

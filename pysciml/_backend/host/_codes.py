"""Status codes instead of exceptions across the callback boundary.

No exception crosses a `pure_callback`. On the way in, `_checked` wraps each jitted
callback so that a failure of the user's vector field becomes `VectorFieldError` (or
`NonFiniteError`, or `HostInterrupted` after a Ctrl-C); on the way out, `code_for` maps
whatever host code caught onto a result code (`SUCCESS` ... `SOLVER_FAILED`, items of
`RESULTS`), and reports a genuine error once (`_report_once`). `_checked` lives here,
not in `_callbacks`, because both `_callbacks` and `_sparse` wrap their callbacks with
it.
"""

import math
import sys
import traceback

import numpy as np

from ..._solution import RESULTS
from ._thread import MSG_INTERRUPTED, HostInterrupted, HostThread

SUCCESS = int(RESULTS.successful._value)
MAX_STEPS = int(RESULTS.max_steps_reached._value)
DT_MIN = int(RESULTS.dt_min_reached._value)
NONFINITE = int(RESULTS.nonfinite._value)
VECTOR_FIELD_ERROR = int(RESULTS.vector_field_error._value)
SOLVER_FAILED = int(RESULTS.solver_failed._value)

STATS_KEYS = ("num_steps", "num_rejected_steps", "num_fevals")


class VectorFieldError(Exception):
    """Raised inside host code when the user's vector field fails at run time."""


class NonFiniteError(Exception):
    """Raised inside host code when the vector field returns NaN or Inf."""


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

"""The result of a solve, and the result codes shared by every backend."""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, PyTree


class RESULTS(eqx.Enumeration):
    """Why a solve stopped. Every backend reports one of these codes.

    Host backends pass the integer value of an item across the `pure_callback`
    boundary; so the order of the items below is part of the host protocol (and of
    the Julia bridge, `julia/PySciML.jl`). Append, never reorder.
    """

    successful = ""
    max_steps_reached = (
        "The maximum number of solver steps was reached. Try increasing `max_steps`, "
        "or use a stiff solver (e.g. `solver=ps.Kvaerno5()`) if the problem is stiff. "
        "On the diffrax backend a vector field that returns NaN (parameters outside "
        "its domain, say) also ends here, after every step was rejected."
    )
    dt_min_reached = (
        "The step size became too small for the solver to make progress. The problem "
        "may be stiff (try a stiff solver such as `ps.Kvaerno5()` or `ps.RadauIIA5()`) "
        "or its solution may blow up inside the time span."
    )
    nonfinite = (
        "The vector field or the state became non-finite (NaN or Inf) during the "
        "solve. Check the parameters in `args`, or shorten the time span."
    )
    vector_field_error = (
        "The vector field raised a Python exception on the host backend. The "
        "exception and its traceback were printed to stderr above."
    )
    solver_failed = (
        "The backend's solver reported a failure. See the backend's message above."
    )
    event_grazing = (
        "The event condition touched zero tangentially (a grazing crossing): its rate "
        "of change along the solution, dg/dt = ∂g/∂t + ∂g/∂y·f, is zero within the "
        "solve's tolerance at the event time, so the event time is not "
        "differentiable (dt*/dθ ∝ 1/(dg/dt)). Change the condition so that it crosses "
        "zero transversally, or tighten `rtol` and `atol` if the crossing is real."
    )


def result_from_code(code) -> RESULTS:
    """Turns an integer code (as sent by a host backend) into a `RESULTS` item."""
    return eqx._enum.EnumerationItem(jnp.asarray(code, dtype=jnp.int32), RESULTS)


class Solution(eqx.Module):
    """The output of [`pysciml.solve`][].

    **Attributes:**

    - `ts`: the save times, shape `(n,)`.
    - `ys`: the solution at the save times; a pytree of the structure of `y0`, each
        leaf of shape `(n, *leaf.shape)` and the dtype of the matching `y0` leaf.
    - `result`: a [`pysciml.RESULTS`][] item. Anything but `RESULTS.successful` means
        the solve failed, in which case (with `throw=False`) `ys` is NaN.
    - `stats`: a dict of solver statistics: `num_steps` (accepted steps),
        `num_rejected_steps` and `num_fevals` (vector-field evaluations on host
        backends; `-1` where the backend does not count them).

    With `solve(event=...)` (otherwise `None`):

    - `event_time`: the time of the first crossing, or `t1` if there was none.
    - `event_state`: the state at `event_time`, a pytree like `y0`.
    - `event_happened`: a bool, whether the event happened.

    Both are differentiable (implicit function theorem). Save times after the event
    hold `event_state`, with its derivative, on every backend: a finite value, so a
    loss that masks them with `sol.ts <= sol.event_time` has finite gradients. A
    failed solve, or a grazing crossing (`RESULTS.event_grazing`), gives NaN here too.
    """

    ts: Array
    ys: PyTree[Array]
    result: RESULTS
    stats: dict[str, Any]
    event_time: Array | None = None
    event_state: PyTree[Array] | None = None
    event_happened: Array | None = None

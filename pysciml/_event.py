"""Events: stop a solve where a condition crosses zero, and differentiate the time and
the state at which it happened.

Every backend only *locates* the event time `t*` (no derivative). The derivatives
come from `solve`, once for every backend, by the implicit function theorem on
`g(t*, y(t*; θ), θ) = 0`:

    dt*/dθ = -(∂g/∂θ + ∂g/∂y · dy/dθ) / (∂g/∂t + ∂g/∂y · f),
    dy(t*)/dθ = dy/dθ|_{t*} + f · dt*/dθ,

where `dy/dθ|_{t*}` is the derivative of the solution at the fixed time `t*`, which
every backend's differentiable solve already gives (`event_outputs` below).
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from ._flatten import FlatSpec, _Static, eval_shape_of, user_args


class Event(eqx.Module):
    """A terminal event: the solve stops at the first time `t* > t0` at which
    `condition(t, y, args)` crosses zero in the given direction.

    [`pysciml.solve`][] then returns `event_time`, `event_state` and `event_happened`
    in its [`pysciml.Solution`][], and differentiates `event_time` and `event_state`
    (by the implicit function theorem, on every backend and with every sensitivity).

    **Arguments:**

    - `condition`: a JAX-traceable function `g(t, y, args) -> scalar`, with `y` a
        pytree like `y0`. Example: `lambda t, y, args: y["position"][1]` (height).
    - `direction`: which crossings count: `-1` (from positive to zero or negative; a
        landing), `+1` (from non-positive to positive), or `0` (either).

    A crossing is a change of sign of `g` over a solver step: with `direction=0`,
    `sign(g)` changes; with `+1`, `g <= 0` before and `g > 0` after; with `-1`,
    `g > 0` before and `g <= 0` after (the rule of `diffrax.Event`, followed by every
    backend). So a condition that is exactly zero at `t0` triggers at `t0` with
    `direction=0`; give the direction the crossing you want has (a projectile thrown
    from the ground lands with `direction=-1`).
    """

    condition: Callable = eqx.field(static=True)
    direction: int = eqx.field(static=True, default=0)

    def __check_init__(self):
        if not callable(self.condition):
            raise TypeError(
                "`Event(condition=...)` must be a callable `g(t, y, args) -> scalar`; "
                f"got {type(self.condition).__name__}."
            )
        if isinstance(self.direction, bool) or self.direction not in (-1, 0, 1):
            raise ValueError(
                "`Event(direction=...)` must be -1 (downward crossings), 0 (either) "
                f"or +1 (upward crossings); got {self.direction!r}."
            )


class FlatEvent(eqx.Module):
    """An `Event` on flat vectors, `g(t, y, p) -> scalar`, as backends see it. It reads
    the first `y_spec.size` entries of `y`, so the same event applies to a state
    augmented with its sensitivities (`ForwardSensitivityField`). Fully static, like
    `FlatVectorField`: host backends cache its compiled callback per problem."""

    condition: Callable = eqx.field(static=True)
    direction: int = eqx.field(static=True)
    y_spec: FlatSpec
    p_spec: FlatSpec
    args_static: _Static = eqx.field(static=True)

    def __call__(self, t, y, p):
        args = user_args(self.p_spec, self.args_static, p)
        state = self.y_spec.unflatten(y[: self.y_spec.size])
        out = self.condition(t, state, args)
        return jnp.reshape(jnp.asarray(out, dtype=y.dtype), ())

    def triggered(self, old, new):
        """Whether `g` crossed zero from `old` to `new` in this event's direction (the
        rule of `diffrax.Event`). Works on NumPy floats and JAX arrays alike."""
        if self.direction == 0:
            return jnp.sign(old) != jnp.sign(new)
        if self.direction > 0:
            return (old <= 0) & (new > 0)
        return (old > 0) & (new <= 0)


def check_condition(event: Event, t, y0, args) -> None:
    """Traces `event.condition` once, to fail early with a message that names it."""
    out = eval_shape_of(event.condition, "Event(condition=...)",
                        "condition(t, y0, args)", t, y0, args)
    shape = getattr(out, "shape", None)
    dtype = getattr(out, "dtype", None)
    if shape is None or shape not in ((), (1,)) or not jnp.issubdtype(
        dtype, jnp.floating
    ):
        raise ValueError(
            "`Event(condition=...)` must return a floating-point scalar (the quantity "
            f"whose zero is the event); it returned {out!r}. For a boolean condition "
            "return a signed distance instead, e.g. `y[0] - threshold`."
        )


def event_times(ts, t_event):
    """The save times of the differentiable solve of an event solve: `ts` held at
    `t_event` beyond it, then `t_event` itself (non-decreasing, so a valid `saveat`)."""
    t_event = jnp.asarray(t_event, ts.dtype)
    return jnp.concatenate(
        [jnp.minimum(ts, t_event[..., None]), t_event[..., None]], axis=-1
    )


def event_outputs(event, field, t_star, y_star, p, happened, rtol, atol, *,
                  correct=True):
    """The event time and state, with their implicit derivatives.

    **Arguments:**

    - `event`: the `FlatEvent`; `field`: the flat vector field `f(t, y, p)`.
    - `t_star`: the located event time (its derivative is ignored).
    - `y_star`: the state at `t_star` from a differentiable solve to the *fixed* time
        `t_star`: its derivative is `dy/dθ|_{t*}`.
    - `p`: the flat parameters; `happened`: whether the event happened.
    - `rtol`, `atol`: the solve's tolerances, for the grazing test.
    - `correct`: whether to add the implicit derivative; False where the backend
        differentiated the event itself (`events_differentiated`).

    **Returns:**

    `(t_event, y_event, grazing)`. The values are `t_star` and `y_star` unchanged; the
    derivatives are those of the implicit function theorem. The correction is
    `dt = -(g - stop_gradient(g)) / ġ`, zero in value, with `ġ = ∂g/∂t + ∂g/∂y · f`
    held constant.

    `grazing` is True where the crossing is tangential within the solve's accuracy:
    along the solution `g(t* + s) ≈ ġ s + g̈ s²/2`, whose extremum, of depth
    `ġ²/(2|g̈|)`, is then no larger than the error of `g` itself (`Σ|∂g/∂yᵢ|
    (atol + rtol |yᵢ|)`). Perturbing the solve by its tolerance could then remove the
    crossing, and `dt*/dθ ∝ 1/ġ` is meaningless (infinite where `ġ = 0`).
    """
    sg = jax.lax.stop_gradient
    t_c, y_c, p_c = sg(t_star), sg(y_star), sg(p)
    one = jnp.ones((), t_c.dtype)
    f_c = field(t_c, y_c, p_c)

    def g_of(t, y):
        return event(t, y, p_c)

    # The acceleration y'' = ∂f/∂t + ∂f/∂y · f, for g's second derivative along the
    # solution, through the Taylor curve s -> (t + s, y + s f + s² y''/2).
    accel = jax.jvp(lambda t, y: field(t, y, p_c), (t_c, y_c), (one, f_c))[1]

    def along(s):
        return g_of(t_c + s, y_c + s * f_c + 0.5 * s * s * accel)

    def rate(s):
        return jax.jvp(along, (s,), (one,))[1]

    g_dot, g_ddot = jax.jvp(rate, (jnp.zeros_like(one),), (one,))
    g_y = jax.grad(g_of, argnums=1)(t_c, y_c)
    g_error = jnp.sum(jnp.abs(g_y) * (atol + rtol * jnp.abs(y_c)))
    grazing = happened & (g_dot * g_dot <= 2 * jnp.abs(g_ddot) * g_error)
    if not correct:
        return t_star, y_star, grazing
    ok = happened & ~grazing
    g = event(t_c, y_star, p)  # carries ∂g/∂y · dy/dθ + ∂g/∂θ
    dt = jnp.where(ok, -(g - sg(g)) / jnp.where(ok, g_dot, one), 0)
    return t_c + dt, y_star + f_c * dt, grazing

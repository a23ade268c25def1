"""Events: `solve(event=ps.Event(...))` on every backend, against closed forms.

References from outside pysciml:
- a projectile without drag lands at `T = 2 v sin(θ) / g`, at range `v² sin(2θ) / g`;
- with linear drag `k`, `y(t) = (v sin θ + g/k)(1 - e^{-kt})/k - g t/k`, whose positive
  root is `T = (c + W₀(-c e^{-c}))/k`, `c = 1 + k v sin(θ)/g` (Lambert W, from
  `scipy.special.lambertw`), and whose derivatives follow from the implicit function
  theorem on that closed form (written out in `_drag_reference`);
- central finite differences of the solve itself.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import BACKENDS, SENSITIVITIES_BY_BACKEND
from scipy.special import lambertw

import pysciml as ps

G = 9.81


def _projectile(t, y, args):
    k = args["k"]
    return {"pos": y["vel"], "vel": jnp.stack([0.0, -G]) - k * y["vel"]}


PROBLEM = ps.ODEProblem(_projectile, 0.0, 10.0)
LANDING = ps.Event(lambda t, y, args: y["pos"][1], direction=-1)
# max_steps bounds DirectAdjoint's unrolled loop (its compile time); these solves take
# a few dozen steps.
TOL = dict(rtol=1e-10, atol=1e-10, max_steps=256)


def _y0(theta, v0):
    return {
        "pos": jnp.zeros(2),
        "vel": jnp.stack([v0 * jnp.cos(theta), v0 * jnp.sin(theta)]),
    }


def _land(theta, v0, k, backend, sensitivity=None, saveat=None, **kwargs):
    saveat = jnp.array([0.0]) if saveat is None else saveat
    return ps.solve(PROBLEM, _y0(theta, v0), {"k": k}, saveat=saveat, event=LANDING,
                    backend=backend, sensitivity=sensitivity, **{**TOL, **kwargs})


def _time_and_range(backend, sensitivity=None):
    def f(theta, v0, k):
        sol = _land(theta, v0, k, backend, sensitivity)
        return jnp.stack([sol.event_time, sol.event_state["pos"][0]])

    return f


def _sensitivities(backend):
    # `None` picks ForwardSensitivity here (4 states, at most 1 parameter), which is
    # in the list; the default itself is exercised by the tests below.
    return [ps.ForwardSensitivity(), *SENSITIVITIES_BY_BACKEND[backend]]


# Slow (compile time, ~20 s each): DirectAdjoint differentiates diffrax's own event as
# DiscreteAdjoint does (in the default run); diffrax's BacksolveAdjoint path (the
# implicit correction) is checked against DiscreteAdjoint in the default run by
# `test_diffrax_own_event_derivative_agrees_with_implicit_function_theorem`.
_SLOW = {("diffrax", ps.DirectAdjoint), ("diffrax", ps.BacksolveAdjoint)}
CASES = [
    pytest.param(b, s, marks=[pytest.mark.slow] if (b, type(s)) in _SLOW else [],
                 id=f"{b}-{type(s).__name__}")
    for b in BACKENDS for s in _sensitivities(b)
]


def _drag_reference(theta, v0, k):
    """Landing time and range under linear drag, and their derivatives with respect
    to (theta, k), from the Lambert-W closed form."""
    vx, vy = v0 * np.cos(theta), v0 * np.sin(theta)
    c = 1 + k * vy / G
    t = float(np.real(c + lambertw(-c * np.exp(-c), 0))) / k
    e = np.exp(-k * t)
    # F(T; θ, k) = (vy + g/k)(1 - e^{-kT}) - g T = 0.
    f_t = (vy + G / k) * k * e - G
    f_theta = v0 * np.cos(theta) * (1 - e)
    f_k = -G / k**2 * (1 - e) + (vy + G / k) * t * e
    t_theta, t_k = -f_theta / f_t, -f_k / f_t
    h = (1 - e) / k  # x(T) = vx h(k, T)
    h_k, h_t = (k * t * e - (1 - e)) / k**2, e
    x = vx * h
    x_theta = -vy * h + vx * h_t * t_theta
    x_k = vx * (h_k + h_t * t_k)
    return np.array([t, x]), np.array([[t_theta, t_k], [x_theta, x_k]])


@pytest.mark.parametrize("backend,sensitivity", CASES)
def test_landing_time_and_range_against_closed_forms(backend, sensitivity):
    """Two throws in one `vmap`ped solve (one compile per case): without drag against
    `2 v sin θ / g` and `v² sin 2θ / g`, with linear drag against the Lambert-W
    closed form; values and derivatives."""
    params = jnp.array([[0.7, 10.0, 0.0], [0.9, 25.0, 0.35]])  # (θ, v0, k)
    f = _time_and_range(backend, sensitivity)

    def g(x):
        return f(x[0], x[1], x[2])

    value = jax.vmap(g)(params)
    jac = jax.vmap(jax.jacrev(g))(params)  # (throw, [T, range], [θ, v0, k])

    theta, v0 = 0.7, 10.0
    want = np.array([2 * v0 * np.sin(theta) / G, v0**2 * np.sin(2 * theta) / G])
    want_jac = np.array([
        [2 * v0 * np.cos(theta) / G, 2 * np.sin(theta) / G],
        [2 * v0**2 * np.cos(2 * theta) / G, 2 * v0 * np.sin(2 * theta) / G],
    ])
    # A quadratic trajectory: every solver is exact; the root finders reach ~1e-14.
    np.testing.assert_allclose(value[0], want, rtol=1e-8)
    np.testing.assert_allclose(jac[0][:, :2], want_jac, rtol=1e-8)

    want, want_jac = _drag_reference(0.9, 25.0, 0.35)
    # With drag the solution is no longer polynomial: the solve's own error (rtol =
    # atol = 1e-10) and that of a continuous adjoint set the tolerance.
    np.testing.assert_allclose(value[1], want, rtol=1e-8)
    np.testing.assert_allclose(jac[1][:, [0, 2]], want_jac, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_matches_finite_differences_and_masked_loss(backend):
    """A loss on the saved values masked after the event, plus the event outputs:
    finite gradients equal to central differences of the solve itself."""
    ts = jnp.linspace(0.0, 4.0, 9)  # the event (~2.9) falls inside the save times
    data = jnp.linspace(0.0, 1.0, 9)

    def loss(params):
        theta, k = params
        sol = _land(theta, 20.0, k, backend, saveat=ts, rtol=1e-10, atol=1e-12)
        mask = sol.ts <= sol.event_time
        heights = sol.ys["pos"][:, 1]
        fit = jnp.sum(jnp.where(mask, (heights - data) ** 2, 0.0))
        return fit + sol.event_time**2 + sol.event_state["vel"][1]

    x = jnp.array([0.8, 0.2])
    grad = jax.grad(loss)(x)
    assert np.all(np.isfinite(grad))
    eps = 1e-5
    fd = [(loss(x + eps * e) - loss(x - eps * e)) / (2 * eps) for e in np.eye(2)]
    np.testing.assert_allclose(grad, fd, rtol=1e-5)


def test_diffrax_own_event_derivative_agrees_with_implicit_function_theorem():
    """On diffrax the adjoints differentiate diffrax's own event (one solve); forward
    sensitivities and BacksolveAdjoint use `solve`'s implicit correction. Same
    numbers."""
    theta, v0, k = 0.9, 25.0, 0.35
    jacs = {
        type(s).__name__: jnp.stack(
            jax.jacrev(_time_and_range("diffrax", s), argnums=(0, 2))(theta, v0, k),
            axis=-1,
        )
        for s in (ps.DiscreteAdjoint(), ps.ForwardSensitivity(), ps.BacksolveAdjoint())
    }
    np.testing.assert_allclose(jacs["DiscreteAdjoint"], jacs["ForwardSensitivity"],
                               rtol=1e-8)
    np.testing.assert_allclose(jacs["DiscreteAdjoint"], jacs["BacksolveAdjoint"],
                               rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_saved_values_after_the_event_hold_the_event_state(backend):
    ts = jnp.linspace(0.0, 3.0, 7)
    sol = _land(0.7, 10.0, 0.0, backend, saveat=ts)
    t_land = 2 * 10.0 * np.sin(0.7) / G
    before = np.asarray(ts) <= t_land
    # Before the event: the solution (closed form); after it: the event state.
    vy = 10.0 * np.sin(0.7)
    want = np.where(before, vy * ts - G * ts**2 / 2, sol.event_state["pos"][1])
    np.testing.assert_allclose(sol.ys["pos"][:, 1], want, atol=1e-9)
    after = int((~before).sum())
    np.testing.assert_array_equal(sol.ys["vel"][~before],
                                  np.broadcast_to(sol.event_state["vel"], (after, 2)))
    assert bool(sol.event_happened)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_over_launch_angles_and_jit(backend):
    thetas = jnp.linspace(0.3, 1.2, 5)
    f = _time_and_range(backend)
    batched = jax.jit(jax.vmap(f, in_axes=(0, None, None)))(thetas, 10.0, 0.0)
    want = np.stack([2 * 10 * np.sin(thetas) / G, 100 * np.sin(2 * thetas) / G], -1)
    np.testing.assert_allclose(batched, want, rtol=1e-8)
    grads = jax.vmap(jax.grad(lambda a: f(a, 10.0, 0.0)[0]))(thetas)
    np.testing.assert_allclose(grads, 2 * 10 * np.cos(thetas) / G, rtol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_direction_selects_the_crossing(backend):
    """The height crosses h upward at t₋ and downward at t₊ (closed form)."""
    h, v0 = 2.0, 10.0
    vy = v0  # thrown straight up
    disc = np.sqrt(vy**2 - 2 * G * h)
    t_up, t_down = (vy - disc) / G, (vy + disc) / G
    y0 = {"pos": jnp.zeros(2), "vel": jnp.array([0.0, vy])}
    times = {}
    for direction in (-1, 0, 1):
        event = ps.Event(lambda t, y, args: y["pos"][1] - h, direction=direction)
        sol = ps.solve(PROBLEM, y0, {"k": 0.0}, saveat=jnp.array([0.0]), event=event,
                       backend=backend, **TOL)
        times[direction] = float(sol.event_time)
    np.testing.assert_allclose([times[1], times[0], times[-1]],
                               [t_up, t_up, t_down], rtol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_crossing_runs_to_t1(backend):
    """Thrown up in a tall room that it never leaves: the event never happens."""
    y0 = {"pos": jnp.array([0.0, 100.0]), "vel": jnp.array([1.0, 5.0])}
    ceiling = ps.Event(lambda t, y, args: y["pos"][1] - 1000.0)
    ts = jnp.linspace(0.0, 10.0, 5)

    def run(vy):
        y0_ = {"pos": y0["pos"], "vel": jnp.stack([1.0, vy])}
        return ps.solve(PROBLEM, y0_, {"k": 0.0}, saveat=ts, event=ceiling,
                        backend=backend, **TOL)

    sol = run(5.0)
    assert not bool(sol.event_happened)
    assert sol.result == ps.RESULTS.successful
    assert float(sol.event_time) == 10.0
    want_height = 100.0 + 5.0 * ts - G * ts**2 / 2
    np.testing.assert_allclose(sol.ys["pos"][:, 1], want_height, rtol=1e-9)
    np.testing.assert_allclose(sol.event_state["pos"][1], want_height[-1], rtol=1e-9)
    # event_time = t1 is constant; event_state is the state at t1.
    assert float(jax.grad(lambda v: run(v).event_time)(5.0)) == 0.0
    np.testing.assert_allclose(jax.grad(lambda v: run(v).event_state["pos"][1])(5.0),
                               10.0, rtol=1e-9)


def _cubic(t, y, args):
    return -3.0 * (t - 1.0) ** 2 * jnp.ones_like(y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grazing_crossing_is_a_result_code_not_an_inf(backend):
    """y = -(t - 1)³ crosses zero at t = 1 with zero rate: dt*/dθ would be infinite."""
    problem = ps.ODEProblem(_cubic, 0.0, 2.0)
    event = ps.Event(lambda t, y, args: y[0] + args)

    def run(shift, throw):
        return ps.solve(problem, jnp.array([1.0]), shift, saveat=jnp.array([0.5]),
                        event=event, backend=backend, throw=throw)

    sol = run(0.0, throw=False)
    assert sol.result == ps.RESULTS.event_grazing
    assert not bool(sol.event_happened)
    assert np.isnan(sol.event_time) and np.all(np.isnan(sol.ys))
    grad = jax.grad(lambda s: jnp.nan_to_num(run(s, throw=False).event_time))(0.0)
    assert np.isfinite(grad)
    with pytest.raises(Exception, match="grazing"):
        run(0.0, throw=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_crossing_inside_the_first_step_and_at_t0(backend):
    decay = ps.ODEProblem(lambda t, y, args: -jnp.ones_like(y), 0.0, 5.0)
    sol = ps.solve(decay, jnp.array([1.0]), saveat=jnp.array([0.5, 1.0]),
                   event=ps.Event(lambda t, y, args: y[0] - 0.999), backend=backend)
    np.testing.assert_allclose(sol.event_time, 1e-3, rtol=1e-9)
    np.testing.assert_allclose(sol.ys, [[0.999], [0.999]], rtol=1e-12)
    # A condition that is zero at t0 and then changes sign counts at t0 with
    # direction=0, and not with the other direction (the rule of `diffrax.Event`).
    at_t0 = ps.Event(lambda t, y, args: y[0] - 1.0, direction=0)
    sol = ps.solve(decay, jnp.array([1.0]), saveat=jnp.array([1.0]), event=at_t0,
                   backend=backend)
    assert bool(sol.event_happened)
    assert abs(float(sol.event_time)) < 1e-12
    upward = ps.Event(lambda t, y, args: y[0] - 1.0, direction=1)
    sol = ps.solve(decay, jnp.array([1.0]), saveat=jnp.array([1.0]), event=upward,
                   backend=backend)
    assert not bool(sol.event_happened)


@pytest.mark.parametrize("backend", BACKENDS)
def test_failed_member_of_a_batch_does_not_poison_gradients(backend):
    """Inside inference a failed solve rejects the proposal: with `throw=False` the
    failed member is NaN, and the gradient of a loss that drops it, with respect to a
    parameter shared by the batch, is that of the other members (0 * NaN nowhere)."""
    def landing(v0, k):
        # k = 1e4: stiff drag, beyond 64 explicit steps (max_steps_reached).
        sol = _land(0.7, v0, k, backend, throw=False, max_steps=64)
        ok = sol.result == ps.RESULTS.successful
        return jnp.where(ok, sol.event_time, 0.0), ok

    def total(v0):
        times, ok = jax.vmap(landing, in_axes=(None, 0))(v0, jnp.array([0.0, 1e4, 0.0]))
        return jnp.sum(times), ok

    (value, ok), grad = jax.value_and_grad(total, has_aux=True)(10.0)
    np.testing.assert_array_equal(ok, [True, False, True])
    np.testing.assert_allclose(value, 2 * 2 * 10.0 * np.sin(0.7) / G, rtol=1e-8)
    np.testing.assert_allclose(grad, 2 * 2 * np.sin(0.7) / G, rtol=1e-8)
    failed = _land(0.7, 10.0, 1e4, backend, throw=False, max_steps=64)
    assert failed.result == ps.RESULTS.max_steps_reached
    assert np.isnan(failed.event_time) and not bool(failed.event_happened)


def test_bad_events_get_clear_errors():
    with pytest.raises(ValueError, match="direction"):
        ps.Event(lambda t, y, args: y, direction=2)
    with pytest.raises(TypeError, match="condition"):
        ps.Event("height")
    with pytest.raises(TypeError, match="ps.Event"):
        _land_with(event=lambda t, y, args: y["pos"][1])
    with pytest.raises(ValueError, match="scalar"):
        _land_with(event=ps.Event(lambda t, y, args: y["pos"]))


def _land_with(event):
    return ps.solve(PROBLEM, _y0(0.7, 10.0), {"k": 0.0}, saveat=jnp.array([0.0]),
                    event=event)


def test_nuts_recovers_drag_from_landing_times():
    """Posterior recovery on synthetic data with a known truth: landing times of five
    throws with noise sd 0.02 s; the posterior of k covers the truth. (The example's
    fuller check against an independent closed-form fit,
    `tests/test_example_projectile_drag.py`, is marked slow.)"""
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    k_true, sd = 0.3, 0.02
    thetas = jnp.linspace(0.4, 1.2, 5)

    def times(k):
        def one(theta):
            return _land(theta, 20.0, k, "diffrax", throw=False, rtol=1e-8,
                         atol=1e-8).event_time

        return jax.vmap(one)(thetas)

    observed = times(k_true) + sd * jax.random.normal(jax.random.key(0), (5,))

    def model():
        k = numpyro.sample("k", dist.LogNormal(jnp.log(0.2), 1.0))
        numpyro.sample("t", dist.Normal(times(k), sd), obs=observed)

    mcmc = MCMC(NUTS(model), num_warmup=150, num_samples=200, progress_bar=False)
    mcmc.run(jax.random.key(1))
    k = np.asarray(mcmc.get_samples()["k"])
    lo, hi = np.quantile(k, [0.01, 0.99])
    assert lo < k_true < hi
    assert np.std(k) < 0.1  # the data constrain k


@pytest.mark.parametrize("backend", BACKENDS)
def test_event_alone_without_save_times(backend):
    """`saveat=None` with an event: only the event outputs, the same numbers."""
    with_ts = _land(0.9, 25.0, 0.35, backend)
    alone = ps.solve(PROBLEM, _y0(0.9, 25.0), {"k": 0.35}, saveat=None, event=LANDING,
                     backend=backend, **TOL)
    assert alone.ts.shape == (0,) and alone.ys["pos"].shape == (0, 2)
    np.testing.assert_allclose(alone.event_time, with_ts.event_time, rtol=1e-12)
    np.testing.assert_allclose(alone.event_state["pos"], with_ts.event_state["pos"],
                               rtol=1e-10)
    want = _drag_reference(0.9, 25.0, 0.35)[1][0, 1]  # dT/dk
    grad = jax.grad(lambda k: ps.solve(PROBLEM, _y0(0.9, 25.0), {"k": k}, saveat=None,
                                       event=LANDING, backend=backend,
                                       **TOL).event_time)(0.35)
    np.testing.assert_allclose(grad, want, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_throw_guards_the_event_outputs_under_jit(backend):
    """A failed solve whose only used output is `event_time` raises under `jit` (the
    check once sat on `ys` alone, which XLA drops when it is unused)."""
    landing_time = jax.jit(lambda k: ps.solve(
        PROBLEM, _y0(0.7, 10.0), {"k": k}, saveat=None, event=LANDING,
        backend=backend, max_steps=2).event_time)
    with pytest.raises(Exception, match="maximum number of solver steps"):
        jax.block_until_ready(landing_time(0.1))

"""Save times as users have them: repeated times (several observations at one instant)
and a first save time at `t0`, on every backend, for values, gradients, `jit` with
traced times, and `vmap`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate as si
from helpers import BACKENDS, LV_P, LV_Y0, central_fd, lotka_volterra

import pysciml as ps

PROBLEM = ps.ODEProblem(lotka_volterra, 0.0, 5.0)
# t0 twice, 1.0 three times, 4.0 twice, and t1.
TS = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 2.5, 4.0, 4.0, 5.0])
TOL = dict(rtol=1e-12, atol=1e-12, max_steps=100_000)
WEIGHTS = np.cos(np.arange(TS.size * 2.0)).reshape(TS.size, 2)


def _solve(backend, y0, p, ts=TS, **kw):
    return ps.solve(PROBLEM, y0, p, saveat=ts, backend=backend, solver=ps.Dopri8(),
                    **(TOL | kw))


def _loss(backend):
    def loss(y0, p, ts=TS):
        return jnp.sum(WEIGHTS * _solve(backend, y0, p, ts).ys ** 2)

    return loss


@pytest.fixture(scope="module")
def scipy_reference():
    """`scipy.integrate.solve_ivp` directly (DOP853, 1e-13), at the unique times."""
    unique = np.unique(TS)
    sol = si.solve_ivp(lambda t, y: np.asarray(lotka_volterra(t, y, LV_P)),
                       (0.0, 5.0), LV_Y0, method="DOP853", t_eval=unique,
                       rtol=1e-13, atol=1e-13)
    return sol.y.T[np.searchsorted(unique, TS)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_values_at_repeated_times_and_t0(backend, scipy_reference):
    ys = np.asarray(_solve(backend, jnp.asarray(LV_Y0), jnp.asarray(LV_P)).ys)
    assert ys.shape == (TS.size, 2)
    np.testing.assert_array_equal(ys[0], LV_Y0)  # t0: exactly y0
    np.testing.assert_array_equal(ys[1], LV_Y0)
    np.testing.assert_array_equal(ys[2], ys[3])  # a repeated time: one state
    np.testing.assert_array_equal(ys[3], ys[4])
    np.testing.assert_allclose(ys, scipy_reference, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_at_repeated_times_match_finite_differences(backend):
    loss = _loss(backend)
    y0, p = jnp.asarray(LV_Y0), jnp.asarray(LV_P)
    g_y0, g_p = jax.grad(loss, argnums=(0, 1))(y0, p)
    fd_y0 = central_fd(lambda x: loss(x, p), LV_Y0, 1e-5)
    fd_p = central_fd(lambda x: loss(y0, x), LV_P, 1e-5)
    # Central differences at 1e-5 on a solve at 1e-12: truncation ~1e-10 relative.
    np.testing.assert_allclose(g_y0, fd_y0, rtol=1e-6)
    np.testing.assert_allclose(g_p, fd_p, rtol=1e-6)
    # The cotangent of a repeated time is the sum of the cotangents of its copies:
    # the same gradient as a loss written on the unique times with summed weights.
    unique, index = np.unique(TS, return_inverse=True)
    summed = np.zeros((unique.size, 2))
    np.add.at(summed, index, WEIGHTS)

    def unique_loss(y0, p):
        return jnp.sum(summed * _solve(backend, y0, p, jnp.asarray(unique)).ys ** 2)

    u_y0, u_p = jax.grad(unique_loss, argnums=(0, 1))(y0, p)
    np.testing.assert_allclose(g_y0, u_y0, rtol=1e-9)
    np.testing.assert_allclose(g_p, u_p, rtol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_traced_save_times_under_jit(backend):
    loss = _loss(backend)
    y0, p = jnp.asarray(LV_Y0), jnp.asarray(LV_P)
    # `ts` is an argument of the jitted function: the repeats are only known at run
    # time, and each backend still gets them right.
    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(y0, p, TS)
    np.testing.assert_allclose(value, loss(y0, p), rtol=1e-12)
    for a, b in zip(grads, jax.grad(loss, argnums=(0, 1))(y0, p)):
        np.testing.assert_allclose(a, b, rtol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_with_repeated_times(backend):
    loss = _loss(backend)
    y0s = jnp.asarray(LV_Y0) * jnp.array([[1.0], [1.1], [0.9]])
    p = jnp.asarray(LV_P)
    values = jax.vmap(loss, in_axes=(0, None))(y0s, p)
    grads = jax.vmap(jax.grad(loss), in_axes=(0, None))(y0s, p)
    for i in range(3):
        np.testing.assert_allclose(values[i], loss(y0s[i], p), rtol=1e-12)
        np.testing.assert_allclose(grads[i], jax.grad(loss)(y0s[i], p), rtol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_t0(backend):
    sol = _solve(backend, jnp.asarray(LV_Y0), jnp.asarray(LV_P), ts=jnp.zeros(3))
    np.testing.assert_array_equal(sol.ys, np.tile(LV_Y0, (3, 1)))
    g = jax.grad(lambda y0: jnp.sum(_solve(backend, y0, jnp.asarray(LV_P),
                                           ts=jnp.zeros(3)).ys))(jnp.asarray(LV_Y0))
    np.testing.assert_allclose(g, [3.0, 3.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_save_times(backend):
    ints = _solve(backend, jnp.asarray(LV_Y0), jnp.asarray(LV_P),
                  ts=jnp.array([0, 1, 1, 3, 5])).ys
    floats = _solve(backend, jnp.asarray(LV_Y0), jnp.asarray(LV_P),
                    ts=jnp.array([0.0, 1.0, 1.0, 3.0, 5.0])).ys
    np.testing.assert_array_equal(ints, floats)


@pytest.mark.parametrize("backend", BACKENDS)
def test_decreasing_times_name_the_first_bad_pair(backend):
    with pytest.raises(ValueError, match=r"non-decreasing.*saveat\[2\]=3\.0.*"
                                         r"saveat\[3\]=2\.0"):
        _solve(backend, jnp.asarray(LV_Y0), jnp.asarray(LV_P),
               ts=jnp.array([1.0, 1.0, 3.0, 2.0, 4.0]))

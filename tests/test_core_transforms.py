"""`jit`, `vmap`, `grad` through `vmap`, no retracing, second derivatives, and forward
mode, on `y' = -y/tau` (exact solution y0 exp(-t/tau))."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import BACKENDS, default_solver

import pysciml as ps
from pysciml._backend.host import AbstractHostBackend

T = 2.0
TS = np.linspace(0.0, T, 5)
# rtol=1e-8 (atol=1e-10): values are within C*rtol = 1e-6 (relative to max|y|, C=100,
# see test_core_analytic) of the exact solution; gradients within ~1e-5 relative (see
# test_core_gradients). The comparisons below use these two tolerances.
RTOL = 1e-8
VAL_TOL = 1e-6
GRAD_TOL = 1e-5


def _decay(t, y, tau):
    return -y / tau


PROBLEM = ps.ODEProblem(_decay, 0.0, T)


def _exact(y0, tau, ts=TS):
    y0, tau = np.asarray(y0), np.asarray(tau)
    return y0[..., None, :] * np.exp(-ts[:, None] / tau[..., None, None])


def _solve(backend, y0, tau, **kw):
    kw = (
        dict(
            saveat=jnp.asarray(TS),
            solver=default_solver(backend),
            backend=backend,
            rtol=RTOL,
            atol=RTOL / 100,
        )
        | kw
    )
    return ps.solve(PROBLEM, y0, tau, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_jit(backend):
    f = jax.jit(lambda y0, tau: _solve(backend, y0, tau).ys)
    y0, tau = jnp.array([1.0, 2.0]), jnp.asarray(0.7)
    np.testing.assert_allclose(
        np.asarray(f(y0, tau)), _exact(y0, tau), atol=2 * VAL_TOL
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_over_y0_and_args(backend):
    y0s = jnp.array([[1.0, 2.0], [0.5, -1.0], [3.0, 0.1]])
    taus = jnp.array([0.5, 0.7, 1.3])
    tau = jnp.asarray(0.7)
    y0 = jnp.array([1.0, 2.0])
    over_y0 = jax.vmap(lambda y: _solve(backend, y, tau).ys)(y0s)
    over_tau = jax.vmap(lambda a: _solve(backend, y0, a).ys)(taus)
    over_both = jax.jit(jax.vmap(lambda y, a: _solve(backend, y, a).ys))(y0s, taus)
    assert over_y0.shape == over_tau.shape == over_both.shape == (3, len(TS), 2)
    # max|y| = 3: atol 3 * VAL_TOL.
    np.testing.assert_allclose(
        np.asarray(over_y0), _exact(y0s, jnp.full(3, 0.7)), atol=3 * VAL_TOL
    )
    np.testing.assert_allclose(
        np.asarray(over_tau), _exact(jnp.tile(y0, (3, 1)), taus), atol=3 * VAL_TOL
    )
    np.testing.assert_allclose(
        np.asarray(over_both), _exact(y0s, taus), atol=3 * VAL_TOL
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_through_vmap(backend):
    y0 = jnp.array([1.3])
    taus = jnp.array([0.5, 0.7, 1.3])

    def loss(taus):
        ys = jax.vmap(lambda a: _solve(backend, y0, a).ys)(taus)  # (3, k, 1)
        return jnp.sum(ys[:, -1, 0] ** 2)

    g = jax.jit(jax.grad(loss))(taus)
    # d/dtau_i of y_i(T)^2 = (T/tau^2) * 2 y(T) * y0 exp(-T/tau).
    t = np.asarray(taus)
    yT = 1.3 * np.exp(-T / t)
    np.testing.assert_allclose(
        np.asarray(g), (T / t**2) * 2 * yT * 1.3 * np.exp(-T / t), rtol=GRAD_TOL
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_retrace_on_new_values(backend):
    """A second call with new values of the same shapes and dtypes does not trace the
    vector field again: neither under `jit`, nor under `jit(grad)`, nor eagerly."""
    traces = [0]

    def field(t, y, tau):
        traces[0] += 1  # Python side effect: runs only when JAX traces the function.
        return -y / tau

    problem = ps.ODEProblem(field, 0.0, T)

    def run(y0, tau):
        return ps.solve(
            problem,
            y0,
            tau,
            saveat=jnp.asarray(TS),
            solver=default_solver(backend),
            backend=backend,
            rtol=1e-6,
        ).ys

    # Eager.
    run(jnp.array([1.0]), jnp.asarray(0.7))
    first = traces[0]
    assert first > 0
    out = run(jnp.array([2.0]), jnp.asarray(0.9))
    # Eagerly, `solve` re-checks the vector field's output structure with one abstract
    # trace (`eqx.filter_eval_shape`; no compilation) per call. A recompilation would
    # re-trace it for the solver as well, i.e. add as many traces as the first call.
    assert traces[0] - first <= 1 < first
    # Eager and traced values are different results: the cache did not return stale
    # output. (Value 2 exp(-T/0.9) at T; rtol=1e-6 -> 1e-4 is a loose, safe check.)
    np.testing.assert_allclose(float(out[-1, 0]), 2 * np.exp(-T / 0.9), rtol=1e-4)

    for fn in (
        jax.jit(run),
        jax.jit(jax.grad(lambda y0, tau: run(y0, tau)[-1, 0], argnums=1)),
    ):
        fn(jnp.array([1.0]), jnp.asarray(0.7))
        after_first = traces[0]
        fn(jnp.array([1.5]), jnp.asarray(0.8))
        fn(jnp.array([0.5]), jnp.asarray(1.1))
        assert traces[0] == after_first


# ---------------------------------------------------------------------------------------
# Second derivatives.


def _hessian_truth(y0, tau):
    """L(y0, tau) = y(T)^2 = y0^2 exp(-2T/tau): its exact Hessian."""
    e = np.exp(-2 * T / tau)
    a = 2 * T / tau**2
    return np.array(
        [[2 * e, 2 * y0 * e * a], [2 * y0 * e * a, y0**2 * e * (a**2 - 4 * T / tau**3)]]
    )


def _is_host(backend):
    return isinstance(ps.get_backend(backend), AbstractHostBackend)


_ROR = [pytest.param(b, id=b) for b in BACKENDS]


@pytest.mark.parametrize("backend", _ROR)
def test_reverse_over_reverse(backend):
    """jax.jacrev(jax.jacrev(f)), as NumPyro's AutoLaplaceApproximation(hessian_fn=...)
    uses it: works on traced backends, fails clearly on host backends."""

    def loss(x):
        sol = ps.solve(
            ps.ODEProblem(_decay, 0.0, T),
            x[:1],
            x[1],
            saveat=jnp.array([T]),
            solver=default_solver(backend),
            backend=backend,
            # DirectAdjoint: the checkpointed DiscreteAdjoint's backward loop has a
            # dynamic trip count, which JAX cannot differentiate in reverse mode. On a
            # host backend, its adjoint (named: `None` would pick forward
            # sensitivities, which do support this; test_forward_sensitivity.py).
            sensitivity=(ps.DirectAdjoint() if not _is_host(backend)
                         else ps.get_backend(backend).default_sensitivity),
            rtol=1e-10,
            atol=1e-12,
            max_steps=256,
        )
        return sol.ys[-1, 0] ** 2

    x = jnp.array([1.3, 0.7])
    if _is_host(backend):
        with pytest.raises(TypeError, match="no second derivatives"):
            jax.jacrev(jax.jacrev(loss))(x)
        return
    hess = np.asarray(jax.jacrev(jax.jacrev(loss))(x))
    # The discrete adjoint differentiates the discrete solution exactly; at rtol=1e-10
    # that is within ~1e-8 of the exact one. 1e-6 relative is generous.
    np.testing.assert_allclose(hess, _hessian_truth(1.3, 0.7), rtol=1e-6)
    # And against central differences of the (first-order) gradient: eps=1e-5 gives
    # truncation ~1e-10 and noise ~1e-10/1e-5 = 1e-5 relative at worst.
    grad = jax.grad(loss)
    fd = np.stack(
        [
            (np.asarray(grad(x + 1e-5 * e)) - np.asarray(grad(x - 1e-5 * e))) / 2e-5
            for e in jnp.eye(2)
        ],
        axis=1,
    )
    np.testing.assert_allclose(hess, fd, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("transform", ["jvp", "jacfwd", "hessian"])
def test_forward_mode_through_an_adjoint_fails_clearly(backend, transform):
    adjoint = ps.get_backend(backend).default_sensitivity

    def f(tau):
        return _solve(backend, jnp.array([1.0]), tau, sensitivity=adjoint).ys[-1, 0]

    tau = jnp.asarray(0.7)
    # An adjoint is a custom_vjp: JAX refuses forward mode through it, naming
    # custom_vjp (diffrax); host backends say so, naming ForwardSensitivity.
    with pytest.raises(TypeError, match="custom_vjp|ForwardSensitivity"):
        if transform == "jvp":
            jax.jvp(f, (tau,), (jnp.asarray(1.0),))
        elif transform == "jacfwd":
            jax.jacfwd(f)(tau)
        else:
            jax.hessian(f)(tau)


def test_reverse_over_reverse_with_checkpointed_adjoint_fails_clearly():
    """The checkpointed DiscreteAdjoint is first-order only: JAX says why."""
    problem = ps.ODEProblem(_decay, 0.0, T)

    def loss(tau):
        return ps.solve(problem, jnp.array([1.0]), tau, saveat=jnp.array([T]),
                        sensitivity=ps.DiscreteAdjoint(), max_steps=64).ys[-1, 0] ** 2

    with pytest.raises(ValueError, match="while_loop"):
        jax.jacrev(jax.jacrev(loss))(0.7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", ["forward", "adjoint"])
def test_failed_member_does_not_poison_the_batch_gradient(backend, how):
    """A member whose solve fails (max_steps) is dropped by the loss; the gradient of
    the sum over the batch with respect to a shared input is the others' (exp decay:
    d/dv Σ v e^{-k}), not NaN. Both the forward-sensitivity product `S @ dx` and a
    host adjoint (which would re-solve, fail again and return NaN) once poisoned it."""
    problem = ps.ODEProblem(lambda t, y, k: -k * y, 0.0, 1.0)
    sensitivity = ps.ForwardSensitivity() if how == "forward" else None
    if how == "adjoint":
        sensitivity = ps.get_backend(backend).default_sensitivity

    def member(v, k):
        sol = ps.solve(problem, jnp.stack([v, v]), k, saveat=jnp.array([1.0]),
                       backend=backend, sensitivity=sensitivity, throw=False,
                       max_steps=16)
        return jnp.where(sol.result == ps.RESULTS.successful, sol.ys[0, 0], 0.0)

    ks = jnp.array([1.0, 1e5, 1.0])  # 1e5: stiff, beyond 16 explicit steps
    grad = jax.grad(lambda v: jax.vmap(member, in_axes=(None, 0))(v, ks).sum())(1.0)
    np.testing.assert_allclose(grad, 2 * np.exp(-1.0), rtol=1e-6)

"""A `vmap`ped host solve as one stacked system (`host/_stacked.py`): the same values
and gradients as item by item, per-item accuracy against an external reference, and
the cases that fall back to the loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate as si

import pysciml as ps

jax.config.update("jax_enable_x64", True)


def lv(t, y, p):
    return jnp.stack([p[0] * y[0] - p[1] * y[0] * y[1],
                      -p[2] * y[1] + p[3] * y[0] * y[1]])


PROBLEM = ps.ODEProblem(lv, 0.0, 5.0)
TS = jnp.linspace(0.5, 5.0, 10)
P = jnp.array([1.5, 1.0, 3.0, 1.0]) * (
    1 + 0.1 * jax.random.normal(jax.random.PRNGKey(0), (6, 4)))
Y0 = 1.0 + 0.2 * jax.random.uniform(jax.random.PRNGKey(1), (6, 2))
W = jnp.arange(1.0, 11.0)[None, :, None]


def batched(mode, *, sensitivity=None, shared=False, solver=None, tol=1e-10,
            throw=True):
    backend = ps.ScipyBackend(batch_mode=mode)

    def one(y0, p):
        return ps.solve(PROBLEM, y0, p, saveat=TS, backend=backend, rtol=tol,
                        atol=tol, sensitivity=sensitivity, solver=solver, throw=throw)

    return jax.vmap(one, in_axes=(0, None if shared else 0))


@pytest.mark.parametrize("shared", [False, True], ids=["batched_p", "shared_p"])
@pytest.mark.parametrize("sensitivity", [
    ps.InterpolatingAdjoint(), ps.BacksolveAdjoint(), ps.ForwardSensitivity()])
def test_stacked_matches_the_loop(sensitivity, shared):
    def loss(mode):
        solve = batched(mode, sensitivity=sensitivity, shared=shared)

        def f(y0s, ps_):
            return jnp.sum(solve(y0s, ps_[0] if shared else ps_).ys ** 2 * W)

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(Y0, P)

    (v1, g1), (v2, g2) = loss("stack"), loss("loop")
    # Different step sequences at rtol = atol = 1e-10: agreement to ~1e-9.
    np.testing.assert_allclose(v1, v2, rtol=1e-8)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-7 * float(jnp.abs(b).max()))
    if shared:  # the cotangent of a shared p is the sum over items, whole
        assert np.all(g1[1][1:] == 0.0)


@pytest.mark.parametrize("sensitivity", [ps.InterpolatingAdjoint(),
                                         ps.BacksolveAdjoint()])
def test_per_item_gradients_with_shared_parameters(sensitivity):
    """`vmap(grad)` with respect to parameters shared by the batch: each row is that
    item's own gradient (an earlier stacked VJP returned the batch's sum in row 0), as
    in the loop, and `jax.jacrev` (a batch of cotangents only) likewise."""
    def per_item(mode):
        solve = batched(mode, sensitivity=sensitivity, shared=True)

        def item_loss(p, y0):
            return jnp.sum(solve(y0[None], p).ys ** 2 * W)

        return jax.jit(jax.vmap(jax.grad(item_loss), in_axes=(None, 0)))(P[0], Y0)

    stacked, loop = per_item("stack"), per_item("loop")
    np.testing.assert_allclose(stacked, loop, rtol=1e-7, atol=1e-7 * float(
        jnp.abs(loop).max()))
    assert np.all(np.abs(stacked) > 0)  # every row, not only the first

    solve = batched("stack", sensitivity=sensitivity, shared=True)
    jac = jax.jacrev(lambda p: solve(Y0[:2], p).ys[:, -1, 0])(P[0])
    for i in range(2):
        one = jax.grad(lambda p: batched("loop", sensitivity=sensitivity, shared=True)(
            Y0[i:i + 1], p).ys[0, -1, 0])(P[0])
        np.testing.assert_allclose(jac[i], one, rtol=1e-7)


def reference(y0, p):
    sol = si.solve_ivp(lambda t, y: np.asarray(lv(t, y, p)), (0.0, 5.0),
                       np.asarray(y0), method="DOP853", t_eval=np.asarray(TS),
                       rtol=1e-13, atol=1e-13)
    return sol.y.T


def test_every_item_keeps_its_accuracy():
    # The stacked solve runs at tol/sqrt(B): no item may be less accurate than the
    # tolerance allows alone. At rtol = atol = 1e-6 the global error of RK45 on LV is
    # a few 1e-5 (measured here: the loop's largest is 2.9e-5).
    stacked = batched("stack", tol=1e-6)(Y0, P)
    loop = batched("loop", tol=1e-6)(Y0, P)
    for i in range(Y0.shape[0]):
        ref = reference(Y0[i], P[i])
        err_stack = np.abs(np.asarray(stacked.ys[i]) - ref).max()
        err_loop = np.abs(np.asarray(loop.ys[i]) - ref).max()
        assert err_stack <= max(err_loop, 1e-7), (i, err_stack, err_loop)
    # One solve for the batch: every item reports the same steps; the loop does not.
    steps = np.asarray(stacked.stats["num_steps"])
    assert np.all(steps == steps[0])
    assert len(set(np.asarray(loop.stats["num_steps"]).tolist())) > 1


def test_different_save_times_are_solved_item_by_item():
    backend = ps.ScipyBackend()
    tss = jnp.stack([TS, TS * 0.9, TS * 0.8, TS, TS, TS])
    sol = jax.vmap(lambda y0, p, ts: ps.solve(PROBLEM, y0, p, saveat=ts,
                                              backend=backend))(Y0, P, tss)
    assert len(set(np.asarray(sol.stats["num_steps"]).tolist())) > 1
    for i in (0, 1):
        ref = si.solve_ivp(lambda t, y: np.asarray(lv(t, y, P[i])), (0.0, 5.0),
                           np.asarray(Y0[i]), t_eval=np.asarray(tss[i]), rtol=1e-10,
                           atol=1e-10, method="DOP853").y.T
        np.testing.assert_allclose(sol.ys[i], ref, rtol=1e-4, atol=1e-5)


def test_a_failed_item_fails_alone():
    # One item's parameters make the solve blow up; the stacked solve fails, and the
    # batch is redone item by item so that only that item reports the failure.
    p = P.at[2].set(jnp.array([60.0, -5.0, 3.0, 1.0]))
    sol = batched("stack", tol=1e-8, throw=False)(Y0, p)
    codes = np.asarray(sol.result._value)
    assert codes[2] != 0 and np.all(np.delete(codes, 2) == 0)
    assert np.isnan(sol.ys[2]).all() and np.isfinite(np.delete(sol.ys, 2, 0)).all()


def test_implicit_solvers_loop():
    sol = batched("stack", solver=ps.RadauIIA5(), tol=1e-8)(Y0, P)
    assert len(set(np.asarray(sol.stats["num_steps"]).tolist())) > 1


def test_nested_vmap_stacks_both_dimensions():
    backend = ps.ScipyBackend()

    def one(y0, p):
        return ps.solve(PROBLEM, y0, p, saveat=TS, backend=backend, rtol=1e-10,
                        atol=1e-10).ys

    ys = jax.vmap(jax.vmap(one))(Y0.reshape(2, 3, 2), P.reshape(2, 3, 4))
    loop = jax.vmap(lambda y0, p: ps.solve(
        PROBLEM, y0, p, saveat=TS, backend=ps.ScipyBackend(batch_mode="loop"),
        rtol=1e-10, atol=1e-10).ys)(Y0, P)
    np.testing.assert_allclose(ys.reshape(6, 10, 2), loop, rtol=1e-8)


def test_batch_mode_is_checked():
    with pytest.raises(ValueError, match="batch_mode"):
        ps.solve(PROBLEM, Y0[0], P[0], saveat=TS,
                 backend=ps.ScipyBackend(batch_mode="together"))


def test_per_item_gradients_with_many_shared_parameters():
    """Past `B·m > 4 (B·n + m)` shared parameters, the VJP of a stacked batch computes
    the parameter cotangents by quadrature (a stacked adjoint would carry B·m parameter
    states): still per-item rows, equal to the loop's; and the analytic gradient of
    `y(1) = y0 exp(-mean(p))`."""
    problem = ps.ODEProblem(lambda t, y, p: -jnp.mean(p) * y, 0.0, 1.0)
    p = jnp.linspace(0.5, 1.5, 50)  # m = 50; B = 8, n = 2: 400 > 4 (16 + 50)
    y0s = jnp.linspace(1.0, 2.0, 16).reshape(8, 2)

    def per_item(mode):
        backend = ps.ScipyBackend(batch_mode=mode)

        def item(p_, y0):
            return ps.solve(problem, y0, p_, saveat=jnp.array([1.0]), backend=backend,
                            sensitivity=ps.InterpolatingAdjoint(), rtol=1e-10,
                            atol=1e-10).ys[0, 0]

        return jax.vmap(jax.grad(item), in_axes=(None, 0))(p, y0s)

    stacked, loop = per_item("stack"), per_item("loop")
    want = -y0s[:, :1] * np.exp(-1.0) / 50 * np.ones((8, 50))
    np.testing.assert_allclose(stacked, want, rtol=1e-7)
    np.testing.assert_allclose(stacked, loop, rtol=1e-7)


INTERPOLATING = ps.InterpolatingAdjoint()


def _mlp_problem(width=8):
    """A small MLP field `2 → width → 2` (`m = 5·width + 2` parameters), flat."""
    n, h = 2, width

    def field(t, y, p):
        w1, b1 = p[: n * h].reshape(h, n), p[n * h : n * h + h]
        w2, b2 = p[n * h + h : -n].reshape(n, h), p[-n:]
        return w2 @ jnp.tanh(w1 @ y + b1) + b2 - 0.1 * y

    return ps.ODEProblem(field, 0.0, 2.0), n * h + h + h * n + n


@pytest.mark.parametrize("solver", [ps.Dopri5(), ps.Dopri8()], ids=["RK45", "DOP853"])
def test_quadrature_adjoint_with_many_shared_parameters(monkeypatch, solver):
    """Past `B·m > 4 (B·n + m)` shared parameters, SciPy's interpolating adjoint of a
    stacked batch integrates `λ` alone and each item's parameter cotangent by
    Gauss--Legendre quadrature on `λ`'s steps. The per-item rows of `vmap(grad)` equal
    the loop's (which integrates `μ` as adjoint states), and the gradient of the summed
    loss equals the diffrax backend's."""
    from pysciml._backend import scipy as scipy_backend

    problem, m = _mlp_problem()
    b, n = 6, 2
    assert b * m > 4 * (b * n + m)  # 252 > 216: the quadrature path
    p = 0.5 * jax.random.normal(jax.random.PRNGKey(0), (m,))
    y0s = jax.random.normal(jax.random.PRNGKey(1), (b, n))
    ts = jnp.linspace(0.2, 2.0, 10)
    calls = []  # the quadrature adjoints that returned (a failed one would be
    quadrature = scipy_backend._quadrature_adjoint  # redone item by item, unseen)
    monkeypatch.setattr(scipy_backend, "_quadrature_adjoint",
                        lambda *a: calls.append(quadrature(*a)) or calls[-1])

    def item_loss(backend, sensitivity=INTERPOLATING):
        def loss(p_, y0):
            return jnp.sum(ps.solve(problem, y0, p_, saveat=ts, backend=backend,
                                    solver=solver, rtol=1e-10, atol=1e-10,
                                    sensitivity=sensitivity).ys ** 2)
        return loss

    def per_item(backend):
        return jax.jit(jax.vmap(jax.grad(item_loss(backend)), in_axes=(None, 0)))(
            p, y0s)

    stacked = per_item(ps.ScipyBackend())
    assert len(calls) == 1  # one stacked quadrature adjoint for the batch
    loop = per_item(ps.ScipyBackend(batch_mode="loop"))
    assert len(calls) == 1  # the loop integrates μ as adjoint states
    # At rtol = atol = 1e-10 both gradients are accurate to ~1e-9 relative (different
    # steps; μ by quadrature of order ≥ the method's, on dense outputs of order 4
    # (RK45) or 7 (DOP853) of λ's steps): 1e-6 of the largest entry leaves a wide
    # margin (observed: ~2e-11 for RK45, ~3e-11 for DOP853).
    scale = float(jnp.abs(loop).max())
    np.testing.assert_allclose(stacked, loop, rtol=1e-6, atol=1e-6 * scale)
    assert np.all(np.any(stacked != 0, axis=1))  # every item its own row

    def summed(backend, sensitivity=INTERPOLATING):
        loss = item_loss(backend, sensitivity)
        return jax.jit(jax.grad(lambda p_: jnp.sum(jax.vmap(
            loss, in_axes=(None, 0))(p_, y0s))))(p)

    via_scipy, via_diffrax = (summed(ps.ScipyBackend()),
                               summed("diffrax", ps.DiscreteAdjoint()))
    assert len(calls) == 2
    # Diffrax differentiates its own discrete solve (another method, other steps) at
    # the same tolerances: both ~1e-9 from the exact gradient.
    scale = float(jnp.abs(via_diffrax).max())
    np.testing.assert_allclose(via_scipy, via_diffrax, rtol=1e-6, atol=1e-6 * scale)
    np.testing.assert_allclose(via_scipy, jnp.sum(stacked, axis=0), rtol=1e-9,
                               atol=1e-9 * scale)


def test_no_quadrature_for_backsolve_adjoint(monkeypatch):
    """The quadrature adjoint reads `λ` on the forward dense output's steps: the
    backsolve adjoint (and implicit methods, Julia) keep the item-by-item VJP."""
    from pysciml._backend import scipy as scipy_backend

    problem, m = _mlp_problem()
    p = 0.5 * jax.random.normal(jax.random.PRNGKey(0), (m,))
    y0s = jax.random.normal(jax.random.PRNGKey(1), (6, 2))
    calls = []
    quadrature = scipy_backend._quadrature_adjoint
    monkeypatch.setattr(scipy_backend, "_quadrature_adjoint",
                        lambda *a: calls.append(1) or quadrature(*a))

    def per_item(mode):
        def loss(p_, y0):
            return jnp.sum(ps.solve(problem, y0, p_, saveat=jnp.array([1.0, 2.0]),
                                    backend=ps.ScipyBackend(batch_mode=mode),
                                    rtol=1e-10, atol=1e-10,
                                    sensitivity=ps.BacksolveAdjoint()).ys ** 2)
        return jax.vmap(jax.grad(loss), in_axes=(None, 0))(p, y0s)

    # Item by item in both; the forward states differ in rounding (the stacked
    # forward at tol/√B, re-solved item by item in its VJP; the loop's kept).
    loop, stacked = per_item("loop"), per_item("stack")
    assert not calls
    np.testing.assert_allclose(stacked, loop, rtol=1e-8,
                               atol=1e-8 * float(jnp.abs(loop).max()))


def test_a_failed_quadrature_adjoint_is_redone_item_by_item(monkeypatch):
    """A stacked VJP that fails (here: the quadrature adjoint hits `max_steps`) is
    redone item by item, so that each item gets its own code and gradient."""
    from pysciml._backend import scipy as scipy_backend

    def fail(*args):
        calls.append(1)
        raise scipy_backend._Failed(scipy_backend.MAX_STEPS)

    calls = []
    monkeypatch.setattr(scipy_backend, "_quadrature_adjoint", fail)
    problem, m = _mlp_problem()
    p = 0.5 * jax.random.normal(jax.random.PRNGKey(0), (m,))
    y0s = jax.random.normal(jax.random.PRNGKey(1), (6, 2))

    def per_item(mode):
        def loss(p_, y0):
            return jnp.sum(ps.solve(problem, y0, p_, saveat=jnp.array([1.0, 2.0]),
                                    backend=ps.ScipyBackend(batch_mode=mode),
                                    rtol=1e-10, atol=1e-10).ys ** 2)
        return jax.vmap(jax.grad(loss), in_axes=(None, 0))(p, y0s)

    stacked = per_item("stack")
    assert calls == [1]
    loop = per_item("loop")
    np.testing.assert_allclose(stacked, loop, rtol=1e-8,
                               atol=1e-8 * float(jnp.abs(loop).max()))

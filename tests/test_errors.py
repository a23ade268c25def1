"""Argument errors (raised at trace time, naming the argument), runtime failures under
`throw=True` / `throw=False`, and backend selection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    BACKENDS,
    RUNTIME_ERRORS,
    SENSITIVITIES_BY_BACKEND,
    SOLVERS_BY_BACKEND,
    default_solver,
    explicit_solver,
)

import pysciml as ps
from pysciml._backend import ENV_VAR


def _decay(t, y, tau):
    return -y / tau


PROBLEM = ps.ODEProblem(_decay, 0.0, 1.0)
Y0 = jnp.array([1.0, 2.0])
TAU = jnp.asarray(0.5)
TS = jnp.array([0.1, 0.5, 1.0])


def _solve(backend, y0=Y0, args=TAU, problem=PROBLEM, **kw):
    kw = dict(saveat=TS, solver=default_solver(backend), backend=backend) | kw
    return ps.solve(problem, y0, args, **kw)


# ---------------------------------------------------------------------------------------
# The problem


def test_problem_not_an_odeproblem():
    with pytest.raises(TypeError, match=r"must be a `ps\.ODEProblem`; got function"):
        ps.solve(_decay, Y0, TAU, saveat=TS)


def test_vector_field_not_callable():
    with pytest.raises(TypeError, match=r"vector_field=.*must be a callable"):
        ps.ODEProblem("not a function", 0.0, 1.0)


@pytest.mark.parametrize("t0,t1", [(1.0, 1.0), (2.0, 1.0)])
def test_t0_not_before_t1(t0, t1):
    with pytest.raises(ValueError, match=r"needs `t0 < t1`"):
        ps.ODEProblem(_decay, t0, t1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_times(bad):
    with pytest.raises(ValueError, match=r"ODEProblem\(t0=\.\.\.\)` must be a finite"):
        ps.ODEProblem(_decay, bad, 1.0)
    with pytest.raises(ValueError, match=r"ODEProblem\(t1=\.\.\.\)` must be a finite"):
        ps.ODEProblem(_decay, 0.0, bad)


def test_traced_time_span():
    with pytest.raises(TypeError, match=r"ODEProblem\(t1=\.\.\.\)` must be a finite"):
        jax.jit(lambda t1: ps.ODEProblem(_decay, 0.0, t1))(1.0)


# ---------------------------------------------------------------------------------------
# saveat


@pytest.mark.parametrize("backend", BACKENDS)
def test_saveat_missing(backend):
    with pytest.raises(TypeError, match=r"`solve\(saveat=\.\.\.\)` is required"):
        _solve(backend, saveat=None)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "saveat,match",
    [
        (
            jnp.array([[0.1, 0.5]]),
            r"must be a non-empty 1D array of times; got shape \(1, 2\)",
        ),
        (jnp.array([]), r"must be a non-empty 1D array of times; got shape \(0,\)"),
        (jnp.array(0.5), r"must be a non-empty 1D array"),
        (jnp.array([0.5, 0.2, 1.0]), r"must be non-decreasing.*saveat\[0\]=0\.5"),
        (jnp.array([0.2, 0.2, 0.1]), r"must be non-decreasing.*saveat\[1\]=0\.2, "
                                     r"saveat\[2\]=0\.1"),
        (
            jnp.array([-0.1, 0.5]),
            r"must lie inside the problem's span \[t0, t1\] = \[0\.0, 1\.0\]",
        ),
        (jnp.array([0.5, 1.5]), r"must lie inside the problem's span"),
        (jnp.array([0.1, jnp.nan]), r"contains NaN or Inf"),
    ],
    ids=["2d", "empty", "0d", "unsorted", "decreasing-after-repeat", "before-t0", "after-t1", "nan"],
)
def test_saveat_concrete(backend, saveat, match):
    with pytest.raises(ValueError, match=match):
        _solve(backend, saveat=saveat)


@pytest.mark.parametrize("backend", BACKENDS)
def test_saveat_traced(backend):
    """Traced save times are only known at run time: they raise then, with the same
    message. One jitted function (one compilation) serves every case."""
    f = jax.jit(lambda ts: _solve(backend, saveat=ts).ys)
    good = f(jnp.array([0.1, 0.5, 1.0]))  # a valid call works
    assert np.all(np.isfinite(np.asarray(good)))
    repeated = f(jnp.array([0.1, 0.1, 1.0]))  # repeated times are valid
    np.testing.assert_array_equal(repeated[0], repeated[1])
    cases = {
        "non-decreasing": [jnp.array([0.5, 0.2, 1.0]), jnp.array([0.2, 0.2, 0.1])],
        "inside the problem's span": [
            jnp.array([-0.1, 0.5, 1.0]),
            jnp.array([0.1, 0.5, 1.5]),
        ],
    }
    for match, bad in cases.items():
        for ts in bad:
            with pytest.raises(RUNTIME_ERRORS, match=match):
                jax.block_until_ready(f(ts))


# ---------------------------------------------------------------------------------------
# y0 and args


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_inputs_concrete(backend, bad):
    with pytest.raises(ValueError, match=r"`y0` contains NaN or Inf"):
        _solve(backend, y0=jnp.array([1.0, bad]))
    # The error names the path inside a pytree.
    with pytest.raises(ValueError, match=r"`y0\['b'\]` contains NaN or Inf"):
        ps.solve(
            ps.ODEProblem(lambda t, y, a: {"a": -y["a"], "b": -y["b"]}, 0.0, 1.0),
            {"a": jnp.array([1.0]), "b": jnp.array([bad])},
            None,
            saveat=TS,
            solver=default_solver(backend),
            backend=backend,
        )
    with pytest.raises(ValueError, match=r"`args` contains NaN or Inf"):
        _solve(backend, args=jnp.asarray(bad))
    with pytest.raises(ValueError, match=r"`args\['tau'\]` contains NaN or Inf"):
        ps.solve(
            ps.ODEProblem(lambda t, y, a: -y / a["tau"], 0.0, 1.0),
            Y0,
            {"tau": jnp.asarray(bad)},
            saveat=TS,
            solver=default_solver(backend),
            backend=backend,
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_nonfinite_inputs_traced(backend):
    """NaN in a traced y0 or args is found at run time: throw=True raises, throw=False
    returns NaN and RESULTS.nonfinite. Finite inputs through the same compiled
    function still succeed."""
    run = jax.jit(
        lambda y0, tau, throw: _solve(
            backend, y0=y0, args=tau, throw=throw, max_steps=64
        ),
        static_argnums=2,
    )
    nan_y0 = jnp.array([1.0, jnp.nan])
    with pytest.raises(RUNTIME_ERRORS, match=r"non-finite \(NaN or Inf\)"):
        jax.block_until_ready(run(nan_y0, TAU, True).ys)
    for y0, tau in [(nan_y0, TAU), (Y0, jnp.asarray(jnp.inf))]:
        sol = run(y0, tau, False)
        assert bool(sol.result == ps.RESULTS.nonfinite)
        assert np.all(np.isnan(np.asarray(sol.ys)))
    sol = run(Y0, TAU, False)
    assert bool(sol.result == ps.RESULTS.successful)
    # y = y0 exp(-t/tau): at the default rtol=1e-6, within 1e-4 (C*rtol*max|y|, C=100).
    np.testing.assert_allclose(
        np.asarray(sol.ys),
        np.asarray(Y0) * np.exp(-np.asarray(TS)[:, None] / 0.5),
        atol=1e-4,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_y0(backend):
    with pytest.raises(
        TypeError, match=r"`y0` has dtype int\d+; the state must be floating"
    ):
        _solve(backend, y0=jnp.array([1, 2]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_vector_field_wrong_shape(backend):
    problem = ps.ODEProblem(
        lambda t, y, tau: jnp.sum(-y / tau, keepdims=True), 0.0, 1.0
    )
    with pytest.raises(
        ValueError, match=r"returned shape \(1,\) for `y0` of shape \(2,\)"
    ):
        _solve(backend, problem=problem)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vector_field_wrong_structure(backend):
    problem = ps.ODEProblem(lambda t, y, tau: (-y / tau, -y / tau), 0.0, 1.0)
    with pytest.raises(
        ValueError, match=r"must return a pytree of the same structure as `y0`"
    ):
        _solve(backend, problem=problem)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vector_field_raises_at_trace_time(backend):
    def bad(t, y, tau):
        raise KeyError("boom")

    with pytest.raises(
        KeyError, match=r"boom.*raised while tracing `ODEProblem\(vector_field"
    ):
        _solve(backend, problem=ps.ODEProblem(bad, 0.0, 1.0))


# ---------------------------------------------------------------------------------------
# Options


_ALL_SOLVERS = [
    ps.Tsit5,
    ps.Dopri5,
    ps.Dopri8,
    ps.Kvaerno5,
    ps.Rodas5P,
    ps.RadauIIA5,
    ps.FBDF,
    ps.QNDF,
    ps.LSODA,
]
_ALL_SENSITIVITIES = [
    ps.DiscreteAdjoint,
    ps.BacksolveAdjoint,
    ps.InterpolatingAdjoint,
    ps.GaussAdjoint,
    ps.QuadratureAdjoint,
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_unsupported_solver(backend):
    supported = [type(s) for s in SOLVERS_BY_BACKEND[backend]]
    unsupported = [cls for cls in _ALL_SOLVERS if cls not in supported]
    assert unsupported
    if backend == "diffrax":
        assert ps.Rodas5P in unsupported
    for cls in unsupported:
        with pytest.raises(
            ValueError,
            match=rf"{cls.__name__}\(\)\)` is not supported by the '{backend}' backend",
        ) as e:
            _solve(backend, solver=cls())
        # ... and the message lists every supported solver.
        for ok in supported:
            assert f"ps.{ok.__name__}()" in str(e.value)
    with pytest.raises(
        TypeError,
        match=r"`solve\(solver=\.\.\.\)` must be an instance of `ps\.AbstractSolver`",
    ):
        _solve(backend, solver="Tsit5")


@pytest.mark.parametrize("backend", BACKENDS)
def test_unsupported_sensitivity(backend):
    supported = [type(s) for s in SENSITIVITIES_BY_BACKEND[backend]]
    unsupported = [cls for cls in _ALL_SENSITIVITIES if cls not in supported]
    assert unsupported
    if backend == "diffrax":
        assert ps.GaussAdjoint in unsupported
    for cls in unsupported:
        with pytest.raises(
            ValueError,
            match=rf"sensitivity={cls.__name__}\(\)\)` is not supported by the '{backend}' backend",
        ) as e:
            _solve(backend, sensitivity=cls())
        for ok in supported:
            assert f"ps.{ok.__name__}()" in str(e.value)
    with pytest.raises(
        TypeError, match=r"must be an instance of `ps\.AbstractSensitivity`"
    ):
        _solve(backend, sensitivity="adjoint")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name,value",
    [
        ("rtol", 0.0),
        ("rtol", -1e-6),
        ("rtol", np.nan),
        ("rtol", np.inf),
        ("rtol", "1e-6"),
        ("rtol", True),
        ("atol", 0.0),
        ("atol", -1.0),
        ("atol", None),
        ("max_steps", 0),
        ("max_steps", -5),
        ("max_steps", 10.5),
        ("max_steps", 100.0),
    ],
)
def test_bad_tolerances_and_max_steps(backend, name, value):
    with pytest.raises(
        ValueError, match=rf"`solve\({name}=\.\.\.\)` must be a positive finite Python"
    ):
        _solve(backend, **{name: value})


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_throw(backend):
    with pytest.raises(
        TypeError, match=r"`solve\(throw=\.\.\.\)` must be True or False"
    ):
        _solve(backend, throw=1)


# ---------------------------------------------------------------------------------------
# Backend selection


@pytest.fixture
def reset_default_backend():
    ps.set_default_backend(None)
    yield
    ps.set_default_backend(None)


def test_unknown_backend_name():
    with pytest.raises(
        ValueError,
        match=r"unknown backend 'nope'\. Known backends: 'diffrax', 'scipy', 'julia'",
    ):
        ps.solve(PROBLEM, Y0, TAU, saveat=TS, backend="nope")
    with pytest.raises(
        TypeError, match=r"`solve\(backend=\.\.\.\)` takes a backend name"
    ):
        ps.solve(PROBLEM, Y0, TAU, saveat=TS, backend=3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_set_default_backend(backend, reset_default_backend, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert ps.get_backend().name == "diffrax"  # the fallback
    ps.set_default_backend(backend)
    assert ps.get_backend().name == backend
    # backend=None now solves on it (solver chosen from that backend's table).
    sol = ps.solve(PROBLEM, Y0, TAU, saveat=TS, solver=default_solver(backend))
    np.testing.assert_allclose(
        np.asarray(sol.ys),
        np.asarray(Y0) * np.exp(-np.asarray(TS)[:, None] / 0.5),
        atol=1e-4,
    )  # default rtol=1e-6: C*rtol*max|y| = 100*1e-6*2 = 2e-4 > 1e-4 observed ~1e-6.
    # A backend object is accepted too.
    obj = ps.get_backend(backend)
    ps.set_default_backend(obj)
    assert ps.get_backend() is obj
    with pytest.raises(
        ValueError,
        match=r"set_default_backend\(backend=\.\.\.\)`: unknown backend 'nope'",
    ):
        ps.set_default_backend("nope")
    with pytest.raises(
        TypeError, match=r"takes a backend name or a backend object; got int"
    ):
        ps.set_default_backend(1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_env_var(backend, reset_default_backend, monkeypatch):
    monkeypatch.setenv(ENV_VAR, backend)
    assert ps.get_backend().name == backend
    # set_default_backend takes precedence over the environment variable.
    other = "scipy" if backend == "diffrax" else "diffrax"
    ps.set_default_backend(other)
    assert ps.get_backend().name == other
    ps.set_default_backend(None)
    assert ps.get_backend().name == backend
    monkeypatch.setenv(ENV_VAR, "nope")
    with pytest.raises(
        ValueError, match=rf"the environment variable {ENV_VAR}: unknown backend 'nope'"
    ):
        ps.get_backend()
    monkeypatch.setenv(ENV_VAR, "")  # empty: the fallback
    assert ps.get_backend().name == "diffrax"


# ---------------------------------------------------------------------------------------
# Solver failures at run time


def _stiff(t, y, args):
    return -1000.0 * (y - jnp.cos(t))


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_steps_on_stiff_problem(backend):
    """An explicit solver on a stiff problem (|lambda| = 1000 over [0, 10] needs ~4000
    stable steps) with max_steps=50."""
    problem = ps.ODEProblem(_stiff, 0.0, 10.0)
    kw = dict(
        saveat=jnp.array([5.0, 10.0]),
        solver=explicit_solver(backend),
        backend=backend,
        max_steps=50,
    )
    with pytest.raises(RUNTIME_ERRORS, match=r"max_steps"):
        jax.block_until_ready(ps.solve(problem, jnp.array([0.0]), None, **kw).ys)
    sol = ps.solve(problem, jnp.array([0.0]), None, throw=False, **kw)
    assert bool(sol.result == ps.RESULTS.max_steps_reached)
    assert np.all(np.isnan(np.asarray(sol.ys)))
    # Also under jit, throw=True.
    with pytest.raises(RUNTIME_ERRORS, match=r"max_steps"):
        jax.block_until_ready(
            jax.jit(lambda y0: ps.solve(problem, y0, None, **kw).ys)(jnp.array([0.0]))
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_inside_vector_field(backend):
    """sqrt(p - t) is NaN once t > p = 1: finite inputs, a NaN mid-solve."""
    problem = ps.ODEProblem(lambda t, y, p: jnp.sqrt(p - t) * y, 0.0, 2.0)
    kw = dict(
        saveat=jnp.array([0.5, 2.0]),
        solver=default_solver(backend),
        backend=backend,
        max_steps=256,
    )
    sol = ps.solve(problem, jnp.array([1.0]), jnp.asarray(1.0), throw=False, **kw)
    # Diffrax rejects every step with a NaN error estimate until max_steps runs out
    # (result max_steps_reached); host backends see the NaN and report nonfinite.
    assert not bool(sol.result == ps.RESULTS.successful)
    assert np.all(np.isnan(np.asarray(sol.ys)))
    with pytest.raises(RUNTIME_ERRORS, match=r"max_steps|non-finite|step size"):
        jax.block_until_ready(
            ps.solve(problem, jnp.array([1.0]), jnp.asarray(1.0), **kw).ys
        )


def _stiff_rate(t, y, k):
    return -k * (y - jnp.cos(t))


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_with_one_failing_member_raises(backend):
    """vmap over three rates, one of them stiff for an explicit solver: with
    throw=True the batch raises, saying why; with throw=False only that member is NaN,
    and the others are right (y = cos-relaxation, checked against the closed form)."""
    problem = ps.ODEProblem(_stiff_rate, 0.0, 10.0)
    ks = jnp.array([1.0, 1000.0, 2.0])  # k = 1000 needs ~4000 explicit steps
    kw = dict(saveat=jnp.array([5.0, 10.0]), solver=explicit_solver(backend),
              backend=backend, max_steps=200, rtol=1e-8, atol=1e-10)

    def ys(k, throw):
        return ps.solve(problem, jnp.array([0.0]), k, throw=throw, **kw).ys

    with pytest.raises(RUNTIME_ERRORS, match=r"maximum number of solver steps"):
        jax.block_until_ready(jax.vmap(lambda k: ys(k, True))(ks))
    with pytest.raises(RUNTIME_ERRORS, match=r"maximum number of solver steps"):
        jax.block_until_ready(jax.jit(jax.vmap(lambda k: ys(k, True)))(ks))
    sol = jax.vmap(lambda k: ps.solve(problem, jnp.array([0.0]), k, throw=False,
                                      **kw))(ks)
    assert [bool(r) for r in sol.result == ps.RESULTS.successful] == [True, False, True]
    out = np.asarray(sol.ys)
    assert np.all(np.isnan(out[1]))
    # y' = -k (y - cos t), y(0) = 0: y = k (k cos t + sin t - k e^{-kt}) / (k^2 + 1).
    t = np.array([5.0, 10.0])
    for i in (0, 2):
        k = float(ks[i])
        exact = k * (k * np.cos(t) + np.sin(t) - k * np.exp(-k * t)) / (k**2 + 1)
        np.testing.assert_allclose(out[i, :, 0], exact, rtol=0, atol=1e-6)


def test_host_adjoint_failure_raises_under_throw():
    """The SciPy forward solve succeeds within max_steps, its adjoint does not: with
    throw=True the gradient raises the max-steps message (not a NaN gradient), with
    throw=False it is NaN."""
    problem = ps.ODEProblem(
        lambda t, y, p: jnp.stack([p[0] * y[0] - p[1] * y[0] * y[1],
                                   -p[2] * y[1] + p[3] * y[0] * y[1]]), 0.0, 5.0)
    y0, p = jnp.array([1.0, 1.0]), jnp.array([1.5, 1.0, 3.0, 1.0])
    kw = dict(saveat=jnp.array([0.5, 1.7, 3.0, 5.0]), backend="scipy", rtol=1e-10,
              atol=1e-10, sensitivity=ps.InterpolatingAdjoint())  # (None: forward mode)
    forward = ps.solve(problem, y0, p, **kw)
    # The smallest budget the forward solve fits in: the adjoint (the state, its
    # adjoint and the parameter integral, under one error control) needs more steps
    # than that (measured: 221 forward steps at these tolerances).
    kw["max_steps"] = int(forward.stats["num_steps"]) + 1
    sol = ps.solve(problem, y0, p, throw=False, **kw)
    assert bool(sol.result == ps.RESULTS.successful)
    np.testing.assert_array_equal(sol.ys, forward.ys)

    def loss(p, throw):
        return jnp.sum(ps.solve(problem, y0, p, throw=throw, **kw).ys ** 2)

    assert np.all(np.isnan(np.asarray(jax.grad(loss)(p, False))))
    with pytest.raises(RUNTIME_ERRORS, match=r"maximum number of solver steps"):
        jax.block_until_ready(jax.grad(loss)(p, True))
    with pytest.raises(RUNTIME_ERRORS, match=r"maximum number of solver steps"):
        jax.block_until_ready(jax.jit(jax.grad(loss), static_argnums=1)(p, True))

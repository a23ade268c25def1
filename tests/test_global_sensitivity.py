"""examples/global_sensitivity.py's pipeline (SALib's design, the chunked and sharded
`jit(vmap)` ensemble, SALib's Sobol' estimators) on models with known Sobol' indices,
and its Lotka--Volterra outputs against an independent SciPy computation.

Tolerances: the indices must lie inside SALib's own 95% bootstrap confidence intervals,
and those intervals must be narrower than a bound that makes the check mean something.
The bootstrap treats the design as i.i.d. Monte Carlo; the design is a scrambled Sobol'
sequence, whose errors are smaller (for Ishigami at N = 2048 over seeds 0-4 the largest
error was 0.007 against half-widths of 0.02-0.065; at N = 512 one index of seed 0 fell
outside its interval, which is why N is 2048 there).
"""

import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import BACKENDS
from scipy.integrate import solve_ivp
from test_examples import ROOT, load_example


@pytest.fixture(scope="module")
def gsa():
    return load_example("global_sensitivity")


def _check(Si, S1, ST, max_halfwidth):
    """Every index inside its 95% CI, and every CI narrower than `max_halfwidth`."""
    for key, exact in (("S1", S1), ("ST", ST)):
        est, conf = Si[key], Si[f"{key}_conf"]
        assert np.all(np.abs(est - exact) <= conf + 1e-12), (key, est, exact, conf)
        assert np.all(conf < max_halfwidth), (key, conf)


def test_ishigami(gsa):
    """Ishigami, a = 7, b = 0.1, x_i ~ U(-pi, pi): the analytic indices are
    S1 = (0.3139, 0.4424, 0) and ST = (0.5576, 0.4424, 0.2437) (Saltelli et al. 2008,
    Global Sensitivity Analysis: The Primer, 4.6)."""
    a, b = 7.0, 0.1
    V1 = 0.5 * (1 + b * np.pi**4 / 5) ** 2
    V2 = a**2 / 8
    V13 = b**2 * np.pi**8 * (1 / 18 - 1 / 50)
    V = V1 + V2 + V13
    S1 = np.array([V1, V2, 0.0]) / V
    ST = np.array([V1 + V13, V2, V13]) / V
    np.testing.assert_allclose(S1, [0.3139, 0.4424, 0.0], atol=1e-4)
    np.testing.assert_allclose(ST, [0.5576, 0.4424, 0.2437], atol=1e-4)

    def ishigami(x):
        return jnp.stack([jnp.sin(x[0]) + a * jnp.sin(x[1]) ** 2
                          + b * x[2] ** 4 * jnp.sin(x[0])])

    problem = gsa.salib_problem(("x1", "x2", "x3"), [(-np.pi, np.pi)] * 3)
    X = gsa.saltelli_design(problem, 2048, seed=0)
    Y = gsa.evaluate_ensemble(ishigami, X, chunk_size=3000, progress=False)
    assert Y.shape == (2048 * 5, 1)
    np.testing.assert_allclose(Y[:, 0], np.sin(X[:, 0]) + a * np.sin(X[:, 1]) ** 2
                               + b * X[:, 2] ** 4 * np.sin(X[:, 0]), rtol=1e-12)
    (Si,) = gsa.sobol_indices(problem, Y, seed=0)
    _check(Si, S1, ST, max_halfwidth=0.07)


# y' = -y + c . x, y(0) = 0: y(1) = (1 - 1/e) c . x, linear in independent uniform x,
# so S1_i = ST_i = c_i^2 Var(x_i) / sum_j c_j^2 Var(x_j).
LINEAR_C = np.array([4.0, -2.0, 1.0, 0.0])
LINEAR_BOUNDS = np.array([[0.0, 1.0], [-1.0, 1.5], [1.0, 3.0], [0.0, 3.0]])


def _linear_model(backend):
    import pysciml as ps

    ode = ps.ODEProblem(lambda t, y, p: -y + jnp.dot(p[0], p[1]), t0=0.0, t1=1.0)

    def model(x):
        return ps.solve(ode, jnp.zeros(1), (jnp.asarray(LINEAR_C), x),
                        saveat=jnp.array([1.0]), backend=backend,
                        rtol=1e-10, atol=1e-12).ys[-1]

    return model


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_ode(gsa, backend):
    var = LINEAR_C**2 * np.diff(LINEAR_BOUNDS, axis=1)[:, 0] ** 2 / 12
    exact = var / var.sum()  # 16/45, 25/45, 4/45, 0
    problem = gsa.salib_problem("abcd", LINEAR_BOUNDS)
    X = gsa.saltelli_design(problem, 512, seed=0)
    # 3072 solves in chunks of 1000: the last chunk is padded.
    Y = gsa.evaluate_ensemble(_linear_model(backend), X, chunk_size=1000,
                              shard=backend == "diffrax", progress=False)
    np.testing.assert_allclose(Y[:, 0], (1 - np.exp(-1)) * X @ LINEAR_C,
                               rtol=1e-8, atol=1e-9)
    (Si,) = gsa.sobol_indices(problem, Y, seed=0)
    _check(Si, exact, exact, max_halfwidth=0.1)
    # c_4 = 0: no influence (zero up to the roundoff of a stacked host solve, whose
    # steps depend on the other items of its chunk).
    assert abs(Si["S1"][3]) < 1e-12 and abs(Si["ST"][3]) < 1e-12


def _lv_reference(params, t1=20.0):
    """Peak predator and period from SciPy's DOP853 with events: prey maxima where
    x' = 0 falling, predator maxima where z' = 0 falling, located by SciPy's root
    finder on the dense output."""
    alpha, beta, gamma, delta = params

    def f(t, y):
        x, z = y
        return [alpha * x - beta * x * z, -gamma * z + delta * x * z]

    def prey_max(t, y):
        return f(t, y)[0]

    def pred_max(t, y):
        return f(t, y)[1]

    prey_max.direction = pred_max.direction = -1
    sol = solve_ivp(f, (0.0, t1), [1.0, 1.0], method="DOP853", rtol=1e-12,
                    atol=1e-12, events=[prey_max, pred_max])
    t_prey = sol.t_events[0]
    return sol.y_events[1][:, 1].max(), np.diff(t_prey).mean()


@pytest.mark.parametrize("backend", BACKENDS)
def test_lotka_volterra_outputs(gsa, backend):
    """The example's outputs at the centre and two corners of the parameter box."""
    import jax

    model = jax.jit(jax.vmap(gsa.make_outputs(backend, t1=20.0, num_save=2001,
                                              rtol=1e-8, atol=1e-10)))
    nominal = np.asarray(gsa.NOMINAL)
    params = np.stack([nominal, nominal * [0.8, 1.2, 0.8, 1.2],
                       nominal * [1.2, 0.8, 1.2, 0.8]])
    got = np.asarray(model(jnp.asarray(params)))
    want = np.array([_lv_reference(p) for p in params])
    # Measured: both within 4e-6 relative on both backends (save-grid spacing 0.01).
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_sharded_over_two_devices():
    """With two (forced CPU) devices, each chunk is split over both and the results
    are those of the closed form; the chunk size is rounded up to a multiple of 2."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        import jax, numpy as np
        jax.config.update("jax_enable_x64", True)
        assert len(jax.devices()) == 2, jax.devices()
        from test_examples import load_example
        from test_global_sensitivity import LINEAR_C, _linear_model
        gsa = load_example("global_sensitivity")
        placed, device_put = [], jax.device_put
        def recording_put(x, *a, **k):
            placed.append(device_put(x, *a, **k))
            return placed[-1]
        jax.device_put = recording_put
        X = np.random.default_rng(0).uniform(size=(37, 4))
        Y = gsa.evaluate_ensemble(_linear_model("diffrax"), X, chunk_size=15,
                                  progress=False)
        assert [x.shape for x in placed] == [(16, 4)] * 3, placed
        for x in placed:
            assert [s.data.shape for s in x.addressable_shards] == [(8, 4)] * 2
        np.testing.assert_allclose(Y[:, 0], (1 - np.exp(-1)) * X @ LINEAR_C,
                                   rtol=1e-8)
        print("ok")
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]

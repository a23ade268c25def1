"""NumPyro through `solve`: a failed solve (`throw=False`) is a rejected proposal, never
a crash; NUTS on a small Lotka--Volterra problem with wide priors recovers the truth."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from helpers import BACKENDS, LV_P, LV_Y0, default_solver, lotka_volterra
from numpyro.infer import MCMC, NUTS, init_to_value
from numpyro.infer.util import initialize_model

import pysciml as ps

TS = np.linspace(0.5, 5.0, 10)
SIGMA = 0.1
PROBLEM = ps.ODEProblem(lotka_volterra, 0.0, 5.0)
# LV at the true parameters takes well under 100 steps at rtol=1e-6 over [0, 5]; with
# max_steps=150, extreme draws from the wide prior fail (see test_prior_draws_fail).
MAX_STEPS = 150


def _solve(backend, p):
    return ps.solve(
        PROBLEM,
        jnp.asarray(LV_Y0),
        p,
        saveat=jnp.asarray(TS),
        solver=default_solver(backend),
        backend=backend,
        rtol=1e-6,
        atol=1e-8,
        max_steps=MAX_STEPS,
        throw=False,
    )


@pytest.fixture(scope="module")
def data():
    truth = ps.solve(
        PROBLEM,
        jnp.asarray(LV_Y0),
        jnp.asarray(LV_P),
        saveat=jnp.asarray(TS),
        rtol=1e-10,
        atol=1e-12,
    ).ys
    noise = SIGMA * np.random.default_rng(0).normal(size=truth.shape)
    return jnp.asarray(np.asarray(truth) + noise)


def _model(backend):
    def model(data=None):
        # Wide priors: the 95% interval of each parameter is [0.14, 7.1].
        p = numpyro.sample("p", dist.LogNormal(0.0, 1.0).expand([4]).to_event(1))
        ys = _solve(backend, p).ys  # NaN if the solve failed
        numpyro.sample("obs", dist.Normal(ys, SIGMA), obs=data)

    return model


def _failing_prior_draws(backend):
    draws = jnp.asarray(np.random.default_rng(1).lognormal(0.0, 1.0, size=(200, 4)))
    ok = jax.vmap(lambda p: _solve(backend, p).result == ps.RESULTS.successful)(draws)
    return draws[~np.asarray(ok)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_prior_draws_fail_softly(backend, data):
    """Some prior draws do fail (so the inference tests exercise the failure path), and
    a failing draw gives a non-finite potential and a gradient call that does not
    raise: NUTS rejects such a proposal instead of crashing."""
    bad = _failing_prior_draws(backend)
    assert bad.shape[0] >= 1
    sol = _solve(backend, bad[0])
    assert not bool(sol.result == ps.RESULTS.successful)
    assert np.all(np.isnan(np.asarray(sol.ys)))

    _, potential_fn, _, _ = initialize_model(
        jax.random.key(0), _model(backend), model_kwargs={"data": data}
    )
    # Jitted, as inside NUTS. (Eagerly, NumPyro's argument validation would reject the
    # NaN `loc` outright, which no sampler does.)
    potential_fn = jax.jit(potential_fn)
    u_bad = {"p": jnp.log(bad[0])}  # LogNormal: unconstrained space is log(p)
    assert not np.isfinite(float(potential_fn(u_bad)))
    jax.block_until_ready(jax.grad(potential_fn)(u_bad))  # must not raise
    u_true = {"p": jnp.log(jnp.asarray(LV_P))}
    assert np.isfinite(float(potential_fn(u_true)))
    g = jax.grad(potential_fn)(u_true)["p"]
    assert np.all(np.isfinite(np.asarray(g)))


def _run_nuts(backend, data, *, warmup, samples, depth, seed=0):
    kernel = NUTS(
        _model(backend),
        max_tree_depth=depth,
        # Start at the prior median. (From init_to_uniform, some seeds settle in the
        # spurious c, d -> 0 mode within 50 warmup steps; starting at the median, seeds
        # 0-3 all found the true mode.)
        init_strategy=init_to_value(values={"p": jnp.ones(4)}),
    )
    mcmc = MCMC(kernel, num_warmup=warmup, num_samples=samples, progress_bar=False)
    mcmc.run(jax.random.key(seed), data=data)
    return np.asarray(mcmc.get_samples()["p"])


def test_nuts_lotka_volterra_diffrax(data):
    samples = _run_nuts("diffrax", data, warmup=50, samples=50, depth=10)
    assert samples.shape == (50, 4)
    assert np.all(np.isfinite(samples))
    # Seeded, so deterministic. Across seeds 0-3 the posterior median was within 4% of
    # the truth [1.5, 1, 3, 1] in every component (the offset is the data noise,
    # sigma = 0.1 on 20 observations, plus Monte Carlo error of 50 draws); 15% allows
    # for platform-level floating-point differences in the chain's path.
    np.testing.assert_allclose(np.median(samples, axis=0), LV_P, rtol=0.15)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "diffrax"])
def test_nuts_smoke_host(backend, data):
    """Host backends pay a Python round trip per evaluation (~40 ms per leapfrog step
    here), so only a tiny run: it finishes and its samples are finite."""
    samples = _run_nuts(backend, data, warmup=10, samples=10, depth=3)
    assert samples.shape == (10, 4)
    assert np.all(np.isfinite(samples))


def test_auto_laplace_with_reverse_over_reverse_hessian():
    """NumPyro's AutoLaplaceApproximation with a jacrev(jacrev) Hessian runs through
    `solve` (DirectAdjoint) and matches the Laplace approximation computed here from the
    closed-form solution y(t) = 2 exp(-t/τ)."""
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoLaplaceApproximation

    ts = jnp.linspace(0.5, 3.0, 6)
    data = 2.0 * jnp.exp(-ts / 1.3) + 0.05 * jnp.array([0.3, -1.1, 0.4, 0.9, -0.2, 0.6])
    problem = ps.ODEProblem(lambda t, y, tau: -y / tau, 0.0, 3.0)

    def model(solve_fn):
        tau = numpyro.sample("tau", dist.LogNormal(0.0, 1.0))
        numpyro.sample("obs", dist.Normal(solve_fn(tau), 0.05), obs=data)

    def by_solve(tau):
        return ps.solve(problem, jnp.array([2.0]), tau, saveat=ts,
                        sensitivity=ps.DirectAdjoint(), rtol=1e-10, atol=1e-10,
                        max_steps=128).ys[:, 0]

    def exact(tau):
        return 2.0 * jnp.exp(-ts / tau)

    def laplace(solve_fn):
        guide = AutoLaplaceApproximation(
            model, hessian_fn=lambda f, x: jax.jacrev(jax.jacrev(f))(x))
        svi = SVI(model, guide, numpyro.optim.Adam(0.05), Trace_ELBO())
        result = svi.run(jax.random.key(0), 400, solve_fn, progress_bar=False)
        posterior = guide.get_posterior(result.params)
        return np.asarray(posterior.mean), np.asarray(posterior.covariance_matrix)

    mean, cov = laplace(by_solve)
    mean_ref, cov_ref = laplace(exact)
    assert np.all(np.isfinite(cov)) and cov[0, 0] > 0
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-6)
    np.testing.assert_allclose(cov, cov_ref, rtol=1e-5)

"""NumPyro SVI and NUTS on the SciPy backend run the same model code as on Diffrax, and
give the same posterior within Monte Carlo error."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal
from scipy.integrate import solve_ivp

import pysciml as ps

TRUE = {"alpha": 1.5, "gamma": 3.0}
TS = jnp.linspace(0.5, 5.0, 10)
Y0 = jnp.array([1.0, 1.0])
SIGMA = 0.1


def lotka_volterra(t, y, p):
    x, z = y[0], y[1]
    alpha, beta, gamma, delta = p
    return jnp.stack([alpha * x - beta * x * z, -gamma * z + delta * x * z])


PROBLEM = ps.ODEProblem(lotka_volterra, 0.0, 5.0)


def _data():
    # The clean trajectory from SciPy alone (not pysciml), so that recovering the
    # truth checks the model's likelihood, not only its consistency with itself.
    a, c = TRUE["alpha"], TRUE["gamma"]
    sol = solve_ivp(lambda t, y: [a * y[0] - y[0] * y[1], -c * y[1] + y[0] * y[1]],
                    (0.0, 5.0), np.asarray(Y0), t_eval=np.asarray(TS), method="DOP853",
                    rtol=1e-12, atol=1e-12)
    assert sol.success
    clean = jnp.asarray(sol.y.T)
    return clean + SIGMA * jax.random.normal(jax.random.key(42), clean.shape)


def model(data, backend):
    # The same model for every backend: only the `backend` string changes.
    alpha = numpyro.sample("alpha", dist.LogNormal(0.0, 1.0))
    gamma = numpyro.sample("gamma", dist.LogNormal(0.0, 1.0))
    sol = ps.solve(PROBLEM, Y0, (alpha, 1.0, gamma, 1.0), saveat=TS, backend=backend,
                   rtol=1e-7, atol=1e-9, throw=False)
    numpyro.sample("obs", dist.Normal(sol.ys, SIGMA), obs=data)


@pytest.fixture(scope="module")
def nuts_samples():
    data = _data()
    out = {}
    for backend in ("diffrax", "scipy"):
        mcmc = MCMC(NUTS(model), num_warmup=60, num_samples=100, progress_bar=False)
        mcmc.run(jax.random.key(0), data, backend)
        out[backend] = {k: np.asarray(v) for k, v in mcmc.get_samples().items()}
    return out


def test_nuts_scipy_matches_diffrax_within_monte_carlo_error(nuts_samples):
    for name in ("alpha", "gamma"):
        a, b = nuts_samples["diffrax"][name], nuts_samples["scipy"][name]
        assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))
        ess_a = effective_sample_size(a[None])
        ess_b = effective_sample_size(b[None])
        mcse = np.sqrt(a.var() / ess_a + b.var() / ess_b)
        # 4 standard errors of the difference of two independent-ish MC means.
        assert abs(a.mean() - b.mean()) < 4 * mcse + 1e-12, (name, a.mean(), b.mean())
        # Posterior recovery: the truth lies within 4 posterior sd of the mean.
        assert abs(b.mean() - TRUE[name]) < 4 * b.std(), (name, b.mean(), b.std())


def test_svi_autonormal_scipy_matches_diffrax():
    data = _data()
    results = {}
    for backend in ("diffrax", "scipy"):
        guide = AutoNormal(model, init_loc_fn=numpyro.infer.init_to_median)
        svi = SVI(model, guide, numpyro.optim.Adam(0.05), Trace_ELBO())
        run = svi.run(jax.random.key(1), 400, data, backend, progress_bar=False)
        results[backend] = guide.median(run.params)
        assert np.isfinite(run.losses[-1])
    for name in ("alpha", "gamma"):
        d, s = float(results["diffrax"][name]), float(results["scipy"][name])
        # Same seed, same ELBO samples: the two optimisations differ only by the
        # backends' gradient error (~rtol), amplified over 400 Adam steps.
        assert abs(d - s) < 1e-3 * abs(d), (name, d, s)
        assert abs(s - TRUE[name]) < 0.05 * TRUE[name], (name, s)

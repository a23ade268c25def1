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


def test_nuts_with_wide_priors_on_scipy_is_quiet(capfd, monkeypatch):
    """Wide priors send NUTS to parameters where the state overflows, or where the
    initial state itself is Inf: each such proposal is rejected through a NaN
    likelihood (`throw=False`), the chain finishes, and stderr stays free of
    tracebacks and warnings (it used to print SciPy's ValueError and NumPy's overflow
    warnings at every such proposal)."""
    from pysciml._backend.host import _callbacks

    nonfinite = []
    original = _callbacks._all_finite
    monkeypatch.setattr(_callbacks, "_all_finite", lambda *a: original(*a) or
                        nonfinite.append(1))
    data = _data()

    def wide(data):
        # exp of a Normal(0, 30) overflows to Inf once |draw| > 709.
        log_x0 = numpyro.sample("log_x0", dist.Normal(0.0, 30.0))
        alpha = numpyro.sample("alpha", dist.LogNormal(0.0, 30.0))
        gamma = numpyro.sample("gamma", dist.LogNormal(0.0, 1.0))
        y0 = jnp.stack([jnp.exp(log_x0), 1.0])
        sol = ps.solve(PROBLEM, y0, (alpha, 1.0, gamma, 1.0), saveat=TS,
                       backend="scipy", rtol=1e-6, atol=1e-8, max_steps=2000,
                       throw=False)
        numpyro.sample("obs", dist.Normal(sol.ys, SIGMA), obs=data)

    mcmc = MCMC(NUTS(wide, max_tree_depth=4), num_warmup=25, num_samples=10,
                progress_bar=False)
    mcmc.run(jax.random.key(3), data)
    samples = mcmc.get_samples()
    assert samples["alpha"].shape == (10,)
    assert np.all(np.isfinite(np.asarray(samples["alpha"])))
    # The run did meet non-finite inputs (else this test would prove nothing).
    assert nonfinite
    err = capfd.readouterr().err
    for word in ("Traceback", "Warning", "pysciml:"):
        assert word not in err, err


def test_laplace_approximation_with_its_default_hessian_on_scipy():
    """`AutoLaplaceApproximation` takes `jax.hessian` (forward over reverse) of the
    log density at the MAP: through a host solve that needs forward sensitivities,
    which `sensitivity=None` picks here (6 inputs). SciPy and Diffrax give the same
    MAP and the same Laplace covariance."""
    from numpyro.infer.autoguide import AutoLaplaceApproximation

    data = _data()
    out = {}
    for backend in ("diffrax", "scipy"):
        guide = AutoLaplaceApproximation(model, init_loc_fn=numpyro.infer.init_to_median)
        svi = SVI(model, guide, numpyro.optim.Adam(0.05), Trace_ELBO())
        run = svi.run(jax.random.key(1), 300, data, backend, progress_bar=False)
        transform = guide.get_transform(run.params)
        cov = transform.scale_tril @ transform.scale_tril.T
        out[backend] = (np.asarray(transform.loc), np.asarray(cov))
    (loc_d, cov_d), (loc_s, cov_s) = out["diffrax"], out["scipy"]
    assert np.all(np.isfinite(cov_s)) and np.all(np.linalg.eigvalsh(cov_s) > 0)
    # Same optimisation (same seed), differing only by solver error (~rtol): the MAP
    # and the inverse Hessian agree far inside the posterior width.
    np.testing.assert_allclose(loc_s, loc_d, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cov_s, cov_d, rtol=1e-3,
                               atol=1e-3 * np.max(np.abs(cov_d)))
    # And the MAP (unconstrained: log rates) recovers the truth within 4 sd.
    sd = np.sqrt(np.diag(cov_s))
    truth = np.log([TRUE["alpha"], TRUE["gamma"]])
    assert np.all(np.abs(loc_s - truth) < 4 * sd), (loc_s, truth, sd)

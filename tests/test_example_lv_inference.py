"""The numbers reported by the Lotka–Volterra inference examples:

- `examples/lotka_volterra_svi.py` (SVI, AutoNormal and AutoMultivariateNormal),
- `examples/lotka_volterra_nuts.py` (NUTS, dense mass, LogNormal noise, throw=False),
- `examples/hierarchical_lotka_volterra.py` (partial pooling, one vmapped solve, SVI).

Parameter recovery on synthetic data with a known truth (Diffrax backend), and agreement
of the SciPy backend with Diffrax: to solver tolerance for SVI with the same seed, within
Monte Carlo error for NUTS. The examples make their data with `ps.solve`, and fit them
with it; so that recovery is more than self-consistency, the noise-free trajectories
behind the data are checked against SciPy's `solve_ivp` here
(`test_synthetic_data_is_scipys_trajectory`).

Reference scale for the tolerances: with 20 observations of both species on (0, 5] and
10% multiplicative noise, NUTS gives posterior sds of about 2.5-5% of the truth for the
four rates and about 12% for sigma (measured with 300 warm-up + 500 samples: alpha
0.039, beta 0.048, gamma 0.090, delta 0.051, sigma 0.012).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC, NUTS
from scipy.integrate import solve_ivp
from test_examples import load_example

import pysciml as ps

SVI = load_example("lotka_volterra_svi")
NUTS_EX = load_example("lotka_volterra_nuts")
HIER = load_example("hierarchical_lotka_volterra")

RATES = ("alpha", "beta", "gamma", "delta")
# Relative tolerance of a point estimate against the truth: 10% for the rates (about 2-4
# posterior sds, see the module docstring), 30% for sigma (about 2.3 posterior sds).
REL_TOL = {"alpha": 0.10, "beta": 0.10, "gamma": 0.10, "delta": 0.10, "sigma": 0.30}


def _mc_agree(a, b):
    """|mean(a) - mean(b)| and 4 Monte Carlo standard errors of that difference, for
    two chains given as (chains, draws) arrays: 4 sqrt(var_a/ess_a + var_b/ess_b)."""
    a, b = np.asarray(a), np.asarray(b)
    se = np.sqrt(a.var() / effective_sample_size(a) + b.var() / effective_sample_size(b))
    return abs(a.mean() - b.mean()), 4 * se


def _lv_scipy(y0, p, ts):
    """Lotka-Volterra by SciPy alone (DOP853 at 1e-12)."""
    p = np.asarray(p, dtype=np.float64)
    sol = solve_ivp(lambda t, y: [p[0] * y[0] - p[1] * y[0] * y[1],
                                  -p[2] * y[1] + p[3] * y[0] * y[1]],
                    (0.0, float(ts[-1])), np.asarray(y0, dtype=np.float64),
                    t_eval=np.asarray(ts), method="DOP853", rtol=1e-12, atol=1e-12)
    assert sol.success
    return sol.y.T


@pytest.mark.parametrize("backend", ["diffrax", "scipy"])
def test_synthetic_data_is_scipys_trajectory(backend):
    """The noise-free trajectories behind each example's data (its default settings,
    seed 0), against SciPy. The examples solve at rtol=1e-6: measured within 2.0e-6
    (diffrax) and 8.8e-6 (scipy) of the largest value; the multiplicative noise is
    10%. 1e-4 is 11x the worst, and 1000x below the noise."""
    jax.config.update("jax_enable_x64", True)
    rates = [NUTS_EX.TRUTH[k] for k in RATES]

    def check(got, want):
        got, want = np.asarray(got), np.asarray(want)
        err = np.max(np.abs(got - want)) / np.max(np.abs(want))
        assert err < 1e-4, err

    # NUTS: its data function returns the noise-free trajectory.
    key_data = jax.random.split(jax.random.key(0))[0]
    ts, y0, _, y_true = NUTS_EX.synthetic_data(key_data, 20, 5.0, backend)
    check(y_true, _lv_scipy(y0, rates, ts))

    # SVI: obs = y_true * exp(sigma * N(0, 1) draws from its key).
    key_data = jax.random.split(jax.random.key(0), 4)[0]
    problem = ps.ODEProblem(SVI.lotka_volterra, t0=0.0, t1=5.0)
    ts, y0, obs = SVI.synthetic_data(problem, key_data, 20, 5.0, backend)
    noise = jax.random.normal(key_data, obs.shape)
    check(obs * jnp.exp(-SVI.TRUTH["sigma"] * noise), _lv_scipy(y0, rates, ts))

    # Hierarchical: each population's trajectory comes from `solve_populations` (also
    # the model's forward map), at that population's rates and y0.
    problem = ps.ODEProblem(HIER.lotka_volterra, t0=0.0, t1=5.0)
    ts, y0s, _, thetas = HIER.synthetic_data(problem, 0, 5, 20, 5.0, backend)
    ys = HIER.solve_populations(problem, y0s, jnp.asarray(thetas), ts, backend)
    for i in range(len(y0s)):
        check(ys[i], _lv_scipy(y0s[i], thetas[i], ts))


# --------------------------------------------------------------------------------------
# SVI
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def svi_diffrax():
    return SVI.main(["--guide", "both", "--steps", "1500", "--num-predictive", "20",
                     "--backend", "diffrax"])


@pytest.mark.parametrize("guide", ["normal", "mvn"])
def test_svi_recovers_truth(svi_diffrax, guide):
    out = svi_diffrax["guides"][guide]
    truth = svi_diffrax["truth"]
    for k in truth:
        mean, sd = out["means"][k], out["sds"][k]
        assert np.isfinite(mean) and sd > 0, (k, mean, sd)
        assert abs(mean - truth[k]) < REL_TOL[k] * truth[k], (guide, k, mean, truth[k])
        if guide == "mvn":
            # The full-rank guide captures the strong correlations between the rates,
            # so its sds are a fair picture of the posterior: the truth lies within 4.
            # (Mean-field AutoNormal sds are several times too small, e.g. 0.0065 for
            # alpha against NUTS's 0.04, so no such check is made for it.)
            assert abs(mean - truth[k]) < 4 * sd, (k, mean, sd, truth[k])
    # Predictive bands come from finite solves, and bracket their median.
    band = out["band"]
    assert np.all(np.isfinite(band)) and np.all(band[0] <= band[1] + 1e-12)
    assert np.all(band[1] <= band[2] + 1e-12)


def test_svi_scipy_matches_diffrax_same_seed():
    args = ["--guide", "both", "--steps", "200", "--num-predictive", "10",
            "--num-draws", "1000"]
    d = SVI.main([*args, "--backend", "diffrax"])["guides"]
    s = SVI.main([*args, "--backend", "scipy"])["guides"]
    for guide in ("normal", "mvn"):
        for k in SVI.NAMES:
            for stat in ("means", "sds"):
                a, b = d[guide][stat][k], s[guide][stat][k]
                # Same seed: the same ELBO draws and the same guide samples, so the
                # two runs differ only through the solvers' error (rtol 1e-6: Tsit5 on
                # Diffrax, Dopri5 on SciPy) in the loss and its gradient. Measured
                # relative differences ~1e-6 after 200-300 Adam steps; the bound 1e-4
                # leaves 100x for amplification and is still ~300x below the posterior
                # sd relative to the mean (~3%).
                assert abs(a - b) <= 1e-4 * abs(a), (guide, stat, k, a, b)


# --------------------------------------------------------------------------------------
# NUTS
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nuts_diffrax():
    return NUTS_EX.main(["--num-warmup", "300", "--num-samples", "500",
                         "--backend", "diffrax"])


def test_nuts_recovers_truth(nuts_diffrax):
    out = nuts_diffrax
    for k, true in out["truth"].items():
        x = out["samples"][k]
        assert np.all(np.isfinite(x)), k
        mean, sd = x.mean(), x.std()
        # A calibrated posterior holds the truth within 4 sd (fails by chance with
        # probability ~6e-5 per parameter).
        assert abs(mean - true) < 4 * sd, (k, mean, sd, true)
        assert abs(mean - true) < REL_TOL[k] * true, (k, mean, true)
        # Enough effective samples for the comparison to mean something.
        assert out["n_eff"][k] > 50, (k, out["n_eff"][k])


def test_nuts_chain_survives_failed_solves_diffrax(nuts_diffrax):
    # Wide priors make early warm-up proposals fail to solve (measured: 3 at seed 0);
    # each is a NaN likelihood, rejected, and the chain carries on to finite samples.
    assert nuts_diffrax["failed_solves"] >= 1
    assert all(np.all(np.isfinite(v)) for v in nuts_diffrax["samples"].values())


def test_nuts_chain_survives_failed_solves_scipy():
    out = NUTS_EX.main([*NUTS_EX.TINY_ARGS, "--backend", "scipy"])
    assert out["failed_solves"] >= 1, out["failed_solves"]
    assert all(np.all(np.isfinite(v)) for v in out["samples"].values())


def _sample_adapted(backend, state, data, num_samples, seed):
    """NUTS sampling (no warm-up) with the step size and dense inverse mass matrix
    adapted on Diffrax, started at the adapted chain's last position."""
    kernel = NUTS(NUTS_EX.make_model(backend), dense_mass=True,
                  step_size=state.adapt_state.step_size,
                  inverse_mass_matrix=state.adapt_state.inverse_mass_matrix,
                  adapt_step_size=False, adapt_mass_matrix=False)
    mcmc = MCMC(kernel, num_warmup=0, num_samples=num_samples, progress_bar=False)
    mcmc.run(jax.random.key(seed), *data, init_params=state.z)
    return {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}


def test_nuts_scipy_matches_diffrax_within_mc_error_fast(nuts_diffrax):
    """Fast variant: the same adapted kernel samples on both backends (a SciPy warm-up
    would cost minutes); the means agree within Monte Carlo error."""
    state, data = nuts_diffrax["last_state"], nuts_diffrax["data"]
    d = _sample_adapted("diffrax", state, data, 120, seed=7)
    s = _sample_adapted("scipy", state, data, 120, seed=7)
    for k in NUTS_EX.NAMES:
        assert np.all(np.isfinite(s[k])) and np.all(np.isfinite(d[k])), k
        diff, bound = _mc_agree(d[k], s[k])
        # 4 MC standard errors of the difference of the means (the two chains share
        # their start and random numbers, which only makes the difference smaller).
        assert diff < bound, (k, d[k].mean(), s[k].mean(), bound)


@pytest.mark.slow
def test_nuts_scipy_matches_diffrax_within_mc_error(nuts_diffrax):
    """The full example on SciPy (own warm-up) against the Diffrax run: independent
    adaptations, the posterior means agree within 4 MC standard errors."""
    s = NUTS_EX.main(["--num-warmup", "300", "--num-samples", "500",
                      "--backend", "scipy"])
    for k in NUTS_EX.NAMES:
        diff, bound = _mc_agree(nuts_diffrax["samples_by_chain"][k],
                                s["samples_by_chain"][k])
        assert diff < bound, (k, diff, bound)


# --------------------------------------------------------------------------------------
# Hierarchical
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hier_diffrax():
    return HIER.main(["--populations", "5", "--steps", "1500", "--num-draws", "1000",
                      "--backend", "diffrax"])


def test_hierarchical_recovers_population_means(hier_diffrax):
    out = hier_diffrax
    mu, mu_sd = out["mu_mean"], out["mu_sd"]
    # Five populations can only reveal the mean of their own log-rates (the "empirical"
    # mu), which differs from the true mu by ~tau/sqrt(5) = 0.09. Each population's log
    # rates are determined to ~0.03-0.06 by its 20 noisy observations, so their mean to
    # ~0.02-0.03: 0.08 on the log scale (8%) is about 3 of those.
    np.testing.assert_array_less(np.abs(mu - out["empirical_mu"]), 0.08)
    # Against the true mu, the posterior sd (~0.04-0.1, it includes the tau/sqrt(P)
    # spread) sets the scale: within 3 sd.
    np.testing.assert_array_less(np.abs(mu - out["true_mu"]), 3 * mu_sd)
    assert abs(out["sigma_mean"] - 0.1) < REL_TOL["sigma"] * 0.1
    # Per population: every rate within 20% of its truth (about 2-4 posterior sds of a
    # single population's rate, which is less well determined than the pooled one).
    rel = np.abs(out["theta_mean"] / out["true_thetas"] - 1.0)
    assert np.all(rel < 0.20), rel


@pytest.mark.parametrize("backend", ["diffrax", "scipy"])
def test_hierarchical_vmapped_solve_equals_loop(backend):
    jax.config.update("jax_enable_x64", True)
    problem = ps.ODEProblem(HIER.lotka_volterra, t0=0.0, t1=5.0)
    ts, y0s, _, thetas = HIER.synthetic_data(problem, 3, 4, 12, 5.0, backend)
    thetas = jnp.asarray(thetas)
    # On SciPy the vmapped solve is one stacked system by default (`host/_stacked.py`:
    # shared steps at rtol/sqrt(B)); `batch_mode="loop"` solves item by item.
    by_item = ps.ScipyBackend(batch_mode="loop") if backend == "scipy" else backend
    batched = np.asarray(HIER.solve_populations(problem, y0s, thetas, ts, by_item))
    loop = np.stack([
        np.asarray(ps.solve(problem, y0s[i], thetas[i], saveat=ts, backend=backend,
                            throw=False).ys)
        for i in range(len(y0s))
    ])
    assert np.all(np.isfinite(loop))
    # The same solver on the same inputs: vmap only batches them (per-item step-size
    # control on Diffrax; an item-by-item host loop on SciPy), so the results agree to
    # rounding.
    np.testing.assert_allclose(batched, loop, rtol=0, atol=1e-10)
    if backend == "scipy":
        # Stacked: other steps, at a tighter tolerance; rtol = 1e-6 here, and the
        # global error of RK45 on these populations is ~1e-5 relative.
        stacked = np.asarray(HIER.solve_populations(problem, y0s, thetas, ts, backend))
        np.testing.assert_allclose(stacked, loop, rtol=1e-4, atol=1e-6)

    # And the gradient through the vmapped solve equals the per-population gradients.
    def loss_batched(th, backend=by_item):
        return jnp.sum(HIER.solve_populations(problem, y0s, th, ts, backend) ** 2)

    def loss_one(th, i):
        return jnp.sum(ps.solve(problem, y0s[i], th, saveat=ts, backend=backend).ys ** 2)

    g_batched = np.asarray(jax.grad(loss_batched)(thetas))
    g_loop = np.stack([np.asarray(jax.grad(loss_one)(thetas[i], i))
                       for i in range(len(y0s))])
    np.testing.assert_allclose(g_batched, g_loop, rtol=1e-10, atol=1e-10)
    if backend == "scipy":
        g_stacked = np.asarray(jax.grad(lambda th: loss_batched(th, backend))(thetas))
        np.testing.assert_allclose(g_stacked, g_loop, rtol=1e-3,
                                   atol=1e-3 * np.abs(g_loop).max())

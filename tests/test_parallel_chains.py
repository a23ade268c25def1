"""NumPyro chains in parallel (`chain_method="parallel"`: one chain per device, through
`jax.pmap`) on every backend: the same posterior as sequential chains, and both equal to
the exact posterior, computed here by quadrature on the closed form of the model.

The child process (`parallel_chains_child.py`) runs both chain methods with 2 forced
CPU devices and prints the draws; the comparisons are here.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import json_of
from numpyro.diagnostics import effective_sample_size

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import parallel_chains_child as child  # noqa: E402


def _run_child(backend: str, timeout: float = 600) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE.parent)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("JAX_PLATFORMS", "cpu")
    proc = subprocess.run([sys.executable, str(HERE / "parallel_chains_child.py"),
                           backend], capture_output=True, text=True, timeout=timeout,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json_of(proc.stdout, proc.stderr)


def _exact_posterior():
    """Mean and sd of k under the prior LogNormal(0, 0.5) and the Gaussian likelihood
    of the closed form exp(-k t), by quadrature on a fine grid (the posterior sd is
    0.048, the grid [0.3, 1.3] spans +-12 sd, in steps of 1e-5)."""
    k = np.linspace(0.3, 1.3, 100_001)
    log_prior = (-np.log(k) - (np.log(k) - child.PRIOR_LOC) ** 2
                 / (2 * child.PRIOR_SCALE ** 2))
    resid = child.OBS[None, :] - np.exp(-k[:, None] * child.TS[None, :])
    log_post = log_prior - 0.5 * np.sum(resid ** 2, axis=1) / child.SIGMA ** 2
    w = np.exp(log_post - log_post.max())
    w /= w.sum()
    mean = np.sum(w * k)
    return mean, np.sqrt(np.sum(w * (k - mean) ** 2))


def _mean_and_mcse(draws: np.ndarray):
    """Posterior mean over all chains and its Monte Carlo standard error,
    sd / sqrt(ESS), with numpyro's multi-chain effective sample size."""
    ess = float(effective_sample_size(draws))
    return draws.mean(), draws.std() / np.sqrt(ess), ess


@pytest.mark.parametrize("backend", ["diffrax", "scipy"])
def test_parallel_chains_same_posterior_as_sequential(backend):
    out = _run_child(backend)
    mean, sd = _exact_posterior()
    stats = {}
    for method in ("sequential", "parallel"):
        assert out[method]["chain_method"] == method
        draws = np.asarray(out[method]["draws"])
        assert draws.shape == (child.NUM_CHAINS, child.NUM_SAMPLES)
        m, mcse, ess = _mean_and_mcse(draws)
        assert ess > 100, f"{method}: ESS {ess:.0f}: the chains did not mix"
        # Each chain method against the exact posterior: the mean within 4 MCSE, the
        # sd within 20% (the sd's relative Monte Carlo error at ESS > 100 is < 7%).
        assert abs(m - mean) < 4 * mcse, (method, m, mean, mcse)
        assert abs(draws.std() / sd - 1) < 0.2, (method, draws.std(), sd)
        stats[method] = (m, mcse)
    # And against each other, within their joint Monte Carlo error. (With the same key,
    # each parallel chain follows its sequential twin; any difference comes from
    # rounding in the two compilations, amplified along the chain.)
    (m_s, e_s), (m_p, e_p) = stats["sequential"], stats["parallel"]
    assert abs(m_s - m_p) < 4 * np.hypot(e_s, e_p), stats
    print(f"{backend}: exact mean {mean:.5f} sd {sd:.5f}; sequential {m_s:.5f} "
          f"({out['sequential']['seconds']:.1f} s), parallel {m_p:.5f} "
          f"({out['parallel']['seconds']:.1f} s); max |draw difference| "
          f"{np.max(np.abs(np.subtract(out['sequential']['draws'], out['parallel']['draws']))):.2e}")

"""The child process of `test_parallel_chains.py`: NUTS on a one-parameter decay model,
2 chains, `chain_method="sequential"` and `"parallel"` (one chain per CPU device, 2
forced devices), on one backend. Prints one JSON line: each run's draws by chain, its
wall time, and the number of chains numpyro actually ran in parallel.

    python parallel_chains_child.py BACKEND

JAX fixes its device count at start-up, hence a child process.
"""

import json
import os
import sys
import time
import warnings

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS, init_to_median  # noqa: E402

jax.config.update("jax_enable_x64", True)

import pysciml as ps  # noqa: E402

# y' = -k y, y(0) = 1: y(t) = exp(-k t). The parent knows the same numbers and computes
# the exact posterior of k by quadrature on the closed form.
TS = np.array([0.25, 0.5, 1.0, 1.5, 2.0, 3.0])
K_TRUE, SIGMA = 0.7, 0.05
NOISE = np.array([0.9, -1.3, 0.4, 1.1, -0.2, -0.8])  # fixed draws: data known exactly
OBS = np.exp(-K_TRUE * TS) + SIGMA * NOISE
PRIOR_LOC, PRIOR_SCALE = 0.0, 0.5  # k ~ LogNormal(0, 0.5)
NUM_WARMUP, NUM_SAMPLES, NUM_CHAINS = 150, 300, 2


def decay(t, y, k):
    return -k * y


PROBLEM = ps.ODEProblem(decay, 0.0, float(TS[-1]))


def model(backend, obs):
    k = numpyro.sample("k", dist.LogNormal(PRIOR_LOC, PRIOR_SCALE))
    sol = ps.solve(PROBLEM, jnp.ones(1), k, saveat=jnp.asarray(TS), backend=backend,
                   rtol=1e-8, atol=1e-10, throw=False)
    numpyro.sample("obs", dist.Normal(sol.ys[:, 0], SIGMA), obs=obs)


def run(backend, method):
    mcmc = MCMC(NUTS(model, init_strategy=init_to_median), num_warmup=NUM_WARMUP,
                num_samples=NUM_SAMPLES, num_chains=NUM_CHAINS, chain_method=method,
                progress_bar=False)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # numpyro falls back to sequential chains, with a warning, when there are
        # fewer devices than chains: that must not pass for a parallel run.
        warnings.simplefilter("error", UserWarning)
        mcmc.run(jax.random.key(3), backend, jnp.asarray(OBS))
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["k"])  # waits for them
    return {"draws": draws.tolist(), "seconds": time.perf_counter() - start,
            "chain_method": mcmc.chain_method}


def main():
    backend = sys.argv[1]
    assert jax.local_device_count() == 2, jax.devices()
    out = {method: run(backend, method) for method in ("sequential", "parallel")}
    print("JSON:" + json.dumps(out))


if __name__ == "__main__":
    main()

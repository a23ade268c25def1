"""The method-of-lines examples recover their parameters (`examples/heat_equation_inverse.py`,
`examples/reaction_diffusion.py`): the numbers each one reports, against the truth it
generated its synthetic data from."""

import numpy as np
import pytest
from test_examples import load_example


def test_heat_inverse_recovers_the_diffusivity_within_1_percent():
    heat = load_example("heat_equation_inverse")
    r = heat.main(["--backend", "scipy", "--n", "24", "--snapshots", "4",
                   "--num-warmup", "10", "--num-samples", "15", "--max-tree-depth", "3"])
    assert r["D_gd_rel_error"] < 0.01
    assert abs(r["D_nuts_mean"] - r["D_true"]) < 0.01 * r["D_true"]
    # The posterior is consistent with the truth, and tight (noise 0.01 on 96 points).
    assert abs(r["D_nuts_mean"] - r["D_true"]) < 4 * r["D_nuts_sd"] + 1e-3
    assert r["D_nuts_sd"] < 0.01


@pytest.mark.slow
def test_heat_inverse_with_the_initial_condition_on_diffrax():
    """Inferring the initial condition too widens the posterior of D (sd ~0.9% here),
    so the check is against the posterior's own width."""
    heat = load_example("heat_equation_inverse")
    r = heat.main(["--backend", "diffrax", "--n", "32", "--snapshots", "4",
                   "--infer-ic", "--num-warmup", "60", "--num-samples", "60",
                   "--max-tree-depth", "5"])
    sd = r["D_nuts_sd"]
    assert sd < 0.02 * r["D_true"]
    assert abs(r["D_gd_rel_error"] * r["D_true"]) < 3 * sd
    assert abs(r["D_nuts_mean"] - r["D_true"]) < 3 * sd
    a = r["samples"]["a"]
    assert np.all(np.abs(a.mean(0) - np.asarray(heat.A_TRUE)) < 3 * a.std(0) + 1e-3)


def test_heat_inverse_gradient_descent_with_the_initial_condition():
    heat = load_example("heat_equation_inverse")
    r = heat.main(["--backend", "scipy", "--n", "24", "--snapshots", "4", "--infer-ic",
                   "--num-warmup", "3", "--num-samples", "3", "--max-tree-depth", "2"])
    # With the initial condition unknown too, D is determined to ~1% (1 sd), and the
    # third mode, decayed to ~10% by the first snapshot, to ~0.02.
    assert r["D_gd_rel_error"] < 0.03
    np.testing.assert_allclose(r["a_gd"], heat.A_TRUE, atol=0.06)


def test_reaction_diffusion_recovers_both_rates():
    rd = load_example("reaction_diffusion")
    r = rd.main(["--backend", "scipy", "--n", "64", "--snapshots", "5"])
    for k in ("D", "r"):
        assert r["rel_error"][k] < 0.02, r["fit"]
    # The front moves at close to (a little below) its asymptotic speed 2 sqrt(rD).
    assert 0.85 * r["asymptotic_speed"] < r["front_speed"] < r["asymptotic_speed"]

"""float32 with x64 off, as a user without `jax_enable_x64` runs pysciml.

`conftest.py` turns x64 on for the whole session, so these checks run in a child
process that never turns it on: a representative subset of the core, host and NumPyro
paths (values, dtypes, `vmap`, `jit`, gradients, the SciPy backend, SVI). The child
only computes and reports; the references are computed here, in float64, by SciPy and
closed forms, and the tolerances are float32's.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
from scipy.integrate import solve_ivp
from scipy.optimize import minimize_scalar

CHILD = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    import numpyro, numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO, init_to_value
    from numpyro.infer.autoguide import AutoDelta
    import pysciml as ps

    out = {"x64_after_import": bool(jax.config.jax_enable_x64)}

    def lv(t, y, p):
        return jnp.stack([p[0] * y[0] - p[1] * y[0] * y[1],
                          -p[2] * y[1] + p[3] * y[0] * y[1]])

    problem = ps.ODEProblem(lv, 0.0, 5.0)
    ts = jnp.linspace(0.5, 5.0, 10)
    y0 = jnp.array([1.0, 1.0])
    P = jnp.array(PARAMS)
    for backend in ("diffrax", "scipy"):
        def ys(p, rtol=1e-6, backend=backend):
            return ps.solve(problem, y0, p, saveat=ts, backend=backend, rtol=rtol,
                            atol=rtol / 100).ys

        values = jax.vmap(ys)(P)
        grads = jax.jit(jax.vmap(jax.grad(lambda p: jnp.sum(ys(p) ** 2))))(P)
        out[backend] = {"ys": np.asarray(values).tolist(), "ys_dtype": str(values.dtype),
                        "grad": np.asarray(grads).tolist(),
                        "grad_dtype": str(grads.dtype)}
    tight = ps.solve(problem, y0, P[0], saveat=ts, backend="scipy", rtol=1e-10,
                     atol=1e-12).ys
    out["scipy_tight"] = np.asarray(tight).tolist()

    # NumPyro SVI on the SciPy backend: a MAP estimate (AutoDelta) of tau in
    # y' = -y/tau, y(0) = 2, observed with noise sd 0.05.
    dts = jnp.linspace(0.5, 3.0, 6)
    data = 2.0 * jnp.exp(-dts / 1.3) + 0.05 * jnp.array([0.3, -1.1, 0.4, 0.9, -0.2, 0.6])
    decay = ps.ODEProblem(lambda t, y, tau: -y / tau, 0.0, 3.0)

    def model():
        tau = numpyro.sample("tau", dist.Normal(1.0, 1.0))
        y = ps.solve(decay, jnp.array([2.0]), tau, saveat=dts, backend="scipy").ys
        numpyro.sample("obs", dist.Normal(y[:, 0], 0.05), obs=data)

    guide = AutoDelta(model, init_loc_fn=init_to_value(values={"tau": 1.0}))
    svi = SVI(model, guide, numpyro.optim.Adam(0.01), Trace_ELBO())
    run = svi.run(jax.random.key(0), 300, progress_bar=False)
    tau = guide.median(run.params)["tau"]
    out["svi"] = {"data": np.asarray(data, np.float64).tolist(), "tau": float(tau),
                  "tau_dtype": str(tau.dtype), "first_loss": float(run.losses[0]),
                  "last_loss": float(run.losses[-1]),
                  "loss_dtype": str(run.losses.dtype)}
    out["x64_at_exit"] = bool(jax.config.jax_enable_x64)
    print(json.dumps(out))
""")

PARAMS = [[1.5, 1.0, 3.0, 1.0], [1.2, 0.9, 2.5, 1.1], [1.0, 1.3, 2.0, 0.8]]
TS = np.linspace(0.5, 5.0, 10)  # exactly representable in float32, as are PARAMS


def _lv_scipy(p):
    sol = solve_ivp(lambda t, y: [p[0] * y[0] - p[1] * y[0] * y[1],
                                  -p[2] * y[1] + p[3] * y[0] * y[1]],
                    (0.0, 5.0), [1.0, 1.0], t_eval=TS, method="DOP853", rtol=1e-13,
                    atol=1e-13)
    assert sol.success
    return sol.y.T


def _grad_scipy(p, h=1e-6):
    """Central differences of sum(ys^2) on the SciPy solution: truncation ~h^2, and
    the solves' 1e-13 error over 2h: ~1e-7 relative."""
    p = np.asarray(p)
    return np.array([(np.sum(_lv_scipy(p + e) ** 2) - np.sum(_lv_scipy(p - e) ** 2))
                     / (2 * h) for e in h * np.eye(4)])


def _rel(a, b):
    """Largest error relative to the largest reference value."""
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def test_float32_with_x64_off():
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD.replace("PARAMS", repr(PARAMS))],
        capture_output=True, text=True, timeout=300, env=env)
    assert child.returncode == 0, child.stderr[-4000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    # pysciml changes no global setting.
    assert out["x64_after_import"] is False and out["x64_at_exit"] is False

    ys_ref = np.stack([_lv_scipy(p) for p in PARAMS])
    grad_ref = np.stack([_grad_scipy(p) for p in PARAMS])
    for backend in ("diffrax", "scipy"):
        got = out[backend]
        # float32 in, float32 out, for values and gradients, through vmap and jit.
        assert got["ys_dtype"] == "float32" and got["grad_dtype"] == "float32", got
        # rtol=1e-6 (atol=1e-8). Measured, relative to the largest value: values
        # 1.6e-6 (diffrax) and 3.5e-6 (scipy), gradients 3.3e-6 and 7.5e-6. The bounds
        # are 6x the worst; a value or gradient computed in lower precision, or a
        # wrong batch member, fails them.
        assert _rel(got["ys"], ys_ref) < 2e-5, (backend, _rel(got["ys"], ys_ref))
        assert _rel(got["grad"], grad_ref) < 5e-5, (backend,
                                                    _rel(got["grad"], grad_ref))

    # The SciPy backend computes in float64 on the host: at rtol=1e-10 its float32
    # output is exact to float32 rounding (measured 4.6e-8 of the largest value; the
    # rounding of a float32 output is at most 6e-8), which no integration in float32
    # reaches (Diffrax in float32 gets ~1e-6, and runs out of steps at rtol=1e-10).
    assert _rel(out["scipy_tight"], ys_ref[0]) < 2e-7, _rel(out["scipy_tight"],
                                                            ys_ref[0])

    # NumPyro SVI in float32 through a host solve finds the MAP estimate, computed here
    # from the closed form y = 2 exp(-t/tau) by Brent's method on the same (float32)
    # data; its final loss is the negative log joint density there.
    svi = out["svi"]
    assert svi["tau_dtype"] == "float32" and svi["loss_dtype"] == "float32", svi
    dts, data = np.linspace(0.5, 3.0, 6), np.asarray(svi["data"])

    def neg_log_joint(tau):
        resid = (data - 2.0 * np.exp(-dts / tau)) / 0.05
        return (0.5 * (tau - 1.0) ** 2 + 0.5 * np.sum(resid**2)
                + 7 * 0.5 * np.log(2 * np.pi) + 6 * np.log(0.05))

    tau_map = minimize_scalar(neg_log_joint, bracket=(1.0, 1.5), tol=1e-12).x
    # Measured: tau within 7e-8 relative of the MAP (float32 rounding) after 500
    # steps; 300 steps at lr 0.01 are enough to cross 1.0 -> 1.31. 1e-5 leaves room
    # for Adam's last oscillations; a wrong likelihood moves the MAP by far more.
    np.testing.assert_allclose(svi["tau"], tau_map, rtol=1e-5)
    # The loss falls from its value at tau = 1 to the minimum of the negative log
    # joint (about -10.2; float32 rounding of sums of ~10 terms: 1e-5 relative).
    np.testing.assert_allclose(svi["first_loss"], neg_log_joint(1.0), rtol=1e-5)
    np.testing.assert_allclose(svi["last_loss"], neg_log_joint(tau_map), rtol=1e-5,
                               atol=1e-5)

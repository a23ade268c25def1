"""The host thread, driven by the SciPy backend: every host-solver call runs on
pysciml's one host thread, under `jit`, `grad`, `vmap`, an XLA worker thread and
NumPyro NUTS, and JAX nested inside the callback does not deadlock. Everything here
also holds for the Julia backend."""

import subprocess
import sys
import textwrap
import threading

import jax
import jax.numpy as jnp

import pysciml as ps
from pysciml._backend import scipy as scipy_backend
from pysciml._backend.host import HostThread


def lotka_volterra(t, y, p):
    x, z = y[0], y[1]
    return jnp.stack([p[0] * x - p[1] * x * z, -p[2] * z + p[3] * x * z])


def decay(t, y, tau):
    return -y / tau


def _record_threads(monkeypatch):
    """Records, for every host-solver run, the thread it ran on."""
    seen = []
    original = scipy_backend._forward, scipy_backend._backward

    def forward(*args, **kwargs):
        seen.append(threading.current_thread())
        return original[0](*args, **kwargs)

    def backward(*args, **kwargs):
        seen.append(threading.current_thread())
        return original[1](*args, **kwargs)

    monkeypatch.setattr(scipy_backend, "_forward", forward)
    monkeypatch.setattr(scipy_backend, "_backward", backward)
    return seen


def test_host_solver_always_runs_on_the_host_thread(monkeypatch):
    seen = _record_threads(monkeypatch)
    problem = ps.ODEProblem(lotka_volterra, 0.0, 2.0)
    ts = jnp.linspace(0.0, 2.0, 4)
    y0 = jnp.array([1.0, 1.0])
    p = jnp.array([1.5, 1.0, 3.0, 1.0])

    def loss(p):
        return jnp.sum(ps.solve(problem, y0, p, saveat=ts, backend="scipy").ys)

    jax.jit(loss)(p)
    jax.grad(loss)(p)
    jax.jit(jax.vmap(jax.grad(loss)))(jnp.stack([p, p * 1.1]))

    # A vmapped loop with independent work beside the callback: here XLA runs the
    # callback on one of its own worker threads (observed with jax 0.10); the host
    # solve must still run on the host thread.
    a = jnp.eye(400) * 0.999

    @jax.jit
    @jax.vmap
    def busy(p):
        def body(i, carry):
            return carry + loss(p * (1 + 0.01 * i)) + jnp.sum(a @ a) * 1e-9
        return jax.lax.fori_loop(0, 3, body, 0.0)

    busy(jnp.stack([p, p * 1.05, p * 0.95, p * 1.02]))
    # Host solves recorded: jit, grad, then vmaps whose items share their save times,
    # each one stacked solve (`host/_stacked.py`), not one per item.
    assert len(seen) >= 6
    assert {t.name for t in seen} == {"pysciml-host"}
    assert all(t is HostThread.thread() for t in seen)
    assert threading.current_thread() is threading.main_thread()


def test_host_thread_inside_numpyro_nuts(monkeypatch):
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    seen = _record_threads(monkeypatch)
    problem = ps.ODEProblem(decay, 0.0, 2.0)
    ts = jnp.linspace(0.5, 2.0, 4)
    data = 2.0 * jnp.exp(-ts / 1.3)[:, None]

    def model():
        tau = numpyro.sample("tau", dist.LogNormal(0.0, 0.5))
        sol = ps.solve(problem, jnp.array([2.0]), tau, saveat=ts, backend="scipy",
                       throw=False)
        numpyro.sample("obs", dist.Normal(sol.ys, 0.05), obs=data)

    mcmc = MCMC(NUTS(model), num_warmup=20, num_samples=20, progress_bar=False)
    mcmc.run(jax.random.key(0))
    assert len(seen) > 20
    assert {t.name for t in seen} == {"pysciml-host"}
    tau = mcmc.get_samples()["tau"]
    assert abs(float(jnp.median(tau)) - 1.3) < 0.1  # sd of the posterior is ~0.02


def test_nested_jax_inside_the_callback_does_not_deadlock():
    """The host thread calls jitted JAX (the vector field and its VJPs) from inside a
    pure_callback; here the vector field itself also holds a pure_callback, and the
    whole is vmapped and differentiated. Run in a subprocess with a timeout, so that a
    deadlock fails the test instead of hanging the suite."""
    code = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np, pysciml as ps
        jax.config.update("jax_enable_x64", True)
        def inner(y):
            return np.asarray(y) * 1.0
        @jax.custom_jvp
        def identity(y):  # a pure_callback inside the vector field itself
            return jax.pure_callback(inner, jax.ShapeDtypeStruct(y.shape, y.dtype), y,
                                     vmap_method="sequential")
        identity.defjvp(lambda primals, tangents: (identity(*primals), tangents[0]))
        def f(t, y, k):
            return -k * identity(y)
        prob = ps.ODEProblem(f, 0.0, 1.0)
        ts = jnp.array([0.5, 1.0])
        loss = lambda k: ps.solve(prob, jnp.ones(2), k, saveat=ts, backend="scipy").ys.sum()
        g = jax.jit(jax.vmap(jax.grad(loss)))(jnp.array([1.0, 2.0]))
        expect = [-2 * (0.5 * np.exp(-0.5 * k) + np.exp(-k)) for k in (1.0, 2.0)]
        assert np.allclose(g, expect, rtol=1e-4), (g, expect)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")

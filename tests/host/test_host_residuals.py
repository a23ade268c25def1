"""What the forward pass keeps for the backward pass (`ResidualStore`), driven by the
SciPy backend: bounded in bytes, oldest entries dropped first, and a dropped entry
re-solved with the same gradient."""

import jax
import jax.numpy as jnp
import numpy as np

import pysciml as ps


def lotka_volterra(t, y, p):
    x, z = y[0], y[1]
    return jnp.stack([p[0] * x - p[1] * x * z, -p[2] * z + p[3] * x * z])


def test_dropped_residuals_are_recomputed(monkeypatch):
    """The forward dense output is kept for the backward pass; when the store has
    dropped it (it is bounded in bytes), the VJP re-solves and gives the same answer."""
    from pysciml._backend.host import _residuals

    problem = ps.ODEProblem(lotka_volterra, 0.0, 3.0)
    ts = jnp.linspace(0.5, 3.0, 6)

    def grad():
        return jax.grad(lambda p: jnp.sum(ps.solve(
            problem, jnp.array([1.0, 1.0]), p, saveat=ts, backend="scipy",
            sensitivity=ps.InterpolatingAdjoint(), rtol=1e-9,
            atol=1e-9).ys ** 2))(jnp.array([1.5, 1.0, 3.0, 1.0]))

    kept = []
    original_get = _residuals.RESIDUALS.get
    monkeypatch.setattr(_residuals.RESIDUALS, "get",
                        lambda token: kept.append(original_get(token)) or kept[-1])
    g_kept = grad()
    assert kept and kept[-1] is not None
    monkeypatch.setattr(_residuals.RESIDUALS, "max_bytes", 0)
    g_recomputed = grad()
    assert kept[-1] is None
    np.testing.assert_array_equal(g_kept, g_recomputed)


def test_residual_store_drops_the_oldest_entries_first():
    from pysciml._backend.host import ResidualStore

    store = ResidualStore(max_bytes=100)
    a, b, c = np.zeros(5), np.ones(5), np.full(5, 2.0)  # 40 bytes each
    ta, tb = store.put(a), store.put(b)
    assert store.get(ta) is a and store.get(tb) is b
    tc = store.put(c)  # 120 bytes > 100: the oldest entry goes, and only it
    assert len({ta, tb, tc}) == 3 and 0 not in (ta, tb, tc)
    assert store.get(ta) is None and store.get(tb) is b and store.get(tc) is c
    assert store.put(np.zeros(13)) == 0  # 104 bytes: never kept, and drops nothing
    assert store.get(tb) is b and store.get(tc) is c
    td = store.put(np.zeros(12))  # 96 bytes: both b and c go
    assert store.get(tb) is None and store.get(tc) is None and store.get(td) is not None
    assert store.put(None) == 0


def test_evicted_residuals_are_recomputed_with_the_right_gradient(monkeypatch):
    """Two forward solves whose dense outputs do not both fit: the second evicts the
    first, whose backward pass then re-solves, and both gradients are the analytic
    ones."""
    from pysciml._backend.host import _residuals

    problem = ps.ODEProblem(lambda t, y, k: -k * y, 0.0, 2.0)
    ts, y0 = np.array([0.5, 1.0, 2.0]), np.array([1.0, -2.0])

    def loss(k):
        return jnp.sum(ps.solve(problem, jnp.asarray(y0), k, saveat=jnp.asarray(ts),
                                backend="scipy", sensitivity=ps.InterpolatingAdjoint(),
                                rtol=1e-10, atol=1e-12).ys ** 2)

    def exact_grad(k):  # d/dk of sum_t sum_i y0_i^2 exp(-2kt)
        return np.sum(-2 * ts[:, None] * y0**2 * np.exp(-2 * k * ts[:, None]))

    ka, kb = jnp.asarray(0.7), jnp.asarray(1.3)
    # The sizes of the two entries, in a store large enough for both.
    monkeypatch.setattr(_residuals, "RESIDUALS",
                        _residuals.ResidualStore(max_bytes=2**30))
    jax.vjp(loss, ka)
    size_a = _residuals.RESIDUALS._bytes
    jax.vjp(loss, kb)
    size_b = _residuals.RESIDUALS._bytes - size_a
    assert size_a > 0 and size_b > 0

    # One byte too small for both.
    store = _residuals.ResidualStore(max_bytes=size_a + size_b - 1)
    monkeypatch.setattr(_residuals, "RESIDUALS", store)
    got = []
    original_get = store.get
    monkeypatch.setattr(store, "get",
                        lambda token: got.append(original_get(token)) or got[-1])
    _, vjp_a = jax.vjp(loss, ka)
    _, vjp_b = jax.vjp(loss, kb)  # evicts a's entry
    assert len(store._entries) == 1
    (g_a,) = vjp_a(jnp.ones(()))
    (g_b,) = vjp_b(jnp.ones(()))
    assert got[0] is None and got[1] is not None  # a re-solved, b used its entry
    # Measured 1.0e-11 relative for both (rtol=1e-10, a smooth decay); 1e-9 is 100x.
    np.testing.assert_allclose(float(g_a), exact_grad(0.7), rtol=1e-9)
    np.testing.assert_allclose(float(g_b), exact_grad(1.3), rtol=1e-9)

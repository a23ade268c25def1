"""`sensitivity=ps.ForwardSensitivity()`: `jax.jvp`, `jax.jacfwd`, `jax.grad` and
`jax.hessian` through `solve`, on every backend. References: a linear system whose
sensitivity is a matrix exponential (closed form, scipy.linalg), Diffrax's
`DirectAdjoint` at tight tolerances, and central finite differences."""

import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from helpers import BACKENDS, LV_P, LV_Y0, central_fd, lotka_volterra

import pysciml as ps

FS = ps.ForwardSensitivity()
TIGHT = dict(rtol=1e-10, atol=1e-10, max_steps=100_000)

# --- A linear system: y(t) = expm(A(p) t) y0, derivatives in closed form -------------

TS = np.array([0.3, 1.0, 2.0])
P = np.array([0.7, 0.4])
Y0 = np.array([1.0, -0.5])


def _a(p):
    return jnp.array([[-p[0], 1.0], [-1.0, -p[1]]])


def linear(t, y, p):
    return _a(p) @ y


LINEAR = ps.ODEProblem(linear, 0.0, 2.0)


def _linear_truth():
    """ys and the Jacobian of ys w.r.t. (y0, p): expm and its Fréchet derivatives."""
    a = np.asarray(_a(P))
    d_a = [np.array([[-1.0, 0.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [0.0, -1.0]])]
    ys, jac = [], []
    for t in TS:
        e = scipy.linalg.expm(a * t)
        ys.append(e @ Y0)
        cols = [e[:, 0], e[:, 1]]
        cols += [scipy.linalg.expm_frechet(a * t, da * t)[1] @ Y0 for da in d_a]
        jac.append(np.stack(cols, axis=1))
    return np.array(ys), np.array(jac)  # (k, n), (k, n, n + m)


def _linear_ys(backend):
    def ys(x):
        return ps.solve(LINEAR, x[:2], x[2:], saveat=jnp.asarray(TS), backend=backend,
                        sensitivity=FS, **TIGHT).ys

    return ys


X = jnp.concatenate([jnp.asarray(Y0), jnp.asarray(P)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_jacfwd_and_jvp_are_the_matrix_exponential(backend):
    ys_true, jac_true = _linear_truth()
    f = _linear_ys(backend)
    jac = jax.jacfwd(f)(X)
    np.testing.assert_allclose(f(X), ys_true, rtol=1e-8, atol=1e-10)
    # Error control covers S: at rtol 1e-10 the sensitivities are good to ~1e-9.
    np.testing.assert_allclose(jac, jac_true, rtol=1e-7, atol=1e-9)
    v = jnp.array([0.3, -1.0, 2.0, 0.5])
    ys, tangent = jax.jvp(f, (X,), (v,))
    np.testing.assert_allclose(tangent, jac_true @ np.asarray(v), rtol=1e-7, atol=1e-9)
    # Reverse mode transposes the same product.
    w = np.cos(np.arange(TS.size * 2.0)).reshape(TS.size, 2)
    grad = jax.grad(lambda x: jnp.sum(w * f(x)))(X)
    np.testing.assert_allclose(grad, np.einsum("kn,knj->j", w, jac_true), rtol=1e-7,
                               atol=1e-9)


# --- Lotka--Volterra: against Diffrax DirectAdjoint and finite differences -----------

LV = ps.ODEProblem(lotka_volterra, 0.0, 4.0)
LV_TS = jnp.linspace(0.5, 4.0, 6)


def _lv_loss(backend, sensitivity):
    def loss(x):
        ys = ps.solve(LV, x[:2], x[2:], saveat=LV_TS, backend=backend, solver=ps.Dopri8(),
                      sensitivity=sensitivity, **TIGHT).ys
        return jnp.sum(jnp.sin(ys))

    return loss


LV_X = jnp.concatenate([jnp.asarray(LV_Y0), jnp.asarray(LV_P)])


@pytest.fixture(scope="module")
def lv_reference():
    loss = _lv_loss("diffrax", ps.DirectAdjoint())
    return jax.grad(loss)(LV_X), jax.hessian(loss)(LV_X)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_and_hessian_match_diffrax_direct_adjoint(backend, lv_reference):
    grad_ref, hess_ref = lv_reference
    loss = _lv_loss(backend, FS)
    np.testing.assert_allclose(jax.grad(loss)(LV_X), grad_ref, rtol=1e-6)
    hess = jax.hessian(loss)(LV_X)
    np.testing.assert_allclose(hess, hess_ref, rtol=1e-6,
                               atol=1e-6 * np.max(np.abs(hess_ref)))
    np.testing.assert_allclose(hess, hess.T, rtol=1e-7, atol=1e-9)  # symmetric
    # And against central differences of the gradient (h = 1e-5: truncation ~1e-10,
    # solver noise ~1e-10 / 1e-5 = 1e-5 of the scale).
    grad = jax.grad(loss)
    fd = np.stack([central_fd(lambda x: grad(x)[i], LV_X, 1e-5) for i in range(6)])
    np.testing.assert_allclose(hess, fd, atol=1e-4 * np.max(np.abs(hess_ref)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_against_finite_differences(backend):
    loss = _lv_loss(backend, FS)

    def tight(x):  # the differenced function: a plain solve at 1e-13
        ys = ps.solve(LV, x[:2], x[2:], saveat=LV_TS, backend="diffrax",
                      solver=ps.Dopri8(), rtol=1e-13, atol=1e-13, max_steps=100_000).ys
        return jnp.sum(jnp.sin(ys))

    # h = 1e-5 on a solve at 1e-13: measured within 1.2e-6 of DirectAdjoint (h = 1e-4:
    # 2e-6; 1e-3: 2e-4, truncation). The sensitivities themselves are solved at 1e-10.
    np.testing.assert_allclose(jax.grad(loss)(LV_X), central_fd(tight, LV_X, 1e-5),
                               rtol=5e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_of_every_transform(backend):
    loss = _lv_loss(backend, FS)
    xs = LV_X * jnp.array([[1.0], [1.05]])
    # Host backends solve a vmapped batch as one stacked system (other steps, at
    # rtol/sqrt(B)): agreement to the solve tolerance (TIGHT: 1e-10), not to rounding.
    rtol = 1e-10 if backend == "diffrax" else 1e-8
    for transform in (jax.grad(loss), jax.jacfwd(loss), jax.hessian(loss)):
        batched = jax.vmap(transform)(xs)
        for i in range(2):
            np.testing.assert_allclose(batched[i], transform(xs[i]), rtol=rtol,
                                       atol=1e-12)
    v = jnp.ones(6)
    batched = jax.vmap(lambda x: jax.jvp(loss, (x,), (v,))[1])(xs)
    np.testing.assert_allclose(batched[1], jax.jvp(loss, (xs[1],), (v,))[1],
                               rtol=rtol)


# --- Pytrees, modules, failures, non-smooth fields -----------------------------------


class Decay(eqx.Module):
    rate: jax.Array
    name: str = "decay"  # a non-array leaf: static

    def __call__(self, t, y):
        return {"a": -self.rate * y["a"], "b": self.rate * y["a"] - y["b"]}


@pytest.mark.parametrize("backend", BACKENDS)
def test_pytree_state_and_module_args(backend):
    problem = ps.ODEProblem(lambda t, y, model: model(t, y), 0.0, 1.0)

    def loss(rate, sensitivity):
        ys = ps.solve(problem, {"a": jnp.array(1.0), "b": jnp.array(0.0)},
                      Decay(rate), saveat=jnp.array([0.5, 1.0]), backend=backend,
                      sensitivity=sensitivity, **TIGHT).ys
        return jnp.sum(ys["a"] + 2.0 * ys["b"])

    rate = jnp.array(0.8)
    # a = e^{-rt}; b = r t e^{-t} for r = 1 ... in general b = r (e^{-rt} - e^{-t})/(1-r)
    ts = np.array([0.5, 1.0])
    r = 0.8

    def exact(r):
        a = np.exp(-r * ts)
        b = r * (np.exp(-r * ts) - np.exp(-ts)) / (1 - r)
        return np.sum(a + 2 * b)

    np.testing.assert_allclose(loss(rate, FS), exact(r), rtol=1e-9)
    fd = (exact(r + 1e-6) - exact(r - 1e-6)) / 2e-6
    np.testing.assert_allclose(jax.grad(loss)(rate, FS), fd, rtol=1e-7)
    np.testing.assert_allclose(jax.hessian(loss)(rate, FS),
                               (exact(r + 1e-4) - 2 * exact(r) + exact(r - 1e-4)) / 1e-8,
                               rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_throw_false_with_a_failing_member(backend):
    problem = ps.ODEProblem(lambda t, y, k: k * y**2, 0.0, 1.0)  # blows up at t = 1/k

    def ys(k):
        sol = ps.solve(problem, jnp.ones(1), k, saveat=jnp.array([0.5, 1.0]),
                       backend=backend, sensitivity=FS, throw=False, max_steps=2000)
        return sol.ys[:, 0], sol.result._value

    ks = jnp.array([0.5, 2.0])  # y = 1 / (1 - k t): finite for 0.5, blows up for 2
    (values, codes), (tangents, _) = jax.vmap(
        lambda k: jax.jvp(ys, (k,), (jnp.ones(()),)))(ks)
    assert codes[0] == 0 and codes[1] != 0
    t = np.array([0.5, 1.0])
    np.testing.assert_allclose(values[0], 1 / (1 - 0.5 * t), rtol=1e-5)
    np.testing.assert_allclose(tangents[0], t / (1 - 0.5 * t) ** 2, rtol=1e-5)
    # The failed member: NaN values and zero tangents (as its reverse-mode gradient),
    # which leaves the other members of a batch untouched.
    assert np.all(np.isnan(values[1]))
    np.testing.assert_array_equal(tangents[1], 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_smooth_field_matches_diffrax(backend):
    """`jnp.where` and clipping: forward sensitivities take the derivative of the
    branch taken, as reverse mode through Diffrax does."""

    def field(t, y, p):
        rate = jnp.where(y[0] > 0.5, p[0], p[1])
        return jnp.stack([-rate * y[0], jnp.clip(p[1] * y[0], 0.0, 0.3) - y[1]])

    problem = ps.ODEProblem(field, 0.0, 3.0)

    def loss(p, backend, sensitivity):
        return jnp.sum(ps.solve(problem, jnp.array([1.0, 0.0]), p,
                                saveat=jnp.array([1.0, 3.0]), backend=backend,
                                sensitivity=sensitivity, **TIGHT).ys)

    p = jnp.array([0.9, 0.6])
    ref = jax.grad(loss)(p, "diffrax", ps.DirectAdjoint())
    # The switch at y0 = 0.5 is crossed inside a step: both methods see the same
    # discontinuous field; the adaptive steps resolve it to ~1e-6.
    np.testing.assert_allclose(jax.grad(loss)(p, backend, FS), ref, rtol=1e-5)


def test_too_many_directions_is_refused():
    problem = ps.ODEProblem(lambda t, y, w: -jnp.mean(w) * y, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"2 states × 1002 directions.*"
                                         r"max_directions=1000.*adjoint"):
        ps.solve(problem, jnp.ones(2), jnp.ones(1000), saveat=jnp.array([1.0]),
                 sensitivity=FS)
    sol = ps.solve(problem, jnp.ones(2), jnp.ones(1000), saveat=jnp.array([1.0]),
                   sensitivity=ps.ForwardSensitivity(max_directions=2000))
    np.testing.assert_allclose(sol.ys[0], np.exp(-1.0), rtol=1e-5)


def test_float32_without_x64():
    import subprocess
    import sys

    code = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np
        import pysciml as ps
        assert not jax.config.jax_enable_x64
        problem = ps.ODEProblem(lambda t, y, k: -k * y, 0.0, 1.0)
        for backend in ("diffrax", "scipy"):
            def f(k):
                return ps.solve(problem, jnp.ones(1, jnp.float32), k,
                                saveat=jnp.array([1.0]), backend=backend,
                                sensitivity=ps.ForwardSensitivity()).ys[0, 0]
            k = jnp.float32(0.7)
            g, h = jax.grad(f)(k), jax.hessian(f)(k)
            assert f(k).dtype == g.dtype == h.dtype == jnp.float32
            assert abs(float(g) + np.exp(-0.7)) < 1e-5, g    # d/dk e^{-k}
            assert abs(float(h) - np.exp(-0.7)) < 1e-4, h    # d²/dk² e^{-k}
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]

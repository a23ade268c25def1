"""Solves on the SciPy backend with native right-hand sides on and off: the same values
and gradients; the fallback to XLA for an untranslated primitive (one warning, still
solves); `native_rhs=True` refusing it at trace time; a missing Numba; the disk cache
serving a second process."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import LV_P, lotka_volterra

import pysciml as ps
from pysciml._backend.host import _native as host_native

jax.config.update("jax_enable_x64", True)

TS = jnp.linspace(0.0, 5.0, 11)
Y0 = jnp.array([1.0, 1.0])


def lv_loss(backend, sensitivity, solver):
    problem = ps.ODEProblem(lotka_volterra, 0.0, 5.0)

    def loss(p):
        sol = ps.solve(problem, Y0, p, saveat=TS, backend=backend, solver=solver,
                       sensitivity=sensitivity, rtol=1e-8, atol=1e-8)
        return jnp.sum(sol.ys**2)

    return loss


@pytest.mark.parametrize("sensitivity", [
    ps.InterpolatingAdjoint(), ps.BacksolveAdjoint(), ps.ForwardSensitivity()])
@pytest.mark.parametrize("solver", [ps.Dopri5(), ps.Dopri8()])
def test_native_and_xla_callbacks_give_the_same_solve(sensitivity, solver):
    # The same explicit method at fixed tolerances makes the same steps on the same
    # right-hand-side values, to roundoff: values and gradients agree to 1e-12.
    p = jnp.asarray(LV_P)
    native = lv_loss(ps.ScipyBackend(native_rhs=True), sensitivity, solver)
    xla = lv_loss(ps.ScipyBackend(native_rhs=False), sensitivity, solver)
    v1, g1 = jax.jit(jax.value_and_grad(native))(p)
    v2, g2 = jax.jit(jax.value_and_grad(xla))(p)
    np.testing.assert_allclose(v1, v2, rtol=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-12 * float(jnp.abs(g2).max()))


def test_native_stiff_solve_matches_xla():
    # Radau and BDF with the dense Jacobian from the native `jac` kernel.
    def robertson(t, y, k):
        return jnp.stack([
            -k[0] * y[0] + k[1] * y[1] * y[2],
            k[0] * y[0] - k[1] * y[1] * y[2] - k[2] * y[1] ** 2,
            k[2] * y[1] ** 2,
        ])

    problem = ps.ODEProblem(robertson, 0.0, 100.0)
    k = jnp.array([0.04, 1e4, 3e7])
    y0 = jnp.array([1.0, 0.0, 0.0])
    ts = jnp.array([1.0, 10.0, 100.0])
    out = {}
    for mode in (True, False):
        out[mode] = ps.solve(problem, y0, k, saveat=ts, backend=ps.ScipyBackend(
            native_rhs=mode), solver=ps.RadauIIA5(), rtol=1e-8, atol=1e-10).ys
    np.testing.assert_allclose(out[True], out[False], rtol=1e-10, atol=1e-14)


def cumsum_field(t, y, p):
    # `cumsum` has no native rule: this field falls back to XLA.
    return -p[0] * jnp.cumsum(y)


def test_the_fallback_warns_once_and_still_solves(monkeypatch):
    monkeypatch.setattr(host_native, "_WARNED", set())
    problem = ps.ODEProblem(cumsum_field, 0.0, 1.0)
    y0 = jnp.ones(3)
    p = jnp.array([0.5])
    with pytest.warns(RuntimeWarning, match="'cumsum'") as record:
        a = ps.solve(problem, y0, p, saveat=jnp.array([1.0]), backend="scipy",
                     rtol=1e-10, atol=1e-10).ys
        b = ps.solve(problem, y0, 2 * p, saveat=jnp.array([1.0]), backend="scipy").ys
    assert sum("cumsum" in str(w.message) for w in record) == 1
    # y' = -p L y with L lower-triangular ones: the exact solution is expm(-p L).
    import scipy.linalg

    exact = scipy.linalg.expm(-0.5 * np.tril(np.ones((3, 3)))) @ np.ones(3)
    np.testing.assert_allclose(a[0], exact, rtol=1e-8)
    assert np.all(np.isfinite(b))


def test_native_rhs_true_refuses_an_untranslated_primitive_at_trace_time():
    problem = ps.ODEProblem(cumsum_field, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"native_rhs=True.*'cumsum'.*native_rhs=\"auto\""):
        ps.solve(problem, jnp.ones(3), jnp.array([0.5]), saveat=jnp.array([1.0]),
                 backend=ps.ScipyBackend(native_rhs=True))


def test_native_rhs_is_checked():
    with pytest.raises(ValueError, match="native_rhs"):
        ps.solve(ps.ODEProblem(lotka_volterra, 0.0, 1.0), Y0, jnp.asarray(LV_P),
                 saveat=jnp.array([1.0]), backend=ps.ScipyBackend(native_rhs="yes"))


def test_environment_variable_overrides(monkeypatch):
    monkeypatch.setenv(host_native.ENV_VAR, "0")
    assert host_native.resolve_mode("auto") is False
    monkeypatch.setenv(host_native.ENV_VAR, "maybe")
    with pytest.raises(ValueError, match="PYSCIML_NATIVE_RHS"):
        host_native.resolve_mode("auto")


def _run(code, env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_without_numba_host_backends_warn_once_and_use_xla(tmp_path):
    # A child process in which `import numba` fails.
    code = """
        import sys, warnings
        sys.modules["numba"] = None
        import jax, jax.numpy as jnp
        jax.config.update("jax_enable_x64", True)
        import pysciml as ps
        f = lambda t, y, p: -p * y
        pr = ps.ODEProblem(f, 0.0, 1.0)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            ys = [ps.solve(pr, jnp.ones(1), jnp.array(k), saveat=jnp.array([1.0]),
                           backend="scipy", rtol=1e-10, atol=1e-12).ys[0, 0]
                  for k in (1.0, 2.0)]
        print(sum("Numba could not be imported" in str(x.message) for x in w))
        print(abs(ys[0] - jnp.exp(-1.0)) < 1e-8, abs(ys[1] - jnp.exp(-2.0)) < 1e-8)
    """
    out = _run(code, dict(os.environ, PYSCIML_CACHE_DIR=str(tmp_path)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "True", "True"], out.stdout + out.stderr


def test_a_second_process_loads_kernels_from_the_disk_cache(tmp_path):
    code = """
        import jax, jax.numpy as jnp, numpy as np
        from pysciml._native import compile_function
        def lv(t, y, p):
            return jnp.stack([p[0] * y[0] - p[1] * y[0] * y[1],
                              -p[2] * y[1] + p[3] * y[0] * y[1]])
        k = compile_function(lv, 0.0, np.ones(2), np.ones(4))
        print(k.cached, k.compile_seconds)
    """
    env = dict(os.environ, PYSCIML_CACHE_DIR=str(tmp_path))
    first, second = _run(code, env), _run(code, env)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.split()[0] == "False"
    assert second.stdout.split()[0] == "True"
    assert len(list(tmp_path.glob("pysciml_native_*.py"))) == 1
    # Numba's own cache sits beside the source: the second process compiled nothing.
    assert list(tmp_path.glob("__pycache__/*.nbi"))

"""`make demo`: Lotka--Volterra calibration by gradient descent on every installed
backend, from the same code."""

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._backend import backend_names
from ._julia import JuliaNotAvailableError, JuliaStatus, julia_module, julia_status
from ._problem import ODEProblem
from ._solve import solve


def lotka_volterra(t, y, p):
    """Prey x and predator z: x' = αx − βxz, z' = −γz + δxz."""
    x, z = y[0], y[1]
    alpha, beta, gamma, delta = p[0], p[1], p[2], p[3]
    return jnp.stack([alpha * x - beta * x * z, -gamma * z + delta * x * z])


def available_backends(
    start: bool = True, names=None
) -> dict[str, tuple[bool, str]]:
    """Each backend name (of `names`, default: every backend) -> `(available,
    reason)`. With `start`, the Julia backend is started here (juliacall finds or
    installs Julia), and a failed start is reported with juliacall's reason; without
    it, only whether juliacall is installed. Julia is only started if `names` has it."""
    out = {}
    for name in backend_names() if names is None else names:
        if name == "julia":
            status = julia_status()
            if start and status.available:
                try:
                    julia_module()
                except JuliaNotAvailableError as e:
                    status = JuliaStatus(False, e.reason)
            out[name] = tuple(status)
        else:
            out[name] = (True, "installed")
    return out


def run_demo(steps: int = 300, backends=None) -> int:
    jax.config.update("jax_enable_x64", True)
    p_true = np.array([1.5, 1.0, 3.0, 1.0])
    y0 = jnp.array([1.0, 1.0])
    ts = jnp.linspace(0.0, 10.0, 40)
    problem = ODEProblem(lotka_volterra, 0.0, 10.0)
    clean = solve(problem, y0, jnp.asarray(p_true), saveat=ts, rtol=1e-10, atol=1e-10)
    data = clean.ys + 0.05 * jax.random.normal(jax.random.key(0), clean.ys.shape)
    print("Lotka-Volterra calibration: 40 noisy observations on [0, 10], noise sd 0.05")
    print(f"true parameters (alpha, beta, gamma, delta) = {p_true}")
    names = list(backends or backend_names())
    status = available_backends(names=names)  # starts Julia only if it is named
    for name in names:
        ok, why = status[name]
        if not ok:
            print(f"\n[{name}] skipped: {why}")
            continue

        def loss(log_p, name=name):
            sol = solve(problem, y0, jnp.exp(log_p), saveat=ts, backend=name,
                        rtol=1e-7, atol=1e-9)
            return jnp.mean((sol.ys - data) ** 2)

        optimiser = optax.adam(0.05)
        log_p = jnp.log(jnp.array([1.2, 0.8, 2.5, 0.8]))
        state = optimiser.init(log_p)

        @jax.jit
        def step(log_p, state):
            value, grad = jax.value_and_grad(loss)(log_p)
            updates, state = optimiser.update(grad, state)
            return optax.apply_updates(log_p, updates), state, value

        start = time.perf_counter()
        for _ in range(steps):
            log_p, state, value = step(log_p, state)
        elapsed = time.perf_counter() - start
        fit = np.exp(np.asarray(log_p))
        print(f"\n[{name}] {steps} Adam steps in {elapsed:.1f} s, final MSE {value:.5f}")
        print(f"  fitted = {np.array2string(fit, precision=3)}")
        print(f"  rel. error = {np.array2string(np.abs(fit / p_true - 1), precision=3)}")
    return 0


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


# The cases whose work-precision diagrams `make demo` draws: one with a gradient
# reference and one stiff problem of the IVP test set. Each costs a compilation per
# solver and tolerance (~5 s for a Diffrax gradient), so the demo draws two; `python
# -m pysciml crossval --plot DIR` draws them all.
DEMO_PLOT_CASES = ("lotka-volterra", "orego")


def run_crossval(backends=None, rtol: float = 1e-8, cases=None,
                 plot_dir="out/crossval", plot_cases=DEMO_PLOT_CASES) -> int:
    """Prints the cross-validation report, and saves work-precision diagrams.

    **Arguments:**

    - `backends`: backend names; `None`: every available one.
    - `rtol`: the report's tolerance.
    - `cases`: names from `_crossval.CASES`; `None`: all.
    - `plot_dir`: where to save the diagrams (relative to the current directory), or
        `None` for none.
    - `plot_cases`: the cases to draw, or `None` for all of `cases`.

    **Returns:**

    The exit status, 0.
    """
    from ._crossval import (
        CASES,
        SWEEP_RTOLS,
        crossval,
        plot_work_precision,
        print_report,
    )

    names = backends or [n for n, (ok, _) in available_backends().items() if ok]
    cases = tuple(CASES) if cases is None else tuple(cases)
    if plot_dir is not None and not _has_matplotlib():
        print("No work-precision diagrams: they need matplotlib (pip install "
              "'pysciml[examples]').")
        plot_dir = None
    rows = crossval(names, rtol=rtol, cases=cases,
                    sweep_rtols=SWEEP_RTOLS if plot_dir is not None else (),
                    sweep_cases=plot_cases)
    print()
    print_report(rows, rtol=rtol)
    if plot_dir is not None:
        paths = plot_work_precision(rows, plot_dir)
        where = Path(plot_dir).resolve()
        print(f"\nWork-precision diagrams ({len(paths)}) in {where}/: "
              + ", ".join(p.name for p in paths))
    return 0


def julia_warmup() -> int:
    from ._julia import JuliaNotAvailableError

    try:
        run_demo(steps=2, backends=["julia"])
    except JuliaNotAvailableError as e:
        print(e)
        return 1
    return 0

"""Scale-out: a vmapped ensemble sharded over devices (`NamedSharding` under `jax.jit`,
and `jax.shard_map`) and split across `jax.distributed` processes gives the unsharded
values and gradients.

JAX fixes its device count at start-up, so each test runs a child process
(`sharding_child.py`, with 2 forced CPU devices, or `sharding_multiprocess_child.py`,
one per JAX process) that prints its results as JSON; the comparisons are here.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import free_port, json_of, run_together

HERE = Path(__file__).parent
ROOT = HERE.parent
DEVICES_FLAG = "--xla_force_host_platform_device_count=2"


def _env(xla_flags: str) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla_flags
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _child(backend: str, level: str, timeout: float = 300) -> dict:
    proc = subprocess.run(
        [sys.executable, str(HERE / "sharding_child.py"), backend, level],
        capture_output=True, text=True, timeout=timeout, env=_env(DEVICES_FLAG),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json_of(proc.stdout, proc.stderr)


def _ok(results: dict, case: str) -> dict:
    res = results[case]
    assert res["ok"], f"{case} raised {res['error']}\n{res['trace']}"
    return res


def _close(got, want, rtol, atol=0.0, what=""):
    """Arrays, or dicts of them (a gradient: `{"y0": ..., "a": ...}`)."""
    if isinstance(want, dict):
        for key in want:
            _close(got[key], want[key], rtol, atol, what=f"{what}[{key}]")
        return
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=rtol,
                               atol=atol, err_msg=what)


def _check(results, k, case, rtol, atol=0.0, keys=("ys", "grad_items", "grad_shared")):
    """Case `k/case` against the unsharded `k/ref`, key by key."""
    ref = _ok(results, f"{k}/ref")["value"]
    got = _ok(results, f"{k}/{case}")["value"]
    for key in keys:
        if key in got:
            _close(got[key], ref[key], rtol, atol, what=f"{k}/{case}: {key}")


def _check_per_member(results, k, case, rtol, atol=0.0, check_vma=True):
    """Gradients taken inside each shard, `vmap(grad)` over its members with a shared
    (replicated) parameter. Under `check_vma=True`, JAX's semantics make the gradient
    of a replicated input the sum over the shards (the transpose of its implicit
    `pcast` to varying is a `psum`): member i of one shard gets its own gradient plus
    that of member i of the other shard, exactly as for a plain JAX function
    (`jax.grad` of `sum((y * a) ** 2)` in the same place gives the same sums).
    Under `check_vma=False`: each member's own."""
    ref = _ok(results, f"{k}/ref")["value"]["grad_per_member"]
    got = _ok(results, f"{k}/{case}")["value"]["grad_per_member"]
    (ref_y0, ref_a), (got_y0, got_a) = ((np.asarray(g["y0"]), np.asarray(g["a"]))
                                        for g in (ref, got))
    np.testing.assert_allclose(got_y0, ref_y0, rtol=rtol, atol=atol)
    half = ref_a.shape[0] // 2
    want_a = np.tile(ref_a[:half] + ref_a[half:], (2, 1)) if check_vma else ref_a
    np.testing.assert_allclose(got_a, want_a, rtol=rtol, atol=atol)


def _check_partial_manual_error(results):
    res = results["0/partial_manual"]
    assert not res["ok"], "solve inside a partially manual shard_map now works: " \
        "update pysciml/_shard.py's error, the README and this test"
    assert "manual over only some mesh axes (['b'] of ['b', 'm'])" in res["error"], \
        res["error"]


def _check_explicit_vmap_error(results):
    res = results["0/explicit_vmap"]
    assert not res["ok"], "jit(vmap) over an Explicit-sharded batch now works: " \
        "update pysciml/_shard.py's error, the README and this test"
    assert "Explicit mesh axes ['b'] is not supported" in res["error"], res["error"]
    assert "shard_map" in res["error"]


# One test per child process: under `pytest -n`, a module-scoped fixture would start
# the child once per worker.
def test_diffrax_sharded_ensemble():
    results = _child("diffrax", "fast")
    # Forward sensitivities (the default here): values, the gradient of a loss summed
    # over shards, per member and with a shared parameter, and gradients inside each
    # shard, equal the unsharded ones.
    _check(results, 0, "shard_map", rtol=1e-12)
    _check_per_member(results, 0, "shard_map", rtol=1e-12)
    # The adjoint (`DiscreteAdjoint`): its backward pass runs at transpose time.
    _check(results, 1, "shard_map", rtol=1e-12, keys=("grad_items",))
    _check_explicit_vmap_error(results)
    _check_partial_manual_error(results)


def test_scipy_sharded_ensemble():
    results = _child("scipy-loop", "fast")
    # `batch_mode="loop"`: each member is solved alone, so sharded equals unsharded
    # to rounding, for forward sensitivities (0) and the adjoint (1).
    for k in (0, 1):
        _check(results, k, "shard_map", rtol=1e-12)
        _check_per_member(results, k, "shard_map", rtol=1e-12)
        # Each callback received one shard's 2 members: no gather onto one device.
        batches = results[f"{k}/shard_map"]["batches"]
        assert batches and set(batches) == {2}, batches
        # Under `jax.jit` with NamedSharding (Auto axes), XLA runs a `pure_callback`
        # once, on one device, with the whole batch ("Involuntary full
        # rematerialization"): the values and gradients are right, but the batch is
        # gathered (documented in the README: use `jax.shard_map` to solve each
        # shard where it lives).
        _check(results, k, "named", rtol=1e-12)
        assert set(results[f"{k}/named"]["batches"]) == {4}
    _check_explicit_vmap_error(results)
    _check_partial_manual_error(results)


def _multiprocess(backend: str, timeout: float = 120) -> tuple[dict, list[dict]]:
    """The ensemble solved by one process, then split across 2 `jax.distributed`
    processes (one CPU device each, Gloo collectives): `(one, [process 0, 1])`."""
    script = str(HERE / "sharding_multiprocess_child.py")
    env = _env("")
    one = subprocess.run([sys.executable, script, backend, "1", "0", "0"],
                         capture_output=True, text=True, timeout=timeout, env=env)
    assert one.returncode == 0, one.stderr[-4000:]
    port = str(free_port())
    two = run_together([[sys.executable, script, backend, "2", str(i), port]
                        for i in range(2)], env, timeout)
    return json_of(one.stdout, one.stderr), two


def _check_multiprocess(backend):
    one, two = _multiprocess(backend)
    for i, res in enumerate(two):
        assert res["process_count"] == 2
        for key in ("ys", "grad_y0", "grad_a", "ys_named", "grad_y0_named",
                    "grad_a_named"):
            np.testing.assert_allclose(res[key], one[key], rtol=1e-12,
                                       err_msg=f"process {i}: {key}")


def test_diffrax_two_processes_equal_one():
    _check_multiprocess("diffrax")


@pytest.mark.slow
def test_scipy_two_processes_equal_one():
    _check_multiprocess("scipy")


@pytest.mark.slow
@pytest.mark.parametrize("backend",
                         ["diffrax", "scipy-loop", "scipy-stack", "scipy-loop-xla"])
def test_full_matrix(backend):
    # Both sensitivities; NamedSharding, shard_map with and without `check_vma`, and
    # shard_map on an Explicit mesh. A stacked batch (`batch_mode="stack"`) is solved
    # with each shard's members stacked, so its steps differ from the unsharded
    # stack's: equal within the solve's tolerance (rtol=1e-6) instead.
    results = _child(backend, "full", timeout=600)
    rtol, atol = (1e-5, 1e-6) if backend == "scipy-stack" else (1e-12, 0.0)
    for k in (0, 1):
        _check(results, k, "shard_map", rtol, atol)
        _check(results, k, "shard_map_no_vma", rtol, atol)
        _check(results, k, "named", rtol, atol)
        _check_per_member(results, k, "shard_map", rtol, atol)
        _check_per_member(results, k, "shard_map_no_vma", rtol, atol, check_vma=False)
    _check(results, 0, "explicit_shard_map", rtol, atol, keys=("ys",))
    _check_explicit_vmap_error(results)
    _check_partial_manual_error(results)
    if backend != "diffrax":
        for k in (0, 1):
            assert set(results[f"{k}/shard_map"]["batches"]) == {2}
            assert set(results[f"{k}/named"]["batches"]) == {4}

"""Data-parallel neural ODE training (`examples/train_neural_ode.py --devices N`, and
across `jax.distributed` processes): the same training as on one device, and a
checkpoint written with one device count resumes with another.

With `--reproducible`, the batch's gradients are summed in one fixed order whatever the
device count, so the comparisons are bit for bit. Without it, JAX sums each device's
share and then the devices' sums, an order that depends on the device count: equal to
rounding (measured: 16 of 42 parameters differ, by at most 1.3e-15 relative, after 8
steps).

Each run is a child process (`train_child.py`): JAX fixes its devices and processes
when it starts.
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
ARGS = ["--steps", "8", "--width", "8", "--depth", "1", "--batch-size", "4",
        "--n-trajectories", "8", "--n-times", "12", "--no-progress", "--float64",
        "--checkpoint-every", "2", "--rtol", "1e-8", "--atol", "1e-10"]


def _env() -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = ""  # the script makes its own CPU devices
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _train(*extra: str, timeout: float = 300) -> dict:
    proc = subprocess.run([sys.executable, str(HERE / "train_child.py"), *ARGS, *extra],
                          capture_output=True, text=True, timeout=timeout, env=_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json_of(proc.stdout, proc.stderr)


def _train_two_processes(*extra: str, timeout: float = 300) -> list[dict]:
    port = free_port()
    return run_together(
        [[sys.executable, str(HERE / "train_child.py"), *ARGS, *extra, "--coordinator",
          f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)]
         for i in range(2)], _env(), timeout)


@pytest.fixture(scope="module")
def one():
    """The reference: 8 steps on 1 device."""
    out = _train("--devices", "1", "--reproducible")
    # Training works: the error over all trajectories, full length, went down.
    assert out["full_mse"] < out["initial_full_mse"], out
    return out


def test_data_parallel_training_across_devices_and_processes(one, tmp_path):
    assert (one["devices"], one["processes"], one["step"]) == (1, 1, 8)

    # 2 processes with a device each, for 4 steps, checkpointed (by process 0): the
    # first 4 steps of the 1-device run, bit for bit, on both processes.
    ckpt = str(tmp_path / "ckpt")
    pair = _train_two_processes("--reproducible", "--checkpoint-dir", ckpt,
                                "--stop-after", "4")
    for i, out in enumerate(pair):
        assert (out["devices"], out["processes"], out["step"]) == (2, 2, 4), out
        np.testing.assert_array_equal(out["losses"], one["losses"][:4],
                                      err_msg=f"process {i}")
    np.testing.assert_array_equal(pair[1]["params"], pair[0]["params"])

    # Resumed on 1 device in 1 process: bit for bit the uninterrupted 1-device run.
    # The checkpoint holds host arrays, not device layouts, and the batches depend on
    # the RNG key alone.
    resumed = _train("--devices", "1", "--reproducible", "--checkpoint-dir", ckpt,
                     "--resume")
    assert (resumed["devices"], resumed["processes"], resumed["step"]) == (1, 1, 8)
    np.testing.assert_array_equal(pair[0]["losses"] + resumed["losses"],
                                  one["losses"])
    np.testing.assert_array_equal(resumed["params"], one["params"])

    # Without --reproducible (JAX's own sum over the devices), on 2 devices of one
    # process: the 1-device run to rounding.
    two = _train("--devices", "2", "--plot", str(tmp_path / "plots"))
    assert (two["devices"], two["processes"], two["step"]) == (2, 1, 8)
    assert list((tmp_path / "plots").glob("*.png")), "no plot saved under --plot"
    for key in ("losses", "params"):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-12, atol=1e-15,
                                   err_msg=key)


# Slow (~15 s): SciPy inside `shard_map`, each device's callback on its own shard, is
# checked in the default run by tests/test_sharding.py, and the example on SciPy by
# tests/test_examples.py.
@pytest.mark.slow
def test_data_parallel_on_the_host_backend(one):
    # SciPy, each device's callback solving its own 2 members (tests/test_sharding.py
    # checks that no batch is gathered): the Diffrax run to within what the solves'
    # tolerances allow (rtol 1e-8: measured differences ~1e-7 relative, in the
    # parameters after 8 Adam steps, which divide by the gradients' running scale).
    scipy = _train("--devices", "2", "--reproducible", "--backend", "scipy")
    assert (scipy["devices"], scipy["step"]) == (2, 8)
    for key in ("losses", "params"):
        np.testing.assert_allclose(scipy[key], one[key], rtol=1e-5, err_msg=key)


def test_bad_data_parallel_settings_are_named():
    proc = subprocess.run(
        [sys.executable, str(HERE / "train_child.py"), *ARGS, "--devices", "3"],
        capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode != 0
    assert ("--batch-size 4 is not a multiple of the 3 devices" in proc.stderr), \
        proc.stderr[-2000:]

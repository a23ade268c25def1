"""`pysciml.nn` and the neural ODE training script."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import BACKENDS
from test_examples import load_example

import pysciml as ps
import pysciml.nn as nn


@pytest.fixture(scope="module")
def train():
    return load_example("train_neural_ode")


def test_training_loss_gradients_agree_between_backends():
    """Same MLP, float64, tight tolerances: both gradients are accurate to ~1e-9, so
    1e-6 relative leaves a wide margin."""
    field = nn.MLPVectorField(3, width=16, depth=2, time_dependent=True,
                              key=jax.random.key(3))
    field = jax.tree.map(lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x)
                         else x, field)
    ts = np.linspace(0.0, 2.0, 15)
    y0s = jnp.array([[1.0, 0.5], [-0.3, 0.8], [0.2, -1.0]])
    target = jnp.sin(jnp.asarray(ts))[None, :, None] * jnp.ones((3, 1, 2))
    grads = {}
    for backend in BACKENDS:
        model = nn.NeuralODE(field, augment=1, backend=backend, solver=ps.Dopri8(),
                             rtol=1e-10, atol=1e-10)

        def loss(model):
            pred = jax.vmap(lambda y0: model(ts, y0))(y0s)
            return jnp.mean((pred - target) ** 2)

        grads[backend] = eqx.filter_grad(loss)(model)
    ref = jax.tree.leaves(grads["diffrax"])
    for backend in BACKENDS:
        for a, b in zip(jax.tree.leaves(grads[backend]), ref):
            scale = np.max(np.abs(b))
            assert np.max(np.abs(np.asarray(a) - np.asarray(b))) <= 1e-6 * scale


def test_augmented_dims_start_at_zero_and_are_dropped():
    field = nn.MLPVectorField(4, width=8, depth=1, key=jax.random.key(0))
    model = nn.NeuralODE(field, augment=2)
    ys = model(np.linspace(0.0, 1.0, 5), jnp.array([1.0, 2.0]))
    assert ys.shape == (5, 2)
    np.testing.assert_allclose(ys[0], [1.0, 2.0], rtol=1e-12)
    with pytest.raises(TypeError, match="concrete save times"):
        jax.jit(lambda ts: model(ts, jnp.ones(2)))(jnp.linspace(0.0, 1.0, 5))


# On Diffrax slow (~20 s): there the default run checks that training lowers the
# full-trajectory error in tests/test_train_data_parallel.py's reference run.
@pytest.mark.parametrize("backend", [
    pytest.param(b, marks=pytest.mark.slow) if b == "diffrax" else b for b in BACKENDS])
def test_tiny_training_run_lowers_the_loss(train, backend):
    """A pipeline check: training runs on every backend and improves its own loss (on
    data the example makes with the diffrax backend). It claims no accuracy; the
    gradients' accuracy is checked above (backends against each other) and in
    test_core_gradients (against analytic adjoints and finite differences)."""
    # 12 steps, the first 6 on the same 10% curriculum window: compare within it.
    out = train.main([*train.TINY_ARGS, "--steps", "12", "--lr", "1e-2",
                      "--backend", backend, "--no-progress"])
    losses = out["losses"]
    assert len(losses) == 12 and np.all(np.isfinite(losses))
    assert losses[5] < losses[0]
    assert out["full_mse"] < out["initial_full_mse"]


# Slow (~20 s: three training runs in this process, each compiling its steps): resuming
# is checked in the default run by tests/test_train_data_parallel.py (a checkpoint
# resumed bit for bit, across device counts), and the refusal of other settings by
# test_resume_refuses_other_settings below.
@pytest.mark.slow
def test_resume_continues_exactly(train, tmp_path):
    common = [*train.TINY_ARGS, "--steps", "8", "--checkpoint-every", "2",
              "--no-progress"]
    straight = train.main([*common, "--checkpoint-dir", str(tmp_path / "a")])
    first = train.main([*common, "--checkpoint-dir", str(tmp_path / "b"),
                        "--stop-after", "3"])
    assert first["step"] == 3
    resumed = train.main([*common, "--checkpoint-dir", str(tmp_path / "b"),
                          "--resume"])
    assert resumed["step"] == 8
    # Exactly: the checkpoint holds the model, the optimiser state, the step and the
    # raw RNG key bit for bit, and the resumed run compiles the same step functions
    # (one per curriculum length), so every float operation repeats. (Measured: 0 of
    # 42 parameters differ.)
    np.testing.assert_array_equal(first["losses"] + resumed["losses"],
                                  straight["losses"])
    np.testing.assert_array_equal(resumed["params"], straight["params"])
    # The checkpoint remembers its settings: resuming with others is refused.
    with pytest.raises(ValueError, match="other settings"):
        train.main([*common, "--checkpoint-dir", str(tmp_path / "b"), "--resume",
                    "--lr", "0.5"])


def _write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_csv_loader_accepts_a_valid_file(train, tmp_path):
    path = _write(tmp_path, "t,x,y\n1.0,1,2\n1.5,3,4\n2.5,5,6\n")
    ts, ys = train.load_csv(path, np.float64)
    np.testing.assert_allclose(ts, [0.0, 0.5, 1.5])  # shifted to start at 0
    assert ys.shape == (1, 3, 2)
    np.testing.assert_allclose(ys[0, :, 1], [2, 4, 6])


@pytest.mark.parametrize("text, message", [
    ("", "the file is empty"),
    ("t\n1\n2\n", "row 1: the header needs a time column"),
    ("t,x\n0,1\n", "needs at least 2 data rows"),
    ("t,x\n0,1\n1,2,3\n", "row 3: 3 columns, but the header has 2"),
    ("t,x\n0,1\n1,abc\n", "row 3, column 'x': 'abc' is not a number"),
    ("t,x\n0,1\n1,nan\n", "row 3, column 'x': 'nan' is not finite"),
    ("t,x\n0,1\n1,2\n1,3\n", "row 4: time 1.0 does not increase"),
])
def test_csv_loader_rejects_bad_files(train, tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(train.DataError, match=message) as info:
        train.load_csv(path, np.float64)
    assert path in str(info.value)


def test_csv_loader_missing_file(train, tmp_path):
    with pytest.raises(train.DataError, match="cannot read the file"):
        train.load_csv(str(tmp_path / "nope.csv"), np.float64)


def test_training_on_a_csv_file(train, tmp_path):
    ts = np.linspace(0.0, 2.0, 10)
    rows = "\n".join(f"{t},{np.cos(t)},{np.sin(t)}" for t in ts)
    path = _write(tmp_path, "t,x,y\n" + rows + "\n")
    out = train.main(["--data", f"csv:{path}", "--steps", "4", "--width", "8",
                      "--depth", "1", "--no-progress"])
    assert out["step"] == 4 and np.isfinite(out["full_mse"])


def test_bad_device_and_process_flags_are_named(train):
    # Start JAX's backends (if no earlier test did) with its one CPU device: then the
    # script cannot make more, and says so.
    jax.devices()
    with pytest.raises(ValueError, match="--devices 64: JAX has 1 CPU device"):
        train.main([*train.TINY_ARGS, "--devices", "64", "--no-progress"])
    with pytest.raises(ValueError, match="go together"):
        train.main([*train.TINY_ARGS, "--coordinator", "127.0.0.1:1", "--no-progress"])
    with pytest.raises(ValueError, match="not a multiple of --num-processes"):
        train.main([*train.TINY_ARGS, "--devices", "3", "--num-processes", "2",
                    "--process-id", "0", "--coordinator", "127.0.0.1:1"])


def test_resume_refuses_other_settings(train, tmp_path):
    # A checkpoint made with other settings (here only its meta.json matters: it is
    # read before the checkpoint itself).
    (tmp_path / "checkpoint.eqx").write_bytes(b"")
    (tmp_path / "meta.json").write_text('{"lr": 0.5, "width": 8}')
    with pytest.raises(ValueError, match="other settings"):
        train._load(None, tmp_path, {"lr": 0.003, "width": 8})
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train._load(None, tmp_path / "missing", {})

"""Train a neural ODE on trajectory data, on any backend.

    python examples/train_neural_ode.py --data spiral --steps 2000 --plot out/
    python examples/train_neural_ode.py --data csv:my_data.csv --backend scipy
    python examples/train_neural_ode.py --checkpoint-dir ckpt/ --resume   # continue

Training uses a length curriculum (first 10% of every trajectory, then all of it), an
Optax optimiser, a progress bar with the loss and steps per second, and atomic
checkpoints (every `--checkpoint-every` steps and on Ctrl-C) holding the model, the
optimiser state, the step and the RNG key, so that `--resume` continues exactly.
"""

import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import figure_path, parser  # noqa: E402

import pysciml as ps  # noqa: E402
import pysciml.nn as nn  # noqa: E402

TINY_ARGS = ["--steps", "6", "--width", "8", "--depth", "1", "--batch-size", "2",
             "--n-trajectories", "4", "--n-times", "12"]

SPIRAL_A = np.array([[-0.1, 2.0], [-2.0, -0.1]])


class DataError(ValueError):
    """A data file that cannot be used, with the file and row named."""


# --- Data ----------------------------------------------------------------------------


def _spiral(t, y, a):
    return a @ y**3


def _lotka_volterra(t, y, p):
    x, z = y[0], y[1]
    return jnp.stack([p[0] * x - p[1] * x * z, -p[2] * z + p[3] * x * z])


def make_data(kind: str, n_trajectories: int, n_times: int, key, dtype):
    """Returns `(ts, ys)`: times `(k,)` (NumPy) and trajectories `(b, k, d)`."""
    if kind == "spiral":
        # The classic cubic system y' = A y³, from random initial states at radius
        # 0.5-1.5 (at radius 2 the orbit turns ~16 times faster than at 1).
        ts = np.linspace(0.0, 10.0, n_times)
        k1, k2 = jax.random.split(key)
        angle = jax.random.uniform(k1, (n_trajectories,), minval=0, maxval=2 * np.pi)
        radius = jax.random.uniform(k2, (n_trajectories, 1), minval=0.5, maxval=1.5)
        y0 = radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1)
        field, args, t1 = _spiral, jnp.asarray(SPIRAL_A), 10.0
    elif kind == "lotka-volterra":
        ts = np.linspace(0.0, 10.0, n_times)
        y0 = jax.random.uniform(key, (n_trajectories, 2), minval=0.5, maxval=1.5)
        field, args, t1 = _lotka_volterra, jnp.array([1.5, 1.0, 3.0, 1.0]), 10.0
    else:
        raise ValueError(f"unknown data {kind!r}")
    problem = ps.ODEProblem(field, 0.0, t1)
    # The data are made by the diffrax backend at tight tolerance, whatever backend
    # trains: they are the ground truth, not part of the comparison.
    ys = jax.vmap(lambda y: ps.solve(problem, y, args, saveat=jnp.asarray(ts),
                                     backend="diffrax", rtol=1e-9, atol=1e-9).ys)(y0)
    return ts, np.asarray(ys, dtype=dtype)


def load_csv(path: str, dtype):
    """Reads a CSV file: a header row, then one row per time: the time, then the state.

    **Returns:**

    `(ts, ys)` with `ys` of shape `(1, k, d)` (one trajectory).

    **Raises:**

    `DataError` naming the file and the row for: a missing file, no data rows, a row
    with the wrong number of columns, a value that is not a number, NaN or Inf, and
    times that do not strictly increase.
    """
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror}).") from None
    if not rows:
        raise DataError(f"{path}: the file is empty; expected a header row "
                        "`t,y1,y2,...` and data rows.")
    header, body = rows[0], rows[1:]
    if len(header) < 2:
        raise DataError(f"{path}, row 1: the header needs a time column and at least "
                        f"one state column; got {header}.")
    if len(body) < 2:
        raise DataError(f"{path}: needs at least 2 data rows; got {len(body)}.")
    values = np.empty((len(body), len(header)))
    for i, row in enumerate(body):
        line = i + 2  # 1-based, after the header
        if len(row) != len(header):
            raise DataError(f"{path}, row {line}: {len(row)} columns, but the header "
                            f"has {len(header)}.")
        for j, cell in enumerate(row):
            try:
                values[i, j] = float(cell)
            except ValueError:
                raise DataError(f"{path}, row {line}, column {header[j]!r}: "
                                f"{cell!r} is not a number.") from None
            if not math.isfinite(values[i, j]):
                raise DataError(f"{path}, row {line}, column {header[j]!r}: "
                                f"{cell!r} is not finite (NaN or Inf).")
        if i > 0 and values[i, 0] <= values[i - 1, 0]:
            raise DataError(f"{path}, row {line}: time {values[i, 0]} does not "
                            f"increase (previous row: {values[i - 1, 0]}). Times must "
                            "strictly increase.")
    ts = values[:, 0] - values[0, 0]  # integrate from the first observation
    return ts, values[None, :, 1:].astype(dtype)


# --- Training ------------------------------------------------------------------------


class TrainState(eqx.Module):
    model: nn.NeuralODE
    opt_state: optax.OptState
    step: jax.Array
    key: jax.Array  # raw key data, so that the state serialises


def _curriculum(step: int, steps: int, n_times: int) -> int:
    """How many time points the loss uses at `step`: the first 10% of each trajectory
    for the first half of training, then all of it."""
    return max(2, math.ceil(0.1 * n_times)) if step < steps // 2 else n_times


def _save(state: TrainState, directory: Path, meta: dict) -> None:
    """Atomically: write to a temporary file, then rename over the checkpoint."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "checkpoint.eqx.tmp"
    eqx.tree_serialise_leaves(tmp, state)
    os.replace(tmp, directory / "checkpoint.eqx")
    tmp_meta = directory / "meta.json.tmp"
    tmp_meta.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_meta, directory / "meta.json")


def _load(like: TrainState, directory: Path, meta: dict) -> TrainState:
    path = directory / "checkpoint.eqx"
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}.")
    saved = json.loads((directory / "meta.json").read_text())
    different = {k: (saved.get(k), v) for k, v in meta.items() if saved.get(k) != v}
    if different:
        raise ValueError(f"--resume: the checkpoint in {directory} was made with other "
                         f"settings (saved, now): {different}.")
    return eqx.tree_deserialise_leaves(path, like)


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data", default="spiral",
                   help="spiral, lotka-volterra, or csv:PATH (header, then t,y1,y2,...)")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--augment", type=int, default=0, help="extra zero state dims")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--optimizer", choices=["adabelief", "adam"], default="adabelief")
    p.add_argument("--n-trajectories", type=int, default=256)
    p.add_argument("--n-times", type=int, default=100)
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--atol", type=float, default=1e-6)
    p.add_argument("--float64", action="store_true", help="train in float64")
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop (as on Ctrl-C, with a checkpoint) after this many steps")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.float64:
        jax.config.update("jax_enable_x64", True)
    dtype = np.float64 if args.float64 else np.float32

    key = jax.random.key(args.seed)
    data_key, model_key, train_key = jax.random.split(key, 3)
    if args.data.startswith("csv:"):
        ts, ys = load_csv(args.data[4:], dtype)
    else:
        ts, ys = make_data(args.data, args.n_trajectories, args.n_times, data_key,
                           dtype)
    n_batch, n_times, size = ys.shape
    field = nn.MLPVectorField(size + args.augment, width=args.width, depth=args.depth,
                              key=model_key)
    field = jax.tree.map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x,
                         field)
    model = nn.NeuralODE(field, augment=args.augment, backend=args.backend,
                         rtol=args.rtol, atol=args.atol)
    optimiser = (optax.adabelief if args.optimizer == "adabelief" else optax.adam)(
        args.lr)
    state = TrainState(model, optimiser.init(eqx.filter(model, eqx.is_inexact_array)),
                       jnp.asarray(0), jax.random.key_data(train_key))
    meta = {k: getattr(args, k) for k in ("data", "width", "depth", "augment",
                                          "batch_size", "steps", "lr", "optimizer",
                                          "seed", "n_trajectories", "n_times",
                                          "float64", "backend")}
    ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir else None
    if args.resume:
        if ckpt is None:
            raise ValueError("--resume needs --checkpoint-dir.")
        state = _load(state, ckpt, meta)
        print(f"resumed from {ckpt} at step {int(state.step)}")
    batch_size = min(args.batch_size, n_batch)
    ys_all = jnp.asarray(ys)

    def make_step(k: int):
        ts_k = ts[:k]  # concrete: its last value ends the integration

        @eqx.filter_jit
        def step(state: TrainState):
            key, sub = jax.random.split(jax.random.wrap_key_data(state.key))
            index = jax.random.choice(sub, n_batch, (batch_size,), replace=False)
            target = ys_all[index, :k]

            def loss(model):
                pred = jax.vmap(lambda y0: model(ts_k, y0))(target[:, 0])
                return jnp.mean((pred - target) ** 2)

            value, grads = eqx.filter_value_and_grad(loss)(state.model)
            updates, opt_state = optimiser.update(
                grads, state.opt_state, eqx.filter(state.model, eqx.is_inexact_array))
            model = eqx.apply_updates(state.model, updates)
            return TrainState(model, opt_state, state.step + 1,
                              jax.random.key_data(key)), value

        return step

    def full_mse(model):
        pred = jax.vmap(lambda y0: model(ts, y0))(ys_all[:, 0])
        return pred, float(jnp.mean((pred - ys_all) ** 2))

    _, initial_mse = full_mse(state.model)
    steps_fns = {}
    losses = []
    stop = args.steps if args.stop_after is None else min(args.steps, args.stop_after)
    start = int(state.step)
    bar = None
    if not args.no_progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=stop, initial=start, desc=f"train [{args.backend}]",
                       file=sys.stdout, dynamic_ncols=True)
        except ImportError:
            bar = None
    t_start = time.perf_counter()
    interrupted = False
    try:
        while int(state.step) < stop:
            k = _curriculum(int(state.step), args.steps, n_times)
            if k not in steps_fns:
                steps_fns[k] = make_step(k)
            state, value = steps_fns[k](state)
            losses.append(float(value))
            if not math.isfinite(losses[-1]):
                raise FloatingPointError(f"loss became {losses[-1]} at step "
                                         f"{int(state.step)}: try a smaller --lr.")
            if bar is not None:
                bar.set_postfix(loss=f"{losses[-1]:.4g}", points=k)
                bar.update(1)
            if ckpt and int(state.step) % args.checkpoint_every == 0:
                _save(state, ckpt, meta)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted", end="")
    finally:
        if bar is not None:
            bar.close()
        if ckpt:
            _save(state, ckpt, meta)
            print(f"checkpoint at step {int(state.step)} in {ckpt}")
    elapsed = time.perf_counter() - t_start
    done = int(state.step) - start
    print(f"[{args.backend}] {done} steps in {elapsed:.1f} s "
          f"({done / max(elapsed, 1e-9):.1f} steps/s)")

    # Evaluate on all trajectories, full length.
    pred, mse = full_mse(state.model)
    last = losses[-1] if losses else float("nan")
    print(f"training loss: last {last:.5g}; full-trajectory MSE {initial_mse:.5g} "
          f"before this run, {mse:.5g} after")
    out = figure_path(args.plot, "neural_ode_loss.png")
    if out is not None and losses:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(10, 4))
        ax[0].semilogy(np.arange(start + 1, start + 1 + len(losses)), losses)
        ax[0].set(xlabel="step", ylabel="training loss", title="loss")
        for i in range(min(4, n_batch)):
            ax[1].plot(ys[i, :, 0], ys[i, :, -1], "k.", ms=3,
                       label="data" if i == 0 else None)
            ax[1].plot(pred[i, :, 0], pred[i, :, -1], "-",
                       label="neural ODE" if i == 0 else None)
        ax[1].set(xlabel="y[0]", ylabel="y[-1]", title="predicted vs true")
        ax[1].legend()
        fig.tight_layout()
        fig.savefig(out, dpi=90)
        fig.savefig(figure_path(args.plot, "neural_ode_trajectories.png"), dpi=90)
        plt.close(fig)
    params = np.concatenate([np.ravel(x) for x in
                             jax.tree.leaves(eqx.filter(state.model, eqx.is_array))])
    return {"losses": losses, "full_mse": mse, "initial_full_mse": initial_mse,
            "step": int(state.step),
            "params": params, "interrupted": interrupted}


if __name__ == "__main__":
    main()

"""Train a neural ODE on trajectory data, on any backend.

    python examples/train_neural_ode.py --data spiral --steps 2000 --plot out/
    python examples/train_neural_ode.py --data csv:my_data.csv --backend scipy
    python examples/train_neural_ode.py --checkpoint-dir ckpt/ --resume   # continue
    python examples/train_neural_ode.py --devices 2          # data-parallel, 2 devices
    # 2 processes (one per host, or here two on one machine), all their devices:
    python examples/train_neural_ode.py --coordinator 127.0.0.1:12345 \
        --num-processes 2 --process-id 0 &     # and the same with --process-id 1

Training uses a length curriculum (first 10% of every trajectory, then all of it), an
Optax optimiser, a progress bar with the loss and steps per second, and atomic
checkpoints (every `--checkpoint-every` steps and on Ctrl-C) holding the model, the
optimiser state, the step and the RNG key, so that `--resume` continues exactly.

Data parallelism runs on JAX's own runtime: the training state is replicated over a
one-axis device mesh, and each step solves and differentiates each device's share of
the batch inside `jax.shard_map` (on host backends, each device's callback receives
its own members: no gather onto one device); JAX sums the shards' gradients. Across
processes, `jax.distributed` joins the processes' devices into one mesh. Which
members form a batch depends only on the RNG key, never on the device count, and a
checkpoint holds host arrays, not device layouts: a checkpoint written with N devices
resumes with any other number.
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
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

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


def _local(tree):
    """Each replicated array as this process's copy (on its first device): a plain
    single-device array, whatever the mesh. For evaluation and checkpoints."""
    return jax.tree.map(
        lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)


def _host(tree):
    """`_local(tree)` as NumPy arrays: what a checkpoint holds."""
    return jax.tree.map(lambda x: np.asarray(x) if eqx.is_array(x) else x,
                        _local(tree))


def _replicate(tree, sharding: NamedSharding):
    """Every array of `tree` (equal on every process) copied to every device of
    `sharding`'s mesh, across processes too (`make_array_from_callback` asks each
    process only for its own devices' copies)."""

    def put(x):
        if not eqx.is_array(x):
            return x
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda i: host[i])

    return jax.tree.map(put, tree)


def _save(state: TrainState, directory: Path, meta: dict) -> None:
    """Atomically: write to a temporary file, then rename over the checkpoint. Only
    process 0 writes; the file holds host arrays, so any device count can load it."""
    if jax.process_index() != 0:
        return
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "checkpoint.eqx.tmp"
    eqx.tree_serialise_leaves(tmp, _host(state))
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
    return eqx.tree_deserialise_leaves(path, _host(like))


def _start_runtime(args) -> None:
    """Before JAX starts its backends: join a multi-process run, and on CPU, make as
    many CPU devices as `--devices` asks for (per process)."""
    joined = [args.coordinator, args.num_processes, args.process_id]
    if any(v is not None for v in joined) and any(v is None for v in joined):
        raise ValueError("--coordinator, --num-processes and --process-id go "
                         "together: give all three to join a multi-process run.")
    local = args.devices
    if args.num_processes is not None and args.devices is not None:
        if args.devices % args.num_processes:
            raise ValueError(f"--devices {args.devices} is not a multiple of "
                             f"--num-processes {args.num_processes}: every process "
                             "contributes the same number of devices.")
        local = args.devices // args.num_processes
    if local is not None and local > 1:
        try:
            # Only the CPU backend reads this; GPUs are what the machine has.
            jax.config.update("jax_num_cpu_devices", local)
        except RuntimeError:
            pass  # JAX already started (`main` called in-process): `_mesh` checks
    if args.coordinator is not None and not jax.distributed.is_initialized():
        # CPU devices of different processes need a collectives implementation;
        # GPUs use NCCL whatever this says.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(args.coordinator, args.num_processes,
                                   args.process_id)


def _mesh(devices: int | None) -> Mesh:
    """A one-axis mesh, "data", over the first `devices` devices (default: 1, or in a
    multi-process run every device of every process)."""
    available = jax.devices()
    multi = jax.process_count() > 1
    n = len(available) if devices is None and multi else (devices or 1)
    if n < 1 or n > len(available):
        raise ValueError(
            f"--devices {n}: JAX has {len(available)} "
            f"{available[0].platform.upper()} device(s). On CPU, give --devices to a "
            "fresh start of this script (it then makes that many CPU devices), or set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={n} before starting "
            "Python.")
    if multi and n != len(available):
        raise ValueError(f"--devices {n}: a multi-process run uses every device of "
                         f"every process ({len(available)}); leave --devices out.")
    return Mesh(np.array(available[:n]), ("data",), axis_types=(AxisType.Auto,))


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
    p.add_argument("--devices", type=int, default=None,
                   help="data-parallel over N devices (default 1; in a multi-process "
                   "run, all). On CPU, N > 1 makes N CPU devices.")
    p.add_argument("--reproducible", action="store_true",
                   help="sum the batch's gradients in one fixed order, so that "
                   "training does not depend on the device count, bit for bit; costs "
                   "memory for every member's gradient (batch x parameters)")
    p.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="join a multi-process run: process 0's address")
    p.add_argument("--num-processes", type=int, default=None)
    p.add_argument("--process-id", type=int, default=None)
    args = p.parse_args(argv)
    _start_runtime(args)
    mesh = _mesh(args.devices)
    n_devices = mesh.size
    lead = jax.process_index() == 0  # prints, the progress bar, checkpoints
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
        if lead:
            print(f"resumed from {ckpt} at step {int(state.step)}")
    batch_size = min(args.batch_size, n_batch)
    if batch_size % n_devices:
        raise ValueError(f"--batch-size {batch_size} is not a multiple of the "
                         f"{n_devices} devices: each device takes an equal share of "
                         "the batch. Use a multiple of the device count.")
    replicated = NamedSharding(mesh, P())
    state = _replicate(state, replicated)
    ys_all = _replicate(ys, replicated)

    def make_step(k: int):
        ts_k = ts[:k]  # concrete: its last value ends the integration

        @eqx.filter_jit
        def step(state: TrainState):
            key, sub = jax.random.split(jax.random.wrap_key_data(state.key))
            # The batch depends on the key alone, not on the device count.
            index = jax.random.choice(sub, n_batch, (batch_size,), replace=False)
            target = ys_all[index, :k]
            params, static = eqx.partition(state.model, eqx.is_inexact_array)

            def shard_value_and_grad(params, target):
                # This device's members' share of the batch mean: their sum over the
                # whole batch size. The parameters are replicated, so JAX sums their
                # gradient over the devices (the transpose of handing one copy to
                # each): every device gets the gradient of the batch mean.
                def loss(params):
                    model = eqx.combine(params, static)
                    pred = jax.vmap(lambda y0: model(ts_k, y0))(target[:, 0])
                    per_member = jnp.mean((pred - target) ** 2, axis=(1, 2))
                    return jnp.sum(per_member) / batch_size

                value, grads = jax.value_and_grad(loss)(params)
                return jax.lax.psum(value, "data"), grads

            def shard_value_and_grad_reproducible(params, target):
                # Every member's own loss and gradient, gathered onto every device
                # and summed over the whole batch in one order: the same reduction
                # whatever the device count. (Traced with `check_vma=False`: JAX
                # then neither sums the replicated parameters' gradients over the
                # devices nor needs the gathered sums typed as replicated.)
                def member_loss(params, member):
                    model = eqx.combine(params, static)
                    return jnp.mean((model(ts_k, member[0]) - member) ** 2)

                values, grads = jax.vmap(jax.value_and_grad(member_loss),
                                         in_axes=(None, 0))(params, target)
                values, grads = jax.tree.map(
                    lambda x: jnp.sum(jax.lax.all_gather(x, "data", tiled=True),
                                      axis=0) / batch_size, (values, grads))
                return values, grads

            value, grads = jax.shard_map(
                shard_value_and_grad_reproducible if args.reproducible
                else shard_value_and_grad, mesh=mesh, in_specs=(P(), P("data")),
                out_specs=(P(), P()), check_vma=not args.reproducible)(params, target)
            updates, opt_state = optimiser.update(
                grads, state.opt_state, eqx.filter(state.model, eqx.is_inexact_array))
            model = eqx.apply_updates(state.model, updates)
            return TrainState(model, opt_state, state.step + 1,
                              jax.random.key_data(key)), value

        return step

    def full_mse(model):
        # On this process's own copy of the model: the same on every process.
        model = _local(model)
        pred = jax.vmap(lambda y0: model(ts, y0))(jnp.asarray(ys[:, 0]))
        return pred, float(jnp.mean((pred - ys) ** 2))

    _, initial_mse = full_mse(state.model)
    steps_fns = {}
    losses = []
    stop = args.steps if args.stop_after is None else min(args.steps, args.stop_after)
    start = int(state.step)
    bar = None
    if lead and not args.no_progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=stop, initial=start,
                       desc=f"train [{args.backend}, {n_devices} device(s)]",
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
        if lead:
            print("\ninterrupted", end="")
    finally:
        if bar is not None:
            bar.close()
        if ckpt:
            _save(state, ckpt, meta)
            if lead:
                print(f"checkpoint at step {int(state.step)} in {ckpt}")
    elapsed = time.perf_counter() - t_start
    done = int(state.step) - start
    # Evaluate on all trajectories, full length.
    pred, mse = full_mse(state.model)
    last = losses[-1] if losses else float("nan")
    if lead:
        print(f"[{args.backend}, {n_devices} device(s), {jax.process_count()} "
              f"process(es)] {done} steps in {elapsed:.1f} s "
              f"({done / max(elapsed, 1e-9):.1f} steps/s)")
        print(f"training loss: last {last:.5g}; full-trajectory MSE "
              f"{initial_mse:.5g} before this run, {mse:.5g} after")
    out = figure_path(args.plot, "neural_ode_loss.png") if lead else None
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
    params = np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(
        eqx.filter(_local(state.model), eqx.is_array))])
    return {"losses": losses, "full_mse": mse, "initial_full_mse": initial_mse,
            "step": int(state.step),
            "params": params, "interrupted": interrupted, "devices": n_devices,
            "processes": jax.process_count()}


if __name__ == "__main__":
    main()

"""A child process of `test_sharding.py`'s multi-process test: one of `NUM` JAX
processes (`jax.distributed`, CPU collectives over Gloo), each with one CPU device,
solving its half of a vmapped Lotka-Volterra ensemble. Prints one JSON line: the
gathered values and gradients.

    python sharding_multiprocess_child.py BACKEND NUM PROCESS_ID PORT

With `NUM=1` it runs without `jax.distributed`, on one device: the reference.
"""

import json
import os
import sys

os.environ.setdefault("EQX_ON_ERROR", "raise")
# One CPU device per process (a parent's forced device count must not leak in).
os.environ["XLA_FLAGS"] = ""

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

jax.config.update("jax_enable_x64", True)

import pysciml as ps  # noqa: E402


def lotka_volterra(t, y, a):
    x, z = y[0], y[1]
    return jnp.stack([a[0] * x - a[1] * x * z, a[3] * x * z - a[2] * z])


PROBLEM = ps.ODEProblem(lotka_volterra, 0.0, 1.0)
TS = np.array([0.5, 1.0])
N = 4
Y0 = np.array([1.0, 1.0]) + 0.1 * np.arange(N)[:, None] * np.array([1.0, -0.5])
A = np.array([1.5, 1.0, 3.0, 1.0])


def main():
    name, num, pid, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    backend = "diffrax" if name == "diffrax" else ps.ScipyBackend(batch_mode="loop")
    if num > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                                   num_processes=num, process_id=pid,
                                   initialization_timeout=60)
    assert jax.process_count() == num and len(jax.local_devices()) == 1

    def one(y0, a):
        return ps.solve(PROBLEM, y0, a, saveat=TS, backend=backend, max_steps=64).ys

    def weighted(y0, a, offset):
        w = 1.0 + offset + jnp.arange(y0.shape[0])
        return jnp.sum(w[:, None, None] * jax.vmap(one, (0, None))(y0, a) ** 2)

    if num == 1:  # the reference: no mesh, no sharding
        ys = jax.jit(jax.vmap(one, (0, None)))(Y0, A)
        g_y0, g_a = jax.jit(jax.grad(lambda y0, a: weighted(y0, a, 0), (0, 1)))(Y0, A)
        out = {"ys": ys, "grad_y0": g_y0, "grad_a": g_a, "ys_named": ys,
               "grad_y0_named": g_y0, "grad_a_named": g_a}
        print("JSON:" + json.dumps({k: np.asarray(v).tolist() for k, v in out.items()}
                                   | {"process_count": 1}), flush=True)
        return

    mesh = jax.make_mesh((num,), ("b",), axis_types=(AxisType.Auto,))
    rows = NamedSharding(mesh, P("b"))
    # Each process holds its own members: rows `pid * N/num` to `(pid + 1) * N/num`.
    local = slice(pid * N // num, (pid + 1) * N // num)
    y0 = jax.make_array_from_process_local_data(rows, Y0[local], (N, 2))
    a = jax.make_array_from_process_local_data(NamedSharding(mesh, P()), A)

    # `jax.shard_map`: each process solves its own members.
    def loss(y0, a):
        return jax.lax.psum(weighted(y0, a, jax.lax.axis_index("b") * y0.shape[0]), "b")

    smap = jax.jit(jax.shard_map(jax.vmap(one, (0, None)), mesh=mesh,
                                 in_specs=(P("b"), P()), out_specs=P("b")))
    total = jax.shard_map(loss, mesh=mesh, in_specs=(P("b"), P()), out_specs=P())
    ys = smap(y0, a)
    g_y0, g_a = jax.jit(jax.grad(total, (0, 1)))(y0, a)
    # `jax.jit` with the same global arrays (NamedSharding, Auto axes).
    ys_named = jax.jit(jax.vmap(one, (0, None)))(y0, a)
    g_y0_named, g_a_named = jax.jit(jax.grad(lambda y0, a: weighted(y0, a, 0),
                                             (0, 1)))(y0, a)

    from jax.experimental import multihost_utils

    def gather(x):
        return np.asarray(multihost_utils.process_allgather(x, tiled=True)).tolist()

    out = {"ys": gather(ys), "grad_y0": gather(g_y0), "grad_a": gather(g_a),
           "ys_named": gather(ys_named), "grad_y0_named": gather(g_y0_named),
           "grad_a_named": gather(g_a_named), "process_count": jax.process_count()}
    print("JSON:" + json.dumps(out), flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()

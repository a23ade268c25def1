"""The child process of `test_sharding.py`: a vmapped Lotka-Volterra ensemble, solved
and differentiated unsharded and sharded over 2 CPU devices, printed as one JSON line.

JAX fixes its device count when it starts, so the parent runs this file with
`XLA_FLAGS=--xla_force_host_platform_device_count=2`. Usage:

    python sharding_child.py BACKEND LEVEL

`BACKEND`: "diffrax", "scipy-loop" or "scipy-stack" (`ps.ScipyBackend(batch_mode=...)`),
or "scipy-loop-xla" (with `native_rhs=False`: the right-hand side through XLA
callbacks, from the host thread, while both devices wait in their callbacks);
`LEVEL`: "fast" (the default sensitivity, and the `shard_map` gradient of one
adjoint) or "full" (every case, for both sensitivities). Each case prints its arrays
(values and gradients), the batch sizes that reached the host, and its time, or the
error it raised; the parent compares them with the unsharded reference.
"""

import json
import os
import sys
import time
import traceback

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("EQX_ON_ERROR", "raise")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

jax.config.update("jax_enable_x64", True)

import pysciml as ps  # noqa: E402
from pysciml._backend.host import _backend as host_backend  # noqa: E402

# The batch size of each host callback, in call order.
BATCHES: list[int] = []


class _RecordingBatch(host_backend._Batch):
    def __init__(self, *args):
        super().__init__(*args)
        BATCHES.append(self.size)


host_backend._Batch = _RecordingBatch


def lotka_volterra(t, y, a):
    x, z = y[0], y[1]
    return jnp.stack([a[0] * x - a[1] * x * z, a[3] * x * z - a[2] * z])


PROBLEM = ps.ODEProblem(lotka_volterra, 0.0, 1.0)
TS = jnp.array([0.5, 1.0])
N = 4  # ensemble members: 2 per device
Y0 = jnp.array([1.0, 1.0]) + 0.1 * jnp.arange(N)[:, None] * jnp.array([1.0, -0.5])
A_ITEMS = jnp.array([1.5, 1.0, 3.0, 1.0]) * (1 + 0.05 * jnp.arange(N)[:, None])
A_SHARED = jnp.array([1.5, 1.0, 3.0, 1.0])


def backend_of(name):
    """The backend, its default sensitivity (`None`: forward sensitivities here) and
    an adjoint."""
    if name == "diffrax":
        return "diffrax", [None, ps.DiscreteAdjoint()]
    parts = name.split("-")  # "scipy-MODE", or "scipy-MODE-xla" for XLA callbacks
    native = False if parts[2:] == ["xla"] else "auto"
    backend = ps.ScipyBackend(batch_mode=parts[1], native_rhs=native)
    return backend, [None, ps.InterpolatingAdjoint()]


def grads(pair):
    """`jax.grad(..., (0, 1))`'s output, by name."""
    return {"y0": pair[0], "a": pair[1]}


def run_case(out, name, fn):
    BATCHES.clear()
    start = time.perf_counter()
    try:
        res = jax.tree.map(lambda x: np.asarray(x).tolist(), fn())
        out[name] = {"ok": True, "value": res, "batches": list(BATCHES)}
    except Exception as e:  # reported to the parent, which decides
        out[name] = {"ok": False, "error": f"{type(e).__name__}: {e}",
                     "trace": traceback.format_exc()[-3000:]}
    out[name]["seconds"] = round(time.perf_counter() - start, 2)


def main():
    name, level = sys.argv[1], sys.argv[2]
    backend, sensitivities = backend_of(name)
    full = level == "full"
    assert len(jax.devices()) == 2, jax.devices()
    auto = jax.make_mesh((2,), ("b",), axis_types=(AxisType.Auto,))
    explicit = jax.make_mesh((2,), ("b",), axis_types=(AxisType.Explicit,))
    rows = NamedSharding(auto, P("b"))
    out = {}
    for k, sensitivity in enumerate(sensitivities):
        # Fast, on Diffrax: the adjoint only through `shard_map`'s gradient (its
        # backward pass is the one that re-enters the island at transpose time).
        adjoint_only = k == 1 and not full and name == "diffrax"

        def one(y0, a):
            return ps.solve(PROBLEM, y0, a, saveat=TS, backend=backend,
                            sensitivity=sensitivity, max_steps=64).ys

        def weighted(y0, a, offset=0):
            # Each member weighted by its global index, so that gradients differ.
            w = 1.0 + offset + jnp.arange(y0.shape[0])[:, None, None]
            return jnp.sum(w * jax.vmap(one)(y0, a) ** 2)

        def shared(y0, a):
            return jnp.sum(jax.vmap(one, (0, None))(y0, a) ** 2)

        def member(y0, a):
            return jnp.sum(one(y0, a) ** 2)

        vmapped = jax.vmap(one)
        per_member = jax.vmap(jax.grad(member, (0, 1)), (0, None))

        # Unsharded: the reference.
        def ref():
            res = {"grad_items": grads(jax.jit(jax.grad(weighted, (0, 1)))(Y0, A_ITEMS))}
            if not adjoint_only:
                res |= {"ys": jax.jit(vmapped)(Y0, A_ITEMS),
                        "grad_shared": grads(jax.jit(jax.grad(shared, (0, 1)))(Y0, A_SHARED)),
                        "grad_per_member": grads(jax.jit(per_member)(Y0, A_SHARED))}
            return res
        run_case(out, f"{k}/ref", ref)

        # `jax.shard_map`: values; the gradient of a loss summed over the shards
        # (`psum`), with parameters per member and shared (replicated: its gradient
        # is the sum of the shards'); and gradients taken inside each shard.
        def shard_map(check_vma):
            def smap(f, in_specs, out_specs):
                return jax.jit(jax.shard_map(f, mesh=auto, in_specs=in_specs,
                                             out_specs=out_specs, check_vma=check_vma))

            def total(loss, a_spec):
                local = smap(lambda y0, a: jax.lax.psum(loss(y0, a), "b"),
                             (P("b"), a_spec), P())
                return lambda y0, a: grads(jax.grad(local, (0, 1))(y0, a))

            def weighted_shard(y0, a):
                return weighted(y0, a, jax.lax.axis_index("b") * y0.shape[0])

            res = {"grad_items": total(weighted_shard, P("b"))(Y0, A_ITEMS)}
            if not adjoint_only:
                res |= {
                    "ys": smap(vmapped, (P("b"), P("b")), P("b"))(Y0, A_ITEMS),
                    "grad_shared": total(shared, P())(Y0, A_SHARED),
                    "grad_per_member": grads(smap(per_member, (P("b"), P()),
                                                  (P("b"), P("b")))(Y0, A_SHARED)),
                }
            return res
        run_case(out, f"{k}/shard_map", lambda: shard_map(True))
        if full:
            run_case(out, f"{k}/shard_map_no_vma", lambda: shard_map(False))
        if adjoint_only:
            continue

        # `jax.jit` with NamedSharding inputs (Auto axes).
        def named():
            y0, a = jax.device_put(Y0, rows), jax.device_put(A_ITEMS, rows)
            ys = jax.jit(vmapped)(y0, a)
            res = {"ys": ys, "ys_spec": str(ys.sharding.spec)}
            if full or name != "diffrax":
                res |= {
                    "grad_items": grads(jax.jit(jax.grad(weighted, (0, 1)))(y0, a)),
                    "grad_shared": grads(jax.jit(jax.grad(shared, (0, 1)))(
                        y0, jax.device_put(A_SHARED))),
                }
            return res
        if full or name != "diffrax":
            run_case(out, f"{k}/named", named)

        if k == 0:
            # Explicit axes: `jit(vmap)` over an Explicit-sharded batch raises
            # pysciml's error (a JAX 0.10 limitation); `shard_map` works.
            def explicit_case(inside_shard_map):
                with jax.set_mesh(explicit):
                    rows_x = NamedSharding(explicit, P("b"))
                    y0, a = jax.device_put(Y0, rows_x), jax.device_put(A_ITEMS, rows_x)
                    f = jax.shard_map(vmapped, out_specs=P("b")) \
                        if inside_shard_map else vmapped
                    return {"ys": jax.jit(f)(y0, a)}
            run_case(out, f"{k}/explicit_vmap", lambda: explicit_case(False))

            # A `shard_map` manual over some axes only: pysciml's error.
            def partial_manual():
                mesh = jax.make_mesh((2, 1), ("b", "m"), axis_types=(AxisType.Auto,) * 2)
                f = jax.shard_map(vmapped, mesh=mesh, in_specs=(P("b"), P("b")),
                                  out_specs=P("b"), axis_names={"b"})
                return {"ys": jax.jit(f)(Y0, A_ITEMS)}
            run_case(out, f"{k}/partial_manual", partial_manual)
            if full:
                run_case(out, f"{k}/explicit_shard_map", lambda: explicit_case(True))
    print("JSON:" + json.dumps(out))


if __name__ == "__main__":
    main()

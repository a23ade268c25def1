"""CPU scaling: a Lotka–Volterra ensemble, forward and gradient, on one CPU device
against two devices in one process and two `jax.distributed` processes (issue 15,
"Scale out").

    .venv/bin/python benchmarks/scaling.py            # B = 16384, 11 rounds
    .venv/bin/python benchmarks/scaling.py --quick    # B = 256, 3 rounds: NOT figures
    .venv/bin/python benchmarks/scaling.py --scipy    # also SciPy, B = 1024

Expected duration on a quiet 2-core machine: about 8–9 minutes for the full run
(estimated from `1dev` alone, where one forward of the whole ensemble takes 1.2 s and
one gradient 5.5 s: about 2 min to start the 7 child processes, compile and warm up,
half a minute for the warm-up round, then 11 rounds of about 5 s forward and 25 s
gradient); about 1.5–2 minutes for `--quick`; `--scipy` adds its children's start and
its rounds.

What it measures. The ensemble of `gpu.py`'s `lv64` section (its field and constants,
imported), float64: `p = [1.5, 1, 3, 1]` times an independent U(0.8, 1.2) factor per
entry and member, `y0 = [1, 1]`, span [0, 15], 20 save times, Tsit5, rtol 1e-6, atol
1e-8, max_steps 4096, `backend="diffrax"`. Forward: `jit(vmap(solve))` returning
`ys`; gradient: `jit(grad(loss))`, loss = sum over the batch of `sum(ys**2)`, with
respect to the (B, 4) parameters, `sensitivity=ps.DiscreteAdjoint()`. The
configurations (`--configs`), each in child processes of its own, since JAX fixes its
devices when it starts:

- `1dev`: one process, one CPU device, plain `jit(vmap)`: the anchor.
- `2dev`: one process, two CPU devices (`--xla_force_host_platform_device_count=2`),
  the batch sharded with `NamedSharding(mesh, P("batch"))` (Auto axes) under `jit`.
- `2dev-shard_map`: the same devices, the vmapped solve inside `jax.shard_map` over
  the batch axis (the gradient: of the `psum` of the shards' losses).
- `2proc`: two `jax.distributed` processes on 127.0.0.1 (Gloo CPU collectives), one
  CPU device each, a global mesh over both, the batch sharded as in `2dev`; each
  process builds its half with `jax.make_array_from_process_local_data`.
- `2proc-shard_map`: the same two processes, the solve inside `jax.shard_map` as in
  `2dev-shard_map`.

Under `jit` with a sharded batch, XLA partitions the vmapped while loop, whose
condition (some member not done) needs every shard: an all-reduce every step, between
threads (`2dev`) or over TCP (`2proc`). Inside `shard_map`, each shard runs its own
loop, to its own slowest member, with no collective (the gradient's loss: one scalar
`psum`). The table gives the collectives in each compiled program.

Method (as `_common.compare`, across processes). The parent (which never imports JAX)
starts every configuration's processes once; each builds, compiles and warms up its
two functions, writes its outputs (its addressable shards) and waits on stdin, idle.
The parent checks every configuration's values and gradients against `1dev`'s (rtol
1e-10, relative to the largest entry for entries near zero). An untimed warm-up round
follows, whose `1dev` sample sets the calls per sample (the same for every
configuration: about `--target-s`, at least one). Then per case (forward, then
gradient) `--rounds` interleaved rounds: each round asks every configuration in turn,
the order reversed every other round, to time one sample, which ends in
`jax.block_until_ready`, and reads the time back; both processes of a `2proc`
configuration get the command, and the slower one's time counts. A figure is the
median [IQR] over rounds of the paired ratio time(`1dev`) / time(configuration) of the
same round: a throughput ratio against one device, > 1 faster. Also reported: the
time per call, µs per solve (call time / B) and the cores busy during a sample (CPU
time of all the configuration's processes over the sample's wall time; threads of
XLA's pool that spin while they wait for work count as busy). Everything
goes through `_common.Run` (JSON under `out/bench/`, with the load average per round
and the tail of each child's stderr); a dirty tree, or `--quick`, gives NOT A FIGURE.

What bounds the speed-up. The machine has 2 cores, and XLA's CPU backend already uses
more than one core for one device (its intra-op thread pool splits large operations:
at B = 16384, `1dev` keeps about 1.6 cores busy), so two devices can gain much less
than 2x; at B = 256 (`--quick`) `1dev` keeps 1 core busy in the forward, 1.5 in the
gradient. Other work on the machine distorts every figure, both ways (a process with two
busy threads gets a larger share of a loaded machine; `2proc`'s per-step all-reduce
waits for both processes to be scheduled): the CPU count and the load average are in
the JSON, and figures need a quiet machine.

`--scipy` adds the host path: `backend="scipy"` (its default sensitivity and its
default `batch_mode="stack"`, each shard's members solved as one system), at
`--scipy-batch` (1024) members, for `1dev`, `2dev-shard_map` (inside `shard_map` each
device's callback gets its own shard; under `jit` with NamedSharding, XLA would run
the callback once on the gathered batch) and `2proc-shard_map` (one Python, one GIL,
per process). A stacked system's steps depend on all its members, so the values are
checked within the solve's tolerance (rtol 1e-4) there.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Neither imports JAX at module level: the parent never starts JAX (its children do).
from _common import (  # noqa: E402
    Run,
    Timing,
    add_rounds_arguments,
    provenance,
    ratio_cell,
    rounds_of,
    summarize,
)
from gpu import ATOL, LV_NSAVE, LV_P, LV_T1, MAX_STEPS, RTOL, lv_field  # noqa: E402

ANCHOR = "1dev"
DEVICES_FLAG = "--xla_force_host_platform_device_count"
CASES = {"fwd": "forward", "grad": "gradient"}
# The same values as 1dev's: to rounding on Diffrax (each member's steps are its own);
# within the solve's tolerance on SciPy, whose default `batch_mode="stack"` solves a
# batch (here: one shard's) as one system, with steps set by all its members.
CHECK_RTOL = {"diffrax": 1e-10, "scipy": 1e-4}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all",
               "collective-permute")


@dataclass(frozen=True)
class Config:
    """One configuration: `processes` JAX processes with `devices` CPU devices each,
    the batch run by `mode`: "jit" (unsharded), "named" (NamedSharding under `jit`) or
    "shard_map"."""

    processes: int
    devices: int
    mode: str

    @property
    def shape(self) -> str:
        return f"{self.processes} proc x {self.devices} dev"


CONFIGS = {
    "1dev": Config(1, 1, "jit"),
    "2dev": Config(1, 2, "named"),
    "2dev-shard_map": Config(1, 2, "shard_map"),
    "2proc": Config(2, 1, "named"),
    "2proc-shard_map": Config(2, 1, "shard_map"),
}
DEFAULT_CONFIGS = tuple(CONFIGS)
SCIPY_CONFIGS = ("1dev", "2dev-shard_map", "2proc-shard_map")


# ------------------------------------------------------------------ child


def child_main(opts) -> int:
    """One JAX process of one configuration: builds, checks in, then serves "time"
    commands from stdin until "quit" or end of input. Replies are JSON lines on the
    original stdout; everything else that writes to stdout goes to stderr (the
    parent's log of this child), so that no library output mixes with them."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def send(**msg) -> None:
        proto.write(json.dumps(msg, default=str) + "\n")
        proto.flush()

    cfg = CONFIGS[opts.child]
    try:
        fns, info = child_build(opts, cfg)
    except BaseException:
        send(event="error", trace=traceback.format_exc())
        return 1
    send(event="ready", **info)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        try:
            fn, n = fns[cmd["case"]], cmd["calls"]
            t, cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                fn()
            # CPU time of all this process's threads: how many cores one sample kept
            # busy (XLA's CPU thread pools may use more than one per device).
            send(event="sample", seconds=time.perf_counter() - t,
                 cpu_seconds=time.process_time() - cpu, calls=n)
        except BaseException:
            send(event="error", trace=traceback.format_exc())
            return 1
    if cfg.processes > 1:
        import jax

        jax.distributed.shutdown()
    return 0


def child_build(opts, cfg: Config) -> tuple[dict, dict]:
    """Starts JAX as `cfg` says, builds the forward and gradient functions, compiles
    and warms them up, and saves their outputs' addressable shards under
    `opts.tmp`. Returns `{case: call}` (each call blocks until ready) and what to
    report to the parent."""
    import jax

    jax.config.update("jax_enable_x64", True)
    if cfg.processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{opts.port}",
                                   num_processes=cfg.processes,
                                   process_id=opts.process_id,
                                   initialization_timeout=int(opts.timeout_s))
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    import pysciml as ps

    assert jax.process_count() == cfg.processes, jax.process_count()
    assert len(jax.local_devices()) == cfg.devices, jax.local_devices()
    B, pid = opts.batch, jax.process_index()
    ts = jnp.linspace(0.0, LV_T1, LV_NSAVE, dtype=jnp.float64)
    y0 = np.array([1.0, 1.0])
    # Every process draws the whole batch (the same key as gpu.py) and keeps its rows.
    params = np.asarray(jnp.asarray(LV_P, jnp.float64) * jax.random.uniform(
        jax.random.key(B), (B, 4), jnp.float64, minval=0.8, maxval=1.2))
    problem = ps.ODEProblem(lv_field, 0.0, LV_T1)
    if opts.backend == "diffrax":
        backend, sensitivity = "diffrax", ps.DiscreteAdjoint()
        solver = ps.Tsit5()
    else:
        backend, sensitivity, solver = "scipy", None, None

    def one(y0, p):
        return ps.solve(problem, y0, p, saveat=ts, backend=backend, solver=solver,
                        rtol=RTOL, atol=ATOL, max_steps=MAX_STEPS,
                        sensitivity=sensitivity).ys

    def fwd(y0, P_):
        return jax.vmap(one, in_axes=(None, 0))(y0, P_)

    def loss(P_, y0):
        return jnp.sum(fwd(y0, P_) ** 2)

    if cfg.mode == "jit":
        y0_in, params_in = jnp.asarray(y0), jnp.asarray(params)
    else:
        mesh = jax.make_mesh((cfg.processes * cfg.devices,), ("batch",),
                             axis_types=(AxisType.Auto,))
        rows, replicated = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())
        n = B // jax.process_count()
        params_in = jax.make_array_from_process_local_data(
            rows, params[pid * n:(pid + 1) * n], (B, 4))
        y0_in = jax.make_array_from_process_local_data(replicated, y0)
    if cfg.mode == "shard_map":
        fwd_fn = jax.shard_map(fwd, mesh=mesh, in_specs=(P(), P("batch")),
                               out_specs=P("batch"))
        # The gradient of the global loss: each shard's loss, summed over shards.
        total = jax.shard_map(lambda P_, y0: jax.lax.psum(loss(P_, y0), "batch"),
                              mesh=mesh, in_specs=(P("batch"), P()), out_specs=P())
        grad_fn = jax.grad(total)
    else:
        fwd_fn, grad_fn = fwd, jax.grad(loss)
    specs = {"fwd": (fwd_fn, (y0_in, params_in)), "grad": (grad_fn, (params_in, y0_in))}

    fns, info = {}, {}
    for case, (fn, args) in specs.items():
        t = time.perf_counter()
        lowered = jax.jit(fn).lower(*args)
        t_lower = time.perf_counter() - t
        t = time.perf_counter()
        compiled = lowered.compile()
        t_compile = time.perf_counter() - t
        hlo = compiled.as_text() or ""
        t = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        t_first = time.perf_counter() - t
        for _ in range(opts.warmup):
            jax.block_until_ready(compiled(*args))
        info[case] = {
            "lower_s": t_lower, "compile_s": t_compile, "first_call_s": t_first,
            "collectives_in_hlo": {c: hlo.count(f" {c}(") + hlo.count(f" {c}-start(")
                                   for c in COLLECTIVES},
            "out_sharding": str(out.sharding),
            "out": save_shards(out, Path(opts.tmp)
                               / f"{opts.backend}_{opts.child}_{case}_p{pid}"),
        }
        fns[case] = (lambda c=compiled, a=args: jax.block_until_ready(c(*a)))
    info["process"] = {
        "pid": os.getpid(), "process_index": pid,
        "process_count": jax.process_count(),
        "devices": [repr(d) for d in jax.devices()],
        "local_devices": [repr(d) for d in jax.local_devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "jax": jax.__version__,
        "backend": opts.backend, "sensitivity": repr(sensitivity),
        "default_sensitivity": repr(ps.get_backend(backend).default_sensitivity),
    }
    return fns, info


def save_shards(x, prefix: Path) -> dict:
    """Writes each addressable shard of `x` to `.npy` files: `{"shape", "pieces":
    [{"file", "index": [[start, stop], ...]}]}`, for the parent to reassemble."""
    import numpy as np

    pieces = []
    for k, shard in enumerate(x.addressable_shards):
        path = f"{prefix}_{k}.npy"
        np.save(path, np.asarray(shard.data))
        index = [list(s.indices(n)[:2]) for s, n in zip(shard.index, x.shape)]
        pieces.append({"file": path, "index": index})
    return {"shape": list(x.shape), "pieces": pieces}


# ------------------------------------------------------------------ parent


class ChildError(RuntimeError):
    pass


class Child:
    """One child process: JSON commands on its stdin, JSON replies read from its
    stdout by a thread (so that every wait has a timeout), stderr to a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict, log: Path,
                 timeout_s: float):
        self.name, self.log, self.timeout_s = name, log, timeout_s
        self._log_fh = open(log, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log_fh,
                                     env=env, text=True, bufsize=1)
        self._replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self._replies.put(json.loads(line))
        self._replies.put(None)  # end of output: the child exited

    def send(self, **cmd) -> None:
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise ChildError(f"{self.name}: cannot write to the child ({e!r})"
                             f"{self.log_tail()}") from e

    def reply(self) -> dict:
        try:
            msg = self._replies.get(timeout=self.timeout_s)
        except queue.Empty:
            raise ChildError(f"{self.name}: no reply in {self.timeout_s:.0f} s"
                             f"{self.log_tail()}") from None
        if msg is None:
            raise ChildError(f"{self.name}: exited (status {self.proc.wait()})"
                             f"{self.log_tail()}")
        if msg.get("event") == "error":
            raise ChildError(f"{self.name}: raised\n{msg['trace']}{self.log_tail()}")
        return msg

    def log_tail(self, n: int = 3000) -> str:
        try:
            text = self.log.read_text()[-n:]
        except OSError:
            return ""
        return f"\n--- end of {self.name}'s stderr ---\n{text}"

    def quit(self) -> None:
        """Asks the child to quit (it also quits at the end of its input)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ChildError, ValueError):
                self.send(cmd="quit")
        with contextlib.suppress(OSError):
            self.proc.stdin.close()

    def close(self, grace_s: float) -> None:
        """Waits `grace_s` seconds for the child to exit after `quit`, then kills it."""
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log_fh.close()


class Group:
    """The child processes of one configuration (two for `2proc`)."""

    def __init__(self, name: str, cfg: Config, children: list[Child]):
        self.name, self.cfg, self.children = name, cfg, children
        self.ready: list[dict] = []

    def wait_ready(self) -> None:
        self.ready = [c.reply() for c in self.children]

    def sample(self, case: str, calls: int) -> tuple[float, float]:
        """One sample of `calls` calls: every process gets the command (collectives
        need them all). Returns the seconds per call of the slowest process, and the
        cores kept busy (CPU seconds of all processes over that time)."""
        for c in self.children:
            c.send(cmd="time", case=case, calls=calls)
        replies = [c.reply() for c in self.children]
        wall = max(r["seconds"] for r in replies)
        return wall / calls, sum(r["cpu_seconds"] for r in replies) / wall


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(cfg: Config) -> dict:
    """The parent's environment, with exactly `cfg.devices` CPU devices and this
    checkout first on the path."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith(DEVICES_FLAG)]
    if cfg.devices > 1:
        flags.append(f"{DEVICES_FLAG}={cfg.devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    env["JAX_PLATFORMS"] = "cpu"
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        [repo] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def start_group(name: str, cfg: Config, backend: str, opts, tmp: Path,
                started: list[Child]) -> Group:
    """Starts the processes of one configuration, each also appended to `started`
    at once (to be stopped whatever happens next)."""
    port = str(free_port()) if cfg.processes > 1 else "0"
    children = []
    for i in range(cfg.processes):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--backend",
               backend, "--batch", str(opts.batch_of[backend]), "--process-id", str(i),
               "--port", port, "--tmp", str(tmp), "--warmup", str(opts.warmup),
               "--timeout-s", str(opts.timeout_s)]
        label = f"{backend}/{name}" + (f"[{i}]" if cfg.processes > 1 else "")
        log = tmp / f"{backend}_{name}_p{i}.log"
        children.append(Child(label, cmd, child_env(cfg), log, opts.timeout_s))
        started.append(children[-1])
    return Group(name, cfg, children)


def assemble(out: dict):
    """The global array from the pieces that the processes of one group saved."""
    import numpy as np

    x = np.full(out["shape"], np.nan)
    for piece in out["pieces"]:
        x[tuple(slice(a, b) for a, b in piece["index"])] = np.load(piece["file"])
    return x


def merged_outputs(group: Group, case: str) -> dict:
    outs = [r[case]["out"] for r in group.ready]
    return {"shape": outs[0]["shape"], "pieces": [p for o in outs for p in o["pieces"]]}


def check_same(group: Group, anchor: Group, case: str, rtol: float) -> dict:
    """`group`'s output of `case` against the anchor's: the worst |diff| / (rtol |ref|
    + atol), atol = rtol * max |ref| (entries near zero are judged normwise)."""
    import numpy as np

    got = assemble(merged_outputs(group, case))
    ref = assemble(merged_outputs(anchor, case))
    if got.shape != ref.shape or np.isnan(got).any():
        return {"ok": False,
                "why": f"shape {got.shape} vs {ref.shape}, or rows missing"}
    atol = rtol * float(np.max(np.abs(ref)))
    worst = float(np.max(np.abs(got - ref) / (rtol * np.abs(ref) + atol)))
    return {"ok": worst <= 1.0, "worst_diff_over_tol": worst, "rtol": rtol,
            "atol": atol, "max_abs_diff": float(np.max(np.abs(got - ref)))}


def check_section(backend: str, groups: dict[str, Group]) -> dict:
    """`{case: {name: check}}` of every configuration against the anchor, printed."""
    checks = {}
    for case, what in CASES.items():
        checks[case] = {}
        for n, g in groups.items():
            if n == ANCHOR:
                continue
            c = check_same(g, groups[ANCHOR], case, CHECK_RTOL[backend])
            checks[case][n] = c
            status = (f"same values (rtol {c['rtol']:g}; worst |diff| / tol "
                      f"{c['worst_diff_over_tol']:.2g})" if c["ok"]
                      else f"VALUES DIFFER: {c}")
            print(f"# {backend} {what}: {n} against {ANCHOR}: {status}", flush=True)
    return checks


def time_rounds(groups: dict[str, Group], case: str, calls: int,
                rounds: int) -> tuple[Timing, dict, list]:
    """`rounds` interleaved rounds of `case`, the order reversed every other round.
    Returns the `Timing`, the cores busy per sample and the load average per round."""
    names = list(groups)
    samples: dict[str, list[float]] = {n: [] for n in names}
    cores: dict[str, list[float]] = {n: [] for n in names}
    loads = []
    for r in range(rounds):
        loads.append(os.getloadavg()[0] if hasattr(os, "getloadavg") else None)
        for n in names if r % 2 == 0 else names[::-1]:
            seconds, busy = groups[n].sample(case, calls)
            samples[n].append(seconds)
            cores[n].append(busy)
    return Timing(names, samples, {n: calls for n in names}, rounds), cores, loads


def time_section(run: Run, backend: str, groups: dict[str, Group], opts,
                 rounds: int) -> list[dict]:
    """Checks the values, then per case a warm-up round and `rounds` timed rounds;
    records each case's rounds and figures. Returns the table's rows."""
    B = opts.batch_of[backend]
    checks = check_section(backend, groups)
    rows = []
    for case, what in CASES.items():
        # The warm-up round, untimed; the anchor's sample sets the calls per sample.
        t1, _ = groups[ANCHOR].sample(case, 1)
        calls = max(1, round(opts.target_s / t1))
        for n, g in groups.items():
            if n != ANCHOR:
                g.sample(case, calls)
        t = time.perf_counter()
        timing, cores, loads = time_rounds(groups, case, calls, rounds)
        label = f"LV float64 {backend} B={B} {what}"
        run.add(f"{backend}/{case}", timing, label=label, batch=B, backend=backend,
                configs={n: {"processes": g.cfg.processes, "devices_per_process":
                             g.cfg.devices, "mode": g.cfg.mode}
                         for n, g in groups.items()},
                children={n: g.ready for n, g in groups.items()},
                checks=checks[case], cores_busy_per_sample=cores,
                load_average_1min_per_round=loads, warmup_anchor_s=t1,
                timing_s=time.perf_counter() - t)
        for n, g in groups.items():
            ready = g.ready[0][case]
            row = {"case": label, "config": n, "shape": g.cfg.shape,
                   "times": timing.times(n),
                   "us_per_solve": summarize([x * 1e6 / B
                                              for x in timing.samples[n]]),
                   "cores": summarize(cores[n]), "ratio": None, "same": "anchor",
                   "collectives": sum(ready["collectives_in_hlo"].values())}
            if n != ANCHOR:
                ok = checks[case][n]["ok"]
                row["same"] = "yes" if ok else "NO"
                row["ratio"] = run.figure(
                    f"{label}: {n} ({g.cfg.shape}, {g.cfg.mode})",
                    timing.ratios(ANCHOR, n),
                    anchor=f"{ANCHOR}: 1 process, 1 CPU device, jit(vmap), same rounds",
                    what="time(1dev) / time(config) (throughput; > 1 faster)",
                    note=None if ok else "values differ from 1dev's")
            rows.append(row)
    return rows


def print_table(rows: list[dict], is_figure: bool) -> None:
    print(f"\n# Throughput against one CPU device, paired ratio time(1dev) / "
          f"time(config) per round, median [IQR]; > 1 is faster"
          f"{'' if is_figure else ' (NOT figures: see header)'}.\n")
    print("| case | config | processes x devices | ms per call [IQR] | µs per solve "
          "| ratio vs 1dev [IQR] | rounds | cores busy | collectives in HLO | same "
          "values |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        s = r["times"]
        ms_cell = (f"{1e3 * s.median:.1f} [{1e3 * s.q1:.1f}, {1e3 * s.q3:.1f}]")
        ratio = "1 (anchor)" if r["ratio"] is None else ratio_cell(r["ratio"], 2)
        print(f"| {r['case']} | {r['config']} | {r['shape']} | {ms_cell} | "
              f"{r['us_per_solve'].median:.1f} | {ratio} | {s.n} | "
              f"{r['cores'].median:.2f} | {r['collectives']} | {r['same']} |")


def parent_main(opts) -> int:
    rounds = rounds_of(opts)
    prov = provenance()
    if opts.quick:
        prov["not_a_figure_because"].append("a --quick smoke run (small batch, few "
                                            "rounds)")
    run = Run("scaling", prov=prov)
    run.extra.update(options={k: v for k, v in vars(opts).items()
                              if not k.startswith("_")}, rounds=rounds)
    sections = [("diffrax", opts.configs)]
    if opts.scipy:
        sections.append(("scipy", [n for n in SCIPY_CONFIGS if n in opts.configs]))
    tmp = Path(tempfile.mkdtemp(prefix="pysciml_scaling_"))
    groups: dict[str, dict[str, Group]] = {}
    started: list[Child] = []
    rows: list[dict] = []
    t0 = time.perf_counter()
    try:
        # Every child starts (and compiles) at once: the build is CPU-bound either way.
        for backend, names in sections:
            groups[backend] = {n: start_group(n, CONFIGS[n], backend, opts, tmp,
                                              started) for n in names}
        for backend, gs in groups.items():
            for n, g in gs.items():
                g.wait_ready()
                info = "; ".join(
                    f"{what}: compile {r['compile_s']:.1f} s, first call "
                    f"{r['first_call_s']:.2f} s, "
                    f"{sum(r['collectives_in_hlo'].values())} collectives"
                    for what, r in ((w, g.ready[0][c]) for c, w in CASES.items()))
                print(f"# {backend}/{n} ready after {time.perf_counter() - t0:.0f} s: "
                      f"{info}", flush=True)
        run.extra["startup_s"] = time.perf_counter() - t0
        for backend, gs in groups.items():
            rows += time_section(run, backend, gs, opts, rounds)
    finally:
        # Also on an error or an interrupt: no child outlives this process.
        # Every child is asked first: two processes quit together (a shutdown barrier).
        for c in started:
            c.quit()
        logs, deadline = {}, time.monotonic() + 30.0
        for c in started:
            c.close(grace_s=max(0.1, deadline - time.monotonic()))
            logs[c.name] = c.log_tail(2000)
        run.extra["children_stderr_tail"] = logs
        run.save()
        shutil.rmtree(tmp, ignore_errors=True)
    run.extra["total_s"] = time.perf_counter() - t0
    run.save()
    print_table(rows, run.is_figure)
    run.footer()
    return 0


def _terminate(signum, frame):
    # A plain exit, so that `parent_main`'s `finally` kills the children.
    raise SystemExit(128 + signum)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_rounds_arguments(p, default=11, quick=3)
    p.add_argument("--batch", type=int, default=None,
                   help="ensemble members (default 16384; --quick: 256)")
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                   help=f"comma-separated, from {','.join(CONFIGS)} "
                        f"(default: all; {ANCHOR} always)")
    p.add_argument("--scipy", action="store_true",
                   help="also backend='scipy' at --scipy-batch, for "
                        f"{', '.join(SCIPY_CONFIGS)}")
    p.add_argument("--scipy-batch", type=int, default=None,
                   help="ensemble members on SciPy (default 1024; --quick: 64)")
    p.add_argument("--target-s", type=float, default=0.2,
                   help="calls per sample: about this long on 1dev, at least one")
    p.add_argument("--warmup", type=int, default=1,
                   help="calls after the first, in each child before it checks in")
    p.add_argument("--timeout-s", type=float, default=900.0,
                   help="the longest wait on a child: its start and compile, or one "
                        "sample (default 900)")
    # A child of this script (internal).
    p.add_argument("--child", choices=list(CONFIGS), help=argparse.SUPPRESS)
    p.add_argument("--backend", default="diffrax", help=argparse.SUPPRESS)
    p.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--port", default="0", help=argparse.SUPPRESS)
    p.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.child:
        return opts
    if opts.batch is None:
        opts.batch = 256 if opts.quick else 16384
    if opts.scipy_batch is None:
        opts.scipy_batch = 64 if opts.quick else 1024
    opts.batch_of = {"diffrax": opts.batch, "scipy": opts.scipy_batch}
    names = [s.strip() for s in opts.configs.split(",") if s.strip()]
    bad = [n for n in names if n not in CONFIGS]
    if bad:
        p.error(f"unknown configurations {bad}; choose from {list(CONFIGS)}")
    opts.configs = [ANCHOR] + [n for n in names if n != ANCHOR]
    for b in opts.batch_of.values():
        if b % 2:
            p.error("the batch sizes must be even (split over 2 devices)")
    return opts


def main(argv=None) -> int:
    opts = parse(argv)
    if opts.child:
        return child_main(opts)
    signal.signal(signal.SIGTERM, _terminate)
    return parent_main(opts)


if __name__ == "__main__":
    sys.exit(main())

"""The child process of `test_host_ctrl_c.py`: a long jitted host solve whose callback
XLA runs on one of its own threads (the solve's input is still being computed when
the solve is dispatched), interrupted by the parent with SIGINT.

Prints "started", then how the solve ended, "alive", and the threads that called the
host.
"""

import signal
import sys
import threading
import time

import jax
import jax.numpy as jnp

import pysciml as ps
from pysciml._backend.host._thread import HostThread

CALLERS: set[str] = set()
_run = HostThread.run.__func__


def _recording_run(cls, fn, *args):
    CALLERS.add(threading.current_thread().name)
    return _run(cls, fn, *args)


HostThread.run = classmethod(_recording_run)


def lv(t, y, p):
    return jnp.stack([p[0] * y[0] - p[1] * y[0] * y[1], -p[2] * y[1] + p[3] * y[0] * y[1]])


def main():
    # Python's handler even where this process inherited an ignored SIGINT (a test run
    # started in the background: `cmd &` in a non-interactive shell, or `nohup`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    backend = sys.argv[1]
    p = jnp.array([1.5, 1.0, 3.0, 1.0])
    m = jnp.ones((2000, 2000))

    def solve(t1, y0):
        problem = ps.ODEProblem(lv, 0.0, t1)
        return ps.solve(problem, y0, p, saveat=jnp.array([t1]), backend=backend,
                        rtol=1e-12, atol=1e-12, max_steps=10**9).ys

    long = jax.jit(lambda y: solve(1e6, y))
    long.lower(jnp.ones(2)).compile()
    print("started", flush=True)
    outcome = []
    try:
        try:
            # Dispatched while its input is still being computed: XLA then runs it,
            # and the host callback, on one of its own threads.
            jax.block_until_ready(long((m @ m @ m @ m)[0, :2] * 0 + 1))
            outcome.append("finished")
        except Exception as e:
            outcome.append(f"raised {type(e).__name__} "
                           f"{'interrupted by Ctrl-C' in str(e)}")
        # Python still owes the main thread its KeyboardInterrupt: it comes as soon
        # as the main thread runs Python again (here, or in the handler above).
        time.sleep(1.0)
    except KeyboardInterrupt:
        outcome.append("KeyboardInterrupt")
    print(" ".join(outcome), flush=True)
    print("alive", flush=True)
    print("callers", sorted(CALLERS), flush=True)


if __name__ == "__main__":
    main()

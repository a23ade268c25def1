"""The only module that imports juliacall.

Julia is started lazily, on the first use of `backend="julia"`, and on pysciml's host
thread (see `HostThread`): every later call into Julia comes from that same thread, and
so does Julia's shutdown (`_shutdown`).

Whether Julia *can* start is juliacall's decision, not ours: `import juliacall` runs
`juliapkg.resolve()`, which finds a Julia (on `PATH`, `PYTHON_JULIAPKG_EXE`, or one it
installed before) or installs one into its own prefix, which is never on `PATH`. So
the backend counts as available once juliacall is importable, and a failed start is
reported with juliacall's own reason.
"""

import atexit
import ctypes
import importlib.util
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import NamedTuple

from ._backend.host import HostThread

MSG_NO_JULIA = """\
The Julia backend is not available: {reason}

To enable it:
  1. pip install "pysciml[julia]"        # installs juliacall
  2. On first use juliacall finds Julia (on PATH, or PYTHON_JULIAPKG_EXE), or
     downloads it and the packages in pysciml/juliapkg.json (needs internet; the
     first start precompiles for several minutes). To control that:
       PYTHON_JULIAPKG_EXE=/path/to/julia          # use this Julia binary
       PYTHON_JULIAPKG_PROJECT=/path/to/env        # and/or this Julia environment
       PYTHON_JULIAPKG_OFFLINE=yes                 # never download anything (offline
                                                   # use: Julia and the packages must
                                                   # already be installed)
     (for a fully prepared environment: PYTHON_JULIACALL_EXE and
     PYTHON_JULIACALL_PROJECT together).
  3. Warm up once: python -m pysciml julia --warmup
     Then check the bridge: python -m pysciml julia --selftest

Or use another backend: solve(..., backend="diffrax") or backend="scipy"."""


class JuliaNotAvailableError(RuntimeError):
    """Raised by `backend="julia"` where Julia cannot be started. `reason` says why
    (juliacall's own words where it gave them); the message adds how to enable Julia."""

    def __init__(self, reason: str):
        super().__init__(MSG_NO_JULIA.format(reason=reason))
        self.reason = reason


class JuliaStatus(NamedTuple):
    available: bool
    reason: str


def _juliacall_running() -> bool:
    module = sys.modules.get("juliacall")
    return bool(getattr(module, "CONFIG", {}).get("inited"))


def julia_status() -> JuliaStatus:
    """Whether the Julia backend may be used here, without starting Julia.

    **Returns:**

    A `JuliaStatus(available, reason)`. `available` means that juliacall is installed
    (or Julia already runs in this process); whether Julia then starts is known only
    by starting it (`julia_probe` does so in a child process).
    """
    if _failure is not None:
        return JuliaStatus(False, _failure.reason)
    if _juliacall_running():
        return JuliaStatus(True, "Julia is running in this process")
    if importlib.util.find_spec("juliacall") is None:
        return JuliaStatus(False, "the Python package `juliacall` is not installed.")
    return JuliaStatus(
        True,
        "juliacall is installed; it finds Julia, or installs it, on first use",
    )


_PROBE = """
import sys
from pysciml import _julia
try:
    _julia.julia_module()
except _julia.JuliaNotAvailableError as e:
    print("pysciml-julia-probe-failed:" + e.reason)
    sys.exit(1)
print("pysciml-julia-probe-ok")
"""


def julia_probe(timeout: float | None = None) -> JuliaStatus:
    """Starts the Julia backend in a child Python process, to learn whether it starts
    here without risking this process: the skip condition of the `julia`-marked
    tests, with the same logic as `backend="julia"` itself.

    **Arguments:**

    - `timeout`: seconds to wait; default `$PYSCIML_JULIA_PROBE_TIMEOUT` or 1800 (a
        first start installs and precompiles packages).

    **Returns:**

    A `JuliaStatus`: available if the child started Julia and loaded the bridge; else
    the reason, juliacall's own where it gave one.
    """
    status = julia_status()
    if not status.available or _juliacall_running():
        return status
    if timeout is None:
        timeout = float(os.environ.get("PYSCIML_JULIA_PROBE_TIMEOUT", 1800))
    try:
        run = subprocess.run(
            [sys.executable, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return JuliaStatus(False, f"starting Julia took more than {timeout:.0f} s")
    if "pysciml-julia-probe-ok" in run.stdout:
        return JuliaStatus(True, "Julia started in a child process")
    if "pysciml-julia-probe-failed:" in run.stdout:
        return JuliaStatus(False, run.stdout.split("pysciml-julia-probe-failed:")[1]
                           .strip())
    # The child died without a word of its own (a crash inside Julia's start, say).
    tail = run.stderr.strip().splitlines()[-5:]
    return JuliaStatus(False, f"a child process starting Julia exited with code "
                       f"{run.returncode}: " + " / ".join(tail))


def bridge_sources() -> list[Path]:
    """The Julia sources of the bridge: shipped inside the wheel as `pysciml/julia/`,
    or at the top of a source checkout as `julia/`."""
    here = Path(__file__).resolve().parent
    for folder in (here / "julia", here.parent / "julia"):
        if (folder / "PySciML.jl").is_file():
            return [folder / "PySciML.jl"]
    raise JuliaNotAvailableError(
        "the bridge sources `julia/PySciML.jl` are missing from this installation."
    )


def _thread_and_signal_settings() -> None:
    """Julia's thread count and signal handling, before juliacall starts Julia.

    Threads: pysciml calls Julia from one thread and needs no Julia threads, so it asks
    for one (`PYTHON_JULIACALL_THREADS=1`) unless the user set that variable; without
    this, a `JULIA_NUM_THREADS` exported for Julia work elsewhere would be inherited
    (juliacall falls back to it).

    Signals: juliacall starts Julia with `--handle-signals=no` unless told otherwise,
    which keeps Python's Ctrl-C (KeyboardInterrupt). PythonCall recommends
    `PYTHON_JULIACALL_HANDLE_SIGNALS=yes` only when Julia runs several threads (its GC
    then needs the signals; juliacall warns otherwise; julia#50278), and that setting
    disables KeyboardInterrupt for the whole session. So pysciml sets it only then,
    and never over the user's own choice."""
    os.environ.setdefault("PYTHON_JULIACALL_THREADS", "1")
    threads = os.environ["PYTHON_JULIACALL_THREADS"].split(",")[0].strip()
    if threads not in ("", "1"):
        os.environ.setdefault("PYTHON_JULIACALL_HANDLE_SIGNALS", "yes")


def _reason(e: BaseException) -> str:
    """juliacall's reason for a failed start, with what it usually means."""
    text = f"juliacall could not start Julia:\n  {type(e).__name__}: {e}"
    hints = []
    if os.environ.get("PYTHON_JULIAPKG_OFFLINE", "").lower() in ("yes", "true", "1"):
        hints.append(
            "PYTHON_JULIAPKG_OFFLINE is set, so juliapkg may not download Julia or "
            "packages: install Julia (e.g. with juliaup) and put it on PATH, or set "
            "PYTHON_JULIAPKG_EXE."
        )
    chain, cause = [], e
    while cause is not None and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any(isinstance(c, OSError) for c in chain):  # URLError, socket.gaierror
        hints.append(
            "juliapkg tried to download Julia or packages and could not reach the "
            "internet: install Julia yourself and point PYTHON_JULIAPKG_EXE at it."
        )
    return text + "".join(f"\n  ({hint})" for hint in hints)


_module = None
_failure: JuliaNotAvailableError | None = None
_closed = False


def _start():
    # Runs on the host thread.
    global _module, _failure
    if _module is not None:
        return _module
    if _failure is not None:
        # A failed start is not retried in this process: juliacall may be half
        # initialised, and inside inference the same error would recur per call.
        raise _failure
    if _closed:
        raise JuliaNotAvailableError("Julia was shut down (the interpreter is exiting).")
    if importlib.util.find_spec("juliacall") is None:
        raise JuliaNotAvailableError("the Python package `juliacall` is not installed.")
    if "juliacall" in sys.modules:
        print(
            "pysciml: juliacall was imported before pysciml started it; Julia then runs "
            "on the thread that imported it, and calls from pysciml's host thread may "
            "hang in Julia's GC (PythonCall#578). Import pysciml's Julia backend first.",
            file=sys.stderr,
        )
    _thread_and_signal_settings()
    print(
        "pysciml: starting Julia for backend='julia'. The first start may download "
        "Julia, and installs and precompiles DifferentialEquations packages: several "
        "minutes; later starts take seconds.",
        file=sys.stderr,
        flush=True,
    )
    try:
        import juliacall
    except Exception as e:
        _failure = JuliaNotAvailableError(_reason(e))
        raise _failure from e
    try:
        module = juliacall.newmodule("PySciML")
        for source in bridge_sources():
            module.include(str(source))
    except JuliaNotAvailableError as e:
        _failure = e
        raise
    except Exception as e:
        _failure = JuliaNotAvailableError(
            "Julia started, but loading the bridge (julia/PySciML.jl) failed with\n  "
            f"{type(e).__name__}: {e}"
        )
        raise _failure from e
    _module = module
    # Registered after juliacall's own atexit hook, so it runs first (atexit is LIFO).
    atexit.register(_shutdown)
    return module


def julia_module():
    """The Julia bridge module `PySciML`, started on first use (on the host thread).

    **Returns:**

    The juliacall module object holding `forward` and `vjp`.

    **Raises:**

    `JuliaNotAvailableError`, with juliacall's reason and what to install or set.
    """
    return HostThread.run(_start)


# Seconds to wait at exit for a host-thread task still running (a solve interrupted by
# Ctrl-C, say) before leaving Julia's shutdown to juliacall's own hook.
SHUTDOWN_WAIT = 30.0


class _NoOpHook:
    """Stands in for `lib.jl_atexit_hook` once pysciml has run the real one: juliacall's
    own atexit hook looks the function up on `lib` and calls it; a second run of Julia's
    exit hook, from a thread Julia never ran on, is what must not happen."""

    argtypes = None
    restype = None

    def __call__(self, *args):
        return None


def _shutdown() -> None:
    """Runs Julia's exit hook (`Base._atexit`, finalizers, task shutdown) on the host
    thread, which started Julia, before juliacall's own atexit hook would run it from
    the main thread. From there it would adopt the main thread as a second Julia thread
    and wait for the host thread, which sits in Python, never at a Julia safepoint,
    to stop for GC: the PythonCall#578 hang (#764 for the crash at exit). juliacall's
    hook is then a no-op: Julia's exit hook has no once-guard and must run once."""
    global _closed
    if _module is None or _closed:
        return
    import juliacall

    lib = juliacall.CONFIG["lib"]
    real = lib.jl_atexit_hook
    real.argtypes = [ctypes.c_int]
    real.restype = None
    # Whatever happens below, juliacall's hook must not run Julia's exit hook from the
    # main thread.
    lib.jl_atexit_hook = _NoOpHook()

    def work():
        global _closed
        _closed = True  # no Julia call after this one
        real(0)

    if HostThread.is_current():
        work()
        return
    done = threading.Event()

    def run():
        try:
            work()
        finally:
            done.set()

    # Not `HostThread.run`: a host thread still busy must not hang the exit.
    HostThread._ensure_started()
    HostThread._queue.put((run, (), [], threading.Event()))
    try:
        finished = done.wait(SHUTDOWN_WAIT)
    except KeyboardInterrupt:
        finished = False
    if not finished:
        print(
            f"pysciml: the host thread was still busy after {SHUTDOWN_WAIT:.0f} s at "
            "exit; Julia's exit hooks were skipped.",
            file=sys.stderr,
        )

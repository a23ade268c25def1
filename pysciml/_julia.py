"""The only module that imports juliacall.

Julia is started lazily, on the first use of `backend="julia"`, and on pysciml's host
thread (see `HostThread`): every later call into Julia comes from that same thread.
"""

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import NamedTuple

from ._backend.host import HostThread

MSG_NO_JULIA = """\
The Julia backend is not available: {reason}

To enable it:
  1. pip install "pysciml[julia]"        # installs juliacall
  2. Either let juliacall install Julia and the packages in pysciml/juliapkg.json on
     first use (needs internet; the first start precompiles for several minutes), or
     point it at an existing Julia:
       PYTHON_JULIAPKG_EXE=/path/to/julia          # use this Julia binary
       PYTHON_JULIAPKG_PROJECT=/path/to/env        # and/or this Julia environment
       PYTHON_JULIAPKG_OFFLINE=yes                 # never download anything
     (for a fully prepared environment: PYTHON_JULIACALL_EXE and
     PYTHON_JULIACALL_PROJECT together).
  3. Warm up once: python -m pysciml julia --warmup

Or use another backend: solve(..., backend="diffrax") or backend="scipy"."""


class JuliaNotAvailableError(RuntimeError):
    """Raised by `backend="julia"` where Julia cannot be started."""


class JuliaStatus(NamedTuple):
    available: bool
    reason: str


_EXE_VARS = ("PYTHON_JULIACALL_EXE", "PYTHON_JULIAPKG_EXE")


def julia_status() -> JuliaStatus:
    """Whether the Julia backend can be started here, without starting it.

    **Returns:**

    A `JuliaStatus(available, reason)`. `available` means juliacall is installed and a
    Julia executable is known (on `PATH`, or named by `PYTHON_JULIACALL_EXE` /
    `PYTHON_JULIAPKG_EXE`), or Julia is already running in this process.
    """
    if "juliacall" in sys.modules and getattr(
        sys.modules["juliacall"], "CONFIG", {}
    ).get("inited"):
        return JuliaStatus(True, "Julia is running in this process")
    if importlib.util.find_spec("juliacall") is None:
        return JuliaStatus(False, "the Python package `juliacall` is not installed.")
    for var in _EXE_VARS:
        if os.environ.get(var):
            return JuliaStatus(True, f"{var}={os.environ[var]}")
    if shutil.which("julia"):
        return JuliaStatus(True, f"julia on PATH at {shutil.which('julia')}")
    return JuliaStatus(
        False,
        "juliacall is installed, but no Julia executable was found (none on PATH, "
        f"and neither of {', '.join(_EXE_VARS)} is set).",
    )


def bridge_sources() -> list[Path]:
    """The Julia sources of the bridge: shipped inside the wheel as `pysciml/julia/`,
    or at the top of a source checkout as `julia/`."""
    here = Path(__file__).resolve().parent
    for folder in (here / "julia", here.parent / "julia"):
        if (folder / "PySciML.jl").is_file():
            return [folder / "PySciML.jl"]
    raise JuliaNotAvailableError(
        MSG_NO_JULIA.format(reason="the bridge sources `julia/PySciML.jl` are missing "
                            "from this installation.")
    )


_module = None


def _start():
    # Runs on the host thread.
    global _module
    if _module is not None:
        return _module
    status = julia_status()
    if not status.available:
        raise JuliaNotAvailableError(MSG_NO_JULIA.format(reason=status.reason))
    if "juliacall" in sys.modules:
        print(
            "pysciml: juliacall was imported before pysciml started it; Julia then runs "
            "on the thread that imported it, and calls from pysciml's host thread may "
            "hang in Julia's GC (PythonCall#578). Import pysciml's Julia backend first.",
            file=sys.stderr,
        )
    # Julia's own signal handling: required for a multithreaded Julia inside Python.
    os.environ.setdefault("PYTHON_JULIACALL_HANDLE_SIGNALS", "yes")
    print(
        "pysciml: starting Julia for backend='julia'. The first start installs and "
        "precompiles DifferentialEquations packages and can take several minutes; "
        "later starts take seconds.",
        file=sys.stderr,
        flush=True,
    )
    try:
        import juliacall

        module = juliacall.newmodule("PySciML")
        for source in bridge_sources():
            module.include(str(source))
    except JuliaNotAvailableError:
        raise
    except Exception as e:
        raise JuliaNotAvailableError(
            MSG_NO_JULIA.format(reason=f"starting Julia failed with\n  {e!r}")
        ) from e
    _module = module
    return module


def julia_module():
    """The Julia bridge module `PySciML`, started on first use (on the host thread).

    **Returns:**

    The juliacall module object holding `forward` and `vjp`.

    **Raises:**

    `JuliaNotAvailableError`, with what to install or set.
    """
    return HostThread.run(_start)

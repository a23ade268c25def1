"""Ctrl-C stops a host solve whose callback XLA runs on one of its own threads.

There the main thread waits inside XLA and Python raises no `KeyboardInterrupt` until
the solve returns: before `CtrlC` (`pysciml/_backend/host/_thread.py`) such a solve ran
on through Ctrl-C (seen as a hang of the self-test's Ctrl-C check under load). The
main-thread case is the self-test's check (`tests/test_selftest.py`).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def test_ctrl_c_stops_a_solve_called_back_on_an_xla_thread():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE.parent.parent)] + [p for p in [env.get("PYTHONPATH")] if p])
    child = subprocess.Popen([sys.executable, str(HERE / "ctrl_c_child.py"), "scipy"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "started" not in line and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line and child.poll() is not None:
                break
        assert "started" in line, child.stderr.read()[-3000:]
        time.sleep(2.0)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, err[-3000:]
    assert "alive" in out and "finished" not in out, (out, err[-3000:])
    # The scenario: XLA called the host from a thread other than the main one.
    callers = next(line for line in out.splitlines() if line.startswith("callers"))
    assert "MainThread" not in callers, callers

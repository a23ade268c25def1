"""The host thread: every host-solver call runs on one dedicated Python thread."""

import os
import queue
import signal
import threading
from typing import Any

import jax
import numpy as np


class HostThread:
    """One long-lived Python thread on which every host-solver call runs.

    Why not the main thread: XLA may run a `pure_callback` on one of its own worker
    threads, even with `jax_cpu_enable_async_dispatch=False` (we saw it here when the
    callback sits in a `vmap`ped loop next to independent work; cf. jax#24255), and
    while it does, the main thread is blocked inside XLA, so work cannot be handed to
    it. Julia's GC hangs when Julia is entered from a thread other than the one that
    started it, while that one is busy elsewhere (PythonCall#578). So pysciml starts
    Julia *on this thread*, and enters it only from this thread: whichever thread XLA
    calls back on, the call is handed here and the caller waits.

    The thread computes with `jax.enable_x64(True)` (a thread-local setting), so the
    host callbacks are float64 without touching the user's global JAX configuration.
    """

    _lock = threading.Lock()
    _thread: threading.Thread | None = None
    _queue: "queue.SimpleQueue[Any]"

    @classmethod
    def _ensure_started(cls):
        with cls._lock:
            if cls._thread is None or not cls._thread.is_alive():
                cls._queue = queue.SimpleQueue()
                cls._thread = threading.Thread(
                    target=cls._loop, name="pysciml-host", daemon=True
                )
                cls._thread.start()

    @classmethod
    def _loop(cls):
        # NumPy's floating-point warnings are off on this thread (errstate is
        # thread-local): a state that blows up inside a host solve is reported by its
        # result code (`nonfinite`), not by a flood of RuntimeWarnings in the middle of
        # an inference run.
        with jax.enable_x64(True), np.errstate(all="ignore"):
            while True:
                fn, args, box, done = cls._queue.get()
                try:
                    box.append((True, fn(*args)))
                except BaseException as e:  # delivered to the waiting caller
                    box.append((False, e))
                done.set()

    @classmethod
    def is_current(cls) -> bool:
        return threading.current_thread() is cls._thread

    # Set while a Ctrl-C is being honoured: every callback into JAX then raises
    # `HostInterrupted`, which ends the host solve at its next right-hand side.
    cancel: bool = False

    @classmethod
    def run(cls, fn, *args):
        """Runs `fn(*args)` on the host thread and returns its result (re-raising its
        exception, if any). Called from the host thread itself, runs inline: so host
        code may call back into JAX, and JAX into host code, without deadlock.

        Ctrl-C while waiting: a `KeyboardInterrupt` must not leave a `pure_callback`
        (XLA would abort the whole process: "terminate called ... FATAL: exception not
        rethrown"). So the host solve is cancelled, awaited, and `HostInterrupted`, an
        ordinary exception that JAX passes on as a runtime error, is raised instead."""
        if cls.is_current():
            return fn(*args)
        cls._ensure_started()
        on_main = threading.current_thread() is threading.main_thread()
        CtrlC.watch()
        CtrlC.seen()  # forget a Ctrl-C from before this call
        box: list = []
        done = threading.Event()
        cls._queue.put((fn, args, box, done))
        interrupted = False
        while True:
            try:
                # On the main thread, Ctrl-C raises KeyboardInterrupt here. On one of
                # XLA's threads it never does (see `CtrlC`): look for it every 50 ms.
                if done.wait(None if on_main else 0.05):
                    break
                if not interrupted and CtrlC.seen():
                    interrupted = True
                    cls.cancel = True
            except KeyboardInterrupt:
                interrupted = True
                cls.cancel = True
        if interrupted:
            cls.cancel = False
            raise HostInterrupted(MSG_INTERRUPTED)
        ok, value = box[0]
        if ok:
            return value
        raise value

    @classmethod
    def thread(cls) -> threading.Thread:
        cls._ensure_started()
        return cls._thread


class CtrlC:
    """Ctrl-C, seen from any thread.

    Python runs signal handlers on the main thread only, between bytecodes. XLA may run
    a host callback on one of its own threads (a jitted solve whose input was still
    being computed when it was dispatched): the main thread then waits inside XLA, and
    no `KeyboardInterrupt` is raised until the solve ends, which for a long solve is
    never. But Python's C-level handler also writes the signal's number, at once, to
    the "wakeup fd" (`signal.set_wakeup_fd`). `watch` installs a pipe there, from the
    main thread (the only one allowed to), unless the program already has one (asyncio
    and IPython install their own; pysciml does not take it over), and the thread
    that waits for a host solve reads it (`seen`). Python still raises the
    `KeyboardInterrupt` on the main thread once XLA returns."""

    _read: int | None = None
    _tried = False

    @classmethod
    def watch(cls) -> None:
        """Installs the pipe, once; called where host callbacks are traced or run.
        Elsewhere than on the main thread: nothing (and tried again later)."""
        if cls._tried or threading.current_thread() is not threading.main_thread():
            return
        cls._tried = True
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        try:
            previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        except ValueError:  # a subinterpreter: no signals here
            previous = None
        if previous != -1:  # taken by someone else (or refused): leave it
            if previous is not None:
                signal.set_wakeup_fd(previous)
            os.close(read)
            os.close(write)
            return
        cls._read = read

    @classmethod
    def seen(cls) -> bool:
        """Whether SIGINT arrived since the last call (reading what is pending)."""
        if cls._read is None:
            return False
        got = b""
        try:
            while chunk := os.read(cls._read, 512):
                got += chunk
        except BlockingIOError:
            pass
        return signal.SIGINT in got


MSG_INTERRUPTED = (
    "KeyboardInterrupt: the host solve was interrupted by Ctrl-C, and stopped at its "
    "next right-hand-side evaluation."
)


class HostInterrupted(Exception):
    """Ctrl-C during a host solve: raised in place of `KeyboardInterrupt`, which must
    not cross a `pure_callback` (see `HostThread.run`)."""

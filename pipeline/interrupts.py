"""Ctrl-C and SLURM's SIGTERM end a job as KeyboardInterrupt, and are remembered.

TensorFlow can turn a KeyboardInterrupt raised inside its own code into another error
(`SystemError: ... returned a result with an exception set`). A job asks `requested()` to
tell such an error from a real failure, so the run in progress still ends KILLED and the
sweep stops, instead of a FAILED run and a sweep that carries on.
"""

from __future__ import annotations

import signal
import threading

_requested = threading.Event()


def requested() -> bool:
    """True once an interrupting signal arrived in this process."""
    return _requested.is_set()


def check() -> None:
    """Raise KeyboardInterrupt if an interrupt arrived and was swallowed on its way up."""
    if _requested.is_set():
        raise KeyboardInterrupt


def remember_interrupts(sigterm: bool = False) -> None:
    """Route SIGINT (and with sigterm, SIGTERM) through a handler that remembers them.

    submitit ignores SIGTERM in its jobs, so under SLURM a cancelled job would train on
    until SIGKILL and leave its run RUNNING; sigterm=True makes scancel and the time limit
    end it like Ctrl-C. Only the first SIGTERM interrupts: later ones must not cut the
    cleanup short. Every Ctrl-C interrupts, as Python's own handler does.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set in the main thread

    def on_sigint(signum, frame):
        _requested.set()
        raise KeyboardInterrupt

    def on_sigterm(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _requested.set()
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGINT, on_sigint)
    if sigterm:
        signal.signal(signal.SIGTERM, on_sigterm)

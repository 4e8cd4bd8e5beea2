"""Ctrl-C and SLURM's SIGTERM end a job as KeyboardInterrupt, and are remembered.

Two places must not be cut short by one:
- a store call: an interrupted SQLAlchemy pool or transaction can leave a lock taken, and
  the next call (closing the runs KILLED) then hangs. Store calls run `held()`: a signal
  that arrives meanwhile is raised when the call returns (a second Ctrl-C does not wait).
- TensorFlow can turn a KeyboardInterrupt raised inside its own code into another error
  (`SystemError: ... returned a result with an exception set`). A job asks `requested()` to
  tell such an error from a real failure, so the run in progress still ends KILLED and the
  sweep stops, instead of a FAILED run and a sweep that carries on.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_requested = threading.Event()
_held = 0  # depth of held() blocks in the main thread
_pending: str | None = None  # the message of an interrupt that waits for the block to end


def requested() -> bool:
    """True once an interrupting signal arrived in this process."""
    return _requested.is_set()


def check() -> None:
    """Raise KeyboardInterrupt if an interrupt arrived and was swallowed on its way up."""
    if _requested.is_set():
        raise KeyboardInterrupt


@contextmanager
def held() -> Iterator[None]:
    """Run the block whole: an interrupt that arrives in it is raised when it ends."""
    global _held, _pending
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are handled in the main thread only
        return
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if _held == 0 and _pending is not None:
            message, _pending = _pending, None
            raise KeyboardInterrupt(message)


def _interrupt(message: str = "") -> None:
    global _pending
    _requested.set()
    if _held and _pending is None:
        _pending = message
        return
    raise KeyboardInterrupt(message)


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
        _interrupt()

    def on_sigterm(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _interrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGINT, on_sigint)
    if sigterm:
        signal.signal(signal.SIGTERM, on_sigterm)

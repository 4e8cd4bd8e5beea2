"""The bulk writer in a process of its own, beside training.

In a thread, probing, scoring and writing trained members takes turns with training for the
interpreter (at 10,000 runs, training took half as long again as alone). In a process it
runs on another core. One process serves every job of the process that started it; it
ignores SIGINT and SIGTERM, so the chunks handed to it before a Ctrl-C or an scancel still
commit (the job ends its other runs KILLED as before), and it exits when its parent does.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from pipeline import startup

log = logging.getLogger("deadunits")
PARENT_POLL_S = 0.5
# Jobs of fewer runs write on a thread: the process's start and hand-overs cost more than
# it saves (quick_study, 12 jobs of 20 runs: sweep 11.6-13.2 s on a thread, 16.5 s with it).
MIN_RUNS = 500
_pool: ProcessPoolExecutor | None = None
_importing = False  # _ready was handed to the writer
_left: list[Handed] | None = None  # calls jobs left to their sweep; None: jobs wait


def _serve(parent: int) -> None:
    """In the writer: ignore interrupts, log like the parent, end when the parent is gone;
    no garbage collection while it imports (`pipeline.startup`)."""
    startup.starting()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    # Every call has committed when the writer is told to stop; tearing its interpreter
    # down (MLflow, SQLAlchemy, pandas) took about a second its parent waited for.
    atexit.register(os._exit, 0)
    threading.Thread(target=_exit_without, args=(parent,), daemon=True).start()


def _exit_without(parent: int) -> None:
    # A parent that is killed (or a joblib worker ended by joblib) never says goodbye.
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(0)


def _ready() -> bool:
    import pipeline.bulk  # noqa: F401  (what the calls will need, imported while nothing waits)
    import pipeline.job  # noqa: F401

    startup.started()
    return True


def _writer() -> ProcessPoolExecutor:
    global _pool
    if _pool is None:
        # spawn, not fork: the parent has TensorFlow's threads running.
        _pool = ProcessPoolExecutor(
            1,
            multiprocessing.get_context("spawn"),
            initializer=_serve,
            initargs=(os.getpid(),),
        )
        with _standard_start_method():  # the process starts with the first call
            _pool.submit(os.getpid)
    return _pool


@contextmanager
def _standard_start_method() -> Iterator[None]:
    """A spawned child sets the parent's default start method; in a joblib (loky) worker
    that is 'loky', which the child cannot find: make it spawn's while the child starts."""
    method = multiprocessing.get_start_method(allow_none=True)
    if method is None or method in multiprocessing.get_all_start_methods():
        yield
        return
    multiprocessing.set_start_method("spawn", force=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(method, force=True)


def _discard() -> None:
    global _pool, _importing
    _pool, _importing = None, False


def start() -> None:
    """Start the writer now, and have it import what its calls need once the calls
    already handed to it are done: its imports take seconds, which the caller's work hides
    (a sweep's own start-up and TensorFlow's import)."""
    global _importing
    pool = _writer()
    if not _importing:
        pool.submit(_ready)
        _importing = True


def stop() -> None:
    """Wait for what was handed over, and end the writer."""
    if _pool is not None:
        _pool.shutdown(wait=True)
        _discard()


def stop_in_pool_workers() -> None:
    """In a process pool's worker (joblib), which its pool ends without notice, stop the
    writer at the end of each job: an orphaned writer would hold the pool's resources."""
    if multiprocessing.current_process().name != "MainProcess":
        stop()


class Handed:
    """A call handed to the writer; result() waits for it. If the writer died, the call
    runs here instead (slower, but nothing handed over is lost) and the next call gets a
    new writer."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args
        try:
            self.future = _writer().submit(fn, *args)
        except BrokenProcessPool:
            _discard()
            self.future = None

    def result(self):
        if self.future is not None:
            try:
                return self.future.result()
            except BrokenProcessPool:
                _discard()
        log.warning("the writer process died; writing in this process")
        return self.fn(*self.args)


def submit(fn, *args) -> Handed:
    """fn(*args) in the writer process (fn and args must pickle)."""
    return Handed(fn, args)


@contextmanager
def jobs_may_leave_calls(failed: Callable[[BaseException], None]) -> Iterator[None]:
    """Jobs run within may return before the writer has done their last calls, which it
    does while the next job trains (a 5,000-run job waited about a second for its last
    chunk); all are waited for on the way out, each failure handed to failed."""
    global _left
    _left = []
    try:
        yield
    finally:
        left, _left = _left, None
        for call in left:
            try:
                call.result()
            except Exception as error:
                failed(error)


def leave(calls: list[Handed]) -> bool:
    """Leave these calls to the sweep that runs this job (see `jobs_may_leave_calls`);
    False when there is none, and the job waits for them itself."""
    if _left is None:
        return False
    _left.extend(calls)
    return True

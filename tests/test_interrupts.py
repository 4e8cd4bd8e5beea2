"""Ctrl-C ends the run in progress KILLED, even when TensorFlow turns it into another error."""

import os
import signal
import threading
import time
from collections import Counter

import pytest

from pipeline import interrupts, job
from pipeline.tracking import open_client
from tests.test_config import compose_with


@pytest.fixture
def fresh_handlers(monkeypatch):
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(interrupts, "_requested", threading.Event())
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


def interrupted_inside_tensorflow(*args, **kwargs):
    """What TensorFlow did to a Ctrl-C that arrived while it imported a module."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler runs at the next bytecode
    except KeyboardInterrupt:
        raise SystemError("__import__ returned a result with an exception set") from None
    raise AssertionError("no KeyboardInterrupt")


@pytest.mark.parametrize("engine", ["keras", "batched"])
def test_a_swallowed_ctrl_c_still_kills_the_run_and_stops(
    engine, store, fresh_handlers, monkeypatch
):
    monkeypatch.setattr(job, "get_engine", lambda name: interrupted_inside_tensorflow)
    batched = [f"train.engine={engine}", "seeds=0-2"] if engine == "batched" else []
    cfg = compose_with(f"tracking.uri={store}", *batched)
    with pytest.raises(KeyboardInterrupt):
        job.run_job(cfg)
    client = open_client(store)
    (experiment,) = [e for e in client.search_experiments() if e.name == cfg.tracking.experiment]
    runs = client.search_runs([experiment.experiment_id])
    assert Counter(r.info.status for r in runs) == {"KILLED": 3 if engine == "batched" else 1}
    with pytest.raises(KeyboardInterrupt):  # the next job of the sweep does not start
        job.run_job(cfg)


def test_sigterm_interrupts_once_under_slurm(fresh_handlers):
    interrupts.remember_interrupts(sigterm=True)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # later ones: ignored
    assert interrupts.requested()


def test_a_store_call_is_not_cut_in_half(fresh_handlers):
    interrupts.remember_interrupts()
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts.held():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # the handler has run: the interrupt waits for the block
        done.append("written")
    assert done == ["written"] and interrupts.requested()
    # A second Ctrl-C does not wait (a store that hangs can still be left).
    with pytest.raises(KeyboardInterrupt), interrupts.held():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        done.append("not reached")
    assert done == ["written"]

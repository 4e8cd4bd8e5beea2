"""Garbage collection around a process's start-up (pipeline.startup)."""

import gc
import weakref

import pytest

from pipeline import startup


@pytest.fixture
def collector():
    """Restore this test process's collector: enabled, nothing frozen."""
    startup.started.cache_clear()
    yield
    startup.started.cache_clear()
    gc.unfreeze()
    gc.enable()


class Node:
    pass


def test_started_freezes_what_start_up_made_and_turns_the_collector_back_on(collector):
    startup.starting()
    assert not gc.isenabled()
    made_at_start = Node()
    startup.started()
    assert gc.isenabled()
    assert gc.is_tracked(made_at_start)
    assert gc.get_freeze_count() > 0
    assert not any(obj is made_at_start for obj in gc.get_objects())  # set aside for good


def test_garbage_made_after_start_up_is_collected(collector):
    startup.starting()
    startup.started()
    cycle = Node()
    cycle.me = cycle  # garbage only the collector can free
    gone = weakref.ref(cycle)
    del cycle
    gc.collect()
    assert gone() is None


def test_started_runs_once_per_process(collector):
    startup.started()
    made_later = Node()
    gc.disable()
    startup.started()  # a later job of the same process
    assert not gc.isenabled()
    # Not frozen by a second call. (Not the freeze count: frozen objects that die, from
    # any thread, lower it.)
    assert any(obj is made_later for obj in gc.get_objects())

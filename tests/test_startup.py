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


def test_started_collects_freezes_and_turns_the_collector_back_on(collector):
    startup.starting()
    assert not gc.isenabled()
    cycle = Node()
    cycle.me = cycle  # garbage only the collector can free
    gone = weakref.ref(cycle)
    del cycle
    startup.started()
    assert gone() is None  # collected before the freeze, not frozen for good
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0


def test_started_runs_once_per_process(collector):
    startup.started()
    frozen = gc.get_freeze_count()
    gc.disable()
    startup.started()  # a later job of the same process
    assert not gc.isenabled()
    assert gc.get_freeze_count() == frozen

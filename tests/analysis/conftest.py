"""Fixtures: temporary SQLite tracking stores holding fake runs (see fake_runs.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fake_runs import FakeStore, build_study


@pytest.fixture
def fake_store(tmp_path: Path) -> Callable[..., FakeStore]:
    """Factory: fake_store(name) gives a fresh store in its own folder under tmp_path."""

    def make(name: str = "store", experiment: str = "deadunits") -> FakeStore:
        return FakeStore(tmp_path / name, experiment)

    return make


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> FakeStore:
    """The study store, built once per test session (read-only for tests)."""
    return build_study(FakeStore(tmp_path_factory.mktemp("study")))

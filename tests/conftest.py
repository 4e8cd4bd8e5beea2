"""Shared fixtures: a temporary SQLite tracking store per test, and the CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline  # noqa: F401  (first: it decides TensorFlow's environment for every test)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path) -> str:
    """A fresh SQLite tracking URI in a temporary directory."""
    return f"sqlite:///{tmp_path}/mlflow.db"


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    """Run `python -m pipeline ARGS` and return the CompletedProcess (text output).

    `env` adds variables to this process's environment; a value of None removes one.
    """
    full_env = {**os.environ, **(env or {})}
    for name in [k for k, v in full_env.items() if v is None] + ["MLFLOW_RUN_ID"]:
        full_env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd or PROJECT_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )

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


def child_env(env: dict | None = None) -> dict[str, str]:
    """This process's environment for a child, without an outer MLflow run or tracking URI.

    `env` adds variables; a value of None removes one.
    """
    full = {**os.environ, **(env or {})}
    for name in [k for k, v in full.items() if v is None]:
        del full[name]
    for name in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI"):
        if name not in (env or {}):
            full.pop(name, None)
    # This checkout's packages, whatever directory the child starts in.
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), full.get("PYTHONPATH")]))
    return full


def run_module(
    module: str, *args: str, cwd: Path | None = None, env: dict | None = None, timeout=600
) -> subprocess.CompletedProcess:
    """Run `python -m MODULE ARGS` and return the CompletedProcess (text output)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd or PROJECT_ROOT,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m pipeline ARGS` (see run_module)."""
    return run_module("pipeline", *args, **kwargs)

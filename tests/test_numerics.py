"""The same numbers on every x86-64 CPU, and a quiet terminal.

TF_ENABLE_ONEDNN_OPTS=1 turns oneDNN on even on an AVX2 CPU, so running the engine
equality check under each environment exercises both code paths on either kind of machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT, run_cli

pytestmark = pytest.mark.slow

STARTUP_LINES = (
    "oneDNN custom operations",
    "cuInit",
    "cuda_platform",
    "Could not find cuda drivers",
    "All log messages before absl::InitializeLog()",
)


def python(*args: str, onednn: str | None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS",)}
    if onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = onednn
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("onednn", [None, "0", "1"], ids=["unset", "off", "on"])
def test_engines_are_equal_whatever_the_environment_says(onednn):
    result = python("-m", "tests.engine_equality", onednn=onednn)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["onednn"] == "false"
    assert found["weight_diff"] == 0.0 and found["loss_diff"] == 0.0, found


def test_tensorflow_imported_first_with_onednn_is_said_in_one_line():
    script = (
        "import tensorflow\n"
        "from pipeline import numerics\n"
        "numerics.check_exact_engines(); numerics.check_exact_engines()\n"
        "print(numerics.numerics_tags()['onednn'])\n"
    )
    result = python("-c", script, onednn="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "true"
    said = [line for line in result.stderr.splitlines() if "train.engine=batched" in line]
    assert len(said) == 1 and "onednn=true" in said[0], result.stderr


def test_a_run_and_a_sweep_print_no_tensorflow_start_up_lines(tmp_path):
    # What a user's shell holds: nothing of TensorFlow's (this process set them on import).
    quiet_env = {"TF_CPP_MIN_LOG_LEVEL": None, "TF_ENABLE_ONEDNN_OPTS": None}
    store = f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"
    single = run_cli(store, "train.epochs=1", env=quiet_env, cwd=tmp_path)
    sweep = run_cli(
        "-m",
        store,
        "train.epochs=1",
        "seed=1,2",
        "train.engine=batched",
        env=quiet_env,
        cwd=tmp_path,
    )
    for result in (single, sweep):
        assert result.returncode == 0, result.stderr
        for line in STARTUP_LINES:
            assert line not in result.stdout + result.stderr, result.stdout + result.stderr
    assert "runs: finished 1" in single.stdout
    assert "finished 2" in sweep.stderr

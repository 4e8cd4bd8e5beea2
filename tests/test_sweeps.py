"""Multirun sweeps end to end: parent/child runs, resume, crashes, parallel workers, MLproject."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.tracking import open_client
from tests.conftest import PROJECT_ROOT, child_env, run_cli

pytestmark = pytest.mark.slow

SMALL = ["train.epochs=1", "data.n_samples=200", "train.batch_size=20"]


def runs_of(uri: str, experiment: str = "deadunits", role: str = "run"):
    client = open_client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], max_results=10_000)
    return [r for r in runs if r.data.tags.get("deadunits.role") == role]


def test_multirun_logs_one_child_per_job_under_one_parent_and_resumes(store):
    sweep = ["-m", "seed=0,1", "model.activation=relu,tanh", "init=glorot_uniform,he_normal"]
    first = run_cli(*sweep, *SMALL, f"tracking.uri={store}")
    assert first.returncode == 0, first.stderr[-3000:]
    children, (parent,) = runs_of(store), runs_of(store, role="sweep")
    assert len(children) == 8
    assert all(r.info.status == "FINISHED" for r in children + [parent])
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {r.data.tags["sweep_id"] for r in children} == {parent.data.tags["sweep_id"]}
    assert len({r.data.tags["config_key"] for r in children}) == 8
    assert parent.data.params["job_count"] == "8"
    assert parent.data.metrics["runs_finished"] == 8
    assert "finished 8 of 8 planned" in first.stderr
    assert "report: python -m analysis" in first.stderr
    note = parent.data.tags["mlflow.note.content"]
    assert "planned 8, finished 8" in note and "python -m pipeline -m seed=0,1" in note

    again = run_cli(*sweep, *SMALL, f"tracking.uri={store}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to do" in again.stderr
    assert len(runs_of(store)) == 8 and len(runs_of(store, role="sweep")) == 1

    forced = run_cli(
        "-m", "seed=0", "model.activation=relu", *SMALL, "force=true", f"tracking.uri={store}"
    )
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert len(runs_of(store)) == 9


def test_a_failing_run_does_not_break_the_sweep(store):
    # lr 1e30 with sgd and mse overflows to inf at once: the run is FAILED (diverged), the rest go on.
    result = run_cli(
        "-m",
        "seed=0,1",
        "train.learning_rate=1e30,0.001",
        "train.optimizer=sgd",
        "train.loss=mse",
        *SMALL,
        f"tracking.uri={store}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    children = runs_of(store)
    statuses = Counter((r.data.params["train.learning_rate"], r.info.status) for r in children)
    assert statuses == {("1e+30", "FAILED"): 2, ("0.001", "FINISHED"): 2}
    for run in children:
        if run.info.status == "FAILED":
            assert run.data.tags["diverged"] == "true"
            assert int(run.data.tags["diverged_epoch"]) == 1
            assert "dead_units_init" in run.data.metrics  # init metrics survive divergence
    (parent,) = runs_of(store, role="sweep")
    assert parent.info.status == "FINISHED" and parent.data.metrics["runs_diverged"] == 2


def start_sweep(
    store: str, *extra: str, seeds: str = "range(0,4)", epochs: int = 6
) -> subprocess.Popen:
    env = child_env()
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "-m",
            f"seed={seeds}",
            f"train.epochs={epochs}",
            *extra,
            f"tracking.uri={store}",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(store: str, condition, timeout: float = 180) -> list:
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = runs_of(store)
        if condition(Counter(r.info.status for r in runs)):
            return runs
        time.sleep(0.3)
    raise AssertionError(f"timed out; statuses: {Counter(r.info.status for r in runs_of(store))}")


def test_sigkill_mid_sweep_then_resume(store):
    sweep = start_sweep(store)
    wait_for(store, lambda s: s["FINISHED"] >= 1 and s["RUNNING"] == 1)
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait()
    left = Counter(r.info.status for r in runs_of(store))
    assert left["RUNNING"] == 1 and left["FINISHED"] < 4

    resumed = start_sweep(store)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    children = runs_of(store)
    by_key = Counter(r.data.tags["config_key"] for r in children if r.info.status == "FINISHED")
    assert len(by_key) == 4 and set(by_key.values()) == {1}  # every run exactly once FINISHED
    assert Counter(r.info.status for r in children)["KILLED"] == 1  # what the crash left RUNNING
    assert not [r for r in children if r.info.status == "RUNNING"]
    parents = runs_of(store, role="sweep")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the same parent, reopened
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}


def test_sigkill_during_bulk_writing_then_resume(store):
    """Batched cells written a chunk per transaction: a kill leaves whole chunks or none."""
    cells = ["model.activation=relu,tanh,linear,leaky_relu", "train.engine=batched", *SMALL[1:]]
    sweep = start_sweep(store, *cells, seeds="range(0,300)", epochs=1)
    wait_for(store, lambda s: s["FINISHED"] >= 1)
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait()
    left = Counter(r.info.status for r in runs_of(store))
    assert left["FINISHED"] % 300 == 0 and left["FINISHED"] < 1200 and not left["RUNNING"], left

    resumed = start_sweep(store, *cells, seeds="range(0,300)", epochs=1)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert "tracking.writer=auto: bulk" in err
    children = runs_of(store)
    by_key = Counter(r.data.tags["config_key"] for r in children)
    assert len(by_key) == 1200 and set(by_key.values()) == {1}  # every run exactly once
    assert Counter(r.info.status for r in children) == {"FINISHED": 1200}


def test_ctrl_c_ends_the_sweep_cleanly(store):
    sweep = start_sweep(store)
    wait_for(store, lambda s: s["RUNNING"] == 1)
    os.killpg(sweep.pid, signal.SIGINT)
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, err[-3000:]
    assert "Re-run the same command to resume" in err
    statuses = Counter(r.info.status for r in runs_of(store))
    assert statuses["RUNNING"] == 0 and statuses["KILLED"] == 1
    (parent,) = runs_of(store, role="sweep")
    assert parent.info.status == "KILLED"
    # The summary counts the interrupted job's run too (its counts ride on the interrupt).
    ran = re.search(r"this launch ran (\d+) runs", err)
    assert ran and int(ran.group(1)) == statuses.total(), err[-3000:]


def test_parallel_joblib_workers_on_sqlite_lose_nothing(store):
    # 4 worker processes, each logging 50 batched runs, into one SQLite store at once.
    result = run_cli(
        "-m",
        "seed=range(0,50)",
        "model.activation=relu,tanh,linear,leaky_relu",
        "train.engine=batched",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=4",
        *SMALL,
        f"tracking.uri={store}",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    children = runs_of(store)
    assert len(children) == 200
    assert Counter(r.info.status for r in children) == {"FINISHED": 200}
    assert len({r.data.tags["config_key"] for r in children}) == 200  # no duplicates
    pids = {r.data.tags["deadunits.pid"] for r in children}
    assert len(pids) >= 2, "the cells ran in parallel worker processes"
    (parent,) = runs_of(store, role="sweep")
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert parent.data.metrics["runs_finished"] == 200
    assert "database is locked" not in result.stderr
    assert "tracking.writer=auto: bulk" in result.stderr  # four processes bulk-writing


def test_mlflow_run_entry_point(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # `mlflow run --env-manager local` runs the entry point's `python` from PATH: this venv's.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = child_env({"MLFLOW_TRACKING_URI": uri, "PATH": path})
    mlflow = [sys.executable, "-m", "mlflow", "run", str(PROJECT_ROOT), "--env-manager", "local"]
    result = subprocess.run(
        [
            *mlflow,
            "-e",
            "sweep",
            "-P",
            "preset=seed_notebook",
            "-P",
            "args=train.epochs=1",
            "--experiment-name",
            "seed_notebook",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    children = runs_of(uri, "seed_notebook")
    (parent,) = runs_of(uri, "seed_notebook", role="sweep")
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert parent.data.tags.get("mlflow.project.entryPoint") == "sweep"


def test_submitit_local_launcher(store):
    result = run_cli(
        "-m",
        "seed=0,1",
        "hydra/launcher=submitit_local",
        *SMALL,
        f"tracking.uri={store}",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    children, (parent,) = runs_of(store), runs_of(store, role="sweep")
    assert Counter(r.info.status for r in children) == {"FINISHED": 2}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}


def test_a_relaunch_into_the_same_sweep_dir_keeps_earlier_job_records(store, tmp_path):
    sweep_dir = tmp_path / "multirun"
    common = [*SMALL, f"tracking.uri={store}", f"hydra.sweep.dir={sweep_dir}"]
    first = run_cli("-m", "seed=0", *common)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli("-m", "seed=0,1", *common)  # seed 0 is done: one job, for seed 1
    assert second.returncode == 0, second.stderr[-3000:]
    records = {
        p.name: (p / ".hydra" / "overrides.yaml").read_text()
        for p in sweep_dir.iterdir()
        if p.is_dir()
    }
    assert sorted(records) == ["0", "1"]
    assert "- seed=0\n" in records["0"] and "- seed=1\n" in records["1"]

"""Sweeps through `hydra/launcher=submitit_slurm` on a real one-node SLURM cluster
(scripts/slurm.sh, with accounting), and pipeline.slurm on real jobs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.slurm import slurm_job_alive
from pipeline.tracking import open_client
from tests.conftest import PROJECT_ROOT, run_cli

pytestmark = [pytest.mark.services, pytest.mark.slow]

EXPERIMENT = "slurm_test"
SWEEP = ["-m", "seed=0,1", "model.activation=relu,linear", "train.epochs=1"]


def slurm(cluster, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A SLURM client command on the test cluster; fails the test when it fails."""
    result = subprocess.run(
        args,
        env={**os.environ, **cluster.env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr}"
    return result


def job_logs(folder: Path, lines: int = 40) -> str:
    """The tail of every submitit job log under folder, for assertion messages."""
    parts = []
    for log in sorted(folder.rglob("*_log.*")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {log.relative_to(folder)}\n" + "\n".join(tail))
    return "\n".join(parts) or f"(no job logs under {folder})"


def slurm_sweep(cluster, directory: Path, *overrides: str) -> tuple[str, str]:
    """Run SWEEP + overrides through submitit_slurm; returns (tracking URI, failure context)."""
    uri = f"sqlite:///{directory}/mlflow.db"
    submitit = directory / "submitit"
    result = run_cli(
        *SWEEP,
        *overrides,
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=debug",
        "hydra.launcher.timeout_min=15",
        f"hydra.launcher.submitit_folder={submitit}/%j",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        f"hydra.sweep.dir={directory}/multirun",
        f"tracking.uri={uri}",
        f"tracking.experiment={EXPERIMENT}",
        cwd=directory,
        # The jobs start in cwd: they must import this checkout's pipeline, not an installed one.
        env={**cluster.env, "PYTHONPATH": str(PROJECT_ROOT)},
        timeout=900,
    )
    context = f"sweep stderr:\n{result.stderr[-3000:]}\njob logs:\n{job_logs(submitit)}"
    assert result.returncode == 0, context
    return uri, context


def array_tasks(folder: Path) -> list[str]:
    """The `ARRAY_TASK` folders submitit made, one per array task."""
    return sorted(p.name for p in folder.iterdir() if re.fullmatch(r"\d+_\d+", p.name))


def runs_by_role(uri: str) -> dict[str, list]:
    client = open_client(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    roles: dict[str, list] = {}
    for run in runs:
        roles.setdefault(run.data.tags.get("deadunits.role"), []).append(run)
    return roles


def assert_four_finished_runs_under_one_parent(uri: str, context: str) -> None:
    roles = runs_by_role(uri)
    children, parents = roles.get("run", []), roles.get("sweep", [])
    assert len(parents) == 1, context
    (parent,) = parents
    assert parent.info.status == "FINISHED", context
    assert sorted(r.info.run_name for r in children) == [
        f"{a}-glorot_uniform-s{s}" for a in ("linear", "relu") for s in (0, 1)
    ], context
    assert {r.info.status for r in children} == {"FINISHED"}, context
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert parent.data.metrics["runs_finished"] == 4
    assert parent.data.metrics["crashed_jobs"] == 0


def test_keras_sweep_runs_as_slurm_jobs(slurm_cluster, tmp_path):
    uri, context = slurm_sweep(slurm_cluster, tmp_path)
    assert_four_finished_runs_under_one_parent(uri, context)
    # One SLURM array task per run, all COMPLETED in the accounting.
    submitted = array_tasks(tmp_path / "submitit")
    array = submitted[0].split("_")[0]
    assert submitted == [f"{array}_{task}" for task in range(4)]
    states = slurm(slurm_cluster, "sacct", "-n", "-X", "-P", "-j", array, "-o", "JobID,State")
    assert sorted(states.stdout.split()) == [f"{array}_{t}|COMPLETED" for t in range(4)]


def test_batched_cells_run_as_slurm_jobs(slurm_cluster, tmp_path):
    uri, context = slurm_sweep(slurm_cluster, tmp_path, "train.engine=batched")
    assert_four_finished_runs_under_one_parent(uri, context)
    # Two cells (relu, linear) of two seeds each: two array tasks.
    array = array_tasks(tmp_path / "submitit")[0].split("_")[0]
    assert array_tasks(tmp_path / "submitit") == [f"{array}_0", f"{array}_1"], context


def test_array_tasks_see_their_own_slurm_job(slurm_cluster, tmp_path, monkeypatch):
    # The printed JSON names the task as SLURM does (ARRAY_TASK) and its own unique job id.
    code = "import json; from pipeline.slurm import current_slurm_job as c; print(json.dumps(c()))"
    array = slurm(
        slurm_cluster,
        "sbatch",
        "--parsable",
        "--wait",
        "--array=0-1",
        f"--chdir={PROJECT_ROOT}",
        f"--output={tmp_path}/%A_%a.out",
        f"--wrap={sys.executable} -c '{code}'",
        timeout=300,
    ).stdout.strip()
    jobs = [json.loads((tmp_path / f"{array}_{task}.out").read_text()) for task in (0, 1)]
    assert [j["id"] for j in jobs] == [f"{array}_0", f"{array}_1"]
    assert [(j["array_job_id"], j["array_task_id"]) for j in jobs] == [(array, 0), (array, 1)]
    assert jobs[0]["job_id"] != jobs[1]["job_id"]  # every task has a job id of its own
    node = slurm(slurm_cluster, "sinfo", "-h", "-o", "%N").stdout.strip()
    assert {j["node"] for j in jobs} == {node}
    # Both names of an ended task are understood.
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    assert slurm_job_alive(f"{array}_1") is False
    assert slurm_job_alive(jobs[1]["job_id"]) is False


def wait_for_alive(job_id: str, expected: bool, **kwargs) -> bool | None:
    """slurm_job_alive, polled until it says `expected` or 60 s pass (accounting lags)."""
    deadline = time.monotonic() + 60
    while (alive := slurm_job_alive(job_id, **kwargs)) is not expected:
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return alive


def test_a_cancelled_job_is_no_longer_alive(slurm_cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    job = slurm(slurm_cluster, "sbatch", "--parsable", "--output=/dev/null", "--wrap=sleep 300")
    job_id = job.stdout.strip()
    assert slurm_job_alive(job_id) is True
    slurm(slurm_cluster, "scancel", job_id)
    assert wait_for_alive(job_id, False) is False

    def accounting_only(command):
        if command[0] != "sacct":
            raise FileNotFoundError(command[0])
        return subprocess.run(command, capture_output=True, text=True, timeout=30)

    # After MinJobAge squeue forgets the job; the accounting still knows it ended.
    assert wait_for_alive(job_id, False, run=accounting_only) is False
    assert slurm_job_alive("999999") is None

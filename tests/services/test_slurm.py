"""Sweeps through `hydra/launcher=submitit_slurm` on a real one-node SLURM cluster
(scripts/slurm.sh, with accounting), and pipeline.slurm on real jobs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from pipeline.slurm import slurm_job_alive
from pipeline.tracking import open_client
from tests.conftest import PROJECT_ROOT, child_env, run_cli

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


def slurm_arguments(directory: Path, *overrides: str, sweep=SWEEP, uri=None) -> list[str]:
    """The command line of a sweep through submitit_slurm, its dirs (and by default its
    SQLite store) in directory."""
    return [
        *sweep,
        *overrides,
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=debug",
        "hydra.launcher.timeout_min=15",
        f"hydra.launcher.submitit_folder={directory / 'submitit'}/%j",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        f"hydra.sweep.dir={directory}/multirun",
        f"tracking.uri={uri or f'sqlite:///{directory}/mlflow.db'}",
        f"tracking.experiment={EXPERIMENT}",
    ]


def sweep_env(cluster) -> dict[str, str]:
    # The jobs start in cwd: they must import this checkout's pipeline, not an installed one.
    return {**cluster.env, "PYTHONPATH": str(PROJECT_ROOT)}


def slurm_sweep(
    cluster, directory: Path, *overrides: str, sweep=SWEEP, uri=None
) -> tuple[str, str]:
    """Run a sweep through submitit_slurm; returns (tracking URI, failure context)."""
    result = run_cli(
        *slurm_arguments(directory, *overrides, sweep=sweep, uri=uri),
        cwd=directory,
        env=sweep_env(cluster),
        timeout=900,
    )
    context = (
        f"sweep stderr:\n{result.stderr[-3000:]}\njob logs:\n{job_logs(directory / 'submitit')}"
    )
    assert result.returncode == 0, context
    return uri or f"sqlite:///{directory}/mlflow.db", context


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
    assert "deadunits.slurm_job_id" not in parent.data.tags  # the sweeper ran outside SLURM


def slurm_tags(runs: list) -> list[tuple[str, str, str]]:
    """(run name, SLURM job id, array task id) of each run, by name."""
    return sorted(
        (
            r.info.run_name,
            r.data.tags.get("deadunits.slurm_job_id"),
            r.data.tags.get("deadunits.slurm_array_task_id"),
        )
        for r in runs
    )


def test_keras_sweep_runs_as_slurm_jobs(slurm_cluster, tmp_path):
    uri, context = slurm_sweep(slurm_cluster, tmp_path)
    assert_four_finished_runs_under_one_parent(uri, context)
    # One SLURM array task per run, all COMPLETED in the accounting.
    submitted = array_tasks(tmp_path / "submitit")
    array = submitted[0].split("_")[0]
    assert submitted == [f"{array}_{task}" for task in range(4)]
    expected = [f"{array}_{t}|COMPLETED" for t in range(4)]
    deadline = time.monotonic() + 60  # slurmdbd records a task's end a little after it ends
    while True:
        states = slurm(slurm_cluster, "sacct", "-n", "-X", "-P", "-j", array, "-o", "JobID,State")
        if sorted(states.stdout.split()) == expected or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert sorted(states.stdout.split()) == expected
    # Each run names the array task it ran in (jobs in sweep order: relu seeds, then linear).
    order = [f"{a}-glorot_uniform-s{s}" for a in ("relu", "linear") for s in (0, 1)]
    tasks = {name: task for task, name in enumerate(order)}
    assert slurm_tags(runs_by_role(uri)["run"]) == sorted(
        (name, f"{array}_{task}", str(task)) for name, task in tasks.items()
    ), context


def test_batched_sweep_through_the_tracking_server_on_postgresql(
    slurm_cluster, mlflow_server, tmp_path
):
    """What a real cluster uses: batched cells as array tasks, logging over HTTP to a
    server with a PostgreSQL store."""
    uri, context = slurm_sweep(
        slurm_cluster, tmp_path, "train.engine=batched", uri=mlflow_server.url
    )
    assert_four_finished_runs_under_one_parent(uri, context)
    # Two cells (relu, linear) of two seeds each: two array tasks.
    array = array_tasks(tmp_path / "submitit")[0].split("_")[0]
    assert array_tasks(tmp_path / "submitit") == [f"{array}_0", f"{array}_1"], context
    # The two seeds of a cell ran in one task, and say so.
    assert slurm_tags(runs_by_role(uri)["run"]) == [
        (f"{a}-glorot_uniform-s{s}", f"{array}_{task}", str(task))
        for a, task in (("linear", 1), ("relu", 0))
        for s in (0, 1)
    ], context


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


# Keras jobs that can be caught training: two run at a time on the test node, one waits.
LONG_JOBS = 3
LONG_SWEEP = ["-m", f"seed=range(0,{LONG_JOBS})", "train.epochs=3"]


def start_slurm_sweep(cluster, directory: Path) -> subprocess.Popen:
    """LONG_SWEEP through submitit_slurm in its own session (signals reach only it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *slurm_arguments(directory, sweep=LONG_SWEEP)],
        cwd=directory,
        env=child_env(sweep_env(cluster)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def training_run(uri: str, sweep: subprocess.Popen, timeout: float = 240):
    """A run that is RUNNING in the store (a SLURM task caught training)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and sweep.poll() is None:
        with contextlib.suppress(AssertionError, MlflowException):
            running = [r for r in runs_by_role(uri).get("run", []) if r.info.status == "RUNNING"]
            if running:
                return running[0]
        time.sleep(0.5)
    sweep.kill()
    _, err = sweep.communicate()
    pytest.fail(f"no run was caught training; sweep stderr:\n{err[-3000:]}")


def queued(cluster, array: str) -> str:
    """What squeue lists of an array (pending, running or completing tasks)."""
    result = subprocess.run(
        ["squeue", "-h", "-j", array, "-o", "%i %T"],
        env={**os.environ, **cluster.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout.strip()  # squeue fails for an array it no longer knows: nothing queued


def job_records(directory: Path) -> dict[str, str]:
    """Each job directory of the sweep dir and the overrides its .hydra record holds."""
    return {
        p.name: (p / ".hydra" / "overrides.yaml").read_text()
        for p in (directory / "multirun").iterdir()
        if p.name.isdigit()
    }


def assert_relaunch_completes_once(cluster, directory: Path, killed_keys: set[str]) -> None:
    """The same command again: every configuration once FINISHED, the killed ones re-run."""
    earlier = job_records(directory)
    finished_before = Counter(r.info.status for r in runs_by_role(uri_of(directory))["run"])
    started = time.monotonic()
    uri, context = slurm_sweep(cluster, directory, sweep=LONG_SWEEP)
    print(f"relaunch: {time.monotonic() - started:.1f} s")
    roles = runs_by_role(uri)
    children, (parent,) = roles["run"], roles["sweep"]
    finished = Counter(r.data.tags["config_key"] for r in children if r.info.status == "FINISHED")
    assert len(finished) == LONG_JOBS and set(finished.values()) == {1}, context
    statuses = Counter(r.info.status for r in children)
    assert statuses == {"FINISHED": LONG_JOBS, "KILLED": len(killed_keys)}, context
    assert killed_keys <= set(finished)  # what was killed ran again
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["runs_finished"] == LONG_JOBS
    assert parent.data.metrics["runs_killed"] == 0
    # The relaunch numbered its jobs after the earlier ones: their records are intact.
    assert earlier, "the first launch left no job directory"
    now = job_records(directory)
    assert {name: now[name] for name in earlier} == earlier
    assert len(set(now) - set(earlier)) == LONG_JOBS - finished_before["FINISHED"]


def uri_of(directory: Path) -> str:
    return f"sqlite:///{directory}/mlflow.db"


def test_a_cancelled_task_stops_the_sweep_and_a_relaunch_completes_it(slurm_cluster, tmp_path):
    uri = uri_of(tmp_path)
    sweep = start_slurm_sweep(slurm_cluster, tmp_path)
    victim = training_run(uri, sweep)
    task = victim.data.tags["deadunits.slurm_job_id"]
    array = task.split("_")[0]
    slurm(slurm_cluster, "scancel", task)
    cancelled = time.monotonic()
    _, err = sweep.communicate(timeout=60)  # the bound: the sweep ends within 60 s
    print(f"scancel to sweep exit: {time.monotonic() - cancelled:.1f} s")
    context = f"sweep stderr:\n{err[-3000:]}\njob logs:\n{job_logs(tmp_path / 'submitit')}"
    assert sweep.returncode == 1, context
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert re.fullmatch(
        rf"sweep stopped: SLURM job {task} CANCELLED; cancelled \d+ other jobs?; "
        "re-run the same command to resume",
        last,
    ), context
    assert "Traceback" not in err, context
    assert queued(slurm_cluster, array) == "", context
    roles = runs_by_role(uri)
    runs = {r.info.run_id: r for r in roles["run"]}
    assert runs[victim.info.run_id].info.status == "KILLED", context
    assert "RUNNING" not in {r.info.status for r in runs.values()}, context
    (parent,) = roles["sweep"]
    assert parent.info.status == "FAILED"
    outcomes = Counter(r.info.status for r in runs.values())
    assert parent.data.metrics["runs_finished"] == outcomes["FINISHED"]
    assert parent.data.metrics["runs_killed"] == outcomes["KILLED"]
    killed = {r.data.tags["config_key"] for r in runs.values() if r.info.status == "KILLED"}
    assert_relaunch_completes_once(slurm_cluster, tmp_path, killed)


def test_ctrl_c_cancels_the_slurm_jobs_and_a_relaunch_completes_the_sweep(slurm_cluster, tmp_path):
    uri = uri_of(tmp_path)
    sweep = start_slurm_sweep(slurm_cluster, tmp_path)
    run = training_run(uri, sweep)
    array = run.data.tags["deadunits.slurm_job_id"].split("_")[0]
    os.kill(sweep.pid, signal.SIGINT)  # the sweeping process only, as Ctrl-C in its terminal
    interrupted = time.monotonic()
    _, err = sweep.communicate(timeout=120)
    print(f"SIGINT to sweep exit: {time.monotonic() - interrupted:.1f} s")
    context = f"sweep stderr:\n{err[-3000:]}\njob logs:\n{job_logs(tmp_path / 'submitit')}"
    assert sweep.returncode == 130, context
    assert "interrupted: cancelled" in err and "Traceback" not in err, context
    assert queued(slurm_cluster, array) == "", context
    roles = runs_by_role(uri)
    statuses = Counter(r.info.status for r in roles["run"])
    assert statuses["KILLED"] >= 1 and statuses["RUNNING"] == 0, context
    (parent,) = roles["sweep"]
    assert parent.info.status == "KILLED"
    killed = {r.data.tags["config_key"] for r in roles["run"] if r.info.status == "KILLED"}
    assert_relaunch_completes_once(slurm_cluster, tmp_path, killed)

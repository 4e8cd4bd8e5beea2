"""pipeline.slurm on recorded SLURM environments and squeue/sacct output (no cluster needed;
tests/services/test_slurm.py runs the same helpers on a real one)."""

from __future__ import annotations

import subprocess
import threading
from types import SimpleNamespace

import pytest
from hydra.core.utils import JobReturn, JobStatus

from pipeline import interrupts, schema, slurm_launcher, tracking
from pipeline.slurm import (
    current_slurm_job,
    parse_states,
    slurm_job_alive,
    states_alive,
    task_state,
)
from pipeline.sweep import SweepStopped
from pipeline.tracking import owner_alive, process_tags, slurm_owner_alive


def test_outside_slurm_there_is_no_job():
    assert current_slurm_job({"HOME": "/nowhere"}) is None
    assert current_slurm_job({"SLURM_JOB_ID": ""}) is None


def test_a_plain_job_is_named_by_its_job_id():
    job = current_slurm_job(
        {"SLURM_JOB_ID": "17", "SLURMD_NODENAME": "n1", "SLURM_CLUSTER_NAME": "c"}
    )
    assert job == {
        "id": "17",
        "job_id": "17",
        "array_job_id": None,
        "array_task_id": None,
        "node": "n1",
        "cluster": "c",
    }


def test_an_array_task_is_named_array_underscore_task():
    job = current_slurm_job(
        {"SLURM_JOB_ID": "45", "SLURM_ARRAY_JOB_ID": "41", "SLURM_ARRAY_TASK_ID": "4"}
    )
    assert (job["id"], job["job_id"], job["array_job_id"], job["array_task_id"]) == (
        "41_4",
        "45",
        "41",
        4,
    )


def test_states_are_read_from_squeue_and_sacct_output():
    assert parse_states("RUNNING\nPENDING\n") == ["RUNNING", "PENDING"]
    assert parse_states("CANCELLED by 0\n\nCOMPLETED\n") == ["CANCELLED", "COMPLETED"]
    assert parse_states("cancelled+\n") == ["CANCELLED"]


@pytest.mark.parametrize(
    ("states", "alive"),
    [
        ([], None),
        (["RUNNING"], True),
        (["COMPLETING"], True),
        (["CANCELLED"], False),
        (["COMPLETED", "FAILED", "TIMEOUT"], False),
        (["COMPLETED", "PENDING"], True),  # an array with one task left
    ],
)
def test_a_job_is_alive_while_any_state_is_not_final(states, alive):
    assert states_alive(states) is alive


def answers(**by_program):
    """A fake runner: program name -> (returncode, stdout); records the commands."""
    calls = []

    def run(command):
        calls.append(command[0])
        if command[0] not in by_program:
            raise FileNotFoundError(command[0])
        code, out = by_program[command[0]]
        return subprocess.CompletedProcess(command, code, out, "")

    return run, calls


def test_squeue_answers_first():
    run, calls = answers(squeue=(0, "RUNNING\n"), sacct=(0, "COMPLETED\n"))
    assert slurm_job_alive("12_3", run) is True
    assert calls == ["squeue"]


def test_a_job_squeue_forgot_is_looked_up_in_accounting():
    run, calls = answers(squeue=(1, ""), sacct=(0, "CANCELLED by 0\n"))
    assert slurm_job_alive("12", run) is False
    assert calls == ["squeue", "sacct"]


def test_unknown_when_slurm_cannot_tell():
    assert slurm_job_alive("12", answers()[0]) is None
    assert slurm_job_alive("12", answers(squeue=(1, ""), sacct=(0, ""))[0]) is None


@pytest.mark.parametrize(
    ("state", "has_result", "expected"),
    [
        ("UNKNOWN", False, "waiting"),  # sacct does not know the task yet
        ("PENDING", False, "waiting"),
        ("RUNNING", False, "waiting"),
        ("COMPLETING", False, "waiting"),
        ("RUNNING", True, "done"),  # the result is written before SLURM says COMPLETED
        ("COMPLETED", False, "done"),  # its result file may lag on a shared file system
        ("CANCELLED by 0", False, "stopped"),
        ("CANCELLED+", False, "stopped"),
        ("FAILED", False, "stopped"),
        ("TIMEOUT", False, "stopped"),
        ("NODE_FAIL", False, "stopped"),
        ("FAILED", True, "done"),  # the job raised after writing its error: read it
    ],
)
def test_a_task_is_stopped_when_it_ended_without_its_result(state, has_result, expected):
    assert task_state(state, has_result) == expected


def test_a_run_owned_by_a_slurm_job_lives_as_long_as_the_job():
    assert slurm_owner_alive("7_1", ask=lambda job: True, can_ask=lambda: True)
    assert not slurm_owner_alive("7_1", ask=lambda job: False, can_ask=lambda: True)
    # Neither squeue nor sacct knows it: long gone.
    assert not slurm_owner_alive("7_1", ask=lambda job: None, can_ask=lambda: True)
    # No SLURM here to ask: leave the run alone.
    assert slurm_owner_alive("7_1", ask=lambda job: None, can_ask=lambda: False)


def test_runs_under_slurm_carry_their_job(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "45")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    tags = process_tags()
    assert (tags[schema.TAG_SLURM_JOB_ID], tags[schema.TAG_SLURM_ARRAY_TASK_ID]) == ("41_4", "4")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    tags = process_tags()
    assert tags[schema.TAG_SLURM_JOB_ID] == "45" and schema.TAG_SLURM_ARRAY_TASK_ID not in tags
    monkeypatch.delenv("SLURM_JOB_ID")
    assert schema.TAG_SLURM_JOB_ID not in process_tags()
    # A run that names a SLURM job is judged by the job, not by this host's processes.
    mine = {**process_tags(), schema.TAG_SLURM_JOB_ID: "999999999"}
    monkeypatch.setattr(tracking, "slurm_owner_alive", lambda job_id: job_id == "1_0")
    assert not owner_alive(mine)
    assert owner_alive({**mine, schema.TAG_SLURM_JOB_ID: "1_0"})


class FakeWatcher:
    def __init__(self, states: dict[str, str]):
        self.states = states
        self.updates = 0

    def update(self):
        self.updates += 1

    def get_state(self, job_id, mode):
        assert mode == "cache"  # the launcher alone decides when sacct runs
        return self.states.get(job_id, "UNKNOWN")


class FakeJob:
    def __init__(self, job_id, watcher, folder, result=None):
        self.job_id, self.watcher, self._result = job_id, watcher, result
        self.paths = SimpleNamespace(result_pickle=folder / f"{job_id}_result.pkl")
        if result is not None:
            self.paths.result_pickle.write_text("done")

    def results(self):
        return [self._result]


def test_a_cancelled_task_cancels_the_rest_and_keeps_what_completed(tmp_path, monkeypatch):
    cancelled = []
    monkeypatch.setattr(
        slurm_launcher, "cancel_and_wait", lambda ids: cancelled.append(ids) or True
    )
    watcher = FakeWatcher({"7_0": "COMPLETED", "7_1": "CANCELLED by 0", "7_2": "RUNNING"})
    done = JobReturn(status=JobStatus.COMPLETED, _return_value={"finished": 1})
    jobs = [
        FakeJob("7_0", watcher, tmp_path, done),
        FakeJob("7_1", watcher, tmp_path),
        FakeJob("7_2", watcher, tmp_path),
        FakeJob("7_3", watcher, tmp_path),  # still unknown to sacct
    ]
    with pytest.raises(SweepStopped) as stop:
        slurm_launcher.wait_for_tasks(jobs, poll_s=0)
    assert str(stop.value) == "SLURM job 7_1 CANCELLED; cancelled 2 other jobs"
    assert stop.value.returns == {0: done}
    assert cancelled == [["7"]] and watcher.updates == 1


def test_tasks_that_all_completed_return_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(slurm_launcher, "cancel_and_wait", lambda ids: pytest.fail("cancelled"))
    watcher = FakeWatcher({"7_0": "COMPLETED", "7_1": "RUNNING"})
    returns = [JobReturn(status=JobStatus.COMPLETED, _return_value={"finished": i}) for i in (0, 1)]
    jobs = [FakeJob(f"7_{i}", watcher, tmp_path, r) for i, r in enumerate(returns)]
    assert slurm_launcher.wait_for_tasks(jobs, poll_s=0) == returns


def test_ctrl_c_cancels_every_task(tmp_path, monkeypatch):
    cancelled = []
    monkeypatch.setattr(
        slurm_launcher, "cancel_and_wait", lambda ids: cancelled.append(ids) or True
    )

    def interrupted(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(slurm_launcher.time, "sleep", interrupted)
    watcher = FakeWatcher({"7_0": "RUNNING", "7_1": "PENDING"})
    jobs = [FakeJob(f"7_{i}", watcher, tmp_path) for i in (0, 1)]
    with pytest.raises(KeyboardInterrupt, match="cancelled 2 SLURM jobs"):
        slurm_launcher.wait_for_tasks(jobs, poll_s=0)
    assert cancelled == [["7"]]


def test_ctrl_c_during_the_submission_cancels_what_it_submitted(tmp_path, monkeypatch):
    cancelled = []
    monkeypatch.setattr(
        slurm_launcher, "cancel_and_wait", lambda ids: cancelled.append(ids) or True
    )
    monkeypatch.setattr(interrupts, "_requested", threading.Event())
    watcher = FakeWatcher({})
    jobs = [FakeJob(f"9_{i}", watcher, tmp_path) for i in (0, 1, 2)]

    def submit_interrupted(overrides, first):
        interrupts._interrupt()  # what the SIGINT handler does while sbatch runs
        return jobs

    launcher = object.__new__(slurm_launcher.SlurmArrayLauncher)
    monkeypatch.setattr(launcher, "submit", submit_interrupted)
    with pytest.raises(KeyboardInterrupt, match="cancelled 3 SLURM jobs"):
        launcher.launch([["seed=0"]] * 3, 0)
    assert cancelled == [["9"]] and watcher.updates == 0  # cancelled before any waiting

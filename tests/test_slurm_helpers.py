"""pipeline.slurm on recorded SLURM environments and squeue/sacct output (no cluster needed;
tests/services/test_slurm.py runs the same helpers on a real one)."""

from __future__ import annotations

import subprocess

import pytest

from pipeline.slurm import current_slurm_job, parse_states, slurm_job_alive, states_alive


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

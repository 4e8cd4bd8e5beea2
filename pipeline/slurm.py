"""Which SLURM job this process runs in, whether a SLURM job is still alive, and ending jobs.

Pure helpers on SLURM's environment variables and on `squeue`/`sacct` output; the side
effects are running squeue, sacct and scancel, and the SIGTERM handler of a job.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping

# Job states after which a job never runs again (squeue --help / sacct's JOB STATE CODES).
# Every other state (PENDING, RUNNING, COMPLETING, SUSPENDED, REQUEUED, ...) is alive.
ENDED_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "TIMEOUT",
    }
)
QUERY_TIMEOUT_S = 30


def current_slurm_job(environ: Mapping[str, str] | None = None) -> dict | None:
    """The SLURM job this process runs in, or None outside SLURM.

    `id` is the name to give squeue, sacct and scancel: `ARRAY_TASK` for an array task
    (e.g. `41_3`), else the job id. `job_id` is SLURM_JOB_ID, unique per array task too.
    """
    env = os.environ if environ is None else environ
    job_id = env.get("SLURM_JOB_ID")
    if not job_id:
        return None
    array_job_id = env.get("SLURM_ARRAY_JOB_ID") or None
    task = env.get("SLURM_ARRAY_TASK_ID")
    array_task_id = int(task) if array_job_id and task not in (None, "") else None
    return {
        "id": f"{array_job_id}_{array_task_id}" if array_task_id is not None else job_id,
        "job_id": job_id,
        "array_job_id": array_job_id,
        "array_task_id": array_task_id,
        "node": env.get("SLURMD_NODENAME"),
        "cluster": env.get("SLURM_CLUSTER_NAME"),
    }


def parse_states(text: str) -> list[str]:
    """Job states from `squeue -h -t all -o %T` or `sacct -n -X -P -o State` output.

    sacct writes `CANCELLED by 0`; squeue may add a `+` (e.g. `CANCELLED+` when truncated).
    """
    states = []
    for line in text.splitlines():
        words = line.split()
        if words:
            states.append(words[0].rstrip("+").upper())
    return states


def states_alive(states: list[str]) -> bool | None:
    """True when any state is alive, False when all have ended, None when there are none."""
    if not states:
        return None
    return any(state not in ENDED_STATES for state in states)


Runner = Callable[[list[str]], subprocess.CompletedProcess]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)


def slurm_job_alive(job_id: str, run: Runner = _run) -> bool | None:
    """Whether a SLURM job (`123`, or an array task `123_4`) may still run.

    squeue knows jobs until MinJobAge after they end; after that sacct (accounting) does.
    A cancelled job stays alive (COMPLETING) until its processes are gone, up to KillWait
    after the cancel. None when neither knows the job or SLURM cannot be asked.
    """
    queries = (
        # -t all: also the jobs that ended (squeue hides them by default).
        ["squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T"],
        ["sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "State"],
    )
    for command in queries:
        try:
            result = run(command)
        except (OSError, subprocess.TimeoutExpired):
            continue
        # squeue exits 1 ("Invalid job id specified") for a job it no longer holds.
        if result.returncode == 0:
            alive = states_alive(parse_states(result.stdout))
            if alive is not None:
                return alive
    return None


def slurm_available() -> bool:
    """Whether this machine can ask SLURM about jobs (its client programs are installed)."""
    return shutil.which("squeue") is not None or shutil.which("sacct") is not None


def task_state(state: str, has_result: bool) -> str:
    """What a submitit task's SLURM state and result file say: `done` (a result to read),
    `stopped` (ended without one: cancelled, failed, timed out, its node lost) or `waiting`.

    A COMPLETED task is done even while its result file is not yet visible (shared file
    systems lag); submitit waits for it.
    """
    words = state.split()
    name = words[0].rstrip("+").upper() if words else ""
    if has_result or name == "COMPLETED":
        return "done"
    return "stopped" if name in ENDED_STATES else "waiting"


def scancel(job_ids: list[str], run: Runner = _run) -> None:
    """Cancel SLURM jobs (an array's id cancels all its tasks); jobs already gone are fine."""
    if job_ids:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            run(["scancel", *job_ids])


def wait_until_ended(job_ids: list[str], timeout_s: float, poll_s: float = 1.0) -> bool:
    """Poll until none of the jobs may still run (SLURM's KillWait bounds a cancelled job);
    False when some still may after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while any(slurm_job_alive(job_id) for job_id in job_ids):
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True

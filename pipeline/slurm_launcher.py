"""`hydra/launcher=submitit_slurm` as deadunits runs it: a sweep that notices its jobs.

The plugin's launcher submits one job array and then waits for each task's result in
order, so a cancelled task ends the sweep only after the earlier tasks, with a traceback,
while the rest of the array runs on; and Ctrl-C leaves every job running. This launcher
submits the same array, then polls all tasks together: when one ends without a result
(cancelled, failed, timed out), it cancels the rest of the array, waits until they are
gone and raises SweepStopped with the results of the tasks that completed; on Ctrl-C it
cancels all its jobs, waits, and re-raises. The sweeper swaps it in for the plugin's
(GroupingSweeper.setup). A Ctrl-C during the submission itself waits for sbatch's job ids and
cancels them too.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

from pipeline import interrupts
from pipeline.slurm import scancel, task_state, wait_until_ended
from pipeline.sweep import SweepStopped

log = logging.getLogger("deadunits")

POLL_S = 2.0  # result files are checked this often (a file system call per task)
REFRESH_S = 10.0  # SLURM's accounting (one sacct for the whole array) this often
# A cancelled job gets SIGTERM, then SIGKILL after SLURM's KillWait (30 s by default).
END_TIMEOUT_S = 45.0


class SlurmArrayLauncher(SlurmLauncher):
    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        jobs: list = []
        try:
            # A Ctrl-C while sbatch runs waits for the job ids, so that the tasks it
            # submitted are cancelled instead of left running.
            with interrupts.held():
                jobs = self.submit(job_overrides, initial_job_idx)
        except KeyboardInterrupt:
            if not jobs:
                raise
            raise cancelled_all(jobs, len(jobs)) from None
        return wait_for_tasks(jobs)

    def submit(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        """The plugin's launch up to the submission: one array (or job), its submitit jobs."""
        import submitit

        assert self.config is not None and len(job_overrides) > 0
        init_keys = {"max_num_timeout", "submitit_folder"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=self.params["submitit_folder"],
            **{f"{self._EXECUTOR}_max_num_timeout": self.params["max_num_timeout"]},
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                k if k in base else f"{self._EXECUTOR}_{k}": v
                for k, v in self.params.items()
                if k not in init_keys
            }
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            params.append(
                (
                    list(overrides),
                    "hydra.sweep.dir",
                    idx,
                    f"job_id_for_{idx}",
                    Singleton.get_state(),
                )
            )
        return executor.map_array(self, *zip(*params, strict=True))


def wait_for_tasks(
    jobs: list, poll_s: float = POLL_S, refresh_s: float = REFRESH_S
) -> list[JobReturn]:
    """Every task's JobReturn once all completed; SweepStopped as soon as one ended without
    a result; on Ctrl-C every task is cancelled before KeyboardInterrupt goes on."""
    watcher = jobs[0].watcher  # one per job class: a single sacct call covers the array
    refreshed = float("-inf")
    try:
        while True:
            if time.monotonic() - refreshed >= refresh_s:
                watcher.update()
                refreshed = time.monotonic()
            states = [state_of(job) for job in jobs]
            if any(task_state(*s) == "stopped" for s in states):
                stop_early(jobs, states)
            if all(task_state(*s) == "done" for s in states):
                return [job_return(job) for job in jobs]
            time.sleep(poll_s)
    except KeyboardInterrupt:
        waiting = [j for j in jobs if task_state(*state_of(j)) != "done"]
        raise cancelled_all(jobs, len(waiting)) from None


def cancelled_all(jobs: list, unfinished: int) -> KeyboardInterrupt:
    """Cancel every task of jobs; the interrupt to raise, naming the unfinished ones."""
    ended = cancel_and_wait(array_ids(jobs))
    note = f"cancelled {unfinished} SLURM jobs"
    return KeyboardInterrupt(note if ended else f"{note}; some may still be ending")


def state_of(job) -> tuple[str, bool]:
    """A task's last known SLURM state (no new sacct call) and whether its result is there."""
    return job.watcher.get_state(job.job_id, mode="cache"), job.paths.result_pickle.exists()


def stop_early(jobs: list, states: list[tuple[str, bool]]) -> None:
    """Cancel what is left of the array, wait until it is gone, raise SweepStopped."""
    stopped = [
        f"{job.job_id} {state.split()[0]}"
        for job, (state, has_result) in zip(jobs, states, strict=True)
        if task_state(state, has_result) == "stopped"
    ]
    others = [j for j, s in zip(jobs, states, strict=True) if task_state(*s) == "waiting"]
    ended = cancel_and_wait(array_ids(jobs))
    message = f"SLURM job{'s' if len(stopped) > 1 else ''} {', '.join(stopped)}"
    message += f"; cancelled {len(others)} other job{'' if len(others) == 1 else 's'}"
    if not ended:
        message += " (some may still be ending)"
    done = {i: job_return(j) for i, j in enumerate(jobs) if j.paths.result_pickle.exists()}
    raise SweepStopped(message, done)


def array_ids(jobs: list) -> list[str]:
    """The arrays (or single jobs) the tasks belong to: scancel on one cancels all its tasks."""
    return sorted({str(job.job_id).split("_")[0] for job in jobs})


def cancel_and_wait(job_ids: list[str]) -> bool:
    scancel(job_ids)
    return wait_until_ended(job_ids, END_TIMEOUT_S)


def job_return(job) -> JobReturn:
    """A task's JobReturn; one whose job raised outside the task function counts as crashed."""
    try:
        return job.results()[0]
    except Exception as error:  # submitit's UncompletedJobError, FailedJobError
        return JobReturn(status=JobStatus.FAILED, _return_value=error)

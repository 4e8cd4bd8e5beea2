"""The sweeper behind `python -m pipeline -m ...` (registered as hydra/sweeper=deadunits).

Before any job starts it composes and validates every sweep cell (jobs that differ only
in `seed`), skips runs already FINISHED, marks runs a dead sweep left RUNNING as KILLED,
and opens the sweep's parent run. Then it hands jobs to whatever launcher is configured
(basic, joblib, submitit): one job per seed for the keras engine, one job per cell for
the batched engine. It shows progress and ends with a one-screen summary.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from mlflow.entities import Metric, Param, RunTag
from omegaconf import DictConfig, open_dict
from tqdm import tqdm

from pipeline import interrupts, numerics, schema, startup, writer_process
from pipeline.config import parse_seed_ranges, seed_ranges
from pipeline.preflight import describe_compose_error, fail, preflight_sweep
from pipeline.store import StoreUnavailable, first_line, sqlite_path
from pipeline.tracking import (
    Tracker,
    choose_writer,
    flat_config,
    git_commit,
    open_store,
    process_tags,
)

log = logging.getLogger("deadunits")
MAX_PARAM_LENGTH = 6000
WRITER_KEY = "tracking.writer"
# A batched job holds every member's run record until it is logged (about 80 KB each, with
# the backlog of a busy store): a cell of 25,000 seeds in one job peaked at 2.4 GB.
SEEDS_PER_BATCHED_JOB = 5_000
PROGRESS_POLL_S = 3.0  # how often the progress bar asks the store for runs that ended
LOOKBACK_MS = 10_000


class SweepStopped(Exception):
    """A launcher ended the sweep early (a SLURM task was cancelled or failed, and it
    cancelled the rest). The message says what happened; `returns` holds the JobReturns of
    the jobs that completed, by their index in the launch."""

    def __init__(self, message: str, returns: dict[int, Any]):
        super().__init__(message)
        self.returns = returns


@dataclass
class Cell:
    """Jobs that differ only in seed: one config, many seeds."""

    overrides: list[str]
    cfg: DictConfig
    seeds: list[int]
    todo: list[int] = field(default_factory=list)

    @property
    def batched(self) -> bool:
        return self.cfg.train.engine == "batched"

    @property
    def first_job_seeds(self) -> int:
        """Seeds of its first batched job when none is done yet (a new store)."""
        return min(len(self.seeds), SEEDS_PER_BATCHED_JOB)


def split_seed(job: list[str]) -> tuple[list[str], int | None]:
    rest, seed = [], None
    for override in job:
        key, _, value = override.partition("=")
        if key == "seed":
            seed = int(value) if value.lstrip("-").isdigit() else value
        else:
            rest.append(override)
    return rest, seed


def plan_cells(jobs: list[list[str]], compose) -> list[Cell]:
    """Group the cartesian product into cells, each with its composed config."""
    grouped: dict[tuple[str, ...], list] = {}
    for job in jobs:
        rest, seed = split_seed(job)
        grouped.setdefault(tuple(rest), []).append(seed)
    cells = []
    for rest, seeds in grouped.items():
        cfg = compose(list(rest))
        seeds = [cfg.seed if s is None else s for s in seeds]
        compact = all(isinstance(s, int) and s >= 0 for s in seeds)
        with open_dict(cfg):  # thousands of list nodes would cost OmegaConf seconds
            cfg.seeds = seed_ranges(seeds) if compact else seeds
        cells.append(Cell(list(rest), cfg, seeds))
    return cells


class GroupingSweeper(Sweeper):
    def __init__(self, jobs_per_launch: int | None = None, params: dict[str, str] | None = None):
        super().__init__()
        self.jobs_per_launch = jobs_per_launch
        self.params = params or {}

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = project_launcher(
            Plugins.instance().instantiate_launcher(
                hydra_context=hydra_context, task_function=task_function, config=config
            ),
            hydra_context=hydra_context,
            task_function=task_function,
            config=config,
        )

    def _compose(self, overrides: list[str]) -> DictConfig:
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    def sweep(self, arguments: list[str]) -> Any:
        params = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        parsed = OverridesParser.create(
            config_loader=self.hydra_context.config_loader
        ).parse_overrides(params)
        jobs = BasicSweeper.split_arguments(parsed, None)[0]
        try:
            cells = plan_cells(jobs, self._compose)
        except Exception as error:  # Hydra composition errors
            fail(describe_compose_error(error))
        uri = preflight_sweep([cell.cfg for cell in cells])
        tracking = cells[0].cfg.tracking
        if runs_jobs_here(self.config):
            numerics.plan_threads(cell.cfg for cell in cells)
        if creates_store_in_writer(self.config, cells, uri):
            open_store_beside_imports(uri, tracking.experiment, cells[0])
        tracker = Tracker(uri, tracking.experiment)
        keys = run_keys(cells)
        skipped = select_todo(tracker, cells, keys)
        total = sum(len(c.todo) for c in cells)
        if total == 0:
            print(
                f"nothing to do: all {skipped} runs of this sweep are already FINISHED in "
                f"experiment '{tracking.experiment}' (force=true re-runs them)",
                file=sys.stderr,
            )
            return []
        sweep = SweepRun(tracker, arguments, cells, sweep_signature(list(keys.values())))
        if any(cell.batched for cell in cells):
            try:
                sweep.writer, why = choose_writer(tracker, tracking.writer)
            except StoreUnavailable as error:
                sweep.close("FAILED", sweep_totals(tracker, set(keys.values())), Counter())
                fail(str(error))
            print(why, file=sys.stderr)
        job_list = [job for cell in cells for job in job_overrides(cell, sweep)]
        if (
            sweep.writer == "bulk"
            and runs_jobs_here(self.config)
            and max(map(runs_in, job_list)) >= writer_process.MIN_RUNS
        ):
            writer_process.start()  # its imports overlap TensorFlow's in the first job
        if not runs_jobs_here(self.config):
            startup.started()  # this process only waits for its jobs from here on
        counts: Counter = Counter(skipped=skipped)
        started = time.time()
        status = "FAILED"
        ending = None  # (last line, exit code) of a sweep that ends early
        interrupts.remember_interrupts()
        try:
            with self._jobs_may_leave_calls(counts):
                self._launch(job_list, total, counts, tracker, sweep.sweep_id)
            status = "FINISHED" if counts["crashed_jobs"] == 0 else "FAILED"
        except KeyboardInterrupt as interrupt:
            status = "KILLED"
            done = f"{interrupt}; " if str(interrupt) else ""
            ending = (
                f"interrupted: {done}the runs in progress are marked KILLED. "
                "Re-run the same command to resume; finished runs are skipped.",
                130,
            )
        except SweepStopped as stop:
            ending = (f"sweep stopped: {stop}; re-run the same command to resume", 1)
        finally:
            totals = sweep_totals(tracker, set(keys.values()))
            sweep.close(status, totals, counts)
            print_summary(sweep, totals, counts, time.time() - started, uri)
        if ending is not None:
            print(ending[0], file=sys.stderr)
            raise SystemExit(ending[1])
        return []

    def _jobs_may_leave_calls(self, counts: Counter):
        """Jobs run in this process leave their last writes to the writer process and
        return; one that failed counts as a crashed job."""
        if not runs_jobs_here(self.config):
            return contextlib.nullcontext()

        def failed(error: BaseException) -> None:
            log.error("the writer process could not log a job's runs: %s", first_line(error))
            counts["crashed_jobs"] += 1

        return writer_process.jobs_may_leave_calls(failed)

    def _launch(
        self,
        jobs: list[list[str]],
        total_runs: int,
        counts: Counter,
        tracker: Tracker | None = None,
        sweep_id: str | None = None,
    ) -> None:
        """Launch the jobs, adding their runs' outcomes to counts as they return (also
        those of a job that a Ctrl-C ended, which carries its counts on the interrupt)."""
        # The progress bar replaces Hydra's two log lines per job.
        logging.getLogger("hydra._internal.core_plugins.basic_launcher").setLevel(logging.WARNING)
        per_launch = self.jobs_per_launch or default_jobs_per_launch(self.config)
        # A relaunch into the same sweep dir numbers its jobs after the earlier ones.
        first = next_job_number(Path(str(self.config.hydra.sweep.dir)))
        with (
            ProgressBar(
                total=total_runs, unit="run", desc="sweep", dynamic_ncols=True, file=sys.stderr
            ) as bar,
            StoreProgress(tracker, sweep_id, bar),
        ):
            returned = 0  # runs of the jobs that have returned; the store may know of more
            for start in range(0, len(jobs), per_launch):
                batch = jobs[start : start + per_launch]
                try:
                    returns = self.launcher.launch(batch, first + start)
                    results = dict(zip(range(len(batch)), returns, strict=True))
                except SweepStopped as stop:
                    count_results(batch, stop.returns, counts)
                    raise
                except KeyboardInterrupt as interrupt:
                    counts.update(getattr(interrupt, "counts", {}))
                    raise
                returned += count_results(batch, results, counts)
                bar.reach(returned)
                interrupts.check()  # a Ctrl-C a job swallowed still ends the sweep


def creates_store_in_writer(config: DictConfig, cells: list[Cell], uri: str) -> bool:
    """Whether the writer process starts before the store is opened, to create it: the
    store is a new SQLite file (MLflow's schema migrations take over a second), and the
    jobs, run in this process, will write through the writer process (bulk writer, a job of
    MIN_RUNS runs or more). A new store takes the bulk writer and has every run to do."""
    database = sqlite_path(uri)
    return (
        database is not None
        and not database.exists()
        and runs_jobs_here(config)
        and cells[0].cfg.tracking.writer != "client"
        and any(cell.batched and cell.first_job_seeds >= writer_process.MIN_RUNS for cell in cells)
    )


def open_store_beside_imports(uri: str, experiment: str, first: Cell) -> None:
    """Have the writer process create the store while this process imports what its
    first job trains with (TensorFlow; a 10,000-run sweep's first job trained 1-3 s sooner)
    and traces that job's program. The store is new, so the first job trains all the first
    cell's seeds it holds."""
    opened = writer_process.submit(open_store, uri, experiment)
    writer_process.start()  # its own imports follow the store
    from pipeline.job import import_for_training, warm_up

    import_for_training("batched")
    if first.batched:
        try:
            warm_up(first.cfg, first.first_job_seeds)
        except Exception as error:  # the job meets it again, and reports it
            log.debug("warming up the first job failed: %s", first_line(error))
    startup.started()  # TensorFlow is imported by now
    try:
        opened.result()
    except Exception as error:  # opened again next, here, which reports what is wrong
        log.debug("the writer process could not open the store: %s", first_line(error))


def count_results(batch: list[list[str]], results: dict[int, Any], counts: Counter) -> int:
    """Add the results of a launch's jobs (by index in batch) to counts; runs they held."""
    runs = 0
    for index, result in results.items():
        job = batch[index]
        if result.status == JobStatus.COMPLETED:
            counts.update(result.return_value or {})
        else:
            counts["crashed_jobs"] += 1
            log.error("job %s crashed: %s", " ".join(job), first_line(result._return_value))
        runs += runs_in(job)
    return runs


def next_job_number(sweep_dir: Path) -> int:
    """One after the highest numbered job directory in sweep_dir (0 for a new sweep dir),
    so a relaunch into the same dir keeps the earlier jobs' .hydra records."""
    if not sweep_dir.is_dir():
        return 0
    numbers = [int(p.name) for p in sweep_dir.iterdir() if p.name.isdigit() and p.is_dir()]
    return max(numbers, default=-1) + 1


class ProgressBar(tqdm):
    """A tqdm bar two threads move: the launcher's results and the store's count, each a
    lower bound of the runs done, so the bar shows the larger."""

    _reach_lock = threading.Lock()

    def reach(self, runs: int) -> None:
        """Move the bar up to `runs` done (never back: the other source may know more)."""
        with self._reach_lock:
            if runs > self.n:
                self.update(min(runs, self.total) - self.n)


class StoreProgress:
    """Moves the progress bar as the sweep's runs end in the store, for launchers that
    return only at the end (submitit) and for long batched jobs: a background thread counts
    the runs of the sweep that ended since the launch began, with one COUNT on a database
    store, else asking the server only for those that ended since its last look.
    """

    def __init__(self, tracker: Tracker | None, sweep_id: str | None, bar, poll_s=PROGRESS_POLL_S):
        self.tracker, self.sweep_id, self.bar, self.poll_s = tracker, sweep_id, bar, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweep-progress", daemon=True)
        self.seen: set[str] = set()

    def __enter__(self) -> StoreProgress:
        if self.tracker is not None and self.sweep_id is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        since = int(time.time() * 1000)
        counted = self.tracker.bulk_problem is None  # a database: one COUNT per look
        try:
            before = self.count() if counted else 0
        except Exception as error:
            log.debug("progress from the store: %s", error)
            return
        while not self._stop.wait(self.poll_s):
            try:
                if counted:
                    self.bar.reach(self.count() - before)
                else:
                    since = self.poll(since)
            except Exception as error:  # progress is cosmetic: never break the sweep
                log.debug("progress from the store: %s", error)

    def count(self) -> int:
        """Runs of the sweep that have ended, all launches together."""
        from pipeline.bulk import count_ended_runs

        wanted = {schema.TAG_SWEEP_ID: self.sweep_id, schema.ROLE_TAG: schema.ROLE_RUN}
        return count_ended_runs(self.tracker.uri, self.tracker.experiment_id, wanted)

    def poll(self, since: int) -> int:
        """Count runs that ended at or after `since` (ms); the next `since`. It trails the
        newest end seen by LOOKBACK_MS: writers' clocks and commits are not in step."""
        runs = self.tracker.client.search_runs(
            [self.tracker.experiment_id],
            f"tags.{schema.TAG_SWEEP_ID} = '{self.sweep_id}' "
            f"and tags.`{schema.ROLE_TAG}` = '{schema.ROLE_RUN}' "
            f"and attributes.end_time >= {since}",
            max_results=10_000,
        )
        newest = since
        for run in runs:
            self.seen.add(run.info.run_id)
            newest = max(newest, run.info.end_time or newest)
        self.bar.reach(len(self.seen))
        return max(since, newest - LOOKBACK_MS)


def project_launcher(launcher, **setup):
    """The launcher Hydra built, with submitit_slurm's replaced by pipeline.slurm_launcher's
    (same parameters), which ends the sweep when a task is cancelled and cancels its jobs on
    Ctrl-C."""
    kind = type(launcher)
    if (kind.__module__, kind.__name__) != (
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
        "SlurmLauncher",
    ):
        return launcher
    from pipeline.slurm_launcher import SlurmArrayLauncher

    replacement = SlurmArrayLauncher(**launcher.params)
    replacement.setup(**setup)
    return replacement


def runs_jobs_here(config: DictConfig) -> bool:
    """Hydra's basic launcher runs the jobs in this process, one after another."""
    return "BasicLauncher" in str(config.hydra.launcher.get("_target_"))


def default_jobs_per_launch(config: DictConfig) -> int:
    launcher = config.hydra.launcher
    n_jobs = launcher.get("n_jobs")
    if n_jobs is None:
        return 1 if runs_jobs_here(config) else 10**9
    return 4 * (n_jobs if n_jobs > 0 else os.cpu_count() or 1)


def runs_in(job: list[str]) -> int:
    for override in job:
        if override.startswith("seeds="):
            return len(parse_seed_ranges(override.partition("=")[2].strip("'")))
    return 1


def run_keys(cells: list[Cell]) -> dict[tuple[int, int], str]:
    """The config key of every planned run, by (cell, seed)."""
    keys = {}
    for cell in cells:
        flat = flat_config(cell.cfg)
        for seed, key in zip(cell.seeds, schema.config_keys(flat, cell.seeds), strict=True):
            keys[(id(cell), seed)] = key
    return keys


def select_todo(tracker: Tracker, cells: list[Cell], keys: dict[tuple[int, int], str]) -> int:
    """Fill each cell's todo seeds (the resume rule: Tracker.done_keys); how many are skipped."""
    done = tracker.done_keys(set(keys.values()), force=False)
    skipped = 0
    for cell in cells:
        for seed in cell.seeds:
            if keys[(id(cell), seed)] in done and not cell.cfg.force:
                skipped += 1
            else:
                cell.todo.append(seed)
    return skipped


def job_overrides(cell: Cell, sweep: SweepRun) -> list[list[str]]:
    """A job's overrides: the cell's, its parent run, and its seeds (one, or all of a batch);
    a batched job also gets the writer the sweep chose."""
    common = [
        *cell.overrides,
        f"tracking.parent_run_id={sweep.parent_run_id}",
        f"tracking.sweep_id={sweep.sweep_id}",
    ]
    if not cell.todo:
        return []
    if cell.batched:
        chosen = [o for o in common if not o.startswith(f"{WRITER_KEY}=")]
        chosen.append(f"{WRITER_KEY}={sweep.writer}")
        parts = range(0, len(cell.todo), SEEDS_PER_BATCHED_JOB)
        return [
            [*chosen, f"seeds='{seed_ranges(cell.todo[i : i + SEEDS_PER_BATCHED_JOB])}'"]
            for i in parts
        ]
    return [[*common, f"seed={seed}"] for seed in cell.todo]


class SweepRun:
    """The sweep's parent run: every job's runs are nested under it.

    A sweep is identified by the config keys of all its runs, so re-launching the same
    command (to resume after a crash) reopens the same parent instead of adding one.
    """

    @interrupts.held()
    def __init__(self, tracker: Tracker, arguments: list[str], cells: list[Cell], signature: str):
        self.tracker = tracker
        self.signature = signature
        self.writer = "client"  # the batched jobs' writer, once the sweep has chosen it
        self.owned = True
        self.resumed = False
        client = tracker.client
        outer = tracker.outer_run_id()
        previous = self.previous_parent()
        if outer:
            self.parent_run_id, self.owned = outer, False
            self.sweep_id = uuid.uuid4().hex[:12]
        elif previous is not None:
            self.parent_run_id = previous.info.run_id
            self.sweep_id = previous.data.tags[schema.TAG_SWEEP_ID]
            self.resumed = True
            client.update_run(self.parent_run_id, status="RUNNING")
        else:
            self.sweep_id = uuid.uuid4().hex[:12]
            run = client.create_run(
                tracker.experiment_id,
                run_name=schema.sweep_run_name(self.sweep_id),
                tags={schema.ROLE_TAG: schema.ROLE_SWEEP},
            )
            self.parent_run_id = run.info.run_id
        self.experiment = client.get_experiment(tracker.experiment_id).name
        self.command = " ".join(["python -m pipeline -m", *loggable_overrides(arguments)])
        tags = {
            schema.ROLE_TAG: schema.ROLE_SWEEP,
            schema.TAG_SWEEP_ID: self.sweep_id,
            schema.TAG_SWEEP_SIGNATURE: signature,
            **process_tags(),
        }
        if commit := git_commit():
            tags[schema.TAG_GIT_COMMIT] = commit
        params = {
            "overrides": (" ".join(loggable_overrides(arguments)) or "(none)")[:MAX_PARAM_LENGTH],
            "job_count": str(sum(len(c.seeds) for c in cells)),
            "cells": str(len(cells)),
        }
        # MLflow params are immutable: a reopened parent, or the run `mlflow run` opened
        # (which holds the MLproject parameters), keeps the ones it has.
        existing = client.get_run(self.parent_run_id).data.params
        params = {k: v for k, v in params.items() if k not in existing}
        client.log_batch(
            self.parent_run_id,
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )

    def previous_parent(self):
        runs = self.tracker.client.search_runs(
            [self.tracker.experiment_id],
            f"tags.`{schema.TAG_SWEEP_SIGNATURE}` = '{self.signature}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0] if runs else None

    def report_command(self) -> str:
        return f"python -m analysis --experiment '{self.experiment}' --sweep {self.sweep_id}"

    @interrupts.held()
    def close(self, status: str, totals: Counter, launch: Counter) -> None:
        """The parent's metrics count the whole sweep, across relaunches; its description
        (shown on its page in the MLflow UI) says what it holds and how to reproduce it."""
        now = int(time.time() * 1000)
        values = {schema.sweep_metric(n): totals[n] for n in schema.SWEEP_COUNTS}
        values[schema.sweep_metric("skipped")] = launch["skipped"]
        values[schema.CRASHED_JOBS] = launch["crashed_jobs"]
        client = self.tracker.client
        client.log_batch(
            self.parent_run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in values.items()],
            tags=[RunTag(schema.TAG_NOTE, self.description(status, totals, launch))],
        )
        if self.owned:
            client.set_terminated(self.parent_run_id, status=status)

    def description(self, status: str, totals: Counter, launch: Counter) -> str:
        counts = ", ".join(f"{n} {totals[n]}" for n in schema.SWEEP_COUNTS if n != "skipped")
        return "\n".join(
            [
                f"**deadunits sweep {self.sweep_id}** ({status.lower()}): {counts}; "
                f"last launch skipped {launch['skipped']} already FINISHED, "
                f"{launch['crashed_jobs']} crashed jobs.",
                "",
                f"Reproduce or resume (same tracking.uri): `{self.command}`",
                "",
                f"Report: `{self.report_command()}` "
                f"(writes reports/{self.experiment}/report.html and logs a `report` run).",
            ]
        )


def sweep_totals(tracker: Tracker, keys: set[str]) -> Counter:
    """The whole sweep as the store holds it: each planned config key counted once, by its
    best outcome (finished, running, diverged, failed, killed)."""
    runs = tracker.runs_by_key(keys)
    totals: Counter = Counter(planned=len(keys))
    for key in keys:
        outcomes = {
            schema.outcome(r.status, r.tags.get(schema.TAG_DIVERGED) == "true")
            for r in runs.get(key, [])
        }
        for name in (schema.FINISHED, schema.RUNNING, schema.DIVERGED, schema.FAILED):
            if name in outcomes:
                totals[name] += 1
                break
        else:
            totals[schema.KILLED] += bool(outcomes)
    return totals


def loggable_overrides(arguments: list[str]) -> list[str]:
    """The sweep's overrides minus those that may hold credentials or machine paths."""
    kept = []
    for argument in arguments:
        key = argument.partition("=")[0].lstrip("+~")
        if key in schema.NOT_LOGGED or key.startswith("hydra."):
            continue
        kept.append(argument)
    return kept


def sweep_signature(keys: list[str]) -> str:
    return hashlib.sha1("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def print_summary(
    sweep: SweepRun, totals: Counter, launch: Counter, seconds: float, uri: str
) -> None:
    ran = launch["finished"] + launch["failed"] + launch["diverged"] + launch["killed"]
    rate = ran / seconds if seconds > 0 else 0.0
    lines = [
        f"deadunits sweep {sweep.sweep_id}: this launch ran {ran} runs in {seconds:.1f} s "
        f"({rate:.1f} runs/s), skipped {launch['skipped']} already FINISHED, "
        f"crashed jobs {launch['crashed_jobs']}",
        f"  whole sweep: finished {totals['finished']} of {totals['planned']} planned, "
        f"failed {totals['failed']}, diverged {totals['diverged']}, killed {totals['killed']}",
        f"  experiment '{sweep.experiment}', parent run {sweep.parent_run_id}",
        f"  report: {sweep.report_command()}",
    ]
    if uri.startswith("sqlite:"):
        lines.append(f"  UI:     mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")
    print("\n".join(lines), file=sys.stderr)

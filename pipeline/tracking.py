"""How the pipeline writes to MLflow: runs as whole records, resume lookups, the experiment.

Each training run is logged with one create_run, one log_batch (params, metrics with
their steps, tags) and one set_terminated: no per-metric calls, since MLflow's client costs
a transaction per call. The names written are those of `pipeline.schema`.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cache, cached_property
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from omegaconf import OmegaConf

from pipeline import interrupts, schema
from pipeline.slurm import current_slurm_job, slurm_available, slurm_job_alive
from pipeline.store import PROJECT_ROOT, StoreUnavailable, sqlite_path

MAX_PARAMS, MAX_TAGS, MAX_METRICS = 100, 100, 1000  # one log_batch's limits


def flat_config(cfg) -> dict[str, object]:
    """Every leaf of a composed config, resolved and keyed with dots."""
    return schema.flatten(OmegaConf.to_container(cfg, resolve=True))


@cache
def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def process_tags() -> dict[str, str]:
    """Who is running this: lets a later sweep tell a live run from one a crash left RUNNING.

    The process start time tells a live owner from a new process that reuses its PID; under
    SLURM the job id says it from any machine that can ask SLURM.
    """
    tags = {schema.TAG_HOST: socket.gethostname(), schema.TAG_PID: str(os.getpid())}
    if (started := process_start(os.getpid())) is not None:
        tags[schema.TAG_PROCESS_START] = started
    if (job := current_slurm_job()) is not None:
        tags[schema.TAG_SLURM_JOB_ID] = job["id"]
        if job["array_task_id"] is not None:
            tags[schema.TAG_SLURM_ARRAY_TASK_ID] = str(job["array_task_id"])
    return tags


def proc_stat(pid: int) -> list[str] | None:
    """Fields 3 on of /proc/<pid>/stat (state, ppid, pgrp, ...); None without it (ended, or
    not Linux). The name in field 2 may hold spaces, so fields are counted after its ")"."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()


def process_start(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (Linux /proc), None elsewhere."""
    fields = proc_stat(pid)
    return None if fields is None else fields[19]  # field 22


@dataclass
class RunRecord:
    """One run's complete payload, ready for a single log_batch."""

    name: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: list[Metric] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    status: str = "FINISHED"
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def merged(self, other: RunRecord) -> RunRecord:
        """This record with another's params, tags, metrics and status added."""
        return RunRecord(
            self.name,
            {**self.params, **other.params},
            {**self.tags, **other.tags},
            self.metrics + other.metrics,
            {**self.artifacts, **other.artifacts},
            other.status,
            self.started_ms,
        )

    def add_metrics(self, values: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        self.metrics.extend(Metric(k, float(v), now, step) for k, v in values.items())

    def add_series(self, key: str, values: Iterable[float], first_step: int = 1) -> None:
        now = int(time.time() * 1000)
        self.metrics.extend(
            Metric(key, float(v), now, step) for step, v in enumerate(values, start=first_step)
        )


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RetryingClient:
    """An MlflowClient whose calls retry with backoff while SQLite reports a lock.

    SQLite takes one writer at a time; MLflow waits 20 s for the lock, and parallel
    workers can still exceed that under load. A locked write is rolled back, so a retry
    cannot duplicate it.
    """

    def __init__(self, client: MlflowClient, attempts: int = 8):
        self._client = client
        self._attempts = attempts

    def __getattr__(self, name: str):
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def call(*args, **kwargs):
            for attempt in range(self._attempts):
                try:
                    with interrupts.held():  # a store call is never cut in half
                        return method(*args, **kwargs)
                except Exception as error:
                    if "database is locked" not in str(error) or attempt == self._attempts - 1:
                        raise
                    time.sleep(min(5.0, 0.1 * 2**attempt) * (0.5 + random.random()))
            raise AssertionError("unreachable")

        return call


def open_client(uri: str) -> MlflowClient:
    """An MlflowClient; a new SQLite store is created by one process at a time.

    MLflow creates the tables of a new SQLite store on first use, and two processes doing
    that at once fail with "table ... already exists".
    """
    db = sqlite_path(uri)
    if db is None:
        return MlflowClient(tracking_uri=uri)
    with open(db.parent / f"{db.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return MlflowClient(tracking_uri=uri)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class Tracker:
    """A tracking store, one experiment in it, and the sweep (if any) runs belong to."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        parent_run_id: str | None = None,
        sweep_id: str | None = None,
    ):
        self.uri = uri
        self.client = RetryingClient(open_client(uri))
        self.experiment_id = ensure_experiment(self.client, uri, experiment)
        self.parent_run_id = parent_run_id
        self.sweep_id = sweep_id

    def outer_run_id(self) -> str | None:
        """The run `mlflow run` opened for us ($MLFLOW_RUN_ID), if it is in this experiment."""
        run_id = os.environ.get("MLFLOW_RUN_ID")
        if not run_id:
            return None
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        return run_id if run.info.experiment_id == self.experiment_id else None

    def base_tags(self) -> dict[str, str]:
        tags = {schema.ROLE_TAG: schema.ROLE_RUN, **process_tags()}
        if commit := git_commit():
            tags[schema.TAG_GIT_COMMIT] = commit
        if self.parent_run_id:
            tags[schema.TAG_PARENT] = self.parent_run_id
        if self.sweep_id:
            tags[schema.TAG_SWEEP_ID] = self.sweep_id
        return tags

    @interrupts.held()
    def start(self, record: RunRecord) -> str:
        """Create a RUNNING run carrying everything known so far."""
        run = self.client.create_run(
            self.experiment_id,
            start_time=record.started_ms,
            tags={**record.tags, schema.TAG_RUN_NAME: record.name},
            run_name=record.name,
        )
        try:
            # create_run stored the tags; sending them again would cost log_batch a transaction.
            self.log(run.info.run_id, replace(record, tags={}), run.info.artifact_uri)
        except BaseException:
            self.client.set_terminated(run.info.run_id, status="FAILED")  # never left RUNNING
            raise
        return run.info.run_id

    @interrupts.held()
    def log(self, run_id: str, record: RunRecord, artifact_uri: str | None = None) -> None:
        params = [Param(k, v) for k, v in record.params.items()]
        tags = [RunTag(k, v) for k, v in record.tags.items()]
        metrics = record.metrics
        # One call for a normal run; the limits only split very deep nets or long trainings.
        while params or tags or metrics:
            self.client.log_batch(
                run_id,
                metrics=metrics[:MAX_METRICS],
                params=params[:MAX_PARAMS],
                tags=tags[:MAX_TAGS],
            )
            params, tags, metrics = params[MAX_PARAMS:], tags[MAX_TAGS:], metrics[MAX_METRICS:]
        directory = local_artifact_dir(artifact_uri)
        for name, text in record.artifacts.items():
            if directory is None:
                self.client.log_text(run_id, text, name)
            else:
                # What log_text does for a file:// store, without its temporary file and copy.
                path = directory / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")

    def finish(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status=status)

    @interrupts.held()
    def log_complete(self, record: RunRecord) -> str:
        """A whole run in three calls: create, log_batch, terminate."""
        run_id = self.start(record)
        self.finish(run_id, record.status)
        return run_id

    @cached_property
    def bulk_problem(self) -> str | None:
        """Why the bulk writer and readers cannot use this store (None: they can)."""
        from pipeline.bulk import bulk_support

        return bulk_support(self.uri, self.experiment_id)

    def runs_by_key(self, keys: set[str] | None = None) -> dict[str, list]:
        """Existing runs of this experiment by config key (every key when keys is None), as
        summaries: run id, status and the tags a resume reads. One SQL query on a database
        store; MLflow's search_runs elsewhere (a tracking server)."""
        from pipeline.bulk import RunSummary, find_runs_by_key

        if self.bulk_problem is None:
            return find_runs_by_key(self.uri, self.experiment_id, keys)
        found: dict[str, list] = {}
        if keys is not None and len(keys) <= 20:
            filters = [f"tags.{schema.TAG_CONFIG_KEY} = '{key}'" for key in sorted(keys)]
        else:
            filters = [f"tags.`{schema.ROLE_TAG}` = '{schema.ROLE_RUN}'"]
        for filter_string in filters:
            token = None
            while True:
                page = self.client.search_runs(
                    [self.experiment_id], filter_string, max_results=10_000, page_token=token
                )
                for run in page:
                    key = run.data.tags.get(schema.TAG_CONFIG_KEY)
                    if key and (keys is None or key in keys):
                        tags = {k: v for k, v in run.data.tags.items() if schema.is_resume_tag(k)}
                        summary = RunSummary(
                            run.info.run_id, run.info.status, key, run.info.start_time, tags
                        )
                        found.setdefault(key, []).append(summary)
                token = page.token
                if not token:
                    break
        return found

    @interrupts.held()
    def done_keys(self, keys: set[str], force: bool) -> set[str]:
        """The resume rule: keys that need no new run, because one is FINISHED, or RUNNING
        and owned by a live process. Runs whose owner is gone are marked KILLED on the way.
        With `force`, every key runs again (dead runs are still marked)."""
        done = set()
        for key, runs in self.runs_by_key(keys).items():
            for run in runs:
                if run.status == "RUNNING" and not owner_alive(run.tags):
                    self.finish(run.run_id, "KILLED")
                    run.status = "KILLED"
                elif run.status in ("FINISHED", "RUNNING"):
                    done.add(key)
        return set() if force else done


def open_store(uri: str, experiment: str) -> None:
    """Create the store (MLflow's schema migrations) and the experiment where they are new."""
    Tracker(uri, experiment)


def ensure_experiment(client: MlflowClient, uri: str, name: str) -> str:
    """Get or create the experiment; artifacts of a SQLite store live beside its database."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            raise MlflowException(
                f"experiment {name!r} is deleted; restore it or choose another name"
            )
        return existing.experiment_id
    db = sqlite_path(uri)
    location = (db.parent / "mlartifacts").as_uri() if db else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Another process created it between our lookup and create.
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return again.experiment_id


def choose_writer(tracker: Tracker, requested: str) -> tuple[str, str]:
    """The writer a command uses (bulk or client) and a line saying which and why.

    Raises StoreUnavailable when bulk was asked for and this store cannot take it."""
    if requested == "client":
        return "client", "tracking.writer=client: MLflow's client, three calls a run"
    if tracker.bulk_problem is None:
        return "bulk", f"tracking.writer={requested}: bulk, a chunk of runs per SQL transaction"
    if requested == "bulk":
        raise StoreUnavailable(f"tracking.writer: bulk cannot write here: {tracker.bulk_problem}")
    return "client", f"tracking.writer=auto: MLflow's client, since {tracker.bulk_problem}"


def owner_alive(tags: dict[str, str]) -> bool:
    """Whether the owner of a RUNNING run still runs: its SLURM job when it ran under SLURM
    (slurm_owner_alive), else the process on this host: same host, same PID, and the same
    process start time where the run recorded one (PIDs are reused)."""
    if slurm_id := tags.get(schema.TAG_SLURM_JOB_ID):
        return slurm_owner_alive(slurm_id)
    if tags.get(schema.TAG_HOST) != socket.gethostname():
        return False
    try:
        pid = int(tags.get(schema.TAG_PID, "0"))
    except ValueError:
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    recorded = tags.get(schema.TAG_PROCESS_START)
    return recorded is None or recorded == process_start(pid)


def slurm_owner_alive(job_id: str, ask=slurm_job_alive, can_ask=slurm_available) -> bool:
    """A SLURM job may still run unless SLURM says it ended or no longer knows it. Where
    SLURM cannot be asked at all (no client programs here), the run is left alone."""
    alive = ask(job_id)
    if alive is None:
        return not can_ask()
    return alive


def local_artifact_dir(artifact_uri: str | None) -> Path | None:
    """The directory behind a run's file:// artifact URI; None for any other store."""
    if not artifact_uri or not artifact_uri.startswith("file:"):
        return None
    parsed = urlparse(artifact_uri)
    if parsed.netloc not in ("", "localhost"):
        return None
    return Path(url2pathname(parsed.path))


SEED_PLACEHOLDER = 987_654_321_987  # never a valid seed (seeds are below 2**31)
_yaml_templates: dict[str, str] = {}


def to_yaml(cfg) -> str:
    """The config as YAML. Runs of one job differ only in their top-level seed, and rendering
    costs about 10 ms, so a dict's text is rendered once and only its seed line replaced."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("seed"), int):
        return OmegaConf.to_yaml(cfg, resolve=True)
    with_placeholder = {**cfg, "seed": SEED_PLACEHOLDER}
    key = repr(with_placeholder)
    if key not in _yaml_templates:
        if len(_yaml_templates) >= 64:
            _yaml_templates.clear()
        # A leading newline lets the top-level seed line be found even when it comes first.
        _yaml_templates[key] = "\n" + OmegaConf.to_yaml(with_placeholder, resolve=True)
    text = _yaml_templates[key].replace(
        f"\nseed: {SEED_PLACEHOLDER}\n", f"\nseed: {cfg['seed']}\n", 1
    )
    return text[1:]

"""The MLflow contract and the pure pieces around it: names, config keys, params, overrides,
tracking URIs, resume ownership, the retrying client."""

from __future__ import annotations

import ast
import io
import os
import re
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from pipeline import schema
from pipeline.config import parse_seed_ranges, seed_ranges, seeds_of
from pipeline.probe import ProbeResult
from pipeline.store import redact_uri, resolve_tracking_uri, sqlite_path
from pipeline.sweep import (
    Cell,
    ProgressBar,
    StoreProgress,
    count_results,
    job_overrides,
    loggable_overrides,
    next_job_number,
    runs_in,
    split_seed,
)
from pipeline.tracking import RetryingClient, Tracker, owner_alive, process_start, process_tags

ANALYSIS = Path(__file__).resolve().parents[1] / "analysis"
# What an MLflow name written by the pipeline looks like.
MLFLOW_NAME = re.compile(
    r"^((dead_units|dead_fraction|saturated_units|output_dead|collapsed)_(init|final)"
    r"(/layer_\d+)?|final_(train|test)_loss|(train|test)_loss|hidden_units"
    r"|deadunits\.[a-z_.]+|mlflow\.[A-Za-z_.]+)$"
)


def test_the_analysis_takes_every_mlflow_name_from_the_schema():
    """A renamed metric or tag is one edit in pipeline/schema.py: no copy in the analysis."""
    copies = [
        f"{path.name}:{node.lineno}: {node.value!r}"
        for path in sorted(ANALYSIS.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and MLFLOW_NAME.match(node.value)
    ]
    assert copies == []


def test_the_probe_logs_the_schema_metrics():
    two_layers = ProbeResult(
        dead=[np.array([[True, False]]), np.array([[True, True, False]])],
        saturated=[np.zeros((1, 2), bool), np.zeros((1, 3), bool)],
        output_dead=np.array([False]),
    )
    logged = two_layers.metrics("init")[0]
    expected = {
        *schema.stage_metrics("init"),
        schema.layer_dead_units("init", 1),
        schema.layer_dead_units("init", 2),
    }
    assert set(logged) == expected
    assert all(schema.is_count_metric(m) for m in expected - {schema.DEAD_FRACTION_INIT})
    assert logged[schema.DEAD_UNITS_INIT] == 3 and logged[schema.DEAD_FRACTION_INIT] == 0.6


@pytest.mark.parametrize(
    ("status", "diverged", "outcome"),
    [
        ("FINISHED", False, "finished"),
        ("FAILED", True, "diverged"),
        ("FAILED", False, "failed"),
        ("KILLED", False, "killed"),
        ("RUNNING", False, "running"),
        ("SCHEDULED", False, "running"),
    ],
)
def test_outcome(status, diverged, outcome):
    assert schema.outcome(status, diverged) == outcome


def test_flatten_keys_leaves_with_dots():
    nested = {"a": 1, "b": {"c": [1, 2], "d": {"e": None}}}
    assert schema.flatten(nested) == {"a": 1, "b.c": [1, 2], "b.d.e": None}


FLAT = {
    "seed": 0,
    "model.activation": "relu",
    "model.hidden_sizes": [2],
    "init.name": "he_normal",
    "train.engine": "keras",
    "train.memory_budget_mb": 1024,
    "tracking.uri": "postgresql://me:secret@db/x",
    "tracking.experiment": "e",
    "force": False,
    "seeds": None,
}


def test_config_key_ignores_what_does_not_change_a_result():
    key = schema.config_key(FLAT, 3)
    assert re.fullmatch(r"[0-9a-f]{16}", key)
    same = {
        **FLAT,
        "train.engine": "batched",
        "train.memory_budget_mb": 8,
        "tracking.uri": "sqlite:///elsewhere.db",
        "force": True,
        "seeds": [3, 4],
        "seed": 99,  # the seed that counts is the argument
    }
    assert schema.config_key(same, 3) == key
    assert schema.config_key(FLAT, 4) != key
    assert schema.config_key({**FLAT, "model.activation": "tanh"}, 3) != key


def test_params_never_hold_the_tracking_uri_and_lists_are_json():
    params = schema.run_params(FLAT, 7)
    assert "tracking.uri" not in params and "seeds" not in params
    assert params["seed"] == "7" and params["model.hidden_sizes"] == "[2]"
    assert schema.run_name(FLAT, 7) == "relu-he_normal-s7"


def test_split_seed_takes_the_seed_out_of_a_job():
    assert split_seed(["a=1", "seed=5", "b=2"]) == (["a=1", "b=2"], 5)
    assert split_seed(["a=1"]) == (["a=1"], None)
    assert split_seed(["seed=x"]) == ([], "x")  # left for validation to refuse


class _Sweep:
    parent_run_id, sweep_id, writer = "p123", "s456", "bulk"


@pytest.mark.parametrize("engine", ["keras", "batched"])
def test_job_overrides_carry_the_parent_and_one_form_of_seeds(engine):
    cfg = OmegaConf.create({"train": {"engine": engine}})
    cell = Cell(["model.activation=relu", "tracking.writer=auto"], cfg, [1, 2, 3], todo=[1, 3])
    jobs = job_overrides(cell, _Sweep())
    common = ["model.activation=relu", "tracking.parent_run_id=p123", "tracking.sweep_id=s456"]
    if engine == "batched":  # the writer the sweep chose replaces the one asked for
        assert jobs == [[*common, "tracking.writer=bulk", "seeds='1,3'"]]
        assert runs_in(jobs[0]) == 2
    else:
        common.insert(1, "tracking.writer=auto")
        assert jobs == [[*common, "seed=1"], [*common, "seed=3"]]
        assert [runs_in(j) for j in jobs] == [1, 1]
    assert job_overrides(Cell([], cfg, [1], todo=[]), _Sweep()) == []


@pytest.mark.parametrize(
    ("seeds", "text"),
    [([0, 1, 2, 5, 7, 8], "0-2,5,7-8"), ([3], "3"), (list(range(25_000)), "0-24999"), ([], "")],
)
def test_seed_ranges_round_trip(seeds, text):
    assert seed_ranges(seeds) == text
    if seeds:
        assert parse_seed_ranges(text) == seeds
        cfg = OmegaConf.create({"seed": 0, "seeds": text})
        assert seeds_of(cfg) == seeds


def test_loggable_overrides_drop_uris_and_hydra_keys():
    arguments = ["seed=0,1", "tracking.uri=sqlite:///x.db", "hydra.sweep.dir=/d", "+x=1"]
    assert loggable_overrides(arguments) == ["seed=0,1", "+x=1"]


def test_tracking_uri_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri("sqlite:///runs.db") == f"sqlite:///{tmp_path}/runs.db"
    assert sqlite_path(resolve_tracking_uri("sqlite:///runs.db")) == tmp_path / "runs.db"
    assert resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from_env.db")
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/from_env.db"
    assert sqlite_path("postgresql://db/x") is None


def test_redaction_hides_only_the_password():
    assert redact_uri("postgresql://me:secret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_a_live_owner_is_told_from_a_reused_pid():
    mine = process_tags()
    assert owner_alive(mine)
    assert not owner_alive({**mine, schema.TAG_PROCESS_START: "1"})  # same PID, another process
    assert not owner_alive({**mine, schema.TAG_HOST: socket.gethostname() + "-elsewhere"})
    child = subprocess.Popen(["true"])
    child.wait()
    assert not owner_alive({**mine, schema.TAG_PID: str(child.pid)})
    assert process_start(os.getpid()) == mine[schema.TAG_PROCESS_START]


class _Flaky:
    def __init__(
        self, failures: int, message: str = "(sqlite3.OperationalError) database is locked"
    ):
        self.failures, self.message, self.calls = failures, message, 0

    def log_batch(self, run_id):
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(self.message)
        return f"logged {run_id}"


def test_retrying_client_retries_locks_only(monkeypatch):
    monkeypatch.setattr("pipeline.tracking.time.sleep", lambda s: None)
    flaky = _Flaky(failures=3)
    assert RetryingClient(flaky).log_batch("r1") == "logged r1" and flaky.calls == 4
    with pytest.raises(RuntimeError, match="locked"):
        RetryingClient(_Flaky(failures=10), attempts=3).log_batch("r1")
    other = _Flaky(failures=1, message="no such run")
    with pytest.raises(RuntimeError, match="no such run"):
        RetryingClient(other).log_batch("r1")
    assert other.calls == 1


def test_a_relaunch_numbers_its_jobs_after_the_existing_ones(tmp_path):
    assert next_job_number(tmp_path / "new") == 0
    for name in ("0", "1", "4", "multirun.yaml", ".submitit", "12abc"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a job directory")
    assert next_job_number(tmp_path) == 5


def test_launch_results_count_runs_and_crashes():
    batch = [["seed=1"], ["seeds='1-3'"], ["seed=2"]]
    results = {
        0: JobReturn(status=JobStatus.COMPLETED, _return_value={"finished": 1}),
        1: JobReturn(status=JobStatus.COMPLETED, _return_value={"finished": 2, "failed": 1}),
        2: JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("boom")),
    }
    counts: Counter = Counter()
    assert count_results(batch, results, counts) == 5
    assert counts == {"finished": 3, "failed": 1, "crashed_jobs": 1}
    counts = Counter()
    assert count_results(batch, {1: results[1]}, counts) == 3  # a stopped launch: job 1 only
    assert counts == {"finished": 2, "failed": 1}


def test_progress_counts_the_sweeps_runs_that_end_in_the_store(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "progress")
    client = tracker.client

    def run(sweep_id: str, role: str = schema.ROLE_RUN, end: bool = True) -> None:
        tags = {schema.TAG_SWEEP_ID: sweep_id, schema.ROLE_TAG: role}
        created = client.create_run(tracker.experiment_id, tags=tags)
        if end:
            client.set_terminated(created.info.run_id, status="FINISHED")

    run("s1")  # ended before the launch: not this launch's progress
    since = int(time.time() * 1000) + 1
    time.sleep(0.01)
    with ProgressBar(total=10, file=io.StringIO()) as bar:
        progress = StoreProgress(tracker, "s1", bar)
        run("s1")
        run("s1", end=False)  # still RUNNING
        run("s2")  # another sweep
        run("s1", role=schema.ROLE_SWEEP)  # the parent
        following = progress.poll(since)
        assert bar.n == 1 and following >= since
        run("s1")
        progress.poll(following)
        progress.poll(following)  # runs seen twice count once
        assert bar.n == 2
        bar.reach(5)  # the launcher's results know more: the bar never moves back
        progress.poll(following)
        assert bar.n == 5
    assert progress.count() == 3  # one COUNT: the ended runs of the sweep, every launch

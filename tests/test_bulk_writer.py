"""pipeline.bulk against MLflow's client path, compared through MLflow's public API only."""

from __future__ import annotations

import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import uuid6
from mlflow import MlflowClient
from mlflow.entities import Metric

from pipeline import bulk
from pipeline.tracking import RunRecord, Tracker
from tests.conftest import PROJECT_ROOT

PARENT = "0123456789abcdef0123456789abcdef"  # a parent run id, as a sweep's children carry


def make_records(prefix: str = "r", count: int = 4) -> list[RunRecord]:
    """Runs shaped like the pipeline's: params, tags, metric series and scalars, artifacts.

    Record 1 diverges (NaN, then inf), record 2 repeats a metric point exactly, record 3 is
    left RUNNING and shares record 0's config key.
    """
    statuses = ["FINISHED", "FAILED", "KILLED", "RUNNING"]
    records = []
    for i in range(count):
        key = f"{prefix}-key-{i % 3}"
        record = RunRecord(
            name=f"{prefix}-relu-glorot-s{i}",
            params={"seed": str(i), "model.hidden_sizes": "[2]", "train.epochs": "5"},
            tags={
                "config_key": key,
                "deadunits.role": "run",
                "deadunits.host": "host-a",
                "deadunits.pid": str(1000 + i),
                "mlflow.parentRunId": PARENT,
                "sweep_id": f"{prefix}-sweep",
                "dead_at_init": "true" if i % 2 else "false",
            },
            artifacts={"config.yaml": f"seed: {i}\n", "initial_weights.json": f'{{"w": [{i}]}}'},
            status=statuses[i % len(statuses)],
        )
        t0 = 1_700_000_000_000 + i
        losses = [0.5 - 0.01 * (s + i) for s in range(5)]
        if i % 4 == 1:
            losses[3], losses[4] = float("nan"), float("inf")
        record.metrics += [Metric("train_loss", v, t0 + s, s + 1) for s, v in enumerate(losses)]
        record.metrics += [Metric("test_loss", v + 0.1, t0, s + 1) for s, v in enumerate(losses)]
        record.metrics += [
            Metric("dead_units_init", float(i % 3), t0, 0),
            Metric("final_train_loss", -float("inf") if i % 4 == 1 else 0.1 * i, t0, 0),
            # Same step, later timestamp, smaller value: the latest is the later timestamp.
            Metric("probe", 5.0, t0, 2),
            Metric("probe", 1.0, t0 + 7, 2),
        ]
        if i % 4 == 2:
            record.metrics.append(Metric("dead_units_init", float(i % 3), t0, 0))
        records.append(record)
    return records


def search_frame(uri: str, experiment_id: str, filter_string: str = "") -> pd.DataFrame:
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.search_runs([experiment_id], filter_string=filter_string)
    finally:
        mlflow.set_tracking_uri(previous)


def comparable(frame: pd.DataFrame, runs: dict) -> pd.DataFrame:
    """A search_runs frame without what differs between two stores: ids, times, locations."""
    frame = frame.drop(columns=["run_id", "experiment_id", "start_time", "end_time"])
    frame["artifact_uri"] = [
        uri.replace(run_id, "RUN").replace(location, "LOC")
        for uri, run_id, location in zip(
            frame.pop("artifact_uri"), runs["run_id"], runs["location"], strict=True
        )
    ]
    frame = frame.sort_values("tags.mlflow.runName").reset_index(drop=True)
    return frame[sorted(frame.columns)]


def same_value(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def run_view(client: MlflowClient, run_id: str, tmp: Path) -> dict:
    """Everything MLflow's public API shows of one run, ids and times left out."""
    run = client.get_run(run_id)
    location = client.get_experiment(run.info.experiment_id).artifact_location
    histories = {
        key: sorted(
            (m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value)
            for m in client.get_metric_history(run_id, key)
        )
        for key in run.data.metrics
    }
    files = {}
    pending = [None]
    while pending:
        for item in client.list_artifacts(run_id, pending.pop()):
            if item.is_dir:
                pending.append(item.path)
            else:
                local = client.download_artifacts(run_id, item.path, str(tmp))
                files[item.path] = Path(local).read_text(encoding="utf-8")
    return {
        "name": run.info.run_name,
        "status": run.info.status,
        "user": run.info.user_id,
        "stage": run.info.lifecycle_stage,
        "ended": run.info.end_time is not None and run.info.end_time >= run.info.start_time,
        "artifact_uri": run.info.artifact_uri.replace(run_id, "RUN").replace(location, "LOC"),
        "params": run.data.params,
        "tags": run.data.tags,
        "latest": {k: "nan" if math.isnan(v) else v for k, v in run.data.metrics.items()},
        "histories": histories,
        "files": files,
    }


def assert_same_runs(
    client_uri: str, client_exp: str, bulk_uri: str, bulk_exp: str, tmp: Path
) -> None:
    """The two experiments hold the same runs, by every public view (runs matched by name)."""
    frames = {}
    for label, uri, exp in (("client", client_uri, client_exp), ("bulk", bulk_uri, bulk_exp)):
        frame = search_frame(uri, exp)
        location = MlflowClient(uri).get_experiment(exp).artifact_location
        frames[label] = comparable(
            frame, {"run_id": frame["run_id"], "location": [location] * len(frame)}
        )
    pd.testing.assert_frame_equal(frames["client"], frames["bulk"])

    views = {}
    for label, uri, exp in (("client", client_uri, client_exp), ("bulk", bulk_uri, bulk_exp)):
        client = MlflowClient(uri)
        views[label] = {}
        for run in client.search_runs([exp], max_results=1000):
            view = run_view(client, run.info.run_id, tmp / label / run.info.run_id)
            views[label][view["name"]] = view
    assert views["client"] == views["bulk"]
    assert len(views["bulk"]) > 0


@pytest.fixture(scope="session")
def template_store(tmp_path_factory) -> Path:
    """An empty, migrated SQLite store: MLflow's migrations take seconds per new store."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def new_store(template: Path, directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, directory / "mlflow.db")
    return f"sqlite:///{directory}/mlflow.db"


@pytest.fixture
def store(template_store, tmp_path) -> str:
    """A fresh SQLite tracking URI (a copy of the template) in a temporary directory."""
    return new_store(template_store, tmp_path)


@pytest.fixture
def two_stores(template_store, tmp_path):
    """The same records through Tracker.log_complete and through write_runs, in two stores."""
    records = make_records()
    client_uri = new_store(template_store, tmp_path / "client")
    bulk_uri = new_store(template_store, tmp_path / "bulk")
    tracker = Tracker(client_uri, "exp")
    client_ids = [tracker.log_complete(record) for record in records]
    bulk_exp = Tracker(bulk_uri, "exp").experiment_id
    bulk_ids = bulk.write_runs(bulk_uri, bulk_exp, records)
    return client_uri, tracker.experiment_id, client_ids, bulk_uri, bulk_exp, bulk_ids


def test_write_runs_writes_what_the_client_path_writes(two_stores, tmp_path):
    client_uri, client_exp, _, bulk_uri, bulk_exp, bulk_ids = two_stores
    assert len(set(bulk_ids)) == len(make_records())
    assert_same_runs(client_uri, client_exp, bulk_uri, bulk_exp, tmp_path / "views")
    # Spot checks that the comparison looks at what matters.
    run = MlflowClient(bulk_uri).get_run(bulk_ids[1])
    assert run.info.status == "FAILED"
    assert math.isnan(
        [m for m in MlflowClient(bulk_uri).get_metric_history(bulk_ids[1], "train_loss")][3].value
    )
    assert run.data.metrics["train_loss"] == 1.7976931348623157e308  # inf, as MLflow stores it
    assert run.data.metrics["probe"] == 1.0
    assert run.data.tags["mlflow.parentRunId"] == PARENT


def test_write_runs_into_a_store_the_client_path_also_writes(store):
    """Both paths into one experiment: find_runs_by_key and read_experiment see both alike."""
    uri = store
    tracker = Tracker(uri, "exp")
    records = make_records("a")
    client_ids = [tracker.log_complete(r) for r in records]
    bulk_ids = bulk.write_runs(uri, tracker.experiment_id, make_records("b"))
    found = bulk.find_runs_by_key(uri, tracker.experiment_id)
    assert {s.run_id for runs in found.values() for s in runs} == set(client_ids + bulk_ids)


def test_run_ids_are_uuids_in_writing_order(store):
    """Time-ordered ids keep each chunk's rows at the end of the store's run_uuid indexes."""
    experiment_id = Tracker(store, "exp").experiment_id
    ids = [
        run_id
        for n in range(3)
        for run_id in bulk.write_runs(store, experiment_id, make_records(f"{n}", 4))
    ]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(uuid.UUID(hex=run_id).hex == run_id for run_id in ids)


def summaries_from_search(uri: str, experiment_id: str) -> dict[str, list[tuple]]:
    expected: dict[str, list[tuple]] = {}
    for run in MlflowClient(uri).search_runs([experiment_id], max_results=1000):
        tags = run.data.tags
        if "config_key" not in tags:
            continue
        own = {k: v for k, v in tags.items() if k.startswith("deadunits.")}
        expected.setdefault(tags["config_key"], []).append(
            (run.info.run_id, run.info.status, run.info.start_time, own)
        )
    return expected


def as_tuples(found: dict[str, list[bulk.RunSummary]]) -> dict[str, list[tuple]]:
    return {
        key: [(s.run_id, s.status, s.start_time, s.tags) for s in runs]
        for key, runs in found.items()
    }


@pytest.mark.parametrize("scan_all", [False, True])
def test_find_runs_by_key_matches_search_runs(store, monkeypatch, scan_all):
    uri = store
    tracker = Tracker(uri, "exp")
    tracker.log_complete(make_records("c", 2)[0])
    bulk.write_runs(uri, tracker.experiment_id, make_records("a", 6))
    bulk.write_runs(uri, tracker.experiment_id, make_records("b", 6))
    client = MlflowClient(uri)
    deleted = bulk.write_runs(uri, tracker.experiment_id, make_records("d", 1))[0]
    client.delete_run(deleted)
    other = Tracker(uri, "other").experiment_id
    bulk.write_runs(uri, other, make_records("a", 3))
    untagged = client.create_run(tracker.experiment_id)  # no config_key: not listed
    client.set_terminated(untagged.info.run_id)

    monkeypatch.setattr(bulk, "IN_CHUNK", 2)  # several IN lists
    monkeypatch.setattr(bulk, "KEYS_SCAN_ALL", 0 if scan_all else 1_000)
    expected = summaries_from_search(uri, tracker.experiment_id)
    assert len(expected) == 7  # a-key-0..2, b-key-0..2, c-key-0
    assert "d-key-0" not in expected
    assert as_tuples(bulk.find_runs_by_key(uri, tracker.experiment_id)) == expected
    wanted = {"a-key-0", "b-key-1", "c-key-0", "z-missing", "a-key-2"}
    found = bulk.find_runs_by_key(uri, tracker.experiment_id, wanted)
    assert as_tuples(found) == {k: v for k, v in expected.items() if k in wanted}
    assert [s.status for s in found["a-key-0"]].count("FINISHED") == 1
    assert {s.tags["deadunits.pid"] for s in found["a-key-0"]} == {"1000", "1003"}


def test_read_experiment_matches_search_runs(store):
    uri = store
    tracker = Tracker(uri, "exp")
    tracker.log_complete(make_records("c", 2)[1])
    bulk.write_runs(uri, tracker.experiment_id, make_records("a", 6))
    client = MlflowClient(uri)
    parent = client.create_run(tracker.experiment_id, tags={"deadunits.role": "sweep"})
    client.log_param(parent.info.run_id, "job_count", "3")
    client.delete_run(bulk.write_runs(uri, tracker.experiment_id, make_records("d", 1))[0])

    frames = bulk.read_experiment(uri, tracker.experiment_id)
    search = search_frame(uri, tracker.experiment_id)
    runs = frames["runs"].set_index("run_id").sort_index()
    search = search.set_index("run_id").sort_index()
    assert list(runs.index) == list(search.index)
    assert list(runs["status"]) == list(search["status"])
    assert list(runs["artifact_uri"]) == list(search["artifact_uri"])
    assert list(runs["run_name"]) == list(search["tags.mlflow.runName"])

    for table, prefix in (("params", "params."), ("tags", "tags."), ("latest_metrics", "metrics.")):
        columns = [c for c in search.columns if c.startswith(prefix)]
        long = search[columns].rename(columns=lambda c, p=prefix: c[len(p) :])
        long = long.reset_index().melt(id_vars="run_id", var_name="key", value_name="value")
        if table != "latest_metrics":
            long = long.dropna(subset=["value"])
        mine = frames[table]
        present = mine.set_index(["run_id", "key"])["value"]
        expected = long.set_index(["run_id", "key"])["value"]
        assert set(present.index) <= set(expected.index)
        if table == "latest_metrics":  # search_runs has NaN both for absent and NaN values
            present = present.reindex(expected.index)
        pd.testing.assert_series_equal(
            present.sort_index(), expected.sort_index(), check_names=False, check_dtype=False
        )

    only_runs = bulk.read_experiment(uri, tracker.experiment_id, tags={"deadunits.role": "run"})
    assert set(only_runs["runs"]["run_id"]) == set(
        search_frame(uri, tracker.experiment_id, "tags.`deadunits.role` = 'run'")["run_id"]
    )
    assert parent.info.run_id not in set(only_runs["params"]["run_id"])


def test_read_experiment_metric_histories(store):
    uri = store
    experiment_id = Tracker(uri, "exp").experiment_id
    ids = bulk.write_runs(uri, experiment_id, make_records("a", 6))
    client = MlflowClient(uri)
    for run_ids in (None, ids[1:3]):
        frames = bulk.read_experiment(
            uri, experiment_id, history_keys=["train_loss", "probe"], history_run_ids=run_ids
        )
        mine = sorted(
            (r.run_id, r.key, r.step, r.timestamp, "nan" if math.isnan(r.value) else r.value)
            for r in frames["metrics"].itertuples()
        )
        expected = sorted(
            (run_id, key, m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value)
            for run_id in (run_ids or ids)
            for key in ("train_loss", "probe")
            for m in client.get_metric_history(run_id, key)
        )
        assert mine == expected
        assert any(value == "nan" for *_, value in mine)


def repeat_the_first_run_id_as_the_fourth(monkeypatch) -> None:
    """The bulk writer's next run ids: the fourth repeats the first (a unique constraint)."""
    real_uuid7 = uuid6.uuid7
    fresh = [real_uuid7() for _ in range(3)]
    sequence = iter([*fresh, fresh[0]])
    monkeypatch.setattr(uuid6, "uuid7", lambda: next(sequence, None) or real_uuid7())


def test_a_chunk_that_fails_midway_writes_nothing(store, monkeypatch):
    uri = store
    experiment_id = Tracker(uri, "exp").experiment_id
    kept = bulk.write_runs(uri, experiment_id, make_records("a", 2))

    real = bulk._Rows.tables

    def fail_after_params(rows):
        for number, item in enumerate(real(rows)):
            if number == 3:  # runs, tags and params are inserted; metrics never are
                raise RuntimeError("disk on fire")
            yield item

    monkeypatch.setattr(bulk._Rows, "tables", fail_after_params)
    with pytest.raises(RuntimeError, match="disk on fire"):
        bulk.write_runs(uri, experiment_id, make_records("b", 5))
    monkeypatch.undo()

    # A constraint violated by the fourth run's insert: two runs with one id.
    repeat_the_first_run_id_as_the_fourth(monkeypatch)
    with pytest.raises(Exception, match="(?i)unique|constraint"):
        bulk.write_runs(uri, experiment_id, make_records("c", 5))
    monkeypatch.undo()

    runs = MlflowClient(uri).search_runs([experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(kept)
    frames = bulk.read_experiment(uri, experiment_id, history_keys=["train_loss"])
    for frame in frames.values():
        assert set(frame["run_id"]) == set(kept)
    # The store is writable afterwards.
    assert len(bulk.write_runs(uri, experiment_id, make_records("e", 1))) == 1


def test_bulk_support(store, tmp_path):
    uri = store
    missing = tmp_path / "elsewhere" / "mlflow.db"
    assert bulk.bulk_support(f"sqlite:///{missing}") == f"no SQLite store at {missing} yet"
    assert not missing.parent.exists()  # asking created nothing
    tracker = Tracker(uri, "exp")
    assert bulk.bulk_support(uri) is None
    assert bulk.bulk_support(uri, tracker.experiment_id) is None
    assert "http tracking server" in bulk.bulk_support("http://127.0.0.1:5000")
    assert "file tracking URI" in bulk.bulk_support(tmp_path.as_uri())
    assert bulk.bulk_support(uri, "999") == "experiment 999 does not exist"
    elsewhere = MlflowClient(uri).create_experiment("s3", artifact_location="s3://bucket/x")
    assert "outside the local file system" in bulk.bulk_support(uri, elsewhere)
    deleted = MlflowClient(uri).create_experiment("gone")
    MlflowClient(uri).delete_experiment(deleted)
    assert bulk.bulk_support(uri, deleted) == f"experiment {deleted} is deleted"
    with pytest.raises(bulk.BulkUnsupported, match="is deleted"):
        bulk.write_runs(uri, deleted, make_records("a", 1))

    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
        assert revision in bulk.TESTED_REVISIONS
        db.execute("UPDATE alembic_version SET version_num = 'abc123unknown'")
    reason = bulk.bulk_support(uri)
    assert reason.startswith("MLflow schema revision abc123unknown not tested")
    with pytest.raises(bulk.BulkUnsupported, match="abc123unknown"):
        bulk.write_runs(uri, tracker.experiment_id, make_records("a", 1))
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("SELECT count(*) FROM runs").fetchone() == (0,)


CRASH_CHILD = """
import sys, time
import sqlalchemy as sa
from pipeline import bulk
from tests.test_bulk_writer import make_records

uri, experiment_id, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
records = make_records("crash", count)

inserted = []
real_insert_all = bulk._insert_all

def insert_all(conn, rows):
    real_insert_all(conn, rows)
    inserted.append(True)

def committing(conn):
    if inserted:  # the commit of the write transaction, not of a read
        print("COMMIT", flush=True)

bulk._insert_all = insert_all
sa.event.listen(bulk._engine(uri), "commit", committing)
print("START", flush=True)
bulk.write_runs(uri, experiment_id, records)
print("DONE", flush=True)
time.sleep(60)
"""


@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0.0, 0.05, 1.0])
def test_a_writer_killed_during_its_commit_leaves_all_or_nothing(store, tmp_path, delay_s):
    """SIGKILL as the write transaction commits: the store then holds all runs or none.

    The commit of this chunk took about 0.1 s on the development machine, so the delays
    kill it at its start, in its middle and (most likely) after it.
    """
    uri = store
    experiment_id = Tracker(uri, "exp").experiment_id
    kept = bulk.write_runs(uri, experiment_id, make_records("a", 3))
    count = 2000
    child = subprocess.Popen(
        [sys.executable, "-c", CRASH_CHILD, uri, experiment_id, str(count)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    try:
        lines = []
        for line in child.stdout:
            lines.append(line.strip())
            if line.startswith(("COMMIT", "DONE")):
                break
        time.sleep(delay_s)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        child.kill()
        child.stdout.close()
    assert lines[-1] == "COMMIT", lines
    ids = {r.info.run_id for r in MlflowClient(uri).search_runs([experiment_id], max_results=5000)}
    assert ids >= set(kept)
    assert len(ids) - len(kept) in (0, count)
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        metric_rows = db.execute("SELECT count(*) FROM metrics").fetchone()[0]
    assert metric_rows == len(ids) * 14  # every run's 14 distinct points, or none
    assert len(bulk.write_runs(uri, experiment_id, make_records("b", 2))) == 2

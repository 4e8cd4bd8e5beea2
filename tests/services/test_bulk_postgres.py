"""pipeline.bulk on a real PostgreSQL store: the same runs as the client path writes."""

from __future__ import annotations

import uuid

import pytest
from mlflow import MlflowClient

from pipeline import bulk
from pipeline.tracking import Tracker
from tests.test_bulk_writer import (
    as_tuples,
    assert_same_runs,
    make_records,
    repeat_the_first_run_id_as_the_fourth,
    summaries_from_search,
)

pytestmark = pytest.mark.services


def test_bulk_writer_matches_the_client_path_on_postgresql(postgres_url, tmp_path, monkeypatch):
    client = MlflowClient(postgres_url)  # creates MLflow's tables on first use
    names = {label: f"bulk-{label}-{uuid.uuid4().hex[:8]}" for label in ("client", "bulk")}
    experiments = {
        label: client.create_experiment(name, artifact_location=(tmp_path / label).as_uri())
        for label, name in names.items()
    }
    assert bulk.bulk_support(postgres_url) is None
    assert bulk.bulk_support(postgres_url, experiments["bulk"]) is None

    tracker = Tracker(postgres_url, names["client"])
    assert tracker.experiment_id == experiments["client"]
    for record in make_records():
        tracker.log_complete(record)
    bulk_ids = bulk.write_runs(postgres_url, experiments["bulk"], make_records())
    assert_same_runs(
        postgres_url, experiments["client"], postgres_url, experiments["bulk"], tmp_path / "views"
    )

    # A chunk violating a constraint midway (two runs with one id) leaves nothing behind.
    repeat_the_first_run_id_as_the_fourth(monkeypatch)
    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        bulk.write_runs(postgres_url, experiments["bulk"], make_records("x", 5))
    monkeypatch.undo()
    assert {r.info.run_id for r in client.search_runs([experiments["bulk"]])} == set(bulk_ids)

    for label in ("client", "bulk"):
        expected = summaries_from_search(postgres_url, experiments[label])
        assert as_tuples(bulk.find_runs_by_key(postgres_url, experiments[label])) == expected
        frames = bulk.read_experiment(
            postgres_url, experiments[label], tags={"deadunits.role": "run"}, history_keys=["probe"]
        )
        runs = client.search_runs([experiments[label]])
        assert sorted(frames["runs"]["run_id"]) == sorted(r.info.run_id for r in runs)
        latest = {
            (row.run_id, row.key): row.value
            for row in frames["latest_metrics"].itertuples()
            if row.key == "final_train_loss"
        }
        assert latest == {
            (r.info.run_id, "final_train_loss"): r.data.metrics["final_train_loss"] for r in runs
        }
        assert len(frames["metrics"]) == 2 * len(runs)
        two = sorted(r.info.run_id for r in runs)[:2]
        sample = bulk.read_experiment(
            postgres_url, experiments[label], history_keys=["probe"], history_run_ids=two
        )["metrics"]
        assert sorted(
            zip(sample["run_id"], sample["step"], sample["value"], strict=True)
        ) == sorted(
            (run_id, m.step, m.value)
            for run_id in two
            for m in client.get_metric_history(run_id, "probe")
        )

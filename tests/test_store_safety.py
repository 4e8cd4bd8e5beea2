"""The pipeline only touches its own runs, and logs no secrets, environment or home paths."""

import os
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def snapshot(client, experiment_ids):
    return {
        r.info.run_id: (r.info.status, r.info.end_time, r.data.params, r.data.metrics, r.data.tags)
        for r in client.search_runs(experiment_ids, max_results=10_000)
    }


def test_sweep_leaves_foreign_runs_alone_and_logs_no_secrets(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    ours = client.create_experiment("deadunits")
    other = client.create_experiment("someone_else")
    foreign = []
    for experiment in (ours, other):
        for status in ("FINISHED", "FAILED"):
            run = client.create_run(experiment, tags={"owner": "a colleague"})
            client.log_param(run.info.run_id, "lr", "0.1")
            client.log_metric(run.info.run_id, "loss", 1.5)
            client.set_terminated(run.info.run_id, status)
            foreign.append(run.info.run_id)
    left_running = client.create_run(ours, tags={"owner": "a colleague"})  # not ours: no config_key
    foreign.append(left_running.info.run_id)
    before = snapshot(client, [ours, other])

    secret_env = {
        "MLFLOW_TRACKING_PASSWORD": "hunter2-secret",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-key",
    }
    result = run_cli(
        "-m",
        "seed=0,1",
        "train.epochs=1",
        "data.n_samples=100",
        f"tracking.uri={uri}",
        env=secret_env,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    after = snapshot(client, [ours, other])
    for run_id in foreign:
        assert after[run_id] == before[run_id], "a run the sweep did not create was changed"
    new = [r for r in after if r not in before]
    assert len(new) == 3  # one parent, two children

    forbidden = [str(tmp_path), str(Path.home()), uri, *secret_env.values()]
    for run_id in new:
        run = client.get_run(run_id)
        for key, value in {**run.data.params, **run.data.tags}.items():
            for bad in forbidden:
                assert bad not in value, f"{key}={value!r} leaks {bad!r}"
        assert not any(key.upper() in os.environ for key in run.data.params)

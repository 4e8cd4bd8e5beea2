"""End to end: the notebook preset through the CLI, read back from a temporary SQLite store."""

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

NOTEBOOK_W1 = [-0.16988075, -1.1390355]
NOTEBOOK_W2 = [1.2553526, -0.45677203]


@pytest.fixture(scope="module")
def notebook_runs(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('nb')}/mlflow.db"
    result = run_cli("-m", "experiment=seed_notebook", f"tracking.uri={uri}")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("seed_notebook")
    runs = client.search_runs([experiment.experiment_id])
    return client, runs


def child(runs, activation):
    (run,) = [
        r
        for r in runs
        if r.data.tags.get("deadunits.role") == "run"
        and r.data.params["model.activation"] == activation
    ]
    return run


def test_two_runs_under_one_parent(notebook_runs):
    _, runs = notebook_runs
    parents = [r for r in runs if r.data.tags.get("deadunits.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("deadunits.role") == "run"]
    assert len(parents) == 1 and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" for r in runs)
    assert parents[0].data.params["job_count"] == "2"


def test_relu_run_is_dead_and_stuck(notebook_runs):
    client, runs = notebook_runs
    run = child(runs, "relu")
    m = run.data.metrics
    assert m["dead_units_init"] == 2 and m["dead_units_init/layer_1"] == 2
    assert m["collapsed_init"] == 1 and m["output_dead_init"] == 1 and m["collapsed_final"] == 1
    assert run.data.tags["dead_at_init"] == "true"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [h.step for h in sorted(history, key=lambda h: h.step)] == list(range(1, 11))
    assert all(round(h.value, 4) == 0.4887 for h in history)


def test_linear_run_learns(notebook_runs):
    _, runs = notebook_runs
    run = child(runs, "linear")
    assert run.data.metrics["final_test_loss"] < 0.01
    assert run.data.metrics["dead_units_init"] == 0
    assert run.data.tags["dead_at_init"] == "false"


def test_both_runs_start_from_the_notebook_weights(notebook_runs, tmp_path):
    client, runs = notebook_runs
    for activation in ("relu", "linear"):
        run = child(runs, activation)
        path = client.download_artifacts(run.info.run_id, "initial_weights.json", str(tmp_path))
        layers = json.loads(Path(path).read_text())["layers"]
        assert np.float32(layers[0]["kernel"][0]).tolist() == np.float32(NOTEBOOK_W1).tolist()
        assert (
            np.float32(np.ravel(layers[1]["kernel"])).tolist() == np.float32(NOTEBOOK_W2).tolist()
        )
        assert layers[0]["bias"] == [0.0, 0.0]


def test_logging_schema(notebook_runs):
    client, runs = notebook_runs
    run = child(runs, "relu")
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    for key in (
        "seed",
        "model.hidden_sizes",
        "model.activation",
        "model.output_activation",
        "model.bias_init",
        "init.name",
        "data.n_samples",
        "data.low",
        "data.high",
        "data.test_size",
        "data.seed",
        "train.epochs",
        "train.batch_size",
        "train.optimizer",
        "train.learning_rate",
        "train.loss",
        "train.engine",
        "tracking.experiment",
    ):
        assert key in params, key
    assert params["init.name"] == "legacy_tf2" and params["seed"] == "23"
    assert params["model.hidden_sizes"] == "[2]"
    assert "tracking.uri" not in params
    for key in (
        "train_loss",
        "test_loss",
        "final_train_loss",
        "final_test_loss",
        "dead_units_init",
        "dead_fraction_init",
        "dead_units_final",
        "dead_fraction_final",
        "dead_units_init/layer_1",
        "dead_units_final/layer_1",
        "saturated_units_init",
        "output_dead_init",
        "collapsed_init",
        "collapsed_final",
    ):
        assert key in metrics, key
    assert tags["engine"] == "keras" and tags["mlflow.runName"] == "relu-legacy_tf2-s23"
    assert len(tags["config_key"]) == 16 and tags["sweep_id"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"config.yaml", "initial_weights.json"}
    assert len(client.get_metric_history(run.info.run_id, "test_loss")) == 10

"""Fake runs logged the way the pipeline logs them: names, run names and metrics come from
the pipeline's own schema (`pipeline.schema`) and probe (`ProbeResult.metrics`).

Tests build small SQLite stores with known values, so every number the report prints
can be checked against a hand computation.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from pipeline import schema
from pipeline.probe import ProbeResult

BASE_CONFIG = {
    "seed": 0,
    "model.hidden_sizes": "[2]",
    "model.activation": "relu",
    "model.output_activation": "relu",
    "model.bias_init": 0.0,
    "init.name": "glorot_uniform",
    "data.n_samples": 2000,
    "data.low": 0.0,
    "data.high": 1.0,
    "data.test_size": 0.2,
    "data.seed": 23,
    "train.epochs": 3,
    "train.batch_size": 25,
    "train.optimizer": "adam",
    "train.learning_rate": 0.001,
    "train.loss": "mae",
    "train.engine": "batched",
    "probe.saturation_tol": 0.001,
    "tracking.experiment": "deadunits",
}


def run_metrics(
    *,
    dead_init: int,
    dead_final: int | None = None,
    hidden_units: int = 2,
    collapsed_init: int | None = None,
    collapsed_final: int | None = None,
    output_dead_init: int = 0,
    output_dead_final: int | None = None,
    final_train_loss: float = 0.1,
    final_test_loss: float | None = None,
    saturated_init: int = 0,
    saturated_final: int = 0,
) -> dict[str, float]:
    """The scalar metrics of one run of a single-hidden-layer net, consistent with each other,
    named and computed by the pipeline's probe."""
    dead_final = dead_init if dead_final is None else dead_final
    output_dead_final = output_dead_init if output_dead_final is None else output_dead_final
    final_test_loss = final_train_loss if final_test_loss is None else final_test_loss
    metrics = {
        schema.FINAL_TRAIN_LOSS: final_train_loss,
        schema.FINAL_TEST_LOSS: final_test_loss,
        schema.HIDDEN_UNITS: hidden_units,
    }
    stages = (
        ("init", dead_init, saturated_init, output_dead_init, collapsed_init),
        ("final", dead_final, saturated_final, output_dead_final, collapsed_final),
    )
    for stage, dead, saturated, output, collapsed in stages:
        probed = ProbeResult(
            dead=[np.arange(hidden_units)[None, :] < dead],
            saturated=[np.arange(hidden_units)[None, :] < saturated],
            output_dead=np.array([bool(output)]),
        )
        metrics.update(probed.metrics(stage)[0])
        if collapsed is not None:  # a test may log an inconsistent value on purpose
            metrics[schema.collapsed(stage)] = collapsed
    return metrics


def log_fake_run(
    client: MlflowClient,
    experiment_id: str,
    *,
    config: dict | None = None,
    metrics: dict[str, float] | None = None,
    history: dict[str, list[float]] | None = None,
    tags: dict[str, str] | None = None,
    status: str = "FINISHED",
    sweep_id: str | None = None,
    parent_run_id: str | None = None,
    run_name: str | None = None,
) -> str:
    """Log one run as the pipeline does: one log_batch with params, metrics and tags."""
    config = {**BASE_CONFIG, **(config or {})}
    metrics = metrics or {}
    name = run_name or schema.run_name(config, config[schema.PARAM_SEED])
    all_tags = {schema.ROLE_TAG: schema.ROLE_RUN, schema.TAG_ENGINE: str(config["train.engine"])}
    if schema.DEAD_UNITS_INIT in metrics:
        all_tags[schema.TAG_DEAD_AT_INIT] = str(metrics[schema.DEAD_UNITS_INIT] > 0).lower()
    all_tags[schema.TAG_DIVERGED] = "false"
    if sweep_id is not None:
        all_tags[schema.TAG_SWEEP_ID] = sweep_id
    if parent_run_id is not None:
        all_tags[schema.TAG_PARENT] = parent_run_id
    all_tags.update(tags or {})
    run = client.create_run(experiment_id, run_name=name, tags=all_tags)
    now = int(time.time() * 1000)
    points = [Metric(key, float(value), now, 0) for key, value in metrics.items()]
    for key, values in (history or {}).items():
        points += [Metric(key, float(v), now, step) for step, v in enumerate(values, start=1)]
    params = [Param(key, str(value)) for key, value in config.items()]
    client.log_batch(run.info.run_id, metrics=points, params=params, tags=[])
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def log_sweep_parent(client: MlflowClient, experiment_id: str, sweep_id: str) -> str:
    """The parent run a multirun creates once per sweep."""
    tags = {schema.ROLE_TAG: schema.ROLE_SWEEP, schema.TAG_SWEEP_ID: sweep_id}
    run = client.create_run(experiment_id, run_name=schema.sweep_run_name(sweep_id), tags=tags)
    client.log_batch(
        run.info.run_id,
        params=[Param("overrides", "seed=range(0,4)"), Param("job_count", "4")],
        tags=[RunTag(schema.TAG_RUN_NAME, schema.sweep_run_name(sweep_id))],
    )
    client.set_terminated(run.info.run_id)
    return run.info.run_id


_TEMPLATE: list[Path] = []


def empty_database() -> Path:
    """An empty, fully migrated MLflow SQLite file, made once per test process.

    Creating a store runs every MLflow migration (seconds); copying the result is instant.
    """
    if not _TEMPLATE:
        folder = Path(tempfile.mkdtemp(prefix="deadunits-mlflow-template-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db").search_experiments()
        _TEMPLATE.append(folder / "mlflow.db")
    return _TEMPLATE[0]


class FakeStore:
    """A temporary SQLite tracking store with one experiment."""

    def __init__(self, root: Path, experiment: str = "deadunits"):
        root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(empty_database(), root / "mlflow.db")
        self.root = root
        self.uri = f"sqlite:///{root}/mlflow.db"
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment = experiment
        self.experiment_id = self.client.create_experiment(
            experiment, artifact_location=(root / "artifacts").as_uri()
        )

    def log(self, **kwargs) -> str:
        return log_fake_run(self.client, self.experiment_id, **kwargs)

    def sweep(self, sweep_id: str) -> str:
        return log_sweep_parent(self.client, self.experiment_id, sweep_id)


# ---------------------------------------------------------------- the study store
#
# Known values, checked by hand in the tests:
#   relu / glorot_uniform: 8 finished (dead counts below), 1 diverged (2 dead), 1 failed
#   linear / glorot_uniform: 4 finished, no dead unit, 1 still running
#   tanh / glorot_uniform: 3 finished, saturated units at init 1, 0, 2
#   relu / rai: 1 finished run (a group of one)
#   relu / he_uniform: 5 finished, all collapsed (theory 0.25 is far outside)
# plus a sweep parent run and an earlier report run, which must both be ignored.

RELU_DEAD_INIT = [0, 1, 1, 2, 0, 1, 2, 1]
RELU_DEAD_FINAL = [0, 1, 0, 2, 1, 1, 2, 2]
RELU_OUTPUT_DEAD = [0, 1, 0, 1, 0, 1, 1, 0]
RELU_TRAIN_LOSS = [0.10, 0.30, 0.32, 0.50, 0.12, 0.28, 0.48, 0.35]
SWEEP_ID = "sweep-a"


def curve(final: float, epochs: int = 3) -> list[float]:
    return [final + 0.1 * (epochs - e) for e in range(1, epochs + 1)]


def history(train_final: float, test_final: float) -> dict[str, list[float]]:
    return {"train_loss": curve(train_final), "test_loss": curve(test_final)}


def build_study(store: FakeStore) -> FakeStore:
    parent = store.sweep(SWEEP_ID)
    common = {"sweep_id": SWEEP_ID, "parent_run_id": parent}
    for seed, (d0, d1, out, loss) in enumerate(
        zip(RELU_DEAD_INIT, RELU_DEAD_FINAL, RELU_OUTPUT_DEAD, RELU_TRAIN_LOSS, strict=True)
    ):
        store.log(
            config={"seed": seed},
            metrics=run_metrics(
                dead_init=d0,
                dead_final=d1,
                output_dead_init=out,
                final_train_loss=loss,
                final_test_loss=loss + 0.01,
            ),
            history=history(loss, loss + 0.01),
            **common,
        )
    init_only = {
        k: v for k, v in run_metrics(dead_init=2, output_dead_init=1).items() if "final" not in k
    }
    store.log(
        config={"seed": 8},
        metrics=init_only,
        tags={"diverged": "true", "diverged_epoch": "3"},
        status="FAILED",
        **common,
    )
    store.log(config={"seed": 9}, status="FAILED", tags={"error": "OOM: boom"}, **common)
    for seed, loss in enumerate([0.01, 0.02, 0.03, 0.04]):
        store.log(
            config={"seed": seed, "model.activation": "linear"},
            metrics=run_metrics(dead_init=0, final_train_loss=loss),
            history=history(loss, loss),
            **common,
        )
    store.log(config={"seed": 4, "model.activation": "linear"}, status="RUNNING", **common)
    for seed, saturated in enumerate([1, 0, 2]):
        store.log(
            config={"seed": seed, "model.activation": "tanh"},
            metrics=run_metrics(dead_init=0, saturated_init=saturated, final_train_loss=0.2),
            history=history(0.2, 0.2),
            **common,
        )
    store.log(
        config={"seed": 0, "init.name": "rai"},
        metrics=run_metrics(dead_init=1, final_train_loss=0.3),
        history=history(0.3, 0.3),
        **common,
    )
    for seed in range(5):
        store.log(
            config={"seed": seed, "init.name": "he_uniform"},
            metrics=run_metrics(dead_init=2, output_dead_init=1, final_train_loss=0.5 + seed / 100),
            history=history(0.5, 0.5),
            **common,
        )
    report = store.client.create_run(
        store.experiment_id, run_name="report", tags={schema.ROLE_TAG: schema.ROLE_REPORT}
    )
    store.client.set_terminated(report.info.run_id)
    return store

"""A real sweep from the pipeline CLI, then a report on it (trains networks: slow)."""

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_module


@pytest.mark.slow
def test_report_on_a_real_sweep(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = run_module(
        "pipeline",
        "-m",
        "seed=range(0,4)",
        "model.activation=relu,linear",
        "train.epochs=1",
        f"tracking.uri={uri}",
        cwd=tmp_path,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("deadunits")
    parents = client.search_runs([experiment.experiment_id], "tags.`deadunits.role` = 'sweep'")
    assert len(parents) == 1
    sweep_id = parents[0].data.tags["sweep_id"]

    out = tmp_path / "report"
    result = run_module(
        "analysis",
        "--experiment",
        "deadunits",
        "--sweep",
        sweep_id,
        "--tracking-uri",
        uri,
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "8 runs, 2 groups" in result.stdout

    summary = pd.read_csv(out / "summary.csv").set_index("model.activation")
    assert list(summary["runs"]) == [4, 4] and list(summary["finished"]) == [4, 4]
    assert summary.loc["linear", "dead_at_init_k"] == 0  # linear units cannot die
    # The pipeline's default net is bias-free ReLU on (0, 1) with Glorot init: theory applies.
    assert summary.loc["relu", "collapse_theory"] == pytest.approx(0.25)
    html = (out / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(list(out.glob("*.png"))) >= 3
    reports = client.search_runs([experiment.experiment_id], "tags.`deadunits.role` = 'report'")
    assert len(reports) == 1
    tags = reports[0].data.tags
    assert tags["deadunits.report.sweep_id"] == sweep_id
    assert tags["deadunits.report.sweep_parent_run_id"] == parents[0].info.run_id
    assert f"--sweep {sweep_id}" in tags["mlflow.note.content"]

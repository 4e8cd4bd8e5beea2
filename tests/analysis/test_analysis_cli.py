"""python -m analysis: a real subprocess for success and failure, main() for the rest."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_runs import run_metrics
from mlflow.tracking import MlflowClient

from analysis.__main__ import main, parse_args

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run_analysis(*args, cwd, env=None):
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])
    )
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_writes_default_out_dir_and_logs(fake_store, tmp_path):
    store = fake_store()
    for seed in range(4):
        store.log(config={"seed": seed}, metrics=run_metrics(dead_init=seed % 2))
    work = tmp_path / "work"
    work.mkdir()
    # No --tracking-uri: $MLFLOW_TRACKING_URI is honoured. No --out: reports/<experiment>.
    result = run_analysis(
        "--experiment", store.experiment, cwd=work, env={"MLFLOW_TRACKING_URI": store.uri}
    )
    assert result.returncode == 0, result.stderr
    out = work / "reports" / store.experiment
    assert (out / "report.html").exists() and (out / "summary.csv").exists()
    assert "report:" in result.stdout and "4 runs, 1 group" in result.stdout
    reports = MlflowClient(store.uri).search_runs(
        [store.experiment_id], "tags.`deadunits.role` = 'report'"
    )
    assert len(reports) == 1 and reports[0].info.run_id in result.stdout


def test_cli_unknown_experiment_is_one_line(study, tmp_path):
    result = run_analysis("--experiment", "missing", "--tracking-uri", study.uri, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: unknown experiment 'missing' in {study.uri}"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sweep", "nope"], "error: no runs with sweep_id 'nope' in experiment 'deadunits'"),
        (["--experiment", "missing"], "error: unknown experiment 'missing'"),
    ],
)
def test_main_errors(study, tmp_path, capsys, args, message):
    argv = ["--tracking-uri", study.uri, "--out", str(tmp_path / "out"), *args]
    assert main(argv) == 1
    assert capsys.readouterr().err.startswith(message)


def test_main_empty_experiment(fake_store, tmp_path, capsys):
    store = fake_store()
    assert main(["--tracking-uri", store.uri, "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.startswith("error: experiment 'deadunits' has no training runs")


def test_main_missing_store(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/nothing.db"
    assert main(["--tracking-uri", uri, "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.startswith("error: no tracking store at")
    assert not (tmp_path / "nothing.db").exists()


def test_main_no_log(study, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--tracking-uri", study.uri, "--out", str(out), "--no-log"]) == 0
    printed = capsys.readouterr().out
    assert "24 runs, 5 groups" in printed and "logged" not in printed
    assert (out / "report.md").exists()


def test_arguments():
    args = parse_args([])
    assert (args.experiment, args.sweep, args.tracking_uri, args.out) == (
        "deadunits",
        None,
        None,
        None,
    )
    with pytest.raises(SystemExit):
        parse_args(["--history-runs", "0"])


def test_analysis_never_imports_tensorflow():
    code = (
        "import sys, analysis.__main__, analysis.report, analysis.load;"
        "from mlflow.tracking import MlflowClient;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

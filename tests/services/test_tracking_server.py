"""A parallel sweep through an MLflow tracking server on PostgreSQL, read back over REST."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import requests
import sqlalchemy

from tests.conftest import PROJECT_ROOT, run_cli
from tests.services.conftest import (
    EXPERIMENT,
    LOOPBACK,
    RUN_NAMES,
    SCRIPTS,
    SWEEP,
    Service,
    free_port,
    missing,
    postgres_installed,
    write_report,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

PARALLEL = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def api(server, method: str, endpoint: str, **kwargs) -> dict:
    response = requests.request(
        method, f"{server.url}/api/2.0/mlflow/{endpoint}", timeout=30, **kwargs
    )
    assert response.status_code == 200, f"{endpoint}: HTTP {response.status_code} {response.text}"
    return response.json()


def search_runs(server, experiment_id: str) -> list[dict]:
    """Every run of the experiment, active or deleted, page by page."""
    runs, token = [], None
    while True:
        body = {"experiment_ids": [experiment_id], "max_results": 100, "run_view_type": "ALL"}
        if token:
            body["page_token"] = token
        page = api(server, "POST", "runs/search", json=body)
        runs += page.get("runs", [])
        token = page.get("next_page_token")
        if not token:
            return runs


def values(run: dict, kind: str) -> dict:
    return {item["key"]: item["value"] for item in run["data"].get(kind, [])}


def with_role(runs: list[dict], role: str) -> list[dict]:
    return [r for r in runs if values(r, "tags").get("deadunits.role") == role]


def launch(server, cwd: Path):
    return run_cli(
        *SWEEP,
        *PARALLEL,
        f"tracking.uri={server.url}",
        f"tracking.experiment={EXPERIMENT}",
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def sweep(mlflow_server, tmp_path_factory):
    """The sweep, launched once through the server: (CompletedProcess, seconds, cwd)."""
    cwd = tmp_path_factory.mktemp("server-sweep")
    started = time.monotonic()
    result = launch(mlflow_server, cwd)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    print(
        f"\nserver sweep: {len(RUN_NAMES)} runs, 2 joblib workers, {seconds:.1f} s "
        f"(server up in {mlflow_server.startup_s:.1f} s)"
    )
    return result, seconds, cwd


@pytest.fixture
def experiment_id(mlflow_server, sweep) -> str:
    found = api(
        mlflow_server, "GET", "experiments/get-by-name", params={"experiment_name": EXPERIMENT}
    )
    return found["experiment"]["experiment_id"]


def test_every_run_of_a_parallel_sweep_arrives_with_its_parent(
    mlflow_server, postgres_url, sweep, experiment_id
):
    result, _, _ = sweep
    assert "finished 6 of 6 planned" in result.stderr and "crashed jobs 0" in result.stderr, (
        result.stderr[-3000:]
    )
    runs = search_runs(mlflow_server, experiment_id)
    children, parents = with_role(runs, "run"), with_role(runs, "sweep")
    assert len(children) == 6 and len(parents) == 1, Counter(
        values(r, "tags").get("deadunits.role") for r in runs
    )
    (parent,) = parents
    parent_id, sweep_id = parent["info"]["run_id"], values(parent, "tags")["sweep_id"]
    assert parent["info"]["status"] == "FINISHED"
    assert values(parent, "metrics")["runs_finished"] == 6
    assert values(parent, "params")["job_count"] == "6"

    assert {r["info"]["status"] for r in children} == {"FINISHED"}
    assert {r["info"]["run_name"] for r in children} == RUN_NAMES
    assert {values(r, "tags")["mlflow.parentRunId"] for r in children} == {parent_id}
    assert {values(r, "tags")["sweep_id"] for r in children} == {sweep_id}
    grid = {
        (values(r, "params")["model.activation"], values(r, "params")["seed"]) for r in children
    }
    assert grid == {(a, str(s)) for a in ("relu", "linear") for s in range(3)}
    # The joblib workers, not the launching process, logged the runs.
    pids = {values(r, "tags")["deadunits.pid"] for r in children}
    assert len(pids) >= 2 and values(parent, "tags")["deadunits.pid"] not in pids

    for run in children:
        metrics = values(run, "metrics")
        assert {"dead_units_init", "final_train_loss", "train_loss"} <= metrics.keys()
        history = api(
            mlflow_server,
            "GET",
            "metrics/get-history",
            params={"run_id": run["info"]["run_id"], "metric_key": "train_loss"},
        )["metrics"]
        assert [point["step"] for point in history] == [1]  # train.epochs=1
        assert history[0]["value"] == pytest.approx(metrics["train_loss"])

    # The rows are in PostgreSQL, behind the server.
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            stored = connection.execute(
                sqlalchemy.text("SELECT count(*) FROM runs WHERE experiment_id = :id"),
                {"id": int(experiment_id)},
            ).scalar_one()
    finally:
        engine.dispose()
    assert stored == 7


def test_relaunching_the_sweep_logs_nothing_new(mlflow_server, sweep, experiment_id):
    _, _, cwd = sweep
    before = search_runs(mlflow_server, experiment_id)
    again = launch(mlflow_server, cwd)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to do" in again.stderr, again.stderr[-3000:]
    after = search_runs(mlflow_server, experiment_id)
    assert sorted(r["info"]["run_id"] for r in after) == sorted(r["info"]["run_id"] for r in before)
    assert len(with_role(after, "run")) == 6


def figures(html: str) -> list[str]:
    return re.findall(r'<img[^>]*data-name="([^"]+)"', html)


def headings(html: str) -> list[str]:
    return re.findall(r"<h2[^>]*>(.*?)</h2>", html)


def test_the_report_from_the_server_matches_the_report_from_sqlite(
    mlflow_server, sweep, experiment_id, sqlite_report, tmp_path
):
    out = tmp_path / "report"
    result = write_report(mlflow_server.url, out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(6 runs" in result.stdout, result.stdout

    html, reference = (out / "report.html").read_text(), (sqlite_report / "report.html").read_text()
    assert figures(html) and figures(html) == figures(reference)
    assert headings(html) == headings(reference)
    # What the initial weights decide is the same, whichever store the runs went through.
    columns = ["group", "runs", "finished", "dead_at_init_k", "dead_at_init_n"]
    columns += ["dead_units_init_total", "collapse_k", "output_dead_k"]
    server_summary = pd.read_csv(out / "summary.csv")[columns]
    sqlite_summary = pd.read_csv(sqlite_report / "summary.csv")[columns]
    pd.testing.assert_frame_equal(server_summary, sqlite_summary)

    # The report run's files went through the server into its artifact root.
    (report_run,) = with_role(search_runs(mlflow_server, experiment_id), "report")
    stored = {
        p.name for p in mlflow_server.artifacts.rglob("*") if report_run["info"]["run_id"] in str(p)
    }
    assert {"report.html", *figures(html)} <= stored


def test_make_server_serves_from_postgres_and_ctrl_c_stops_it_and_postgres(tmp_path):
    if not postgres_installed():
        missing("PostgreSQL is not installed (no pg_ctl; Debian: apt-get install postgresql)")
    if not shutil.which("make"):
        missing("make is not installed")
    # As root the cluster runs as `postgres`, which must reach the directory (not pytest's).
    base = Path(tempfile.mkdtemp(prefix="deadunits-server-"))
    base.chmod(0o755)
    venv, port = Path(sys.prefix), free_port()
    server = Service(
        "make-server",
        ["make", "--no-print-directory", "-o", str(venv / ".installed"), "server"]
        + [f"VENV={venv}", f"PORT={port}", f"SERVER_DIR={base / 'server'}"],
        cwd=PROJECT_ROOT,
    )
    cluster = base / "server" / "postgres"
    try:
        url = f"http://{LOOPBACK}:{port}"
        server.wait_healthy(f"{url}/health", timeout=180)
        assert f"MLflow tracking server: {url}" in server.log_tail(50)
        status = subprocess.run([str(SCRIPTS / "postgres.sh"), "status", str(cluster)])
        assert status.returncode == 0, "PostgreSQL is not running under the server"
        created = requests.post(
            f"{url}/api/2.0/mlflow/experiments/create", json={"name": "probe"}, timeout=30
        )
        assert created.status_code == 200, created.text
        database = subprocess.run(
            [str(SCRIPTS / "postgres.sh"), "url", str(cluster)], capture_output=True, text=True
        ).stdout.strip()
        engine = sqlalchemy.create_engine(database)
        try:
            with engine.connect() as connection:
                names = connection.execute(sqlalchemy.text("SELECT name FROM experiments"))
                assert "probe" in {row[0] for row in names}
        finally:
            engine.dispose()

        os.killpg(server.process.pid, signal.SIGINT)  # Ctrl-C in the terminal
        deadline = time.monotonic() + 60
        while server.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not server.alive(), "Ctrl-C left processes of make server running"
        status = subprocess.run([str(SCRIPTS / "postgres.sh"), "status", str(cluster)])
        assert status.returncode != 0, "Ctrl-C left PostgreSQL running"
    finally:
        server.stop()
        subprocess.run([str(SCRIPTS / "postgres.sh"), "stop", str(cluster)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)

"""Build a report: load runs, compute, plot, render, write files, log them to MLflow."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from analysis import curves, plots, render
from analysis.compute import Results, compute
from analysis.load import ROLE_TAG, connect, fetch_histories, load_runs
from analysis.sections import CurveInfo, Figures, build_document

REPORT_ROLE = "report"
FIGURE_FILES = {
    "dead_rates": "dead_rates.png",
    "loss_vs_dead": "loss_vs_dead_fraction.png",
    "loss_curves": "loss_curves.png",
    "collapse_theory": "collapse_theory.png",
}
TEXT_FILES = ("report.md", "report.html", "summary.csv", "unfinished_runs.csv")


@dataclass
class ReportOutput:
    """What a report wrote and where it was logged."""

    out_dir: Path
    files: list[Path]
    results: Results
    run_id: str | None

    @property
    def html(self) -> Path:
        return self.out_dir / "report.html"


def make_figures(
    results: Results, client, out_dir: Path, per_cell: int
) -> tuple[Figures, CurveInfo]:
    """Draw every figure the data supports; fetch loss history for a sample of runs."""
    figures = Figures()
    if not results.death.empty:
        figures.dead_rates = plots.plot_dead_rates(
            results.death, out_dir / FIGURE_FILES["dead_rates"]
        )
    if results.outcomes["finished"]:
        figures.loss_vs_dead = plots.plot_loss_vs_dead_fraction(
            results.grouped, out_dir / FIGURE_FILES["loss_vs_dead"]
        )
    info = CurveInfo(per_cell=per_cell, groups_total=len(results.death))
    groups = curves.pick_curve_groups(results.loaded.frame, results.keys)
    sample = curves.sample_runs(results.grouped, groups, per_cell=per_cell)
    if not sample.empty:
        started = time.perf_counter()
        histories = fetch_histories(client, sample["run_id"])
        info.seconds = time.perf_counter() - started
        info.runs_fetched = len(sample)
        info.runs_with_history = int(histories["run_id"].nunique())
        info.groups_plotted = len(groups)
        if info.runs_with_history:
            figures.loss_curves = plots.plot_loss_curves(
                curves.median_curves(histories, sample),
                groups,
                out_dir / FIGURE_FILES["loss_curves"],
            )
    # The depth/width figure only says something when the eligible nets differ in shape.
    if not results.theory.empty and results.theory["hidden_sizes"].nunique() > 1:
        figures.collapse_theory = plots.plot_collapse_theory(
            results.theory, out_dir / FIGURE_FILES["collapse_theory"]
        )
    return figures, info


def write_report(
    experiment: str,
    out_dir: str | Path,
    sweep_id: str | None = None,
    tracking_uri: str | None = None,
    log_to_mlflow: bool = True,
    history_per_cell: int = curves.RUNS_PER_CELL,
) -> ReportOutput:
    """Write report.md, report.html, summary.csv, unfinished_runs.csv and the PNGs."""
    client, uri = connect(tracking_uri)
    loaded = load_runs(client, uri, experiment, sweep_id)
    results = compute(loaded)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # A figure missing this time must not survive from an earlier report in the same folder.
    for name in (*FIGURE_FILES.values(), *TEXT_FILES):
        (out / name).unlink(missing_ok=True)

    figures, info = make_figures(results, client, out, history_per_cell)
    document = build_document(results, figures, info)
    (out / "report.md").write_text(render.to_markdown(document), encoding="utf-8")
    (out / "report.html").write_text(render.to_html(document), encoding="utf-8")
    results.summary.to_csv(out / "summary.csv", index=False)
    results.unfinished.to_csv(out / "unfinished_runs.csv", index=False)

    files = [out / name for name in TEXT_FILES]
    files += [f for f in (out / name for name in FIGURE_FILES.values()) if f.exists()]
    run_id = log_report_run(client, results, files) if log_to_mlflow else None
    return ReportOutput(out, files, results, run_id)


def build_report(
    experiment: str,
    out_dir: str | Path,
    sweep_id: str | None = None,
    tracking_uri: str | None = None,
    log_to_mlflow: bool = True,
) -> Path:
    """Write the report of `experiment` (or one sweep) into `out_dir`; return report.html."""
    output = write_report(experiment, out_dir, sweep_id, tracking_uri, log_to_mlflow)
    return output.html


def report_metrics(results: Results) -> dict[str, float]:
    """Headline counts logged on the report run, so reports can be compared in the UI."""
    metrics = {f"runs_{k}": float(v) for k, v in results.outcomes.items()}
    metrics["runs"] = float(len(results.loaded.frame))
    metrics["groups"] = float(len(results.death))
    dead = results.death
    if not dead.empty and dead["dead_at_init_n"].sum():
        metrics["dead_at_init_rate"] = float(
            dead["dead_at_init_k"].sum() / dead["dead_at_init_n"].sum()
        )
    return metrics


def log_report_run(client, results: Results, files: list[Path]) -> str:
    """A run named `report` (role report) in the same experiment, files as artifacts."""
    from mlflow.entities import Metric, Param

    loaded = results.loaded
    tags = {ROLE_TAG: REPORT_ROLE}
    if loaded.sweep_id:
        # Not `sweep_id`: a filter on that tag alone must keep finding only the sweep's runs.
        tags["deadunits.report.sweep_id"] = loaded.sweep_id
    run = client.create_run(loaded.experiment_id, run_name="report", tags=tags)
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in report_metrics(results).items()],
            params=[
                Param("report.experiment", loaded.experiment),
                Param("report.sweep_id", loaded.sweep_id or ""),
                Param("report.group_keys", ",".join(results.keys) or "(none)"),
            ],
        )
        for path in files:
            client.log_artifact(run_id, str(path))
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id

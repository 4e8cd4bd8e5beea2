"""Build a report: load runs, compute, plot, render, write files, log them to MLflow."""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from analysis import curves, findings, plots, render
from analysis.compute import Results, compute
from analysis.load import connect, fetch_histories, load_runs
from analysis.sections import CurveInfo, Figures, build_markdown
from pipeline import schema
from pipeline.store import redact_uri

FIGURE_FILES = {
    "headline": "headline.png",
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
    path = {name: out_dir / file for name, file in FIGURE_FILES.items()}
    figures: Figures = {}
    if results.headline["dead_at_init_n"].sum() > 0:
        figures["headline"] = plots.plot_headline(results.headline, path["headline"])
    if not results.death.empty:
        figures["dead_rates"] = plots.plot_dead_rates(results.death, path["dead_rates"])
    if results.outcomes["finished"]:
        figures["loss_vs_dead"] = plots.plot_loss_vs_dead_fraction(
            results.grouped, path["loss_vs_dead"]
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
            figures["loss_curves"] = plots.plot_loss_curves(
                curves.median_curves(histories, sample), groups, path["loss_curves"]
            )
    # The depth/width figure only says something when the nets differ in shape.
    collapse = results.collapse
    if not collapse.empty and collapse[["width", "depth"]].drop_duplicates().shape[0] > 1:
        figures["collapse_theory"] = plots.plot_collapse_theory(
            collapse, results.theory, path["collapse_theory"]
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
    markdown = build_markdown(results, figures, info)
    title = markdown.splitlines()[0].removeprefix("# ")
    (out / "report.md").write_text(markdown, encoding="utf-8")
    (out / "report.html").write_text(render.to_html(markdown, title, out), encoding="utf-8")
    results.summary.to_csv(out / "summary.csv", index=False)
    results.unfinished.to_csv(out / "unfinished_runs.csv", index=False)

    files = [out / name for name in TEXT_FILES] + list(figures.values())
    command = reproduce_command(loaded, out, history_per_cell)
    run_id = log_report_run(client, results, files, command) if log_to_mlflow else None
    return ReportOutput(out, files, results, run_id)


def reproduce_command(loaded, out: Path, history_per_cell: int) -> str:
    """The `python -m analysis` command that writes this report again."""
    args = ["python", "-m", "analysis", "--experiment", loaded.experiment]
    if loaded.sweep_id:
        args += ["--sweep", loaded.sweep_id]
    args += ["--tracking-uri", redact_uri(loaded.tracking_uri), "--out", str(out)]
    if history_per_cell != curves.RUNS_PER_CELL:
        args += ["--history-runs", str(history_per_cell)]
    return shlex.join(args)


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


def report_tags(results: Results, command: str) -> dict[str, str]:
    """The role, the sweep it covers and the run page's description (mlflow.note.content)."""
    loaded = results.loaded
    tags = {schema.ROLE_TAG: schema.ROLE_REPORT}
    covers = f"experiment `{loaded.experiment}`"
    if loaded.sweep_id:
        # Not `sweep_id`: a filter on that tag alone must keep finding only the sweep's runs.
        tags[schema.TAG_REPORT_SWEEP_ID] = loaded.sweep_id
        covers = f"sweep `{loaded.sweep_id}` of {covers}"
        if loaded.sweep_parent is not None:
            parent = loaded.sweep_parent.info.run_id
            tags[schema.TAG_REPORT_SWEEP_RUN_ID] = parent
            covers += f" (sweep parent run `{parent}`)"
    tags[schema.TAG_NOTE] = (
        f"Dead units report on {covers}: {findings.scope(results)}\n\n"
        f"Reproduce with:\n\n    {command}\n"
    )
    return tags


def log_report_run(client, results: Results, files: list[Path], command: str) -> str:
    """A run named `report` (role report) in the same experiment, files as artifacts."""
    from mlflow.entities import Metric, Param

    loaded = results.loaded
    tags = report_tags(results, command)
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

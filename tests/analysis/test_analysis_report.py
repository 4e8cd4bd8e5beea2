"""The written report: files, HTML structure, embedded figures, the MLflow report run."""

import base64
import re
from html.parser import HTMLParser

import pandas as pd
import pytest
from fake_runs import run_metrics
from mlflow.tracking import MlflowClient

from analysis.errors import AnalysisError
from analysis.report import write_report


class ReportParser(HTMLParser):
    """Collects images, table rows and text; raises on nothing, so check the counts."""

    def __init__(self):
        super().__init__()
        self.images, self.rows, self.text = [], [], []
        self._row, self._cell = None, None
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(path):
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


@pytest.fixture(scope="module")
def study_report(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    (out / "collapse_theory.png").write_bytes(b"stale")  # from an imagined earlier report
    output = write_report(study.experiment, out, tracking_uri=study.uri, log_to_mlflow=False)
    return output


def test_files_written(study_report):
    out = study_report.out_dir
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "report.html", "summary.csv", "unfinished_runs.csv"} <= names
    assert {
        "headline.png",
        "dead_rates.png",
        "loss_vs_dead_fraction.png",
        "loss_curves.png",
    } <= names
    # One net shape only: no depth/width figure, and the stale one is gone.
    assert "collapse_theory.png" not in names
    assert study_report.run_id is None


def test_html_embeds_every_figure_and_group(study_report):
    out = study_report.out_dir
    page = parse(out / "report.html")
    assert page.tags[:1] == ["html"] and "body" in page.tags
    pngs = sorted(p.name for p in out.glob("*.png"))
    embedded = {img["data-name"]: img["src"] for img in page.images}
    assert sorted(embedded) == pngs
    for name, src in embedded.items():
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix) :]) == (out / name).read_bytes()
    for group in study_report.results.death["group"]:
        activation, init = group.split(" / ")
        assert any(r[:2] == [activation, init] for r in page.rows if r), group
    assert 'src="http' not in (out / "report.html").read_text()  # nothing fetched from outside


def test_markdown_links_figures_and_states_facts(study_report):
    text = (study_report.out_dir / "report.md").read_text()
    for png in study_report.out_dir.glob("*.png"):
        assert f"]({png.name})" in text
    assert "24 runs in 5 groups: 21 finished, 1 diverged, 1 failed, 1 still running" in text
    assert "0.778 [0.453, 0.937] (7/9)" in text  # relu / glorot_uniform dead at init
    assert "n=1: no interval" in text  # relu / rai, a group of one
    assert "theory outside interval" in text  # relu / he_uniform collapses every time
    assert "OOM: boom" in text  # the failed run is listed with its error
    assert "at most 50 finished runs per group" in text  # history sampling is disclosed
    assert re.search(r"\bnan\b", text, re.IGNORECASE) is None  # no unformatted missing value


def test_the_report_leads_with_its_answer(study_report):
    text = (study_report.out_dir / "report.md").read_text()
    head = text[: text.index("\n## ")]  # everything before the first section
    assert head.startswith("# Dead units report: experiment deadunits\n")
    assert "](headline.png)" in head
    found = [line for line in head.splitlines() if line.startswith("- ")]
    assert found == [
        "- **Dead at init:** runs with a dead hidden unit in 3 of 5 groups; highest rate "
        "1.000 [0.566, 1.000] (5/5) in relu / he_uniform; ReLU groups range from "
        "0.778 [0.453, 0.937] (7/9) (relu / glorot_uniform) to 1.000 [0.566, 1.000] (5/5) "
        "(relu / he_uniform).",
        "- **Collapse:** a whole hidden layer was dead at init (constant output) in 8 runs "
        "over 2 groups; most often in relu / he_uniform, 1.000 [0.566, 1.000] (5/5).",
        "- **Loss cost of a dead unit** (median final test loss, dead-at-init minus alive "
        "runs): largest in relu / glorot_uniform: +0.225 [+0.18, +0.38]; the 95% bootstrap "
        "interval lies above 0 in 1 and below 0 in 0 of 1 group with runs on both sides.",
        "- **Rank correlation** of dead fraction at init with final test loss (Spearman): "
        "0.936 [0.842, 0.975] pooled over groups (n=21); above 0 within 1 of 1 group where "
        "defined.",
        "- **Theory vs measurement:** the closed form for bias-free ReLU on one-sign inputs "
        "lies inside the measured 95% interval in 5 of 6 comparisons (about 0.3 outside "
        "expected by chance); outside: collapse in relu / he_uniform.",
    ]
    # The HTML page in the same order: title, headline figure, findings, then sections.
    page = parse(study_report.html)
    assert page.tags.index("h1") < page.tags.index("img") < page.tags.index("ul")
    assert page.tags.index("ul") < page.tags.index("h2")
    assert page.images[0]["data-name"] == "headline.png"


def test_summary_csv(study_report):
    summary = pd.read_csv(study_report.out_dir / "summary.csv")
    assert len(summary) == 5
    relu = summary[summary["group"] == "relu / glorot_uniform"].iloc[0]
    assert (relu["dead_at_init_k"], relu["dead_at_init_n"], relu["dead_dead"]) == (7, 9, 5)
    unfinished = pd.read_csv(study_report.out_dir / "unfinished_runs.csv")
    assert len(unfinished) == 3


def test_report_run_is_logged_and_ignored_next_time(fake_store, tmp_path):
    store = fake_store()
    for seed in range(3):
        store.log(config={"seed": seed}, metrics=run_metrics(dead_init=seed % 3))
    output = write_report(store.experiment, tmp_path / "out", tracking_uri=store.uri)
    assert output.html == tmp_path / "out" / "report.html"
    client = MlflowClient(tracking_uri=store.uri)
    reports = client.search_runs([store.experiment_id], "tags.`deadunits.role` = 'report'")
    assert len(reports) == 1
    report = reports[0]
    assert report.info.run_name == "report" and report.info.status == "FINISHED"
    assert report.data.metrics["runs"] == 3
    artifacts = {a.path for a in client.list_artifacts(report.info.run_id)}
    assert {"report.md", "report.html", "summary.csv", "dead_rates.png"} <= artifacts
    again = write_report(store.experiment, tmp_path / "again", tracking_uri=store.uri)
    assert len(again.results.loaded.frame) == 3  # the first report run is not a data point


def test_depth_study_gives_collapse_figure_with_rai_arm(fake_store, tmp_path):
    store = fake_store()
    for init in ("glorot_uniform", "rai"):
        for sizes, units in (("[2]", 2), ("[2, 2]", 4)):
            for seed in range(2):
                store.log(
                    config={"seed": seed, "model.hidden_sizes": sizes, "init.name": init},
                    metrics=run_metrics(dead_init=units * seed, hidden_units=units),
                )
    output = write_report(store.experiment, tmp_path, tracking_uri=store.uri, log_to_mlflow=False)
    collapse = output.results.collapse.set_index("group")
    assert collapse.loc[
        "relu / rai / hidden=[2, 2]", ["symmetric", "depth", "collapse_k"]
    ].tolist() == [False, 2, 1]
    assert set(collapse["init"]) == {"glorot_uniform", "rai"}
    names = {img["data-name"] for img in parse(output.html).images}
    assert "collapse_theory.png" in names and (tmp_path / "collapse_theory.png").exists()
    assert "`rai` as its own arm" in (tmp_path / "report.md").read_text()


def test_report_run_links_to_its_sweep(fake_store, tmp_path):
    store = fake_store()
    parent = store.sweep("s1")
    for seed in range(3):
        store.log(
            config={"seed": seed},
            metrics=run_metrics(dead_init=seed % 2),
            sweep_id="s1",
            parent_run_id=parent,
        )
    output = write_report(store.experiment, tmp_path, sweep_id="s1", tracking_uri=store.uri)
    tags = store.client.get_run(output.run_id).data.tags
    assert tags["deadunits.report.sweep_id"] == "s1"
    assert tags["deadunits.report.sweep_parent_run_id"] == parent
    assert "sweep_id" not in tags  # a filter on sweep_id keeps finding only training runs
    command = (
        f"python -m analysis --experiment deadunits --sweep s1 --tracking-uri {store.uri} "
        f"--out {tmp_path}"
    )
    assert tags["mlflow.note.content"] == (
        f"Dead units report on sweep `s1` of experiment `deadunits` (sweep parent run "
        f"`{parent}`): 3 runs in 1 group: 3 finished.\n\nReproduce with:\n\n    {command}\n"
    )


def test_only_failed_runs_still_report(fake_store, tmp_path):
    store = fake_store()
    store.log(status="FAILED", tags={"error": "ValueError: bad"})
    store.log(config={"seed": 1}, status="KILLED")
    output = write_report(store.experiment, tmp_path, tracking_uri=store.uri, log_to_mlflow=False)
    text = (tmp_path / "report.md").read_text()
    assert "2 runs in 1 group: 0 finished, 1 failed, 1 killed." in text
    assert "no finished or diverged runs" in text
    assert {p.name for p in tmp_path.glob("*.png")} == {"dead_rates.png"}
    assert len(parse(output.html).images) == 1


def test_single_run(fake_store, tmp_path):
    store = fake_store()
    store.log(metrics=run_metrics(dead_init=1, final_train_loss=0.3))
    output = write_report(store.experiment, tmp_path, tracking_uri=store.uri, log_to_mlflow=False)
    text = (tmp_path / "report.md").read_text()
    assert "1 runs" not in text and "1 run in 1 group" in text
    assert "n=1: no interval" in text
    assert "all groups pooled" not in text
    assert len(output.results.death) == 1


def test_unknown_experiment_and_empty_sweep(study, tmp_path):
    with pytest.raises(AnalysisError, match="unknown experiment 'nope'"):
        write_report("nope", tmp_path, tracking_uri=study.uri)
    with pytest.raises(AnalysisError, match="no runs with sweep_id 'other'"):
        write_report(study.experiment, tmp_path, sweep_id="other", tracking_uri=study.uri)
    assert not any(tmp_path.iterdir())  # nothing written on error


def test_a_run_with_no_params_is_listed_not_fatal(fake_store, tmp_path):
    # What a job that crashed right after create_run leaves behind: no params, no metrics.
    store = fake_store()
    store.log(config={"seed": 0, "model.activation": "tanh"}, metrics=run_metrics(dead_init=0))
    store.log(config={"seed": 1}, metrics=run_metrics(dead_init=1))
    empty = store.client.create_run(store.experiment_id, tags={"deadunits.role": "run"})
    store.client.set_terminated(empty.info.run_id, "KILLED")
    write_report(store.experiment, tmp_path, tracking_uri=store.uri, log_to_mlflow=False)
    text = (tmp_path / "report.md").read_text()
    assert "3 runs in 3 groups: 2 finished, 1 killed." in text
    assert empty.info.run_id in text

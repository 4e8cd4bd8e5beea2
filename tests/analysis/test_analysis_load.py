"""MLflow -> DataFrame: completeness, typing, filtering, and the store's edge cases."""

import pandas as pd
import pytest
from fake_runs import SWEEP_ID, run_metrics

from analysis import load
from analysis.errors import AnalysisError


def read(store, sweep_id=None):
    client, uri = load.connect(store.uri)
    return load.load_runs(client, uri, store.experiment, sweep_id)


def test_loads_every_training_run_and_nothing_else(study):
    frame = read(study).frame
    # 10 relu/glorot + 5 linear + 3 tanh + 1 rai + 5 he_uniform; no sweep parent, no report.
    assert len(frame) == 24
    assert frame["run_id"].is_unique
    assert set(frame["outcome"]) == {"finished", "diverged", "failed", "running"}
    assert frame["outcome"].value_counts().to_dict() == {
        "finished": 21,
        "diverged": 1,
        "failed": 1,
        "running": 1,
    }


def test_typed_columns(study):
    loaded = read(study)
    frame = loaded.frame
    assert str(frame["seed"].dtype) == "Int64"
    assert frame["model.bias_init"].dtype == "float64"
    assert frame["data.low"].dtype == "float64"
    assert str(frame["dead_at_init"].dtype) == "boolean"
    assert str(frame["dead_units_init"].dtype) == "Int64"
    assert str(frame["collapsed_init"].dtype) == "Int64"
    assert frame["final_train_loss"].dtype == "float64"
    assert frame["diverged"].dtype == bool
    assert str(frame["depth"].dtype) == "Int64"
    assert set(frame["width"].dropna()) == {2}
    assert "model.activation" in loaded.param_columns
    assert "dead_units_init/layer_1" in loaded.metric_columns
    diverged = frame[frame["outcome"] == "diverged"].iloc[0]
    assert diverged["diverged_epoch"] == 3 and diverged["status"] == "FAILED"
    failed = frame[frame["outcome"] == "failed"].iloc[0]
    assert pd.isna(failed["dead_at_init"]) and failed["error"] == "OOM: boom"


def use_search_runs(monkeypatch):
    """Read as from a tracking server: MLflow's search_runs instead of the SQL tables."""
    monkeypatch.setattr("pipeline.bulk.bulk_support", lambda uri, experiment_id=None: "server")


def test_pagination_follows_tokens(study, monkeypatch):
    use_search_runs(monkeypatch)
    monkeypatch.setattr(load, "PAGE_SIZE", 5)
    frame = read(study).frame
    assert len(frame) == 24 and frame["run_id"].is_unique


@pytest.mark.parametrize("sweep_id", [None, SWEEP_ID])
def test_sql_tables_and_search_runs_give_the_same_frame(study, monkeypatch, sweep_id):
    by_sql = read(study, sweep_id)
    use_search_runs(monkeypatch)
    by_search = read(study, sweep_id)
    assert by_sql.param_columns == by_search.param_columns
    assert by_sql.metric_columns == by_search.metric_columns
    ordered = [x.frame.sort_values("run_id").reset_index(drop=True) for x in (by_sql, by_search)]
    pd.testing.assert_frame_equal(*ordered)


def test_sweep_filter(study):
    assert len(read(study, SWEEP_ID).frame) == 24
    with pytest.raises(AnalysisError, match="no runs with sweep_id 'nope'"):
        read(study, "nope")
    with pytest.raises(AnalysisError, match="invalid sweep id"):
        read(study, "x' OR 1=1")


def test_unknown_and_empty_experiment(fake_store):
    store = fake_store()
    with pytest.raises(AnalysisError, match="unknown experiment 'other'"):
        client, uri = load.connect(store.uri)
        load.load_runs(client, uri, "other")
    with pytest.raises(AnalysisError, match="has no training runs"):
        read(store)
    store.sweep("only-a-parent")
    with pytest.raises(AnalysisError, match="has no training runs"):
        read(store)


def test_missing_sqlite_file_is_not_created(tmp_path):
    path = tmp_path / "absent.db"
    with pytest.raises(AnalysisError, match="no tracking store"):
        load.connect(f"sqlite:///{path}")
    assert not path.exists()


def test_dead_at_init_falls_back_to_metric(fake_store):
    store = fake_store()
    store.log(metrics=run_metrics(dead_init=1), tags={"dead_at_init": ""})
    frame = read(store).frame
    assert bool(frame["dead_at_init"].iloc[0]) is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [("[2]", (2,)), ("[3, 3]", (3, 3)), ("(4, 2)", (4, 2)), ("5", (5,)), ("[]", None)],
)
def test_parse_hidden_sizes(text, expected):
    assert load.parse_hidden_sizes(text) == expected


def test_parse_hidden_sizes_rejects_junk():
    for junk in ["[0]", "[2.5]", "abc", "[True]", None]:
        assert load.parse_hidden_sizes(junk) is None


def test_typed_param_keeps_text_when_mixed():
    assert load.typed_param(pd.Series(["1", "x"], dtype="string")).dtype == "string"
    assert str(load.typed_param(pd.Series(["true", "False"], dtype="string")).dtype) == "boolean"


def test_fetch_histories_bulk_and_fallback_agree(study, monkeypatch):
    client, _ = load.connect(study.uri)
    frame = read(study).frame
    ids = list(frame.loc[frame["outcome"] == "finished", "run_id"])
    bulk = fetch_sorted(client, ids)
    assert len(bulk) == len(ids) * 2 * 3  # two keys, three epochs
    assert set(bulk["step"]) == {1, 2, 3}
    monkeypatch.setattr(load, "_bulk_history_reader", lambda client: None)
    assert fetch_sorted(client, ids).equals(bulk)


def fetch_sorted(client, ids):
    histories = load.fetch_histories(client, ids)
    return histories.sort_values(["run_id", "key", "step"]).reset_index(drop=True)

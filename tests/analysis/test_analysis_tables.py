"""Aggregates on the study store, checked against the values fake_runs.py logged."""

import math

import pytest
from fake_runs import run_metrics

from analysis import load, tables
from analysis.compute import compute
from analysis.stats import wilson_interval

Z = 1.959963984540054


@pytest.fixture(scope="module")
def results(study):
    client, uri = load.connect(study.uri)
    return compute(load.load_runs(client, uri, study.experiment))


def row(table, group, **match):
    rows = table[table["group"] == group]
    for key, value in match.items():
        rows = rows[rows[key] == value]
    assert len(rows) == 1, f"{group} {match}: {len(rows)} rows"
    return rows.iloc[0]


RELU = "relu / glorot_uniform"


def test_group_keys_skip_seeds_and_constants(results):
    assert results.keys == ["model.activation", "init.name"]
    assert results.ignored_varying == {"seed": "replicate seed"}
    assert list(results.death["group"]) == [
        "linear / glorot_uniform",
        RELU,
        "relu / he_uniform",
        "relu / rai",
        "tanh / glorot_uniform",
    ]


def test_death_counts_include_diverged_runs(results):
    r = row(results.death, RELU)
    assert (r["runs"], r["finished"], r["diverged"], r["failed"], r["running"]) == (10, 8, 1, 1, 0)
    # Init sample: 8 finished + 1 diverged (2 dead units, collapsed, output dead).
    assert (r["dead_at_init_k"], r["dead_at_init_n"]) == (7, 9)
    assert (r["dead_at_init_lo"], r["dead_at_init_hi"]) == pytest.approx(wilson_interval(7, 9))
    assert (r["collapse_k"], r["output_dead_k"]) == (3, 5)
    assert r["dead_fraction"] == pytest.approx(5 / 9)
    fractions = [0, 0.5, 0.5, 1, 0, 0.5, 1, 0.5, 1]
    sd = math.sqrt(sum((f - 5 / 9) ** 2 for f in fractions) / 8)
    half = 2.306004 * sd / 3  # t(0.975, 8)
    assert r["dead_fraction_lo"] == pytest.approx(5 / 9 - half, abs=1e-6)
    linear = row(results.death, "linear / glorot_uniform")
    assert (linear["runs"], linear["running"], linear["dead_at_init_k"]) == (5, 1, 0)
    # Wilson for 0/n: [0, z^2 / (n + z^2)] = [0, 3.8415 / 7.8415].
    assert (linear["dead_at_init_lo"], linear["dead_at_init_hi"]) == pytest.approx(
        (0.0, Z**2 / (4 + Z**2))
    )


def test_group_of_one_is_marked(results):
    r = row(results.death, "relu / rai")
    assert r["dead_at_init_n"] == 1
    assert r["note"] == "n=1: no interval for the mean"
    assert math.isnan(r["dead_fraction_lo"])


def test_saturation_is_separate(results):
    assert list(results.saturation["group"]) == ["tanh / glorot_uniform"]
    r = results.saturation.iloc[0]
    assert (r["saturated_init_k"], r["saturated_init_n"]) == (2, 3)
    assert r["saturated_fraction_init"] == pytest.approx(0.5)  # (1 + 0 + 2) / (3 * 2)
    assert row(results.death, "tanh / glorot_uniform")["dead_at_init_k"] == 0


def test_loss_by_dead_status(results):
    dead = row(results.loss_by_dead, RELU, at_init="dead at init")
    alive = row(results.loss_by_dead, RELU, at_init="alive at init")
    assert (dead["train_n"], alive["train_n"]) == (6, 2)
    assert dead["train_median"] == pytest.approx((0.32 + 0.35) / 2)
    assert dead["train_mean"] == pytest.approx((0.30 + 0.32 + 0.50 + 0.28 + 0.48 + 0.35) / 6)
    assert dead["test_median"] == pytest.approx((0.32 + 0.35) / 2 + 0.01)
    assert alive["train_median"] == pytest.approx(0.11)
    assert (alive["train_q25"], alive["train_q75"]) == pytest.approx((0.105, 0.115))


def test_loss_by_dead_count(results):
    two = row(results.loss_by_count, RELU, dead_units=2)
    assert two["train_n"] == 2 and two["train_median"] == pytest.approx(0.49)
    one = row(results.loss_by_count, RELU, dead_units=1)
    assert one["train_n"] == 4 and one["train_median"] == pytest.approx((0.30 + 0.32) / 2)


def test_loss_cost(results):
    r = row(results.cost, RELU)
    assert (r["dead_n"], r["alive_n"]) == (6, 2)
    assert r["train_cost"] == pytest.approx(0.335 - 0.11)
    # Medians of 6 dead runs resampled lie in [0.28, 0.50], of the 2 alive in [0.10, 0.12];
    # the 2.5% and 97.5% quantiles of 2,000 differences fall on 0.18 and 0.38.
    assert (r["train_cost_lo"], r["train_cost_hi"]) == pytest.approx((0.18, 0.38))
    assert row(results.cost, "linear / glorot_uniform")["note"] == "needs runs on both sides"


def test_correlation_by_hand(results):
    r = row(results.correlation, RELU)
    rho = 36 / math.sqrt(36 * 42)  # ranks worked out in test_analysis_stats
    assert r["rho_train"] == pytest.approx(rho)
    assert r["rho_test"] == pytest.approx(rho)
    assert r["rho_train_lo"] == pytest.approx(math.tanh(math.atanh(rho) - Z * math.sqrt(1.06 / 5)))
    assert "constant" in row(results.correlation, "linear / glorot_uniform")["note"]
    pooled = row(results.correlation, "all groups pooled")
    # 21 finished runs over all groups: 19 with a known dead fraction and loss, ranks pooled.
    assert (pooled["rho_train_n"], pooled["rho_train"]) == (21, pytest.approx(0.936024, abs=1e-6))


def test_transitions(results):
    r = row(results.transitions, RELU)
    assert (r["transition_n"], r["dead_dead"], r["dead_alive"], r["alive_dead"]) == (8, 5, 1, 1)
    assert r["alive_alive"] == 1
    assert (r["dead_units_init_total"], r["dead_units_final_total"], r["net_change"]) == (8, 9, 1)
    assert (r["runs_gaining"], r["runs_losing"]) == (2, 1)


def test_theory_rows_and_flags(results):
    theory = results.theory
    assert set(theory["group"]) == {RELU, "relu / he_uniform"}  # rai is not symmetric
    relu = row(theory, RELU)
    assert relu["collapse_theory"] == 0.25 and not relu["collapse_outside"]
    assert relu["output_dead_theory"] == 0.625 and not relu["output_dead_outside"]
    assert (relu["collapse_k"], relu["collapse_n"]) == (3, 9)
    he = row(theory, "relu / he_uniform")
    assert (he["collapse_k"], he["collapse_n"]) == (5, 5) and he["collapse_outside"]


def test_dead_count_distribution_rows(results):
    counts = results.dead_counts[results.dead_counts["group"] == RELU]
    assert list(counts["dead_units"]) == [0, 1, 2]
    assert list(counts["theory"]) == [0.25, 0.5, 0.25]
    assert list(counts["share_k"]) == [2, 4, 3]


def test_unfinished_and_missing(results):
    unfinished = results.unfinished
    assert sorted(unfinished["outcome"]) == ["diverged", "failed", "running"]
    assert set(unfinished.loc[unfinished["outcome"] == "failed", "error"]) == {"OOM: boom"}
    assert results.missing.empty  # finished runs carry every metric in the study


def test_summary_has_one_row_per_group(results):
    summary = results.summary
    assert len(summary) == len(results.death) and summary["group"].is_unique
    assert {"dead_at_init", "train_cost", "dead_dead", "rho_test", "collapse_theory"} <= set(
        summary.columns
    )


def test_width_and_depth_become_keys(fake_store):
    store = fake_store()
    for sizes, units in (("[2]", 2), ("[2, 2]", 4), ("[3]", 3)):
        for seed in range(3):
            store.log(
                config={"seed": seed, "data.seed": seed, "model.hidden_sizes": sizes},
                metrics=run_metrics(dead_init=units, hidden_units=units),
            )
    client, uri = load.connect(store.uri)
    result = compute(load.load_runs(client, uri, store.experiment))
    assert result.keys == ["model.activation", "init.name", "model.hidden_sizes"]
    assert set(result.ignored_varying) == {"seed", "data.seed"}
    assert set(result.theory["hidden_sizes"]) == {"[2]", "[2, 2]", "[3]"}
    deep = row(result.theory, "relu / glorot_uniform / hidden=[2, 2]")
    assert deep["collapse_theory"] == pytest.approx(0.4375)
    assert (deep["width"], deep["depth"]) == (2, 2)


def test_params_that_follow_the_keys_are_not_keys(fake_store):
    store = fake_store()
    for seed in range(2):
        store.log(config={"seed": seed}, metrics=run_metrics(dead_init=0))
        store.log(
            config={"seed": seed, "init.name": "rai", "init.std": 0.6, "force": seed == 1},
            metrics=run_metrics(dead_init=1),
        )
    client, uri = load.connect(store.uri)
    result = compute(load.load_runs(client, uri, store.experiment))
    assert result.keys == ["model.activation", "init.name"]
    assert result.ignored_varying == {
        "force": "does not change results",
        "init.std": "follows the group keys",
        "seed": "replicate seed",
    }


def test_missing_metrics_are_reported(fake_store):
    store = fake_store()
    metrics = run_metrics(dead_init=1)
    del metrics["final_test_loss"]
    store.log(metrics=metrics)
    store.log(config={"seed": 1}, metrics=run_metrics(dead_init=0))
    client, uri = load.connect(store.uri)
    result = compute(load.load_runs(client, uri, store.experiment))
    assert list(result.missing["metric"]) == ["final_test_loss"]
    assert result.missing.iloc[0]["finished runs missing it"] == 1
    assert row(result.loss_by_dead, RELU, at_init="dead at init")["test_n"] == 0


def test_seed_like_keys():
    assert tables.is_seed_like("seed") and tables.is_seed_like("data.seed")
    assert tables.is_seed_like("train.shuffle_seed")
    assert not tables.is_seed_like("seeds_per_job") and not tables.is_seed_like("model.seedling")


def test_headline_pools_per_activation_and_initializer(results):
    headline = results.headline.set_index("group")
    assert list(headline.index) == list(results.death["group"])  # no other key here
    relu = headline.loc[RELU]
    assert (relu["dead_at_init_k"], relu["dead_at_init_n"]) == (7, 9)
    assert (relu["dead_n"], relu["alive_n"]) == (6, 2)
    assert relu["dead_median"] == pytest.approx((0.32 + 0.35) / 2 + 0.01)  # test loss
    assert relu["alive_median"] == pytest.approx(0.12)
    assert (relu["alive_q25"], relu["alive_q75"]) == pytest.approx((0.115, 0.125))


def test_collapse_table_has_a_rai_arm(fake_store):
    store = fake_store()
    for init in ("glorot_uniform", "rai"):
        for depth, collapsed in ((1, [1, 0, 0, 0]), (3, [1, 1, 0, 0])):
            for seed, c in enumerate(collapsed):
                store.log(
                    config={
                        "seed": seed,
                        "init.name": init,
                        "model.hidden_sizes": str([2] * depth),
                    },
                    metrics=run_metrics(dead_init=0, hidden_units=2 * depth, collapsed_init=c),
                )
    store.log(  # a bias shifts the pre-activations: out of the closed form's reach, left out
        config={"model.bias_init": 0.1, "model.hidden_sizes": "[2, 2]"},
        metrics=run_metrics(dead_init=0, hidden_units=4),
    )
    client, uri = load.connect(store.uri)
    collapse = compute(load.load_runs(client, uri, store.experiment)).collapse
    collapse = collapse.sort_values(["init", "depth"])
    got = collapse[["init", "symmetric", "width", "depth", "collapse_k", "collapse_n"]]
    assert got.values.tolist() == [
        ["glorot_uniform", True, 2, 1, 1, 4],
        ["glorot_uniform", True, 2, 3, 2, 4],
        ["rai", False, 2, 1, 1, 4],
        ["rai", False, 2, 3, 2, 4],
    ]
    # Wilson upper ends for 1/4 and 2/4, by hand: 0.6994 and 0.8500.
    assert collapse["collapse_hi"].tolist() == pytest.approx([0.6994, 0.8500] * 2, abs=1e-4)

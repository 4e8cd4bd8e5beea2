"""Aggregates over the run frame: one numeric table per question the report answers.

Which runs count where:
- init statistics (dead, collapsed, output dead, saturated at init) use finished and
  diverged runs: a diverged run was probed at init before training blew up, and leaving it
  out would bias the dead rate;
- training statistics (final loss, transitions) use finished runs only;
- failed, killed and running runs are counted per group and listed, never used.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import asdict

import numpy as np
import pandas as pd

from analysis import stats, theory
from analysis.load import parse_hidden_sizes
from pipeline import schema
from pipeline.forward import SATURATING

ACTIVATION = "model.activation"
INIT = "init.name"
HIDDEN = "model.hidden_sizes"
BIAS = "model.bias_init"
OUTPUT_ACTIVATION = "model.output_activation"
DATA_LOW = "data.low"
ALWAYS_GROUPED = (ACTIVATION, INIT)
# Order group keys by how much they matter to deadness, then alphabetically.
KEY_ORDER = (ACTIVATION, INIT, HIDDEN, BIAS, OUTPUT_ACTIVATION, DATA_LOW)
POOLED = "all groups pooled"  # the correlation row over every run
INIT_OUTCOMES = (schema.FINISHED, schema.DIVERGED)  # probed at init
SHORT_NAMES = {
    ACTIVATION: "activation",
    INIT: "init",
    HIDDEN: "hidden",
    BIAS: "bias",
    OUTPUT_ACTIVATION: "output",
}
_SEED_LIKE = re.compile(r"(^|[._])seed$|_seed$")


def floats(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float array (NA -> NaN); all NaN when the column is absent."""
    if column not in frame:
        return np.full(len(frame), np.nan)
    return np.asarray(frame[column], dtype=float)


# ---------------------------------------------------------------- grouping


def is_seed_like(key: str) -> bool:
    """seed, data.seed, shuffle_seed ...: replicate indices, never group keys."""
    return bool(_SEED_LIKE.search(key))


def varying_params(frame: pd.DataFrame, params: list[str]) -> list[str]:
    """Parameters with more than one value (missing counts as a value) across the runs."""
    return [p for p in params if frame[p].nunique(dropna=False) > 1]


def is_not_result(key: str) -> bool:
    """Settings that do not change a run's result (left out of its config key): never group
    keys, so e.g. a re-run with force=true pools with the original runs."""
    return schema.is_under(key, schema.NOT_IN_KEY)


def group_keys(frame: pd.DataFrame, params: list[str]) -> list[str]:
    """Activation and initializer, plus each other varying config parameter that splits a group.

    Seeds and settings that do not change results are never keys. A parameter that only
    follows the keys already chosen (init.std exists only for some initializers) adds no
    group and is left out.
    """
    rank = {k: i for i, k in enumerate(KEY_ORDER)}
    candidates = sorted(
        (
            p
            for p in varying_params(frame, params)
            if p not in ALWAYS_GROUPED and not is_seed_like(p) and not is_not_result(p)
        ),
        key=lambda k: (rank.get(k, len(rank)), k),
    )
    keys = [k for k in ALWAYS_GROUPED if k in frame]
    for candidate in candidates:
        if not keys or _splits_groups(frame, keys, candidate):
            keys.append(candidate)
    return keys


def _splits_groups(frame: pd.DataFrame, keys: list[str], candidate: str) -> bool:
    values = frame[candidate].astype("string").fillna("<NA>")
    per_group = values.groupby([frame[k] for k in keys], dropna=False).nunique()
    return bool((per_group > 1).any())


def ungrouped_reasons(frame: pd.DataFrame, params: list[str], keys: list[str]) -> dict[str, str]:
    """Why each varying parameter that is not a group key was left out."""
    reasons = {}
    for param in varying_params(frame, params):
        if param in keys:
            continue
        if is_seed_like(param):
            reasons[param] = "replicate seed"
        elif is_not_result(param):
            reasons[param] = "does not change results"
        else:
            reasons[param] = "follows the group keys"
    return reasons


def format_value(value) -> str:
    """A config value as people write it: 0.1 not 0.10000, (missing) for NA."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "(missing)"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    return str(value)


def group_label(values: dict) -> str:
    """'relu / glorot_uniform / hidden=[2] / bias=0.1'; activation and init unprefixed."""
    if not values:
        return "all runs"
    parts = []
    for key, value in values.items():
        text = format_value(value)
        parts.append(text if key in ALWAYS_GROUPED else f"{SHORT_NAMES.get(key, key)}={text}")
    return " / ".join(parts)


def iter_groups(frame: pd.DataFrame, keys: list[str]) -> Iterator[tuple[str, dict, pd.DataFrame]]:
    """(label, key values, runs) per group, in sorted key order; NA values form groups too."""
    if not keys:
        yield "all runs", {}, frame
        return
    for values, runs in frame.groupby(keys, dropna=False, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        key_values = dict(zip(keys, values, strict=True))
        yield group_label(key_values), key_values, runs


def with_group(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The frame with a `group` label column (same label as the tables use)."""
    labels = pd.Series("", index=frame.index, dtype="string")
    for label, _, runs in iter_groups(frame, keys):
        labels[runs.index] = label
    return frame.assign(group=labels)


def _row(label: str, values: dict) -> dict:
    return {"group": label, **{k: format_value(v) for k, v in values.items()}}


def _estimate_columns(prefix: str, estimate: stats.Estimate, with_count: bool = True) -> dict:
    columns = {}
    if with_count:
        columns[f"{prefix}_k"] = int(round(estimate.value * estimate.n)) if estimate.n else 0
        columns[f"{prefix}_n"] = estimate.n
    columns[prefix] = estimate.value
    columns[f"{prefix}_lo"] = estimate.lo
    columns[f"{prefix}_hi"] = estimate.hi
    return columns


def _losses(runs: pd.DataFrame) -> dict[str, np.ndarray]:
    return {name: floats(runs, metric) for name, metric in LOSSES}


def _per_loss(columns: str, estimates: dict[str, stats.Estimate], with_n: bool = False) -> dict:
    """One estimate per final loss (train, test) as columns `columns.format(name)`, with
    their notes joined once each."""
    row, notes = {}, []
    for name, result in estimates.items():
        prefix = columns.format(name)
        row.update(_estimate_columns(prefix, result, with_count=False))
        if with_n:
            row[f"{prefix}_n"] = result.n
        if result.note and result.note not in notes:
            notes.append(result.note)
    row["note"] = "; ".join(notes)
    return row


def init_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs whose init probe counts: finished and diverged."""
    return runs[runs["outcome"].isin(INIT_OUTCOMES)]


def finished_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that completed training."""
    return runs[runs["outcome"] == "finished"]


# ---------------------------------------------------------------- status


def outcome_counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many runs ended in each outcome (all outcomes present, zeros included)."""
    counts = frame["outcome"].value_counts()
    return {outcome: int(counts.get(outcome, 0)) for outcome in schema.OUTCOMES}


def unfinished_runs(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Every run that did not finish, with why, oldest first."""
    runs = with_group(frame[frame["outcome"] != "finished"], keys)
    columns = ["group", "run_name", "run_id", "status", "outcome", "diverged_epoch", "error"]
    return runs.sort_values(["outcome", "start_time"])[columns].reset_index(drop=True)


def missing_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """Per expected metric: finished runs lacking it, and diverged runs lacking init metrics."""
    finished = finished_runs(frame)
    diverged = frame[frame["outcome"] == "diverged"]
    rows = []
    for metric in schema.RESULT_METRICS:
        missing_finished = int(np.isnan(floats(finished, metric)).sum())
        missing_diverged = (
            int(np.isnan(floats(diverged, metric)).sum()) if metric in schema.INIT_METRICS else 0
        )
        if missing_finished or missing_diverged:
            rows.append(
                {
                    "metric": metric,
                    "finished runs missing it": missing_finished,
                    "diverged runs missing it": missing_diverged,
                }
            )
    columns = ["metric", "finished runs missing it", "diverged runs missing it"]
    return pd.DataFrame(rows, columns=columns)


# ---------------------------------------------------------------- death at init


def death_table(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per group: run counts by outcome and the four init rates with 95% intervals.

    Rates use Wilson intervals; the mean dead fraction uses a Student t interval.
    """
    rows = []
    for label, values, runs in iter_groups(frame, keys):
        counts = outcome_counts(runs)
        sample = init_runs(runs)
        dead = stats.proportion(np.asarray(sample["dead_at_init"], dtype=float))
        fraction = stats.mean_t_interval(floats(sample, schema.DEAD_FRACTION_INIT))
        collapse = stats.proportion(floats(sample, schema.COLLAPSED_INIT))
        output = stats.proportion(floats(sample, schema.OUTPUT_DEAD_INIT))
        rows.append(
            {
                **_row(label, values),
                "runs": len(runs),
                **counts,
                **_estimate_columns("dead_at_init", dead),
                **_estimate_columns("dead_fraction", fraction, with_count=False),
                "dead_fraction_n": fraction.n,
                **_estimate_columns("collapse", collapse),
                **_estimate_columns("output_dead", output),
                "note": _sample_note(len(sample), fraction),
            }
        )
    return pd.DataFrame(rows)


def _sample_note(n: int, fraction: stats.Estimate) -> str:
    if n == 0:
        return "no finished or diverged runs"
    if n == 1:
        return "n=1: no interval for the mean"
    return fraction.note


def saturation_table(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per tanh/sigmoid group: runs with a saturated unit and mean saturated fraction."""
    rows = []
    for label, values, runs in iter_groups(frame, keys):
        activation = runs[ACTIVATION].iloc[0] if ACTIVATION in runs else None
        if pd.isna(activation) or activation not in SATURATING:
            continue
        row = _row(label, values)
        for when, sample in (("init", init_runs(runs)), ("final", finished_runs(runs))):
            counts = floats(sample, f"saturated_units_{when}")
            with np.errstate(invalid="ignore", divide="ignore"):
                fraction = counts / floats(sample, schema.HIDDEN_UNITS)
            saturated = stats.proportion(np.where(np.isnan(counts), np.nan, counts > 0))
            row |= _estimate_columns(f"saturated_{when}", saturated)
            row |= _estimate_columns(
                f"saturated_fraction_{when}", stats.mean_t_interval(fraction), False
            )
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- final loss


LOSSES = (("train", schema.FINAL_TRAIN_LOSS), ("test", schema.FINAL_TEST_LOSS))


def _loss_columns(runs: pd.DataFrame, metrics=LOSSES) -> dict:
    """{name}_n, _median, _q25, _q75, _mean of each (name, metric)."""
    columns = {}
    for name, metric in metrics:
        spread = asdict(stats.spread(floats(runs, metric)))
        columns |= {f"{name}_{k}": v for k, v in spread.items()}
    return columns


def loss_by_dead_table(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per group and dead-at-init status: final train/test loss median, IQR, mean."""
    rows = []
    for label, values, runs in iter_groups(frame, keys):
        finished = finished_runs(runs)
        for dead, name in ((True, "dead at init"), (False, "alive at init")):
            subset = finished[finished["dead_at_init"].fillna(not dead) == dead]
            if subset.empty:
                continue
            rows.append({**_row(label, values), "at_init": name, **_loss_columns(subset)})
    return pd.DataFrame(rows)


def loss_by_dead_count_table(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per group and number of dead units at init: final loss median, IQR, mean."""
    rows = []
    for label, values, runs in iter_groups(frame, keys):
        finished = finished_runs(runs)
        counts = floats(finished, schema.DEAD_UNITS_INIT)
        losses = finished[[metric for _, metric in LOSSES if metric in finished]]  # narrow
        for count in np.unique(counts[~np.isnan(counts)]):
            subset = losses[counts == count]
            rows.append({**_row(label, values), "dead_units": int(count), **_loss_columns(subset)})
    return pd.DataFrame(rows)


def loss_cost_table(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per group: median final loss of dead-at-init runs minus alive runs (bootstrap 95%)."""
    rows = []
    for label, values, runs in iter_groups(frame, keys):
        finished = finished_runs(runs)
        dead_mask = np.asarray(finished["dead_at_init"] == True, dtype=bool)  # noqa: E712
        alive_mask = np.asarray(finished["dead_at_init"] == False, dtype=bool)  # noqa: E712
        row = {
            **_row(label, values),
            "dead_n": int(dead_mask.sum()),
            "alive_n": int(alive_mask.sum()),
        }
        costs = {
            name: stats.median_difference(losses[dead_mask], losses[alive_mask])
            for name, losses in _losses(finished).items()
        }
        row.update(_per_loss("{}_cost", costs))
        rows.append(row)
    return pd.DataFrame(rows)


def correlation_table(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Spearman rho of dead fraction at init vs final loss, per group and pooled."""
    groups = list(iter_groups(frame, keys))
    if len(groups) > 1:
        groups.append((POOLED, {k: "" for k in keys}, frame))
    rows = []
    for label, values, runs in groups:
        finished = finished_runs(runs)
        row = {"group": label, **{k: format_value(v) for k, v in values.items()}}
        dead_fraction = floats(finished, schema.DEAD_FRACTION_INIT)
        rhos = {name: stats.spearman(dead_fraction, v) for name, v in _losses(finished).items()}
        row.update(_per_loss("rho_{}", rhos, with_n=True))
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- training


def transition_table(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per group: runs dead/alive at init x dead/alive at end, and net change in dead units."""
    rows = []
    for label, values, runs in iter_groups(frame, keys):
        finished = finished_runs(runs)
        known = finished[finished["dead_at_init"].notna() & finished["dead_at_end"].notna()]
        start = np.asarray(known["dead_at_init"], dtype=bool)
        end = np.asarray(known["dead_at_end"], dtype=bool)
        units_init = floats(finished, schema.DEAD_UNITS_INIT)
        units_final = floats(finished, schema.DEAD_UNITS_FINAL)
        change = units_final - units_init
        change = change[~np.isnan(change)]
        rows.append(
            {
                **_row(label, values),
                "transition_n": len(known),
                "dead_dead": int(np.sum(start & end)),
                "dead_alive": int(np.sum(start & ~end)),
                "alive_dead": int(np.sum(~start & end)),
                "alive_alive": int(np.sum(~start & ~end)),
                "dead_units_init_total": int(np.nansum(units_init)),
                "dead_units_final_total": int(np.nansum(units_final)),
                "net_change": int(change.sum()),
                "mean_change": float(change.mean()) if change.size else float("nan"),
                "runs_gaining": int(np.sum(change > 0)),
                "runs_losing": int(np.sum(change < 0)),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- theory


def theory_groups(
    frame: pd.DataFrame, keys: list[str]
) -> Iterator[tuple[str, dict, pd.DataFrame, tuple]]:
    """Groups where the closed form applies, with their parsed hidden sizes."""
    for label, values, runs in iter_groups(frame, keys):
        first = runs.iloc[0]
        sizes = parse_hidden_sizes(first.get(HIDDEN))
        applies = sizes is not None and theory.theory_applies(
            first.get(ACTIVATION), first.get(BIAS), first.get(DATA_LOW), first.get(INIT)
        )
        if applies:
            yield label, values, runs, sizes


def theory_table(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per eligible group: measured collapse, any-dead and output-dead rates beside theory."""
    rows = []
    for label, values, runs, sizes in theory_groups(frame, keys):
        sample = init_runs(runs)
        relu_output = str(runs.iloc[0].get(OUTPUT_ACTIVATION)) == "relu"
        row = {
            **_row(label, values),
            "hidden_sizes": str(list(sizes)),
            "width": sizes[0] if len(set(sizes)) == 1 else np.nan,
            "depth": len(sizes),
        }
        checks = [
            ("collapse", floats(sample, schema.COLLAPSED_INIT), theory.collapse_probability(sizes)),
            (
                "dead_at_init",
                np.asarray(sample["dead_at_init"], dtype=float),
                theory.any_dead_probability(sizes),
            ),
        ]
        if relu_output:
            checks.append(
                (
                    "output_dead",
                    floats(sample, schema.OUTPUT_DEAD_INIT),
                    theory.output_dead_probability(sizes),
                )
            )
        for name, events, expected in checks:
            measured = stats.proportion(events)
            row.update(_estimate_columns(name, measured))
            row[f"{name}_theory"] = expected
            row[f"{name}_outside"] = stats.outside(expected, measured.lo, measured.hi)
        if not relu_output:
            row["output_dead_theory"] = np.nan
        rows.append(row)
    return pd.DataFrame(rows)


MAX_UNITS_FOR_DISTRIBUTION = 6


def dead_count_theory_table(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per eligible small net: share of runs with k dead units at init beside P(k dead).

    For the notebook's net (one hidden layer of 2) theory gives 1/4, 1/2, 1/4.
    """
    rows = []
    for label, values, runs, sizes in theory_groups(frame, keys):
        if sum(sizes) > MAX_UNITS_FOR_DISTRIBUTION:
            continue
        counts = floats(init_runs(runs), schema.DEAD_UNITS_INIT)
        counts = counts[~np.isnan(counts)]
        for k, expected in enumerate(theory.dead_count_distribution(sizes)):
            measured = stats.proportion(counts == k) if counts.size else stats.proportion([])
            rows.append(
                {
                    **_row(label, values),
                    "hidden_sizes": str(list(sizes)),
                    "dead_units": k,
                    **_estimate_columns("share", measured),
                    "theory": expected,
                    "outside": stats.outside(expected, measured.lo, measured.hi),
                }
            )
    return pd.DataFrame(rows)


def headline_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per activation x initializer, pooled over other keys: the dead-at-init rate (Wilson)
    and the final test loss of dead and of alive finished runs (median, quartiles)."""
    rows = []
    for label, values, runs in iter_groups(frame, [k for k in ALWAYS_GROUPED if k in frame]):
        finished = finished_runs(runs)
        dead = stats.proportion(np.asarray(init_runs(runs)["dead_at_init"], dtype=float))
        row = {**_row(label, values), **_estimate_columns("dead_at_init", dead)}
        for name, flag in (("dead", True), ("alive", False)):
            subset = finished[finished["dead_at_init"].fillna(not flag) == flag]
            row |= _loss_columns(subset, [(name, schema.FINAL_TEST_LOSS)])
        rows.append(row)
    return pd.DataFrame(rows)


def collapse_table(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Collapse at init (Wilson) per group of equal-width bias-free ReLU nets on one-sign
    inputs, symmetric initializers and asymmetric ones (rai) alike: the depth figure."""
    rows = []
    for label, values, runs in iter_groups(frame, keys):
        first = runs.iloc[0]
        sizes = parse_hidden_sizes(first.get(HIDDEN))
        init = str(first.get(INIT))
        if (
            sizes is None
            or len(set(sizes)) > 1
            or init not in theory.SYMMETRIC_INITS | theory.ASYMMETRIC_INITS
            or not theory.on_rays(first.get(ACTIVATION), first.get(BIAS), first.get(DATA_LOW))
        ):
            continue
        collapse = stats.proportion(floats(init_runs(runs), schema.COLLAPSED_INIT))
        rows.append(
            {
                **_row(label, values),
                "init": init,
                "symmetric": init in theory.SYMMETRIC_INITS,
                "width": sizes[0],
                "depth": len(sizes),
                **_estimate_columns("collapse", collapse),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- summary


def summary_table(
    death: pd.DataFrame,
    cost: pd.DataFrame,
    transitions: pd.DataFrame,
    correlation: pd.DataFrame,
    theory_rows: pd.DataFrame,
    keys: list[str],
) -> pd.DataFrame:
    """One row per group with every per-group number, for summary.csv."""
    on = ["group", *keys]
    summary = death.rename(columns={"note": "init_note"})
    parts = [
        (cost, "cost"),
        (transitions, "training"),
        (correlation[correlation["group"] != POOLED], "rank"),
        (theory_rows, "theory"),
    ]
    for part, tag in parts:
        if part.empty:
            continue
        part = part.rename(columns={"note": f"{tag}_note"})
        extra = [c for c in part.columns if c not in on and c not in summary.columns]
        summary = summary.merge(part[on + extra], on=on, how="left")
    return summary

"""Every aggregate of a report, computed once from the loaded runs (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis import tables
from analysis.load import LoadedRuns


@dataclass
class Results:
    """The numbers a report shows; numeric tables, formatted later by sections.py."""

    loaded: LoadedRuns
    keys: list[str]
    constant: dict[str, str]
    ignored_varying: dict[str, str]  # varying param -> why it is not a group key
    grouped: pd.DataFrame
    outcomes: dict[str, int]
    unfinished: pd.DataFrame
    missing: pd.DataFrame
    death: pd.DataFrame
    saturation: pd.DataFrame
    loss_by_dead: pd.DataFrame
    loss_by_count: pd.DataFrame
    cost: pd.DataFrame
    correlation: pd.DataFrame
    transitions: pd.DataFrame
    theory: pd.DataFrame
    dead_counts: pd.DataFrame
    collapse: pd.DataFrame
    headline: pd.DataFrame
    summary: pd.DataFrame


def constant_params(frame: pd.DataFrame, params: list[str]) -> dict[str, str]:
    """Parameters with one value across all runs, formatted (the report's common setup)."""
    constant = {}
    for param in params:
        values = frame[param]
        if values.nunique(dropna=False) == 1:
            constant[param] = tables.format_value(values.iloc[0])
    return constant


def compute(loaded: LoadedRuns) -> Results:
    """All tables for one set of runs."""
    frame = loaded.frame
    keys = tables.group_keys(frame, loaded.param_columns)
    ignored = tables.ungrouped_reasons(frame, loaded.param_columns, keys)
    death = tables.death_table(frame, keys)
    cost = tables.loss_cost_table(frame, keys)
    transitions = tables.transition_table(frame, keys)
    correlation = tables.correlation_table(frame, keys)
    theory_rows = tables.theory_table(frame, keys)
    return Results(
        loaded=loaded,
        keys=keys,
        constant=constant_params(frame, loaded.param_columns),
        ignored_varying=ignored,
        grouped=tables.with_group(frame, keys),
        outcomes=tables.outcome_counts(frame),
        unfinished=tables.unfinished_runs(frame, keys),
        missing=tables.missing_metrics(frame),
        death=death,
        saturation=tables.saturation_table(frame, keys),
        loss_by_dead=tables.loss_by_dead_table(frame, keys),
        loss_by_count=tables.loss_by_dead_count_table(frame, keys),
        cost=cost,
        correlation=correlation,
        transitions=transitions,
        theory=theory_rows,
        dead_counts=tables.dead_count_theory_table(frame, keys),
        collapse=tables.collapse_table(frame, keys),
        headline=tables.headline_table(frame),
        summary=tables.summary_table(death, cost, transitions, correlation, theory_rows, keys),
    )

"""Loss curves: which runs to fetch history for, and their per-epoch medians.

Fetching per-epoch history is the slow part of a report (one query per run on stores
without a bulk call), so only a seeded sample of runs per group and dead/alive status is
read; the report states the sample sizes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.tables import finished_runs, iter_groups

RUNS_PER_CELL = 50
MAX_PANELS = 24
STATUS = {True: "dead at init", False: "alive at init"}


def pick_curve_groups(frame: pd.DataFrame, keys: list[str], limit: int = MAX_PANELS) -> list[str]:
    """Up to `limit` group labels: groups with both dead and alive runs first, then larger."""
    candidates = []
    for position, (label, _, runs) in enumerate(iter_groups(frame, keys)):
        dead = finished_runs(runs)["dead_at_init"]
        n_dead, n_alive = int((dead == True).sum()), int((dead == False).sum())  # noqa: E712
        if n_dead + n_alive == 0:
            continue
        both = n_dead > 0 and n_alive > 0
        candidates.append((not both, -(n_dead + n_alive), position, label))
    chosen = sorted(candidates)[:limit]
    return [label for *_, label in sorted(chosen, key=lambda c: c[2])]


def sample_runs(
    grouped: pd.DataFrame, groups: list[str], per_cell: int = RUNS_PER_CELL, seed: int = 0
) -> pd.DataFrame:
    """At most `per_cell` finished runs per group and dead/alive status (seeded).

    `grouped` must carry the `group` label column (tables.with_group). Returns run_id,
    group, status and the size of the cell the sample was drawn from.
    """
    rng = np.random.default_rng(seed)
    finished = finished_runs(grouped)
    finished = finished[finished["group"].isin(groups) & finished["dead_at_init"].notna()]
    parts = []
    for (group, dead), cell in finished.groupby(["group", "dead_at_init"], sort=True):
        ids = cell["run_id"].to_numpy(dtype=object)
        if ids.size > per_cell:
            ids = rng.choice(ids, size=per_cell, replace=False)
        parts.append(
            pd.DataFrame(
                {"run_id": ids, "group": group, "status": STATUS[bool(dead)], "cell_n": len(cell)}
            )
        )
    columns = ["run_id", "group", "status", "cell_n"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def median_curves(histories: pd.DataFrame, sample: pd.DataFrame) -> pd.DataFrame:
    """Per group, status, metric and step: median, quartiles and number of runs."""
    columns = ["group", "status", "key", "step", "median", "q25", "q75", "runs"]
    if histories.empty or sample.empty:
        return pd.DataFrame(columns=columns)
    joined = histories.merge(sample[["run_id", "group", "status"]], on="run_id")
    grouped = joined.groupby(["group", "status", "key", "step"], sort=True)["value"]
    curves = grouped.agg(
        median="median",
        q25=lambda v: v.quantile(0.25),
        q75=lambda v: v.quantile(0.75),
        runs="count",
    )
    return curves.reset_index()[columns]

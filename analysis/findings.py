"""The findings paragraph: sentences filled from the computed tables, never typed by hand.

A sentence is dropped when the numbers it needs are absent, so every claim in the
report traces to a table row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import stats
from analysis.compute import Results
from analysis.tables import ACTIVATION, init_runs


def _rate(value: float, lo: float, hi: float) -> str:
    if np.isnan(lo):
        return f"{value:.3f}"
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def _cost(value: float, lo: float, hi: float) -> str:
    # Losses range over orders of magnitude: significant digits, not decimals.
    if np.isnan(lo):
        return f"{value:+.4g}"
    return f"{value:+.4g} [{lo:+.4g}, {hi:+.4g}]"


def plural(n, noun: str) -> str:
    n = int(n)
    return f"{n} {noun}{'' if n == 1 else 's'}"


def status_sentence(results: Results) -> str:
    o = results.outcomes
    total = sum(o.values())
    parts = [f"{o['finished']} finished"]
    parts += [f"{o[k]} {k}" for k in ("diverged", "failed", "killed") if o[k]]
    if o["running"]:
        parts.append(f"{o['running']} still running or never ended")
    groups = plural(len(results.death), "group")
    return f"{plural(total, 'run')} in {groups}: {', '.join(parts)}."


def activation_sentence(results: Results) -> str | None:
    """Dead-at-init rate pooled per activation (descriptive; groups differ in size)."""
    sample = init_runs(results.loaded.frame)
    if ACTIVATION not in sample or sample.empty:
        return None
    parts = []
    for activation, runs in sample.groupby(ACTIVATION, sort=True):
        rate = stats.proportion(np.asarray(runs["dead_at_init"], dtype=float))
        if rate.n:
            k = int(round(rate.value * rate.n))
            parts.append(f"{activation} {k}/{rate.n} ({_rate(rate.value, rate.lo, rate.hi)})")
    if not parts:
        return None
    return "Runs with a dead hidden unit at init, by activation: " + "; ".join(parts) + "."


def _relu_groups(results: Results) -> set[str]:
    grouped = results.grouped
    if ACTIVATION not in grouped:
        return set()
    return set(grouped.loc[grouped[ACTIVATION] == "relu", "group"])


def killer_sentence(results: Results) -> str | None:
    death = results.death[results.death["dead_at_init_n"] > 0]
    if death.empty:
        return None
    with_dead = death[death["dead_at_init_k"] > 0]
    if with_dead.empty:
        return f"No run in any of the {len(death)} groups had a dead hidden unit at init."
    top = with_dead.sort_values(["dead_at_init", "dead_at_init_n"], ascending=False).iloc[0]
    sentence = (
        f"Dead hidden units at init occurred in {len(with_dead)} of {len(death)} groups; "
        f"the highest rate was {_rate(top['dead_at_init'], top['dead_at_init_lo'], top['dead_at_init_hi'])} "
        f"in {top['group']} (n={top['dead_at_init_n']})"
    )
    relu = death[death["group"].isin(_relu_groups(results))]
    if len(relu) > 1:
        low = relu.sort_values(["dead_at_init", "dead_at_init_n"], ascending=[True, False]).iloc[0]
        high = relu.sort_values(["dead_at_init", "dead_at_init_n"], ascending=False).iloc[0]
        sentence += (
            f"; among ReLU groups it ranged from "
            f"{_rate(low['dead_at_init'], low['dead_at_init_lo'], low['dead_at_init_hi'])} "
            f"({low['group']}) to "
            f"{_rate(high['dead_at_init'], high['dead_at_init_lo'], high['dead_at_init_hi'])} "
            f"({high['group']})"
        )
    collapsed = death[death["collapse_k"] > 0]
    if not collapsed.empty:
        worst = collapsed.sort_values(["collapse", "collapse_n"], ascending=False).iloc[0]
        sentence += (
            f"; a whole hidden layer was dead at init in {plural(collapsed['collapse_k'].sum(), 'run')} "
            f"over {plural(len(collapsed), 'group')}, most often in {worst['group']} "
            f"({_rate(worst['collapse'], worst['collapse_lo'], worst['collapse_hi'])})"
        )
    return sentence + "."


def cost_sentence(results: Results) -> str | None:
    cost = results.cost[results.cost["test_cost"].notna()]
    if cost.empty:
        return None
    biggest = cost.sort_values("test_cost", ascending=False).iloc[0]
    largest = (
        f"the largest difference in median final test loss (dead minus alive) was "
        f"{_cost(biggest['test_cost'], biggest['test_cost_lo'], biggest['test_cost_hi'])} "
        f"in {biggest['group']}"
    )
    opening = f"In the {plural(len(cost), 'group')} with both dead-at-init and alive finished runs"
    with_interval = cost[cost["test_cost_lo"].notna()]
    if with_interval.empty:
        return f"{opening}, {largest}; no group has 2 runs on each side, so none has an interval."
    higher = int((with_interval["test_cost_lo"] > 0).sum())
    lower = int((with_interval["test_cost_hi"] < 0).sum())
    return (
        f"{opening}, dead-at-init runs ended with a higher median final test loss in {higher} "
        f"and a lower one in {lower} of the {len(with_interval)} with a bootstrap interval "
        f"(95%, excluding 0); {largest}."
    )


def correlation_sentence(results: Results) -> str | None:
    table = results.correlation
    per_group = table[table["group"] != "all groups pooled"]
    defined = per_group[per_group["rho_test"].notna()]
    pooled = table[table["group"] == "all groups pooled"]
    parts = []
    if not pooled.empty and pd.notna(pooled.iloc[0]["rho_test"]):
        row = pooled.iloc[0]
        parts.append(
            "Pooled over groups, Spearman's rho between dead fraction at init and final test "
            f"loss was {_rate(row['rho_test'], row['rho_test_lo'], row['rho_test_hi'])} "
            f"(n={row['rho_test_n']}; pooling mixes groups, see the per-group rows)"
        )
    if not defined.empty:
        positive = int((defined["rho_test_lo"] > 0).sum())
        parts.append(
            f"within groups it was defined in {len(defined)} and its interval lay above 0 "
            f"in {positive}"
        )
    return ("; ".join(parts) + ".") if parts else None


def training_sentence(results: Results) -> str | None:
    t = results.transitions
    if t.empty or t["transition_n"].sum() == 0:
        return None
    return (
        f"Over training ({plural(t['transition_n'].sum(), 'finished run')}), "
        f"{plural(t['dead_alive'].sum(), 'run')} went from some dead units to none, "
        f"{int(t['alive_dead'].sum())} from none to some, and the number of dead units changed "
        f"by {int(t['net_change'].sum()):+d} in total ({int(t['dead_units_init_total'].sum())} "
        f"at init, {int(t['dead_units_final_total'].sum())} at the end)."
    )


def theory_sentence(results: Results) -> str | None:
    theory = results.theory
    if theory.empty:
        return None
    checks = outside = 0
    flagged = []
    for name in ("collapse", "dead_at_init", "output_dead"):
        column = f"{name}_outside"
        if column not in theory:
            continue
        usable = theory[theory[f"{name}_theory"].notna() & theory[f"{name}_lo"].notna()]
        checks += len(usable)
        hits = usable[usable[column] == True]  # noqa: E712
        outside += len(hits)
        flagged += [f"{name.replace('_', ' ')} in {g}" for g in hits["group"]]
    if checks == 0:
        return None
    sentence = (
        f"The closed form for bias-free ReLU on one-sign inputs fell inside the measured "
        f"95% interval in {checks - outside} of {checks} comparisons "
        f"(about {0.05 * checks:.1f} outside would be expected by chance)"
    )
    if flagged:
        shown = "; ".join(flagged[:5]) + (" ..." if len(flagged) > 5 else "")
        sentence += f"; outside: {shown}"
    return sentence + "."


def saturation_sentence(results: Results) -> str | None:
    s = results.saturation
    if s.empty:
        return None
    k, n = int(s["saturated_init_k"].sum()), int(s["saturated_init_n"].sum())
    if n == 0:
        return None
    return (
        f"Saturation (tanh/sigmoid, counted apart from death): {k} of {n} runs had a "
        "saturated hidden unit at init."
    )


def findings(results: Results) -> list[str]:
    """The sentences of the findings paragraph, in reading order."""
    sentences = [
        status_sentence(results),
        killer_sentence(results),
        activation_sentence(results),
        cost_sentence(results),
        correlation_sentence(results),
        training_sentence(results),
        theory_sentence(results),
        saturation_sentence(results),
    ]
    return [s for s in sentences if s]

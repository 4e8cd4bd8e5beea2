"""The report's opening: a scope line and at most five findings, filled from the computed
tables, never typed by hand. A finding is left out when the numbers it needs are absent,
so every claim traces to a table row."""

from __future__ import annotations

import pandas as pd

from analysis.compute import Results
from analysis.render import interval, rate
from analysis.tables import ACTIVATION, POOLED


def plural(n, noun: str) -> str:
    n = int(n)
    return f"{n} {noun}{'' if n == 1 else 's'}"


def scope(results: Results) -> str:
    """'24 runs in 5 groups: 21 finished, 1 diverged, ...'."""
    o = results.outcomes
    parts = [f"{o['finished']} finished"]
    parts += [f"{o[k]} {k}" for k in ("diverged", "failed", "killed") if o[k]]
    if o["running"]:
        parts.append(f"{o['running']} still running or never ended")
    runs, groups = plural(sum(o.values()), "run"), plural(len(results.death), "group")
    return f"{runs} in {groups}: {', '.join(parts)}."


def _top(table: pd.DataFrame, column: str, lowest: bool = False) -> pd.Series:
    """The row with the highest (lowest) rate; the larger sample breaks ties."""
    return table.sort_values([column, f"{column}_n"], ascending=[lowest, False]).iloc[0]


def dead_finding(results: Results) -> str | None:
    death = results.death[results.death["dead_at_init_n"] > 0]
    if death.empty:
        return None
    with_dead = death[death["dead_at_init_k"] > 0]
    if with_dead.empty:
        return f"**Dead at init:** no run in any of the {len(death)} groups had a dead hidden unit."
    top = _top(with_dead, "dead_at_init")
    text = (
        f"**Dead at init:** runs with a dead hidden unit in {len(with_dead)} of {len(death)} "
        f"groups; highest rate {rate(top, 'dead_at_init')} in {top['group']}"
    )
    relu = death[death[ACTIVATION] == "relu"] if ACTIVATION in death else death.iloc[:0]
    if len(relu) > 1:
        low, high = _top(relu, "dead_at_init", lowest=True), _top(relu, "dead_at_init")
        text += (
            f"; ReLU groups range from {rate(low, 'dead_at_init')} ({low['group']}) "
            f"to {rate(high, 'dead_at_init')} ({high['group']})"
        )
    return text + "."


def collapse_finding(results: Results) -> str | None:
    collapsed = results.death[results.death["collapse_k"] > 0]
    if collapsed.empty:
        return None
    worst = _top(collapsed, "collapse")
    return (
        f"**Collapse:** a whole hidden layer was dead at init (constant output) in "
        f"{plural(collapsed['collapse_k'].sum(), 'run')} over {plural(len(collapsed), 'group')}; "
        f"most often in {worst['group']}, {rate(worst, 'collapse')}."
    )


def cost_finding(results: Results) -> str | None:
    cost = results.cost[results.cost["test_cost"].notna()]
    if cost.empty:
        return None
    top = cost.sort_values("test_cost", ascending=False).iloc[0]
    largest = (
        f"largest in {top['group']}: "
        f"{interval(top['test_cost'], top['test_cost_lo'], top['test_cost_hi'], '+.4g')}"
    )
    intervals = cost[cost["test_cost_lo"].notna()]
    if intervals.empty:
        return (
            f"**Loss cost of a dead unit** (median final test loss, dead minus alive): "
            f"{largest}; no group has 2 runs on each side, so none has an interval."
        )
    higher = int((intervals["test_cost_lo"] > 0).sum())
    lower = int((intervals["test_cost_hi"] < 0).sum())
    return (
        f"**Loss cost of a dead unit** (median final test loss, dead-at-init minus alive runs): "
        f"{largest}; the 95% bootstrap interval lies above 0 in {higher} and below 0 in {lower} "
        f"of {plural(len(intervals), 'group')} with runs on both sides."
    )


def correlation_finding(results: Results) -> str | None:
    table = results.correlation
    pooled = table[table["group"] == POOLED]
    defined = table[(table["group"] != POOLED) & table["rho_test"].notna()]
    parts = []
    if not pooled.empty and pd.notna(pooled.iloc[0]["rho_test"]):
        row = pooled.iloc[0]
        estimate = interval(row["rho_test"], row["rho_test_lo"], row["rho_test_hi"])
        parts.append(f"{estimate} pooled over groups (n={row['rho_test_n']})")
    if not defined.empty:
        above = int((defined["rho_test_lo"] > 0).sum())
        parts.append(f"above 0 within {above} of {plural(len(defined), 'group')} where defined")
    if not parts:
        return None
    return (
        "**Rank correlation** of dead fraction at init with final test loss (Spearman): "
        + "; ".join(parts)
        + "."
    )


def theory_finding(results: Results) -> str | None:
    theory = results.theory
    checks, flagged = 0, []
    for name in ("collapse", "dead_at_init", "output_dead"):
        if f"{name}_outside" not in theory:
            continue
        usable = theory[theory[f"{name}_theory"].notna() & theory[f"{name}_lo"].notna()]
        checks += len(usable)
        outside = usable[usable[f"{name}_outside"].astype(bool)]
        flagged += [f"{name.replace('_', ' ')} in {g}" for g in outside["group"]]
    if checks == 0:
        return None
    text = (
        f"**Theory vs measurement:** the closed form for bias-free ReLU on one-sign inputs lies "
        f"inside the measured 95% interval in {checks - len(flagged)} of {checks} comparisons "
        f"(about {0.05 * checks:.1f} outside expected by chance)"
    )
    if flagged:
        text += "; outside: " + "; ".join(flagged[:5]) + (" ..." if len(flagged) > 5 else "")
    return text + "."


def findings(results: Results) -> list[str]:
    """At most five findings, in reading order."""
    found = (
        dead_finding(results),
        collapse_finding(results),
        cost_finding(results),
        correlation_finding(results),
        theory_finding(results),
    )
    return [f for f in found if f]

"""What the report says, section by section: numeric tables formatted into Markdown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import findings
from analysis.compute import Results
from analysis.render import figure, table
from analysis.tables import SHORT_NAMES
from pipeline.store import redact_uri

MAX_LISTED_RUNS = 100
NO_DATA = "no data"


@dataclass
class CurveInfo:
    """How the loss-curve figure was sampled."""

    groups_plotted: int = 0
    groups_total: int = 0
    runs_fetched: int = 0
    per_cell: int = 50
    seconds: float = 0.0
    runs_with_history: int = 0


Figures = dict[str, Path]  # figure name (report.FIGURE_FILES) -> file written


def bullets(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def section(title: str, *blocks: str) -> str:
    return "\n\n".join([f"## {title}", *blocks])


# ---------------------------------------------------------------- cell formats


def num(value, digits: int = 3) -> str:
    """A number with `digits` decimals; a dash for missing."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "—"
    return f"{float(value):.{digits}f}"


def loss(value) -> str:
    """Losses span orders of magnitude: 4 significant digits."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "—"
    return f"{float(value):.4g}"


def interval(value, lo, hi, digits: int = 3, note: str = "") -> str:
    """'0.250 [0.089, 0.532]', or the value with the reason there is no interval."""
    if pd.isna(value):
        return note or NO_DATA
    if pd.isna(lo) or pd.isna(hi):
        return f"{num(value, digits)} ({note or 'no interval'})"
    return f"{num(value, digits)} [{num(lo, digits)}, {num(hi, digits)}]"


def rate(row, prefix: str) -> str:
    """'0.250 [0.089, 0.532] (3/12)' from the k, n, value, lo, hi columns of a row."""
    n = int(row[f"{prefix}_n"])
    if n == 0:
        return NO_DATA
    k = int(row[f"{prefix}_k"])
    return f"{interval(row[prefix], row[f'{prefix}_lo'], row[f'{prefix}_hi'])} ({k}/{n})"


def key_columns(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The group key columns with short headers (a single 'group' column if there are none)."""
    if not keys:
        return pd.DataFrame({"group": frame["group"]})
    return pd.DataFrame({SHORT_NAMES.get(k, k): frame[k] for k in keys})


def spread_cell(row, name: str) -> str:
    if row[f"{name}_n"] == 0:
        return NO_DATA
    return (
        f"{loss(row[f'{name}_median'])} [{loss(row[f'{name}_q25'])}, "
        f"{loss(row[f'{name}_q75'])}] / {loss(row[f'{name}_mean'])}"
    )


def _display(frame: pd.DataFrame, keys: list[str], columns: dict) -> pd.DataFrame:
    """Key columns plus one formatted column per (header -> function of row)."""
    if frame.empty:
        return pd.DataFrame()
    shown = key_columns(frame, keys).reset_index(drop=True)
    rows = frame.reset_index(drop=True)
    for header, cell in columns.items():
        shown[header] = [cell(row) for _, row in rows.iterrows()]
    return shown


# ---------------------------------------------------------------- sections


def opening(results: Results, figures: Figures) -> str:
    """The answer first: scope, the headline figure, the findings."""
    loaded = results.loaded
    title = f"# Dead units report: experiment {loaded.experiment}"
    if loaded.sweep_id:
        title += f", sweep {loaded.sweep_id}"
    blocks = [title, findings.scope(results)]
    if "headline" in figures:
        blocks.append(
            figure(
                figures["headline"],
                "Runs with a dead hidden unit at init (95% Wilson) and final test loss of "
                "dead (filled) vs alive (hollow) runs (median, IQR), per activation and "
                "initializer",
            )
        )
    found = findings.findings(results)
    return "\n\n".join(blocks + ([bullets(found)] if found else []))


def data_section(results: Results) -> str:
    loaded = results.loaded
    outcomes = results.outcomes
    scope = f"sweep `{loaded.sweep_id}` of " if loaded.sweep_id else ""
    items = [
        f"Runs: every run tagged `deadunits.role=run` in {scope}experiment "
        f"`{loaded.experiment}` (id {loaded.experiment_id}), tracking URI "
        f"`{redact_uri(loaded.tracking_uri)}`; "
        f"{findings.plural(len(loaded.frame), 'run')} read in {loaded.load_seconds:.1f} s.",
        "Outcomes: " + ", ".join(f"{k} {v}" for k, v in outcomes.items()) + ".",
        "Groups: by "
        + (", ".join(f"`{k}`" for k in results.keys) or "nothing (one group)")
        + f"; {findings.plural(len(results.death), 'group')}.",
    ]
    if loaded.sweep_id:
        if loaded.sweep_parent is None:
            items.append(f"Sweep `{loaded.sweep_id}`: no parent run found.")
        else:
            params = loaded.sweep_parent.data.params
            shown = ", ".join(f"{k} `{v}`" for k, v in sorted(params.items()))
            items.append(
                f"Sweep `{loaded.sweep_id}` parent run `{loaded.sweep_parent.info.run_id}`: "
                f"{shown or 'no params'}."
            )
    if results.ignored_varying:
        items.append(
            "Varying but not grouped on: "
            + ", ".join(f"`{k}` ({why})" for k, why in results.ignored_varying.items())
            + "."
        )
    common = {k: v for k, v in results.constant.items() if k not in results.keys}
    if common:
        items.append(
            "Common to all runs: " + ", ".join(f"`{k}`={v}" for k, v in sorted(common.items()))
        )
    commits = results.loaded.frame["git_commit"].dropna().unique()
    if len(commits):
        items.append("Code versions: " + ", ".join(f"`{c[:10]}`" for c in sorted(commits)) + ".")
    unfinished = results.unfinished
    listed = unfinished.head(MAX_LISTED_RUNS).copy()
    listed["diverged_epoch"] = ["" if pd.isna(v) else str(int(v)) for v in listed["diverged_epoch"]]
    listed["error"] = ["" if pd.isna(v) else str(v) for v in listed["error"]]
    caption = f"Runs that did not finish ({len(unfinished)})"
    if len(unfinished) > MAX_LISTED_RUNS:
        caption += f"; first {MAX_LISTED_RUNS} shown, all in unfinished_runs.csv"
    return section(
        "Data",
        bullets(items),
        "Statistics at init (dead, collapsed, output dead, saturated) use finished and "
        "diverged runs: a diverged run was probed at init before training failed. "
        "Statistics of training (final loss, transitions, curves) use finished runs only. "
        "Failed, killed and unfinished runs are counted and listed, not used.",
        table(listed, caption, "every run finished"),
        table(
            results.missing,
            "Runs missing a metric (their other metrics are still used)",
            "no expected metric is missing",
        ),
    )


def death_section(results: Results, figures: Figures) -> str:
    shown = _display(
        results.death,
        results.keys,
        {
            "runs": lambda r: str(r["runs"]),
            "finished / diverged / failed+killed / running": lambda r: (
                f"{r['finished']} / {r['diverged']} / {r['failed'] + r['killed']} / {r['running']}"
            ),
            "dead unit at init": lambda r: rate(r, "dead_at_init"),
            "mean dead fraction at init": lambda r: interval(
                r["dead_fraction"],
                r["dead_fraction_lo"],
                r["dead_fraction_hi"],
                3,
                "n=1: no interval" if r["dead_fraction_n"] == 1 else "",
            ),
            "collapsed at init": lambda r: rate(r, "collapse"),
            "output dead at init": lambda r: rate(r, "output_dead"),
            "note": lambda r: r["note"],
        },
    )
    blocks = [
        table(
            shown,
            "Per group: rate [95% Wilson interval] (k/n) of runs with a dead hidden unit, a "
            "collapsed hidden layer, a dead output unit; mean dead fraction [95% Student t "
            "interval, clipped to [0, 1]]",
        )
    ]
    if "dead_rates" in figures:
        blocks.append(
            figure(figures["dead_rates"], "Init rates per group with 95% Wilson intervals")
        )
    return section("Dead units at initialization", *blocks)


def saturation_section(results: Results) -> str:
    shown = _display(
        results.saturation,
        results.keys,
        {
            "saturated unit at init": lambda r: rate(r, "saturated_init"),
            "mean saturated fraction at init": lambda r: interval(
                r["saturated_fraction_init"],
                r["saturated_fraction_init_lo"],
                r["saturated_fraction_init_hi"],
            ),
            "saturated unit at end": lambda r: rate(r, "saturated_final"),
            "mean saturated fraction at end": lambda r: interval(
                r["saturated_fraction_final"],
                r["saturated_fraction_final_lo"],
                r["saturated_fraction_final_hi"],
            ),
        },
    )
    return section(
        "Saturation (tanh, sigmoid), apart from death",
        "A saturated unit has an activation derivative below `probe.saturation_tol` on "
        "every sample; it is not dead (its gradient is small, not zero) and is not counted "
        "in the dead columns.",
        table(
            shown,
            "Per tanh/sigmoid group: rate of runs with a saturated hidden unit [95% Wilson] "
            "(k/n) and mean saturated fraction [95% t]",
            "no tanh or sigmoid runs",
        ),
    )


def loss_section(results: Results, figures: Figures) -> str:
    spread_columns = {
        "runs": lambda r: str(r["train_n"]),
        "final train loss: median [IQR] / mean": lambda r: spread_cell(r, "train"),
        "final test loss: median [IQR] / mean": lambda r: spread_cell(r, "test"),
    }
    by_dead = _display(
        results.loss_by_dead, results.keys, {"at init": lambda r: r["at_init"], **spread_columns}
    )
    by_count = _display(
        results.loss_by_count,
        results.keys,
        {"dead units at init": lambda r: str(r["dead_units"]), **spread_columns},
    )
    cost = _display(
        results.cost,
        results.keys,
        {
            "dead / alive runs": lambda r: f"{r['dead_n']} / {r['alive_n']}",
            "train loss cost": lambda r: interval(
                r["train_cost"], r["train_cost_lo"], r["train_cost_hi"], 4, r["note"]
            ),
            "test loss cost": lambda r: interval(
                r["test_cost"], r["test_cost_lo"], r["test_cost_hi"], 4, r["note"]
            ),
        },
    )
    correlation = results.correlation
    rho = _display(
        correlation,
        results.keys,
        {
            "runs": lambda r: str(r["rho_test_n"]),
            "rho (dead fraction, final train loss)": lambda r: interval(
                r["rho_train"], r["rho_train_lo"], r["rho_train_hi"], 3, r["note"]
            ),
            "rho (dead fraction, final test loss)": lambda r: interval(
                r["rho_test"], r["rho_test_lo"], r["rho_test_hi"], 3, r["note"]
            ),
        },
    )
    if not rho.empty:
        # The pooled row has blank keys: name it in the first key column.
        pooled = np.asarray(correlation["group"] == findings.POOLED)
        rho.loc[pooled, rho.columns[0]] = findings.POOLED
    blocks = [
        table(by_dead, "Finished runs with and without a dead hidden unit at init", NO_DATA),
        table(by_count, "Finished runs by number of dead hidden units at init", NO_DATA),
        table(
            cost,
            "Loss cost of a dead unit: median final loss of dead-at-init runs minus alive runs "
            "[95% percentile bootstrap, 2000 resamples]",
            NO_DATA,
        ),
        table(
            rho,
            "Spearman rank correlation of dead fraction at init with final loss [95% Fisher z "
            "interval, variance 1.06/(n-3)]",
            NO_DATA,
        ),
    ]
    if "loss_vs_dead" in figures:
        blocks.append(
            figure(
                figures["loss_vs_dead"], "Final loss against dead fraction at init, finished runs"
            )
        )
    return section("Dead units and final loss", *blocks)


def curves_section(figures: Figures, info: CurveInfo) -> str:
    title = "Loss curves, dead and alive runs apart"
    if info.runs_fetched == 0:
        return section(title, "No finished runs with a dead-at-init verdict to plot.")
    note = (
        f"Per-epoch `train_loss` and `test_loss` history was read for a seeded sample of at "
        f"most {info.per_cell} finished runs per group and dead/alive status: "
        f"{findings.plural(info.runs_fetched, 'run')} ({info.runs_with_history} with history) "
        f"in {info.seconds:.1f} s."
    )
    if info.groups_plotted < info.groups_total:
        note += (
            f" {info.groups_plotted} of {info.groups_total} groups are plotted: those with both "
            "dead and alive runs first, then the largest."
        )
    if "loss_curves" not in figures:
        return section(title, note, "None of the sampled runs logged a loss history.")
    caption = "Median loss per epoch (IQR shaded); n is runs sampled"
    return section(title, note, figure(figures["loss_curves"], caption))


def transitions_section(results: Results) -> str:
    shown = _display(
        results.transitions,
        results.keys,
        {
            "finished runs": lambda r: str(r["transition_n"]),
            "dead->dead": lambda r: str(r["dead_dead"]),
            "dead->alive (revived)": lambda r: str(r["dead_alive"]),
            "alive->dead (died in training)": lambda r: str(r["alive_dead"]),
            "alive->alive": lambda r: str(r["alive_alive"]),
            "dead units at init / end": lambda r: (
                f"{r['dead_units_init_total']} / {r['dead_units_final_total']}"
            ),
            "net change (mean per run)": lambda r: (
                f"{r['net_change']:+d} ({num(r['mean_change'], 2)})"
            ),
            "runs gaining / losing dead units": lambda r: (
                f"{r['runs_gaining']} / {r['runs_losing']}"
            ),
        },
    )
    return section(
        "What training does to dead units",
        "A run counts as dead at init (or at the end) when it has at least one dead hidden "
        "unit then. dead->alive: training revived every dead unit; alive->dead: units died "
        "during training. The net change counts units (dead at end minus dead at init), so "
        "a run that revives one unit and loses another shows 0.",
        table(shown, "Finished runs per group", NO_DATA),
    )


def theory_section(results: Results, figures: Figures) -> str:
    blocks = [
        "For bias-free ReLU nets on inputs of one sign with a zero-mean symmetric "
        "initializer (not `rai`), each hidden unit of a layer that is not entirely dead "
        "is dead at init with probability 1/2, independently. Hence, for hidden widths "
        "N_1..N_H: P(collapse) = 1 - prod(1 - 2^-N_l), which is 1 - (1 - 2^-N)^H for equal "
        "widths; P(some unit dead) = 1 - 2^-(N_1+..+N_H); with a ReLU output unit, "
        "P(output dead) = (1 + P(collapse)) / 2, which is 5/8 for one hidden layer of 2. "
        "Eligible groups: activation relu, `model.bias_init` 0, `data.low` >= 0."
    ]
    theory = results.theory

    def check(row, name: str) -> str:
        if pd.isna(row.get(f"{name}_theory")):
            return "n/a (output not ReLU)"
        flag = " **theory outside interval**" if row[f"{name}_outside"] else ""
        return f"{num(row[f'{name}_theory'])} vs {rate(row, name)}{flag}"

    if theory.empty:
        blocks.append("No group meets these conditions.")
    else:
        shown = _display(
            theory,
            results.keys,
            {
                "hidden sizes": lambda r: r["hidden_sizes"],
                "collapse: theory vs measured": lambda r: check(r, "collapse"),
                "some unit dead: theory vs measured": lambda r: check(r, "dead_at_init"),
                "output dead: theory vs measured": lambda r: check(r, "output_dead"),
            },
        )
        counts = _display(
            results.dead_counts,
            results.keys,
            {
                "hidden sizes": lambda r: r["hidden_sizes"],
                "dead units k": lambda r: str(r["dead_units"]),
                "P(k dead) theory": lambda r: num(r["theory"]),
                "measured share": lambda r: rate(r, "share"),
                "flag": lambda r: "theory outside interval" if r["outside"] else "",
            },
        )
        blocks += [
            table(shown, "Closed form vs measured rate [95% Wilson] (k/n)"),
            table(
                counts,
                "Number of dead hidden units at init, nets of at most 6 hidden units "
                "(one layer of 2: 1/4, 1/2, 1/4)",
                "no eligible net with at most 6 hidden units",
            ),
            "Caution: under one seed, Keras's symmetric initializers of one family draw "
            "weights that are positive multiples of each other, so groups that differ only by "
            "such an initializer share their dead patterns seed by seed; they are not "
            "independent confirmations. A 95% interval also misses the truth 1 time in 20.",
        ]
    if "collapse_theory" in figures:
        blocks.append(
            figure(
                figures["collapse_theory"],
                "Born dead (a hidden layer collapsed at init) against depth per width, "
                "measured beside the closed form, `rai` as its own arm (hollow squares); "
                "right: every group the closed form covers",
            )
        )
    return section("Theory beside measurement", *blocks)


def methods_section() -> str:
    return section(
        "Methods",
        bullets(
            [
                "Rates: Wilson score 95% interval (scipy.stats.binomtest). With n=1 it is "
                "still defined (and wide).",
                "Mean dead fraction: Student t 95% interval, clipped to [0, 1]; none for n=1; "
                "zero width when every run has the same fraction (the rate's Wilson interval "
                "still shows the uncertainty).",
                "Loss cost: median difference, 95% percentile bootstrap (scipy.stats.bootstrap, "
                "2000 resamples, seed 0), none when a side has fewer than 2 runs.",
                "Spearman rho (scipy.stats.spearmanr, average ranks for ties); Fisher z "
                "interval with variance 1.06/(n-3); undefined when the dead fraction or the "
                "loss is constant.",
                "Dead unit (as the pipeline logs it): the activation's derivative is zero at the "
                "unit's pre-activation for every training sample; a collapsed layer has every "
                "unit dead, which makes the network's output constant.",
            ]
        ),
    )


def build_markdown(results: Results, figures: Figures, curves: CurveInfo) -> str:
    """The whole report: the answer first, then the detailed tables."""
    parts = [
        opening(results, figures),
        data_section(results),
        death_section(results, figures),
        saturation_section(results),
        loss_section(results, figures),
        curves_section(figures, curves),
        transitions_section(results),
        theory_section(results, figures),
        methods_section(),
    ]
    return "\n\n".join(parts) + "\n"

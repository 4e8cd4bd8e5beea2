"""What the report says, section by section: numeric tables formatted into Markdown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis import findings
from analysis.compute import Results
from analysis.render import NO_DATA, figure, interval, num, rate, table
from analysis.tables import POOLED, SHORT_NAMES
from pipeline.store import redact_uri

MAX_LISTED_RUNS = 100
Figures = dict[str, Path]  # figure name (report.FIGURE_FILES) -> file written


@dataclass
class CurveInfo:
    """How the loss-curve figure was sampled."""

    groups_plotted: int = 0
    groups_total: int = 0
    runs_fetched: int = 0
    per_cell: int = 50
    seconds: float = 0.0
    runs_with_history: int = 0


def bullets(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def section(title: str, *blocks: str) -> str:
    return "\n\n".join([f"## {title}", *blocks])


# Cell makers: each returns a function of one table row.
def text(column: str):
    return lambda r: str(r[column])


def rate_of(prefix: str):
    return lambda r: rate(r, prefix)


def interval_of(prefix: str, fmt: str = ".3f", noted: bool = False):
    return lambda r: interval(
        r[prefix], r[f"{prefix}_lo"], r[f"{prefix}_hi"], fmt, r["note"] if noted else ""
    )


def spread_of(name: str):
    """'median [q25, q75] / mean' of a loss, 4 significant digits (losses span decades)."""

    def cell(r) -> str:
        if r[f"{name}_n"] == 0:
            return NO_DATA
        q25, median, q75, mean = (
            num(r[f"{name}_{s}"], ".4g") for s in ("q25", "median", "q75", "mean")
        )
        return f"{median} [{q25}, {q75}] / {mean}"

    return cell


def shown(frame: pd.DataFrame, keys: list[str], columns: dict) -> pd.DataFrame:
    """Group key columns (short headers) plus one formatted column per header -> cell maker."""
    if frame.empty:
        return pd.DataFrame()
    rows = frame.reset_index(drop=True)
    if not keys:
        out = pd.DataFrame({"group": rows["group"]})
    else:
        out = pd.DataFrame({SHORT_NAMES.get(k, k): rows[k] for k in keys})
    for header, cell in columns.items():
        out[header] = [cell(row) for _, row in rows.iterrows()]
    return out


def opening(results: Results, figures: Figures) -> str:
    """The answer first: scope, the headline figure, the findings."""
    loaded = results.loaded
    title = f"# Dead units report: experiment {loaded.experiment}"
    if loaded.sweep_id:
        title += f", sweep {loaded.sweep_id}"
    blocks = [title, findings.scope(results)]
    if "headline" in figures:
        caption = (
            "Runs with a dead hidden unit at init (95% Wilson) and final test loss of dead "
            "(filled) vs alive (hollow) runs (median, IQR), per activation and initializer"
        )
        blocks.append(figure(figures["headline"], caption))
    found = findings.findings(results)
    return "\n\n".join(blocks + ([bullets(found)] if found else []))


def data_section(results: Results) -> str:
    loaded, keys = results.loaded, results.keys
    scope = f"sweep `{loaded.sweep_id}` of " if loaded.sweep_id else ""
    items = [
        f"Runs: every run tagged `deadunits.role=run` in {scope}experiment "
        f"`{loaded.experiment}` (id {loaded.experiment_id}), tracking URI "
        f"`{redact_uri(loaded.tracking_uri)}`; "
        f"{findings.plural(len(loaded.frame), 'run')} read in {loaded.load_seconds:.1f} s.",
        "Outcomes: " + ", ".join(f"{k} {v}" for k, v in results.outcomes.items()) + ".",
        f"Groups: by {', '.join(f'`{k}`' for k in keys) or 'nothing (one group)'}; "
        f"{findings.plural(len(results.death), 'group')}.",
    ]
    parent = loaded.sweep_parent
    if loaded.sweep_id and parent is None:
        items.append(f"Sweep `{loaded.sweep_id}`: no parent run found.")
    elif loaded.sweep_id:
        params = ", ".join(f"{k} `{v}`" for k, v in sorted(parent.data.params.items()))
        items.append(
            f"Sweep `{loaded.sweep_id}` parent run `{parent.info.run_id}`: {params or 'no params'}."
        )
    if results.ignored_varying:
        ignored = ", ".join(f"`{k}` ({why})" for k, why in results.ignored_varying.items())
        items.append(f"Varying but not grouped on: {ignored}.")
    common = sorted((k, v) for k, v in results.constant.items() if k not in keys)
    if common:
        items.append("Common to all runs: " + ", ".join(f"`{k}`={v}" for k, v in common))
    commits = sorted(loaded.frame["git_commit"].dropna().unique())
    if commits:
        items.append("Code versions: " + ", ".join(f"`{c[:10]}`" for c in commits) + ".")
    unfinished = results.unfinished
    listed = unfinished.head(MAX_LISTED_RUNS).astype(object).fillna("")
    listed["diverged_epoch"] = listed["diverged_epoch"].astype(str)
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
    def fraction(r) -> str:
        note = "n=1: no interval" if r["dead_fraction_n"] == 1 else ""
        return interval(r["dead_fraction"], r["dead_fraction_lo"], r["dead_fraction_hi"], note=note)

    columns = {
        "runs": text("runs"),
        "finished / diverged / failed+killed / running": lambda r: (
            f"{r['finished']} / {r['diverged']} / {r['failed'] + r['killed']} / {r['running']}"
        ),
        "dead unit at init": rate_of("dead_at_init"),
        "mean dead fraction at init": fraction,
        "collapsed at init": rate_of("collapse"),
        "output dead at init": rate_of("output_dead"),
        "note": text("note"),
    }
    blocks = [
        table(
            shown(results.death, results.keys, columns),
            "Per group: rate [95% Wilson interval] (k/n) of runs with a dead hidden unit, a "
            "collapsed hidden layer, a dead output unit; mean dead fraction [95% Student t "
            "interval, clipped to [0, 1]]",
        )
    ]
    if "dead_rates" in figures:
        caption = "Init rates per group with 95% Wilson intervals"
        blocks.append(figure(figures["dead_rates"], caption))
    return section("Dead units at initialization", *blocks)


def saturation_section(results: Results) -> str:
    columns = {
        "saturated unit at init": rate_of("saturated_init"),
        "mean saturated fraction at init": interval_of("saturated_fraction_init"),
        "saturated unit at end": rate_of("saturated_final"),
        "mean saturated fraction at end": interval_of("saturated_fraction_final"),
    }
    return section(
        "Saturation (tanh, sigmoid), apart from death",
        "A saturated unit has an activation derivative below `probe.saturation_tol` on "
        "every sample; it is not dead (its gradient is small, not zero) and is not counted "
        "in the dead columns.",
        table(
            shown(results.saturation, results.keys, columns),
            "Per tanh/sigmoid group: rate of runs with a saturated hidden unit [95% Wilson] "
            "(k/n) and mean saturated fraction [95% t]",
            "no tanh or sigmoid runs",
        ),
    )


def loss_section(results: Results, figures: Figures) -> str:
    keys = results.keys
    spreads = {
        "runs": text("train_n"),
        "final train loss: median [IQR] / mean": spread_of("train"),
        "final test loss: median [IQR] / mean": spread_of("test"),
    }
    cost = {
        "dead / alive runs": lambda r: f"{r['dead_n']} / {r['alive_n']}",
        "train loss cost": interval_of("train_cost", ".4f", noted=True),
        "test loss cost": interval_of("test_cost", ".4f", noted=True),
    }
    rho = {
        "runs": text("rho_test_n"),
        "rho (dead fraction, final train loss)": interval_of("rho_train", noted=True),
        "rho (dead fraction, final test loss)": interval_of("rho_test", noted=True),
    }
    correlation = shown(results.correlation, keys, rho)
    if not correlation.empty:
        # The pooled row has blank keys: name it in the first key column.
        pooled = (results.correlation["group"] == POOLED).to_numpy()
        correlation.loc[pooled, correlation.columns[0]] = POOLED
    blocks = [
        table(
            shown(results.loss_by_dead, keys, {"at init": text("at_init"), **spreads}),
            "Finished runs with and without a dead hidden unit at init",
            NO_DATA,
        ),
        table(
            shown(
                results.loss_by_count, keys, {"dead units at init": text("dead_units"), **spreads}
            ),
            "Finished runs by number of dead hidden units at init",
            NO_DATA,
        ),
        table(
            shown(results.cost, keys, cost),
            "Loss cost of a dead unit: median final loss of dead-at-init runs minus alive runs "
            "[95% percentile bootstrap, 2000 resamples]",
            NO_DATA,
        ),
        table(
            correlation,
            "Spearman rank correlation of dead fraction at init with final loss [95% Fisher z "
            "interval, variance 1.06/(n-3)]",
            NO_DATA,
        ),
    ]
    if "loss_vs_dead" in figures:
        caption = "Final loss against dead fraction at init, finished runs"
        blocks.append(figure(figures["loss_vs_dead"], caption))
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
    columns = {
        "finished runs": text("transition_n"),
        "dead->dead": text("dead_dead"),
        "dead->alive (revived)": text("dead_alive"),
        "alive->dead (died in training)": text("alive_dead"),
        "alive->alive": text("alive_alive"),
        "dead units at init / end": lambda r: (
            f"{r['dead_units_init_total']} / {r['dead_units_final_total']}"
        ),
        "net change (mean per run)": lambda r: (
            f"{r['net_change']:+d} ({num(r['mean_change'], '.2f')})"
        ),
        "runs gaining / losing dead units": lambda r: f"{r['runs_gaining']} / {r['runs_losing']}",
    }
    return section(
        "What training does to dead units",
        "A run counts as dead at init (or at the end) when it has at least one dead hidden "
        "unit then. dead->alive: training revived every dead unit; alive->dead: units died "
        "during training. The net change counts units (dead at end minus dead at init), so "
        "a run that revives one unit and loses another shows 0.",
        table(
            shown(results.transitions, results.keys, columns), "Finished runs per group", NO_DATA
        ),
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

    def check(name: str):
        def cell(r) -> str:
            if pd.isna(r.get(f"{name}_theory")):
                return "n/a (output not ReLU)"
            flag = " **theory outside interval**" if r[f"{name}_outside"] else ""
            return f"{num(r[f'{name}_theory'])} vs {rate(r, name)}{flag}"

        return cell

    if results.theory.empty:
        blocks.append("No group meets these conditions.")
    else:
        versus = {
            "hidden sizes": text("hidden_sizes"),
            "collapse: theory vs measured": check("collapse"),
            "some unit dead: theory vs measured": check("dead_at_init"),
            "output dead: theory vs measured": check("output_dead"),
        }
        counts = {
            "hidden sizes": text("hidden_sizes"),
            "dead units k": text("dead_units"),
            "P(k dead) theory": lambda r: num(r["theory"]),
            "measured share": rate_of("share"),
            "flag": lambda r: "theory outside interval" if r["outside"] else "",
        }
        blocks += [
            table(
                shown(results.theory, results.keys, versus),
                "Closed form vs measured rate [95% Wilson] (k/n)",
            ),
            table(
                shown(results.dead_counts, results.keys, counts),
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
        caption = (
            "Born dead (a hidden layer collapsed at init) against depth per width, measured "
            "beside the closed form, `rai` as its own arm (hollow squares); right: every "
            "group the closed form covers"
        )
        blocks.append(figure(figures["collapse_theory"], caption))
    return section("Theory beside measurement", *blocks)


METHODS = [
    "Rates: Wilson score 95% interval (scipy.stats.binomtest). With n=1 it is still defined "
    "(and wide).",
    "Mean dead fraction: Student t 95% interval, clipped to [0, 1]; none for n=1; zero width "
    "when every run has the same fraction (the rate's Wilson interval still shows the "
    "uncertainty).",
    "Loss cost: median difference, 95% percentile bootstrap (scipy.stats.bootstrap, 2000 "
    "resamples, seed 0), none when a side has fewer than 2 runs.",
    "Spearman rho (scipy.stats.spearmanr, average ranks for ties); Fisher z interval with "
    "variance 1.06/(n-3); undefined when the dead fraction or the loss is constant.",
    "Dead unit (as the pipeline logs it): the activation's derivative is zero at the unit's "
    "pre-activation for every training sample; a collapsed layer has every unit dead, which "
    "makes the network's output constant.",
]


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
        section("Methods", bullets(METHODS)),
    ]
    return "\n\n".join(parts) + "\n"

"""Figures as PNG files. Uses matplotlib's object API on the Agg canvas: no pyplot state,
no display needed, safe to call from any thread or server.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis import theory
from pipeline import schema

DPI = 110
DEAD_COLOUR = "#c0392b"
ALIVE_COLOUR = "#2471a3"
RATES = (
    ("dead_at_init", "runs with a dead hidden unit at init"),
    ("collapse", "runs with a collapsed layer at init"),
    ("output_dead", "runs with a dead output unit at init"),
)


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _wrap(label: str, width: int = 38) -> str:
    return "\n".join(textwrap.wrap(label, width)) or label


def _error_bars(value, lo, hi) -> np.ndarray:
    value, lo, hi = (np.asarray(a, dtype=float) for a in (value, lo, hi))
    below = np.where(np.isnan(lo), 0.0, value - lo)
    above = np.where(np.isnan(hi), 0.0, hi - value)
    # Bars never point inwards, even where rounding puts an end a hair past the value.
    return np.maximum(np.nan_to_num(np.vstack([below, above])), 0.0)


def plot_dead_rates(death: pd.DataFrame, path: Path) -> Path:
    """Horizontal bars per group for the three init rates, with Wilson 95% intervals."""
    groups = list(death["group"])
    height = 1.4 + 0.28 * len(groups)
    figure = Figure(figsize=(13, height))
    axes = figure.subplots(1, len(RATES), sharey=True)
    y = np.arange(len(groups))
    for ax, (column, title) in zip(axes, RATES, strict=True):
        values = np.asarray(death[column], dtype=float)
        errors = _error_bars(values, death[f"{column}_lo"], death[f"{column}_hi"])
        ax.barh(y, np.nan_to_num(values), xerr=errors, color=DEAD_COLOUR, alpha=0.75, capsize=2)
        for row, value in enumerate(values):
            if np.isnan(value):
                ax.text(0.01, row, "no data", va="center", fontsize=7, color="grey")
        ax.set_xlim(0, 1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("rate (95% Wilson interval)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [_wrap(g, 45) for g in groups], fontsize=7)
    axes[0].invert_yaxis()
    figure.suptitle("Dead units at initialization, per group", fontsize=11)
    # Leave the suptitle a band of its own, whatever the figure's height.
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.45 / figure.get_figheight()))
    return _save(figure, path)


def plot_loss_vs_dead_fraction(grouped: pd.DataFrame, path: Path) -> Path:
    """Final train and test loss against dead fraction at init (jittered strip), by activation."""
    finished = grouped[grouped["outcome"] == "finished"]
    if "model.activation" not in finished:
        finished = finished.assign(**{"model.activation": "(activation not logged)"})
    figure = Figure(figsize=(12, 4.6))
    axes = figure.subplots(1, 2, sharey=True)
    activations = sorted(finished["model.activation"].dropna().unique()) if len(finished) else []
    colours = {a: f"C{i % 10}" for i, a in enumerate(activations)}
    rng = np.random.default_rng(0)
    x = (
        np.asarray(finished[schema.DEAD_FRACTION_INIT], dtype=float)
        if len(finished)
        else np.array([])
    )
    jitter = rng.uniform(-0.025, 0.025, size=x.size)
    for ax, (metric, title) in zip(
        axes,
        (
            (schema.FINAL_TRAIN_LOSS, "final train loss"),
            (schema.FINAL_TEST_LOSS, "final test loss"),
        ),
        strict=True,
    ):
        y = (
            np.asarray(finished[metric], dtype=float)
            if metric in finished
            else np.full(x.size, np.nan)
        )
        for activation in activations:
            mask = np.asarray(finished["model.activation"] == activation, dtype=bool)
            ax.scatter(
                x[mask] + jitter[mask],
                y[mask],
                s=9,
                alpha=0.45,
                color=colours[activation],
                label=activation,
                linewidths=0,
            )
        keep = np.isfinite(x) & np.isfinite(y)
        for value in np.unique(x[keep]):
            median = np.median(y[keep & (x == value)])
            ax.plot([value - 0.04, value + 0.04], [median, median], color="black", lw=2)
        if keep.any() and np.all(y[keep] > 0) and y[keep].max() / y[keep].min() > 100:
            ax.set_yscale("log")
        ax.set_xlabel("dead fraction of hidden units at init (jittered)")
        ax.set_title(title + " (black bar: median at that fraction)", fontsize=9)
        ax.grid(alpha=0.3)
        if not keep.any():
            ax.text(
                0.5, 0.5, "no finished runs with both values", ha="center", transform=ax.transAxes
            )
    axes[0].set_ylabel("loss")
    if activations:
        axes[1].legend(fontsize=7, title="activation", title_fontsize=7, loc="best")
    return _save(figure, path)


def plot_loss_curves(curves: pd.DataFrame, groups: list[str], path: Path) -> Path:
    """Median loss per epoch per group, dead-at-init and alive runs apart, IQR shaded."""
    columns = 4 if len(groups) > 4 else max(1, len(groups))
    rows = max(1, int(np.ceil(len(groups) / columns)))
    figure = Figure(figsize=(3.6 * columns, 2.7 * rows + 1.0))
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    styles = {schema.TRAIN_LOSS: "-", schema.TEST_LOSS: "--"}
    colours = {"dead at init": DEAD_COLOUR, "alive at init": ALIVE_COLOUR}
    for ax, group in zip(axes, groups, strict=False):
        panel = curves[curves["group"] == group]
        sampled = {}
        for (status, key), line in panel.groupby(["status", "key"], sort=True):
            # Markers keep a one-epoch curve (a single point) visible.
            ax.plot(
                line["step"],
                line["median"],
                styles.get(key, ":"),
                color=colours[status],
                marker="o",
                ms=3,
            )
            ax.fill_between(
                line["step"], line["q25"], line["q75"], color=colours[status], alpha=0.12, lw=0
            )
            sampled[status] = max(sampled.get(status, 0), int(line["runs"].max()))
        counts = ", ".join(f"{s.split()[0]} {n}" for s, n in sorted(sampled.items()))
        ax.set_title(_wrap(group, 40) + (f"\nruns: {counts}" if counts else ""), fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if panel.empty:
            ax.text(
                0.5, 0.5, "no loss history logged", ha="center", fontsize=8, transform=ax.transAxes
            )
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    legend = [
        Line2D([], [], color=DEAD_COLOUR, label="dead at init"),
        Line2D([], [], color=ALIVE_COLOUR, label="alive at init"),
        Line2D([], [], color="black", ls="-", label="train loss"),
        Line2D([], [], color="black", ls="--", label="test loss"),
    ]
    figure.legend(handles=legend, loc="upper center", ncol=4, fontsize=8, frameon=False)
    figure.supxlabel("epoch", fontsize=9)
    figure.supylabel("loss: median over sampled runs, IQR shaded", fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.4 / figure.get_figheight()))
    return _save(figure, path)


MARKERS = "osD^vPX*hp<>"


def plot_headline(headline: pd.DataFrame, path: Path) -> Path:
    """The report's answer: runs with a dead hidden unit at init per activation x initializer
    (Wilson 95%), beside the final test loss of dead and alive runs (median and IQR)."""
    act = headline.get("model.activation", pd.Series("all runs", index=headline.index))
    init = headline.get("init.name", pd.Series("(init not logged)", index=headline.index))
    activations, inits = list(dict.fromkeys(act)), sorted(set(init))
    step = 0.8 / len(inits)
    x = np.array([activations.index(a) for a in act], dtype=float)
    x += step * (np.array([inits.index(i) for i in init]) - (len(inits) - 1) / 2)
    figure = Figure(figsize=(13, 4.4))
    rates, losses = figure.subplots(1, 2)
    for j, name in enumerate(inits):
        rows, style = np.asarray(init == name), {"color": f"C{j % 10}", "capsize": 2, "ms": 5}
        marker = MARKERS[j % len(MARKERS)]
        value = headline["dead_at_init"][rows]
        bars = _error_bars(
            value, headline["dead_at_init_lo"][rows], headline["dead_at_init_hi"][rows]
        )
        rates.errorbar(x[rows], value, yerr=bars, fmt=marker, label=name, **style)
        for status, shift, face in (
            ("dead", -step / 4, f"C{j % 10}"),
            ("alive", step / 4, "white"),
        ):
            median = headline[f"{status}_median"][rows]
            bars = _error_bars(
                median, headline[f"{status}_q25"][rows], headline[f"{status}_q75"][rows]
            )
            losses.errorbar(x[rows] + shift, median, yerr=bars, fmt=marker, mfc=face, **style)
    finite = np.asarray(headline[["dead_median", "alive_median"]], dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        losses.set_yscale("log")
    for ax in (rates, losses):
        ax.set_xticks(range(len(activations)), activations, fontsize=8)
        ax.set_xlim(-0.5, len(activations) - 0.5)
        for boundary in np.arange(len(activations) - 1) + 0.5:
            ax.axvline(boundary, color="#ddd", lw=0.8)
        ax.grid(axis="y", alpha=0.3)
    rates.set_ylim(-0.02, 1.02)
    rates.set_title("runs with a dead hidden unit at init (95% Wilson interval)", fontsize=9)
    rates.legend(fontsize=7, title="initializer", title_fontsize=7, ncol=2)
    losses.set_title("final test loss of finished runs: median and IQR", fontsize=9)
    losses.legend(
        handles=[
            Line2D([], [], marker="o", ls="", color="grey", label="dead at init"),
            Line2D([], [], marker="o", ls="", color="grey", mfc="white", label="alive at init"),
        ],
        fontsize=7,
    )
    figure.tight_layout()
    return _save(figure, path)


def plot_collapse_theory(collapse: pd.DataFrame, theory_rows: pd.DataFrame, path: Path) -> Path:
    """Born dead (a hidden layer collapsed at init) against depth, one colour per width:
    measured with Wilson 95% intervals beside 1 - (1 - 2**-N)**H, asymmetric initializers
    (rai) as their own arm; and every group the closed form covers, measured vs predicted."""
    figure = Figure(figsize=(12, 4.6))
    by_depth, calibration = figure.subplots(1, 2)
    depths = np.arange(1, int(collapse["depth"].max()) + 1)
    inits, widths = sorted(collapse["init"].unique()), sorted(collapse["width"].unique())
    # Each (width, init) gets its own small shift in depth so that bars do not overlap.
    slots = len(inits) * len(widths)
    for i, width in enumerate(widths):
        colour = f"C{i % 10}"
        curve = theory.collapse_probability_grid([int(width)], depths)[0]
        by_depth.plot(depths, curve, color=colour, lw=1.2, label=f"N={int(width)}")
        for j, init in enumerate(inits):
            points = collapse[(collapse["width"] == width) & (collapse["init"] == init)]
            if points.empty:
                continue
            points = points.sort_values("depth")
            symmetric = bool(points["symmetric"].iloc[0])
            by_depth.errorbar(
                np.asarray(points["depth"], dtype=float)
                + 0.5 * ((i * len(inits) + j + 0.5) / slots - 0.5),
                np.asarray(points["collapse"], dtype=float),
                yerr=_error_bars(points["collapse"], points["collapse_lo"], points["collapse_hi"]),
                fmt="o" if symmetric else "s--",
                mfc=colour if symmetric else "white",
                color=colour,
                ms=4,
                capsize=2,
                lw=1,
            )
    handles, _ = by_depth.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="black", lw=1.2, label="closed form 1 - (1 - 2^-N)^H"),
        Line2D([], [], color="black", marker="o", ls="", label="measured, symmetric init"),
        Line2D([], [], color="black", marker="s", ls="--", mfc="white", label="measured, rai"),
    ]
    by_depth.legend(handles=handles, fontsize=7)
    by_depth.set_xticks(depths)
    by_depth.set_xlabel("hidden layers H")
    by_depth.set_ylabel("P(born dead: a hidden layer collapsed at init)")
    by_depth.set_ylim(-0.02, 1.02)
    by_depth.set_title("bias-free ReLU, equal widths N (95% Wilson intervals)", fontsize=9)
    by_depth.grid(alpha=0.3)
    calibration.plot([0, 1], [0, 1], color="grey", lw=1, label="measured = theory")
    if not theory_rows.empty:
        calibration.errorbar(
            np.asarray(theory_rows["collapse_theory"], dtype=float),
            np.asarray(theory_rows["collapse"], dtype=float),
            yerr=_error_bars(
                theory_rows["collapse"], theory_rows["collapse_lo"], theory_rows["collapse_hi"]
            ),
            fmt="o",
            ms=4,
            capsize=2,
            color="black",
            label="group (95% Wilson)",
        )
    calibration.set_xlim(0, 1)
    calibration.set_ylim(0, 1)
    calibration.set_xlabel("closed form")
    calibration.set_ylabel("measured")
    calibration.set_title("every group the closed form covers", fontsize=9)
    calibration.grid(alpha=0.3)
    calibration.legend(fontsize=7)
    return _save(figure, path)

"""Interval estimates and rank correlation: pure numpy (scipy only for the t quantile)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Two-sided 95% normal quantile, Phi^-1(0.975).
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a two-sided interval; lo/hi are NaN when there is none."""

    value: float
    lo: float
    hi: float
    n: int
    note: str = ""


def finite(values) -> np.ndarray:
    """The finite values of a sequence as a float array (drops NaN, NA and inf)."""
    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (nan, nan) when n == 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    # Rounding would otherwise put 0/n a hair below 0 and n/n a hair below 1.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return float(lo), float(hi)


def proportion(events) -> Estimate:
    """Rate of true values among the non-missing ones, with a Wilson 95% interval."""
    array = finite(events)
    n = int(array.size)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, "no data")
    k = int(np.count_nonzero(array))
    lo, hi = wilson_interval(k, n)
    return Estimate(k / n, lo, hi, n)


def t_quantile(level: float, df: int) -> float:
    """Two-sided Student t quantile, e.g. 2.776 for level 0.95 and df 4."""
    from scipy.special import stdtrit  # scipy.special imports in ~0.1 s; stats would be slower

    return float(stdtrit(df, 0.5 + level / 2))


def mean_t_interval(values, level: float = 0.95, bounds=(0.0, 1.0)) -> Estimate:
    """Mean with a Student t interval, clipped to `bounds` (fractions cannot leave [0, 1])."""
    array = finite(values)
    n = int(array.size)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, "no data")
    mean = float(array.mean())
    if n == 1:
        return Estimate(mean, float("nan"), float("nan"), 1, "n=1: no interval")
    half = t_quantile(level, n - 1) * float(array.std(ddof=1)) / np.sqrt(n)
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(bounds[0], lo), min(bounds[1], hi)
    return Estimate(mean, lo, hi, n)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as Spearman's rho needs)."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start index of each run of equal values, and the run each element belongs to.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    run_of = np.repeat(np.arange(starts.size), ends - starts)
    mean_rank = (starts + ends - 1) / 2 + 1
    ranks = np.empty(values.size)
    ranks[order] = mean_rank[run_of]
    return ranks


def spearman(x, y) -> Estimate:
    """Spearman's rho with a Fisher z 95% interval (variance 1.06 / (n - 3), Fieller et al.).

    Pairs with a missing value are dropped. Undefined (NaN, with a note) when either
    variable is constant; no interval below n = 4.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    nan = float("nan")
    if n < 2:
        return Estimate(nan, nan, nan, n, f"n={n}: undefined")
    if np.all(x == x[0]):
        return Estimate(nan, nan, nan, n, "dead fraction constant: undefined")
    if np.all(y == y[0]):
        return Estimate(nan, nan, nan, n, "loss constant: undefined")
    rx, ry = average_ranks(x), average_ranks(y)
    rho = float(np.corrcoef(rx, ry)[0, 1])
    if n < 4:
        return Estimate(rho, nan, nan, n, f"n={n}: no interval")
    lo, hi = fisher_z_interval(rho, n)
    return Estimate(rho, lo, hi, n)


def fisher_z_interval(rho: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Interval for a Spearman correlation on the Fisher z scale, back-transformed."""
    # arctanh(+-1) is infinite; the interval then degenerates to the point, as it should.
    clipped = float(np.clip(rho, -1 + 1e-15, 1 - 1e-15))
    centre = np.arctanh(clipped)
    half = z * np.sqrt(1.06 / (n - 3))
    return float(np.tanh(centre - half)), float(np.tanh(centre + half))


@dataclass(frozen=True)
class Spread:
    """Median, quartiles and mean of a sample."""

    n: int
    median: float
    q25: float
    q75: float
    mean: float


def spread(values) -> Spread:
    """Median, interquartile range and mean of the finite values (NaN when empty)."""
    array = finite(values)
    if array.size == 0:
        nan = float("nan")
        return Spread(0, nan, nan, nan, nan)
    q25, median, q75 = np.percentile(array, [25, 50, 75])
    return Spread(int(array.size), float(median), float(q25), float(q75), float(array.mean()))


def median_difference(a, b, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Estimate:
    """median(a) - median(b) with a percentile bootstrap interval (resampling each side)."""
    a, b = finite(a), finite(b)
    nan = float("nan")
    if a.size == 0 or b.size == 0:
        return Estimate(nan, nan, nan, int(a.size + b.size), "needs runs on both sides")
    value = float(np.median(a) - np.median(b))
    if a.size < 2 or b.size < 2:
        return Estimate(value, nan, nan, int(a.size + b.size), "n=1 on one side: no interval")
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    # Chunks bound memory for large groups (10,000 runs x 2,000 resamples would be 160 MB).
    chunk = max(1, 2_000_000 // max(a.size, b.size))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        size = stop - start
        med_a = np.median(a[rng.integers(0, a.size, (size, a.size))], axis=1)
        med_b = np.median(b[rng.integers(0, b.size, (size, b.size))], axis=1)
        diffs[start:stop] = med_a - med_b
    alpha = (1 - level) / 2
    lo, hi = np.quantile(diffs, [alpha, 1 - alpha])
    return Estimate(value, float(lo), float(hi), int(a.size + b.size))


def outside(value: float, lo: float, hi: float) -> bool:
    """True when value lies outside a finite interval [lo, hi]."""
    if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(value)):
        return False
    return bool(value < lo or value > hi)

"""Interval estimates and rank correlation, through scipy.stats (imported on first use:
it takes a second, and the CLI must answer bad arguments at once)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000
NAN = float("nan")


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


def wilson_interval(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (nan, nan) when n == 0."""
    if n <= 0:
        return NAN, NAN
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(level, method="wilson")
    return float(ci.low), float(ci.high)


def proportion(events) -> Estimate:
    """Rate of true values among the non-missing ones, with a Wilson interval."""
    array = finite(events)
    n = int(array.size)
    if n == 0:
        return Estimate(NAN, NAN, NAN, 0, "no data")
    k = int(np.count_nonzero(array))
    return Estimate(k / n, *wilson_interval(k, n), n)


def mean_t_interval(values, level: float = LEVEL, bounds=(0.0, 1.0)) -> Estimate:
    """Mean with a Student t interval, clipped to `bounds` (fractions cannot leave [0, 1])."""
    array = finite(values)
    n = int(array.size)
    if n == 0:
        return Estimate(NAN, NAN, NAN, 0, "no data")
    mean = float(array.mean())
    if n == 1:
        return Estimate(mean, NAN, NAN, 1, "n=1: no interval")
    from scipy.stats import sem, t

    scale = float(sem(array))
    # scipy refuses a zero scale; every run alike gives a zero-width interval.
    lo, hi = t.interval(level, n - 1, loc=mean, scale=scale) if scale > 0 else (mean, mean)
    if bounds is not None:
        lo, hi = max(bounds[0], lo), min(bounds[1], hi)
    return Estimate(mean, float(lo), float(hi), n)


def spearman(x, y, level: float = LEVEL) -> Estimate:
    """Spearman's rho with a Fisher z interval (variance 1.06 / (n - 3), Fieller et al. 1957).

    Pairs with a missing value are dropped. Undefined (NaN, with a note) when either
    variable is constant; no interval below n = 4.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n < 2:
        return Estimate(NAN, NAN, NAN, n, f"n={n}: undefined")
    if np.all(x == x[0]):
        return Estimate(NAN, NAN, NAN, n, "dead fraction constant: undefined")
    if np.all(y == y[0]):
        return Estimate(NAN, NAN, NAN, n, "loss constant: undefined")
    from scipy.stats import norm, spearmanr

    rho = float(spearmanr(x, y).statistic)
    if n < 4:
        return Estimate(rho, NAN, NAN, n, f"n={n}: no interval")
    # arctanh(+-1) is infinite; the interval then degenerates to the point, as it should.
    centre = np.arctanh(np.clip(rho, -1 + 1e-15, 1 - 1e-15))
    half = norm.ppf(0.5 + level / 2) * np.sqrt(1.06 / (n - 3))
    return Estimate(rho, float(np.tanh(centre - half)), float(np.tanh(centre + half)), n)


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
        return Spread(0, NAN, NAN, NAN, NAN)
    q25, median, q75 = np.percentile(array, [25, 50, 75])
    return Spread(int(array.size), float(median), float(q25), float(q75), float(array.mean()))


def _median_difference(a, b, axis=-1):
    return np.median(a, axis=axis) - np.median(b, axis=axis)


def median_difference(a, b, seed: int = 0, level: float = LEVEL) -> Estimate:
    """median(a) - median(b) with a percentile bootstrap interval (each side resampled)."""
    a, b = finite(a), finite(b)
    n = int(a.size + b.size)
    if a.size == 0 or b.size == 0:
        return Estimate(NAN, NAN, NAN, n, "needs runs on both sides")
    value = float(_median_difference(a, b))
    if a.size < 2 or b.size < 2:
        return Estimate(value, NAN, NAN, n, "n=1 on one side: no interval")
    from scipy.stats import bootstrap

    ci = bootstrap(
        (a, b),
        _median_difference,
        n_resamples=BOOTSTRAP_RESAMPLES,
        # Batches bound memory: 10,000 runs x 2,000 resamples at once would be 160 MB.
        batch=max(1, 2_000_000 // max(a.size, b.size)),
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return Estimate(value, float(ci.low), float(ci.high), n)


def outside(value: float, lo: float, hi: float) -> bool:
    """True when value lies outside a finite interval [lo, hi]."""
    if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(value)):
        return False
    return bool(value < lo or value > hi)

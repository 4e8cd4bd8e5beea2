"""Interval estimates and Spearman's rho against hand computations."""

import math

import numpy as np
import pytest

from analysis import stats

Z = 1.959963984540054


def wilson_by_hand(k, n):
    p = k / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z / (1 + Z**2 / n) * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        # Textbook values (Newcombe 1998, and the usual 6/8 and 0/10 examples).
        (6, 8, 0.4093, 0.9285),
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (1, 1, 0.2065, 1.0),
    ],
)
def test_wilson_known_values(k, n, lo, hi):
    got = stats.wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=5e-4)


def test_wilson_formula_and_edges():
    assert stats.wilson_interval(3, 12) == pytest.approx(wilson_by_hand(3, 12))
    assert stats.wilson_interval(0, 7)[0] == 0.0
    assert stats.wilson_interval(7, 7)[1] == 1.0
    assert all(math.isnan(v) for v in stats.wilson_interval(0, 0))


def test_proportion_drops_missing():
    estimate = stats.proportion([1, 0, np.nan, 1, 1])
    assert (estimate.value, estimate.n) == (0.75, 4)
    assert (estimate.lo, estimate.hi) == pytest.approx(wilson_by_hand(3, 4))
    assert stats.proportion([]).note == "no data"


def test_t_interval_by_hand():
    values = [0, 0.5, 0.5, 1, 0, 0.5, 1, 0.5]
    # mean 0.5; sum of squared deviations 1, so sd = sqrt(1/7); t(0.975, 7) = 2.364624
    half = 2.364624 * math.sqrt(1 / 7) / math.sqrt(8)
    estimate = stats.mean_t_interval(values)
    assert estimate.value == pytest.approx(0.5)
    assert (estimate.lo, estimate.hi) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-6)


def test_t_interval_clips_and_handles_small_n():
    clipped = stats.mean_t_interval([0.0, 0.0, 1.0])
    assert clipped.lo == 0.0
    one = stats.mean_t_interval([0.5])
    assert one.value == 0.5 and math.isnan(one.lo) and one.note == "n=1: no interval"
    assert stats.mean_t_interval([np.nan]).note == "no data"


def test_average_ranks_ties():
    assert list(stats.average_ranks(np.array([10, 20, 20, 5]))) == [2, 3.5, 3.5, 1]


def test_spearman_with_ties_by_hand():
    x = [0, 0.5, 0.5, 1, 0, 0.5, 1, 0.5]
    y = [0.10, 0.30, 0.32, 0.50, 0.12, 0.28, 0.48, 0.35]
    # Ranks: x -> 1.5, 4.5, 4.5, 7.5, 1.5, 4.5, 7.5, 4.5; y -> 1, 4, 5, 8, 2, 3, 7, 6.
    # Centred cross products sum to 36, squares to 36 (x) and 42 (y).
    rho = 36 / math.sqrt(36 * 42)
    half = Z * math.sqrt(1.06 / 5)
    estimate = stats.spearman(x, y)
    assert estimate.value == pytest.approx(rho)
    assert estimate.lo == pytest.approx(math.tanh(math.atanh(rho) - half))
    assert estimate.hi == pytest.approx(math.tanh(math.atanh(rho) + half))
    assert (estimate.lo, estimate.hi) == pytest.approx((0.6206, 0.9875), abs=1e-3)


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, 60).astype(float)
    y = x + rng.normal(size=60)
    assert stats.spearman(x, y).value == pytest.approx(spearmanr(x, y).statistic)


def test_spearman_undefined_cases():
    assert "constant" in stats.spearman([0, 0, 0, 0, 0], [1, 2, 3, 4, 5]).note
    assert "constant" in stats.spearman([0, 1, 2, 3, 4], [1, 1, 1, 1, 1]).note
    small = stats.spearman([0, 1, 2], [0, 2, 1])
    assert small.value == pytest.approx(0.5) and math.isnan(small.lo)
    assert stats.spearman([1], [2]).note == "n=1: undefined"
    perfect = stats.spearman([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert perfect.value == pytest.approx(1.0) and perfect.hi == pytest.approx(1.0)


def test_spread_and_median_difference():
    spread = stats.spread([1, 2, 3, 4, np.nan])
    assert (spread.n, spread.median, spread.q25, spread.q75, spread.mean) == (
        4,
        2.5,
        1.75,
        3.25,
        2.5,
    )
    diff = stats.median_difference([3, 4, 5, 6], [1, 2])
    assert diff.value == pytest.approx(4.5 - 1.5)
    assert diff.lo <= diff.value <= diff.hi
    assert stats.median_difference([1, 2], []).note == "needs runs on both sides"
    assert "n=1" in stats.median_difference([1], [2, 3]).note
    # Seeded: the same interval every time.
    again = stats.median_difference([3, 4, 5, 6], [1, 2])
    assert (again.lo, again.hi) == (diff.lo, diff.hi)


def test_outside():
    assert stats.outside(0.25, 0.3, 0.5)
    assert not stats.outside(0.35, 0.3, 0.5)
    assert not stats.outside(0.25, float("nan"), float("nan"))

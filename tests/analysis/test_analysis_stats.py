"""Interval estimates and Spearman's rho against published and hand-computed values."""

import math

import numpy as np
import pytest

from analysis import stats

Z = 1.959963984540054


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        # Textbook values (Newcombe 1998, and the usual 3/10, 6/8 and 0/10 examples).
        (3, 10, 0.1078, 0.6032),
        (6, 8, 0.4093, 0.9285),
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (1, 1, 0.2065, 1.0),
    ],
)
def test_wilson_known_values(k, n, lo, hi):
    assert stats.wilson_interval(k, n) == pytest.approx((lo, hi), abs=5e-5)


def test_wilson_level_and_edges():
    # 90%: z = 1.644854; 3/10 by hand from the score formula.
    assert stats.wilson_interval(3, 10, level=0.90) == pytest.approx((0.1269, 0.5583), abs=5e-5)
    assert stats.wilson_interval(0, 7) == pytest.approx((0.0, Z**2 / (7 + Z**2)))
    assert stats.wilson_interval(7, 7)[1] == 1.0
    assert all(math.isnan(v) for v in stats.wilson_interval(0, 0))


def test_proportion_drops_missing():
    estimate = stats.proportion([1, 0, np.nan, 1, 1])
    assert (estimate.value, estimate.n) == (0.75, 4)
    assert (estimate.lo, estimate.hi) == pytest.approx((0.3006, 0.9544), abs=5e-5)
    assert stats.proportion([]).note == "no data"


def test_t_interval_by_hand():
    values = [0, 0.5, 0.5, 1, 0, 0.5, 1, 0.5]
    # mean 0.5; sum of squared deviations 1, so sd = sqrt(1/7); t(0.975, 7) = 2.364624
    half = 2.364624 * math.sqrt(1 / 7) / math.sqrt(8)
    estimate = stats.mean_t_interval(values)
    assert estimate.value == pytest.approx(0.5)
    assert (estimate.lo, estimate.hi) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-6)


def test_t_interval_clips_and_handles_small_n():
    # mean 1/3, sd 0.57735, t(0.975, 2) = 4.302653: [-1.101, 1.768] clipped to [0, 1].
    clipped = stats.mean_t_interval([0.0, 0.0, 1.0])
    assert (clipped.lo, clipped.hi) == (0.0, 1.0)
    unclipped = stats.mean_t_interval([0.0, 0.0, 1.0], bounds=None)
    assert unclipped.lo == pytest.approx(1 / 3 - 4.302653 * math.sqrt(1 / 3) / math.sqrt(3))
    alike = stats.mean_t_interval([0.5, 0.5, 0.5])
    assert (alike.lo, alike.hi) == (0.5, 0.5)
    one = stats.mean_t_interval([0.5])
    assert one.value == 0.5 and math.isnan(one.lo) and one.note == "n=1: no interval"
    assert stats.mean_t_interval([np.nan]).note == "no data"


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
    assert (estimate.lo, estimate.hi) == pytest.approx((0.6205, 0.9874), abs=1e-4)


def test_spearman_drops_missing_pairs():
    estimate = stats.spearman([1, 2, np.nan, 3, 4, 5], [2, 1, 9, 4, 3, np.nan])
    # Pairs left: (1,2) (2,1) (3,4) (4,3): d = 1,1,1,1, rho = 1 - 6*4 / (4*15) = 0.6.
    assert (estimate.value, estimate.n) == (pytest.approx(0.6), 4)


def test_spearman_undefined_cases():
    assert "constant" in stats.spearman([0, 0, 0, 0, 0], [1, 2, 3, 4, 5]).note
    assert "constant" in stats.spearman([0, 1, 2, 3, 4], [1, 1, 1, 1, 1]).note
    small = stats.spearman([0, 1, 2], [0, 2, 1])
    assert small.value == pytest.approx(0.5) and math.isnan(small.lo)
    assert stats.spearman([1], [2]).note == "n=1: undefined"
    perfect = stats.spearman([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert (perfect.value, perfect.lo, perfect.hi) == pytest.approx((1.0, 1.0, 1.0))


def test_spread():
    spread = stats.spread([1, 2, 3, 4, np.nan])
    assert (spread.n, spread.median, spread.q25, spread.q75, spread.mean) == (
        4,
        2.5,
        1.75,
        3.25,
        2.5,
    )
    assert stats.spread([]).n == 0


def test_median_difference():
    diff = stats.median_difference([3, 4, 5, 6], [1, 2])
    # Resampled medians of the first side lie in [3, 6], of the second in [1, 2]; the
    # 2.5% and 97.5% quantiles of 2,000 differences land on 1.5 and 4.5.
    assert (diff.value, diff.lo, diff.hi) == (3.0, 1.5, 4.5)
    assert stats.median_difference([1, 2], []).note == "needs runs on both sides"
    assert stats.median_difference([1], [2, 3]).note == "n=1 on one side: no interval"
    assert stats.median_difference([1], [2, 3]).value == -1.5


def test_outside():
    assert stats.outside(0.25, 0.3, 0.5)
    assert not stats.outside(0.35, 0.3, 0.5)
    assert not stats.outside(0.25, float("nan"), float("nan"))

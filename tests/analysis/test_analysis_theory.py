"""Closed forms against tabulated values of 1 - (1 - 2**-N)**H and direct enumeration."""

from itertools import product

import numpy as np
import pytest

from analysis import theory

# P(collapse) = 1 - (1 - 2**-N)**H for H hidden layers of width N, to 3-4 digits.
COLLAPSE_BY_WIDTH_DEPTH = {
    (2, 1): 0.250,
    (2, 2): 0.4375,
    (2, 5): 0.763,
    (2, 9): 0.925,
    (3, 1): 0.125,
    (3, 2): 0.234,
    (3, 5): 0.487,
    (3, 9): 0.699,
    (4, 1): 0.0625,
    (4, 2): 0.121,
    (4, 5): 0.276,
    (4, 9): 0.441,
}


@pytest.mark.parametrize(("width", "depth"), sorted(COLLAPSE_BY_WIDTH_DEPTH))
def test_collapse_matches_tabulated_values(width, depth):
    assert theory.collapse_probability([width] * depth) == pytest.approx(
        COLLAPSE_BY_WIDTH_DEPTH[(width, depth)], abs=5e-4
    )


def test_grid_matches_scalar_form():
    grid = theory.collapse_probability_grid([2, 3, 4], [1, 2, 5, 9])
    for i, width in enumerate([2, 3, 4]):
        for j, depth in enumerate([1, 2, 5, 9]):
            assert grid[i, j] == pytest.approx(COLLAPSE_BY_WIDTH_DEPTH[(width, depth)], abs=5e-4)


def test_unequal_widths_multiply_survival():
    assert theory.collapse_probability([2, 3]) == pytest.approx(1 - (3 / 4) * (7 / 8))


def test_notebook_net_split_and_output():
    assert theory.dead_count_distribution([2]) == pytest.approx([0.25, 0.5, 0.25])
    assert theory.output_dead_probability([2]) == pytest.approx(5 / 8)
    assert theory.any_dead_probability([2]) == pytest.approx(3 / 4)


def enumerate_dead_counts(sizes):
    """Brute force over every sign pattern: unit dead iff its sign is 'off' or a layer below
    collapsed. Each pattern has probability 2**-total."""
    total = sum(sizes)
    pmf = np.zeros(total + 1)
    for signs in product([0, 1], repeat=total):  # 1 = dead if its input is a live ray
        dead, start, collapsed = 0, 0, False
        for width in sizes:
            layer = signs[start : start + width]
            start += width
            if collapsed:
                dead += width
                continue
            dead += sum(layer)
            collapsed = sum(layer) == width
        pmf[dead] += 2.0**-total
    return pmf


@pytest.mark.parametrize("sizes", [[2], [3], [2, 2], [2, 3], [3, 1, 2]])
def test_dead_count_distribution_matches_enumeration(sizes):
    pmf = theory.dead_count_distribution(sizes)
    assert pmf == pytest.approx(enumerate_dead_counts(sizes))
    assert 1 - pmf[0] == pytest.approx(theory.any_dead_probability(sizes))


def test_collapse_is_consistent_with_distribution_for_one_layer():
    # One layer: collapse means all N units dead.
    assert theory.dead_count_distribution([4])[-1] == pytest.approx(
        theory.collapse_probability([4])
    )


def test_bad_sizes_raise():
    with pytest.raises(ValueError):
        theory.collapse_probability([])
    with pytest.raises(ValueError):
        theory.collapse_probability([0, 2])


@pytest.mark.parametrize(
    ("activation", "bias", "low", "init", "expected"),
    [
        ("relu", 0.0, 0.0, "glorot_uniform", True),
        ("relu", "0.0", "0.0", "legacy_tf2", True),
        ("relu", 0.0, 0.0, "orthogonal", True),
        ("relu", 0.0, 0.0, "rai", False),
        ("relu", 0.1, 0.0, "glorot_uniform", False),
        ("relu", 0.0, -1.0, "glorot_uniform", False),
        ("leaky_relu", 0.0, 0.0, "glorot_uniform", False),
        ("relu", None, 0.0, "glorot_uniform", False),
        (None, 0.0, 0.0, "glorot_uniform", False),
        ("relu", 0.0, 0.0, "some_future_init", False),
    ],
)
def test_theory_applies(activation, bias, low, init, expected):
    assert theory.theory_applies(activation, bias, low, init) is expected

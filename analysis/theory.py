"""Closed forms for bias-free ReLU nets on one-sign inputs.

With zero biases and inputs x > 0, relu(w * x) = x * relu(w): every layer sees a ray, so
each unit of a layer that is not entirely dead is dead with probability 1/2, independently
of the others, whenever the initial weights are symmetric about zero. Everything below
follows from that fact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.config import group_options
from pipeline.initializers import SYMMETRIC_INITIALIZERS

# Initializers whose weights are symmetric about zero (sign flips leave the law unchanged).
SYMMETRIC_INITS = frozenset(SYMMETRIC_INITIALIZERS)
# The rest (randomized asymmetric init, Lu et al. 2019) is asymmetric by design: the closed
# form does not hold, and the collapse figure shows it as its own arm.
ASYMMETRIC_INITS = frozenset(group_options("init")) - SYMMETRIC_INITS


def _widths(hidden_sizes: Sequence[int]) -> np.ndarray:
    widths = np.asarray(list(hidden_sizes), dtype=float)
    if widths.size == 0 or np.any(widths < 1):
        raise ValueError(f"hidden sizes must be positive, got {list(hidden_sizes)}")
    return widths


def collapse_probability(hidden_sizes: Sequence[int]) -> float:
    """P(some hidden layer entirely dead at init) = 1 - prod_l (1 - 2**-N_l)."""
    widths = _widths(hidden_sizes)
    return float(1.0 - np.prod(1.0 - 2.0**-widths))


def collapse_probability_grid(widths: Sequence[int], depths: Sequence[int]) -> np.ndarray:
    """Collapse probability for equal-width nets: rows are widths N, columns depths H."""
    n = np.asarray(widths, dtype=float)[:, None]
    h = np.asarray(depths, dtype=float)[None, :]
    return 1.0 - (1.0 - 2.0**-n) ** h


def any_dead_probability(hidden_sizes: Sequence[int]) -> float:
    """P(at least one hidden unit dead at init) = 1 - 2**-(total hidden units).

    Every unit is alive only if each is, and a layer with a live unit never collapses.
    """
    widths = _widths(hidden_sizes)
    return float(1.0 - 2.0 ** -widths.sum())


def dead_count_distribution(hidden_sizes: Sequence[int]) -> np.ndarray:
    """P(k hidden units dead at init) for k = 0 .. total units.

    Below a collapsed layer every pre-activation is exactly 0, where the ReLU derivative is
    0, so all later units count as dead too.
    """
    widths = _widths(hidden_sizes).astype(int)
    total = int(widths.sum())
    # alive[k]: P(k dead so far, no layer collapsed); collapsed[k]: same, some layer collapsed.
    alive = np.zeros(total + 1)
    collapsed = np.zeros(total + 1)
    alive[0] = 1.0
    for width in widths:
        layer = np.array([_binomial_half(width, d) for d in range(width + 1)])
        next_alive = np.zeros(total + 1)
        next_collapsed = np.roll(collapsed, width)  # a dead layer below kills this one
        next_collapsed[:width] = 0.0
        for dead, p in enumerate(layer):
            shifted = np.roll(alive, dead) * p
            shifted[:dead] = 0.0
            if dead == width:
                next_collapsed += shifted
            else:
                next_alive += shifted
        alive, collapsed = next_alive, next_collapsed
    return alive + collapsed


def _binomial_half(n: int, k: int) -> float:
    """P(Binomial(n, 1/2) = k)."""
    from math import comb

    return comb(n, k) / 2.0**n


def output_dead_probability(hidden_sizes: Sequence[int]) -> float:
    """P(ReLU output unit dead at init) = (1 + P(collapse)) / 2; 5/8 for one hidden layer of 2.

    A collapsed net feeds the output 0 (dead); otherwise its pre-activation is x times a
    sum of live activations with symmetric weights, which is <= 0 with probability 1/2.
    """
    return (1.0 + collapse_probability(hidden_sizes)) / 2.0


def on_rays(activation, bias_init, data_low) -> bool:
    """True for bias-free ReLU nets on non-negative inputs (every layer then sees a ray)."""
    try:
        bias, low = float(bias_init), float(data_low)
    except (TypeError, ValueError):
        return False
    return (
        isinstance(activation, str) and activation == "relu" and bias == 0.0 and 0.0 <= low < np.inf
    )


def theory_applies(activation, bias_init, data_low, init_name) -> bool:
    """True for bias-free ReLU nets on non-negative inputs with a symmetric initializer."""
    return on_rays(activation, bias_init, data_low) and str(init_name) in SYMMETRIC_INITS

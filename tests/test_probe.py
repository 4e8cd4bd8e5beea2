"""The dead-unit probe on hand-made weights."""

import numpy as np
import pytest

from pipeline.forward import ACTIVATIONS, layer_outputs
from pipeline.probe import probe

NOTEBOOK_W1 = np.array([[-0.16988075, -1.1390355]], dtype=np.float32)
NOTEBOOK_W2 = np.array([[1.2553526], [-0.45677203]], dtype=np.float32)
X = np.linspace(0.001, 0.999, 200, dtype=np.float32).reshape(-1, 1)


def single(*layers):
    """One member's [(kernel, bias), ...] as stacked weights."""
    return [(np.asarray(k, np.float32)[None], np.asarray(b, np.float32)[None]) for k, b in layers]


def notebook_weights():
    return single((NOTEBOOK_W1, np.zeros(2)), (NOTEBOOK_W2, np.zeros(1)))


def test_notebook_relu_net_is_born_dead():
    result = probe(notebook_weights(), X, "relu", "relu", 1e-3)
    metrics = result.metrics("init")[0]
    assert metrics["dead_units_init"] == 2
    assert metrics["dead_fraction_init"] == 1.0
    assert metrics["dead_units_init/layer_1"] == 2
    assert metrics["collapsed_init"] == 1.0
    assert metrics["output_dead_init"] == 1.0


@pytest.mark.parametrize("activation", [a for a in ACTIVATIONS if a != "relu"])
def test_only_relu_units_can_die(activation):
    result = probe(notebook_weights(), X, activation, activation, 1e-3)
    assert result.dead_units()[0] == 0
    assert not result.collapsed()[0]
    assert not result.output_dead[0]


def test_one_dead_one_alive_relu_unit():
    weights = single(([[0.5, -0.5]], [0.0, 0.0]), ([[1.0], [1.0]], [0.0]))
    result = probe(weights, X, "relu", "linear", 1e-3)
    assert result.dead[0].tolist() == [[False, True]]
    assert not result.collapsed()[0]


def test_positive_bias_revives_a_unit_with_negative_weight():
    weights = single(([[-0.5]], [1.0]), ([[1.0]], [0.0]))
    assert probe(weights, X, "relu", "linear", 1e-3).dead_units()[0] == 0


def test_relu_gradient_at_exactly_zero_counts_as_dead():
    weights = single(([[0.0]], [0.0]), ([[1.0]], [0.0]))
    assert probe(weights, X, "relu", "linear", 1e-3).dead_units()[0] == 1


def test_dead_first_layer_kills_the_layers_above():
    weights = single(
        ([[-1.0, -2.0]], [0, 0]), ([[1.0, 1.0], [1.0, 1.0]], [0, 0]), ([[1.0], [1.0]], [0])
    )
    result = probe(weights, X, "relu", "linear", 1e-3)
    assert result.dead_units()[0] == 4
    assert result.metrics("init")[0]["dead_units_init/layer_2"] == 2


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_saturation_is_reported_apart_from_death(activation):
    weights = single(([[500.0, 0.1]], [50.0, 0.0]), ([[1.0], [1.0]], [0.0]))
    result = probe(weights, X, activation, "linear", 1e-3)
    assert result.saturated_units()[0] == 1
    assert result.dead_units()[0] == 0


def test_members_are_probed_independently():
    alive = single(([[1.0, 1.0]], [0, 0]), ([[1.0], [1.0]], [0]))
    dead = notebook_weights()
    stacked = [
        (np.concatenate([a[0], d[0]]), np.concatenate([a[1], d[1]]))
        for a, d in zip(alive, dead, strict=True)
    ]
    result = probe(stacked, X, "relu", "relu", 1e-3)
    assert result.dead_units().tolist() == [0, 2]
    assert result.collapsed().tolist() == [False, True]


@pytest.mark.parametrize("sizes", [[1, 2, 1], [1, 10, 10, 10, 1], [1, 33, 7, 1]])
def test_every_pre_activation_sums_its_fan_in_in_order(sizes):
    """One float32 multiply and one add a term, first input first: no CPU-dependent order."""
    rng = np.random.default_rng(7)
    members = 5
    weights = [
        (
            rng.normal(size=(members, fan_in, fan_out)).astype(np.float32),
            rng.normal(size=(members, fan_out)).astype(np.float32),
        )
        for fan_in, fan_out in zip(sizes, sizes[1:], strict=False)
    ]
    x = rng.uniform(-1, 1, size=(37, 1)).astype(np.float32)
    outputs = layer_outputs(weights, x, "tanh")
    h = np.broadcast_to(x, (members, *x.shape))
    for (kernel, bias), z in zip(weights, outputs, strict=True):
        expected = np.zeros(z.shape, np.float32)
        for i in range(kernel.shape[1]):
            expected = expected + h[:, :, i : i + 1] * kernel[:, None, i, :]
        np.testing.assert_array_equal(z, expected + bias[:, None, :])
        h = np.tanh(z)

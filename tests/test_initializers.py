"""Initial weights: the notebook's bit for bit, Keras's model build exactly, paired across activations."""

import keras
import numpy as np
import pytest

from pipeline.initializers import KERAS_INITIALIZERS, initial_weights, layer_shapes
from pipeline.network import build_model

SHAPES = layer_shapes(1, [2], 1)


def test_legacy_tf2_reproduces_the_notebook_bit_for_bit():
    (k1, b1), (k2, b2) = initial_weights({"name": "legacy_tf2"}, SHAPES, 0.0, 23)
    assert k1.ravel().tolist() == np.array([-0.16988075, -1.1390355], np.float32).tolist()
    assert k2.ravel().tolist() == np.array([1.2553526, -0.45677203], np.float32).tolist()
    assert not b1.any() and not b2.any()


@pytest.mark.parametrize("name", KERAS_INITIALIZERS)
def test_keras_initializers_match_building_the_model_under_the_seed(name):
    shapes = layer_shapes(1, [3, 2], 1)
    ours = initial_weights({"name": name}, shapes, 0.0, 11)
    keras.utils.set_random_seed(11)
    model = keras.Sequential(
        [keras.Input((1,))]
        + [keras.layers.Dense(out, kernel_initializer=name) for _, out in shapes]
    )
    kernels = [w for w in model.get_weights() if w.ndim == 2]
    for (kernel, _), reference in zip(ours, kernels, strict=True):
        np.testing.assert_array_equal(kernel, reference)


def test_documented_seed_23_glorot_weights():
    (k1, _), _ = initial_weights({"name": "glorot_uniform"}, SHAPES, 0.0, 23)
    np.testing.assert_allclose(k1.ravel(), [0.248, 1.232], atol=5e-4)


@pytest.mark.parametrize("name", ["glorot_uniform", "he_normal", "legacy_tf2", "rai"])
def test_models_differing_only_in_activation_start_from_identical_weights(name):
    init = {"name": name, "beta_a": 2.0, "beta_b": 1.0, "std": 0.6007}
    built = []
    for activation in ("relu", "linear", "tanh"):
        weights = initial_weights(init, SHAPES, 0.0, 5)
        built.append(build_model(weights, activation, activation).get_weights())
    for other in built[1:]:
        for a, b in zip(built[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_different_seeds_give_different_weights():
    a = initial_weights({"name": "he_normal"}, SHAPES, 0.0, 1)
    b = initial_weights({"name": "he_normal"}, SHAPES, 0.0, 2)
    assert not np.array_equal(a[0][0], b[0][0])


def test_bias_init_constant_applies_to_every_layer():
    weights = initial_weights({"name": "glorot_uniform"}, layer_shapes(1, [3, 3], 1), 0.1, 0)
    assert all(np.all(b == np.float32(0.1)) for _, b in weights)


def test_rai_puts_one_beta_entry_per_neuron():
    init = {"name": "rai", "beta_a": 2.0, "beta_b": 1.0, "std": 0.6007}
    weights = initial_weights(init, layer_shapes(1, [4], 1), 0.0, 3)
    kernel, bias = weights[0]
    joint = np.vstack([kernel, bias[None]])
    # Beta(2, 1) draws lie in (0, 1): each neuron has at least one entry there.
    assert np.all(((joint > 0) & (joint < 1)).any(axis=0))
    again = initial_weights(init, layer_shapes(1, [4], 1), 0.0, 3)
    np.testing.assert_array_equal(kernel, again[0][0])

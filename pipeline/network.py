"""Keras pieces both engines share: activations, optimizers and losses by config name."""

from __future__ import annotations

from pipeline.choices import LOSSES, OPTIMIZERS
from pipeline.forward import ACTIVATIONS
from pipeline.numerics import import_tensorflow

_, keras = import_tensorflow()


def activation(name: str):
    return keras.activations.get(ACTIVATIONS[name].keras_name)


def optimizer(name: str, learning_rate: float):
    return getattr(keras.optimizers, OPTIMIZERS[name].keras_class)(learning_rate=learning_rate)


def loss(name: str) -> str:
    return LOSSES[name].keras_name


def build_model(weights, hidden_activation: str, output_activation: str) -> keras.Sequential:
    """A Sequential MLP holding exactly the given initial weights."""
    layers = [keras.Input((weights[0][0].shape[0],))]
    for index, (kernel, _) in enumerate(weights):
        last = index == len(weights) - 1
        layers.append(
            keras.layers.Dense(
                kernel.shape[1],
                activation=activation(output_activation if last else hidden_activation),
            )
        )
    model = keras.Sequential(layers)
    model.set_weights([array for layer in weights for array in layer])
    return model

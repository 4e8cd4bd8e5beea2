"""Keras pieces both engines share: activations, optimizers and losses by config name."""

from __future__ import annotations

from pipeline.numerics import import_tensorflow

_, keras = import_tensorflow()

KERAS_ACTIVATION = {"swish": "silu"}


def activation(name: str):
    return keras.activations.get(KERAS_ACTIVATION.get(name, name))


def optimizer(name: str, learning_rate: float):
    classes = {
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
        "adagrad": keras.optimizers.Adagrad,
    }
    return classes[name](learning_rate=learning_rate)


def loss(name: str):
    return {"mae": "mean_absolute_error", "mse": "mean_squared_error", "huber": "huber"}[name]


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

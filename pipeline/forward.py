"""Numpy forward pass shared by the probe and the final-loss evaluation, and the registry
of activations: the one place an activation is declared (the Keras engines, the probe,
validation and the analysis all read it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import sqrt

import numpy as np

from pipeline.choices import LOSSES


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _gelu(z):
    from scipy.special import erf  # scipy is slow to import and only gelu needs it

    return 0.5 * z * (1.0 + erf(z / sqrt(2.0)))


SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805
LEAKY_SLOPE = 0.2  # keras.activations.leaky_relu's default negative_slope


@dataclass(frozen=True)
class Activation:
    forward: Callable[[np.ndarray], np.ndarray]  # as keras.activations computes it
    keras_name: str
    can_die: bool = False  # derivative exactly 0 on a half-line: a unit can be dead
    derivative: Callable[[np.ndarray], np.ndarray] | None = None  # set: it can saturate


ACTIVATIONS = {
    "relu": Activation(lambda z: np.maximum(z, 0.0), "relu", can_die=True),
    "leaky_relu": Activation(lambda z: np.where(z > 0, z, LEAKY_SLOPE * z), "leaky_relu"),
    "elu": Activation(lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))), "elu"),
    "selu": Activation(
        lambda z: SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0.0))),
        "selu",
    ),
    "gelu": Activation(lambda z: _gelu(z), "gelu"),
    "swish": Activation(lambda z: z * sigmoid(z), "silu"),
    "softplus": Activation(lambda z: np.logaddexp(0.0, z), "softplus"),
    "tanh": Activation(np.tanh, "tanh", derivative=lambda z: 1.0 - np.tanh(z) ** 2),
    "sigmoid": Activation(sigmoid, "sigmoid", derivative=lambda z: sigmoid(z) * (1 - sigmoid(z))),
    "linear": Activation(lambda z: z, "linear"),
}
SATURATING = tuple(name for name, a in ACTIVATIONS.items() if a.derivative is not None)


def layer_outputs(weights, x: np.ndarray, activation: str) -> list[np.ndarray]:
    """Pre-activations (members, n, units) of every layer, hidden layers first, output last.

    Computed units-major, (members, units, n), and returned as transposed views: einsum then
    adds a weight times a row of n inputs at a time, which is several times faster than
    contracting over a short contiguous units axis. Each sum runs over the fan-in in order,
    one multiply and one add a term (numpy's einsum is built for the baseline CPU, without
    FMA), so the numbers do not depend on the CPU.
    """
    members = weights[0][0].shape[0]
    h = np.broadcast_to(x.astype(np.float32).T, (members, *x.T.shape))  # (members, in, n)
    outputs = []
    for index, (kernel, bias) in enumerate(weights):
        z = np.einsum("mio,min->mon", kernel.astype(np.float32), h) + bias[:, :, None]
        outputs.append(z.transpose(0, 2, 1))
        if index < len(weights) - 1:
            h = ACTIVATIONS[activation].forward(z)
    return outputs


def predict(weights, x: np.ndarray, activation: str, output_activation: str) -> np.ndarray:
    return ACTIVATIONS[output_activation].forward(layer_outputs(weights, x, activation)[-1])


def loss(name: str, prediction: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-member mean loss, as Keras defines mae, mse and huber (delta 1)."""
    per_sample = LOSSES[name].per_sample(prediction - y[None, :, :])
    return per_sample.reshape(len(per_sample), -1).mean(axis=1)

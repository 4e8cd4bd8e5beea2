"""Numpy forward pass shared by the probe and the final-loss evaluation."""

from __future__ import annotations

from math import sqrt

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _gelu(z):
    from scipy.special import erf  # scipy is slow to import and only gelu needs it

    return 0.5 * z * (1.0 + erf(z / sqrt(2.0)))


SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805
LEAKY_SLOPE = 0.2  # keras.activations.leaky_relu's default negative_slope


# Forward functions matching keras.activations (Keras 3 defaults).
FORWARD = {
    "relu": lambda z: np.maximum(z, 0.0),
    "leaky_relu": lambda z: np.where(z > 0, z, LEAKY_SLOPE * z),
    "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))),
    "selu": lambda z: SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0.0))),
    "gelu": lambda z: _gelu(z),
    "swish": lambda z: z * sigmoid(z),
    "softplus": lambda z: np.logaddexp(0.0, z),
    "tanh": np.tanh,
    "sigmoid": sigmoid,
    "linear": lambda z: z,
}
ACTIVATIONS = tuple(FORWARD)


def layer_outputs(weights, x: np.ndarray, activation: str) -> list[np.ndarray]:
    """Pre-activations (members, n, units) of every layer, hidden layers first, output last."""
    h = np.broadcast_to(x.astype(np.float32), (weights[0][0].shape[0], *x.shape))
    outputs = []
    for index, (kernel, bias) in enumerate(weights):
        z = np.einsum("mni,mio->mno", h, kernel.astype(np.float32)) + bias[:, None, :]
        outputs.append(z)
        if index < len(weights) - 1:
            h = FORWARD[activation](z)
    return outputs


def predict(weights, x: np.ndarray, activation: str, output_activation: str) -> np.ndarray:
    return FORWARD[output_activation](layer_outputs(weights, x, activation)[-1])


def loss(name: str, prediction: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-member mean loss, as Keras defines mae, mse and huber (delta 1)."""
    error = prediction - y[None, :, :]
    if name == "mae":
        per_sample = np.abs(error)
    elif name == "mse":
        per_sample = error**2
    else:
        small = np.abs(error) <= 1.0
        per_sample = np.where(small, 0.5 * error**2, np.abs(error) - 0.5)
    return per_sample.reshape(len(per_sample), -1).mean(axis=1)

"""Initial weights as numpy arrays, a function of (initializer, layer sizes, seed) only.

Weights never depend on the activation, so models that differ only in activation
start from identical weights under one seed (the paired comparison of the notebook).
"""

from __future__ import annotations

import numpy as np

KERAS_INITIALIZERS = (
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
    "random_uniform",
    "random_normal",
    "truncated_normal",
    "orthogonal",
)
INITIALIZERS = (*KERAS_INITIALIZERS, "legacy_tf2", "rai")

Weights = list[
    tuple[np.ndarray, np.ndarray]
]  # per layer: kernel (fan_in, fan_out), bias (fan_out,)


def layer_shapes(n_inputs: int, hidden_sizes: list[int], n_outputs: int) -> list[tuple[int, int]]:
    sizes = [n_inputs, *hidden_sizes, n_outputs]
    return list(zip(sizes[:-1], sizes[1:], strict=True))


def initial_weights(
    init_cfg, shapes: list[tuple[int, int]], bias_init: float, seed: int
) -> Weights:
    """Draw every layer's kernel and bias for one seed."""
    name = init_cfg["name"]
    if name == "rai":
        return _rai(shapes, seed, init_cfg["beta_a"], init_cfg["beta_b"], init_cfg["std"])
    kernels = _legacy_tf2(shapes, seed) if name == "legacy_tf2" else _keras(name, shapes, seed)
    return [(k, np.full(k.shape[1], bias_init, dtype=np.float32)) for k in kernels]


def _keras(name: str, shapes, seed: int) -> list[np.ndarray]:
    import keras

    keras.utils.set_random_seed(seed)
    # One fresh initializer per layer, created before any draw: what building a Sequential does.
    initializers = [keras.initializers.get(name) for _ in shapes]
    return [
        np.asarray(init(shape), dtype=np.float32)
        for init, shape in zip(initializers, shapes, strict=True)
    ]


def _legacy_tf2(shapes, seed: int) -> list[np.ndarray]:
    import tensorflow as tf

    tf.random.set_seed(seed)
    kernels = []
    for fan_in, fan_out in shapes:
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        kernels.append(tf.random.uniform([fan_in, fan_out], -limit, limit).numpy())
    return kernels


def _rai(shapes, seed: int, beta_a: float, beta_b: float, std: float) -> Weights:
    rng = np.random.default_rng(seed)
    weights = []
    for fan_in, fan_out in shapes:
        # Column j of `joint` holds (kernel[:, j], bias[j]) of neuron j.
        joint = rng.normal(0.0, std / np.sqrt(fan_in), size=(fan_in + 1, fan_out))
        chosen = rng.integers(0, fan_in + 1, size=fan_out)
        joint[chosen, np.arange(fan_out)] = rng.beta(beta_a, beta_b, size=fan_out)
        joint = joint.astype(np.float32)
        weights.append((joint[:fan_in], joint[fan_in]))
    return weights


def stack(members: list[Weights]) -> Weights:
    """Per-member weights -> per-layer arrays with a leading member axis."""
    return [
        (np.stack([m[i][0] for m in members]), np.stack([m[i][1] for m in members]))
        for i in range(len(members[0]))
    ]


def unstack(stacked: Weights, member: int) -> Weights:
    return [(k[member], b[member]) for k, b in stacked]

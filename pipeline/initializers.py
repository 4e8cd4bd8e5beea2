"""Initial weights as numpy arrays, a function of (initializer, layer sizes, seed) only.

Weights never depend on the activation, so models that differ only in activation
start from identical weights under one seed (the paired comparison of the notebook).
"""

from __future__ import annotations

import random
from functools import cache, lru_cache

import numpy as np

from pipeline.config import group_options
from pipeline.numerics import import_tensorflow

# The initializers are the files of the `init` config group; all but these two are Keras's
# built-ins of the same name.
LEGACY_TF2, RAI = "legacy_tf2", "rai"
KERAS_INITIALIZERS = tuple(n for n in group_options("init") if n not in (LEGACY_TF2, RAI))
# Zero-mean and sign-symmetric: a bias-free ReLU unit on one-sign inputs is dead with
# probability 1/2. RAI is asymmetric by design.
SYMMETRIC_INITIALIZERS = (*KERAS_INITIALIZERS, LEGACY_TF2)

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
    return initial_weights_for_seeds(init_cfg, shapes, bias_init, [seed])[0]


def initial_weights_for_seeds(
    init_cfg, shapes: list[tuple[int, int]], bias_init: float, seeds: list[int]
) -> list[Weights]:
    """Draw every layer's kernel and bias for each seed: the same as one seed at a time."""
    name = init_cfg["name"]
    if name == RAI:
        args = (init_cfg["beta_a"], init_cfg["beta_b"], init_cfg["std"])
        return [_rai(shapes, seed, *args) for seed in seeds]
    if name == LEGACY_TF2:
        per_seed = [_legacy_tf2(shapes, seed) for seed in seeds]
    else:
        per_seed = _keras(name, shapes, seeds)
    return [
        [(k, np.full(k.shape[1], bias_init, dtype=np.float32)) for k in kernels]
        for kernels in per_seed
    ]


def keras_layer_seeds(seed: int, layers: int) -> list[int]:
    """The integer seed each layer's Keras initializer gets under set_random_seed(seed).

    An unseeded Keras initializer takes `random.randint(1, 10**9)` from Python's global
    generator when it is created, and set_random_seed(seed) seeds that generator; building
    a Sequential creates one kernel initializer per layer, in order.
    """
    generator = random.Random(seed)
    return [generator.randint(1, int(1e9)) for _ in range(layers)]


def _keras(name: str, shapes, seeds: list[int]) -> list[list[np.ndarray]]:
    """Kernels exactly as building the Keras model under keras.utils.set_random_seed(seed).

    Eager Keras initializer calls cost milliseconds per seed, so the draws run in one traced
    function over all seeds: each layer's initializer is the genuine Keras one, fed its
    integer seed as a tensor, which goes through the same stateless random ops.
    """
    tf, _ = import_tensorflow()

    draw = _keras_drawer(name, tuple(shapes))
    layer_seeds = np.array([keras_layer_seeds(seed, len(shapes)) for seed in seeds], np.int64)
    drawn = [k.numpy() for k in draw(tf.constant(layer_seeds.reshape(len(seeds), len(shapes))))]
    return [[kernels[index] for kernels in drawn] for index in range(len(seeds))]


@lru_cache(maxsize=2)  # a sweep's cells come shape by shape; old programs are let go
def _keras_drawer(name: str, shapes: tuple[tuple[int, int], ...]):
    tf, keras = import_tensorflow()

    state = random.getstate()  # creating an unseeded initializer draws from Python's random
    initializer_class = type(keras.initializers.get(name))
    random.setstate(state)
    seed_generator = _tensor_seed_class()

    def draw_one(seeds):
        return [
            initializer_class(seed=seed_generator(seeds[layer]))(shape, dtype="float32")
            for layer, shape in enumerate(shapes)
        ]

    @tf.function(input_signature=[tf.TensorSpec([None, len(shapes)], tf.int64)])
    def draw(seeds):
        signature = [tf.TensorSpec(shape, tf.float32) for shape in shapes]
        return tf.map_fn(draw_one, seeds, fn_output_signature=signature, parallel_iterations=16)

    return draw


@cache
def _tensor_seed_class():
    tf, keras = import_tensorflow()

    class TensorSeed(keras.random.SeedGenerator):
        """An integer seed held in a tensor: Keras draws from [seed, 0] as for a Python int."""

        def __init__(self, seed):  # no state variable: this seed never advances
            self.seed = seed

        def next(self, ordered=True):
            return tf.stack([self.seed, tf.zeros_like(self.seed)])

    return TensorSeed


def _legacy_tf2(shapes, seed: int) -> list[np.ndarray]:
    tf, _ = import_tensorflow()

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

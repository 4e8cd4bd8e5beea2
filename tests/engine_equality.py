"""`python -m tests.engine_equality`: batched vs keras on the cases that oneDNN's kernels
round differently; prints one JSON line. Run in a subprocess under a chosen environment."""

from __future__ import annotations

import json

import pipeline  # noqa: F401  (first: it decides TensorFlow's environment)
from pipeline.engines import batched, each_member, keras_fit
from pipeline.numerics import numerics_tags
from tests.test_batched_engine import DATA, configs, weights_for

# (optimizer, loss, hidden activation, output activation, hidden sizes, init, bias init):
# each differed by 1-8 ulp between the engines with oneDNN on.
CASES = [
    ("adam", "mse", "leaky_relu", "leaky_relu", [3, 3], "he_normal", 0.0),
    ("rmsprop", "mse", "tanh", "tanh", [3, 3], "he_normal", 0.0),
    ("rmsprop", "huber", "sigmoid", "linear", [3, 3], "he_normal", 0.0),
    ("adam", "mae", "tanh", "linear", [3, 3], "he_normal", 0.1),
]


def max_differences() -> tuple[float, float]:
    weight_diff = loss_diff = 0.0
    for optimizer, loss, activation, output, hidden, init, bias in CASES:
        train_cfg, model_cfg = configs(
            hidden, activation, optimizer, loss, lr=0.01, output=output, epochs=1
        )
        seeds = [5, 7, 9]
        weights = weights_for(init, hidden, seeds, bias)
        ours = each_member(batched.train(train_cfg, model_cfg, DATA, seeds, weights))[1]
        (ref,) = each_member(keras_fit.train(train_cfg, model_cfg, DATA, [7], [weights[1]]))
        for (rk, rb), (k, b) in zip(ref.final_weights, ours.final_weights, strict=True):
            weight_diff = max(weight_diff, float(abs(rk - k).max()), float(abs(rb - b).max()))
        for a, b in zip(
            ref.train_loss + ref.test_loss, ours.train_loss + ours.test_loss, strict=True
        ):
            loss_diff = max(loss_diff, abs(a - b))
    return weight_diff, loss_diff


if __name__ == "__main__":
    weight_diff, loss_diff = max_differences()
    print(json.dumps({**numerics_tags(), "weight_diff": weight_diff, "loss_diff": loss_diff}))

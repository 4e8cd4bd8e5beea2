"""Allowed values of the training and logging keys, declared once: the engines dispatch through these
registries, validation checks against them, and the README's override table is made from
them (`python -m pipeline.choices` prints it). TensorFlow-free.

Activations are declared with their numpy forward pass in `pipeline.forward`, initializers
by the files of the `init` config group (`conf/init/`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Optimizer:
    keras_class: str  # in keras.optimizers
    slots: int  # state variables per weight
    help: str


@dataclass(frozen=True)
class Loss:
    keras_name: str  # for keras.losses.get
    help: str

    def per_sample(self, error: np.ndarray) -> np.ndarray:
        return LOSS_FUNCTIONS[self.keras_name](error)


# Every one is elementwise (a weight's update depends on its own gradients only), which
# is what lets the batched engine train stacked members exactly.
OPTIMIZERS = {
    "adam": Optimizer("Adam", 2, "Keras Adam"),
    "sgd": Optimizer("SGD", 0, "plain SGD, no momentum"),
    "rmsprop": Optimizer("RMSprop", 1, "Keras RMSprop, no momentum, not centered"),
    "adagrad": Optimizer("Adagrad", 1, "Keras Adagrad"),
}
LOSSES = {
    "mae": Loss("mean_absolute_error", "mean absolute error (the notebook's)"),
    "mse": Loss("mean_squared_error", "mean squared error"),
    "huber": Loss("huber", "Huber, delta 1"),
}
LOSS_FUNCTIONS = {
    "mean_absolute_error": np.abs,
    "mean_squared_error": np.square,
    "huber": lambda e: np.where(np.abs(e) <= 1.0, 0.5 * e**2, np.abs(e) - 0.5),
}


@dataclass(frozen=True)
class Engine:
    module: str  # holds train(train_cfg, model_cfg, data, seeds, initial_weights)
    help: str


ENGINES = {
    "keras": Engine("pipeline.engines.keras_fit", "one Model.fit per run: the reference"),
    "batched": Engine(
        "pipeline.engines.batched",
        "every seed of a sweep cell in one TensorFlow program, bit-identical to keras",
    ),
}

WRITERS = {
    "auto": "bulk where the store allows it, else client; says which in one line",
    "bulk": "a chunk of runs per SQL transaction through MLflow's tables (sqlite, postgresql)",
    "client": "MLflow's client: three calls a run",
}


def override_table() -> str:
    """The README's table of allowed values, from the registries."""
    from pipeline.config import group_options
    from pipeline.forward import ACTIVATIONS

    rows = [
        ("model.activation, model.output_activation", ", ".join(ACTIVATIONS)),
        ("init", ", ".join(group_options("init"))),
        ("train.optimizer", ", ".join(OPTIMIZERS)),
        ("train.loss", ", ".join(LOSSES)),
        ("train.engine", ", ".join(ENGINES)),
        ("tracking.writer", ", ".join(WRITERS)),
    ]
    lines = ["| key | allowed values |", "|---|---|"]
    lines += [f"| `{key}` | {values} |" for key, values in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    print(override_table())

"""The reference engine: one keras Model.fit per member, batch order from the run seed."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pipeline import network
from pipeline.data import Dataset, batch_order
from pipeline.engines import MemberResult


def train(
    train_cfg, model_cfg, data: Dataset, seeds: list[int], initial: list
) -> Iterator[list[MemberResult]]:
    """Train each member in turn (a chunk of one); `initial` holds each member's weights."""
    for seed, weights in zip(seeds, initial, strict=True):
        yield [_train_one(train_cfg, model_cfg, data, seed, weights)]


def _train_one(train_cfg, model_cfg, data: Dataset, seed: int, weights) -> MemberResult:
    model = network.build_model(weights, model_cfg.activation, model_cfg.output_activation)
    model.compile(
        optimizer=network.optimizer(train_cfg.optimizer, train_cfg.learning_rate),
        loss=network.loss(train_cfg.loss),
    )
    order = batch_order(seed, len(data.x_train), train_cfg.epochs)
    train_loss, test_loss, diverged = [], [], None
    for epoch, indices in enumerate(order):
        history = model.fit(
            data.x_train[indices],
            data.y_train[indices],
            batch_size=train_cfg.batch_size,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,
            verbose=0,
            validation_data=(data.x_test, data.y_test),
            validation_batch_size=len(data.x_test),
        ).history
        train_loss.append(float(history["loss"][-1]))
        test_loss.append(float(history["val_loss"][-1]))
        if not (np.isfinite(train_loss[-1]) and np.isfinite(test_loss[-1])):
            diverged = epoch + 1
            break
    final = model.get_weights()
    final_weights = [(final[i], final[i + 1]) for i in range(0, len(final), 2)]
    return MemberResult(seed, final_weights, train_loss, test_loss, diverged)

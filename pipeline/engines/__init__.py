"""Training engines. Each takes the same inputs and returns the same MemberResults:
keras (model.fit, the reference) and batched (every member of a cell in one program)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np

from pipeline.choices import ENGINES


@dataclass
class MemberResult:
    """What training one member (one seed) produced."""

    seed: int
    final_weights: list[tuple[np.ndarray, np.ndarray]]
    train_loss: list[float]  # per epoch, as fit reports it (mean over the epoch's batches)
    test_loss: list[float]  # per epoch, on the test set after the epoch
    diverged_epoch: int | None = None


def get_engine(name: str):
    """The engine's train function, imported lazily (TensorFlow is slow to import)."""
    return importlib.import_module(ENGINES[name].module).train

"""Training engines. Each takes the same inputs and yields the same MemberResults, a chunk
(a list) at a time: keras (model.fit, the reference; chunks of one member) and batched
(every member of a chunk in one program)."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
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


def each_member(chunks: Iterable[list[MemberResult]]) -> list[MemberResult]:
    """Every member's result, in order, from the chunks an engine yields."""
    return [result for chunk in chunks for result in chunk]

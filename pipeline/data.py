"""The identity-map data set and the per-epoch batch order every engine shares."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray  # (n_train, 1) float32
    y_train: np.ndarray  # (n_train, 1) float32
    x_test: np.ndarray
    y_test: np.ndarray

    def digest(self) -> str:
        """A hash of the values: equal digests, equal data."""
        arrays = (self.x_train, self.y_train, self.x_test, self.y_test)
        return hashlib.sha1(b"".join(a.tobytes() for a in arrays)).hexdigest()


def make_identity_data(
    n_samples: int, low: float, high: float, test_size: float, seed: int
) -> Dataset:
    """y = x with x ~ U(low, high), drawn and split exactly as the notebook does."""
    np.random.seed(seed)  # the notebook's legacy global draw, kept for bit-exact data
    y = np.random.uniform(low=low, high=high, size=n_samples)
    x = y.reshape(-1, 1).copy()
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed
    )
    as32 = lambda a: np.asarray(a, dtype=np.float32).reshape(-1, 1)  # noqa: E731
    return Dataset(as32(x_train), as32(y_train), as32(x_test), as32(y_test))


def batch_order(seed: int, n_train: int, epochs: int) -> np.ndarray:
    """One permutation of the training indices per epoch, drawn from the run seed."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n_train) for _ in range(epochs)])

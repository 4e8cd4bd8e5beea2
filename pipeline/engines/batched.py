"""The batched engine: every member (seed) of a sweep cell trained at once, as one program.

Members' weights are stacked along a leading member axis (kernels [M, in, out], biases
[M, out]); one tf.function runs an epoch of training steps for all of them. Each member
sees its own batches, drawn from its own permutation (`batch_order`), and its loss is its
own mean over its batch; the per-member losses are summed, so each member's gradient is
exactly its own. The configured Keras optimizer updates the stacked variables, which is
exact for elementwise optimizers (adam, sgd, rmsprop, adagrad): every weight's update
depends on that weight's gradient history only.

The result equals `model.fit` (the keras engine) bit for bit, weights and losses alike, on
TensorFlow's default CPU kernels. That needs care with one thing: TensorFlow picks its CPU
matmul kernel by shape. Keras multiplies a batch by a layer's kernel with a 2-D MatMul; a
stacked [M, n, in] @ [M, in, out] product runs through a different kernel, which sums in a
different order, unless one of n, in, out is 1 or n * in * out exceeds 128 * 128 (then both
use the same per-matrix kernel). In this project inputs and outputs have one unit, so only
hidden-to-hidden layers of nets with two or more hidden layers are affected; for those the
products are done member by member with 2-D matmuls, exact but slower (see `_matmul`).

Memory is linear in the number of members: `bytes_per_member` estimates it from the tensor
sizes, and `train` splits the members into chunks that fit `train.memory_budget_mb`,
yielding each chunk's results before the next one trains, so they can be logged meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf

from pipeline import network
from pipeline.data import Dataset
from pipeline.engines import MemberResult

# Optimizer slot variables per weight. Only elementwise optimizers can be batched exactly.
OPTIMIZER_SLOTS = {"sgd": 0, "adagrad": 1, "rmsprop": 1, "adam": 2}
# TensorFlow's CPU BatchMatMul runs each matrix through the 2-D MatMul kernel above this cost.
MATMUL_PER_MATRIX_COST = 128 * 128
# Bookkeeping per member outside the tensors: its numpy Generator, results, Python objects.
MEMBER_OVERHEAD_BYTES = 4096
# Traced graph per member-by-member matmul (its ops, their gradients, TF's copies), measured.
GRAPH_BYTES_PER_MEMBER_MATMUL = 40_000
# Member-by-member matmuls traced into one graph at most: bounds tracing time (~2 ms each).
MAX_MEMBER_MATMULS_PER_GRAPH = 10_000


class UnsupportedConfig(ValueError):
    """A configuration the batched engine cannot reproduce exactly."""


def train(
    train_cfg, model_cfg, data: Dataset, seeds: list[int], initial: list
) -> Iterator[MemberResult]:
    """Train all members in chunks that fit the memory budget; yield results chunk by chunk."""
    check_supported(train_cfg)
    if not seeds:
        return
    shapes = [kernel.shape for kernel, _ in initial[0]]
    size = members_per_chunk(train_cfg, shapes, len(data.x_train), len(data.x_test))
    for start in range(0, len(seeds), size):
        chunk = _Chunk(train_cfg, model_cfg, data, initial[start : start + size])
        yield from chunk.train(seeds[start : start + size])


def check_supported(train_cfg) -> None:
    if train_cfg.optimizer not in OPTIMIZER_SLOTS:
        raise UnsupportedConfig(
            f"train.optimizer: the batched engine cannot reproduce {train_cfg.optimizer!r} "
            f"exactly (only elementwise optimizers: {', '.join(OPTIMIZER_SLOTS)}); "
            "use train.engine=keras"
        )


def bytes_per_member(
    shapes: list[tuple[int, int]], n_train: int, n_test: int, batch_size: int, optimizer: str
) -> int:
    """Estimated peak bytes one member adds to a chunk (float32 = 4 bytes):

    4 * [(4 + slots) * P + 6 * batch_size * U + 4 * n_test * U] + 36 * n_train
      + G * matmuls + MEMBER_OVERHEAD_BYTES

    P = weights and biases, slots = optimizer slot variables per weight, U = units in all
    layers. Weights, gradients, two update temporaries and the slots; a step's
    pre-activations, activations and their gradients (6 * batch_size * U); the test forward
    pass with its broadcast inputs and targets (4 * n_test * U). Per training sample, each
    epoch holds the int64 permutation, two int32 copies of it, and the inputs and targets
    gathered in that order, once whole and once cut into steps (8 + 8 + 16 + 4 bytes rounded
    up). G * matmuls is the traced graph of member-by-member matmuls (only nets with two or
    more hidden layers have any, see `_matmul`). Measured peak RSS grows by about 50 KB a
    member for the notebook net, which this puts at 83 KB: the estimate errs on the safe side.
    """
    params = sum(fan_in * fan_out + fan_out for fan_in, fan_out in shapes)
    units = sum(fan_out for _, fan_out in shapes)
    floats = (
        (4 + OPTIMIZER_SLOTS[optimizer]) * params + 6 * batch_size * units + 4 * n_test * units
    )
    graph = GRAPH_BYTES_PER_MEMBER_MATMUL * _member_matmuls(shapes, n_train, n_test, batch_size)
    return 4 * floats + 36 * n_train + graph + MEMBER_OVERHEAD_BYTES


def members_per_chunk(train_cfg, shapes, n_train: int, n_test: int) -> int:
    """How many members fit the memory budget (at least one)."""
    per_member = bytes_per_member(
        shapes, n_train, n_test, train_cfg.batch_size, train_cfg.optimizer
    )
    size = int(train_cfg.memory_budget_mb * 2**20 // per_member)
    if matmuls := _member_matmuls(shapes, n_train, n_test, train_cfg.batch_size):
        size = min(size, MAX_MEMBER_MATMULS_PER_GRAPH // matmuls)
    return max(1, size)


def _batched_matmul_is_exact(rows: int, fan_in: int, fan_out: int) -> bool:
    """Whether a stacked matmul sums like Keras's 2-D MatMul (TensorFlow's CPU kernel choice)."""
    return min(rows, fan_in, fan_out) == 1 or rows * fan_in * fan_out > MATMUL_PER_MATRIX_COST


def _member_matmuls(shapes, n_train: int, n_test: int, batch_size: int) -> int:
    """Matmuls per member that must run member by member: 3 per training batch shape, 1 test."""
    rows = [(batch_size, 3), (n_train % batch_size, 3), (n_test, 1)]
    return sum(
        count
        for fan_in, fan_out in shapes
        for n, count in rows
        if n > 0 and not _batched_matmul_is_exact(n, fan_in, fan_out)
    )


def _matmul(h: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """[M, n, in] @ [M, in, out], each member's product summed exactly as Keras's MatMul does.

    When the stacked kernel would sum in another order, multiply member by member with 2-D
    matmuls; their gradients are then 2-D matmuls too, the very ops Keras's gradient uses.
    """
    rows, fan_in, fan_out = h.shape[1], kernel.shape[1], kernel.shape[2]
    if _batched_matmul_is_exact(rows, fan_in, fan_out):
        return tf.matmul(h, kernel)
    return tf.stack([tf.matmul(a, w) for a, w in zip(tf.unstack(h), tf.unstack(kernel))])


class _Chunk:
    """Members trained together: stacked variables, one optimizer, one compiled epoch."""

    def __init__(self, train_cfg, model_cfg, data: Dataset, initial: list):
        self.cfg = train_cfg
        self.data = data
        self.members = len(initial)
        self.kernels = [
            tf.Variable(np.stack([m[i][0] for m in initial]), name=f"kernel_{i}")
            for i in range(len(initial[0]))
        ]
        self.biases = [
            tf.Variable(np.stack([m[i][1] for m in initial]), name=f"bias_{i}")
            for i in range(len(initial[0]))
        ]
        self.variables = [v for pair in zip(self.kernels, self.biases, strict=True) for v in pair]
        self.optimizer = network.optimizer(train_cfg.optimizer, train_cfg.learning_rate)
        self.optimizer.build(self.variables)
        self.hidden_activation = network.activation(model_cfg.activation)
        self.output_activation = network.activation(model_cfg.output_activation)
        self.loss_fn = keras.losses.get(network.loss(train_cfg.loss))
        self.x_train = tf.constant(data.x_train)
        self.y_train = tf.constant(data.y_train)
        self.x_test = tf.constant(data.x_test)
        self.y_test = tf.constant(data.y_test)
        self.run_epoch = tf.function(self._epoch)

    def train(self, seeds: list[int]) -> list[MemberResult]:
        """Train every member for all epochs; members that diverge keep their own results."""
        epochs, n_train = self.cfg.epochs, len(self.data.x_train)
        # One Generator per member, drawn epoch by epoch: exactly batch_order(seed, n, epochs).
        generators = [np.random.default_rng(seed) for seed in seeds]
        train_loss = np.zeros((self.members, epochs), np.float32)
        test_loss = np.zeros((self.members, epochs), np.float32)
        diverged = np.zeros(self.members, np.int64)  # 1-based epoch, 0 = never
        frozen: dict[int, list[np.ndarray]] = {}  # weights of members when they diverged
        for epoch in range(epochs):
            order = np.stack([g.permutation(n_train).astype(np.int32) for g in generators])
            epoch_train, epoch_test = (t.numpy() for t in self.run_epoch(tf.constant(order)))
            train_loss[:, epoch], test_loss[:, epoch] = epoch_train, epoch_test
            finite = np.isfinite(epoch_train) & np.isfinite(epoch_test)
            newly = np.flatnonzero(~finite & (diverged == 0))
            if len(newly):
                diverged[newly] = epoch + 1
                # Like fit, which stops there: keep these weights and ignore later epochs.
                snapshot = [v.numpy()[newly] for v in self.variables]
                frozen.update({m: [a[i] for a in snapshot] for i, m in enumerate(newly)})
            if diverged.all():
                break
        weights = [v.numpy() for v in self.variables]
        results = []
        for index, seed in enumerate(seeds):
            arrays = frozen.get(index) or [a[index] for a in weights]
            stop = diverged[index] or epochs
            results.append(
                MemberResult(
                    seed,
                    [(arrays[i], arrays[i + 1]) for i in range(0, len(arrays), 2)],
                    [float(v) for v in train_loss[index, :stop]],
                    [float(v) for v in test_loss[index, :stop]],
                    int(diverged[index]) or None,
                )
            )
        return results

    def _forward(self, x: tf.Tensor) -> tf.Tensor:
        """Dense layers as Keras computes them: matmul, add the bias, activation."""
        last = len(self.kernels) - 1
        for index, (kernel, bias) in enumerate(zip(self.kernels, self.biases, strict=True)):
            x = tf.add(_matmul(x, kernel), bias[:, None, :])
            x = (self.output_activation if index == last else self.hidden_activation)(x)
        return x

    def _member_losses(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """Each member's mean loss over its batch, reduced as Keras's loss reduction does."""
        values = self.loss_fn(y, self._forward(x))  # [M, n]
        count = tf.cast(tf.shape(values)[1], values.dtype)
        return tf.math.divide_no_nan(tf.reduce_sum(values, axis=1), count)

    def _step(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            losses = self._member_losses(x, y)
            # The sum's gradient with respect to each member's loss is 1: its own gradient.
            total = tf.reduce_sum(losses)
        gradients = tape.gradient(total, self.variables)
        self.optimizer.apply_gradients(zip(gradients, self.variables, strict=True))
        return losses

    def _epoch(self, order: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """All steps of one epoch, each member's samples taken in its `order`, then the test loss.

        The train loss is what fit's loss tracker reports: the running sum of each batch's
        loss times its size, over the number of samples. The test loss is evaluate's on one
        batch of the whole test set, which goes through the same tracker.
        """
        batch = self.cfg.batch_size
        x, y = tf.gather(self.x_train, order), tf.gather(self.y_train, order)  # [M, n, 1]
        n_train = x.shape[1]
        full, rest = divmod(n_train, batch)
        # [M, steps, batch, 1]: indexing a step keeps static shapes inside the loop.
        x_steps = tf.reshape(x[:, : full * batch], [self.members, full, batch, x.shape[2]])
        y_steps = tf.reshape(y[:, : full * batch], [self.members, full, batch, y.shape[2]])
        total = tf.zeros([self.members], tf.float32)
        count = tf.zeros([], tf.float32)
        for step in tf.range(full):
            losses = self._step(x_steps[:, step], y_steps[:, step])
            total += losses * float(batch)
            count += float(batch)
        if rest:
            losses = self._step(x[:, full * batch :], y[:, full * batch :])
            total += losses * float(rest)
            count += float(rest)
        train_loss = tf.math.divide_no_nan(total, count)
        shape = [self.members, *self.x_test.shape]
        test = self._member_losses(
            tf.broadcast_to(self.x_test, shape), tf.broadcast_to(self.y_test, shape)
        )
        n_test = float(self.x_test.shape[0])
        test_total = tf.zeros([self.members], tf.float32) + test * n_test
        test_loss = tf.math.divide_no_nan(test_total, tf.zeros([]) + n_test)
        return train_loss, test_loss

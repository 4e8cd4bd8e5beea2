"""The batched engine: every member (seed) of a sweep cell trained at once, as one program.

Members' weights are stacked along a leading member axis (kernels [M, in, out], biases
[M, out]); one tf.function runs an epoch of training steps for all of them. Each member
sees its own batches, drawn from its own permutation (`batch_order`), and its loss is its
own mean over its batch; the per-member losses are summed, so each member's gradient is
exactly its own. The configured Keras optimizer updates the stacked variables, which is
exact for elementwise optimizers (adam, sgd, rmsprop, adagrad): every weight's update
depends on that weight's gradient history only.

The result equals `model.fit` (the keras engine) bit for bit, weights and losses alike, on
TensorFlow's CPU kernels. Two things about those kernels need care, because a member's
numbers sit in a bigger tensor here than in its own Keras model:

- TensorFlow picks its matmul kernel by shape. Keras multiplies a batch by a layer's kernel
  with a 2-D MatMul; a stacked [M, n, in] @ [M, in, out] product runs through a kernel that
  sums in another order, unless one of n, in, out is 1 or n * in * out > 128 * 128 (then
  each matrix goes through the 2-D kernel). Inputs and outputs have one unit here, so only
  hidden-to-hidden layers are affected. Those multiply groups of members at once
  (`_grouped_matmul`): a group's activations side by side, [n, g * in], times its kernels
  on a block diagonal, [g * in, g * out], with g just large enough for the 2-D kernel.
  Each output then sums its member's terms in Keras's order plus exact zeros, and so do
  both gradients; this holds while no sum is longer than Eigen's depth block (320 terms
  here), so grouping is capped at MAX_GROUPED_DEPTH, beyond which members are multiplied
  one by one with 2-D matmuls. Activations stay grouped from one such layer to the next;
  the bias gradient is reduced in the stacked layout, where it sums as Keras's does. A
  member's inf or NaN would turn its group's zeros into NaN (0 * inf): an epoch in which
  one appears is trained again for the groups concerned, member by member (`_Trainer._redo`).
- Elementwise kernels run in SIMD packets (8 floats with AVX) and do a tensor's last
  size % 8 elements one by one, and some functions round differently in the two paths:
  exp-based activations (elu, selu, gelu, swish, softplus, sigmoid) and rsqrt, which
  TensorFlow's graph optimizer puts in place of Keras's x / sqrt(y) in adagrad and rmsprop.
  The optimizer also fuses some activations into Keras's matmul (MatMul + BiasAdd + Elu),
  where they run in yet other blocks. So layers with those activations run member by member
  as Keras writes them, 2-D matmul, bias, activation (`_dense_per_member`), and rsqrt is
  computed per element the way the member's own variable gets it (`rsqrt_as_keras`).

Member-by-member ops are exact but cost a few microseconds each, so nets that need them
train slower; nets with relu, leaky_relu, tanh or linear need none (grouped products waste
g times the flops of the members' own, which is cheap at these widths).

Memory is linear in the number of members: `bytes_per_member` estimates it from the tensor
sizes, and `train` splits the members into equal chunks that fit `train.memory_budget_mb`
(and hold at most MAX_MEMBERS_PER_CHUNK, beyond which vectorizing gains nothing), yielding
each chunk's results before the next one trains, so they are logged meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import cache

import numpy as np

from pipeline import network, numerics
from pipeline.choices import OPTIMIZERS
from pipeline.data import Dataset
from pipeline.engines import MemberResult

tf, keras = numerics.import_tensorflow()
log = logging.getLogger("deadunits")
ops = keras.ops

# Activations whose kernels round an element alike in SIMD packets and one by one (checked
# by tests/test_batched_engine.py on this TensorFlow build): they run on stacked tensors.
POSITION_FREE_ACTIVATIONS = ("relu", "leaky_relu", "tanh", "linear")
# TensorFlow's CPU BatchMatMul runs each matrix through the 2-D MatMul kernel above this cost.
MATMUL_PER_MATRIX_COST = 128 * 128
# Longest sum a block-diagonal product may have: Eigen's matmul cuts longer ones into blocks
# (of 320 terms here, always a multiple of 8) summed apart, and a cut could split a
# member's terms, which Keras sums in one go. Measured: exact up to 320, not from 321.
MAX_GROUPED_DEPTH = 128
# Bookkeeping per member outside the tensors: its numpy Generator, results, Python objects.
MEMBER_OVERHEAD_BYTES = 4096
# Traced graph per member-by-member op (the op, its gradient, TF's copies), measured.
GRAPH_BYTES_PER_MEMBER_OP = 40_000
# Member-by-member ops traced into one graph at most: bounds tracing time (~2 ms each).
MAX_MEMBER_OPS_PER_GRAPH = 10_000
# Members per chunk at most: the first results are logged while later chunks train.
# Measured on 4,096 members of the notebook net (2 cores): 531 runs/s in chunks of 512,
# 593 in chunks of 1024, 582 in one chunk; first results after 1.5, 2.5 and 7 s.
MAX_MEMBERS_PER_CHUNK = 512


@cache
def _warn_wide_layers() -> None:
    log.warning(
        "train.engine=batched: hidden layers wider than %d units sum their bias gradients in "
        "another order than Keras, so these runs may differ from train.engine=keras in the "
        "last bits (the probe at init is exact either way)",
        packet_size(),
    )


class UnsupportedConfig(ValueError):
    """A configuration the batched engine cannot reproduce exactly."""


def train(
    train_cfg, model_cfg, data: Dataset, seeds: list[int], initial: list
) -> Iterator[list[MemberResult]]:
    """Train all members in chunks that fit the memory budget; yield each chunk's results.

    Chunks are of equal size (the last one may be smaller), so one traced program serves
    them all.
    """
    check_supported(train_cfg)
    numerics.check_exact_engines()
    if not seeds:
        return
    shapes = [kernel.shape for kernel, _ in initial[0]]
    if any(fan_out > packet_size() for _, fan_out in shapes[:-1]):
        _warn_wide_layers()
    size = chunk_size(train_cfg, model_cfg, data, shapes, len(seeds))
    for start in range(0, len(seeds), size):
        members = initial[start : start + size]
        trainer = _reusable_trainer(train_cfg, model_cfg, data, shapes, len(members))
        yield trainer.train(seeds[start : start + size], members)


def chunk_size(train_cfg, model_cfg, data: Dataset, shapes, members: int) -> int:
    """Members per chunk: equal chunks that fit the memory budget."""
    fit = members_per_chunk(train_cfg, model_cfg, shapes, len(data.x_train), len(data.x_test))
    chunks = -(-members // min(fit, MAX_MEMBERS_PER_CHUNK))
    return -(-members // chunks)


def warm_up(train_cfg, model_cfg, data: Dataset, shapes, members: int) -> None:
    """Trace and run once the program that `train` will run for this many members, so its
    first chunk trains at once (tracing took over a second of the notebook net's first
    chunk). `train` sets every weight and optimizer slot before it trains."""
    check_supported(train_cfg)
    size = chunk_size(train_cfg, model_cfg, data, shapes, members)
    trainer = _reusable_trainer(train_cfg, model_cfg, data, shapes, size)
    trainer.run_epoch(tf.zeros([size, len(data.x_train)], tf.int32))


_last_trainer: dict[tuple, _Trainer] = {}


def _reusable_trainer(train_cfg, model_cfg, data: Dataset, shapes, members: int) -> _Trainer:
    """The trainer of the previous chunk, or of the previous job in this process, when it
    trains the same program: tracing a deep net's epoch takes seconds, and a sweep's cells
    that differ only in the initializer or the seeds (adjacent in a sweep) share it. Only the
    last trainer is kept, so memory does not grow with the number of cells."""
    key = (
        repr(train_cfg),
        model_cfg.activation,
        model_cfg.output_activation,
        tuple(tuple(shape) for shape in shapes),
        members,
        data.digest(),
    )
    if key not in _last_trainer:
        _last_trainer.clear()
        _last_trainer[key] = _Trainer(train_cfg, model_cfg, data, shapes, members)
    return _last_trainer[key]


def check_supported(train_cfg) -> None:
    if train_cfg.optimizer not in OPTIMIZERS:
        raise UnsupportedConfig(
            f"train.optimizer: the batched engine cannot reproduce {train_cfg.optimizer!r} "
            f"exactly (only elementwise optimizers: {', '.join(OPTIMIZERS)}); "
            "use train.engine=keras"
        )


def bytes_per_member(
    shapes: list[tuple[int, int]],
    n_train: int,
    n_test: int,
    batch_size: int,
    optimizer: str,
    member_ops: int = 0,
    grouped: int = 0,
) -> int:
    """Estimated peak bytes one member adds to a chunk (float32 = 4 bytes):

    4 * [(4 + slots) * P + 6 * batch_size * U + 4 * n_test * U + B] + 36 * n_train
      + G * member_ops + MEMBER_OVERHEAD_BYTES

    P = weights and biases, slots = optimizer slot variables per weight, U = units in all
    layers. Weights, gradients, two update temporaries and the slots; a step's
    pre-activations, activations and their gradients (6 * batch_size * U); the test forward
    pass with its broadcast inputs and targets (4 * n_test * U). Per training sample, each
    epoch holds the int64 permutation, two int32 copies of it, and the inputs and targets
    gathered in that order, once whole and once cut into steps (8 + 8 + 16 + 4 bytes rounded
    up). G * member_ops is the traced graph of ops that run member by member
    (`member_ops_per_member`). B = `grouped`, the floats of block-diagonal products
    (`grouped_floats`). Measured peak RSS grows by about 50 KB a member for the
    notebook net, which this puts at 83 KB: the estimate errs on the safe side.
    """
    params = sum(fan_in * fan_out + fan_out for fan_in, fan_out in shapes)
    units = sum(fan_out for _, fan_out in shapes)
    floats = (
        (4 + OPTIMIZERS[optimizer].slots) * params + 6 * batch_size * units + 4 * n_test * units
    )
    graph = GRAPH_BYTES_PER_MEMBER_OP * member_ops
    return 4 * (floats + grouped) + 36 * n_train + graph + MEMBER_OVERHEAD_BYTES


def grouped_floats(model_cfg, shapes, n_train: int, n_test: int, train_cfg) -> int:
    """Floats per member that block-diagonal products add (0 if none is grouped).

    A grouped layer of group size g holds a block-diagonal kernel (kept for the gradient),
    its broadcast source and the full h^T dy: 3 * g * in * out, the test pass 2 * g * in * out,
    in the batch shape that needs most. Each epoch also keeps two copies of the weights and
    slots in numpy, to train some members again (`_Trainer._redo`).
    """
    batch = train_cfg.batch_size
    rows = [(batch, True, 3), (n_train % batch, True, 3), (n_test, False, 2)]
    per_shape = []
    for n, training, copies in rows:
        groups = layer_groups(model_cfg, shapes, n, training)
        per_shape.append(copies * sum(g * i * o for g, (i, o) in zip(groups, shapes, strict=True)))
    if not any(per_shape):
        return 0
    params = sum(fan_in * fan_out + fan_out for fan_in, fan_out in shapes)
    return max(per_shape) + 2 * (1 + OPTIMIZERS[train_cfg.optimizer].slots) * params


def members_per_chunk(train_cfg, model_cfg, shapes, n_train: int, n_test: int) -> int:
    """How many members fit the memory budget (at least one)."""
    member_ops = member_ops_per_member(model_cfg, shapes, n_train, n_test, train_cfg.batch_size)
    grouped = grouped_floats(model_cfg, shapes, n_train, n_test, train_cfg)
    per_member = bytes_per_member(
        shapes, n_train, n_test, train_cfg.batch_size, train_cfg.optimizer, member_ops, grouped
    )
    size = int(train_cfg.memory_budget_mb * 2**20 // per_member)
    if member_ops:
        size = min(size, MAX_MEMBER_OPS_PER_GRAPH // member_ops)
    return max(1, size)


def member_ops_per_member(
    model_cfg, shapes, n_train: int, n_test: int, batch_size: int, grouped: bool = True
) -> int:
    """Ops each member adds to the graph because they must run member by member.

    Per layer and batch shape, in training: 3 matmuls (forward and two gradients), or 8 ops
    for a whole layer (matmul, bias and activation, their gradients); 1 or 3 for the test.
    Matmuls done in block-diagonal groups (`group_size`) add none.
    """
    row_counts = [
        (batch_size, True, 3, 8),
        (n_train % batch_size, True, 3, 8),
        (n_test, False, 1, 3),
    ]
    count = 0
    for layer, (fan_in, fan_out) in enumerate(shapes):
        last = layer == len(shapes) - 1
        name = model_cfg.output_activation if last else model_cfg.activation
        for rows, training, matmul_ops, layer_ops in row_counts:
            if rows == 0:
                continue
            if name not in POSITION_FREE_ACTIVATIONS:
                count += layer_ops
            elif not _batched_matmul_is_exact(rows, fan_in, fan_out) and not (
                grouped and group_size(rows, fan_in, fan_out, training)
            ):
                count += matmul_ops
    return count


def _batched_matmul_is_exact(rows: int, fan_in: int, fan_out: int) -> bool:
    """Whether a stacked matmul sums like Keras's 2-D MatMul (TensorFlow's CPU kernel choice)."""
    return min(rows, fan_in, fan_out) == 1 or rows * fan_in * fan_out > MATMUL_PER_MATRIX_COST


@cache
def packet_size() -> int:
    """Floats per SIMD packet in TensorFlow's CPU elementwise kernels (8 with AVX).

    Found where rsqrt of a tensor's last element switches from its one-by-one result
    (exactly 1 / sqrt) to its packet result, for a value whose two results differ.
    """
    with tf.init_scope():  # eager, even when first asked while tracing
        for value in np.random.default_rng(0).uniform(0.5, 50.0, 64).astype(np.float32):
            one_by_one = np.float32(1) / np.sqrt(value)
            if tf.math.rsqrt(tf.fill([64], value))[-1].numpy() == one_by_one:
                continue  # both paths agree on this value: it tells nothing
            for size in (1, 2, 4, 8, 16, 32, 64):
                if tf.math.rsqrt(tf.fill([size], value))[-1].numpy() != one_by_one:
                    return size
    return 1  # rsqrt rounds alike in both paths: no element needs the one-by-one result


def rsqrt_as_keras(y: tf.Tensor) -> tf.Tensor:
    """rsqrt of each member's block of stacked y [M, ...] as TensorFlow computes it on that
    block alone: in packets, except the block's last size % packet elements, one by one."""
    member_shape = y.shape[1:]
    size, packet = int(np.prod(member_shape)), packet_size()
    flat = tf.reshape(y, [-1])
    padded = tf.pad(flat, [[0, -flat.shape[0] % packet]])  # every element in a whole packet
    in_packets = tf.reshape(tf.math.rsqrt(padded)[: flat.shape[0]], tf.shape(y))
    # DivNoNan is not rewritten into rsqrt; y > 0 here, so it is exactly 1 / sqrt(y).
    one_by_one = tf.math.divide_no_nan(tf.ones_like(y), tf.sqrt(y))
    tail = (np.arange(size) >= size // packet * packet).reshape(1, *member_shape)
    return tf.where(tail, one_by_one, in_packets)


class _Adagrad(keras.optimizers.Adagrad):
    """Keras's Adagrad step, with its x / sqrt(y) as Keras's compiled graph computes it."""

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        accumulator = self._accumulators[self._get_variable_index(variable)]
        self.assign_add(accumulator, ops.square(gradient))
        denominator = ops.add(accumulator, self.epsilon)
        # Grappler rewrites x / sqrt(y) to x * rsqrt(y) in Keras's train function.
        self.assign_sub(
            variable, ops.multiply(ops.multiply(lr, gradient), rsqrt_as_keras(denominator))
        )


class _RMSprop(keras.optimizers.RMSprop):
    """Keras's RMSprop step (no momentum, not centered), x / sqrt(y) as in Keras's graph."""

    def update_step(self, gradient, variable, learning_rate):
        if self.momentum > 0 or self.centered:
            raise UnsupportedConfig("rmsprop with momentum or centered is not batched")
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        velocity = self._velocities[self._get_variable_index(variable)]
        rho = self.rho
        self.assign(
            velocity,
            ops.add(ops.multiply(rho, velocity), ops.multiply(1 - rho, ops.square(gradient))),
        )
        denominator = ops.add(velocity, self.epsilon)
        self.assign_sub(
            variable, ops.multiply(ops.multiply(lr, gradient), rsqrt_as_keras(denominator))
        )


def make_optimizer(name: str, learning_rate: float):
    """The configured Keras optimizer, with the same config; adagrad and rmsprop exact per member."""
    keras_optimizer = network.optimizer(name, learning_rate)
    exact = {"adagrad": _Adagrad, "rmsprop": _RMSprop}.get(name)
    return exact.from_config(keras_optimizer.get_config()) if exact else keras_optimizer


def _matmul(h: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """[M, n, in] @ [M, in, out], each member's product summed exactly as Keras's MatMul does.

    When the stacked kernel would sum in another order, multiply member by member with 2-D
    matmuls; their gradients are then 2-D matmuls too, the very ops Keras's gradient uses.
    """
    rows, fan_in, fan_out = h.shape[1], kernel.shape[1], kernel.shape[2]
    if _batched_matmul_is_exact(rows, fan_in, fan_out):
        return tf.matmul(h, kernel)
    pairs = zip(tf.unstack(h), tf.unstack(kernel), strict=True)
    return tf.stack([tf.matmul(a, w) for a, w in pairs])


def group_size(rows: int, fan_in: int, fan_out: int, training: bool) -> int:
    """Members per block-diagonal group: the fewest whose product takes TensorFlow's 2-D
    kernel; 0 if a sum would then be longer than MAX_GROUPED_DEPTH (rows sum in dW)."""
    if rows == 0:
        return 0
    group = 1
    while not _batched_matmul_is_exact(rows, group * fan_in, group * fan_out):
        group += 1
    depth = max(group * fan_in, group * fan_out, rows if training else 0)
    return group if depth <= MAX_GROUPED_DEPTH else 0


def layer_groups(model_cfg, shapes, rows: int, training: bool) -> list[int]:
    """Each layer's group size for a batch of `rows`; 0 where it is not grouped."""
    groups = []
    if rows == 0:
        return [0] * len(shapes)
    for layer, (fan_in, fan_out) in enumerate(shapes):
        last = layer == len(shapes) - 1
        name = model_cfg.output_activation if last else model_cfg.activation
        position_free = name in POSITION_FREE_ACTIVATIONS
        grouped = position_free and not _batched_matmul_is_exact(rows, fan_in, fan_out)
        groups.append(group_size(rows, fan_in, fan_out, training) if grouped else 0)
    return groups


def _grouped_matmul(h: tf.Tensor, kernel: tf.Tensor, group: int) -> tf.Tensor:
    """Grouped h [groups, n, group * in] @ each member's kernel [M, in, out], as one
    BatchMatMul by block-diagonal kernels [groups, group * in, group * out].

    Each output sums its member's terms in Keras's order, and exact zeros. The gradients are
    the same products transposed; dW is read off the diagonal blocks of h^T dy, whose sums
    run over rows and hold no zeros.
    """
    members = kernel.shape[0]

    @tf.custom_gradient
    def product(h, kernel):
        blocks = _block_diagonal(kernel, group)

        def gradient(dy):
            dh = tf.linalg.matmul(dy, blocks, adjoint_b=True)
            full = tf.linalg.matmul(h, dy, adjoint_a=True)
            return dh, _diagonal_blocks(full, group, members)

        return tf.linalg.matmul(h, blocks), gradient

    return product(h, kernel)


def _grouped_bias_add(x: tf.Tensor, bias: tf.Tensor, group: int) -> tf.Tensor:
    """Grouped x + each member's bias [M, out]. The bias gradient sums dy over rows in the
    stacked layout [M, n, out]: TensorFlow's reduction sums in another order when the
    inner dimension is group * out wide."""
    members = bias.shape[0]

    @tf.custom_gradient
    def add(x, bias):
        def gradient(dy):
            return dy, tf.reduce_sum(_from_groups(dy, group, members), axis=1)

        return tf.add(x, _to_groups(bias[:, None, :], group)), gradient

    return add(x, bias)


def _padded(t: tf.Tensor, group: int) -> tf.Tensor:
    """Zero members appended up to a whole number of groups."""
    return tf.pad(t, [[0, -t.shape[0] % group]] + [[0, 0]] * (t.shape.rank - 1))


def _to_groups(t: tf.Tensor, group: int) -> tf.Tensor:
    """[M, n, k] -> [groups, n, group * k]: the members of a group side by side."""
    t = _padded(t, group)
    split = tf.reshape(t, [-1, group, t.shape[1], t.shape[2]])
    return tf.reshape(tf.transpose(split, [0, 2, 1, 3]), [-1, t.shape[1], group * t.shape[2]])


def _from_groups(t: tf.Tensor, group: int, members: int) -> tf.Tensor:
    """[groups, n, group * k] -> [M, n, k], the inverse of `_to_groups`."""
    split = tf.reshape(t, [-1, t.shape[1], group, t.shape[2] // group])
    return tf.reshape(tf.transpose(split, [0, 2, 1, 3]), [-1, t.shape[1], t.shape[2] // group])[
        :members
    ]


def _block_diagonal(kernel: tf.Tensor, group: int) -> tf.Tensor:
    """[M, in, out] -> [groups, group * in, group * out], each group's kernels on the diagonal.

    The zeros are placed by a select, never as 0 * weight, which an infinite weight would
    turn into NaN.
    """
    kernel = _padded(kernel, group)
    fan_in, fan_out = kernel.shape[1], kernel.shape[2]
    shape = [kernel.shape[0] // group, group, fan_in, group, fan_out]
    wide = tf.broadcast_to(tf.reshape(kernel, [-1, group, fan_in, 1, fan_out]), shape)
    diagonal = np.eye(group, dtype=bool).reshape(1, group, 1, group, 1)
    blocks = tf.where(diagonal, wide, tf.zeros_like(wide))
    return tf.reshape(blocks, [-1, group * fan_in, group * fan_out])


def _diagonal_blocks(blocks: tf.Tensor, group: int, members: int) -> tf.Tensor:
    """[groups, group * in, group * out] -> the [M, in, out] blocks on its diagonal."""
    fan_in, fan_out = blocks.shape[1] // group, blocks.shape[2] // group
    split = tf.reshape(blocks, [-1, group, fan_in, group, fan_out])
    pairs = tf.reshape(tf.transpose(split, [0, 1, 3, 2, 4]), [-1, group * group, fan_in, fan_out])
    diagonal = tf.gather(pairs, np.arange(group) * (group + 1), axis=1)
    return tf.reshape(diagonal, [-1, fan_in, fan_out])[:members]


def _finite_members(grouped: tf.Tensor, group: int, members: int) -> tf.Tensor:
    """[M] bool: whether each member's values in grouped [groups, n, group * k] are finite."""
    split = tf.reshape(grouped, [-1, grouped.shape[1], group, grouped.shape[2] // group])
    return tf.reshape(tf.reduce_all(tf.math.is_finite(split), axis=[1, 3]), [-1])[:members]


def _dense_per_member(name: str, members: list, kernel: tf.Tensor, bias: tf.Tensor) -> list:
    """A Dense layer member by member, the ops Keras's Dense writes on one model's [rows, in]:
    TensorFlow's graph optimizer then treats (fuses, rounds) them as it treats Keras's."""
    activation = network.activation(name)
    weights = zip(members, tf.unstack(kernel), tf.unstack(bias), strict=True)
    return [activation(ops.add(ops.matmul(x, w), b)) for x, w, b in weights]  # as Dense.call


class _Trainer:
    """A chunk of members trained together: stacked variables, one optimizer, one traced epoch.

    It trains chunk after chunk of the same size, each from its own initial weights and a
    fresh optimizer state.
    """

    def __init__(
        self, train_cfg, model_cfg, data: Dataset, shapes, members: int, grouped: bool = True
    ):
        self.cfg = train_cfg
        self.model_cfg = model_cfg
        self.data = data
        self.shapes = shapes
        self.members = members
        # Group size of each layer per (rows, training); all 0 when not grouped.
        n_train, batch = len(data.x_train), train_cfg.batch_size
        self.groups = {
            (rows, training): layer_groups(model_cfg, shapes, rows, training)
            if grouped
            else [0] * len(shapes)
            for rows, training in (
                (batch, True),
                (n_train % batch, True),
                (len(data.x_test), False),
            )
            if rows
        }
        self.exact_trainers: dict[int, _Trainer] = {}  # ungrouped, by size: see `_redo`
        self.kernels = [
            tf.Variable(tf.zeros([members, fan_in, fan_out]), name=f"kernel_{i}")
            for i, (fan_in, fan_out) in enumerate(shapes)
        ]
        self.biases = [
            tf.Variable(tf.zeros([members, fan_out]), name=f"bias_{i}")
            for i, (_, fan_out) in enumerate(shapes)
        ]
        self.variables = [v for pair in zip(self.kernels, self.biases, strict=True) for v in pair]
        self.optimizer = make_optimizer(train_cfg.optimizer, train_cfg.learning_rate)
        self.optimizer.build(self.variables)
        # Slots, step count and learning rate as built: restored before every chunk.
        self.fresh_optimizer = [v.numpy() for v in self.optimizer.variables]
        self.hidden_activation = model_cfg.activation
        self.output_activation = model_cfg.output_activation
        self.loss_fn = keras.losses.get(network.loss(train_cfg.loss))
        self.x_train = tf.constant(data.x_train)
        self.y_train = tf.constant(data.y_train)
        self.x_test = tf.constant(data.x_test)
        self.y_test = tf.constant(data.y_test)
        self.run_epoch = tf.function(self._epoch)

    def train(self, seeds: list[int], initial: list) -> list[MemberResult]:
        """Train every member for all epochs; members that diverge keep their own results."""
        for layer, (kernel, bias) in enumerate(zip(self.kernels, self.biases, strict=True)):
            kernel.assign(np.stack([member[layer][0] for member in initial]))
            bias.assign(np.stack([member[layer][1] for member in initial]))
        for variable, value in zip(self.optimizer.variables, self.fresh_optimizer, strict=True):
            variable.assign(value)
        epochs, n_train = self.cfg.epochs, len(self.data.x_train)
        # One Generator per member, drawn epoch by epoch: exactly batch_order(seed, n, epochs).
        generators = [np.random.default_rng(seed) for seed in seeds]
        train_loss = np.zeros((self.members, epochs), np.float32)
        test_loss = np.zeros((self.members, epochs), np.float32)
        diverged = np.zeros(self.members, np.int64)  # 1-based epoch, 0 = never
        frozen: dict[int, list[np.ndarray]] = {}  # weights of members when they diverged
        for epoch in range(epochs):
            order = np.stack([g.permutation(n_train).astype(np.int32) for g in generators])
            start = self._start() if self._grouped() else None
            outputs = self.run_epoch(tf.constant(order))
            epoch_train, epoch_test, test_finite = (t.numpy() for t in outputs)
            if start is not None:
                redo = self._members_to_redo(epoch_train, epoch_test, test_finite)
                if len(redo):
                    self._redo(redo, start, order, epoch_train, epoch_test)
            train_loss[:, epoch], test_loss[:, epoch] = epoch_train, epoch_test
            finite = np.isfinite(epoch_train) & np.isfinite(epoch_test)
            newly = np.flatnonzero(~finite & (diverged == 0))
            if len(newly):
                diverged[newly] = epoch + 1
                # Like fit, which stops there: keep these weights and ignore later epochs.
                snapshot = [v.numpy()[newly] for v in self.variables]
                frozen.update({m: [a[i] for a in snapshot] for i, m in enumerate(newly)})
                if start is not None:  # their inf and NaN would make their groups redo
                    self._set_members(newly, [np.zeros_like(a[newly]) for a in start[0]])
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

    def _grouped(self) -> bool:
        return any(any(groups) for groups in self.groups.values())

    def _member_state(self) -> list[tf.Variable]:
        """Variables with a member axis: weights, biases and optimizer slots."""
        slots = [v for v in self.optimizer.variables if len(v.shape) > 0]
        return self.variables + slots

    def _state(self) -> list[np.ndarray]:
        return [v.numpy() for v in self._member_state()]

    def _scalars(self) -> list[tf.Variable]:
        """Optimizer variables shared by all members: step count, learning rate."""
        return [v for v in self.optimizer.variables if len(v.shape) == 0]

    def _start(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Everything an epoch starts from, to train some members' epoch again."""
        return self._state(), [v.numpy() for v in self._scalars()]

    def _set_members(self, indices: np.ndarray, values: list[np.ndarray]) -> None:
        for variable, value in zip(self._member_state(), values, strict=True):
            array = variable.numpy()
            array[indices] = value
            variable.assign(array)

    def _members_to_redo(self, train_loss, test_loss, test_finite) -> np.ndarray:
        """Members whose epoch may be wrong: those with inf or NaN, which turn the zeros of
        their groups' products into NaN (0 * inf), and everyone grouped with them.

        An inf or NaN entering a grouped product in training shows in that member's kernel
        gradient (h^T dy) and so in its weights or slots; in the test pass it is checked as
        it enters (`test_finite`).
        """
        bad = ~(np.isfinite(train_loss) & np.isfinite(test_loss) & test_finite)
        for array in self._state():
            bad |= ~np.isfinite(array.reshape(self.members, -1)).all(axis=1)
        redo = np.zeros(self.members, bool)
        index = np.arange(self.members)
        for group in {g for groups in self.groups.values() for g in groups if g}:
            redo |= np.isin(index // group, index[bad] // group)
        return np.flatnonzero(redo)

    def _redo(self, redo, start, order, train_loss, test_loss) -> None:
        """Train the `redo` members' epoch again from `start`, member by member (exact
        whatever their values), in place of their grouped results."""
        data, batch = self.data, self.cfg.batch_size
        member_ops = member_ops_per_member(
            self.model_cfg, self.shapes, len(data.x_train), len(data.x_test), batch, grouped=False
        )
        size = max(1, MAX_MEMBER_OPS_PER_GRAPH // max(member_ops, 1))
        arrays, scalars = start
        for first in range(0, len(redo), size):
            part = redo[first : first + size]
            if len(part) not in self.exact_trainers:
                self.exact_trainers[len(part)] = _Trainer(
                    self.cfg, self.model_cfg, self.data, self.shapes, len(part), grouped=False
                )
            exact = self.exact_trainers[len(part)]
            for variable, value in zip(exact._member_state(), arrays, strict=True):
                variable.assign(value[part])
            for variable, value in zip(exact._scalars(), scalars, strict=True):
                variable.assign(value)
            outputs = exact.run_epoch(tf.constant(order[part]))
            train_loss[part], test_loss[part], _ = (t.numpy() for t in outputs)
            self._set_members(part, exact._state())

    def _forward(self, x: tf.Tensor, training: bool, checks: list | None = None) -> tf.Tensor:
        """Dense layers as Keras computes them: matmul, add the bias, activation.

        Layers with position-free activations run on stacked tensors, in block-diagonal
        groups where a stacked matmul would sum in another order (`_grouped_matmul`; the
        activations stay grouped from one such layer to the next), others member by member
        (`_dense_per_member`; `members` holds the per-member tensors between them).
        `checks` collects, per grouped product, whether each member's input is finite.
        """
        last = len(self.kernels) - 1
        groups = self.groups[(x.shape[1], training)]
        members = None
        layout = 0  # group size of x's grouped layout, 0 when stacked
        for index, (kernel, bias) in enumerate(zip(self.kernels, self.biases, strict=True)):
            name = self.output_activation if index == last else self.hidden_activation
            if name not in POSITION_FREE_ACTIVATIONS:
                if layout:
                    x, layout = _from_groups(x, layout, self.members), 0
                members = _dense_per_member(
                    name, members if members is not None else tf.unstack(x), kernel, bias
                )
                continue
            x, members = tf.stack(members) if members is not None else x, None
            group = groups[index]
            if group != layout:
                x = _from_groups(x, layout, self.members) if layout else x
                x, layout = _to_groups(x, group) if group else x, group
            if group:
                if checks is not None:
                    checks.append(_finite_members(x, group, self.members))
                x = _grouped_bias_add(_grouped_matmul(x, kernel, group), bias, group)
            else:
                x = tf.add(_matmul(x, kernel), bias[:, None, :])
            x = network.activation(name)(x)
        if members is not None:
            return tf.stack(members)
        return _from_groups(x, layout, self.members) if layout else x

    def _member_losses(
        self, x: tf.Tensor, y: tf.Tensor, training: bool, checks: list | None = None
    ) -> tf.Tensor:
        """Each member's mean loss over its batch, reduced as Keras's loss reduction does."""
        values = self.loss_fn(y, self._forward(x, training, checks))  # [M, n]
        count = tf.cast(tf.shape(values)[1], values.dtype)
        return tf.math.divide_no_nan(tf.reduce_sum(values, axis=1), count)

    def _step(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            losses = self._member_losses(x, y, training=True)
            # The sum's gradient with respect to each member's loss is 1: its own gradient.
            total = tf.reduce_sum(losses)
        gradients = tape.gradient(total, self.variables)
        self.optimizer.apply_gradients(zip(gradients, self.variables, strict=True))
        return losses

    def _epoch(self, order: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """All steps of one epoch, each member's samples taken in its `order`, then the test loss
        (and whether each member's values entering grouped products in the test were finite).

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
        checks = [tf.ones([self.members], tf.bool)]
        test = self._member_losses(
            tf.broadcast_to(self.x_test, shape),
            tf.broadcast_to(self.y_test, shape),
            training=False,
            checks=checks,
        )
        n_test = float(self.x_test.shape[0])
        test_total = tf.zeros([self.members], tf.float32) + test * n_test
        test_loss = tf.math.divide_no_nan(test_total, tf.zeros([]) + n_test)
        return train_loss, test_loss, tf.reduce_all(tf.stack(checks), axis=0)

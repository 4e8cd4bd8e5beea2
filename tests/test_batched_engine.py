"""The batched engine against the keras engine, run for run; chunking, divergence, the CLI.

Equality is exact: the same initial weights and batch order give final weights with max abs
difference 0 and the same per-epoch losses (see the docstring of pipeline.engines.batched
for what that takes on TensorFlow's CPU kernels).
"""

from __future__ import annotations

import itertools
from collections import Counter

import keras
import numpy as np
import pytest
import tensorflow as tf
from mlflow import MlflowClient
from omegaconf import OmegaConf

from pipeline.data import make_identity_data
from pipeline.engines import batched, each_member, keras_fit
from pipeline.forward import ACTIVATIONS
from pipeline.initializers import KERAS_INITIALIZERS, initial_weights_for_seeds, layer_shapes
from tests.conftest import run_cli

# 160 training samples: 6 batches of 25 and a last one of 10, as fit splits them.
DATA = make_identity_data(n_samples=200, low=0.0, high=1.0, test_size=0.2, seed=23)
PER_SWEEP = ("train.engine", "tracking.experiment", "tracking.writer")  # differ by design
RAI = {"name": "rai", "beta_a": 2.0, "beta_b": 1.0, "std": 0.6007}


def configs(
    hidden, activation="relu", optimizer="adam", loss="mae", lr=1e-3, output="linear", **train
):
    train_cfg = OmegaConf.create(
        {
            "epochs": 2,
            "batch_size": 25,
            "optimizer": optimizer,
            "learning_rate": lr,
            "loss": loss,
            "memory_budget_mb": 1024,
            **train,
        }
    )
    model_cfg = OmegaConf.create(
        {"hidden_sizes": hidden, "activation": activation, "output_activation": output}
    )
    return train_cfg, model_cfg


def weights_for(init: str, hidden, seeds, bias_init=0.0):
    init_cfg = RAI if init == "rai" else {"name": init}
    return initial_weights_for_seeds(init_cfg, layer_shapes(1, hidden, 1), bias_init, seeds)


def assert_same_runs(reference, ours):
    assert [r.seed for r in ours] == [r.seed for r in reference]
    for ref, got in zip(reference, ours, strict=True):
        assert got.diverged_epoch == ref.diverged_epoch
        for (ref_kernel, ref_bias), (kernel, bias) in zip(
            ref.final_weights, got.final_weights, strict=True
        ):
            np.testing.assert_array_equal(kernel, ref_kernel)  # max abs difference 0
            np.testing.assert_array_equal(bias, ref_bias)
        np.testing.assert_allclose(got.train_loss, ref.train_loss, rtol=1e-6, atol=0)
        np.testing.assert_allclose(got.test_loss, ref.test_loss, rtol=1e-6, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("activation", "init", "hidden", "bias_init"),
    [
        ("relu", "glorot_uniform", [2], 0.0),  # the notebook net
        ("tanh", "he_normal", [3, 3], 0.1),
        ("linear", "legacy_tf2", [4, 4, 4], 0.0),
        ("gelu", "rai", [3, 3], 0.0),
        ("relu", "he_normal", [4, 4, 4], 0.1),
    ],
)
def test_same_runs_as_keras_over_architectures(activation, init, hidden, bias_init):
    seeds = [3, 11, 12]
    train_cfg, model_cfg = configs(hidden, activation)
    weights = weights_for(init, hidden, seeds, bias_init)
    ours = each_member(batched.train(train_cfg, model_cfg, DATA, seeds, weights))
    # A member inside the stack (keras fit is the slow part of this file).
    reference = each_member(keras_fit.train(train_cfg, model_cfg, DATA, [seeds[1]], [weights[1]]))
    assert_same_runs(list(reference), [ours[1]])


# Known gap, older than grouping: a member's bias gradient, TensorFlow's Sum over the rows of
# its own [25, 10] dy, adds the rows in blocks, while the stacked [M, 25, 10] Sum adds them
# one after the other, so 10 units wide the biases differ in the last bit.
WIDE_BIAS_GRADIENT = pytest.mark.xfail(
    strict=True, reason="stacked bias gradient sums rows in another order from 10 units"
)


# Deep narrow nets: every hidden-to-hidden product runs in block-diagonal member groups
# (13 members for width 2, 7 for 4, 3 for 10 in batches of 25; other sizes for the last
# batch of 10 and the test set of 40), the activations grouped from layer to layer.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("hidden", "activation", "init", "epochs"),
    [
        ([2] * 20, "relu", "he_normal", 1),
        ([4] * 7, "relu", "rai", 2),
        ([4] * 7, "tanh", "he_normal", 1),
        ([3] * 10, "leaky_relu", "rai", 1),
        pytest.param([10] * 5, "relu", "he_normal", 1, marks=WIDE_BIAS_GRADIENT),
    ],
)
def test_same_runs_as_keras_for_deep_nets(hidden, activation, init, epochs):
    seeds = list(range(16))  # 16 members: two groups of 13 or 7, six of 3
    train_cfg, model_cfg = configs(hidden, activation, epochs=epochs)
    weights = weights_for(init, hidden, seeds)
    ours = each_member(batched.train(train_cfg, model_cfg, DATA, seeds, weights))
    compared = [4, 14]  # inside a first group, and past it
    reference = each_member(
        keras_fit.train(
            train_cfg, model_cfg, DATA, [seeds[i] for i in compared], [weights[i] for i in compared]
        )
    )
    assert_same_runs(list(reference), [ours[i] for i in compared])


@pytest.mark.parametrize(("rows", "fan_in", "fan_out"), [(25, 2, 2), (10, 4, 4), (40, 10, 3)])
def test_grouped_matmul_sums_as_2d_matmuls(rows, fan_in, fan_out):
    """Product and both gradients, member by member, bit for bit those of 2-D MatMuls."""
    rng = np.random.default_rng(rows)
    group = batched.group_size(rows, fan_in, fan_out, training=True)
    assert group > 1
    members = 2 * group + 1  # the last group is padded with zero members
    h = tf.constant(rng.uniform(0, 2, (members, rows, fan_in)).astype(np.float32))
    kernel = tf.constant(rng.normal(0, 1, (members, fan_in, fan_out)).astype(np.float32))
    dy = tf.constant(rng.normal(0, 1, (members, rows, fan_out)).astype(np.float32))

    @tf.function
    def grouped(h, kernel, dy):
        with tf.GradientTape() as tape:
            tape.watch([h, kernel])
            product = batched._grouped_matmul(batched._to_groups(h, group), kernel, group)
            product = batched._from_groups(product, group, members)
            total = tf.reduce_sum(product * dy)
        return product, *tape.gradient(total, [h, kernel])

    @tf.function
    def one_by_one(h, kernel, dy):
        h, kernel, dy = tf.unstack(h), tf.unstack(kernel), tf.unstack(dy)
        pairs = list(zip(h, kernel, dy, strict=True))
        products = [tf.matmul(a, w) for a, w, _ in pairs]
        dh = [tf.matmul(d, w, transpose_b=True) for _, w, d in pairs]
        dw = [tf.matmul(a, d, transpose_a=True) for a, _, d in pairs]
        return tf.stack(products), tf.stack(dh), tf.stack(dw)

    for got, expected in zip(grouped(h, kernel, dy), one_by_one(h, kernel, dy), strict=True):
        np.testing.assert_array_equal(got.numpy(), expected.numpy())


# Every optimizer with every loss; the hidden activation cycles through all ten, and every
# other case puts it on the output unit too.
OPTIMIZER_LOSS_ACTIVATION = [
    (optimizer, loss, activation, activation if index % 2 else "linear")
    for index, ((optimizer, loss), activation) in enumerate(
        zip(
            itertools.product(("adam", "sgd", "rmsprop", "adagrad"), ("mae", "mse", "huber")),
            itertools.cycle(ACTIVATIONS),
        )
    )
]


@pytest.mark.slow
@pytest.mark.parametrize(("optimizer", "loss", "activation", "output"), OPTIMIZER_LOSS_ACTIVATION)
def test_same_runs_as_keras_for_every_optimizer_loss_and_activation(
    optimizer, loss, activation, output
):
    """The compared member sits between two others: its numbers take other places in the
    stacked tensors than in its own model, where kernels may round differently."""
    # [3, 3] has a hidden-to-hidden layer, the case that needs member-by-member matmuls.
    # One epoch keeps the file fast; epoch boundaries are checked over the architectures.
    train_cfg, model_cfg = configs(
        [3, 3], activation, optimizer, loss, lr=0.01, output=output, epochs=1
    )
    seeds = [5, 7, 9]
    weights = weights_for("he_normal", [3, 3], seeds)
    ours = each_member(batched.train(train_cfg, model_cfg, DATA, seeds, weights))
    reference = each_member(keras_fit.train(train_cfg, model_cfg, DATA, [7], [weights[1]]))
    assert_same_runs(list(reference), [ours[1]])


def test_rsqrt_as_keras_matches_each_members_own_rsqrt():
    values = np.random.default_rng(0).uniform(0.01, 10.0, (5, 3, 3)).astype(np.float32)
    stacked = batched.rsqrt_as_keras(tf.constant(values)).numpy()
    for member, block in zip(stacked, values, strict=True):
        np.testing.assert_array_equal(member, tf.math.rsqrt(tf.constant(block)).numpy())


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "adagrad"])  # zero and nonzero initial slots
def test_chunks_give_the_same_results_as_one_chunk(optimizer):
    seeds = list(range(5))
    weights = weights_for("glorot_uniform", [3, 3], seeds)
    train_cfg, model_cfg = configs([3, 3], optimizer=optimizer)
    shapes = [(1, 3), (3, 3), (3, 1)]
    member_ops = batched.member_ops_per_member(model_cfg, shapes, 160, 40, 25)
    per_member = batched.bytes_per_member(shapes, 160, 40, 25, optimizer, member_ops)
    small = OmegaConf.merge(train_cfg, {"memory_budget_mb": 2.5 * per_member / 2**20})
    assert batched.members_per_chunk(small, model_cfg, shapes, 160, 40) == 2
    whole = each_member(batched.train(train_cfg, model_cfg, DATA, seeds, weights))
    chunked = each_member(batched.train(small, model_cfg, DATA, seeds, weights))
    assert_same_runs(whole, chunked)


@pytest.mark.slow
def test_the_next_cell_reuses_the_trainer_and_trains_as_a_new_one():
    """Cells that differ in the initializer only share one traced program (lu2019_depth)."""
    train_cfg, model_cfg = configs([4, 4, 4], optimizer="adagrad")  # nonzero initial slots
    seeds = [0, 1, 2]
    batched._last_trainer.clear()
    each_member(
        batched.train(train_cfg, model_cfg, DATA, seeds, weights_for("he_normal", [4, 4, 4], seeds))
    )
    (trainer,) = batched._last_trainer.values()
    rai = weights_for("rai", [4, 4, 4], seeds)
    reused = each_member(batched.train(train_cfg, model_cfg, DATA, seeds, rai))
    assert list(batched._last_trainer.values()) == [trainer]
    batched._last_trainer.clear()
    fresh = each_member(batched.train(train_cfg, model_cfg, DATA, seeds, rai))
    assert list(batched._last_trainer.values()) != [trainer]
    assert_same_runs(fresh, reused)


@pytest.mark.slow
@pytest.mark.parametrize("hidden", [[2], [4, 4, 4]])
def test_a_warmed_up_program_is_the_one_trained_and_trains_as_a_new_one(hidden):
    """A sweep traces its first job's program ahead of the job (`batched.warm_up`)."""
    train_cfg, model_cfg = configs(hidden, optimizer="adagrad")  # nonzero initial slots
    seeds = [0, 1, 2]
    weights = weights_for("he_normal", hidden, seeds)
    batched._last_trainer.clear()
    fresh = each_member(batched.train(train_cfg, model_cfg, DATA, seeds, weights))
    batched._last_trainer.clear()
    batched.warm_up(train_cfg, model_cfg, DATA, layer_shapes(1, hidden, 1), len(seeds))
    (warmed,) = batched._last_trainer.values()
    trained = each_member(batched.train(train_cfg, model_cfg, DATA, seeds, weights))
    assert list(batched._last_trainer.values()) == [warmed]
    assert_same_runs(fresh, trained)


@pytest.mark.slow
def test_a_diverging_member_does_not_touch_the_others():
    seeds = [0, 1, 2]
    train_cfg, model_cfg = configs([2], "relu", "adam", "mse")
    weights = weights_for("glorot_uniform", [2], seeds)
    # Huge weights overflow: inf loss, then inf gradients and NaN weights under Adam.
    weights[1] = [(np.full_like(k, 1e30), b) for k, b in weights[1]]
    together = each_member(batched.train(train_cfg, model_cfg, DATA, seeds, weights))
    assert [r.diverged_epoch for r in together] == [None, 1, None]
    assert len(together[1].train_loss) == 1 and not np.isfinite(together[1].train_loss[0])
    alone = each_member(batched.train(train_cfg, model_cfg, DATA, [0, 2], [weights[0], weights[2]]))
    assert_same_runs(alone, [together[0], together[2]])
    (reference,) = each_member(keras_fit.train(train_cfg, model_cfg, DATA, [1], [weights[1]]))
    assert reference.diverged_epoch == 1


@pytest.mark.slow
def test_a_diverging_member_does_not_touch_its_group():
    """Its inf and NaN would spread through the group's block-diagonal products: the
    epoch is trained again member by member for that group, so all stay exact."""
    seeds = [0, 1, 2, 3]  # one group of 7 members in batches of 25
    hidden = [4, 4, 4]
    train_cfg, model_cfg = configs(hidden, "relu", "adam", "mse")
    weights = weights_for("he_normal", hidden, seeds)
    weights[2] = [(np.full_like(k, 1e12), b) for k, b in weights[2]]  # overflows in layer 4
    together = each_member(batched.train(train_cfg, model_cfg, DATA, seeds, weights))
    assert [r.diverged_epoch for r in together] == [None, None, 1, None]
    reference = each_member(keras_fit.train(train_cfg, model_cfg, DATA, seeds[1:3], weights[1:3]))
    assert_same_runs(list(reference), together[1:3])
    alone = each_member(batched.train(train_cfg, model_cfg, DATA, [0, 3], [weights[0], weights[3]]))
    assert_same_runs(alone, [together[0], together[3]])


def test_refuses_an_optimizer_it_cannot_batch_exactly():
    train_cfg, _ = configs([2], optimizer="lion")
    with pytest.raises(batched.UnsupportedConfig, match="train.optimizer: .*'lion'"):
        each_member(
            batched.train(train_cfg, None, DATA, [0], weights_for("glorot_uniform", [2], [0]))
        )


def test_chunks_fit_the_memory_budget_and_grow_linearly():
    shapes = [(1, 2), (2, 1)]
    per_member = batched.bytes_per_member(shapes, 1600, 400, 25, "adam")
    train_cfg, model_cfg = configs([2], memory_budget_mb=64)
    size = batched.members_per_chunk(train_cfg, model_cfg, shapes, 1600, 400)
    assert size * per_member <= 64 * 2**20 < (size + 1) * per_member
    double = OmegaConf.merge(train_cfg, {"memory_budget_mb": 128})
    assert batched.members_per_chunk(double, model_cfg, shapes, 1600, 400) in (
        2 * size,
        2 * size + 1,
    )


@pytest.mark.parametrize("name", KERAS_INITIALIZERS)
def test_fast_keras_initializers_match_building_the_model(name):
    """Drawn for many seeds at once, yet bit for bit the model built under each seed."""
    shapes = layer_shapes(1, [3, 2], 1)
    seeds = [0, 7, 2**31 - 1]
    ours = initial_weights_for_seeds({"name": name}, shapes, 0.0, seeds)
    for seed, weights in zip(seeds, ours, strict=True):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential(
            [keras.Input((1,))]
            + [keras.layers.Dense(out, kernel_initializer=name) for _, out in shapes]
        )
        kernels = [w for w in model.get_weights() if w.ndim == 2]
        for (kernel, _), reference in zip(weights, kernels, strict=True):
            np.testing.assert_array_equal(kernel, reference)


@pytest.mark.slow
def test_batched_sweep_logs_the_keras_schema_and_values(store):
    """20 seeds as one batched job: 20 FINISHED runs under one parent, each with the schema
    and, for the seeds both engines ran, the very values of the keras engine."""
    batched_run = run_cli(
        "-m", "seed=range(0,20)", "train.engine=batched", "train.epochs=1", f"tracking.uri={store}"
    )
    assert batched_run.returncode == 0, batched_run.stderr[-3000:]
    keras_run = run_cli(
        "-m",
        "seed=0",
        "train.engine=keras",
        "train.epochs=1",
        "tracking.experiment=keras_reference",
        f"tracking.uri={store}",
    )
    assert keras_run.returncode == 0, keras_run.stderr[-3000:]

    client = MlflowClient(store)
    ours, (parent,) = runs_by_role(client, "deadunits")
    reference, _ = runs_by_role(client, "keras_reference")
    assert len(ours) == 20 and Counter(r.info.status for r in ours) == {"FINISHED": 20}
    assert parent.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in ours} == {parent.info.run_id}
    assert sorted(int(r.data.params["seed"]) for r in ours) == list(range(20))
    assert {r.data.tags["engine"] for r in ours} == {"batched"}

    by_seed = {r.data.params["seed"]: r for r in ours}
    for ref in reference:
        run = by_seed[ref.data.params["seed"]]
        assert run.data.metrics == ref.data.metrics  # the same values, not only the same keys
        assert {k: v for k, v in run.data.params.items() if k not in PER_SWEEP} == {
            k: v for k, v in ref.data.params.items() if k not in PER_SWEEP
        }
        assert set(run.data.tags) == set(ref.data.tags)
        expected_artifacts = {"config.yaml", "initial_weights.json"}
        assert artifacts(client, run) == artifacts(client, ref) == expected_artifacts
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert [(h.step, h.value) for h in history] == [
            (h.step, h.value) for h in client.get_metric_history(ref.info.run_id, "train_loss")
        ]


def runs_by_role(client: MlflowClient, experiment: str):
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=1000)
    role = lambda name: [r for r in runs if r.data.tags.get("deadunits.role") == name]  # noqa: E731
    return role("run"), role("sweep")


def artifacts(client: MlflowClient, run) -> set[str]:
    return {a.path for a in client.list_artifacts(run.info.run_id)}

"""A job's per-run records: computed a chunk at a time, exactly as one run at a time."""

import numpy as np
import pytest

from pipeline import forward, schema
from pipeline.data import make_identity_data
from pipeline.engines import MemberResult
from pipeline.job import (
    Member,
    config_yaml_for_seeds,
    flat_to_nested,
    to_yaml,
    trained_records,
    untrained_records,
)
from pipeline.tracking import RunRecord, flat_config
from tests.test_config import compose_with


@pytest.mark.parametrize(
    ("activation", "hidden"), [("relu", "[2]"), ("tanh", "[10,10,10]"), ("relu", "[4,4,4,4,4]")]
)
def test_outcomes_of_a_chunk_equal_each_member_alone(activation, hidden):
    cfg = compose_with(f"model.activation={activation}", f"model.hidden_sizes={hidden}")
    data = make_identity_data(**cfg.data)
    sizes = [1, *cfg.model.hidden_sizes, 1]
    rng = np.random.default_rng(0)
    results, members = [], []
    for seed in range(37):
        weights = [
            (
                rng.normal(size=(a, b)).astype(np.float32),
                rng.normal(size=b).astype(np.float32),
            )
            for a, b in zip(sizes, sizes[1:], strict=False)
        ]
        diverged = 2 if seed % 9 == 4 else None
        results.append(MemberResult(seed, weights, [0.5, 0.25], [0.5, 0.3], diverged))
        members.append(Member(seed, f"key{seed}", weights, RunRecord(f"run{seed}", {}, {})))

    together = trained_records(cfg, members, results, data)
    for member, result, record in zip(members, results, together, strict=True):
        (alone,) = trained_records(cfg, [member], [result], data)
        assert alone.status == record.status and alone.tags == record.tags
        assert [(m.key, m.step, m.value) for m in alone.metrics] == [
            (m.key, m.step, m.value) for m in record.metrics
        ]
        assert alone.artifacts == record.artifacts
    assert sum(r.status == "FAILED" for r in together) == 4
    finished = next(r for r in together if r.status == "FINISHED")
    assert {schema.FINAL_TRAIN_LOSS, schema.FINAL_TEST_LOSS} <= {m.key for m in finished.metrics}
    # The final losses are the forward pass's, scored from the probe's own pass.
    member = members[together.index(finished)]
    act, out = cfg.model.activation, cfg.model.output_activation
    stacked = [(k[None], b[None]) for k, b in member.weights]
    expected = {
        schema.FINAL_TRAIN_LOSS: forward.predict(stacked, data.x_train, act, out),
        schema.FINAL_TEST_LOSS: forward.predict(stacked, data.x_test, act, out),
    }
    y = {schema.FINAL_TRAIN_LOSS: data.y_train, schema.FINAL_TEST_LOSS: data.y_test}
    logged = {m.key: m.value for m in finished.metrics}
    for key, prediction in expected.items():
        assert logged[key] == float(forward.loss(cfg.train.loss, prediction, y[key])[0])


def test_untrained_members_keep_their_probe_at_init():
    cfg = compose_with("model.hidden_sizes=[3]")
    data = make_identity_data(**cfg.data)
    weights = [
        (np.full((1, 3), -1.0, np.float32), np.zeros(3, np.float32)),
        (np.ones((3, 1), np.float32), np.zeros(1, np.float32)),
    ]
    members = [Member(0, "key0", weights, RunRecord("run0", {"seed": "0"}, {"a": "b"}))]
    (record,) = untrained_records(cfg, members, data, "KILLED", {})
    assert record.status == "KILLED" and record.params == {"seed": "0"}
    assert record.tags == {"a": "b", schema.TAG_DEAD_AT_INIT: "true"}
    logged = {m.key: m.value for m in record.metrics}
    assert logged[schema.dead_units("init")] == 3 and schema.FINAL_TRAIN_LOSS not in logged


def test_config_artifact_of_each_seed_is_its_own_config():
    flat = flat_config(compose_with("seed=3"))
    logged = {k: flat[k] for k in schema.run_params(flat, 3)}
    texts = config_yaml_for_seeds(logged, [3, 12345])
    assert texts[0] == to_yaml(flat_to_nested({**logged, "seed": 3}))
    assert texts[1] == texts[0].replace("seed: 3\n", "seed: 12345\n")

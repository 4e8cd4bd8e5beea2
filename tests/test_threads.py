"""A process that trains only batched nets of one hidden layer runs one inter-op thread
(`pipeline.numerics.plan_threads`); anything else keeps TensorFlow's threads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from pipeline import numerics
from tests.conftest import PROJECT_ROOT


def cfg(engine: str, hidden: list[int]):
    return OmegaConf.create({"train": {"engine": engine}, "model": {"hidden_sizes": hidden}})


@pytest.mark.parametrize(
    "cfgs, threads",
    [
        ([cfg("batched", [2])], 1),
        ([cfg("batched", [2]), cfg("batched", [10])], 1),
        ([cfg("batched", [2]), cfg("batched", [2, 2])], None),  # side-by-side matmuls
        ([cfg("keras", [2])], None),
        ([cfg("batched", [2]), cfg("keras", [2])], None),
    ],
)
def test_one_inter_op_thread_only_for_single_layer_batched_nets(cfgs, threads, monkeypatch):
    monkeypatch.delenv(numerics.INTER_OP_ENV, raising=False)
    assert numerics.inter_op_threads(cfgs) == threads


def test_a_users_setting_wins(monkeypatch):
    monkeypatch.setenv(numerics.INTER_OP_ENV, "2")
    assert numerics.inter_op_threads([cfg("batched", [2])]) is None


PROBE = """
import sys
from omegaconf import OmegaConf
from pipeline import numerics
plan = lambda hidden: numerics.plan_threads(
    [OmegaConf.create({"train": {"engine": "batched"}, "model": {"hidden_sizes": hidden}})]
)
order = sys.argv[1]
if order == "plan, import":
    plan([2])
    tf, _ = numerics.import_tensorflow()
elif order == "import, plan":
    tf, _ = numerics.import_tensorflow()
    plan([2])
elif order == "plan twice":
    plan([2, 2])
    plan([2])  # the first plan decides
    tf, _ = numerics.import_tensorflow()
else:  # the runtime started: too late, and no error
    tf, _ = numerics.import_tensorflow()
    tf.constant(1.0) + 1
    plan([2])
tf.constant(1.0) + 1
print(tf.config.threading.get_inter_op_parallelism_threads())
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "order, threads",
    [("plan, import", 1), ("import, plan", 1), ("plan twice", 0), ("runtime started", 0)],
)
def test_the_plan_takes_effect_until_the_runtime_starts(order, threads):
    env = {k: v for k, v in os.environ.items() if k != numerics.INTER_OP_ENV}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, order],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == str(threads)

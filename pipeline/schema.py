"""The MLflow contract: every name the pipeline writes and the analysis reads, and the rules
that derive a run's identity (config key, run name) and outcome. Pure Python, cheap to import.

Renaming a metric, a tag or a role is one edit here; tests check that the analysis reads
only names this module defines.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable

# ---------------------------------------------------------------- roles
ROLE_TAG = "deadunits.role"
ROLE_RUN, ROLE_SWEEP, ROLE_REPORT = "run", "sweep", "report"

# ---------------------------------------------------------------- tags
TAG_CONFIG_KEY = "config_key"
TAG_ENGINE = "engine"
TAG_DEAD_AT_INIT = "dead_at_init"  # "true"/"false": the flag users filter on
TAG_DIVERGED = "diverged"
TAG_DIVERGED_EPOCH = "diverged_epoch"
TAG_ERROR = "error"
TAG_SWEEP_ID = "sweep_id"
TAG_SWEEP_SIGNATURE = "deadunits.sweep_signature"
# On a report run: the sweep it covers, and that sweep's parent run.
TAG_REPORT_SWEEP_ID = "deadunits.report.sweep_id"
TAG_REPORT_SWEEP_RUN_ID = "deadunits.report.sweep_parent_run_id"
TAG_HOST = "deadunits.host"
TAG_PID = "deadunits.pid"
TAG_PROCESS_START = "deadunits.process_start"
# Under SLURM: the owning job as squeue/sacct/scancel name it (`ARRAY_TASK`, e.g. `41_3`, for
# an array task) and its array task index; a later sweep asks SLURM whether it is alive.
TAG_SLURM_JOB_ID = "deadunits.slurm_job_id"
TAG_SLURM_ARRAY_TASK_ID = "deadunits.slurm_array_task_id"
TAG_TENSORFLOW_VERSION = "tensorflow_version"
TAG_ONEDNN = "onednn"
# What a resume or a sweep's summary reads of existing runs besides their status:
# the owner tags (all `deadunits.*`) and the diverged flag.
OWNER_TAG_PREFIX = "deadunits."
RESUME_TAGS = (TAG_DIVERGED,)


def is_resume_tag(key: str) -> bool:
    return key.startswith(OWNER_TAG_PREFIX) or key in RESUME_TAGS


# MLflow's own tags.
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_NOTE = "mlflow.note.content"  # the run's description on its page in the UI

# ---------------------------------------------------------------- metrics
STAGES = ("init", "final")
TRAIN_LOSS, TEST_LOSS = "train_loss", "test_loss"  # per epoch, step = epoch from 1
FINAL_TRAIN_LOSS, FINAL_TEST_LOSS = "final_train_loss", "final_test_loss"
HIDDEN_UNITS = "hidden_units"


def dead_units(stage: str) -> str:
    return f"dead_units_{stage}"


def dead_fraction(stage: str) -> str:
    return f"dead_fraction_{stage}"


def saturated_units(stage: str) -> str:
    return f"saturated_units_{stage}"


def output_dead(stage: str) -> str:
    return f"output_dead_{stage}"


def collapsed(stage: str) -> str:
    """0/1: some hidden layer entirely dead, so the output is constant."""
    return f"collapsed_{stage}"


def layer_dead_units(stage: str, layer: int) -> str:
    """Dead units of hidden layer `layer` (1 = first hidden layer)."""
    return f"{dead_units(stage)}/layer_{layer}"


def stage_metrics(stage: str) -> tuple[str, ...]:
    """The per-stage metrics every run has (per-layer counts come on top)."""
    return (
        dead_units(stage),
        dead_fraction(stage),
        saturated_units(stage),
        output_dead(stage),
        collapsed(stage),
    )


DEAD_UNITS_INIT, DEAD_UNITS_FINAL = dead_units("init"), dead_units("final")
DEAD_FRACTION_INIT, DEAD_FRACTION_FINAL = dead_fraction("init"), dead_fraction("final")
SATURATED_UNITS_INIT, SATURATED_UNITS_FINAL = saturated_units("init"), saturated_units("final")
OUTPUT_DEAD_INIT, OUTPUT_DEAD_FINAL = output_dead("init"), output_dead("final")
COLLAPSED_INIT, COLLAPSED_FINAL = collapsed("init"), collapsed("final")
INIT_METRICS = (*stage_metrics("init"), HIDDEN_UNITS)
RESULT_METRICS = (FINAL_TRAIN_LOSS, FINAL_TEST_LOSS, *INIT_METRICS, *stage_metrics("final"))
_COUNT = re.compile(
    r"^(dead_units_(init|final)(/layer_\d+)?|saturated_units_(init|final)|hidden_units"
    r"|output_dead_(init|final)|collapsed_(init|final))$"
)


def is_count_metric(name: str) -> bool:
    """Counts and 0/1 flags (typed as integers by the analysis)."""
    return bool(_COUNT.match(name))


# The sweep parent's metrics, counting the whole sweep.
SWEEP_COUNTS = ("planned", "finished", "skipped", "failed", "diverged", "killed")


def sweep_metric(count: str) -> str:
    return f"runs_{count}"


CRASHED_JOBS = "crashed_jobs"

# ---------------------------------------------------------------- outcomes
OUTCOMES = ("finished", "diverged", "failed", "killed", "running")
FINISHED, DIVERGED, FAILED, KILLED, RUNNING = OUTCOMES


def outcome(status: str, diverged: bool) -> str:
    """A run's outcome from its MLflow status and its diverged tag."""
    if diverged:
        return DIVERGED
    return {"FINISHED": FINISHED, "FAILED": FAILED, "KILLED": KILLED}.get(status, RUNNING)


# ---------------------------------------------------------------- config -> params
# Keys that do not change a run's result: left out of its config key, so resume matches,
# and never used to group runs in a report.
NOT_IN_KEY = ("tracking", "force", "seeds", "train.engine", "train.memory_budget_mb")
# Never logged as params: they may hold credentials or machine paths, or are per job.
NOT_LOGGED = ("tracking.uri", "tracking.parent_run_id", "tracking.sweep_id", "seeds")
PARAM_SEED = "seed"
PARAM_ACTIVATION = "model.activation"
PARAM_OUTPUT_ACTIVATION = "model.output_activation"
PARAM_HIDDEN_SIZES = "model.hidden_sizes"
PARAM_BIAS_INIT = "model.bias_init"
PARAM_INIT = "init.name"
PARAM_DATA_LOW = "data.low"
PARAM_LOSS = "train.loss"


def is_under(key: str, prefixes: Iterable[str]) -> bool:
    """Whether a dotted key is one of `prefixes` or inside one of them."""
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """Every leaf of a nested dict, keyed with dots."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_key(flat: dict[str, object], seed: int) -> str:
    """A stable hash of everything that decides a run's result."""
    return config_keys(flat, [seed])[0]


SEED_MARK = 987_654_321_987  # never a valid seed (seeds are below 2**31)


def config_keys(flat: dict[str, object], seeds: list[int]) -> list[str]:
    """config_key for many seeds of one config: the JSON is rendered once, only the seed
    changes (100,000 keys in a fraction of a second)."""
    kept = {k: v for k, v in flat.items() if not is_under(k, NOT_IN_KEY)}
    kept[PARAM_SEED] = SEED_MARK
    head, tail = around_seed(json.dumps(kept, sort_keys=True, default=str))
    return [
        hashlib.sha1(f"{head}{json.dumps(seed)}{tail}".encode()).hexdigest()[:16] for seed in seeds
    ]


def around_seed(rendered: str) -> tuple[str, str]:
    """A config rendered once with SEED_MARK as its seed, cut where each seed goes."""
    head, mark, tail = rendered.partition(str(SEED_MARK))
    assert mark, "the seed mark is in the rendered config"
    return head, tail


def run_params(flat: dict[str, object], seed: int) -> dict[str, str]:
    return run_params_for_seeds(flat, [seed])[0]


def run_params_for_seeds(flat: dict[str, object], seeds: list[int]) -> list[dict[str, str]]:
    """The logged params of each seed's run: the config, less NOT_LOGGED, as text."""
    common = {k: _as_text(v) for k, v in flat.items() if not is_under(k, NOT_LOGGED)}
    return [{**common, PARAM_SEED: str(seed)} for seed in seeds]


def _as_text(value) -> str:
    return json.dumps(value) if isinstance(value, list | tuple) else str(value)


def run_name(flat: dict[str, object], seed: int) -> str:
    return f"{flat[PARAM_ACTIVATION]}-{flat[PARAM_INIT]}-s{seed}"


def sweep_run_name(sweep_id: str) -> str:
    return f"sweep-{sweep_id}"

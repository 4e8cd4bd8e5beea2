"""One Hydra job: skip what is done, train its member seeds, log each as a run.

Its command checked the config and the store before it started (`pipeline.preflight`).

A job trains one seed (train.engine=keras) or a group of seeds that differ in nothing
else (train.engine=batched, grouped by the sweeper). Every member becomes its own MLflow
run; a failing member is logged FAILED and the job carries on, so one bad run never
breaks a sweep.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from pipeline import forward, interrupts, schema
from pipeline.config import seeds_of
from pipeline.data import Dataset, make_identity_data
from pipeline.engines import MemberResult, get_engine
from pipeline.initializers import initial_weights_for_seeds, layer_shapes, stack
from pipeline.numerics import numerics_tags
from pipeline.probe import ProbeResult, probe
from pipeline.slurm import current_slurm_job
from pipeline.store import resolve_tracking_uri
from pipeline.tracking import RunRecord, Tracker, choose_writer, flat_config, to_yaml

log = logging.getLogger("deadunits")
# Runs per bulk transaction: SQLite holds its write lock for the whole insert, and parallel
# workers wait for it, so a chunk stays around a second of writing.
BULK_CHUNK = 1000


@dataclass
class Member:
    """One seed of the job, with everything known about it before training."""

    seed: int
    key: str
    weights: list
    record: RunRecord


@dataclass
class JobSummary:
    counts: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


def run_job(cfg) -> dict[str, int]:
    """Everything a job does, in order; counts of its runs by outcome."""
    interrupts.remember_interrupts(sigterm=current_slurm_job() is not None)
    interrupts.check()  # a Ctrl-C an earlier job in this process swallowed ends the sweep
    flat = flat_config(cfg)
    tracker = Tracker(
        resolve_tracking_uri(cfg.tracking.uri),
        cfg.tracking.experiment,
        cfg.tracking.parent_run_id,
        cfg.tracking.sweep_id,
    )
    if tracker.parent_run_id is None:
        tracker.parent_run_id = tracker.outer_run_id()
    summary = JobSummary()
    seeds = seeds_of(cfg)
    keys = dict(zip(seeds, schema.config_keys(flat, seeds), strict=True))
    todo = list(keys)
    if cfg.tracking.sweep_id is None:  # a sweep's jobs run what their sweeper planned
        done = tracker.done_keys(set(keys.values()), force=cfg.force)
        todo = [seed for seed, key in keys.items() if key not in done]
        summary.counts["skipped"] += len(keys) - len(todo)
    if not todo:
        return summary.as_dict()

    data = make_identity_data(**cfg.data)
    members = prepare_members(cfg, flat, tracker, data, todo, keys)
    if cfg.train.engine == "keras":
        train_live(cfg, tracker, data, members, summary)
        return summary.as_dict()
    writer = cfg.tracking.writer
    if cfg.tracking.sweep_id is None:  # a sweep's jobs get the writer their sweeper chose
        writer, why = choose_writer(tracker, writer)
        log.info(why)
    train_batched(cfg, tracker, data, members, summary, bulk=writer == "bulk")
    return summary.as_dict()


def prepare_members(
    cfg, flat, tracker: Tracker, data: Dataset, seeds: list[int], keys
) -> list[Member]:
    """Initial weights, the probe at init, and each run's record so far."""
    shapes = layer_shapes(
        data.x_train.shape[1], list(cfg.model.hidden_sizes), data.y_train.shape[1]
    )
    weights = initial_weights_for_seeds(cfg.init, shapes, cfg.model.bias_init, seeds)
    at_init = probe_members(cfg, stack(weights), data)
    common_tags = {
        **tracker.base_tags(),
        **numerics_tags(),
        schema.TAG_ENGINE: cfg.train.engine,
        schema.TAG_DIVERGED: "false",
    }
    params = schema.run_params_for_seeds(flat, seeds)
    logged = {k: flat[k] for k in params[0]}
    configs = config_yaml_for_seeds(logged, seeds) if cfg.tracking.artifacts else None
    members = []
    for index, (seed, init_metrics) in enumerate(zip(seeds, at_init.metrics("init"), strict=True)):
        dead = init_metrics[schema.dead_units("init")] > 0
        tags = {
            **common_tags,
            schema.TAG_CONFIG_KEY: keys[seed],
            schema.TAG_DEAD_AT_INIT: str(dead).lower(),
        }
        record = RunRecord(schema.run_name(flat, seed), params[index], tags)
        record.add_metrics({**init_metrics, schema.HIDDEN_UNITS: at_init.hidden_units})
        if configs is not None:
            record.artifacts = {
                "config.yaml": configs[index],
                "initial_weights.json": weights_json(weights[index]),
            }
        members.append(Member(seed, keys[seed], weights[index], record))
    return members


def probe_members(cfg, stacked: list, data: Dataset) -> ProbeResult:
    """The probe of stacked members' weights on the training inputs, as configured."""
    return probe(
        stacked,
        data.x_train,
        cfg.model.activation,
        cfg.model.output_activation,
        cfg.probe.saturation_tol,
    )


def outcome_records(
    cfg, members: list[Member], results: list[MemberResult], data: Dataset
) -> list[RunRecord]:
    """What training added to each member's run: losses, the probe at the end, the status.
    The members that did not diverge are probed and scored together."""
    records = []
    for member, result in zip(members, results, strict=True):
        record = RunRecord(member.record.name, {}, {})
        record.add_series(schema.TRAIN_LOSS, result.train_loss)
        record.add_series(schema.TEST_LOSS, result.test_loss)
        if result.diverged_epoch is not None:
            record.tags[schema.TAG_DIVERGED] = "true"
            record.tags[schema.TAG_DIVERGED_EPOCH] = str(result.diverged_epoch)
            record.status = "FAILED"
        records.append(record)
    ended = [i for i, result in enumerate(results) if result.diverged_epoch is None]
    if not ended:
        return records
    final = stack([results[i].final_weights for i in ended])
    act, out_act, loss = cfg.model.activation, cfg.model.output_activation, cfg.train.loss
    at_end = probe_members(cfg, final, data).metrics("final")
    train_loss = forward.loss(
        loss, forward.predict(final, data.x_train, act, out_act), data.y_train
    )
    test_loss = forward.loss(loss, forward.predict(final, data.x_test, act, out_act), data.y_test)
    for row, i in enumerate(ended):
        records[i].add_metrics(
            {
                **at_end[row],
                schema.FINAL_TRAIN_LOSS: train_loss[row],
                schema.FINAL_TEST_LOSS: test_loss[row],
            }
        )
    return records


def train_live(
    cfg, tracker: Tracker, data: Dataset, members: list[Member], summary: JobSummary
) -> None:
    """Keras engine: each run is RUNNING in the UI while it trains."""
    train = get_engine("keras")
    for member in members:
        outcome = RunRecord(member.record.name, {}, {}, status="FAILED")
        run_id = None
        try:
            with interrupts.held():  # a Ctrl-C while the run starts ends it KILLED
                run_id = tracker.start(member.record)
            (results,) = train(cfg.train, cfg.model, data, [member.seed], [member.weights])
            (outcome,) = outcome_records(cfg, [member], results, data)
        except KeyboardInterrupt:
            outcome.status = "KILLED"
            raise
        except Exception as error:  # one failing run must not stop the sweep
            if interrupts.requested():  # a Ctrl-C TensorFlow turned into another error
                outcome.status = "KILLED"
                raise KeyboardInterrupt from error
            if run_id is None:  # the store refused the run: nothing to log it FAILED in
                raise
            log.exception("run %s failed", member.record.name)
            outcome.tags[schema.TAG_ERROR] = _one_line(error)
        finally:
            if run_id is not None:
                with interrupts.held():
                    tracker.log(run_id, outcome)
                    tracker.finish(run_id, outcome.status)
            summary.counts[_outcome(member.record.tags | outcome.tags, outcome.status)] += 1


def train_batched(
    cfg, tracker: Tracker, data: Dataset, members: list[Member], summary: JobSummary, bulk: bool
) -> None:
    """Batched engine: train members together; finished runs are logged on background
    threads while training goes on, a chunk of runs per transaction with the bulk writer."""
    train = get_engine("batched")
    waiting = {m.seed: m for m in members}
    log_runs = partial(log_bulk, tracker) if bulk else partial(log_one_by_one, tracker)
    chunk = BULK_CHUNK if bulk else 1
    buffer: list[RunRecord] = []
    pending: list[Future] = []

    def submit(record: RunRecord | None) -> None:
        if record is not None:
            buffer.append(record)
            summary.counts[_outcome(record.tags, record.status)] += 1
        if buffer and (record is None or len(buffer) >= chunk):
            pending.append(logger.submit(log_runs, buffer.copy()))
            buffer.clear()

    workers = 1 if bulk else cfg.tracking.log_workers
    with ThreadPoolExecutor(max_workers=workers) as logger:
        try:
            for results in train(
                cfg.train, cfg.model, data, list(waiting), [m.weights for m in members]
            ):
                trained = [waiting[result.seed] for result in results]
                for member, outcome in zip(
                    trained, outcome_records(cfg, trained, results, data), strict=True
                ):
                    del waiting[member.seed]
                    submit(member.record.merged(outcome))
        except BaseException as error:  # the members not trained yet end with the job
            interrupted = isinstance(error, KeyboardInterrupt) or interrupts.requested()
            if not interrupted:
                log.exception("batched training failed")
            for member in waiting.values():
                tags = {} if interrupted else {schema.TAG_ERROR: _one_line(error)}
                status = "KILLED" if interrupted else "FAILED"
                submit(member.record.merged(RunRecord(member.record.name, {}, tags, status=status)))
            if isinstance(error, KeyboardInterrupt | SystemExit):
                raise
            if interrupted:  # a Ctrl-C TensorFlow turned into another error
                raise KeyboardInterrupt from error
        finally:
            submit(None)  # what is trained is logged, even on Ctrl-C
            for future in pending:
                future.result()


def log_one_by_one(tracker: Tracker, records: list[RunRecord]) -> None:
    for record in records:
        tracker.log_complete(record)


def log_bulk(tracker: Tracker, records: list[RunRecord]) -> None:
    """One transaction for the chunk; a chunk the bulk writer refuses (one bad value fails it
    whole) goes through the client, run by run, so only a bad run fails."""
    from pipeline.bulk import write_runs

    try:
        write_runs(tracker.uri, tracker.experiment_id, records)
    except Exception as error:
        log.warning(
            "bulk write of %d runs failed (%s); logging them one by one",
            len(records),
            _one_line(error),
        )
        log_one_by_one(tracker, records)


def _outcome(tags: dict[str, str], status: str) -> str:
    return schema.outcome(status, tags.get(schema.TAG_DIVERGED) == "true")


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]


def flat_to_nested(flat: dict[str, object]) -> dict:
    nested: dict = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested


def config_yaml_for_seeds(logged: dict[str, object], seeds: list[int]) -> list[str]:
    """Each seed's config.yaml artifact: the logged config, nested. Rendered once; only the
    seed changes."""
    head, tail = schema.around_seed(
        to_yaml(flat_to_nested({**logged, schema.PARAM_SEED: schema.SEED_MARK}))
    )
    return [f"{head}{seed}{tail}" for seed in seeds]


def weights_json(weights) -> str:
    layers = [
        {"kernel": np.asarray(k).tolist(), "bias": np.asarray(b).tolist()} for k, b in weights
    ]
    return json.dumps({"layers": layers})

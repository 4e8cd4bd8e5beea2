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
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from omegaconf import OmegaConf

from pipeline import forward, interrupts, numerics, schema, startup, writer_process
from pipeline.config import seeds_of
from pipeline.data import Dataset, make_identity_data
from pipeline.engines import MemberResult, get_engine
from pipeline.initializers import initial_weights_for_seeds, layer_shapes, stack
from pipeline.numerics import numerics_tags
from pipeline.probe import probe, probe_outputs
from pipeline.slurm import current_slurm_job
from pipeline.store import resolve_tracking_uri
from pipeline.tracking import RunRecord, Tracker, choose_writer, flat_config, to_yaml

log = logging.getLogger("deadunits")
# Runs per bulk transaction at most: SQLite holds its write lock for the whole insert, and
# parallel workers wait for it, so a chunk stays around a second of writing.
BULK_CHUNK = 1000
# Trained chunks waiting for the writer process at most (each holds its members' weights).
WRITER_BACKLOG = 4
PROBE_THREADS = min(4, os.cpu_count() or 1)


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
    """Everything a job does, in order; counts of its runs by outcome.

    On Ctrl-C the counts so far ride on the KeyboardInterrupt (`.counts`), so the
    sweep's summary still counts the runs this job ended."""
    summary = JobSummary()
    try:
        _run_job(cfg, summary)
    except KeyboardInterrupt as interrupt:
        interrupt.counts = summary.as_dict()
        raise
    return summary.as_dict()


def _run_job(cfg, summary: JobSummary) -> None:
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
    seeds = seeds_of(cfg)
    keys = dict(zip(seeds, schema.config_keys(flat, seeds), strict=True))
    todo = list(keys)
    if cfg.tracking.sweep_id is None:  # a sweep's jobs run what their sweeper planned
        done = tracker.done_keys(set(keys.values()), force=cfg.force)
        todo = [seed for seed, key in keys.items() if key not in done]
        summary.counts["skipped"] += len(keys) - len(todo)
    if not todo:
        return

    batched = cfg.train.engine == "batched"
    writer = cfg.tracking.writer
    if batched and cfg.tracking.sweep_id is None:  # a sweep's jobs get their sweeper's
        writer, why = choose_writer(tracker, writer)
        log.info(why)
    in_process = batched and writer == "bulk" and len(todo) >= writer_process.MIN_RUNS
    if in_process:
        writer_process.start()  # its imports overlap TensorFlow's (a sweep started it sooner)
    numerics.plan_threads([cfg])  # a sweep that runs its jobs here planned for all of them
    data, shapes = data_and_shapes(cfg)
    members = prepare_members(cfg, flat, tracker, shapes, todo, keys)
    startup.started()  # TensorFlow is imported by now
    if not batched:
        train_live(cfg, tracker, data, members, summary)
        return
    try:
        train_batched(cfg, tracker, data, members, summary, writer == "bulk", in_process)
    finally:
        writer_process.stop_in_pool_workers()


def import_for_training(engine: str) -> None:
    """Import what a job of this engine trains with (TensorFlow, Keras, the engine; this
    module's own imports come with it) ahead of the first job."""
    get_engine(engine)


def warm_up(cfg, members: int) -> None:
    """Trace the batched program a job of this config and this many seeds will train, ahead
    of the job (see `pipeline.engines.batched.warm_up`); its sweep planned the threads."""
    from pipeline.engines import batched

    batched.warm_up(cfg.train, cfg.model, *data_and_shapes(cfg), members)


def data_and_shapes(cfg) -> tuple[Dataset, list[tuple[int, int]]]:
    """The job's data set, and its net's (fan in, fan out) per layer."""
    data = make_identity_data(**cfg.data)
    shapes = layer_shapes(
        data.x_train.shape[1], list(cfg.model.hidden_sizes), data.y_train.shape[1]
    )
    return data, shapes


def prepare_members(cfg, flat, tracker: Tracker, shapes, seeds: list[int], keys) -> list[Member]:
    """Initial weights and each run's record as far as the config knows it."""
    weights = initial_weights_for_seeds(cfg.init, shapes, cfg.model.bias_init, seeds)
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
    for index, seed in enumerate(seeds):
        tags = {**common_tags, schema.TAG_CONFIG_KEY: keys[seed]}
        record = RunRecord(schema.run_name(flat, seed), params[index], tags)
        if configs is not None:
            record.artifacts["config.yaml"] = configs[index]
        members.append(Member(seed, keys[seed], weights[index], record))
    return members


def records_at_init(cfg, members: list[Member], data: Dataset) -> list[RunRecord]:
    """Each member's record with the probe at init (one probe for all members)."""
    at_init = probe(
        stack([m.weights for m in members]),
        data.x_train,
        cfg.model.activation,
        cfg.model.output_activation,
        cfg.probe.saturation_tol,
    )
    records = []
    for member, init_metrics in zip(members, at_init.metrics("init"), strict=True):
        dead = init_metrics[schema.dead_units("init")] > 0
        record = member.record.merged(
            RunRecord(member.record.name, {}, {schema.TAG_DEAD_AT_INIT: str(dead).lower()})
        )
        record.add_metrics({**init_metrics, schema.HIDDEN_UNITS: at_init.hidden_units})
        if cfg.tracking.artifacts:
            record.artifacts["initial_weights.json"] = weights_json(member.weights)
        records.append(record)
    return records


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
    on_train = forward.layer_outputs(final, data.x_train, act)  # probed and scored alike
    at_end = probe_outputs(on_train, act, out_act, cfg.probe.saturation_tol).metrics("final")
    train_loss = forward.loss(
        loss, forward.ACTIVATIONS[out_act].forward(on_train[-1]), data.y_train
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


def trained_records(
    cfg, members: list[Member], results: list[MemberResult], data: Dataset
) -> list[RunRecord]:
    """The complete runs of trained members."""
    outcomes = outcome_records(cfg, members, results, data)
    at_init = records_at_init(cfg, members, data)
    return [record.merged(outcome) for record, outcome in zip(at_init, outcomes, strict=True)]


def untrained_records(
    cfg, members: list[Member], data: Dataset, status: str, tags: dict[str, str]
) -> list[RunRecord]:
    """The complete runs of members their job ended before training (KILLED or FAILED)."""
    return [
        record.merged(RunRecord(record.name, {}, dict(tags), status=status))
        for record in records_at_init(cfg, members, data)
    ]


def train_live(
    cfg, tracker: Tracker, data: Dataset, members: list[Member], summary: JobSummary
) -> None:
    """Keras engine: each run is RUNNING in the UI while it trains."""
    train = get_engine("keras")
    for member, record in zip(members, records_at_init(cfg, members, data), strict=True):
        outcome = RunRecord(record.name, {}, {}, status="FAILED")
        run_id = None
        try:
            with interrupts.held():  # a Ctrl-C while the run starts ends it KILLED
                run_id = tracker.start(record)
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
            log.exception("run %s failed", record.name)
            outcome.tags[schema.TAG_ERROR] = _one_line(error)
        finally:
            if run_id is not None:
                with interrupts.held():
                    tracker.log(run_id, outcome)
                    tracker.finish(run_id, outcome.status)
            summary.counts[_outcome(record.tags | outcome.tags, outcome.status)] += 1


@dataclass(frozen=True)
class Destination:
    """Where a job's runs go, in a form another process can take."""

    uri: str
    experiment: str
    parent_run_id: str | None
    sweep_id: str | None
    experiment_id: str

    @classmethod
    def of(cls, tracker: Tracker, experiment: str) -> Destination:
        return cls(
            tracker.uri, experiment, tracker.parent_run_id, tracker.sweep_id, tracker.experiment_id
        )

    def tracker(self) -> Tracker:
        return Tracker(self.uri, self.experiment, self.parent_run_id, self.sweep_id)


def log_trained_bulk(cfg, data: Dataset, to: Destination, members, results) -> None:
    """Probe, score and write a trained chunk (in the writer process). The probe is split
    over threads: numpy's einsum lets go of the interpreter, so while training waits for
    the writer, the writer uses every core."""
    parts = min(PROBE_THREADS, len(members))
    cuts = np.linspace(0, len(members), parts + 1).astype(int)
    pieces = [slice(a, b) for a, b in zip(cuts, cuts[1:], strict=False)]
    with ThreadPoolExecutor(parts) as pool:
        done = pool.map(lambda s: trained_records(cfg, members[s], results[s], data), pieces)
        records = [record for part in done for record in part]
    log_bulk(to, records)


def log_untrained_bulk(cfg, data: Dataset, to: Destination, members, status, tags) -> None:
    log_bulk(to, untrained_records(cfg, members, data, status, tags))


def train_batched(
    cfg,
    tracker: Tracker,
    data: Dataset,
    members: list[Member],
    summary: JobSummary,
    bulk: bool,
    in_process: bool = False,
) -> None:
    """Batched engine: train members together while finished runs are logged.

    With the bulk writer, each trained chunk is probed, scored and written in one
    transaction while the next chunk trains: in the writer process (in_process) or on a
    thread; with the client, runs are built here and logged by `tracking.log_workers`
    threads.
    """
    train = get_engine("batched")
    waiting = {m.seed: m for m in members}
    pending: list = []  # futures and writer_process.Handed calls
    # What the bulk writer's calls take: plain values, which another process can unpickle.
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)) if bulk else None
    to = Destination.of(tracker, cfg.tracking.experiment)

    def wait_for_writer(at_most: int) -> None:
        while len(pending) > at_most:  # bounds what waits in memory for the writer
            pending.pop(0).result()

    def log_with_client(records: list[RunRecord]) -> None:
        pending.extend(logger.submit(tracker.log_complete, record) for record in records)

    def log_trained(chunk: list[Member], results: list[MemberResult]) -> None:
        if bulk:
            wait_for_writer(WRITER_BACKLOG)
            pending.append(hand(log_trained_bulk, resolved, data, to, chunk, results))
        else:
            log_with_client(trained_records(cfg, chunk, results, data))

    def log_untrained(chunk: list[Member], status: str, tags: dict[str, str]) -> None:
        if bulk:
            pending.append(hand(log_untrained_bulk, resolved, data, to, chunk, status, tags))
        else:
            log_with_client(untrained_records(cfg, chunk, data, status, tags))

    workers = 1 if bulk else cfg.tracking.log_workers
    with ThreadPoolExecutor(max_workers=workers) as logger:
        hand = writer_process.submit if in_process else logger.submit
        try:
            for results in train(
                cfg.train, cfg.model, data, list(waiting), [m.weights for m in members]
            ):
                log_trained([waiting[result.seed] for result in results], results)
                for result in results:  # handed over: no longer the job's to end
                    del waiting[result.seed]
                    diverged = result.diverged_epoch is not None
                    status = "FAILED" if diverged else "FINISHED"
                    summary.counts[schema.outcome(status, diverged)] += 1
        except BaseException as error:  # the members not trained yet end with the job
            interrupted = isinstance(error, KeyboardInterrupt) or interrupts.requested()
            if not interrupted:
                log.exception("batched training failed")
            if waiting:
                tags = {} if interrupted else {schema.TAG_ERROR: _one_line(error)}
                status = "KILLED" if interrupted else "FAILED"
                summary.counts[schema.outcome(status, False)] += len(waiting)
                log_untrained(list(waiting.values()), status, tags)
            if isinstance(error, KeyboardInterrupt | SystemExit):
                raise
            if interrupted:  # a Ctrl-C TensorFlow turned into another error
                raise KeyboardInterrupt from error
        else:
            if in_process and writer_process.leave(pending):  # the next job trains meanwhile
                pending.clear()
        finally:
            for future in pending:  # what is trained is logged, even on Ctrl-C
                future.result()


def log_bulk(to: Destination, records: list[RunRecord]) -> None:
    """One transaction per BULK_CHUNK runs; a chunk the bulk writer refuses (one bad value
    fails it whole) goes through the client, run by run, so only a bad run fails."""
    from pipeline.bulk import write_runs

    for start in range(0, len(records), BULK_CHUNK):
        chunk = records[start : start + BULK_CHUNK]
        try:
            write_runs(to.uri, to.experiment_id, chunk)
        except Exception as error:
            log.warning(
                "bulk write of %d runs failed (%s); logging them one by one",
                len(chunk),
                _one_line(error),
            )
            tracker = to.tracker()
            for record in chunk:
                tracker.log_complete(record)


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

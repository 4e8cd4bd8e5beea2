"""Whole runs written and read in bulk, straight through MLflow's own SQL tables.

Why: MLflow's client logs a complete run in three transactions (create_run, log_batch,
set_terminated), each reading the run back through MLflow's ORM. Here a chunk of runs is one
transaction of batched inserts (executemany) through MLflow's SQLAlchemy table models
(`mlflow.store.tracking.dbmodels`), writing the same rows the client path writes (see
tests/test_bulk_writer.py), and reads are one query per table instead of MLflow's per-run
ORM objects. On SQLite (benchmarks/bench_store.py, 2-core development machine) the client
path logged 22.2 runs/s (37 ms of CPU a run), write_runs 990 runs/s with artifacts (1.1 ms
of CPU a run) and 1,784 runs/s without.

These tables are MLflow internals. A store is written only when its schema revision
(table `alembic_version`) is one this module was tested on; otherwise `bulk_support` names
the reason and the caller falls back to the client path. Tested: MLflow 3.17.2 (alembic
revision dc11669786a5) on SQLite and on PostgreSQL 15 (psycopg2).

Not mirrored: metrics of an active MLflow logged model (the pipeline never sets one).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from itertools import chain
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
import uuid6
from mlflow.entities import LifecycleStage, RunStatus, SourceType
from mlflow.store.db.utils import create_sqlalchemy_engine
from mlflow.store.tracking.dbmodels.models import (
    SqlExperiment,
    SqlLatestMetric,
    SqlMetric,
    SqlParam,
    SqlRun,
    SqlTag,
)
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
from mlflow.utils.uri import append_to_uri_path
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, _validate_metric, _validate_param

from pipeline import interrupts
from pipeline.schema import OWNER_TAG_PREFIX, RESUME_TAGS, TAG_CONFIG_KEY, is_resume_tag
from pipeline.store import BULK_DIALECTS, first_line, redact_uri, sqlite_path
from pipeline.tracking import RunRecord, local_artifact_dir

# Alembic revisions of MLflow's tracking schema this module was tested on, and by which
# MLflow version.
TESTED_REVISIONS = {"dc11669786a5": "MLflow 3.17.2"}
# Bound parameters per IN list: below SQLite's oldest limit (999) with room to spare.
IN_CHUNK = 500
# Above this many keys, reading every key of the experiment once beats chunked IN lists.
KEYS_SCAN_ALL = 2_000
LOCK_ATTEMPTS = 8
SQLITE_PRAGMAS = (  # what MLflow's own sessions set on every SQLite connection
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 20000",
    "PRAGMA case_sensitive_like = true",
)
# The client path stores +-inf as the largest finite doubles (SQL has no infinity).
FLOAT_MAX = 1.7976931348623157e308
SOURCE_TYPE = SourceType.to_string(SourceType.UNKNOWN)  # what create_run stores
FILE_THREADS = 4
FETCH_BATCH = 200_000  # rows turned into a frame at a time by read_experiment


class BulkUnsupported(RuntimeError):
    """This store (or experiment) cannot be written by the bulk writer; str() is one line."""


@dataclass
class RunSummary:
    """What a resume needs of an existing run."""

    run_id: str
    status: str
    config_key: str
    start_time: int | None
    tags: dict[str, str] = field(default_factory=dict)  # deadunits.* and schema.RESUME_TAGS


# --- engine and checks ---------------------------------------------------------------------


@cache
def _engine(uri: str) -> sa.engine.Engine:
    """One engine per URI, built with MLflow's own engine options (pool settings etc.)."""
    return create_sqlalchemy_engine(uri)


def _dialect(uri: str) -> str:
    return uri.split(":", 1)[0].split("+", 1)[0].lower()


@contextmanager
def _connect(engine: sa.engine.Engine) -> Iterator[sa.engine.Connection]:
    """A connection, closed at the end; Ctrl-C waits for the block (`interrupts.held`)."""
    with interrupts.held(), engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            for pragma in SQLITE_PRAGMAS:
                conn.exec_driver_sql(pragma)
            conn.commit()
        yield conn


def _revision(conn) -> str | None:
    try:
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    except sa.exc.DBAPIError:
        conn.rollback()
        return None


def _revision_problem(revision: str | None) -> str | None:
    if revision is None:
        return "no MLflow schema in this database (no alembic_version)"
    if revision not in TESTED_REVISIONS:
        tested = ", ".join(f"{r} ({v})" for r, v in TESTED_REVISIONS.items())
        return f"MLflow schema revision {revision} not tested by the bulk writer (tested: {tested})"
    return None


def _experiment(conn, experiment_id: str):
    return conn.execute(
        sa.select(SqlExperiment.artifact_location, SqlExperiment.lifecycle_stage).where(
            SqlExperiment.experiment_id == int(experiment_id)
        )
    ).one_or_none()


def _experiment_problem(row, experiment_id: str, need_local_artifacts: bool) -> str | None:
    if row is None:
        return f"experiment {experiment_id} does not exist"
    if row.lifecycle_stage != LifecycleStage.ACTIVE:
        return f"experiment {experiment_id} is {row.lifecycle_stage}"
    if need_local_artifacts and local_artifact_dir(row.artifact_location) is None:
        return f"experiment {experiment_id} keeps artifacts outside the local file system"
    return None


def bulk_support(uri: str, experiment_id: str | None = None) -> str | None:
    """None when `write_runs` can write to this tracking URI (and experiment), else why not.

    Never creates anything: a SQLite file that does not exist yet is a reason, not a store.
    """
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        return "http tracking server (the bulk writer needs direct database access)"
    if _dialect(uri) not in BULK_DIALECTS:
        return f"{scheme} tracking URI (the bulk writer handles sqlite and postgresql)"
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        return f"no SQLite store at {db} yet"
    try:
        with _connect(_engine(uri)) as conn:
            problem = _revision_problem(_revision(conn))
            if problem is None and experiment_id is not None:
                row = _experiment(conn, experiment_id)
                problem = _experiment_problem(row, experiment_id, need_local_artifacts=True)
    except Exception as error:  # driver errors vary; all mean "cannot write here"
        return f"cannot connect to {redact_uri(uri)}: {first_line(error)}"
    return problem


# --- writing --------------------------------------------------------------------------------


# Columns each table's rows are built with, in this order (tuples: a dict a row cost more
# than SQLite's insert).
RUN_COLUMNS = (
    "run_uuid",
    "name",
    "source_type",
    "source_name",
    "entry_point_name",
    "user_id",
    "status",
    "start_time",
    "end_time",
    "deleted_time",
    "source_version",
    "lifecycle_stage",
    "artifact_uri",
    "experiment_id",
)
KEY_VALUE_COLUMNS = ("key", "value", "run_uuid")  # tags and params
METRIC_COLUMNS = ("key", "value", "timestamp", "step", "is_nan", "run_uuid")  # and latest


@dataclass
class _Rows:
    runs: list[tuple] = field(default_factory=list)
    tags: list[tuple] = field(default_factory=list)
    params: list[tuple] = field(default_factory=list)
    metrics: list[tuple] = field(default_factory=list)
    latest: list[tuple] = field(default_factory=list)

    def tables(self) -> Iterator[tuple[sa.Table, tuple[str, ...], list[tuple]]]:
        """Parents before children (SQLite enforces the foreign keys)."""
        yield SqlRun.__table__, RUN_COLUMNS, self.runs
        yield SqlTag.__table__, KEY_VALUE_COLUMNS, self.tags
        yield SqlParam.__table__, KEY_VALUE_COLUMNS, self.params
        yield SqlMetric.__table__, METRIC_COLUMNS, self.metrics
        yield SqlLatestMetric.__table__, METRIC_COLUMNS, self.latest


def _sanitized(value: float) -> tuple[float, bool]:
    """(stored value, is_nan), as MLflow's SqlAlchemyStore stores a metric value."""
    if math.isnan(value):
        return 0.0, True
    if math.isinf(value):
        return (FLOAT_MAX if value > 0 else -FLOAT_MAX), False
    return value, False


class _Validator:
    """MLflow's own checks of params and metric points, each key's name checked once a chunk.

    A point whose value, timestamp or step looks wrong goes through MLflow's validator,
    which raises its own message; a long param value goes through it to be truncated.
    """

    def __init__(self):
        self.metric_keys: set[str] = set()
        self.param_keys: set[str] = set()

    def metric(self, key: str, value, timestamp, step, index: int) -> None:
        if (
            key not in self.metric_keys
            or type(value) not in (float, int)
            or type(timestamp) is not int
            or timestamp < 0
            or type(step) is not int
        ):
            _validate_metric(key, value, timestamp, step, f"metrics[{index}]")
            self.metric_keys.add(key)

    def param(self, key: str, value: str, index: int) -> tuple[str, str]:
        if key in self.param_keys and isinstance(value, str) and len(value) <= MAX_PARAM_VAL_LENGTH:
            return key, value
        param = _validate_param(key, value, f"params[{index}]")
        self.param_keys.add(key)
        return param.key, param.value


def _metric_rows(run_id: str, metrics, validator: _Validator) -> tuple[list[tuple], list[tuple]]:
    """Every distinct metric point, and the latest point per key, as METRIC_COLUMNS tuples.

    Like the store: a point repeated exactly (key, timestamp, step, value) is kept once, and a
    key's latest point is the greatest (step, timestamp, value), the first one on a tie.
    """
    points: dict[tuple, None] = {}
    latest: dict[str, tuple] = {}
    for index, metric in enumerate(metrics):
        key, value, timestamp, step = metric.key, metric.value, metric.timestamp, metric.step
        validator.metric(key, value, timestamp, step, index)
        value, is_nan = _sanitized(float(value))
        row = (key, value, timestamp, step, is_nan, run_id)
        if row in points:
            continue
        points[row] = None
        best = latest.get(key)
        if best is None or (step, timestamp, value) > (best[3], best[2], best[1]):
            latest[key] = row
    return list(points), list(latest.values())


def _artifact_uri_maker(artifact_location: str):
    """run id -> artifact URI, as create_run builds it (append_to_uri_path), built once."""
    sentinel = "0" * 32
    head, _, tail = append_to_uri_path(artifact_location, sentinel, "artifacts").rpartition(
        sentinel
    )
    return lambda run_id: f"{head}{run_id}{tail}"


def _rows(records: list[RunRecord], experiment_id: str, artifact_location: str) -> tuple:
    """The rows of every table for these records, and (run id, artifact URI) per record."""
    rows = _Rows()
    placed = []
    now = int(time.time() * 1000)
    validator = _Validator()
    artifact_uri_of = _artifact_uri_maker(artifact_location)
    for record in records:
        status = RunStatus.to_string(RunStatus.from_string(record.status))  # rejects bad ones
        # Time-ordered ids (UUIDv7; the client's are random UUIDv4): each chunk's rows land
        # at the end of the run_uuid indexes. With random ids a 500-run chunk took twice as
        # long by 15,000 runs in the store; with these it stays flat.
        run_id = uuid6.uuid7().hex
        artifact_uri = artifact_uri_of(run_id)
        # What Tracker.start hands create_run: the record's tags plus the run name tag.
        tags = {**record.tags, MLFLOW_RUN_NAME: record.name}
        rows.runs.append(
            (  # RUN_COLUMNS
                run_id,
                record.name,
                SOURCE_TYPE,
                "",
                "",
                tags.get(MLFLOW_USER, "unknown"),
                status,
                min(record.started_ms, now),
                now,
                None,
                "",
                LifecycleStage.ACTIVE,
                artifact_uri,
                int(experiment_id),
            )
        )
        rows.tags += [(k, v, run_id) for k, v in tags.items()]
        for index, (key, value) in enumerate(record.params.items()):
            rows.params.append((*validator.param(key, value, index), run_id))
        points, latest = _metric_rows(run_id, record.metrics, validator)
        rows.metrics += points
        rows.latest += latest
        placed.append((run_id, artifact_uri))
    return rows, placed


def _write_run_files(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")


def _start_artifacts(pool, records: list[RunRecord], placed: list[tuple[str, str]]) -> list:
    """Every record's artifact files, as Tracker.log writes them for a file:// store, written
    on the pool's threads (mkdir/open/write let go of the interpreter); their futures."""
    return [
        pool.submit(_write_run_files, local_artifact_dir(artifact_uri), record.artifacts)
        for record, (_, artifact_uri) in zip(records, placed, strict=True)
        if record.artifacts
    ]


@cache
def _insert_statement(table: sa.Table, columns: tuple[str, ...], dialect) -> str:
    """INSERT of these columns, compiled from MLflow's table model for a positional driver."""
    compiled = sa.insert(table).compile(dialect=dialect, column_keys=list(columns))
    assert compiled.positiontup == list(columns), compiled.positiontup
    return compiled.string


def _insert_all(conn, rows: _Rows) -> None:
    for table, columns, table_rows in rows.tables():
        if not table_rows:
            continue
        if conn.dialect.name == "sqlite":
            # The statement SQLAlchemy compiles, given the driver's tuples as they are: its
            # per-row parameter handling cost as much as SQLite's insert itself.
            conn.exec_driver_sql(_insert_statement(table, columns, conn.dialect), table_rows)
        else:  # psycopg2: SQLAlchemy batches the rows into multi-row VALUES
            conn.execute(
                sa.insert(table), [dict(zip(columns, row, strict=True)) for row in table_rows]
            )


def _locked(error: Exception) -> bool:
    return "database is locked" in str(error)


def write_runs(uri: str, experiment_id: str, records: list[RunRecord]) -> list[str]:
    """Write each record as a complete, terminated run, all in one transaction; the run ids.

    Artifact files are written before the commit, so a chunk that fails leaves files no run
    points to (harmless: nothing lists them). A chunk commits whole or not at all; while
    SQLite reports a lock the whole chunk is retried with backoff (a locked write is rolled
    back, so a retry cannot duplicate it). Raises BulkUnsupported before writing anything on
    a store this module was not tested on.
    """
    if not records:
        return []
    engine = _engine(uri)
    need_files = any(record.artifacts for record in records)
    with _connect(engine) as conn:
        problem = _revision_problem(_revision(conn))
        row = None if problem else _experiment(conn, experiment_id)
        problem = problem or _experiment_problem(row, experiment_id, need_files)
        conn.rollback()
    if problem:
        raise BulkUnsupported(problem)
    rows, placed = _rows(records, experiment_id, row.artifact_location)
    with ThreadPoolExecutor(FILE_THREADS) as pool:
        files = _start_artifacts(pool, records, placed)
        for attempt in range(LOCK_ATTEMPTS):
            try:
                _commit(engine, experiment_id, row.artifact_location, rows, files)
                break
            except sa.exc.OperationalError as error:
                if not _locked(error) or attempt == LOCK_ATTEMPTS - 1:
                    raise
                time.sleep(min(5.0, 0.1 * 2**attempt) * (0.5 + random.random()))
    return [run_id for run_id, _ in placed]


def _commit(engine, experiment_id: str, artifact_location: str, rows: _Rows, files) -> None:
    """Insert the rows, check the store is still one to write, and commit once every
    artifact file (futures) is written."""
    with _connect(engine) as conn:
        # Inserts first: on SQLite the first write takes the lock (waiting up to the busy
        # timeout); the checks below then see a store no other writer can change.
        _insert_all(conn, rows)
        row = _experiment(conn, experiment_id)
        problem = _revision_problem(_revision(conn)) or _experiment_problem(
            row, experiment_id, need_local_artifacts=False
        )
        if problem is None and row.artifact_location != artifact_location:
            problem = f"experiment {experiment_id} changed its artifact location"
        if problem:
            conn.rollback()
            raise BulkUnsupported(problem)
        for written in files:
            written.result()  # a file that failed fails the chunk: rolled back, no commit
        conn.commit()


# --- reading --------------------------------------------------------------------------------


def _scoped(query, run_uuid, experiment_id: str, tags: dict[str, str] | None):
    """The query kept to the experiment's active runs that carry every given tag value.

    Joins, not IN (subquery): on SQLite the join read 1.8 million params in 3.5 s, the
    subquery in 4.2-4.7 s.
    """
    if run_uuid is not SqlRun.run_uuid:
        query = query.join(SqlRun, SqlRun.run_uuid == run_uuid)
    query = query.where(
        SqlRun.experiment_id == int(experiment_id),
        SqlRun.lifecycle_stage == LifecycleStage.ACTIVE,
    )
    for key, value in (tags or {}).items():
        tag = sa.orm.aliased(SqlTag)
        query = query.join(
            tag, sa.and_(tag.run_uuid == run_uuid, tag.key == key, tag.value == value)
        )
    return query


def count_ended_runs(uri: str, experiment_id: str, tags: dict[str, str]) -> int:
    """How many active runs carrying these tag values are no longer RUNNING: one COUNT."""
    query = sa.select(sa.func.count()).select_from(SqlRun)
    query = _scoped(query, SqlRun.run_uuid, experiment_id, tags)
    query = query.where(SqlRun.status != RunStatus.to_string(RunStatus.RUNNING))
    with _connect(_engine(uri)) as conn:
        return int(conn.execute(query).scalar_one())


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def find_runs_by_key(
    uri: str, experiment_id: str, keys: set[str] | None = None
) -> dict[str, list[RunSummary]]:
    """Active runs of the experiment grouped by config key; every key when keys is None.

    One query (runs joined with their config_key tag and their deadunits.* tags); a key set
    larger than KEYS_SCAN_ALL reads every key of the experiment once and keeps the wanted
    ones, a smaller one is sent in IN lists of IN_CHUNK. Runs come newest first.
    """
    key_tag = sa.orm.aliased(SqlTag)
    own_tag = sa.orm.aliased(SqlTag)
    query = (
        sa.select(
            SqlRun.run_uuid,
            SqlRun.status,
            SqlRun.start_time,
            key_tag.value.label("config_key"),
            own_tag.key.label("tag_key"),
            own_tag.value.label("tag_value"),
        )
        .join(key_tag, sa.and_(key_tag.run_uuid == SqlRun.run_uuid, key_tag.key == TAG_CONFIG_KEY))
        .outerjoin(
            own_tag,
            sa.and_(
                own_tag.run_uuid == SqlRun.run_uuid,
                sa.or_(own_tag.key.startswith(OWNER_TAG_PREFIX), own_tag.key.in_(RESUME_TAGS)),
            ),
        )
        .where(
            SqlRun.experiment_id == int(experiment_id),
            SqlRun.lifecycle_stage == LifecycleStage.ACTIVE,
        )
        .order_by(SqlRun.start_time.desc(), SqlRun.run_uuid)
    )
    if keys is None or len(keys) > KEYS_SCAN_ALL:
        queries = [query]
    else:
        queries = [
            query.where(key_tag.value.in_(chunk)) for chunk in _chunks(sorted(keys), IN_CHUNK)
        ]
    found: dict[str, list[RunSummary]] = {}
    by_id: dict[str, RunSummary] = {}
    with _connect(_engine(uri)) as conn:
        for chunk_query in queries:
            for run_id, status, start, key, tag_key, tag_value in chain.from_iterable(
                _fetch(conn, chunk_query)
            ):
                if keys is not None and key not in keys:
                    continue
                summary = by_id.get(run_id)
                if summary is None:
                    summary = by_id[run_id] = RunSummary(run_id, status, key, start)
                    found.setdefault(key, []).append(summary)
                # LIKE may ignore case on some databases; keep the exact prefix only.
                if tag_key is not None and is_resume_tag(tag_key):
                    summary.tags[tag_key] = tag_value
    return found


def _value(table):
    """A metric value as MLflow returns it: NaN where is_nan (the stored value is 0)."""
    return sa.case((table.is_nan == sa.true(), sa.null()), else_=table.value).label("value")


def read_experiment(
    uri: str,
    experiment_id: str,
    tags: dict[str, str] | None = None,
    history_keys: Iterable[str] | None = None,
    history_run_ids: Iterable[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """The experiment's active runs as long tables, one query per table.

    Returns frames "runs" (run_id, run_name, status, start_time, end_time, user_id,
    artifact_uri), "params" and "tags" (run_id, key, value), "latest_metrics" (run_id, key,
    value, step, timestamp) and, when history_keys is given, "metrics" (see read_histories).
    `tags` keeps only runs carrying every one of these tag values (e.g.
    {"deadunits.role": "run"}). Metric values are what MLflow returns: NaN for NaN,
    +-1.7976931348623157e308 for +-inf. Rows come in no set order.
    """
    columns = {
        "runs": (
            SqlRun,
            [
                SqlRun.name.label("run_name"),
                SqlRun.status,
                SqlRun.start_time,
                SqlRun.end_time,
                SqlRun.user_id,
                SqlRun.artifact_uri,
            ],
        ),
        "params": (SqlParam, [SqlParam.key, SqlParam.value]),
        "tags": (SqlTag, [SqlTag.key, SqlTag.value]),
        "latest_metrics": (
            SqlLatestMetric,
            [
                SqlLatestMetric.key,
                _value(SqlLatestMetric),
                SqlLatestMetric.step,
                SqlLatestMetric.timestamp,
            ],
        ),
    }
    frames: dict[str, pd.DataFrame] = {}
    with _connect(_engine(uri)) as conn:
        for name, (model, selected) in columns.items():
            query = sa.select(model.run_uuid.label("run_id"), *selected)
            frames[name] = _frame(conn, _scoped(query, model.run_uuid, experiment_id, tags))
    if history_keys is not None:
        frames["metrics"] = read_histories(uri, experiment_id, history_keys, history_run_ids, tags)
    return frames


def read_histories(
    uri: str,
    experiment_id: str,
    keys: Iterable[str],
    run_ids: Iterable[str] | None = None,
    tags: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Every logged point (run_id, key, value, step, timestamp) of these metric keys, of the
    experiment's active runs (of run_ids only, when given; sent in IN lists of IN_CHUNK)."""
    query = sa.select(
        SqlMetric.run_uuid.label("run_id"),
        SqlMetric.key,
        _value(SqlMetric),
        SqlMetric.step,
        SqlMetric.timestamp,
    ).where(SqlMetric.key.in_(list(keys)))
    query = _scoped(query, SqlMetric.run_uuid, experiment_id, tags)
    with _connect(_engine(uri)) as conn:
        if run_ids is None:
            return _frame(conn, query)
        parts = [
            _frame(conn, query.where(SqlMetric.run_uuid.in_(chunk)))
            for chunk in _chunks(sorted(set(run_ids)), IN_CHUNK)
        ]
        if not parts:
            return _frame(conn, query.where(sa.false()))
    return pd.concat(parts, ignore_index=True)


def _fetch(conn, query, batch: int = FETCH_BATCH) -> Iterator[list[tuple]]:
    """The query's rows as the driver's tuples, a batch at a time.

    On the driver's own cursor: building a SQLAlchemy Row per row took half the time of
    pandas.read_sql.
    """
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.params
    if compiled.positiontup is not None:
        params = tuple(params[name] for name in compiled.positiontup)
    cursor = conn.connection.cursor()
    try:
        cursor.execute(compiled.string, params)
        while rows := cursor.fetchmany(batch):
            yield rows
    finally:
        cursor.close()


def _frame(conn, query) -> pd.DataFrame:
    """What pandas.read_sql returns, built a batch at a time (only one batch of the driver's
    tuples is alive at once)."""
    columns = [column.name for column in query.selected_columns]
    parts = [
        pd.DataFrame.from_records(rows, columns=columns, coerce_float=True)
        for rows in _fetch(conn, query)
    ]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]

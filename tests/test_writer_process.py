"""The writer process: what is handed to it is written even if it dies, a Ctrl-C does not
cut it, and it does not outlive its parent."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline import job, schema, writer_process
from pipeline.tracking import open_client, proc_stat
from tests.test_config import compose_with

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def where(parent: int) -> str:
    return "parent" if os.getpid() == parent else "writer"


def die_in_writer(parent: int) -> str:
    if os.getpid() != parent:
        os._exit(1)
    return "parent"


def survive_ctrl_c() -> str:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)
    return "alive"


@pytest.fixture
def fresh_writer():
    writer_process.stop()
    yield
    writer_process.stop()


def test_calls_run_in_the_writer(fresh_writer):
    assert writer_process.submit(where, os.getpid()).result() == "writer"


def test_a_call_the_dead_writer_held_runs_here_and_a_new_writer_follows(fresh_writer, caplog):
    assert writer_process.submit(die_in_writer, os.getpid()).result() == "parent"
    assert "the writer process died" in caplog.text
    assert writer_process.submit(where, os.getpid()).result() == "writer"


def bulk_writer_imported() -> bool:
    return "pipeline.bulk" in sys.modules


def test_calls_handed_before_start_run_before_the_writers_imports(fresh_writer):
    first = writer_process.submit(bulk_writer_imported)
    writer_process.start()
    assert first.result() is False  # it ran first: the store's creation waits for nothing
    assert writer_process.submit(bulk_writer_imported).result() is True
    writer_process.stop()
    writer_process.start()  # a new writer imports again
    assert writer_process.submit(bulk_writer_imported).result() is True


def test_the_writer_ignores_ctrl_c(fresh_writer):
    assert writer_process.submit(survive_ctrl_c).result() == "alive"


def test_calls_a_job_left_are_waited_for_at_the_end_and_failures_reported(fresh_writer):
    assert not writer_process.leave([])  # no sweep to leave them to: the job waits itself
    failed: list[BaseException] = []
    with writer_process.jobs_may_leave_calls(failed.append):
        left = [writer_process.submit(time.sleep, 0.5), writer_process.submit(int, "x")]
        assert writer_process.leave(left)
        assert not left[0].future.done()
    assert all(call.future.done() for call in left)
    assert [type(error) for error in failed] == [ValueError]
    assert not writer_process.leave([])


ORPHANING_PARENT = """
import os
from pipeline import writer_process
print(writer_process.submit(os.getpid).result(), flush=True)
os._exit(0)  # as a killed parent or a joblib worker ended by joblib: no goodbye
"""


def test_the_writer_ends_when_its_parent_is_gone():
    parent = subprocess.run(
        [sys.executable, "-c", ORPHANING_PARENT],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    writer = int(parent.stdout.split()[-1])
    deadline = time.time() + 10 * writer_process.PARENT_POLL_S + 5
    while time.time() < deadline and Path(f"/proc/{writer}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{writer}").exists() or _zombie(writer), "the writer outlived its parent"


def _zombie(pid: int) -> bool:
    fields = proc_stat(pid)
    return fields is None or fields[0] == "Z"


SMALL = ["train.engine=batched", "train.epochs=1", "data.n_samples=200", "train.batch_size=20"]


def finished_runs(store: str, cfg) -> list:
    client = open_client(store)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    return [r for r in runs if r.info.status == "FINISHED"]


@pytest.mark.slow
def test_a_large_job_writes_through_the_writer_process_and_a_small_one_on_a_thread(
    store, fresh_writer
):
    small = compose_with(f"tracking.uri={store}", *SMALL, "seeds=0-19")
    assert job.run_job(small)["finished"] == 20
    assert writer_process._pool is None  # not worth a process
    large = compose_with(
        f"tracking.uri={store}", *SMALL, f"seeds=100-{99 + writer_process.MIN_RUNS}"
    )
    assert job.run_job(large)["finished"] == writer_process.MIN_RUNS
    assert writer_process._pool is not None
    runs = finished_runs(store, large)
    assert len(runs) == 20 + writer_process.MIN_RUNS
    assert all(schema.FINAL_TRAIN_LOSS in r.data.metrics for r in runs)
    assert all(r.data.tags[schema.TAG_DEAD_AT_INIT] in ("true", "false") for r in runs)


@pytest.mark.slow
def test_a_job_leaves_its_last_chunks_to_the_sweep_which_waits_for_them(store, fresh_writer):
    large = compose_with(f"tracking.uri={store}", *SMALL, f"seeds=0-{writer_process.MIN_RUNS - 1}")
    failed: list[BaseException] = []
    with writer_process.jobs_may_leave_calls(failed.append):
        assert job.run_job(large)["finished"] == writer_process.MIN_RUNS
        assert writer_process._left  # returned without waiting for the writer
    assert writer_process._left is None and not failed
    assert len(finished_runs(store, large)) == writer_process.MIN_RUNS


def writer_in_a_pool_worker() -> tuple[int, int, bool]:
    """In a joblib worker: the writer's pid, the worker's, and whether it stopped after."""
    writer = writer_process.submit(os.getpid).result()
    writer_process.stop_in_pool_workers()
    return writer, os.getpid(), writer_process._pool is None


def test_a_joblib_worker_starts_its_writer_and_stops_it_after_each_job():
    from joblib import Parallel, delayed

    ((writer, worker, stopped),) = Parallel(n_jobs=2, backend="loky")(
        delayed(writer_in_a_pool_worker)() for _ in range(1)
    )
    assert writer not in (worker, os.getpid()) and stopped
    assert not Path(f"/proc/{writer}").exists() or _zombie(writer)


@pytest.mark.parametrize(("launcher", "here"), [("basic", True), ("joblib", False)])
def test_a_sweep_starts_the_writer_early_only_for_jobs_run_in_its_own_process(launcher, here):
    from pipeline.sweep import runs_jobs_here

    assert runs_jobs_here(compose_with(f"hydra/launcher={launcher}", hydra=True)) is here


def planned(*overrides: str, seeds: int):
    from pipeline.sweep import Cell

    cfg = compose_with("train.engine=batched", *overrides)
    return [Cell([], cfg, list(range(seeds)))]


@pytest.mark.parametrize(
    ("launcher", "overrides", "seeds", "new_store", "expected"),
    [
        ("basic", [], writer_process.MIN_RUNS, True, True),
        ("basic", [], writer_process.MIN_RUNS - 1, True, False),  # a thread writes it
        ("basic", [], writer_process.MIN_RUNS, False, False),  # nothing to migrate
        ("basic", ["tracking.writer=client"], writer_process.MIN_RUNS, True, False),
        ("basic", ["train.engine=keras"], writer_process.MIN_RUNS, True, False),
        ("joblib", [], writer_process.MIN_RUNS, True, False),  # jobs run elsewhere
    ],
)
def test_the_writer_creates_a_new_store_when_this_process_will_hand_it_runs(
    tmp_path, launcher, overrides, seeds, new_store, expected
):
    from pipeline.sweep import creates_store_in_writer

    database = tmp_path / "mlflow.db"
    if not new_store:
        open_client(f"sqlite:///{database}")
    config = compose_with(f"hydra/launcher={launcher}", hydra=True)
    cells = planned(*overrides, seeds=seeds)
    assert creates_store_in_writer(config, cells, f"sqlite:///{database}") is expected


@pytest.mark.slow
def test_a_sweep_whose_writer_created_the_store_logs_every_run_and_resumes(store, tmp_path):
    from tests.conftest import run_cli

    runs = writer_process.MIN_RUNS
    sweep = ["-m", f"seed=range(0,{runs})", f"tracking.uri={store}", *SMALL]
    sweep.append(f"hydra.sweep.dir={tmp_path}/multirun")
    first = run_cli(*sweep)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "tracking.writer=auto: bulk" in first.stderr
    finished = finished_runs(store, compose_with(f"tracking.uri={store}"))
    roles = Counter(run.data.tags[schema.ROLE_TAG] for run in finished)
    assert roles == {schema.ROLE_RUN: runs, schema.ROLE_SWEEP: 1}
    again = run_cli(*sweep)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"nothing to do: all {runs} runs of this sweep are already FINISHED" in again.stderr

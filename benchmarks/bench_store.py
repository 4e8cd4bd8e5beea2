"""Store benchmark: the bulk writer (pipeline.bulk) against MLflow's client path, on SQLite.

    .venv/bin/python benchmarks/bench_store.py [--client-runs 300] [--bulk-runs 10000]
                                               [--chunk 10000] [--store-runs 100000]

Every run is shaped like a training run of the default config: 18 params, 10 tags,
31 metric points (train_loss and test_loss over 10 epochs, 11 scalars), 2 small artifacts.
No TensorFlow: the records are built directly. In a fresh SQLite store in a temporary
directory, it prints

1. client path: Tracker.log_complete, one run after another (three transactions a run);
2. bulk: write_runs on --bulk-runs records in chunks of --chunk, artifacts included;
3. the store grown to --store-runs runs with write_runs (the filler runs carry no
   artifacts, which do not matter below), then find_runs_by_key for every key of the store,
   for 100 keys, and for all keys (keys=None);
4. read_experiment of the whole experiment (runs, params, tags, latest metrics), then the
   train_loss history of 1,000 runs (read_histories), in a child process: its time and
   the child's peak resident set size (everything it held, pandas and MLflow included).

Times exclude building the RunRecords (the pipeline builds them while training).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from pipeline import schema  # noqa: E402  (after the path to this checkout)

EPOCHS = 10
# Every scalar a run of the default config logs (its one hidden layer counted per layer).
SCALARS = (
    *schema.RESULT_METRICS,
    schema.layer_dead_units("init", 1),
    schema.layer_dead_units("final", 1),
)


def make_record(i: int, with_artifacts: bool = True):
    """A run shaped like one of the default config (values made up, sizes and keys real)."""
    from mlflow.entities import Metric

    from pipeline.tracking import RunRecord

    rng = random.Random(i)
    params = {
        "seed": str(i),
        "model.hidden_sizes": "[2]",
        "model.activation": "relu",
        "model.output_activation": "linear",
        "model.bias_init": "0.0",
        "init.name": "glorot_uniform",
        "data.n_samples": "2000",
        "data.low": "0.0",
        "data.high": "1.0",
        "data.test_size": "0.2",
        "data.seed": "23",
        "train.epochs": str(EPOCHS),
        "train.batch_size": "25",
        "train.optimizer": "adam",
        "train.learning_rate": "0.001",
        "train.loss": "mae",
        "probe.saturation_tol": "0.001",
        "tracking.experiment": "bench",
    }
    dead = rng.random() < 0.3
    tags = {
        "config_key": f"{i:016x}",
        "sweep_id": "bench-sweep",
        "mlflow.parentRunId": "0" * 32,
        "mlflow.source.git.commit": "f" * 40,
        "engine": "batched",
        "dead_at_init": str(dead).lower(),
        "diverged": "false",
        "deadunits.role": "run",
        "deadunits.host": "bench-host",
        "deadunits.pid": "4242",
    }
    now = int(time.time() * 1000)
    record = RunRecord(f"relu-glorot_uniform-s{i}", params, tags)
    for key in ("train_loss", "test_loss"):
        loss = rng.uniform(0.2, 0.5)
        record.metrics += [Metric(key, loss * 0.9**e, now, e) for e in range(1, EPOCHS + 1)]
    record.metrics += [Metric(key, rng.random(), now, 0) for key in SCALARS]
    if with_artifacts:
        record.artifacts = {
            "config.yaml": "\n".join(f"{k}: {v}" for k, v in params.items()) + "\n",
            "initial_weights.json": json.dumps({"W1": [rng.random()] * 2, "W2": [rng.random()]}),
        }
    return record


def timed(function, *args):
    """(wall seconds, result); the CPU seconds of this process accumulate in CPU."""
    start, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    CPU[0] += time.process_time() - cpu
    return time.perf_counter() - start, result


CPU = [0.0]  # this process's CPU seconds inside timed(): shown beside the wall clock, since
# on a shared machine the wall clock also measures the other processes.


def cpu_since(mark: float) -> str:
    return f"(CPU {CPU[0] - mark:.1f} s)"


def write_in_chunks(uri: str, experiment_id: str, first: int, count: int, chunk: int, files: bool):
    """Bulk-write runs first..first+count; returns the seconds spent inside write_runs."""
    from pipeline.bulk import write_runs

    seconds = 0.0
    for start in range(first, first + count, chunk):
        records = [make_record(i, files) for i in range(start, min(start + chunk, first + count))]
        took, _ = timed(write_runs, uri, experiment_id, records)
        seconds += took
    return seconds


def read_child(uri: str, experiment_id: str) -> None:
    """Child process: read_experiment with one history; prints seconds and peak RSS."""
    from pipeline.bulk import read_experiment, read_histories

    start, cpu = time.perf_counter(), time.process_time()
    frames = read_experiment(uri, experiment_id, tags={"deadunits.role": "run"})
    sample = frames["runs"]["run_id"].sample(min(1000, len(frames["runs"])), random_state=0)
    history = read_histories(uri, experiment_id, ["train_loss"], sample)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    rows = {name: len(frame) for name, frame in frames.items()}
    rows["metrics (history sample)"] = len(history)
    memory = {name: frame.memory_usage(deep=True).sum() / 2**20 for name, frame in frames.items()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"seconds": seconds, "cpu": cpu, "peak_mib": peak, "rows": rows, "frame_mib": memory}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client-runs", type=int, default=300)
    parser.add_argument("--bulk-runs", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=10_000, help="runs per write_runs call")
    parser.add_argument("--store-runs", type=int, default=100_000)
    parser.add_argument("--read", nargs=2, metavar=("URI", "EXPERIMENT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        read_child(*args.read)
        return

    import mlflow

    from pipeline.bulk import find_runs_by_key
    from pipeline.tracking import Tracker

    print(
        f"MLflow {mlflow.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs,"
        f" load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory(prefix="deadunits-bench-store-") as tmp:
        client_tracker = Tracker(f"sqlite:///{tmp}/client.db", "bench")
        records = [make_record(i) for i in range(args.client_runs)]
        mark = CPU[0]
        took, _ = timed(lambda: [client_tracker.log_complete(r) for r in records])
        client_rate = args.client_runs / took
        print(
            f"client path   {args.client_runs:>7,} runs  {took:7.1f} s  {client_rate:7.1f} runs/s"
            f"  {cpu_since(mark)}"
        )

        uri = f"sqlite:///{tmp}/bulk.db"
        experiment_id = Tracker(uri, "bench").experiment_id
        mark = CPU[0]
        took = write_in_chunks(uri, experiment_id, 0, args.bulk_runs, args.chunk, files=True)
        rate = args.bulk_runs / took
        print(
            f"write_runs    {args.bulk_runs:>7,} runs  {took:7.1f} s  {rate:7.1f} runs/s"
            f"  {cpu_since(mark)}  {rate / client_rate:.0f}x the client path"
            f" (chunks of {args.chunk:,}, artifacts included)"
        )

        filler = args.store_runs - args.bulk_runs
        if filler > 0:
            mark = CPU[0]
            took = write_in_chunks(uri, experiment_id, args.bulk_runs, filler, 10_000, files=False)
            print(
                f"write_runs    {filler:>7,} runs  {took:7.1f} s  {filler / took:7.1f} runs/s"
                f"  {cpu_since(mark)}  (store grown to {args.store_runs:,} runs, no artifacts)"
            )
        size = Path(f"{tmp}/bulk.db").stat().st_size / 2**20
        print(f"store         {size:,.0f} MiB on disk")

        keys = {f"{i:016x}" for i in range(args.store_runs)}
        for label, wanted in (
            (f"{len(keys):,} keys", keys),
            ("100 keys", set(random.Random(0).sample(sorted(keys), 100))),
            ("all (None)", None),
        ):
            mark = CPU[0]
            took, found = timed(find_runs_by_key, uri, experiment_id, wanted)
            print(
                f"find_runs_by_key {label:>14}  {took:6.2f} s  {cpu_since(mark)}"
                f"  ({len(found):,} keys found)"
            )

        child = subprocess.run(
            [sys.executable, __file__, "--read", uri, experiment_id],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"read_experiment {result['seconds']:6.2f} s (CPU {result['cpu']:.1f} s), child peak RSS "
            f"{result['peak_mib']:,.0f} MiB; rows {result['rows']}"
        )
        print(
            "frames in memory (MiB): "
            + ", ".join(f"{k} {v:.0f}" for k, v in result["frame_mib"].items())
        )


if __name__ == "__main__":
    main()

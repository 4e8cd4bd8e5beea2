"""Engine benchmark: naive keras fit vs the batched engine vs bare MLflow logging.

    .venv/bin/python benchmarks/bench_engines.py [--sizes 100 1000 10000] [--naive-runs 5]

Every measurement runs the notebook network (1 -> 2 -> 1, relu, glorot_uniform, Adam 1e-3,
MAE, 10 epochs, batch 25, 1,600 training samples: the default config) in its own child
process, against a fresh SQLite store in a temporary directory:

1. naive: the keras engine, one Model.fit per run, end to end (train, probe, log);
2. batched: the batched engine end to end, at each size;
3. bare logging: the same per-run payload (params, metrics with steps, tags, both
   artifacts), built without training and logged through the same Tracker;
4. the ratios, and peak memory.

Timing starts when the job starts (run_job), after the child has imported TensorFlow and
created the store and experiment, as a sweep does before its jobs. Peak memory is the
child's peak resident set size plus its writer process's (resource.getrusage ru_maxrss):
everything they held, TensorFlow included. --server-workers N adds bare logging through an `mlflow server` with N
workers on a SQLite store, for comparison.

    .venv/bin/python benchmarks/bench_engines.py --training-only [--members 1000]

times the batched engine's training alone (`pipeline.engines.batched.train`, tracing
included; no probe, no logging) for each cell of TRAINING_CELLS: the default config with
he_normal initial weights and the given hidden sizes and epochs. It prints wall and
process CPU seconds: on a shared machine the CPU time is the steadier figure.

    .venv/bin/python benchmarks/bench_engines.py --scale 10000 100000 [--writers bulk client]
        [--repeat N] [--keep DIR]

runs whole sweeps through the CLI (process start-up, TensorFlow import and store creation
included) with each writer, and prints them against the bare client ceiling and the
training-only rate, with peak RSS and disk per 10,000 runs. --repeat N times training alone
and the sweeps N times in turn and adds their medians (on a shared machine one run's speed
moves by a third). --keep DIR keeps each store (DIR/<runs>-<writer>[-<turn>]/mlflow.db)
for timing a relaunch or a report on it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from resource import RUSAGE_CHILDREN, RUSAGE_SELF

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TARGET_NAIVE_RATIO = 50.0
TARGET_LOGGING_RATIO = 0.8
TARGET_PEAK_MIB = 2048
# (hidden sizes, epochs) timed by --training-only: the notebook net and deep narrow nets.
TRAINING_CELLS = (([2], 10), ([4] * 7, 1), ([2] * 20, 1), ([10] * 20, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--naive-runs", type=int, default=5)
    parser.add_argument("--bare-runs", type=int, default=1000, help="runs logged without training")
    parser.add_argument("--log-workers", type=int, default=1, help="tracking.log_workers")
    parser.add_argument("--server-workers", type=int, default=0, help="also log via a server")
    parser.add_argument("--server-runs", type=int, default=300)
    parser.add_argument("--training-only", action="store_true", help="time training alone")
    parser.add_argument("--members", type=int, default=1000, help="members per training cell")
    parser.add_argument(
        "--scale",
        type=int,
        nargs="*",
        metavar="RUNS",
        help="whole sweeps through the CLI (start-up included) with each writer, e.g. 10000",
    )
    parser.add_argument(
        "--writers", nargs="+", default=["bulk", "client"], help="writers timed by --scale"
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="with --scale: keep the stores in KEEP (KEEP/<runs>-<writer>[-<turn>])",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="with --scale: time training alone and the sweeps this many times, in turn",
    )
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "RUNS"), help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        kind, runs = args.measure[0], int(args.measure[1])
        print(json.dumps(measure(kind, runs, args.log_workers, args.uri)))
        return
    if args.scale is not None:
        scale(args.scale or [10_000], args.writers, args.bare_runs, args.keep, args.repeat)
        return
    if args.training_only:
        for hidden, epochs in TRAINING_CELLS:
            print(training_rate(hidden, epochs, args.members), flush=True)
        return

    started = datetime.now(timezone.utc)
    print(header(started, args.log_workers), flush=True)
    rows = [child("naive", args.naive_runs, args.log_workers)]
    rows += [child("batched", size, args.log_workers) for size in args.sizes]
    rows.append(child("bare", args.bare_runs, args.log_workers))
    if args.server_workers:
        rows.append(server_row(args.server_workers, args.server_runs, args.log_workers))
    print(table(rows))
    print(summary(rows))
    print(f"finished in {(datetime.now(timezone.utc) - started).total_seconds() / 60:.1f} min")


def header(started: datetime, log_workers: int) -> str:
    import importlib.metadata as meta

    versions = ", ".join(
        f"{name} {meta.version(name)}" for name in ("tensorflow", "keras", "mlflow", "numpy")
    )
    return (
        f"deadunits engine benchmark, {started:%Y-%m-%d %H:%M} UTC, {socket.gethostname()}\n"
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, {versions}\n"
        "notebook network 1 -> 2 -> 1 (relu hidden, linear output), glorot_uniform, Adam 1e-3, "
        f"MAE, 10 epochs, batch 25, 1600 train samples; a fresh SQLite store per measurement; "
        f"log_workers {log_workers}; peak memory = peak RSS of the measuring process plus its writer"
    )


def child(kind: str, runs: int, log_workers: int, uri: str | None = None) -> dict:
    """Run one measurement in a fresh process, so its peak memory is its own."""
    print(f"  measuring {kind} x {runs} ...", file=sys.stderr, flush=True)
    command = [sys.executable, __file__, "--measure", kind, str(runs)]
    command += ["--log-workers", str(log_workers)] + (["--uri", uri] if uri else [])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=PROJECT_ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{kind} x {runs} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(kind: str, runs: int, log_workers: int, uri: str | None) -> dict:
    """One measurement, in this process: the job (or bare logging) timed end to end."""
    scratch = tempfile.TemporaryDirectory(prefix="deadunits-bench-") if uri is None else None
    with scratch or contextlib.nullcontext():
        uri = uri or f"sqlite:///{scratch.name}/mlflow.db"
        cfg = compose_config(uri, "keras" if kind == "naive" else "batched", runs, log_workers)
        from pipeline.tracking import Tracker

        tracker = Tracker(uri, cfg.tracking.experiment)  # the store and experiment, untimed
        if kind == "bare":
            seconds, counts = bare_logging(cfg, tracker)
        else:
            import pipeline.engines.batched  # noqa: F401  (import TensorFlow before timing)
            from pipeline.job import run_job

            start = time.perf_counter()
            counts = run_job(cfg)
            seconds = time.perf_counter() - start
    from pipeline import writer_process

    writer_process.stop()  # a writer process's peak counts once it has ended
    peak_kib = sum(resource.getrusage(who).ru_maxrss for who in (RUSAGE_SELF, RUSAGE_CHILDREN))
    label = {"naive": "naive: keras fit per run", "batched": "batched end to end"}
    return {
        "kind": kind,
        "label": label.get(kind, "bare logging, no training"),
        "runs": runs,
        "finished": counts.get("finished", 0),
        "seconds": seconds,
        "runs_per_s": runs / seconds,
        "peak_mib": peak_kib / 1024,
    }


def training_rate(hidden: list[int], epochs: int, members: int, init: str = "he_normal") -> str:
    """Time the batched engine training `members` seeds of one cell; a line with runs/s."""
    from omegaconf import open_dict

    from pipeline.data import make_identity_data
    from pipeline.engines import batched, each_member
    from pipeline.initializers import initial_weights_for_seeds, layer_shapes

    cfg = compose_config("sqlite:///unused.db", "batched", members, 1, [f"init={init}"])
    with open_dict(cfg):
        cfg.model.hidden_sizes, cfg.train.epochs = hidden, epochs
    data = make_identity_data(**cfg.data)
    shapes = layer_shapes(data.x_train.shape[1], hidden, data.y_train.shape[1])
    weights = initial_weights_for_seeds(cfg.init, shapes, cfg.model.bias_init, list(cfg.seeds))
    start, cpu = time.perf_counter(), time.process_time()
    results = each_member(batched.train(cfg.train, cfg.model, data, list(cfg.seeds), weights))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert len(results) == members
    widths = sorted(set(hidden))
    label = f"[{hidden[0]}]x{len(hidden)}" if len(widths) == 1 else str(hidden)
    return (
        f"{label:<10} {cfg.model.activation} {init} {epochs} epoch(s) x {members} members: "
        f"{seconds:6.1f} s wall, {cpu:6.1f} s CPU, {members / seconds:7.1f} runs/s"
    )


def sweep_row(runs: int, writer: str, tmp: Path) -> dict:
    """A whole sweep of the notebook net through the CLI into a fresh store in the new
    directory tmp, start-up included: wall seconds, the peak RSS of the process and its
    writer process together, and the disk the store and its artifacts take."""
    import pipeline.tracking  # noqa: F401  (GroupMemory's /proc reader, loaded before the clock)

    tmp.mkdir(parents=True, exist_ok=False)
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "-m",
        f"seed=range(0,{runs})",
        "train.engine=batched",
        f"tracking.writer={writer}",
        f"tracking.uri=sqlite:///{tmp}/mlflow.db",
        "tracking.experiment=scale",
        f"hydra.sweep.dir={tmp}/multirun",
    ]
    print(f"  sweeping {runs} runs, tracking.writer={writer} ...", file=sys.stderr, flush=True)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    # Its stderr (a progress line every few seconds) goes to a file: an undrained pipe
    # fills during a long sweep (46 KB of 64 KiB after 35 minutes of a 100,000-run client
    # sweep) and then stalls it.
    errors = Path(tmp, "sweep.stderr")
    start = time.perf_counter()
    with errors.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its writer process shares its process group
        )
    with GroupMemory(process.pid) as memory:
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"sweep failed:\n{errors.read_text(errors='replace')[-3000:]}")
    database = Path(tmp, "mlflow.db").stat().st_size
    artifacts = sum(f.stat().st_size for f in Path(tmp, "mlartifacts").rglob("*") if f.is_file())
    return {
        "label": f"sweep, tracking.writer={writer}",
        "runs": runs,
        "seconds": seconds,
        "runs_per_s": runs / seconds,
        # The sweeping process and its writer together, or the sweeping process alone.
        "peak_mib": max(memory.peak_bytes / 2**20, usage.ru_maxrss / 1024),
        "db_mib_per_10k": database / 2**20 * 10_000 / runs,
        "artifacts_mib_per_10k": artifacts / 2**20 * 10_000 / runs,
    }


class GroupMemory:
    """The peak of the summed resident memory of a process group, sampled every 0.1 s.

    The group's members are looked up once a second; between scans only their own statm
    files are read. (A scan of /proc takes 2.5 ms of CPU: every 0.1 s, this process took
    2.2-2.6 s of CPU from the 37 s sweep it measured.)"""

    SAMPLE_S, SCAN_S = 0.1, 1.0

    def __init__(self, group: int):
        self.group, self.peak_bytes = group, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()

    def _members(self) -> set[int]:
        from pipeline.tracking import proc_stat

        members = set()
        for entry in Path("/proc").glob("[0-9]*"):
            fields = proc_stat(int(entry.name))
            if fields is not None and int(fields[2]) == self.group:  # field 5, the group
                members.add(int(entry.name))
        return members

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        members: set[int] = set()
        next_scan = 0.0
        while not self._done.wait(self.SAMPLE_S):
            if time.monotonic() >= next_scan:
                members, next_scan = self._members(), time.monotonic() + self.SCAN_S
            total = 0
            for pid in list(members):
                try:
                    total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
                except OSError:
                    members.discard(pid)  # it ended meanwhile
            self.peak_bytes = max(self.peak_bytes, total)


def scale(
    sizes: list[int], writers: list[str], bare_runs: int, keep: Path | None, repeat: int = 1
) -> None:
    """Sweeps at scale with each writer, against the bare client ceiling and training alone;
    with repeat > 1, training alone and the sweeps take turns and the medians are printed."""
    started = datetime.now(timezone.utc)
    print(header(started, 1), flush=True)
    # Every store stays until the end. On a file system without a journal, ext4 skips the
    # inodes freed in the last minute when it allocates new ones (recently_deleted), and
    # creating a store's artifact files right after another store was deleted took up to
    # 20 s of kernel time instead of 1 s for 10,000 runs (measured).
    with (
        contextlib.nullcontext(keep)
        if keep is not None
        else tempfile.TemporaryDirectory(prefix="deadunits-scale-")
    ) as root:
        root = Path(root)
        (root / "ceiling").mkdir(parents=True, exist_ok=False)
        ceiling = child("bare", bare_runs, 1, f"sqlite:///{root}/ceiling/mlflow.db")
        print(
            f"bare client ceiling: {ceiling['runs_per_s']:.1f} runs/s ({bare_runs} runs)",
            flush=True,
        )
        members = min(max(sizes), 10_000)
        training_rates: list[float] = []
        rows: dict[tuple[int, str], list[dict]] = {}
        for turn in range(1, repeat + 1):
            training = training_rate([2], 10, members, init="glorot_uniform")
            training_rates.append(float(training.split()[-2]))
            print(f"training only: {training}")
            print(SCALE_HEADER, flush=True)
            for runs in sizes:
                for writer in writers:
                    name = f"{runs}-{writer}" + (f"-{turn}" if repeat > 1 else "")
                    row = sweep_row(runs, writer, root / name)
                    rows.setdefault((runs, writer), []).append(row)
                    print(scale_line(row, ceiling["runs_per_s"], training_rates[-1]), flush=True)
        if repeat > 1:
            training_median = statistics.median(training_rates)
            print(f"median of {repeat}: training only {training_median:.1f} runs/s")
            print(SCALE_HEADER)
            for turns in rows.values():
                median = {
                    key: statistics.median(row[key] for row in turns)
                    for key in ("seconds", "peak_mib", "db_mib_per_10k", "artifacts_mib_per_10k")
                }
                row = {**turns[0], **median, "runs_per_s": turns[0]["runs"] / median["seconds"]}
                print(scale_line(row, ceiling["runs_per_s"], training_median), flush=True)
    print("targets: bulk >= 8x the client ceiling at 10,000 runs; >= 0.6x training alone;")
    print("         100,000 runs under 2048 MiB peak RSS")
    print(f"finished in {(datetime.now(timezone.utc) - started).total_seconds() / 60:.1f} min")


SCALE_HEADER = (
    f"{'sweep':<34}{'runs':>8}{'seconds':>9}{'runs/s':>9}{'x client':>9}{'x train':>9}"
    f"{'peak MiB':>9}{'db MiB/10k':>11}{'art MiB/10k':>12}"
)


def scale_line(row: dict, ceiling_rate: float, training_rate_s: float) -> str:
    return (
        f"{row['label']:<34}{row['runs']:>8}{row['seconds']:>9.1f}{row['runs_per_s']:>9.1f}"
        f"{row['runs_per_s'] / ceiling_rate:>8.1f}x"
        f"{row['runs_per_s'] / training_rate_s:>8.2f}x{row['peak_mib']:>9.0f}"
        f"{row['db_mib_per_10k']:>11.1f}{row['artifacts_mib_per_10k']:>12.1f}"
    )


def compose_config(uri: str, engine: str, runs: int, log_workers: int, extra=()):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    import pipeline.config  # noqa: F401  (registers ${repeat:...})

    overrides = [
        f"tracking.uri={uri}",
        f"train.engine={engine}",
        f"tracking.log_workers={log_workers}",
        "tracking.sweep_id=bench",  # a fresh store: a job of a sweep, nothing to resume
        *extra,
    ]
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        cfg.seeds = list(range(runs))
    return cfg


def bare_logging(cfg, tracker) -> tuple[float, dict]:
    """Log the payload a training run logs, built from untrained members: no training."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.data import make_identity_data
    from pipeline.engines import MemberResult
    from pipeline.initializers import layer_shapes
    from pipeline.job import prepare_members, trained_records
    from pipeline.schema import config_key
    from pipeline.tracking import flat_config

    flat = flat_config(cfg)
    seeds = list(cfg.seeds)
    data = make_identity_data(**cfg.data)
    keys = {seed: config_key(flat, seed) for seed in seeds}
    shapes = layer_shapes(1, list(cfg.model.hidden_sizes), 1)
    members = prepare_members(cfg, flat, tracker, shapes, seeds, keys)
    losses = [0.25] * cfg.train.epochs
    results = [MemberResult(m.seed, m.weights, losses, losses) for m in members]
    records = trained_records(cfg, members, results, data)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=cfg.tracking.log_workers) as logger:
        list(logger.map(tracker.log_complete, records))
    return time.perf_counter() - start, {"finished": len(records)}


def server_row(workers: int, runs: int, log_workers: int) -> dict:
    """Bare logging through `mlflow server --workers N` on SQLite, client threads 2N."""
    with tempfile.TemporaryDirectory(prefix="deadunits-bench-server-") as tmp:
        port = free_port()
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{tmp}/mlflow.db",
                "--default-artifact-root",
                Path(tmp, "artifacts").as_uri(),
                "--no-serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its workers go with it when we stop it
        )
        try:
            wait_for_server(port)
            row = child("bare", runs, max(log_workers, 2 * workers), f"http://127.0.0.1:{port}")
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    row["label"] = f"bare logging via server, {workers} workers, {2 * workers} threads"
    row["kind"] = "server"
    return row


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_server(port: int, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"mlflow server on port {port} did not start within {timeout:.0f} s")


def table(rows: list[dict]) -> str:
    lines = [
        f"{'measurement':<54} {'runs':>6} {'finished':>8} {'seconds':>8} {'runs/s':>8} "
        f"{'peak RSS MiB':>12}"
    ]
    for row in rows:
        lines.append(
            f"{row['label']:<54} {row['runs']:>6} {row['finished']:>8} {row['seconds']:>8.1f} "
            f"{row['runs_per_s']:>8.2f} {row['peak_mib']:>12.0f}"
        )
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    naive = next(r for r in rows if r["kind"] == "naive")
    bare = next(r for r in rows if r["kind"] == "bare")
    batched = {r["runs"]: r for r in rows if r["kind"] == "batched"}
    lines = ["", "ratios (batched end to end over):"]
    for runs, row in batched.items():
        lines.append(
            f"  {runs:>6} runs: naive {row['runs_per_s'] / naive['runs_per_s']:7.1f}x, "
            f"bare logging {row['runs_per_s'] / bare['runs_per_s']:5.2f}x"
        )
    lines.append("targets:")
    if 1000 in batched:
        ratio = batched[1000]["runs_per_s"] / naive["runs_per_s"]
        lines.append(f"  >= {TARGET_NAIVE_RATIO:g}x naive at 1000 runs: {verdict(ratio >= 50)}")
        ratio = batched[1000]["runs_per_s"] / bare["runs_per_s"]
        lines.append(
            f"  >= {TARGET_LOGGING_RATIO:g}x bare logging at 1000 runs: "
            f"{verdict(ratio >= TARGET_LOGGING_RATIO)}"
        )
    if 10_000 in batched:
        row = batched[10_000]
        ok = row["finished"] == 10_000 and row["peak_mib"] < TARGET_PEAK_MIB
        lines.append(
            f"  10000 runs finished under {TARGET_PEAK_MIB} MiB peak RSS: {verdict(ok)} "
            f"({row['finished']} finished, {row['peak_mib']:.0f} MiB)"
        )
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


if __name__ == "__main__":
    main()

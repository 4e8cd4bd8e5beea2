"""Bad input fails before any training or logging: non-zero exit, one line naming the key.

Each case runs the real CLI in a fresh directory with a fresh store path, and checks
that no store, experiment or output directory was created.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, run_cli

pytestmark = pytest.mark.slow

# (case id, CLI arguments, the key the one-line error must name)
CASES = [
    ("unknown activation", ["model.activation=foo"], "model.activation"),
    ("unknown output activation", ["model.output_activation=softmax"], "model.output_activation"),
    ("unknown initializer", ["init=bogus"], "init"),
    ("negative epochs", ["train.epochs=-1"], "train.epochs"),
    ("zero epochs", ["train.epochs=0"], "train.epochs"),
    ("zero batch size", ["train.batch_size=0"], "train.batch_size"),
    ("batch larger than train set", ["train.batch_size=5000"], "train.batch_size"),
    ("test fraction above 1", ["data.test_size=1.5"], "data.test_size"),
    ("test fraction 0", ["data.test_size=0"], "data.test_size"),
    ("too few samples", ["data.n_samples=2"], "data.n_samples"),
    ("empty hidden sizes", ["model.hidden_sizes=[]"], "model.hidden_sizes"),
    ("zero-width layer", ["model.hidden_sizes=[2,0]"], "model.hidden_sizes"),
    ("hidden sizes not a list", ["model.hidden_sizes=abc"], "model.hidden_sizes"),
    ("input range low >= high", ["data.low=1.0", "data.high=0.5"], "data.low"),
    ("negative seed", ["seed=-3"], "seed"),
    ("seed not an integer", ["seed=abc"], "seed"),
    ("unknown engine", ["train.engine=turbo"], "train.engine"),
    ("unknown optimizer", ["train.optimizer=adamw"], "train.optimizer"),
    ("unknown loss", ["train.loss=hinge"], "train.loss"),
    ("negative learning rate", ["train.learning_rate=-0.1"], "train.learning_rate"),
    ("bias init not a number", ["model.bias_init=abc"], "model.bias_init"),
    ("misspelt key", ["model.activaton=relu"], "model.activaton"),
    ("malformed override", ["model.activation=[relu"], "malformed override"),
    ("override without =", ["foo"], "malformed override"),
    ("bad value inside a sweep", ["-m", "model.activation=relu,foo"], "model.activation"),
    ("bad group option inside a sweep", ["-m", "seed=0,1", "init=he_normal,nope"], "init"),
    ("bad value with a sweep", ["-m", "seed=0,1", "train.epochs=0"], "train.epochs"),
    ("store directory missing", ["tracking.uri=sqlite:///{tmp}/missing/mlflow.db"], "tracking.uri"),
    (
        "server refuses",
        ["tracking.uri=http://127.0.0.1:{closed}", "tracking.timeout_s=3"],
        "tracking.uri",
    ),
    (
        "server never answers",
        ["tracking.uri=http://127.0.0.1:{silent}", "tracking.timeout_s=3"],
        "tracking.uri",
    ),
    ("unknown writer", ["tracking.writer=turbo"], "tracking.writer"),
    (
        "bulk writer on a file store",
        ["tracking.writer=bulk", "tracking.uri=file://{tmp}"],
        "tracking.writer",
    ),
    ("unsupported store scheme", ["tracking.uri=ftp://127.0.0.1/x"], "tracking.uri"),
    ("store file not SQLite", ["tracking.uri=sqlite:///{tmp}/notes.db"], "tracking.uri"),
    ("store directory read-only", ["tracking.uri=sqlite:///{readonly}/mlflow.db"], "tracking.uri"),
    (
        "database refuses",
        ["tracking.uri=postgresql+psycopg2://user@127.0.0.1:{closed}/db", "tracking.timeout_s=3"],
        "tracking.uri",
    ),
    (
        "database never answers",
        ["tracking.uri=postgresql+psycopg2://user@127.0.0.1:{silent}/db", "tracking.timeout_s=3"],
        "tracking.uri",
    ),
    (
        "sweep to a silent server",
        ["-m", "seed=0,1", "tracking.uri=http://127.0.0.1:{silent}", "tracking.timeout_s=3"],
        "tracking.uri",
    ),
]


@pytest.fixture(scope="module")
def silent_server():
    """A TCP port that accepts connections and never answers: a hung tracking server."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def readonly_dir(tmp_path_factory):
    """A directory this process cannot write, even as root (a read-only file system)."""
    directory = tmp_path_factory.mktemp("readonly")
    if os.geteuid() != 0:
        directory.chmod(0o555)
        yield directory
        directory.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(directory)])
    if mounted.returncode != 0:
        pytest.fail("could not mount a read-only tmpfs for the read-only store case")
    yield directory
    subprocess.run(["umount", str(directory)], check=True)


NOT_A_DATABASE = "a user's notes, not a database\n"


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, silent_server, readonly_dir):
    """Run every case (two at a time: the machine has two cores)."""
    closed = closed_port()

    def run(case):
        name, args, _ = case
        workdir = tmp_path_factory.mktemp("case")
        (workdir / "notes.db").write_text(NOT_A_DATABASE)
        args = [
            a.format(tmp=workdir, closed=closed, silent=silent_server, readonly=readonly_dir)
            for a in args
        ]
        if not any(a.startswith("tracking.uri=") for a in args):
            args.append(f"tracking.uri=sqlite:///{workdir}/mlflow.db")
        started = time.perf_counter()
        result = run_cli(*args, cwd=workdir, timeout=120)
        return name, (result, time.perf_counter() - started, workdir)

    with ThreadPoolExecutor(max_workers=2) as pool:
        found = dict(pool.map(run, CASES))
    report = PROJECT_ROOT / "test-artifacts" / "bad_input_times.txt"
    report.parent.mkdir(exist_ok=True)
    report.write_text(
        "".join(
            f"{seconds:5.1f} s  {name}: {r.stderr.strip()}\n"
            for name, (r, seconds, _) in found.items()
        )
    )
    return found


@pytest.mark.parametrize(("name", "args", "key"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_early_in_one_line(outcomes, name, args, key):
    result, seconds, workdir = outcomes[name]
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {key}"), lines[0]
    assert "Traceback" not in result.stderr
    # Nothing was created: no store, no Hydra output directory.
    assert not Path(workdir, "mlflow.db").exists()
    assert not Path(workdir, "outputs").exists() and not Path(workdir, "multirun").exists()
    assert sorted(p.name for p in workdir.iterdir()) == ["notes.db"]
    assert Path(workdir, "notes.db").read_text() == NOT_A_DATABASE
    if "server" in name or "database" in name:
        # tracking.timeout_s is 3; the slack is start-up time on a busy two-core machine.
        # Without the timeout a silent server holds the connection for minutes.
        assert seconds < 3 + 60, f"took {seconds:.1f} s to give up on the server"


STORE_CASES = [c for c in CASES if c[2] == "tracking.uri" and c[1][0] != "-m"]


@pytest.mark.parametrize(("name", "args", "key"), STORE_CASES, ids=[c[0] for c in STORE_CASES])
def test_the_report_refuses_the_same_stores_in_one_line(
    tmp_path, silent_server, readonly_dir, name, args, key
):
    (tmp_path / "notes.db").write_text(NOT_A_DATABASE)
    values = dict(a.split("=", 1) for a in args)
    uri = values["tracking.uri"].format(
        tmp=tmp_path, closed=closed_port(), silent=silent_server, readonly=readonly_dir
    )
    result = subprocess.run(
        [sys.executable, "-m", "analysis", "--tracking-uri", uri, "--out", str(tmp_path / "r")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"},
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: tracking.uri:"), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]
    assert (tmp_path / "notes.db").read_text() == NOT_A_DATABASE

"""Real services for the tests in this folder: PostgreSQL, an MLflow tracking server on it,
the MLflow UI, headless Chromium, and a one-node SLURM cluster with accounting.

Every server is started once per session on a free port of 127.0.0.1 and stopped afterwards,
also when a test fails. A program that is not installed skips these tests on a developer
machine and fails them in CI (CI=true), so CI cannot pass without running them; .ci/run
installs the programs. Logs and screenshots go to test-artifacts/services/.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import PROJECT_ROOT, run_cli, run_module
from tests.services.chromium import chromium_options

IN_CI = os.environ.get("CI", "").lower() == "true"
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "services"
SCRIPTS = PROJECT_ROOT / "scripts"
LOOPBACK = "127.0.0.1"

# The sweep the UI, the report and the server tests look at: 3 seeds x 2 activations.
EXPERIMENT = "services"
SWEEP = ["-m", "seed=range(0,3)", "model.activation=relu,linear", "train.epochs=1"]
RUN_NAMES = {f"{a}-glorot_uniform-s{s}" for a in ("relu", "linear") for s in range(3)}


def missing(what: str) -> None:
    """Skip (developer machine) or fail (CI) a test whose program is not installed."""
    if IN_CI:
        pytest.fail(f"{what} (CI=true: .ci/run should have installed it)", pytrace=False)
    pytest.skip(what)


def find_program(*names: str) -> str | None:
    for name in names:
        if path := shutil.which(name):
            return path
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def mlflow_program() -> str:
    beside = Path(sys.executable).parent / "mlflow"
    return str(beside) if beside.exists() else (shutil.which("mlflow") or "mlflow")


def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


class Service:
    """A program in its own process group, its output in a log file; stop() ends the group."""

    def __init__(
        self, name: str, args: list[str], env: dict | None = None, cwd: Path | None = None
    ):
        self.name = name
        self.log = artifacts_dir() / f"{name}.log"
        self._log_file = open(self.log, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

    def log_tail(self, lines: int = 30) -> str:
        self._log_file.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_healthy(self, url: str, timeout: float = 120) -> float:
        """Poll url until it answers 200; returns the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.name}: {url} not healthy after {timeout} s:\n{self.log_tail()}")

    def alive(self) -> bool:
        """Whether any process of the group is left."""
        self.process.poll()  # reap the leader: a zombie still counts as a member
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        try:
            if self.alive():
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
            deadline = time.monotonic() + timeout
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.2)
            if self.alive():
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        finally:
            self._log_file.close()


def write_report(uri: str, out: Path, cwd: Path) -> subprocess.CompletedProcess:
    return run_module(
        "analysis", "--experiment", EXPERIMENT, "--tracking-uri", uri, "--out", str(out), cwd=cwd
    )


# --- PostgreSQL and the MLflow tracking server -------------------------------------------


def postgres_installed() -> bool:
    return bool(shutil.which("pg_ctl") or glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))


@pytest.fixture(scope="session")
def postgres_url():
    """The SQLAlchemy URL of database `mlflow` in a throwaway cluster (scripts/postgres.sh)."""
    if not postgres_installed():
        missing("PostgreSQL is not installed (no pg_ctl; Debian: apt-get install postgresql)")
    # Not under pytest's private tmp dir: as root the server runs as `postgres`, which must
    # reach the directory.
    base = Path(tempfile.mkdtemp(prefix="deadunits-pg-"))
    base.chmod(0o755)
    cluster = base / "cluster"
    script = str(SCRIPTS / "postgres.sh")
    try:
        started = subprocess.run(
            [script, "start", str(cluster)], capture_output=True, text=True, timeout=180
        )
        if started.returncode != 0:
            pytest.fail(f"scripts/postgres.sh start failed:\n{started.stderr}", pytrace=False)
        yield started.stdout.strip()
    finally:
        subprocess.run([script, "stop", str(cluster)], capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class MlflowServer:
    url: str
    artifacts: Path
    log: Path
    startup_s: float


@pytest.fixture(scope="session")
def mlflow_server(postgres_url, tmp_path_factory):
    """`mlflow server` on the PostgreSQL cluster with a local artifact root, on 127.0.0.1."""
    artifacts = tmp_path_factory.mktemp("server-artifacts")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    service = Service(
        "mlflow-server",
        [
            mlflow_program(),
            "server",
            "--backend-store-uri",
            postgres_url,
            "--artifacts-destination",
            str(artifacts),
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env=env,
        cwd=artifacts,
    )
    try:
        url = f"http://{LOOPBACK}:{port}"
        startup = service.wait_healthy(f"{url}/health", timeout=180)
        yield MlflowServer(url, artifacts, service.log, startup)
    finally:
        service.stop()


# --- A small sweep on SQLite, its report, and the MLflow UI on it ------------------------


@dataclass
class SqliteSweep:
    uri: str
    directory: Path
    seconds: float


@pytest.fixture(scope="session")
def sqlite_sweep(tmp_path_factory) -> SqliteSweep:
    """SWEEP logged to a fresh SQLite store (one process, the basic launcher)."""
    directory = tmp_path_factory.mktemp("sqlite-sweep")
    uri = f"sqlite:///{directory}/mlflow.db"
    started = time.monotonic()
    result = run_cli(
        *SWEEP, f"tracking.uri={uri}", f"tracking.experiment={EXPERIMENT}", cwd=directory
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return SqliteSweep(uri, directory, time.monotonic() - started)


@pytest.fixture(scope="session")
def sqlite_report(sqlite_sweep) -> Path:
    """The report folder of the SQLite sweep (`python -m analysis ... --out DIR`)."""
    out = sqlite_sweep.directory / "report"
    result = write_report(sqlite_sweep.uri, out, cwd=sqlite_sweep.directory)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def mlflow_ui(sqlite_sweep):
    """`make ui` on the SQLite sweep's store, on a free port; yields the UI's address."""
    if not shutil.which("make"):
        missing("make is not installed")
    port = free_port()
    venv = Path(sys.prefix)
    # -o: never (re)build the virtualenv from here; the running one is the one to use.
    service = Service(
        "mlflow-ui",
        [
            "make",
            "--no-print-directory",
            "-o",
            str(venv / ".installed"),
            "ui",
            f"VENV={venv}",
            f"PORT={port}",
            f"UI_STORE={sqlite_sweep.uri}",
        ],
        cwd=PROJECT_ROOT,
    )
    try:
        url = f"http://{LOOPBACK}:{port}"
        service.wait_healthy(f"{url}/health", timeout=180)
        assert f"http://{LOOPBACK}:{port}" in service.log_tail(10_000)  # make ui prints it
        yield url
    finally:
        service.stop()


# --- Headless Chromium --------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """A selenium WebDriver on headless Chromium with a fresh profile."""
    browser = find_program("chromium", "chromium-browser", "google-chrome")
    driver_program = find_program("chromedriver")
    if browser is None or driver_program is None:
        missing("Chromium or chromedriver is not installed (Debian: chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = chromium_options(browser, str(tmp_path_factory.mktemp("chromium-profile")))
    service = DriverService(driver_program, log_output=str(artifacts_dir() / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


# --- A one-node SLURM cluster with accounting (scripts/slurm.sh) ---------------------------

SLURM_PROGRAMS = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd")


@dataclass
class SlurmCluster:
    directory: Path
    conf: Path
    start_output: str

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to use the cluster (client commands, submitit)."""
        return {"SLURM_CONF": str(self.conf)}


@pytest.fixture(scope="session")
def slurm_cluster():
    """munged, MariaDB, slurmdbd, slurmctld and slurmd in a throwaway directory."""
    absent = [p for p in SLURM_PROGRAMS if shutil.which(p) is None]
    if absent:
        missing(
            f"SLURM is not installed (no {', '.join(absent)}; "
            "Debian: apt-get install slurm-wlm slurmdbd munge mariadb-server)"
        )
    if os.geteuid() != 0:
        missing("the SLURM cluster needs root (slurmd runs jobs as their users)")
    # Not under pytest's private tmp dir: munged and MariaDB run as their own users, which
    # must reach the directory.
    base = Path(tempfile.mkdtemp(prefix="deadunits-slurm-"))
    base.chmod(0o755)
    directory = base / "cluster"
    script = str(SCRIPTS / "slurm.sh")
    try:
        started = subprocess.run(
            [script, "start", str(directory)], capture_output=True, text=True, timeout=300
        )
        if started.returncode != 0:
            pytest.fail(f"scripts/slurm.sh start failed:\n{started.stderr}", pytrace=False)
        yield SlurmCluster(
            directory, directory / "etc" / "slurm.conf", started.stdout + started.stderr
        )
    finally:
        stopped = subprocess.run([script, "stop", str(directory)], capture_output=True, timeout=300)
        if (directory / "log").is_dir():
            shutil.copytree(directory / "log", artifacts_dir() / "slurm-logs", dirs_exist_ok=True)
        if stopped.returncode == 0:
            shutil.rmtree(base, ignore_errors=True)

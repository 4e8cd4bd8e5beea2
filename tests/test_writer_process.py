"""The writer process: what is handed to it is written even if it dies, a Ctrl-C does not
cut it, and it does not outlive its parent."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import writer_process

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


def test_the_writer_ignores_ctrl_c(fresh_writer):
    assert writer_process.submit(survive_ctrl_c).result() == "alive"


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
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True

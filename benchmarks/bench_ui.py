"""How long the MLflow UI's runs page of a large experiment takes to show its first screen.

    .venv/bin/python benchmarks/bench_ui.py --tracking-uri sqlite:////abs/mlflow.db \\
        --experiment NAME [--repeat 3]

Starts `mlflow ui` on the store (127.0.0.1, a free port), opens the experiment's runs page in
headless Chromium (Debian's chromium and chromium-driver) and prints, per page load, the
seconds from the request to the first run row on screen. The first load includes the
server's own first query of the store.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from mlflow import MlflowClient

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))  # for tests.services.chromium

ROW = "[role='row'][row-id]"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(uri: str, port: int) -> subprocess.Popen:
    mlflow = Path(sys.executable).parent / "mlflow"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [str(mlflow), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1"]
    server = subprocess.Popen(
        [*command, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                return server
        except requests.RequestException:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the MLflow UI did not start within 120 s")


def browser(profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from tests.services.chromium import chromium_options

    options = chromium_options("/usr/bin/chromium", profile)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def first_screen_seconds(driver, url: str, timeout: float = 120) -> float:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    started = time.perf_counter()
    driver.get(url)
    WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ROW)
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    experiment = MlflowClient(args.tracking_uri).get_experiment_by_name(args.experiment)
    if experiment is None:
        raise SystemExit(f"no experiment {args.experiment!r}")
    port = free_port()
    server = start_ui(args.tracking_uri, port)
    url = f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs"
    try:
        with tempfile.TemporaryDirectory() as profile:
            driver = browser(profile)
            try:
                for attempt in range(1, args.repeat + 1):
                    seconds = first_screen_seconds(driver, url)
                    print(f"load {attempt}: first run row on screen after {seconds:.2f} s")
            finally:
                driver.quit()
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()

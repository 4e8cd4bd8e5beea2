"""Headless Chromium on the MLflow UI (`make ui`) and on the report's HTML.

Screenshots are saved to test-artifacts/services/ whether the checks pass or not.
"""

from __future__ import annotations

import contextlib

import pytest
from mlflow import MlflowClient

from tests.services.conftest import EXPERIMENT, RUN_NAMES, artifacts_dir

pytestmark = [pytest.mark.services, pytest.mark.slow]

TIMEOUT = 60
METRIC = "dead_units_init"


def wait_for(browser, condition, what: str):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, TIMEOUT).until(condition)
    except TimeoutException:
        raise AssertionError(f"the page never showed {what} ({browser.current_url})") from None


def screenshot(browser, name: str) -> None:
    browser.save_screenshot(str(artifacts_dir() / name))


def text_of(element) -> str:
    return (element.get_attribute("textContent") or "").strip()


def close_assistant(browser) -> None:
    """MLflow 3 opens its assistant panel beside the runs table; close it to see more columns."""
    from selenium.webdriver.common.by import By

    close = "button[data-component-id='mlflow.assistant.chat_panel.close']"
    for button in browser.find_elements(By.CSS_SELECTOR, close)[:1]:
        button.click()
        wait_for(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, close), "no assistant")


def widen_column(browser, column: str, pixels: int) -> None:
    """Drag a column's edge, so that the screenshot shows whole names (cosmetic only)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    with contextlib.suppress(WebDriverException):
        edge = browser.find_element(
            By.CSS_SELECTOR, f"[role='columnheader'][col-id='{column}'] .ag-header-cell-resize"
        )
        ActionChains(browser).drag_and_drop_by_offset(edge, pixels, 0).perform()


def show_metric_column(browser, metric: str) -> None:
    """Columns > search > tick the metric: MLflow 3.17 hides metric columns by default."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.find_element(By.XPATH, "//button[normalize-space(.)='Columns']").click()
    search = wait_for(
        browser,
        lambda b: b.find_element(By.CSS_SELECTOR, "input[placeholder='Search columns']"),
        "the column search box",
    )
    search.send_keys(metric)
    node = wait_for(
        browser,
        lambda b: b.find_element(
            By.XPATH,
            f"//span[contains(@class, 'tree-title') and normalize-space(.)='{metric}']"
            "/ancestor::div[contains(@class, 'tree-treenode')][1]",
        ),
        f"{metric} among the columns",
    )
    node.find_element(By.CSS_SELECTOR, "span[class*='tree-checkbox']").click()
    search.send_keys(Keys.ESCAPE)


def test_mlflow_ui_lists_the_sweep_runs_with_dead_units_init(chromium, mlflow_ui, sqlite_sweep):
    from selenium.webdriver.common.by import By

    client = MlflowClient(sqlite_sweep.uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    children = {r.info.run_id: r for r in runs if r.data.tags.get("deadunits.role") == "run"}
    (parent,) = [r for r in runs if r.data.tags.get("deadunits.role") == "sweep"]
    assert {r.info.run_name for r in children.values()} == RUN_NAMES

    browser = chromium
    browser.get(f"{mlflow_ui}/#/experiments/{experiment.experiment_id}/runs")
    try:
        parent_row = f"[role='row'][row-id='{parent.info.run_id}']"
        wait_for(
            browser,
            lambda b: b.find_elements(By.LINK_TEXT, parent.info.run_name),
            f"the sweep's parent run {parent.info.run_name}",
        )
        close_assistant(browser)
        # The runs of a sweep are folded under its parent run: unfold them.
        browser.find_element(
            By.CSS_SELECTOR, f"{parent_row} button[data-component-id*='runnamecellrenderer']"
        ).click()
        for name in sorted(RUN_NAMES):
            wait_for(browser, lambda b, n=name: b.find_elements(By.LINK_TEXT, n), f"run {name}")

        show_metric_column(browser, METRIC)
        column = f"metrics.`{METRIC}`"
        header = wait_for(
            browser,
            lambda b: b.find_element(By.CSS_SELECTOR, f"[role='columnheader'][col-id='{column}']"),
            f"a {METRIC} column",
        )
        assert text_of(header) == METRIC
        widen_column(browser, "attributes.`Run Name`", 80)
        widen_column(browser, column, 40)
        browser.execute_script(
            "arguments[0].scrollIntoView({block: 'nearest', inline: 'center'})", header
        )
        for run_id, run in children.items():
            cell = browser.find_element(
                By.CSS_SELECTOR, f"[role='row'][row-id='{run_id}'] [col-id='{column}']"
            )
            assert float(text_of(cell)) == run.data.metrics[METRIC], run.info.run_name
    finally:
        screenshot(browser, "mlflow-ui-experiment-runs.png")

    # One run's page: its metrics, and the sweep as its parent.
    name = "relu-glorot_uniform-s0"
    (run,) = [r for r in children.values() if r.info.run_name == name]
    browser.find_element(By.LINK_TEXT, name).click()
    expected = [name, f"{METRIC}\n{run.data.metrics[METRIC]:g}\n"]
    expected.append(f"Parent run\n{parent.info.run_name}")
    try:
        wait_for(
            browser,
            lambda b: all(e in b.find_element(By.TAG_NAME, "body").text for e in expected),
            f"{name}'s page with {expected[1:]}",
        )
    finally:
        screenshot(browser, "mlflow-ui-run-page.png")


def test_the_report_html_shows_every_figure(chromium, sqlite_report):
    from selenium.webdriver.common.by import By

    written = sorted(p.name for p in sqlite_report.glob("*.png"))
    assert written, "the report wrote no figures"
    browser = chromium
    browser.get((sqlite_report / "report.html").as_uri())
    try:
        wait_for(
            browser,
            lambda b: b.execute_script("return document.readyState") == "complete",
            "the report loaded",
        )
        images = browser.execute_script(
            "return Array.from(document.images).map(i => ({name: i.dataset.name,"
            " complete: i.complete, width: i.naturalWidth, shown: i.getBoundingClientRect().width}))"
        )
        assert sorted(i["name"] for i in images) == written
        for image in images:
            assert image["complete"] and image["width"] > 0 and image["shown"] > 0, image
        assert "Dead units report" in browser.find_element(By.TAG_NAME, "h1").text
        for element in browser.find_elements(By.CSS_SELECTOR, "img[data-name]"):
            browser.execute_script("arguments[0].scrollIntoView()", element)
            element.screenshot(
                str(artifacts_dir() / f"report-figure-{element.get_attribute('data-name')}")
            )
    finally:
        # The whole page in one picture.
        size = browser.get_window_size()
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(size["width"], min(int(height) + 100, 12000))
        browser.execute_script("window.scrollTo(0, 0)")
        screenshot(browser, "report.png")
        browser.set_window_size(size["width"], size["height"])

"""Headless Chromium options, shared by the browser tests and benchmarks/bench_ui.py."""

from __future__ import annotations

# Without the networking flags Chromium keeps opening connections to Google's services,
# which a machine without outside network refuses, many at a time.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1600,1000",
)


def chromium_options(binary: str, profile: str):
    """selenium ChromeOptions for the Chromium at binary, with a fresh profile directory."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(argument)
    return options

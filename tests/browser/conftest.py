"""Headless Chromium (Debian's `chromium` package, installed by `make test`) driven by Playwright.

Playwright's own browser download cannot work here, so it launches /usr/bin/chromium. Missing,
it fails under CI=true and skips elsewhere (tests.utils.db.unavailable)."""
from __future__ import annotations

import shutil

import pytest

from tests.utils.db import unavailable

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if shutil.which(CHROMIUM) is None:
        unavailable(f"{CHROMIUM} is missing: `apt-get install -y chromium` (make test does it as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        unavailable(f"playwright is not installed: {error}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()

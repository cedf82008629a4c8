"""Headless Chromium for the dashboard's browser tests: Debian's ``chromium`` driven by Playwright."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator

import pytest

from tests.conftest import IN_CI

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip


def chromium_path() -> str:
    """Debian's chromium; skipped locally when it (or playwright) is missing, an error in CI."""
    missing = None
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing = "the playwright package (pip install -e '.[dev]')"
    if shutil.which(CHROMIUM) is None:
        missing = f"{CHROMIUM} (apt-get install chromium chromium-driver)"
    if missing:
        if IN_CI:
            pytest.fail(f"browser tests need {missing} (CI=true)")
        pytest.skip(f"browser tests need {missing}")
    return CHROMIUM


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[object]:
    """A headless Chromium browser (playwright's Browser), closed on exit."""
    from playwright.async_api import async_playwright

    path = chromium_path()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=path, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()
